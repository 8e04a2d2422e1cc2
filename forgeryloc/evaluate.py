"""Evaluation of a checkpoint on a dataset, the paper's protocol first.

Paper protocol: image and mask resized to the model's input size (256), sigmoid >= 0.5, ground
truth binarised at half its maximum, per-image Dice and IoU with smoothing 1e-5, averaged over
the tampered images. Beside it: the same metrics at native resolution, the oracle best-threshold
F1, pixel AUC, and image-level AUC / accuracy when authentic images are present.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .data.datasets import Sample, load_pair
from .data.jpeg_tables import resaved_jpeg
from .data.synth import decode_jpeg
from .fused_maps import flag_threshold
from .imaging import ImageReadError
from .jpeg_input import read_jpeg_input
from .image_scores import DEFAULT_STATISTIC, STATISTICS, image_score
from .pixel_jpeg import stream_input
from .predict import Finding, Predictor
from .preprocess import rescaled_pair, resize_mask

log = logging.getLogger(__name__)

PAPER_THRESHOLD = 0.5  # the protocol's, whatever threshold a checkpoint suggests for scans

PROTOCOL = ("paper protocol: images and masks resized to {size}x{size}, prediction = "
            "sigmoid >= {threshold}, ground truth > half its maximum, per-image DSC and IoU "
            "(smoothing 1e-5) averaged over the tampered images; native-resolution metrics "
            "upsample the prediction to the image size; best-threshold F1 is an oracle (the "
            "threshold is chosen per image with the ground truth); image-level score = "
            "{image_score}, accuracy at score threshold {score_threshold}; "
            "floors on the same images: every pixel manipulated, and a centred Gaussian blob "
            "(sigma a quarter of each side) thresholded at 0.5; a constant image score has "
            "image AUC 0.5")


@dataclass
class EvaluationResult:
    summary: dict
    rows: list[dict] = field(default_factory=list)


def resize_probability(prob: np.ndarray, size: int) -> np.ndarray:
    """H x W probabilities -> size x size (bilinear, as the network's inputs are made)."""
    tensor = torch.from_numpy(np.ascontiguousarray(prob, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


def centred_blob(height: int, width: int) -> np.ndarray:
    """The floor that never looks at the image: a centred Gaussian (sigma a quarter of each
    side), height x width in (0, 1]; thresholded at 0.5 it is an ellipse over 27% of the image."""
    rows = ((np.arange(height) + 0.5) / height - 0.5) ** 2
    columns = ((np.arange(width) + 0.5) / width - 0.5) ** 2
    return np.exp(-(rows[:, None] + columns[None, :]) / (2 * 0.25 ** 2))


def _image_row(sample: Sample, prob_small: np.ndarray, prob_native: np.ndarray,
               mask: np.ndarray, size: int, threshold: float,
               statistic: str = DEFAULT_STATISTIC, score: float | None = None) -> dict:
    gt_small = resize_mask(mask, size, size).astype(bool)
    gt_native = mask.astype(bool)
    row = {"name": sample.name, "tampered": sample.tampered,
           "score": image_score(prob_native, statistic) if score is None else score,
           "area": float((prob_native >= threshold).mean())}
    if sample.tampered:
        pred_small = prob_small >= threshold
        pred_native = prob_native >= threshold
        blob = centred_blob(size, size) >= PAPER_THRESHOLD
        everything = np.ones_like(gt_small)
        row.update({
            "true_area": float(gt_native.mean()),
            "floor_all_dsc": metrics.dice(everything, gt_small),
            "floor_all_iou": metrics.iou(everything, gt_small),
            "floor_blob_dsc": metrics.dice(blob, gt_small),
            "floor_blob_iou": metrics.iou(blob, gt_small),
            "dsc": metrics.dice(pred_small, gt_small), "iou": metrics.iou(pred_small, gt_small),
            "dsc_native": metrics.dice(pred_native, gt_native),
            "iou_native": metrics.iou(pred_native, gt_native),
            "f1_native": metrics.f1_score(pred_native, gt_native),
            "f1_best": metrics.best_threshold_f1(prob_native, gt_native)[0],
        })
    return row


class MetricsCollector:
    """Gathers per-image rows and a pixel sample, then summarises (any source of maps)."""

    def __init__(self, size: int, threshold: float, score_threshold: float,
                 statistic: str = DEFAULT_STATISTIC):
        """statistic: the image score's (image_scores.STATISTICS)."""
        self.size, self.threshold, self.score_threshold = size, threshold, score_threshold
        self.statistic = statistic
        self.rows: list[dict] = []
        self.skipped: list[str] = []
        self.pixel_probs, self.pixel_truth, self.blob_probs = [], [], []
        self.rng = np.random.default_rng(0)

    def add(self, sample: Sample, prob_small: np.ndarray, prob_native: np.ndarray,
            mask: np.ndarray, flag_threshold: float | None = None,
            pixel_path: bool | None = None, score: float | None = None) -> None:
        """prob_small: the map at the protocol's size x size; prob_native and mask: H x W;
        flag_threshold: this image's score threshold (None: the collector's); pixel_path:
        whether a JPEG-stream model drew its map without JPEG evidence (None: an RGB-only
        model); score: the image score where it is not the statistic of prob_native."""
        height, width = mask.shape
        row = _image_row(sample, prob_small, prob_native, mask, self.size, self.threshold,
                         self.statistic, score)
        row["flag_threshold"] = self.score_threshold if flag_threshold is None \
            else flag_threshold
        if pixel_path is not None:
            row["pixel_path"] = pixel_path
        self.rows.append(row)
        # A fixed random subset of pixels per image keeps pixel AUC cheap on big sets.
        flat = self.rng.choice(prob_native.size, size=min(4096, prob_native.size), replace=False)
        self.pixel_probs.append(prob_native.reshape(-1)[flat])
        self.pixel_truth.append(mask.reshape(-1)[flat])
        self.blob_probs.append(centred_blob(height, width).reshape(-1)[flat])

    def result(self) -> EvaluationResult:
        return EvaluationResult(summary=summarise(self.rows, self.pixel_probs, self.pixel_truth,
                                                  self.size, self.threshold,
                                                  self.score_threshold, self.skipped,
                                                  self.blob_probs, self.statistic),
                                rows=self.rows)


def read_sample(sample: Sample, rescale: float | None = None,
                resave_quality: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, Path | bytes | None]:
    """(pixels, mask, source) of a sample as the model is handed it (see evaluate_samples):
    source is the file, the bytes of its re-save, or None when only resized pixels remain."""
    rgb, mask = load_pair(sample)
    source = sample.image
    if rescale is not None:  # the file is gone: its resized pixels remain
        rgb, mask, source = *rescaled_pair(rgb, mask, rescale), None
    if resave_quality is not None:
        source = resaved_jpeg(rgb, resave_quality)
        rgb = decode_jpeg(source)
    return rgb, mask, source


def evaluate_samples(predictor: Predictor, samples: list[Sample], batch_size: int = 8,
                     threshold: float | None = None, score_threshold: float | None = None,
                     progress=None, use_jpeg: bool = True,
                     resave_quality: int | None = None, lossless: bool = False,
                     jpeg_from_pixels: bool = True, rescale: float | None = None
                     ) -> EvaluationResult:
    """Runs the predictor over `samples` and computes every metric. use_jpeg=False withholds
    the files' JPEG evidence from a model with a JPEG stream (its pixel-only path);
    resave_quality: each image is first saved once more as a JPEG of that IJG quality (4:2:0),
    as a share site or a careless copy would, and the model sees only that file; lossless:
    each image reaches the model as pixels only (as a PNG made from it would); a file
    without coefficients then gets the stream's input estimated from its pixels
    (pixel_jpeg.py) unless jpeg_from_pixels is False; rescale: each image is first resized
    by that factor (bicubic; its mask by nearest neighbour, and the metrics are taken at the
    new size), as share sites do, and reaches the model as those pixels, or as their re-save
    with resave_quality."""
    threshold = PAPER_THRESHOLD if threshold is None else threshold
    # Images read without JPEG evidence are flagged at the pixel path's threshold where the
    # checkpoint calibrated one (fused_maps.flag_threshold, as in a scan); a score_threshold
    # given applies to every image.
    pixel = predictor.info.pixel_score_threshold if score_threshold is None else None
    if score_threshold is None:
        score_threshold = pixel if not use_jpeg and pixel is not None \
            else predictor.info.score_threshold
    collector = MetricsCollector(predictor.size, threshold, score_threshold,
                                 predictor.info.image_score)
    for start in range(0, len(samples), batch_size):
        pairs = []
        for sample in samples[start:start + batch_size]:
            try:
                pairs.append((sample, *read_sample(sample, rescale, resave_quality)))
            except ImageReadError as error:
                log.warning("skipping %s: %s", sample.image, error)
                collector.skipped.append(str(sample.image))
        if not pairs:
            continue
        batch = torch.stack([predictor.preprocess(rgb) for _, rgb, _, _ in pairs])
        outputs = predictor.forward(batch)
        for i, (sample, rgb, mask, source) in enumerate(pairs):
            height, width = rgb.shape[:2]
            maps = predictor.maps_from_resized(outputs, i, height, width)
            flag_at, pixel_path, score = score_threshold, None, None
            if predictor.jpeg_stream is None:
                prob_small = outputs["probability"][i, 0].numpy()
                prob_native = Finding.from_maps(maps).probability
            else:  # the fused map exists at the image's size only: resized like the masks
                jpeg = None
                if use_jpeg and not lossless and source is not None:
                    jpeg = read_jpeg_input(source)[0]
                if use_jpeg and jpeg is None and jpeg_from_pixels:
                    jpeg = stream_input(rgb, "no file coefficients")[0]
                fused = predictor.with_jpeg(maps, jpeg)
                pixel_path = fused.jpeg_logits is None
                flag_at = flag_threshold(fused, score_threshold, pixel)
                finding = Finding.from_maps(fused, predictor.info.image_score)
                prob_native, score = finding.probability, finding.score
                prob_small = resize_probability(prob_native, predictor.size)
            collector.add(sample, prob_small, prob_native, mask, flag_at, pixel_path, score)
        if progress is not None:
            progress(len(pairs))
    return collector.result()


def summarise(rows, pixel_probs, pixel_truth, size, threshold, score_threshold, skipped,
              blob_probs=None, statistic: str = DEFAULT_STATISTIC) -> dict:
    tampered = [r for r in rows if r["tampered"]]
    labels = np.array([r["tampered"] for r in rows], dtype=np.int64)
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    flag_at = np.array([r["flag_threshold"] for r in rows], dtype=np.float64)
    others = flag_at != score_threshold  # scored without JPEG evidence, at their threshold
    thresholds = f"{score_threshold}" + (
        f" ({', '.join(f'{t:g}' for t in sorted(set(flag_at[others].tolist())))} for the "
        f"{int(others.sum())} image{'s' * (int(others.sum()) != 1)} scored without JPEG "
        f"evidence)" if others.any() else "")

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in tampered])) if tampered else float("nan")

    summary = {
        "protocol": PROTOCOL.format(size=size, threshold=threshold,
                                    score_threshold=thresholds,
                                    image_score=STATISTICS[statistic]),
        "images": len(rows), "tampered": len(tampered), "authentic": len(rows) - len(tampered),
        "skipped": skipped, "input_size": size, "threshold": threshold,
        "dsc": mean("dsc"), "iou": mean("iou"),
        "dsc_native": mean("dsc_native"), "iou_native": mean("iou_native"),
        "f1_native": mean("f1_native"), "f1_best_oracle": mean("f1_best"),
        "pixel_auc": (metrics.roc_auc(np.concatenate(pixel_probs), np.concatenate(pixel_truth))
                      if pixel_probs else float("nan")),
        "image_auc": float("nan"), "image_accuracy": float("nan"),
        "score_threshold": score_threshold, "image_score": statistic,
        # What a degenerate model would score on the same images (see centred_blob).
        "predicted_fraction": (float(np.mean([r["area"] for r in rows])) if rows
                               else float("nan")),
        "predicted_fraction_tampered": mean("area"), "true_fraction": mean("true_area"),
        "floor_all_dsc": mean("floor_all_dsc"), "floor_all_iou": mean("floor_all_iou"),
        "floor_blob_dsc": mean("floor_blob_dsc"), "floor_blob_iou": mean("floor_blob_iou"),
        "floor_blob_pixel_auc": (metrics.roc_auc(np.concatenate(blob_probs),
                                                 np.concatenate(pixel_truth))
                                 if blob_probs else float("nan")),
    }
    paths = [r["pixel_path"] for r in rows if "pixel_path" in r]
    if paths:  # a JPEG-stream model: how many maps its pixel path drew alone
        summary["pixel_path_images"] = int(sum(paths))
    flagged = scores >= flag_at
    # Flags counted as a scan gives them: how many forgeries a clear result can hide, and
    # how many authentic files raise a false alarm.
    summary["tampered_flagged"] = int(flagged[labels == 1].sum())
    summary["authentic_flagged"] = int(flagged[labels == 0].sum())
    if 0 < labels.sum() < len(labels):
        summary["image_auc"] = metrics.roc_auc(scores, labels)
        summary["image_accuracy"] = float(np.mean(flagged == labels.astype(bool)))
    return summary


def write_evaluation(result: EvaluationResult, out_dir) -> None:
    """summary.json and per_image.csv in out_dir."""
    import csv
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2), encoding="utf-8")
    columns = ["name", "tampered", "score", "area", "dsc", "iou", "dsc_native", "iou_native",
               "f1_native", "f1_best"]
    with open(out / "per_image.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.rows)
