"""The one exception hierarchy of relatent.

Every error that a user can cause (bad input, a wrong bitstream, the wrong weights, a
storage failure) is raised as a subclass of :class:`RelatentError`. The message always
names the input that failed and says what to do about it; ``hint`` repeats the fix on its
own so the CLI can print it separately. The CLI maps the branches to exit codes.

::

    RelatentError                      exit code
    ├── ConfigError                    2   an argument or option is invalid
    │   ├── UnsupportedStreamError     (the output format cannot hold a carried stream; --strict)
    │   └── TargetUnreachableError     (--target-psnr/--target-msssim above the best rate point)
    ├── InputError                     3   the source media is unusable
    │   ├── SourceNotFoundError
    │   ├── EmptySourceError
    │   ├── NotVideoError              (not media at all, or no video stream)
    │   ├── CorruptSourceError         (truncated or undecodable)
    │   ├── UnsupportedPixelFormatError
    │   └── FrameTooLargeError
    ├── BitstreamError                 4   an .rlv stream is unusable
    │   ├── BadMagicError
    │   ├── UnsupportedVersionError
    │   ├── ChecksumError
    │   └── TruncatedStreamError
    ├── ModelError                     5   weights or architecture problems
    │   ├── UnknownModelError
    │   ├── CorruptWeightsError
    │   └── WeightsMismatchError
    ├── StorageError                   6   reading or writing storage failed
    │   ├── ObjectNotFoundError
    │   ├── AccessDeniedError
    │   └── PreconditionFailedError    (a conditional write lost the race)
    ├── ClusterError                   7   a Ray cluster is unreachable, refuses the client
    │                                      (authentication) or runs another Ray version
    ├── ResourceError                  8   the machine lacks what the job needs
    │   └── InsufficientMemoryError    (a frame at --batch 1 does not fit: pipeline.memory)
    └── QualityFloorError              9   frames fell below --min-psnr and --strict asked to
                                           fail the video (nothing is committed)
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "BadMagicError",
    "BitstreamError",
    "ChecksumError",
    "ClusterError",
    "ConfigError",
    "CorruptSourceError",
    "CorruptWeightsError",
    "EmptySourceError",
    "FrameTooLargeError",
    "InputError",
    "InsufficientMemoryError",
    "ModelError",
    "NotVideoError",
    "ObjectNotFoundError",
    "PreconditionFailedError",
    "QualityFloorError",
    "RelatentError",
    "ResourceError",
    "SourceNotFoundError",
    "StorageError",
    "TargetUnreachableError",
    "TruncatedStreamError",
    "UnknownModelError",
    "UnsupportedPixelFormatError",
    "UnsupportedStreamError",
    "UnsupportedVersionError",
    "WeightsMismatchError",
]


class RelatentError(Exception):
    """Base class of every error relatent raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(f"{message}. {hint}" if hint else message)

    @property
    def message(self) -> str:
        """The full message (with the hint appended, as ``str(error)`` gives it)."""
        return self.args[0]


class ConfigError(RelatentError):
    """An option or argument has an invalid value."""

    exit_code = 2


class UnsupportedStreamError(ConfigError):
    """The output format cannot hold a stream carried from the source (raised with
    ``--strict``; otherwise the stream is skipped with a warning)."""


class InputError(RelatentError):
    """The source media cannot be used."""

    exit_code = 3


class SourceNotFoundError(InputError):
    """The source file or object does not exist."""


class EmptySourceError(InputError):
    """The source is empty (0 bytes), or its video stream has no frames."""


class NotVideoError(InputError):
    """The source is not media at all, or has no video stream."""


class CorruptSourceError(InputError):
    """The source is truncated or damaged: it cannot be opened, demuxed or decoded."""


class UnsupportedPixelFormatError(InputError):
    """The source's pixel format or colour matrix is not supported."""


class FrameTooLargeError(InputError):
    """The source's frames have more pixels (width * height) than the limit (``--max-pixels``)."""


class BitstreamError(RelatentError):
    """An .rlv stream cannot be parsed or fails its integrity checks."""

    exit_code = 4


class BadMagicError(BitstreamError):
    """The file does not start with the .rlv magic bytes: it is not a stream."""


class UnsupportedVersionError(BitstreamError):
    """The stream's format version is not one this relatent reads."""


class ChecksumError(BitstreamError):
    """A CRC32 of the stream (header, packet, footer or carry section) does not match."""


class TruncatedStreamError(BitstreamError):
    """The stream is cut short (a header, packet, footer or carry section is missing)."""


class ModelError(RelatentError):
    """The model architecture or weights are unknown, corrupt or not the ones needed."""

    exit_code = 5


class UnknownModelError(ModelError):
    """The architecture id is not registered, the checkpoint is autoregressive, or no
    shipped weights exist for the requested architecture and quality."""


class CorruptWeightsError(ModelError):
    """The weights are not a readable CompressAI state dict, or do not fit the architecture."""


class WeightsMismatchError(ModelError):
    """The weights (sha256) or entropy tables are not the ones expected (by a stream or a
    model card)."""


class StorageError(RelatentError):
    """Reading from or writing to a storage location failed."""

    exit_code = 6


class ObjectNotFoundError(StorageError):
    """The file, object or bucket does not exist."""


class AccessDeniedError(StorageError):
    """Permissions or credentials forbid the operation."""


class PreconditionFailedError(StorageError):
    """A conditional write (create-only, or compare-and-swap on an ETag) lost the race: the
    object already exists or changed since it was read."""


class ClusterError(RelatentError):
    """A Ray cluster cannot be used: its address is unreachable, it refuses our token, it
    runs another Ray version, or its Jobs API failed a request. The message names the
    cluster's address."""

    exit_code = 7


class ResourceError(RelatentError):
    """The machine lacks a resource the job needs (memory): the message names the need, what
    is available and the option that lowers the need."""

    exit_code = 8


class InsufficientMemoryError(ResourceError):
    """Even one frame at a time needs more memory than is available
    (:func:`pipeline.memory.fit_batch`); a larger ``--batch`` is made smaller instead."""


class TargetUnreachableError(ConfigError):
    """A target quality (``--target-psnr``, ``--target-msssim``) is above what the best
    rate point reaches on the video's first frame (:mod:`pipeline.ratecontrol`)."""


class QualityFloorError(RelatentError):
    """With ``--strict``, frames were coded below the quality floor (``--min-psnr``): the
    video fails and nothing of it is committed. The message names the video, the frames and
    their PSNR."""

    exit_code = 9
