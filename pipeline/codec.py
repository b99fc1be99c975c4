"""Encoder: frames -> packets, and whole videos -> .rlv streams (the decoder is
:mod:`pipeline.decoder`).

:class:`FrameEncoder` turns a batch of frames into packets plus per-frame stats; it runs
refinement and the actual-bits guard (a refined latent is coded only if its real RD cost,
measured with the entropy coder's bytes and the real reconstruction, beats the unrefined
latent's). The decoder proves, via the symbols CRC in every packet, that it recovered the
encoder's latents bit for bit.

Byte determinism: on the CPU every float computation of the encoder runs with one intra-op
thread and without oneDNN (parallelism comes from processes/actors, one per core), and
the pieces whose kernels would see the whole batch as one operand (the entropy bottleneck's
density, a matrix product over ``B*H*W`` columns) are evaluated frame by frame, so the
bytes depend only on the input, the model and the config, never on the host's thread
count, the batch size or the shard layout. On CUDA, cuDNN runs in deterministic mode; byte
identity then holds per device type."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline import metrics
from pipeline.bitstream import (
    FLAG_INTER,
    FLAG_REFINED,
    Packet,
    StreamHeader,
    StreamWriter,
    read_packet,
)
from pipeline.config import RefineConfig
from pipeline.entropy import LatentCodec
from pipeline.errors import ConfigError
from pipeline.memory import fit_batch
from pipeline.models import PAD_MULTIPLE, LoadedModel, fixed_threads, listed_rate_points
from pipeline.refine import (
    FrameState,
    RefineResult,
    allocate,
    grid_groups,
    probe_gains,
    run_states,
    stack_states,
    warm_flags,
)
from pipeline.stats import FrameStats, StatsSummary, summarize

__all__ = [
    "EncodeSummary",
    "EncodedFrame",
    "FrameEncoder",
    "FrameInit",
    "batched",
    "check_stream_output",
    "deterministic",
    "encode_frames",
    "encode_video",
    "make_header",
    "padded_size",
    "to_batch",
    "to_uint8_frames",
]


def padded_size(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """``(height, width)`` in pixels, each rounded up to a multiple of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def to_batch(
    rgbs: Sequence[np.ndarray], device: torch.device, multiple: int = PAD_MULTIPLE
) -> Tensor:
    """[H, W, 3] RGB frames in [0, 1] -> a [B, 3, Hp, Wp] tensor padded to ``multiple``
    (edge replication)."""
    h, w = rgbs[0].shape[:2]
    hp, wp = padded_size(h, w, multiple)
    arr = np.stack([np.asarray(r, dtype=np.float32) for r in rgbs])
    if (hp, wp) != (h, w):
        arr = np.pad(arr, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous().to(device)


def to_uint8_frames(x_hat: Tensor, h: int, w: int) -> np.ndarray:
    """[B,3,Hp,Wp] in [0,1] -> [B,h,w,3] uint8 (crop back to the source size)."""
    arr = x_hat[..., :h, :w].permute(0, 2, 3, 1).detach().cpu().double().numpy()
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


@contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """The numerics context of the encoder (see module docstring)."""
    if device.type == "cpu":
        # oneDNN picks batch-size-dependent algorithms for small convolutions (measured:
        # h_a of mbt2018-mean gave different bits for batch 1 and batch 4), so the native
        # kernels, which are batch-invariant, run the encoder.
        with fixed_threads(1), torch.backends.mkldnn.flags(enabled=False):
            yield
    else:
        prev = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev


@dataclass
class EncodedFrame:
    """One coded frame: its packet, the packet's bytes and its stats (bytes, bpp, dB)."""

    packet: Packet
    packet_bytes: bytes
    stats: FrameStats
    #: What refinement added to g_a(x) (kept only with warm starts: the next frame's start).
    offset: dict[str, Tensor] | None = None


@dataclass
class FrameInit:
    """How one frame's refinement starts (frames coded in grid groups).

    ``state``: continue this (probed) state; else a fresh state from ``g_a(x)`` plus
    ``offset`` (a warm start) for ``stop`` iterations (default ``iters``). ``spent``
    iterations (and ``spent_seconds``) were already spent on the frame elsewhere (a probe
    whose state was not continued) and count in its stats. ``warm``, ``probe_gain`` and
    ``allocated`` go into its :class:`~pipeline.stats.FrameStats`."""

    offset: dict[str, Tensor] | None = None
    state: FrameState | None = None
    stop: int | None = None
    spent: int = 0
    spent_seconds: float = 0.0
    warm: bool = False
    probe_gain: float | None = None
    allocated: int | None = None
    #: Its GOP's lambda (rate control; None: the config's), scaled as ``frame_lmbda`` says.
    lmbda: float | None = None


@dataclass
class _Candidate:
    coded: list[Any]
    rec: np.ndarray  # [B,h,w,3] uint8
    packets: list[bytes] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)


