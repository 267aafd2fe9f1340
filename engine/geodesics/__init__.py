"""Geodesic interpolation with Riemannian metrics from energy-based models (docs/METHODS.md §3).

Béthune, Vigouroux, Du, VanRullen, Serre, Boutin (2025), "Follow the Energy, Find the Path".
Modules: ``data`` (toy mixtures, rotated characters, user points), ``autoencoder`` (64-d latent
AE), ``ebm`` (contrastive-divergence EBM), ``metrics`` (conformal/diagonal metric registry),
``solver`` (batched path-energy minimisation), ``interpolant`` (neural interpolant),
``scores`` (path scores and the paper's reference numbers), ``pipeline`` (cached precompute),
``cli`` (commands and the report).
"""
