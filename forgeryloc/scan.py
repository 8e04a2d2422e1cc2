"""Folder scans: on a CPU, worker processes each run whole pipelines (decode, network,
pictures); on a GPU, workers decode, the Predictor runs batches and a writer thread turns
maps into files. A journal makes every scan resumable.

The per-image steps (load_item, predict_items, image_outcome, item_outcomes) and the driver's
bookkeeping (ScanLedger) are shared with the Ray scan in ray_scan.py."""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Collection, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .atomic import FileSet, deferred_commits
from .cpu import one_blas_thread
from .discover import InputEntry
from .image_scores import ScoreAccumulator
from .imaging import (DEFAULT_MAX_PIXELS, ImageReadError, decode_picture, one_line,
                      read_bytes, sha256_bytes)
from .evidence import file_clues
from .jpeg_coefficients import is_jpeg
from .jpeg_input import JpegInput, jpeg_input, read_coefficients
from .fused_maps import flag_threshold
from .maps import ImageMaps
from .parent_watch import worker_init
from . import pixel_jpeg
from .png import PngStream
from .predict import Predictor
from .preprocess import resize_rgb, to_tensor
from .scope import picture_kind

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
# Images per forward on a CPU, fixed: a smaller last group is padded with blank inputs. One
# thread runs a group of 4 about 17% faster per image than single images (b0 and b2, 256x256),
# and a fixed shape keeps each image's arithmetic independent of what shares its group.
CPU_GROUP = 4
# Report previews kept in memory (~10 KB each); beyond, the report reads them from the files.
MAX_HELD_PREVIEWS = 20_000
OUTPUT_KINDS = ("overlay", "mask", "prob", "difficulty")
PRIOR_CELL = 32  # network pixels per value of the global prior (the encoder's last stride)


