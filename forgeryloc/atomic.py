"""Atomic file writes: a reader (or a scan killed midway) never sees a half-written file."""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
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
    renamed. If the block fails, none of them appears."""

    def __enter__(self) -> "FileSet":
        if getattr(_local, "files", None) is not None:
            raise RuntimeError("FileSet blocks do not nest")
        self.pending: list[tuple[BinaryIO, Path, Path]] = []
        _local.files = self
        return self

    def __exit__(self, kind, value, traceback) -> None:
        _local.files = None
        try:
            if kind is None:
                handles = [handle for handle, _, _ in self.pending]
                for _ in _syncer().map(lambda handle: os.fsync(handle.fileno()), handles):
                    pass  # re-raises the first failure
                for handle, temporary, path in self.pending:
                    handle.close()
                    os.replace(temporary, path)
        finally:
            for handle, temporary, _ in self.pending:
                _discard(handle, temporary)  # a file renamed into place is no longer there


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
