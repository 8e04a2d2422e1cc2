"""Finding the inputs of a scan: files, folders (recursively), globs and stdin lists, in a
deterministic order, each with the relative path its outputs will mirror."""
from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .imaging import is_image_name, one_line

GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class InputEntry:
    path: str           # as found (absolute), never resolved through links
    relative_path: str  # where its outputs go under OUTDIR (POSIX separators)
    error: str | None = None  # set for a folder that could not be listed


class DiscoveryError(ValueError):
    """An argument that cannot be used at all (kept for callers; missing paths are entries)."""


@dataclass(frozen=True)
class _Problem:
    """An input that cannot be scanned, reported as an error record."""
    path: str
    reason: str
    named: bool = False  # an argument naming nothing: its record is labelled as it was given


def _walk(folder: str, exclude: list[str], skipped: list[dict]) -> list[str | _Problem]:
    """Image-named files under folder; links to folders are not followed (no loops). A
    folder that cannot be listed comes back as a _Problem, to be reported. Everything else
    found there is added to `skipped` ({"path", "reason"}), so a report accounts for it."""
    found: list[str | _Problem] = []

    def unlisted(error: OSError) -> None:
        found.append(_Problem(error.filename or folder, "cannot list this folder: "
                              + one_line(error.strerror or str(error)).lower()))

    for current, folders, files in os.walk(folder, onerror=unlisted, followlinks=False):
        kept = []
        for name in sorted(folders):
            path = os.path.join(current, name)
            if _excluded(path, exclude):
                skipped.append({"path": os.path.abspath(path),
                                "reason": "the scan's output folder (not scanned)"})
            elif os.path.islink(path):
                skipped.append({"path": os.path.abspath(path),
                                "reason": "link to a folder (not followed)"})
            else:
                kept.append(name)
        folders[:] = kept
        for name in sorted(files):
            path = os.path.join(current, name)
            if is_image_name(name):
                found.append(path)
            else:
                extension = os.path.splitext(name)[1]
                skipped.append({"path": os.path.abspath(path), "reason": "not an image file "
                                f"name ({extension.lower() or 'no extension'})"})
    return found


def is_within(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def _excluded(path: str, exclude: list[str]) -> bool:
    """Within an excluded folder, as written or once links are resolved."""
    if not exclude:
        return False
    real = os.path.join(_real_folder(os.path.dirname(os.path.abspath(path))),
                        os.path.basename(path))
    return any(is_within(path, e) or is_within(real, e) for e in exclude)


def _expand(argument: str, exclude: list[str], skipped: list[dict]) -> list[str | _Problem]:
    """What an argument names. One that names nothing is a problem of the batch, reported like
    an unreadable image (the rest is still scanned), not a usage error."""
    if os.path.isdir(argument):
        return _walk(argument, exclude, skipped)
    if os.path.lexists(argument):
        return [argument]  # a named file is always tried, whatever its extension
    if GLOB_CHARACTERS & set(argument):
        matches = sorted(glob.glob(argument, recursive=True))
        files: list[str | _Problem] = []
        for match in matches:
            files.extend(_walk(match, exclude, skipped) if os.path.isdir(match) else [match])
        return files or [_Problem(argument, "the pattern matches no file", named=True)]
    return [_Problem(argument, "no such file or folder", named=True)]


@dataclass
class Discovery:
    entries: list[InputEntry]   # what a scan tries to read, in order
    skipped: list[dict]         # {"path", "reason"}: the rest found under the input folders


def discover_inputs(arguments: Iterable[str], stdin_lines: Iterable[str] = (),
                    exclude: Iterable[str | Path] = ()) -> list[InputEntry]:
    """The entries of discover()."""
    return discover(arguments, stdin_lines, exclude).entries


def discover(arguments: Iterable[str], stdin_lines: Iterable[str] = (),
             exclude: Iterable[str | Path] = ()) -> Discovery:
    """Expands the arguments ('-' reads newline-separated paths from stdin_lines).

    Order: arguments in the order given, each folder sorted; duplicates of the same path are
    dropped. Outputs mirror the inputs relative to their deepest common folder."""
    exclude = [os.path.abspath(e) for e in exclude]
    paths: list[str | _Problem] = []
    skipped: list[dict] = []
    for argument in arguments:
        if argument == "-":
            for line in stdin_lines:
                line = line.rstrip("\r\n")
                if line:
                    paths.extend(_expand(line, exclude, skipped))
        else:
            paths.extend(_expand(argument, exclude, skipped))
    skipped = list({item["path"]: item for item in skipped}.values())  # a folder given twice
    problems = {os.path.abspath(p.path): p for p in paths if isinstance(p, _Problem)}
    unique = list(dict.fromkeys(os.path.abspath(p if isinstance(p, str) else p.path)
                                for p in paths))
    unique = [p for p in unique if p in problems or not _excluded(p, exclude)]
    _real_folder.cache_clear()
    # Outputs mirror what exists: an argument naming nothing does not move the common folder.
    existing = [p for p in unique if not (p in problems and problems[p].named)]
    root = os.path.commonpath([os.path.dirname(p) for p in existing]) if existing else "/"
    entries = []
    for path in unique:
        problem = problems.get(path)
        relative = problem.path if problem and problem.named \
            else Path(os.path.relpath(path, root)).as_posix()
        entries.append(InputEntry(path=path, relative_path=relative,
                                  error=problem.reason if problem else None))
    return Discovery(entries, skipped)