@dataclass(frozen=True)
class ScanSettings:
    mode: str = "resize"              # "resize" (paper protocol) or "tile" (native resolution)
    threshold: float = 0.5            # pixel probability for the binary mask
    flag_threshold: float = 0.5       # image score above which an image is flagged
    pixel_flag_threshold: float | None = None  # the same for images without JPEG evidence
                                      # (the checkpoint's pixel_score_threshold; None: the above)
    image_score: str = "mean"         # its statistic (image_scores.STATISTICS; the checkpoint's)
    batch_size: int = 8
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    tile_overlap: float = 0.5        # half a tile's side: no steps at tile borders (blend_weights)
    preview_max_side: int = 2048      # overlay and difficulty pictures are at most this wide
    mixed_precision: bool = True
    compile: bool = False             # torch.compile: faster after warm-up, other last bits
    thumbnails: bool = True           # make the report's previews while the pictures are made
    jpeg_stream: bool = False         # the model reads JPEG files' coefficients (set from it)
    without_jpeg: bool = False        # --without-jpeg: its stream gets nothing (pixel path)
    jpeg_from_pixels: bool = True     # non-JPEG files: JPEG traces searched in the pixels
                                      # (the jpeg_in_pixels clue, the stream's input)
    evidence: tuple[str, ...] = ()    # evidence layers to write (evidence.LAYERS)

    def fingerprint(self) -> dict:
        """The settings that change results (a resumed scan must use the same)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("batch_size", "workers", "thumbnails")}


# jpeg_evidence of a scan told not to use the JPEG stream (a copy that a share site resized
# and re-saved: its single compression would read as "nothing inconsistent" and veto the RGB
# map; see the model card)
WITHHELD = "withheld (--without-jpeg)"


# ---- one image: decode -> predict -> finding -> write -> record ---------------------------
# These functions are the whole per-image work of a scan. The local scan (run_scan) and the
# Ray scan (ray_scan.py) both call them; only where each step runs differs.

def load_item(entry: InputEntry, settings: ScanSettings, size: int, mean, std,
              done: Collection[tuple[str, str]] = frozenset()) -> dict:
    """The decoded, preprocessed input of one entry, or the reason it could not be read.

    `done` holds (relative path, sha256) of images a resumed scan already has: such an
    image is read and hashed, not decoded, and comes back marked done."""
    item: dict = {}
    if entry.error:
        item["error"] = entry.error
        return item
    started = time.perf_counter()
    try:
        data = read_bytes(entry.path)
        item.update(sha256=sha256_bytes(data), bytes=len(data))
        read = time.perf_counter()
        if (entry.relative_path, item["sha256"]) in done:
            item["done"] = True
            return item
        picture, meta = decode_picture(data, settings.max_pixels)
        # The file's own block grid, oriented like the pixels: read once for the network's
        # JPEG stream, the file clues and the dq layer.
        jpeg, jpeg_note = read_coefficients(data, settings.max_pixels, meta.orientation)
        # A file that is not a JPEG (by its bytes: a camera's MPO is one) may have been one:
        # its pixels are searched once, for the file clue and the stream's input.
        in_pixels = pixel_jpeg.search(np.asarray(picture)) \
            if not is_jpeg(data) and settings.jpeg_from_pixels else None
        if settings.jpeg_stream and settings.without_jpeg:
            item["jpeg"], item["jpeg_evidence"] = None, WITHHELD
        elif settings.jpeg_stream:
            item["jpeg"] = jpeg_input(jpeg) if jpeg is not None else None
            item["jpeg_evidence"] = jpeg_note
            if in_pixels is not None:
                item["jpeg"] = in_pixels[0].input if in_pixels[0] is not None else None
                item["jpeg_evidence"] = pixel_jpeg.stream_note(*in_pixels, jpeg_note)
    except ImageReadError as error:
        item["error"] = str(error)
        return item
    except Exception as error:  # noqa: BLE001 - one bad file never stops the batch
        item["error"] = one_line(f"unexpected decoder failure ({type(error).__name__}: "
                                 f"{str(error)[:200]})")
        return item
    height, width = meta.height, meta.width
    # a drawn picture (a mask, a logo, a cartoon) is scored but never flagged (scope.py)
    item["scope"] = _scope(picture)
    item["meta"] = {"width": width, "height": height, "format": meta.format,
                    "mode": meta.mode, "frames": meta.frames, "exif": meta.exif}
    if settings.mode == "tile":
        item["rgb"] = picture  # tiled at native resolution, band by band
    else:
        item["input"] = to_tensor(resize_rgb(picture, size, size), mean, std)
    item["preview"] = torch.from_numpy(_preview(picture, settings.preview_max_side))
    decoded = time.perf_counter()
    item["seconds"] = {"read and hash": read - started, "decode": decoded - read}
    item["clues"] = _file_clues(data, meta, picture, jpeg, jpeg_note, item["preview"].numpy())
    if in_pixels is not None and "error" not in item["clues"]:
        item["clues"]["jpeg_in_pixels"] = pixel_jpeg.clue(*in_pixels)
    item["seconds"]["file clues"] = time.perf_counter() - decoded
    if settings.evidence:  # the layers are drawn from the decoded picture at its own size
        item["evidence_rgb"] = picture
        if "dq" in settings.evidence:
            item["evidence_jpeg"] = jpeg
    return item


def _file_clues(data: bytes, meta, picture, jpeg, jpeg_note: str, preview: np.ndarray) -> dict:
    """evidence.file_clues; a failure there loses the clues, never the image."""
    try:
        return file_clues(data, meta, picture, jpeg, jpeg_note, preview)
    except Exception as error:  # noqa: BLE001
        log.warning("file clues failed: %s", error)
        return {"error": one_line(f"{type(error).__name__}: {str(error)[:200]}")}


def _scope(picture: Image.Image) -> str | None:
    """scope.PictureKind.note; a failure there leaves the image a photograph, never lost."""
    try:
        return picture_kind(picture).note()
    except Exception as error:  # noqa: BLE001
        log.warning("the picture's kind could not be measured: %s", error)
        return None


class ScanInputs(Dataset):
    """Item i: load_item of entry i, with its index."""

    def __init__(self, entries: list[InputEntry], settings: ScanSettings, size: int,
                 mean, std, done: Collection[tuple[str, str]] = frozenset()):
        self.entries, self.settings = entries, settings
        self.size, self.mean, self.std = size, mean, std
        self.done = done

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        item = load_item(self.entries[index], self.settings, self.size, self.mean, self.std,
                         self.done)
        item["index"] = index
        shared = item.get("evidence_rgb") is item.get("rgb")
        if "rgb" in item:  # travels to the scan process in shared memory
            item["rgb"] = torch.from_numpy(np.array(item["rgb"]))
        if "evidence_rgb" in item:  # the same tensor when tiles read the same picture
            item["evidence_rgb"] = item["rgb"] if shared else \
                torch.from_numpy(np.array(item["evidence_rgb"]))
        return item


def _preview(picture: Image.Image, max_side: int) -> np.ndarray:
    scale = min(1.0, max_side / max(picture.height, picture.width))
    return resize_rgb(picture, max(1, round(picture.height * scale)),
                      max(1, round(picture.width * scale)))


def _worker_init(parent_pid: int, worker_id: int) -> None:
    """A scan worker dies with the scan and keeps numpy's BLAS on one thread (cpu.py)."""
    worker_init(parent_pid, worker_id)
    one_blas_thread()


