"""Per-atom tables an interaction reads, built by one chunked pass of the SAE over every item.

The encoder runs in torch on the engine's device, ``chunk`` items at a time, so memory is
O(chunk · m) for the codes being made plus the output. Per chunk it accumulates, per atom and
modality, Σ z², the firing count and a running top-``n_top`` (value, id) list merged with
``torch.topk``; every non-zero code entry is kept as (item, atom, value).

Files written into an SAE's folder (``write_tables``), all ``.npy``, read memory-mapped:

  top_ids.npy      (2, m, n_top) int64   per modality (0 image, 1 text) and atom, the most active
                                         item ids, largest value first; −1 pads atoms that fire less
  top_values.npy   (2, m, n_top) float32 their activations (NaN pads)
  atom_offsets.npy (m + 1,) int64        codes by atom (CSR): atom a's entries are
  atom_ids.npy     (nnz,) int64            [atom_offsets[a], atom_offsets[a+1]) of atom_ids /
  atom_values.npy  (nnz,) float32          atom_values, sorted by value descending
  item_ids.npy     (N,) int64            codes by item (CSR), items ascending:
  item_offsets.npy (N + 1,) int64          item_ids[i]'s entries are [item_offsets[i], item_offsets[i+1])
  item_atoms.npy   (nnz,) int32            of item_atoms / item_values
  item_values.npy  (nnz,) float32

``atom_top_items`` reads one atom's top items with two slices of memory-mapped arrays: O(n_top),
independent of the number of items (bench: ``bench/sae.py --tables-items 1000000``).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from engine.sae.stats import atom_frame

N_TOP = 64
MODALITIES = ("image", "text")
FILES = ("top_ids", "top_values", "atom_offsets", "atom_ids", "atom_values", "item_ids", "item_offsets",
         "item_atoms", "item_values")


@dataclasses.dataclass
class Tables:
    """The result of ``encode_tables``: per-atom sums and the arrays ``write_tables`` saves."""
    energy: np.ndarray  # (2, m) Σ z² per modality
    count: np.ndarray  # (2, m) firing counts
    n_items: dict  # items per modality
    top_ids: np.ndarray  # (2, m, n_top)
    top_values: np.ndarray  # (2, m, n_top)
    item_ids: np.ndarray  # (N,) ascending
    item_image: np.ndarray  # (N,) bool: the item is an image
    item_offsets: np.ndarray  # (N + 1,)
    item_atoms: np.ndarray  # (nnz,)
    item_values: np.ndarray  # (nnz,)

    def codes(self) -> pd.DataFrame:
        """The long table (id, atom, value) of every non-zero code entry."""
        ids = np.repeat(self.item_ids, np.diff(self.item_offsets))
        return pd.DataFrame({"id": ids.astype(np.int64), "atom": self.item_atoms.astype(np.int32),
                             "value": self.item_values.astype(np.float32)})

    def atom_table(self, eps: float) -> pd.DataFrame:
        """The per-atom table (energies, μ, frequencies, shares, class), as ``stats.atom_stats``."""
        return atom_frame({mod: self.energy[i] for i, mod in enumerate(MODALITIES)},
                          {mod: self.count[i] for i, mod in enumerate(MODALITIES)}, self.n_items, eps)

    def top_items_frame(self) -> pd.DataFrame:
        """The long table (atom, modality, rank, id, value) of ``stats.top_items``."""
        parts = []
        for i, mod in enumerate(MODALITIES):
            a, r = np.nonzero(self.top_ids[i] >= 0)
            parts.append(pd.DataFrame({"atom": a.astype(np.int32), "modality": mod, "rank": r.astype(np.int32),
                                       "id": self.top_ids[i][a, r], "value": self.top_values[i][a, r]}))
        return pd.concat(parts).sort_values(["atom", "modality", "rank"]).reset_index(drop=True)


def _merge_top(vals: torch.Tensor, ids: torch.Tensor, new_vals: torch.Tensor, new_ids: torch.Tensor, k: int):
    """Keep the k largest of the running (m, k) lists and a chunk's (m, c) candidates; ties: smaller id first."""
    v = torch.cat([vals, new_vals], 1)
    i = torch.cat([ids, new_ids], 1)
    # order by (value desc, id asc): a stable sort on id, then a stable sort on value
    o = torch.argsort(i, dim=1, stable=True)
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.argsort(v, dim=1, descending=True, stable=True)[:, :k]
    return v.gather(1, o), i.gather(1, o)


