"""Pictures of a prediction: lossless probability maps, masks, overlays with a legend, the
difficulty (curvature) map and small JPEG thumbnails.

Everything is deterministic: the same inputs give the same pixels, and `save_png` writes
no time stamp or other varying metadata, so the PNG bytes are reproducible too. The
full-resolution maps of a scan are encoded band by band (`probability_levels`,
`mask_levels` with png.PngStream); the pictures are drawn at preview size."""
from __future__ import annotations

import io
import math
import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .image_scores import clean_probability as _clean_probability
from .image_scores import probability_levels  # noqa: F401 - part of this module's API
from .maps import row_bands
from .png import write_png

# Control points of matplotlib's "inferno" map at t = 0, 0.1, ..., 1 (a perceptual map).
INFERNO_POINTS = ("000004", "160b39", "420a68", "6a176e", "932667", "bc3754",
                  "dd513a", "f37819", "fca50a", "f6d746", "fcffa4")
# Diverging blue - white - red (ColorBrewer RdBu, reversed) at t = 0, 0.1, ..., 1.
DIVERGING_POINTS = ("053061", "2166ac", "4393c3", "92c5de", "d1e5f0", "f7f7f7",
                    "fddbc7", "f4a582", "d6604d", "b2182b", "67001f")

OUTLINE_COLOUR = (0, 255, 255)      # cyan: stands out against inferno and the dimmed photo
UNDEFINED_COLOUR = (128, 128, 128)  # NaN / inf in the curvature map
BACKGROUND = (24, 24, 24)           # legend strip and padding around narrow images
TEXT_COLOUR = (235, 235, 235)
MAX_OPACITY = 0.85                  # opacity of the colour map at probability 1
PHOTO_SATURATION = 0.5              # the photo under the overlay keeps half its colour ...
PHOTO_BRIGHTNESS = 0.7              # ... and 70 % of its brightness
MIN_CANVAS_WIDTH = 320              # narrower images are centred on a canvas this wide
CURVATURE_PERCENTILE = 99.0
PERCENTILE_SAMPLE = 4_000_000       # at most this many values enter the percentile


def _lut(points: tuple[str, ...]) -> np.ndarray:
    """256 x 3 uint8 colour table interpolated linearly between evenly spaced hex colours."""
    stops = np.array([[int(p[i:i + 2], 16) for i in (0, 2, 4)] for p in points], np.float32)
    where = np.linspace(0.0, 1.0, len(points))
    t = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(t, where, stops[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=1)).astype(np.uint8)


INFERNO = _lut(INFERNO_POINTS)
DIVERGING = _lut(DIVERGING_POINTS)


# --------------------------------------------------------------------------- small helpers

def _check_map(prob: np.ndarray, name: str = "prob") -> np.ndarray:
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"{name} must be a H x W array, got shape {prob.shape}")
    return prob


PNG_MODES = {"RGB": "RGB", "L": "L", "I;16": "I;16", "I;16L": "I;16"}


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Writes an RGB, L or 16-bit grey image as a PNG with fixed settings and no metadata
    (reproducible bytes), atomically."""
    if image.mode not in PNG_MODES:
        raise ValueError(f"cannot save a {image.mode} image as PNG here")
    write_png(path, np.asarray(image), PNG_MODES[image.mode])


# --------------------------------------------------------------------------- maps and masks

def mask_levels(mask: np.ndarray) -> np.ndarray:
    """uint8 0 / 255 of a boolean mask band."""
    return mask.view(np.uint8) * np.uint8(255)


def probability_png(prob: np.ndarray) -> Image.Image:
    """Lossless 16-bit grayscale ("I;16") image of a H x W probability map: round(p * 65535)."""
    prob = _check_map(prob)
    height, width = prob.shape
    levels = np.empty((height, width), dtype=np.uint16)
    for rows in row_bands(height, width):
        levels[rows] = probability_levels(prob[rows])
    return Image.fromarray(levels)


def read_probability_png(path: str | os.PathLike) -> np.ndarray:
    """Inverse of `probability_png`: H x W float32 in [0, 1]."""
    with Image.open(path) as image:
        image.load()
        if image.mode not in ("L", "I", "I;16", "I;16L", "I;16B", "I;16N"):
            raise ValueError(f"{path}: mode {image.mode} is not a probability map")
        peak = 255.0 if image.mode == "L" else 65535.0
        levels = np.asarray(image)
    return (levels.astype(np.float32) / np.float32(peak)).astype(np.float32)


def _threshold_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean H x W: probability >= threshold (NaN is never set)."""
    mask = np.empty(prob.shape, dtype=bool)
    for rows in row_bands(*prob.shape):
        mask[rows] = np.asarray(prob[rows], dtype=np.float32) >= np.float32(threshold)
    return mask


