"""Synthetic screenshots of text pages, to measure what the detector and the drawn-picture
check (forgeryloc/scope.py) make of them: 3 fonts x 4 sizes x 3 colour schemes, 1024 x 768, a
title bar and lines of random words; in turn saved as PNG, JPEG q90 and JPEG q75.

    python scripts/text_page_screenshots.py OUT_FOLDER [--seed 0]
    forgeryloc scan OUT_FOLDER -o SCAN_OUT

They are no stand-in for real screenshots (no pictures, icons or anti-aliasing of other
renderers in them); they only show how a plain text page is read.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
         "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
         "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf")
SIZES = (12, 14, 16, 20)
SCHEMES = (((255, 255, 255), (20, 20, 20)), ((245, 245, 240), (40, 40, 90)),
           ((30, 30, 30), (220, 220, 220)))
WORDS = ("the of and to in is for that on with as was by at an be this from or which have are "
         "it not but were they his her all one can more has had their also about when").split()
SAVES = (("png", {}), ("jpg", {"quality": 90}), ("jpg", {"quality": 75}))


def font(path: str, size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype(path, size)
    except OSError:  # the font is not installed here: Pillow's own
        return ImageFont.load_default(size=size)


def text_page(rng: random.Random, font_path: str, size: int, background, ink,
              width: int = 1024, height: int = 768) -> Image.Image:
    page = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(page)
    draw.rectangle([0, 0, width, 40], fill=(60, 90, 160))
    draw.text((10, 10), "Example Page Title", font=font(font_path, 18), fill=(255, 255, 255))
    body, top = font(font_path, size), 60
    while top < height - 30:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16)))
        draw.text((20, top), line, font=body, fill=ink)
        top += int(size * 1.6) + (size if rng.random() < 0.1 else 0)
    return page


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng, index = random.Random(args.seed), 0
    for size in SIZES:
        for font_path in FONTS:
            for background, ink in SCHEMES:
                suffix, options = SAVES[index % len(SAVES)]
                text_page(rng, font_path, size, background, ink).save(
                    args.out / f"page{index:02d}.{suffix}", **options)
                index += 1


if __name__ == "__main__":
    main()
