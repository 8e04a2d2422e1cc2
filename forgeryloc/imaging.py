"""Safe image decoding: read-only, size-limited, orientation applied, any mode to 8-bit RGB."""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels, about 400 MB decoded as RGB
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif",
                    ".jfif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".dib", ".jp2",
                    ".j2k", ".heic", ".avif"}
EXIF_FIELDS = {"Make": 0x010F, "Model": 0x0110, "Software": 0x0131, "DateTime": 0x0132}
EXIF_SUBFIELDS = {"DateTimeOriginal": 0x9003, "DateTimeDigitized": 0x9004}


class ImageReadError(Exception):
    """An input that cannot be used, with a one-line reason."""


@dataclass
class ImageMeta:
    width: int
    height: int
    format: str
    mode: str
    frames: int = 1
    orientation: int = 1
    exif: dict = field(default_factory=dict)


def read_bytes(path: str | Path) -> bytes:
    """Reads a whole file through a read-only descriptor."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except IsADirectoryError:
        raise ImageReadError("is a directory") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except FileNotFoundError:
        raise ImageReadError("file not found (or dangling link)") from None
    except OSError as error:
        raise ImageReadError(error.strerror or str(error)) from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _exif_fields(image: Image.Image) -> tuple[dict, int]:
    try:
        exif = image.getexif()
        fields = {name: exif.get(tag) for name, tag in EXIF_FIELDS.items() if exif.get(tag)}
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        fields.update({name: sub.get(tag) for name, tag in EXIF_SUBFIELDS.items() if sub.get(tag)})
        orientation = int(exif.get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        return {}, 1
    clean = {}
    for name, value in fields.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        clean[name] = str(value).strip("\x00 ").strip()
    return {k: v for k, v in clean.items() if v}, orientation if 1 <= orientation <= 8 else 1


def to_rgb8(image: Image.Image) -> np.ndarray:
    """H x W x 3 uint8 from any Pillow mode (16-bit scaled down, alpha composited on white)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS
                 ) -> tuple[np.ndarray, ImageMeta]:
    """Decodes the first frame to H x W x 3 uint8 with EXIF orientation applied.

    The pixel limit is checked from the header, before any pixel is decoded."""
    if not data:
        raise ImageReadError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise ImageReadError(f"{width}x{height} pixels exceeds the limit of {max_pixels} "
                                     f"(raise it with --max-pixels)")
            if width < 1 or height < 1:
                raise ImageReadError(f"invalid size {width}x{height}")
            image_format = image.format or "unknown"
            frames = getattr(image, "n_frames", 1)
            exif, orientation = _exif_fields(image)
            mode = image.mode
            image.seek(0)
            image.load()
            if orientation != 1:
                try:
                    image = ImageOps.exif_transpose(image)
                except Exception:  # noqa: BLE001 - keep the pixels as stored
                    orientation = 1
            rgb = to_rgb8(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not a recognised image format") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"refused as a decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"corrupt or truncated image ({reason})") from None
    meta = ImageMeta(width=rgb.shape[1], height=rgb.shape[0], format=image_format, mode=mode,
                     frames=frames, orientation=orientation, exif=exif)
    return rgb, meta


def load_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convenience: decode a file to H x W x 3 uint8 (raises ImageReadError)."""
    return decode_image(read_bytes(path), max_pixels)[0]


def load_mask(path: str | Path) -> np.ndarray:
    """A ground-truth mask as H x W uint8 in {0, 1}: pixels above half the maximum are set."""
    data = read_bytes(path)
    try:
        with Image.open(io.BytesIO(data)) as image:
            values = np.asarray(image.convert("L") if image.mode not in ("L", "1", "I", "I;16")
                                else image, dtype=np.float64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"unreadable mask ({error})") from None
    if values.ndim == 3:
        values = values.max(axis=2)
    peak = values.max(initial=0)
    return (values > peak / 2).astype(np.uint8) if peak > 0 else np.zeros(values.shape, np.uint8)


def is_image_name(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS
