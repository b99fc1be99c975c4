"""The local storage backend: plain paths and ``file://`` URIs.

Writes are atomic: a hidden temporary file (``.<name>.<random>.rltmp``) in the destination
directory is written, fsynced and moved into place with :func:`os.replace`; create-only
writes use :func:`os.link`, which fails when the destination exists. Parent directories are
created as needed, like S3 which has no directories. Files are created with mode
``0666 & ~umask`` (and any default ACL), like ``open(path, "wb")``: the committed file has
the mode every other file tool would give it.

Leftovers of killed writers: the writer holds an exclusive ``flock`` on its temporary file
from creation until it is published or removed, and the kernel drops that lock when the
process dies, even by ``SIGKILL``. :func:`remove_stale_temps` removes a temporary file only
when it can take that lock (its writer is gone); a live writer's file, of this process or
another, is never touched. Every :meth:`LocalBackend.open_write` first removes the stale
temporary files of its own target name (a rerun cleans what the killed run left), and
:func:`cluster.commit.clean_staging` removes those under a committed video's staging folder.
On a filesystem without ``flock`` a temporary file is removed only once it has not been
modified for :data:`STALE_TEMP_AGE` seconds (the default lease TTL).

Compare-and-swap uses ``os.link`` (create) and an exclusive ``flock`` of the directory
(replace, delete), with the content MD5 as the ETag (what S3 reports for a single-part
upload). ``OSError`` is translated into the :mod:`pipeline.errors` storage errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import (
    AccessDeniedError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from pipeline.storage.backend import ObjectInfo, content_etag, lost_race, strip_etag
from pipeline.storage.uri import local_path, same_form

__all__ = [
    "STALE_TEMP_AGE",
    "TMP_SUFFIX",
    "LocalBackend",
    "is_temp_name",
    "local_error",
    "local_errors",
    "remove_stale_temps",
]

TMP_SUFFIX = ".rltmp"  # local temporary files: ".<name>.<random>.rltmp" next to the target

#: Seconds after its last change that a temporary file counts as abandoned where ``flock``
#: is not available (the default lease TTL, ``--lease-ttl``); with ``flock`` the lock decides.
STALE_TEMP_AGE = 900.0

# ".<name>.<random>.rltmp": <random> is hex here, [a-z0-9_] in the mkstemp names of earlier
# versions; never a dot, so "o.rlv" does not claim the temporary files of "o.rlv.x".
_TEMP_RANDOM = re.compile(r"[A-Za-z0-9_]+")


# --------------------------------------------------------------------------- errors


def local_error(exc: OSError, uri: str, action: str) -> StorageError:
    """Translate an ``OSError`` met while doing ``action`` on ``uri`` into the relatent
    hierarchy: :class:`ObjectNotFoundError`, :class:`AccessDeniedError` or
    :class:`StorageError` (returned, not raised)."""
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFoundError(f"cannot {action} {uri}: no such file", hint="check the path")
    if isinstance(exc, PermissionError):
        return AccessDeniedError(
            f"cannot {action} {uri}: permission denied",
            hint="check the file and directory permissions",
        )
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"cannot {action} {uri}: it is a directory", hint="name a file")
    return StorageError(
        f"cannot {action} {uri}: {exc.strerror or exc}",
        hint="check the disk (space, mounts) and retry",
    )


@contextlib.contextmanager
def local_errors(uri: str, action: str) -> Iterator[None]:
    """Re-raise any ``OSError`` of the block as :func:`local_error` translates it.

    Raises:
        StorageError: (or its subclasses ObjectNotFoundError, AccessDeniedError) for an
            ``OSError`` raised inside the block.
    """
    try:
        yield
    except OSError as exc:
        raise local_error(exc, uri, action) from None


# --------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def is_temp_name(filename: str, target_name: str | None = None) -> bool:
    """Whether ``filename`` is a local temporary file (``.<name>.<random>.rltmp``); with
    ``target_name``, one of the file ``target_name`` (same directory)."""
    if not (filename.startswith(".") and filename.endswith(TMP_SUFFIX)):
        return False
    if target_name is None:
        return True
    head = f".{target_name}."
    middle = filename[len(head) : -len(TMP_SUFFIX)]
    return filename.startswith(head) and bool(_TEMP_RANDOM.fullmatch(middle))


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed or replaced)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _try_lock(fd: int) -> bool | None:
    """Take the exclusive ``flock`` of ``fd`` without waiting: True when taken, False when
    another open file holds it, None when the filesystem has no ``flock``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise
    return True


