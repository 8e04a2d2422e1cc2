"""Streaming outputs: the PNG encoder and the band-by-band maps of resize and tile mode."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from forgeryloc.maps import (CROSSFADE, AreaAverage, ResizedMaps, TiledMaps, blend_weights,
                             pad_to_tile, tile_grid, tile_starts)
from forgeryloc.png import PngStream


# --------------------------------------------------------------------------- PNG encoder

@pytest.mark.parametrize("mode,shape,dtype", [("L", (37, 53), np.uint8),
                                              ("RGB", (300, 5, 3), np.uint8),
                                              ("I;16", (129, 700), np.uint16)])
def test_png_stream_is_lossless_in_any_band_split(tmp_path, mode, shape, dtype, monkeypatch):
    monkeypatch.setattr("forgeryloc.png.FEED_BYTES", 777)  # many pieces, cut mid-row
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    pixels[: shape[0] // 2] //= 7  # some redundancy for the compressor
    outputs = []
    for band in (1, 10, shape[0]):
        path = tmp_path / f"{band}.png"
        with PngStream(path, shape[1], shape[0], mode) as png:
            for top in range(0, shape[0], band):
                png.write(pixels[top:top + band])
        with Image.open(path) as image:
            assert image.mode == mode
            assert np.array_equal(np.asarray(image), pixels)
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2], "bytes depend only on the pixels"


def test_png_stream_leaves_nothing_when_incomplete_or_failing(tmp_path):
    path = tmp_path / "x.png"
    with pytest.raises(ValueError, match="rows were written"):
        with PngStream(path, 4, 3, "L") as png:
            png.write(np.zeros((2, 4), np.uint8))
    with pytest.raises(RuntimeError):
        with PngStream(path, 4, 3, "L") as png:
            png.write(np.zeros((1, 4), np.uint8))
            raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="rows of shape"):
        with PngStream(path, 4, 3, "RGB") as png:
            png.write(np.zeros((1, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- resize mode

@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("height,width", [(100, 150), (37, 500), (64, 64), (200, 9)])
def test_resized_maps_stream_torch_bilinear_interpolation(height, width, whole, monkeypatch):
    monkeypatch.setattr("forgeryloc.maps.BAND_PIXELS", 1000)  # many bands
    if not whole:  # as for a large photograph: each band computed on its own
        monkeypatch.setattr("forgeryloc.maps.WHOLE_MAP_PIXELS", 0)
    rng = np.random.default_rng(3)
    small = rng.random((64, 64)).astype(np.float32)
    maps = ResizedMaps(small, np.zeros((64, 64), np.float32), height, width, 0.2, "easy")
    bands = list(maps.bands())
    assert [b.rows.start for b in bands] == sorted(b.rows.start for b in bands)
    assert len(bands) > 1 and bands[0].rows.start == 0 and bands[-1].rows.stop == height
    streamed = np.concatenate([b.probability for b in bands])
    expected = F.interpolate(torch.from_numpy(small)[None, None], size=(height, width),
                             mode="bilinear", align_corners=False)[0, 0].numpy()
    assert streamed.shape == (height, width) and streamed.dtype == np.float32
    # Same taps and weights; only the order of the float32 operations differs (well below
    # the 1/65535 step of the 16-bit probability PNG).
    assert np.abs(streamed - expected).max() < 5e-6
    assert np.array_equal(maps.preview(height, width)[0], streamed)


def test_resized_preview_has_the_asked_size():
    curvature = np.arange(16, dtype=np.float32).reshape(4, 4)
    maps = ResizedMaps(np.full((4, 4), 0.5, np.float32), curvature, 1000, 800, 0.7, "hard")
    probability, shown = maps.preview(50, 40)
    assert probability.shape == (50, 40) and np.allclose(probability, 0.5)
    assert np.array_equal(shown, curvature)  # the network's grid, drawn enlarged


# --------------------------------------------------------------------------- tile mode

class ToyNetwork:
    """A stand-in network with the Predictor's forward contract whose outputs depend on the
    pixels, so a misplaced tile or weight shows up in the blend."""
    size = 32

    class info:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def forward(self, batch: torch.Tensor) -> dict:
        probability = batch.mean(1, keepdim=True)
        return {"probability": probability, "prior": batch[:, :1] * 3.0,
                "curvature": batch[:, 1:2] - 0.5,
                "difficulty_score": batch.mean((1, 2, 3)), "difficulty_label": None}


def whole_image_blend(rgb: np.ndarray, network: ToyNetwork, overlap: float) -> np.ndarray:
    """Reference: every tile blended into whole-image arrays at once."""
    from forgeryloc.maps import robust_curvature
    size = network.size
    height, width = rgb.shape[:2]
    padded = pad_to_tile(rgb, size).astype(np.float32) / 255.0
    sums = np.zeros((3, height, width), np.float64)
    tops, lefts = tile_starts(height, size, overlap), tile_starts(width, size, overlap)
    row_weights = dict(zip(tops, blend_weights(tops, height, size)))
    column_weights = dict(zip(lefts, blend_weights(lefts, width, size)))
    for y, x in tile_grid(height, width, size, overlap):
        tile = torch.from_numpy(padded[y:y + size, x:x + size]).permute(2, 0, 1)[None]
        out = network.forward(tile)
        h, w = min(size, height - y), min(size, width - x)
        window = np.outer(row_weights[y], column_weights[x])
        curvature = robust_curvature(out["curvature"][0, 0].numpy(), out["prior"][0, 0].numpy())
        sums[0, y:y + h, x:x + w] += out["probability"][0, 0].numpy()[:h, :w] * window
        sums[1, y:y + h, x:x + w] += curvature[:h, :w] * window
        sums[2, y:y + h, x:x + w] += window
    return sums[0] / sums[2], sums[1] / sums[2]


@pytest.mark.parametrize("length,size,overlap", [(1000, 256, 0.5), (600, 256, 0.5),
                                                 (300, 256, 0.25), (97, 32, 0.0),
                                                 (200, 64, 0.75), (40, 64, 0.5)])
def test_blend_weights_add_up_to_one_and_leave_out_each_tiles_outer_margin(length, size,
                                                                            overlap):
    starts = tile_starts(length, size, overlap)
    weights = blend_weights(starts, length, size)
    total = np.zeros(length)
    for start, weight in zip(starts, weights):
        assert len(weight) == min(size, length - start) and weight.min() >= 0
        total[start:start + len(weight)] += weight
    assert np.abs(total - 1).max() < 1e-6, "a partition of unity: nothing to normalise"
    for before, after, weight in zip(starts, starts[1:], weights):
        shared = before + size - after
        margin = int((1 - CROSSFADE) / 2 * shared)  # never used: the outer margins
        assert weight[size - margin:].max(initial=0) == 0
    for before, after, weight in zip(starts, starts[1:], weights[1:]):
        margin = int((1 - CROSSFADE) / 2 * (before + size - after))
        assert weight[:margin].max(initial=0) == 0
    assert weights[0][0] == 1 and weights[-1][-1] == 1  # the picture's own edges: one tile


@pytest.mark.parametrize("height,width", [(100, 77), (20, 300), (31, 31), (97, 160)])
def test_tiled_maps_stream_the_whole_image_blend(height, width):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    network = ToyNetwork()
    maps = TiledMaps(network, rgb, overlap=0.25, batch_size=3, preview_shape=(height, width))
    bands = list(maps.bands())
    assert bands[0].rows.start == 0 and bands[-1].rows.stop == height
    assert all(a.rows.stop == b.rows.start for a, b in zip(bands, bands[1:]))
    held = max(b.probability.shape[0] for b in bands)
    assert held <= network.size, "no band is taller than a tile"
    probability, curvature = whole_image_blend(rgb, network, 0.25)
    streamed = np.concatenate([b.probability for b in bands])
    assert np.abs(streamed - probability).max() < 1e-5
    preview_probability, preview_curvature = maps.preview(height, width)
    assert np.abs(preview_probability - probability).max() < 1e-5
    assert np.abs(preview_curvature - curvature).max() < 1e-5
    assert maps.difficulty_label in ("easy", "hard") and 0 <= maps.difficulty_score <= 1


@pytest.mark.parametrize("height,width", [(20, 45), (70, 33), (64, 96)])
def test_tiles_cut_from_a_pillow_image_equal_those_of_its_array(height, width):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    shape = (height, width)
    from_array = TiledMaps(ToyNetwork(), rgb, 0.25, 2, shape)
    from_pillow = TiledMaps(ToyNetwork(), Image.fromarray(rgb), 0.25, 2, shape)
    bands_a, bands_b = list(from_array.bands()), list(from_pillow.bands())
    assert len(bands_a) == len(bands_b)
    for a, b in zip(bands_a, bands_b):
        assert a.rows == b.rows and np.array_equal(a.probability, b.probability)
    assert np.array_equal(from_array.preview(*shape)[1], from_pillow.preview(*shape)[1])


def test_tiled_preview_is_the_area_mean_of_the_maps():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    maps = TiledMaps(ToyNetwork(), rgb, 0.25, 8, preview_shape=(30, 40))
    full = np.concatenate([b.probability for b in maps.bands()])
    preview, _ = maps.preview(30, 40)
    assert np.allclose(preview, full.reshape(30, 3, 40, 3).mean((1, 3)), atol=1e-6)
    with pytest.raises(ValueError):
        maps.preview(10, 10)


def test_area_average_keeps_the_mean_for_uneven_blocks():
    rng = np.random.default_rng(6)
    values = rng.random((101, 67)).astype(np.float32)
    shrink = AreaAverage(101, 67, 10, 9)
    for top in range(0, 101, 13):
        shrink.add(slice(top, min(101, top + 13)), values[top:top + 13])
    result = shrink.result()
    assert result.shape == (10, 9)
    count = np.outer(shrink.row_count, shrink.col_count)
    assert abs(float((result * count).sum() / count.sum()) - values.mean()) < 1e-6
    assert np.isclose(result[0, 0], values[:11, :8].mean())  # rows 0..10 and cols 0..7 -> (0, 0)


def test_a_file_set_appears_together_or_not_at_all(tmp_path):
    from forgeryloc.atomic import FileSet, atomic_open, write_bytes_atomic

    names = [tmp_path / "a.png", tmp_path / "sub" / "b.png"]
    with FileSet():
        for i, name in enumerate(names):
            write_bytes_atomic(name, bytes([i]) * 10)
            assert not name.exists()  # nothing under a final name before the set ends
    assert [name.read_bytes() for name in names] == [b"\0" * 10, b"\1" * 10]

    failed = [tmp_path / "c.png", tmp_path / "d.png"]
    with pytest.raises(OSError):
        with FileSet():
            write_bytes_atomic(failed[0], b"done")
            with atomic_open(failed[1]) as handle:
                handle.write(b"half")
                raise OSError("disk full")
    assert not any(name.exists() for name in failed)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "b.png", "sub"]


def test_deferred_file_sets_appear_only_when_committed(tmp_path, monkeypatch):
    from forgeryloc.atomic import FileSet, deferred_commits, write_bytes_atomic

    first, second, third = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    with deferred_commits() as written:
        with FileSet():
            write_bytes_atomic(first, b"a")
        with FileSet():
            write_bytes_atomic(second, b"b")
        assert len(written) == 2 and not first.exists() and not second.exists()
        written[0].commit()
        assert first.read_bytes() == b"a" and not second.exists()
    # The set nobody committed is gone with its temporary file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]

    # A commit that fails leaves none of its files under a final name, not even an old one.
    third.write_bytes(b"old")

    def failing_fsync(descriptor):
        raise OSError(5, "Input/output error")
    with deferred_commits() as written:
        with FileSet():
            write_bytes_atomic(third, b"new")
            write_bytes_atomic(tmp_path / "d.png", b"d")
            monkeypatch.setattr(os, "fsync", failing_fsync)  # the syncs start as the set ends
        with pytest.raises(OSError):
            written[0].commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


class DroopingNetwork(ToyNetwork):
    """Like the shipped model: a map that follows the pixels but droops near the tile's
    edges (measured: within ~64 px of 256), here within size/8 of them."""
    size = 64

    def forward(self, batch: torch.Tensor) -> dict:
        outputs = super().forward(batch)
        inset = torch.minimum(torch.arange(self.size), torch.arange(self.size).flip(0))
        near_edge = torch.minimum(inset[:, None], inset[None, :]) < self.size // 8
        outputs["probability"] = torch.where(near_edge, 0.4, 1.0) * (
            0.25 + 0.5 * outputs["probability"])
        return outputs


@pytest.mark.parametrize("picture", ["flat", "gradient"])
def test_tiles_leave_no_seams_in_a_smooth_picture(picture):
    """At the scan's default overlap, a flat or smoothly graded picture gives a map without
    steps at the tile borders: away from the picture's own edges (which only one tile covers)
    the jumps between neighbouring pixels at the tile borders are those elsewhere."""
    from forgeryloc.scan import ScanSettings

    height, width = 150, 230
    y, x = np.mgrid[0:height, 0:width]
    level = 0.5 + 0 * y if picture == "flat" else 0.2 + 0.3 * y / height + 0.4 * x / width
    rgb = np.repeat((255 * level)[..., None], 3, axis=2).astype(np.uint8)
    overlap = ScanSettings().tile_overlap
    maps = TiledMaps(DroopingNetwork(), rgb, overlap, 4, (height, width))
    probability = np.concatenate([band.probability for band in maps.bands()])
    margin = DroopingNetwork.size // 4
    inner = probability[margin:-margin, margin:-margin].astype(np.float64)
    corners = list(tile_grid(height, width, DroopingNetwork.size, overlap))
    assert len({x for _, x in corners}) > 2 and len({y for y, _ in corners}) > 2
    for jumps in (np.abs(np.diff(inner, axis=1)).mean(0),   # between columns
                  np.abs(np.diff(inner, axis=0)).mean(1)):  # between rows
        typical = np.median(jumps)
        assert jumps.max() <= 1.5 * typical + 2e-3, (jumps.max(), typical)


def _tile_seams():
    """scripts/tile_seams.py, the measurement of steps at tile borders."""
    from script_loading import load_script
    return load_script("tile_seams")


@pytest.mark.parametrize("picture", ["flat", "sky"])
def test_shipped_weights_leave_no_seams_in_a_smooth_picture(picture):
    """Tile mode at the scan's default overlap with the shipped checkpoint, a flat or smoothly
    graded sky, as a PNG scan fuses it: no step in the map (between neighbouring pixels, or
    across 8 pixels, the mean over each row or column) is larger than the tiles' own maps have
    inside them. The network's map of a tile depends on where in the tile a pixel lies, so
    neighbouring tiles disagree; the former blend turned that into steps at every hand-over
    between rows of tiles (4.2x the tiles' own steps across 8 px on the sky, 5.4x on the
    flat picture) and, along the picture's edges, hard steps at every tile's edge (5.7-8.7x
    the tiles' own largest jump between neighbouring pixels)."""
    from forgeryloc.predict import Predictor
    from forgeryloc.scan import ScanSettings
    from forgeryloc.weights import load_model

    seams = _tile_seams()
    model, card = load_model()
    rgb = seams.smooth_pictures(384, 512)[picture]  # 2 x 3 tiles of 256
    result = seams.measure(Predictor(model, card, "cpu"), rgb, ScanSettings().tile_overlap)
    assert result["tiles"] == 6
    for axis in ("rows", "columns"):
        r = result[axis]
        assert r["jump"] <= 1.05 * r["own_jump"], (axis, r)
        assert r["step_8px"] <= 1.1 * r["own_step_8px"], (axis, r)
