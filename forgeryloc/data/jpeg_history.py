"""Synthetic forgeries with real JPEG compression histories, for the coefficient stream.

Each example is the exact bytes of a JPEG file, a mask of the pixels whose compression history
differs from the host's, and that history: every compression applied, in order, with its tables,
chroma subsampling and grid phase. Six kinds, each drawn with a configurable weight:
  * single: a photo saved once                                                   (authentic)
  * double-aligned: saved, decoded, cropped on the 8x8 grid, saved again           (authentic)
  * double-nonaligned: the same, cropped off the grid                              (authentic)
  * splice: a region of another photo, itself saved once with its own tables, pasted (usually
    off the host's grid) into a host saved once or never, then saved;
  * copy-move: a region of the decoded host moved by a shift that is not a multiple of 8;
  * transformed: a region (another photo's or the host's) resized and / or rotated before
    pasting, which erases its history, into a host saved once.
The image is cropped to its final size (sides multiples of 8, at most `max_side`) before the last
save, so the file's own grid is the final grid. A grid phase [dy, dx] is where an earlier
compression's block origin falls in final-image coordinates, modulo 8: [0, 0] is aligned.

Photos read from JPEG files carry their own history; by default most are first downscaled, which
erases it (`HistoryOdds.erase_source_jpeg`). Everything is drawn from a numpy Generator seeded by
(seed, index): the same pair gives the same bytes.
"""
from __future__ import annotations

import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..imaging import ImageReadError
from .defocus import defocus
from .jpeg_tables import TABLE_FAMILIES, QuantTables, draw_tables, encode_with_tables
from .synth import (
    MAX_ATTEMPTS, RESAMPLERS, SEGMENT_FRACTION, Layer, PhotoLibrary, Region, checked_kind_weights,
    _png_bytes, _remove_stale, _write_atomic, cut_layer, dataset_folders, decode_jpeg, pick_region,
    place_inside,
)

AUTHENTIC_KINDS = ("single", "double-aligned", "double-nonaligned")
TAMPERED_KINDS = ("splice", "copy-move", "transformed")
HISTORY_KINDS = AUTHENTIC_KINDS + TAMPERED_KINDS
DEFAULT_HISTORY_KINDS = {"single": 0.12, "double-aligned": 0.14, "double-nonaligned": 0.08,
                         "splice": 0.36, "copy-move": 0.15, "transformed": 0.15}
NEEDS_TWO_PHOTOS = ("splice",)

MIN_REGION_FRACTION = 0.005  # a region covers this share of the image at least ...
MIN_REGION_PIXELS = 256  # ... and four blocks' worth of pixels
MAX_REGION_FRACTION = 0.40
SEGMENT_ODDS = 0.6  # a human-drawn segment when the photo has usable ones, else a shape
GRID = 8
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class HistoryOdds:
    """How often each option is drawn (probabilities), and the ranges drawn from."""
    quality: tuple[int, int] = (50, 100)  # every compression's quality, both ends included
    final_quality: tuple[int, int] | None = None  # the last save's, if other than `quality`
    tables: dict = field(default_factory=lambda: dict(TABLE_FAMILIES))  # family -> weight
    subsampling: dict = field(default_factory=lambda: {"4:4:4": 0.3, "4:2:2": 0.15,
                                                       "4:2:0": 0.55})
    progressive: float = 0.1  # the final save only
    host_raw: float = 0.2  # a splice's host is never compressed before the final save
    host_aligned: float = 0.8  # a tampered host's earlier compression stays on the final grid
    paste_aligned: float = 0.15  # a spliced region lands on the final grid
    transformed_donor: float = 0.5  # a transformed region comes from another photo (else host)
    transformed_donor_jpeg: float = 0.5  # ... which was compressed before being transformed
    feather: float = 0.15  # the pasted region's edge is blended (sigma 0.5-2 pixels)
    erase_source_jpeg: float = 0.75  # photos read from JPEG files are downscaled 0.5-0.9 first
    rescale_other: float = 0.5  # other photos (e.g. PNG) are downscaled too, for variety
    launder: float = 0.0  # the final file is decoded and saved again, as a share site would
    launder_quality: tuple[int, int] = (70, 95)  # ... at a quality drawn from this range
    launder_twice: float = 0.3  # ... and, of those, this share a second time
    defocus: float = 0.0  # photos with all but one subject blurred before anything (defocus.py)
    defocus_sigma: tuple[float, float] = (1.5, 5.0)  # ... by a Gaussian of this spread


