"""The JPEG stream's gate of a checkpoint, chosen on the TRAINING split of a dataset (the
held-back share never seen).

A file whose stream logits all stay below the gate gets the pixel path's map; its score keeps
the JPEG evidence (CheckpointInfo.jpeg_gate_logit). Each training image is read three times:
as its file, as the file saved once more at JPEG quality 90 (a share site that keeps the
size: the history is weakened), and as a share-site copy (resized by 0.75, re-saved at 90:
the history the stream reads is gone, and its low logits would veto the pixels). For each
candidate gate the script reports, on each reading, DSC (paper protocol), image AUC and
accuracy (as a scan flags: images with coefficients at the fused score's threshold), and the
share of maps the pixel path drew. The choice: among the candidates whose accuracy on the files
stays at least --min-accuracy, the smallest gate whose mean DSC over the readings comes within
--tolerance of the best (the training split flatters the pixel path, whose network was
trained on those images: where gates tie there, the one that keeps more of the stream wins);
the ungated model when none qualifies.
--split val measures the held-back share instead (to report, not to choose).

    python scripts/calibrate_jpeg_gate.py CHECKPOINT DATASET [--val-fraction 0.25 --seed 0]
        [--candidates=-1,0,1,2,3] [--min-accuracy 0.9] [--tolerance 0.001] [--split train]
        [--json OUT]
"""
import argparse
import json

import numpy as np

from forgeryloc import metrics
from forgeryloc.data.datasets import read_dataset, split_holdout
from forgeryloc.evaluate import read_sample, resize_probability
from forgeryloc.image_scores import image_score
from forgeryloc.jpeg_input import read_jpeg_input
from forgeryloc.predict import Finding, Predictor
from forgeryloc.preprocess import resize_mask
from forgeryloc.weights import load_model

READINGS = {"files": {}, "re-saves (q90)": {"resave_quality": 90},
            "copies (x0.75, q90)": {"rescale": 0.75, "resave_quality": 90}}


def read_both_paths(predictor: Predictor, sample, reading: dict) -> dict:
    """One image's pixel-path and fused maps (at the protocol's size), scores, and the
    largest stream logit (None: no coefficients). The predictor has no gate; the logits are
    those of the fused map (raised to the checkpoint's floor, if it has one: the gate sees
    them before, which differs only where every logit lies below the floor)."""
    rgb, mask, source = read_sample(sample, **reading)
    outputs = predictor.forward(predictor.preprocess(rgb)[None])
    maps = predictor.maps_from_resized(outputs, 0, *rgb.shape[:2])
    jpeg = read_jpeg_input(source)[0]
    pixel = Finding.from_maps(predictor.with_jpeg(maps, None)).probability
    fused_maps = predictor.with_jpeg(maps, jpeg) if jpeg is not None else None
    fused = Finding.from_maps(fused_maps).probability if jpeg is not None else pixel
    size, statistic = predictor.size, predictor.info.image_score
    return {"tampered": sample.tampered, "truth": resize_mask(mask, size, size).astype(bool),
            "pixel": resize_probability(pixel, size), "fused": resize_probability(fused, size),
            "pixel_score": image_score(pixel, statistic),
            "fused_score": image_score(fused, statistic),
            "largest_logit": (float(fused_maps.jpeg_logits.max())
                              if fused_maps is not None else None)}


def measure(rows: list[dict], gate: float | None, thresholds: tuple[float, float]) -> dict:
    dsc, scores, labels, correct, pixel_path = [], [], [], [], 0
    for row in rows:
        fused = row["largest_logit"] is not None and (gate is None
                                                      or row["largest_logit"] >= gate)
        key = "fused" if fused else "pixel"  # the map
        pixel_path += not fused
        scored = "pixel" if row["largest_logit"] is None else "fused"  # the score
        score, threshold = row[f"{scored}_score"], thresholds[scored == "pixel"]
        if row["tampered"]:
            dsc.append(metrics.dice(row[key] >= 0.5, row["truth"]))
        scores.append(score)
        labels.append(row["tampered"])
        correct.append((score >= threshold) == row["tampered"])
    return {"dsc": float(np.mean(dsc)), "image_auc": metrics.roc_auc(np.array(scores),
                                                                      np.array(labels)),
            "accuracy": float(np.mean(correct)), "pixel_path": pixel_path / len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("dataset")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", default="-1,0,1,2,3")
    parser.add_argument("--min-accuracy", type=float, default=0.9)
    parser.add_argument("--tolerance", type=float, default=0.001)
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    samples = split_holdout(read_dataset(args.dataset), args.val_fraction,
                            args.seed)[args.split == "val"]
    model, card = load_model(args.checkpoint)
    if model.config.jpeg_stream is None:
        parser.error("the checkpoint has no JPEG stream")
    card.jpeg_gate_logit = None
    predictor = Predictor(model, card, "cpu")
    thresholds = (card.score_threshold, card.pixel_score_threshold or card.score_threshold)
    rows = {name: [read_both_paths(predictor, sample, reading) for sample in samples]
            for name, reading in READINGS.items()}
    table = []
    for gate in [None] + [float(c) for c in args.candidates.split(",")]:
        measured = {name: measure(rows[name], gate, thresholds) for name in READINGS}
        mean_dsc = float(np.mean([m["dsc"] for m in measured.values()]))
        table.append({"gate": gate, "mean_dsc": mean_dsc, **measured})
        print(f"gate {gate!s:>5}  mean DSC {mean_dsc:.3f}  " + "  |  ".join(
            f"{name}: DSC {m['dsc']:.3f} AUC {m['image_auc']:.3f} acc {m['accuracy']:.3f} "
            f"pixel path {m['pixel_path']:.2f}" for name, m in measured.items()))
    allowed = [t for t in table[1:] if t["files"]["accuracy"] >= args.min_accuracy]
    best = max((t["mean_dsc"] for t in allowed), default=None)
    chosen = min((t for t in allowed if t["mean_dsc"] >= best - args.tolerance),
                 key=lambda t: t["gate"]) if allowed else table[0]
    print(f"{'chosen' if args.split == 'train' else 'the rule would choose'} gate: "
          f"{chosen['gate']} ({args.split} split, {len(samples)} images)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"chosen": chosen["gate"], "table": table, "images": len(samples),
                       "split": args.split, "min_accuracy": args.min_accuracy,
                       "tolerance": args.tolerance}, handle, indent=1)


if __name__ == "__main__":
    main()
