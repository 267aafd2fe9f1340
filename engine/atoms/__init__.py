"""Bimodal atom browser: interventions on SAE codes and composed retrieval (Iso-Energy, docs/METHODS.md §1)."""
