"""Storage URIs: which backend a URI names, and how to take one apart or extend it.

Three spellings are accepted: a plain path (``out/a.rlv``), a ``file://`` URI
(``file:///data/a.rlv``, three slashes) and ``s3://bucket/key``. Any other scheme
(``gs://``, ``http://``) is a :class:`~pipeline.errors.ConfigError`. Nothing here touches
storage.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline.errors import ConfigError

__all__ = [
    "check_distinct",
    "check_scheme",
    "is_s3",
    "join",
    "local_path",
    "same_form",
    "same_object",
    "split_s3",
]

_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an ``s3://`` URI (case-insensitive scheme; non-strings are not)."""
    return isinstance(uri, str) and uri[:5].lower() == "s3://"


def check_scheme(uri: str) -> None:
    """Accept plain paths and the ``file://`` and ``s3://`` schemes.

    Raises:
        ConfigError: ``uri`` has another scheme (``gs://``, ``http://``, ...).
    """
    m = _SCHEME_RE.match(uri)
    if m and m.group(1).lower() not in ("file", "s3"):
        raise ConfigError(
            f"unsupported storage URI {uri!r}",
            hint="use a local path, a file:// URI or s3://bucket/key",
        )


def local_path(uri: str | os.PathLike[str]) -> Path:
    """The filesystem path of a local path or ``file://`` URI.

    Raises:
        ConfigError: ``uri`` is an S3 URI, has an unsupported scheme, or is a ``file://`` URI
            that names a host.
    """
    if isinstance(uri, os.PathLike):
        return Path(uri)
    if is_s3(uri):
        raise ConfigError(f"{uri} is an S3 URI, not a local path", hint="use open_read/read_bytes")
    check_scheme(uri)
    if uri[:7].lower() == "file://":
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"file URI {uri!r} names host {parsed.netloc!r}",
                hint="use file:///absolute/path (three slashes)",
            )
        return Path(unquote(parsed.path))
    return Path(uri)


def split_s3(uri: str, *, need_key: bool = True) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; the key may be empty when not ``need_key``.

    Raises:
        ConfigError: the bucket is missing, or the key is missing and ``need_key`` is set.
    """
    rest = uri[5:]
    bucket, _, key = rest.partition("/")
    if not bucket or (need_key and not key):
        raise ConfigError(
            f"{uri!r} is not a valid S3 object URI", hint="use s3://bucket/path/to/object"
        )
    return bucket, key


def join(base_uri: str, *parts: str) -> str:
    """Join path components onto a local path, ``file://`` or ``s3://`` URI.

    Leading and trailing slashes of ``parts`` are dropped, and empty parts are skipped:
    ``join("s3://b", "a/", "/c.mp4") == "s3://b/a/c.mp4"``.
    """
    clean = [p.strip("/") for p in parts if p and p.strip("/")]
    if is_s3(base_uri) or base_uri[:7].lower() == "file://":
        out = base_uri
        for p in clean:
            out = out + p if out.endswith("/") else f"{out}/{p}"
        return out
    return posixpath.join(str(base_uri), *clean) if clean else str(base_uri)


def same_form(template: str, path: Path) -> str:
    """Spell ``path`` the way ``template`` was spelled (plain path or file:// URI)."""
    if template[:7].lower() == "file://":
        return "file://" + str(path)
    return str(path)


def _s3_identity(uri: str) -> tuple[str, str]:
    bucket, key = split_s3(uri, need_key=False)
    return bucket, posixpath.normpath("/" + key).lstrip("/")


def same_object(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name the same stored object, however each is spelled.

    Local: the same file on disk when both exist (:func:`os.path.samefile`: relative and
    absolute paths, ``file://`` URIs, symlinks and hard links all resolve to one inode);
    otherwise the same fully resolved path. S3: the same bucket and normalised key
    (``s3://b/x//y`` is ``s3://b/x/y``). A local path and an S3 URI are never the same.

    Raises:
        ConfigError: either is malformed or has an unsupported scheme.
    """
    a_s3, b_s3 = is_s3(a), is_s3(b)  # type: ignore[arg-type]
    if a_s3 or b_s3:
        return a_s3 and b_s3 and _s3_identity(str(a)) == _s3_identity(str(b))
    pa, pb = local_path(a), local_path(b)
    try:
        return pa.samefile(pb)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return pa.resolve() == pb.resolve()


def check_distinct(output: str | os.PathLike[str], inputs: Sequence[object]) -> None:
    """Refuse an ``output`` that is one of the ``inputs`` (:func:`same_object`), before
    anything is read or written: writing it would replace the input. Inputs that are open
    file objects (not paths or URIs) are skipped.

    Raises:
        ConfigError: ``output`` names the same object as an input (exit code 2).
    """
    for src in inputs:
        if not isinstance(src, (str, os.PathLike)):
            continue  # an open file object is not named by a path or key
        if same_object(output, src):
            same = "" if str(output) == str(src) else f" ({src})"
            raise ConfigError(
                f"{output}: the output is the source{same}; writing it would destroy the source",
                hint="write the output to another path",
            )
