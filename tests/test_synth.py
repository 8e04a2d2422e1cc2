"""Synthetic forgeries: exact masks, determinism, post-processing alignment, dataset layout."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from forgeryloc.data import synth
from forgeryloc.data.synth import (
    MAX_MASK_FRACTION, MIN_MASK_FRACTION, SEGMENT_FRACTION, ForgerySynthesizer, PhotoLibrary,
    feather_reach, write_dataset,
)

HEIGHT, WIDTH = 96, 128
REAL_PHOTOS = Path("/work/shared/data/photos")


def _photo(seed: int) -> np.ndarray:
    """A smooth gradient with a wavy texture and a little noise: no two pixels alike."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    channels = []
    for _ in range(3):
        gradient = rng.uniform(40, 200) + rng.uniform(-0.8, 0.8) * yy + rng.uniform(-0.6, 0.6) * xx
        waves = 25 * np.sin(xx / rng.uniform(2, 6) + yy / rng.uniform(3, 9))
        channels.append(gradient + waves + rng.normal(0, 4, yy.shape))
    return np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)


def _labels(dtype, values) -> np.ndarray:
    """Background plus objects of about 12 %, 6 %, 3 % and 0.3 % (too small to be used)."""
    background, big, medium, small, tiny = values
    labels = np.full((HEIGHT, WIDTH), background, dtype=dtype)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    labels[((yy - 40) / 22.0) ** 2 + ((xx - 40) / 25.0) ** 2 <= 1] = big
    labels[60:84, 80:110] = medium
    labels[((yy - 20) ** 2 + (xx - 100) ** 2) <= 10 ** 2] = small
    labels[88:94, 4:10] = tiny
    return labels


def _stripes() -> np.ndarray:
    """16-bit labels: four bands of 31, 28, 22 and 19 % (the largest is small enough to be
    picked by size alone) and a tiny patch."""
    labels = np.empty((HEIGHT, WIDTH), dtype=np.uint16)
    bands = {300: (0, 40), 1000: (40, 76), 2000: (76, 104), 7: (104, 128)}
    for label, (start, stop) in bands.items():
        labels[:, start:stop] = label
    labels[88:94, 4:10] = 40000
    return labels


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    """root/bsds/{images,segments} (an 8-bit and a 16-bit label map) and root/other photos."""
    root = tmp_path_factory.mktemp("photos")
    (root / "bsds" / "images").mkdir(parents=True)
    (root / "bsds" / "segments").mkdir()
    (root / "other").mkdir()
    Image.fromarray(_photo(1)).save(root / "bsds" / "images" / "a.png")
    Image.fromarray(_photo(2)).save(root / "bsds" / "images" / "b.png")
    Image.fromarray(_labels(np.uint8, (1, 2, 3, 4, 5))).save(root / "bsds" / "segments" / "a.png")
    Image.fromarray(_stripes()).save(root / "bsds" / "segments" / "b.png")
    Image.fromarray(_photo(3)).save(root / "other" / "c.png")
    Image.fromarray(_photo(4)).save(root / "other" / "d.jpg", quality=95)
    Image.fromarray(_photo(5)).save(root / "other" / "e.png")
    return root


@pytest.fixture(scope="module")
def library(photo_root) -> PhotoLibrary:
    return PhotoLibrary([photo_root])


def _originals(library: PhotoLibrary) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    return {name: library.load(i)[:2] for i, name in enumerate(library.names)}


def _forgeries(library: PhotoLibrary, kind: str, count: int, postprocess: bool = False):
    synthesizer = ForgerySynthesizer(library, authentic_fraction=0.0, kinds={kind: 1.0})
    return [synthesizer.generate(np.random.default_rng([11, i]), postprocess=postprocess)
            for i in range(count)]


def _shifted(image: np.ndarray, mask: np.ndarray, dy: int, dx: int):
    """(pixels of image at mask positions moved by (dy, dx), those positions)."""
    ys, xs = np.nonzero(mask)
    return image[ys + dy, xs + dx], (ys + dy, xs + dx)


# ----------------------------------------------------------------------------- library