def _remove_if_stale(path: Path, now: float) -> bool:
    """Remove the temporary file ``path`` if its writer is gone (see the module docstring);
    True when removed. Files this user cannot open are left alone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # gone already, a symlink, or not ours to read
        return False
    try:
        locked = _try_lock(fd)
        if locked is False:
            return False  # a live writer holds it
        if locked is None and now - os.fstat(fd).st_mtime < STALE_TEMP_AGE:
            return False  # no locks here: only abandoned (old) files go
        if not _same_file(fd, path):
            return False  # published or removed meanwhile
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temps(
    directory: str | os.PathLike[str], *, name: str | None = None, recursive: bool = False
) -> list[Path]:
    """Remove the temporary files in ``directory`` (``recursive``: and below it) whose
    writer is gone: killed, crashed or interrupted. With ``name``, only those of the target
    file ``name``. A temporary file a live process is writing is never removed (its writer
    holds an exclusive ``flock`` on it; without ``flock``, only files unchanged for
    :data:`STALE_TEMP_AGE` seconds go). Returns the removed paths; a missing directory and
    files that vanish or cannot be opened are skipped.

    Raises:
        OSError: only for errors other than a missing or unreadable file (e.g. EIO).
    """
    root = Path(directory)
    now = time.time()
    removed: list[Path] = []
    walk = os.walk(root) if recursive else [(str(root), [], _names(root))]
    for dirpath, _dirs, filenames in walk:
        for fn in filenames:
            if is_temp_name(fn, name):
                p = Path(dirpath, fn)
                if _remove_if_stale(p, now):
                    removed.append(p)
    return removed


def _names(directory: Path) -> list[str]:
    """The names in ``directory`` (none when it is missing or unreadable)."""
    try:
        return [p.name for p in directory.iterdir()]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _local_temp(target: Path) -> tuple[int, Path]:
    """Create and lock a new temporary file next to ``target``: the descriptor (held locked
    by this process until it is closed) and the path. Mode ``0666 & ~umask``, like
    ``open(path, "wb")``. Stale temporary files of ``target`` are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent, name=target.name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        if _try_lock(fd) is not False and _same_file(fd, tmp):
            return fd, tmp
        os.close(fd)  # another run's cleanup took it between the create and the lock
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


def _local_publish(tmp: Path, target: Path, uri: str, if_none_match: bool) -> None:
    """Move the finished temporary file onto ``target`` (create-only when asked)."""
    if if_none_match:
        try:
            os.link(tmp, target)  # atomic, and fails if target exists
        except FileExistsError:
            raise PreconditionFailedError(
                f"cannot write {uri}: it already exists (create-only write)",
                hint="write to a new name, or delete the existing file first",
            ) from None
        except OSError:
            # Filesystems without hard links: check then rename (a small race remains).
            if target.exists():
                raise PreconditionFailedError(
                    f"cannot write {uri}: it already exists (create-only write)",
                    hint="write to a new name, or delete the existing file first",
                ) from None
            tmp.replace(target)
        else:
            tmp.unlink()
    else:
        tmp.replace(target)
    _fsync_dir(target.parent)


