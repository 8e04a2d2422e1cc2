"""Steps at tile borders in tile mode, shipped weights, as a PNG scan fuses the map: for a flat
and a smoothly graded sky made here (and any picture files given), per axis, the largest jump
between neighbouring pixels of the map and the largest mean step across 8 pixels (32 px of the
picture's edges left out), each beside the largest the tiles' own maps show inside them. A
ratio above 1 is a step the blend made (tests/test_streaming.py holds them at 1.05 and 1.1).

    python scripts/tile_seams.py [--overlap 0.5] [picture.png ...]

It uses only the public tile API, so the same file measures an older checkout:
    git worktree add /tmp/before <commit> && PYTHONPATH=/tmp/before python scripts/tile_seams.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from forgeryloc.fused_maps import fuse
from forgeryloc.maps import TiledMaps
from forgeryloc.predict import Predictor
from forgeryloc.weights import load_model


class RecordingPredictor:
    """A Predictor that keeps each tile's probability map."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.size, self.info = predictor, predictor.size, predictor.info
        self.tiles: list[np.ndarray] = []

    def forward(self, batch: torch.Tensor) -> dict:
        outputs = self.predictor.forward(batch)
        self.tiles += list(outputs["probability"][:, 0].numpy())
        return outputs


def steps(probability: np.ndarray, axis: int, apart: int, margin: int) -> np.ndarray:
    """Along `axis`, the mean |change| over `apart` pixels, one value per line across it; the
    lines and their ends kept `margin` pixels away from the map's edges."""
    values = np.moveaxis(probability.astype(np.float64), axis, 0)[:, margin:-margin]
    per_line = np.abs(values[apart:] - values[:-apart]).mean(1)  # centred at i + apart / 2
    inset = margin - apart // 2
    return per_line[inset:len(per_line) - inset]


def smooth_pictures(height: int = 512, width: int = 768) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width] / 512
    flat = np.zeros((height, width, 3)) + (140, 170, 220)
    sky = np.stack([120 + 60 * y + 7 * x, 160 + 50 * y + 4 * x, 230 - 10 * y], axis=-1)
    return {"flat": flat.round().astype(np.uint8), "sky": sky.round().astype(np.uint8)}


def measure(predictor: Predictor, rgb: np.ndarray, overlap: float) -> dict:
    recording = RecordingPredictor(predictor)
    maps = predictor.with_jpeg(TiledMaps(recording, rgb, overlap, 1, rgb.shape[:2]), None)
    probability = np.concatenate([band.probability for band in maps.bands()])
    tiles = recording.tiles if predictor.jpeg_stream is None else \
        [fuse(tile, None, predictor.fusion_weights) for tile in recording.tiles]
    result = {"tiles": len(tiles)}
    for axis, name in ((0, "rows"), (1, "columns")):
        jump = np.abs(np.diff(probability.astype(np.float64), axis=axis)).max()
        own_jump = max(np.abs(np.diff(t.astype(np.float64), axis=axis)).max() for t in tiles)
        step = steps(probability, axis, 8, 32).max()
        own_step = max(steps(t, axis, 8, 32).max() for t in tiles)
        result[name] = {"jump": jump, "own_jump": own_jump, "step_8px": step,
                        "own_step_8px": own_step}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pictures", nargs="*", help="picture files to measure as well")
    parser.add_argument("--overlap", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, card = load_model()
    predictor = Predictor(model, card, "cpu")
    pictures = smooth_pictures()
    for path in args.pictures:
        pictures[path] = np.asarray(Image.open(path).convert("RGB"))
    for name, rgb in pictures.items():
        start = time.perf_counter()
        result = measure(predictor, rgb, args.overlap)
        seconds = time.perf_counter() - start
        print(f"{name} ({rgb.shape[1]}x{rgb.shape[0]}, {result['tiles']} tiles, {seconds:.1f} s)")
        for axis in ("rows", "columns"):
            r = result[axis]
            print(f"  {axis:7s} jump {r['jump']:.4f} / tiles' {r['own_jump']:.4f} = "
                  f"{r['jump'] / r['own_jump']:.2f}   8-px step {r['step_8px']:.4f} / tiles' "
                  f"{r['own_step_8px']:.4f} = {r['step_8px'] / r['own_step_8px']:.2f}")


if __name__ == "__main__":
    main()
