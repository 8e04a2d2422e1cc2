"""Folder scans: a DataLoader decodes inputs in worker processes, the Predictor runs batches,
a writer thread turns findings into files, and a journal makes the scan resumable."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .discover import InputEntry
from .imaging import (DEFAULT_MAX_PIXELS, ImageReadError, decode_image, one_line, read_bytes,
                      sha256_bytes)
from .predict import Finding, Predictor
from .preprocess import resize_rgb, to_tensor

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
OUTPUT_KINDS = ("overlay", "mask", "prob", "difficulty")


@dataclass(frozen=True)
class ScanSettings:
    mode: str = "resize"              # "resize" (paper protocol) or "tile" (native resolution)
    threshold: float = 0.5            # pixel probability for the binary mask
    flag_threshold: float = 0.5       # image score above which an image is flagged
    batch_size: int = 8
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    tile_overlap: float = 0.25
    preview_max_side: int = 2048      # overlay and difficulty pictures are at most this wide
    mixed_precision: bool = True

    def fingerprint(self) -> dict:
        """The settings that change results (a resumed scan must use the same)."""
        return {k: v for k, v in asdict(self).items() if k not in ("batch_size", "workers")}


class ScanInputs(Dataset):
    """Item i: the decoded, preprocessed input i, or the reason it could not be read."""

    def __init__(self, entries: list[InputEntry], settings: ScanSettings, size: int,
                 mean, std, done: set[tuple[str, str]] = frozenset()):
        self.entries, self.settings = entries, settings
        self.size, self.mean, self.std = size, mean, std
        self.done = done  # (relative path, sha256) of images a resumed scan already has

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        item = {"index": index}
        if entry.error:
            item["error"] = entry.error
            return item
        try:
            data = read_bytes(entry.path)
            item.update(sha256=sha256_bytes(data), bytes=len(data))
            if (entry.relative_path, item["sha256"]) in self.done:
                item["done"] = True
                return item
            rgb, meta = decode_image(data, self.settings.max_pixels)
            del data
        except ImageReadError as error:
            item["error"] = str(error)
            return item
        except Exception as error:  # noqa: BLE001 - one bad file never stops the batch
            item["error"] = one_line(f"unexpected decoder failure ({type(error).__name__}: "
                                     f"{str(error)[:200]})")
            return item
        height, width = meta.height, meta.width
        item["meta"] = {"width": width, "height": height, "format": meta.format,
                        "mode": meta.mode, "frames": meta.frames, "exif": meta.exif}
        if self.settings.mode == "tile":
            item["rgb"] = torch.from_numpy(rgb)  # the predictor tiles it at native resolution
        else:
            item["input"] = to_tensor(resize_rgb(rgb, self.size, self.size), self.mean, self.std)
        item["preview"] = torch.from_numpy(_preview(rgb, self.settings.preview_max_side))
        return item


def _preview(rgb: np.ndarray, max_side: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale >= 1.0:
        return rgb
    return resize_rgb(rgb, max(1, round(height * scale)), max(1, round(width * scale)))


def _collate(items: list[dict]) -> list[dict]:
    return items


def _forward(predictor: Predictor, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's outputs for a list of inputs. On the CPU each image goes through alone:
    CPU kernels choose their blocking, hence their rounding, by batch size, so a batch would
    make an image's numbers depend on which images share it (and an interrupted, resumed scan
    would differ in the last digits from an uninterrupted one). Batching hardly speeds up CPU
    inference anyway; GPUs keep their batches."""
    if predictor.device.type != "cpu" or len(inputs) == 1:
        return predictor.forward(torch.stack(inputs))
    parts = [predictor.forward(one[None]) for one in inputs]
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


# ---- outputs ----------------------------------------------------------------------------
def output_paths(entry: InputEntry) -> dict[str, str]:
    """NAME keeps the input's extension, so a.jpg and a.png never collide."""
    return {kind: f"{entry.relative_path}.{kind}.png" for kind in OUTPUT_KINDS}


