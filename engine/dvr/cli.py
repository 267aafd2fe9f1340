"""`geolens dvr-build`, `geolens dvr-eval` and `geolens report dvr`."""
from __future__ import annotations


def register(commands, reports) -> None:
    p = commands.add_parser("dvr-build", help="diversity vs recognizability: data, critics, built-in generators, evaluation")
    p.add_argument("--omniglot", default="", help="root of real Omniglot (images_background/, images_evaluation/); "
                   "default: the built-in Hershey stroke set")
    p.add_argument("--chars-per-alphabet", type=int, default=16, help="built-in set: characters per alphabet")
    p.add_argument("--simclr-epochs", type=int, default=6)
    p.add_argument("--proto-episodes", type=int, default=250)
    from engine.dvr import generators as _g

    p.add_argument("--betas", default=",".join(f"{v:g}" for v in _g.BETAS), help="β values swept for vae_ns (one model each)")
    p.add_argument("--psis", default=",".join(f"{v:g}" for v in _g.PSIS), help="noise scales ψ swept for dagan (sampling only)")
    p.add_argument("--guidances", default=",".join(f"{v:g}" for v in _g.GUIDANCES),
                   help="classifier-free guidance scales w swept for ddpm_cfg (sampling only)")
    p.add_argument("--strengths", default=",".join(f"{v:g}" for v in _g.STRENGTHS), help="strengths swept for affine")
    p.add_argument("--only", default="", help="comma-separated generators to include; choices: " + ", ".join(
        n for n in _g.GENERATORS.names() if n != "human"))
    p.add_argument("--train-steps", type=int, default=None, help="override every trained generator's steps "
                   "(default: each family's own; shipped weights are used only with the defaults)")
    p.add_argument("--episodes", type=int, default=500, help="fixed test episodes per class")
    p.add_argument("--way", type=int, default=20)
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
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


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from exc


class _Bars:
    """One tqdm bar per stage, fed by (stage, done, total) callbacks."""

    def __init__(self):
        self.bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="it")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


def _build(args) -> int:
    import json

    from engine.dvr import build, evaluate, generators, strokes
    from engine.dvr.networks import CriticConfig

    only = tuple(n.strip() for n in args.only.split(",") if n.strip()) or None
    for n in only or ():
        generators.GENERATORS.get(n)  # a clear error naming the choices
    steps = {n: {"steps": args.train_steps} for n in generators.trained_names()} if args.train_steps else None
    bars = _Bars()
    try:
        res = build.build(
            omniglot_root=args.omniglot or None,
            stroke_cfg=strokes.StrokeSetConfig(chars_per_alphabet=args.chars_per_alphabet),
            critic_cfg=CriticConfig(simclr_epochs=args.simclr_epochs, proto_episodes=args.proto_episodes),
            train_params=steps,
            eval_cfg=evaluate.EvalConfig(way=args.way, n_episodes=args.episodes),
            specs=generators.default_specs(_floats(args.betas), _floats(args.strengths), _floats(args.psis),
                                           _floats(args.guidances), only),
            device=args.device, progress=bars)
    finally:
        bars.close()
    print(json.dumps({"ref": str(res.ref), "run": str(res.run), "samples": str(res.samples_root),
                      "seconds": res.seconds}, indent=2, default=float))
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
        raise FileNotFoundError("no dvr reference cache: run `geolens dvr-build` first")
    critics = load_critics(evaluate.read_meta(refs[0])["critics_folder"], args.device)
    bars = _Bars()
    try:
        out = evaluate.evaluate_folder(args.folder, refs[0], critics, progress=lambda d, t: bars("evaluate", d, t))
    finally:
        bars.close()
    print(out)
    return 0


def _report(args) -> dict:
    from engine.dvr import results

    return results.report(args.ref)
