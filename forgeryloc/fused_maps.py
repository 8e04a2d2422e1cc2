"""An image's maps with the JPEG stream's evidence fused in, band by band.

The RGB network's probability (from ResizedMaps or TiledMaps, at the image's own size) and the
JPEG stream's block logits (one per 8x8 block of the file's grid, bilinear between block
centres) are combined per pixel by the checkpoint's late fusion (model.jpeg_stream.LateFusion):
    p = sigmoid(a1 * logit(p_rgb) + b * jpeg_logit + c1), and without JPEG evidence
    p = sigmoid(a0 * logit(p_rgb) + c0).
The JPEG logits reach it already raised to the checkpoint's floor, if it has one. A file whose
logits all stay below the checkpoint's gate is drawn without them (the pixel path's map) and
scored with them (Predictor.with_jpeg; CheckpointInfo.jpeg_logit_floor, jpeg_gate_logit).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from .maps import WHOLE_MAP_PIXELS, ImageMaps, MapBand

EPSILON = 1e-6


def block_taps(pixel_coordinates: np.ndarray, blocks: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps into a grid of 8-pixel blocks at (fractional) pixel coordinates, with
    block centres at 8 i + 3.5 and clamping at the ends (as PyTorch's x8 bilinear upsampling
    with align_corners=False computes it)."""
    source = np.clip((pixel_coordinates.astype(np.float32) + 0.5) / 8 - 0.5, 0, blocks - 1)
    first = np.minimum(source.astype(np.int64), blocks - 1)
    second = np.minimum(first + 1, blocks - 1)
    return first, second, (source - first).astype(np.float32)


