"""CRAFT concepts as a geolens method (``engine.core.method``): one build per (classifier, class)."""
from __future__ import annotations

from engine.concepts import cli
from engine.concepts.precompute import KIND, RUN_FILE, ConceptConfig
from engine.core import artifacts
from engine.core.method import Method
from engine.core.progress import ProgressFn, Tracker


def _config(args) -> ConceptConfig:
    return cli.config(args, args.class_name or ConceptConfig().class_name)


def _build(cfg: ConceptConfig, progress: ProgressFn | None = None, force: bool = False) -> artifacts.Artifact:
    from engine.concepts import classifiers, precompute

    track = Tracker(10, "stage", cfg.class_name, sink=progress)

    def stage(done: int, total: int, msg: str) -> None:
        track.stage = f"{cfg.class_name}: {msg}"
        track.update(done)

    path = precompute.run(cfg, classifiers.load(cfg.model), progress=stage, force=force)
    track.close()
    return artifacts.find(KIND, path.parent.name)


def _find(cfg: ConceptConfig) -> artifacts.Artifact | None:
    """The newest run built with exactly these settings (no model is loaded, nothing is written)."""
    runs = [a for a in artifacts.list(KIND) if a.config == cfg.to_dict()]
    return runs[-1] if runs else None


def _report(art: artifacts.Artifact) -> dict:
    from engine.concepts import cache

    return cache.report(art.file(RUN_FILE))


METHOD = Method(name="concepts", title="Concepts (CRAFT)", page="pages/concepts.py", kind=KIND, config=ConceptConfig,
                add_arguments=lambda p: cli.config_args(p, class_required=False), config_from_args=_config,
                build=_build, find=_find, report=_report,
                defaults=lambda: [ConceptConfig(class_name=c) for c in ("Sneaker", "Bag")])