def write_outputs(out_dir: Path, entry: InputEntry, finding: Finding, preview: np.ndarray,
                  settings: ScanSettings, flagged: bool) -> dict[str, str]:
    from . import render

    paths = output_paths(entry)
    probability = finding.probability
    area = finding.area(settings.threshold)
    title = (f"score {finding.score:.3f} · area {100 * area:.1f}%"
             + (" · FLAGGED" if flagged else ""))
    small_prob = probability
    small_curvature = finding.curvature
    if preview.shape[:2] != probability.shape:
        size = preview.shape[:2]
        small_prob = _resize_map(probability, size)
        small_curvature = _resize_map(finding.curvature, size)
    render.save_png(render.probability_png(probability), out_dir / paths["prob"])
    render.save_png(render.mask_png(probability, settings.threshold), out_dir / paths["mask"])
    render.save_png(render.overlay_image(preview, small_prob, settings.threshold, title=title),
              out_dir / paths["overlay"])
    render.save_png(render.difficulty_image(small_curvature, finding.difficulty_label,
                                      finding.difficulty_score), out_dir / paths["difficulty"])
    return paths


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(tensor, size=size, mode="area")[0, 0].numpy()


# ---- journal ----------------------------------------------------------------------------
class Journal:
    """One JSON line per finished image, flushed and fsynced; the first line holds the
    settings and weights the scan was made with."""

    def __init__(self, path: Path, header: dict, resume: bool):
        self.path = path
        self.done: dict[tuple[str, str], dict] = {}
        if resume and path.exists() and self._load(header):
            self.handle = open(path, "a", encoding="utf-8")
        else:
            self.handle = open(path, "w", encoding="utf-8")
            self._append({"journal": header})

    def _load(self, header: dict) -> bool:
        """Reads a journal to resume; False when it holds nothing (not even its header)."""
        with open(self.path, "rb") as handle:
            content = handle.read()
        complete = content[:content.rfind(b"\n") + 1]
        if len(complete) != len(content):
            # A line cut short by a kill: cut it off, so what is appended next starts a
            # line of its own (that image is simply done again).
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
                handle.flush()
                os.fsync(handle.fileno())
        lines = complete.decode("utf-8", "replace").split("\n")
        if not lines[0].strip():
            return False
        try:
            first = json.loads(lines[0])["journal"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{self.path}: not a forgeryloc journal; use a new --output") from None
        if first != header:
            raise ValueError(f"{self.path}: this output folder was made with other weights or "
                             f"settings; use a new --output or the same settings")
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("error") is None and record.get("sha256"):
                self.done[(record["relative_path"], record["sha256"])] = record
        return True

    def _append(self, value: dict) -> None:
        self.handle.write(json.dumps(value, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def add(self, record: dict) -> None:
        self._append(record)

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError:
            pass  # a failed write, already reported; a line it cut short is cut off on resume


# ---- the scan ---------------------------------------------------------------------------
@dataclass
class ScanResult:
    records: list[dict]
    started: str
    finished: str

    @property
    def counts(self) -> dict:
        errors = sum(1 for r in self.records if r["error"])
        flagged = sum(1 for r in self.records if r.get("flagged"))
        return {"inputs": len(self.records), "scanned": len(self.records) - errors,
                "flagged": flagged, "unreadable": errors}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _record(entry: InputEntry, item: dict) -> dict:
    meta = item.get("meta", {})
    return {"path": entry.path, "relative_path": entry.relative_path,
            "sha256": item.get("sha256"), "bytes": item.get("bytes"),
            "width": meta.get("width"), "height": meta.get("height"),
            "format": meta.get("format"), "mode": meta.get("mode"),
            "exif": meta.get("exif", {}), "score": None, "area": None, "flagged": None,
            "difficulty": None, "outputs": None, "error": item.get("error")}


class OutputError(RuntimeError):
    """The output folder cannot be written (full disk, read-only, ...)."""


_TEMPORARY = re.compile(r"\..+\.(\d+)\.\d+\.tmp")  # made by atomic.write_bytes_atomic


def remove_stale_temporaries(out_dir: Path) -> int:
    """Deletes hidden temporary files left in OUTDIR by a writer that was killed (its process
    is gone); they never carry a final name, so nothing finished is touched."""
    removed = 0
    for current, _, files in os.walk(out_dir):
        for name in files:
            match = _TEMPORARY.fullmatch(name)
            if not match or _process_alive(int(match[1])):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(current, name))
                removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def run_scan(entries: list[InputEntry], out_dir: str | Path, predictor: Predictor,
             settings: ScanSettings, journal_header: dict, resume: bool = False,
             on_record: Callable[[dict], None] | None = None) -> ScanResult:
    """Scans every entry; records come back in input order. With `resume`, images already in
    the output folder's journal (same relative path and SHA-256) are not processed again."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        journal = Journal(out / JOURNAL_NAME, journal_header, resume)
        if resume:
            remove_stale_temporaries(out)
    except OSError as error:
        raise OutputError(f"cannot write to {out}: {error.strerror or error}") from None
    started = _now()
    records: list[dict | None] = [None] * len(entries)
    lock = threading.Lock()

    def finish(index: int, record: dict, journaled: bool = True) -> None:
        with lock:
            records[index] = record
            if journaled:
                try:
                    journal.add(record)
                except OSError as error:
                    raise OutputError(f"cannot write the journal in {out}: "
                                      f"{error.strerror or error}") from None
            if on_record:
                on_record(record)

    def write_one(index: int, item: dict, make_finding: Callable[[], Finding]) -> None:
        entry = entries[index]
        finding = make_finding()
        record = _record(entry, item)
        score = round(finding.score, 6)
        flagged = score >= settings.flag_threshold
        try:
            record["outputs"] = write_outputs(out, entry, finding, item["preview"].numpy(),
                                              settings, flagged)
        except OSError as error:
            raise OutputError(f"cannot write outputs for {entry.relative_path} under {out}: "
                              f"{error.strerror or error}") from None
        record.update(score=score, area=round(finding.area(settings.threshold), 6),
                      flagged=flagged, difficulty={"label": finding.difficulty_label,
                                                   "score": round(finding.difficulty_score, 6)})
        finish(index, record)

    dataset = ScanInputs(entries, settings, predictor.size, predictor.info.mean,
                         predictor.info.std, done=set(journal.done))
    tiled = settings.mode == "tile"
    on_cpu = predictor.device.type == "cpu"
    loader = DataLoader(dataset, batch_size=1 if tiled else settings.batch_size,
                        num_workers=settings.workers, collate_fn=_collate,
                        prefetch_factor=2 if settings.workers else None)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forgeryloc-writer")
    pending: deque[Future] = deque()
    try:
        for items in loader:
            ready = []
            for item in items:
                index, entry = item["index"], entries[item["index"]]
                if item.get("done"):
                    record = dict(journal.done[(entry.relative_path, item["sha256"])],
                                  path=entry.path)
                    finish(index, record, journaled=False)
                elif "error" in item:
                    finish(index, _record(entry, item))
                else:
                    ready.append(item)
            if tiled:
                for item in ready:
                    finding = predictor.predict_tiled(item.pop("rgb").numpy(),
                                                      settings.tile_overlap,
                                                      1 if on_cpu else settings.batch_size)
                    pending.append(writer.submit(write_one, item["index"], item,
                                                 lambda f=finding: f))
            elif ready:
                outputs = _forward(predictor, [item.pop("input") for item in ready])
                for j, item in enumerate(ready):
                    single = {k: v[j:j + 1] for k, v in outputs.items()}
                    meta = item["meta"]
                    pending.append(writer.submit(
                        write_one, item["index"], item,
                        lambda o=single, h=meta["height"], w=meta["width"]:
                            predictor.finding_from_resized(o, 0, h, w)))
            while len(pending) > 2 * settings.batch_size:
                pending.popleft().result()  # re-raises a writer failure here
        while pending:
            pending.popleft().result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
        journal.close()
    return ScanResult(records=[r for r in records if r is not None], started=started,
                      finished=_now())
