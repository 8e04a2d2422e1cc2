"""The maps of one image at its own size, made band by band (a few rows at a time), so that
no image-sized float array is ever needed: memory stays flat however large the photograph.

- ResizedMaps (the paper's resize protocol) interpolates the network's S x S maps one band
  of rows at a time.
- TiledMaps (native resolution) runs the overlapping tiles one row of tiles at a time and
  hands on the rows that no later tile touches.

`bands()` yields the probability map in order of rows; `preview(h, w)` gives the
probability map at h x w and the difficulty (curvature) map at h x w or coarser (to be shown
enlarged), for the pictures (for tiles: after a full pass over `bands()`, which gathers
them)."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from PIL import Image

from .preprocess import to_tensor

BAND_PIXELS = 1 << 20  # pixels per band of rows
WHOLE_MAP_PIXELS = 1 << 22  # resize mode computes maps up to this size in one piece (16 MB)


def row_bands(height: int, width: int) -> Iterator[slice]:
    """Row slices of about BAND_PIXELS pixels each."""
    rows = max(1, BAND_PIXELS // max(1, width))
    for top in range(0, height, rows):
        yield slice(top, min(height, top + rows))


@dataclass
class MapBand:
    rows: slice                 # which rows of the image
    probability: np.ndarray     # len(rows) x W float32 in [0, 1]
    # What the image score is taken from where it is not this map (same shape): a file below
    # the JPEG stream's gate is drawn by the pixel path and scored with its JPEG evidence.
    score_probability: np.ndarray | None = None


class ImageMaps(Protocol):
    height: int
    width: int
    difficulty_score: float
    difficulty_label: str

    def bands(self) -> Iterator[MapBand]: ...

    def preview(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]: ...


def robust_curvature(curvature: np.ndarray, prior_logits: np.ndarray) -> np.ndarray:
    """The curvature map shown to users: zero where the prior is nearly flat (its gradient is
    below 5% of the image's strongest), where the raw formula only amplifies rounding noise."""
    gy, gx = np.gradient(prior_logits.astype(np.float32))
    magnitude = np.hypot(gx, gy)
    significant = magnitude >= 0.05 * max(float(magnitude.max()), 1e-6)
    return np.where(significant, np.nan_to_num(curvature, posinf=0.0, neginf=0.0), 0.0
                    ).astype(np.float32)


def difficulty_label(score: float) -> str:
    return "hard" if score > 0.5 else "easy"


# ---- resize mode --------------------------------------------------------------------------

def linear_taps(size_out: int, size_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and weight of i1 for each output position, as PyTorch's bilinear
    interpolation computes them (align_corners=False, negative coordinates clamped to 0)."""
    scale, half = np.float32(size_in / size_out), np.float32(0.5)  # float32, as PyTorch's
    source = np.maximum(scale * (np.arange(size_out, dtype=np.float32) + half) - half,
                        np.float32(0.0))
    first = np.minimum(source.astype(np.int64), size_in - 1)
    second = np.minimum(first + 1, size_in - 1)
    return first, second, source - first.astype(np.float32)


def nearest_taps(size_out: int, size_in: int) -> np.ndarray:
    """Source index per output position of PyTorch's "nearest" mode: floor(i * in / out)."""
    return np.minimum((np.arange(size_out) * (size_in / size_out)).astype(np.int64), size_in - 1)


def nearest(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """grid enlarged (or shrunk) to height x width by nearest neighbour."""
    if grid.shape == (height, width):
        return grid
    return grid[nearest_taps(height, grid.shape[0])][:, nearest_taps(width, grid.shape[1])]


def bilinear(grid: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """grid h x w sampled at the given row taps and column taps (see linear_taps)."""
    r0, r1, wr = rows
    c0, c1, wc = cols
    mixed = grid[r0] + (grid[r1] - grid[r0]) * wr[:, None]    # r x w
    left = np.take(mixed, c0, axis=1)                           # r x W
    values = np.take(mixed, c1, axis=1)
    values -= left
    values *= wc
    values += left
    return values


class ResizedMaps:
    """S x S network maps of an image resized to S x S, brought back to height x width."""

    def __init__(self, probability: np.ndarray, curvature: np.ndarray, height: int, width: int,
                 difficulty_score: float, difficulty_label: str):
        self.small_probability = np.asarray(probability, np.float32)  # S x S
        self.small_curvature = np.asarray(curvature, np.float32)      # S x S, robust
        self.height, self.width = height, width
        self.difficulty_score, self.difficulty_label = difficulty_score, difficulty_label
        self._whole: np.ndarray | None = None

    def _resized(self, height: int, width: int, rows: slice) -> np.ndarray:
        grid = self.small_probability
        row_taps = [t[rows] for t in linear_taps(height, grid.shape[0])]
        values = bilinear(grid, row_taps, linear_taps(width, grid.shape[1]))
        return np.clip(values, 0.0, 1.0, out=values)

    def bands(self) -> Iterator[MapBand]:
        if self.height * self.width <= WHOLE_MAP_PIXELS:  # kept: the preview may be this size
            self._whole = self._resized(self.height, self.width, slice(None))
            for rows in row_bands(self.height, self.width):
                yield MapBand(rows, self._whole[rows])
            return
        for rows in row_bands(self.height, self.width):
            yield MapBand(rows, self._resized(self.height, self.width, rows))

    def preview(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        if self._whole is not None and self._whole.shape == (height, width):
            return self._whole, self.small_curvature
        return self._resized(height, width, slice(None)), self.small_curvature


# ---- tile mode ----------------------------------------------------------------------------

CROSSFADE = 0.5  # share of two neighbouring tiles' overlap across which one hands over


def tile_starts(length: int, size: int, overlap: float) -> list[int]:
    """Where tiles start along one axis: evenly spread, at least `overlap` of a tile apart
    from the next's start, the last ending at the image's end."""
    if length <= size:
        return [0]
    stride = max(1, int(size * (1 - overlap)))
    count = math.ceil((length - size) / stride) + 1
    return sorted({round(i * (length - size) / (count - 1)) for i in range(count)})


def tile_grid(height: int, width: int, size: int, overlap: float):
    """Top-left corners of tiles covering the image with at least `overlap` between tiles,
    row of tiles by row of tiles."""
    for y in tile_starts(height, size, overlap):
        for x in tile_starts(width, size, overlap):
            yield y, x


def blend_weights(starts: list[int], length: int, size: int) -> list[np.ndarray]:
    """Along one axis, each tile's weight at each of its pixels (min(size, length - start) of
    them): 1 where no neighbour is used, and between two neighbours a raised-cosine hand-over
    across the middle CROSSFADE of their overlap, centred on it, so the weights of every
    pixel add up to exactly 1 (a tile's weight is the product of its two axes' weights: in
    2-D too). The image's own edges, which only one tile covers, keep full weight.

    Why: the network's map of a tile depends on where in the tile a pixel lies (on a flat
    sky, shipped weights: ~0.5 at a tile's left and right edges, ~0.08 in its middle; on a
    vertical gradient higher in its lower half), so neighbours disagree in their overlap.
    The hand-over keeps each tile's outer margin out of the map ((1 - CROSSFADE) / 2 of the
    overlap: 32 px of 256 at overlap 0.5), gives a tile's middle exactly, and is wide enough
    that the disagreement becomes a slope no steeper than the tiles' own maps. The former
    S x S window faded over a quarter of the overlap only (a step across rows of tiles) and
    was floored at 1e-3 as a whole, so along the picture's edges, where one axis had no
    neighbour, every tile got that same weight: hard steps at each tile's edge there
    (tests/test_streaming.py, shipped weights, smooth sky)."""
    ramps = []  # ramps[k]: weight of tile k + 1 against tile k at each pixel of the axis
    centres = np.arange(length) + 0.5
    for before, after in zip(starts, starts[1:]):
        shared = before + size - after  # pixels both tiles cover
        middle = (after + before + size) / 2
        half = min(CROSSFADE * shared, after - before) / 2  # hand-overs never meet
        rise = np.clip((centres - (middle - half)) / max(2 * half, 1e-6), 0.0, 1.0)
        ramps.append(np.sin(np.pi / 2 * rise) ** 2)
    weights = []
    for index, start in enumerate(starts):
        weight = np.ones(length)
        if index > 0:
            weight *= ramps[index - 1]
        if index + 1 < len(starts):
            weight *= 1.0 - ramps[index]
        weights.append(weight[start:start + size].astype(np.float32))
    return weights


def image_shape(rgb: np.ndarray | Image.Image) -> tuple[int, int]:
    return (rgb.height, rgb.width) if isinstance(rgb, Image.Image) else rgb.shape[:2]


def pad_to_tile(rgb: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pads an image (or a band of its rows) smaller than one tile so every tile is
    S x S; padding rows and columns apart gives the same pixels as padding the whole image."""
    height, width = rgb.shape[:2]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if not (pad_h or pad_w):
        return rgb
    mode = "reflect" if height > 1 and width > 1 and pad_h < height and pad_w < width else "edge"
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


class AreaAverage:
    """Shrinks a height x width map fed in bands of rows to out_h x out_w: each output pixel
    is the mean of the block of input pixels that map onto it."""

    def __init__(self, height: int, width: int, out_h: int, out_w: int):
        if not (1 <= out_h <= height and 1 <= out_w <= width):
            raise ValueError(f"cannot shrink {width}x{height} to {out_w}x{out_h}")
        self.row_bin = np.arange(height) * out_h // height
        col_bin = np.arange(width) * out_w // width
        self.col_starts = np.searchsorted(col_bin, np.arange(out_w))
        self.row_count = np.bincount(self.row_bin, minlength=out_h).astype(np.float32)
        self.col_count = np.bincount(col_bin, minlength=out_w).astype(np.float32)
        self.sums = np.zeros((out_h, out_w), np.float32)

    def add(self, rows: slice, values: np.ndarray) -> None:
        columns = np.add.reduceat(values, self.col_starts, axis=1)  # r x out_w
        bins = self.row_bin[rows]
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        self.sums[bins[starts]] += np.add.reduceat(columns, starts, axis=0)

    def result(self) -> np.ndarray:
        self.sums /= self.row_count[:, None]
        self.sums /= self.col_count[None, :]
        return self.sums


class TiledMaps:
    """Native resolution: overlapping S x S tiles blended by blend_weights. The network
    runs while `bands()` is consumed, one row of tiles at a time, so only about two tile
    heights of blended rows are ever held, plus a preview of `preview_shape` (h, w).

    threads > 1: the tiles of a row are forwarded side by side by that many threads, each
    running torch on one thread of its own (torch.set_num_threads(1) there). A tile's numbers
    are then those of a one-thread forward whatever the thread count, and no OpenMP team waits
    at every layer for a core that another program holds (on a busy 2-core machine two-thread
    forwards ran many times slower than one-thread ones).
    on_tiles(done, total), when given, hears of each forward: tiles just done, tiles in all."""

    def __init__(self, predictor, rgb: np.ndarray | Image.Image, overlap: float, batch_size: int,
                 preview_shape: tuple[int, int],
                 on_tiles: Callable[[int, int], None] | None = None, threads: int = 1):
        self.predictor, self.rgb, self.on_tiles = predictor, rgb, on_tiles
        self.overlap, self.batch_size = overlap, max(1, batch_size)
        self.threads = max(1, threads)
        self.height, self.width = image_shape(rgb)
        self.preview_shape = tuple(preview_shape)
        self.difficulty_score: float = float("nan")
        self.difficulty_label = "unknown"
        self._preview: tuple[np.ndarray, np.ndarray] | None = None

    def _rows(self, top: int, count: int) -> np.ndarray:
        """count x W x 3 uint8 rows of the image from `top` (from Pillow: only these rows)."""
        if isinstance(self.rgb, Image.Image):
            return np.asarray(self.rgb.crop((0, top, self.width, top + count)))
        return self.rgb[top:top + count]

    def _forward_tiles(self, band: np.ndarray, chunk: list[int]) -> list[tuple]:
        """(x, probability S x S, robust curvature S x S, difficulty) for tiles of a band."""
        size, info = self.predictor.size, self.predictor.info
        batch = torch.stack([to_tensor(band[:, x:x + size], info.mean, info.std)
                             for x in chunk])  # B x 3 x S x S
        outputs = self.predictor.forward(batch)
        return [(x, outputs["probability"][i, 0].numpy(),
                 robust_curvature(outputs["curvature"][i, 0].numpy(),
                                  outputs["prior"][i, 0].numpy()),
                 float(outputs["difficulty_score"][i])) for i, x in enumerate(chunk)]

    def _forward_row(self, y: int, xs: list[int], total: int,
                     pool: ThreadPoolExecutor | None) -> Iterator[tuple]:
        """The tiles of one row, in order (forwarded by the pool's threads where it has one)."""
        size = self.predictor.size
        band = pad_to_tile(self._rows(y, min(size, self.height - y)), size)  # S x W' x 3
        chunks = [xs[start:start + self.batch_size]
                  for start in range(0, len(xs), self.batch_size)]
        forward = partial(self._forward_tiles, band)
        done = pool.map(forward, chunks) if pool is not None else map(forward, chunks)
        for chunk, tiles in zip(chunks, done):
            if self.on_tiles is not None:
                self.on_tiles(len(chunk), total)
            yield from tiles

    def bands(self) -> Iterator[MapBand]:
        threads_here = torch.get_num_threads()
        pool = ThreadPoolExecutor(self.threads, "forgeryloc-tiles",
                                  initializer=torch.set_num_threads, initargs=(1,)) \
            if self.threads > 1 else None
        try:
            yield from self._bands(pool)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                # The pool's set_num_threads(1) is also what torch reports process-wide.
                torch.set_num_threads(threads_here)

    def _bands(self, pool: ThreadPoolExecutor | None) -> Iterator[MapBand]:
        size, height, width = self.predictor.size, self.height, self.width
        tops = tile_starts(height, size, self.overlap)
        lefts = tile_starts(width, size, self.overlap)
        total = len(tops) * len(lefts)
        row_weights = blend_weights(tops, height, size)   # per row of tiles: h
        column_weights = dict(zip(lefts, blend_weights(lefts, width, size)))  # per left: w
        preview_probability = AreaAverage(height, width, *self.preview_shape)
        preview_curvature = AreaAverage(height, width, *self.preview_shape)
        # Weighted sums of the rows from `first` on that tiles have touched (2 x r x W); the
        # weights of a pixel add up to 1, so a row no later tile touches is finished.
        first, sums = 0, np.zeros((2, 0, width), np.float32)
        difficulty = []
        for index, y in enumerate(tops):
            h = min(size, height - y)
            if y + h - first > sums.shape[1]:
                grow = np.zeros((2, y + h - first - sums.shape[1], width), np.float32)
                sums = np.concatenate([sums, grow], axis=1)
            for x, probability, curvature, score in self._forward_row(y, lefts, total, pool):
                w = min(size, width - x)
                weights = np.outer(row_weights[index], column_weights[x])  # h x w
                target = (slice(y - first, y - first + h), slice(x, x + w))
                sums[0][target] += probability[:h, :w] * weights
                sums[1][target] += curvature[:h, :w] * weights
                difficulty.append(score)
            done = (tops[index + 1] if index + 1 < len(tops) else height) - first
            probability = np.clip(sums[0, :done], 0.0, 1.0)
            rows = slice(first, first + done)
            preview_probability.add(rows, probability)
            preview_curvature.add(rows, sums[1, :done])
            yield MapBand(rows, probability)
            first, sums = first + done, sums[:, done:]
        self.difficulty_score = float(np.mean(difficulty))
        self.difficulty_label = difficulty_label(self.difficulty_score)
        self._preview = (preview_probability.result(), preview_curvature.result())

    def preview(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        if self._preview is None:
            raise RuntimeError("the preview of tiled maps exists after a pass over bands()")
        if (height, width) != self.preview_shape:
            raise ValueError(f"the preview was gathered at {self.preview_shape}, not "
                             f"{(height, width)}")
        return self._preview
