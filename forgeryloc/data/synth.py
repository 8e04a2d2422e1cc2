"""Synthetic image forgeries with exact masks, made from authentic photos.

Three manipulations, modelled on real benchmark forgeries (CASIA, COVERAGE):
  * splice: an object-shaped region cut from another photo, scaled / rotated / flipped, pasted
    with hard or slightly feathered edges, optionally colour-matched to its new surroundings;
  * copy-move: a region of the same photo pasted elsewhere, possibly transformed;
  * removal: a region filled from neighbouring texture or by a smooth (push-pull) inpainting.
The mask marks the pixels whose value changed (where the pasted layer's alpha exceeds 0.5).
A random post-processing chain (resize, blur, noise, JPEG) then applies to the whole image,
authentic examples included, so that post-processing alone never tells the class.

Everything is drawn from a numpy Generator: the same (seed, index) gives the same bytes.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from ..imaging import ImageReadError, load_rgb

PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
GROUND_TRUTH_DIRS = {"segments", "masks"}  # label maps and masks found beside photos, never photos
KINDS = ("splice", "copy-move", "removal")
DEFAULT_KINDS = {"splice": 0.5, "copy-move": 0.3, "removal": 0.2}

MIN_MASK_FRACTION = 0.003  # accepted share of the image that a forgery changes
MAX_MASK_FRACTION = 0.40
SEGMENT_FRACTION = (0.01, 0.35)  # usable share of a photo for a segment (never the largest)
MAX_ATTEMPTS = 12  # regions that come out degenerate are redrawn this many times
LOAD_ATTEMPTS = 8  # unreadable photos are skipped this many times
SAMPLE_NAME = re.compile(r"synth_\d{6,}\.(png|jpg)")  # files write_dataset owns
RESAMPLERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}

# How often each option is drawn (probabilities), per manipulation and for post-processing.
SPLICE_ODDS = {"segment": 0.75, "resize": 0.8, "rotate": 0.6, "flip": 0.3, "feather": 0.4,
               "colour_match": 0.5, "donor_jpeg": 0.25}
COPY_MOVE_ODDS = {"segment": 0.6, "resize": 0.35, "rotate": 0.3, "flip": 0.15, "feather": 0.3}
REMOVAL_ODDS = {"segment": 0.5, "texture": 0.5, "feather": 0.3}
POSTPROCESS_ODDS = {"resize": 0.25, "blur": 0.15, "noise": 0.15, "jpeg": 0.8, "jpeg_444": 0.3}


@dataclass
class Forgery:
    image: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray  # H x W uint8 in {0, 1}; 1 = manipulated pixel; all zero when authentic
    kind: str  # "splice", "copy-move", "removal" or "authentic"
    details: dict  # what was done; JSON-serialisable
    jpeg_bytes: bytes | None = field(default=None, repr=False, compare=False)
    # the exact JPEG file when the post-processing chain ended with JPEG (image is its decoding)


# ----------------------------------------------------------------------------- photo library


class PhotoLibrary:
    """Authentic photos found under some roots, with BSDS-style segment maps when present."""

    def __init__(self, roots: Sequence[str | Path], max_side: int | None = 768,
                 cache_size: int = 64):
        self.max_side = max_side
        self.cache_size = cache_size
        self.paths: list[Path] = []
        self.names: list[str] = []
        for root in roots:
            for path, name in _discover(Path(root)):
                self.paths.append(path)
                self.names.append(name)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        """Pickled (e.g. into DataLoader workers) without the decoded-photo cache."""
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def segment_path(self, index: int) -> Path | None:
        """.../images/<stem>.<ext> pairs with .../segments/<stem>.png."""
        path = self.paths[index]
        if path.parent.name != "images":
            return None
        candidate = path.parent.parent / "segments" / (path.stem + ".png")
        return candidate if candidate.is_file() else None

    def draw(self, rng: np.random.Generator, exclude: int | None = None):
        """(index, rgb, labels, name) of a random readable photo other than `exclude`."""
        count = len(self)
        for _ in range(LOAD_ATTEMPTS):
            index = int(rng.integers(count))
            if index == exclude:
                index = (index + 1) % count
            try:
                rgb, labels, name = self.load(index)
                return index, rgb, labels, name
            except ImageReadError:
                continue
        raise ImageReadError(f"no readable photo in {LOAD_ATTEMPTS} tries")

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(rgb uint8, segment labels or None, name); raises ImageReadError."""
        cached = self._cache.get(index)
        if cached is None:
            cached = self._read(index)
            self._cache[index] = cached
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return cached[0], cached[1], self.names[index]

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        rgb = load_rgb(self.paths[index])
        labels = _read_labels(self.segment_path(index), rgb.shape[:2])
        height, width = rgb.shape[:2]
        if self.max_side and max(height, width) > self.max_side:
            factor = self.max_side / max(height, width)
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS, reducing_gap=3.0))
            if labels is not None:
                labels = np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST))
        rgb.setflags(write=False)
        if labels is not None:
            labels.setflags(write=False)
        return rgb, labels


