"""The identity of a job's model, resolved once per job.

A :class:`~cluster.config.ModelSpec` names a model loosely (shipped defaults, a checkpoint
URI); the outputs are named after what it resolves to, a
:class:`pipeline.models.ModelIdentity` (architecture, rate point, lambda, weights and
entropy-table digests). The driver and the catalog planner both resolve it here, the same
way, on the CPU; the actors are then pinned to those weights (:func:`pin_model`).

Importing this module loads neither torch nor ray (the model is loaded on call).
"""

from __future__ import annotations

from dataclasses import replace

from cluster.config import ModelSpec
from pipeline.models import ModelIdentity

__all__ = ["pin_model", "resolve_model"]


def resolve_model(spec: ModelSpec) -> ModelIdentity:
    """The identity of the model ``spec`` names: loads it once, on the CPU.

    Raises:
        ModelError: unknown architecture, unreadable or corrupt weights, or weights whose
            sha256 differs from ``spec.weights_sha256``.
        StorageError: the checkpoint cannot be read.
        ConfigError: an out-of-range quality.
    """
    from pipeline.models import load_model

    model = load_model(
        spec.arch, spec.quality, spec.checkpoint, expected_sha256=spec.weights_sha256,
        lmbda=spec.lmbda, device="cpu",
    )  # fmt: skip
    return model.identity


def pin_model(spec: ModelSpec, ident: ModelIdentity) -> ModelSpec:
    """``spec`` with the resolved architecture, rate point, lambda and weights digest
    filled in, so every actor provably loads the very weights ``ident`` describes."""
    return replace(
        spec, arch=ident.arch, quality=ident.quality, weights_sha256=ident.weights_sha256,
        lmbda=ident.lmbda,
    )  # fmt: skip