@contextlib.contextmanager
def _local_cas_lock(target: Path) -> Iterator[None]:
    """Serialise the compare-and-swap operations on the files of one local directory
    (an exclusive ``flock`` on the directory itself, across processes)."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _local_info(uri: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        uri=uri,
        size=st.st_size,
        etag=f"{st.st_size}-{st.st_mtime_ns}",
        version=None,
        mtime=st.st_mtime_ns / 1e9,
    )


# --------------------------------------------------------------------------- the backend


class LocalBackend:
    """The :class:`~pipeline.storage.backend.Backend` of local paths and ``file://`` URIs.

    Every method raises :class:`~pipeline.errors.ConfigError` for a URI that is not local
    (see :func:`~pipeline.storage.uri.local_path`) and translates ``OSError`` with
    :func:`local_error`.
    """

    def read_bytes(self, uri: str) -> bytes:
        """The whole content of the file.

        Raises:
            ObjectNotFoundError: no such file.
            StorageError: it is a directory, or the read failed.
        """
        p = local_path(uri)
        with local_errors(uri, "read"), p.open("rb") as f:
            return f.read()

    def open_read(self, uri: str) -> BinaryIO:
        """The file opened for binary reading.

        Raises:
            ObjectNotFoundError: no such file.
            StorageError: it is a directory, or it cannot be opened.
        """
        p = local_path(uri)
        with local_errors(uri, "open"):
            if p.is_dir():
                raise IsADirectoryError(21, "Is a directory", str(p))
            return p.open("rb")

    @contextlib.contextmanager
    def open_write(self, uri: str, *, if_none_match: bool = False) -> Iterator[BinaryIO]:
        """A temporary file next to the target, fsynced and renamed onto it at exit.

        Raises:
            PreconditionFailedError: ``if_none_match`` and the file exists at exit.
            StorageError: the temporary file cannot be created, written or published.
        """
        target = local_path(uri)
        with local_errors(uri, "write"):
            fd, tmp = _local_temp(target)
        f = os.fdopen(fd, "wb")
        try:
            yield f  # type: ignore[misc]
            with local_errors(uri, "write"):
                f.flush()
                os.fsync(f.fileno())
                _local_publish(tmp, target, uri, if_none_match)
        finally:
            # Removed while the lock is still held (closing the file releases it).
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            with contextlib.suppress(OSError):  # flushed and fsynced already on success
                f.close()

    def write_bytes(self, uri: str, data: bytes, *, if_none_match: bool = False) -> None:
        """Temporary file in the same directory + fsync + rename.

        Raises:
            PreconditionFailedError: ``if_none_match`` and the file exists.
            StorageError: the write failed.
        """
        with local_errors(uri, "write"), self.open_write(uri, if_none_match=if_none_match) as f:
            f.write(data)

    def read_versioned(self, uri: str) -> tuple[bytes, str]:
        """The content and its hex MD5 (what S3 gives a single-part upload).

        Raises:
            ObjectNotFoundError: no such file.
            StorageError: the read failed.
        """
        data = self.read_bytes(uri)
        return data, content_etag(data)

    def put_if_absent(self, uri: str, data: bytes) -> str:
        """Temporary file + ``os.link`` (atomic, fails if the name exists); returns the MD5.

        Raises:
            PreconditionFailedError: the file exists.
            StorageError: the write failed.
        """
        with local_errors(uri, "create"), self.open_write(uri, if_none_match=True) as f:
            f.write(data)
        return content_etag(data)

    def replace_if_match(self, uri: str, data: bytes, etag: str) -> str:
        """Compare and atomic rename under an exclusive ``flock`` of the directory.

        Raises:
            PreconditionFailedError: the file changed (MD5 differs) or is gone.
            StorageError: the read or the write failed.
        """
        target = local_path(uri)
        with local_errors(uri, "replace"), _local_cas_lock(target):
            try:
                current = target.read_bytes()
            except FileNotFoundError:
                raise lost_race(uri, "replace", "it no longer exists") from None
            if content_etag(current) != strip_etag(etag):
                raise lost_race(uri, "replace", "it changed since it was read (ETag differs)")
            with self.open_write(uri) as f:
                f.write(data)
        return content_etag(data)

    def delete_if_match(self, uri: str, etag: str) -> None:
        """Compare and unlink under the directory lock.

        Raises:
            PreconditionFailedError: the file changed (MD5 differs) or is gone.
            StorageError: the read or the unlink failed.
        """
        target = local_path(uri)
        with local_errors(uri, "delete"), _local_cas_lock(target):
            try:
                current = target.read_bytes()
            except FileNotFoundError:
                raise lost_race(uri, "delete", "it no longer exists") from None
            if content_etag(current) != strip_etag(etag):
                raise lost_race(uri, "delete", "it changed since it was read (ETag differs)")
            target.unlink()

    def stat(self, uri: str) -> ObjectInfo:
        """Size, ``"<size>-<mtime_ns>"`` fingerprint and mtime of one file.

        Raises:
            ObjectNotFoundError: no such file.
            StorageError: it is a directory, or stat failed.
        """
        p = local_path(uri)
        with local_errors(uri, "stat"):
            st = p.stat()
            if p.is_dir():
                raise IsADirectoryError(21, "Is a directory", str(p))
        return _local_info(uri, st)

    def exists(self, uri: str) -> bool:
        """Whether a regular file exists at ``uri``."""
        return local_path(uri).is_file()

    def list_prefix(self, uri_prefix: str, keep: Callable[[str], bool]) -> list[ObjectInfo]:
        """The files under a directory, or a directory plus a file-name prefix, recursively.

        In-flight temporary files are skipped; URIs are spelled like ``uri_prefix``.

        Raises:
            StorageError: walking the directory failed.
        """
        base = local_path(uri_prefix)
        if base.is_dir():
            root, name_prefix = base, ""
        else:
            root, name_prefix = base.parent, base.name
        if not root.is_dir():
            return []
        out: list[ObjectInfo] = []
        with local_errors(uri_prefix, "list"):
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                rel = os.path.relpath(dirpath, root)
                for fn in filenames:
                    first = fn if rel == "." else rel.split(os.sep, 1)[0]
                    if not first.startswith(name_prefix):
                        continue
                    if is_temp_name(fn):
                        continue  # an in-flight atomic write
                    if not keep(fn):
                        continue
                    p = Path(dirpath, fn)
                    try:
                        st = p.stat()
                    except FileNotFoundError:  # deleted while listing
                        continue
                    out.append(_local_info(same_form(uri_prefix, p), st))
        return out

    def delete(self, uri: str) -> None:
        """Unlink the file; a missing file is not an error.

        Raises:
            StorageError: the unlink failed (permissions, a directory).
        """
        p = local_path(uri)
        with local_errors(uri, "delete"), contextlib.suppress(FileNotFoundError):
            p.unlink()

    def concat_in_place(self, dst_uri: str, src_uris: Sequence[str]) -> bool:
        """Always ``False``: local concatenation streams through this process."""
        return False