@dataclass
class HistoryForgery:
    jpeg: bytes = field(repr=False)  # the final file, exactly
    mask: np.ndarray  # H x W uint8 in {0, 1}: 1 = compression history differs from the host's
    history: dict  # the chain actually applied; JSON-serialisable

    @property
    def kind(self) -> str:
        return self.history["kind"]

    @property
    def tampered(self) -> bool:
        return self.history["tampered"]

    def decode(self) -> np.ndarray:
        """The file's pixels, H x W x 3 uint8."""
        return decode_jpeg(self.jpeg)


@dataclass
class _Photo:
    rgb: np.ndarray  # H x W x 3 uint8
    labels: np.ndarray | None  # segment labels of the same size, or None
    index: int
    info: dict


@dataclass
class _Host:
    canvas: np.ndarray  # the host cropped to the final size, h x w x 3 uint8
    labels: np.ndarray | None
    stage: dict | None  # its earlier compression (None: never compressed)
    info: dict


# ----------------------------------------------------------------------------- small pieces


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = [name for name, weight in weights.items() if weight > 0]
    probabilities = np.array([weights[name] for name in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=probabilities / probabilities.sum()))]


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _off_grid_phase(rng: np.random.Generator) -> tuple[int, int]:
    """A grid phase other than [0, 0], uniformly."""
    code = int(rng.integers(1, GRID * GRID))
    return code // GRID, code % GRID