class FrameEncoder:
    """Encodes batches of frames of one video with a fixed model (loads nothing itself).
    Raises ConfigError when ``refine`` (resolved with the model's lambda) is invalid."""

    def __init__(self, model: LoadedModel, refine: RefineConfig | None = None) -> None:
        self.model = model
        self.codec = LatentCodec(model)
        self.refine = (refine or RefineConfig()).resolved(model.identity.lmbda)
        #: The refinement result of the last batch (for inspection and tests).
        self.last_refine: RefineResult | None = None
        #: How many times a batch was halved after CUDA ran out of memory.
        self.oom_splits = 0
        if self.refine.gop > 1 and not self.codec.supports_inter:
            raise ConfigError(
                f"--gop {self.refine.gop}: inter-frame coding of {model.arch.id} latents is not "
                "implemented (hyperprior side information); it needs a factorized model",
                hint="use --gop 1 with this model",
            )
        #: P-frame references: frame index -> its coded symbols, until the next frame used it.
        self._refs: dict[int, np.ndarray] = {}
        #: Set by rate control (:mod:`pipeline.ratecontrol`): flag bits of every packet (its
        #: rate slot) and the rate point recorded in the stats.
        self.packet_flags = 0
        self.rate_point: int | float | None = None

    @property
    def models(self) -> list[LoadedModel]:
        """The model this encoder codes with (a list, as :class:`RateController` has)."""
        return [self.model]

    @property
    def lmbda(self) -> float:
        """The resolved lambda of ``bpp + lambda * 255^2 * MSE`` (MSE on [0, 1])."""
        assert self.refine.lmbda is not None
        return self.refine.lmbda

    def _candidate(
        self,
        latents: dict[str, Tensor],
        refs: np.ndarray,
        idx: Sequence[int],
        pts: Sequence[int],
        flag: int,
        lams: Sequence[float],
    ) -> _Candidate:
        h, w = refs.shape[1:3]
        coded = self.codec.compress(latents)
        y_hat = self.codec.quantize(latents)["y_hat"]
        rec = to_uint8_frames(self.codec.synthesize(y_hat), h, w)
        cand = _Candidate(coded, rec)
        for i, c in enumerate(coded):
            flags = flag | self.packet_flags
            pb = Packet(idx[i], pts[i], c.strings, c.symbols_crc, flags).to_bytes()
            m = metrics.mse(refs[i], rec[i])
            cand.packets.append(pb)
            cand.mse.append(m)
            cand.cost.append(metrics.rd_cost(metrics.bpp(len(pb), h, w), m, lams[i]))
        return cand

    def _code_inter(
        self,
        base: _Candidate,
        best: _Candidate,
        frame_indices: Sequence[int],
        pts: Sequence[int],
        hw: tuple[int, int],
        lams: Sequence[float],
    ) -> list[bool]:
        """Code the batch's frames in order as P frames where that is smaller: each frame
        but a GOP's first is coded against the previous frame's chosen symbols, and keeps
        the P packet only when it has fewer bytes than the intra one (so a stream is never
        larger than all-intra for the same latents). The refined candidate (if any) is then
        chosen on its actual RD cost, as for intra frames. Returns the per-frame choice."""
        gop, (h, w) = self.refine.gop, hw
        choose = []
        for i, fi in enumerate(frame_indices):
            ref = self._refs.pop(fi - 1, None) if fi % gop else None
            cands = [(base, 0)] if best is base else [(base, 0), (best, FLAG_REFINED)]
            for cand, flag in cands:
                coded = cand.coded[i]
                if ref is None or coded.symbols is None:
                    continue
                data = self.codec.compress_p(coded.symbols, ref)
                flags = flag | FLAG_INTER | self.packet_flags
                pb = Packet(fi, pts[i], (data,), coded.symbols_crc, flags).to_bytes()
                if len(pb) < len(cand.packets[i]):
                    cand.packets[i] = pb
                    cand.cost[i] = metrics.rd_cost(metrics.bpp(len(pb), h, w), cand.mse[i], lams[i])
            choose.append(best is not base and best.cost[i] < base.cost[i])
            chosen = (best if choose[-1] else base).coded[i].symbols
            if (fi + 1) % gop and chosen is not None:
                self._refs[fi] = chosen
        return choose

    def _halving(self, fn: Callable[..., list[Any]], *seqs: Sequence[Any]) -> list[Any]:
        """``fn(*seqs)``; on CUDA out-of-memory, the same on each half in turn (down to single
        frames), so no frame is lost. ``fn`` must be batch-invariant (it is: see module doc)."""
        n = len(seqs[0])
        if n == 0:
            return []
        try:
            return fn(*seqs)
        except torch.cuda.OutOfMemoryError:
            if n == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.oom_splits += 1
            half = n // 2
            return self._halving(fn, *(s[:half] for s in seqs)) + self._halving(
                fn, *(s[half:] for s in seqs)
            )

    def encode(
        self,
        rgbs: Sequence[np.ndarray],
        frame_indices: Sequence[int],
        pts: Sequence[int],
        inits: Sequence[FrameInit] | None = None,
    ) -> list[EncodedFrame]:
        """Encode one batch of equal-size [H, W, 3] frames (float RGB in [0, 1], or uint8).
        ``frame_indices`` are the frames' indices in the video: they seed the refinement
        noise and go into the packets. ``inits`` (grid-coded frames, see
        :meth:`encode_groups`) say how each frame's refinement starts; default: from cold.

        On CUDA out-of-memory the batch is halved and each half encoded in turn (down to
        single frames), so no frame is lost; results do not depend on the batch size."""
        if inits is None:
            return self._halving(self._encode, rgbs, frame_indices, pts)
        return self._halving(self._encode, rgbs, frame_indices, pts, inits)

    def probe(
        self, rgbs: Sequence[np.ndarray], fidx: Sequence[int], lmbdas: Sequence[float | None]
    ) -> list[FrameState]:
        """Refine each frame from cold for ``probe`` iterations (the adaptive budget's
        measurement) at its lambda (``lmbdas``: its GOP's or None, as :meth:`encode_groups`);
        returns the states, to be continued or discarded."""
        return self._halving(self._probe, rgbs, fidx, lmbdas)

    def _prepare(self, rgbs: Sequence[np.ndarray]) -> tuple[np.ndarray, Tensor]:
        refs = np.stack([r if r.dtype == np.uint8 else metrics.to_uint8(r) for r in rgbs])
        x = to_batch(
            [r.astype(np.float32) / 255.0 for r in refs],
            self.model.device,
            self.model.arch.pad_multiple,
        )
        return refs, x

    def _probe(
        self,
        rgbs: Sequence[np.ndarray],
        frame_indices: Sequence[int],
        given: Sequence[float | None],
    ) -> list[FrameState]:
        cfg = self.refine
        h, w = rgbs[0].shape[:2]
        with deterministic(self.model.device):
            _, x = self._prepare(rgbs)
            with torch.no_grad():
                lat0 = self.codec.analyze(x)
            states = [
                FrameState.start(
                    {k: v[i : i + 1] for k, v in lat0.items()},
                    int(fi),
                    cfg.seed,
                    cfg.probe,
                    cfg.iters,
                )
                for i, fi in enumerate(frame_indices)
            ]
            for s, fi, g in zip(states, frame_indices, given, strict=True):
                s.lmbda = cfg.frame_lmbda(int(fi), g)
            with torch.enable_grad():
                secs = run_states(self.codec, x, states, (h, w), cfg)
            gains = probe_gains(self.codec, x, lat0, states, (h, w), cfg)
        for s, g in zip(states, gains, strict=True):
            s.extra.update(seconds=secs / len(states), gain=g)
        return states

    def _start_states(
        self,
        lat0: dict[str, Tensor],
        frame_indices: Sequence[int],
        inits: Sequence[FrameInit] | None,
        lams: Sequence[float],
    ) -> list[FrameState]:
        cfg = self.refine
        states = []
        for i, fi in enumerate(frame_indices):
            init = inits[i] if inits is not None else FrameInit()
            if init.state is not None:
                state = init.state
            else:
                lat = {k: v[i : i + 1] for k, v in lat0.items()}
                if init.offset is not None:
                    lat = {k: lat[k] + init.offset[k].to(lat[k].device) for k in lat}
                stop = cfg.iters if init.stop is None else init.stop
                state = FrameState.start(lat, int(fi), cfg.seed, stop)
            state.ref = self._reference(int(fi))
            state.lmbda = lams[i]
            states.append(state)
        return states

    def _reference(self, frame_index: int) -> Tensor | None:
        """The ``y_hat`` (``[1, M, h, w]``, on the model's device) that frame
        ``frame_index`` will be P-coded against, when that frame is already coded: the
        previous frame's chosen symbols plus the medians. None for a GOP's first frame.
        Frames are refined in GOP lockstep (:meth:`encode_groups`), so the reference is
        always final before the frame is refined."""
        if self.refine.gop <= 1 or frame_index % self.refine.gop == 0:
            return None
        sym = self._refs.get(frame_index - 1)
        return None if sym is None else self.codec.dequantize(sym)

    def _encode(
        self,
        rgbs: Sequence[np.ndarray],
        frame_indices: Sequence[int],
        pts: Sequence[int],
        inits: Sequence[FrameInit] | None = None,
    ) -> list[EncodedFrame]:
        dev = self.model.device
        h, w = rgbs[0].shape[:2]
        n = len(rgbs)
        if self.refine.active and self.refine.gop > 1:
            batch = set(frame_indices)
            if any(fi % self.refine.gop and fi - 1 in batch for fi in frame_indices):
                raise ValueError(
                    "refined P frames are refined against their coded reference: encode a "
                    "GOP's frames in order (FrameEncoder.encode_groups or encode_frames)"
                )
        given = [None if inits is None else inits[i].lmbda for i in range(n)]
        lams = [self.refine.frame_lmbda(int(fi), given[i]) for i, fi in enumerate(frame_indices)]
        with deterministic(dev):
            refs, x = self._prepare(rgbs)
            with torch.no_grad():
                lat0 = self.codec.analyze(x)
            base = self._candidate(lat0, refs, frame_indices, pts, 0, lams)
            iters = [0] * n
            seconds = 0.0
            best = base
            choose = [False] * n
            offsets: list[dict[str, Tensor] | None] = [None] * n
            if self.refine.active:
                states = self._start_states(lat0, frame_indices, inits, lams)
                with torch.enable_grad():
                    seconds = run_states(self.codec, x, states, (h, w), self.refine)
                # A frame whose refinement diverged (inf/nan latents, e.g. an absurd --lr)
                # falls back to its unrefined latents (the guard then keeps base).
                for i, s in enumerate(states):
                    if not all(bool(torch.isfinite(v).all()) for v in s.params.values()):
                        s.params = {k: v[i : i + 1].detach().clone() for k, v in lat0.items()}
                latents = stack_states(states)
                iters = [s.t for s in states]
                self.last_refine = RefineResult(
                    latents,
                    iters,
                    seconds,
                    [s.loss_start for s in states],
                    [s.loss_end for s in states],
                )
                best = self._candidate(latents, refs, frame_indices, pts, FLAG_REFINED, lams)
                if self.refine.warm_start:
                    offsets = [
                        s.offset({k: v[i : i + 1] for k, v in lat0.items()})
                        for i, s in enumerate(states)
                    ]
            if self.refine.gop > 1:
                choose = self._code_inter(base, best, frame_indices, pts, (h, w), lams)
            elif best is not base:
                choose = [best.cost[i] < base.cost[i] for i in range(n)]
            # stats go into the stream, so they are computed in the same fixed context
            out = []
            per_frame_s = seconds / n
            for i in range(n):
                init = inits[i] if inits is not None else FrameInit()
                c = best if choose[i] else base
                pb = c.packets[i]
                pkt = read_packet(io.BytesIO(pb))
                stats = FrameStats(
                    index=int(frame_indices[i]),
                    pts=int(pts[i]),
                    bytes=len(pb),
                    bpp=round(metrics.bpp(len(pb), h, w), 6),
                    psnr=round(metrics.psnr_from_mse(c.mse[i]), 4),
                    psnr_y=round(metrics.psnr_y(refs[i], c.rec[i]), 4),
                    ms_ssim=round(metrics.ms_ssim(refs[i], c.rec[i]), 6),
                    rd_before=round(base.cost[i], 6),
                    rd_after=round(c.cost[i], 6),
                    iters=int(iters[i]) + init.spent,
                    refined=bool(choose[i]),
                    refine_seconds=per_frame_s + init.spent_seconds,
                    warm=init.warm,
                    probe_gain=init.probe_gain,
                    allocated=init.allocated,
                    frame_type="P" if pkt.flags & FLAG_INTER else "I",
                    lmbda=init.lmbda,
                    rate_point=self.rate_point,
                )
                out.append(EncodedFrame(pkt, pb, stats, offsets[i]))
        return out

    def encode_groups(
        self,
        rgbs: Sequence[np.ndarray],
        frame_indices: Sequence[int],
        pts: Sequence[int],
        batch: int,
        lmbdas: Sequence[float | None] | None = None,
    ) -> list[EncodedFrame]:
        """Encode whole grid groups (frames ``i`` with equal ``i // grid``; consecutive,
        in order): warm-start chains and/or the adaptive budget of ``self.refine``.

        A group's frames are coded in order (a warm start needs the previous frame's
        result), so batches run the groups in lockstep: the j-th frames of up to ``batch``
        groups together. With a budget, every frame is first probed (``batch`` frames at a
        time), then each group's iterations are shared out by :func:`pipeline.refine.allocate`.
        A frame's bytes depend only on its group, never on the batch or the other groups.

        ``lmbdas``: each frame's GOP lambda (rate control's trials,
        :mod:`pipeline.ratecontrol`); None: the config's. A GOP's intra frame is refined at
        ``ip_ratio ** 2`` times it (:meth:`~pipeline.config.RefineConfig.frame_lmbda`)."""
        cfg = self.refine
        n = len(rgbs)
        if n == 0:
            return []
        refs = [r if r.dtype == np.uint8 else metrics.to_uint8(r) for r in rgbs]
        fidx = [int(i) for i in frame_indices]
        groups = grid_groups(fidx, cfg.grid)
        warm = warm_flags(refs, fidx, groups, cfg.warm_threshold) if cfg.warm_start else [False] * n
        inits = [
            FrameInit(warm=warm[i], lmbda=None if lmbdas is None else lmbdas[i]) for i in range(n)
        ]
        if cfg.budget > 0:
            probed: list[FrameState] = []
            for chunk in batched(range(n), batch):
                probed += self.probe(
                    [refs[i] for i in chunk],
                    [fidx[i] for i in chunk],
                    [inits[i].lmbda for i in chunk],
                )
            for grp in groups:
                ps = [probed[i] for i in grp]
                gains = [max(0.0, float(s.extra["gain"])) for s in ps]
                alloc = allocate(
                    cfg.budget * len(grp),
                    gains,
                    [s.t for s in ps],
                    [s.t if s.converged else cfg.iters for s in ps],
                )
                for i, s, n_i, gain in zip(grp, ps, alloc, gains, strict=True):
                    inits[i].probe_gain, inits[i].allocated = gain, int(n_i)
                    inits[i].spent_seconds = float(s.extra.get("seconds", 0.0))
                    if warm[i]:  # the probe only measured; the frame restarts warm
                        inits[i].stop, inits[i].spent = n_i - s.t, s.t
                    else:  # continue the probe's state up to the allocation
                        s.stop = s.schedule = n_i
                        inits[i].state = s
        results: list[EncodedFrame | None] = [None] * n
        for pos in range(max(len(g) for g in groups)):
            sel = [grp[pos] for grp in groups if pos < len(grp)]
            for i in sel:
                if warm[i]:
                    prev = results[i - 1]
                    assert prev is not None and prev.offset is not None
                    inits[i].offset = prev.offset
            for chunk in batched(sel, batch):
                out = self.encode(
                    [refs[i] for i in chunk],
                    [fidx[i] for i in chunk],
                    [pts[i] for i in chunk],
                    [inits[i] for i in chunk],
                )
                for i, e in zip(chunk, out, strict=True):
                    results[i] = e
            for i in sel:  # free what the next position no longer needs
                inits[i] = FrameInit()
                if pos > 0 and results[i - 1] is not None:
                    results[i - 1].offset = None  # type: ignore[union-attr]
        for e in results:
            assert e is not None
            e.offset = None
        return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- whole videos


