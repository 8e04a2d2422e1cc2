"""Atomic file writes: a reader (or a scan killed midway) never sees a half-written file."""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Iterator

_local = threading.local()  # .files: the FileSet open in this thread, if any
_syncers: dict[int, ThreadPoolExecutor] = {}  # by process: a pool does not survive a fork


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle on a hidden temporary file beside `path`; when the block ends without
    an exception the file is synced and renamed over `path` (inside a FileSet: when the set
    ends), otherwise it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    files: FileSet | None = getattr(_local, "files", None)
    handle = open(temporary, "wb")
    try:
        yield handle
        handle.flush()
        if files is not None:
            files.pending.append((handle, temporary, path))
            handle = None  # the set syncs, closes and renames it
            return
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temporary, path)
    finally:
        if handle is not None:  # failed (a close that fails again must not keep the file)
            _discard(handle, temporary)


class FileSet:
    """Files written with atomic_open inside this block appear together when it ends: all
    synced at once (the file system commits them together instead of once per file), then
    renamed. If the block fails, none of them appears.

    Inside a `deferred_commits()` block the set's syncs start when it ends, but it is committed
    only by an explicit `commit()`: the syncs of several sets then run while other work goes
    on, instead of each set waiting for its own."""

    def __enter__(self) -> "FileSet":
        if getattr(_local, "files", None) is not None:
            raise RuntimeError("FileSet blocks do not nest")
        self.pending: list[tuple[BinaryIO, Path, Path]] = []
        self.syncs: list[Future] = []
        _local.files = self
        return self

    def __exit__(self, kind, value, traceback) -> None:
        _local.files = None
        if kind is not None:
            self.discard()
            return
        try:
            self.syncs = [_syncer().submit(os.fsync, handle.fileno())
                          for handle, _, _ in self.pending]
        except BaseException:
            self.discard()
            raise
        if getattr(_local, "deferred", None) is None:
            self.commit()
        else:
            _local.deferred.append(self)

    def commit(self) -> None:
        """Waits for the syncs, then renames every file into place. If that fails, none of
        the set's files is left under its final name (a file it replaced is gone too)."""
        try:
            for sync in self.syncs:
                sync.result()  # re-raises a failed fsync
            for handle, temporary, path in self.pending:
                handle.close()
                os.replace(temporary, path)
        except BaseException:
            for _, _, path in self.pending:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise
        finally:
            self.discard()  # a file renamed into place is no longer there

    def discard(self) -> None:
        """Deletes the set's temporary files (after its syncs, which may still hold them)."""
        for sync in self.syncs:
            with contextlib.suppress(Exception):
                sync.result()
        for handle, temporary, _ in self.pending:
            _discard(handle, temporary)
        self.pending, self.syncs = [], []


@contextlib.contextmanager
def deferred_commits() -> Iterator[list[FileSet]]:
    """FileSets that end in this block (in this thread) are listed, synced in the background
    and left to the caller to `commit()` or `discard()`; any the caller left alone when the
    block ends are discarded."""
    if getattr(_local, "deferred", None) is not None:
        raise RuntimeError("deferred_commits blocks do not nest")
    sets: list[FileSet] = []
    _local.deferred = sets
    try:
        yield sets
    finally:
        _local.deferred = None
        for files in sets:
            files.discard()


def _discard(handle: BinaryIO, temporary: Path) -> None:
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()


def _syncer() -> ThreadPoolExecutor:
    pid = os.getpid()
    if pid not in _syncers:
        _syncers[pid] = ThreadPoolExecutor(max_workers=4, thread_name_prefix="forgeryloc-sync")
    return _syncers[pid]


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically (see atomic_open)."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)
