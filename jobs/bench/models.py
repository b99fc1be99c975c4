"""``relatent bench models``: the shipped models on Kodak against JPEG, and training curves.

Measures, in one run on this machine:

* every shipped rate point (unrefined, ``--refine none``) on the 24 Kodak images at full
  size: bpp from the actual packet bytes, RGB PSNR, Y PSNR, MS-SSIM (per-image averages);
* JPEG (Pillow/libjpeg, 4:2:0) over a quality sweep restricted to the same bpp range;
* BD-rate of each architecture's curve against JPEG (RGB PSNR and MS-SSIM, pchip);
* optionally, for the snapshots of training runs (``--runs``): PSNR gain over JPEG at the
  same rate, against training steps (what more training buys).

Writes ``models.json``, ``models.md``, ``models_rd.png`` and ``models_training.png`` under
``--out`` and records each rate point's Kodak result in its model card.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench.lib import (
    bd_rate,
    jpeg_point,
    load_images,
    machine_info,
    mean_point,
    rate_change_at_quality,
)
from pipeline.errors import InputError

__all__ = [
    "COMPRESSAI_PUBLISHED",
    "JPEG_QUALITIES",
    "add_parser",
    "cmd_models",
    "model_point",
    "models_markdown",
    "psnr_gain_over",
    "run",
    "write_outputs",
]

#: CompressAI's published Kodak points (bpp, RGB PSNR), from ../shared/REFERENCE.md.
COMPRESSAI_PUBLISHED = {
    "bmshj2018-factorized": [(0.123, 26.91), (0.440, 31.28), (0.967, 35.38)],
    "mbt2018-mean": [(0.124, 27.70), (0.461, 32.95), (0.914, 36.91)],
}
#: Pillow quality 1 gives the same file as 2 (the tables saturate); 2-4 reach down to ~0.16 bpp.
JPEG_QUALITIES = (2, 3, 4, *range(5, 100, 5))


def model_point(model: Any, images: list[tuple[str, np.ndarray]]) -> dict[str, float]:
    """Mean bpp, RGB / Y PSNR (dB) and MS-SSIM of ``model`` unrefined over ``images``
    ((name, HxWx3 uint8) pairs)."""
    from pipeline.codec import FrameEncoder
    from pipeline.config import RefineConfig

    enc = FrameEncoder(model, RefineConfig(method="none"))
    pts = []
    for _, img in images:
        s = enc.encode([img.astype(np.float32) / 255.0], [0], [0])[0].stats
        pts.append({k: float(getattr(s, k)) for k in ("bpp", "psnr", "psnr_y", "ms_ssim")})
    return mean_point(pts)


def psnr_gain_over(anchor: list[dict[str, float]], bpp: float, psnr: float) -> float | None:
    """PSNR (dB) above the ``anchor`` curve at the same rate (pchip in log-rate); None
    outside the anchor's rate range."""
    from scipy.interpolate import PchipInterpolator

    a = sorted(anchor, key=lambda p: p["bpp"])
    x = np.log([p["bpp"] for p in a])
    if not x[0] <= math.log(bpp) <= x[-1]:
        return None
    return float(psnr - PchipInterpolator(x, [p["psnr"] for p in a])(math.log(bpp)))


def run(
    kodak: Path, out: Path, runs: list[Path], limit: int | None, update_cards: bool
) -> dict[str, Any]:
    """Measure every shipped rate point and the JPEG sweep on the Kodak images (the first
    ``limit``), BD-rates against JPEG, and each snapshot of the training ``runs``; write
    models.json / models.md / models_rd.png / models_training.png under ``out``; with
    ``update_cards`` record each rate point's result in its model card. Returns the results.

    Raises:
        InputError: no PNG in ``kodak``.
        ModelError: a shipped model or snapshot does not load.
    """
    t0 = time.perf_counter()
    images = load_images(kodak, limit)
    results: dict[str, Any] = {
        "machine": machine_info(),
        "images": [n for n, _ in images],
        "models": {},
        "jpeg": [],
    }
    results["models"] = shipped_points(images, update_cards, results["machine"]["date"])
    results["jpeg"], results["jpeg_used"] = jpeg_curve(images, results["models"])
    results.update(bd_rates(results["jpeg_used"], results["models"]))
    results["training"] = training_points(runs, images, results["jpeg"])
    results["seconds"] = time.perf_counter() - t0
    write_outputs(results, out)
    return results