def _collate(items: list[dict]) -> list[dict]:
    return items


def _forward(predictor: Predictor, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's outputs for a list of inputs. On a CPU they go through in groups of
    exactly CPU_GROUP: CPU kernels choose their blocking, hence their rounding, by batch shape,
    so a varying batch would make an image's numbers depend on how many images share it (and
    an interrupted, resumed scan would differ in the last digits from an uninterrupted one).
    GPUs keep their batches."""
    if predictor.device.type != "cpu":
        return predictor.forward(torch.stack(inputs))
    parts = []
    for start in range(0, len(inputs), CPU_GROUP):
        group = inputs[start:start + CPU_GROUP]
        blanks = [torch.zeros_like(group[0])] * (CPU_GROUP - len(group))
        outputs = predictor.forward(torch.stack(group + blanks))  # CPU_GROUP x 3 x S x S
        parts.append({name: value[:len(group)] for name, value in outputs.items()})
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def images_per_forward(settings: ScanSettings, device_type: str) -> int:
    """How many decoded images a scan gathers for one forward: tiles go one image at a time,
    a CPU forwards its fixed group (see _forward), a GPU the batch size."""
    if settings.mode == "tile":
        return 1
    return CPU_GROUP if device_type == "cpu" else settings.batch_size


def predict_items(predictor: Predictor, items: list[dict], settings: ScanSettings,
                  on_tiles: Callable[[int, int], None] | None = None
                  ) -> list[Callable[[], ImageMaps]]:
    """Runs the network on decoded items; for each, a function that gives its maps at the
    image's own size (streamed later, e.g. by a writer thread). In tile mode the network
    itself runs while those maps are streamed, telling on_tiles(done, total) of each forward.
    A CPU forwards one tile at a time (a fixed shape: see _forward) on one thread, as many
    tiles side by side as torch has threads here: a lone large image keeps every core busy,
    and a tile's numbers do not depend on the thread count."""
    if not items:
        return []
    if settings.mode == "tile":
        cpu = predictor.device.type == "cpu"
        tile_batch, threads = (1, torch.get_num_threads()) if cpu else (settings.batch_size, 1)
        makers = [partial(predictor.tiled_maps, _pixels(item.pop("rgb")), settings.tile_overlap,
                          tile_batch, tuple(item["preview"].shape[:2]), on_tiles, threads)
                  for item in items]
    else:
        outputs = _forward(predictor, [item.pop("input") for item in items])
        makers = []
        for j, item in enumerate(items):
            single = {k: v[j:j + 1] for k, v in outputs.items()}
            meta = item["meta"]
            makers.append(partial(predictor.maps_from_resized, single, 0, meta["height"],
                                  meta["width"]))
    if predictor.jpeg_stream is None:
        return makers
    return [partial(_with_jpeg, predictor, maker, item.pop("jpeg", None))
            for maker, item in zip(makers, items)]


def _with_jpeg(predictor: Predictor, make_maps: Callable[[], ImageMaps],
               jpeg: JpegInput | None) -> ImageMaps:
    """The RGB maps with the file's JPEG evidence fused in (in both scan modes the stream
    reads the file at its own grid; its map is brought to the image's size like the others)."""
    return predictor.with_jpeg(make_maps(), jpeg)


