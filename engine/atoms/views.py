"""What the atom browser's panels read (read-only; nothing here writes).

``nearest_atoms``: the atoms closest to one atom by dictionary cosine, in torch, ``chunk`` atoms at
a time (O(chunk · d) memory whatever the dictionary size). ``code_of``: the sparse code of new
embeddings (a typed text). ``bimodal_map`` / ``read_report`` of ``engine.atoms.report`` give the
interventions panel its numbers and map without recomputing them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from engine.atoms.report import bimodal_map, find_atoms, read_report  # noqa: F401 - the page's entry points


@torch.no_grad()
def nearest_atoms(D: np.ndarray | torch.Tensor, atom: int, k: int = 8, chunk: int = 65536,
                  device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The k atoms with the largest cosine to ``atom`` (itself excluded): (indices (k,), cosines (k,)),
    ties broken by the smaller index."""
    D = torch.as_tensor(np.asarray(D) if not isinstance(D, torch.Tensor) else D, dtype=torch.float32, device=device)
    m = D.shape[0]
    if not 0 <= int(atom) < m:
        raise IndexError(f"atom {atom} out of range: the dictionary has atoms 0..{m - 1}")
    q = D[int(atom)] / D[int(atom)].norm().clamp_min(1e-12)
    best_v = torch.full((0,), -2.0, device=device)
    best_i = torch.zeros(0, dtype=torch.long, device=device)
    for s in range(0, m, chunk):
        blk = D[s:s + chunk]
        cos = blk @ q / blk.norm(dim=1).clamp_min(1e-12)
        idx = torch.arange(s, s + len(blk), device=device)
        cos = torch.where(idx == int(atom), torch.full_like(cos, -torch.inf), cos)
        v, i = torch.cat([best_v, cos]), torch.cat([best_i, idx])
        o = torch.argsort(v, descending=True, stable=True)[:k]  # stable: equal cosines keep index order
        best_v, best_i = v[o], i[o]
    keep = torch.isfinite(best_v)
    return best_i[keep].cpu().numpy(), best_v[keep].cpu().numpy()


@torch.no_grad()
def code_of(model, x: np.ndarray) -> pd.DataFrame:
    """The sparse code of one embedding x (d,): atom, value (largest |value| first)."""
    z = model.encode(torch.as_tensor(np.atleast_2d(x), dtype=torch.float32, device=next(model.parameters()).device))[0]
    used = torch.nonzero(z).flatten().cpu().numpy()
    vals = z[used].cpu().numpy()
    order = np.argsort(-np.abs(vals), kind="stable")
    return pd.DataFrame({"atom": used[order], "value": vals[order]})
