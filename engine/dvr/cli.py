"""`geolens dvr-build`, `geolens dvr-eval` and `geolens report dvr`."""
from __future__ import annotations


def register(commands, reports) -> None:
    p = commands.add_parser("dvr-build", help="diversity vs recognizability: data, critics, built-in generators, evaluation")
    p.add_argument("--omniglot", default="", help="root of real Omniglot (images_background/, images_evaluation/); "
                   "default: the built-in Hershey stroke set")
    p.add_argument("--chars-per-alphabet", type=int, default=16, help="built-in set: characters per alphabet")
    p.add_argument("--simclr-epochs", type=int, default=6)
    p.add_argument("--proto-episodes", type=int, default=250)
    p.add_argument("--vae-steps", type=int, default=150)
    p.add_argument("--betas", default="0.5,2,8", help="comma-separated β values swept for vae_ns")
    p.add_argument("--strengths", default="0.5,1,2", help="comma-separated strengths swept for affine")
    p.add_argument("--episodes", type=int, default=500, help="fixed test episodes per class")
    p.add_argument("--way", type=int, default=20)
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.set_defaults(func=_build)

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
    from engine.dvr.vae import VAEConfig

    bars = _Bars()
    try:
        res = build.build(
            omniglot_root=args.omniglot or None,
            stroke_cfg=strokes.StrokeSetConfig(chars_per_alphabet=args.chars_per_alphabet),
            critic_cfg=CriticConfig(simclr_epochs=args.simclr_epochs, proto_episodes=args.proto_episodes),
            vae_cfg=VAEConfig(steps=args.vae_steps),
            eval_cfg=evaluate.EvalConfig(way=args.way, n_episodes=args.episodes),
            specs=generators.default_specs(_floats(args.betas), _floats(args.strengths)),
            device=args.device, progress=bars)
    finally:
        bars.close()
    print(json.dumps({"ref": str(res.ref), "run": str(res.run), "samples": str(res.samples_root),
                      "seconds": res.seconds}, indent=2, default=float))
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
