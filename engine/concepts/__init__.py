"""CRAFT concepts, Sobol and gradient × input importance, and the strategic cluster graph (METHODS.md §2)."""
