"""jpeg_coefficients: coefficients and tables against Pillow's decoding; orientation; outcomes."""
import io
import threading

import numpy as np
import pytest
from PIL import Image, ImageOps

from forgeryloc import jpeg_coefficients as jc
from forgeryloc.imaging import ImageReadError
from forgeryloc.jpeg_coefficients import (JpegCoefficientsError, UnsupportedJpegError, crop,
                                          luma_plane, read_jpeg_coefficients, whole_blocks)

# ITU-T T.81 Annex K.1 luminance table, natural (row-major) order: libjpeg's table at quality 50.
ANNEX_K_LUMA = np.array([[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
                         [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
                         [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
                         [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]])
# Orthonormal 8-point DCT-II: row k is frequency k (JPEG's DCT is this one in 2-D).
_K = np.arange(8)
DCT = np.sqrt(2 / 8) * np.cos((2 * _K[None, :] + 1) * _K[:, None] * np.pi / 16)
DCT[0] /= np.sqrt(2)


def textured(height, width, channels=3, seed=0):
    """Smooth waves plus noise, kept away from 0 and 255 so no decoded sample clips."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    wave = 128 + 50 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0) + 25 * np.sin(y / 3.0)
    layers = [wave + 10 * c for c in range(channels)]
    pixels = np.stack(layers, -1) + rng.normal(0, 8, (height, width, channels))
    pixels = np.clip(pixels, 20, 235).astype(np.uint8)
    return pixels[..., 0] if channels == 1 else pixels


def jpeg(pixels, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def with_orientation(pixels, orientation, **options) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(pixels, exif=exif.tobytes(), **options)


def idct_pixels(coefficients):
    """Displayed luma samples from the coefficients alone: IDCT of coefficient x table, + 128,
    blocks laid out on the plane, cropped to the image by the grid origin."""
    dequantised = coefficients.luma.astype(np.float64) * coefficients.luma_table
    samples = np.einsum("ku,ijuv,vl->ijkl", DCT.T, dequantised, DCT) + 128  # Hb x Wb x 8 x 8
    rows, cols = samples.shape[:2]
    plane = samples.transpose(0, 2, 1, 3).reshape(rows * 8, cols * 8)
    top, left = -coefficients.origin[0], -coefficients.origin[1]
    window = plane[top:top + coefficients.height, left:left + coefficients.width]
    return np.clip(np.round(window), 0, 255)


def pillow_luma(data: bytes) -> np.ndarray:
    """Y as Pillow decodes it (no colour conversion round trip), EXIF orientation applied."""
    image = Image.open(io.BytesIO(data))
    if image.mode != "L":
        image.draft("YCbCr", image.size)
    image = ImageOps.exif_transpose(image)
    values = np.asarray(image, dtype=np.float64)
    return values if values.ndim == 2 else values[..., 0]


def assert_close_to_pillow(coefficients, data):
    ours, theirs = idct_pixels(coefficients), pillow_luma(data)
    assert ours.shape == theirs.shape
    difference = np.abs(ours - theirs)
    assert difference.max() <= 2 and difference.mean() < 0.3  # float vs libjpeg's integer IDCT


def segments(data: bytes):
    """(offset, marker) of each marker the module's walk would visit, from its own scanner."""
    return [(int(at), data[at + 1]) for at in jc._marker_positions(data)]


# --- coefficients and tables ------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 1])
def test_coefficients_times_table_inverse_transformed_are_the_decoded_luma(channels):
    # An asymmetric table (steps grow 3x faster along v) catches a transposed table or grid.
    table = [[2 + u + 3 * v for v in range(8)] for u in range(8)]
    data = jpeg(textured(48, 64, channels), qtables=[sum(table, [])] * 2)
    coefficients = read_jpeg_coefficients(data)
    assert coefficients.luma.shape == (6, 8, 8, 8) and coefficients.luma.dtype == np.int16
    assert (coefficients.height, coefficients.width, coefficients.origin) == (48, 64, (0, 0))
    np.testing.assert_array_equal(coefficients.luma_table, table)
    assert_close_to_pillow(coefficients, data)


def test_horizontal_frequency_is_the_second_block_axis():
    stripes = np.tile(np.where(np.arange(16) % 2, 200, 60).astype(np.uint8), (16, 1))  # along x
    coefficients = read_jpeg_coefficients(jpeg(stripes, quality=95))
    energy = np.abs(coefficients.luma[..., :, :].astype(np.int64)).sum(axis=(0, 1))  # 8 x 8
    assert energy[0, 7] > 10 * energy[7, 0]  # u = row (vertical), v = column (horizontal)


def test_the_table_is_natural_order_like_pillow_and_the_standard_while_the_file_is_zigzag():
    data = jpeg(textured(32, 32), quality=50)
    coefficients = read_jpeg_coefficients(data)
    np.testing.assert_array_equal(coefficients.luma_table, ANNEX_K_LUMA)
    image = Image.open(io.BytesIO(data))
    slot = image.layer[0][3]
    np.testing.assert_array_equal(np.reshape(image.quantization[slot], (8, 8)), ANNEX_K_LUMA)
    dqt = next(at for at, code in segments(data) if code == 0xDB)
    stored = np.frombuffer(data, np.uint8, 64, dqt + 5)  # marker, length, precision/slot
    np.testing.assert_array_equal(stored, ANNEX_K_LUMA.ravel()[jc._ZIGZAG])
    assert list(stored[:6]) == [16, 11, 12, 14, 12, 10]  # zigzag: (0,0) (0,1) (1,0) (2,0) ...


def test_tables_agree_with_jpeglibs_own_reading(tmp_path):
    import jpeglib
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg(textured(40, 56), quality=77))
    theirs = jpeglib.read_dct(str(path))
    ours = read_jpeg_coefficients(path, chroma=True)
    np.testing.assert_array_equal(ours.luma, theirs.Y)
    np.testing.assert_array_equal(ours.luma_table, theirs.qt[theirs.quant_tbl_no[0]])
    np.testing.assert_array_equal(ours.chroma.cr_table, theirs.qt[theirs.quant_tbl_no[2]])
    np.testing.assert_array_equal(ours.chroma.cb, theirs.Cb)


def test_a_path_and_its_bytes_read_the_same(tmp_path):
    data = jpeg(textured(24, 40))
    (tmp_path / "x.jpg").write_bytes(data)
    a, b = read_jpeg_coefficients(tmp_path / "x.jpg"), read_jpeg_coefficients(data)
    np.testing.assert_array_equal(a.luma, b.luma)
    with pytest.raises(ImageReadError, match="not found"):
        read_jpeg_coefficients(tmp_path / "missing.jpg")


def test_a_table_redefined_after_the_first_scan_is_not_the_one_luma_was_quantised_with():
    data = jpeg(textured(32, 48), quality=80, progressive=True)
    last_scan = [at for at, code in segments(data) if code == 0xDA][-1]
    other = bytes([0xFF, 0xDB, 0, 67, 0]) + bytes(range(1, 65))  # slot 0 := 1, 2, ..., 64
    edited = data[:last_scan] + other + data[last_scan:]
    original, coefficients = read_jpeg_coefficients(data), read_jpeg_coefficients(edited)
    np.testing.assert_array_equal(coefficients.luma_table, original.luma_table)
    np.testing.assert_array_equal(coefficients.luma, original.luma)


# --- orientation ------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [(48, 64), (45, 62)])
def test_every_exif_orientation_puts_each_block_over_its_displayed_pixels(orientation, size):
    data = with_orientation(textured(*size, channels=1), orientation, quality=92)
    coefficients = read_jpeg_coefficients(data)
    assert coefficients.orientation == orientation
    displayed = size[::-1] if orientation >= 5 else size
    assert (coefficients.height, coefficients.width) == displayed
    assert coefficients.luma.shape[:2] == (-(-displayed[0] // 8), -(-displayed[1] // 8))
    assert all(-8 < at <= 0 for at in coefficients.origin)
    if size == (48, 64):
        assert coefficients.origin == (0, 0)
    assert_close_to_pillow(coefficients, data)
    # whole blocks only: the same window of the decoded picture
    inner, (top, left) = whole_blocks(coefficients)
    assert inner.origin == (0, 0) and inner.height % 8 == 0 and inner.width % 8 == 0
    np.testing.assert_array_equal(idct_pixels(inner), idct_pixels(coefficients)[
        top:top + inner.height, left:left + inner.width])


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_chroma_turns_with_the_luma_and_subsampling_follows_a_transpose(orientation):
    pixels = textured(32, 64)
    stored = read_jpeg_coefficients(jpeg(pixels, subsampling=1), chroma=True)  # 4:2:2
    turned = read_jpeg_coefficients(with_orientation(pixels, orientation, subsampling=1),
                                    chroma=True)
    assert stored.chroma.subsampling == (1, 2)
    assert turned.chroma.subsampling == ((2, 1) if orientation >= 5 else (1, 2))
    assert turned.chroma.block_size == tuple(8 * f for f in turned.chroma.subsampling)
    method = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270,
              7: Image.Transpose.TRANSVERSE}[orientation]
    for name in ("cb", "cr"):
        dc = getattr(stored.chroma, name)[..., 0, 0].astype(np.float32)
        expected = np.asarray(Image.fromarray(dc, "F").transpose(method))
        np.testing.assert_array_equal(getattr(turned.chroma, name)[..., 0, 0], expected)
    table = stored.chroma.cb_table.T if orientation >= 5 else stored.chroma.cb_table
    np.testing.assert_array_equal(turned.chroma.cb_table, table)


def test_a_given_orientation_overrides_the_exif_one():
    data = with_orientation(textured(16, 32, channels=1), 6)
    assert read_jpeg_coefficients(data).luma.shape[:2] == (4, 2)
    as_stored = read_jpeg_coefficients(data, orientation=1)
    assert as_stored.luma.shape[:2] == (2, 4) and as_stored.orientation == 1


# --- layout helpers -------------------------------------------------------------------------


def test_luma_plane_puts_each_block_in_place_and_crop_needs_the_grid():
    coefficients = read_jpeg_coefficients(jpeg(textured(40, 56), quality=90), chroma=True)
    plane = luma_plane(coefficients)
    assert plane.shape == (40, 56) and plane.dtype == np.int16
    np.testing.assert_array_equal(plane[8 * 2 + 3, 8 * 4 + 5], coefficients.luma[2, 4, 3, 5])
    window = crop(coefficients, 16, 16, 16, 32)
    np.testing.assert_array_equal(luma_plane(window), plane[16:32, 16:48])
    assert window.chroma.cb.shape[:2] == (1, 2)  # 4:2:0: on the 16-pixel chroma grid too
    assert crop(coefficients, 8, 8, 8, 8).chroma is None  # off the chroma grid: dropped
    with pytest.raises(ValueError, match="grid"):
        crop(coefficients, 4, 0, 8, 8)
    with pytest.raises(ValueError, match="inside"):
        crop(coefficients, 32, 0, 16, 8)


# --- outcomes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["PNG", "TIFF", "BMP", "garbage", "empty"])
def test_other_formats_are_no_jpeg(kind):
    if kind == "garbage":
        data = b"just some text"
    elif kind == "empty":
        data = b""
    else:
        buffer = io.BytesIO()
        Image.fromarray(textured(16, 16)).save(buffer, kind)
        data = buffer.getvalue()
    assert read_jpeg_coefficients(data) is None


def test_a_truncated_jpeg_reads_with_a_warning_and_nothing_on_stderr(capfd):
    data = jpeg(textured(64, 64), quality=90)
    coefficients = read_jpeg_coefficients(data[:len(data) // 2])
    assert coefficients.luma.shape == (8, 8, 8, 8)
    assert coefficients.decode_warnings == ("Premature end of JPEG file",)
    assert not coefficients.luma[-1].any()  # the missing blocks are zero
    assert capfd.readouterr().err == ""
    assert read_jpeg_coefficients(data).decode_warnings == ()


def test_many_app_and_comment_segments_are_read_past():
    data = jpeg(textured(16, 16))
    comments = b"".join(b"\xff\xfe\x00\x05hi!" for _ in range(80))  # jpeglib keeps 50 at most
    coefficients = read_jpeg_coefficients(data[:2] + comments + data[2:])
    np.testing.assert_array_equal(coefficients.luma, read_jpeg_coefficients(data).luma)


def corrupted(data: bytes, marker: int, offset: int, value: bytes) -> bytes:
    """data with `value` written `offset` bytes after the first `marker`."""
    at = next(at for at, code in segments(data) if code == marker) + offset
    return data[:at] + value + data[at + len(value):]


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:2] + b"\x00" * 40, "no frame header"),
    (lambda d: corrupted(d, 0xDB, 2, b"\xff\x00"), "runs past the end"),
    (lambda d: corrupted(d, 0xFE, 2, b"\x00\x01"), "length 1"),
    (lambda d: corrupted(d, 0xC4, 4, b"\x1f"), r"corrupt JPEG \(Bogus DHT index"),  # libjpeg's
    (lambda d: corrupted(d, 0xC0, 7, b"\x00\x00"), "invalid frame header"),
])
def test_a_broken_jpeg_raises_a_one_line_image_read_error(damage, message, capfd):
    data = jpeg(textured(16, 16), comment=b"note")
    with pytest.raises(JpegCoefficientsError, match=message) as caught:
        read_jpeg_coefficients(damage(data))
    assert isinstance(caught.value, ImageReadError) and "\n" not in str(caught.value)
    outputs = capfd.readouterr()
    assert outputs.err == "" and outputs.out == ""


@pytest.mark.parametrize("damage, message", [
    (lambda d: corrupted(d, 0xC0, 1, b"\xc3"), "lossless"),
    (lambda d: corrupted(d, 0xC0, 4, b"\x0c"), "12-bit"),
])
def test_jpegs_without_8_bit_dct_blocks_are_unsupported(damage, message):
    with pytest.raises(UnsupportedJpegError, match=message):
        read_jpeg_coefficients(damage(jpeg(textured(16, 16))))


def test_max_pixels_refuses_from_the_frame_header_before_decoding(monkeypatch):
    data = jpeg(textured(64, 96))
    monkeypatch.setattr(jc, "_decode_coefficients", lambda *a: pytest.fail("decoded"))
    with pytest.raises(ImageReadError, match="96x64 pixels exceeds the limit of 6000"):
        read_jpeg_coefficients(data, max_pixels=6000)
    monkeypatch.undo()
    assert read_jpeg_coefficients(data, max_pixels=6144).luma.shape[:2] == (8, 12)
    assert read_jpeg_coefficients(data, max_pixels=None) is not None


def test_progressive_and_baseline_files_of_one_image_give_the_same_coefficients():
    pixels = textured(40, 72)
    baseline = read_jpeg_coefficients(jpeg(pixels, quality=85), chroma=True)
    progressive = read_jpeg_coefficients(jpeg(pixels, quality=85, progressive=True), chroma=True)
    assert (baseline.coding, baseline.progressive) == ("baseline", False)
    assert (progressive.coding, progressive.progressive) == ("progressive", True)
    np.testing.assert_array_equal(progressive.luma, baseline.luma)
    np.testing.assert_array_equal(progressive.luma_table, baseline.luma_table)
    np.testing.assert_array_equal(progressive.chroma.cr, baseline.chroma.cr)


def test_arithmetic_coding_gives_the_huffman_coefficients(tmp_path):
    import jpeglib
    pixels = textured(24, 40)
    with jpeglib.version(jc.LIBJPEG_BUILD):
        for name, flags in (("huffman", []), ("arithmetic", ["+ARITH_CODE"])):
            jpeglib.from_spatial(pixels).write_spatial(str(tmp_path / name), qt=80, flags=flags)
    huffman = read_jpeg_coefficients(tmp_path / "huffman")
    arithmetic = read_jpeg_coefficients(tmp_path / "arithmetic")
    assert arithmetic.coding == "arithmetic"
    np.testing.assert_array_equal(arithmetic.luma, huffman.luma)


def test_greyscale_has_luma_only_and_cmyk_or_rgb_coded_have_no_luma():
    grey = read_jpeg_coefficients(jpeg(textured(16, 24, channels=1)), chroma=True)
    assert grey.colour == "grey" and grey.chroma is None and grey.luma.shape[:2] == (2, 3)
    cmyk = Image.fromarray(textured(16, 24)).convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG")
    assert read_jpeg_coefficients(buffer.getvalue()) is None
    assert read_jpeg_coefficients(jpeg(textured(16, 24), keep_rgb=True)) is None
    colour = read_jpeg_coefficients(jpeg(textured(16, 24)), chroma=True)
    assert colour.colour == "YCbCr" and colour.chroma.subsampling == (2, 2)


@pytest.mark.parametrize("edit", ["component ids 1 2 3", "no Adobe segment"])
def test_rgb_coding_is_known_by_the_adobe_segment_or_else_by_the_component_ids(edit):
    data = jpeg(textured(16, 24), keep_rgb=True)  # Adobe transform 0 and ids 'R', 'G', 'B'
    if edit == "no Adobe segment":
        adobe = next(at for at, code in segments(data) if code == 0xEE)
        data = data[:adobe] + data[adobe + 2 + int.from_bytes(data[adobe + 2:adobe + 4], "big"):]
        assert b"Adobe" not in data
    else:
        places = [at + 10 + 3 * i for at, code in segments(data) if code == 0xC0 for i in range(3)]
        places += [at + 5 + 2 * i for at, code in segments(data) if code == 0xDA for i in range(3)]
        edited = bytearray(data)
        for place, new_id in zip(places, [1, 2, 3] * 2):
            edited[place] = new_id
        data = bytes(edited)
    assert read_jpeg_coefficients(data) is None


def test_concurrent_reads_each_get_their_own_file():
    files = [jpeg(textured(32, 32, seed=seed)) for seed in range(4)]
    expected = [read_jpeg_coefficients(data).luma for data in files]
    results = [None] * 4

    def read(index):
        for _ in range(5):
            results[index] = read_jpeg_coefficients(files[index]).luma

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
