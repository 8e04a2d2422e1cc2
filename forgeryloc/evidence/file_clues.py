"""Clues read from a file's bytes: how its JPEG was encoded, and whether its metadata agree
with themselves. Each is a named fact, never a verdict.

JPEG (from the marker segments alone, no entropy decoding):
  - the quantisation tables of the luma and chroma components (natural row-major order);
  - `ijg_standard`: whether every table is exactly the libjpeg (IJG) standard table scaled
    for one quality, as libjpeg, Pillow and most libraries write them; `quality`: that
    quality, or for other tables the IJG quality whose tables are nearest (least sum of
    absolute step differences), which then only says how coarse they are;
  - `fingerprint`: the first 12 hex digits of SHA-256 over the tables (per component, as
    big-endian 16-bit steps), so that files from one encoder group together;
  - chroma subsampling and coding (baseline, progressive, ...).
Metadata (EXIF and XMP, any format Pillow reads them from):
  - `editing_software`: a program known to edit pictures named in EXIF Software or XMP
    CreatorTool / history (the list is below: camera firmware names are left out);
  - `dates_differ`: the original (capture) and modification dates differ;
  - `thumbnail_differs`: the EXIF thumbnail does not look like the picture (correlation of
    16 x 16 grey versions below THUMBNAIL_SIMILARITY, the thumbnail turned by the same EXIF
    orientation and cropped to the picture's shape);
  - `camera_fields_missing`: a camera make or model is named but exposure fields that a
    camera writes are absent.
"""
from __future__ import annotations

import hashlib
import io
import re
import warnings
from functools import lru_cache

import numpy as np
from PIL import ExifTags, Image, ImageOps

from ..data.jpeg_tables import ijg_tables
from ..jpeg_coefficients import JpegHeader, is_jpeg

THUMBNAIL_SIDE = 16
THUMBNAIL_SIMILARITY = 0.75  # correlation below which a thumbnail is said to differ
# Substrings (lower case) of program names that edit pictures. Firmware and phone camera
# apps write Software too; they are not listed, so naming them is no clue.
EDITORS = ("photoshop", "lightroom", "adobe", "gimp", "paint.net", "paintshop", "corel",
           "affinity", "pixelmator", "snapseed", "capture one", "darktable", "rawtherapee",
           "luminar", "acdsee", "photoscape", "picasa", "imagemagick", "graphicsmagick",
           "krita", "photopea", "canva", "fotor", "facetune", "picsart", "meitu", "vsco",
           "photo editor", "photos legacy", "aperture", "iphoto", "digikam", "on1 ", "dxo",
           "polarr", "airbrush", "remini", "faceapp", "lensa", "topaz", "photodirector")
# EXIF tags a camera writes with every photograph (Exif sub-IFD).
CAMERA_FIELDS = {"ExposureTime": 0x829A, "FNumber": 0x829D, "ISOSpeedRatings": 0x8827,
                 "FocalLength": 0x920A, "DateTimeOriginal": 0x9003}
_EXIF_DATE, _EXIF_ORIGINAL = 0x0132, 0x9003
_XMP_FIELDS = ("CreatorTool", "softwareAgent", "CreateDate", "DateCreated", "ModifyDate",
               "MetadataDate", "DateTimeOriginal")


# --------------------------------------------------------------------------- JPEG encoding

def jpeg_clues(header: JpegHeader) -> dict:
    """The encoding facts of a JPEG header (see the module's docstring)."""
    tables = [t for t in header.tables if t is not None]
    luma = tables[0]
    chroma = tables[1] if len(tables) > 1 else None
    quality, standard = ijg_quality(luma, chroma)
    distinct = {"luma": luma}
    if chroma is not None:
        distinct["chroma"] = chroma
        if len(tables) > 2 and not np.array_equal(tables[2], chroma):
            distinct["chroma_cr"] = tables[2]
    return {"coding": header.coding, "colour": header.colour,
            "subsampling": subsampling_name(header),
            "quality": quality, "ijg_standard": standard,
            "fingerprint": table_fingerprint(tables),
            "tables": {name: [int(v) for v in table.ravel()] for name, table in distinct.items()}}