def _pixels(rgb: torch.Tensor | Image.Image) -> np.ndarray | Image.Image:
    return rgb.numpy() if isinstance(rgb, torch.Tensor) else rgb


def base_record(entry: InputEntry, item: dict) -> dict:
    """The record of an image before (or without) a prediction."""
    meta = item.get("meta", {})
    return {"path": entry.path, "relative_path": entry.relative_path,
            "sha256": item.get("sha256"), "bytes": item.get("bytes"),
            "width": meta.get("width"), "height": meta.get("height"),
            "format": meta.get("format"), "mode": meta.get("mode"),
            "exif": meta.get("exif", {}), "score": None, "area": None, "flagged": None,
            "difficulty": None, "outputs": None,
            # None for a photograph; why a drawn picture is not flagged (scope.py)
            "scope": item.get("scope"),
            # A model with a JPEG stream: "used", or why the file gave no JPEG evidence.
            "jpeg_evidence": item.get("jpeg_evidence"),
            # Named facts read from the file (evidence.file_clues); none is a verdict.
            "clues": item.get("clues"),
            # With --evidence: each layer asked for, "written" or why it is absent.
            "evidence": None, "error": item.get("error")}


def image_outcome(out: Path, entry: InputEntry, item: dict, maps: ImageMaps,
                  settings: ScanSettings) -> dict:
    """Writes the output pictures of one predicted image; its outcome (see item_outcomes)."""
    record = base_record(entry, item)
    source = (item.pop("evidence_rgb", None), item.pop("evidence_jpeg", None)) \
        if settings.evidence else None
    try:
        written = write_outputs(out, entry, maps, item["preview"].numpy(), settings, source,
                                photograph=item.get("scope") is None)
    except OSError as error:
        raise output_error(entry, out, error) from None
    del source
    if settings.evidence:
        record["evidence"] = {name: written.evidence_absent.get(name, "written")
                              for name in settings.evidence}
    if getattr(maps, "jpeg_note", None):  # the stream read the file; its gate kept it out
        record["jpeg_evidence"] = maps.jpeg_note
    record.update(score=written.score, area=written.area, flagged=written.flagged,
                  outputs=written.paths,
                  difficulty={"label": maps.difficulty_label,
                              "score": round(maps.difficulty_score, 6)})
    return {"record": record, "previews": written.previews}


def item_outcomes(items: list[dict], entry_of: Callable[[int], InputEntry],
                  predictor: Predictor, settings: ScanSettings, out: Path,
                  on_tiles: Callable[[int, int], None] | None = None
                  ) -> Iterator[tuple[int, Callable[[], dict]]]:
    """For each decoded item (each has its "index"): (index, make_outcome), where
    make_outcome() finishes the image and returns its outcome, one of
      {"record": record}    a new record (a finished or an unreadable image), to journal;
      {"resumed": sha256}   an image the journal already has.
    Items that need the network are predicted together when the first of them is reached;
    make_outcome then streams the maps and writes the outputs."""
    ready = []
    for item in items:
        if item.get("done"):
            yield item["index"], partial(dict, resumed=item["sha256"])
        elif "error" in item:
            yield item["index"], partial(dict, record=base_record(entry_of(item["index"]), item))
        else:
            ready.append(item)
    started = time.perf_counter()
    makers = predict_items(predictor, ready, settings, on_tiles)
    network = (time.perf_counter() - started) / max(1, len(ready))  # a group's share
    for item, make_maps in zip(ready, makers):
        yield item["index"], partial(_timed_outcome, out, entry_of(item["index"]), item,
                                     make_maps, settings, network)


def _timed_outcome(out: Path, entry: InputEntry, item: dict, make_maps: Callable[[], ImageMaps],
                   settings: ScanSettings, network_seconds: float) -> dict:
    """image_outcome, with the seconds each stage of the image took (summed by ScanLedger; in
    tile mode the network runs while the maps are made)."""
    started = time.perf_counter()
    outcome = image_outcome(out, entry, item, make_maps(), settings)
    outcome["seconds"] = {**item.get("seconds", {}), "network": network_seconds,
                          "maps and pictures": time.perf_counter() - started}
    return outcome


