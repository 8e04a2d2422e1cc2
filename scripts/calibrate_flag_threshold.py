"""The image-score threshold at which a checkpoint flags an image, chosen on the TRAINING split
of a dataset (the held-back share never seen): the threshold with the best balanced accuracy
(mean of the tampered and the authentic recall) over the training images' scores.

    python scripts/calibrate_flag_threshold.py CHECKPOINT DATASET [--val-fraction 0.25 --seed 0]
        [--image-score top1%]   (the statistic to calibrate for; default: the checkpoint's)
        [--without-jpeg]        (the pixel path's threshold: scores made without JPEG evidence,
                                 for ship_weights.py --pixel-score-threshold)
"""
import argparse
import json

import numpy as np

from forgeryloc.data.datasets import read_dataset, split_holdout
from forgeryloc.evaluate import evaluate_samples
from forgeryloc.image_scores import STATISTICS
from forgeryloc.metrics import roc_auc
from forgeryloc.predict import Predictor
from forgeryloc.weights import load_model


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    flagged = scores >= threshold
    return 0.5 * (flagged[labels].mean() + (~flagged[~labels]).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-score", choices=sorted(STATISTICS))
    parser.add_argument("--without-jpeg", action="store_true")
    args = parser.parse_args()
    train = split_holdout(read_dataset(args.dataset), args.val_fraction, args.seed)[0]
    model, card = load_model(args.checkpoint)
    card.image_score = args.image_score or card.image_score
    rows = evaluate_samples(Predictor(model, card, "cpu"), train,
                            use_jpeg=not args.without_jpeg).rows
    scores = np.array([r["score"] for r in rows])
    labels = np.array([r["tampered"] for r in rows])
    candidates = np.unique(np.round(scores, 4))
    best = max(candidates, key=lambda t: balanced_accuracy(scores, labels, t))
    print(json.dumps({"threshold": float(best), "images": len(rows),
                      "balanced_accuracy": balanced_accuracy(scores, labels, best),
                      "image_auc_train": roc_auc(scores, labels.astype(np.int64)),
                      "image_score": card.image_score, "without_jpeg": args.without_jpeg}))


if __name__ == "__main__":
    main()
