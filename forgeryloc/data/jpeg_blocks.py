"""Training items for the JPEG stream: coefficient windows on a file's own block grid.

An item is (coefficients 64 x S x S int16, table 64, block target S x S float in [0, 1],
block weight S x S) for a window of S x S blocks; blocks outside the image have weight 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..jpeg_coefficients import read_jpeg_coefficients
from ..jpeg_input import coefficient_planes
from .datasets import Sample
from ..imaging import load_mask
from ..preprocess import resize_mask


@dataclass
class BlockGrid:
    """One JPEG's luma coefficients as 64 x Hb x Wb, its table (64, natural order) and the
    fraction of manipulated pixels in each block (Hb x Wb)."""
    coefficients: np.ndarray
    table: np.ndarray
    target: np.ndarray


def block_fractions(mask: np.ndarray, blocks_h: int, blocks_w: int,
                    origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """H x W {0, 1} mask -> Hb x Wb fraction of manipulated pixels per 8x8 block whose corner is
    at pixel `origin` (each in (-8, 0]; the part of a block beyond the image counts as
    authentic)."""
    padded = np.zeros((blocks_h * 8, blocks_w * 8), np.float32)
    top, left = -origin[0], -origin[1]
    height = min(mask.shape[0], blocks_h * 8 - top)
    width = min(mask.shape[1], blocks_w * 8 - left)
    padded[top:top + height, left:left + width] = mask[:height, :width] > 0
    return padded.reshape(blocks_h, 8, blocks_w, 8).mean(axis=(1, 3))


def grid_from_jpeg(source, mask: np.ndarray | None) -> BlockGrid | None:
    """A file's grid and target; None when it is not a JPEG."""
    jpeg = read_jpeg_coefficients(source)
    if jpeg is None:
        return None
    coefficients, table = coefficient_planes(jpeg)
    return BlockGrid(coefficients, table, _target(mask, coefficients.shape[1:],
                                                  (jpeg.height, jpeg.width), jpeg.origin))


def _target(mask: np.ndarray | None, blocks: tuple[int, int], size: tuple[int, int],
            origin: tuple[int, int]) -> np.ndarray:
    """Hb x Wb block target of a picture of `size` (H, W) whose grid starts at `origin`: the
    mask's fractions (resized to the picture first), zeros for an authentic one."""
    if mask is None:
        return np.zeros(blocks, np.float32)
    if mask.shape != size:
        mask = resize_mask(mask, *size)
    return block_fractions(mask, *blocks, origin)


def grid_from_pixels(data: bytes, mask: np.ndarray | None) -> BlockGrid | None:
    """The grid pixel_jpeg estimates from the file's displayed pixels (what a PNG made from
    it would give the stream), with its target; None when the pixels show no JPEG."""
    from ..pixel_jpeg import estimate
    from .jpeg_history import decode_jpeg_displayed

    pixels = decode_jpeg_displayed(data)
    found = estimate(pixels)
    if found is None:
        return None
    coefficients = found.input.coefficients.numpy()
    return BlockGrid(coefficients, found.table, _target(mask, coefficients.shape[1:],
                                                        pixels.shape[:2], found.origin))


def grid_from_sample(sample: Sample) -> BlockGrid | None:
    mask = load_mask(sample.mask) if sample.mask is not None else None
    return grid_from_jpeg(sample.image, mask)


def flip_horizontally(grid: BlockGrid) -> BlockGrid:
    """The grid of the mirrored image: blocks in reverse column order, and each block's odd
    horizontal frequencies (v odd) change sign. Exact only when the width is a multiple of 8,
    which a window of whole blocks is."""
    sign = np.where(np.arange(64) % 2 == 1, -1, 1).astype(np.int16)[:, None, None]
    return BlockGrid(grid.coefficients[:, :, ::-1] * sign, grid.table,
                     grid.target[:, ::-1].copy())


