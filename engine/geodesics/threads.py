"""Thread control for the small CPU models of this package.

Tiny MLPs on CPU run fastest on one thread; several torch threads on a busy machine spin
and can be 100× slower. ``cpu_threads`` sets torch's intra-op threads for a block and restores them.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

ENV_THREADS = "GEOLENS_GEODESIC_THREADS"


@contextlib.contextmanager
def cpu_threads(n: int | None = None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (default $GEOLENS_GEODESIC_THREADS or 1)."""
    n = n or int(os.environ.get(ENV_THREADS, "1"))
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
