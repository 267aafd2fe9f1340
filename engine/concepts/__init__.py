"""CRAFT concepts, Sobol and gradient × input importance, and the strategic cluster graph (docs/METHODS.md §2)."""
