"""The evidence pictures of a scan, at the decoded picture's own size: NAME.ela.png,
NAME.noise.png and NAME.dq.png, each the layer's values in the overlay's colours with a
legend strip below (render.scale_legend).

Memory stays bounded however large the photograph: ELA is computed and written band by band
(16-row stripes); the noise and dq layers are small grids (one value per 16 x 16 window, per
8 x 8 block) expanded to pixels one band at a time as the PNG is written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from ..png import PngStream
from . import double_jpeg, ela, noise

LAYERS = ("ela", "noise", "dq")
NOISE_PERCENTILE = 99.0


@dataclass
class LayerPicture:
    title: str
    low: str            # label at the colour bar's dark end
    high: str           # ... and at its bright end
    caption: str
    height: int
    width: int
    bands: Callable[[], Iterator[tuple[slice, np.ndarray]]]  # values in [0, 1]; NaN: none


def rows_reader(picture) -> Callable[[int, int], np.ndarray]:
    """rows_of(top, bottom) -> r x W x 3 uint8 of a Pillow picture, an array or a tensor."""
    if isinstance(picture, Image.Image):
        return lambda top, bottom: np.asarray(picture.crop((0, top, picture.width, bottom)))
    return lambda top, bottom: picture[top:bottom]


def ela_layer(rows_of, height: int, width: int) -> LayerPicture:
    def bands():
        for rows, levels in ela.error_level_bands(rows_of, height, width):
            yield rows, levels.astype(np.float32) / np.float32(ela.DISPLAY_LEVELS)
    return LayerPicture(f"error level analysis (saved again at JPEG quality {ela.QUALITY})",
                        "0", f"{ela.DISPLAY_LEVELS}+",
                        "largest change over R, G, B, in grey levels", height, width, bands)


def noise_layer(rows_of, height: int, width: int) -> LayerPicture:
    grid = noise.noise_grid(rows_of, height, width)
    top = float(np.percentile(grid, NOISE_PERCENTILE)) if grid.size else 1.0
    top = top if math.isfinite(top) and top > 0 else 1.0
    cell = noise.WINDOW
    return LayerPicture(f"local noise level ({cell} x {cell} windows)", "0", f"{top:.1f}",
                        "deviation of a high-pass residual, grey levels", height, width,
                        lambda: grid_bands(grid / np.float32(top), cell, (0, 0), height, width))


def dq_layer(jpeg, picture, height: int, width: int) -> LayerPicture | str:
    """The single-compression map of a JPEG, or why there is none."""
    from . import double_jpeg_fits

    if jpeg is None:
        return "not a JPEG: no DCT coefficients to test"
    fits = double_jpeg_fits(jpeg, picture)
    if fits is None:
        return "the file's block grid does not match the decoded picture"
    grid = double_jpeg.single_compression_map(jpeg, fits)
    if grid is None:
        return "no double quantisation found in the file's histograms: nothing to localise"
    return LayerPicture("aligned double JPEG: blocks compressed once", "0", "1",
                        "probability per 8 x 8 block (even prior odds)", height, width,
                        lambda: grid_bands(grid, 8, jpeg.origin, height, width))


def grid_bands(grid: np.ndarray, cell: int, origin: tuple[int, int], height: int,
               width: int) -> Iterator[tuple[slice, np.ndarray]]:
    """A grid of cells (cell (i, j) covers pixels origin + cell * (i, j) onwards) expanded to
    pixels, band by band."""
    columns = (np.arange(width) - origin[1]) // cell
    step = max(cell, (1 << 20) // max(1, width))
    for top in range(0, height, step):
        rows = slice(top, min(height, top + step))
        cells = (np.arange(rows.start, rows.stop) - origin[0]) // cell
        yield rows, grid[np.ix_(cells, columns)].astype(np.float32)


def write_layer(path: str | Path, layer: LayerPicture) -> None:
    """The layer's picture above its legend, streamed to a PNG (see png.PngStream)."""
    from .. import render

    canvas_width = max(layer.width, render.MIN_CANVAS_WIDTH)
    legend = render.scale_legend(canvas_width, layer.title, layer.low, layer.high,
                                 layer.caption)
    left = (canvas_width - layer.width) // 2
    with PngStream(path, canvas_width, layer.height + legend.height, "RGB") as png:
        for rows, values in layer.bands():
            colours = render.scale_colours(values)
            if canvas_width != layer.width:
                padded = np.empty((colours.shape[0], canvas_width, 3), np.uint8)
                padded[:] = render.BACKGROUND
                padded[:, left:left + layer.width] = colours
                colours = padded
            png.write(colours)
        png.write(np.asarray(legend))


def parse_layers(text: str | None) -> tuple[str, ...]:
    """'ela,noise' -> ("ela", "noise"); 'all' -> every layer; None or '' -> none. Raises
    ValueError for an unknown name."""
    names = [name.strip().lower() for name in (text or "").split(",") if name.strip()]
    if "all" in names:
        return LAYERS
    unknown = [name for name in names if name not in LAYERS]
    if unknown:
        raise ValueError(f"unknown evidence layer {unknown[0]!r}: choose among "
                         f"{', '.join(LAYERS)} or all")
    return tuple(name for name in LAYERS if name in names)


def make_layer(name: str, picture, jpeg) -> LayerPicture | str:
    """The named layer of a decoded picture (and its JPEG coefficients), or why it is absent."""
    if hasattr(picture, "numpy"):  # a tensor from a worker's shared memory
        picture = picture.numpy()
    rows_of = rows_reader(picture)
    if isinstance(picture, Image.Image):
        height, width = picture.height, picture.width
    else:
        height, width = tuple(picture.shape[:2])
    if name == "ela":
        return ela_layer(rows_of, height, width)
    if name == "noise":
        return noise_layer(rows_of, height, width)
    if name == "dq":
        return dq_layer(jpeg, picture, height, width)
    raise ValueError(f"unknown evidence layer {name!r}; choose among {', '.join(LAYERS)}")


def write_layers(out_dir: Path, paths: dict[str, str], picture, jpeg
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """Writes each named layer's picture under out_dir / paths[name]; (written paths, reasons
    for the layers not written)."""
    written, absent = {}, {}
    for name, relative in paths.items():
        layer = make_layer(name, picture, jpeg)
        if isinstance(layer, str):
            absent[name] = layer
            continue
        write_layer(out_dir / relative, layer)
        written[name] = relative
    return written, absent
