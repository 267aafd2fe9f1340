"""`geolens report atoms`: class counts and the intervention table of one SAE on one cache."""
from __future__ import annotations


def register(commands, reports) -> None:
    p = reports.add_parser("atoms", help="atom classes and interventions of an SAE (the atom browser's numbers)")
    p.add_argument("--cache", required=True, help="cache name (see `geolens caches`)")
    p.add_argument("--sae", required=True, help="SAE name (see `geolens caches`, artifacts)")
    p.add_argument("--eps", type=float, default=0.05, help="modality-score threshold ε")
    p.add_argument("--fresh", action="store_true", help="recompute instead of reading the cached table")
    p.set_defaults(func=_report)

    p = commands.add_parser("edit-benchmark", help="composed retrieval on a Shapes cache: image + edit vs image + bimodal(edit)")
    p.add_argument("--cache", required=True)
    p.add_argument("--sae", required=True)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--n", type=int, default=300)
    p.set_defaults(func=_edit_benchmark)


def _report(args) -> dict:
    from engine.atoms.report import AtomsConfig, atoms_report
    from engine.embcache import open_cache

    return atoms_report(open_cache(args.cache), args.sae, AtomsConfig(eps=args.eps), fresh=args.fresh)


def _edit_benchmark(args) -> int:
    import json

    from engine.atoms.arithmetic import shapes_edit_benchmark
    from engine.atoms.report import bimodal_mask
    from engine.embcache import open_cache
    from engine.encoders import Encoder, ModelSpec
    from engine.sae import store as sae_store

    cache = open_cache(args.cache)
    if "shape" not in cache.factor_kinds():
        raise ValueError(f"{cache.name} is not a Shapes cache; the edit benchmark needs its ground-truth factors")
    img, _, pid = cache.pairs()
    factors = cache.factors().set_index("pair_id").loc[pid].reset_index()
    model = sae_store.load_sae(cache, args.sae)
    m = cache.manifest["model"]
    enc = Encoder(ModelSpec(m["arch"], m["pretrained"]))
    res = shapes_edit_benchmark(model, model.dictionary().detach().numpy(), model.bias.numpy(),
                                bimodal_mask(cache, args.sae, args.eps), img, factors, enc.encode_texts, n=args.n)
    print(json.dumps(res, indent=2))
    return 0
