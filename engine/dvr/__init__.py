"""Diversity vs. recognizability (Boutin et al. 2022): one-shot generators against humans."""
