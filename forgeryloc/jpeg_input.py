"""What the JPEG stream reads from a file: the luma coefficients as 64 planes on the block
grid, the luma quantisation table, and where the grid lies over the displayed pixels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .imaging import DEFAULT_MAX_PIXELS, ImageReadError
from .jpeg_coefficients import JpegCoefficients, is_jpeg, read_jpeg_coefficients


@dataclass
class JpegInput:
    coefficients: torch.Tensor   # 64 x Hb x Wb int16, natural order (u * 8 + v)
    table: torch.Tensor          # 64 float32 step sizes, natural order
    origin: tuple[int, int]      # displayed pixel of block (0, 0)'s corner, each in (-8, 0]


def coefficient_planes(jpeg: JpegCoefficients) -> tuple[np.ndarray, np.ndarray]:
    """(64 x Hb x Wb int16 coefficients, 64 float32 table), both in natural u * 8 + v order."""
    luma = np.asarray(jpeg.luma)                                       # Hb x Wb x 8 x 8
    blocks_h, blocks_w = luma.shape[:2]
    planes = luma.reshape(blocks_h, blocks_w, 64).transpose(2, 0, 1)   # 64 x Hb x Wb
    return (np.ascontiguousarray(planes, dtype=np.int16),
            np.asarray(jpeg.luma_table, dtype=np.float32).reshape(64))


def read_coefficients(source: bytes | str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      orientation: int | None = None) -> tuple[JpegCoefficients | None, str]:
    """(coefficients, note): the file's luma coefficients and "used", or None and why the
    file gives none ("not a JPEG", "no luma component", or the reader's one-line error)."""
    if isinstance(source, (bytes, bytearray, memoryview)) and not is_jpeg(source):
        return None, "not a JPEG"
    try:
        jpeg = read_jpeg_coefficients(source, max_pixels, orientation=orientation)
    except ImageReadError as error:
        return None, f"unreadable coefficients: {error}"
    if jpeg is None:
        return None, "not a JPEG (or no luma component)"
    return jpeg, "used"


def jpeg_input(jpeg: JpegCoefficients) -> JpegInput:
    """The stream's input made from a file's coefficients."""
    coefficients, table = coefficient_planes(jpeg)
    return JpegInput(torch.from_numpy(coefficients), torch.from_numpy(table), jpeg.origin)


def read_jpeg_input(source: bytes | str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                    orientation: int | None = None) -> tuple[JpegInput | None, str]:
    """(input, note): the stream's input and "used", or None and why the file gives no JPEG
    evidence (see read_coefficients)."""
    jpeg, note = read_coefficients(source, max_pixels, orientation)
    return (None, note) if jpeg is None else (jpeg_input(jpeg), note)
