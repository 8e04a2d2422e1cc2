"""Dataset readers, pairing, splitting and training items, on tiny generated folders."""
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forgeryloc.data import datasets
from forgeryloc.data.datasets import Sample, SegmentationDataset
from forgeryloc.imaging import ImageReadError, load_rgb
from forgeryloc.preprocess import resize_rgb

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_image(path: Path, size=(12, 10), value=None) -> Path:
    """A small random RGB image; format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    width, height = size
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if value is None else \
        np.full((height, width, 3), value, np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_mask(path: Path, size=(12, 10), box=(2, 3, 6, 8)) -> Path:
    """A 0/255 mask with a rectangle (left, top, right, bottom) set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)
    return path


def names(samples):
    return [(s.name, s.tampered) for s in samples]


# ----------------------------------------------------------------------- project layout

@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    write_image(root / "tampered" / "b.jpg")
    write_mask(root / "masks" / "b.png")
    write_image(root / "tampered" / "a.png")
    write_mask(root / "masks" / "a.tif")
    write_image(root / "tampered" / "orphan.jpg")  # no mask: skipped
    write_image(root / "authentic" / "c.jpg")
    (root / "authentic" / "notes.txt").write_text("not an image")
    (root / "authentic" / "._c.jpg").write_bytes(b"macOS resource fork")
    return root


def test_project_layout(project, caplog):
    with caplog.at_level(logging.WARNING):
        samples = datasets.read_dataset(project)
    assert names(samples) == [("a", True), ("b", True), ("c", False)]
    assert samples[0].mask == project / "masks" / "a.tif"
    assert samples[2].mask is None
    assert "orphan.jpg" in caplog.text


def test_sample_is_frozen(project):
    sample = datasets.read_project_layout(project)[0]
    with pytest.raises(AttributeError):
        sample.name = "x"


# ----------------------------------------------------------------------- CASIA

def test_casia_layout_with_gt_suffix_and_nested_folders(tmp_path, caplog):
    root = tmp_path / "CASIA1"
    write_image(root / "Au" / "Au_ani_0001.jpg")
    write_image(root / "Au" / "Au_ani_0002.JPG")
    write_image(root / "Modified Tp" / "Tp" / "Sp" / "Sp_D_CND_A_pla0005_pla0023_0281.jpg")
    write_image(root / "Modified Tp" / "Tp" / "CM" / "Sp_S_CND_A_pla0016_pla0016_0196.jpg")
    write_image(root / "Modified Tp" / "Tp" / "Sp" / "Sp_D_NNN_A_no_mask_0001.jpg")
    gt = root / "CASIA 1.0 groundtruth"
    write_mask(gt / "Sp" / "Sp_D_CND_A_pla0005_pla0023_0281_gt.png")
    write_mask(gt / "CM" / "Sp_S_CND_A_pla0016_pla0016_0196_gt.png")
    with caplog.at_level(logging.WARNING):
        samples = datasets.read_dataset(root)
    assert names(samples) == [("Au_ani_0001", False), ("Au_ani_0002", False),
                              ("Sp_D_CND_A_pla0005_pla0023_0281", True),
                              ("Sp_S_CND_A_pla0016_pla0016_0196", True)]
    assert samples[2].mask == gt / "Sp" / "Sp_D_CND_A_pla0005_pla0023_0281_gt.png"
    assert "no_mask" in caplog.text


def test_casia_flat_layout_with_gt_folder(tmp_path):
    root = tmp_path / "casia"
    write_image(root / "Au" / "Au_sec_0003.jpg")
    write_image(root / "Sp" / "Sp_D_x.jpg")
    write_mask(root / "Gt" / "Sp_D_x.png")
    assert datasets.is_casia_layout(root)
    assert names(datasets.read_dataset(root)) == [("Au_sec_0003", False), ("Sp_D_x", True)]


# ----------------------------------------------------------------------- COVERAGE

