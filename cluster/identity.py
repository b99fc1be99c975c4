"""The identity of a job's model, resolved once per job.

A :class:`~cluster.config.ModelSpec` names a model loosely (shipped defaults, a checkpoint
URI); the outputs are named after what it resolves to, a
:class:`pipeline.models.ModelIdentity` (architecture, rate point, lambda, weights and
entropy-table digests). The driver and the catalog planner both resolve it here, the same
way, on the CPU; the actors are then pinned to those weights (:func:`pin_model`).

A job with a target quality (``--target-psnr``, ``--target-msssim``) codes with every rate
point of the architecture (:func:`pipeline.ratecontrol.rate_point_models`): its identity is
a :class:`RatePointsIdentity`, the first rate point's fields (the stream header's model)
plus every rate point's, in slot order (:func:`resolve_job_model`).

Importing this module loads neither torch nor ray (the model is loaded on call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cluster.config import ModelSpec
from pipeline.config import RefineConfig
from pipeline.models import ModelIdentity, listed_rate_points

if TYPE_CHECKING:
    from pipeline.models import LoadedModel

__all__ = [
    "RatePointsIdentity",
    "check_rate_points",
    "header_rate_points",
    "job_refine",
    "pin_model",
    "rate_points_of",
    "resolve_job_model",
    "resolve_model",
    "resolve_rate_points",
    "slot_order",
]


@dataclass(frozen=True)
class RatePointsIdentity(ModelIdentity):
    """The models of a job with a target quality: the :class:`ModelIdentity` fields are the
    first rate point's (slot 0: the stream header's own model), ``rate_points`` every rate
    point's, in slot order (ascending lambda, as :class:`pipeline.ratecontrol.RateController`
    numbers them). One rate point (``--checkpoint``): a plain header, lambda moves only."""

    rate_points: tuple[ModelIdentity, ...] = ()


def rate_points_of(ident: ModelIdentity) -> tuple[ModelIdentity, ...]:
    """The rate points of a job's model identity, slot order; ``()`` for a fixed model."""
    return tuple(getattr(ident, "rate_points", ()))


def header_rate_points(ident: ModelIdentity) -> tuple[ModelIdentity, ...]:
    """The rate points a stream's header lists for a job's model identity, by the
    encoder's rule (:func:`pipeline.models.listed_rate_points`): every rate point of a
    target, a midpoint coded alone (``--quality 2.5``), else ``()``."""
    return listed_rate_points(ident, rate_points_of(ident))


def slot_order(models: Sequence[LoadedModel]) -> list[LoadedModel]:
    """``models`` in rate point slot order: ascending lambda (a stable sort, as rate control
    orders them)."""
    return sorted(models, key=lambda m: m.identity.lmbda)


def resolve_rate_points(spec: ModelSpec) -> RatePointsIdentity:
    """The identity of the rate points a targeted job codes with: every shipped rate point
    of ``spec.arch`` (default: the shipped default architecture), or only ``spec.checkpoint``
    (:func:`pipeline.ratecontrol.rate_point_models`); loaded once, on the CPU.

    Raises:
        ConfigError: ``spec.quality`` is set (a target chooses the rate points itself).
        UnknownModelError: no shipped weights for the architecture.
        ModelError: unreadable or corrupt weights, or weights other than the pinned
            ``spec.rate_points``.
        StorageError: the checkpoint cannot be read.
    """
    from pipeline.errors import ConfigError
    from pipeline.ratecontrol import rate_point_models

    if spec.quality is not None:
        raise ConfigError(
            f"a target quality and --quality {spec.quality} both set the rate",
            hint="drop --quality: rate control chooses each GOP's rate point",
        )
    models = slot_order(rate_point_models(spec.arch, spec.checkpoint, device="cpu"))
    check_rate_points(spec, models)
    points = tuple(m.identity for m in models)
    first = points[0]
    return RatePointsIdentity(
        first.arch, first.quality, first.lmbda, first.weights_sha256, first.tables_sha256,
        rate_points=points,
    )  # fmt: skip


def check_rate_points(spec: ModelSpec, models: Sequence[LoadedModel]) -> None:
    """Refuse rate point weights other than those ``spec`` was pinned to (``rate_points``:
    their sha256 in slot order; nothing is checked when it is empty).

    Raises:
        WeightsMismatchError: another set, order or version of weights.
    """
    from pipeline.errors import WeightsMismatchError

    got = tuple(m.identity.weights_sha256 for m in models)
    if spec.rate_points and got != tuple(spec.rate_points):
        mine = " ".join(f"q{m.identity.quality}:{d[:12]}" for m, d in zip(models, got, strict=True))
        raise WeightsMismatchError(
            f"the rate points here ({mine}) are not the {len(spec.rate_points)} the job was "
            f"planned with ({' '.join(d[:12] for d in spec.rate_points)})",
            hint="every node of the cluster must run the same relatent release (shipped "
            "weights) or read the same --checkpoint",
        )


def resolve_job_model(spec: ModelSpec, refine: RefineConfig) -> ModelIdentity:
    """The identity a job's outputs are named after: with a target quality
    (``refine.target``) the :class:`RatePointsIdentity` of its rate points
    (:func:`resolve_rate_points`), else the one model's (:func:`resolve_model`).

    Raises:
        as :func:`resolve_model` / :func:`resolve_rate_points`.
    """
    if refine.target is not None:
        return resolve_rate_points(spec)
    return resolve_model(spec)


def job_refine(refine: RefineConfig, ident: ModelIdentity) -> RefineConfig:
    """The config a job's shards run and every record hashes: ``refine`` resolved with the
    model's lambda (:meth:`~pipeline.config.RefineConfig.resolved`); with a target quality,
    lambda then left None (rate control chooses each GOP's), as in ``relatent encode``'s
    stream header.

    Raises:
        ConfigError: the config is invalid."""
    resolved = refine.resolved(ident.lmbda)
    return replace(resolved, lmbda=None) if resolved.target is not None else resolved


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
    filled in, so every actor provably loads the very weights ``ident`` describes; for a
    :class:`RatePointsIdentity`, ``rate_points`` (every rate point's digest, slot order:
    the actors load them all and refuse others) instead of the rate point and lambda."""
    points = rate_points_of(ident)
    if points:
        return replace(
            spec, arch=ident.arch, weights_sha256=ident.weights_sha256,
            rate_points=tuple(p.weights_sha256 for p in points),
        )  # fmt: skip
    return replace(
        spec, arch=ident.arch, quality=ident.quality, weights_sha256=ident.weights_sha256,
        lmbda=ident.lmbda,
    )  # fmt: skip
