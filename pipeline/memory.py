"""Memory the encoder needs, estimated before the first frame is coded, and what the
machine has: so that a batch that cannot fit is made smaller (the bytes do not depend on
the batch) or refused with a clear error, instead of the OS killing the process with no
message.

The model (:func:`encode_bytes`) is linear in the coded pixels (the frame padded to
:data:`pipeline.models.PAD_MULTIPLE`)::

    peak ≈ SAFETY x ( FIXED_BYTES                                          decoder, writer, slack
                    + batch x pixels x per_pixel x max(1, N / 64)          frames in flight
                    + batch x GOP x width x height x 3 )                   buffered 8-bit GOPs

``per_pixel`` is :data:`REFINE_BYTES_PER_PIXEL` when refinement runs (autograd keeps the
activations of g_s, g_a's output, the Adam moments and the relaxed rate's terms) and
:data:`PLAIN_BYTES_PER_PIXEL` when it does not (the real reconstruction and the entropy
coder's buffers remain), plus :data:`INTER_BYTES_PER_PIXEL` with a GOP (the reference
latents and the residual candidates); ``N`` is the model's channel count (the shipped
models have N = 64, CompressAI's zoo 128 or 192: activations scale with it). The GOP
buffer counts only when frames are coded in grid groups (:attr:`RefineConfig.uses_grid`).

Where the numbers come from: peak resident memory (``VmHWM``, reset after the model was
loaded) above the resident memory at that point, of :func:`pipeline.codec.encode_video`
on synthetic clips (the shipped q3 model, N = 64; three SGA iterations with ``--tol 0``,
or ``--refine none``; ``--no-carry``), one fresh process per point, on this project's
2-core x86-64 CPU machine (torch 2.14.1), 2026-11-29. In MiB (coded size: padded to 64)::

    size        coded px    batch  GOP   SGA    none
    256x256       65,536      1     1    113      66
    512x384      196,608      1     1    294
    512x384      196,608      2     1    525
    1024x576     589,824      1     1    521     437
    1280x720     983,040      1     1    830     564
    1280x720     983,040      2     1   1493    1046
    512x384      196,608      1     4    340
    512x384      196,608      2     4    601

A least-squares line through the GOP-1 points gives 725 B/px + 146 MiB with refinement
and 525 B/px + 77 MiB without; the constants below round those up so that every point
lies under the estimate (the tightest: 512x384 at batch 2, 1.09x; most 1.3-1.5x). For comparison
the issue saw 1.9 GB and 2.7 GB of process memory (about 0.9 GB of it torch and the
model) for 720p at batch 1 and 2 with the defaults (GOP 16, 50 iterations), and 3.0 GB for
1921x1081: the estimate gives 1.1, 2.0 and 2.2 GB above the model. :data:`MEASURED` holds
the points. The same model is used on CUDA, compared with the device's free memory
(:func:`torch.cuda.mem_get_info`); it was not calibrated on a GPU.

Available memory (:func:`available_bytes`): on the CPU the smallest of the kernel's
``MemAvailable`` (``/proc/meminfo``) and the room left under the process's cgroup limit
(v2 ``memory.max`` minus ``memory.current``; v1 ``memory.limit_in_bytes`` minus
``memory.usage_in_bytes``); on CUDA the device's free memory plus what torch's caching
allocator holds unused. Where none can be read (another OS), nothing is checked.

Torch is imported only to ask a CUDA device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from pipeline.config import RefineConfig
from pipeline.errors import InsufficientMemoryError

__all__ = [
    "CALIBRATED_CHANNELS",
    "FIXED_BYTES",
    "INTER_BYTES_PER_PIXEL",
    "MEASURED",
    "PLAIN_BYTES_PER_PIXEL",
    "REFINE_BYTES_PER_PIXEL",
    "SAFETY",
    "available_bytes",
    "encode_bytes",
    "fit_batch",
    "frame_bytes",
]

#: Peak resident bytes above the loaded model, measured (see the module doc): one record per
#: point, ``(width, height, batch, refinement on, bytes)``.
#: point, ``(width, height, batch, GOP, refinement on, bytes)``.
MEASURED: tuple[tuple[int, int, int, int, bool, int], ...] = (
    (256, 256, 1, 1, True, 118_788_096),
    (512, 384, 1, 1, True, 307_896_320),
    (512, 384, 2, 1, True, 550_789_120),
    (1024, 576, 1, 1, True, 546_803_712),
    (1280, 720, 1, 1, True, 870_486_016),
    (1280, 720, 2, 1, True, 1_565_822_976),
    (512, 384, 1, 4, True, 357_011_456),
    (512, 384, 2, 4, True, 629_891_072),
    (256, 256, 1, 1, False, 69_382_144),
    (1024, 576, 1, 1, False, 458_125_312),
    (1280, 720, 1, 1, False, 591_753_216),
    (1280, 720, 2, 1, False, 1_096_990_720),
)

#: Bytes per coded pixel of one frame in flight with refinement (fit of :data:`MEASURED`).
REFINE_BYTES_PER_PIXEL = 760
#: Bytes per coded pixel of one frame in flight without refinement.
PLAIN_BYTES_PER_PIXEL = 560
#: Bytes per coded pixel added by inter coding (a GOP > 1) to a frame in flight.
INTER_BYTES_PER_PIXEL = 256
#: Bytes a running encode needs whatever the frames (decoder, writer, allocator slack).
FIXED_BYTES = 192 * 2**20
#: Factor on the estimate: allocator fragmentation and what the fit does not see.
SAFETY = 1.2
#: The channel count ``N`` of the model the slopes were measured with (the shipped models).
CALIBRATED_CHANNELS = 64

#: Where a warning goes (one message per call).
Warn = Callable[[str], None]


def _coded_pixels(width: int, height: int) -> int:
    from pipeline.models import PAD_MULTIPLE

    return (
        math.ceil(width / PAD_MULTIPLE)
        * PAD_MULTIPLE
        * math.ceil(height / PAD_MULTIPLE)
        * PAD_MULTIPLE
    )


def frame_bytes(
    width: int,
    height: int,
    *,
    refine: bool,
    inter: bool = False,
    channels: int = CALIBRATED_CHANNELS,
) -> int:
    """Peak bytes one ``width`` x ``height`` frame in flight needs (padded to
    :data:`pipeline.models.PAD_MULTIPLE`; ``refine``: whether refinement runs; ``inter``:
    whether frames may be P frames, a GOP > 1; ``channels``: the model's ``N``), without
    :data:`SAFETY`."""
    per_pixel = REFINE_BYTES_PER_PIXEL if refine else PLAIN_BYTES_PER_PIXEL
    per_pixel += INTER_BYTES_PER_PIXEL if inter else 0
    scale = max(1.0, channels / CALIBRATED_CHANNELS)
    return int(_coded_pixels(width, height) * per_pixel * scale)


def encode_bytes(
    width: int,
    height: int,
    batch: int,
    refine: RefineConfig,
    channels: int = CALIBRATED_CHANNELS,
) -> int:
    """Estimated peak bytes of encoding ``width`` x ``height`` frames ``batch`` at a time
    with ``refine`` (a resolved config: whether it refines, and the GOPs buffered when it
    codes grid groups) by a model of ``N`` = ``channels``; :data:`SAFETY` included. Linear
    in ``batch``; grows with the frame size."""
    in_flight = batch * frame_bytes(
        width, height, refine=refine.active, inter=refine.gop > 1, channels=channels
    )
    buffered = batch * refine.grid * width * height * 3 if refine.uses_grid else 0
    return int(SAFETY * (FIXED_BYTES + in_flight + buffered))


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) is not a number


def _cgroup_room(root: Path) -> int | None:
    """Bytes left under this process's cgroup memory limit (None: no limit found)."""
    for limit_name, usage_name in (
        ("memory.max", "memory.current"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),  # cgroup v1
    ):
        limit, usage = _read_int(root / limit_name), _read_int(root / usage_name)
        if limit is not None and usage is not None and limit < 2**60:  # v1's "no limit"
            return max(0, limit - usage)
    return None


def _mem_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_bytes(
    device: str = "cpu",
    *,
    meminfo: Path = Path("/proc/meminfo"),
    cgroup: Path = Path("/sys/fs/cgroup"),
) -> int | None:
    """Bytes an encode on ``device`` (``cpu``, ``cuda``, ``cuda:N``) can still take: see
    the module doc. ``meminfo`` and ``cgroup`` are where the CPU's figures are read
    (tests point them at their own files). None when nothing can be read."""
    if str(device).startswith("cuda"):
        import torch

        dev = torch.device(device)
        free, _total = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free + max(0, cached))
    found = [v for v in (_mem_available(meminfo), _cgroup_room(cgroup)) if v is not None]
    return min(found) if found else None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def fit_batch(
    width: int,
    height: int,
    batch: int,
    refine: RefineConfig,
    *,
    channels: int = CALIBRATED_CHANNELS,
    device: str = "cpu",
    available: int | None = None,
    warn: Warn | None = None,
    name: str = "the source",
) -> int:
    """The largest batch, at most ``batch``, whose :func:`encode_bytes` fits in
    ``available`` bytes (None: :func:`available_bytes` of ``device``; when that cannot be
    read either, ``batch`` as it is). A smaller batch is announced through ``warn`` (it
    codes the same bytes, more slowly). ``name`` names the source in messages.

    Raises:
        InsufficientMemoryError: even one frame (or GOP) at a time does not fit; the
            message names the frame size, the estimate, the memory available and
            ``--batch``.
    """
    if available is None:
        available = available_bytes(device)
    if available is None:
        return batch
    need = encode_bytes(width, height, 1, refine, channels)
    if need > available:
        what = "with refinement" if refine.active else "without refinement"
        raise InsufficientMemoryError(
            f"{name}: a {width}x{height} frame needs about {_gb(need)} to encode {what} at "
            f"--batch 1, and {_gb(available)} is available on {device}",
            hint="free memory, run on a machine (or a Ray node) with more, or scale the video "
            "down" + ("; --refine none needs less" if refine.active else ""),
        )
    fits = batch
    while fits > 1 and encode_bytes(width, height, fits, refine, channels) > available:
        fits -= 1
    if fits < batch and warn is not None:
        warn(
            f"{name}: --batch {batch} of {width}x{height} frames would need about "
            f"{_gb(encode_bytes(width, height, batch, refine, channels))} and "
            f"{_gb(available)} is available on {device}: coding with --batch {fits} "
            f"(about {_gb(encode_bytes(width, height, fits, refine, channels))}; the stream's "
            "bytes do not depend on the batch)"
        )
    return fits