def mask_png(prob: np.ndarray, threshold: float) -> Image.Image:
    """Binary mask, mode "L": 255 where probability >= threshold, else 0."""
    return Image.fromarray(mask_levels(_threshold_mask(_check_map(prob), threshold)))


# --------------------------------------------------------------------------- overlay

def _blend_heatmap(rgb: np.ndarray, prob: np.ndarray, outline: np.ndarray) -> Image.Image:
    """RGB picture: inferno colours over the photo, half desaturated and darkened so the
    colours read on top; opacity = MAX_OPACITY * p; `outline` pixels opaque in
    OUTLINE_COLOUR. Pillow's integer kernels do the work, on one H x W byte map of palette
    indices (0 .. 254 the colour map, OUTLINE_INDEX the outline)."""
    levels = np.rint(_clean_probability(prob) * np.float32(OUTLINE_INDEX - 1)).astype(np.uint8)
    np.putmask(levels, outline, np.uint8(OUTLINE_INDEX))
    size, data = (levels.shape[1], levels.shape[0]), levels.tobytes()
    colours = Image.frombytes("P", size, data)
    colours.putpalette(_OVERLAY_PALETTE)
    opacity = Image.frombytes("L", size, data).point(_OPACITY_TABLE)
    dimmed = Image.fromarray(np.ascontiguousarray(rgb)).convert("RGB", _DIMMING_MATRIX)
    return Image.composite(colours.convert("RGB"), dimmed, opacity)


OUTLINE_INDEX = 255
_OVERLAY_PALETTE = np.concatenate(
    [INFERNO[np.rint(np.arange(OUTLINE_INDEX) * (255 / (OUTLINE_INDEX - 1))).astype(int)],
     np.array([OUTLINE_COLOUR], np.uint8)]).tobytes()
_OPACITY_TABLE = [round(255 * MAX_OPACITY * i / (OUTLINE_INDEX - 1))
                  for i in range(OUTLINE_INDEX)] + [255]


def _dimming_matrix() -> tuple[float, ...]:
    """RGB -> RGB matrix: PHOTO_BRIGHTNESS * (PHOTO_SATURATION * colour + (1 - PHOTO_SATURATION)
    * ITU-R 601 luma), one pass of Pillow's matrix conversion."""
    luma = (0.299, 0.587, 0.114)
    rows = []
    for channel in range(3):
        rows += [PHOTO_BRIGHTNESS * ((PHOTO_SATURATION if c == channel else 0.0)
                                     + (1 - PHOTO_SATURATION) * luma[c]) for c in range(3)]
        rows.append(0.0)
    return tuple(rows)


_DIMMING_MATRIX = _dimming_matrix()


def outline_thickness(height: int, width: int) -> int:
    """Contour width in pixels: 1 up to about 1800 px, growing slowly, at most 6."""
    return int(min(6, max(1, round(max(height, width) / 1200))))


