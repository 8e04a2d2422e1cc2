"""The `forgeryloc` command line: each command parses options and calls the library."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Find where a photograph was manipulated (M2SFormer, ICCV 2025).")
err_console = Console(stderr=True)

EXIT_OK, EXIT_FLAGGED, EXIT_USAGE, EXIT_UNREADABLE = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_USAGE) -> "typer.Exit":
    """Prints one line to stderr and returns the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"forgeryloc {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details to stderr."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def info(
    weights: Optional[Path] = typer.Argument(None, help="Checkpoint (.safetensors); default: "
                                             "the shipped one or $FORGERYLOC_WEIGHTS."),
    as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON."),
) -> None:
    """Print the model card of a checkpoint: config, size, cost, SHA-256 and metadata."""
    from .complexity import count_macs
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
        "embeddings": card.embeddings,
        "architecture": card.config.to_dict(),
        "provenance": card.provenance,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"forgeryloc model card: {path.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in summary.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        table.add_row(key, str(value))
    Console().print(table)


@app.command()
def convert(
    official: Path = typer.Argument(..., help="The authors' checkpoint (.pth.tar)."),
    output: Path = typer.Argument(..., help="Where to write the .safetensors file."),
    embeddings: Optional[Path] = typer.Option(
        None, "--embeddings", help=".npz with 'text_embedding_easy' and 'text_embedding_hard' "
        "(the 300-d easy/hard word vectors the authors used)."),
    config: Optional[str] = typer.Option(None, help="Model config; default: inferred."),
    input_size: int = typer.Option(256, help="Input size the weights were trained at."),
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


def main() -> None:
    app()
