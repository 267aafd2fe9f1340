"""Dictionary learners by name: the single source of the `--arch` choices, the configs' ``arch`` and keys.

Importing the learner families here (and nowhere in ``learners.py``) keeps the modules acyclic:
learners <- archetypal <- registry <- config / train / pipeline.
"""
from __future__ import annotations

from engine.core.registry import Registry
from engine.sae.archetypal import ArchetypalSAE
from engine.sae.learners import MPSAE, BatchTopKSAE, DictionaryLearner, TopKSAE

LEARNERS: Registry[type[DictionaryLearner]] = Registry("SAE learner")
LEARNERS.add("mp", MPSAE)
LEARNERS.add("topk", TopKSAE)
LEARNERS.add("batchtopk", BatchTopKSAE)
LEARNERS.add("archetypal", ArchetypalSAE)
LEARNER_NAMES = tuple(LEARNERS.names())


def make_learner(arch: str, d: int, atoms: int, k: int, **kw) -> DictionaryLearner:
    """Build a learner by registry name (an unknown name lists the known ones)."""
    return LEARNERS.get(arch)(d, atoms, k, **kw)
