"""The JPEG stream network and the fusion of its block logits into an image's maps."""
import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from forgeryloc.fused_maps import FusedMaps, fuse, sample_blocks, sample_points
from forgeryloc.maps import ResizedMaps
from forgeryloc.model.jpeg_stream import JpegStream, JpegStreamConfig, LateFusion, zigzag_order


def test_zigzag_order_is_the_jpeg_scan():
    order = zigzag_order()
    assert order[:10] == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]
    assert order[-3:] == [55, 62, 63] and sorted(order) == list(range(64))


def test_histogram_volume_is_one_hot_of_clipped_magnitudes():
    stream = JpegStream(JpegStreamConfig(frequencies=3, clip=4, width=8, dilations=(1,)))
    coefficients = torch.zeros(1, 64, 2, 2, dtype=torch.int16)
    coefficients[0, 0, 0, 0] = -2      # DC
    coefficients[0, 8, 1, 1] = 9       # third in zigzag order (u=1, v=0), clipped to 4
    volume = stream.histogram_volume(coefficients)
    assert volume.shape == (1, 3 * 5, 2, 2)
    assert torch.all(volume.sum(dim=1) == 3)           # one bin per frequency
    assert volume[0, 0 * 5 + 2, 0, 0] == 1             # DC |-2| -> bin 2
    assert volume[0, 2 * 5 + 4, 1, 1] == 1             # clipped
    assert volume[0, 1 * 5 + 0, 1, 1] == 1             # (0, 1) is zero


def test_stream_gives_one_logit_per_block_and_uses_the_table():
    torch.manual_seed(0)
    stream = JpegStream(JpegStreamConfig(width=16, dilations=(1, 2))).eval()
    torch.nn.init.normal_(stream.table_film.weight)
    coefficients = torch.randint(-30, 30, (2, 64, 12, 20), dtype=torch.int16)
    logits, features = stream(coefficients, torch.full((2, 64), 4.0))
    assert logits.shape == (2, 1, 12, 20) and features.shape == (2, 16, 12, 20)
    other, _ = stream(coefficients, torch.full((2, 64), 40.0))
    assert not torch.allclose(logits, other)


def test_block_sampling_matches_torch_upsampling_by_eight():
    grid = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(grid)[None, None], scale_factor=8,
                             mode="bilinear", align_corners=False)[0, 0].numpy()
    got = sample_blocks(grid, np.arange(37), np.arange(53))
    np.testing.assert_allclose(got, expected[:37, :53], atol=1e-5)


def test_point_sampling_agrees_with_grid_sampling():
    grid = np.random.default_rng(2).normal(size=(6, 9)).astype(np.float32)
    rows, cols = np.array([0, 5, 17, 47, 30]), np.array([3, 71, 0, 40, 12])
    expected = sample_blocks(grid, np.arange(48), np.arange(72))[rows, cols]
    np.testing.assert_allclose(sample_points(grid, rows, cols), expected, atol=1e-6)


def test_fused_maps_follow_the_fusion_rule_band_by_band_and_in_previews():
    rng = np.random.default_rng(1)
    small = rng.uniform(0.05, 0.95, size=(32, 32)).astype(np.float32)
    inner = ResizedMaps(small, np.zeros((32, 32), np.float32), 40, 56, 0.2, "easy")
    blocks = rng.normal(size=(5, 7)).astype(np.float32)
    weights = (0.9, 0.1, 0.7, 1.3, -0.2)
    fused = FusedMaps(inner, blocks, weights)
    whole = np.concatenate([band.probability for band in fused.bands()])
    rgb = np.concatenate([band.probability for band in inner.bands()])
    jpeg = sample_blocks(blocks, np.arange(40), np.arange(56))
    logit = np.log(np.clip(rgb, 1e-6, 1 - 1e-6) / (1 - np.clip(rgb, 1e-6, 1 - 1e-6)))
    np.testing.assert_allclose(whole, 1 / (1 + np.exp(-(0.7 * logit + 1.3 * jpeg - 0.2))),
                               atol=1e-5)
    preview, _ = fused.preview(40, 56)
    np.testing.assert_allclose(preview, whole, atol=1e-5)
    # Without JPEG evidence the RGB weights alone apply; a0 = 1, c0 = 0 pass the map as it is.
    plain = FusedMaps(inner, None, (1.0, 0.0, 5.0, 5.0, 5.0))
    np.testing.assert_allclose(np.concatenate([b.probability for b in plain.bands()]), rgb,
                               atol=1e-5)
    shifted = FusedMaps(inner, blocks, weights, origin=(-3, -5))
    first = next(shifted.bands()).probability
    jpeg_shifted = sample_blocks(blocks, np.arange(40) + 3, np.arange(56) + 5)
    np.testing.assert_allclose(first, 1 / (1 + np.exp(-(0.7 * logit + 1.3 * jpeg_shifted - 0.2)))[
        :len(first)], atol=1e-5)
    # A grid that covers the shifted picture (as a file's does) is upsampled whole: the same
    covering = rng.normal(size=(6, 8)).astype(np.float32)
    whole = np.concatenate([b.probability for b in
                            FusedMaps(inner, covering, weights, origin=(-3, -5)).bands()])
    jpeg_covering = sample_blocks(covering, np.arange(40) + 3, np.arange(56) + 5)
    np.testing.assert_allclose(whole, 1 / (1 + np.exp(-(0.7 * logit + 1.3 * jpeg_covering
                                                         - 0.2))), atol=1e-5)


