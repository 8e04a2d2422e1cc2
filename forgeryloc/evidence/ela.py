"""Error level analysis: how much each pixel changes when the picture is saved again as JPEG.

The decoded picture is recompressed at QUALITY (4:4:4, so that chroma subsampling does not
dominate) and decoded; the error level of a pixel is the largest absolute difference over
R, G and B. Regions saved fewer times than the rest, or at another quality, can change more
or less than their surroundings (Krawetz, "A Picture's Worth", Black Hat 2007). Edges and
texture change more than flat areas in any photograph, so the map mostly shows content;
only a difference between regions of alike content is a clue.

Computed band by band at the picture's own size: JPEG codes 8 x 8 blocks independently, so
bands of whole blocks recompress exactly as the whole picture would.
"""
from __future__ import annotations

import io
from typing import Iterator

import numpy as np
from PIL import Image

QUALITY = 90
DISPLAY_LEVELS = 24  # error levels shown from black (0) to the top colour (this or more)
BAND_ROWS_MULTIPLE = 16


def error_levels(rgb: np.ndarray, quality: int = QUALITY) -> np.ndarray:
    """H x W uint8: max over channels of |rgb - rgb saved as JPEG at `quality`|."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, subsampling=0)
    with Image.open(io.BytesIO(buffer.getvalue())) as saved:
        again = np.asarray(saved.convert("RGB"), dtype=np.int16)
    return np.abs(rgb.astype(np.int16) - again).max(axis=2).astype(np.uint8)


def band_rows(width: int, pixels: int = 1 << 20) -> int:
    """Rows per band: whole 16-row stripes of about `pixels` pixels."""
    stripes = max(1, pixels // max(1, width * BAND_ROWS_MULTIPLE))
    return stripes * BAND_ROWS_MULTIPLE


def error_level_bands(rows_of, height: int, width: int, quality: int = QUALITY
                      ) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, error levels) band by band; rows_of(top, bottom) gives those rows as
    r x W x 3 uint8."""
    step = band_rows(width)
    for top in range(0, height, step):
        rows = slice(top, min(height, top + step))
        yield rows, error_levels(rows_of(rows.start, rows.stop), quality)
