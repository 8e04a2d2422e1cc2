"""Known answers for JPEG traces read back from pixels (pixel_jpeg.py): a decoded JPEG's grid,
table and coefficients come back, also after a crop; pictures never compressed, or resized
since, give none; a PNG of a splice gets the stream's evidence back."""
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from forgeryloc import pixel_jpeg
from forgeryloc.cli import app
from forgeryloc.jpeg_input import read_jpeg_input


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like picture: a smooth colour field with fine detail (many nonzero
    coefficients at every frequency)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(4, 5, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), float)
    detail = rng.normal(0, 18, size=(height, width, 1))
    return np.clip(base + detail, 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("quality", [70, 85])
def test_grid_table_and_coefficients_of_a_cropped_decoded_jpeg_come_back(quality):
    data = _jpeg(_texture(240, 320, quality), quality)
    file_input, _ = read_jpeg_input(data)
    cropped = _decoded(data)[3:, 5:]  # the grid now starts 3 rows up and 5 columns left
    found = pixel_jpeg.estimate(cropped)
    assert found is not None and found.origin == (-3, -5)
    low = pixel_jpeg.ZIGZAG[:16]
    assert np.array_equal(found.table[low], file_input.table.numpy()[low])
    # interior blocks (the edge ones lost pixels to the crop) hold the file's coefficients
    estimated = found.input.coefficients.numpy()[:, 1:-1, 1:-1]
    original = file_input.coefficients.numpy()[:, 1:-1, 1:-1]
    assert (estimated == original).mean() > 0.95


def test_pictures_never_compressed_or_resized_since_show_no_jpeg_traces():
    assert pixel_jpeg.estimate(_texture(240, 320, 1)) is None
    decoded = _decoded(_jpeg(_texture(240, 320, 2), 80))
    assert pixel_jpeg.estimate(decoded) is not None  # the control
    resized = np.asarray(Image.fromarray(decoded).resize((256, 192), Image.BILINEAR))
    assert pixel_jpeg.estimate(resized) is None
    found, note = pixel_jpeg.stream_input(resized, "not a JPEG")
    assert found is None and note == "not a JPEG; no JPEG traces in the pixels"


def test_kodak_photos_never_compressed_show_no_jpeg_traces(shared):
    photos = sorted((shared / "data/photos/kodak24").glob("*.png"))
    assert len(photos) == 24
    for path in photos[::3]:
        assert pixel_jpeg.estimate(np.asarray(Image.open(path).convert("RGB"))) is None, path


def test_a_png_of_a_jpeg_splice_gets_the_streams_evidence_back(shared):
    """The splice of test_jpeg_evidence saved as a JPEG at 85, then decoded and kept as
    pixels only (as a PNG made from it): the region stands out as it does in the file."""
    from test_jpeg_evidence import _save_jpeg, splice

    from forgeryloc.predict import Predictor
    from forgeryloc.weights import load_model

    model, card = load_model()
    if model.config.jpeg_stream is None:
        pytest.skip("the shipped checkpoint has no JPEG stream")
    composite, mask = splice(shared)  # host at q60, a q92 square pasted off its grid
    jpeg, note = pixel_jpeg.stream_input(_decoded(_save_jpeg(composite)), "not a JPEG")
    assert jpeg is not None and note.startswith("not a JPEG; estimated from the pixels")
    assert jpeg.origin == (0, 0)
    logits = Predictor(model, card, "cpu").jpeg_block_logits(jpeg)   # 32 x 48 blocks
    blocks = mask.reshape(32, 8, 48, 8).mean(axis=(1, 3))
    inside, outside = logits[blocks == 1].mean(), logits[blocks == 0].mean()
    assert inside > outside + 2.0, (inside, outside)


def test_a_scan_records_the_estimate_and_can_be_told_not_to(shared, tmp_path):
    from test_jpeg_evidence import _save_jpeg, splice

    from forgeryloc.weights import load_model

    if load_model()[0].config.jpeg_stream is None:
        pytest.skip("the shipped checkpoint has no JPEG stream")
    Image.fromarray(_decoded(_save_jpeg(splice(shared)[0]))).save(tmp_path / "splice.png")
    notes = {}
    for flag in ("--jpeg-from-pixels", "--no-jpeg-from-pixels"):
        out = tmp_path / flag
        result = CliRunner().invoke(app, ["scan", str(tmp_path / "splice.png"), "-o",
                                          str(out), "--workers", "0", "--quiet", flag])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        notes[flag] = report["images"][0]["jpeg_evidence"]
        assert report["run"]["settings"]["jpeg_from_pixels"] == (flag == "--jpeg-from-pixels")
    assert notes["--jpeg-from-pixels"].startswith("not a JPEG; estimated from the pixels")
    assert notes["--no-jpeg-from-pixels"] == "not a JPEG"


def test_a_png_that_was_a_jpeg_says_so_in_its_clues_with_any_model(tmp_path, tiny_checkpoint):
    """The file clue does not need a JPEG stream: an RGB-only checkpoint scans a PNG made
    from a JPEG and one that never was; the CSV and the HTML report carry the finding."""
    import csv

    folder = tmp_path / "in"
    folder.mkdir()
    data = _jpeg(_texture(240, 320, 7), 75)
    Image.fromarray(_decoded(data)[2:, 6:]).save(folder / "was-jpeg.png")
    Image.fromarray(_texture(240, 320, 8)).save(folder / "never.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["scan", str(folder), "-o", str(out), "--weights",
                                      str(tiny_checkpoint), "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    records = {r["relative_path"]: r for r in
               json.loads((out / "report.json").read_text())["images"]}
    found = records["was-jpeg.png"]["clues"]["jpeg_in_pixels"]
    assert found["found"] and found["grid_origin"] == [-2, -6]
    assert found["ijg_quality_fit"] == 75
    assert records["never.png"]["clues"]["jpeg_in_pixels"]["found"] is False
    rows = {row["relative_path"]: row for row in csv.DictReader(open(out / "report.csv"))}
    assert rows["was-jpeg.png"]["clue_jpeg_in_pixels"] == "JPEG, quality ~75, grid (-2, -6)"
    assert rows["never.png"]["clue_jpeg_in_pixels"] == "none"
    assert "was a JPEG before this file" in (out / "report.html").read_text()
    off = tmp_path / "off"
    CliRunner().invoke(app, ["scan", str(folder), "-o", str(off), "--weights",
                             str(tiny_checkpoint), "--workers", "0", "--quiet",
                             "--no-jpeg-from-pixels"])
    record = json.loads((off / "report.json").read_text())["images"][0]
    assert "jpeg_in_pixels" not in record["clues"]


def test_training_windows_can_come_from_the_pixels(tmp_path):
    """grid_from_pixels gives the file's own grid back (coefficients, target) as a PNG of it
    would; RealJpegWindows(from_pixels=1) serves such windows."""
    from forgeryloc.data.datasets import Sample
    from forgeryloc.data.jpeg_blocks import RealJpegWindows, grid_from_jpeg, grid_from_pixels

    data = _jpeg(_texture(160, 240, 3), 80)
    mask = np.zeros((160, 240), np.uint8)
    mask[40:90, 100:180] = 255
    from_file, from_pixels = grid_from_jpeg(data, mask), grid_from_pixels(data, mask)
    assert np.array_equal(from_file.target, from_pixels.target)
    assert (from_file.coefficients == from_pixels.coefficients).mean() > 0.95
    (tmp_path / "a.jpg").write_bytes(data)
    Image.fromarray(mask).save(tmp_path / "a.png")
    windows = RealJpegWindows([Sample(tmp_path / "a.jpg", tmp_path / "a.png", "a", True)], 16,
                              seed=0, length=4, flips=False, from_pixels=1.0)
    coefficients, table, target, weight = windows[0]
    assert coefficients.shape == (64, 16, 16) and table.shape == (64,)
    assert float(target.sum()) > 0 and float(weight.sum()) == 256


def test_a_multi_picture_jpeg_is_read_as_the_jpeg_it_is(tmp_path, tiny_checkpoint):
    """Pillow calls a camera's multi-picture JPEG "MPO": its coefficients are in the file, so
    its pixels are not searched and no "was a JPEG before" clue appears."""
    picture = Image.fromarray(_texture(96, 128, 4))
    picture.save(tmp_path / "camera.mpo", format="MPO", save_all=True, append_images=[picture])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "camera.mpo"), "-o", str(out),
                                      "--weights", str(tiny_checkpoint), "--workers", "0",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["format"] == "MPO" and "jpeg_in_pixels" not in record["clues"]