def test_late_fusion_module_and_numpy_rule_agree():
    fusion = LateFusion()
    with torch.no_grad():
        fusion.weights.copy_(torch.tensor([0.8, 0.3, 0.5, 2.0, -1.0]))
    rgb = torch.tensor([[-2.0, 0.0, 3.0]])
    jpeg = torch.tensor([[1.0, -1.0, 0.5]])
    expected = torch.sigmoid(fusion(rgb, jpeg)).detach().numpy()
    weights = (0.8, 0.3, 0.5, 2.0, -1.0)
    np.testing.assert_allclose(fuse(torch.sigmoid(rgb).numpy(), jpeg.numpy(), weights), expected,
                               atol=1e-5)
    assert torch.allclose(fusion(rgb, None), 0.8 * rgb + 0.3)
    np.testing.assert_allclose(fuse(torch.sigmoid(rgb).numpy(), None, weights),
                               torch.sigmoid(0.8 * rgb + 0.3).numpy(), atol=1e-5)


def test_embedding_bag_equals_the_convolution_of_the_one_hot_volume():
    torch.manual_seed(3)
    stream = JpegStream(JpegStreamConfig(frequencies=64, width=16, dilations=(1,)))
    coefficients = torch.randint(-40, 40, (2, 64, 5, 7), dtype=torch.int16)
    expected = stream.embed(stream.histogram_volume(coefficients))
    torch.testing.assert_close(stream.embed_histograms(coefficients), expected,
                               rtol=1e-5, atol=1e-5)


def test_a_large_grid_in_windows_equals_the_whole_grid(tiny_config):
    from forgeryloc.jpeg_input import JpegInput
    from forgeryloc.model.m2sformer import M2SFormer
    from forgeryloc.predict import STREAM_WINDOW, Predictor
    from forgeryloc.weights import CheckpointInfo

    config = tiny_config.with_jpeg_stream(JpegStreamConfig(frequencies=8, width=8))
    torch.manual_seed(4)
    model = M2SFormer(config).eval()
    for module in model.jpeg_stream.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    predictor = Predictor(model, CheckpointInfo(config=config, input_size=64), "cpu")
    rows = 2 * STREAM_WINDOW + 37                    # three windows along the rows
    coefficients = torch.randint(-25, 25, (64, rows, 21), dtype=torch.int16)
    table = torch.randint(1, 60, (64,)).float()
    windowed = predictor.jpeg_block_logits(JpegInput(coefficients, table, (0, 0)))
    with torch.inference_mode():
        whole = model.jpeg_stream(coefficients[None], table[None])[0][0, 0].numpy()
    np.testing.assert_allclose(windowed, whole, atol=1e-4)


def test_fusion_fit_can_see_re_saved_copies(tmp_path):
    """fuse --launder: a share of the real JPEGs is also fitted as the file saved once more
    (other tables, the same mask); non-JPEG images are never re-saved."""
    from forgeryloc.data.datasets import read_dataset
    from forgeryloc.fuse import _fitting_images

    samples = read_dataset(Path(__file__).resolve().parents[1] / "examples")
    jpegs = sum(1 for s in samples if s.image.suffix.lower() in (".jpg", ".jpeg"))
    plain = list(_fitting_images(samples, (), 0.0, np.random.default_rng(0)))
    every = list(_fitting_images(samples, (), 1.0, np.random.default_rng(0)))
    assert len(plain) == len(samples) and len(every) == len(samples) + jpegs
    original, copy = every[0], every[1]
    assert np.array_equal(original[1], copy[1])
    assert not np.array_equal(original[2].table.numpy(), copy[2].table.numpy())


