"""The modality gap (docs/METHODS.md §1): gap measures, retrieval, joint 2-D maps, the page's report.

Everything here is generic over a pair of aligned arrays ``img (n, d)``, ``txt (n, d)`` (row i of
both is pair i), so the SAE interventions can reuse the same measures on reconstructed embeddings.
"""
