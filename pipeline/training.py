"""Training of the fixed codec models (the networks refinement later leaves untouched).

The recipe is CompressAI's: loss = lambda * 255^2 * MSE + bpp on random crops with flips,
Adam on the network parameters, a separate Adam on the entropy bottleneck quantiles
(the aux loss), gradient clipping, and a learning-rate schedule. A run lives in a folder:

    run_dir/
      config.json         the TrainConfig the run started with
      last.pt             full resumable state (weights, both optimisers, RNG states, step)
      snapshots/step-N.pth   weights only, every ``snapshot_every`` steps (for curves)
      log.jsonl           one line per ``log_every`` steps: step, loss, bpp, psnr, lr

Running ``train`` again on the same folder resumes from ``last.pt`` and continues the same
run; the data order after resuming is the one an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, InputError
from pipeline.models import get_architecture

__all__ = [
    "IMAGE_SUFFIXES",
    "QUANT_MODES",
    "VIDEO_SUFFIXES",
    "TrainConfig",
    "TrainState",
    "batches",
    "describe_init",
    "export_weights",
    "load_training_images",
    "lr_at",
    "mixed_forward",
    "rd_loss",
    "ship_run",
    "train",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".y4m"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Frozen: a resumed run must match it."""

    arch: str = "bmshj2018-factorized"
    N: int = 64
    M: int = 96
    lmbda: float = 0.0067
    data: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    crop: int = 128
    batch: int = 8
    lr: float = 1e-3
    aux_lr: float = 1e-3
    lr_schedule: str = "cosine"  # "constant" | "cosine"
    lr_min_ratio: float = 0.05
    warmup_steps: int = 200
    total_steps: int = 20000
    clip: float = 1.0
    seed: int = 0
    frames_per_video: int = 32
    init_from: str | None = None
    #: "noise": CompressAI's recipe, the decoder sees y plus uniform noise. "mixed": the
    #: rate still uses the noisy likelihoods, but the decoder sees the rounded latent it
    #: gets at coding time (straight-through gradient), which removes the train/test
    #: mismatch of the distortion term (Minnen & Singh 2020).
    quant: str = "noise"
    log_every: int = 100
    checkpoint_every: int = 250
    snapshot_every: int = 2000

    def validate(self) -> None:
        """Check the settings.

        Raises:
            UnknownModelError: ``arch`` is not a registered architecture.
            ConfigError: ``crop`` is not a multiple of 64, ``batch`` or ``total_steps`` < 1,
                or an unknown ``lr_schedule`` or ``quant``.
        """
        get_architecture(self.arch)
        if self.crop % 64:
            raise ConfigError(
                f"crop {self.crop} is not a multiple of 64", hint="use 64, 128, 192 or 256"
            )
        if self.batch < 1 or self.total_steps < 1:
            raise ConfigError("batch and total_steps must be positive")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(
                f"unknown lr schedule {self.lr_schedule!r}", hint="use constant or cosine"
            )
        if self.quant not in QUANT_MODES:
            raise ConfigError(
                f"unknown quantisation {self.quant!r}", hint=f"use one of {', '.join(QUANT_MODES)}"
            )


QUANT_MODES = ("noise", "mixed")


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to ``lr_min_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
    lo = cfg.lr * cfg.lr_min_ratio
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * t))


# --------------------------------------------------------------------------- data


