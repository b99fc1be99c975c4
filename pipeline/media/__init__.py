"""Media I/O: probe a video or still image, decode frame ranges to float RGB, write frames,
and carry a source's other streams (audio, subtitles, ...) through a transcode.

One module per concern (each docstring has the details):

* :mod:`~pipeline.media.source`: opening sources (local paths, ``file://`` URIs, seekable
  file objects such as :func:`pipeline.storage.open_read`), sniffing, the video stream.
* :mod:`~pipeline.media.colour`: :class:`ColorInfo`, the matrix/range tables
  (:data:`LUMA_COEFFS`), YUV to RGB and RGB to YCbCr.
* :mod:`~pipeline.media.display`: :class:`DisplayInfo` (rotation, sample aspect ratio, field
  order, title), reading it and applying it to outputs.
* :mod:`~pipeline.media.probe`: :func:`probe` and :class:`VideoInfo` (exact frame count,
  timestamps, keyframes), the frame range and size checks.
* :mod:`~pipeline.media.decode`: :func:`read_frames`, exact frame ranges with seeking.
* :mod:`~pipeline.media.write`: :func:`write_frames` (PNG, Y4M, MP4/MKV), atomic outputs.
* :mod:`~pipeline.media.carry`: :func:`extract_carry` and :class:`CarryMuxer`.

Errors are the :class:`~pipeline.errors.InputError` and
:class:`~pipeline.errors.ConfigError` branches of :mod:`pipeline.errors`. Never imports
ray or torch.
"""

from __future__ import annotations

from pipeline.media.carry import (
    BLOB_FORMATS,
    CarriedStream,
    CarryInfo,
    CarryMuxer,
    DroppedStream,
    extract_carry,
)
from pipeline.media.colour import LUMA_COEFFS, ColorInfo
from pipeline.media.decode import Frame, read_frames
from pipeline.media.display import DisplayInfo, output_notes
from pipeline.media.probe import (
    DEFAULT_MAX_PIXELS,
    VideoInfo,
    check_limit,
    check_range,
    probe,
    warn_left_out,
)
from pipeline.media.source import Source
from pipeline.media.write import ExtraStreams, write_frames

__all__ = [
    "BLOB_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "LUMA_COEFFS",
    "CarriedStream",
    "CarryInfo",
    "CarryMuxer",
    "ColorInfo",
    "DisplayInfo",
    "DroppedStream",
    "ExtraStreams",
    "Frame",
    "Source",
    "VideoInfo",
    "check_limit",
    "check_range",
    "extract_carry",
    "output_notes",
    "probe",
    "read_frames",
    "warn_left_out",
    "write_frames",
]
