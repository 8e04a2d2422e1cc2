"""Turns a training run's checkpoint into the shipped one: fp16 tensors, calibrated image-score
threshold and the hardware recorded in the provenance.

    python scripts/ship_weights.py runs/b0-256/best.safetensors --score-threshold T \
        --hardware "2 CPU cores" [--image-score top1%] [--pixel-score-threshold T2] \
        [--note ...] [--evaluation EVALUATE.json] [--condition-evaluation EVALUATE_Q90.json ...]
        [--flag-calibration FLAG.json] [--pixel-flag-calibration PIXEL_FLAG.json]
            (calibrate_flag_threshold.py outputs, kept in the provenance)
"""
import argparse
import json
import shutil
from pathlib import Path

import torch

from forgeryloc.image_scores import STATISTICS
from forgeryloc.weights import DEFAULT_WEIGHTS_NAME, load_model, save_checkpoint


# what validation_conditions keeps of each `evaluate --json` summary
CONDITION_KEYS = ("dataset", "holdout", "seed", "resave_quality", "rescale", "lossless",
                  "without_jpeg", "tampered", "authentic", "tampered_flagged",
                  "authentic_flagged", "dsc", "iou", "pixel_auc", "image_auc",
                  "image_accuracy", "score_threshold", "floor_all_dsc", "floor_blob_dsc",
                  "pixel_path_images")


def repair_legacy_provenance(card) -> None:
    """Checkpoints written before training recorded exact provenance: the recipe's arch was --arch's
    default even when a resumed checkpoint's architecture was built, `device` was an empty
    hardware note, and `epoch` counted completed epochs. A fused file: its RGB network's."""
    fused = "rgb" in card.provenance
    provenance = card.provenance["rgb"] if fused else card.provenance
    if "recipe" in provenance:
        name = card.config.name
        provenance["recipe"]["arch"] = name.removesuffix("-jpeg") if fused else name
    if provenance.get("device") == "":
        del provenance["device"]
    if "epoch" in provenance and "epochs_completed" not in provenance:
        provenance["epochs_completed"] = provenance.pop("epoch")
    if card.embeddings == "stand-in (random, fixed seed), learned against":  # a cut-off phrase
        card.embeddings = "stand-in (random, fixed seed); trained with them"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--score-threshold", type=float, required=True)
    parser.add_argument("--image-score", choices=sorted(STATISTICS),
                        help="the statistic the threshold was calibrated for")
    parser.add_argument("--pixel-score-threshold", type=float, help="the flag threshold for "
                        "images without JPEG evidence (calibrate_flag_threshold.py "
                        "--without-jpeg)")
    parser.add_argument("--jpeg-gate-logit", type=float, help="the stream's gate: files whose "
                        "block logits all stay below it are read by the pixel path "
                        "(calibrate_jpeg_gate.py)")
    parser.add_argument("--jpeg-gate-calibration", default=None, help="calibrate_jpeg_gate.py "
                        "--json output, recorded in the provenance")
    parser.add_argument("--flag-calibration", default=None, help="calibrate_flag_threshold.py "
                        "output of --score-threshold, recorded in the provenance")
    parser.add_argument("--pixel-flag-calibration", default=None, help="the same for "
                        "--pixel-score-threshold")
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--note", default="")
    parser.add_argument("--metrics", default=None, help="metrics.jsonl of the run to copy beside")
    parser.add_argument("--evaluation", default=None, help="`evaluate --json` output of this "
                        "checkpoint, recorded as its validation")
    parser.add_argument("--condition-evaluation", action="append", default=[],
                        help="`evaluate --json` output of this checkpoint on altered copies of "
                        "the validation images (--resave, --rescale, --lossless), recorded in "
                        "validation_conditions; repeat")
    parser.add_argument("--out", default=f"weights/{DEFAULT_WEIGHTS_NAME}")
    args = parser.parse_args()
    model, card = load_model(args.checkpoint)
    card.score_threshold = args.score_threshold
    card.image_score = args.image_score or card.image_score
    if args.pixel_score_threshold is not None:
        card.pixel_score_threshold = args.pixel_score_threshold
    if args.jpeg_gate_logit is not None:
        card.jpeg_gate_logit = args.jpeg_gate_logit
    if args.jpeg_gate_calibration:
        calibration = json.loads(Path(args.jpeg_gate_calibration).read_text())
        card.provenance["jpeg_gate"] = {
            "chosen": calibration["chosen"], "images": calibration["images"],
            "rule": f"the smallest gate within {calibration['tolerance']} of the best mean DSC "
                    f"over the training split's files, their q90 re-saves and their x0.75/q90 "
                    f"copies, with accuracy on the files >= {calibration['min_accuracy']} (a "
                    f"gated file's map is the pixel path's, its score the fused map's)",
            "table": calibration["table"]}
    for key, path, threshold in (("flag_threshold", args.flag_calibration,
                                  args.score_threshold),
                                 ("pixel_flag_threshold", args.pixel_flag_calibration,
                                  args.pixel_score_threshold)):
        if path:
            calibration = json.loads(Path(path).read_text())
            if calibration["threshold"] != threshold:
                raise SystemExit(f"{path} chose {calibration['threshold']}, not {threshold}")
            card.provenance[key] = {name: calibration[name] for name in (
                "threshold", "rule", "image_score", "without_jpeg", "chosen", "balanced",
                "authentic_images", "held_out_false_alarms", "edited_pictures_flagged")
                if name in calibration}
    repair_legacy_provenance(card)
    card.provenance["hardware"] = args.hardware
    if args.note:
        card.provenance["note"] = args.note
    if args.evaluation:
        summary = json.loads(Path(args.evaluation).read_text())
        card.provenance["validation"] = {k: v for k, v in summary.items() if k != "skipped"}
    if args.condition_evaluation:
        card.provenance["validation_conditions"] = [
            {k: v for k, v in json.loads(Path(path).read_text()).items()
             if k in CONDITION_KEYS} for path in args.condition_evaluation]
    save_checkpoint(model, card, args.out, dtype=torch.float16)
    if args.metrics:
        shutil.copy(args.metrics, Path(args.out).with_name("training-metrics.jsonl"))


if __name__ == "__main__":
    main()
