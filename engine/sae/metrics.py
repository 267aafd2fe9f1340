"""Quality metrics of a trained dictionary: explained variance, L0, dead atoms."""
from __future__ import annotations

import numpy as np
import torch

from engine.sae.learners import DictionaryLearner


def explained_variance(x: np.ndarray, x_hat: np.ndarray) -> float:
    """EV = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the mean row of x (not zero): (n, d) each."""
    x = np.asarray(x, dtype=np.float64)
    resid = ((x - np.asarray(x_hat, dtype=np.float64)) ** 2).sum()
    total = ((x - x.mean(0)) ** 2).sum()
    return float(1.0 - resid / total) if total > 0 else float("nan")


@torch.no_grad()
def encode_all(model: DictionaryLearner, x: np.ndarray | torch.Tensor, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Codes and reconstructions of x (N, d) in chunks, eval mode: ((N, m), (N, d)) float32."""
    from engine.sae.train import cpu_threads

    model.eval()
    dev = next(model.parameters()).device
    x = x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))  # own copy
    zs, xs = [], []
    with cpu_threads(dev, model):
        for i in range(0, x.shape[0], batch):
            z, xh = model(x[i:i + batch].to(dev))
            zs.append(z.cpu())
            xs.append(xh.cpu())
    return torch.cat(zs).numpy(), torch.cat(xs).numpy()


def code_metrics(z: np.ndarray) -> dict:
    """L0 (mean non-zeros per row) and the fraction of atoms never active, from codes z (N, m)."""
    active = z != 0
    return {"l0": float(active.sum(1).mean()), "dead_fraction": float((~active.any(0)).mean())}


def evaluate(model: DictionaryLearner, img: np.ndarray, txt: np.ndarray) -> dict:
    """Explained variance (vs the mean) per modality and overall, L0 and dead fraction."""
    x = np.concatenate([img, txt])
    z, x_hat = encode_all(model, x)
    n = len(img)
    out = {"ev": explained_variance(x, x_hat),
           "ev_image": explained_variance(x[:n], x_hat[:n]),
           "ev_text": explained_variance(x[n:], x_hat[n:]),
           "mse": float(((x - x_hat) ** 2).mean()),
           **code_metrics(z),
           "l0_image": code_metrics(z[:n])["l0"], "l0_text": code_metrics(z[n:])["l0"]}
    return {k: round(v, 6) for k, v in out.items()}