def _discover(root: Path) -> list[tuple[Path, str]]:
    """Sorted photo files under root (or root itself), named relative to root's parent."""
    root = root.resolve()
    if root.is_file():
        return [(root, root.name)] if root.suffix.lower() in PHOTO_EXTENSIONS else []
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and d.lower() not in GROUND_TRUTH_DIRS)
        for file in files:
            if not file.startswith(".") and Path(file).suffix.lower() in PHOTO_EXTENSIONS:
                path = Path(folder) / file
                found.append((path, path.relative_to(root.parent).as_posix()))
    return sorted(found, key=lambda item: item[1])


def _read_labels(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    """A segment label map (8 or 16 bit, values kept), or None if absent, unreadable, mis-sized."""
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            labels = np.asarray(image)
    except (OSError, ValueError, SyntaxError):
        return None
    if labels.ndim != 2 or labels.shape != shape or labels.dtype.kind not in "ui":
        return None
    if labels.dtype in (np.uint8, np.uint16):
        return labels
    if labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max:
        return None
    return labels.astype(np.uint16)


# ----------------------------------------------------------------------------- regions


@dataclass
class Region:
    """A region of a photo: a boolean crop (tight around the region) and where its top-left
    corner lies."""
    mask: np.ndarray
    top: int
    left: int
    info: dict

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _sometimes(rng: np.random.Generator, probability: float, draw, otherwise=None):
    """draw() with the given probability, else `otherwise` (the coin is always tossed)."""
    return draw() if rng.random() < probability else otherwise


def _random_cut(rng: np.random.Generator, image: np.ndarray, region, scale: float,
                odds: dict):
    """Cuts `region` out of `image` with a random rotation, flip, feathering and resampling
    (drawn in that order); returns the layer (None if degenerate) and those four choices."""
    angle = _sometimes(rng, odds["rotate"], lambda: float(rng.uniform(-30, 30)), 0.0)
    flip = bool(rng.random() < odds["flip"])
    feather = _sometimes(rng, odds["feather"], lambda: float(rng.uniform(1.0, 3.0)), 0.0)
    resample = ("bilinear", "bicubic")[int(rng.integers(2))]
    layer = cut_layer(image, region, scale, angle, flip, feather, resample)
    return layer, (angle, flip, feather, resample)


def _bounding_crop(mask: np.ndarray) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def segment_region(rng: np.random.Generator, labels: np.ndarray,
                   fraction: tuple[float, float] = SEGMENT_FRACTION) -> Region | None:
    """A random human-drawn segment covering `fraction` of the photo, never the largest one."""
    counts = np.bincount(labels.ravel())
    shares = counts / labels.size
    largest = int(np.argmax(counts))
    sized = np.flatnonzero((shares >= fraction[0]) & (shares <= fraction[1]))
    candidates = [label for label in sized if label != largest]
    if not candidates:
        return None
    label = int(candidates[rng.integers(len(candidates))])
    full = labels == label
    rows, cols = _bounding_crop(full)
    return Region(full[rows, cols], rows.start, cols.start, {"source": "segment", "label": label})


def blob_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random blob filling most of a height x width box: thresholded smoothed noise
    under an elliptic dome, largest connected piece, holes filled."""
    grid = int(rng.integers(3, 7))
    noise = rng.standard_normal((grid, grid)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(noise).resize((width, height), Image.BICUBIC))
    yy = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    field_ = 1.0 - (yy * yy + xx * xx) + smooth * np.float32(rng.uniform(0.2, 0.6))
    blob = field_ > rng.uniform(0.2, 0.4)
    pieces, count = ndimage.label(blob)
    if count > 1:
        blob = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
    return ndimage.binary_fill_holes(blob)


def polygon_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random star-shaped polygon (3 to 10 corners) inscribed in a height x width box."""
    corners = int(rng.integers(3, 11))
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, corners))
    radii = rng.uniform(0.45, 1.0, corners)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    points = [(float(cx + cx * r * math.cos(a)), float(cy + cy * r * math.sin(a)))
              for a, r in zip(angles, radii)]
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


SHAPE_FILL = {"blob": 0.6, "polygon": 0.5, "rectangle": 1.0}  # typical area / bounding-box area