def _place_on_phase(rng: np.random.Generator, span: int, size: int, residue: int) -> int | None:
    """A random start t in [0, span - size] with t = residue (mod 8), or None if none fits."""
    first = residue % GRID
    if first > span - size:
        return None
    return first + GRID * int(rng.integers((span - size - first) // GRID + 1))


def _ints(*values) -> list[int]:
    return [int(value) for value in values]


def _phase(origin_y: int, origin_x: int) -> list[int]:
    return [int(origin_y % GRID), int(origin_x % GRID)]


def paste(canvas: np.ndarray, layer: Layer, top: int, left: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """(canvas with the layer alpha-blended at (top, left), mask of alpha > 0.5). Unlike
    synth.composite, a pasted pixel is marked even where its value happens not to change: its
    block still has another history. The layer is clipped to the canvas."""
    image = canvas.copy()
    mask = np.zeros(canvas.shape[:2], dtype=np.uint8)
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + layer.alpha.shape[0], canvas.shape[0])
    x1 = min(left + layer.alpha.shape[1], canvas.shape[1])
    if y0 >= y1 or x0 >= x1:
        return image, mask
    part = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    alpha = layer.alpha[part]
    old = canvas[y0:y1, x0:x1].astype(np.float32)
    blended = old + alpha[..., None] * (layer.rgb[part] - old)
    image[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    mask[y0:y1, x0:x1] = alpha > 0.5
    return image, mask


def _region_fits(mask: np.ndarray, shape: tuple[int, int]) -> bool:
    """Whether a region's pixel count is a usable share of an image of this shape."""
    total = shape[0] * shape[1]
    area = int(mask.sum())
    return max(MIN_REGION_PIXELS, MIN_REGION_FRACTION * total) <= area <= \
        MAX_REGION_FRACTION * total


def _fallback_region(shape: tuple[int, int], room: tuple[int, int]) -> Region:
    """A rectangle centred in `shape`, a quarter of the smaller of each side of `shape` and
    `room` (at least 16 pixels when both allow): the last resort when no drawn region fits."""
    height, width = (min(side, max(16, min(side, space) // 4)) for side, space in zip(shape, room))
    mask = np.ones((height, width), dtype=bool)
    return Region(mask, (shape[0] - height) // 2, (shape[1] - width) // 2,
                  {"source": "rectangle"})


# ----------------------------------------------------------------------------- synthesizer


class JpegHistorySynthesizer:
    """Draws JPEG files with known compression histories from a photo library."""

    def __init__(self, library: PhotoLibrary, kinds: dict[str, float] | None = None,
                 odds: HistoryOdds | None = None, max_side: int = 512, min_side: int = 256,
                 authentic_fraction: float | None = None):
        """kinds: weight per kind (default DEFAULT_HISTORY_KINDS); authentic_fraction, when
        given, rescales the authentic kinds' weights to that share of the total. Image sides
        are multiples of 8 in [min_side, max_side] where the photo allows (min_side is capped
        at max_side)."""
        if len(library) == 0:
            raise ValueError("the photo library is empty")
        weights = checked_kind_weights(kinds, DEFAULT_HISTORY_KINDS, HISTORY_KINDS, "kind")
        if authentic_fraction is not None:
            weights = _with_authentic_share(weights, authentic_fraction)
        if len(library) < 2:
            for kind in NEEDS_TWO_PHOTOS:
                weights.pop(kind, None)
            if sum(weights.values()) <= 0:
                raise ValueError("splicing needs at least two photos")
        if max_side < GRID or min_side < GRID:
            raise ValueError("image sides must be at least 8 pixels")
        self.library = library
        self.kinds = {kind: weight for kind, weight in weights.items() if weight > 0}
        self.odds = odds or HistoryOdds()
        self.max_side = max_side // GRID * GRID
        self.min_side = min(min_side, max_side) // GRID * GRID
        self._is_jpeg: dict[int, bool] = {}

    def sample(self, index: int, seed: int) -> HistoryForgery:
        """Example `index` of the stream fixed by `seed` (identical bytes on every call)."""
        return self.generate(np.random.default_rng([seed, index]))

    def generate(self, rng: np.random.Generator) -> HistoryForgery:
        kind = _choose(rng, self.kinds)
        if kind in AUTHENTIC_KINDS:
            host = self._host(rng, self._prepare(rng, erase=kind == "single"),
                              compressed=kind != "single", aligned=kind != "double-nonaligned")
            image, mask, region = host.canvas, np.zeros(host.canvas.shape[:2], np.uint8), None
        else:
            host, image, mask, region = self._tamper(rng, kind)
        chain = [stage for stage in (host.stage, *(region or {}).pop("stages", ())) if stage]
        # a table saved again on its own grid is nearly a no-op: the last table must differ
        aligned = [stage["table"]["luma"] for stage in chain if stage["grid"] == [0, 0]]
        jpeg, final = self._save(rng, image, "final", [0, 0], avoid=aligned, final=True)
        laundering = self._launder(rng, jpeg)
        if laundering:
            jpeg = laundering.pop()
        history = {"kind": kind, "tampered": kind in TAMPERED_KINDS,
                   "size": [int(image.shape[0]), int(image.shape[1])], "host": host.info,
                   "region": region, "chain": [*chain, final, *laundering],
                   "mask_fraction": round(float(mask.mean()), 6)}
        return HistoryForgery(jpeg=jpeg, mask=mask, history=history)

    # --- photos, hosts and compressions

    def _source_is_jpeg(self, index: int) -> bool:
        if index not in self._is_jpeg:
            try:
                with open(self.library.paths[index], "rb") as handle:
                    self._is_jpeg[index] = handle.read(3) == JPEG_MAGIC
            except OSError:
                self._is_jpeg[index] = False
        return self._is_jpeg[index]

    def _prepare(self, rng: np.random.Generator, exclude: int | None = None,
                 erase: bool = False) -> _Photo:
        """A random photo, downscaled (which erases a JPEG source's own blocking) by chance,
        or always when `erase` and the photo came from a JPEG file."""
        index, rgb, labels, name = self.library.draw(rng, exclude)
        is_jpeg = self._source_is_jpeg(index)
        chance = self.odds.erase_source_jpeg if is_jpeg else self.odds.rescale_other
        shrink = rng.random() < chance or (erase and is_jpeg)
        low = max(0.5, (self.min_side + GRID) / min(rgb.shape[:2]))
        factor = float(rng.uniform(low, 0.9)) if shrink and low < 0.9 else 1.0
        resample = ("bilinear", "bicubic", "lanczos")[int(rng.integers(3))]
        if factor < 1.0:
            size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, RESAMPLERS[resample]))
            if labels is not None:
                labels = np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST))
        info = {"photo": name, "source": "jpeg" if is_jpeg else "other",
                "scale": round(factor, 4), "resample": resample if factor < 1.0 else None,
                "size": _ints(*rgb.shape[:2])}
        # drawn only when asked for, so that the other odds give the bytes they always gave
        if self.odds.defocus > 0 and rng.random() < self.odds.defocus:
            rgb, info["defocus"] = defocus(rng, rgb, labels, self.odds.defocus_sigma)
        return _Photo(rgb, labels, index, info)

    def _final_size(self, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[int, int]:
        """Sides multiples of 8, each half to all of what the photo allows (leaving 8 pixels to
        crop from) and within [min_side, max_side]."""
        sides = []
        for length in shape[:2]:
            most = min(self.max_side, length - GRID) // GRID
            if most < 1:
                raise ImageReadError(f"a photo side of {length} pixels is too small")
            least = min(most, max(1, self.min_side // GRID, most // 2))
            sides.append(GRID * int(rng.integers(least, most + 1)))
        return sides[0], sides[1]

    def _host(self, rng: np.random.Generator, photo: _Photo, compressed: bool, aligned: bool
              ) -> _Host:
        """The host: a window of the photo (saved once if `compressed`, its grid at the window's
        corner), then cropped to the final size at an offset on or off that grid."""
        height, width = self._final_size(rng, photo.rgb.shape)
        top = int(rng.integers(0, photo.rgb.shape[0] - height - GRID + 1))
        left = int(rng.integers(0, photo.rgb.shape[1] - width - GRID + 1))
        window = photo.rgb[top:top + height + GRID, left:left + width + GRID]
        if aligned:
            offset = (GRID * int(rng.integers(2)), GRID * int(rng.integers(2)))
        else:
            offset = _off_grid_phase(rng)
        stage = None
        if compressed:
            grid = _phase(-offset[0], -offset[1])
            data, stage = self._save(rng, np.ascontiguousarray(window), "host", grid)
            window = decode_jpeg(data)
        rows = slice(offset[0], offset[0] + height)
        cols = slice(offset[1], offset[1] + width)
        labels = None
        if photo.labels is not None:
            labels = photo.labels[top:top + height + GRID, left:left + width + GRID][rows, cols]
        info = {**photo.info, "window": _ints(top, left, height + GRID, width + GRID),
                "crop": _ints(*offset), "compressed": compressed,
                "grid": stage["grid"] if stage else None}
        return _Host(np.ascontiguousarray(window[rows, cols]), labels, stage, info)

    def _save(self, rng: np.random.Generator, image: np.ndarray, role: str,
              grid: list[int] | None, avoid: Sequence[Sequence[int]] = (), final: bool = False
              ) -> tuple[bytes, dict]:
        """Saves with freshly drawn tables whose luma table is none of `avoid`: the bytes and
        the stage's record."""
        avoid = [list(table) for table in avoid]
        quality = (self.odds.final_quality or self.odds.quality) if final else self.odds.quality
        for _ in range(MAX_ATTEMPTS):
            tables = draw_tables(rng, self.odds.tables, quality)
            if list(tables.luma) not in avoid:
                break
        while list(tables.luma) in avoid:
            tables = _nudged(tables)
        subsampling = _choose(rng, self.odds.subsampling)
        progressive = final and bool(rng.random() < self.odds.progressive)
        data = encode_with_tables(image, tables, subsampling, progressive)
        stage = {"role": role, "grid": grid, "table": tables.to_json(),
                 "subsampling": subsampling, "progressive": progressive}
        return data, stage

    def _launder(self, rng: np.random.Generator, jpeg: bytes) -> list:
        """Re-saves of the finished file on its own grid (none by chance): their stage
        records, then the last file's bytes as the list's final item."""
        odds = self.odds
        if odds.launder <= 0 or rng.random() >= odds.launder:
            return []
        times = 2 if rng.random() < odds.launder_twice else 1
        stages = []
        for _ in range(times):
            tables = draw_tables(rng, odds.tables, odds.launder_quality)
            subsampling = _choose(rng, odds.subsampling)
            jpeg = encode_with_tables(decode_jpeg(jpeg), tables, subsampling, False)
            stages.append({"role": "launder", "grid": [0, 0], "table": tables.to_json(),
                           "subsampling": subsampling, "progressive": False})
        return [*stages, jpeg]

    # --- tampering

    def _tamper(self, rng: np.random.Generator, kind: str):
        """(host, image, mask, region record) for a tampered kind; the region record carries
        the region's own compressions under "stages" until the chain is assembled."""
        odds = self.odds
        host_photo = self._prepare(rng)
        raw = kind == "splice" and rng.random() < odds.host_raw
        host = self._host(rng, host_photo, compressed=not raw,
                          aligned=bool(rng.random() < odds.host_aligned))
        if kind == "splice":
            return (host, *self._splice(rng, host, host_photo.index))
        if kind == "copy-move":
            return (host, *self._copy_move(rng, host))
        return (host, *self._transformed(rng, host, host_photo.index))

    def _pick(self, rng: np.random.Generator, photo_shape: tuple[int, int],
              labels: np.ndarray | None, area: float, room: tuple[int, int],
              shapes: Sequence[str]) -> Region | None:
        """A region of about `area` pixels whose box fits in `room`."""
        region = pick_region(rng, photo_shape, labels, area, shapes, SEGMENT_FRACTION,
                             SEGMENT_ODDS)
        if region is None or region.mask.shape[0] > room[0] or region.mask.shape[1] > room[1]:
            return None
        return region

    def _feather(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(0.5, 2.0)) if rng.random() < self.odds.feather else 0.0

    def _splice(self, rng: np.random.Generator, host: _Host, host_index: int):
        """A donor region saved once with its own tables, pasted with a drawn grid phase."""
        canvas = host.canvas
        height, width = canvas.shape[:2]
        donor = self._prepare(rng, exclude=host_index)
        room = (height - GRID, width - GRID)
        for attempt in range(MAX_ATTEMPTS + 1):
            if attempt < MAX_ATTEMPTS:
                wanted = _loguniform(rng, 0.015, 0.25) * height * width
                region = self._pick(rng, donor.rgb.shape[:2], donor.labels,
                                    min(wanted, 0.5 * donor.rgb.shape[0] * donor.rgb.shape[1]),
                                    room, ("blob", "polygon"))
                if region is None or not _region_fits(region.mask, canvas.shape):
                    continue
            else:
                region = _fallback_region(donor.rgb.shape[:2], room)
            # the donor is saved as a window around the region, its grid at the window's corner
            top = region.top - int(rng.integers(0, min(region.top, 2 * GRID) + 1))
            left = region.left - int(rng.integers(0, min(region.left, 2 * GRID) + 1))
            bottom = min(donor.rgb.shape[0], region.top + region.mask.shape[0] + GRID)
            right = min(donor.rgb.shape[1], region.left + region.mask.shape[1] + GRID)
            inner = Region(region.mask, region.top - top, region.left - left, region.info)
            aligned = bool(rng.random() < self.odds.paste_aligned)
            phase = (0, 0) if aligned else _off_grid_phase(rng)
            # the region's top-left lands at (y, x) with y - inner.top = phase (mod 8)
            y = _place_on_phase(rng, height, inner.mask.shape[0], inner.top + phase[0])
            x = _place_on_phase(rng, width, inner.mask.shape[1], inner.left + phase[1])
            if y is None or x is None:
                continue
            grid = _phase(y - inner.top, x - inner.left)
            same_history = host.stage is not None and host.stage["grid"] == grid
            avoid = [host.stage["table"]["luma"]] if same_history else ()
            window = np.ascontiguousarray(donor.rgb[top:bottom, left:right])
            data, stage = self._save(rng, window, "donor", grid, avoid=avoid)
            feather = self._feather(rng)
            layer = cut_layer(decode_jpeg(data), inner, 1.0, 0.0, False, feather, "bilinear")
            pad = (layer.alpha.shape[0] - inner.mask.shape[0]) // 2
            image, mask = paste(canvas, layer, y - pad, x - pad)
            donor_info = {**donor.info, "window": _ints(top, left, bottom - top, right - left)}
            record = {"from": "donor", "donor": donor_info,
                      "shape": region.info, "box": _ints(y, x, *inner.mask.shape),
                      "grid": grid, "feather": round(feather, 3), "attempts": attempt + 1,
                      "stages": [stage]}
            return image, mask, record
        raise AssertionError("unreachable: the fallback region always fits")

    def _copy_move(self, rng: np.random.Generator, host: _Host):
        """A region of the decoded host moved by a shift that is off the 8x8 grid."""
        canvas = host.canvas
        height, width = canvas.shape[:2]
        room = (height - GRID, width - GRID)
        for attempt in range(MAX_ATTEMPTS + 1):
            if attempt < MAX_ATTEMPTS:
                wanted = _loguniform(rng, 0.01, 0.15) * height * width
                region = self._pick(rng, canvas.shape[:2], host.labels, wanted, room,
                                    ("blob", "polygon", "rectangle"))
                if region is None or not _region_fits(region.mask, canvas.shape):
                    continue
            else:
                region = _fallback_region(canvas.shape[:2], room)
            placed = self._away_from(rng, canvas.shape[:2], region)
            if placed is None:
                continue
            y, x = placed
            feather = self._feather(rng)
            layer = cut_layer(canvas, region, 1.0, 0.0, False, feather, "bilinear")
            pad = (layer.alpha.shape[0] - region.mask.shape[0]) // 2
            image, mask = paste(canvas, layer, y - pad, x - pad)
            shift = [y - region.top, x - region.left]
            host_grid = host.stage["grid"]
            record = {"from": "host", "shape": region.info,
                      "source_box": _ints(region.top, region.left, *region.mask.shape),
                      "box": _ints(y, x, *region.mask.shape), "shift": _ints(*shift),
                      "grid": _phase(host_grid[0] + shift[0], host_grid[1] + shift[1]),
                      "feather": round(feather, 3), "attempts": attempt + 1, "stages": []}
            return image, mask, record
        raise AssertionError("unreachable: the fallback region always fits")

    @staticmethod
    def _away_from(rng: np.random.Generator, shape: tuple[int, int], region: Region
                   ) -> tuple[int, int] | None:
        """An off-grid placement of the region overlapping its source box least (of 6)."""
        box_h, box_w = region.mask.shape
        best, best_overlap = None, None
        for _ in range(6):
            phase = _off_grid_phase(rng)
            y = _place_on_phase(rng, shape[0], box_h, region.top + phase[0])
            x = _place_on_phase(rng, shape[1], box_w, region.left + phase[1])
            if y is None or x is None:
                continue
            overlap = (max(0, box_h - abs(y - region.top)) * max(0, box_w - abs(x - region.left)))
            if best_overlap is None or overlap < best_overlap:
                best, best_overlap = (y, x), overlap
            if overlap == 0:
                break
        return best

    def _transformed(self, rng: np.random.Generator, host: _Host, host_index: int):
        """A region resized and / or rotated before pasting: its history is erased."""
        canvas = host.canvas
        height, width = canvas.shape[:2]
        stages, source_info = [], None
        from_donor = len(self.library) > 1 and rng.random() < self.odds.transformed_donor
        if from_donor:
            donor = self._prepare(rng, exclude=host_index)
            source, labels, source_info = donor.rgb, donor.labels, dict(donor.info)
            if rng.random() < self.odds.transformed_donor_jpeg:
                data, stage = self._save(rng, np.ascontiguousarray(source), "donor", None)
                source = decode_jpeg(data)
                stages.append(stage)  # grid None: resampling moves it off any grid
        else:
            source, labels = canvas, host.labels
        for attempt in range(MAX_ATTEMPTS + 1):
            mode = ("resize", "rotate", "both")[int(rng.integers(3))]
            scale, angle = 1.0, 0.0
            if mode != "rotate":
                scale = float(rng.uniform(1.1, 1.6)) ** (1 if rng.random() < 0.5 else -1)
            if mode != "resize":
                angle = float(rng.uniform(5.0, 30.0)) * (1 if rng.random() < 0.5 else -1)
            flip = bool(rng.random() < 0.3)
            resample = ("bilinear", "bicubic")[int(rng.integers(2))]
            if attempt < MAX_ATTEMPTS:
                wanted = _loguniform(rng, 0.015, 0.2) * height * width
                region = self._pick(rng, source.shape[:2], labels, wanted / scale ** 2,
                                    source.shape[:2], ("blob", "polygon", "rectangle"))
                if region is None:
                    continue
            else:  # scaled by at most 1.6 and rotated, a quarter of the canvas still fits
                region = _fallback_region(source.shape[:2], (height, width))
            feather = self._feather(rng)
            layer = cut_layer(source, region, scale, angle, flip, feather, resample)
            box = None if layer is None else layer.region_box()
            if box is None or box[0].stop - box[0].start > height or \
                    box[1].stop - box[1].start > width:
                continue
            y, x = place_inside(rng, canvas.shape[:2], box)
            image, mask = paste(canvas, layer, y, x)
            if attempt < MAX_ATTEMPTS and not _region_fits(mask, canvas.shape):
                continue
            record = {"from": "donor" if from_donor else "host", "donor": source_info,
                      "shape": region.info,
                      "box": _ints(y + box[0].start, x + box[1].start,
                                   box[0].stop - box[0].start, box[1].stop - box[1].start),
                      "grid": None, "transform": {"scale": round(scale, 4),
                                                  "angle": round(angle, 3), "flip": flip,
                                                  "resample": resample},
                      "feather": round(feather, 3), "attempts": attempt + 1, "stages": stages}
            return image, mask, record
        raise ImageReadError("no transformed region could be placed")


def decode_jpeg_displayed(data: bytes) -> np.ndarray:
    """A JPEG's pixels as displayed (EXIF orientation applied), H x W x 3 uint8."""
    from PIL import ImageOps
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _nudged(tables: QuantTables) -> QuantTables:
    """The same tables with the last luma step one larger (cycling within [1, 255])."""
    luma = list(tables.luma)
    luma[-1] = luma[-1] % 255 + 1
    return QuantTables(tables.family, tuple(luma), tables.chroma,
                       {**tables.params, "nudged": tables.params.get("nudged", 0) + 1})


def _with_authentic_share(weights: dict[str, float], share: float) -> dict[str, float]:
    """The weights rescaled so the authentic kinds sum to `share` and the others to the rest."""
    if not 0.0 <= share <= 1.0:
        raise ValueError("authentic_fraction must lie in [0, 1]")
    groups = {True: AUTHENTIC_KINDS, False: TAMPERED_KINDS}
    result = {}
    for authentic, names in groups.items():
        target = share if authentic else 1.0 - share
        present = {name: weights.get(name, 0.0) for name in names}
        total = sum(present.values())
        if target > 0 and total <= 0:  # none given: share the target evenly
            present, total = {name: 1.0 for name in names}, float(len(names))
        result.update({name: target * value / total if total else 0.0
                       for name, value in present.items()})
    return result


# ----------------------------------------------------------------------------- dataset on disk


def write_history_dataset(photo_roots: Sequence[str | Path], out_dir: str | Path, count: int,
                          seed: int, max_side: int = 512,
                          authentic_fraction: float | None = None) -> dict:
    """Writes `count` examples as the project's dataset layout: tampered/<id>.jpg with
    masks/<id>.png (0/255), or authentic/<id>.jpg; each .jpg holds the exact final bytes.
    manifest.json records every sample's history (one sample per line)."""
    library = PhotoLibrary(photo_roots)
    synthesizer = JpegHistorySynthesizer(library, max_side=max_side,
                                         authentic_fraction=authentic_fraction)
    out_dir = Path(out_dir)
    folders = dataset_folders(out_dir)
    samples, kinds, kept = [], Counter(), set()
    for index in range(count):
        forgery = synthesizer.sample(index, seed)
        sample_id = f"synth_{index:06d}"
        folder = folders["tampered" if forgery.tampered else "authentic"]
        image_path = folder / f"{sample_id}.jpg"
        _write_atomic(image_path, forgery.jpeg)
        kept.add(image_path)
        mask_path = None
        if forgery.tampered:
            mask_path = folders["masks"] / f"{sample_id}.png"
            _write_atomic(mask_path, _png_bytes(forgery.mask * np.uint8(255)))
            kept.add(mask_path)
        kinds[forgery.kind] += 1
        samples.append({"id": sample_id, "kind": forgery.kind,
                        "image": image_path.relative_to(out_dir).as_posix(),
                        "mask": mask_path.relative_to(out_dir).as_posix() if mask_path else None,
                        "history": forgery.history})
    header = {"generator": "forgeryloc.data.jpeg_history", "seed": seed, "count": count,
              "max_side": max_side, "kinds": synthesizer.kinds,
              "photo_roots": [str(root) for root in photo_roots], "photos": len(library)}
    lines = ",\n".join(json.dumps(sample, separators=(",", ":")) for sample in samples)
    manifest = json.dumps(header, indent=1)[:-2] + ',\n "samples": [\n' + lines + "\n]}\n"
    manifest_path = out_dir / "manifest.json"
    _write_atomic(manifest_path, manifest.encode())
    _remove_stale(folders.values(), kept)
    tampered = sum(kinds[kind] for kind in TAMPERED_KINDS)
    return {"out_dir": str(out_dir), "count": count, "photos": len(library),
            "tampered": tampered, "authentic": count - tampered,
            "kinds": dict(sorted(kinds.items())), "manifest": str(manifest_path)}