# ---- outputs ----------------------------------------------------------------------------
def output_paths(entry: InputEntry) -> dict[str, str]:
    """NAME keeps the input's extension, so a.jpg and a.png never collide."""
    return {kind: f"{entry.relative_path}.{kind}.png" for kind in OUTPUT_KINDS}


@dataclass
class WrittenOutputs:
    paths: dict[str, str]
    score: float        # image score (image_scores.py: settings.image_score), rounded
    area: float         # share of pixels at or above the threshold, rounded
    flagged: bool
    previews: tuple[str, str] | None = None  # report.preview_pair, when settings ask for it
    evidence_absent: dict[str, str] = field(default_factory=dict)  # layer -> why not written


def write_outputs(out_dir: Path, entry: InputEntry, maps: ImageMaps, preview: np.ndarray,
                  settings: ScanSettings, evidence_source: tuple | None = None,
                  photograph: bool = True) -> WrittenOutputs:
    """One pass over the maps' bands writes the full-resolution probability map and mask and
    sums the score and area; the overlay and difficulty pictures are drawn at preview size.
    evidence_source: (decoded picture, JPEG coefficients or None) for settings.evidence's
    layers, written at the picture's own size beside the others. photograph: False for a
    drawn picture (scope.py), which is never flagged."""
    paths = output_paths(entry)
    layer_paths = {name: f"{entry.relative_path}.{name}.png" for name in settings.evidence} \
        if evidence_source is not None else {}
    try:
        with FileSet():  # the pictures appear together, synced in one go
            written = _write_outputs(out_dir, paths, maps, preview, settings, photograph)
            if layer_paths:
                from .evidence.layers import write_layers
                made, written.evidence_absent = write_layers(out_dir, layer_paths,
                                                             *evidence_source)
                written.paths.update(made)
            return written
    except BaseException:
        # All or nothing: no picture of a failed image stays behind to look like a result.
        for path in [*paths.values(), *layer_paths.values()]:
            with contextlib.suppress(OSError):
                (out_dir / path).unlink(missing_ok=True)
        raise


def _write_outputs(out_dir: Path, paths: dict[str, str], maps: ImageMaps, preview: np.ndarray,
                   settings: ScanSettings, photograph: bool) -> WrittenOutputs:
    from . import render

    height, width = maps.height, maps.width
    threshold = np.float32(settings.threshold)
    scoring, marked = ScoreAccumulator(settings.image_score), 0
    with PngStream(out_dir / paths["prob"], width, height, "I;16") as prob_png, \
            PngStream(out_dir / paths["mask"], width, height, "L") as mask_png:
        for band in maps.bands():
            levels = render.probability_levels(band.probability)
            prob_png.write(levels)
            mask = band.probability >= threshold
            mask_png.write(render.mask_levels(mask))
            if band.score_probability is None:
                scoring.add(band.probability, levels)
            else:  # a file below the JPEG stream's gate: scored with the evidence
                scoring.add(band.score_probability)
            marked += int(np.count_nonzero(mask))
    score, area = round(scoring.value(), 6), round(marked / (height * width), 6)
    # the checkpoint's pixel-path threshold for maps without JPEG evidence, unless
    # --flag-threshold set one for all (scan_command)
    flagged = photograph and score >= flag_threshold(maps, settings.flag_threshold,
                                                     settings.pixel_flag_threshold)
    title = f"score {score:.3f} · area {100 * area:.1f}%" + (
        " · FLAGGED" if flagged else "" if photograph else " · not a photograph: not flagged")
    height, width = preview.shape[:2]
    probability, curvature = maps.preview(height, width)
    overlay = render.overlay_image(preview, probability, settings.threshold, title=title)
    render.save_png(overlay, out_dir / paths["overlay"])
    previews = None
    if settings.thumbnails:  # here the pictures are in memory; the report would decode files
        from .report import preview_pair
        previews = preview_pair(Image.fromarray(preview),
                                overlay.crop(render.photo_box(overlay.size, (width, height))))
    # The prior has one value per PRIOR_CELL network pixels: in resize mode the curvature
    # comes at the network's size, in tile mode at the preview's, over the native pixels.
    covered = curvature.shape if settings.mode == "resize" else (maps.height, maps.width)
    cells = (covered[0] / PRIOR_CELL, covered[1] / PRIOR_CELL)
    backdrop = render.difficulty_backdrop(preview, cells)
    render.save_png(render.difficulty_image(curvature, maps.difficulty_label,
                                            maps.difficulty_score,
                                            size=(backdrop.shape[1], backdrop.shape[0]),
                                            photo=backdrop, cells=cells),
                    out_dir / paths["difficulty"])
    return WrittenOutputs(paths, score, area, flagged, previews)


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
        if first != json.loads(json.dumps(header)):  # as written: tuples read back as lists
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
    previews: dict[str, tuple[str, str]] = field(default_factory=dict)  # by relative path
    resumed: int = 0  # records taken from the journal of an earlier, interrupted run
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, summed over images

    @property
    def counts(self) -> dict:
        errors = sum(1 for r in self.records if r["error"])
        flagged = sum(1 for r in self.records if r.get("flagged"))
        drawn = sum(1 for r in self.records if r.get("scope"))  # never flagged (scope.py)
        # decoded, but libjpeg met corrupt or truncated data on the way (clues.decode_warnings)
        warned = sum(1 for r in self.records if (r.get("clues") or {}).get("decode_warnings"))
        return {"inputs": len(self.records), "scanned": len(self.records) - errors,
                "flagged": flagged, "unreadable": errors, "resumed": self.resumed,
                "decode_warnings": warned, "not_photographs": drawn}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class OutputError(RuntimeError):
    """The output folder cannot be written (full disk, read-only, ...)."""


