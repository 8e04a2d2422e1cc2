"""Pictures of a prediction: lossless maps, masks, overlays, difficulty maps, thumbnails."""
import io

import numpy as np
import pytest
from PIL import Image

from forgeryloc import render


def png_chunk_types(data: bytes) -> list[bytes]:
    types, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        types.append(data[offset + 4:offset + 8])
        offset += 12 + length
    return types


def saved_bytes(image: Image.Image, path) -> bytes:
    render.save_png(image, path)
    return path.read_bytes()


def gradient_photo(height=48, width=64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                     np.full_like(x, 100)], axis=-1).astype(np.uint8)


def square_map(height=48, width=64, value=0.9) -> np.ndarray:
    prob = np.zeros((height, width), np.float32)
    prob[10:30, 20:40] = value
    return prob


# --------------------------------------------------------------------------- probability maps

def test_probability_png_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    prob = rng.random((37, 53)).astype(np.float32)
    prob[0, :4] = [0.0, 1.0, 0.5, 1 / 65535]
    image = render.probability_png(prob)
    assert image.mode == "I;16" and image.size == (53, 37)
    render.save_png(image, tmp_path / "prob.png")
    back = render.read_probability_png(tmp_path / "prob.png")
    assert back.dtype == np.float32 and back.shape == prob.shape
    assert np.abs(back - prob).max() <= 1 / 65535
    assert back[0, 0] == 0.0 and back[0, 1] == 1.0


def test_probability_png_levels_and_non_finite_values():
    prob = np.array([[0.0, 1.0, 0.25, np.nan, np.inf, -np.inf, 2.0, -1.0]], np.float64)
    levels = np.asarray(render.probability_png(prob))
    assert levels.tolist() == [[0, 65535, 16384, 0, 65535, 0, 65535, 0]]


def test_probability_png_rejects_wrong_shape():
    with pytest.raises(ValueError):
        render.probability_png(np.zeros((4, 4, 3)))


def test_save_png_is_reproducible_and_has_no_time_stamp(tmp_path):
    image = render.overlay_image(gradient_photo(), square_map(), 0.5, "score 0.90 · FLAGGED")
    first = saved_bytes(image, tmp_path / "a.png")
    again = render.overlay_image(gradient_photo(), square_map(), 0.5, "score 0.90 · FLAGGED")
    assert saved_bytes(again, tmp_path / "b.png") == first
    assert not {b"tIME", b"tEXt", b"zTXt", b"iTXt"} & set(png_chunk_types(first))
    assert not list(tmp_path.glob(".*.tmp"))


# --------------------------------------------------------------------------- masks

def test_mask_png_thresholds_inclusively():
    prob = np.array([[0.2, 0.5, 0.7, np.nan]], np.float32)
    mask = render.mask_png(prob, 0.5)
    assert mask.mode == "L"
    assert np.asarray(mask).tolist() == [[0, 255, 255, 0]]


def test_mask_outline_is_a_thin_ring_without_an_image_frame():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    edge = render.mask_outline(mask)
    ring = mask.copy()
    ring[3:6, 3:6] = False
    assert (edge == ring).all()
    assert not render.mask_outline(np.ones((5, 5), bool)).any()
    assert render.mask_outline(mask, thickness=2)[1, 4]  # widened outward too


# --------------------------------------------------------------------------- overlay

def test_overlay_keeps_the_photo_above_a_legend_strip():
    rgb, prob = gradient_photo(), square_map()
    image = render.overlay_image(rgb, prob, 0.5)
    assert image.mode == "RGB"
    width = max(64, render.MIN_CANVAS_WIDTH)
    assert image.width == width and image.height > 48
    left = (width - 64) // 2
    pixels = np.asarray(image)
    photo = pixels[:48, left:left + 64].astype(int)
    # Where the probability is 0 the photo shows, dimmed and desaturated, but recognisable.
    assert photo[0, 63, 0] > photo[0, 0, 0]
    assert photo[47, 0, 1] > photo[0, 0, 1]
    # Inside the region: inferno's bright end dominates; on its border: the outline colour.
    inside = photo[20, 30]
    assert inside[0] > 180 and inside[1] > 120
    assert tuple(photo[10, 30]) == render.OUTLINE_COLOUR
    assert tuple(photo[5, 30]) != render.OUTLINE_COLOUR
    # The legend below is not the photo: it starts with the background colour.
    assert tuple(pixels[48, 0]) == render.BACKGROUND


