"""What a job runs: ``Builder``, and ``BUILDERS`` (builder name -> Builder)."""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

from engine.config import stable_hash
from engine.core.registry import Registry

if TYPE_CHECKING:
    from engine.core.jobs.child import JobContext


@dataclasses.dataclass(frozen=True)
class Builder:
    """What a job runs.

    ``run(config, ctx)`` does the work (resuming from its own checkpoints) and returns a JSON-able
    result naming what it produced. ``title(config)`` is the human name; ``artifact(config)`` the
    lock key (default: builder name + config hash); ``built(config)`` lists what already exists
    ([] if nothing: the job is then "not built"), read without side effects; ``after(config)``
    the artifact keys whose queued or running jobs this one waits for (the runner runs jobs side by
    side, and a job must not build what another is building).
    """

    run: Callable[[dict, JobContext], Any]
    title: Callable[[dict], str]
    artifact: Callable[[dict], str] | None = None
    built: Callable[[dict], list[str]] | None = None
    after: Callable[[dict], list[str]] | None = None

    def key(self, name: str, config: Mapping) -> str:
        return self.artifact(dict(config)) if self.artifact else f"{name}:{stable_hash(dict(config), 12)}"


BUILDERS: Registry[Builder] = Registry("job builder")


def load_builders() -> None:
    """Import the modules that register builders besides the default stages (tests add their own
    through ``$GEOLENS_JOB_MODULES``, a comma list of modules)."""
    for mod in filter(None, os.environ.get("GEOLENS_JOB_MODULES", "").split(",")):
        importlib.import_module(mod.strip())
