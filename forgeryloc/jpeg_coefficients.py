"""A JPEG file's quantised DCT coefficients and quantisation tables, read from the file bytes.

The compression stream, training and the evidence clues all start here. The entropy decoding is
libjpeg-turbo's, through the maintained binding `jpeglib`; this module adds what a forensic scan
of untrusted files needs around it:

- a walk over the marker segments (no entropy decoding) that recognises a JPEG, refuses an image
  above `max_pixels` from its frame header before any coefficient is read, reads the frame, the
  quantisation tables (as each component latched them at its first scan, as libjpeg does) and
  the colour interpretation (JFIF / Adobe markers, component ids), and hands libjpeg the file
  without its APPn / COM segments: coefficients do not depend on them, and jpeglib's own
  handler of those markers trusts their length fields and has room for 50 of them;
- libjpeg's messages ("Premature end of JPEG file", "Corrupt JPEG data: ...") are caught instead
  of reaching the terminal, and returned as `decode_warnings` (libjpeg prints the first warning
  of each pass only, so these are the first ones, not a count);
- the EXIF orientation that `imaging.decode_picture` applies to the pixels is applied to the
  block grid, so that block (i, j) lies over the same displayed pixels as the decoded image.

Outcomes: `None` for a file without luma coefficients (not a JPEG: PNG, TIFF, ...; or a JPEG
whose first component is not luminance: CMYK, RGB-coded); `UnsupportedJpegError` for a JPEG
without 8-bit DCT coefficients (lossless, hierarchical, 12-bit); `JpegCoefficientsError` for a
broken header or a fatal libjpeg error; otherwise `JpegCoefficients`, possibly with
`decode_warnings` (a truncated file reads with its missing blocks zero, as libjpeg decodes it).

Block grid and orientation: the grid has ceil(H / 8) x ceil(W / 8) luma blocks in the displayed
orientation. Block (i, j) covers displayed pixels [oy + 8i, oy + 8i + 8) x [ox + 8j, ox + 8j + 8)
with (oy, ox) = `origin`. The stored image's grid starts at its pixel 0, so origin is (0, 0)
unless an EXIF flip moves a partial edge block (height or width not a multiple of 8) to the top
or left: then that block sticks out of the image by the padding (origin in (-8, 0]), its padding
rows/columns are outside the picture, and no displayed pixel is lost. `whole_blocks` drops the
partial edge blocks instead, leaving a window of the image tiled exactly.

Cost: jpeglib entropy-decodes the file twice (once to count its scans, once for the
coefficients). Memory: the luma result holds 2 bytes per pixel (int16); at the peak, libjpeg's
coefficient buffers of every component and jpeglib's copy of them coexist: about 6 bytes per
pixel at 4:2:0, 12 at 4:4:4 (a 12-megapixel 4:2:0 photo: 77 MB above the file's bytes).
Reading is serialised by a lock: jpeglib keeps marker state in C globals, and its choice of
libjpeg build is process-wide.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import io
import logging
import os
import platform
import tempfile
import threading
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .imaging import (DEFAULT_MAX_PIXELS, ImageReadError, _exif_fields, _pillow_pixel_limit,
                      one_line, read_bytes)

logger = logging.getLogger(__name__)

BLOCK = 8
SOI = b"\xff\xd8"  # the start-of-image marker every JPEG stream begins with
LIBJPEG_BUILD = "turbo210"  # libjpeg-turbo 2.1 among jpeglib's builds: fuzzed, decodes arithmetic
_LIBJPEG_LOCK = threading.Lock()

# Frame headers (SOFn) by the coding they announce; the others carry no 8-bit DCT blocks to read.
_CODINGS = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive", 0xC9: "arithmetic",
            0xCA: "arithmetic-progressive"}
_UNREADABLE_CODINGS = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical progressive",
                       0xC7: "hierarchical lossless", 0xCB: "arithmetic lossless",
                       0xCD: "hierarchical arithmetic", 0xCE: "hierarchical arithmetic",
                       0xCF: "hierarchical arithmetic lossless"}
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # TEM, SOI, RSTn: markers without a length
_EOI, _SOS, _DQT, _APP0, _APP14, _COM = 0xD9, 0xDA, 0xDB, 0xE0, 0xEE, 0xFE
_LUMA_COLOURS = ("grey", "YCbCr", "YCCK")  # colour spaces whose first component is luminance

# EXIF orientation -> (transpose, flip rows, flip columns), applied in that order: the steps of
# Pillow's ImageOps.exif_transpose (2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 270,
# 7 transverse, 8 rotate 90) written as numpy array operations.
_ORIENTATION_STEPS = {1: (False, False, False), 2: (False, False, True),
                      3: (False, True, True), 4: (False, True, False),
                      5: (True, False, False), 6: (True, False, True),
                      7: (True, True, True), 8: (True, True, False)}
# Flipping a block's 8 samples multiplies its frequency k by (-1)^k.
_FLIP_SIGNS = np.array([1, -1, 1, -1, 1, -1, 1, -1], dtype=np.int16)


def _zigzag_to_natural() -> np.ndarray:
    """Row-major index (8u + v, u the vertical frequency) of each of the 64 zigzag positions."""
    cells = sorted(((u, v) for u in range(BLOCK) for v in range(BLOCK)),
                   key=lambda cell: (sum(cell), cell[0] if sum(cell) % 2 else -cell[0]))
    return np.array([u * BLOCK + v for u, v in cells])


_ZIGZAG = _zigzag_to_natural()


class JpegCoefficientsError(ImageReadError):
    """A JPEG whose coefficients cannot be read: a broken header or a fatal libjpeg error."""


class UnsupportedJpegError(JpegCoefficientsError):
    """A well-formed JPEG without 8-bit DCT coefficients (lossless, hierarchical, 12-bit, DNL)."""


@dataclass(frozen=True)
class ChromaCoefficients:
    cb: np.ndarray        # Hc x Wc x 8 x 8 int16, displayed orientation
    cr: np.ndarray        # Hc x Wc x 8 x 8 int16
    cb_table: np.ndarray  # 8 x 8 uint16, natural order (row = vertical frequency)
    cr_table: np.ndarray  # 8 x 8 uint16
    subsampling: tuple[int, int]  # (vertical, horizontal) factor: (2, 2) at 4:2:0, (1, 1) at 4:4:4
    origin: tuple[int, int]       # displayed pixel of block (0, 0)'s corner, in (-8s, 0]

    @property
    def block_size(self) -> tuple[int, int]:
        """Displayed pixels one chroma block covers: (16, 16) at 4:2:0."""
        return BLOCK * self.subsampling[0], BLOCK * self.subsampling[1]


@dataclass(frozen=True)
class JpegCoefficients:
    luma: np.ndarray        # Hb x Wb x 8 x 8 int16 quantised Y, Hb = ceil(height / 8)
    luma_table: np.ndarray  # 8 x 8 uint16, natural order; transposed with the blocks (EXIF 5-8)
    height: int             # displayed image, in pixels (after orientation)
    width: int
    origin: tuple[int, int]  # displayed pixel of block (0, 0)'s top-left corner, each in (-8, 0]
    orientation: int         # EXIF orientation applied to the grid (1: none)
    coding: str              # baseline, extended, progressive, arithmetic, arithmetic-progressive
    colour: str              # grey, YCbCr or YCCK
    chroma: ChromaCoefficients | None = None
    decode_warnings: tuple[str, ...] = ()  # libjpeg's messages (corrupt or truncated data)

    @property
    def progressive(self) -> bool:
        return self.coding.endswith("progressive")


def read_jpeg_coefficients(source: str | Path | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                           *, orientation: int | None = None, chroma: bool = False
                           ) -> JpegCoefficients | None:
    """Quantised DCT coefficients and tables of a JPEG file (path or bytes), oriented for display.

    orientation: None reads the EXIF orientation as `imaging.decode_picture` does; pass
    `ImageMeta.orientation` of the same bytes to be certain to agree with decoded pixels.
    chroma: also return Cb / Cr (YCbCr and YCCK files). None when there are no luma coefficients
    (not a JPEG, or CMYK / RGB-coded). Raises ImageReadError above max_pixels (checked on the
    frame header, before decoding) and its subclass JpegCoefficientsError for a broken JPEG."""
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) \
        else read_bytes(source)
    if not is_jpeg(data):
        return None
    header = _read_header(data, max_pixels)
    frame = header.frame
    if header.colour not in _LUMA_COLOURS:
        logger.debug("JPEG without a luma component (%s): no coefficients", header.colour)
        return None
    if frame.components[0][1:3] != _most_sampling(frame):
        raise UnsupportedJpegError("JPEG whose luma is subsampled: its blocks are not 8 x 8 "
                                   "pixels")
    factors = _chroma_factors(frame) if chroma and header.colour != "grey" else None
    if factors and (header.tables[1] is None or header.tables[2] is None):
        factors = None
    if orientation is None:
        orientation = _exif_orientation(data)
    steps = _ORIENTATION_STEPS.get(orientation)
    if steps is None:
        orientation, steps = 1, _ORIENTATION_STEPS[1]
    planes, messages = _decode_coefficients(header.stream, 3 if factors else 1)
    expected = (-(-frame.height // BLOCK), -(-frame.width // BLOCK))
    if planes[0].shape[:2] != expected:
        raise JpegCoefficientsError(f"libjpeg gave {planes[0].shape[:2]} luma blocks where the "
                                    f"frame header implies {expected}")
    stored = (frame.height, frame.width)
    luma, luma_table, origin, (height, width) = _orient(planes[0], header.tables[0], (1, 1),
                                                        stored, steps)
    chroma_result = None
    if factors:
        cb, cb_table, chroma_origin, _ = _orient(planes[1], header.tables[1], factors, stored,
                                                 steps)
        cr, cr_table, _, _ = _orient(planes[2], header.tables[2], factors, stored, steps)
        chroma_result = ChromaCoefficients(cb=cb, cr=cr, cb_table=cb_table, cr_table=cr_table,
                                           subsampling=factors[::-1] if steps[0] else factors,
                                           origin=chroma_origin)
    return JpegCoefficients(luma=luma, luma_table=luma_table, height=height, width=width,
                            origin=origin, orientation=orientation, coding=frame.coding,
                            colour=header.colour, chroma=chroma_result,
                            decode_warnings=messages)


def luma_plane(coefficients: JpegCoefficients) -> np.ndarray:
    """8Hb x 8Wb int16: each block's 64 coefficients in place of its pixels (row u, column v);
    plane[r, c] lies over displayed pixel (r + origin[0], c + origin[1])."""
    rows, cols = coefficients.luma.shape[:2]
    # Hb x Wb x 8 x 8 -> Hb x 8 x Wb x 8 -> 8Hb x 8Wb
    return coefficients.luma.transpose(0, 2, 1, 3).reshape(rows * BLOCK, cols * BLOCK)


def crop(coefficients: JpegCoefficients, top: int, left: int, height: int, width: int
         ) -> JpegCoefficients:
    """The coefficients of the displayed pixel window [top, top + height) x [left, left + width),
    which must lie inside the image and on the luma grid (whole blocks: top - origin[0],
    height, ... multiples of 8); the same numbers crop the decoded pixels. Chroma is kept when
    the window also falls on its grid, else dropped."""
    if not (0 <= top and 0 <= left and 0 < height and 0 < width
            and top + height <= coefficients.height and left + width <= coefficients.width):
        raise ValueError(f"window {height}x{width} at ({top}, {left}) is not inside the "
                         f"{coefficients.height}x{coefficients.width} image")
    luma = _window(coefficients.luma, coefficients.origin, (BLOCK, BLOCK),
                   top, left, height, width)
    if luma is None:
        raise ValueError(f"window {height}x{width} at ({top}, {left}) is not on the block grid "
                         f"(origin {coefficients.origin})")
    chroma = coefficients.chroma
    if chroma is not None:
        cb = _window(chroma.cb, chroma.origin, chroma.block_size, top, left, height, width)
        cr = _window(chroma.cr, chroma.origin, chroma.block_size, top, left, height, width)
        chroma = None if cb is None else dataclasses.replace(chroma, cb=cb, cr=cr, origin=(0, 0))
    return dataclasses.replace(coefficients, luma=luma, height=height, width=width,
                               origin=(0, 0), chroma=chroma)


def whole_blocks(coefficients: JpegCoefficients) -> tuple[JpegCoefficients, tuple[int, int]]:
    """The largest window tiled by whole luma blocks (partial edge blocks dropped), and its
    top-left displayed pixel; raises ValueError for an image with no whole block."""
    (origin_y, origin_x) = coefficients.origin
    top, left = origin_y % BLOCK, origin_x % BLOCK
    height = (coefficients.height - top) // BLOCK * BLOCK
    width = (coefficients.width - left) // BLOCK * BLOCK
    return crop(coefficients, top, left, height, width), (top, left)


def _window(blocks: np.ndarray, origin: tuple[int, int], block: tuple[int, int],
            top: int, left: int, height: int, width: int) -> np.ndarray | None:
    """The blocks tiling a pixel window exactly, or None when it is off this grid."""
    spans = []
    for start, size, corner, step in ((top, height, origin[0], block[0]),
                                      (left, width, origin[1], block[1])):
        if (start - corner) % step or size % step:
            return None
        spans.append(slice((start - corner) // step, (start - corner + size) // step))
    return blocks[spans[0], spans[1]]


def _orient(blocks: np.ndarray, table: np.ndarray, factors: tuple[int, int],
            stored: tuple[int, int], steps: tuple[bool, bool, bool]):
    """A stored Hb x Wb x 8 x 8 grid (blocks of 8 * factors pixels, over an image of `stored`
    pixels) as displayed: (blocks, table, origin, displayed size)."""
    transpose, flip_rows, flip_cols = steps
    (height, width), (block_h, block_w) = stored, (BLOCK * factors[0], BLOCK * factors[1])
    if transpose:  # swaps pixel rows with columns: frequency u with v, and the table with it
        blocks, table = blocks.transpose(1, 0, 3, 2), table.T
        height, width, block_h, block_w = width, height, block_w, block_h
    origin_y = origin_x = 0
    if flip_rows:
        blocks = blocks[::-1] * _FLIP_SIGNS[:, None]  # (-1)^u
        origin_y = height - block_h * blocks.shape[0]
    if flip_cols:
        blocks = blocks[:, ::-1] * _FLIP_SIGNS  # (-1)^v
        origin_x = width - block_w * blocks.shape[1]
    return (np.ascontiguousarray(blocks), np.ascontiguousarray(table), (origin_y, origin_x),
            (height, width))


def _exif_orientation(data: bytes) -> int:
    """The orientation imaging.decode_picture applies to these bytes (1 where it cannot read it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on a broken EXIF block
            with _pillow_pixel_limit(None), Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
                return _exif_fields(image)[1]
    except Exception:  # noqa: BLE001 - an unreadable header: the pixels will not be decoded either
        return 1


# --- the marker walk -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    coding: str
    height: int
    width: int
    components: tuple[tuple[int, int, int, int], ...]  # (id, horizontal, vertical factor, slot)


@dataclass(frozen=True)
class _Header:
    frame: _Frame
    tables: tuple[np.ndarray | None, ...]  # per component: 8 x 8 natural order, as latched
    colour: str
    stream: bytes  # the file up to EOI without its APPn / COM segments: what libjpeg reads


def _read_header(data: bytes, max_pixels: int | None) -> _Header:
    """Walks the marker segments (entropy-coded data is skipped, not decoded)."""
    view, markers = memoryview(data), _marker_positions(data)
    frame, jfif, adobe_transform = None, False, None
    slots: dict[int, np.ndarray] = {}
    latched: dict[int, np.ndarray] = {}
    pieces, kept_from, position, end = [], 0, 2, len(data)
    while True:
        index = int(np.searchsorted(markers, position))  # resynchronises past scan data
        if index == len(markers):
            break  # no EOI: a truncated file, libjpeg reads what there is
        position = int(markers[index])
        code = data[position + 1]
        if code == _EOI:
            end = position + 2
            break
        if code in _STANDALONE:
            position += 2
            continue
        length = int.from_bytes(view[position + 2:position + 4], "big")
        segment_end = position + 2 + length
        if length < 2 or segment_end > len(data):
            raise JpegCoefficientsError(f"marker 0x{code:02X} segment of length {length} at "
                                        f"byte {position} runs past the end of the file")
        body = view[position + 4:segment_end]
        if 0xE0 <= code <= 0xEF or code == _COM:
            jfif = jfif or (code == _APP0 and body[:5] == b"JFIF\x00")
            if code == _APP14 and body[:5] == b"Adobe" and len(body) >= 12:
                adobe_transform = body[11]
            pieces.append(view[kept_from:position])
            kept_from = segment_end
        elif code in _CODINGS or code in _UNREADABLE_CODINGS:
            if frame is not None:
                raise JpegCoefficientsError("two frame headers (SOF)")
            frame = _parse_frame(code, body, max_pixels)
        elif code == _DQT:
            _parse_tables(body, slots)
        elif code == _SOS:
            if frame is None:
                raise JpegCoefficientsError("scan before the frame header")
            _latch_tables(body, frame, slots, latched)
        position = segment_end
    if frame is None:
        raise JpegCoefficientsError("no frame header (SOF)")
    pieces.append(view[kept_from:end])
    tables = tuple(latched.get(index, slots.get(slot))
                   for index, (_, _, _, slot) in enumerate(frame.components))
    if tables[0] is None:
        raise JpegCoefficientsError("no quantisation table for the first component")
    return _Header(frame=frame, tables=tables, colour=_colour(frame, jfif, adobe_transform),
                   stream=b"".join(pieces))


@dataclass(frozen=True)
class JpegHeader:
    """What a JPEG's marker segments say, read without entropy decoding (file clues)."""
    coding: str    # baseline, extended, progressive, ...
    colour: str    # grey, YCbCr, YCCK, CMYK, RGB
    height: int    # as stored (before any EXIF orientation)
    width: int
    sampling: tuple[tuple[int, int], ...]   # (horizontal, vertical) factors per component
    tables: tuple[np.ndarray | None, ...]   # per component: 8 x 8 uint16, natural order, stored


def is_jpeg(data: bytes | bytearray | memoryview) -> bool:
    """Whether bytes begin as a JPEG stream does, whatever a decoder calls the format (a
    camera's MPO is a JPEG)."""
    return bytes(data[:2]) == SOI


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame, colour and quantisation tables of a JPEG file's bytes (None when they are
    not a JPEG); raises JpegCoefficientsError for a broken header or a JPEG without 8-bit DCT
    coefficients (UnsupportedJpegError)."""
    if not is_jpeg(data):
        return None
    header = _read_header(data, None)
    frame = header.frame
    sampling = tuple((h, v) for _, h, v, _ in frame.components)
    return JpegHeader(coding=frame.coding, colour=header.colour, height=frame.height,
                      width=frame.width, sampling=sampling, tables=header.tables)


def _marker_positions(data: bytes) -> np.ndarray:
    """Offsets of every 0xFF that starts a marker other than RSTn: inside scan data only RSTn
    markers and stuffed 0xFF 0x00 occur, so the next offset past a scan is the marker after it."""
    octets = np.frombuffer(data, dtype=np.uint8)
    at = np.flatnonzero(octets[:-1] == 0xFF)
    code = octets[at + 1]
    return at[(code != 0x00) & (code != 0xFF) & ((code < 0xD0) | (code > 0xD7))]


def _parse_frame(code: int, body: memoryview, max_pixels: int | None) -> _Frame:
    if len(body) < 6 or len(body) < 6 + 3 * body[5]:
        raise JpegCoefficientsError("frame header (SOF) too short")
    precision, count = body[0], body[5]
    height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
    if max_pixels and height * width > max_pixels:
        raise ImageReadError(f"{width}x{height} pixels exceeds the limit of {max_pixels} "
                                    f"(refused before reading coefficients)")
    if code in _UNREADABLE_CODINGS:
        raise UnsupportedJpegError(f"{_UNREADABLE_CODINGS[code]} JPEG: no DCT coefficients "
                                   f"to read")
    if precision != 8:
        raise UnsupportedJpegError(f"{precision}-bit JPEG: only 8-bit samples are read")
    if height == 0:
        raise UnsupportedJpegError("JPEG whose height is given by a DNL marker")
    components = tuple((body[6 + 3 * i], body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15,
                        body[8 + 3 * i]) for i in range(count))
    if width == 0 or count == 0 or any(not (1 <= h <= 4 and 1 <= v <= 4 and slot <= 3)
                                       for _, h, v, slot in components):
        raise JpegCoefficientsError(f"invalid frame header (SOF): {width}x{height}, "
                                    f"components {components}")
    return _Frame(coding=_CODINGS[code], height=height, width=width, components=components)


def _parse_tables(body: memoryview, slots: dict[int, np.ndarray]) -> None:
    """DQT: 8- or 16-bit tables in zigzag order, stored 8 x 8 in natural order by slot."""
    at = 0
    while at < len(body):
        wide, slot = body[at] >> 4, body[at] & 15
        size = 64 * (wide + 1)
        if wide > 1 or slot > 3 or at + 1 + size > len(body):
            raise JpegCoefficientsError("invalid quantisation table segment (DQT)")
        values = np.frombuffer(body, dtype=">u2" if wide else np.uint8, count=64, offset=at + 1)
        table = np.empty(64, dtype=np.uint16)
        table[_ZIGZAG] = values
        slots[slot] = table.reshape(BLOCK, BLOCK)
        at += 1 + size


def _latch_tables(body: memoryview, frame: _Frame, slots: dict[int, np.ndarray],
                  latched: dict[int, np.ndarray]) -> None:
    """Each component keeps the table its slot held when its first scan began (a later DQT for
    the same slot does not change how its coefficients were quantised)."""
    count = body[0] if len(body) else 0
    if len(body) < 1 + 2 * count:
        raise JpegCoefficientsError("scan header (SOS) too short")
    ids = [component[0] for component in frame.components]
    for selector in body[1:1 + 2 * count:2]:
        if selector in ids:
            index = ids.index(selector)
            slot = frame.components[index][3]
            if index not in latched and slot in slots:
                latched[index] = slots[slot]


def _colour(frame: _Frame, jfif: bool, adobe_transform: int | None) -> str:
    """The colour space libjpeg infers (jdapimin.c's rules, without its big-gamut variant)."""
    ids = [component[0] for component in frame.components]
    if len(ids) == 1:
        return "grey"
    if len(ids) == 3:
        if jfif:
            return "YCbCr"
        if adobe_transform is not None:
            return "RGB" if adobe_transform == 0 else "YCbCr"
        return "RGB" if ids == [0x52, 0x47, 0x42] else "YCbCr"  # ids 'R', 'G', 'B'
    if len(ids) == 4:
        return "CMYK" if not adobe_transform else "YCCK"
    return f"{len(ids)} components"


def _most_sampling(frame: _Frame) -> tuple[int, int]:
    """(horizontal, vertical) sampling factors of the best-sampled component."""
    return (max(h for _, h, _, _ in frame.components), max(v for _, _, v, _ in frame.components))


def _chroma_factors(frame: _Frame) -> tuple[int, int] | None:
    """(vertical, horizontal) subsampling of Cb and Cr, or None when they differ or are odd."""
    most_h, most_v = _most_sampling(frame)
    factors = {(most_v // v, most_h // h) if most_v % v == 0 and most_h % h == 0 else None
               for _, h, v, _ in frame.components[1:3]}
    return factors.pop() if len(factors) == 1 else None


# --- libjpeg ---------------------------------------------------------------------------------


def _decode_coefficients(stream: bytes, count: int) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """The first `count` components' quantised coefficients (each Hb x Wb x 8 x 8 int16) and
    libjpeg's messages. jpeglib reads files only: the stream goes through a private temporary
    folder."""
    import jpeglib  # imported here: only reading coefficients needs the C library

    failure = None
    with _LIBJPEG_LOCK, tempfile.TemporaryDirectory(prefix="forgeryloc-jpeg-") as folder:
        path = os.path.join(folder, "stream.jpg")
        with open(path, "wb") as handle:
            handle.write(stream)
        with _captured_c_stderr() as messages:
            try:
                with _libjpeg_build():
                    jpeg = jpeglib.read_dct(path)
                    planes = [jpeg.Y, jpeg.Cb, jpeg.Cr][:count]
            except (OSError, ValueError, IndexError, RuntimeError, MemoryError) as error:
                failure = error
    if failure is not None or any(plane is None for plane in planes):
        reason = "; ".join(messages) or one_line(str(failure or "a component is missing"))
        raise JpegCoefficientsError(f"corrupt JPEG ({reason})")
    if messages:
        logger.debug("libjpeg: %s", "; ".join(messages))
    return planes, tuple(messages)


def _libjpeg_build() -> contextlib.AbstractContextManager:
    """jpeglib's version switch to LIBJPEG_BUILD for one read (its default build is libjpeg 6b
    of 1998, without arithmetic decoding); jpeglib's default where that build is missing."""
    import jpeglib

    return jpeglib.version(LIBJPEG_BUILD) if _has_build() else contextlib.nullcontext()


@functools.cache
def _has_build() -> bool:
    import jpeglib

    if LIBJPEG_BUILD in jpeglib.version.versions():
        return True
    logger.info("jpeglib has no %s build; using its default libjpeg", LIBJPEG_BUILD)
    return False


@contextlib.contextmanager
def _captured_c_stderr():
    """Collects what C code prints through stdio's `stderr` meanwhile (libjpeg's messages) into
    the yielded list, once the block ends, instead of letting it reach the terminal. Only the
    C stream is swapped (glibc's `stderr` variable, for an in-memory stream): Python's
    sys.stderr (progress bars, logging) writes to the descriptor itself and is not caught.
    Elsewhere than glibc the list stays empty and the messages reach the terminal."""
    messages: list[str] = []
    stdio = _glibc_stdio()
    if stdio is None:
        yield messages
        return
    buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
    stream = stdio.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    previous = stdio.stderr.value
    if stream:
        stdio.stderr.value = stream
    try:
        yield messages
    finally:
        if stream:
            stdio.stderr.value = previous
            stdio.fclose(stream)
            text = ctypes.string_at(buffer.value, size.value) if buffer.value else b""
            stdio.free(buffer.value)
            lines = (line.strip() for line in text.decode("utf-8", "replace").splitlines())
            messages.extend(dict.fromkeys(line for line in lines if line))  # each pass repeats


@functools.cache
def _glibc_stdio():
    """glibc's `stderr` variable and the stdio calls to swap it, or None elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        stdio = types.SimpleNamespace(stderr=ctypes.c_void_p.in_dll(libc, "stderr"))
        stdio.open_memstream = libc.open_memstream
        stdio.open_memstream.restype = ctypes.c_void_p
        stdio.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.POINTER(ctypes.c_size_t)]
        stdio.fclose = libc.fclose
        stdio.fclose.argtypes = [ctypes.c_void_p]
        stdio.free = libc.free
        stdio.free.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError, ValueError):
        return None
    return stdio