def output_error(entry: InputEntry, out: Path, error: OSError) -> OutputError:
    return OutputError(f"cannot write outputs for {entry.relative_path} under {out}: "
                       f"{error.strerror or error}")


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
        pass  # exists, owned by someone else
    # A worker killed with its scan stays a zombie until someone reaps it: dead all the same.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class ScanLedger:
    """The driver's side of a scan, local or on Ray: the output folder's journal, the records
    in input order, and the on_record callback, fed one outcome (see item_outcomes) at a time.
    on_record gets a copy of each record with "resumed": whether it came from the journal."""

    def __init__(self, entries: list[InputEntry], out: Path, journal_header: dict, resume: bool,
                 on_record: Callable[[dict], None] | None = None):
        self.entries, self.out, self.on_record = entries, out, on_record
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.journal = Journal(out / JOURNAL_NAME, journal_header, resume)
            if resume:
                remove_stale_temporaries(out)
        except OSError as error:
            raise OutputError(f"cannot write to {out}: {error.strerror or error}") from None
        self.started = _now()
        self.records: list[dict | None] = [None] * len(entries)
        self.previews: dict[str, tuple[str, str]] = {}
        self.resumed = 0
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    @property
    def done(self) -> set[tuple[str, str]]:
        """(relative path, sha256) of the images the journal already has."""
        return set(self.journal.done)

    def accept(self, index: int, outcome: dict) -> None:
        entry = self.entries[index]
        with self.lock:
            if "resumed" in outcome:
                record = dict(self.journal.done[(entry.relative_path, outcome["resumed"])],
                              path=entry.path)
                self.resumed += 1
            else:
                record = outcome["record"]
                try:
                    self.journal.add(record)
                except OSError as error:
                    raise OutputError(f"cannot write the journal in {self.out}: "
                                      f"{error.strerror or error}") from None
            self.records[index] = record
            for stage, seconds in outcome.get("seconds", {}).items():
                self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
            if outcome.get("previews") and len(self.previews) < MAX_HELD_PREVIEWS:
                self.previews[entry.relative_path] = tuple(outcome["previews"])
            if self.on_record:
                self.on_record({**record, "resumed": "resumed" in outcome})

    def missing(self) -> int:
        return sum(1 for r in self.records if r is None)

    def result(self) -> ScanResult:
        return ScanResult(records=[r for r in self.records if r is not None],
                          started=self.started, finished=_now(), previews=self.previews,
                          resumed=self.resumed, seconds=self.seconds)

    def close(self) -> None:
        self.journal.close()


