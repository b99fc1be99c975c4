"""The one exception hierarchy of relatent.

Every error that a user can cause (bad input, a wrong bitstream, the wrong weights, a
storage failure) is raised as a subclass of :class:`RelatentError`. The message always
names the input that failed and says what to do about it; ``hint`` repeats the fix on its
own so the CLI can print it separately. The CLI maps the branches to exit codes.

::

    RelatentError                      exit code
    ├── ConfigError                    2   an argument or option is invalid
    │   └── UnsupportedStreamError     (the output format cannot hold a carried stream; --strict)
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
    └── ClusterError                   7   a Ray cluster is unreachable, refuses the client
                                           (authentication) or runs another Ray version
"""

from __future__ import annotations


class RelatentError(Exception):
    """Base class of every error relatent raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(f"{message}. {hint}" if hint else message)

    @property
    def message(self) -> str:
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
    pass


class EmptySourceError(InputError):
    pass


class NotVideoError(InputError):
    pass


class CorruptSourceError(InputError):
    pass


class UnsupportedPixelFormatError(InputError):
    pass


class FrameTooLargeError(InputError):
    pass


class BitstreamError(RelatentError):
    """An .rlv stream cannot be parsed or fails its integrity checks."""

    exit_code = 4


class BadMagicError(BitstreamError):
    pass


class UnsupportedVersionError(BitstreamError):
    pass


class ChecksumError(BitstreamError):
    pass


class TruncatedStreamError(BitstreamError):
    pass


class ModelError(RelatentError):
    """The model architecture or weights are unknown, corrupt or not the ones needed."""

    exit_code = 5


class UnknownModelError(ModelError):
    pass


class CorruptWeightsError(ModelError):
    pass


class WeightsMismatchError(ModelError):
    pass


class StorageError(RelatentError):
    """Reading from or writing to a storage location failed."""

    exit_code = 6


class ObjectNotFoundError(StorageError):
    pass


class AccessDeniedError(StorageError):
    pass


class PreconditionFailedError(StorageError):
    pass


class ClusterError(RelatentError):
    """A Ray cluster cannot be used: its address is unreachable, it refuses our token, it
    runs another Ray version, or its Jobs API failed a request. The message names the
    cluster's address."""

    exit_code = 7