def test_coverage_layout(tmp_path, caplog):
    root = tmp_path / "COVERAGE"
    for n in (1, 2, 10):
        write_image(root / "image" / f"{n}.tif")
        write_image(root / "image" / f"{n}t.tif")
    for n in (1, 10):
        write_mask(root / "mask" / f"{n}forged.tif")
        write_mask(root / "mask" / f"{n}copy.tif", box=(0, 0, 2, 2))
        write_mask(root / "mask" / f"{n}paste.tif", box=(0, 0, 2, 2))
    with caplog.at_level(logging.WARNING):
        samples = datasets.read_dataset(root)
    assert names(samples) == [("1", False), ("10", False), ("10t", True), ("1t", True),
                              ("2", False)]
    assert samples[2].mask == root / "mask" / "10forged.tif"
    assert "2t.tif" in caplog.text


# ----------------------------------------------------------------------- JSON list

def test_json_pair_list(tmp_path, caplog):
    write_image(tmp_path / "imgs" / "t.png")
    write_mask(tmp_path / "gts" / "t.png")
    write_image(tmp_path / "imgs" / "au.jpg")
    absolute = write_image(tmp_path / "elsewhere" / "abs.png")
    entries = [["imgs/t.png", "gts/t.png"], ["imgs/au.jpg", "Negative"],
               [str(absolute), "Negative"], ["imgs/missing.png", "Negative"],
               ["imgs/t.png", "gts/missing.png"]]
    listing = tmp_path / "lists" / "test.json"
    listing.parent.mkdir()
    def relative(entry):  # paths as seen from lists/, absolute ones and "Negative" kept
        return entry if entry.startswith("/") or entry == "Negative" else f"../{entry}"

    listing.write_text(json.dumps([[relative(i), relative(m)] for i, m in entries]))
    with caplog.at_level(logging.WARNING):
        samples = datasets.read_dataset(listing)
    assert names(samples) == [("abs", False), ("au", False), ("t", True)]
    assert samples[2].mask.resolve() == (tmp_path / "gts" / "t.png").resolve()
    assert "missing.png" in caplog.text


def test_json_malformed(tmp_path):
    listing = tmp_path / "bad.json"
    listing.write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError):
        datasets.read_dataset(listing)
    listing.write_text(json.dumps([["only-one"]]))
    with pytest.raises(ValueError, match="entry 0"):
        datasets.read_dataset(listing)
    listing.write_text("{not json")
    with pytest.raises(ValueError):
        datasets.read_dataset(listing)


# ----------------------------------------------------------------------- detection errors

def test_unknown_layout_and_missing_path(tmp_path):
    write_image(tmp_path / "random" / "x.png")
    with pytest.raises(ValueError, match="unrecognised dataset layout"):
        datasets.read_dataset(tmp_path / "random")
    with pytest.raises(ValueError, match="no such file"):
        datasets.read_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError):
        datasets.read_dataset(tmp_path / "random" / "x.png")


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "empty" / "tampered").mkdir(parents=True)
    with pytest.raises(ValueError, match="no usable image"):
        datasets.read_dataset(tmp_path / "empty")


# ----------------------------------------------------------------------- load_pair

def test_load_pair_binarises_and_resizes_mask(tmp_path, caplog):
    image = write_image(tmp_path / "i.png", size=(12, 10))
    mask = write_mask(tmp_path / "m.png", size=(24, 20), box=(4, 6, 12, 16))
    with caplog.at_level(logging.WARNING):
        rgb, gt = datasets.load_pair(Sample(image, mask, "i", True))
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
    assert gt.shape == (10, 12) and gt.dtype == np.uint8
    assert set(np.unique(gt)) == {0, 1}
    assert gt.sum() == 4 * 5  # the box halved: 4 columns x 5 rows
    assert "resizing the mask" in caplog.text


def test_load_pair_authentic_and_unreadable(tmp_path):
    image = write_image(tmp_path / "a.jpg")
    rgb, gt = datasets.load_pair(Sample(image, None, "a", False))
    assert gt.shape == rgb.shape[:2] and not gt.any()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageReadError):
        datasets.load_pair(Sample(broken, None, "broken", False))
    with pytest.raises(ImageReadError):
        datasets.load_pair(Sample(image, tmp_path / "gone.png", "a", True))


# ----------------------------------------------------------------------- split

