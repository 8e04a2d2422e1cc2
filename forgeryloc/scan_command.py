"""`forgeryloc scan` end to end: check the request, find the inputs, load the weights, run the
scan with progress on stderr, write the reports, and choose the exit code."""
from __future__ import annotations

import getpass
import json
import logging
import os
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import __version__
from .discover import DiscoveryError, discover, is_within
from .evidence.layers import parse_layers
from .flag_meaning import flag_meaning
from .imaging import one_line
from .manifest import MANIFEST_NAME, write_manifest
from .image_scores import STATISTICS
from .predict import Predictor, pick_device
from .report import REPORT_JSON
from .scan import CPU_GROUP, JOURNAL_NAME, OutputError, ScanSettings, default_layout, run_scan
from .weights import CheckpointError, default_weights_path, load_model, sha256_file

EXIT_OK, EXIT_USAGE, EXIT_UNREADABLE, EXIT_OUTPUT = 0, 2, 3, 4

log = logging.getLogger(__name__)


@dataclass
class ScanRequest:
    paths: list[str]
    output: Path
    weights: Optional[Path] = None
    mode: str = "resize"
    threshold: Optional[float] = None
    flag_threshold: Optional[float] = None
    batch_size: int = 8
    workers: Optional[int] = None  # None: default_workers()
    device: str = "auto"
    max_pixels: int = 100_000_000
    tile_overlap: float = 0.5
    compile: bool = False
    resume: bool = False
    overwrite: bool = False  # replace the scan an output folder already holds
    jsonl: bool = False
    quiet: bool = False
    thumbnails: bool = True
    allow_output_in_input: bool = False
    command_line: list[str] = field(default_factory=list)
    ray: Optional[str] = None  # run on Ray: "local", "auto" or a cluster address
    ray_actors: int = 1
    case: Optional[str] = None      # --case ID, recorded in every report
    examiner: Optional[str] = None  # --examiner NAME
    evidence: Optional[str] = None  # --evidence: "ela,noise,dq", "all" or None
    jpeg_from_pixels: bool = True   # --no-jpeg-from-pixels turns it off
    without_jpeg: bool = False      # --without-jpeg: the pixel path only
    flagged: bool = False  # set by execute_scan


def default_workers() -> int:
    """One worker per CPU this process may use, at most 8 (each may hold a decoded image)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def holds_scan(output: Path) -> bool:
    """Whether a folder holds a scan, finished (its report) or not (its journal)."""
    return any((output / name).exists() for name in (REPORT_JSON, JOURNAL_NAME))


def _log_timings(seconds: dict[str, float], images: int, reports: float, wall: float) -> None:
    """Per-stage times at INFO: summed over the images (and over the worker processes that
    ran side by side, so they can add up to more than the wall time)."""
    if not log.isEnabledFor(logging.INFO):
        return
    stages = ", ".join(f"{stage} {value:.2f} s ({1000 * value / max(1, images):.0f} ms/image)"
                       for stage, value in seconds.items())
    log.info("stage times over %d images, summed over workers: %s; reports %.2f s; "
             "wall time %.2f s", images, stages or "none", reports, wall)


def case_record(case: str | None, examiner: str | None) -> dict:
    """Who scanned what where: the case and examiner as given, this host and user."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without a passwd entry)
        user = str(os.getuid()) if hasattr(os, "getuid") else None
    return {"id": case, "examiner": examiner, "host": socket.gethostname(), "user": user}


class ImageProgress:
    """The bar counts images; in tile mode each forward moves it by its share of the image in
    progress, and the image's record by the rest (tiles are reported where images finish
    one after another)."""

    def __init__(self, progress: Progress, task):
        self.progress, self.task = progress, task
        self.part = 0.0  # of the image in progress, already shown

    def tiles(self, done: int, total: int) -> None:
        self.part += done / total
        self.progress.advance(self.task, done / total)

    def record(self) -> None:
        self.progress.advance(self.task, 1.0 - self.part)
        self.part = 0.0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _error(console: Console, message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False,
                  soft_wrap=True, emoji=False)


