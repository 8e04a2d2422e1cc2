"""Forgery-localisation metrics, pure numpy (float64 internally).

Pixel metrics compare one predicted mask with one ground-truth mask; benchmark figures are
the mean of the per-image values (the M2SFormer paper's protocol, smoothing 1e-5).
"""
from __future__ import annotations

import numpy as np

DEFAULT_SMOOTH = 1e-5


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")


def _binary_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as flat bool arrays (non-zero = positive); shapes must match."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_same_shape(pred, gt)
    return pred.astype(bool).ravel(), gt.astype(bool).ravel()


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as a flat bool array; only 0/1 (or bool) values are accepted."""
    labels = np.asarray(labels).ravel()
    if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1 or boolean")
    return labels.astype(bool)


def dice(pred: np.ndarray, gt: np.ndarray, smooth: float = DEFAULT_SMOOTH) -> float:
    """Smoothed Dice coefficient (2|P∩G| + s) / (|P| + |G| + s).

    Two empty masks score 1; an empty prediction of a non-empty mask scores about 0."""
    pred, gt = _binary_pair(pred, gt)
    overlap = np.count_nonzero(pred & gt)
    return float((2.0 * overlap + smooth) / (np.count_nonzero(pred) + np.count_nonzero(gt) + smooth))


def iou(pred: np.ndarray, gt: np.ndarray, smooth: float = DEFAULT_SMOOTH) -> float:
    """Smoothed intersection over union (|P∩G| + s) / (|P∪G| + s); two empty masks score 1."""
    pred, gt = _binary_pair(pred, gt)
    overlap = np.count_nonzero(pred & gt)
    return float((overlap + smooth) / (np.count_nonzero(pred | gt) + smooth))


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) elementwise, 1.0 where there is nothing to find or predict."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2.0 * tp + fp + fn
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, 2.0 * tp / safe, 1.0)


def f1_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """Unsmoothed F1 of the positive class ("native F1").

    By convention two empty masks score 1.0 (a correct "nothing here"); an empty prediction of
    a non-empty mask, or a non-empty prediction of an empty mask, scores 0.0."""
    pred, gt = _binary_pair(pred, gt)
    tp = np.count_nonzero(pred & gt)
    fp = np.count_nonzero(pred & ~gt)
    fn = np.count_nonzero(~pred & gt)
    return float(_f1_from_counts(tp, fp, fn))


def best_threshold_f1(prob: np.ndarray, gt: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Oracle F1: the best F1 of (prob >= t) over `bins` thresholds t evenly spaced in [0, 1].

    Returns (f1, t); among equal scores the lowest threshold wins. Same empty-mask convention
    as f1_score. One pass: each pixel is binned by how many thresholds it reaches, then
    cumulative counts give TP and FP at every threshold at once. NaN counts as never positive."""
    prob, gt = np.asarray(prob, dtype=np.float64), np.asarray(gt)
    _check_same_shape(prob, gt)
    prob = np.where(np.isnan(prob), -np.inf, prob).ravel()
    gt = gt.astype(bool).ravel()
    thresholds = np.linspace(0.0, 1.0, bins)
    reached = np.searchsorted(thresholds, prob, side="right")  # positive at k iff reached > k
    positives = np.bincount(reached[gt], minlength=bins + 1)
    negatives = np.bincount(reached[~gt], minlength=bins + 1)
    # TP[k] = pixels of gt with reached >= k + 1 (reverse cumulative sum, shifted by one)
    tp = np.cumsum(positives[::-1])[::-1][1:]
    fp = np.cumsum(negatives[::-1])[::-1][1:]
    fn = np.count_nonzero(gt) - tp
    scores = _f1_from_counts(tp, fp, fn)
    best = int(np.argmax(scores))
    return float(scores[best]), float(thresholds[best])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts).astype(np.float64)
    return (last_rank - (counts - 1) / 2.0)[inverse.ravel()]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count one half).

    scores: 1-D, higher = more likely positive; labels: 1-D 0/1. Returns nan when only one
    class is present (the AUC is undefined)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = _binary_labels(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n_pos = int(np.count_nonzero(labels))
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(scores)[labels].sum()
    u_statistic = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (float(n_pos) * n_neg))


def pixel_auc(prob: np.ndarray, gt: np.ndarray) -> float:
    """Per-image pixel AUC of a probability map against its mask; nan if the mask is all one
    class (e.g. an authentic image)."""
    prob, gt = np.asarray(prob), np.asarray(gt)
    _check_same_shape(prob, gt)
    return roc_auc(prob.ravel(), gt.astype(bool).ravel())


def accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of items whose decision (score >= threshold) equals the 0/1 label."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = _binary_labels(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if scores.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean((scores >= threshold) == labels))
