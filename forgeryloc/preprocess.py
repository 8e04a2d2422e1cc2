"""Turning RGB arrays into model inputs (one definition shared by scan, train and evaluate)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


def resize_rgb(rgb: np.ndarray | Image.Image, height: int, width: int) -> np.ndarray:
    """H x W x 3 uint8 (or a Pillow RGB image) -> height x width x 3 uint8, bilinear
    (antialiased when shrinking)."""
    if isinstance(rgb, Image.Image):
        if rgb.size == (width, height):
            return np.array(rgb)
        return np.array(rgb.resize((width, height), Image.BILINEAR))
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.array(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """H x W uint8 -> height x width uint8, nearest neighbour (keeps the labels exact)."""
    if mask.shape[:2] == (height, width):
        return mask
    return np.array(Image.fromarray(mask).resize((width, height), Image.NEAREST))


def rescaled_pair(rgb: np.ndarray, mask: np.ndarray, factor: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """An image resized by `factor` (bicubic) and its mask (nearest neighbour), each side at
    least 8 pixels."""
    if factor <= 0:
        raise ValueError(f"rescale factor must be positive, got {factor}")
    height, width = (max(8, round(side * factor)) for side in rgb.shape[:2])
    resized = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC))
    return resized, resize_mask(mask, height, width)


def to_tensor(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W float32 normalised with mean/std (of [0, 1] values)."""
    rgb = np.ascontiguousarray(rgb)
    if not rgb.flags.writeable:  # arrays viewing Pillow buffers are read-only
        rgb = rgb.copy()
    image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return image.sub_(mean_t).div_(std_t)