def shape_region(rng: np.random.Generator, shape: tuple[int, int], area: float,
                 shapes: Sequence[str]) -> Region | None:
    """A random blob / polygon / rectangle of about `area` pixels at a random place."""
    height, width = shape
    kind = shapes[int(rng.integers(len(shapes)))]
    box_area = area / SHAPE_FILL[kind]
    aspect = _loguniform(rng, 0.5, 2.0)
    box_h = int(np.clip(round(math.sqrt(box_area * aspect)), 6, max(6, height - 2)))
    box_w = int(np.clip(round(math.sqrt(box_area / aspect)), 6, max(6, width - 2)))
    if box_h >= height or box_w >= width:
        return None
    if kind == "blob":
        mask = blob_mask(rng, box_h, box_w)
    elif kind == "polygon":
        mask = polygon_mask(rng, box_h, box_w)
    else:
        mask = np.ones((box_h, box_w), dtype=bool)
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    tight = _bounding_crop(mask)
    if tight is None:
        return None
    rows, cols = tight
    return Region(mask[rows, cols], top + rows.start, left + cols.start, {"source": kind})


def pick_region(rng: np.random.Generator, shape: tuple[int, int], labels: np.ndarray | None,
                area: float, shapes: Sequence[str], segment_fraction: tuple[float, float],
                segment_probability: float) -> Region | None:
    """A segment when the photo has usable ones (most of the time), else a random shape."""
    if labels is not None and rng.random() < segment_probability:
        region = segment_region(rng, labels, segment_fraction)
        if region is not None:
            return region
    return shape_region(rng, shape, area, shapes)


# ----------------------------------------------------------------------------- layers


@dataclass
class Layer:
    """Pixels to composite: rgb float32 h x w x 3, alpha float32 h x w in [0, 1]."""
    rgb: np.ndarray
    alpha: np.ndarray

    def region_box(self) -> tuple[slice, slice] | None:
        return _bounding_crop(self.alpha > 0.5)


