"""Known answers for the shipped checkpoint's JPEG evidence: a region with another compression
history, pasted off the host's 8x8 grid, stands out; the same picture as a PNG scans without it;
an orientation-tagged JPEG's evidence lands where the displayed pixels are."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from forgeryloc.cli import app
from forgeryloc.image_scores import image_score
from forgeryloc.imaging import decode_picture
from forgeryloc.jpeg_input import read_jpeg_input
from forgeryloc.predict import Finding, Predictor
from forgeryloc.weights import load_model

TOP, LEFT, SIDE = 101, 157, 96  # the pasted square: 5 pixels off the grid both ways


def _jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def splice(shared, rotate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Host saved at q60; a square of another photo saved once at q92, pasted off-grid.
    (composite pixels, mask), both turned a quarter left when `rotate` (stored orientation)."""
    photos = shared / "data/photos/kodak24"
    host = np.asarray(Image.open(photos / "kodim05.png").convert("RGB"))[100:356, 200:584]
    donor = np.asarray(Image.open(photos / "kodim12.png").convert("RGB"))[120:376, 300:684]
    composite = _jpeg_round_trip(host, 60).copy()
    composite[TOP:TOP + SIDE, LEFT:LEFT + SIDE] = _jpeg_round_trip(donor, 92)[40:40 + SIDE,
                                                                               40:40 + SIDE]
    mask = np.zeros(composite.shape[:2], bool)
    mask[TOP:TOP + SIDE, LEFT:LEFT + SIDE] = True
    if rotate:
        composite, mask = np.rot90(composite).copy(), np.rot90(mask).copy()
    return composite, mask


def _save_jpeg(rgb: np.ndarray, quality: int = 85, orientation: int = 1) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def predictor():
    model, card = load_model()
    if model.config.jpeg_stream is None:
        pytest.skip("the shipped checkpoint has no JPEG stream")
    return Predictor(model, card, "cpu")


def test_off_grid_region_with_another_history_raises_the_stream(shared, predictor):
    composite, mask = splice(shared)
    jpeg, note = read_jpeg_input(_save_jpeg(composite))
    assert note == "used"
    logits = predictor.jpeg_block_logits(jpeg)                  # 32 x 48 blocks
    blocks = mask.reshape(32, 8, 48, 8).mean(axis=(1, 3))
    inside, outside = logits[blocks == 1].mean(), logits[blocks == 0].mean()
    assert inside > outside + 2.0, (inside, outside)
    # The same picture saved once from the composite pixels' own decoding carries no such
    # contrast when the region shares the host's history: a control for the test itself.
    control = _jpeg_round_trip(np.asarray(Image.open(
        shared / "data/photos/kodak24/kodim05.png").convert("RGB"))[100:356, 200:584], 60)
    plain = predictor.jpeg_block_logits(read_jpeg_input(_save_jpeg(control))[0])
    assert plain[blocks == 1].mean() < inside - 2.0


def test_the_same_picture_as_png_is_scanned_without_jpeg_evidence(shared, tmp_path):
    composite, _ = splice(shared)
    Image.fromarray(composite).save(tmp_path / "splice.png")
    (tmp_path / "splice.jpg").write_bytes(_save_jpeg(composite))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "splice.png"),
                                      str(tmp_path / "splice.jpg"), "-o", str(out),
                                      "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    records = {r["relative_path"]: r for r in json.loads((out / "report.json").read_text())
               ["images"]}
    model, _ = load_model()
    expected = "used" if model.config.jpeg_stream is not None else None
    assert records["splice.jpg"]["jpeg_evidence"] == expected
    assert records["splice.png"]["error"] is None
    if expected:
        assert records["splice.png"]["jpeg_evidence"].startswith("not a JPEG")


def test_orientation_tagged_jpeg_puts_the_evidence_under_the_displayed_region(shared,
                                                                              predictor):
    stored, stored_mask = splice(shared, rotate=True)     # turned a quarter left
    data = _save_jpeg(stored, orientation=6)               # 6: display turned a quarter right
    picture, meta = decode_picture(data)
    assert (meta.height, meta.width) == (256, 384)         # displayed as the original
    displayed_mask = np.rot90(stored_mask, -1)
    jpeg, note = read_jpeg_input(data, orientation=meta.orientation)
    assert note == "used" and tuple(jpeg.coefficients.shape[1:]) == (32, 48)
    rgb = np.asarray(picture)
    outputs = predictor.forward(predictor.preprocess(rgb)[None])
    maps = predictor.with_jpeg(predictor.maps_from_resized(outputs, 0, 256, 384), jpeg)
    probability = Finding.from_maps(maps).probability
    assert probability[displayed_mask].mean() > probability[~displayed_mask].mean() + 0.3
    # Read without orientation, the evidence would sit elsewhere.
    unturned = read_jpeg_input(data, orientation=1)[0]
    assert tuple(unturned.coefficients.shape[1:]) == (48, 32)