def _dilate(mask: np.ndarray) -> np.ndarray:
    """One step of 3 x 3 dilation (rows, then columns)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    wide = grown.copy()
    wide[:, 1:] |= grown[:, :-1]
    wide[:, :-1] |= grown[:, 1:]
    return wide


def mask_outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Boolean contour of a mask: its pixels with a 4-neighbour outside it (the image border
    does not count as outside), widened to `thickness` pixels."""
    interior = mask.copy()
    interior[1:] &= mask[:-1]
    interior[:-1] &= mask[1:]
    interior[:, 1:] &= mask[:, :-1]
    interior[:, :-1] &= mask[:, 1:]
    edge = mask & ~interior
    del interior
    for _ in range(max(0, thickness - 1)):
        edge = _dilate(edge)
    return edge


def overlay_image(rgb: np.ndarray, prob: np.ndarray, threshold: float,
                  title: str | None = None) -> Image.Image:
    """The photo with the probability map in colour, the thresholded region outlined, and a
    legend strip below it (colour bar 0 .. 1, threshold mark, optional title line)."""
    rgb = np.asarray(rgb)
    prob = _check_map(prob)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be a H x W x 3 uint8 array, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[:2] != prob.shape:
        raise ValueError(f"prob shape {prob.shape} differs from the photo's {rgb.shape[:2]}")
    height, width = prob.shape
    outline = mask_outline(_threshold_mask(prob, threshold), outline_thickness(height, width))
    picture = _blend_heatmap(rgb, prob, outline)
    del outline
    legend = _probability_legend(max(width, MIN_CANVAS_WIDTH), threshold, title)
    return _stack(picture, legend)


def photo_box(canvas_size: tuple[int, int], photo_size: tuple[int, int]
              ) -> tuple[int, int, int, int] | None:
    """Crop box of the picture part of an overlay or difficulty image made by this module,
    given the size (w, h) of the photo it shows, drawn at that size or scaled down (same
    aspect ratio); None if the canvas does not match such a layout."""
    canvas_w, canvas_h = canvas_size
    photo_w, photo_h = photo_size
    if min(canvas_w, canvas_h, photo_w, photo_h) < 1:
        return None
    # Legend with a title line first (scans always give one), then without.
    heights = [canvas_h - _Layout(canvas_w, lines).height for lines in (3, 2)]
    if canvas_w == max(photo_w, MIN_CANVAS_WIDTH) and photo_h in heights:
        return _centred_box(canvas_w, photo_w, photo_h)
    for shown_h in (h for h in heights if h >= 1):
        shown_w = canvas_w if canvas_w > MIN_CANVAS_WIDTH else \
            min(canvas_w, max(1, round(shown_h * photo_w / photo_h)))
        if abs(shown_w * photo_h - shown_h * photo_w) <= photo_w + photo_h:  # rounding
            return _centred_box(canvas_w, shown_w, shown_h)
    return None


def _centred_box(canvas_w: int, width: int, height: int) -> tuple[int, int, int, int]:
    left = (canvas_w - width) // 2
    return left, 0, left + width, height