def window(grid: BlockGrid, size: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random size x size window of blocks (zero-padded past the image, weight 0 there)."""
    blocks_h, blocks_w = grid.target.shape
    top = int(rng.integers(max(blocks_h - size, 0) + 1))
    left = int(rng.integers(max(blocks_w - size, 0) + 1))
    rows, cols = slice(top, top + size), slice(left, left + size)
    coefficients = np.zeros((64, size, size), np.int16)
    target = np.zeros((size, size), np.float32)
    weight = np.zeros((size, size), np.float32)
    part = grid.coefficients[:, rows, cols]
    h, w = part.shape[1:]
    coefficients[:, :h, :w] = part
    target[:h, :w] = grid.target[rows, cols]
    weight[:h, :w] = 1.0
    return coefficients, target, weight


def as_item(coefficients, table, target, weight):
    return (torch.from_numpy(np.ascontiguousarray(coefficients)),
            torch.from_numpy(np.ascontiguousarray(table)),
            torch.from_numpy(np.ascontiguousarray(target))[None],
            torch.from_numpy(np.ascontiguousarray(weight))[None])


def resaved(data: bytes, rng: np.random.Generator, quality: tuple[int, int]) -> bytes:
    """The file's displayed pixels saved again with drawn tables (IJG mostly) at a quality in
    `quality`, 4:2:0 or 4:4:4: what a share site or a careless copy does to evidence."""
    from .jpeg_history import decode_jpeg_displayed
    from .jpeg_tables import draw_tables, encode_with_tables
    tables = draw_tables(rng, {"ijg": 0.7, "ijg-perturbed": 0.15, "camera": 0.15}, quality)
    subsampling = "4:2:0" if rng.random() < 0.7 else "4:4:4"
    return encode_with_tables(decode_jpeg_displayed(data), tables, subsampling)


class RealJpegWindows(Dataset):
    """Windows of real JPEG files (read once, kept in memory: about 2 bytes per pixel);
    item i of epoch e is fixed by (seed, e, i). Non-JPEG samples are left out. With
    `launder` > 0, that share of items comes from the file saved once more (a quality drawn
    from `launder_quality`), with the same target; with `from_pixels` > 0, that share (drawn
    apart) has its coefficients and table estimated from the decoded pixels (grid_from_pixels;
    the file's own where the estimate finds none)."""

    def __init__(self, samples: Sequence[Sample], size: int, seed: int, length: int,
                 flips: bool = True, launder: float = 0.0,
                 launder_quality: tuple[int, int] = (70, 95), from_pixels: float = 0.0):
        self.grids, self.sources = [], []
        for sample in samples:
            mask = load_mask(sample.mask) if sample.mask is not None else None
            with open(sample.image, "rb") as handle:
                data = handle.read()
            grid = grid_from_jpeg(data, mask)
            if grid is None:
                continue
            self.grids.append(grid)
            if launder > 0 or from_pixels > 0:
                self.sources.append((data, mask))
        if not self.grids:
            raise ValueError("no JPEG among the training samples")
        self.size, self.seed, self.length, self.flips, self.epoch = size, seed, length, flips, 0
        self.launder, self.launder_quality = launder, launder_quality
        self.from_pixels = from_pixels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        choice = int(rng.integers(len(self.grids)))
        grid = self.grids[choice]
        if self.launder > 0 or self.from_pixels > 0:
            data, mask = self.sources[choice]
        if self.launder > 0 and rng.random() < self.launder:
            data = resaved(data, rng, self.launder_quality)
            grid = grid_from_jpeg(data, mask)
        if self.from_pixels > 0 and rng.random() < self.from_pixels:
            grid = grid_from_pixels(data, mask) or grid
        if self.flips and rng.random() < 0.5:
            grid = flip_horizontally(grid)
        return as_item(*window_with_table(grid, self.size, rng))


def window_with_table(grid: BlockGrid, size: int, rng: np.random.Generator):
    coefficients, target, weight = window(grid, size, rng)
    return coefficients, grid.table, target, weight


class SyntheticJpegWindows(Dataset):
    """Windows of synthetic forgeries with real compression histories (jpeg_history)."""

    def __init__(self, photo_roots: Sequence[str], size: int, seed: int, length: int,
                 launder: float = 0.0, from_pixels: float = 0.0, defocus: float = 0.0):
        from .jpeg_history import HistoryOdds, JpegHistorySynthesizer
        from .synth import PhotoLibrary

        self.synthesizer = JpegHistorySynthesizer(
            PhotoLibrary(photo_roots), odds=HistoryOdds(launder=launder, defocus=defocus))
        self.size, self.seed, self.length, self.epoch = size, seed, length, 0
        self.from_pixels = from_pixels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        forgery = self.synthesizer.sample(self.epoch * self.length + index, self.seed)
        grid = grid_from_jpeg(forgery.jpeg, forgery.mask)
        rng = np.random.default_rng([self.seed, self.epoch, index, 2])
        if self.from_pixels > 0 and rng.random() < self.from_pixels:
            grid = grid_from_pixels(forgery.jpeg, forgery.mask) or grid
        return as_item(*window_with_table(grid, self.size, rng))
