"""Evidence layers with known answers: compression histories and scans made by the tests."""
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from forgeryloc.cli import app
from forgeryloc.evidence import double_jpeg, double_jpeg_fits, ela, noise
from forgeryloc.evidence.layers import grid_bands, parse_layers
from forgeryloc.jpeg_coefficients import read_jpeg_coefficients


def texture(height, width, seed=0) -> np.ndarray:
    """Shading, edges and grain: AC energy at every low frequency, like a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 120 + 50 * np.sin(x / 7.0 + y / 11.0) + 30 * ((x // 23 + y // 17) % 2)
    rgb = base[..., None] + rng.normal(0, 9, (height, width, 3)) + [0, 10, -10]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def saved(rgb, quality) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decoded(data) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def spliced(height=256, width=320, box=(96, 176, 128, 224)):
    """A JPEG saved at quality 60, a region pasted from a never-compressed picture, the whole
    saved again at 90: everywhere double compressed except inside the region."""
    top, bottom, left, right = box
    host = decoded(saved(texture(height, width, 1), 60)).copy()
    host[top:bottom, left:right] = texture(height, width, 2)[top:bottom, left:right]
    return saved(host, 90)


def test_dq_map_shows_the_region_compressed_once():
    data = spliced()
    jpeg = read_jpeg_coefficients(data)
    fits = double_jpeg_fits(jpeg, Image.open(io.BytesIO(data)).convert("RGB"))
    estimate = double_jpeg.estimate(fits)
    assert estimate["detected"] and estimate["frequencies_double"] >= 5
    grid = double_jpeg.single_compression_map(jpeg, fits)      # 32 x 40 blocks
    inside = grid[96 // 8:176 // 8, 128 // 8:224 // 8]
    outside = np.ones(grid.shape, bool)
    outside[96 // 8 - 1:176 // 8 + 1, 128 // 8 - 1:224 // 8 + 1] = False
    assert inside.mean() > 0.8 and grid[outside].mean() < 0.2


def _requantised_one(unquantised, first_step, step, ymax):
    """The double-compression histogram for one first step, computed directly."""
    from scipy.special import ndtr
    indices = np.rint(unquantised / first_step).astype(np.int64)
    lowest = int(indices.min())
    counts = np.bincount(indices - lowest).astype(np.float64)
    levels = (np.arange(len(counts)) + lowest) * float(first_step)
    edges = (np.arange(-ymax, ymax + 2) - 0.5) * step
    spread = np.diff(ndtr((edges[None, :] - levels[:, None]) / double_jpeg.ROUNDING_SIGMA),
                     axis=1)
    inside = counts @ spread
    return np.concatenate([inside, [max(0.0, counts.sum() - inside.sum())]])


def test_all_first_steps_at_once_equal_one_at_a_time():
    """The fit tries every first step q1 in one vectorised pass: each row must be the
    expected histogram of that q1 alone."""
    rng = np.random.default_rng(4)
    unquantised = (rng.laplace(size=3000) * 15).astype(np.float32)
    for step, ymax in ((3, 6), (7, 14)):
        first_steps = np.array([q for q in range(2, 3 * step + 1) if q != step])
        together = double_jpeg._requantised(unquantised, first_steps, step, ymax)
        alone = np.stack([_requantised_one(unquantised, int(q), step, ymax)
                          for q in first_steps])
        np.testing.assert_allclose(together, alone, rtol=1e-9, atol=1e-9)


def test_a_single_compression_shows_no_double_quantisation():
    data = saved(texture(256, 320, 3), 90)
    jpeg = read_jpeg_coefficients(data)
    fits = double_jpeg_fits(jpeg, decoded(data))
    assert not double_jpeg.estimate(fits)["detected"]
    assert double_jpeg.single_compression_map(jpeg, fits) is None


def test_ela_and_noise_bands_equal_the_whole_picture():
    rgb = texture(200, 150, 4)
    rgb[40:90, 30:80] = np.clip(rgb[40:90, 30:80].astype(int) + np.random.default_rng(5)
                                .normal(0, 25, (50, 50, 3)), 0, 255).astype(np.uint8)
    whole = ela.error_levels(rgb)
    banded = np.concatenate([levels for _, levels in ela.error_level_bands(
        lambda top, bottom: rgb[top:bottom], 200, 150)])
    assert np.array_equal(banded, whole)
    grid = noise.noise_grid(lambda top, bottom: rgb[top:bottom], 200, 150, stripe_windows=2)
    single = noise.noise_grid(lambda top, bottom: rgb[top:bottom], 200, 150, stripe_windows=20)
    assert grid.shape == (13, 10) and np.allclose(grid, single)
    assert grid[3:5, 2:4].mean() > 2 * np.median(grid)  # the noisier square stands out


def test_grid_bands_put_blocks_under_their_pixels():
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    full = np.concatenate([values for _, values in grid_bands(grid, 8, (-3, 0), 20, 30)])
    assert full.shape == (20, 30)
    assert full[0, 0] == 0 and full[4, 0] == 0 and full[5, 0] == 4 and full[0, 8] == 1


def test_parse_layers():
    assert parse_layers("all") == ("ela", "noise", "dq")
    assert parse_layers("dq, ela") == ("ela", "dq") and parse_layers(None) == ()
    with pytest.raises(ValueError):
        parse_layers("ela,magic")


def test_scan_writes_the_evidence_pictures_and_records(tmp_path, tiny_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "splice.jpg").write_bytes(spliced())
    Image.fromarray(texture(64, 80, 6)).save(folder / "plain.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["scan", str(folder), "-o", str(out), "--weights",
                                      str(tiny_checkpoint), "--workers", "0",
                                      "--evidence", "all"])
    assert result.exit_code == 0, result.output
    records = {r["relative_path"]: r for r in json.loads((out / "report.json").read_text())
               ["images"]}
    splice, plain = records["splice.jpg"], records["plain.png"]
    assert splice["evidence"] == {"ela": "written", "noise": "written", "dq": "written"}
    assert plain["evidence"]["dq"].startswith("not a JPEG")
    assert splice["clues"]["jpeg"]["double_compression"]["detected"] is True
    for name in ("ela", "noise", "dq"):
        with Image.open(out / f"splice.jpg.{name}.png") as picture:
            assert picture.mode == "RGB" and picture.width == 320 and picture.height > 256
    assert not (out / "plain.png.dq.png").exists()
    page = (out / "report.html").read_text()
    assert 'data-layer="dq"' in page and "double JPEG compression" in page
    header = (out / "report.csv").read_text().splitlines()[0].split(",")
    assert {"clue_double_compression", "clue_c2pa", "output_dq"} <= set(header)
    without = CliRunner().invoke(app, ["scan", str(folder), "-o", str(tmp_path / "o2"),
                                       "--weights", str(tiny_checkpoint), "--workers", "0"])
    assert without.exit_code == 0
    assert not list((tmp_path / "o2").glob("*.ela.png"))
    bad = CliRunner().invoke(app, ["scan", str(folder), "-o", str(tmp_path / "o3"),
                                   "--weights", str(tiny_checkpoint), "--evidence", "x"])
    assert bad.exit_code == 2


def test_the_histograms_upper_percentile_is_numpys_to_the_last_bit():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        values = rng.integers(1, int(rng.choice([3, 10, 50, 2000])), int(rng.integers(1, 3000)))
        for percent in (99.5, 50.0, 37.3, 0.0, 100.0):
            assert double_jpeg.upper_percentile(values, percent) == np.percentile(values, percent)
