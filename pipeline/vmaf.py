"""VMAF: Netflix's perceptual video quality metric, measured offline by ffmpeg's libvmaf.

VMAF (Video Multi-method Assessment Fusion, Netflix; https://github.com/Netflix/vmaf) fuses
VIF, ADM (detail loss) and motion features with an SVM trained on subjective scores. The
model is libvmaf's built-in ``vmaf_v0.6.1`` (the default 1080p-viewing model, no phone or
4K variant). Scores are per frame, on a 0..100 scale (100: indistinguishable from the
reference; the model can give slightly less than 100 for identical frames, e.g. for the
first frame, whose motion feature is 0).

The measurement runs in the static ffmpeg that the ``imageio-ffmpeg`` wheel bundles (built
with libvmaf; PyAV's FFmpeg has none): the optional extra ``pip install 'relatent[vmaf]'``
(the ``dev`` extra includes it). ``IMAGEIO_FFMPEG_EXE`` points imageio-ffmpeg at another
ffmpeg; that one must have been built with libvmaf.

How frames are measured (:func:`vmaf_scores`): both sequences are written as raw RGB24 to a
private temporary folder, and ffmpeg converts each to **yuv420p with BT.709 coefficients,
limited (TV) range** (swscale, bicubic, accurate rounding) before libvmaf compares them, as a
viewer's H.264/HEVC copy would hold the frames. Frames with an odd width or height are
**padded by edge replication** (the last column/row repeated) to even sizes, which 4:2:0
needs; nothing is cropped. libvmaf needs frames of at least :data:`MIN_SIZE` pixels a side.

:func:`stream_vmaf` measures a ``.rlv`` stream against its source (it decodes with torch,
imported only when it runs); this module itself imports neither torch nor ray.

Measured cost (a 2-core machine, 1 thread): 16 frames of 176x144 take about 0.1 s in all
(writing the frames and running ffmpeg), 16 frames of 1920x1080 about 3.3 s (0.2 s a
frame). Decoding a stream (:func:`stream_vmaf`) takes far longer than measuring it.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.errors import ConfigError, RelatentError, ResourceError

__all__ = [
    "MATRIX",
    "MIN_SIZE",
    "MODEL",
    "PIX_FMT",
    "StreamVmaf",
    "default_timeout",
    "ffmpeg_exe",
    "stream_vmaf",
    "vmaf_scores",
]

#: libvmaf's built-in model used for every score.
MODEL = "vmaf_v0.6.1"
#: The pixel format and YCbCr matrix (limited range) the RGB frames are measured in.
PIX_FMT = "yuv420p"
MATRIX = "bt709"
#: The smallest width and height libvmaf measures (after padding to even sizes); its
#: 4-scale VIF/ADM pyramids crash the bundled ffmpeg on 16x16 frames (measured).
MIN_SIZE = 18

_HINT_INSTALL = (
    "pip install 'relatent[vmaf]' (the imageio-ffmpeg wheel bundles an ffmpeg with libvmaf)"
)
_CONVERT = (
    f"scale=flags=bicubic+accurate_rnd+full_chroma_int:out_color_matrix={MATRIX}"
    f":out_range=tv,format={PIX_FMT}"
)


def ffmpeg_exe() -> str:
    """The path of the ffmpeg that measures VMAF: imageio-ffmpeg's bundled binary (or the
    one ``IMAGEIO_FFMPEG_EXE`` names).

    Raises:
        ResourceError: imageio-ffmpeg is not installed, or finds no ffmpeg binary.
    """
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise ResourceError(
            "measuring VMAF needs the ffmpeg with libvmaf that imageio-ffmpeg bundles, "
            "and imageio-ffmpeg is not installed",
            hint=_HINT_INSTALL,
        ) from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # no binary for this platform, or a bad IMAGEIO_FFMPEG_EXE
        raise ResourceError(
            f"imageio-ffmpeg finds no ffmpeg binary ({exc})", hint=_HINT_INSTALL
        ) from exc


def default_timeout(frames: int, height: int, width: int) -> float:
    """Seconds :func:`vmaf_scores` lets ffmpeg run when no timeout is given: 120 s, plus
    1 s per frame per megapixel (about 10x what one thread needed here at 1080p)."""
    return 120.0 + frames * height * width / 1e6


class _RawWriter:
    """Writes ``[H, W, 3]`` uint8 frames to a raw RGB24 file, padded to even sizes by edge
    replication, checking that every frame has the first one's shape."""

    def __init__(self, f: BinaryIO, what: str) -> None:
        self.f = f
        self.what = what
        self.shape: tuple[int, int] | None = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        """Append ``frame``.

        Raises:
            ConfigError: not ``[H, W, 3]`` uint8, another size than the first frame, or
                smaller than :data:`MIN_SIZE` (after padding).
        """
        a = np.asarray(frame)
        where = f"{self.what} frame {self.count}"
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ConfigError(
                f"{where} is {a.dtype} {list(a.shape)}, not [H, W, 3] uint8 RGB",
                hint="pass 8-bit RGB frames (pipeline.metrics.to_uint8 converts float ones)",
            )
        h, w = a.shape[:2]
        if self.shape is None:
            if h + h % 2 < MIN_SIZE or w + w % 2 < MIN_SIZE:
                raise ConfigError(
                    f"{where} is {w}x{h}; libvmaf needs at least {MIN_SIZE}x{MIN_SIZE}",
                    hint="measure larger frames",
                )
            self.shape = (h, w)
        elif (h, w) != self.shape:
            raise ConfigError(
                f"{where} is {w}x{h} but frame 0 is {self.shape[1]}x{self.shape[0]}",
                hint="every frame of a sequence must have one size",
            )
        if h % 2 or w % 2:
            a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        self.f.write(np.ascontiguousarray(a).tobytes())
        self.count += 1


