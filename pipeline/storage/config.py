"""Storage configuration: the S3 tunables, their environment defaults and the active config.

:class:`StorageConfig` holds the tunables of the S3 backend (endpoint, retries, timeouts,
multipart and read-ahead sizes). Fields left ``None`` are read from the environment when the
configuration is resolved: ``RELATENT_S3_MAX_ATTEMPTS`` (default 8 attempts per request) and
``RELATENT_S3_RETRY_MODE`` (default ``standard``). :func:`get_config` returns the active,
resolved configuration of this process; :func:`set_config` replaces it.

The S3 size limits (:data:`MIN_PART_SIZE`, :data:`MAX_PART_SIZE`, :data:`MAX_PARTS`) live here
because the configuration is validated against them.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError

__all__ = [
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "GiB",
    "MiB",
    "StorageConfig",
    "env_int",
    "get_config",
    "set_config",
]

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3: every part but the last must be at least this big
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000


def env_int(name: str, default: int) -> int:
    """The integer value of environment variable ``name``; ``default`` when unset or blank.

    Raises:
        ConfigError: the variable is set to something that is not a whole number.
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not an integer",
            hint=f"set {name} to a whole number",
        ) from None


@dataclass(frozen=True)
class StorageConfig:
    """Tunables of the S3 backend. ``None`` fields are read from the environment.

    Sizes are in bytes, timeouts in seconds.
    """

    endpoint_url: str | None = None  # None: boto3's own resolution (AWS_ENDPOINT_URL, config)
    max_attempts: int | None = None  # total attempts per request; env RELATENT_S3_MAX_ATTEMPTS, 8
    retry_mode: str | None = None  # "standard" | "adaptive" | "legacy"; env RELATENT_S3_RETRY_MODE
    region_name: str | None = None  # None: the AWS chain (AWS_REGION, AWS_DEFAULT_REGION, profile)
    multipart_threshold: int = 8 * MiB  # write_bytes switches to multipart above this
    part_size: int = 8 * MiB  # multipart part size (>= 5 MiB)
    read_block_size: int = 4 * MiB  # ranged GET size of open_read's read-ahead
    read_cache_blocks: int = 4  # blocks open_read keeps (header + index + data of a container)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_pool_connections: int = 32

    def resolved(self) -> StorageConfig:
        """A copy with the environment-dependent fields filled in and everything validated.

        Raises:
            ConfigError: an environment variable or a field is out of range (fewer than one
                attempt, an unknown retry mode, a part size outside 5 MiB..5 GiB, a
                non-positive size).
        """
        max_attempts = self.max_attempts
        if max_attempts is None:
            max_attempts = env_int("RELATENT_S3_MAX_ATTEMPTS", 8)
        retry_mode = self.retry_mode or os.environ.get("RELATENT_S3_RETRY_MODE") or "standard"
        if max_attempts < 1:
            raise ConfigError(
                f"S3 max_attempts must be at least 1, got {max_attempts}",
                hint="set RELATENT_S3_MAX_ATTEMPTS to 1 or more",
            )
        if retry_mode not in ("standard", "adaptive", "legacy"):
            raise ConfigError(
                f"unknown S3 retry mode {retry_mode!r}",
                hint="use RELATENT_S3_RETRY_MODE=standard or adaptive",
            )
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ConfigError(
                f"S3 part_size {self.part_size} is outside 5 MiB..5 GiB",
                hint="S3 rejects multipart parts (other than the last) under 5 MiB",
            )
        if self.multipart_threshold < 0 or self.read_block_size < 1 or self.read_cache_blocks < 1:
            raise ConfigError(
                "S3 multipart_threshold, read_block_size and read_cache_blocks must be positive",
                hint="check the StorageConfig values",
            )
        return dataclasses.replace(self, max_attempts=max_attempts, retry_mode=retry_mode)


_config_lock = threading.Lock()
_config: StorageConfig | None = None


def get_config() -> StorageConfig:
    """The active configuration, with environment defaults resolved.

    Raises:
        ConfigError: the environment holds an invalid setting (see
            :meth:`StorageConfig.resolved`).
    """
    global _config
    with _config_lock:
        if _config is None:
            _config = StorageConfig().resolved()
        return _config


def set_config(config: StorageConfig | None = None, **changes: Any) -> StorageConfig:
    """Replace the configuration (``None``: back to the defaults), applying ``changes`` on top.

    Returns the previous configuration so callers (tests) can restore it.

    Raises:
        ConfigError: the new configuration is invalid (see :meth:`StorageConfig.resolved`).
    """
    global _config
    previous = get_config()
    new = config or StorageConfig()
    if changes:
        new = dataclasses.replace(new, **changes)
    new = new.resolved()
    with _config_lock:
        _config = new
    return previous