@torch.no_grad()
def encode_tables(model, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], n_top: int = N_TOP,
                  device: torch.device | str | None = None, progress=None) -> Tables:
    """One pass over ``chunks`` of (item ids (c,), embeddings (c, d), is_image (c,) bool), ids ascending.

    ``progress(items_done)`` is called after each chunk.
    """
    from engine.sae.train import cpu_threads

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev).eval()
    m = model.atoms
    energy = torch.zeros(2, m, dtype=torch.float64, device=dev)
    count = torch.zeros(2, m, dtype=torch.float64, device=dev)
    top_v = torch.full((2, m, n_top), -torch.inf, device=dev)
    top_i = torch.full((2, m, n_top), -1, dtype=torch.long, device=dev)
    n_items = {"image": 0, "text": 0}
    all_ids, all_img, rows_nnz, atoms_l, vals_l = [], [], [], [], []
    done = 0
    with cpu_threads(dev, model):
        for ids, x, is_image in chunks:
            ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=dev)
            z = model.encode(torch.tensor(np.asarray(x, dtype=np.float32), device=dev))  # (c, m); own copy
            img = torch.as_tensor(np.asarray(is_image, dtype=bool), device=dev)
            nz = z != 0
            for i, sel in enumerate((img, ~img)):
                if not bool(sel.any()):
                    continue
                zs, nzs = z[sel], nz[sel]
                energy[i] += (zs.double() ** 2).sum(0)
                count[i] += nzs.sum(0).double()
                cand = torch.where(nzs, zs, torch.full_like(zs, -torch.inf)).T  # (m, c')
                c = min(n_top, cand.shape[1])
                cv, ci = cand.topk(c, dim=1)
                cid = ids_t[sel][ci]
                cid = torch.where(torch.isinf(cv), torch.full_like(cid, -1), cid)
                top_v[i], top_i[i] = _merge_top(top_v[i], top_i[i], cv, cid, n_top)
            n_items["image"] += int(img.sum())
            n_items["text"] += int((~img).sum())
            r, a = torch.nonzero(nz, as_tuple=True)  # row-major: items ascending, atoms ascending
            all_ids.append(np.asarray(ids, dtype=np.int64))
            all_img.append(np.asarray(is_image, dtype=bool))
            rows_nnz.append(torch.bincount(r, minlength=z.shape[0]).cpu().numpy())
            atoms_l.append(a.to(torch.int32).cpu().numpy())
            vals_l.append(z[r, a].float().cpu().numpy())
            done += len(ids)
            if progress is not None:
                progress(done)
    top_v, top_i = top_v.cpu().numpy(), top_i.cpu().numpy()
    top_i[~np.isfinite(top_v)] = -1
    top_v = np.where(np.isfinite(top_v), top_v, np.nan).astype(np.float32)
    item_ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
    if len(item_ids) > 1 and not (np.diff(item_ids) > 0).all():
        raise ValueError("encode_tables: chunks must give item ids in ascending order, each once")
    per_item = np.concatenate(rows_nnz) if rows_nnz else np.zeros(0, np.int64)
    item_img = np.concatenate(all_img) if all_img else np.zeros(0, bool)
    return Tables(energy.cpu().numpy(), count.cpu().numpy(), n_items, top_i, top_v, item_ids, item_img,
                  np.concatenate([[0], np.cumsum(per_item)]).astype(np.int64),
                  np.concatenate(atoms_l) if atoms_l else np.zeros(0, np.int32),
                  np.concatenate(vals_l) if vals_l else np.zeros(0, np.float32))


def array_chunks(ids: np.ndarray, x: np.ndarray, is_image: np.ndarray, chunk: int = 8192) -> Iterator:
    """``encode_tables`` chunks from arrays in memory (sorted by id first)."""
    order = np.argsort(ids, kind="stable")
    ids, x, is_image = np.asarray(ids)[order], np.asarray(x)[order], np.asarray(is_image)[order]
    for s in range(0, len(ids), chunk):
        yield ids[s:s + chunk], x[s:s + chunk], is_image[s:s + chunk]


def _save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def write_tables(folder: str | os.PathLike, t: Tables) -> None:
    """Save the arrays into ``folder`` (each file atomically); codes by atom are sorted here."""
    folder = Path(folder)
    m = t.energy.shape[1]
    atoms = t.item_atoms.astype(np.int64)
    order = np.lexsort((-t.item_values.astype(np.float64), atoms))  # by atom, then value descending
    ids = np.repeat(t.item_ids, np.diff(t.item_offsets))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(atoms, minlength=m))]).astype(np.int64)
    arrays = {"top_ids": t.top_ids, "top_values": t.top_values, "atom_offsets": offsets,
              "atom_ids": ids[order].astype(np.int64), "atom_values": t.item_values[order].astype(np.float32),
              "item_ids": t.item_ids, "item_offsets": t.item_offsets, "item_atoms": t.item_atoms.astype(np.int32),
              "item_values": t.item_values.astype(np.float32)}
    for name in FILES:
        _save(folder / f"{name}.npy", arrays[name])


def has_tables(folder: str | os.PathLike) -> bool:
    return all((Path(folder) / f"{n}.npy").exists() for n in FILES)