def _write_pair(
    d: Path, refs: np.ndarray | Iterable[np.ndarray], recs: np.ndarray | Iterable[np.ndarray]
) -> tuple[int, tuple[int, int]]:
    """Write ``refs`` to ``d/ref.rgb`` and ``recs`` to ``d/rec.rgb`` (:class:`_RawWriter`),
    a frame of each in turn (so a generator's errors surface early); returns the number of
    frames and their unpadded ``(H, W)``.

    Raises:
        ConfigError: as :meth:`_RawWriter.write`; no frames; the sequences' lengths or
            sizes differ.
    """
    for seq, what in ((refs, "reference"), (recs, "distorted")):
        if isinstance(seq, np.ndarray) and seq.ndim != 4:
            raise ConfigError(
                f"the {what} frames are an array of shape {list(seq.shape)}, not [N, H, W, 3]",
                hint="stack the frames on a first axis",
            )
    with (d / "ref.rgb").open("wb") as fr, (d / "rec.rgb").open("wb") as fd:
        ref, rec = _RawWriter(fr, "reference"), _RawWriter(fd, "distorted")
        ref_it, rec_it = iter(refs), iter(recs)
        while True:
            a, b = next(ref_it, None), next(rec_it, None)
            if a is None or b is None:
                break
            ref.write(a)
            rec.write(b)
            if ref.shape != rec.shape:
                assert ref.shape is not None and rec.shape is not None
                raise ConfigError(
                    f"the distorted frames are {rec.shape[1]}x{rec.shape[0]} but the "
                    f"reference frames {ref.shape[1]}x{ref.shape[0]}",
                    hint="pass frames of one size",
                )
    if a is not None or b is not None:
        longer, shorter = (
            ("reference", "distorted") if a is not None else ("distorted", "reference")
        )
        raise ConfigError(
            f"the {longer} sequence has more frames than the {shorter} one's {ref.count}",
            hint="pass the same number of frames",
        )
    if ref.shape is None:
        raise ConfigError("no frames to measure", hint="pass at least one frame of each sequence")
    return ref.count, ref.shape


def _stderr_tail(text: str, lines: int = 4) -> str:
    tail = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return "; ".join(tail) or "no message"


def _run_ffmpeg(exe: str, cwd: Path, size: tuple[int, int], threads: int, timeout: float) -> None:
    """Run libvmaf on ``rec.rgb`` (distorted) against ``ref.rgb`` (reference) in ``cwd``,
    writing ``vmaf.json``. ``size``: (height, width) of the padded frames.

    Raises:
        ResourceError: the ffmpeg has no libvmaf, or cannot be started.
        RelatentError: ffmpeg failed, crashed or ran past ``timeout`` seconds.
    """
    h, w = size
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{w}x{h}", "-framerate", "25"]
    graph = (
        f"[0:v]{_CONVERT}[dist];[1:v]{_CONVERT}[ref];[dist][ref]libvmaf="
        f"model=version={MODEL}:log_fmt=json:log_path=vmaf.json:n_threads={threads}"
    )
    cmd = [
        exe, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
        *raw, "-i", "rec.rgb", *raw, "-i", "ref.rgb", "-lavfi", graph, "-f", "null", "-",
    ]  # fmt: skip
    try:
        res = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RelatentError(
            f"ffmpeg's libvmaf ran past its timeout of {timeout:.0f} s ({exe})",
            hint="pass a larger timeout, or more threads",
        ) from exc
    except OSError as exc:
        raise ResourceError(f"ffmpeg {exe} cannot be run ({exc})", hint=_HINT_INSTALL) from exc
    if res.returncode == 0:
        return
    if "libvmaf" in res.stderr and ("No such filter" in res.stderr or "not found" in res.stderr):
        raise ResourceError(
            f"the ffmpeg at {exe} was built without libvmaf",
            hint=f"unset IMAGEIO_FFMPEG_EXE, {_HINT_INSTALL}",
        )
    how = (
        f"was killed by signal {-res.returncode}"
        if res.returncode < 0
        else f"exited {res.returncode}"
    )
    raise RelatentError(
        f"ffmpeg's libvmaf {how} measuring {w}x{h} frames ({exe}: {_stderr_tail(res.stderr)})",
        hint="check the frames; report the message if they are valid",
    )


