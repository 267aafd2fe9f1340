"""`geolens` / `python -m engine`: the command line over the engine.

Each method contributes its commands through a small module with
``register(commands, reports)``: ``commands`` and ``reports`` are argparse sub-parser
collections; every parser sets ``func`` (``args -> int`` for commands, ``args -> dict`` for
reports). Those modules import heavy libraries inside their handlers so `geolens --help`
stays fast. Add a method by adding its module path to ``COMMAND_MODULES``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

COMMAND_MODULES = [
    "engine.commands",
    "engine.concepts.cli",
    "engine.dvr.cli",
    "engine.geodesics.cli",
    "engine.sae.cli",
    "engine.gap.cli",
    "engine.atoms.cli",
    "engine.assets_cli",
    "engine.jobs_cli",
    "engine.method_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geolens", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = sub.add_parser("report", help="print the numbers a page shows (add --json for JSON)")
    reports = report.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, reports)
    for p in reports.choices.values():
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(_is_report=True)
    return parser


def print_report(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=False, default=float))
        return

    def walk(obj, prefix=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}{k}.")
        else:
            print(f"{prefix[:-1]}: {obj}")

    walk(result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.func(args)
    except (ValueError, RuntimeError, OSError) as exc:  # OSError: unreadable files, permissions, a full disk
        from engine.paths import disk_full, is_disk_full

        if isinstance(exc, OSError) and is_disk_full(exc):
            exc = disk_full(exc.filename or "a file", exc)
        print(f"geolens: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "_is_report", False):
        print_report(out, args.json)
        return 0
    return int(out or 0)


if __name__ == "__main__":
    raise SystemExit(main())
