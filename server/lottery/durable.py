"""Durable file operations of the storage and how they fail: whole writes, syncs, atomic
replacement of a file, and the exceptions every storage module raises.

The failures are told apart because the central acts differently on each:

- `WriteFailed`: a write failed (a full disk, a file too large) and was undone; nothing changed,
  so the request is refused with INTERNAL_ERROR and a later try may succeed.
- `SyncFailed`: an fsync/fdatasync failed. The kernel may have dropped the pages it covered while
  the cache still shows them (PostgreSQL's lesson), so nothing it covered may ever be
  acknowledged: the process stops at once (fail-stop), and the next start recovers from the disk.
- `StorageError`: the files cannot be trusted (damage, an undo that failed): stop likewise.
"""

from __future__ import annotations

import os
from pathlib import Path


class StorageError(Exception):
    """The storage is unusable (damaged files, an I/O error): the process must stop."""


class SyncFailed(StorageError):
    """fsync/fdatasync failed: what it covered may be lost; stop before answering (fail-stop)."""


class WriteFailed(Exception):
    """An append failed (e.g. ENOSPC) and was undone: nothing changed, a later try may succeed."""


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` (os.write may write fewer); OSError if one write fails."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def sync(fd: int, what: str) -> None:
    """fdatasync `fd`; SyncFailed if it fails."""
    try:
        os.fdatasync(fd)
    except OSError as err:
        raise SyncFailed(f"fdatasync of {what}: {err.strerror or err}") from err


def sync_path(path: Path) -> None:
    """fdatasync the file at `path`."""
    fd = os.open(path, os.O_WRONLY)
    try:
        sync(fd, str(path))
    finally:
        os.close(fd)


def sync_dir(directory: Path) -> None:
    """fsync a directory, so that the names created or renamed in it are durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            os.fsync(fd)
        except OSError as err:
            raise SyncFailed(f"fsync of {directory}: {err.strerror or err}") from err
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temporary file, fsync, rename, directory fsync.

    WriteFailed if writing fails (nothing changed), SyncFailed if an fsync does."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as err:
        raise WriteFailed(f"create {temporary}: {err.strerror or err}") from err
    try:
        try:
            write_all(fd, data)
        except OSError as err:
            raise WriteFailed(f"write {temporary}: {err.strerror or err}") from err
        sync(fd, str(temporary))
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temporary, path)
    sync_dir(path.parent)