def test_overlay_opacity_grows_with_probability():
    rgb = np.full((1, 3, 3), 128, np.uint8)
    prob = np.array([[0.0, 0.3, 0.6]], np.float32)
    image = np.asarray(render.overlay_image(rgb, prob, 0.99)).astype(int)
    left = (render.MIN_CANVAS_WIDTH - 3) // 2
    row = image[0, left:left + 3]
    dimmed = round(128 * render.PHOTO_BRIGHTNESS)
    assert abs(row[0] - dimmed).max() <= 1
    distances = [abs(pixel - row[0]).sum() for pixel in row]
    assert distances[0] < distances[1] < distances[2]


def test_overlay_title_and_legend_scale_with_width_and_are_capped():
    def legend_height(width, title=None):
        return render.overlay_image(np.zeros((1, width, 3), np.uint8),
                                    np.zeros((1, width), np.float32), 0.5, title).height - 1
    small, medium, large, huge = (legend_height(w) for w in (256, 1000, 5000, 20000))
    assert small < medium < large == huge
    assert legend_height(1000, "score 0.83 · area 12.4% · FLAGGED") > medium
    assert large <= 700


@pytest.mark.parametrize("shape", [(1, 1), (10, 10000), (10000, 10), (3, 2)])
def test_overlay_handles_extreme_shapes(shape):
    rgb = np.zeros(shape + (3,), np.uint8)
    prob = np.full(shape, 0.7, np.float32)
    image = render.overlay_image(rgb, prob, 0.5, "a long title " * 30)
    assert image.width == max(shape[1], render.MIN_CANVAS_WIDTH)
    assert image.height > shape[0]


def test_overlay_is_safe_with_non_finite_probabilities():
    prob = np.array([[np.nan, np.inf], [-np.inf, 0.5]], np.float32)
    image = render.overlay_image(np.zeros((2, 2, 3), np.uint8), prob, 0.5)
    assert image.size[0] == render.MIN_CANVAS_WIDTH


def test_overlay_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        render.overlay_image(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 4)), 0.5)
    with pytest.raises(ValueError):
        render.overlay_image(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4)), 0.5)


@pytest.mark.parametrize("title", [None, "score 0.5"])
def test_photo_box_locates_the_photo_in_an_overlay(title):
    image = render.overlay_image(np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30)), 0.5, title)
    left = (render.MIN_CANVAS_WIDTH - 30) // 2
    assert render.photo_box(image.size, (30, 20)) == (left, 0, left + 30, 20)
    assert render.photo_box((400, 300), (400, 900)) is None  # no such layout
    assert render.photo_box((400, 10), (400, 300)) is None


@pytest.mark.parametrize("photo, shown", [((1600, 1200), (400, 300)), ((1000, 999), (500, 500)),
                                          ((2000, 500), (200, 50))])
def test_photo_box_finds_a_scaled_down_preview(photo, shown):
    width, height = shown
    image = render.overlay_image(np.zeros((height, width, 3), np.uint8),
                                 np.zeros((height, width)), 0.5, "score 0.1")
    left = (image.width - width) // 2
    assert render.photo_box(image.size, photo) == (left, 0, left + width, height)
    curvature = render.difficulty_image(np.zeros((height, width), np.float32), "easy", 0.1)
    assert render.photo_box(curvature.size, photo) == (left, 0, left + width, height)


def test_colour_map_is_perceptual_and_monotonic_in_lightness():
    lut = render.INFERNO.astype(float)
    assert lut.shape == (256, 3)
    lightness = lut @ [0.299, 0.587, 0.114]
    assert (np.diff(lightness) >= -0.5).all()
    assert lightness[0] < 10 and lightness[-1] > 220


# --------------------------------------------------------------------------- difficulty

def test_difficulty_image_is_signed_robust_and_nan_safe():
    curvature = np.zeros((32, 32), np.float32)
    curvature[:, :16] = -1.0
    curvature[:, 16:] = 1.0
    curvature[0, 0] = 1e9  # one outlier must not wash out the rest
    curvature[31, 31] = np.nan
    curvature[31, 30] = -np.inf
    image = render.difficulty_image(curvature, "hard", 0.73)
    assert image.mode == "RGB" and image.width == render.MIN_CANVAS_WIDTH
    left = (render.MIN_CANVAS_WIDTH - 32) // 2
    pixels = np.asarray(image)[:32, left:left + 32].astype(int)
    convex, concave = pixels[3, 1], pixels[3, 20]
    assert convex[2] > convex[0] + 50  # blue
    assert concave[0] > concave[2] + 50  # red
    assert tuple(pixels[31, 31]) == render.UNDEFINED_COLOUR


def test_difficulty_image_zero_map_and_display_size():
    image = render.difficulty_image(np.zeros((4, 6), np.float32), "easy", 0.1, size=(600, 400))
    assert image.width == 600 and image.height > 400
    assert (np.asarray(image)[:400].min(axis=(0, 1)) > 230).all()  # white: flat everywhere
    tiny = render.difficulty_image(np.full((1, 1), np.nan, np.float32), "easy", float("nan"))
    assert tiny.width == render.MIN_CANVAS_WIDTH