def _folder(artifact) -> Path:
    """An SAE artifact (``engine.core.artifacts.Artifact``) or its folder."""
    return Path(getattr(artifact, "path", artifact))


_MMAP: dict[tuple[str, str], np.ndarray] = {}


def _arr(folder: Path, name: str) -> np.ndarray:
    """A memory-mapped table, opened once per file (keyed by path and modification time)."""
    p = folder / f"{name}.npy"
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: this SAE was built without atom tables; rebuild it with "
                                "`geolens train-sae --force` (same options)")
    key = (str(p), str(p.stat().st_mtime_ns))
    if key not in _MMAP:
        if len(_MMAP) > 64:
            _MMAP.clear()
        _MMAP[key] = np.load(p, mmap_mode="r")
    return _MMAP[key]


def atom_top_arrays(artifact, atom: int, k: int = N_TOP, modality: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """(ids (≤ k,), values (≤ k,)) of ``atom``'s most active items of ``modality``, largest first:
    two slices of memory-mapped arrays, O(k) whatever the number of items."""
    folder = _folder(artifact)
    ids, vals = _arr(folder, "top_ids"), _arr(folder, "top_values")
    m, n_top = ids.shape[1], ids.shape[2]
    if not 0 <= int(atom) < m:
        raise IndexError(f"atom {atom} out of range: this SAE has atoms 0..{m - 1}")
    if not 0 < k <= n_top:
        raise ValueError(f"k={k}: the stored lists hold 1..{n_top} items per atom")
    if modality not in MODALITIES:
        raise ValueError(f"modality={modality!r}; choose one of {MODALITIES}")
    i = MODALITIES.index(modality)
    got = np.array(ids[i, int(atom), :k])
    n = int((got >= 0).sum())  # −1 pads the end of an atom that fires on fewer than k items
    return got[:n], np.array(vals[i, int(atom), :n])


def atom_top_items(artifact, atom: int, k: int = N_TOP, modality: str | None = None) -> pd.DataFrame:
    """The ``k`` most active items of ``atom`` (k ≤ 64): columns modality, rank, id, value.

    ``modality`` None gives both modalities' lists (image first); ``artifact`` is an SAE artifact
    (``engine.core.artifacts.Artifact``) or its folder. Reads memory-mapped slices (``atom_top_arrays``).
    """
    mods = MODALITIES if modality is None else (modality,)
    got = [atom_top_arrays(artifact, atom, k, mod) for mod in mods]
    return pd.DataFrame({"modality": np.repeat(np.array(mods, dtype=object), [len(g[0]) for g in got]),
                         "rank": np.concatenate([np.arange(len(g[0]), dtype=np.int32) for g in got]),
                         "id": np.concatenate([g[0] for g in got]), "value": np.concatenate([g[1] for g in got])})


def atom_codes(artifact, atom: int) -> pd.DataFrame:
    """Every item whose code uses ``atom``: id, value (largest first). One slice of the CSR arrays."""
    folder = _folder(artifact)
    off = _arr(folder, "atom_offsets")
    if not 0 <= int(atom) < len(off) - 1:
        raise IndexError(f"atom {atom} out of range: this SAE has atoms 0..{len(off) - 2}")
    a, b = int(off[atom]), int(off[atom + 1])
    return pd.DataFrame({"id": np.asarray(_arr(folder, "atom_ids")[a:b]),
                         "value": np.asarray(_arr(folder, "atom_values")[a:b])})


def item_code(artifact, item_id: int) -> pd.DataFrame:
    """The sparse code of one item: atom, value (largest |value| first); empty if the item is unknown."""
    folder = _folder(artifact)
    ids = _arr(folder, "item_ids")
    i = int(np.searchsorted(ids, int(item_id)))
    if i >= len(ids) or int(ids[i]) != int(item_id):
        return pd.DataFrame({"atom": np.zeros(0, np.int32), "value": np.zeros(0, np.float32)})
    off = _arr(folder, "item_offsets")
    a, b = int(off[i]), int(off[i + 1])
    df = pd.DataFrame({"atom": np.asarray(_arr(folder, "item_atoms")[a:b]), "value": np.asarray(_arr(folder, "item_values")[a:b])})
    return df.iloc[np.argsort(-np.abs(df["value"].to_numpy()), kind="stable")].reset_index(drop=True)


def histograms_from(t: Tables, bins: int = 20) -> pd.DataFrame:
    """``stats.histograms`` from the tables' code arrays (same bins: per atom, shared by modalities)."""
    from engine.sae.stats import histograms

    codes = t.codes()
    modality = pd.Series(np.where(t.item_image, "image", "text"), index=t.item_ids)
    return histograms(codes, modality, bins)


__all__ = ["N_TOP", "Tables", "encode_tables", "array_chunks", "write_tables", "has_tables", "atom_top_items", "atom_top_arrays",
           "atom_codes", "item_code", "histograms_from"]
