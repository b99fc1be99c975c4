"""Media test helpers shared by the pipeline and cluster tests: tiny sources with several
audio tracks (language tags, a late start), subtitles, chapters and attachments, written with
PyAV; packet comparisons; damaging one track's packets in place."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 25
FRAME = 1 / RATE


def _audio(
    out: av.container.OutputContainer, st: av.AudioStream, start: int, n: int, seed: int
) -> None:
    fs = st.codec_context.frame_size or 1152
    fmt = st.codec_context.format.name
    pts = start
    for k in range(n):
        x = (0.3 * np.sin(np.arange(fs) / (4 + seed) + k)).astype(np.float32)[None]
        fr = av.AudioFrame.from_ndarray(
            x if fmt == "fltp" else (x * 30000).astype(np.int16), format=fmt, layout="mono"
        )
        fr.sample_rate, fr.pts = 16000, pts
        pts += fs
        out.mux(st.encode(fr))
    out.mux(st.encode(None))


def make_source(
    path: Path,
    *,
    audio: list[dict],
    subtitle: dict | None = None,
    chapters: bool = False,
    attachment: bool = False,
    rotation: float | None = None,
    frames: int = 10,
) -> Path:
    """A 64x48 mpeg4 video at 25 fps plus ``audio`` tracks (dicts: codec, lang, title,
    start (samples at 16 kHz), packets) and an optional subtitle (codec, lang, text)."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=RATE)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        if rotation is not None:
            v.set_display_rotation(rotation)
        streams = []
        for a in audio:
            st = out.add_stream(a["codec"], rate=16000, layout="mono")
            st.metadata["language"] = a["lang"]
            if a.get("title"):
                st.metadata["title"] = a["title"]
            streams.append((st, a))
        sub = None
        if subtitle is not None:
            sub = out.add_mux_stream(subtitle["codec"])
            sub.time_base = Fraction(1, 1000)
            sub.metadata["language"] = subtitle["lang"]
        if attachment:
            out.add_attachment(
                "font.ttf", "application/x-truetype-font", b"\x00\x01\x00\x00not-a-real-font"
            )
        out.metadata["title"] = "A title"
        if chapters:
            out.set_chapters([
                {"id": 1, "start": 0, "end": 200, "time_base": Fraction(1, 1000), "metadata": {"title": "Opening"}},
                {"id": 2, "start": 200, "end": 400, "time_base": Fraction(1, 1000), "metadata": {"title": "End"}},
            ])  # fmt: skip
        yy, xx = np.mgrid[0:48, 0:64]
        for i in range(frames):
            rgb = np.stack(
                [(xx * 4 + i * 9) % 256, (yy * 5) % 256, np.full_like(xx, 40 + 10 * i)], -1
            ).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            out.mux(v.encode(f))
        for k, (st, a) in enumerate(streams):
            _audio(out, st, a.get("start", 0), a.get("packets", 12), k)
        if sub is not None:
            pk = av.Packet(subtitle["text"])
            pk.stream, pk.time_base = sub, Fraction(1, 1000)
            pk.pts = pk.dts = 120
            pk.duration = 200
            out.mux(pk)
        out.mux(v.encode(None))
    return path


def mkv_source(tmp: Path, **kw) -> Path:
    return make_source(
        tmp / "film.mkv",
        audio=[
            {"codec": "aac", "lang": "eng", "title": "Main", "packets": 14},
            {"codec": "mp2", "lang": "fra", "title": "Doublage", "start": 8000, "packets": 4},  # starts at 0.5 s
        ],
        subtitle={"codec": "subrip", "lang": "deu", "text": b"Guten Tag"},
        chapters=True, attachment=True, **kw,
    )  # fmt: skip


def packets_by_stream(
    path: Path | bytes, kinds: tuple[str, ...] = ("audio", "subtitle")
) -> dict[tuple[str, str], list]:
    """{(type, language): [(seconds, payload), ...]} of the non-empty packets, in order."""
    src = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    out: dict[tuple[str, str], list] = {}
    with av.open(src) as c:
        keys = {s.index: (s.type, s.metadata.get("language", "und")) for s in c.streams}
        for p in c.demux([s for s in c.streams if s.type in kinds]):
            if p.size > 2:  # mov_text writes 2-byte empty samples in gaps
                out.setdefault(keys[p.stream.index], []).append(
                    (float(p.pts * p.time_base), bytes(p))
                )
    return out


def assert_same_packets(src: list, got: list, bound: float = FRAME) -> None:
    assert [b for _, b in got] == [b for _, b in src]  # byte-identical, in order
    assert max(abs(a - b) for (a, _), (b, _) in zip(src, got, strict=True)) < bound


def streams_of(path: Path) -> list[tuple[str, str | None, str | None]]:
    with av.open(str(path)) as c:
        return [
            (
                s.type,
                s.codec_context.codec.canonical_name if s.codec_context else None,
                s.metadata.get("language"),
            )
            for s in c.streams
        ]


def first_video_time(path: Path) -> float:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return min(float(p.pts * p.time_base) for p in c.demux(v) if p.pts is not None)


def corrupt_track(src: Path, key: tuple[str, str], packets: slice = slice(2, 6)) -> Path:
    """Overwrite the payload of some packets of the track ``key`` ((type, language)) in place,
    keeping the container intact: the track fails to decode, the file still demuxes."""
    data = bytearray(src.read_bytes())
    for _, payload in packets_by_stream(src)[key][packets]:
        off = data.find(payload)
        assert off > 0, "payload not found in the file"
        data[off + 2 : off + len(payload)] = b"\xff" * (len(payload) - 2)
    src.write_bytes(bytes(data))
    return src