def test_library_discovers_photos_and_pairs_segments(photo_root):
    library = PhotoLibrary([photo_root])
    assert library.names == sorted(library.names)
    assert [Path(n).name for n in library.names] == ["a.png", "b.png", "c.png", "d.jpg", "e.png"]
    assert all("segments" not in name for name in library.names)  # label maps are not photos
    rgb, labels, name = library.load(0)
    assert rgb.shape == (HEIGHT, WIDTH, 3) and rgb.dtype == np.uint8
    assert labels is not None and labels.shape == (HEIGHT, WIDTH)
    assert library.load(2)[1] is None  # no segments beside other/c.png
    wide = library.load(1)[1]
    assert wide is not None and set(np.unique(wide)) == {7, 300, 1000, 2000, 40000}

    small = PhotoLibrary([photo_root / "bsds"], max_side=64)
    rgb, labels, _ = small.load(1)
    assert max(rgb.shape[:2]) == 64 and labels.shape == rgb.shape[:2]
    assert set(np.unique(labels)) <= {7, 300, 1000, 2000, 40000}  # nearest keeps labels exact

    single = PhotoLibrary([photo_root / "other" / "d.jpg"])
    assert len(single) == 1 and single.load(0)[2] == "d.jpg"


# ----------------------------------------------------------------------------- exact masks


@pytest.mark.parametrize("kind", ["splice", "copy-move", "removal"])
def test_mask_is_exactly_the_changed_pixels(library, kind):
    """Without post-processing the mask is the set of changed pixels. The one tolerance: a
    feathered edge also changes pixels where alpha <= 0.5, outside the mask but within the
    blur's reach (sqrt(2) * round(3 sigma) pixels); with hard edges the match is exact."""
    originals = _originals(library)
    feathered = 0
    for forgery in _forgeries(library, kind, 16):
        original = originals[forgery.details["target"]][0]
        assert forgery.kind == kind
        assert forgery.image.shape == original.shape and forgery.image.dtype == np.uint8
        assert forgery.mask.shape == original.shape[:2] and forgery.mask.dtype == np.uint8
        assert set(np.unique(forgery.mask)) == {0, 1}
        mask = forgery.mask.astype(bool)
        changed = (forgery.image != original).any(axis=2)
        assert not (mask & ~changed).any(), "masked pixels that did not change"
        outside = changed & ~mask
        sigma = forgery.details["feather"]
        if sigma == 0:
            assert not outside.any(), "changed pixels missing from a hard-edged mask"
        else:
            feathered += 1
            distance = ndimage.distance_transform_edt(~mask)
            assert distance[outside].max(initial=0) <= feather_reach(sigma)
        assert MIN_MASK_FRACTION <= mask.mean() <= MAX_MASK_FRACTION
        assert forgery.details["mask_fraction"] == pytest.approx(mask.mean(), abs=1e-6)
        json.dumps(forgery.details)
    if kind != "removal":
        assert feathered > 0, "no feathered example drawn: the tolerance branch went untested"


