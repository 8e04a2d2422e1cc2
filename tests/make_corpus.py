"""Generates the bad-input corpus of the hardening tests: damaged, odd, hostile and awkwardly
named inputs, all tiny. Nothing binary is committed; every file is made here.

    python tests/make_corpus.py FOLDER     # writes the corpus into FOLDER and lists it

`make_corpus(folder)` returns {relative path: expectation}, where the expectation is "error"
(the file must be reported as unreadable) or "ok" (it must be scanned). Reference files for
the checks that compare outputs (first GIF frame, first TIFF page, EXIF orientations) end in
`.expected.png`; they are ordinary lossless images of the pixels the tool should see.
"""
from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = (0, 255, 0)      # the block at the stored top-left corner of the orientation images
ORIENTED_SIZE = (24, 16)  # stored width x height of the orientation images

# Where the stored top-left corner is shown once EXIF orientation n is applied (TIFF 6.0:
# the tag says which stored row/column is the visual top/left).
MARKER_CORNER = {1: "top-left", 2: "top-right", 3: "bottom-right", 4: "bottom-left",
                 5: "top-left", 6: "top-right", 7: "bottom-right", 8: "bottom-left"}


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth gradient with noise: H x W x 3 uint8, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1),
                     np.full_like(x, 40 + 20 * (seed % 8))], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int,
              rows: bytes | None = None) -> bytes:
    """A PNG written by hand: IHDR as declared, one IDAT holding `rows` (already filtered,
    one filter byte per row) and IEND. Lets a test declare any size without the pixels."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows if rows is not None else b"", 9))
            + _chunk(b"IEND", b""))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A decompression bomb's header: 100000 x 100000 RGB (30 GB decoded) in a few KB. The
    IDAT holds only the first rows of zeros; a decoder that trusted the header would have
    allocated the whole image before noticing."""
    return png_bytes(width, height, 8, 2, bytes(16 * (1 + 3 * width)))


def rgb16_png(height: int, width: int, seed: int) -> bytes:
    """48-bit RGB PNG (16 bits per channel, big-endian), which Pillow has no native mode for."""
    values = photo(height, width, seed).astype(">u2") * 257
    rows = b"".join(b"\x00" + values[r].tobytes() for r in range(height))
    return png_bytes(width, height, 16, 2, rows)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_with_exif_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CorpusCam"
    return encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


def jpeg_with_raw_exif(pixels: np.ndarray, entries: list[tuple[int, int, int, bytes]],
                       first_ifd: int = 8) -> bytes:
    """A JPEG whose APP1 Exif block is written by hand: one little-endian IFD of `entries`
    (tag, type, count, 4 raw value bytes) at offset 8, where the header says the first IFD is
    (unless `first_ifd` says otherwise)."""
    body = encode(Image.fromarray(pixels), "JPEG", quality=90)
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHI", tag, kind, n) + value for tag, kind, n, value in entries)
    payload = (b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", first_ifd) + ifd
               + struct.pack("<I", 0))
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return body[:2] + app1 + body[2:]


SHORT, LONG, ASCII = 3, 4, 2
MAKE = (0x010F, ASCII, 4, b"Cam\x00")


def broken_exif_variants(pixels: np.ndarray) -> dict[str, tuple[bytes, int]]:
    """Damaged EXIF blocks: {name: (JPEG bytes, orientation the tool should still apply)}."""
    return {
        # The header sends the reader far past the end of the block: nothing is readable.
        "broken_exif.jpg": (jpeg_with_raw_exif(pixels, [MAKE, (0x0112, SHORT, 1, b"\x06\x00\x00\x00")],
                                               first_ifd=0x7FFFFFF0), 1),
        # Orientation 6 and a camera make, but the Exif sub-IFD pointer leads nowhere.
        "broken_exif_subifd.jpg": (jpeg_with_raw_exif(pixels, [
            MAKE, (0x0112, SHORT, 1, b"\x06\x00\x00\x00"),
            (0x8769, LONG, 1, struct.pack("<I", 0x7FFFFFF0))]), 6),
        # Text where the orientation number belongs.
        "broken_exif_orientation.jpg": (jpeg_with_raw_exif(pixels, [
            MAKE, (0x0112, ASCII, 4, b"AAAA")]), 1),
    }


