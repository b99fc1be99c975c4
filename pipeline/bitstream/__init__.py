"""The .rlv container: header, per-frame packets, footer index. Spec: docs/bitstream.md.

Layout (all integers little-endian; format version 2)::

    stream  := header packet* carry? footer
    header  := MAGIC(8) version:u16 json_len:u32 json crc32(json):u32
    packet  := b"PK" body_len:u32 body crc32(body):u32
    body    := frame_index:u64 pts:i64 flags:u8 latent_crc:u32 n:u8 (len:u32 bytes)*n
    carry   := b"RLVC" info_len:u32 info_json crc32(info_json):u32
               blob_len:u64 crc32(blob):u32 blob
    footer  := b"RLVI" count:u64 (frame_index:u64 offset:u64 length:u32)*count
               stats_len:u32 stats_json carry_offset:u64 carry_length:u64
               crc32(b"RLVI"..carry_length):u32
               footer_offset:u64 b"RLVE"

Version 3 (streams with a GOP, header field ``gop`` > 1) adds P-frame packets: flag
:data:`FLAG_INTER`, one string coded against the previous frame's integer symbols
(:mod:`pipeline.inter`); the footer record of a P frame has ``"type": "P"``. All-intra
streams are still written as version 2, byte for byte as before.
Version 4 (streams with rate points, header field ``rate_points`` non-empty) codes frames
with several models of one architecture: packet flags bits 2..4 (:data:`RATE_SLOT_MASK`)
name the slot in ``rate_points`` of the model that coded the frame; otherwise it is version
3. Streams without rate points are written as before (version 2 or 3).
Version 1 is the same without the carry section and without the two carry fields of the
footer; it is still read (and written with ``version=1``). The carry section holds the
source's non-video streams, copied (see :mod:`pipeline.media.carry`); ``carry_offset`` and
``carry_length`` are 0 when there is none.

A *shard* is a run of whole packets for a frame range. Concatenating header + shards in
frame order + carry section + tail gives a complete stream; the tail (footer + trailer) is
computed from the header size, the packet lengths, the per-frame stats and the carry
section's length alone (:func:`stream_tail`), so reassembly never has to parse shard bytes.
This module is the only owner of that layout: :func:`assemble`, :class:`StreamWriter` and
the distributed commit (:mod:`cluster.commit`) all get their tail from :func:`stream_tail`.

Per-frame statistics travel as :class:`pipeline.stats.FrameStats`; the footer stores
their :meth:`~pipeline.stats.FrameStats.to_stream` records.

Reading trusts no field: :mod:`pipeline.bitstream.schema` holds the bounds every header,
footer and carry field is checked against, and every length is checked against the bytes
that can hold it before anything is read or allocated (docs/bitstream.md, Field bounds).
"""

from pipeline.bitstream.format import *  # noqa: F403
from pipeline.bitstream.format import __all__ as _format_all
from pipeline.bitstream.reader import StreamReader

__all__ = [*_format_all, "StreamReader"]
