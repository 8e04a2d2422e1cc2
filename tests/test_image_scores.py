"""Image scores: the statistics, computed band by band, and where a checkpoint names its own."""
import json

import numpy as np
import pytest

from forgeryloc.image_scores import (LEVEL_MAX, ScoreAccumulator, check_statistic, image_score,
                                     probability_levels)


def _top_share_by_sorting(probability: np.ndarray, share: float) -> float:
    levels = np.sort(probability_levels(probability).ravel().astype(np.float64))[::-1]
    kept = max(1, int(np.ceil(levels.size * share)))
    return float(levels[:kept].mean() / LEVEL_MAX)


def test_top_share_is_the_mean_of_the_highest_levels_whatever_the_bands():
    rng = np.random.default_rng(0)
    probability = rng.beta(0.3, 3.0, size=(157, 211)).astype(np.float32)
    probability[40:50, 60:90] = 0.93  # many equal levels straddle the cut
    expected = _top_share_by_sorting(probability, 0.01)
    assert image_score(probability, "top1%") == pytest.approx(expected, abs=1e-12)
    accumulator = ScoreAccumulator("top1%")
    for top in range(0, 157, 23):
        accumulator.add(probability[top:top + 23])
    assert accumulator.value() == pytest.approx(expected, abs=1e-12)


def test_top_share_sees_a_small_confident_region_that_the_mean_dilutes():
    haze = np.full((200, 200), 0.10, np.float32)
    region = np.full((200, 200), 0.02, np.float32)
    region[90:110, 90:110] = 0.95  # 1% of the picture
    assert image_score(haze, "mean") > image_score(region, "mean")
    assert image_score(region, "top1%") > image_score(haze, "top1%")
    assert image_score(region, "top1%") == pytest.approx(round(0.95 * LEVEL_MAX) / LEVEL_MAX)


def test_mean_is_the_plain_mean_and_nan_counts_as_no_evidence_in_the_top_share():
    probability = np.array([[0.2, 0.4], [0.6, 0.8]], np.float32)
    assert image_score(probability) == pytest.approx(0.5)
    with_nan = probability.copy()
    with_nan[1, 1] = np.nan
    assert image_score(with_nan, "top1%") == pytest.approx(round(0.6 * LEVEL_MAX) / LEVEL_MAX)


def test_unknown_statistics_and_empty_maps_are_refused():
    with pytest.raises(ValueError, match="unknown image score"):
        check_statistic("median")
    with pytest.raises(ValueError):
        ScoreAccumulator("top1%").value()


def test_a_checkpoint_carries_its_statistic_and_old_ones_read_as_mean(tmp_path):
    from forgeryloc.model.m2sformer import build_model
    from forgeryloc.weights import CheckpointError, CheckpointInfo, load_model, save_checkpoint

    model = build_model("m2sformer-b0")
    card = CheckpointInfo(config=model.config, image_score="top1%", score_threshold=0.4)
    path = tmp_path / "top.safetensors"
    save_checkpoint(model, card, path)
    assert load_model(path)[1].image_score == "top1%"
    metadata = card.to_metadata()
    del metadata["image_score"]
    assert CheckpointInfo.from_metadata(metadata, "old").image_score == "mean"
    with pytest.raises(CheckpointError, match="image score"):
        CheckpointInfo.from_metadata({**metadata, "image_score": "max"}, "odd")


def test_a_scan_scores_with_the_checkpoints_statistic_recomputable_from_its_map(
        tmp_path, tiny_checkpoint):
    from PIL import Image
    from typer.testing import CliRunner

    from forgeryloc.cli import app
    from forgeryloc.image_scores import STATISTICS
    from forgeryloc.render import read_probability_png
    from forgeryloc.weights import load_model, save_checkpoint

    model, card = load_model(tiny_checkpoint)
    card.image_score = "top1%"
    weights = save_checkpoint(model, card, tmp_path / "top.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for index in range(2):
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(
            photos / f"{index}.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["scan", str(photos), "-o", str(out), "--weights",
                                      str(weights), "--workers", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["image_score"] == STATISTICS["top1%"]
    for record in report["images"]:
        probability = read_probability_png(out / record["outputs"]["prob"])
        assert record["score"] == pytest.approx(_top_share_by_sorting(probability, 0.01),
                                                abs=1e-6)
        assert record["score"] != pytest.approx(float(probability.mean()), abs=1e-4)