@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_scans_in_both_modes_show_the_region(shared, predictor, tmp_path, mode):
    composite, mask = splice(shared)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "splice.jpg").write_bytes(_save_jpeg(composite))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "in"), "-o", str(out), "--mode",
                                      mode, "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    probability = np.asarray(Image.open(out / "splice.jpg.prob.png"), np.float64) / 65535
    assert probability.shape == mask.shape
    assert probability[mask].mean() > probability[~mask].mean() + 0.3


def test_a_scan_can_withhold_the_jpeg_evidence(shared, tmp_path, predictor):
    """scan --without-jpeg: the stream gets nothing (the record says so), and the map is the
    model's pixel path, as the API computes it without JPEG evidence."""
    from forgeryloc.render import read_probability_png
    from forgeryloc.scan import WITHHELD

    composite, _ = splice(shared)
    data = _save_jpeg(composite)
    (tmp_path / "splice.jpg").write_bytes(data)
    reports = {}
    for flags in ([], ["--without-jpeg"]):
        out = tmp_path / ("withheld" if flags else "used")
        result = CliRunner().invoke(app, ["scan", str(tmp_path / "splice.jpg"), "-o", str(out),
                                          "--workers", "0", "--quiet", *flags])
        assert result.exit_code == 0, result.output
        reports[bool(flags)] = json.loads((out / "report.json").read_text())
    used, withheld = reports[False], reports[True]
    assert used["images"][0]["jpeg_evidence"] == "used"
    assert withheld["images"][0]["jpeg_evidence"] == WITHHELD
    assert withheld["run"]["settings"]["without_jpeg"] is True
    assert used["images"][0]["score"] != withheld["images"][0]["score"]
    rgb = np.asarray(decode_picture(data)[0])
    outputs = predictor.forward(predictor.preprocess(rgb)[None])
    maps = predictor.with_jpeg(predictor.maps_from_resized(outputs, 0, *rgb.shape[:2]), None)
    expected = Finding.from_maps(maps).probability
    written = read_probability_png(tmp_path / "withheld" /
                                   withheld["images"][0]["outputs"]["prob"])
    np.testing.assert_allclose(written, expected, atol=2e-5)


def test_images_without_jpeg_evidence_are_flagged_at_the_pixel_paths_threshold(shared,
                                                                                tmp_path):
    """A checkpoint's pixel_score_threshold flags the images its stream had nothing for (a
    photo never compressed, --without-jpeg); the others keep score_threshold; a
    --flag-threshold given applies to all."""
    from forgeryloc.weights import save_checkpoint

    model, card = load_model()
    if model.config.jpeg_stream is None:
        pytest.skip("the shipped checkpoint has no JPEG stream")
    card.score_threshold, card.pixel_score_threshold = 2.0, 0.0  # never / always
    weights = tmp_path / "two-thresholds.safetensors"
    save_checkpoint(model, card, weights)
    assert load_model(weights)[1].pixel_score_threshold == 0.0
    composite, _ = splice(shared)
    images = tmp_path / "images"
    images.mkdir()
    (images / "splice.jpg").write_bytes(_save_jpeg(composite))
    Image.open(shared / "data/photos/kodak24/kodim05.png").convert("RGB").save(
        images / "never-compressed.png")

    def flags(*extra) -> dict:
        out = tmp_path / f"out{len(extra)}-{'-'.join(extra)}"
        result = CliRunner().invoke(app, ["scan", str(images), "-o", str(out), "--weights",
                                          str(weights), "--workers", "0", "--quiet", *extra])
        assert result.exit_code == 0, result.output
        records = json.loads((out / "report.json").read_text())["images"]
        if extra[:1] == ("--flag-threshold",):  # one threshold for every image
            assert all(r["flagged"] == (r["score"] >= float(extra[1])) for r in records)
        return {r["relative_path"]: (r["flagged"], r["jpeg_evidence"]) for r in records}

    plain = flags()
    assert plain["splice.jpg"] == (False, "used")
    assert plain["never-compressed.png"][0] is True
    assert plain["never-compressed.png"][1].startswith("not a JPEG")
    assert flags("--without-jpeg")["splice.jpg"][0] is True
    assert all(flagged for flagged, _ in flags("--flag-threshold", "0.0").values())
    flags("--flag-threshold", "0.5")
    # evaluate measures the accuracy of the pixel path at its own threshold
    from forgeryloc.data.datasets import read_dataset
    from forgeryloc.evaluate import evaluate_samples
    predictor = Predictor(*load_model(weights), "cpu")
    samples = read_dataset(Path(__file__).resolve().parents[1] / "examples")[:2]
    assert evaluate_samples(predictor, samples, use_jpeg=False).summary["score_threshold"] == 0.0
    assert evaluate_samples(predictor, samples).summary["score_threshold"] == 2.0


