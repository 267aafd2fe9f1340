"""Where SAE training batches come from: pairs in memory, or streamed from a cache with memory
O(block), not O(N).

Batch order (a function of seed, epoch, ``block`` and ``window`` only, the same for every source):
the n pair rows are cut into blocks of ``block`` consecutive rows; each epoch shuffles the blocks,
takes them ``window`` at a time and shuffles the rows of those ``window`` blocks together; batches
are consecutive runs of ``batch_pairs`` rows of that stream, the last one of an epoch shorter.
When one group holds every row (n ≤ block · window) this is exactly ``epoch_order``, a full
permutation, so small caches train exactly as before streaming existed.

A source returns pair rows by index: ``fetch(rows) -> (img (b, d), txt (b, d))`` float32 tensors.
``ArraySource`` indexes arrays; ``CacheSource`` reads whole blocks from the cache's DuckDB
``embeddings`` table by id range (image of pair p has id 2p, its caption 2p + 1) and keeps the
last ``2 · window`` blocks, so streamed and in-memory training see identical batches.
"""
from __future__ import annotations

import collections
import contextlib
import math
from typing import Iterator, Protocol

import numpy as np
import torch

INIT_MAX_ROWS = 1 << 18
"""Data-dependent initialisation sees every row of X = [X_img; X_txt] up to this many rows, else a
seeded sample of this many (bounded memory at any N)."""


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the n pairs used in ``epoch`` when one group holds them all, (n,)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def epoch_groups(n: int, seed: int, epoch: int, block: int, window: int) -> Iterator[torch.Tensor]:
    """The shuffled row groups of ``epoch`` in order; each is an index tensor into [0, n)."""
    if block * window >= n:
        yield epoch_order(n, seed, epoch)
        return
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(math.ceil(n / block), generator=g)
    for s in range(0, len(perm), window):
        rows = torch.cat([torch.arange(int(b) * block, min(n, (int(b) + 1) * block)) for b in perm[s:s + window]])
        yield rows[torch.randperm(len(rows), generator=g)]


def epoch_batches(n: int, batch: int, seed: int, epoch: int, block: int, window: int) -> Iterator[torch.Tensor]:
    """Row indices of each batch of ``epoch``: ceil(n / batch) batches, the last one shorter."""
    pending = torch.zeros(0, dtype=torch.long)
    for rows in epoch_groups(n, seed, epoch, block, window):
        pending = torch.cat([pending, rows])
        while len(pending) >= batch:
            yield pending[:batch]
            pending = pending[batch:]
    if len(pending):
        yield pending


