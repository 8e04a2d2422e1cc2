"""Safe image decoding: read-only, size-limited, orientation applied, any mode to 8-bit RGB."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels, about 400 MB decoded as RGB
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif",
                    ".jfif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".dib", ".jp2",
                    ".j2k", ".heic", ".avif"}
# The decoders Pillow may use: the formats of IMAGE_EXTENSIONS, all parsed inside Pillow. Others
# are never tried, whatever a file's content claims (EPS, for one, would run Ghostscript).
DECODERS = ("JPEG", "PNG", "TIFF", "BMP", "DIB", "WEBP", "GIF", "PPM", "TGA", "ICO",
            "JPEG2000", "AVIF", "HEIF")
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
    """Reads a whole regular file through a read-only descriptor (O_NOATIME where allowed).

    Anything else is refused without waiting or reading: a FIFO would block the scan for ever
    and a device such as /dev/zero would never end."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            descriptor = os.open(path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError as error:
            if error.errno != errno.EPERM:  # EPERM: O_NOATIME on a file of another user
                raise
            descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb") as handle:
            kind = os.fstat(descriptor).st_mode
            if stat.S_ISDIR(kind):
                raise IsADirectoryError
            if not stat.S_ISREG(kind):
                raise ImageReadError(f"not a regular file ({_file_kind(kind)})")
            return handle.read()
    except IsADirectoryError:
        raise ImageReadError("is a directory") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except FileNotFoundError:
        raise ImageReadError("file not found (or dangling link)") from None
    except OSError as error:
        raise ImageReadError(one_line(error.strerror or str(error))) from None


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def one_line(text: str) -> str:
    """Control characters (newlines in a file name, say) written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (weights, reports, pictures)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _exif_fields(image: Image.Image) -> tuple[dict, int]:
    """Camera fields and orientation; a broken EXIF block (or any broken field) only loses
    what it breaks, never the image."""
    try:
        exif = image.getexif()
    except Exception:  # noqa: BLE001
        return {}, 1
    fields = {}
    for name, tag in EXIF_FIELDS.items():
        with contextlib.suppress(Exception):
            fields[name] = exif.get(tag)
    with contextlib.suppress(Exception):
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        fields.update({name: sub.get(tag) for name, tag in EXIF_SUBFIELDS.items()})
    try:
        orientation = int(exif.get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - e.g. text where a number belongs
        orientation = 1
    clean = {}
    for name, value in fields.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, (str, int, float)):
            clean[name] = one_line(str(value).strip("\x00 ").strip())
    return {k: v for k, v in clean.items() if v}, orientation if 1 <= orientation <= 8 else 1


@contextlib.contextmanager
def _pillow_pixel_limit(limit: int | None):
    """Sets Pillow's own decompression-bomb limit (a module global) for a while."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _decoders() -> list[str]:
    Image.init()
    return [name for name in DECODERS if name in Image.OPEN]


def to_rgb_picture(image: Image.Image) -> Image.Image:
    """An 8-bit RGB Pillow image from any mode (16-bit scaled down, alpha composited on white);
    an RGB image is returned as it is, without a copy."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image if image.mode == "RGB" else image.convert("RGB")


def to_rgb8(image: Image.Image) -> np.ndarray:
    """H x W x 3 uint8 (a writable copy) from any Pillow mode, as to_rgb_picture converts it."""
    return np.array(to_rgb_picture(image), dtype=np.uint8)


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS
                 ) -> tuple[np.ndarray, ImageMeta]:
    """Decodes the first frame to H x W x 3 uint8 with EXIF orientation applied.

    The pixel limit is checked from the header, before any pixel is decoded."""
    picture, meta = decode_picture(data, max_pixels)
    return np.array(picture, dtype=np.uint8), meta


def decode_picture(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS
                   ) -> tuple[Image.Image, ImageMeta]:
    """decode_image, but the pixels stay a Pillow RGB image: whatever is made from them next
    (a resized copy, bands of rows) needs no whole-image array beside Pillow's own."""
    if not data:
        raise ImageReadError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Opening reads the header only. Pillow's own bomb check is off for that moment so
            # that ours decides (with the size in the message); it is back, at our limit, for
            # everything that follows (other frames, decoding).
            with _pillow_pixel_limit(None):
                image = Image.open(io.BytesIO(data), formats=_decoders())
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise ImageReadError(f"{width}x{height} pixels exceeds the limit of {max_pixels} "
                                     f"(refused before decoding; raise it with --max-pixels)")
            if width < 1 or height < 1:
                raise ImageReadError(f"invalid size {width}x{height}")
            with _pillow_pixel_limit(max_pixels or None):
                image_format = image.format or "unknown"
                frames = getattr(image, "n_frames", 1)
                exif, orientation = _exif_fields(image)
                image.seek(0)
                mode = image.mode
                image.load()
                if orientation != 1:
                    try:
                        image = ImageOps.exif_transpose(image)
                    except Exception:  # noqa: BLE001 - keep the pixels as stored
                        orientation = 1
                picture = to_rgb_picture(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not a recognised image format") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"refused as a decompression bomb ({one_line(error)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, KeyError,
            TypeError, struct.error, ZeroDivisionError) as error:
        reason = one_line(str(error).splitlines()[0]) if str(error) else type(error).__name__
        raise ImageReadError(f"corrupt or truncated image ({reason})") from None
    meta = ImageMeta(width=picture.width, height=picture.height, format=image_format,
                     mode=mode, frames=frames, orientation=orientation, exif=exif)
    return picture, meta


def load_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convenience: decode a file to H x W x 3 uint8 (raises ImageReadError)."""
    return decode_image(read_bytes(path), max_pixels)[0]


def load_mask(path: str | Path) -> np.ndarray:
    """A ground-truth mask as H x W uint8 in {0, 1}: pixels above half the maximum are set."""
    data = read_bytes(path)
    try:
        with Image.open(io.BytesIO(data), formats=_decoders()) as image:
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