def subsampling_name(header: JpegHeader) -> str:
    """4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, or the factors, for the chroma of a colour JPEG."""
    if len(header.sampling) < 3:
        return "grey" if len(header.sampling) == 1 else f"{len(header.sampling)} components"
    most_h = max(h for h, _ in header.sampling)
    most_v = max(v for _, v in header.sampling)
    factors = {(most_h // h if most_h % h == 0 else None, most_v // v if most_v % v == 0
                else None) for h, v in header.sampling[1:3]}
    names = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0",
             (4, 1): "4:1:1"}
    if len(factors) == 1:
        factor = factors.pop()
        if factor in names:
            return names[factor]
    return "x".join(f"{h}:{v}" for h, v in header.sampling)


def table_fingerprint(tables: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for table in tables:
        digest.update(np.asarray(table, dtype=">u2").tobytes())
    return digest.hexdigest()[:12]


@lru_cache(maxsize=1)
def _ijg_stack() -> tuple[np.ndarray, np.ndarray]:
    """100 x 64 luma and chroma steps of the IJG tables for qualities 1 .. 100."""
    made = [ijg_tables(quality) for quality in range(1, 101)]
    return (np.array([t.luma for t in made], dtype=np.int64),
            np.array([t.chroma for t in made], dtype=np.int64))


def ijg_quality(luma: np.ndarray, chroma: np.ndarray | None) -> tuple[float, bool]:
    """(quality, standard): the IJG quality whose tables equal these (standard) or are the
    nearest to them in summed absolute step difference (not standard)."""
    lumas, chromas = _ijg_stack()
    distance = np.abs(lumas - np.asarray(luma, np.int64).ravel()).sum(axis=1)
    if chroma is not None:
        distance = distance + np.abs(chromas - np.asarray(chroma, np.int64).ravel()).sum(axis=1)
    best = int(np.argmin(distance))  # the highest quality among ties would be as fair
    return float(best + 1), bool(distance[best] == 0)


# --------------------------------------------------------------------------- metadata

def metadata_clues(image: Image.Image, picture, orientation: int = 1) -> dict:
    """Named metadata clues of an opened (not necessarily decoded) image; only the clues
    found are present. picture: the displayed picture, or a reduced copy (Pillow image or
    H x W x 3 uint8), for the thumbnail comparison; orientation: the EXIF orientation
    applied to it."""
    clues: dict = {}
    exif = _safe(image.getexif)
    sub = _safe(lambda: exif.get_ifd(ExifTags.IFD.Exif)) if exif is not None else None
    exif, sub = exif or {}, sub or {}
    xmp = _xmp_fields(image)
    named = [_text(exif.get(0x0131))] + xmp.get("CreatorTool", []) + xmp.get("softwareAgent", [])
    editors = sorted({name for name in named if name and _is_editor(name)})
    if editors:
        clues["editing_software"] = editors
    original = _date(_text(sub.get(_EXIF_ORIGINAL))) or _first_date(
        xmp, ("DateTimeOriginal", "CreateDate", "DateCreated"))
    modified = _date(_text(exif.get(_EXIF_DATE))) or _first_date(xmp, ("ModifyDate",))
    if original and modified and original != modified:
        clues["dates_differ"] = {"original": original, "modified": modified}
    camera = _text(exif.get(0x0110)) or _text(exif.get(0x010F))
    if camera:
        missing = [name for name, tag in CAMERA_FIELDS.items() if sub.get(tag) in (None, "")]
        if missing:
            clues["camera_fields_missing"] = missing
    if picture is not None:
        similarity = thumbnail_similarity(image, picture, orientation)
        if similarity is not None and similarity < THUMBNAIL_SIMILARITY:
            clues["thumbnail_differs"] = {"similarity": round(similarity, 3)}
    return clues


def _safe(call):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except Exception:  # noqa: BLE001 - a broken metadata block only loses its clues
        return None


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip("\x00 ").strip() if isinstance(value, (str, bytes, int, float)) \
        else ""


def _is_editor(name: str) -> bool:
    lowered = name.lower()
    return any(editor in lowered for editor in EDITORS)


def _date(text: str) -> str | None:
    """'YYYY-MM-DD HH:MM:SS' from an EXIF ('2020:01:02 03:04:05') or XMP ('2020-01-02T03:04:05
    +01:00') date, to the second; None when it is not one."""
    match = re.match(r"(\d{4})[:-](\d\d)[:-](\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d))?)?", text)
    if not match or match[1] == "0000":
        return None
    year, month, day, hour, minute, second = (part or "00" for part in match.groups())
    return f"{year}-{month}-{day} {hour}:{minute}:{second}"


def _first_date(xmp: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        for value in xmp.get(name, []):
            date = _date(value)
            if date:
                return date
    return None


def _xmp_packet(image: Image.Image) -> str:
    """The XMP packet (JPEG APP1, PNG iTXt, TIFF tag 700, WebP chunk) as text, or ''."""
    info = image.info
    packet = info.get("xmp") or info.get("XML:com.adobe.xmp") or b""
    if not packet and hasattr(image, "tag_v2"):
        packet = _safe(lambda: image.tag_v2.get(700)) or b""
    if isinstance(packet, (bytes, bytearray)):
        packet = bytes(packet).decode("utf-8", "replace")
    return packet if isinstance(packet, str) else ""


def _xmp_fields(image: Image.Image) -> dict[str, list[str]]:
    """Values of a few XMP properties, whether written as attributes or as elements."""
    packet = _xmp_packet(image)
    if not packet:
        return {}
    fields: dict[str, list[str]] = {}
    for name in _XMP_FIELDS:
        pattern = rf"\w+:{name}\s*=\s*\"([^\"]*)\"|<\w+:{name}>([^<]*)</\w+:{name}>"
        values = [(a or b).strip() for a, b in re.findall(pattern, packet)]
        if values:
            fields[name] = [value for value in values if value]
    return fields


def exif_thumbnail(image: Image.Image) -> bytes | None:
    """The JPEG thumbnail stored in EXIF IFD1, if any."""
    raw = image.info.get("exif")
    exif = _safe(image.getexif)
    if not raw or exif is None:
        return None
    first = _safe(lambda: exif.get_ifd(ExifTags.IFD.IFD1)) or {}
    offset, length = first.get(0x0201), first.get(0x0202)
    if not isinstance(offset, int) or not isinstance(length, int) or length <= 0:
        return None
    tiff = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    data = tiff[offset:offset + length]
    return data if len(data) == length and is_jpeg(data) else None


def _small_grey(picture: Image.Image) -> np.ndarray:
    grey = picture.convert("L").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX)
    values = np.asarray(grey, dtype=np.float64)
    return values - values.mean()


def thumbnail_similarity(image: Image.Image, picture, orientation: int = 1) -> float | None:
    """Correlation between the EXIF thumbnail and the picture, both reduced to 16 x 16 grey
    (None without a readable thumbnail, or when either is flat)."""
    data = exif_thumbnail(image)
    if data is None:
        return None

    def open_thumbnail() -> Image.Image:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as stored:
            if stored.width * stored.height > 1 << 22:
                raise ValueError("not a thumbnail")
            stored.load()
            return stored.copy()

    thumbnail = _safe(open_thumbnail)
    if thumbnail is None:
        return None
    if orientation != 1:  # stored as the main image is stored: turn it the same way
        thumbnail.getexif()[0x0112] = orientation
        thumbnail = _safe(lambda: ImageOps.exif_transpose(thumbnail)) or thumbnail
    if not isinstance(picture, Image.Image):
        picture = Image.fromarray(np.asarray(picture, dtype=np.uint8))
    thumbnail = _crop_to_shape(thumbnail, picture.width / picture.height)
    a, b = _small_grey(thumbnail), _small_grey(picture)
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return None if norm < 1e-6 else float((a * b).sum() / norm)


def _crop_to_shape(image: Image.Image, aspect: float) -> Image.Image:
    """The centre of `image` with the given width / height (thumbnails are often letterboxed
    to 160 x 120 whatever the photograph's shape)."""
    width, height = image.size
    if width / height > aspect:
        keep = max(1, round(height * aspect))
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    keep = max(1, round(width / aspect))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))
