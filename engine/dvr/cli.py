"""The dvr method's CLI options, `geolens dvr-train`, `geolens dvr-eval`, and the old spellings
`geolens dvr-build` and `geolens report dvr` (``engine.method_cli`` adds `geolens dvr build|report|list`)."""
from __future__ import annotations

from engine import store
from engine.core.progress import staged


def register(commands, reports) -> None:
    p = commands.add_parser("dvr-build", help="alias of `geolens dvr build` that also prints the cache paths as JSON")
    add_build_args(p)
    p.add_argument("--force", action="store_true", help="draw and score again even if it is already built")
    p.set_defaults(func=_build)

    from engine.dvr.generators import trained_names

    p = commands.add_parser("dvr-train", help="train (or resume) one-shot generators and optionally ship them as assets")
    p.add_argument("names", nargs="+", choices=trained_names(), help="registered trained generators")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUES",
                   help="training parameter, comma-separated values train one model each (e.g. beta=0.5,1,3)")
    p.add_argument("--omniglot", default="", help="root of real Omniglot; default: the built-in stroke set")
    p.add_argument("--chars-per-alphabet", type=int, default=16)
    p.add_argument("--publish", action="store_true", help="copy the trained weights into assets/ (engine.core.assets)")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.set_defaults(func=_train)

    p = commands.add_parser("dvr-eval", help="evaluate a samples folder (<root>/<model>/<class>/exemplar.png + samples)")
    p.add_argument("folder")
    p.add_argument("--ref", default=None, help="reference cache (default: the newest dvr-ref-*.duckdb)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_eval)

    r = reports.add_parser("dvr", help="every model's diversity and recognizability, and the human point")
    r.add_argument("--ref", default=None, help="reference cache file (default: the newest)")
    r.set_defaults(func=_report)


def add_build_args(p) -> None:
    """The build's options (`geolens dvr build|report`, `geolens dvr-build`): ``engine.dvr.method.DvrBuild``."""
    from engine.dvr import generators
    from engine.dvr.method import DvrBuild

    d = DvrBuild
    p.add_argument("--omniglot", default="", help="root of real Omniglot (images_background/, images_evaluation/); "
                   "default: the built-in Hershey stroke set")
    p.add_argument("--chars-per-alphabet", type=int, default=d.chars_per_alphabet, help="built-in set: characters per alphabet")
    p.add_argument("--simclr-epochs", type=int, default=d.simclr_epochs)
    p.add_argument("--proto-episodes", type=int, default=d.proto_episodes)
    for flag, what in (("betas", "β values swept for vae_ns (one model each)"), ("psis", "noise scales ψ swept for dagan"),
                       ("guidances", "classifier-free guidance scales w swept for ddpm_cfg"),
                       ("strengths", "strengths swept for affine")):
        p.add_argument(f"--{flag}", default=None,
                       help=f"{what}; default " + ",".join(f"{v:g}" for v in getattr(generators, flag.upper())))
    p.add_argument("--only", default="", help="comma-separated generators to include; choices: " + ", ".join(
        n for n in generators.GENERATORS.names() if n != "human"))
    p.add_argument("--train-steps", type=int, default=None, help="override every trained generator's steps "
                   "(default: each family's own; shipped weights are used only with the defaults)")
    p.add_argument("--episodes", type=int, default=d.episodes, help="fixed test episodes per class")
    p.add_argument("--way", type=int, default=d.way)
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")


def config_from_args(args):
    from engine.dvr.method import DvrBuild

    sweeps = {k: _floats(getattr(args, k)) for k in ("betas", "psis", "guidances", "strengths") if getattr(args, k) is not None}
    return DvrBuild(omniglot=args.omniglot, chars_per_alphabet=args.chars_per_alphabet, simclr_epochs=args.simclr_epochs,
                    proto_episodes=args.proto_episodes, only=tuple(n.strip() for n in args.only.split(",") if n.strip()),
                    train_steps=args.train_steps, episodes=args.episodes, way=args.way, **sweeps)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from exc


def _build(args) -> int:
    import json

    from engine.dvr.method import METHOD
    from engine.method_cli import _device

    _device(args)
    art = METHOD.build(config_from_args(args), None, force=args.force)  # None: one tqdm bar per stage
    paths = {k: str(store.resolve_stored(art.meta[k])) for k in ("ref", "run", "samples")}
    print(json.dumps({**paths, "seconds": art.meta["seconds"]}, indent=2, default=float))
    return 0


def _settings(items: list[str]) -> list[dict]:
    """``["beta=0.5,1", "steps=100"]`` -> every combination as a dict of numbers."""
    import itertools

    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUES (e.g. beta=0.5,1), got {item!r}")
        grid.append([(key.strip(), int(v) if float(v).is_integer() and "." not in v else float(v))
                     for v in values.split(",") if v.strip()])
    return [dict(c) for c in itertools.product(*grid)] if grid else [{}]


def _train(args) -> int:
    import json
    import shlex
    import sys

    from engine.device import pick_device
    from engine.dvr import build, generators, omniglot, strokes, trainer

    root = build.dataset_root(args.omniglot or None, strokes.StrokeSetConfig(chars_per_alphabet=args.chars_per_alphabet))
    data = omniglot.load_split(root)
    dev = pick_device(args.device)
    out = []
    for name in args.names:
        for params in _settings(args.set):
            gen = generators.make(name, **params)
            gen.fit(data.train_x, data.train_y, dev, None, data_key=data.key)
            art = gen.artifact_
            row = {"model": gen.label(), "artifact": art.key, "train_seconds": art.meta.get("train_seconds"),
                   "ink": art.meta.get("ink")}
            if args.publish:
                sp = {k: float(gen.params.get(k, v)) for k, v in gen.model_cls.SAMPLE_PARAMS.items()}
                row["sample_ink"] = trainer.ink_check(gen.net_, data.train_x, data.train_y, **sp)
                trainer.publish(art, "geolens " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                                {"ink_as_sampled": row["sample_ink"], "sample_params": sp})
                row["asset"] = trainer.asset_name(art.name)
            out.append(row)
            print(json.dumps(row, default=float), flush=True)
    return 0


def _eval(args) -> int:
    from pathlib import Path

    from engine.dvr import evaluate, results
    from engine.dvr.networks import load_critics

    refs = [Path(args.ref)] if args.ref else results.list_refs()
    if not refs:
        raise FileNotFoundError("no dvr reference cache: run `geolens dvr build` first")
    critics = load_critics(evaluate.read_meta(refs[0])["critics_folder"], args.device)
    bars = staged(None)
    print(evaluate.evaluate_folder(args.folder, refs[0], critics, progress=lambda d, t: bars("evaluate", d, t)))
    return 0


def _report(args) -> dict:
    from engine.dvr import results

    return results.report(args.ref)
