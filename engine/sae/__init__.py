"""Sparse autoencoders over paired image/text embeddings (Iso-Energy, docs/METHODS.md §1 and §5).

learners.py / archetypal.py  the dictionary learners (registry: mp, topk, batchtopk, archetypal)
losses.py / train.py         MSE + β·L_align, Adam one-cycle, resumable training loop
pipeline.py                  train on a cache, save weights/config/meta/stats, link into the manifest
metrics.py / stats.py        explained variance, L0, dead atoms; per-atom statistics into DuckDB
store.py                     read API for pages and reports
synthetic.py / sanity.py     ground-truth data and the plain-vs-aligned sanity check
shapes_check.py              atoms vs the Shapes world's true factors
"""
