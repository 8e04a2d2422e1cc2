"""Measures the evidence layers and file clues on a benchmark folder (tampered/, masks/,
authentic/): each layer's localisation over the tampered images (per-image best-threshold
F1 and pixel AUC, averaged) and each clue's image-level AUC, tampered against authentic.

    python scripts/evidence_benchmark.py ../shared/data/benchmarks/casia1-dev [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from forgeryloc.evidence import LAYERS, double_jpeg, double_jpeg_fits, ela, file_clues, noise
from forgeryloc.imaging import decode_picture, load_mask, read_bytes
from forgeryloc.jpeg_input import read_coefficients
from forgeryloc.metrics import best_threshold_f1, pixel_auc, roc_auc


def layer_maps(picture, jpeg) -> dict[str, np.ndarray | None]:
    """Each layer's raw values at the picture's size (higher = more suspicious)."""
    rgb = np.asarray(picture)
    height, width = rgb.shape[:2]
    maps = {"ela": np.concatenate([levels for _, levels in ela.error_level_bands(
        lambda top, bottom: rgb[top:bottom], height, width)]).astype(np.float32)}
    levels = np.log(np.maximum(noise.noise_grid(lambda top, bottom: rgb[top:bottom],
                                                height, width), 0.05))
    deviation = np.abs(levels - np.median(levels))
    maps["noise"] = np.repeat(np.repeat(deviation, 16, 0), 16, 1)[:height, :width]
    dq = None
    if jpeg is not None:
        grid = double_jpeg.single_compression_map(jpeg, double_jpeg_fits(jpeg, picture))
        if grid is not None:
            oy, ox = jpeg.origin
            full = np.repeat(np.repeat(grid, 8, 0), 8, 1)
            dq = full[-oy:-oy + height, -ox:-ox + width]
    maps["dq"] = dq
    return maps


def unit(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return np.zeros_like(values, np.float32) if high <= low else \
        ((values - low) / (high - low)).astype(np.float32)


def clue_scores(clues: dict) -> dict[str, float]:
    jpeg = clues.get("jpeg") or {}
    dc = jpeg.get("double_compression") or {}
    meta = clues.get("metadata") or {}
    return {"non_ijg_tables": float(jpeg.get("ijg_standard") is False),
            "estimated_quality": float(jpeg.get("quality") or 0),
            "double_compression_score": float(dc.get("score") or 0),
            "double_compression_detected": float(bool(dc.get("detected"))),
            "decode_warnings": float(bool(clues.get("decode_warnings"))),
            "editing_software": float("editing_software" in meta),
            "dates_differ": float("dates_differ" in meta),
            "thumbnail_differs": float("thumbnail_differs" in meta),
            "camera_fields_missing": float("camera_fields_missing" in meta),
            "c2pa_manifest": float(isinstance(clues.get("c2pa"), dict)
                                   and bool(clues["c2pa"].get("manifest")))}


def clue_summary(values: list[float], labels: list[int]) -> dict:
    tampered = [value for value, label in zip(values, labels) if label]
    authentic = [value for value, label in zip(values, labels) if not label]
    return {"image_auc": round(float(roc_auc(np.array(values), np.array(labels))), 4),
            "share_tampered": round(float(np.mean(tampered)), 4),
            "share_authentic": round(float(np.mean(authentic)), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args(argv)
    results = {name: {"f1": [], "auc": [], "absent": 0} for name in LAYERS}
    scores, labels = {}, []
    for label, kind in ((1, "tampered"), (0, "authentic")):
        paths = sorted(p for p in (args.folder / kind).iterdir() if p.is_file())
        for path in paths[:args.limit or None]:
            data = read_bytes(path)
            picture, meta = decode_picture(data)
            jpeg, note = read_coefficients(data, None, meta.orientation)
            for name, value in clue_scores(file_clues(data, meta, picture, jpeg, note)).items():
                scores.setdefault(name, []).append(value)
            labels.append(label)
            if not label:
                continue
            mask = load_mask(args.folder / "masks" / f"{path.stem}.png")
            for name, values in layer_maps(picture, jpeg).items():
                if values is None or values.shape != mask.shape:
                    results[name]["absent"] += 1
                    values = np.zeros(mask.shape, np.float32)  # no map: no localisation
                results[name]["f1"].append(best_threshold_f1(unit(values), mask)[0])
                auc = pixel_auc(values, mask)
                if np.isfinite(auc):
                    results[name]["auc"].append(auc)
    summary = {"layers": {name: {"best_threshold_f1": round(float(np.mean(r["f1"])), 4),
                                 "pixel_auc": round(float(np.mean(r["auc"])), 4),
                                 "images": len(r["f1"]), "without_map": r["absent"]}
                          for name, r in results.items()},
               "clues": {name: clue_summary(values, labels) for name, values in scores.items()},
               "tampered": int(sum(labels)), "authentic": int(len(labels) - sum(labels))}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