def _parse_log(path: Path, frames: int) -> list[float]:
    """The per-frame ``vmaf`` of libvmaf's JSON log, in frame order.

    Raises:
        RelatentError: the log is missing, malformed, or has another number of frames.
    """
    try:
        doc = json.loads(path.read_text())
        records = sorted(doc["frames"], key=lambda r: int(r["frameNum"]))
        scores = [float(r["metrics"]["vmaf"]) for r in records]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RelatentError(
            f"ffmpeg's libvmaf log {path.name} is unreadable ({type(exc).__name__}: {exc})",
            hint="report it: the bundled ffmpeg wrote an unexpected log",
        ) from exc
    if len(scores) != frames or not all(math.isfinite(s) for s in scores):
        raise RelatentError(
            f"ffmpeg's libvmaf scored {len(scores)} frames of {frames} (or gave a non-finite score)",
            hint="report it: the bundled ffmpeg measured an unexpected sequence",
        )
    return scores


def vmaf_scores(
    refs: np.ndarray | Iterable[np.ndarray],
    recs: np.ndarray | Iterable[np.ndarray],
    *,
    threads: int = 1,
    timeout: float | None = None,
) -> list[float]:
    """The VMAF of each frame of ``recs`` (distorted) against ``refs`` (reference).

    ``refs``, ``recs``: 8-bit RGB, ``[N, H, W, 3]`` uint8 arrays of one shape, or iterables
    of ``[H, W, 3]`` uint8 frames (streamed to disk one at a time: long videos need not fit
    in memory). Returns N scores on the 0..100 scale, in frame order: Netflix VMAF with
    libvmaf's model ``vmaf_v0.6.1``, measured on yuv420p, BT.709 limited range (odd sizes
    padded by edge replication; see the module docstring). ``threads``: libvmaf's worker
    threads (the scores do not depend on it). ``timeout``: seconds ffmpeg may run (default:
    :func:`default_timeout`). Both sequences are written as raw RGB24 (``6 * N * H * W``
    bytes in all) to a private temporary folder, removed afterwards.

    Raises:
        ConfigError: frames that are not uint8 RGB, of mixed or mismatched sizes, smaller
            than :data:`MIN_SIZE`, none, or a different number in the two sequences;
            ``threads`` < 1.
        ResourceError: imageio-ffmpeg is missing, or its ffmpeg lacks libvmaf.
        RelatentError: ffmpeg failed, crashed or timed out (the message says which).
    """
    if threads < 1:
        raise ConfigError(f"threads {threads} must be at least 1")
    exe = ffmpeg_exe()  # before any frame is written
    with tempfile.TemporaryDirectory(prefix="relatent-vmaf-") as tmp:
        d = Path(tmp)  # mkdtemp: mode 0700, private to this user
        count, (h, w) = _write_pair(d, refs, recs)
        h, w = h + h % 2, w + w % 2
        limit = default_timeout(count, h, w) if timeout is None else timeout
        _run_ffmpeg(exe, d, (h, w), threads, limit)
        return _parse_log(d / "vmaf.json", count)


# --------------------------------------------------------------------------- streams