def _stack(picture: Image.Image, legend: Image.Image) -> Image.Image:
    """The picture centred above the legend on one canvas as wide as the legend."""
    canvas = Image.new("RGB", (legend.width, picture.height + legend.height), BACKGROUND)
    canvas.paste(picture, ((legend.width - picture.width) // 2, 0))
    canvas.paste(legend, (0, picture.height))
    return canvas


# --------------------------------------------------------------------------- legend drawing

@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (the fixed bitmap font on Pillow < 10.1 or
    without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _printable(text: str, font) -> str:
    """The bitmap fallback font only knows Latin-1."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def _text_width(text: str, font) -> float:
    return font.getlength(_printable(text, font))


def _fit(text: str, size: int, max_width: float):
    """(text, font): the font shrunk (down to 60 %) and then the text shortened with an
    ellipsis until it fits in max_width."""
    smallest = max(6, int(size * 0.6))
    for candidate in range(size, smallest - 1, -1):
        font = _font(candidate)
        if _text_width(text, font) <= max_width:
            return text, font
    font = _font(smallest)
    while len(text) > 1 and _text_width(text + "…", font) > max_width:
        text = text[:-1]
    return text + "…", font


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font,
               fill=TEXT_COLOUR) -> None:
    draw.text((round(xy[0]), round(xy[1])), _printable(text, font), font=font, fill=fill)


def legend_font_size(canvas_width: int) -> int:
    """Legend text size in px, growing with the width and capped (so is the legend)."""
    return int(min(96, max(11, round(canvas_width / 45))))


class _Layout:
    """Vertical layout of a legend strip, in units of the font size."""

    def __init__(self, width: int, lines: int):
        self.width = width
        self.size = legend_font_size(width)
        self.pad = max(4, round(self.size * 0.6))
        self.line = round(self.size * 1.4)
        self.bar = max(6, round(self.size * 1.0))
        self.height = 2 * self.pad + lines * self.line + self.bar


def _colour_bar(lut: np.ndarray, width: int, height: int) -> Image.Image:
    """Horizontal gradient through a 256-entry table, left = entry 0."""
    index = np.rint(np.linspace(0.0, 255.0, max(1, width))).astype(np.uint8)
    row = lut[index]
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (height, *row.shape))))


def _bar_with_end_labels(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout,
                         top: int, lut: np.ndarray, left_label: str, right_label: str
                         ) -> tuple[int, int]:
    """Draws `left_label [gradient] right_label` at `top`; returns the bar's x extent."""
    font = _font(layout.size)
    gap = round(layout.size * 0.4)
    x0 = layout.pad + round(_text_width(left_label, font)) + gap
    x1 = layout.width - layout.pad - round(_text_width(right_label, font)) - gap
    if x1 - x0 < 8:  # too narrow for labels beside it: the bar alone
        x0, x1 = layout.pad, max(layout.pad + 1, layout.width - layout.pad)
    else:
        text_top = top + (layout.bar - layout.size) / 2
        _draw_text(draw, (layout.pad, text_top), left_label, font)
        _draw_text(draw, (x1 + gap, text_top), right_label, font)
    canvas.paste(_colour_bar(lut, x1 - x0, layout.bar), (x0, top))
    return x0, x1


def _centred_text(draw: ImageDraw.ImageDraw, layout: _Layout, top: float, text: str,
                  centre: float | None = None, fill=TEXT_COLOUR) -> None:
    """A line of text centred on `centre` (default: the strip) and kept inside the strip."""
    text, font = _fit(text, layout.size, layout.width - 2 * layout.pad)
    width = _text_width(text, font)
    centre = layout.width / 2 if centre is None else centre
    left = min(max(layout.pad, centre - width / 2), layout.width - layout.pad - width)
    _draw_text(draw, (left, top), text, font, fill)


def _probability_legend(width: int, threshold: float, title: str | None) -> Image.Image:
    """Legend strip: [title] / threshold label / 0 [inferno bar] 1 / caption."""
    legend = _probability_legend_body(width, threshold, bool(title)).copy()
    if title:
        layout = _Layout(width, lines=3)
        _centred_text(ImageDraw.Draw(legend), layout, layout.pad, title)
    return legend


@lru_cache(maxsize=8)
def _probability_legend_body(width: int, threshold: float, title_line: bool) -> Image.Image:
    """The legend with its title line left blank: the same for every image of a scan."""
    layout = _Layout(width, lines=3 if title_line else 2)
    legend = Image.new("RGB", (width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(legend)
    top = layout.pad + (layout.line if title_line else 0)
    marker_top = top + layout.line
    x0, x1 = _bar_with_end_labels(legend, draw, layout, marker_top, INFERNO, "0", "1")
    t = min(1.0, max(0.0, float(threshold))) if math.isfinite(threshold) else 1.0
    mark = round(x0 + t * (x1 - x0 - 1))
    line_width = max(1, round(layout.size / 10))
    draw.line([(mark, marker_top - round(layout.size * 0.3)), (mark, marker_top + layout.bar)],
              fill=OUTLINE_COLOUR, width=line_width)
    _centred_text(draw, layout, top, f"threshold {threshold:.2f} (outlined)", centre=mark,
                  fill=OUTLINE_COLOUR)
    _centred_text(draw, layout, marker_top + layout.bar + layout.pad / 2,
                  "probability of manipulation")
    return legend


# --------------------------------------------------------------------------- evidence layers

@lru_cache(maxsize=16)
def scale_legend(width: int, title: str, low: str, high: str, caption: str) -> Image.Image:
    """Legend strip of an evidence picture: title / low [inferno bar] high / caption (three
    lines, the layout of the overlay's legend, so photo_box finds the picture above it)."""
    layout = _Layout(width, lines=3)
    legend = Image.new("RGB", (width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(legend)
    _centred_text(draw, layout, layout.pad, title)
    bar_top = layout.pad + layout.line
    _bar_with_end_labels(legend, draw, layout, bar_top, INFERNO, low, high)
    _centred_text(draw, layout, bar_top + layout.bar + layout.pad / 2, caption)
    return legend


def scale_colours(values: np.ndarray) -> np.ndarray:
    """r x W x 3 uint8 inferno colours of values in [0, 1] (clipped); NaN in grey."""
    levels = np.rint(_clean_probability(values) * np.float32(255)).astype(np.uint8)
    colours = INFERNO[levels]
    undefined = np.isnan(values)
    if undefined.any():
        colours[undefined] = UNDEFINED_COLOUR
    return colours


# --------------------------------------------------------------------------- difficulty

def _curvature_scale(curvature: np.ndarray, finite: np.ndarray) -> float:
    """High percentile of |curvature| over the finite values (1 if there are none)."""
    values = curvature[finite]
    if values.size == 0:
        return 1.0
    step = max(1, values.size // PERCENTILE_SAMPLE)
    scale = float(np.percentile(np.abs(values[::step]), CURVATURE_PERCENTILE))
    if not math.isfinite(scale) or scale <= 0:
        scale = float(np.abs(values).max())
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def _curvature_colours(curvature: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """H x W x 3 uint8 on the diverging map, the clipping scale, and whether any value was
    NaN or infinite (shown in grey)."""
    finite = np.isfinite(curvature)
    scale = _curvature_scale(curvature, finite)
    signed = np.clip(np.where(finite, curvature, 0.0).astype(np.float32) / np.float32(scale),
                     -1.0, 1.0)
    colours = DIVERGING[np.rint((signed + 1.0) * 127.5).astype(np.uint8)]
    undefined = not bool(finite.all())
    if undefined:
        colours[~finite] = UNDEFINED_COLOUR
    return colours, scale, undefined


def difficulty_image(curvature: np.ndarray, label: str, score: float,
                     size: tuple[int, int] | None = None, photo: np.ndarray | None = None,
                     cells: tuple[float, float] | None = None) -> Image.Image:
    """The curvature of the network's global prior, blue (< 0: convex, pushes towards easy) -
    white (0) - red (> 0: concave, pushes towards hard), clipped at the 99th percentile of
    |curvature|, over the photo, with a legend strip below.

    cells: (rows, cols) of the prior's own grid (one value per 32 network pixels). The
    curvature of its bilinear enlargement lies on the cell borders, so drawn as it is every
    image shows the same grid of lines; averaged per cell it keeps its sum (what decides the
    label) and says where the bending is. The map is then interpolated smoothly (bilinear) to
    `size` (w, h); `photo` (h x w x 3 uint8 at that size) is shown in grey beneath, the
    colours more opaque where the curvature is stronger."""
    curvature = _check_map(curvature, "curvature")
    if cells is not None:
        curvature = cell_means(curvature, cells)
    finite = np.isfinite(curvature)
    scale = _curvature_scale(curvature, finite)
    width, height = (curvature.shape[1], curvature.shape[0]) if size is None else \
        (max(1, int(size[0])), max(1, int(size[1])))
    # Palette index 0 .. 255 of the clipped, signed curvature (127.5: flat). The affine map
    # to levels is applied at the map's own size, before the (linear) enlargement; Pillow's
    # float-to-byte conversion then clips and truncates (hence + 0.5: rounding), and its
    # integer kernels do the colouring and the blending, as for the overlay.
    levels = np.where(finite, curvature, 0.0).astype(np.float32) * np.float32(127.5 / scale)
    levels = Image.fromarray(levels + np.float32(128.0), "F")
    if (width, height) != levels.size:
        levels = levels.resize((width, height), Image.Resampling.BILINEAR)
        if not finite.all():
            finite = np.asarray(Image.fromarray(finite).resize((width, height),
                                                               Image.Resampling.NEAREST))
    levels = levels.convert("L")
    colours = levels.convert("P")
    colours.putpalette(_DIVERGING_PALETTE)
    picture = colours.convert("RGB")
    if photo is not None:
        photo = np.asarray(photo)
        if photo.shape != (height, width, 3):
            raise ValueError(f"photo shape {photo.shape} differs from the picture's "
                             f"{(height, width, 3)}")
        # the photo in dim grey where the prior is flat, the colours where it bends
        grey = Image.fromarray(np.ascontiguousarray(photo)).convert("L").point(_GREY_TABLE)
        opacity = levels.point(_DIFFICULTY_OPACITY_TABLE)
        picture = Image.composite(picture, grey.convert("RGB"), opacity)
    undefined = not bool(finite.all())
    if undefined:
        pixels = np.array(picture)
        pixels[~finite] = UNDEFINED_COLOUR
        picture = Image.fromarray(pixels)
    legend = _difficulty_legend(max(picture.width, MIN_CANVAS_WIDTH), label, score, scale,
                                undefined)
    return _stack(picture, legend)


DIFFICULTY_CELL_PIXELS = 64  # see difficulty_backdrop


def difficulty_backdrop(photo: np.ndarray, cells: tuple[float, float]) -> np.ndarray:
    """The photo the difficulty picture is drawn over: `photo` (h x w x 3 uint8, the preview)
    reduced by the largest whole factor that leaves every prior cell at least
    DIFFICULTY_CELL_PIXELS pixels along the photo's long side. The picture shows one value per
    cell, smoothly interpolated; more pixels only cost time (a 256 px network's 8 x 8 cells on
    a 1024 px preview: 512 px)."""
    factor = int(max(photo.shape[:2]) // (DIFFICULTY_CELL_PIXELS * max(cells[0], cells[1], 1.0)))
    if factor <= 1:
        return photo
    return np.asarray(Image.fromarray(np.ascontiguousarray(photo)).reduce(factor))


_DIVERGING_PALETTE = DIVERGING.astype(np.uint8).tobytes()
_DIFFICULTY_OPACITY_TABLE = [round(255 * 0.85 * abs(i - 127.5) / 127.5) for i in range(256)]
_GREY_TABLE = [round(40 + 0.7 * i) for i in range(256)]


def cell_means(values: np.ndarray, cells: tuple[float, float]) -> np.ndarray:
    """rows x cols means of a map over a grid of equal cells (NaN where a cell has no finite
    value); rows and cols are rounded and kept between 1 and the map's size."""
    rows = min(values.shape[0], max(1, round(cells[0])))
    cols = min(values.shape[1], max(1, round(cells[1])))
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0).astype(np.float64)
    row_starts = np.linspace(0, values.shape[0], rows + 1).astype(int)[:-1]
    col_starts = np.linspace(0, values.shape[1], cols + 1).astype(int)[:-1]

    def sums(array: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(array, row_starts, axis=0), col_starts, axis=1)

    counts = sums(finite.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums(clean) / counts, np.nan).astype(np.float32)


def difficulty_headline(label: str, score: float) -> str:
    """The legend's first line. The score is sigmoid(sum of the curvature over the whole map):
    that sum runs to thousands, so the score is nearly always exactly 0.00 or 1.00, and then
    only its sign decided the label; the line says so rather than show a number that says
    nothing."""
    if score is None or not math.isfinite(score):
        return f"difficulty: {label} (score n/a)"
    if min(score, 1.0 - score) < 1e-4:
        return f"difficulty: {label} (score saturated at {score:.2f}: only the sign counted)"
    return f"difficulty: {label} (score {score:.2f})"


def _difficulty_legend(width: int, label: str, score: float, scale: float,
                       undefined: bool) -> Image.Image:
    """Legend strip: headline / easy: convex [diverging bar] concave: hard / caption."""
    layout = _Layout(width, lines=3)
    legend = _difficulty_legend_body(width).copy()
    draw = ImageDraw.Draw(legend)
    _centred_text(draw, layout, layout.pad, difficulty_headline(label, score))
    caption = (f"bending of the network's coarse prior (±{scale:.3g}); hard: its sum > 0, "
               f"a ragged region; easy: compact")
    if undefined:
        caption += "; grey: undefined"
    _centred_text(draw, layout, layout.pad + layout.line + layout.bar + layout.pad / 2, caption)
    return legend


@lru_cache(maxsize=8)
def _difficulty_legend_body(width: int) -> Image.Image:
    """The difficulty legend with only its colour bar drawn: the same for every image."""
    layout = _Layout(width, lines=3)
    legend = Image.new("RGB", (width, layout.height), BACKGROUND)
    _bar_with_end_labels(legend, ImageDraw.Draw(legend), layout, layout.pad + layout.line,
                         DIVERGING, "easy: convex", "concave: hard")
    return legend


# --------------------------------------------------------------------------- thumbnails

def _grey_peak(mode: str, values: np.ndarray) -> float:
    """White level of a 16/32-bit grey image: 1 for 0..1 floats, 255 for 8-bit ranges."""
    top = float(values.max(initial=0))
    if mode == "F" and top <= 1.0:
        return 1.0
    if mode in ("I", "F") and top <= 255:
        return 255.0
    return 65535.0


def _display_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB for display: 16/32-bit grey scaled down, alpha composited on white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        grey = np.clip(np.rint(values * (255.0 / _grey_peak(image.mode, values))), 0, 255)
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
            image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def thumbnail_jpeg(image: Image.Image, max_side: int = 256, quality: int = 80) -> bytes:
    """A small baseline JPEG (longest side <= max_side, no metadata) of any image."""
    picture = _display_rgb(image)
    scale = min(1.0, max_side / max(picture.size))
    target = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    if target != picture.size:
        picture = picture.resize(target, Image.Resampling.BICUBIC, reducing_gap=1.0)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()


def open_thumbnail(path: str | os.PathLike, max_side: int = 256, quality: int = 80,
                   crop_size: tuple[int, int] | None = None) -> bytes:
    """`thumbnail_jpeg` of an image file, decoded at reduced size where the format allows
    (JPEG draft mode) and with its EXIF orientation applied. `crop_size` (w, h) keeps only
    the photo part of an overlay made by this module. Raises OSError/ValueError if
    unreadable; only regular files are opened (never a FIFO or a device)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"not a regular file: {path}")
    with Image.open(path) as image:
        if crop_size is None:
            image.draft("RGB", (max_side, max_side))
            picture = ImageOps.exif_transpose(image)
        else:
            box = photo_box(image.size, crop_size)
            picture = image.crop(box) if box else image.copy()
        return thumbnail_jpeg(picture, max_side, quality)
