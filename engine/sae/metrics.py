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


@torch.no_grad()
def evaluate_source(model: DictionaryLearner, source, chunk: int = 8192, device: torch.device | str | None = None) -> dict:
    """``evaluate`` over a ``engine.sae.stream`` pair source, ``chunk`` pairs at a time (memory O(chunk)).

    Sums in float64: EV = 1 − Σ‖x − x̂‖² / (Σ‖x‖² − n‖x̄‖²) per modality and over both.
    """
    from engine.sae.train import cpu_threads

    model.eval()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    d, m = source.d, model.atoms
    acc = {mod: {"n": 0, "sx": torch.zeros(d, dtype=torch.float64, device=dev), "sxx": 0.0, "res": 0.0, "nnz": 0}
           for mod in ("image", "text")}
    active = torch.zeros(m, dtype=torch.bool, device=dev)
    with cpu_threads(dev, model):
        for s in range(0, source.n, chunk):
            img, txt = source.fetch(torch.arange(s, min(source.n, s + chunk)))
            for mod, x in (("image", img), ("text", txt)):
                x = x.to(dev)
                z, x_hat = model(x)
                a, x64 = acc[mod], x.double()
                a["n"] += x.shape[0]
                a["sx"] += x64.sum(0)
                a["sxx"] += float((x64 ** 2).sum())
                a["res"] += float(((x64 - x_hat.double()) ** 2).sum())
                nz = z != 0
                a["nnz"] += int(nz.sum())
                active |= nz.any(0)

    def ev(parts):
        n = sum(a["n"] for a in parts)
        sx = sum(a["sx"] for a in parts)
        total = sum(a["sxx"] for a in parts) - float((sx ** 2).sum()) / n
        return 1.0 - sum(a["res"] for a in parts) / total if total > 0 else float("nan")

    i, t = acc["image"], acc["text"]
    n = i["n"] + t["n"]
    out = {"ev": ev([i, t]), "ev_image": ev([i]), "ev_text": ev([t]), "mse": (i["res"] + t["res"]) / (n * d),
           "l0": (i["nnz"] + t["nnz"]) / n, "dead_fraction": float((~active).double().mean()),
           "l0_image": i["nnz"] / i["n"], "l0_text": t["nnz"] / t["n"]}
    return {k: round(v, 6) for k, v in out.items()}