def execute_scan(request: ScanRequest, console: Console) -> int:
    if request.mode not in ("resize", "tile"):
        _error(console, f"--mode must be resize or tile, not {request.mode!r}")
        return EXIT_USAGE
    try:
        layers = parse_layers(request.evidence)
    except ValueError as error:
        _error(console, f"--evidence: {error}")
        return EXIT_USAGE
    if request.ray is None and request.ray_actors != 1:
        _error(console, "--ray-actors goes with --ray")
        return EXIT_USAGE
    if request.ray is not None:
        from .ray_scan import ray_unavailable
        problem = ray_unavailable() or (None if request.ray.strip() else
                                        "--ray needs an address: local, auto or host:port")
        if problem:
            _error(console, problem)
            return EXIT_USAGE
    output = Path(request.output)
    if output.exists() and not output.is_dir():
        _error(console, f"{output}: exists and is not a folder")
        return EXIT_USAGE
    if request.resume and request.overwrite:
        _error(console, "--resume and --overwrite exclude each other")
        return EXIT_USAGE
    if holds_scan(output) and not (request.resume or request.overwrite):
        # Earlier results are evidence: never replaced without being asked to.
        _error(console, f"{output} already holds a scan: use --resume to finish it, or "
                        f"--overwrite to replace it (or choose another --output)")
        return EXIT_USAGE
    folders = [p for p in request.paths if p != "-" and os.path.isdir(p)]
    # Through links too: an OUTDIR that is a link into an input folder is inside it.
    inside = [f for f in folders if is_within(str(output), f)
              or is_within(os.path.realpath(output), os.path.realpath(f))]
    if inside and not request.allow_output_in_input:
        _error(console, f"the output folder {output} is inside the input folder {inside[0]}; "
                        f"choose another --output (or pass --allow-output-in-input)")
        return EXIT_USAGE
    try:
        stdin_lines = sys.stdin if "-" in request.paths else ()
        discovery = discover(request.paths, stdin_lines,
                             exclude=[output, os.path.realpath(output)])
    except DiscoveryError as error:
        _error(console, str(error))
        return EXIT_USAGE
    entries, skipped = discovery.entries, discovery.skipped
    if not entries:
        others = f" ({_plural(len(skipped), 'other file')})" if skipped else ""
        _error(console, "no images found in " + ", ".join(request.paths) + others)
        return EXIT_USAGE

    try:
        weights = Path(request.weights) if request.weights else default_weights_path()
        model, card = load_model(weights)
        device = pick_device(request.device) if request.ray is None else None  # Ray: per actor
    except (CheckpointError, ValueError) as error:
        _error(console, str(error))
        return EXIT_USAGE
    settings = ScanSettings(
        mode=request.mode,
        threshold=card.threshold if request.threshold is None else request.threshold,
        flag_threshold=(card.score_threshold if request.flag_threshold is None
                        else request.flag_threshold),
        # a --flag-threshold given applies to every image
        pixel_flag_threshold=(card.pixel_score_threshold if request.flag_threshold is None
                              else None),
        image_score=card.image_score,
        batch_size=request.batch_size, max_pixels=request.max_pixels,
        workers=default_workers() if request.workers is None else request.workers,
        tile_overlap=request.tile_overlap, compile=request.compile,
        thumbnails=request.thumbnails, evidence=layers,
        # bf16 autocast runs on CUDA only; on Ray the actors' devices decide (see below)
        mixed_precision=device.type == "cuda" if device is not None else request.device != "cpu",
        jpeg_stream=getattr(model.config, "jpeg_stream", None) is not None,
        jpeg_from_pixels=request.jpeg_from_pixels, without_jpeg=request.without_jpeg)
    weights_sha256 = sha256_file(weights)
    log.info("weights %s: %s at %d px, SHA-256 %s", weights, card.config.name, card.input_size,
             weights_sha256)
    if device is not None:
        log.info("device %s, bf16 autocast %s, %d torch threads here, %d worker processes",
                 device, "on" if settings.mixed_precision else "off", torch.get_num_threads(),
                 settings.workers)
    started = time.perf_counter()
    header = {"tool": f"forgeryloc {__version__}", "weights_sha256": weights_sha256,
              "settings": settings.fingerprint()}

    show_progress = not request.quiet and console.is_terminal
    progress = Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console, disable=not show_progress)
    task = progress.add_task("scan", total=len(entries))

    stdout_closed: list[bool] = []
    bar = ImageProgress(progress, task)

    def on_record(record: dict) -> None:
        bar.record()
        if record["error"]:
            progress.console.print(f"[yellow]skipped[/] {escape(one_line(record['path']))}: "
                                   f"{escape(one_line(record['error']))}", highlight=False,
                                   soft_wrap=True, emoji=False)
        if request.jsonl and not stdout_closed:
            try:
                sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:  # e.g. piped into `head`: the scan itself goes on
                stdout_closed.append(True)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())

    try:
        with progress:
            if request.ray is None:
                predictor = Predictor(model, card, device, compile_model=settings.compile,
                                      mixed_precision=settings.mixed_precision)
                result = run_scan(entries, output, predictor, settings, header,
                                  resume=request.resume, on_record=on_record,
                                  on_tiles=bar.tiles)
                # CPU results are exact for a given thread count: one per pipeline worker,
                # one per tile forward (tiles go side by side, one per thread)
                one_thread = default_layout(settings, device.type) == "pipelines" \
                    or (settings.mode == "tile" and device.type == "cpu")
                workers = {"device": str(device),
                           "cpu_threads": 1 if one_thread else torch.get_num_threads()}
            else:
                from .ray_scan import run_ray_scan
                del model  # each actor loads its own
                result, workers = run_ray_scan(
                    entries, output, weights, weights_sha256, card, settings, header,
                    address=request.ray, actors=request.ray_actors, device=request.device,
                    resume=request.resume, on_record=on_record)
    except OutputError as error:
        _error(console, str(error))
        return EXIT_OUTPUT
    except ValueError as error:  # a journal made with other settings; a Ray cluster problem
        _error(console, str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error(console, "interrupted: finished images are kept; rerun the same command with "
                        "--resume to finish the rest")
        return 130

    run = {
        "tool": "forgeryloc", "version": __version__, "command_line": request.command_line,
        "weights": {"path": str(weights), "sha256": weights_sha256,
                    "config": card.config.name, "input_size": card.input_size,
                    "embeddings": card.embeddings},
        "device": workers["device"], "torch": torch.__version__,
        "python": platform.python_version(), "cpu_threads": workers["cpu_threads"],
        # images per CPU forward (resize mode; tiles go one by one): with the thread count,
        # what fixes the last bits of CPU results
        **({"cpu_forward_group": CPU_GROUP} if workers["device"].startswith("cpu") else {}),
        **({"ray": workers["ray"]} if "ray" in workers else {}),
        # what was used: a Ray scan allowed to use a GPU may have got only CPU actors
        "settings": {**asdict(settings), "mixed_precision": settings.mixed_precision
                     and "cuda" in str(workers["device"])},
        "started": result.started, "finished": result.finished,
        "counts": {**result.counts, "skipped": len(skipped)},
        "image_score": STATISTICS[settings.image_score],
        "flag_meaning": flag_meaning(card, settings.flag_threshold,
                                     settings.pixel_flag_threshold,
                                     request.flag_threshold is not None),
        "case": case_record(request.case, request.examiner),
    }
    from .report import write_reports
    reports_started = time.perf_counter()
    try:
        reports = write_reports(output, run, result.records, thumbnails=request.thumbnails,
                                previews=result.previews, skipped=skipped)
        # Last, over everything written (resumed images' pictures too): later, `sha256sum -c`
        # in OUTDIR shows whether anything changed.
        written = [name for record in result.records for name in (record["outputs"] or {})
                   .values()] + [path.name for path in reports] + [JOURNAL_NAME]
        manifest, listed = write_manifest(output, written)
    except OSError as error:
        _error(console, f"cannot write the reports in {output}: {error.strerror or error}")
        return EXIT_OUTPUT
    except KeyboardInterrupt:  # each report is replaced atomically: old or new, never half
        _error(console, "interrupted while writing the reports; rerun the same command with "
                        "--resume to write them")
        return 130
    _log_timings(result.seconds, len(result.records) - result.resumed,
                 time.perf_counter() - reports_started, time.perf_counter() - started)
    counts = result.counts
    request.flagged = counts["flagged"] > 0
    if not request.quiet:
        others = f", {_plural(len(skipped), 'other file')} skipped (not images)" \
            if skipped else ""
        reused = f" ({counts['resumed']} from the journal of the earlier run, " \
            f"{counts['inputs'] - counts['resumed']} now)" if request.resume else ""
        warned = f", {counts['decode_warnings']} with corrupt JPEG data (decode warnings)" \
            if counts["decode_warnings"] else ""
        drawn = f" ({_plural(counts['not_photographs'], 'drawn picture')}, never flagged)" \
            if counts["not_photographs"] else ""
        console.print(f"scanned {counts['scanned']} of {counts['inputs']} images{reused}, "
                      f"{counts['flagged']} flagged{drawn}, {counts['unreadable']} unreadable"
                      f"{warned}"
                      f"{others}; "
                      f"report: {escape(str(output / 'report.html'))}", highlight=False,
                      soft_wrap=True)
        console.print(f"report.json SHA-256 {sha256_file(output / REPORT_JSON)}; "
                      f"{MANIFEST_NAME} SHA-256 {sha256_file(manifest)} ({listed} files; "
                      f"check with sha256sum -c {MANIFEST_NAME} in the output folder)",
                      highlight=False, soft_wrap=True)
    return EXIT_UNREADABLE if counts["unreadable"] else EXIT_OK
