"""`geolens <method> build|report|list` for every method in ``engine.methods``.

One code path for all of them: ``build`` calls ``Method.build`` (idempotent; ``--force`` rebuilds), ``report`` reads the finished artifact and prints
``Method.report`` (``--json`` for JSON), ``list`` prints what has been built. A method adds actions
of its own through ``Method.extra_cli``.
"""
from __future__ import annotations

import json


def register(commands, reports) -> None:
    from engine.methods import methods

    for name, m in methods().items():
        p = commands.add_parser(name, help=f"{m.title}: build | report | list")
        sub = p.add_subparsers(dest=f"{name}_action", required=True, metavar="ACTION")
        b = sub.add_parser("build", help="build the artifact for these settings (skips it when already built)")
        m.add_arguments(b)
        b.add_argument("--force", action="store_true", help="rebuild even if it is already built")
        b.set_defaults(func=lambda args, m=m: _build(m, args))
        r = sub.add_parser("report", help="print the numbers the page shows for these settings")
        m.add_arguments(r)
        r.add_argument("--json", action="store_true", help="print JSON")
        r.set_defaults(func=lambda args, m=m: _report(m, args))
        ls = sub.add_parser("list", help="what has been built")
        ls.add_argument("--json", action="store_true", help="print JSON")
        ls.set_defaults(func=lambda args, m=m: _list(m, args))
        if m.extra_cli is not None:
            m.extra_cli(sub)


def _device(args) -> None:
    """``--device``, where a method offers it, picks the engine's device for this process."""
    if getattr(args, "device", None):
        import os

        from engine.device import ENV_DEVICE

        os.environ[ENV_DEVICE] = args.device


def _build(m, args) -> int:
    from engine.core.progress import print_progress

    _device(args)
    art = m.build(m.config_from_args(args), print_progress, force=args.force)
    print(f"{m.name}: {art.name} -> {art.path}")
    return 0


def _report(m, args) -> int:
    from engine.cli import print_report

    print_report(m.report(m.require(m.config_from_args(args))), args.json)
    return 0


def rows(m) -> list[dict]:
    """One row per built artifact: key, name, when, and its config."""
    return [{"key": a.key, "name": a.name, "created": a.manifest.get("created"), "config": a.config} for a in m.list()]


def _list(m, args) -> int:
    out = rows(m)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    elif not out:
        print(f"nothing built yet: `geolens {m.name} build`")
    for r in out if not args.json else []:
        print(f"{r['key']}  {r['created']}  {r['name']}")
    return 0