def _padded_crop(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """image[top:top+height, left:left+width], edge-replicated where it leaves the image."""
    rows = np.clip(np.arange(top, top + height), 0, image.shape[0] - 1)
    cols = np.clip(np.arange(left, left + width), 0, image.shape[1] - 1)
    return image[rows[:, None], cols[None, :]]


def cut_layer(image: np.ndarray, region: Region, scale: float, angle: float, flip: bool,
              feather: float, resample: str) -> Layer | None:
    """The region's pixels (with a margin of surrounding pixels) as a layer, flipped, scaled and
    rotated about its centre; alpha is binary, or feathered by a Gaussian of sigma `feather`."""
    pad = int(math.ceil((feather_reach(feather) + 2) / min(scale, 1.0))) + 1
    height, width = region.mask.shape
    rgb = _padded_crop(image, region.top - pad, region.left - pad,
                       height + 2 * pad, width + 2 * pad)
    alpha = np.pad(region.mask, pad).astype(np.uint8) * 255
    if flip:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    if scale != 1.0 or angle != 0.0:
        rgb, alpha = _affine(np.ascontiguousarray(rgb), np.ascontiguousarray(alpha), scale, angle,
                             RESAMPLERS[resample])
    hard = alpha >= 128
    if not hard.any():  # thin regions can vanish when scaled down
        return None
    return Layer(rgb.astype(np.float32), feathered_alpha(hard, feather))


def _affine(rgb: np.ndarray, alpha: np.ndarray, scale: float, angle: float, resample: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Scales and rotates (degrees, counter-clockwise) about the centre onto a canvas that
    holds the whole result."""
    height, width = alpha.shape
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    out_w = max(1, math.ceil(scale * (width * abs(cos) + height * abs(sin))))
    out_h = max(1, math.ceil(scale * (width * abs(sin) + height * abs(cos))))
    # output -> input: p_in = c_in + R(-angle) (p_out - c_out) / scale
    a, b = cos / scale, -sin / scale
    d, e = sin / scale, cos / scale
    c = width / 2 - (a * out_w / 2 + b * out_h / 2)
    f = height / 2 - (d * out_w / 2 + e * out_h / 2)
    data = (a, b, c, d, e, f)
    rgb_out = Image.fromarray(rgb).transform((out_w, out_h), Image.AFFINE, data, resample)
    alpha_out = Image.fromarray(alpha).transform((out_w, out_h), Image.AFFINE, data,
                                                 Image.BILINEAR)
    return np.asarray(rgb_out), np.asarray(alpha_out)


FEATHER_TRUNCATE = 3.0  # the feather's Gaussian is cut at 3 sigma


def feather_reach(sigma: float) -> float:
    """How far (pixels, Euclidean) a feathered edge can spread beyond the region: the
    truncated separable kernel's square support, corner included."""
    return math.sqrt(2) * int(FEATHER_TRUNCATE * sigma + 0.5) if sigma > 0 else 0.0


def feathered_alpha(hard: np.ndarray, sigma: float) -> np.ndarray:
    """The binary region blurred by a Gaussian, kept above 0.5 exactly on the region and at or
    below 0.5 outside it, so that alpha > 0.5 (the mask) is the region whatever its shape."""
    if sigma <= 0:
        return hard.astype(np.float32)
    blurred = ndimage.gaussian_filter(hard.astype(np.float32), sigma, truncate=FEATHER_TRUNCATE,
                                      mode="constant")
    return np.where(hard, np.maximum(blurred, 0.51), np.minimum(blurred, 0.5)).astype(np.float32)


def match_colours(layer: Layer, surroundings: np.ndarray, strength: float) -> None:
    """Moves the layer's per-channel mean and spread (inside its region) `strength` of the way
    toward those of the target pixels it will cover."""
    inside = layer.rgb[layer.alpha > 0.5]
    target = surroundings.reshape(-1, 3).astype(np.float32)
    mean_l, std_l = inside.mean(axis=0), inside.std(axis=0) + 1.0
    mean_t, std_t = target.mean(axis=0), target.std(axis=0) + 1.0
    ratio = np.clip((std_l + strength * (std_t - std_l)) / std_l, 0.6, 1.6)
    shifted = mean_l + strength * (mean_t - mean_l)
    layer.rgb = np.clip((layer.rgb - mean_l) * ratio + shifted, 0, 255).astype(np.float32)


def _window(shape: tuple[int, int], layer_shape: tuple[int, int], top: int, left: int):
    """Overlap of a layer placed at (top, left) with an image: (image slices, layer slices)."""
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + layer_shape[0], shape[0]), min(left + layer_shape[1], shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return ((slice(y0, y1), slice(x0, x1)),
            (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)))


def composite(base: np.ndarray, layer: Layer, top: int, left: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(base with the layer alpha-blended at (top, left), mask of the pixels that changed where
    alpha > 0.5). The layer is clipped to the image."""
    image = base.copy()
    mask = np.zeros(base.shape[:2], dtype=np.uint8)
    window = _window(base.shape[:2], layer.alpha.shape, top, left)
    if window is None:
        return image, mask
    inside, part = window
    old = base[inside].astype(np.float32)
    alpha = layer.alpha[part][..., None]
    new = np.rint(old + alpha * (layer.rgb[part] - old)).clip(0, 255).astype(np.uint8)
    image[inside] = new
    mask[inside] = ((layer.alpha[part] > 0.5) & (new != base[inside]).any(axis=2))
    return image, mask


def place_inside(rng: np.random.Generator, shape: tuple[int, int], box: tuple[slice, slice]
                 ) -> tuple[int, int]:
    """A random (top, left) for a layer whose region box is `box`, keeping the region inside
    the image (or as centred as possible when it is larger)."""
    def axis(size: int, span: slice) -> int:
        low, high = -span.start, size - span.stop
        if high < low:
            low, high = high, low
        return int(rng.integers(low, high + 1))
    return axis(shape[0], box[0]), axis(shape[1], box[1])


# ----------------------------------------------------------------------------- removal fills


def push_pull_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fills unknown pixels smoothly from known ones (pull: weighted 2x2 averages down a
    pyramid; push: coarse estimates upsampled into the holes). values H x W x 3 float32."""
    if known.all() or not known.any():
        return values
    weight = known.astype(np.float32)
    levels = [(values * weight[..., None], weight)]
    while (levels[-1][1] == 0).any() and min(levels[-1][1].shape) > 1:
        premultiplied, weight = levels[-1]
        levels.append((_sum_pool(premultiplied), _sum_pool(weight)))
    premultiplied, weight = levels[-1]
    estimate = premultiplied / np.maximum(weight, 1e-6)[..., None]
    for premultiplied, weight in reversed(levels[:-1]):
        coarse = _upsample(estimate, weight.shape)
        share = np.minimum(weight, 1.0)[..., None]
        own = premultiplied / np.maximum(weight, 1e-6)[..., None]
        estimate = own * share + coarse * (1 - share)
    return np.where(known[..., None], values, estimate)


def _sum_pool(array: np.ndarray) -> np.ndarray:
    """2x2 block sums, the last odd row / column padded by repetition."""
    pad = [(0, array.shape[0] % 2), (0, array.shape[1] % 2)] + [(0, 0)] * (array.ndim - 2)
    array = np.pad(array, pad, mode="edge")
    return array[0::2, 0::2] + array[1::2, 0::2] + array[0::2, 1::2] + array[1::2, 1::2]


def _upsample(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Twice the size (cropped to shape), smoothed with a 3x3 box so the fill has no blocks."""
    up = array.repeat(2, axis=0).repeat(2, axis=1)[:shape[0], :shape[1]]
    return ndimage.uniform_filter(up, size=(3, 3, 1), mode="nearest")


def smooth_fill_layer(rng: np.random.Generator, image: np.ndarray, region: Region
                      ) -> tuple[Layer, int, int, dict]:
    """The region inpainted smoothly from its surroundings, plus grain matching their noise."""
    margin = max(4, max(region.mask.shape) // 4)
    height, width = region.mask.shape
    top, left = region.top - margin, region.left - margin
    crop = _padded_crop(image, top, left, height + 2 * margin, width + 2 * margin)
    crop = crop.astype(np.float32)
    hole = np.pad(region.mask, margin)
    filled = push_pull_fill(crop, ~hole)
    residual = crop - ndimage.uniform_filter(crop, size=(3, 3, 1), mode="nearest")
    sensor_noise = 1.4826 * float(np.median(np.abs(residual[~hole])))  # robust to texture
    sigma = float(rng.uniform(0.0, 1.0)) * min(sensor_noise, 4.0)
    noise = rng.standard_normal(crop.shape[:2], dtype=np.float32)[..., None] * sigma
    filled = np.where(hole[..., None], np.clip(filled + noise, 0, 255), crop)
    details = {"fill": "smooth", "grain": round(sigma, 3)}
    return Layer(filled, hole.astype(np.float32)), top, left, details


def texture_fill_layer(rng: np.random.Generator, image: np.ndarray, region: Region,
                       feather: float) -> tuple[Layer, int, int, dict] | None:
    """The region covered by the texture of a neighbouring area of the same shape."""
    height, width = region.mask.shape
    for _ in range(8):
        direction = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.6, 1.4) * max(height, width)
        dy, dx = round(distance * math.sin(direction)), round(distance * math.cos(direction))
        top, left = region.top + dy, region.left + dx
        if 0 <= top <= image.shape[0] - height and 0 <= left <= image.shape[1] - width:
            source = Region(region.mask, top, left, {})
            layer = cut_layer(image, source, 1.0, 0.0, False, feather, "bilinear")
            pad = (layer.alpha.shape[0] - height) // 2
            details = {"fill": "texture", "offset": [int(dy), int(dx)]}
            return layer, region.top - pad, region.left - pad, details
    return None


# ----------------------------------------------------------------------------- post-processing


def encode_jpeg(image: np.ndarray, quality: int, subsampling: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def postprocess_chain(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, list[dict], bytes | None]:
    """A random chain applied to the whole image: resize, blur, noise, then JPEG (each maybe).
    The mask follows every geometric step (nearest neighbour)."""
    steps: list[dict] = []
    jpeg = None
    if rng.random() < POSTPROCESS_ODDS["resize"]:
        factor = float(rng.uniform(0.6, 1.0))
        filter_name = ("bilinear", "bicubic", "lanczos")[int(rng.integers(3))]
        size = (max(8, round(image.shape[1] * factor)), max(8, round(image.shape[0] * factor)))
        small_mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
        if small_mask.any() == mask.any():  # never lets a tiny forgery vanish
            image = np.asarray(Image.fromarray(image).resize(size, RESAMPLERS[filter_name]))
            mask = small_mask
            steps.append({"op": "resize", "factor": round(factor, 4), "filter": filter_name,
                          "size": [size[1], size[0]]})
    if rng.random() < POSTPROCESS_ODDS["blur"]:
        sigma = float(rng.uniform(0.3, 1.0))
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))
        steps.append({"op": "blur", "sigma": round(sigma, 3)})
    if rng.random() < POSTPROCESS_ODDS["noise"]:
        std = float(rng.uniform(1.0, 4.0))
        noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
        image = np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)
        steps.append({"op": "noise", "std": round(std, 3)})
    if rng.random() < POSTPROCESS_ODDS["jpeg"]:
        quality = int(rng.integers(60, 99))
        subsampling = 0 if rng.random() < POSTPROCESS_ODDS["jpeg_444"] else 2  # 4:4:4 or 4:2:0
        jpeg = encode_jpeg(image, quality, subsampling)
        image = decode_jpeg(jpeg)
        steps.append({"op": "jpeg", "quality": quality,
                      "subsampling": "4:4:4" if subsampling == 0 else "4:2:0"})
    return np.ascontiguousarray(image), mask, steps, jpeg


# ----------------------------------------------------------------------------- synthesizer


def checked_kind_weights(kinds: dict[str, float] | None, default: dict[str, float],
                         known, label: str) -> dict[str, float]:
    """A copy of `kinds` (or `default`) after checking the names and the weights."""
    weights = dict(default if kinds is None else kinds)
    unknown = set(weights) - set(known)
    if unknown:
        raise ValueError(f"unknown {label}s: {sorted(unknown)} (known: {list(known)})")
    if min(weights.values(), default=0) < 0 or sum(weights.values()) <= 0:
        raise ValueError(f"{label} weights must be non-negative with a positive sum")
    return weights


class ForgerySynthesizer:
    """Draws splices, copy-moves, removals and authentic examples from a photo library."""

    def __init__(self, library: PhotoLibrary, authentic_fraction: float = 0.15,
                 kinds: dict[str, float] | None = None, postprocess: bool = True):
        if len(library) == 0:
            raise ValueError("the photo library is empty")
        weights = checked_kind_weights(kinds, DEFAULT_KINDS, KINDS, "forgery kind")
        if len(library) < 2:
            weights.pop("splice", None)  # a splice needs a second photo
            if sum(weights.values()) <= 0:
                raise ValueError("splicing needs at least two photos")
        if not 0.0 <= authentic_fraction <= 1.0:
            raise ValueError("authentic_fraction must lie in [0, 1]")
        self.library = library
        self.authentic_fraction = authentic_fraction
        self.kinds = list(weights)
        total = sum(weights.values())
        self.kind_probabilities = np.array([weights[k] / total for k in self.kinds])
        self.postprocess = postprocess

    def sample(self, index: int, seed: int) -> Forgery:
        """Example `index` of the stream fixed by `seed` (identical bytes on every call)."""
        return self.generate(np.random.default_rng([seed, index]))

    def generate(self, rng: np.random.Generator, postprocess: bool | None = None) -> Forgery:
        kind = self._draw_kind(rng)
        target_index, target, labels, name = self.library.draw(rng)
        if kind == "authentic":
            image, mask, details = target.copy(), np.zeros(target.shape[:2], np.uint8), {}
        else:
            kind, image, mask, details = self._forge(rng, kind, target_index, target, labels)
        details = {"kind": kind, "target": name, "size": list(target.shape[:2]), **details}
        jpeg = None
        if self.postprocess if postprocess is None else postprocess:
            image, mask, steps, jpeg = postprocess_chain(rng, image, mask)
            details["postprocess"] = steps
        else:
            details["postprocess"] = []
        details["mask_fraction"] = round(float(mask.mean()), 6)
        return Forgery(image=image, mask=mask, kind=kind, details=details, jpeg_bytes=jpeg)

    def _draw_kind(self, rng: np.random.Generator) -> str:
        if rng.random() < self.authentic_fraction:
            return "authentic"
        return self.kinds[int(rng.choice(len(self.kinds), p=self.kind_probabilities))]

    def _forge(self, rng: np.random.Generator, kind: str, target_index: int,
               target: np.ndarray, labels: np.ndarray | None):
        """(kind, image, mask, details) for one manipulation, redrawn until it changes a sensible
        share of the image; after MAX_ATTEMPTS a plain retouch guarantees a non-empty mask."""
        total = target.shape[0] * target.shape[1]
        for attempt in range(MAX_ATTEMPTS):
            if kind == "splice":
                result = self._splice(rng, target_index, target)
            elif kind == "copy-move":
                result = self._copy_move(rng, target, labels)
            else:
                result = self._removal(rng, target, labels)
            if result is None:
                continue
            image, mask, details = result
            if MIN_MASK_FRACTION * total <= mask.sum() <= MAX_MASK_FRACTION * total:
                return kind, image, mask, {**details, "attempts": attempt + 1}
        image, mask, details = _retouch(rng, target)
        return "removal", image, mask, {**details, "attempts": MAX_ATTEMPTS + 1}

    # --- manipulations: each returns (image, mask, details) or None when degenerate

    def _splice(self, rng: np.random.Generator, target_index: int, target: np.ndarray):
        _, donor, donor_labels, donor_name = self.library.draw(rng, exclude=target_index)
        target_area = target.shape[0] * target.shape[1]
        donor_area = donor.shape[0] * donor.shape[1]
        wanted = _loguniform(rng, 0.01, 0.3) * target_area  # pixels in the target
        resized = rng.random() < SPLICE_ODDS["resize"]  # else pasted at its original size
        scale = float(rng.uniform(0.5, 1.5)) if resized else 1.0
        region = pick_region(rng, donor.shape[:2], donor_labels,
                             min(wanted / scale ** 2, 0.5 * donor_area), ("blob", "polygon"),
                             SEGMENT_FRACTION, SPLICE_ODDS["segment"])
        if region is None:
            return None
        if resized and region.info["source"] == "segment":  # fit the object to the wanted area
            scale = float(np.clip(math.sqrt(wanted / region.area), 0.5, 1.5))
        odds = SPLICE_ODDS
        layer, (angle, flip, feather, resample) = _random_cut(rng, donor, region, scale, odds)
        if layer is None:
            return None
        donor_jpeg = _sometimes(rng, odds["donor_jpeg"], lambda: int(rng.integers(50, 96)))
        if donor_jpeg is not None:  # the donor came from a differently compressed file
            rgb = np.clip(np.rint(layer.rgb), 0, 255).astype(np.uint8)
            layer.rgb = decode_jpeg(encode_jpeg(rgb, donor_jpeg)).astype(np.float32)
        top, left = place_inside(rng, target.shape[:2], layer.region_box())
        strength = _sometimes(rng, odds["colour_match"], lambda: float(rng.uniform(0.3, 1.0)))
        if strength is not None:
            window = _window(target.shape[:2], layer.alpha.shape, top, left)
            match_colours(layer, target[window[0]], strength)
        image, mask = composite(target, layer, top, left)
        details = {"donor": donor_name, "region": region.info,
                   "source_box": _box(region), "target_box": _placed_box(layer, top, left),
                   "transform": _transform_details(scale, angle, flip, resample),
                   "feather": round(feather, 3), "colour_match": _rounded(strength),
                   "donor_jpeg": donor_jpeg}
        return image, mask, details

    def _copy_move(self, rng: np.random.Generator, photo: np.ndarray, labels: np.ndarray | None):
        area = _loguniform(rng, 0.01, 0.2) * photo.shape[0] * photo.shape[1]
        odds = COPY_MOVE_ODDS
        region = pick_region(rng, photo.shape[:2], labels, area, ("blob", "polygon", "rectangle"),
                             (0.01, 0.2), odds["segment"])
        if region is None:
            return None
        scale = _sometimes(rng, odds["resize"], lambda: float(rng.uniform(0.7, 1.3)), 1.0)
        layer, (angle, flip, feather, resample) = _random_cut(rng, photo, region, scale, odds)
        if layer is None:
            return None
        top, left = self._away_from(rng, photo.shape[:2], layer, region)
        image, mask = composite(photo, layer, top, left)
        details = {"region": region.info, "source_box": _box(region),
                   "target_box": _placed_box(layer, top, left),
                   "transform": _transform_details(scale, angle, flip, resample),
                   "feather": round(feather, 3)}
        return image, mask, details

    @staticmethod
    def _away_from(rng: np.random.Generator, shape: tuple[int, int], layer: Layer, region: Region
                   ) -> tuple[int, int]:
        """A placement whose region box overlaps the source region's box least (of 6 tries)."""
        box = layer.region_box()
        source = (region.top, region.left, region.top + region.mask.shape[0],
                  region.left + region.mask.shape[1])
        best, best_overlap = None, None
        for _ in range(6):
            top, left = place_inside(rng, shape, box)
            placed = (top + box[0].start, left + box[1].start,
                      top + box[0].stop, left + box[1].stop)
            overlap = (max(0, min(placed[2], source[2]) - max(placed[0], source[0]))
                       * max(0, min(placed[3], source[3]) - max(placed[1], source[1])))
            if best_overlap is None or overlap < best_overlap:
                best, best_overlap = (top, left), overlap
            if overlap == 0:
                break
        return best

    def _removal(self, rng: np.random.Generator, photo: np.ndarray, labels: np.ndarray | None):
        area = _loguniform(rng, 0.01, 0.12) * photo.shape[0] * photo.shape[1]
        region = pick_region(rng, photo.shape[:2], labels, area, ("blob", "polygon"), (0.01, 0.15),
                             REMOVAL_ODDS["segment"])
        if region is None:
            return None
        placed = None
        if rng.random() < REMOVAL_ODDS["texture"]:
            feather = _sometimes(rng, REMOVAL_ODDS["feather"],
                                 lambda: float(rng.uniform(1.0, 2.0)), 0.0)
            placed = texture_fill_layer(rng, photo, region, feather)
            if placed is not None:
                placed[3]["feather"] = round(feather, 3)
        if placed is None:
            placed = smooth_fill_layer(rng, photo, region)
            placed[3]["feather"] = 0.0
        layer, top, left, fill = placed
        image, mask = composite(photo, layer, top, left)
        return image, mask, {"region": region.info, "source_box": _box(region), **fill}


def _retouch(rng: np.random.Generator, photo: np.ndarray):
    """Last resort for photos where no drawn region changed anything (e.g. a flat image):
    brightens or darkens a rectangle, which always changes some pixel."""
    height, width = photo.shape[:2]
    box_h, box_w = max(1, height // 6), max(1, width // 6)
    top, left = int(rng.integers(0, height - box_h + 1)), int(rng.integers(0, width - box_w + 1))
    window = photo[top:top + box_h, left:left + box_w].astype(np.int16)
    delta = -40 if window.mean() > 127 else 40
    layer = Layer(np.clip(window + delta, 0, 255).astype(np.float32),
                  np.ones((box_h, box_w), np.float32))
    image, mask = composite(photo, layer, top, left)
    details = {"region": {"source": "rectangle"}, "source_box": [top, left, box_h, box_w],
               "fill": "brightness", "delta": delta, "feather": 0.0}
    return image, mask, details


def _box(region: Region) -> list[int]:
    return [int(region.top), int(region.left), *map(int, region.mask.shape)]


def _placed_box(layer: Layer, top: int, left: int) -> list[int]:
    """[top, left, height, width] of the layer's region once placed (may leave the image)."""
    rows, cols = layer.region_box()
    return [int(top + rows.start), int(left + cols.start), int(rows.stop - rows.start),
            int(cols.stop - cols.start)]


def _transform_details(scale: float, angle: float, flip: bool, resample: str) -> dict:
    return {"scale": round(scale, 4), "angle": round(angle, 3), "flip": flip,
            "resample": resample if (scale != 1.0 or angle != 0.0) else None}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# ----------------------------------------------------------------------------- dataset on disk


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=3)
    return buffer.getvalue()


def dataset_folders(out_dir: Path) -> dict[str, Path]:
    """The project's dataset layout under out_dir (tampered/, masks/, authentic/), created."""
    folders = {name: out_dir / name for name in ("tampered", "masks", "authentic")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def write_dataset(photo_roots: Sequence[str | Path], out_dir: str | Path, count: int, seed: int,
                  authentic_fraction: float = 0.15) -> dict:
    """Writes `count` examples: tampered/<id>.(png|jpg) with masks/<id>.png (0/255), or
    authentic/<id>.(png|jpg), and manifest.json. JPEG-finished images keep their exact bytes."""
    library = PhotoLibrary(photo_roots)
    synthesizer = ForgerySynthesizer(library, authentic_fraction=authentic_fraction)
    out_dir = Path(out_dir)
    folders = dataset_folders(out_dir)
    samples, kinds, kept = [], Counter(), set()
    for index in range(count):
        forgery = synthesizer.sample(index, seed)
        sample_id = f"synth_{index:06d}"
        written = _write_sample(folders, sample_id, forgery)
        kept.update(path for path in written.values() if path)
        kinds[forgery.kind] += 1
        samples.append({"id": sample_id, "kind": forgery.kind,
                        **{key: path.relative_to(out_dir).as_posix() if path else None
                           for key, path in written.items()},
                        "details": forgery.details})
    manifest = {"generator": "forgeryloc.data.synth", "seed": seed, "count": count,
                "authentic_fraction": authentic_fraction,
                "photo_roots": [str(root) for root in photo_roots],
                "photos": len(library), "samples": samples}
    manifest_path = out_dir / "manifest.json"
    _write_atomic(manifest_path, json.dumps(manifest, indent=1).encode())
    _remove_stale(folders.values(), kept)
    return {"out_dir": str(out_dir), "count": count, "photos": len(library),
            "tampered": count - kinds["authentic"], "authentic": kinds["authentic"],
            "kinds": dict(sorted(kinds.items())), "manifest": str(manifest_path)}


def _write_sample(folders: dict[str, Path], sample_id: str, forgery: Forgery) -> dict:
    """Writes one example's image (and mask); returns their paths."""
    extension = ".jpg" if forgery.jpeg_bytes is not None else ".png"
    image_bytes = forgery.jpeg_bytes or _png_bytes(forgery.image)
    tampered = forgery.kind != "authentic"
    image_path = folders["tampered" if tampered else "authentic"] / (sample_id + extension)
    mask_path = folders["masks"] / (sample_id + ".png") if tampered else None
    _write_atomic(image_path, image_bytes)
    if mask_path is not None:
        _write_atomic(mask_path, _png_bytes(forgery.mask * np.uint8(255)))
    return {"image": image_path, "mask": mask_path}


def _remove_stale(folders, kept: set[Path]) -> None:
    """Deletes files an earlier run wrote under our naming scheme that this run did not."""
    for folder in folders:
        for path in folder.iterdir():
            if SAMPLE_NAME.fullmatch(path.name) and path not in kept:
                path.unlink()