# --------------------------------------------------------------------------- thumbnails

@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16", "P"])
def test_thumbnail_jpeg_any_mode(mode):
    image = Image.new("RGB", (600, 300), (200, 30, 30)).convert(mode) if mode != "I;16" \
        else render.probability_png(np.full((300, 600), 0.5, np.float32))
    data = render.thumbnail_jpeg(image, max_side=160)
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (160, 80)
        if mode == "I;16":
            assert abs(np.asarray(thumb.convert("L")).mean() - 128) < 3


def test_thumbnail_jpeg_never_enlarges_and_is_deterministic():
    image = Image.new("RGB", (3, 1), (10, 200, 10))
    data = render.thumbnail_jpeg(image)
    assert data == render.thumbnail_jpeg(image)
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == (3, 1)


def test_open_thumbnail_crops_the_legend_off_an_overlay(tmp_path):
    rgb = np.full((40, 400, 3), 255, np.uint8)
    render.save_png(render.overlay_image(rgb, np.zeros((40, 400)), 0.5), tmp_path / "o.png")
    data = render.open_thumbnail(tmp_path / "o.png", 100, crop_size=(400, 40))
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == (100, 10)
    with pytest.raises(OSError):
        render.open_thumbnail(tmp_path, 100)


def test_difficulty_picture_shows_cells_smoothly_over_the_photo():
    """The curvature of a bilinearly enlarged 8 x 8 prior lies on its cell borders: drawn as
    it is, every image showed the same grid of lines. Averaged per prior cell and
    interpolated, the picture changes smoothly, keeps the sign of each region, and shows the
    photo (in grey) where the prior is flat."""
    curvature = np.zeros((256, 256), np.float32)
    curvature[::32, :] = curvature[:, ::32] = -1.0       # convex lines everywhere...
    curvature[:128, :128][::32, :] = 1.0                 # ...concave in the top-left quarter
    curvature[:128, :128][:, ::32] = 1.0
    grey = np.full((300, 300, 3), 128, np.uint8)
    image = render.difficulty_image(curvature, "hard", 1.0, size=(300, 300), photo=grey,
                                    cells=(8, 8))
    pixels = np.asarray(image)[:300, 10:310].astype(int)  # centred on a 320-wide canvas
    steps = max(np.abs(np.diff(pixels, axis=0)).max(), np.abs(np.diff(pixels, axis=1)).max())
    assert steps <= 25, f"a step of {steps} levels between neighbouring pixels"
    top_left, bottom_right = pixels[40, 40], pixels[260, 260]
    assert top_left[0] > top_left[2] + 60 and bottom_right[2] > bottom_right[0] + 30
    assert render.cell_means(curvature, (8, 8)).sum() * 32 * 32 == pytest.approx(curvature.sum())
    photo = np.zeros((300, 300, 3), np.uint8)
    photo[:, 150:] = (255, 200, 0)
    flat = np.asarray(render.difficulty_image(np.zeros((8, 8), np.float32), "easy", 0.0,
                                              size=(300, 300), photo=photo))[:300, 10:310]
    flat = flat.astype(int)
    assert flat[:, :150].mean() < 60 and flat[:, 150:].mean() > 150, "the photo, in grey"
    assert (flat[..., 0] == flat[..., 2]).all()


def test_difficulty_headline_does_not_show_a_saturated_score_as_a_measure():
    assert render.difficulty_headline("hard", 1.0) == \
        "difficulty: hard (score saturated at 1.00: only the sign counted)"
    assert render.difficulty_headline("easy", 0.0).startswith("difficulty: easy (score saturated")
    assert render.difficulty_headline("hard", 0.73) == "difficulty: hard (score 0.73)"
    assert render.difficulty_headline("easy", float("nan")) == "difficulty: easy (score n/a)"


def test_difficulty_backdrop_reduces_the_photo_while_cells_keep_their_pixels():
    photo = np.zeros((768, 1024, 3), np.uint8)
    photo[:, 512:] = 200  # the right half bright
    small = render.difficulty_backdrop(photo, (8.0, 8.0))  # a 256 px network's 8 x 8 cells
    assert small.shape == (384, 512, 3)
    assert small[:, :256].max() == 0 and small[:, 256:].min() == 200  # averaged, not shifted
    assert small.shape[1] / 8 >= render.DIFFICULTY_CELL_PIXELS  # along the long side
    # a small preview, or a fine grid of cells (tile mode over a large photo), stays as it is
    assert render.difficulty_backdrop(photo[:500, :700], (8.0, 8.0)).shape == (500, 700, 3)
    assert render.difficulty_backdrop(photo, (24.0, 32.0)) is photo