def sample_blocks(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """grid Hb x Wb sampled at pixel coordinates rows (r) x cols (c) -> r x c."""
    r0, r1, wr = block_taps(rows, grid.shape[0])
    c0, c1, wc = block_taps(cols, grid.shape[1])
    mixed = grid[r0] + (grid[r1] - grid[r0]) * wr[:, None]     # r x Wb
    return mixed[:, c0] + (mixed[:, c1] - mixed[:, c0]) * wc    # r x c


def sample_points(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """grid Hb x Wb sampled at n pixel points (rows[i], cols[i]) -> n values."""
    r0, r1, wr = block_taps(rows, grid.shape[0])
    c0, c1, wc = block_taps(cols, grid.shape[1])
    top = grid[r0, c0] + (grid[r0, c1] - grid[r0, c0]) * wc
    bottom = grid[r1, c0] + (grid[r1, c1] - grid[r1, c0]) * wc
    return top + (bottom - top) * wr


def upsampled_blocks(grid: np.ndarray) -> np.ndarray:
    """Hb x Wb -> 8 Hb x 8 Wb, exactly sample_blocks at every pixel of the grid (PyTorch's
    kernel: several times faster than the gathers)."""
    tensor = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]
    return F.interpolate(tensor, scale_factor=8, mode="bilinear", align_corners=False)[0, 0].numpy()


def fuse(probability: np.ndarray, jpeg_logits: np.ndarray | None,
         weights: tuple[float, ...]) -> np.ndarray:
    """Per-pixel late fusion of an RGB probability map with JPEG logits of the same shape
    (None: no JPEG evidence); weights (a0, c0, a1, b, c1). float32 throughout."""
    a0, c0, a1, b, c1 = weights
    rgb_logits = torch.logit(torch.from_numpy(np.asarray(probability, np.float32)), EPSILON)
    if jpeg_logits is None:
        logits = rgb_logits.mul_(a0).add_(c0)
    else:
        jpeg = torch.from_numpy(np.asarray(jpeg_logits, np.float32))
        logits = rgb_logits.mul_(a1).add_(jpeg, alpha=b).add_(c1)
    return logits.sigmoid_().numpy()


class FusedMaps:
    """ImageMaps whose probability is the fusion of `inner`'s with the JPEG block logits."""

    def __init__(self, inner: ImageMaps, jpeg_logits: np.ndarray | None,
                 weights: tuple[float, ...], origin: tuple[int, int] = (0, 0),
                 jpeg_note: str | None = None, score_logits: np.ndarray | None = None):
        """jpeg_logits: Hb x Wb, block (0, 0)'s corner at pixel `origin` (each in (-8, 0]);
        jpeg_note: why logits the stream made were left out of the map (the record's
        jpeg_evidence); score_logits: such logits, still fused into the map the image score
        is taken from (each band's score_probability)."""
        self.inner, self.jpeg_logits, self.weights = inner, jpeg_logits, tuple(weights)
        self.origin, self.jpeg_note, self.score_logits = origin, jpeg_note, score_logits
        self.height, self.width = inner.height, inner.width
        self._whole: np.ndarray | None = None  # the fused map, when it was small enough

    @property
    def difficulty_score(self) -> float:
        return self.inner.difficulty_score

    @property
    def difficulty_label(self) -> str:
        return self.inner.difficulty_label

    def _jpeg_at(self, rows: np.ndarray, cols: np.ndarray,
                 logits: np.ndarray | None) -> np.ndarray | None:
        if logits is None:
            return None
        return sample_blocks(logits, rows - self.origin[0], cols - self.origin[1])

    def _jpeg_pixels(self, logits: np.ndarray | None) -> np.ndarray | None:
        """JPEG logits at every pixel, when the image is small enough to hold them."""
        if logits is None or self.height * self.width > WHOLE_MAP_PIXELS:
            return None
        top, left = -self.origin[0], -self.origin[1]
        grid = upsampled_blocks(logits)
        if grid.shape[0] < top + self.height or grid.shape[1] < left + self.width:
            return None  # a grid short of the picture: sample_blocks clamps at its end
        return grid[top:top + self.height, left:left + self.width]

    def _logits_of_band(self, logits: np.ndarray | None, pixels: np.ndarray | None,
                        rows: slice, cols: np.ndarray) -> np.ndarray | None:
        """`logits` over a band of rows: from their per-pixel copy `pixels` where there is one."""
        if pixels is not None:
            return pixels[rows]
        return self._jpeg_at(np.arange(rows.start, rows.stop), cols, logits)

    def bands(self) -> Iterator[MapBand]:
        cols = np.arange(self.width)
        # kept whole (as ResizedMaps does) where the preview may be the image's own size
        whole = np.empty((self.height, self.width), np.float32) \
            if self.height * self.width <= WHOLE_MAP_PIXELS else None
        drawn_pixels = self._jpeg_pixels(self.jpeg_logits)
        scored_pixels = self._jpeg_pixels(self.score_logits)
        for band in self.inner.bands():
            jpeg = self._logits_of_band(self.jpeg_logits, drawn_pixels, band.rows, cols)
            fused = fuse(band.probability, jpeg, self.weights)
            scored = None
            if self.score_logits is not None:
                jpeg = self._logits_of_band(self.score_logits, scored_pixels, band.rows, cols)
                scored = fuse(band.probability, jpeg, self.weights)
            if whole is not None:
                whole[band.rows] = fused
            yield MapBand(band.rows, fused, scored)
        self._whole = whole

    def preview(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        probability, curvature = self.inner.preview(height, width)
        if self._whole is not None and self._whole.shape == (height, width):
            return self._whole, curvature
        # Preview pixel i covers image rows around (i + 0.5) * H / h - 0.5.
        rows = (np.arange(height) + 0.5) * (self.height / height) - 0.5
        cols = (np.arange(width) + 0.5) * (self.width / width) - 0.5
        jpeg = self._jpeg_at(rows, cols, self.jpeg_logits)
        return fuse(probability, jpeg, self.weights), curvature


def flag_threshold(maps, threshold: float, pixel_threshold: float | None) -> float:
    """The threshold an image's score is flagged at: pixel_threshold (when there is one) for
    maps of a JPEG-stream model scored without JPEG evidence (a PNG without JPEG traces,
    --without-jpeg); otherwise threshold (a file below the stream's gate included: its score
    holds the evidence its map leaves out)."""
    if pixel_threshold is not None and isinstance(maps, FusedMaps) \
            and maps.jpeg_logits is None and maps.score_logits is None:
        return pixel_threshold
    return threshold