@dataclass
class StreamVmaf:
    """The VMAF of a stream's frames ``[start, end)`` against source frames
    ``[source_start, source_start + end - start)``; ``scores``: one per frame, 0..100."""

    stream: str
    source: str
    start: int
    end: int
    source_start: int
    scores: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """The arithmetic mean of the per-frame scores (libvmaf's default pooling)."""
        return sum(self.scores) / len(self.scores)

    @property
    def min(self) -> float:
        """The lowest per-frame score."""
        return min(self.scores)

    @property
    def min_frame(self) -> int:
        """The stream frame index of the lowest score."""
        return self.start + self.scores.index(self.min)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the span, the model and conversion, mean, min and per-frame scores."""
        return {
            "stream": self.stream, "source": self.source, "start": self.start, "end": self.end,
            "source_start": self.source_start, "model": MODEL, "pix_fmt": PIX_FMT,
            "matrix": MATRIX, "frames": len(self.scores), "mean": self.mean, "min": self.min,
            "min_frame": self.min_frame, "per_frame": list(self.scores),
        }  # fmt: skip


def _locate(pts: int, source_pts: tuple[int, ...], stream: str, source: str) -> int:
    """The source frame whose timestamp is ``pts`` (the stream's first measured frame).

    Raises:
        ConfigError: no source frame, or several, has that timestamp.
    """
    found = [i for i, p in enumerate(source_pts) if p == pts]
    if len(found) == 1:
        return found[0]
    why = "no source frame has" if not found else f"{len(found)} source frames have"
    raise ConfigError(
        f"{stream}: cannot find its frames in {source} ({why} the stream's timestamp {pts})",
        hint="name the source the stream was coded from, or pass --source-start N "
        "(the source frame of the stream's frame --start)",
    )


def stream_vmaf(
    stream: str,
    source: str,
    *,
    start: int = 0,
    end: int | None = None,
    source_start: int | None = None,
    checkpoint: str | None = None,
    device: str | None = None,
    threads: int = 1,
    timeout: float | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> StreamVmaf:
    """The VMAF (:func:`vmaf_scores`) of the decoded frames ``[start, end)`` of the ``.rlv``
    ``stream`` against the frames of ``source`` they were coded from.

    The source frames are found by timestamp: a stream keeps its source's presentation
    timestamps, so the stream frame ``start`` is the source frame with its pts (an
    ``encode --start S`` stream's frame 0 is source frame S). ``source_start`` overrides
    that: the source frame of stream frame ``start``. The decoded frames are compared with
    the source's as 8-bit RGB (:func:`pipeline.metrics.to_uint8`), streamed through
    temporary files; ``on_frame(n)`` is called after each decoded frame. ``checkpoint``,
    ``device``: the weights and device of :func:`pipeline.decoder.decode_stream`.

    Raises:
        ConfigError: the span is not the stream's, the source frames cannot be found or do
            not have the stream's size or timestamps, or as :func:`vmaf_scores`.
        InputError: the source is missing, unusable, or shorter than the span.
        BitstreamError, ModelError, StorageError: as :func:`pipeline.decoder.decode_stream`.
        ResourceError, RelatentError: as :func:`vmaf_scores`.
    """
    from pipeline import storage
    from pipeline.bitstream import StreamReader
    from pipeline.decoder import decode_stream, frame_range
    from pipeline.media import DEFAULT_MAX_PIXELS, probe, read_frames
    from pipeline.metrics import to_uint8

    with StreamReader(stream) as r:
        header = r.header
        start, end = frame_range(header, start, end)
        first_pts = r[start].pts
    ffmpeg_exe()  # fail before decoding anything
    opened = storage.open_read(source) if storage.is_s3(source) else nullcontext(source)
    with opened as src:
        info = probe(src, video_stream=header.source.get("video_stream"))
        if (info.width, info.height) != (header.width, header.height):
            raise ConfigError(
                f"{stream} is {header.width}x{header.height} but {source} is "
                f"{info.width}x{info.height}: not the source it was coded from",
                hint="name the stream's source",
            )
        auto = source_start is None
        offset = _locate(first_pts, info.pts, stream, source) if auto else source_start
        assert offset is not None
        if offset < 0 or offset + end - start > info.frame_count:
            raise ConfigError(
                f"{stream}: frames {start}..{end} would be source frames {offset}.."
                f"{offset + end - start} of {source}'s {info.frame_count}",
                hint="check --source-start and --start/--end",
            )
        limit = max(DEFAULT_MAX_PIXELS, header.width * header.height)
        refs = (
            to_uint8(f.rgb)
            for f in read_frames(src, offset, offset + end - start, info=info, max_pixels=limit)
        )

        def recs() -> Iterator[np.ndarray]:
            for n, d in enumerate(decode_stream(stream, checkpoint, device, start=start, end=end)):
                if auto and d.pts != info.pts[offset + n]:
                    raise ConfigError(
                        f"{stream}: frame {start + n} has pts {d.pts} but source frame "
                        f"{offset + n} of {source} has {info.pts[offset + n]}",
                        hint="name the source the stream was coded from, or pass --source-start N",
                    )
                if on_frame:
                    on_frame(start + n)
                yield d.rgb

        scores = vmaf_scores(refs, recs(), threads=threads, timeout=timeout)
    return StreamVmaf(stream, source, start, end, offset, scores)
