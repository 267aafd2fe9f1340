"""Core commands: caches, precompute, train-default, build-defaults, export."""
from __future__ import annotations


def register(commands, reports) -> None:
    p = commands.add_parser("caches", help="list caches with their provenance")
    p.set_defaults(func=_caches)


def _caches(args) -> int:
    from engine import store

    for path in store.list_files():
        print(path.name)
    return 0