def test_fusion_fit_can_see_resized_copies():
    """fuse --rescale: a share of the JPEGs is also fitted resized and re-saved at libjpeg's
    tables (mask resized with it); without it nothing changes."""
    from forgeryloc.data.datasets import read_dataset
    from forgeryloc.data.jpeg_tables import ijg_tables
    from forgeryloc.fuse import RESCALE_QUALITIES, _fitting_images

    samples = [s for s in read_dataset(Path(__file__).resolve().parents[1] / "examples")
               if s.image.suffix.lower() in (".jpg", ".jpeg")][:3]
    plain = list(_fitting_images(samples, (), 0.0, np.random.default_rng(0)))
    every = list(_fitting_images(samples, (), 0.0, np.random.default_rng(0), rescale=1.0))
    assert len(plain) == len(samples) and len(every) == 2 * len(samples)
    tables = [np.asarray(ijg_tables(q).luma, np.float32).ravel()
              for q in range(RESCALE_QUALITIES[0], RESCALE_QUALITIES[1] + 1)]
    for (rgb, mask, _), (small, small_mask, jpeg) in zip(every[::2], every[1::2]):
        assert small.shape[:2] == small_mask.shape and small.shape[0] < rgb.shape[0]
        assert 0.45 < small.shape[1] / rgb.shape[1] < 0.95
        assert any(np.array_equal(jpeg.table.numpy(), table) for table in tables)


def test_fusion_floor_keeps_the_stream_from_vetoing_rgb_evidence():
    """Where the stream says "nothing here" (strongly negative) on every pixel of some images
    although the RGB network is right about them (a history erased by a resize), the fit
    with a floor search lifts those logits to a floor, so the RGB evidence shows through;
    without the search there is no floor and the veto stays."""
    from forgeryloc.fuse import FLOORS, fit_weights

    rng = np.random.default_rng(0)
    absent, present = [], []
    for image in range(60):
        labels = (rng.random(2048) < 0.2).astype(np.float32)
        rgb = np.where(labels > 0, 2.0, -2.0) + rng.normal(0, 1.0, 2048)
        if image % 2:  # history erased: the stream sees nothing anywhere
            jpeg = np.full(2048, -9.0) + rng.normal(0, 0.3, 2048)
        else:          # the stream sees the region clearly
            jpeg = np.where(labels > 0, 6.0, -9.0) + rng.normal(0, 0.3, 2048)
        absent.append((rgb.astype(np.float32), labels))
        present.append((rgb.astype(np.float32), jpeg.astype(np.float32), labels))
    (a0, c0, a1, b, c1), floor, summary = fit_weights(absent, present, search_floor=True)
    assert floor in FLOORS and floor > -9.0
    erased_rgb, erased_jpeg, erased_labels = present[1]
    fused = a1 * erased_rgb + b * np.maximum(erased_jpeg, floor) + c1
    predicted = fused >= 0
    dsc = 2 * (predicted & (erased_labels > 0)).sum() / (predicted.sum() + erased_labels.sum())
    assert dsc > 0.8
    assert summary["bce_with_jpeg_by_floor"][str(floor)] < \
        summary["bce_with_jpeg_by_floor"]["None"]
    _, no_floor, _ = fit_weights(absent, present)
    assert no_floor is None


def test_a_checkpoints_floor_is_applied_to_the_stream_logits(tmp_path):
    """CheckpointInfo.jpeg_logit_floor survives a save and load, and Predictor.with_jpeg
    fuses the stream's logits raised to it."""
    from typer.testing import CliRunner

    from forgeryloc.cli import app
    from forgeryloc.fused_maps import fuse, upsampled_blocks
    from forgeryloc.imaging import load_rgb
    from forgeryloc.jpeg_input import read_jpeg_input
    from forgeryloc.predict import Finding, Predictor
    from forgeryloc.weights import load_model, save_checkpoint

    model, card = load_model()
    assert card.jpeg_logit_floor is None
    card.jpeg_logit_floor = -1.5
    card.jpeg_gate_logit = None  # every file's map fused
    path = tmp_path / "floored.safetensors"
    save_checkpoint(model, card, path)
    model, card = load_model(path)
    assert card.jpeg_logit_floor == -1.5
    shown = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert json.loads(shown.stdout)["jpeg_logit_floor"] == -1.5
    predictor = Predictor(model, card, "cpu")
    image = next((Path(__file__).resolve().parents[1] / "examples" / "authentic").glob("*.jpg"))
    rgb = load_rgb(image)
    jpeg = read_jpeg_input(image)[0]
    height, width = rgb.shape[:2]
    maps = predictor.maps_from_resized(predictor.forward(predictor.preprocess(rgb)[None]), 0,
                                       height, width)
    logits = predictor.jpeg_block_logits(jpeg)
    assert logits.min() < -1.5  # the floor changes something here
    fused = Finding.from_maps(predictor.with_jpeg(maps, jpeg)).probability
    rgb_probability = Finding.from_maps(maps).probability
    grid = upsampled_blocks(np.maximum(logits, -1.5))
    top, left = -jpeg.origin[0], -jpeg.origin[1]
    expected = fuse(rgb_probability, grid[top:top + height, left:left + width],
                    predictor.fusion_weights)
    np.testing.assert_allclose(fused, expected, atol=1e-5)
