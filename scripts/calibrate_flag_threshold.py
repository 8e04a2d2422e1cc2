"""The image-score threshold at which a checkpoint flags an image, chosen without the dataset's
held-back share (never read here).

Rule: the threshold with the best balanced accuracy (mean of the tampered and the authentic
recall) over the dataset's training split; with --max-false-alarms RATE, raised where needed
so that on every set of authentic photos given (the training split's authentic images, and the
calibration half of each --authentic folder) at most RATE of the images are flagged. A
threshold fitted to one dataset's authentic photos does not hold for others: the balanced one
of casia1-dev flagged 2% of its held-out authentic images and 37% of an ImageNet sample.

--authentic FOLDER: photos known to be authentic, from elsewhere. Sorted by name, the files at
even positions calibrate; those at odd positions are held out, scored only to report the
false-alarm rate the chosen threshold gives on them (--report-held-out). --authentic LIST.txt
(one path per line): every listed photo calibrates; --held-out LIST.txt or FOLDER: photos
only scored for the report (e.g. when part of a folder went into training). --edited LIST.txt
(file names, one per line, '#' starts a comment): pictures of the --authentic folders that carry
visible edits (a watermark, a collage, ...): left out of both halves, which keep their places in
name order, and reported apart (edited_pictures_flagged), since a flag there is no false alarm.

    python scripts/calibrate_flag_threshold.py CHECKPOINT DATASET [--val-fraction 0.25 --seed 0]
        [--image-score top1%]   (the statistic to calibrate for; default: the checkpoint's)
        [--without-jpeg]        (the pixel path's threshold: scores made without JPEG evidence,
                                 for ship_weights.py --pixel-score-threshold)
        [--authentic FOLDER|LIST.txt ... --max-false-alarms 0.05 --report-held-out
         --held-out FOLDER|LIST.txt ... --edited NAMES.txt]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from forgeryloc.data.datasets import Sample, read_dataset, split_holdout
from forgeryloc.evaluate import evaluate_samples
from forgeryloc.image_scores import STATISTICS
from forgeryloc.imaging import IMAGE_EXTENSIONS
from forgeryloc.metrics import roc_auc
from forgeryloc.predict import Predictor
from forgeryloc.weights import load_model


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    flagged = scores >= threshold
    return 0.5 * (flagged[labels].mean() + (~flagged[~labels]).mean())


def false_alarms(scores: np.ndarray, threshold: float) -> float:
    return float(np.mean(scores >= threshold))


def listed_samples(path: Path) -> list[Sample]:
    """The images of a folder (sorted) or of a text file listing one path per line."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        files = [Path(line.strip()) for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    return [Sample(image=p, mask=None, name=p.name, tampered=False) for p in files]


def authentic_halves(folder: Path) -> tuple[list[Sample], list[Sample]]:
    """(calibration, held out): the folder's images sorted by path, even and odd positions."""
    samples = listed_samples(folder)
    return samples[0::2], samples[1::2]


def edited_names(path: Path | None) -> set[str]:
    """The file names of an --edited list (text after '#' and blank lines ignored)."""
    if path is None:
        return set()
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return {line for line in lines if line}


def split_edited(samples: list[Sample], edited: set[str]) -> tuple[list[Sample], list[Sample]]:
    """(plain photos, edited pictures), each in the given order."""
    return ([s for s in samples if s.name not in edited], [s for s in samples if s.name in edited])