def _list_sources(paths: Sequence[str], exclude: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        root = Path(p)
        if not root.exists():
            raise InputError(
                f"training data {p} does not exist", hint="pass a folder of images or videos"
            )
        candidates = [root] if root.is_file() else sorted(q for q in root.rglob("*") if q.is_file())
        for q in candidates:
            if q.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                continue
            if any(part in exclude for part in q.parts):
                continue
            files.append(q)
    if not files:
        raise InputError(
            f"no images or videos found under {list(paths)}", hint="check the --data folders"
        )
    return files


def load_training_images(cfg: TrainConfig) -> list[np.ndarray]:
    """Decode every training image (and ``frames_per_video`` frames per video) to
    ``[H, W, 3]`` uint8 RGB, leaving out those smaller than ``crop`` on either side.

    Raises:
        InputError: a ``data`` path does not exist, no image or video is found, or none is
            at least ``crop`` pixels on its short side; or a video is unusable (its
            subclasses, from :func:`pipeline.media.probe` and ``read_frames``).
    """
    from PIL import Image

    images: list[np.ndarray] = []
    for f in _list_sources(cfg.data, cfg.exclude):
        if f.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"))
            if min(arr.shape[:2]) >= cfg.crop:
                images.append(arr)
        else:
            from pipeline.media import probe, read_frames

            info = probe(str(f))
            step = max(1, info.frame_count // cfg.frames_per_video)
            for fr in read_frames(str(f), 0, info.frame_count):
                if fr.index % step == 0 and min(fr.rgb.shape[:2]) >= cfg.crop:
                    images.append(np.round(fr.rgb * 255).astype(np.uint8))
    if not images:
        raise InputError("no training image is at least as large as the crop", hint="lower --crop")
    return images


def batches(
    images: Sequence[np.ndarray], cfg: TrainConfig, start_step: int
) -> Iterator[np.ndarray]:
    """Endless ``[batch, crop, crop, 3]`` uint8 batches of random crops with horizontal and
    vertical flips, from step ``start_step`` on; batch k depends only on (seed, k)."""
    step = start_step
    c = cfg.crop
    while True:
        rng = np.random.default_rng([cfg.seed, step])
        out = np.empty((cfg.batch, c, c, 3), dtype=np.uint8)
        for i in range(cfg.batch):
            img = images[rng.integers(len(images))]
            h, w = img.shape[:2]
            y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
            crop = img[y : y + c, x : x + c]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if rng.random() < 0.5:
                crop = crop[::-1]
            out[i] = crop
        yield out
        step += 1


# --------------------------------------------------------------------------- state


@dataclass
class TrainState:
    """A run's progress: the optimisation ``step`` reached and the log records written
    by this call of :func:`train` (``history``, as in log.jsonl)."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _ste_round(v: Any, offset: Any) -> Any:
    """round(v - offset) + offset in the forward pass, identity in the backward pass."""
    import torch

    q = torch.round(v - offset) + offset
    return v + (q - v).detach()


def mixed_forward(net: Any, x: Any, kind: str) -> dict[str, Any]:
    """The model's forward pass with the rate from noisy likelihoods and the distortion from
    the latent as coding rounds it (medians for the factorized prior, the predicted means for
    the mean-scale hyperprior, zero for the scale hyperprior)."""
    y = net.g_a(x)
    if kind == "factorized":
        _, y_lik = net.entropy_bottleneck(y)
        medians = net.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
        x_hat = net.g_s(_ste_round(y, medians))
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik}}
    import torch

    z = net.h_a(torch.abs(y) if kind == "scale-hyperprior" else y)
    z_hat, z_lik = net.entropy_bottleneck(z)
    params = net.h_s(z_hat)
    if kind == "scale-hyperprior":
        _, y_lik = net.gaussian_conditional(y, params)
        y_hat = _ste_round(y, torch.zeros_like(y))
    else:
        scales, means = params.chunk(2, 1)
        _, y_lik = net.gaussian_conditional(y, scales, means=means)
        y_hat = _ste_round(y, means.detach())
    return {"x_hat": net.g_s(y_hat), "likelihoods": {"y": y_lik, "z": z_lik}}


def rd_loss(
    net: Any, x: Any, lmbda: float, *, quant: str = "noise", kind: str = "factorized"
) -> dict[str, Any]:
    """CompressAI's RateDistortionLoss for MSE: lambda * 255^2 * MSE + bpp, for ``x``
    ``[B, 3, H, W]`` float32 in [0, 1]; bpp = -sum log2(likelihoods) / (B * H * W), MSE on
    [0, 1]. Returns scalar tensors ``loss``, ``bpp`` and ``mse``. ``quant="mixed"`` uses
    :func:`mixed_forward` (the model's ``kind`` needed), else the model's noisy forward."""
    import torch

    out = net(x) if quant == "noise" else mixed_forward(net, x, kind)
    n, _, h, w = x.shape
    num_pixels = n * h * w
    bpp = sum(torch.log(lk).sum() for lk in out["likelihoods"].values()) / (
        -math.log(2) * num_pixels
    )
    mse = torch.mean((out["x_hat"] - x) ** 2)
    loss = lmbda * 255**2 * mse + bpp
    return {"loss": loss, "bpp": bpp, "mse": mse}


def _check_resumable(run: Path, cfg: TrainConfig) -> None:
    """Refuse to resume ``run`` with settings that change what it trains."""
    saved = json.loads((run / "config.json").read_text())
    mismatched = {
        k
        for k in ("arch", "N", "M", "lmbda", "crop", "batch", "seed", "quant")
        if saved.get(k, TrainConfig.quant if k == "quant" else None) != asdict(cfg)[k]
    }
    if mismatched:
        raise ConfigError(
            f"run {run} was started with different {sorted(mismatched)}",
            hint="use a new --run-dir, or the same settings to resume",
        )


def _init_weights(net: Any, run: Path, init_from: str) -> None:
    """Load ``init_from`` into ``net`` (a warm start) and record its lineage in init.json."""
    from pipeline.models import load_state_dict_bytes

    with Path(init_from).open("rb") as f:
        raw = f.read()
    sd = load_state_dict_bytes(raw, init_from)
    missing = net.load_state_dict(sd, strict=False)
    if missing.missing_keys:
        raise ConfigError(f"--init-from {init_from} lacks {missing.missing_keys[:3]}")
    (run / "init.json").write_text(json.dumps(describe_init(init_from, raw), indent=2))


class _Run:
    """One training run's model, optimisers, step and running averages (a :func:`train`
    helper; the order of RNG use is that of the original single function)."""

    def __init__(self, cfg: TrainConfig, run: Path, dev: Any) -> None:
        import torch

        self.cfg, self.run, self.dev = cfg, run, dev
        self.arch = get_architecture(cfg.arch)
        torch.manual_seed(cfg.seed)
        self.net = self.arch.model_class()(N=cfg.N, M=cfg.M).to(dev)
        named = list(self.net.named_parameters())
        self.params = [p for n, p in named if not n.endswith(".quantiles")]
        aux_params = [p for n, p in named if n.endswith(".quantiles")]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
        self.state = TrainState()
        self.acc: dict[str, float] = dict.fromkeys(("loss", "bpp", "mse", "aux"), 0.0)
        self.n_acc = 0

    @property
    def last(self) -> Path:
        return self.run / "last.pt"

    def restore_or_start(self) -> None:
        """Resume from ``last.pt`` (same settings only), or start: warm start and config.json."""
        import torch

        if self.last.exists():
            _check_resumable(self.run, self.cfg)
            ckpt = torch.load(self.last, map_location=self.dev, weights_only=True)
            self.net.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
            self.aux_opt.load_state_dict(ckpt["aux_optimizer"])
            self.state.step = int(ckpt["step"])
            torch.set_rng_state(ckpt["torch_rng"])
            return
        if self.cfg.init_from:
            _init_weights(self.net, self.run, self.cfg.init_from)
        (self.run / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))

    def checkpoint(self) -> None:
        import torch

        _atomic_torch_save(
            {
                "step": self.state.step,
                "model": self.net.state_dict(),
                "optimizer": self.opt.state_dict(),
                "aux_optimizer": self.aux_opt.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            self.last,
        )

    def step(self, batch: Any) -> None:
        """One optimisation step (main loss, then the aux loss) on a uint8 NHWC batch."""
        import torch

        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = lr_at(cfg, self.state.step)
        x = torch.from_numpy(batch).to(self.dev).permute(0, 3, 1, 2).float().div_(255.0)
        self.opt.zero_grad(set_to_none=True)
        self.aux_opt.zero_grad(set_to_none=True)
        out = rd_loss(self.net, x, cfg.lmbda, quant=cfg.quant, kind=self.arch.kind)
        out["loss"].backward()
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.clip)
        self.opt.step()
        aux = self.net.aux_loss()
        aux.backward()
        self.aux_opt.step()
        self.state.step += 1
        for k in ("loss", "bpp", "mse"):
            self.acc[k] += out[k].item()
        self.acc["aux"] += aux.item()
        self.n_acc += 1

    def log_record(self) -> dict[str, Any]:
        """The averages since the last record (appended to log.jsonl); resets them."""
        acc, n = self.acc, self.n_acc
        rec = {
            "step": self.state.step,
            "loss": acc["loss"] / n,
            "bpp": acc["bpp"] / n,
            "psnr": 10 * math.log10(1.0 / max(acc["mse"] / n, 1e-12)),
            "aux": acc["aux"] / n,
            "lr": lr_at(self.cfg, self.state.step - 1),
            "time": time.time(),
        }
        with (self.run / "log.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        self.state.history.append(rec)
        self.acc = dict.fromkeys(acc, 0.0)
        self.n_acc = 0
        return rec


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    device: str | None = None,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainState:
    """Train (or resume) the run in ``run_dir`` until ``total_steps``, ``max_steps`` more
    steps, or ``max_seconds`` of wall time, whichever comes first.

    The run folder holds ``config.json``, ``last.pt`` (checkpointed every
    ``checkpoint_every`` steps, on Ctrl-C and at the end), ``log.jsonl`` (every
    ``log_every`` steps: loss, bpp, PSNR in dB, aux loss, lr) and ``snapshots/``.
    Loss: CompressAI's ``lambda * 255^2 * MSE + bpp`` (:func:`rd_loss`).

    Raises:
        ConfigError: the settings are invalid, differ from the run being resumed, or
            ``init_from`` lacks weights the model needs.
        ModelError: ``arch`` is unknown, or ``init_from`` is not a readable state dict.
        InputError: the training data is missing, empty or unusable
            (:func:`load_training_images`).
    """
    from pipeline.models import resolve_device

    cfg.validate()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    r = _Run(cfg, run, resolve_device(device))
    r.restore_or_start()
    state = r.state
    data = batches(load_training_images(cfg), cfg, state.step)
    r.net.train()
    t0 = time.monotonic()
    target = cfg.total_steps if max_steps is None else min(cfg.total_steps, state.step + max_steps)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=target, initial=state.step, unit="step", dynamic_ncols=True)
    try:
        while state.step < target:
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                break
            r.step(next(data))
            if bar is not None:
                bar.update(1)
            if state.step % cfg.log_every == 0:
                rec = r.log_record()
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{rec['loss']:.3f}",
                        bpp=f"{rec['bpp']:.3f}",
                        psnr=f"{rec['psnr']:.2f}",
                    )
                if on_log:
                    on_log(rec)
            if state.step % cfg.checkpoint_every == 0:
                r.checkpoint()
            if cfg.snapshot_every and state.step % cfg.snapshot_every == 0:
                _atomic_torch_save(
                    r.net.state_dict(), run / "snapshots" / f"step-{state.step:07d}.pth"
                )
    except KeyboardInterrupt:
        r.checkpoint()  # an interrupted run resumes from exactly where it stopped
        raise
    finally:
        if bar is not None:
            bar.close()
    r.checkpoint()
    return state


def _run_lineage(run: Path, step: int) -> dict[str, Any]:
    """The steps a run's weights at ``step`` embody, with its warm-start chain."""
    info: dict[str, Any] = {"steps": step, "lineage": [{"run": run.name, "steps": step}]}
    prior = run / "init.json"
    if prior.exists():
        up = json.loads(prior.read_text())
        info["lineage"] += up.get("lineage", [])
        info["steps"] = None if up.get("steps") is None else step + int(up["steps"])
    return info


def export_weights(
    run_dir: str | Path,
    out: str | Path,
    snapshot: str | Path | None = None,
    *,
    sidecar: bool = True,
) -> str:
    """Write the run's current (or a snapshot's) weights as a CompressAI state dict with
    built CDF tables; return its sha256. With ``sidecar``, ``<out>.lineage.json`` records
    the training steps the weights embody, for runs that later start from them.

    Raises:
        InputError: ``run_dir`` is not a training run, or ``snapshot`` does not exist.
        UnknownModelError: the run's architecture is not registered.
        CorruptWeightsError: the weights do not fit the architecture.
    """
    import io

    import torch

    from pipeline.models import build_frozen, sha256_bytes

    run = Path(run_dir)
    if not (run / "config.json").exists() or not (run / "last.pt").exists():
        raise InputError(
            f"{run} is not a training run (no config.json and last.pt)",
            hint="pass the --run-dir of relatent train",
        )
    if snapshot is not None and not Path(snapshot).is_file():
        raise InputError(
            f"snapshot {snapshot} does not exist",
            hint=f"pick one of {run / 'snapshots'}/step-*.pth",
        )
    cfg = json.loads((run / "config.json").read_text())
    if snapshot is None:
        ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        sd, step = ckpt["model"], int(ckpt["step"])
    else:
        sd = torch.load(snapshot, map_location="cpu", weights_only=True)
        step = int(Path(snapshot).stem.split("-")[-1])
    net, _, _ = build_frozen(get_architecture(cfg["arch"]), sd, str(run))
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    data = buf.getvalue()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    digest = sha256_bytes(data)
    if sidecar:
        side = out.with_name(out.name + ".lineage.json")
        side.with_name(side.name + ".tmp").write_text(
            json.dumps({"sha256": digest, **_run_lineage(run, step)}, indent=2)
        )
        side.with_name(side.name + ".tmp").replace(side)
    tmp.replace(out)
    return digest


def describe_init(path: str | Path, data: bytes) -> dict[str, Any]:
    """Where a warm-started run's weights came from, and how many training steps they
    already embody: an export (its ``.lineage.json`` sidecar, or the run folder it sits in)
    or a shipped file (its model card's steps). Written to ``init.json`` when the run starts,
    so the lineage survives the source being replaced or deleted. ``steps`` is None when
    unknown."""
    from pipeline.models import load_cards, sha256_bytes

    src = Path(path)
    digest = sha256_bytes(data)
    info: dict[str, Any] = {"path": str(src), "sha256": digest, "steps": None, "lineage": []}
    side = src.with_name(src.name + ".lineage.json")
    if side.exists():
        rec = json.loads(side.read_text())
        if rec.get("sha256") == digest:
            info.update(steps=rec["steps"], lineage=rec["lineage"])
            return info
    parent = src.parent
    if (parent / "last.pt").exists() and (parent / "config.json").exists():
        import torch

        step = int(torch.load(parent / "last.pt", map_location="cpu", weights_only=True)["step"])
        info.update(_run_lineage(parent, step))
        return info
    for card in load_cards()["models"]:
        if card.get("sha256") == digest:
            steps = int(card.get("steps", 0)) + int(card.get("init_steps", 0))
            info["steps"] = steps
            info["lineage"] = [
                {
                    "shipped": f"{card['arch']}-q{card['quality']}",
                    "sha256": digest[:8],
                    "steps": steps,
                }
            ]
    return info


def ship_run(
    run_dir: str | Path, quality: int, *, data_description: str, default: bool = False
) -> dict[str, Any]:
    """Export a run's weights into the package (``pipeline/weights``) with its model card
    (upserted into cards.json; with ``default``, made the default model); returns the card.

    Raises:
        UnknownModelError, CorruptWeightsError: as :func:`export_weights`.
    """
    from pipeline.models import WEIGHTS_DIR, load_cards, save_cards, upsert_card

    run = Path(run_dir)
    cfg = json.loads((run / "config.json").read_text())
    import torch

    steps = int(torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"])
    history: list[dict[str, Any]] = []
    init_steps = 0
    if (run / "init.json").exists():  # warm-started: count the steps its weights embody
        lineage = json.loads((run / "init.json").read_text())
        history = lineage.get("lineage", [])
        init_steps = int(lineage.get("steps") or 0)
    elif cfg.get("init_from"):  # runs from before init.json: the base run's current step
        base_cfg = Path(cfg["init_from"]).parent / "last.pt"
        if base_cfg.exists():
            history.append(
                {
                    "run": str(Path(cfg["init_from"]).parent.name),
                    "steps": int(
                        torch.load(base_cfg, map_location="cpu", weights_only=True)["step"]
                    ),
                }
            )
            init_steps = history[0]["steps"]
    fname = f"{cfg['arch']}-q{quality}.pth"
    digest = export_weights(run, WEIGHTS_DIR / fname, sidecar=False)
    card = {
        "arch": cfg["arch"],
        "quality": quality,
        "lambda": cfg["lmbda"],
        "N": cfg["N"],
        "M": cfg["M"],
        "file": fname,
        "sha256": digest,
        "steps": steps,
        "init_steps": init_steps,
        "training": {
            "data": data_description,
            "crop": cfg["crop"],
            "batch": cfg["batch"],
            "lr": cfg["lr"],
            "lr_schedule": cfg["lr_schedule"],
            "quant": cfg.get("quant", "noise"),
            "seed": cfg["seed"],
            "init_from": history,
        },
    }
    upsert_card(card)
    if default:
        cards = load_cards()
        cards["default_arch"], cards["default_quality"] = cfg["arch"], quality
        save_cards(cards)
    return card
