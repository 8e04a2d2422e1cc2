"""Dataset readers (project layout, CASIA v1.0, COVERAGE, JSON pair lists) and the training set.

Every reader returns a sorted list of Sample; `read_dataset` picks the reader from the layout.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..imaging import ImageReadError, is_image_name, load_mask, load_rgb
from ..preprocess import resize_mask, resize_rgb, to_tensor

log = logging.getLogger(__name__)

NEGATIVE = "Negative"  # IMDL-BenCo's mask entry for an authentic image
MASK_SUFFIXES = ("", "_gt", "_mask")  # accepted endings of a mask's stem after the image's stem
CASIA_TAMPERED_DIRS = {"sp", "tp"}
CASIA_AUTHENTIC_DIRS = {"au"}
DETECTION_DEPTH = 3  # how deep read_dataset looks for CASIA's folders


@dataclass(frozen=True)
class Sample:
    """One image of a dataset; `mask` is None for authentic images."""
    image: Path
    mask: Path | None
    name: str
    tampered: bool


def _sorted(samples: Iterable[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: (s.name, str(s.image)))


# --------------------------------------------------------------------------- file helpers

def _image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted, hidden files (e.g. macOS "._x.jpg") excluded."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_image_name(p.name))


def _child_dir(root: Path, name: str) -> Path | None:
    """The sub-folder of `root` called `name`, ignoring case (exact spelling preferred)."""
    exact = root / name
    if exact.is_dir():
        return exact
    matches = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower())
    return matches[0] if matches else None


def _mask_preference(path: Path) -> tuple[int, str]:
    """Sort key among masks sharing a stem: lossless PNG first, then by name."""
    return (0 if path.suffix.lower() == ".png" else 1, path.name)


def _index_masks(paths: Iterable[Path]) -> dict[str, Path]:
    """Case-insensitive stem -> mask path; the preferred file wins when stems collide."""
    index: dict[str, Path] = {}
    for path in sorted(paths, key=_mask_preference, reverse=True):
        index[path.stem.casefold()] = path
    return index


def _find_mask(image: Path, masks: dict[str, Path]) -> Path | None:
    """The mask of `image`: same stem, or the stem with a `_gt` / `_mask` suffix."""
    stem = image.stem.casefold()
    for suffix in MASK_SUFFIXES:
        if stem + suffix in masks:
            return masks[stem + suffix]
    return None


def _tampered_sample(image: Path, masks: dict[str, Path], name: str | None = None
                     ) -> Sample | None:
    mask = _find_mask(image, masks)
    if mask is None:
        log.warning("skipping %s: no ground-truth mask found", image)
        return None
    return Sample(image=image, mask=mask, name=name or image.stem, tampered=True)


def _authentic_sample(image: Path, name: str | None = None) -> Sample:
    return Sample(image=image, mask=None, name=name or image.stem, tampered=False)


# --------------------------------------------------------------------------- project layout

def is_project_layout(root: Path) -> bool:
    return root.is_dir() and _child_dir(root, "tampered") is not None


def read_project_layout(root: str | Path) -> list[Sample]:
    """ROOT/tampered/<stem>.<ext> with ROOT/masks/<stem>.<ext> (a `_gt` / `_mask` suffix on the
    mask's stem is tolerated), plus optional ROOT/authentic/*. Tampered images without a mask
    are skipped with a warning."""
    root = Path(root)
    tampered_dir = _child_dir(root, "tampered")
    if tampered_dir is None:
        raise ValueError(f"{root}: no 'tampered' folder")
    masks_dir = _child_dir(root, "masks")
    masks = _index_masks(_image_files(masks_dir)) if masks_dir else {}
    samples = [_tampered_sample(image, masks) for image in _image_files(tampered_dir)]
    authentic_dir = _child_dir(root, "authentic")
    if authentic_dir is not None:
        samples += [_authentic_sample(image) for image in _image_files(authentic_dir)]
    return _sorted(s for s in samples if s is not None)


# --------------------------------------------------------------------------- CASIA v1.0

def _is_mask_dir(name: str) -> bool:
    """Folder names that hold ground truth: Gt, GT, masks, "CASIA 1.0 groundtruth", ..."""
    compact = re.sub(r"[\s_\-.]", "", name.lower())
    return compact in {"gt", "mask", "masks"} or "groundtruth" in compact


def _walk(root: Path, max_depth: int | None = None) -> Iterator[tuple[Path, list[str], bool]]:
    """(folder, sorted file names, inside-a-mask-folder) for every folder under `root`."""
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        folder_path = Path(folder)
        depth = len(folder_path.parts) - base_depth
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if max_depth is not None and depth >= max_depth:
            dirs[:] = []
        in_masks = any(_is_mask_dir(part) for part in folder_path.parts[base_depth:])
        yield folder_path, sorted(f for f in files if not f.startswith(".")), in_masks


def is_casia_layout(root: Path) -> bool:
    """An `Au` folder and an `Sp` or `Tp` folder (any case) within a few levels of `root`."""
    if not root.is_dir():
        return False
    names = {folder.name.lower() for folder, _, in_masks in _walk(root, DETECTION_DEPTH)
             if not in_masks}
    return bool(names & CASIA_AUTHENTIC_DIRS) and bool(names & CASIA_TAMPERED_DIRS)


def _casia_role(image: Path, root: Path) -> str | None:
    """'tampered', 'authentic' or None, from the file name prefix or an enclosing folder."""
    prefix = image.name[:3].lower()
    folders = {part.lower() for part in image.parent.parts[len(root.parts):]}
    if prefix in ("sp_", "tp_") or folders & CASIA_TAMPERED_DIRS:
        return "tampered"
    if prefix == "au_" or folders & CASIA_AUTHENTIC_DIRS:
        return "authentic"
    return None


def read_casia(root: str | Path) -> list[Sample]:
    """CASIA v1.0 as distributed: `Au/` authentic, `Sp/` or `Tp/` tampered (any depth), masks
    anywhere under a ground-truth folder (Gt, GT, masks, "CASIA 1.0 groundtruth", ...), matched
    by stem or stem + "_gt". Tampered images without a mask are skipped with a warning."""
    root = Path(root)
    images, mask_files = [], []
    for folder, files, in_masks in _walk(root):
        paths = [folder / f for f in files if is_image_name(f)]
        (mask_files if in_masks else images).extend(paths)
    masks = _index_masks(mask_files)
    samples = []
    for image in images:
        role = _casia_role(image, root)
        if role == "tampered":
            samples.append(_tampered_sample(image, masks))
        elif role == "authentic":
            samples.append(_authentic_sample(image))
    return _sorted(s for s in samples if s is not None)


# --------------------------------------------------------------------------- COVERAGE

COVERAGE_NAME = re.compile(r"^(\d+)(t?)$", re.IGNORECASE)


def is_coverage_layout(root: Path) -> bool:
    """`image/` holding `<n>t.<ext>` files beside a `mask/` folder."""
    if not root.is_dir():
        return False
    image_dir, mask_dir = _child_dir(root, "image"), _child_dir(root, "mask")
    if image_dir is None or mask_dir is None:
        return False
    return any((m := COVERAGE_NAME.match(p.stem)) and m.group(2) for p in _image_files(image_dir))


def read_coverage(root: str | Path) -> list[Sample]:
    """COVERAGE as distributed: image/<n>.tif authentic, image/<n>t.tif tampered with its
    region in mask/<n>forged.tif (the copy/paste masks are not used)."""
    root = Path(root)
    image_dir, mask_dir = _child_dir(root, "image"), _child_dir(root, "mask")
    if image_dir is None or mask_dir is None:
        raise ValueError(f"{root}: COVERAGE needs 'image' and 'mask' folders")
    masks = _index_masks(_image_files(mask_dir))
    samples = []
    for image in _image_files(image_dir):
        match = COVERAGE_NAME.match(image.stem)
        if match is None:
            continue
        number, tampered = match.groups()
        if tampered:
            mask = masks.get(f"{number}forged")
            if mask is None:
                log.warning("skipping %s: no mask/%sforged.* found", image, number)
                continue
            samples.append(Sample(image=image, mask=mask, name=image.stem, tampered=True))
        else:
            samples.append(_authentic_sample(image))
    return _sorted(samples)


# --------------------------------------------------------------------------- JSON pair list

def _json_entry(entry, base: Path, position: int) -> Sample | None:
    """One [image_path, mask_path] entry; mask "Negative" (or null) = authentic."""
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2
            and isinstance(entry[0], str) and isinstance(entry[1], (str, type(None)))):
        raise ValueError(f"entry {position}: expected [image_path, mask_path], got {entry!r}")
    image = base / entry[0]
    if not image.is_file():
        log.warning("skipping entry %d: image %s not found", position, image)
        return None
    if entry[1] is None or entry[1] == NEGATIVE:
        return _authentic_sample(image)
    mask = base / entry[1]
    if not mask.is_file():
        log.warning("skipping %s: mask %s not found", image, mask)
        return None
    return Sample(image=image, mask=mask, name=image.stem, tampered=True)


def read_json_list(path: str | Path) -> list[Sample]:
    """A JSON list of [image_path, mask_path] pairs (IMDL-BenCo convention: mask "Negative"
    marks an authentic image); relative paths resolve against the JSON file's folder."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the JSON pair list ({error})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of [image_path, mask_path] pairs")
    samples = [_json_entry(entry, path.parent, i) for i, entry in enumerate(entries)]
    return _sorted(s for s in samples if s is not None)


# --------------------------------------------------------------------------- detection

LAYOUTS: list[tuple[str, Callable[[Path], bool], Callable[[Path], list[Sample]]]] = [
    ("project layout (tampered/, masks/, authentic/)", is_project_layout, read_project_layout),
    ("CASIA v1.0 (Au/, Sp/ or Tp/, ground-truth folder)", is_casia_layout, read_casia),
    ("COVERAGE (image/, mask/)", is_coverage_layout, read_coverage),
]


def read_dataset(path: str | Path) -> list[Sample]:
    """Reads a dataset whatever its layout: a .json pair list, the project layout, CASIA v1.0
    or COVERAGE. Raises ValueError for anything else, or when no usable sample is found."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        samples = read_json_list(path)
    elif path.is_dir():
        reader = next((read for _, detect, read in LAYOUTS if detect(path)), None)
        if reader is None:
            known = "; ".join(name for name, _, _ in LAYOUTS)
            raise ValueError(f"{path}: unrecognised dataset layout (expected a .json pair list, "
                             f"or a folder in one of these layouts: {known})")
        samples = reader(path)
    elif path.exists():
        raise ValueError(f"{path}: a dataset is a folder or a .json pair list")
    else:
        raise ValueError(f"{path}: no such file or folder")
    if not samples:
        raise ValueError(f"{path}: no usable image found")
    return samples


# --------------------------------------------------------------------------- loading, splitting

def load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 image, H x W uint8 mask in {0, 1}); all-zero mask for authentic images.

    A mask of another size is resized (nearest) to the image with a warning. Raises
    ImageReadError when either file cannot be read."""
    rgb = load_rgb(sample.image)
    height, width = rgb.shape[:2]
    if sample.mask is None:
        return rgb, np.zeros((height, width), dtype=np.uint8)
    mask = load_mask(sample.mask)
    if mask.shape != (height, width):
        log.warning("%s: mask is %dx%d but the image is %dx%d; resizing the mask", sample.name,
                    mask.shape[1], mask.shape[0], width, height)
        mask = resize_mask(mask, height, width)
    return rgb, mask


# CASIA names carry the ids of the photos an image was built from: `Sp_D_CRN_A_nat0066_art0021_0386`
# uses photos nat0066 and art0021, `Au_nat_0066` is photo nat0066 itself.
CASIA_SOURCE_PATTERN = r"([a-z]{3})_?(\d{4})"


def source_ids(sample: Sample, pattern: str = CASIA_SOURCE_PATTERN) -> list[str]:
    """The source-photo ids in the sample's file name: every match of `pattern` (its groups
    joined when it has any); none: the image is its own source."""
    ids = []
    for match in re.finditer(pattern, sample.image.stem):
        ids.append("".join(g for g in match.groups() if g) if match.groups() else match[0])
    return ids or [f"file:{sample.image.name}"]


def source_groups(samples: Sequence[Sample], pattern: str = CASIA_SOURCE_PATTERN
                  ) -> list[list[Sample]]:
    """Samples joined when they share a source id, directly or through a chain of others
    (connected components); each group sorted, groups in order of their first sample."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for sample in samples:
        first, *rest = source_ids(sample, pattern)
        for other in rest:
            parent[root(other)] = root(first)
        root(first)
    groups: dict[str, list[Sample]] = {}
    for sample in _sorted(samples):
        groups.setdefault(root(source_ids(sample, pattern)[0]), []).append(sample)
    return list(groups.values())


def _split_key(group: Sequence[Sample], seed: int) -> tuple[str, str]:
    """A seeded pseudo-random but input-order-independent position for a group."""
    first = group[0]
    text = f"{seed}\0{first.name}\0{first.image.name}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), str(first.image)


def split_holdout(samples: Sequence[Sample], fraction: float, seed: int,
                  group_pattern: str | None = None) -> tuple[list[Sample], list[Sample]]:
    """(train, val) with no source photo on both sides: about round(fraction * n) of the
    tampered and of the authentic samples go to val.

    Samples that share a source id (`group_pattern`, default CASIA's ids; see `source_groups`)
    stay together. Groups are visited in a seeded order and a group joins val while it does
    not overshoot either stratum's target, so the split depends only on the seed and the file
    names, not on the input order or the dataset's location; both lists come back sorted."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    if group_pattern is not None:
        try:
            re.compile(group_pattern)
        except re.error as error:
            raise ValueError(f"--group-pattern {group_pattern!r}: {error}") from None
    groups = sorted(source_groups(samples, group_pattern or CASIA_SOURCE_PATTERN),
                    key=lambda g: _split_key(g, seed))
    target = {t: int(np.floor(fraction * sum(s.tampered == t for s in samples) + 0.5))
              for t in (True, False)}
    taken = {True: 0, False: 0}
    train, val = [], []
    for group in groups:
        counts = {t: sum(s.tampered == t for s in group) for t in (True, False)}
        fits = all(taken[t] + counts[t] <= target[t] for t in (True, False))
        if fits and any(taken[t] < target[t] and counts[t] for t in (True, False)):
            val += group
            for t in (True, False):
                taken[t] += counts[t]
        else:
            train += group
    return _sorted(train), _sorted(val)


# --------------------------------------------------------------------------- training set

def _random_crop(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The same window of both, each side 60-100 % of the original, at a random position."""
    height, width = mask.shape
    crop_h = max(1, int(round(height * rng.uniform(0.6, 1.0))))
    crop_w = max(1, int(round(width * rng.uniform(0.6, 1.0))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    window = (slice(top, top + crop_h), slice(left, left + crop_w))
    return rgb[window], mask[window]


def _jpeg_recompress(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


def _rescale_down_up(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Loses detail the way a downscaled-then-enlarged photograph does; size is unchanged."""
    height, width = rgb.shape[:2]
    small = resize_rgb(rgb, max(1, round(height * factor)), max(1, round(width * factor)))
    return resize_rgb(small, height, width)


def augment_pair(rgb: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Random crop + horizontal flip (identical on both), resize to size x size, then
    photometric degradations of the image only: rescale down-up (p=0.2), JPEG 60-95 (p=0.3)."""
    rgb, mask = _random_crop(rgb, mask, rng)
    if rng.random() < 0.5:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    rgb = resize_rgb(np.ascontiguousarray(rgb), size, size)
    mask = resize_mask(np.ascontiguousarray(mask), size, size)
    if rng.random() < 0.2:
        rgb = _rescale_down_up(rgb, rng.uniform(0.4, 0.9))
    if rng.random() < 0.3:
        rgb = _jpeg_recompress(rgb, int(rng.integers(60, 96)))
    return rgb, mask


class SegmentationDataset(torch.utils.data.Dataset):
    """(3 x size x size normalised image, 1 x size x size {0, 1} mask, index) training items.

    Unreadable pairs are skipped with a warning (once per process) in favour of the next
    readable sample; the returned index is the sample actually used. Augmentation draws from
    a numpy generator seeded with (seed, torch.initial_seed(), index, times fetched): in
    DataLoader workers torch.initial_seed() changes every epoch, in the main process the
    fetch count does, so epochs differ while a seeded run is reproducible."""

    def __init__(self, samples: Sequence[Sample], size: int, mean: Sequence[float],
                 std: Sequence[float], augment: bool = False, seed: int = 0):
        if not samples:
            raise ValueError("SegmentationDataset needs at least one sample")
        self.samples = list(samples)
        self.size = size
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment
        self.seed = seed
        self._fetches = np.zeros(len(self.samples), dtype=np.int64)
        self._unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def _rng(self, index: int) -> np.random.Generator:
        self._fetches[index] += 1
        entropy = [self.seed, torch.initial_seed(), index, int(self._fetches[index])]
        return np.random.default_rng(entropy)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The pair at `index`, or the next readable one (wrapping around)."""
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            if candidate in self._unreadable:
                continue
            try:
                return (*load_pair(self.samples[candidate]), candidate)
            except ImageReadError as error:
                log.warning("skipping unreadable %s: %s", self.samples[candidate].image, error)
                self._unreadable.add(candidate)
        raise RuntimeError("no sample of the dataset can be read")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rgb, mask, used = self._read(index)
        if self.augment:
            rgb, mask = augment_pair(rgb, mask, self.size, self._rng(used))
        else:
            rgb = resize_rgb(rgb, self.size, self.size)
            mask = resize_mask(mask, self.size, self.size)
        # Pillow-backed arrays are read-only, which torch.from_numpy warns about.
        image = to_tensor(np.require(rgb, requirements=["C", "W"]), self.mean, self.std)
        mask_tensor = torch.from_numpy(mask.astype(np.float32)).unsqueeze(0)
        return image, mask_tensor, used
