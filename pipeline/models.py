"""Model registry, checkpoint loading and model identity.

Architectures are addressed by stable string ids (the CompressAI zoo names), never by
position in a dict. A loaded model is always:

* built from a CompressAI-format state dict (N and M inferred from the weight shapes),
* loaded with ``torch.load(weights_only=True)`` after its sha256 was computed (and checked
  when an expected digest is known),
* frozen (eval mode, ``requires_grad=False`` everywhere),
* entropy-ready: ``update(force=True)`` ran exactly once, in a fixed single-threaded
  context, and the resulting CDF tables are fingerprinted (``tables_sha256``) so a decoder
  can prove it holds the very same tables as the encoder.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.errors import (
    ConfigError,
    CorruptWeightsError,
    UnknownModelError,
    WeightsMismatchError,
)

__all__ = [
    "ARCHITECTURES",
    "CARDS_FILE",
    "PAD_MULTIPLE",
    "REQUIRED_PARTS",
    "WEIGHTS_DIR",
    "ZOO_LAMBDAS",
    "Architecture",
    "LoadedModel",
    "ModelIdentity",
    "Quality",
    "build_frozen",
    "entropy_tables_sha256",
    "find_card",
    "fixed_threads",
    "get_architecture",
    "infer_architecture",
    "listed_rate_points",
    "load_cards",
    "load_midpoint",
    "load_model",
    "load_state_dict_bytes",
    "midpoint_state_dict",
    "missing_parts",
    "quality_value",
    "random_model",
    "rate_point_models",
    "rate_point_qualities",
    "resolve_device",
    "save_cards",
    "sha256_bytes",
    "shipped_qualities",
    "state_dict_sha256",
    "upsert_card",
    "zoo_lambda",
]

if TYPE_CHECKING:
    import torch
    from compressai.models import CompressionModel

LatentKind = Literal["factorized", "scale-hyperprior", "mean-scale-hyperprior"]

#: CompressAI's MSE training lambdas for quality 1..8 (lambda * 255^2 * MSE + bpp).
ZOO_LAMBDAS: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)

#: The largest latent grid of the supported architectures (the hyperprior kinds: y at 1/16,
#: z at 1/64); each architecture's own is :attr:`Architecture.pad_multiple`.
PAD_MULTIPLE = 64

WEIGHTS_DIR = Path(__file__).parent / "weights"
CARDS_FILE = WEIGHTS_DIR / "cards.json"


@dataclass(frozen=True)
class Architecture:
    """One registered architecture.

    ``kind`` decides how a latent is entropy coded: ``factorized`` codes y with the
    entropy bottleneck; the hyperprior kinds code z with the bottleneck and y with a
    Gaussian conditional whose scales (and means) come from ``h_s(z_hat)``.
    """

    id: str
    class_name: str
    kind: LatentKind
    slow: bool = False
    description: str = ""

    @property
    def pad_multiple(self) -> int:
        """What frame sizes are padded to: 16 for the factorized kind (g_a downsamples by
        16), 64 for the hyperprior kinds (h_a downsamples y by 4 more). Padding further only
        costs bits."""
        return 16 if self.kind == "factorized" else PAD_MULTIPLE

    def model_class(self) -> type[CompressionModel]:
        """The CompressAI model class (``compressai.models.<class_name>``; imports compressai)."""
        from compressai import models as zoo

        return getattr(zoo, self.class_name)


ARCHITECTURES: Mapping[str, Architecture] = {
    a.id: a
    for a in (
        Architecture(
            "bmshj2018-factorized",
            "FactorizedPrior",
            "factorized",
            description="Balle et al. 2018, factorized prior (no side information)",
        ),
        Architecture(
            "bmshj2018-hyperprior",
            "ScaleHyperprior",
            "scale-hyperprior",
            description="Balle et al. 2018, scale hyperprior",
        ),
        Architecture(
            "mbt2018-mean",
            "MeanScaleHyperprior",
            "mean-scale-hyperprior",
            description="Minnen et al. 2018, mean-scale hyperprior (non-autoregressive)",
        ),
    )
}


def get_architecture(arch_id: str) -> Architecture:
    """The registered architecture ``arch_id`` (a key of :data:`ARCHITECTURES`).

    Raises:
        UnknownModelError: ``arch_id`` is not registered.
    """
    try:
        return ARCHITECTURES[arch_id]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UnknownModelError(
            f"unknown model {arch_id!r}", hint=f"choose one of: {known}"
        ) from None


def zoo_lambda(quality: int) -> float:
    """CompressAI's MSE training lambda of ``quality`` 1..8 (:data:`ZOO_LAMBDAS`; loss =
    lambda * 255^2 * MSE + bpp).

    Raises:
        ConfigError: ``quality`` is outside 1..8.
    """
    if not 1 <= quality <= len(ZOO_LAMBDAS):
        raise ConfigError(f"quality {quality} is out of range", hint=f"use 1..{len(ZOO_LAMBDAS)}")
    return ZOO_LAMBDAS[quality - 1]


#: A rate point's quality: a shipped model's (an integer), or a midpoint between two
#: neighbouring ones (``q + 0.5``: :func:`midpoint_state_dict`).
Quality = int | float


def quality_value(quality: float) -> Quality:
    """``quality`` as an ``int`` when it is whole, else as it is (a half step): so that
    ``2.0`` and ``2`` name, print and hash alike."""
    q = float(quality)
    return int(q) if q.is_integer() else q


@dataclass(frozen=True)
class ModelIdentity:
    """What a stream records about the model that made it (and what a decoder checks)."""

    arch: str
    quality: Quality
    lmbda: float
    weights_sha256: str
    tables_sha256: str = ""

    def describe(self) -> str:
        """``<arch> q<quality> sha256 <first 12 hex digits>``, for messages."""
        return f"{self.arch} q{self.quality} sha256 {self.weights_sha256[:12]}"


def listed_rate_points(
    ident: ModelIdentity, points: Sequence[ModelIdentity]
) -> tuple[ModelIdentity, ...]:
    """The rate points a stream header lists for a stream coded by ``ident`` over
    ``points`` (slot order): all of them when there are several (format version 4, 5 with
    a midpoint); a midpoint coded alone as its one rate point (only version 5's rate points
    can name a half step); else none (a plain header). The encoder's header
    (:func:`pipeline.codec.make_header`) and the distributed commit both follow it."""
    if len(points) > 1:
        return tuple(points)
    return (ident,) if not float(ident.quality).is_integer() else ()


@dataclass
class LoadedModel:
    """A frozen, entropy-ready CompressAI model plus its identity."""

    arch: Architecture
    net: CompressionModel
    identity: ModelIdentity
    N: int
    M: int
    source: str
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """The device of the network's parameters."""
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move the network to ``device`` in place; returns ``self``."""
        self.net.to(device)
        return self


# --------------------------------------------------------------------------- cards


def load_cards() -> dict[str, Any]:
    """The index of shipped weights (``pipeline/weights/cards.json``)."""
    if not CARDS_FILE.exists():
        return {"default_arch": None, "default_quality": None, "models": []}
    with CARDS_FILE.open("r", encoding="utf-8") as f:
        return json.load(f)


def save_cards(cards: dict[str, Any]) -> None:
    """Write ``cards`` to ``pipeline/weights/cards.json`` (sorted keys, via a temporary file
    renamed over it)."""
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CARDS_FILE.with_name(CARDS_FILE.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(cards, f, indent=2, sort_keys=True)
        f.write("\n")
    tmp.replace(CARDS_FILE)


def upsert_card(card: dict[str, Any]) -> None:
    """Add or replace the card of ``(card["arch"], card["quality"])`` in cards.json."""
    cards = load_cards()
    models = [
        c
        for c in cards["models"]
        if not (c["arch"] == card["arch"] and int(c["quality"]) == int(card["quality"]))
    ]
    models.append(card)
    cards["models"] = sorted(models, key=lambda c: (c["arch"], int(c["quality"])))
    save_cards(cards)


def find_card(arch_id: str, quality: int) -> dict[str, Any] | None:
    """The model card of the shipped weights for ``(arch_id, quality)``, or None."""
    for card in load_cards()["models"]:
        if card["arch"] == arch_id and int(card["quality"]) == int(quality):
            return card
    return None


def shipped_qualities(arch_id: str) -> list[int]:
    """The qualities with shipped weights for ``arch_id``, ascending."""
    return sorted(int(c["quality"]) for c in load_cards()["models"] if c["arch"] == arch_id)


#: Most rate points rate control uses (a stream's packets name a model in 3 bits:
#: ``pipeline.bitstream.MAX_RATE_POINTS``).
MAX_RATE_POINTS = 8


def rate_point_qualities(arch_id: str) -> list[Quality]:
    """The rate points rate control chooses from for ``arch_id``, ascending: every shipped
    quality and the midpoint (``q + 0.5``, :func:`midpoint_state_dict`) of each pair of
    neighbouring shipped qualities, lowest first, at most :data:`MAX_RATE_POINTS` in all
    (five shipped qualities 1..5: 1, 1.5, 2, 2.5, 3, 3.5, 4, 5)."""
    shipped = shipped_qualities(arch_id)
    out: list[Quality] = list(shipped)
    for lo, hi in itertools.pairwise(shipped):
        if len(out) >= MAX_RATE_POINTS:
            break
        if hi == lo + 1:
            out.append(lo + 0.5)
    return sorted(out)


def rate_point_models(
    arch: str | None = None, checkpoint: str | None = None, device: str | None = None
) -> list[LoadedModel]:
    """The models rate control chooses from: the rate points of ``arch`` (default: the
    shipped default architecture), every shipped quality and the midpoints between them
    (:func:`rate_point_qualities`: 1, 1.5, 2, 2.5, 3, 3.5, 4, 5), or only
    ``checkpoint`` when one is given (then only lambda moves).

    Raises:
        UnknownModelError: no shipped weights for ``arch``.
        ModelError, ConfigError, StorageError: as :func:`load_model`."""
    if checkpoint is not None:
        return [load_model(arch, None, checkpoint, device=device)]
    arch = arch or load_cards().get("default_arch")
    qualities = rate_point_qualities(arch) if arch else []
    if not qualities:
        return [load_model(arch, None, device=device)]  # raises the no-weights error
    return [load_model(arch, q, device=device) for q in qualities]


def midpoint_state_dict(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The weights of the rate point between two neighbouring shipped models ``a`` and
    ``b`` (fine-tuned from one base, docs/training.md): each floating-point tensor is their
    mean, ``float32((float64(a) + float64(b)) / 2)`` (exact in float64, then rounded once,
    so every machine derives the same bits); other tensors are ``a``'s (the CDF tables,
    which :func:`build_frozen` rebuilds). Averaging the weights of models fine-tuned from
    a common base gives a model between them (Wortsman et al. 2022, "Model soups"):
    measured on the shared clips, at the geometric mean of the two lambdas it codes within
    +-1% of the bytes of the curve through its neighbours, where moving one neighbour's
    lambda that far costs up to 5% (docs/ratecontrol.md).

    Raises:
        CorruptWeightsError: the two do not have the same tensors (names and shapes).
    """
    import numpy as np
    import torch

    if set(a) != set(b):
        raise CorruptWeightsError(
            f"cannot average weights with different tensors ({sorted(set(a) ^ set(b))[:3]})",
            hint="midpoints are taken between models of one architecture and size",
        )
    out: dict[str, torch.Tensor] = {}
    for k, ta in a.items():
        tb = b[k]
        if not ta.is_floating_point():
            out[k] = ta
            continue
        if ta.shape != tb.shape:
            raise CorruptWeightsError(
                f"cannot average {k}: shapes {tuple(ta.shape)} and {tuple(tb.shape)}",
                hint="midpoints are taken between models of one architecture and size",
            )
        mean = (ta.double().numpy() + tb.double().numpy()) / 2.0
        out[k] = torch.from_numpy(mean.astype(np.float32))
    return out


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """The sha256 of a state dict's contents, independent of any file format: for each
    tensor in name order, its name, dtype, shape and little-endian bytes (how a midpoint
    rate point, which has no file, is identified)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- loading


def sha256_bytes(data: bytes) -> str:
    """The sha256 of ``data`` as 64 lowercase hex digits (weights are identified by it)."""
    return hashlib.sha256(data).hexdigest()


def _read_bytes(uri: str) -> bytes:
    from pipeline import storage

    return storage.read_bytes(uri)


def _unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual training wrappers around one."""
    import torch

    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise CorruptWeightsError(
            f"{source} does not hold a CompressAI state dict",
            hint="pass a file saved with torch.save(model.state_dict(), path)",
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


#: The top-level modules (state-dict key prefixes) a checkpoint of each latent kind must
#: hold: the transforms, the entropy bottleneck and, for the hyperprior kinds, the hyper
#: transforms and the Gaussian conditional's tables.
REQUIRED_PARTS: Mapping[str, tuple[str, ...]] = {
    "factorized": ("g_a", "g_s", "entropy_bottleneck"),
    "scale-hyperprior": ("g_a", "g_s", "h_a", "h_s", "entropy_bottleneck", "gaussian_conditional"),
    "mean-scale-hyperprior": (
        "g_a", "g_s", "h_a", "h_s", "entropy_bottleneck", "gaussian_conditional",
    ),
}  # fmt: skip


def missing_parts(state_dict: Mapping[str, Any], kind: LatentKind) -> list[str]:
    """The parts of :data:`REQUIRED_PARTS` ``[kind]`` with no key in ``state_dict``, in
    that order (empty: all present)."""
    present = {k.split(".", 1)[0] for k in state_dict}
    return [p for p in REQUIRED_PARTS[kind] if p not in present]


def _check_parts(
    state_dict: Mapping[str, Any], kind: LatentKind, source: str, arch_id: str | None = None
) -> None:
    """Raise :class:`CorruptWeightsError` naming the parts ``kind`` needs that are absent
    (``arch_id``: the architecture asked for, named too)."""
    missing = missing_parts(state_dict, kind)
    if missing:
        who = f"{source} does not match architecture {arch_id}: it" if arch_id else source
        raise CorruptWeightsError(
            f"{who} has no {', '.join(missing)} weights (a {kind} model needs "
            f"{', '.join(REQUIRED_PARTS[kind])})",
            hint="the checkpoint is incomplete or of another architecture: check --model, "
            "or save the whole model with torch.save(model.state_dict(), path)",
        )


def infer_architecture(state_dict: Mapping[str, Any], source: str = "the checkpoint") -> str:
    """Guess the architecture id of a CompressAI state dict from its keys and shapes
    (``source`` names it in errors).

    Raises:
        UnknownModelError: an autoregressive checkpoint (mbt2018, cheng2020).
        CorruptWeightsError: a part the guessed kind needs is absent (e.g. ``h_a`` without
            ``h_s``), named in the message.
    """
    keys = set(state_dict)
    if not any(k.startswith(("h_a.", "h_s.")) for k in keys):
        _check_parts(state_dict, "factorized", source)
        return "bmshj2018-factorized"
    if any(
        k.startswith("context_prediction.") or k.startswith("entropy_parameters.") for k in keys
    ):
        raise UnknownModelError(
            "autoregressive checkpoints (mbt2018, cheng2020) are not supported",
            hint="use bmshj2018-factorized, bmshj2018-hyperprior or mbt2018-mean weights",
        )
    _check_parts(state_dict, "scale-hyperprior", source)  # both hyperprior kinds: same parts
    # ScaleHyperprior's h_s ends in M channels, MeanScaleHyperprior's in 2M.
    hs_last = max(
        (k for k in keys if k.startswith("h_s.") and k.endswith(".weight")),
        key=lambda k: int(k.split(".")[1]),
    )
    out_ch = state_dict[hs_last].shape[1]  # ConvTranspose/conv weights: [in, out] or [out, in]
    ga_last = max(
        (k for k in keys if k.startswith("g_a.") and k.endswith(".weight")),
        key=lambda k: int(k.split(".")[1]),
    )
    m = state_dict[ga_last].shape[0]
    candidates = {state_dict[hs_last].shape[0], out_ch}
    return "mbt2018-mean" if 2 * m in candidates else "bmshj2018-hyperprior"


def entropy_tables_sha256(net: CompressionModel) -> str:
    """Fingerprint of every table the rANS coder reads (CDFs, offsets, lengths, scales)."""
    h = hashlib.sha256()
    for name, buf in sorted(net.named_buffers()):
        if any(t in name for t in ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")):
            h.update(name.encode())
            h.update(buf.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_frozen(
    arch: Architecture, state_dict: dict[str, torch.Tensor], source: str
) -> tuple[CompressionModel, int, int]:
    """Build the model from weights, freeze it and build its CDF tables once; returns the
    network with its N and M (channel counts read from the weights).

    Raises:
        CorruptWeightsError: the weights do not fit ``arch`` (a part it needs, e.g. ``h_s``,
            is absent: named in the message).
    """
    import torch

    _check_parts(state_dict, arch.kind, source, arch.id)
    cls = arch.model_class()
    try:
        net = cls.from_state_dict(state_dict)
    except (RuntimeError, KeyError, IndexError, ValueError) as exc:
        raise CorruptWeightsError(
            f"{source} does not match architecture {arch.id}: {str(exc).splitlines()[0]}",
            hint="check --model, or re-export the checkpoint from that architecture",
        ) from exc
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    # CDF tables are part of the bitstream contract: build them in a fixed, single-threaded
    # float context so every process derives the same integers.
    with fixed_threads(1), torch.no_grad():
        net.update(force=True)
    n = int(state_dict["g_a.0.weight"].shape[0])
    ga_last = max(
        (k for k in state_dict if k.startswith("g_a.") and k.endswith(".weight")),
        key=lambda k: int(k.split(".")[1]),
    )
    m = int(state_dict[ga_last].shape[0])
    return net, n, m


def load_state_dict_bytes(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """The state dict in the checkpoint bytes ``data`` (``torch.load(weights_only=True)`` on
    the CPU; a ``{"state_dict": ...}`` wrapper and ``module.`` prefixes are removed).
    ``source`` names the file in errors.

    Raises:
        CorruptWeightsError: ``data`` is not a readable checkpoint, or holds no state dict.
    """
    import pickle

    import torch

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CorruptWeightsError(
            f"{source} is not a readable PyTorch checkpoint ({type(exc).__name__})",
            hint="the file is corrupt or truncated; download or export it again",
        ) from exc
    return _unwrap_state_dict(obj, source)


def load_model(
    arch_id: str | None = None,
    quality: Quality | None = None,
    checkpoint: str | None = None,
    *,
    expected_sha256: str | None = None,
    lmbda: float | None = None,
    device: str | None = None,
) -> LoadedModel:
    """Load a model ready for coding.

    With no ``checkpoint`` the shipped weights for ``(arch_id, quality)`` are used (defaults
    from ``cards.json``); a half step (``q + 0.5``) is the midpoint of the shipped ``q`` and
    ``q + 1`` (:func:`load_midpoint`, checked against ``expected_sha256`` too). With a
    ``checkpoint`` (a path, ``file://`` or ``s3://`` URI) the file must be a
    CompressAI-format state dict; ``arch_id`` is inferred when omitted.
    ``lmbda`` defaults to the card's, else :func:`zoo_lambda` of ``quality`` (0.0130 when
    the quality is unknown); ``device`` goes through :func:`resolve_device`.

    Raises:
        UnknownModelError: no model given and no shipped default, an unknown ``arch_id``,
            no shipped weights for ``(arch_id, quality)``, or an autoregressive checkpoint.
        WeightsMismatchError: the file's sha256 is not ``expected_sha256`` (or the card's).
        CorruptWeightsError: the file is not a readable state dict, or does not fit the
            architecture.
        ConfigError: ``quality`` outside 1..8 (with a ``checkpoint`` and no ``lmbda``), CUDA
            requested but absent, or a malformed checkpoint URI.
        StorageError: the checkpoint cannot be read (e.g. ObjectNotFoundError,
            AccessDeniedError).
    """
    cards = load_cards()
    card: dict[str, Any] | None = None
    if checkpoint is None and quality is not None and not float(quality).is_integer():
        mid = load_midpoint(arch_id or cards.get("default_arch") or "", quality, device=device)
        digest = mid.identity.weights_sha256
        if expected_sha256 is not None and digest != expected_sha256:
            raise WeightsMismatchError(
                f"{mid.source} has sha256 {digest[:16]}…, expected {expected_sha256[:16]}…",
                hint="the shipped weights differ between machines: install the same release",
            )
        return mid
    if checkpoint is None:
        arch_id = arch_id or cards.get("default_arch")
        if arch_id is None:
            raise _no_weights_error()
        get_architecture(arch_id)
        available = shipped_qualities(arch_id)
        if quality is None:
            quality = cards.get("default_quality") if arch_id == cards.get("default_arch") else None
            if quality is None and available:
                quality = available[len(available) // 2]
        card = find_card(arch_id, quality) if quality is not None else None
        if card is None:
            raise UnknownModelError(
                f"no shipped weights for {arch_id}"
                + (f" q{quality}" if quality is not None else ""),
                hint=(
                    f"shipped qualities for {arch_id}: {available or 'none'}; "
                    "or pass --checkpoint PATH with your own CompressAI weights"
                ),
            )
        checkpoint = str(WEIGHTS_DIR / card["file"])
        expected_sha256 = expected_sha256 or card["sha256"]
        lmbda = lmbda if lmbda is not None else float(card["lambda"])

    data, digest = _read_checked(checkpoint, expected_sha256)
    state = load_state_dict_bytes(data, checkpoint)
    if arch_id is None:
        arch_id = infer_architecture(state, checkpoint)
    arch = get_architecture(arch_id)
    if quality is None:
        quality = 0
    if lmbda is None:
        lmbda = zoo_lambda(quality) if quality else 0.0130
    net, n, m = build_frozen(arch, state, checkpoint)
    identity = ModelIdentity(
        arch=arch.id,
        quality=int(quality),
        lmbda=float(lmbda),
        weights_sha256=digest,
        tables_sha256=entropy_tables_sha256(net),
    )
    loaded = LoadedModel(arch, net, identity, n, m, checkpoint, card or {})
    if device is not None:
        loaded.to(resolve_device(device))
    return loaded


def _read_checked(uri: str, expected_sha256: str | None) -> tuple[bytes, str]:
    """The bytes of the weights file ``uri`` and their sha256, checked against
    ``expected_sha256`` when given.

    Raises:
        WeightsMismatchError: another sha256.
        StorageError: the file cannot be read.
    """
    data = _read_bytes(uri)
    digest = sha256_bytes(data)
    if expected_sha256 and digest != expected_sha256:
        raise WeightsMismatchError(
            f"weights {uri} have sha256 {digest[:16]}…, expected {expected_sha256[:16]}…",
            hint="the file was modified or is not the one its model card describes; restore it",
        )
    return data, digest


def load_midpoint(arch_id: str, quality: float, *, device: str | None = None) -> LoadedModel:
    """The midpoint rate point ``quality`` (``q + 0.5``) of ``arch_id``: the shipped models
    ``q`` and ``q + 1`` averaged (:func:`midpoint_state_dict`), at the geometric mean of
    their lambdas; identified by :func:`state_dict_sha256` of the averaged weights.

    Raises:
        ConfigError: ``quality`` is not a half step.
        UnknownModelError: ``q`` or ``q + 1`` has no shipped weights for ``arch_id``.
        WeightsMismatchError, CorruptWeightsError: as :func:`load_model`.
    """
    import math

    q = float(quality)
    if not (q - 0.5).is_integer():
        raise ConfigError(
            f"quality {quality} is neither a shipped quality nor a midpoint (q + 0.5)",
            hint=f"use one of {rate_point_qualities(arch_id) if arch_id else 'the shipped ones'}",
        )
    lo, hi = int(q - 0.5), int(q + 0.5)
    arch = get_architecture(arch_id)
    found = [find_card(arch_id, x) for x in (lo, hi)]
    cards = [c for c in found if c is not None]
    if len(cards) < 2:
        raise UnknownModelError(
            f"no midpoint q{q} for {arch_id}: it needs the shipped q{lo} and q{hi}",
            hint=f"rate points of {arch_id}: {rate_point_qualities(arch_id) or 'none'}",
        )
    paths = [str(WEIGHTS_DIR / c["file"]) for c in cards]
    states = [
        load_state_dict_bytes(_read_checked(path, c["sha256"])[0], path)
        for path, c in zip(paths, cards, strict=True)
    ]  # each neighbour's file read once, checked against its card; no model built for it
    state = midpoint_state_dict(*states)
    source = f"midpoint of {paths[0]} and {paths[1]}"
    net, n, m = build_frozen(arch, state, source)
    identity = ModelIdentity(
        arch=arch.id,
        quality=q,
        lmbda=math.sqrt(float(cards[0]["lambda"]) * float(cards[1]["lambda"])),
        weights_sha256=state_dict_sha256(state),
        tables_sha256=entropy_tables_sha256(net),
    )
    card = {"arch": arch.id, "quality": q, "lambda": identity.lmbda, "midpoint_of": [lo, hi]}
    loaded = LoadedModel(arch, net, identity, n, m, source, card)
    if device is not None:
        loaded.to(resolve_device(device))
    return loaded


@contextmanager
def fixed_threads(n: int = 1) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, restoring the previous count after.

    Float convolutions on the CPU give different last bits for different thread counts;
    everything whose result must be bit-reproducible (entropy tables, the encoder, the
    hyperprior index path) runs inside this."""
    import torch

    prev = torch.get_num_threads()
    if prev != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if prev != n:
            torch.set_num_threads(prev)


def _no_weights_error() -> UnknownModelError:
    return UnknownModelError(
        "no model given and no shipped default weights are installed",
        hint="pass --model and --checkpoint, or reinstall relatent with its weights",
    )


def resolve_device(device: str | None = None) -> torch.device:
    """``auto`` (or None) picks CUDA when present, else the CPU.

    Raises:
        ConfigError: a ``cuda`` device is requested but CUDA is not available.
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested but CUDA is not available",
            hint="use --device cpu or auto",
        )
    return torch.device(device)


def random_model(arch_id: str, N: int = 16, M: int = 24, seed: int = 0) -> LoadedModel:
    """A small randomly initialised model for tests of the mechanics (never for quality).

    Raises:
        UnknownModelError: ``arch_id`` is not registered.
    """
    import torch

    arch = get_architecture(arch_id)
    torch.manual_seed(seed)
    net = arch.model_class()(N=N, M=M)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    data = buf.getvalue()
    state = load_state_dict_bytes(data, f"<random {arch_id}>")
    net, n, m = build_frozen(arch, state, f"<random {arch_id}>")
    identity = ModelIdentity(
        arch_id, 1, ZOO_LAMBDAS[0], sha256_bytes(data), entropy_tables_sha256(net)
    )
    return LoadedModel(arch, net, identity, n, m, f"<random {arch_id}>")