def fake_samples(n_tampered, n_authentic):
    tampered = [Sample(Path(f"/d/t/{i:03d}.jpg"), Path(f"/d/m/{i:03d}.png"), f"t{i:03d}", True)
                for i in range(n_tampered)]
    authentic = [Sample(Path(f"/d/a/{i:03d}.jpg"), None, f"a{i:03d}", False)
                 for i in range(n_authentic)]
    return tampered + authentic


def test_split_is_stratified_deterministic_and_order_independent():
    samples = fake_samples(40, 60)
    train, val = datasets.split_holdout(samples, 0.2, seed=3)
    assert sum(s.tampered for s in val) == 8 and sum(not s.tampered for s in val) == 12
    assert len(train) == 80 and not set(train) & set(val)
    assert set(train) | set(val) == set(samples)
    shuffled = list(samples)
    np.random.default_rng(0).shuffle(shuffled)
    assert datasets.split_holdout(shuffled, 0.2, seed=3) == (train, val)
    assert datasets.split_holdout(samples, 0.2, seed=4)[1] != val
    assert datasets.split_holdout(samples, 0.0, seed=3) == (datasets._sorted(samples), [])
    with pytest.raises(ValueError):
        datasets.split_holdout(samples, 1.0, seed=3)


def casia_like_samples():
    """Tampered CASIA-style names built from photos of 40 ids, authentic photos of those ids."""
    rng = np.random.default_rng(5)
    ids = [f"{cat}{i:04d}" for cat in ("ani", "nat", "arc", "pla") for i in range(10)]
    tampered = []
    for n in range(60):  # photos combine within clusters of 4 ids
        cluster = int(rng.integers(10)) * 4
        a, b = rng.choice(ids[cluster:cluster + 4], 2)
        stem = f"Sp_D_CRN_A_{a}_{b}_{n:04d}"
        tampered.append(Sample(Path(f"/d/t/{stem}.jpg"), Path(f"/d/m/{stem}.png"), stem, True))
    authentic = [Sample(Path(f"/d/a/Au_{i[:3]}_{i[3:]}.jpg"), None, f"Au_{i[:3]}_{i[3:]}", False)
                 for i in ids]
    return tampered + authentic