def test_files_below_the_streams_gate_get_the_pixel_paths_map(shared, tmp_path, predictor):
    """A checkpoint's jpeg_gate_logit: a file whose stream logits all stay below it gets the
    pixel path's map and a record saying why, while its score and flag threshold stay those
    of the fused map; at or above it, the fusion throughout. Checked with gates above and
    below the file's largest logit."""
    from forgeryloc.evaluate import evaluate_samples
    from forgeryloc.data.datasets import Sample
    from forgeryloc.render import read_probability_png
    from forgeryloc.weights import save_checkpoint

    composite, mask = splice(shared)
    data = _save_jpeg(composite)
    (tmp_path / "splice.jpg").write_bytes(data)
    largest = float(predictor.jpeg_block_logits(read_jpeg_input(data)[0]).max())
    model, card = load_model()
    card.score_threshold, card.pixel_score_threshold = 0.0, 2.0  # fused: always; pixels: never
    rgb = np.asarray(decode_picture(data)[0])
    maps = predictor.maps_from_resized(predictor.forward(predictor.preprocess(rgb)[None]), 0,
                                       *rgb.shape[:2])
    records, expected = {}, {}
    for name, gate in (("below", largest + 0.5), ("above", largest - 0.5)):
        card.jpeg_gate_logit = gate
        weights = tmp_path / f"gate-{name}.safetensors"
        save_checkpoint(model, card, weights)
        assert load_model(weights)[1].jpeg_gate_logit == gate
        out = tmp_path / name
        result = CliRunner().invoke(app, ["scan", str(tmp_path / "splice.jpg"), "-o", str(out),
                                          "--weights", str(weights), "--workers", "0",
                                          "--quiet"])
        assert result.exit_code == 0, result.output
        records[name] = json.loads((out / "report.json").read_text())["images"][0]
        written = read_probability_png(out / records[name]["outputs"]["prob"])
        gated = Predictor(*load_model(weights), "cpu")
        expected[name] = Finding.from_maps(gated.with_jpeg(maps, read_jpeg_input(data)[0]),
                                           gated.info.image_score)
        np.testing.assert_allclose(written, expected[name].probability, atol=2e-5)
    below, above = records["below"], records["above"]
    assert below["jpeg_evidence"].startswith("read, in the score only")
    assert f"{largest:.2f}" in below["jpeg_evidence"]
    assert above["jpeg_evidence"] == "used"
    assert below["flagged"] is True and above["flagged"] is True  # the fused threshold
    # below the gate the map is the pixel path's, as without JPEG evidence ...
    statistic = card.image_score
    pixels = Finding.from_maps(predictor.with_jpeg(maps, None), statistic)
    np.testing.assert_allclose(expected["below"].probability, pixels.probability, atol=1e-6)
    assert np.abs(expected["above"].probability - pixels.probability).max() > 0.05
    # ... and the score the fused map's
    fused_score = image_score(expected["above"].probability, statistic)
    assert abs(fused_score - pixels.score) > 0.01
    for record in (below, above):
        assert record["score"] == pytest.approx(fused_score, abs=1e-5)
    assert expected["below"].score == pytest.approx(fused_score, abs=1e-6)
    # evaluate counts the maps the pixel path drew and flags every file at the fused threshold
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    sample = Sample(image=tmp_path / "splice.jpg", mask=tmp_path / "mask.png",
                    tampered=True, name="splice")
    for name, pixel_path in (("below", True), ("above", False)):
        result = evaluate_samples(Predictor(*load_model(tmp_path / f"gate-{name}.safetensors"),
                                            "cpu"), [sample])
        assert result.summary["pixel_path_images"] == int(pixel_path)
        assert result.rows[0]["flag_threshold"] == 0.0
        assert result.rows[0]["score"] == pytest.approx(fused_score, abs=1e-5)
