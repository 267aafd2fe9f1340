"""Bimodal atom browser: interventions on SAE codes and composed retrieval (Iso-Energy, METHODS.md §1)."""