def test_source_ids_of_casia_names_and_custom_patterns():
    name = Path("/x/Sp_D_CRN_A_nat0066_art0021_0386.jpg")
    assert datasets.source_ids(Sample(name, None, "a", True)) == ["nat0066", "art0021"]
    assert datasets.source_ids(Sample(Path("/x/Au_nat_0066.jpg"), None, "b", False)) == ["nat0066"]
    assert datasets.source_ids(Sample(Path("/x/IMG_1.jpg"), None, "c", False)) == ["file:IMG_1.jpg"]
    custom = Sample(Path("/x/scene12-take3_from-scene40.png"), None, "d", True)
    assert datasets.source_ids(custom, r"scene(\d+)") == ["12", "40"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_keeps_every_source_photo_on_one_side(seed):
    samples = casia_like_samples()
    train, val = datasets.split_holdout(samples, 0.25, seed=seed)
    assert set(train) | set(val) == set(samples) and not set(train) & set(val)
    ids_train = {i for s in train for i in datasets.source_ids(s)}
    ids_val = {i for s in val for i in datasets.source_ids(s)}
    assert ids_val and not ids_train & ids_val
    assert 10 <= sum(s.tampered for s in val) <= 20 and 5 <= sum(not s.tampered for s in val) <= 10
    # A random split of such data leaks, so the id check above can fail.
    ordered = datasets._sorted(samples)
    leaky_val, leaky_train = ordered[::4], [s for s in ordered if s not in ordered[::4]]
    assert ({i for s in leaky_val for i in datasets.source_ids(s)}
            & {i for s in leaky_train for i in datasets.source_ids(s)})


def test_split_of_the_real_casia_names_does_not_leak(shared):
    samples = datasets.read_dataset(shared / "data/benchmarks/casia1-dev")
    train, val = datasets.split_holdout(samples, 0.25, seed=0)
    ids_train = {i for s in train for i in datasets.source_ids(s)}
    assert not ids_train & {i for s in val for i in datasets.source_ids(s)}
    tampered_val = sum(s.tampered for s in val)
    assert abs(tampered_val - 0.25 * sum(s.tampered for s in samples)) <= 3


def test_split_rejects_a_bad_group_pattern():
    with pytest.raises(ValueError, match="group-pattern"):
        datasets.split_holdout(fake_samples(4, 4), 0.5, 0, group_pattern="(unclosed")


# ----------------------------------------------------------------------- training dataset

@pytest.fixture
def pairs(tmp_path):
    samples = []
    for i in range(3):
        image = write_image(tmp_path / f"t{i}.png", size=(40, 30))
        mask = write_mask(tmp_path / f"m{i}.png", size=(40, 30), box=(0, 0, 20, 30))
        samples.append(Sample(image, mask, f"t{i}", True))
    samples.append(Sample(write_image(tmp_path / "a.jpg", size=(40, 30)), None, "a", False))
    return samples


def test_segmentation_dataset_items(pairs):
    dataset = SegmentationDataset(pairs, size=16, mean=MEAN, std=STD)
    image, mask, index = dataset[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert mask.shape == (1, 16, 16) and mask.dtype == torch.float32
    assert index == 0
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[0, :, :8].eq(1).all() and mask[0, :, 8:].eq(0).all()  # left half forged
    assert dataset[3][1].sum() == 0
    # without augmentation: the plainly resized image, normalised
    rgb = resize_rgb(load_rgb(pairs[0].image), 16, 16)
    restored = image * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    expected = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(restored, expected, atol=1e-5)


def test_segmentation_dataset_skips_unreadable(pairs, caplog):
    broken = Path(str(pairs[1].image) + ".broken.png")
    broken.write_bytes(b"garbage")
    samples = list(pairs)
    samples[1] = Sample(broken, pairs[1].mask, "broken", True)
    dataset = SegmentationDataset(samples, size=16, mean=MEAN, std=STD)
    with caplog.at_level(logging.WARNING):
        _, _, index = dataset[1]
    assert index == 2
    assert "broken" in caplog.text
    assert dataset[1][2] == 2


def test_segmentation_dataset_augmentation(pairs):
    torch.manual_seed(0)
    dataset = SegmentationDataset(pairs, size=16, mean=MEAN, std=STD, augment=True, seed=1)
    draws = [dataset[0] for _ in range(6)]
    for image, mask, _ in draws:
        assert image.shape == (3, 16, 16) and mask.shape == (1, 16, 16)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        # the forged half stays one contiguous block of columns after crop/flip
        columns = mask[0].amax(0)
        assert mask[0].eq(columns.expand(16, 16)).all()
    assert any(not torch.equal(draws[0][0], d[0]) for d in draws[1:])  # epochs differ
    torch.manual_seed(0)
    again = SegmentationDataset(pairs, size=16, mean=MEAN, std=STD, augment=True, seed=1)
    for (image, mask, _), (image2, mask2, _) in zip(draws, (again[0] for _ in range(6))):
        assert torch.equal(image, image2) and torch.equal(mask, mask2)  # reproducible


def test_augment_pair_keeps_image_and_mask_aligned():
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, :20] = 255  # white exactly where the mask is set
    mask = np.zeros((30, 40), np.uint8)
    mask[:, :20] = 1
    rng = np.random.default_rng(5)
    for _ in range(10):
        out_rgb, out_mask = datasets.augment_pair(rgb, mask, 32, rng)
        assert out_rgb.shape == (32, 32, 3) and out_mask.shape == (32, 32)
        bright = out_rgb.mean(axis=2) > 127
        assert (bright == out_mask.astype(bool)).mean() > 0.9


# ----------------------------------------------------------------------- shared benchmark

def test_casia1_dev_benchmark(shared):
    casia_dev = shared / "data" / "benchmarks" / "casia1-dev"
    if not casia_dev.is_dir():
        pytest.skip("casia1-dev benchmark not available")
    samples = datasets.read_dataset(casia_dev)
    assert sum(s.tampered for s in samples) == 345
    assert sum(not s.tampered for s in samples) == 390
    assert all(s.mask is not None and s.mask.stem == s.image.stem
               for s in samples if s.tampered)
