"""Which image-level statistic of the probability map separates tampered from authentic images
best? Prints the image AUC of each candidate on a dataset (the scan's score was chosen with this
on the held-out part of casia1-dev).

    python scripts/compare_image_scores.py DATASET --weights W [--val-fraction 0.25 --seed 0]
"""
import argparse

import numpy as np

from forgeryloc.data.datasets import load_pair, read_dataset, split_holdout
from forgeryloc.metrics import roc_auc
from forgeryloc.predict import Predictor
from forgeryloc.weights import load_model


def candidates(prob: np.ndarray, threshold: float) -> dict[str, float]:
    flat = np.sort(prob.ravel())[::-1]
    top = lambda fraction: float(flat[: max(1, int(np.ceil(flat.size * fraction)))].mean())  # noqa: E731
    return {"max": float(flat[0]), "top0.1%": top(0.001), "top1%": top(0.01), "top5%": top(0.05),
            "mean": float(flat.mean()), "area": float((prob >= threshold).mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--val-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    samples = read_dataset(args.dataset)
    if args.val_fraction:
        samples = split_holdout(samples, args.val_fraction, args.seed)[1]
    model, card = load_model(args.weights)
    predictor = Predictor(model, card)
    scores: dict[str, list[float]] = {}
    labels = []
    for sample in samples:
        rgb, _ = load_pair(sample)
        outputs = predictor.forward(predictor.preprocess(rgb)[None])
        prob = predictor.finding_from_resized(outputs, 0, *rgb.shape[:2]).probability
        for name, value in candidates(prob, card.threshold).items():
            scores.setdefault(name, []).append(value)
        labels.append(int(sample.tampered))
    for name, values in scores.items():
        print(f"{name:>8}: image AUC {roc_auc(np.array(values), np.array(labels)):.4f}")


if __name__ == "__main__":
    main()
