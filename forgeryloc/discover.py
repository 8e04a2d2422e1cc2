"""Finding the inputs of a scan: files, folders (recursively), globs and stdin lists, in a
deterministic order, each with the relative path its outputs will mirror."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .imaging import is_image_name

GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True)
class InputEntry:
    path: str           # as found (absolute), never resolved through links
    relative_path: str  # where its outputs go under OUTDIR (POSIX separators)


class DiscoveryError(ValueError):
    """An argument names nothing usable (usage error)."""


def _walk(folder: str, exclude: list[str]) -> list[str]:
    """Image-named files under folder; links to folders are not followed (no loops)."""
    found = []
    for current, folders, files in os.walk(folder, followlinks=False):
        folders[:] = sorted(d for d in folders
                            if not any(is_within(os.path.join(current, d), e) for e in exclude))
        found.extend(os.path.join(current, name) for name in sorted(files) if is_image_name(name))
    return found


def is_within(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _expand(argument: str, exclude: list[str]) -> list[str]:
    if os.path.isdir(argument):
        return _walk(argument, exclude)
    if os.path.lexists(argument):
        return [argument]  # a named file is always tried, whatever its extension
    if GLOB_CHARACTERS & set(argument):
        matches = sorted(glob.glob(argument, recursive=True))
        files = []
        for match in matches:
            files.extend(_walk(match, exclude) if os.path.isdir(match) else [match])
        if not files:
            raise DiscoveryError(f"{argument}: the pattern matches no file")
        return files
    raise DiscoveryError(f"{argument}: no such file or folder")


def discover_inputs(arguments: Iterable[str], stdin_lines: Iterable[str] = (),
                    exclude: Iterable[str | Path] = ()) -> list[InputEntry]:
    """Expands the arguments ('-' reads newline-separated paths from stdin_lines).

    Order: arguments in the order given, each folder sorted; duplicates of the same path are
    dropped. Outputs mirror the inputs relative to their deepest common folder."""
    exclude = [os.path.abspath(e) for e in exclude]
    paths: list[str] = []
    for argument in arguments:
        if argument == "-":
            for line in stdin_lines:
                line = line.rstrip("\r\n")
                if line:
                    paths.extend(_expand(line, exclude))
        else:
            paths.extend(_expand(argument, exclude))
    unique = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    unique = [p for p in unique if not any(is_within(p, e) for e in exclude)]
    if not unique:
        return []
    root = os.path.commonpath([os.path.dirname(p) for p in unique])
    return [InputEntry(path=p, relative_path=Path(os.path.relpath(p, root)).as_posix())
            for p in unique]