def shipped_points(
    images: list[tuple[str, np.ndarray]], update_cards: bool, date: str
) -> dict[str, list[dict[str, Any]]]:
    """arch -> one :func:`model_point` per shipped rate point (with quality, training steps
    and sha256); with ``update_cards`` each result is saved in its model card.

    Raises:
        ModelError: a shipped model does not load.
    """
    from pipeline.models import load_cards, load_model, save_cards

    cards = load_cards()
    models: dict[str, list[dict[str, Any]]] = {}
    for card in cards["models"]:
        model = load_model(card["arch"], int(card["quality"]), device="cpu")
        p = model_point(model, images)
        p.update(
            quality=int(card["quality"]),
            steps=card.get("steps", 0) + card.get("init_steps", 0),
            sha256=card["sha256"],
        )
        models.setdefault(card["arch"], []).append(p)
        print(
            f"{card['arch']} q{card['quality']}: {p['bpp']:.4f} bpp, {p['psnr']:.2f} dB, MS-SSIM {p['ms_ssim']:.4f}"
        )
        if update_cards:
            card["kodak"] = {
                "images": len(images),
                "bpp": round(p["bpp"], 4),
                "psnr": round(p["psnr"], 3),
                "psnr_y": round(p["psnr_y"], 3),
                "ms_ssim": round(p["ms_ssim"], 5),
                "measured_by": "relatent bench models",
                "date": date,
            }
    if update_cards and cards["models"]:
        save_cards(cards)
    return models