class PairSource(Protocol):
    n: int
    d: int

    def fetch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and captions of pair rows ``rows`` (b,): two (b, d) float32 tensors."""


class ArraySource:
    """Aligned pairs held in memory (numpy or torch, any device)."""

    def __init__(self, img, txt):
        if isinstance(img, np.ndarray) and not img.flags.writeable:  # e.g. a view of an Arrow buffer
            img, txt = np.array(img), np.array(txt)
        self.img = torch.as_tensor(img, dtype=torch.float32)
        self.txt = torch.as_tensor(txt, dtype=torch.float32, device=self.img.device)
        if self.img.shape != self.txt.shape or self.img.ndim != 2:
            raise ValueError(f"images {tuple(self.img.shape)} and texts {tuple(self.txt.shape)} must be aligned (n, d) pairs")
        self.n, self.d = self.img.shape

    def fetch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.to(self.img.device)
        return self.img[rows], self.txt[rows]

    def to(self, device: torch.device) -> "ArraySource":
        """The whole arrays on ``device`` (in memory, so one copy beats a copy per batch)."""
        self.img, self.txt = self.img.to(device), self.txt.to(device)
        return self


class CacheSource:
    """The complete pairs of an embedding cache, read block by block from its DuckDB file.

    Holds the pair ids (8 bytes per pair) and at most ``keep`` blocks of embeddings.
    """

    def __init__(self, cache, block: int, window: int = 1):
        from engine import store

        self.cache, self.block, self.keep = cache, int(block), 2 * max(1, int(window))
        self.pair_ids = np.asarray(cache.pair_ids(), dtype=np.int64)
        self.n = len(self.pair_ids)
        with contextlib.closing(store.connect_ro(cache.path)) as con:
            typ = con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'embeddings' "
                              "AND column_name = 'emb'").fetchall()
        if not typ:
            raise ValueError(f"cache {cache.name} ({cache.path}) has no embeddings.emb column; rebuild it with `geolens precompute`")
        self.d = int(cache.manifest["dim"])
        self._blocks: collections.OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = collections.OrderedDict()
        self.blocks_read = 0

    def _load(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        from engine import store

        pid = self.pair_ids[b * self.block:(b + 1) * self.block]
        lo, hi = 2 * int(pid[0]), 2 * int(pid[-1]) + 1
        with contextlib.closing(store.connect_ro(self.cache.path)) as con:
            tbl = con.sql("SELECT id, emb FROM embeddings WHERE id BETWEEN ? AND ? ORDER BY id", params=[lo, hi]).to_arrow_table()
        ids = tbl.column(0).to_numpy().astype(np.int64)
        col = tbl.column(1).combine_chunks()
        emb = col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(ids), self.d)
        pos_img = np.searchsorted(ids, 2 * pid)
        pos_txt = np.searchsorted(ids, 2 * pid + 1)
        ok = (pos_img < len(ids)) & (pos_txt < len(ids))
        if not ok.all() or not (ids[pos_img] == 2 * pid).all() or not (ids[pos_txt] == 2 * pid + 1).all():
            raise ValueError(f"cache {self.cache.name}: embeddings missing for pairs {int(pid[0])}..{int(pid[-1])}; "
                             "the cache is incomplete, resume it with `geolens precompute`")
        self.blocks_read += 1
        return torch.from_numpy(emb[pos_img]), torch.from_numpy(emb[pos_txt])

    def _get(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if b in self._blocks:
            self._blocks.move_to_end(b)
            return self._blocks[b]
        out = self._blocks[b] = self._load(b)
        while len(self._blocks) > self.keep:
            self._blocks.popitem(last=False)
        return out

    def fetch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.cpu().numpy()
        img = np.empty((len(rows), self.d), dtype=np.float32)
        txt = np.empty_like(img)
        blocks = rows // self.block
        for b in np.unique(blocks):
            sel = np.nonzero(blocks == b)[0]
            bi, bt = self._get(int(b))
            off = torch.from_numpy(rows[sel] - int(b) * self.block)
            img[sel], txt[sel] = bi[off].numpy(), bt[off].numpy()
        return torch.from_numpy(img), torch.from_numpy(txt)


def init_sample(source: PairSource, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of X = [X_img; X_txt] (2n, d) for data-dependent initialisation: (x (r, d), row ids (r,)).

    Every row when 2n ≤ ``INIT_MAX_ROWS`` (as training on all data always did), else a sorted
    seeded sample of that many rows, drawn from ``generator`` (so every source gets the same one).
    """
    n = source.n
    if 2 * n <= INIT_MAX_ROWS:
        rows = torch.arange(2 * n)
    else:
        rows = torch.randperm(2 * n, generator=generator)[:INIT_MAX_ROWS].sort().values
    img_rows, txt_rows = rows[rows < n], rows[rows >= n] - n
    parts_i, parts_t = [], []
    for s in range(0, len(img_rows), 1 << 16):  # read in pieces; a CacheSource streams its blocks once
        parts_i.append(source.fetch(img_rows[s:s + (1 << 16)])[0].cpu())
    for s in range(0, len(txt_rows), 1 << 16):
        parts_t.append(source.fetch(txt_rows[s:s + (1 << 16)])[1].cpu())
    return torch.cat(parts_i + parts_t), rows