def run_scan(entries: list[InputEntry], out_dir: str | Path, predictor: Predictor,
             settings: ScanSettings, journal_header: dict, resume: bool = False,
             on_record: Callable[[dict], None] | None = None,
             layout: str | None = None,
             on_tiles: Callable[[int, int], None] | None = None) -> ScanResult:
    """Scans every entry; records come back in input order. With `resume`, images already in
    the output folder's journal (same relative path and SHA-256) are not processed again.

    Layouts (`layout=None`: default_layout):
      "pipelines"  on a CPU with workers in resize mode: each worker process is a whole
                   pipeline (decode, network on one thread, pictures); nothing waits for
                   anything else, and no thread competes with the network's threads;
      "writer"     on a GPU: workers decode, the network runs here in batches, a writer
                   thread writes;
      "inline"     on a CPU without workers, or in tile mode: workers (if any) decode, the
                   rest runs here, the network on all of this process's threads (tiles:
                   one tile per thread).

    on_tiles(done, total): in tile mode where the network runs in this process ("writer",
    "inline"), called after each forward of tiles of an image (tiles done, tiles in it)."""
    out = Path(out_dir)
    layout = layout or default_layout(settings, predictor.device.type)
    if layout not in ("pipelines", "writer", "inline"):
        raise ValueError(f"unknown scan layout {layout!r}")
    log.info("%d inputs, %s mode, layout %s: %s", len(entries), settings.mode, layout, {
        "pipelines": f"{settings.workers} worker processes, each decoding, running the network "
                     f"on one thread and writing the pictures",
        "writer": f"{settings.workers} decoding workers, the network here on "
                  f"{predictor.device} ({torch.get_num_threads()} CPU threads), one writer thread",
        "inline": f"{settings.workers} decoding workers, the rest in this process, the "
                  f"network on {torch.get_num_threads()} threads"}[layout])
    ledger = ScanLedger(entries, out, journal_header, resume, on_record)
    try:
        if layout == "pipelines":
            _scan_in_pipelines(entries, out, predictor, settings, ledger)
        else:
            _scan_in_batches(entries, out, predictor, settings, ledger, layout == "writer",
                             on_tiles)
    finally:
        ledger.close()
    return ledger.result()


def default_layout(settings: ScanSettings, device_type: str) -> str:
    """A GPU: "writer". A CPU: "pipelines" (one image per worker and core) in resize mode;
    in tile mode "inline", where one image's tiles get every core (a lone 12 MP image in a
    pipeline ran on one core while the others idled)."""
    if device_type != "cpu":
        return "writer"
    return "pipelines" if settings.workers > 0 and settings.mode == "resize" else "inline"


def _scan_in_batches(entries: list[InputEntry], out: Path, predictor: Predictor,
                     settings: ScanSettings, ledger: ScanLedger, use_writer: bool,
                     on_tiles: Callable[[int, int], None] | None = None) -> None:
    dataset = ScanInputs(entries, settings, predictor.size, predictor.info.mean,
                         predictor.info.std, done=ledger.done)
    batch_size = images_per_forward(settings, predictor.device.type)
    # In tile mode each decoded picture waiting in a worker can be large: one per worker.
    prefetch = (1 if settings.mode == "tile" else 2) if settings.workers else None
    loader = DataLoader(dataset, batch_size=batch_size,
                        num_workers=settings.workers, collate_fn=_collate,
                        prefetch_factor=prefetch,
                        worker_init_fn=partial(_worker_init, os.getpid()))
    # A writer thread belongs beside a GPU: on a CPU it would take cores from the network.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forgeryloc-writer") \
        if use_writer else None
    pending: deque[Future] = deque()
    # Images waiting for the writer: in tile mode each holds its whole decoded picture.
    queued = 2 if settings.mode == "tile" else 2 * batch_size

    def finish(index: int, make_outcome: Callable[[], dict]) -> None:
        ledger.accept(index, make_outcome())

    try:
        for items in loader:
            for index, make_outcome in item_outcomes(items, entries.__getitem__, predictor,
                                                     settings, out, on_tiles):
                if writer is None:
                    finish(index, make_outcome)
                else:
                    pending.append(writer.submit(finish, index, make_outcome))
            while len(pending) > queued:
                pending.popleft().result()  # re-raises a writer failure here
        while pending:
            pending.popleft().result()
    finally:
        if writer is not None:
            writer.shutdown(wait=True, cancel_futures=True)


