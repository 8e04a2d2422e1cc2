"""`forgeryloc evaluate` against an independent computation of the paper's protocol."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from forgeryloc.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def casia_subset(shared, tmp_path_factory):
    source = shared / "data/benchmarks/casia1-dev"
    root = tmp_path_factory.mktemp("casia-subset")
    for folder in ("tampered", "masks", "authentic"):
        (root / folder).mkdir()
    tampered = sorted((source / "tampered").iterdir())[:5]
    for image in tampered:
        shutil.copy(image, root / "tampered" / image.name)
        shutil.copy(source / "masks" / f"{image.stem}.png", root / "masks" / f"{image.stem}.png")
    for image in sorted((source / "authentic").iterdir())[:3]:
        shutil.copy(image, root / "authentic" / image.name)
    return root


def _independent(casia_subset, checkpoint):
    """The protocol written out with PIL, torch and numpy only."""
    from safetensors import safe_open
    from forgeryloc.weights import load_model

    model, _ = load_model(checkpoint)
    with safe_open(str(checkpoint), "pt") as handle:
        metadata = handle.metadata()
    size = int(metadata["input_size"])
    norm = json.loads(metadata["normalization"])
    mean, std = np.array(norm["mean"]), np.array(norm["std"])
    dices, ious, scores, labels = [], [], [], []
    for folder, tampered in (("tampered", True), ("authentic", False)):
        for path in sorted((casia_subset / folder).iterdir()):
            rgb = Image.open(path).convert("RGB")
            small = np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.float64) / 255
            x = torch.tensor(((small - mean) / std).transpose(2, 0, 1)[None], dtype=torch.float32)
            with torch.no_grad():
                logits = model(x).prediction[0, 0]
            prob_small = torch.sigmoid(logits).numpy()
            native = torch.nn.functional.interpolate(torch.sigmoid(logits)[None, None],
                                                     size=(rgb.height, rgb.width),
                                                     mode="bilinear", align_corners=False)
            scores.append(native.numpy().astype(np.float64).mean())
            labels.append(tampered)
            if tampered:
                gt_image = Image.open(casia_subset / "masks" / f"{path.stem}.png").convert("L")
                gt = np.asarray(gt_image.resize((size, size), Image.NEAREST)) > 127
                pred = prob_small >= 0.5
                inter = np.logical_and(pred, gt).sum()
                dices.append((2 * inter + 1e-5) / (pred.sum() + gt.sum() + 1e-5))
                ious.append((inter + 1e-5) / (np.logical_or(pred, gt).sum() + 1e-5))
    positives = [s for s, l in zip(scores, labels) if l]
    negatives = [s for s, l in zip(scores, labels) if not l]
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    return np.mean(dices), np.mean(ious), np.mean(pairs)


def test_evaluate_matches_an_independent_computation(casia_subset, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(casia_subset), "--weights",
                                      str(tiny_checkpoint), "-o", str(out), "--json",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["tampered"] == 5 and summary["authentic"] == 3
    dsc, iou, image_auc = _independent(casia_subset, tiny_checkpoint)
    assert summary["dsc"] == pytest.approx(dsc, abs=1e-6)
    assert summary["iou"] == pytest.approx(iou, abs=1e-6)
    assert summary["image_auc"] == pytest.approx(image_auc, abs=1e-6)
    assert "paper protocol" in summary["protocol"]
    rows = (out / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 8
    assert json.loads((out / "summary.json").read_text())["dsc"] == summary["dsc"]


def test_evaluate_table_output(casia_subset, tiny_checkpoint):
    result = CliRunner().invoke(app, ["evaluate", str(casia_subset), "--weights",
                                      str(tiny_checkpoint), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "dsc" in result.output and "image_auc" in result.output
    assert "tampered_flagged" in result.output and "of 5" in result.output


def test_evaluate_unknown_layout_is_a_usage_error(tmp_path, tiny_checkpoint):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--weights",
                                      str(tiny_checkpoint)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_evaluate_holdout_uses_the_training_split(casia_subset, tiny_checkpoint):
    from forgeryloc.data.datasets import read_dataset, split_holdout
    held_out = split_holdout(read_dataset(casia_subset), 0.5, 3)[1]
    result = CliRunner().invoke(app, ["evaluate", str(casia_subset), "--weights",
                                      str(tiny_checkpoint), "--device", "cpu", "--json",
                                      "--holdout", "0.5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["images"] == len(held_out) < 8
    assert summary["tampered"] == sum(s.tampered for s in held_out)


def test_evaluate_reports_the_floors_on_the_same_images(casia_subset, tiny_checkpoint):
    result = CliRunner().invoke(app, ["evaluate", str(casia_subset), "--weights",
                                      str(tiny_checkpoint), "--json", "--device", "cpu"])
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    size = summary["input_size"]
    ellipse = np.add.outer(((np.arange(size) + 0.5) / size - 0.5) ** 2,
                           ((np.arange(size) + 0.5) / size - 0.5) ** 2) <= 2 * 0.25 ** 2 * np.log(2)
    all_dsc, blob_dsc, fractions = [], [], []
    for path in sorted((casia_subset / "masks").iterdir()):
        mask = Image.open(path).convert("L")
        fractions.append((np.asarray(mask) > 127).mean())
        gt = np.asarray(mask.resize((size, size), Image.NEAREST)) > 127
        all_dsc.append((2 * gt.sum() + 1e-5) / (gt.size + gt.sum() + 1e-5))
        blob_dsc.append((2 * (gt & ellipse).sum() + 1e-5) / (gt.sum() + ellipse.sum() + 1e-5))
    assert summary["floor_all_dsc"] == pytest.approx(np.mean(all_dsc), abs=1e-6)
    assert summary["floor_blob_dsc"] == pytest.approx(np.mean(blob_dsc), abs=2e-3)
    assert summary["true_fraction"] == pytest.approx(np.mean(fractions), abs=1e-6)
    assert 0.0 <= summary["predicted_fraction"] <= 1.0
    table = CliRunner().invoke(app, ["evaluate", str(casia_subset), "--weights",
                                     str(tiny_checkpoint), "--device", "cpu"]).output
    assert "blob" in table and f"{summary['floor_all_dsc']:.4f}" in table


def _predictor_noting_tables():
    """The shipped model's predictor, and the list of the quantisation tables its JPEG stream
    is given (the model's outputs are unchanged)."""
    from forgeryloc.predict import Predictor
    from forgeryloc.weights import load_model

    predictor = Predictor(*load_model(), "cpu")
    seen = []
    block_logits = predictor.jpeg_block_logits
    predictor.jpeg_block_logits = lambda jpeg: seen.append(jpeg.table.numpy()) or \
        block_logits(jpeg)
    return predictor, seen


def test_evaluate_can_re_save_every_image_first(tmp_path):
    """--resave Q: the model sees each image saved once more at JPEG quality Q (libjpeg's
    tables), so its JPEG stream reads the new file; the summary says so."""
    from forgeryloc.data.jpeg_tables import ijg_tables
    from forgeryloc.data.datasets import read_dataset
    from forgeryloc.evaluate import evaluate_samples

    samples = [s for s in read_dataset(EXAMPLES) if s.tampered][:3]
    predictor, seen = _predictor_noting_tables()
    plain = evaluate_samples(predictor, samples)
    seen_plain, seen[:] = list(seen), []
    resaved = evaluate_samples(predictor, samples, resave_quality=60)
    quality_60 = np.asarray(ijg_tables(60).luma)
    assert all(not np.array_equal(table, quality_60) for table in seen_plain)
    assert len(seen) == len(samples) and all(np.array_equal(table, quality_60) for table in seen)
    assert plain.rows != resaved.rows

    result = CliRunner().invoke(app, ["evaluate", str(EXAMPLES), "--resave", "60", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resave_quality"] == 60


def test_evaluate_can_resize_every_image_first():
    """--rescale F: each image and its mask are resized by F before the model sees them; the
    model gets the resized pixels (a resize erases the file's JPEG grid: the stream has no
    input), or with --resave Q their re-save, whose table the stream then reads."""
    from forgeryloc.data.jpeg_tables import ijg_tables
    from forgeryloc.data.datasets import load_pair, read_dataset
    from forgeryloc.evaluate import evaluate_samples
    from forgeryloc.preprocess import rescaled_pair

    samples = [s for s in read_dataset(EXAMPLES) if s.tampered][:2]
    rgb, mask = load_pair(samples[0])
    small_rgb, small_mask = rescaled_pair(rgb, mask, 0.5)
    assert small_rgb.shape == (round(rgb.shape[0] / 2), round(rgb.shape[1] / 2), 3)
    assert small_mask.shape == small_rgb.shape[:2]
    assert set(np.unique(small_mask)) <= set(np.unique(mask))  # labels kept exactly

    predictor, seen = _predictor_noting_tables()
    plain = evaluate_samples(predictor, samples)
    assert len(seen) == len(samples)
    seen.clear()
    resized = evaluate_samples(predictor, samples, rescale=0.5)
    assert seen == []  # no file, and resized pixels show no JPEG lattice
    assert resized.rows != plain.rows
    resaved = evaluate_samples(predictor, samples, rescale=0.5, resave_quality=60)
    assert len(seen) == len(samples)
    assert all(np.array_equal(table, np.asarray(ijg_tables(60).luma)) for table in seen)
    assert resaved.rows != resized.rows

    result = CliRunner().invoke(app, ["evaluate", str(EXAMPLES), "--rescale", "0.5",
                                      "--resave", "80", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rescale"] == 0.5 and summary["resave_quality"] == 80


def test_flag_counts_use_each_images_own_threshold():
    """A forgery scored without JPEG evidence is flagged at the pixel path's threshold, as a
    scan flags it; the counts say how many forgeries a clear result hid."""
    from forgeryloc.evaluate import summarise

    def row(tampered: bool, score: float, flag_at: float) -> dict:
        values = dict.fromkeys(("dsc", "iou", "dsc_native", "iou_native", "f1_native", "f1_best",
                                "area", "true_area", "floor_all_dsc", "floor_all_iou",
                                "floor_blob_dsc", "floor_blob_iou"), 0.5)
        return {**values, "tampered": tampered, "score": score, "flag_threshold": flag_at}

    rows = [row(True, 0.95, 0.9), row(True, 0.85, 0.9), row(True, 0.85, 0.8),
            row(False, 0.92, 0.9), row(False, 0.5, 0.9), row(False, 0.85, 0.8)]
    summary = summarise(rows, [], [], 256, 0.5, 0.9, [])
    assert summary["tampered_flagged"] == 2      # 0.95 >= 0.9 and 0.85 >= 0.8, not 0.85 < 0.9
    assert summary["authentic_flagged"] == 2
    assert summary["image_accuracy"] == pytest.approx(3 / 6)
