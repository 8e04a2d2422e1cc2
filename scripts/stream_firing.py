"""How a fused checkpoint's JPEG stream behaves on authentic photos from elsewhere, without any
flag threshold: how many of them it fires on (a block logit at or above the checkpoint's gate),
and the image AUC of a dataset's held-out forgeries against them (the image score ranks; 0.5 is
chance). The false alarms on web photos come from there (checkpoints/README.md).

    python scripts/stream_firing.py CHECKPOINT DATASET --authentic FOLDER|LIST.txt
        [--half odd|even|all] [--edited NAMES.txt] [--holdout 0.25 --seed 0]

--half takes the photos at odd or even positions of the sorted folder (the halves of
calibrate_flag_threshold.py: even calibrates, odd is held out); --edited leaves out the
pictures listed as visibly edited. Prints one JSON object.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from forgeryloc.data.datasets import read_dataset, split_holdout
from forgeryloc.evaluate import evaluate_samples
from forgeryloc.metrics import roc_auc
from forgeryloc.predict import Predictor
from forgeryloc.weights import load_model

from calibrate_flag_threshold import edited_names, listed_samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--authentic", type=Path, required=True)
    parser.add_argument("--half", choices=("odd", "even", "all"), default="odd")
    parser.add_argument("--edited", type=Path, default=None)
    parser.add_argument("--holdout", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, card = load_model(args.checkpoint)
    if card.jpeg_gate_logit is None:
        raise SystemExit("the checkpoint has no JPEG gate: nothing to count against")
    predictor = Predictor(model, card, "cpu")
    photos = listed_samples(args.authentic)
    if args.half != "all":
        photos = photos[1::2] if args.half == "odd" else photos[0::2]
    edited = edited_names(args.edited)
    photos = [s for s in photos if s.name not in edited]
    held_out = split_holdout(read_dataset(args.dataset), args.holdout, args.seed)[1]
    forgeries = [s for s in held_out if s.tampered]
    # a row's pixel_path: no block reached the gate (or no JPEG evidence), so the stream did
    # not fire on it
    photo_rows = evaluate_samples(predictor, photos).rows
    forgery_rows = evaluate_samples(predictor, forgeries).rows
    scores = np.array([r["score"] for r in forgery_rows + photo_rows])
    labels = np.array([1] * len(forgery_rows) + [0] * len(photo_rows))
    print(json.dumps({
        "photos": len(photo_rows),
        "photos_above_gate": sum(not r["pixel_path"] for r in photo_rows),
        "forgeries": len(forgery_rows),
        "forgeries_above_gate": sum(not r["pixel_path"] for r in forgery_rows),
        "gate": card.jpeg_gate_logit, "image_auc_forgeries_vs_photos": roc_auc(scores, labels),
        "photos_flagged": sum(r["score"] >= r["flag_threshold"] for r in photo_rows),
        "forgeries_flagged": sum(r["score"] >= r["flag_threshold"] for r in forgery_rows),
        "score_threshold": card.score_threshold}, indent=1))


if __name__ == "__main__":
    main()
