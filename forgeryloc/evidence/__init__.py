"""Forensic evidence beside the network's map: clues read from a file's bytes and classic
evidence layers computed from its decoded pixels at their own size.

  file_clues.py   JPEG encoding (tables, quality, IJG or not, fingerprint, subsampling,
                  coding) and metadata consistency (editing software, dates, EXIF
                  thumbnail, camera fields)
  double_jpeg.py  aligned double JPEG compression: an image estimate and a block map
  ela.py          error level analysis
  noise.py        local noise level of a high-pass residual
  c2pa_clue.py    Content Credentials through the CAI's binding (optional extra)
  layers.py       the evidence pictures a scan writes (NAME.ela.png, NAME.noise.png,
                  NAME.dq.png)

`file_clues` gathers the per-image record every scan writes; each clue is a named fact, and
none is a verdict.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from ..imaging import ImageMeta, one_line
from ..jpeg_coefficients import JpegCoefficients, JpegCoefficientsError, read_jpeg_header
from . import c2pa_clue, double_jpeg, noise
from .file_clues import jpeg_clues, metadata_clues
from .layers import LAYERS

__all__ = ["LAYERS", "file_clues", "double_compression", "double_jpeg_fits"]


def file_clues(data: bytes, meta: ImageMeta, picture: Image.Image | None,
               jpeg: JpegCoefficients | None, jpeg_note: str = "",
               preview: np.ndarray | None = None) -> dict:
    """The clues of one file: its bytes, what decoding them gave (meta, the displayed
    picture), its luma coefficients when it is a JPEG (or why there are none: jpeg_note),
    and optionally a reduced copy of the picture (for the EXIF thumbnail comparison)."""
    clues: dict = {"jpeg": None, "decode_warnings": [], "metadata": {},
                   "c2pa": c2pa_clue.c2pa_record(data, meta.format)}
    try:
        header = read_jpeg_header(data)
    except JpegCoefficientsError as error:
        header, clues["jpeg"] = None, {"error": one_line(str(error))}
    if header is not None:
        record = jpeg_clues(header)
        if jpeg is not None:
            clues["decode_warnings"] = list(jpeg.decode_warnings)
            record["double_compression"] = double_compression(jpeg, picture)
        else:
            record["double_compression"] = None
            if jpeg_note.startswith("unreadable"):
                clues["decode_warnings"] = [jpeg_note]
        clues["jpeg"] = record
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as image:  # the header only: no pixels
                small = preview if preview is not None else picture
                clues["metadata"] = metadata_clues(image, small, meta.orientation)
        except Exception:  # noqa: BLE001 - the file decoded once; its metadata are optional
            pass
    return clues


def double_compression(jpeg: JpegCoefficients, picture: Image.Image | None) -> dict | None:
    """double_jpeg.estimate of a JPEG, calibrated on its decoded picture."""
    fits = double_jpeg_fits(jpeg, picture)
    return None if fits is None else double_jpeg.estimate(fits)


def double_jpeg_fits(jpeg: JpegCoefficients, picture) -> list | None:
    """The per-frequency fits of double_jpeg, or None when the picture is not the JPEG's own
    size (then the calibration would not lie over the same pixels)."""
    if picture is None:
        return None
    height, width = _size(picture)
    if (height, width) != (jpeg.height, jpeg.width):
        return None
    box = double_jpeg.calibration_box(height, width)
    if isinstance(picture, Image.Image):
        grey = np.asarray(picture.crop(box).convert("L"))
    else:
        left, top, right, bottom = box
        grey = noise.grey(picture[top:bottom, left:right])
    return double_jpeg.fit_frequencies(jpeg, grey)


def _size(picture) -> tuple[int, int]:
    if isinstance(picture, Image.Image):
        return picture.height, picture.width
    return tuple(np.shape(picture)[:2])