def make_header(
    model: LoadedModel,
    info: Any,
    refine: RefineConfig,
    frame_count: int | None = None,
    *,
    tags_carried: bool = True,
    rate_points: Sequence[LoadedModel] = (),
) -> StreamHeader:
    """The stream header of ``model`` coding the video ``info`` (a VideoInfo) with ``refine``.
    Its ``display`` records how the frames are displayed (``info.display``), with the
    container title only when the carry section does not hold the tags (not ``tags_carried``:
    ``--no-carry``). ``rate_points``: the models of a stream coded with several (rate control;
    slot order, ``model`` first), in the header (version 4, 5 with a midpoint, even alone)."""
    display = getattr(info, "display", None)
    if display is not None and tags_carried:
        display = display.without_title()
    hp, wp = padded_size(info.height, info.width, model.arch.pad_multiple)
    ident = model.identity
    return StreamHeader(
        arch=ident.arch,
        quality=ident.quality,
        lmbda=ident.lmbda,
        weights_sha256=ident.weights_sha256,
        tables_sha256=ident.tables_sha256,
        width=info.width,
        height=info.height,
        padded_width=wp,
        padded_height=hp,
        frame_rate=info.frame_rate,
        time_base=info.time_base,
        frame_count=info.frame_count if frame_count is None else frame_count,
        color=info.color.to_dict(),
        refine=refine.to_json(),
        refine_hash=refine.hash(),
        latent_kind=model.arch.kind,
        source={"pix_fmt": info.pix_fmt}
        | ({"video_stream": info.stream_index} if getattr(info, "left_out", ()) else {}),
        gop=refine.gop,
        display=display.to_dict() if display is not None else {},
        rate_points=tuple(
            {
                "quality": p.quality,
                "lmbda": p.lmbda,
                "weights_sha256": p.weights_sha256,
                "tables_sha256": p.tables_sha256,
            }
            for p in listed_rate_points(ident, [m.identity for m in rate_points])
        ),
    )


