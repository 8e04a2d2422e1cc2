"""Deterministic stand-ins for photographs, and a random-weight checkpoint to scan them with.

The pictures are meant to cost what photographs cost (JPEG decode time, file size, entropy),
not to look like anything: a smooth colour field, a lighting gradient, a few soft-edged shapes
and sensor-like grain, saved as JPEG quality 90. Image i of a given size is the same on every
run and machine (same Pillow/libjpeg given, the same bytes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

STRIP_ROWS = 512  # grain is added strip by strip, so 8000 x 6000 never needs float copies


def synthetic_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """height x width x 3 uint8, a function of (height, width, seed) only."""
    rng = np.random.default_rng([seed, height, width])

    # Colour field: a coarse random grid blown up with bicubic interpolation.
    grid_h, grid_w = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    coarse = rng.uniform(40, 215, size=(grid_h, grid_w, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)

    # Texture: finer random detail (foliage, fabric, ...), low amplitude.
    detail = rng.uniform(0, 255, size=(max(2, height // 16), max(2, width // 16))).astype(np.uint8)
    texture = Image.fromarray(detail, "L").resize((width, height), Image.BICUBIC)

    # Shapes: objects with soft edges, drawn on a small layer then enlarged so the cost does
    # not grow with the picture; the colour layer starts as the background, the mask decides.
    scale = max(1, max(height, width) // 1024)
    layer_size = (max(1, width // scale), max(1, height // scale))
    colours = image.resize(layer_size, Image.BILINEAR) if scale > 1 else image.copy()
    mask = Image.new("L", layer_size, 0)
    paint, cover = ImageDraw.Draw(colours), ImageDraw.Draw(mask)
    lw, lh = layer_size
    for _ in range(int(rng.integers(6, 14))):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        alpha = int(rng.integers(140, 256))
        x0, y0 = rng.uniform(-0.1, 0.9) * lw, rng.uniform(-0.1, 0.9) * lh
        x1 = x0 + rng.uniform(0.05, 0.5) * lw
        y1 = y0 + rng.uniform(0.05, 0.5) * lh
        kind = int(rng.integers(0, 3))
        for canvas, fill in ((paint, colour), (cover, alpha)):
            if kind == 0:
                canvas.ellipse((x0, y0, x1, y1), fill=fill)
            elif kind == 1:
                canvas.rectangle((x0, y0, x1, y1), fill=fill)
        if kind == 2:
            points = [(float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))) for _ in range(5)]
            paint.polygon(points, fill=colour)
            cover.polygon(points, fill=alpha)
    mask = mask.filter(ImageFilter.GaussianBlur(radius=1.5))
    if layer_size != image.size:
        colours = colours.resize(image.size, Image.BILINEAR)
        mask = mask.resize(image.size, Image.BILINEAR)
    image = Image.composite(colours, image, mask)

    # Lighting gradient and grain, in strips.
    rgb = np.array(image, dtype=np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(20, 60)
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32) * np.cos(angle)
    noise_rng = np.random.default_rng([seed, height, width, 1])
    sigma = float(rng.uniform(2.0, 6.0))
    texture_strength = float(rng.uniform(0.05, 0.15))
    for top in range(0, height, STRIP_ROWS):
        rows = min(STRIP_ROWS, height - top)
        ys = np.arange(top, top + rows, dtype=np.float32) / max(1, height - 1) - 0.5
        ys *= np.sin(angle)
        light = (ys[:, None] + xs[None, :]) * strength
        strip = rgb[top:top + rows].astype(np.float32)
        strip += light[:, :, None]
        detail_strip = np.asarray(texture.crop((0, top, width, top + rows)), dtype=np.float32)
        strip += (detail_strip[:, :, None] - 127.5) * texture_strength
        strip += noise_rng.standard_normal(strip.shape, dtype=np.float32) * sigma
        rgb[top:top + rows] = np.clip(strip, 0, 255).astype(np.uint8)
    return rgb


def write_jpeg(path: Path, height: int, width: int, seed: int, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_rgb(height, width, seed)).save(path, "JPEG", quality=quality)
    return path


def write_jpeg_folder(folder: Path, count: int, height: int, width: int,
                      quality: int = 90) -> list[Path]:
    return [write_jpeg(folder / f"img_{i:04d}.jpg", height, width, seed=i, quality=quality)
            for i in range(count)]


def write_random_checkpoint(path: Path, config: str, input_size: int, seed: int = 0) -> Path:
    """A checkpoint of random weights in the shipped format (timings do not depend on values)."""
    import torch

    from forgeryloc.model.m2sformer import build_model
    from forgeryloc.weights import CheckpointInfo, save_checkpoint

    torch.manual_seed(seed)
    model = build_model(config)
    info = CheckpointInfo(config=model.config, input_size=input_size,
                          provenance={"note": "random weights written by benchmarks"})
    return save_checkpoint(model, info, path)