def test_composite_marks_changed_pixels_above_half_alpha():
    """The mask is alpha > 0.5 and changed; the layer is clipped where it leaves the image."""
    base = np.full((4, 5, 3), 100, dtype=np.uint8)
    alpha = np.array([[0.0, 0.3, 0.5, 0.51, 1.0],
                      [1.0, 1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    rgb = np.full((2, 5, 3), 200, dtype=np.float32)
    rgb[1, 2] = 100  # fully opaque but equal to the base: not a change
    image, mask = synth.composite(base, synth.Layer(rgb, alpha), top=3, left=0)
    assert image.shape == base.shape and mask.shape == base.shape[:2]
    assert np.array_equal(image[3, :, 0], [100, 130, 150, 151, 200])
    assert np.array_equal(mask[3], [0, 0, 0, 1, 1])
    assert not mask[:3].any() and np.array_equal(image[:3], base[:3])  # row 4 fell off


def test_feathered_alpha_keeps_the_region_as_its_half_level():
    hard = np.zeros((40, 40), dtype=bool)
    hard[10:30, 10:30] = True
    hard[20, 30:36] = True  # a one-pixel spike the blur would otherwise wash out
    alpha = synth.feathered_alpha(hard, 2.0)
    assert np.array_equal(alpha > 0.5, hard)
    reach = ndimage.distance_transform_edt(~hard)
    assert (alpha[~hard] > 0).any() and reach[alpha > 0].max() <= feather_reach(2.0)
    assert np.array_equal(synth.feathered_alpha(hard, 0.0), hard.astype(np.float32))


def test_copy_move_pastes_pixels_of_the_same_photo(library):
    originals = _originals(library)
    checked = 0
    for forgery in _forgeries(library, "copy-move", 40):
        details = forgery.details
        transform = details["transform"]
        moved_only = transform["scale"] == 1 and transform["angle"] == 0 and not transform["flip"]
        if not moved_only or details["feather"]:
            continue
        original = originals[details["target"]][0]
        dy = details["source_box"][0] - details["target_box"][0]
        dx = details["source_box"][1] - details["target_box"][1]
        assert (dy, dx) != (0, 0)
        source, _ = _shifted(original, forgery.mask, dy, dx)
        assert np.array_equal(forgery.image[forgery.mask == 1], source)
        checked += 1
    assert checked >= 3


def test_segment_region_skips_the_largest_and_tiny_segments():
    labels = _stripes()
    picked = set()
    for seed in range(40):
        region = synth.segment_region(np.random.default_rng(seed), labels)
        label = region.info["label"]
        picked.add(label)
        full = np.zeros(labels.shape, dtype=bool)
        full[region.top:region.top + region.mask.shape[0],
             region.left:region.left + region.mask.shape[1]] = region.mask
        assert np.array_equal(full, labels == label)
    assert picked == {7, 1000, 2000}  # not 300 (largest), not 40000 (0.3 %)
    assert synth.segment_region(np.random.default_rng(0), np.zeros((8, 8), np.uint8)) is None


def test_splice_uses_valid_donor_segments(library):
    """Spliced segments cover 1-35 % of their donor and are never its largest segment."""
    originals = _originals(library)
    segments = 0
    for forgery in _forgeries(library, "splice", 60):
        details = forgery.details
        assert details["donor"] != details["target"]
        if details["region"]["source"] == "segment":
            labels = originals[details["donor"]][1]
            counts = np.bincount(labels.ravel())
            label = details["region"]["label"]
            assert label != counts.argmax()
            assert SEGMENT_FRACTION[0] <= counts[label] / labels.size <= SEGMENT_FRACTION[1]
            segments += 1
    assert segments >= 3


def test_untransformed_splice_carries_the_donor_segment(library, monkeypatch):
    """With every option off, the masked pixels are the donor's, all from the chosen segment."""
    monkeypatch.setattr(synth, "SPLICE_ODDS", {**synth.SPLICE_ODDS, "segment": 1.0, "resize": 0.0,
                                               "rotate": 0.0, "flip": 0.0, "feather": 0.0,
                                               "colour_match": 0.0, "donor_jpeg": 0.0})
    originals = _originals(library)
    checked = 0
    for forgery in _forgeries(library, "splice", 20):
        details = forgery.details
        if details["region"]["source"] != "segment":
            continue  # a donor without segments
        donor, labels = originals[details["donor"]]
        dy = details["source_box"][0] - details["target_box"][0]
        dx = details["source_box"][1] - details["target_box"][1]
        source, positions = _shifted(donor, forgery.mask, dy, dx)
        assert np.array_equal(forgery.image[forgery.mask == 1], source)
        assert (labels[positions] == details["region"]["label"]).all()
        checked += 1
    assert checked >= 3


def test_removal_fills_from_texture_or_smoothly(library):
    originals = _originals(library)
    fills = set()
    for forgery in _forgeries(library, "removal", 24):
        details = forgery.details
        fills.add(details["fill"])
        if details["fill"] == "texture" and not details["feather"]:
            original = originals[details["target"]][0]
            source, _ = _shifted(original, forgery.mask, *details["offset"])
            assert np.array_equal(forgery.image[forgery.mask == 1], source)
    assert fills == {"texture", "smooth"}


def test_flat_photos_still_give_non_empty_masks(tmp_path):
    """Nothing drawn changes a flat grey photo; the generator must still mark something."""
    for name in ("x.png", "y.png"):
        Image.new("RGB", (64, 48), (128, 128, 128)).save(tmp_path / name)
    library = PhotoLibrary([tmp_path])
    for kind in ("splice", "copy-move", "removal"):
        forgery = _forgeries(library, kind, 1)[0]
        original = library.load(0)[0]
        assert forgery.mask.any()
        assert np.array_equal(forgery.mask.astype(bool), (forgery.image != original).any(axis=2))


def test_authentic_examples_are_untouched(library):
    originals = _originals(library)
    synthesizer = ForgerySynthesizer(library, authentic_fraction=1.0)
    for i in range(5):
        plain = synthesizer.generate(np.random.default_rng([3, i]), postprocess=False)
        assert plain.kind == "authentic" and not plain.mask.any()
        assert np.array_equal(plain.image, originals[plain.details["target"]][0])
        processed = synthesizer.generate(np.random.default_rng([3, i]), postprocess=True)
        assert processed.kind == "authentic" and not processed.mask.any()
        assert processed.mask.shape == processed.image.shape[:2]


def test_kind_mix_follows_the_fractions(library):
    synthesizer = ForgerySynthesizer(library, authentic_fraction=0.3,
                                     kinds={"splice": 1.0, "removal": 1.0})
    kinds = [synthesizer.sample(i, 0).kind for i in range(60)]
    assert set(kinds) == {"authentic", "splice", "removal"}
    assert 8 <= kinds.count("authentic") <= 30
    with pytest.raises(ValueError):
        ForgerySynthesizer(library, kinds={"warp": 1.0})
    single = PhotoLibrary([library.paths[0]])
    assert "splice" not in ForgerySynthesizer(single).kinds  # needs a second photo
    with pytest.raises(ValueError):
        ForgerySynthesizer(single, kinds={"splice": 1.0})


# ----------------------------------------------------------------------------- determinism


def test_sample_is_deterministic(photo_root):
    first = ForgerySynthesizer(PhotoLibrary([photo_root]))
    second = ForgerySynthesizer(PhotoLibrary([photo_root]))
    for i in range(6):  # fill the first one's cache differently
        first.sample(100 + i, 9)
    for index in range(8):
        a, b = first.sample(index, 5), second.sample(index, 5)
        assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
        assert a.kind == b.kind and a.details == b.details and a.jpeg_bytes == b.jpeg_bytes
    base = first.sample(3, 5)
    for other in (first.sample(4, 5), first.sample(3, 6)):
        assert other.image.shape != base.image.shape or not np.array_equal(other.image, base.image)


# ----------------------------------------------------------------------------- post-processing


def _difference(image: np.ndarray, reference: np.ndarray, dy: int, dx: int) -> float:
    """Mean absolute difference between image and reference moved by (dy, dx), inner part."""
    height, width = image.shape[:2]
    inner = image[2:height - 2, 2:width - 2].astype(np.int16)
    moved = reference[2 + dy:height - 2 + dy, 2 + dx:width - 2 + dx]
    return float(np.abs(inner - moved).mean())


def test_postprocessing_keeps_the_mask_aligned(library):
    """Same draws with and without post-processing: the processed mask is the plain mask
    carried through the same geometry, and the image stays close to the plain one."""
    synthesizer = ForgerySynthesizer(library, authentic_fraction=0.0)
    ops = set()
    for i in range(40):
        plain = synthesizer.generate(np.random.default_rng([21, i]), postprocess=False)
        processed = synthesizer.generate(np.random.default_rng([21, i]), postprocess=True)
        steps = processed.details["postprocess"]
        ops.update(step["op"] for step in steps)
        assert processed.mask.shape == processed.image.shape[:2]
        assert processed.mask.any()
        expected_mask, reference = plain.mask, plain.image
        for step in steps:
            if step["op"] == "resize":
                height, width = step["size"]
                assert (height, width) == processed.image.shape[:2] != plain.image.shape[:2]
                expected_mask = np.asarray(Image.fromarray(plain.mask).resize((width, height),
                                                                              Image.NEAREST))
                reference = np.asarray(Image.fromarray(plain.image).resize((width, height),
                                                                           Image.BILINEAR))
        assert np.array_equal(processed.mask, expected_mask)
        aligned = _difference(processed.image, reference, 0, 0)
        assert aligned < 8, f"processed image drifted from the plain one ({aligned:.1f})"
        for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):  # and no shifted copy matches better
            assert aligned < _difference(processed.image, reference, dy, dx)
        if steps and steps[-1]["op"] == "jpeg":
            assert processed.jpeg_bytes is not None
            decoded = np.asarray(Image.open(io.BytesIO(processed.jpeg_bytes)).convert("RGB"))
            assert np.array_equal(decoded, processed.image)
        else:
            assert processed.jpeg_bytes is None
    assert {"resize", "jpeg"} <= ops


# ----------------------------------------------------------------------------- dataset on disk


def test_write_dataset_layout(photo_root, tmp_path):
    out = tmp_path / "synth"
    summary = write_dataset([photo_root], out, count=10, seed=4, authentic_fraction=0.3)
    assert sum(summary["kinds"].values()) == 10 == summary["tampered"] + summary["authentic"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 4 and manifest["count"] == 10
    assert [s["id"] for s in manifest["samples"]] == [f"synth_{i:06d}" for i in range(10)]
    reference = ForgerySynthesizer(PhotoLibrary([photo_root]), authentic_fraction=0.3)
    for index, sample in enumerate(manifest["samples"]):
        forgery = reference.sample(index, 4)
        assert sample["kind"] == forgery.kind and sample["details"] == forgery.details
        image_path = out / sample["image"]
        folder = "authentic" if forgery.kind == "authentic" else "tampered"
        assert image_path.parent.name == folder
        data = image_path.read_bytes()
        if image_path.suffix == ".jpg":
            assert data == forgery.jpeg_bytes  # the exact compressed bytes, not re-encoded
        else:
            assert forgery.jpeg_bytes is None
            assert np.array_equal(np.asarray(Image.open(image_path)), forgery.image)
        if forgery.kind == "authentic":
            assert sample["mask"] is None
            continue
        with Image.open(out / sample["mask"]) as mask_image:
            assert mask_image.mode == "L"
            mask = np.asarray(mask_image)
        assert mask.shape == forgery.image.shape[:2]
        assert set(np.unique(mask)) == {0, 255}
        assert np.array_equal(mask == 255, forgery.mask == 1)
    assert {p.suffix for p in (out / "tampered").iterdir()} >= {".jpg"}
    leftovers = [p for p in out.rglob(".*")]
    assert not leftovers, f"temporary files left behind: {leftovers}"

    (out / "tampered" / "mine.png").write_bytes(b"not ours")
    write_dataset([photo_root], out, count=6, seed=5, authentic_fraction=0.3)
    rerun = json.loads((out / "manifest.json").read_text())
    expected = sorted([Path(sample["image"]).name for sample in rerun["samples"]] + ["mine.png"])
    images = sorted(path.name for folder in ("tampered", "authentic")
                    for path in (out / folder).iterdir())
    assert images == expected  # the earlier run's extra files are gone, foreign files kept
    assert len(list((out / "masks").iterdir())) == len(list((out / "tampered").iterdir())) - 1


# ----------------------------------------------------------------------------- real photos


@pytest.mark.skipif(not (REAL_PHOTOS / "bsds500").is_dir(), reason="no shared BSDS500 photos")
def test_real_photos_smoke():
    library = PhotoLibrary([REAL_PHOTOS / "bsds500"])
    assert len(library) > 0 and library.segment_path(0) is not None
    synthesizer = ForgerySynthesizer(library)
    start = time.perf_counter()
    for index in range(12):
        forgery = synthesizer.sample(index, 0)
        assert forgery.mask.shape == forgery.image.shape[:2]
        assert forgery.mask.any() == (forgery.kind != "authentic")
        json.dumps(forgery.details)
    print(f"{(time.perf_counter() - start) / 12 * 1000:.1f} ms per BSDS500 sample")