def lowest_threshold_within(scores: np.ndarray, candidates: np.ndarray, rate: float) -> float:
    """The smallest candidate at which at most `rate` of `scores` reach it."""
    allowed = [t for t in candidates if false_alarms(scores, t) <= rate]
    if not allowed:
        raise SystemExit(f"no candidate threshold keeps false alarms at or below {rate}")
    return float(min(allowed))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-score", choices=sorted(STATISTICS))
    parser.add_argument("--without-jpeg", action="store_true")
    parser.add_argument("--authentic", type=Path, action="append", default=[])
    parser.add_argument("--max-false-alarms", type=float, default=None)
    parser.add_argument("--held-out", type=Path, action="append", default=[])
    parser.add_argument("--report-held-out", action="store_true")
    parser.add_argument("--edited", type=Path, default=None)
    args = parser.parse_args()
    edited = edited_names(args.edited)
    train = split_holdout(read_dataset(args.dataset), args.val_fraction, args.seed)[0]
    model, card = load_model(args.checkpoint)
    card.image_score = args.image_score or card.image_score
    predictor = Predictor(model, card, "cpu")

    def scores_of(samples: list[Sample]) -> np.ndarray:
        rows = evaluate_samples(predictor, samples, use_jpeg=not args.without_jpeg).rows
        return np.array([r["score"] for r in rows])

    rows = evaluate_samples(predictor, train, use_jpeg=not args.without_jpeg).rows
    scores = np.array([r["score"] for r in rows])
    labels = np.array([r["tampered"] for r in rows])
    authentic = {f"{args.dataset} (training split, authentic)": scores[~labels]}
    # folder -> half -> (plain photos, edited pictures)
    halves = {str(path): dict(zip(("calibration", "held-out"),
                                  (split_edited(half, edited) for half in authentic_halves(path))))
              for path in args.authentic if path.is_dir()}
    plain = ", plain photos" if edited else ""
    for name, parts in halves.items():
        authentic[f"{name}{plain} (calibration half)"] = scores_of(parts["calibration"][0])
    for path in args.authentic:
        if not path.is_dir():
            authentic[f"{path} (listed)"] = scores_of(listed_samples(path))
    candidates = np.unique(np.round(np.concatenate([scores, *authentic.values()]), 4))
    balanced = float(max(candidates, key=lambda t: balanced_accuracy(scores, labels, t)))
    chosen = balanced
    if args.max_false_alarms is not None:
        chosen = max([balanced] + [lowest_threshold_within(values, candidates,
                                                           args.max_false_alarms)
                                   for values in authentic.values()])

    def at(threshold: float) -> dict:
        return {"threshold": threshold,
                "tampered_recall_train": float(np.mean(scores[labels] >= threshold)),
                "balanced_accuracy_train": balanced_accuracy(scores, labels, threshold),
                "false_alarms": {name: false_alarms(values, threshold)
                                 for name, values in authentic.items()}}

    result = {"threshold": chosen, "images": len(rows),
              "rule": "best balanced accuracy on the training split" + (
                  f", raised until at most {args.max_false_alarms} of every authentic set is "
                  f"flagged" if args.max_false_alarms is not None else "") + (
                  f" (pictures listed in {args.edited.name} as visibly edited are left out of "
                  f"the authentic sets and counted apart)" if edited else ""),
              "image_auc_train": roc_auc(scores, labels.astype(np.int64)),
              "image_score": card.image_score, "without_jpeg": args.without_jpeg,
              "chosen": at(chosen), "balanced": at(balanced),
              "authentic_images": {name: len(values) for name, values in authentic.items()}}
    if args.report_held_out:
        held_out = {f"{name}{plain} (held-out half, {len(parts['held-out'][0])} images)":
                    parts["held-out"][0] for name, parts in halves.items()}
        held_out.update({f"{path} ({len(listed)} images)": listed for path, listed in
                         ((path, listed_samples(path)) for path in args.held_out)})
        result["held_out_false_alarms"] = {name: false_alarms(scores_of(samples), chosen)
                                           for name, samples in held_out.items()}
        if edited:
            apart = {f"{name}, visibly edited pictures ({half} half, {len(pictures)} images)":
                     pictures for name, parts in halves.items()
                     for half, (_, pictures) in parts.items() if pictures}
            result["edited_pictures_flagged"] = {name: false_alarms(scores_of(pictures), chosen)
                                                 for name, pictures in apart.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
