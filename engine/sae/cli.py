"""SAE commands: train-sae, saes, sanity-check, shapes-check; the options of `geolens sae build|report|list|encode`
(``engine/sae/method.py``)."""
from __future__ import annotations

import json



def register(commands, reports) -> None:
    p = commands.add_parser("train-sae", help="train an (aligned) sparse autoencoder on a cache's pairs")
    train_args(p)
    p.add_argument("--force", action="store_true", help="retrain even if this SAE exists")
    p.add_argument("--json", action="store_true", help="print the SAE's metrics as JSON")
    p.set_defaults(func=_train)

    p = commands.add_parser("saes", help="list the SAEs trained on a cache")
    p.add_argument("--cache", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)

    p = commands.add_parser("sanity-check", help="plain vs aligned SAE on synthetic data with ground truth")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-pairs", type=int, default=None, help="synthetic pairs per run (default 10000)")
    p.add_argument("--steps", type=int, default=None, help="minimum training steps per run (default 600)")
    p.add_argument("--beta", type=float, default=None, help="alignment weight of the aligned runs")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_sanity)

    p = commands.add_parser("shapes-check", help="correlate a Shapes cache's SAE atoms with the true factors")
    p.add_argument("--cache", required=True)
    p.add_argument("--sae", required=True, help="SAE name (see `geolens saes --cache NAME`)")
    p.add_argument("--eps", type=float, default=None, help="re-classify atoms at this ε (default: stored, 0.05)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_shapes)



def _print(obj: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, default=float))
        return
    for k, v in obj.items():
        print(f"{k}: {json.dumps(v, default=float)}")


def _train(args) -> int:
    from engine.embcache import open_cache
    from engine.sae.pipeline import default_config, train_on_cache

    cache = open_cache(args.cache)
    cfg = default_config(cache, arch=args.arch, atoms=args.atoms, k=args.k, beta=args.beta, epochs=args.epochs,
                         min_steps=args.min_steps, batch_pairs=args.batch_pairs, lr=args.lr, seed=args.seed,
                         delta=args.delta)
    name, meta = train_on_cache(cache, cfg, name=args.name, force=args.force, device=args.device)
    out = {"name": name, "metrics": meta["metrics"], "class_counts": meta["class_counts"],
           "pairs_per_s": meta["train"]["pairs_per_s"], "seconds": meta["train"]["seconds"],
           "steps": meta["train"]["steps"], "device": meta["train"]["device"]}
    _print(out, args.json)
    return 0


def _list(args) -> int:
    from engine.embcache import open_cache
    from engine.sae.store import list_saes

    df = list_saes(open_cache(args.cache))
    if args.json:
        print(df.to_json(orient="records", indent=2))
    else:
        print(df.drop(columns="path").to_string(index=False) if len(df) else "no SAEs yet: run `geolens train-sae`")
    return 0


def _sanity(args) -> int:
    import dataclasses

    from tqdm import tqdm

    from engine.sae.sanity import SanityPlan, sanity_check

    plan = SanityPlan(seeds=tuple(range(args.seeds)))
    if args.n_pairs:
        plan.data = dataclasses.replace(plan.data, n_pairs=args.n_pairs)
    if args.steps is not None or args.beta is not None:
        plan.sae = dataclasses.replace(plan.sae, **({"min_steps": args.steps} if args.steps is not None else {}),
                                       **({"beta": args.beta} if args.beta is not None else {}))
    bar = tqdm(total=4 * args.seeds, desc="sanity-check", unit="run")

    def progress(done, total):
        bar.n = done
        bar.refresh()

    res = sanity_check(plan, progress=progress, device=args.device)
    bar.close()
    _print(res, args.json)
    return 0


def _encode(args) -> int:
    from engine.commands import ray_config
    from engine.embcache import open_cache
    from engine.sae.ray_encode import encode_stats

    cfg = ray_config(args) if args.engine == "ray" else None
    meta = encode_stats(open_cache(args.cache), args.sae, engine=args.engine, cfg=cfg, eps=args.eps)
    _print({"name": meta["name"], "eps": meta["eps"], "class_counts": meta["class_counts"], "encode": meta["encode"]},
           args.json)
    return 0


def _shapes(args) -> int:
    from engine.embcache import open_cache
    from engine.sae.shapes_check import shapes_check

    _print(shapes_check(open_cache(args.cache), args.sae, args.eps), args.json)
    return 0


def train_args(p) -> None:
    """The SAE's training options (`geolens train-sae` and `geolens sae build|report`)."""
    p.add_argument("--cache", required=True, help="cache name or unique prefix (see `geolens caches`)")
    from engine.sae.registry import LEARNER_NAMES

    p.add_argument("--arch", default="mp", choices=LEARNER_NAMES)
    p.add_argument("--atoms", type=int, default=None, help="dictionary size (default 8·d)")
    p.add_argument("--k", type=int, default=20, help="MP steps / TopK active atoms")
    p.add_argument("--beta", type=float, default=4e-4, help="alignment weight; 0 = plain SAE")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--min-steps", type=int, default=None, help="at least this many steps (small caches)")
    p.add_argument("--batch-pairs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--delta", type=float, default=None, help="archetypal: bound on the relaxation ‖Λ_i‖")
    p.add_argument("--name", default=None, help="artifact name (default: arch, sizes and a config hash)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")


def add_encode_parser(sub) -> None:
    """`geolens sae encode`: a trained SAE's codes and atom statistics (``--engine ray`` to shard it)."""
    from engine.commands import ray_args

    p = sub.add_parser("encode", help="a trained SAE's codes and atom statistics over every item of its cache")
    p.add_argument("--cache", required=True, help="cache name or unique prefix (see `geolens caches`)")
    p.add_argument("--sae", required=True, help="SAE name (see `geolens saes --cache NAME`)")
    p.add_argument("--eps", type=float, default=None, help="classify atoms at this ε (default: the stored one)")
    p.add_argument("--workers", type=int, default=None, help="ray: encoder actors (default 1; one per GPU)")
    p.add_argument("--batch-size", type=int, default=65536, help="ray: items per shard")
    p.add_argument("--json", action="store_true")
    ray_args(p)
    p.set_defaults(func=_encode)
