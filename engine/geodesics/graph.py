"""Graph initialisation of geodesics: the metric-weighted shortest path through the data.

From a straight-line start, gradient descent on the path energy stops in the nearest local minimum;
between far-apart points of a folded data manifold (rotations more than ~60° apart on the characters)
that minimum is not the cheapest path. Here the endpoints join a k-nearest-neighbour graph over data
points whose edge (a, b) costs the metric length of the segment, sqrt(Σ_d ½ (g_d(a) + g_d(b)) (b_d − a_d)²);
Dijkstra's shortest path, resampled to T points evenly spaced in that length (a geodesic has constant
metric speed), is the solver's start. Arvanitidis et al. (2019) initialise their geodesic solver the same way.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.geodesics.metrics import Metric, straight_line


def _segment_cost(ga: torch.Tensor, gb: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Metric length of segments: g (..., 1 or d), delta (..., d) -> (...)."""
    return (0.5 * (ga + gb) * delta**2).sum(-1).clamp_min(0).sqrt()


def _resample(poly: torch.Tensor, g: torch.Tensor, steps: int) -> torch.Tensor:
    """A polyline (m, d) with metric diagonals g (m, c) -> (steps, d) evenly spaced in metric length."""
    if len(poly) < 2:
        return poly.expand(steps, -1).clone()
    seg = _segment_cost(g[:-1], g[1:], poly[1:] - poly[:-1])  # (m-1,)
    cum = torch.cat([seg.new_zeros(1), seg.cumsum(0)])
    if float(cum[-1]) <= 0:
        return straight_line(poly[:1], poly[-1:], steps)[0]
    u = torch.linspace(0, float(cum[-1]), steps, dtype=poly.dtype)
    i = torch.searchsorted(cum.contiguous(), u).clamp(1, len(poly) - 1)
    w = ((u - cum[i - 1]) / (cum[i] - cum[i - 1]).clamp_min(1e-12)).clamp(0, 1)[:, None]
    out = (1 - w) * poly[i - 1] + w * poly[i]
    out[0], out[-1] = poly[0], poly[-1]
    return out


def graph_paths(metric: Metric, x0: torch.Tensor, x1: torch.Tensor, nodes: torch.Tensor, steps: int,
                k: int = 10) -> torch.Tensor:
    """Shortest paths x0[i] -> x1[i] (B, d) through ``nodes`` (N, d) under ``metric``: (B, steps, d).

    Pairs the graph does not connect keep the straight line.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    if k < 1:
        raise ValueError(f"k must be >= 1 neighbours, got {k}")
    b = x0.shape[0]
    pts = torch.cat([nodes, x0, x1]).float()  # (N + 2B, d)
    n = len(pts)
    k = min(k, n - 1)
    with torch.no_grad():
        g = torch.cat([metric.diag(c) for c in pts.split(4096)])  # (n, c)
        nbr = torch.cat([torch.cdist(c, pts).topk(k + 1, largest=False).indices[:, 1:] for c in pts.split(2048)])
        src = torch.arange(n).repeat_interleave(k)
        dst = nbr.reshape(-1)
        cost = _segment_cost(g[src], g[dst], pts[dst] - pts[src]).clamp_min(1e-12)
    w = coo_matrix((cost.double().numpy(), (src.numpy(), dst.numpy())), shape=(n, n)).tocsr()
    w = w.maximum(w.T)  # undirected: an edge either end chose
    starts = np.arange(len(nodes), len(nodes) + b)
    dist, pred = dijkstra(w, directed=False, indices=starts, return_predecessors=True)
    out = straight_line(x0, x1, steps).clone()
    for i in range(b):
        target = len(nodes) + b + i
        if not np.isfinite(dist[i, target]):
            continue
        chain = [target]
        while chain[-1] != starts[i]:
            chain.append(pred[i, chain[-1]])
        idx = torch.as_tensor(chain[::-1])
        out[i] = _resample(pts[idx], g[idx], steps).to(out)
    return out
