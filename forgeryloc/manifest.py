"""The output folder's checksum list: manifest.sha256, one `sha256sum` line per file a scan
wrote (pictures, reports, journal), so that `sha256sum -c manifest.sha256`, run in the folder
later, shows that nothing in it changed since."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from .atomic import write_bytes_atomic
from .imaging import sha256_file

MANIFEST_NAME = "manifest.sha256"


def sha256sum_line(digest: str, relative_path: str) -> bytes:
    """One line as GNU sha256sum writes it: "HASH  NAME"; a name with a backslash or a line
    break has them escaped and the line starts with a backslash (what `-c` expects)."""
    name = os.fsencode(relative_path)
    if any(c in name for c in b"\\\n\r"):
        name = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + digest.encode("ascii") + b"  " + name + b"\n"
    return digest.encode("ascii") + b"  " + name + b"\n"


def write_manifest(out_dir: str | Path, relative_paths: Iterable[str]) -> tuple[Path, int]:
    """Hashes the files (relative to out_dir, POSIX separators; duplicates once, in the given
    order) and replaces manifest.sha256 atomically; returns its path and the number of lines."""
    out_dir = Path(out_dir)
    names = list(dict.fromkeys(relative_paths))
    # hashlib releases the GIL on large buffers: the files are hashed on every core
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        digests = list(pool.map(lambda name: sha256_file(out_dir / name), names))
    lines = b"".join(sha256sum_line(digest, name) for digest, name in zip(digests, names))
    target = out_dir / MANIFEST_NAME
    write_bytes_atomic(target, lines)
    return target, len(names)