def orient(stored: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for EXIF orientation n, written out with numpy (independent of
    Pillow): 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise."""
    return {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1],
            4: lambda a: a[::-1], 5: lambda a: a.transpose(1, 0, 2),
            6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, -1)[::-1],
            8: lambda a: np.rot90(a, 1)}[orientation](stored)


def _palette_frame(indices: np.ndarray, palette: list[int]) -> Image.Image:
    frame = Image.fromarray(indices.astype(np.uint8), mode="P")
    frame.putpalette(palette)
    return frame


def _write(folder: Path, name: str, data: bytes) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_corpus(folder: str | os.PathLike) -> dict[str, str]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes, expectation: str) -> None:
        _write(folder, name, data)
        expect[name] = expectation

    good_jpeg = encode(Image.fromarray(photo(48, 64, 1)), "JPEG", quality=90)
    good_png = encode(Image.fromarray(photo(48, 64, 2)), "PNG")

    # ---- must be refused, each with its own one-line reason
    put("empty.jpg", b"", "error")
    put("text.jpg", b"Dear colleague,\nthis is a letter, not a photograph.\n", "error")
    put("truncated.jpg", good_jpeg[: len(good_jpeg) // 2], "error")
    put("truncated.png", good_png[: len(good_png) // 2], "error")
    put("bomb.png", bomb_png(), "error")
    put("broken\nname with newline.jpg", b"not a jpeg either", "error")
    # PostScript dressed as a JPEG: Pillow would hand it to Ghostscript to render (running
    # the program in it); the tool never lets Pillow try formats outside its list.
    put("postscript.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
        b"0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n", "error")
    os.symlink("loop.jpg", folder / "loop.jpg")                     # a link to itself
    expect["loop.jpg"] = "error"
    os.symlink("does-not-exist.png", folder / "dangling.png")       # a link to nothing
    expect["dangling.png"] = "error"
    os.mkfifo(folder / "fifo.jpg")                                   # reading would block
    expect["fifo.jpg"] = "error"
    os.symlink(os.devnull, folder / "device.png")                    # not a regular file
    expect["device.png"] = "error"

    # ---- odd sizes and modes, all scanned
    put("one_pixel.png", encode(Image.fromarray(photo(1, 1, 3)), "PNG"), "ok")
    put("wide_10000x10.png", encode(Image.fromarray(photo(10, 10000, 4)), "PNG"), "ok")
    gray16 = photo(30, 40, 5)[..., 0].astype(np.uint16) * 257
    put("gray16.png", encode(Image.fromarray(gray16), "PNG"), "ok")
    put("gray16.tif", encode(Image.fromarray(gray16), "TIFF"), "ok")
    put("rgb16.png", rgb16_png(30, 40, 6), "ok")
    put("cmyk.jpg", encode(Image.fromarray(photo(40, 30, 7)).convert("CMYK"), "JPEG"), "ok")
    palette = Image.fromarray(photo(32, 32, 8)).quantize(16)
    put("palette_transparent.png", encode(palette, "PNG", transparency=0), "ok")
    put("la.png", encode(Image.fromarray(photo(32, 40, 9)).convert("LA"), "PNG"), "ok")
    rgba = np.dstack([photo(32, 40, 10), np.linspace(0, 255, 40, dtype=np.uint8)[None].repeat(32, 0)])
    put("rgba.png", encode(Image.fromarray(rgba, mode="RGBA"), "PNG"), "ok")

    # ---- several frames: only the first is used (references hold the frames' pixels)
    colours = [int(v) for v in photo(16, 16, 11).reshape(-1)[: 3 * 256]]
    rng = np.random.default_rng(12)
    gif_frames = [rng.integers(0, 256, (36, 44)) for _ in range(3)]
    first, *rest = [_palette_frame(f, colours) for f in gif_frames]
    put("animated.gif", encode(first, "GIF", save_all=True, append_images=rest, duration=80,
                               loop=0, optimize=False), "ok")
    shown = np.asarray(colours, dtype=np.uint8).reshape(256, 3)
    for i in (0, 1):
        put(f"animated.frame{i}.expected.png", encode(Image.fromarray(shown[gif_frames[i]]), "PNG"),
            "ok")
    pages = [photo(30, 36, 13 + i) for i in range(3)]
    put("pages.tif", encode(Image.fromarray(pages[0]), "TIFF", save_all=True,
                            append_images=[Image.fromarray(p) for p in pages[1:]]), "ok")
    for i in (0, 1):
        put(f"pages.page{i}.expected.png", encode(Image.fromarray(pages[i]), "PNG"), "ok")

    # ---- EXIF orientation 1..8, a marker block at the stored top-left corner
    width, height = ORIENTED_SIZE
    stored = photo(height, width, 20) // 2
    stored[:4, :4] = MARKER
    for n in range(1, 9):
        data = jpeg_with_exif_orientation(stored, n)
        put(f"orientation/o{n}.jpg", data, "ok")
        with Image.open(io.BytesIO(data)) as raw:   # the stored pixels, as decoded
            decoded = np.asarray(raw.convert("RGB"))
        put(f"orientation/o{n}.expected.png",
            encode(Image.fromarray(np.ascontiguousarray(orient(decoded, n))), "PNG"), "ok")
    for name, (data, _) in broken_exif_variants(photo(40, 48, 21)).items():
        put(name, data, "ok")

    # ---- awkward names and layout
    for seed, name in enumerate(("with space.png", "ünïcödé 名前.png", "-leading-dash.png",
                                 "new\nline.png", "tab\tand [brackets].png")):
        put(name, encode(Image.fromarray(photo(20, 24, 30 + seed)), "PNG"), "ok")
    put(os.fsdecode(b"not-utf8-\xff\xfe.png"), encode(Image.fromarray(photo(20, 24, 36)), "PNG"),
        "ok")
    put(os.fsdecode(b"not-utf8-\xff-broken.jpg"), b"\xff\xd8 not really", "error")
    put("x.jpg/inside.png", encode(Image.fromarray(photo(20, 20, 40)), "PNG"), "ok")  # folder
    os.symlink(".", folder / "x.jpg" / "back")    # a folder loop: sub/back -> sub
    same = encode(Image.fromarray(photo(20, 28, 41)), "PNG")
    put("same_a.png", same, "ok")
    put("same_b.png", same, "ok")
    return expect


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/make_corpus.py FOLDER")
    for relative, expectation in sorted(make_corpus(sys.argv[1]).items()):
        print(f"{expectation:5} {relative!r}")
