"""The command line as a user reads it: help texts, choices, usage lines, logging, layout."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from forgeryloc.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["info", "convert", "scan", "synth", "train", "train-jpeg", "fuse", "evaluate"]


def run(*args, **env):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "120", **env})


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_values_by_words(command):
    """PATH, N, FLOAT, TEXT or the list of choices; never Python types such as <list[str]>."""
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    assert not re.search(r"<(list|str|int|float|bool|path)\b", result.output), result.output
    assert "{" not in result.output.split("\n", 3)[1], "usage in the usual notation"


def test_scan_help_shows_usage_choices_and_every_exit_code():
    text = run("scan", "--help").output
    assert re.search(r"Usage: \S+ scan \[OPTIONS\] PATH\.\.\.", text), text[:300]
    assert "resize|tile" in text and "auto|cpu|cuda|mps" in text
    for code in ("0 all done", "1 with --fail-on-flag", "2 usage error", "3 some inputs",
                 "4 the outputs", "130 interrupted"):
        assert code in " ".join(text.split()), code


@pytest.mark.parametrize("option, value, choices", [
    ("--mode", "fast", ("resize", "tile")), ("--device", "gpu", ("auto", "cpu", "cuda", "mps"))])
def test_values_outside_a_fixed_set_are_refused_with_the_list(tmp_path, option, value, choices):
    result = run("scan", tmp_path, "-o", tmp_path / "out", option, value)
    assert result.exit_code == 2
    assert all(choice in result.output for choice in choices), result.output
    assert not (tmp_path / "out").exists()


def test_compile_help_quotes_the_measured_numbers_of_the_readme():
    text = " ".join(run("scan", "--help").output.replace("│", " ").split())
    start = text.index("--compile")
    help_text = text[start:text.index("--resume", start)]
    numbers = re.findall(r"\d+-\d+ ?%|\d+-\d+ s", help_text)
    assert len(numbers) >= 3, help_text
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for number in numbers:
        assert number.replace(" ", "") in readme.replace(" ", ""), number


def test_bench_help_lists_its_sections_and_options():
    result = run("bench", "--help")
    assert result.exit_code == 0, result.output
    for word in ("forward", "scan", "memory", "gpu", "--quick", "--configs", "--images"):
        assert word in result.output, word


def _tiny_folder(root: Path) -> Path:
    folder = root / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_verbose_after_the_command_logs_what_the_scan_used(tmp_path, tiny_checkpoint):
    folder = _tiny_folder(tmp_path)
    result = run("scan", folder, "-o", tmp_path / "out", "--weights", tiny_checkpoint,
                 "--workers", "0", "-v")
    assert result.exit_code == 0, result.output
    info = [line for line in result.stderr.splitlines() if line.startswith("INFO ")]
    text = "\n".join(info)
    assert f"weights {tiny_checkpoint}" in text and "SHA-256" in text
    assert "device cpu" in text and "torch threads" in text and "worker processes" in text
    assert re.search(r"stage times over 2 images.*decode .*network .*maps and pictures", text)
    quiet = run("scan", folder, "-o", tmp_path / "out2", "--weights", tiny_checkpoint,
                "--workers", "0")
    assert "INFO" not in quiet.stderr, "the level does not stick to later commands"


def test_evaluate_title_is_one_line_at_80_columns(tmp_path, tiny_checkpoint):
    dataset = tmp_path / "a-dataset-folder-whose-name-is-long-enough-to-wrap-a-narrow-table"
    for sub in ("tampered", "masks"):
        (dataset / sub).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            dataset / "tampered" / f"t{i}.png")
        mask = np.zeros((40, 48), np.uint8)
        mask[10:20, 10:30] = 255
        Image.fromarray(mask).save(dataset / "masks" / f"t{i}.png")
    result = run("evaluate", dataset, "--weights", tiny_checkpoint, "--device", "cpu",
                 COLUMNS="80")
    assert result.exit_code == 0, result.output
    assert f"{dataset.name}: 2 tampered, 0 authentic" in result.stdout.replace("\n", "¶"), \
        result.stdout


def test_readme_caption_states_the_examples_manifest_history():
    """The caption under the README's picture names an example and gives its history as the
    examples' README (written from manifest.json) does."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    caption = " ".join(readme.split("![overlay of a scanned example]", 1)[1].split("\n\n")[1].split())
    name = re.search(r"`(synth_\d+\.jpg)`", caption)[1]
    samples = json.loads((ROOT / "examples" / "manifest.json").read_text())["samples"]
    sample = next(s for s in samples if Path(s["image"]).name == name)
    rows = (ROOT / "examples" / "README.md").read_text(encoding="utf-8").splitlines()
    row = next(r for r in rows if f"`{sample['image']}`" in r)
    history = row.split("|")[2].strip()
    assert history in caption, (history, caption)
    for step in sample["history"]["chain"]:
        quality = step["table"].get("quality")
        if quality is not None:
            assert f"q{quality}" in caption


def test_the_progress_bar_moves_by_tiles_and_lands_on_whole_images():
    from rich.progress import Progress

    from forgeryloc.scan_command import ImageProgress

    progress = Progress(disable=True)
    task = progress.add_task("scan", total=3)
    bar = ImageProgress(progress, task)
    completed = lambda: progress.tasks[0].completed  # noqa: E731
    for _ in range(3):
        bar.tiles(1, 3)
    assert completed() == pytest.approx(1.0)
    bar.record()  # the tiled image's record: nothing left of it to add
    assert completed() == pytest.approx(1.0)
    bar.record()  # an unreadable image: no tiles, one whole step
    assert completed() == pytest.approx(2.0)
    bar.tiles(2, 8)
    assert completed() == pytest.approx(2.25)
    bar.record()
    assert completed() == pytest.approx(3.0)