def batched(frames: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """``frames`` in lists of ``n`` (the last one may be shorter)."""
    buf: list[Any] = []
    for f in frames:
        buf.append(f)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def encode_frames(
    enc: FrameEncoder, frames: Iterable[tuple[np.ndarray, int, int]], batch: int
) -> Iterator[EncodedFrame]:
    """Encode a stream of ``([H, W, 3] rgb, frame index, pts)`` in order: the one path of
    ``relatent encode`` and of the distributed encoder's shards.

    Plain configs go ``batch`` frames at a time. Grid configs (warm starts, adaptive
    budget) buffer ``batch`` whole grid groups (as 8-bit frames) and code them with
    :meth:`FrameEncoder.encode_groups`; so the input must hold whole groups (a shard
    starts on the grid), and the last group of the video may be short."""
    if not enc.refine.uses_grid:
        for group in batched(frames, batch):
            yield from enc.encode(
                [g[0] for g in group], [g[1] for g in group], [g[2] for g in group]
            )
        return
    k = enc.refine.grid
    buf: list[tuple[np.ndarray, int, int]] = []
    seen: list[int] = []
    for rgb, idx, pts in frames:
        g = int(idx) // k
        if not seen or g != seen[-1]:
            if len(seen) == batch:
                yield from enc.encode_groups(
                    [b[0] for b in buf], [b[1] for b in buf], [b[2] for b in buf], batch
                )
                buf, seen = [], []
            seen.append(g)
        buf.append((rgb if rgb.dtype == np.uint8 else metrics.to_uint8(rgb), int(idx), int(pts)))
    if buf:
        yield from enc.encode_groups(
            [b[0] for b in buf], [b[1] for b in buf], [b[2] for b in buf], batch
        )


@dataclass
class EncodeSummary:
    """What :func:`encode_video` wrote: the header, every frame's stats, the wall time (s)
    and what was carried (None with ``carry=False``)."""

    header: StreamHeader
    frames: list[FrameStats]
    seconds: float
    carry: Any = None

    @property
    def totals(self) -> StatsSummary:
        """Totals and per-frame means of :attr:`frames` (packet bytes, not the file size)."""
        return summarize(self.frames)


def check_stream_output(dst: str, src: str) -> None:
    """Refuse, before anything is read or written, a stream output that would destroy the
    source or hide what it holds: ``dst`` must end in ``.rlv`` and must not be ``src``
    (by any spelling: relative, absolute, ``file://``, a symlink or hard link, the same S3 key).

    Raises:
        ConfigError: ``dst`` is the source, or is named like another kind of file."""
    from pipeline import storage
    from pipeline.bitstream import STREAM_SUFFIX

    storage.check_distinct(dst, [src])
    name = str(dst).rstrip("/").rsplit("/", 1)[-1]
    if not name.lower().endswith(STREAM_SUFFIX) or name.lower() == STREAM_SUFFIX:
        raise ConfigError(
            f"{dst}: encode writes {STREAM_SUFFIX} streams, and this name says otherwise",
            hint=f"name the output <name>{STREAM_SUFFIX}; to get a playable video, decode a "
            f"stream (relatent decode in{STREAM_SUFFIX} out.mp4), or re-encode a catalog with relatent transcode",
        )


def encode_video(
    src: str,
    dst: str,
    model: LoadedModel | Sequence[LoadedModel],
    refine: RefineConfig | None = None,
    *,
    batch: int = 4,
    start: int = 0,
    end: int | None = None,
    max_pixels: int | None = None,
    on_frame: Callable[[FrameStats], None] | None = None,
    carry: bool = True,
    drop_broken: bool = False,
    warn: Callable[[str], None] | None = None,
    video_stream: int | None = None,
    memory_available: int | None = None,
    min_psnr: float | None = None,
    strict: bool = False,
) -> EncodeSummary:
    """Encode frames [start, end) of ``src`` (a local path, ``file://`` or ``s3://`` URI, or
    a seekable binary file object) to the stream ``dst`` (written atomically).

    ``model``: the weights; with a target (``refine.target``), the rate points to choose
    from (:meth:`pipeline.ratecontrol.RateController.prepare` runs before anything is written).

    ``video_stream`` is the number of the source's video stream to code (None: the
    default-flagged, then the largest); every other video stream is named in a ``warn``-ing.

    With ``carry`` (the default) the source's other streams (audio, subtitles, ...) are
    copied into the stream's carry section, trimmed to the coded frames' time span
    (:func:`pipeline.media.carry.extract_carry`; ``drop_broken`` leaves corrupt ones out with a
    ``warn``-ing instead of failing). They are extracted before any frame is coded.

    Before the first frame, the memory ``batch`` frames need is estimated
    (:func:`pipeline.memory.fit_batch`) against ``memory_available`` bytes (None: what the
    model's device has free): a batch that does not fit is made smaller, with a
    ``warn``-ing (the bytes do not depend on the batch).

    ``min_psnr``: the quality floor (dB, RGB PSNR): frames below it are named in a
    ``warn``-ing, or with ``strict`` the video fails (nothing is written).

    Raises:
        ConfigError: ``dst`` is the source or not a ``.rlv`` name (:func:`check_stream_output`),
            an option is invalid, or the target quality is out of reach
            (:class:`~pipeline.ratecontrol.TargetUnreachableError`).
        InputError: the source is missing, not video, corrupt or too large.
        InsufficientMemoryError: even ``--batch 1`` needs more memory than is available.
        QualityFloorError: frames fell below ``min_psnr`` with ``strict``.
        StorageError: reading or writing storage failed."""
    from pipeline import media as fio
    from pipeline import storage
    from pipeline.bitstream import carry_bytes
    from pipeline.media.source import source_name

    check_stream_output(dst, src)
    if batch < 1:
        raise ConfigError(f"--batch {batch} must be at least 1")
    if storage.is_s3(src):  # read through one ranged reader, as the distributed path does
        with storage.open_read(src) as reader:
            return encode_video(
                reader, dst, model, refine, batch=batch, start=start, end=end,
                max_pixels=max_pixels, on_frame=on_frame, carry=carry, drop_broken=drop_broken,
                warn=warn, video_stream=video_stream, memory_available=memory_available,
                min_psnr=min_psnr, strict=strict,
            )  # fmt: skip
    from pipeline.ratecontrol import make_encoder
    from pipeline.stats import check_floor

    t0 = time.perf_counter()
    info = fio.probe(src, video_stream=video_stream)
    enc = make_encoder(model, refine, warn, frame_rate=float(info.frame_rate))
    models = enc.models
    fio.warn_left_out(info, warn)
    end = info.frame_count if end is None else end
    fio.check_range(info, start, end)
    batch = fit_batch(
        info.width, info.height, batch, enc.refine, channels=models[0].N,
        device=str(models[0].device), available=memory_available, warn=warn,
        name=source_name(src),
    )  # fmt: skip
    if enc.refine.target is not None:  # fail fast, before anything is extracted or written
        enc.prepare(
            lambda a, b: fio.read_frames(src, a, b, info=info, max_pixels=max_pixels),
            start, end, batch, source_name(src),
        )  # fmt: skip
    carried = None
    section = None
    if carry:
        from pipeline.media import extract_carry

        span_start = info.pts[start] * info.time_base if start > 0 else None
        span_end = info.pts[end] * info.time_base if end < info.frame_count else None
        blob, carried = extract_carry(
            src, start=span_start, end=span_end, drop_broken=drop_broken, warn=warn,
            video_stream=info.stream_index,
        )  # fmt: skip
        section = carry_bytes(carried.to_dict(), blob)
    header = make_header(
        models[0], info, enc.refine, frame_count=end - start, tags_carried=carry,
        rate_points=models,
    )  # fmt: skip
    all_stats: list[FrameStats] = []
    with storage.open_write(dst) as f:
        writer = StreamWriter(f, header)
        frames = (
            (g.rgb, g.index - start, g.pts)
            for g in fio.read_frames(src, start, end, info=info, max_pixels=max_pixels)
        )
        for e in encode_frames(enc, frames, batch):
            writer.write(e.packet, e.stats)
            all_stats.append(e.stats)
            if on_frame:
                on_frame(e.stats)
        check_floor(all_stats, min_psnr, strict, source_name(src), warn)  # before the commit
        writer.close(section)
    return EncodeSummary(header, all_stats, time.perf_counter() - t0, carried)
