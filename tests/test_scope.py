"""scope.py: drawn pictures (masks, cartoons) are told apart from photographs."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from forgeryloc.scope import MIN_FLAT_SHARE, flat_block_share, picture_kind


def _noisy_photo(height=96, width=128, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 2.0, y * 2.0, np.full_like(x, 128.0)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


def _cartoon(height=240, width=320) -> Image.Image:
    picture = Image.new("RGB", (width, height), (30, 120, 200))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((40, 40, 160, 160), fill=(250, 200, 0))
    draw.rectangle((180, 80, 300, 220), fill=(200, 30, 30))
    return picture


def test_flat_block_share_counts_whole_blocks_of_one_value():
    grey = np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)  # 5 x 6 blocks
    assert flat_block_share(grey) == 0.0
    grey[:16, :24] = 7                    # 2 x 3 blocks flat
    grey[16:24, 24:31] = 9                # one block with a single odd pixel: not flat
    assert flat_block_share(grey) == pytest.approx(6 / 30)
    uneven = np.full((43, 53), 200, np.uint8)  # 5 x 6 whole blocks and a ragged edge
    uneven[40:, :] = uneven[:, 48:] = 0         # off the whole blocks: not counted
    uneven[41, 3] = uneven[5, 50] = 1
    assert flat_block_share(uneven) == 1.0
    assert flat_block_share(np.zeros((7, 100), np.uint8)) == 0.0


def test_banded_and_whole_measures_agree():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 3, (203, 77), dtype=np.uint8)
    grey[::2] = 5
    grey[40:120, 8:64] = 1
    assert flat_block_share(grey, band_rows=3) == flat_block_share(grey, band_rows=1000)


def test_masks_and_cartoons_are_drawn_photographs_are_not():
    mask = Image.new("L", (200, 150), 0)
    ImageDraw.Draw(mask).ellipse((50, 40, 140, 120), fill=255)
    kind = picture_kind(mask.convert("RGB"))
    assert kind.drawn and kind.colours == 2
    assert "2 colours" in kind.note() and "not flagged" in kind.note()

    encoded = io.BytesIO()
    _cartoon().save(encoded, "JPEG", quality=85)  # many colours after JPEG, still flat
    cartoon = picture_kind(Image.open(encoded).convert("RGB"))
    assert cartoon.colours is None and cartoon.flat_share >= MIN_FLAT_SHARE and cartoon.drawn

    photo = picture_kind(_noisy_photo())
    assert not photo.drawn and photo.colours is None and photo.note() is None


def test_the_flattest_photographs_measured_stay_photographs(shared):
    """The flattest camera pictures of the data (an object on white, a bird on a clear sky)
    are within the limits, with room to spare."""
    casia = shared / "data" / "benchmarks" / "casia1-dev" / "authentic"
    for name in ("Au_art_0068.jpg", "Au_ani_0058.jpg"):
        kind = picture_kind(Image.open(casia / name).convert("RGB"))
        assert not kind.drawn, name
        assert kind.flat_share < MIN_FLAT_SHARE - 0.15, (name, kind.flat_share)


def test_a_text_page_screenshot_is_mostly_flat_but_stays_in_scope():
    # the documented limit (README, "Drawn pictures"): a plain text page is not caught
    import random

    from script_loading import load_script
    pages = load_script("text_page_screenshots")
    page = pages.text_page(random.Random(0), pages.FONTS[0], 14, *pages.SCHEMES[0])
    kind = picture_kind(page)
    assert page.size == (1024, 768) and kind.colours is None
    assert 0.6 < kind.flat_share < MIN_FLAT_SHARE and not kind.drawn
