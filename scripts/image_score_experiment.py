"""Image scores from the late-fused maps, measured on the source-grouped holdout.

The shipped image score is the mean of the fused probability map (the expected share of
manipulated pixels). The mid-level join of the JPEG stream (mid_fusion_experiment.py) raised
casia1-dev's image AUC from 0.855 to 0.946 while its maps changed little, which says the
evidence for "this file was edited" is there but the mean of the map dilutes it: a small
confident region and a faint haze over the whole picture have the same mean. This script
measures statistics of the maps the scan already makes, one at a time and combined by a
logistic model fitted on the training split only, on the held-out split, plain and after
one more save at quality 90 (the stream's known weak spot):

    python scripts/image_score_experiment.py ../shared/data/benchmarks/casia1-dev \
        --weights weights/forgeryloc-default.safetensors --out runs/score
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from forgeryloc import metrics
from forgeryloc.data.datasets import load_pair, read_dataset, split_holdout
from forgeryloc.jpeg_input import read_jpeg_input
from forgeryloc.data.jpeg_tables import resaved_jpeg
from forgeryloc.data.synth import decode_jpeg
from forgeryloc.predict import Finding, Predictor
from forgeryloc.weights import load_model

EPSILON = 1e-4


def _logit(p: float) -> float:
    p = min(max(p, EPSILON), 1 - EPSILON)
    return float(np.log(p / (1 - p)))


def _top_mean(values: np.ndarray, share: float) -> float:
    flat = values.ravel()
    count = max(1, int(round(share * flat.size)))
    return float(np.partition(flat, flat.size - count)[flat.size - count:].mean())


def statistics(predictor: Predictor, sample, resave: int | None) -> dict:
    rgb, _ = load_pair(sample)
    source = sample.image
    if resave is not None:
        source = resaved_jpeg(rgb, resave)
        rgb = decode_jpeg(source)
    height, width = rgb.shape[:2]
    outputs = predictor.forward(predictor.preprocess(rgb)[None])
    maps = predictor.maps_from_resized(outputs, 0, height, width)
    plain = Finding.from_maps(maps).probability
    jpeg = read_jpeg_input(source)[0]
    fused = Finding.from_maps(predictor.with_jpeg(maps, jpeg)).probability
    row = {"tampered": bool(sample.tampered), "name": sample.name,
           "mean_fused": float(fused.mean()), "top1_fused": _top_mean(fused, 0.01),
           "top5_fused": _top_mean(fused, 0.05), "area_fused": float((fused >= 0.5).mean()),
           "mean_rgb": float(plain.mean()), "top1_rgb": _top_mean(plain, 0.01),
           "jpeg": jpeg is not None}
    if jpeg is not None:
        logits = predictor.jpeg_block_logits(jpeg)
        probability = 1 / (1 + np.exp(-logits))
        row.update(mean_stream=float(probability.mean()),
                   top1_stream=_top_mean(probability, 0.01),
                   top5_stream=_top_mean(probability, 0.05))
    return row


FEATURES = ("mean_fused", "top1_fused", "top5_fused", "mean_rgb", "top1_rgb",
            "mean_stream", "top1_stream", "top5_stream")
COMBINATIONS = {
    "fused_mean+top1": ("mean_fused", "top1_fused"),
    "fused+stream": ("mean_fused", "top1_fused", "top1_stream", "mean_stream"),
    "all": FEATURES,
}


def design(rows: list[dict], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[_logit(row.get(name, 0.0)) for name in names] for row in rows])


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50):
    """Newton's method on the mean log-loss plus l2 |w|^2 (not on the bias); features
    standardised by the training split's mean and spread."""
    centre, spread = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([(x - centre) / spread, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-z @ w))
        gradient = z.T @ (p - y) / len(y) + 2 * penalty * w
        hessian = (z.T * (p * (1 - p))) @ z / len(y) + 2 * np.diag(penalty)
        w -= np.linalg.solve(hessian, gradient)
    return centre, spread, w


def predict_logistic(model, x: np.ndarray) -> np.ndarray:
    centre, spread, w = model
    z = np.hstack([(x - centre) / spread, np.ones((len(x), 1))])
    return z @ w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--weights", default="weights/forgeryloc-default.safetensors")
    parser.add_argument("--holdout", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/score")
    args = parser.parse_args()
    model, card = load_model(args.weights)
    predictor = Predictor(model.eval(), card, "cpu")
    train, val = split_holdout(read_dataset(args.data), args.holdout, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows = {}
    for resave in (None, 90):
        tag = "plain" if resave is None else f"q{resave}"
        rows[tag] = {side: [statistics(predictor, s, resave) for s in samples]
                     for side, samples in (("train", train), ("val", val))}
    report = {"weights": args.weights, "train_images": len(train), "val_images": len(val),
              "minutes": round((time.monotonic() - started) / 60, 2), "val_image_auc": {}}
    for tag, sides in rows.items():
        labels = {side: np.array([r["tampered"] for r in sides[side]], float) for side in sides}
        aucs = {name: metrics.roc_auc(np.array([r.get(name, 0.0) for r in sides["val"]]),
                                      labels["val"]) for name in FEATURES}
        for combo, names in COMBINATIONS.items():
            # fitted on the plain training split only, as a shipped score would be
            fitted = fit_logistic(design(rows["plain"]["train"], names),
                                  np.array([r["tampered"] for r in rows["plain"]["train"]],
                                           float))
            aucs["logistic:" + combo] = metrics.roc_auc(
                predict_logistic(fitted, design(sides["val"], names)), labels["val"])
            if tag == "plain":
                report.setdefault("logistic_weights", {})[combo] = {
                    "names": names, "centre": fitted[0].tolist(), "spread": fitted[1].tolist(),
                    "w": fitted[2].tolist()}
        report["val_image_auc"][tag] = {k: round(float(v), 4) for k, v in aucs.items()}
    (out / "image_scores.json").write_text(json.dumps(report, indent=1))
    (out / "rows.json").write_text(json.dumps(rows))
    print(json.dumps(report["val_image_auc"], indent=1))


if __name__ == "__main__":
    main()