def jpeg_curve(
    images: list[tuple[str, np.ndarray]], models: dict[str, list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The JPEG sweep (:data:`JPEG_QUALITIES`, per-image means) and the points of it used
    for BD-rate: those within 0.7x-1.4x of the models' bpp range plus one on each side."""
    ours = [p for pts in models.values() for p in pts]
    lo = min((p["bpp"] for p in ours), default=0.1) * 0.7
    hi = max((p["bpp"] for p in ours), default=1.5) * 1.4
    jpeg = []
    for q in JPEG_QUALITIES:
        p = mean_point([jpeg_point(img, q) for _, img in images])
        p["quality"] = q
        jpeg.append(p)
    in_range = [p for p in jpeg if lo <= p["bpp"] <= hi]
    # keep one point on each side of the range so the curves overlap fully
    below = [p for p in jpeg if p["bpp"] < lo]
    above = [p for p in jpeg if p["bpp"] > hi]
    return jpeg, ([below[-1]] if below else []) + in_range + ([above[0]] if above else [])


def bd_rates(
    jpeg_used: list[dict[str, Any]], models: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """BD-rates (%) against JPEG: each architecture's curve (RGB PSNR and MS-SSIM), each
    pair of neighbouring rate points, and CompressAI's published points."""
    return {
        "bd_rate_vs_jpeg": {
            arch: {
                "psnr": bd_rate(jpeg_used, pts),
                "ms_ssim": bd_rate(jpeg_used, pts, "ms_ssim"),
            }
            for arch, pts in models.items()
        },
        # where on the rate axis the gain is: BD-rate between each pair of neighbouring rate points
        "bd_rate_segments_vs_jpeg": {
            arch: [
                {
                    "qualities": [a["quality"], b["quality"]],
                    "psnr": bd_rate(jpeg_used, [a, b]),
                }
                for a, b in itertools.pairwise(sorted(pts, key=lambda p: p["bpp"]))
            ]
            for arch, pts in models.items()
        },
        # the anchor, measured against the same JPEG curve: CompressAI's published points
        # (fully trained, N=128/M=192) over the overlap with this run's JPEG sweep
        "bd_rate_published_vs_jpeg": {
            arch: bd_rate(jpeg_used, [{"bpp": b, "psnr": v} for b, v in pts])
            for arch, pts in COMPRESSAI_PUBLISHED.items()
            if arch in models
        },
    }


def training_points(
    runs: list[Path], images: list[tuple[str, np.ndarray]], jpeg: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One :func:`model_point` per snapshot of each training run, with its step (and the
    warm start's steps), PSNR gain over JPEG at its rate and rate against JPEG at its PSNR.

    Raises:
        ModelError: a snapshot does not load.
    """
    from pipeline.models import load_model

    training = []
    for rd in runs:
        snaps = sorted((rd / "snapshots").glob("step-*.pth"))
        cfg = json.loads((rd / "config.json").read_text())
        init = (
            json.loads((rd / "init.json").read_text())
            if (rd / "init.json").exists()
            else {"steps": 0}
        )
        for snap in snaps:
            model = load_model(cfg["arch"], 0, str(snap), lmbda=cfg["lmbda"], device="cpu")
            p = model_point(model, images)
            step = int(snap.stem.split("-")[1])
            p.update(
                run=rd.name,
                step=step,
                lmbda=cfg["lmbda"],
                total_steps=None if init.get("steps") is None else step + int(init["steps"]),
                gain_db=psnr_gain_over(jpeg, p["bpp"], p["psnr"]),
                rate_vs_jpeg=rate_change_at_quality(jpeg, p),
            )
            training.append(p)
            print(
                f"{rd.name} step {step}: {p['bpp']:.4f} bpp {p['psnr']:.2f} dB (vs JPEG {p['gain_db']} dB, {p['rate_vs_jpeg']}% rate)"
            )
    return training


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """Write ``models.json``, ``models_rd.png``, ``models_training.png`` (with training
    runs) and ``models.md`` under ``out`` (created)."""
    import matplotlib

    matplotlib.use("Agg")

    out.mkdir(parents=True, exist_ok=True)
    (out / "models.json").write_text(json.dumps(results, indent=2) + "\n")
    _plot_rd(results, out / "models_rd.png")
    if results["training"]:
        _plot_training(results, out / "models_training.png")
    (out / "models.md").write_text(models_markdown(results))


def _plot_rd(results: dict[str, Any], path: Path) -> None:
    """RGB PSNR and MS-SSIM against bpp: JPEG, the shipped models, CompressAI's points."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axes[0], "psnr", "RGB PSNR (dB)"), (axes[1], "ms_ssim", "MS-SSIM")):
        j = results["jpeg"]
        ax.plot(
            [p["bpp"] for p in j], [p[key] for p in j], "k--o", ms=3, label="JPEG 4:2:0 (Pillow)"
        )
        for arch, pts in results["models"].items():
            pts = sorted(pts, key=lambda p: p["bpp"])
            ax.plot(
                [p["bpp"] for p in pts],
                [p[key] for p in pts],
                "-o",
                label=f"relatent {arch} (shipped)",
            )
            if key == "psnr" and arch in COMPRESSAI_PUBLISHED:
                pub = COMPRESSAI_PUBLISHED[arch]
                ax.plot(
                    [b for b, _ in pub],
                    [v for _, v in pub],
                    "x:",
                    label=f"CompressAI {arch} (published)",
                )
        ax.set_xlabel("bpp")
        ax.set_ylabel(label)
        ax.set_xlim(
            0,
            max(
                1.2,
                max((p["bpp"] for pts in results["models"].values() for p in pts), default=1) * 1.3,
            ),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(24, 38)
    fig.suptitle(f"Kodak ({len(results['images'])} images, full size)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_training(results: dict[str, Any], path: Path) -> None:
    """Each run's PSNR gain over JPEG and rate against JPEG against training steps."""
    import matplotlib.pyplot as plt

    def steps(p: dict[str, Any]) -> int:
        return p["step"] if p.get("total_steps") is None else p["total_steps"]

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for run in sorted({p["run"] for p in results["training"]}):
        pts = [p for p in results["training"] if p["run"] == run and p["gain_db"] is not None]
        ax.plot([steps(p) for p in pts], [p["gain_db"] for p in pts], "-o", label=run)
        pts = [
            p for p in results["training"] if p["run"] == run and p.get("rate_vs_jpeg") is not None
        ]
        ax2.plot([steps(p) for p in pts], [p["rate_vs_jpeg"] for p in pts], "-o", label=run)
    for a in (ax, ax2):
        a.axhline(0, color="k", lw=0.8)
        a.set_xlabel("training steps (including the warm start's)")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    ax.set_ylabel("PSNR gain over JPEG at equal bpp (dB)")
    ax2.set_ylabel("rate vs JPEG at equal PSNR (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def models_markdown(results: dict[str, Any]) -> str:
    """``models.md``: the measured points, the JPEG points used, BD-rates against JPEG,
    and the training progress of each snapshot."""
    m = results["machine"]
    lines = [
        "# Shipped models on Kodak",
        "",
        f"Measured by `relatent bench models` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
        f"CUDA {m['cuda']}, torch {m['torch']}. {len(results['images'])} Kodak images at full size, "
        f"unrefined (`--refine none`). bpp counts each frame's whole packet (entropy strings + 36 bytes of framing); "
        f"JPEG bpp counts the whole file. Total time {results['seconds']:.0f} s.",
        "",
        "| model | quality | steps | bpp | RGB PSNR (dB) | Y PSNR (dB) | MS-SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch, pts in results["models"].items():
        for p in sorted(pts, key=lambda p: p["bpp"]):
            lines.append(
                f"| {arch} | {p['quality']} | {p['steps']} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['psnr_y']:.2f} | {p['ms_ssim']:.4f} |"
            )
    lines += [
        "",
        "JPEG points used for BD-rate:",
        "",
        "| quality | bpp | RGB PSNR | MS-SSIM |",
        "|---|---|---|---|",
    ]
    for p in results["jpeg_used"]:
        lines.append(f"| {p['quality']} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    lines += [
        "",
        "## BD-rate against JPEG (pchip over the overlapping range; negative = fewer bits for the same quality; a rate point dominated by another is left out of the curve)",
        "",
        "| model | BD-rate (RGB PSNR) | BD-rate (MS-SSIM dB) |",
        "|---|---|---|",
    ]
    for arch, bd in results["bd_rate_vs_jpeg"].items():
        f = lambda v: "n/a" if v is None else f"{v:+.1f}%"  # noqa: E731
        lines.append(f"| {arch} | {f(bd['psnr'])} | {f(bd['ms_ssim'])} |")
    lines += [
        "",
        "BD-rate (RGB PSNR) between neighbouring rate points, i.e. where on the rate axis the gain is:",
        "",
        "| model | qualities | BD-rate |",
        "|---|---|---|",
    ]
    for arch, segs in results.get("bd_rate_segments_vs_jpeg", {}).items():
        for seg in segs:
            v = "n/a" if seg["psnr"] is None else f"{seg['psnr']:+.1f}%"
            lines.append(f"| {arch} | q{seg['qualities'][0]}-q{seg['qualities'][1]} | {v} |")
    lines += [""]
    for arch, v in results.get("bd_rate_published_vs_jpeg", {}).items():
        f = "n/a" if v is None else f"{v:+.1f}%"
        lines.append(
            f"Anchor: CompressAI's published (fully trained, N=128/M=192) {arch} points, against the same JPEG points: {f} "
            "(pchip through 3 published points; about -44% over CompressAI's own, wider range)."
        )
    lines += ["", "![RD curves](models_rd.png)", ""]
    if results["training"]:
        lines += [
            "## Training progress",
            "",
            "Each snapshot is one rate point, so instead of a BD-rate it gets the two single-point measures: the PSNR "
            "gain over JPEG at its bpp, and its rate against JPEG's at its PSNR.",
            "",
            "| run | step | total steps (with its warm start) | lambda | bpp | RGB PSNR | gain over JPEG (dB) | rate vs JPEG |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in results["training"]:
            g = "n/a" if p["gain_db"] is None else f"{p['gain_db']:+.2f}"
            r = "n/a" if p.get("rate_vs_jpeg") is None else f"{p['rate_vs_jpeg']:+.1f}%"
            t = "n/a" if p.get("total_steps") is None else str(p["total_steps"])
            lines.append(
                f"| {p['run']} | {p['step']} | {t} | {p['lmbda']} | {p['bpp']:.4f} | {p['psnr']:.2f} | {g} | {r} |"
            )
        lines += ["", "![training](models_training.png)", ""]
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``models`` on the ``bench`` subcommand's subparsers."""
    p = sub.add_parser(
        "models", help="shipped models on Kodak vs JPEG; model cards; training curves"
    )
    p.add_argument("--kodak", default="../shared/data/kodak", help="folder of the Kodak PNGs")
    p.add_argument("--out", default="docs/benchmarks", help="where JSON/Markdown/PNG go")
    p.add_argument(
        "--runs", nargs="*", default=[], help="training run folders whose snapshots to evaluate"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="use only the first N images (smoke runs)"
    )
    p.add_argument(
        "--no-update-cards", action="store_true", help="do not write results into the model cards"
    )
    p.set_defaults(func=cmd_models)


def cmd_models(a: argparse.Namespace) -> int:
    """``relatent bench models``: measure and write the files (and the model cards unless
    --no-update-cards).

    Raises:
        InputError: the --kodak folder does not exist, or see :func:`run`.
    """
    kodak = Path(a.kodak)
    if not kodak.is_dir():
        raise InputError(
            f"Kodak folder {kodak} does not exist", hint="pass --kodak DIR with the 24 Kodak PNGs"
        )
    run(kodak, Path(a.out), [Path(r) for r in a.runs], a.limit, not a.no_update_cards)
    print(f"wrote {Path(a.out) / 'models.md'}")
    return 0