class ScanPipelines(Dataset):
    """Item g: the outcomes of group g of entries (CPU_GROUP images in resize mode, one in tile
    mode), made entirely in the worker process that loads it, with its own replica of the
    network on the one thread PyTorch gives a worker."""

    def __init__(self, entries: list[InputEntry], out: Path, predictor: Predictor,
                 settings: ScanSettings, done: Collection[tuple[str, str]]):
        self.entries, self.out, self.settings, self.done = entries, out, settings, done
        self.network, self.info = predictor.network, predictor.info
        self.compile, self.mixed_precision = predictor.compiled, settings.mixed_precision
        self.group = images_per_forward(settings, "cpu")
        self._predictor: Predictor | None = None

    def __len__(self) -> int:
        return -(-len(self.entries) // self.group)

    def __getitem__(self, group: int) -> list[tuple[int, dict]]:
        if self._predictor is None:  # once per worker process
            self._predictor = Predictor(self.network, self.info, "cpu", self.mixed_precision,
                                        self.compile)
        info = self.info
        items = []
        for index in range(group * self.group, min(len(self.entries), (group + 1) * self.group)):
            item = load_item(self.entries[index], self.settings, info.input_size, info.mean,
                             info.std, self.done)
            item["index"] = index
            items.append(item)
        # The group's pictures are committed (synced, renamed) together at the end: an image's
        # syncs run while the next image is drawn instead of the worker waiting for them.
        outcomes, failure, made = [], None, []
        with deferred_commits() as written:
            for index, make_outcome in item_outcomes(items, self.entries.__getitem__,
                                                     self._predictor, self.settings, self.out):
                sets_before = len(written)
                try:
                    outcome = make_outcome()
                except OutputError as error:
                    failure = (index, {"output_error": str(error)})
                    break  # the output folder failed: the scan stops at this image
                # the FileSet of the image's pictures (none for an unreadable or resumed one)
                made.append((index, outcome, written[sets_before:]))
            for index, outcome, files in made:
                try:
                    for file_set in files:
                        file_set.commit()
                except OSError as error:
                    failure = (index, {"output_error": str(output_error(
                        self.entries[index], self.out, error))})
                    break
                outcomes.append((index, outcome))
        return outcomes + ([failure] if failure else [])


def _group(outcomes):
    return outcomes


# torch >= 2.6 can hand batches on as they finish; older versions keep their order.
_AS_FINISHED = {"in_order": False} \
    if "in_order" in inspect.signature(DataLoader.__init__).parameters else {}


def _scan_in_pipelines(entries: list[InputEntry], out: Path, predictor: Predictor,
                       settings: ScanSettings, ledger: ScanLedger) -> None:
    dataset = ScanPipelines(entries, out, predictor, settings, ledger.done)
    # Groups handed on as they finish (in_order=False): a worker waits for no other worker's
    # group. A group of 4 holds a worker for seconds, so none is queued behind the one in
    # progress (the loader sends a worker its next group as soon as a result arrives, before
    # this loop journals it): at the end no worker still holds a queued group while another
    # idles. Tiles go one image per task, four queued. Records keep their place by index;
    # the journal lists them as they finish.
    loader = DataLoader(dataset, batch_size=None, num_workers=settings.workers,
                        collate_fn=_group, prefetch_factor=4 if dataset.group == 1 else 1,
                        worker_init_fn=partial(_worker_init, os.getpid()), **_AS_FINISHED)
    for outcomes in loader:
        for index, outcome in outcomes:
            if "output_error" in outcome:
                raise OutputError(outcome["output_error"])
            ledger.accept(index, outcome)
