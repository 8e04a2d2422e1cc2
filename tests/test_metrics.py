"""Metrics against hand-computed values and brute-force references."""
import math

import numpy as np
import pytest

from forgeryloc import metrics

P = np.array([[1, 1, 0], [0, 1, 0]], dtype=bool)  # 3 positives
G = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)  # 3 positives, overlap 2, union 4
EMPTY = np.zeros((2, 3), dtype=bool)
FULL = np.ones((2, 3), dtype=bool)
S = 1e-5


def test_dice_and_iou_hand_computed():
    assert metrics.dice(P, G) == pytest.approx((4 + S) / (6 + S), abs=1e-12)
    assert metrics.iou(P, G) == pytest.approx((2 + S) / (4 + S), abs=1e-12)
    assert metrics.dice(P, G, smooth=0) == pytest.approx(4 / 6)


def test_dice_iou_empty_and_full_masks():
    assert metrics.dice(EMPTY, EMPTY) == 1.0
    assert metrics.iou(EMPTY, EMPTY) == 1.0
    assert metrics.dice(EMPTY, G) == pytest.approx(S / (3 + S))
    assert metrics.iou(EMPTY, G) == pytest.approx(S / (3 + S))
    assert metrics.dice(FULL, FULL) == 1.0
    assert metrics.iou(FULL, G) == pytest.approx((3 + S) / (6 + S))


def test_f1_hand_computed_and_empty_conventions():
    assert metrics.f1_score(P, G) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.f1_score(EMPTY, EMPTY) == 1.0
    assert metrics.f1_score(EMPTY, G) == 0.0
    assert metrics.f1_score(P, EMPTY) == 0.0
    assert metrics.f1_score(FULL, FULL) == 1.0
    assert metrics.f1_score(FULL, G) == pytest.approx(2 * 3 / (2 * 3 + 3))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        metrics.dice(P, G.T)


def test_best_threshold_f1_hand_computed():
    prob = np.array([0.9, 0.8, 0.3, 0.1])
    gt = np.array([1, 1, 0, 1], dtype=bool)
    f1, threshold = metrics.best_threshold_f1(prob, gt)
    # t <= 0.1: all positive, F1 = 6/7 (beats t in (0.3, 0.8]: 4/5)
    assert f1 == pytest.approx(6 / 7)
    assert threshold == 0.0
    f1, threshold = metrics.best_threshold_f1(np.array([0.9, 0.8, 0.3, 0.1]),
                                              np.array([1, 1, 0, 0], dtype=bool))
    assert f1 == 1.0
    assert 0.3 < threshold <= 0.8


def test_best_threshold_f1_empty_gt_and_perfect_map():
    f1, threshold = metrics.best_threshold_f1(np.array([0.2, 0.5]), np.zeros(2, bool))
    assert (f1, threshold) == (1.0, pytest.approx(0.50196, abs=1e-4))  # first t above 0.5
    gt = np.zeros((8, 8), bool)
    gt[2:5, 3:6] = True
    f1, _ = metrics.best_threshold_f1(gt.astype(float), gt)
    assert f1 == 1.0


def test_best_threshold_f1_matches_brute_force():
    rng = np.random.default_rng(0)
    prob = rng.random((20, 30))
    gt = rng.random((20, 30)) < prob  # correlated
    f1, threshold = metrics.best_threshold_f1(prob, gt, bins=64)
    brute = [metrics.f1_score(prob >= t, gt) for t in np.linspace(0, 1, 64)]
    assert f1 == pytest.approx(max(brute))
    assert threshold == pytest.approx(np.linspace(0, 1, 64)[int(np.argmax(brute))])


def test_roc_auc_perfect_inverted_and_ties():
    labels = np.array([0, 0, 1, 1])
    assert metrics.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert metrics.roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert metrics.roc_auc(np.full(4, 0.5), labels) == 0.5
    # pairs (pos, neg): (0.5, 0.1) win, (0.5, 0.5) tie, (0.9, 0.1) win, (0.9, 0.5) win
    assert metrics.roc_auc(np.array([0.1, 0.5, 0.5, 0.9]), labels) == pytest.approx(3.5 / 4)


def test_roc_auc_one_class_is_nan():
    assert math.isnan(metrics.roc_auc(np.array([0.1, 0.7]), np.array([1, 1])))
    assert math.isnan(metrics.roc_auc(np.array([0.1, 0.7]), np.array([0, 0])))
    assert math.isnan(metrics.pixel_auc(np.random.rand(3, 4), np.zeros((3, 4))))


def test_roc_auc_rejects_bad_labels():
    with pytest.raises(ValueError):
        metrics.roc_auc(np.array([0.1, 0.2]), np.array([0, 2]))


def _auc_by_pairs(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # coarse values: many ties
    assert metrics.roc_auc(scores, labels) == pytest.approx(_auc_by_pairs(scores, labels))


def test_pixel_auc_flattens_maps():
    gt = np.array([[0, 1], [0, 1]])
    prob = np.array([[0.1, 0.9], [0.4, 0.3]])
    assert metrics.pixel_auc(prob, gt) == pytest.approx(0.75)


def test_accuracy():
    scores = np.array([0.1, 0.5, 0.7, 0.4])
    labels = np.array([0, 1, 1, 1])
    assert metrics.accuracy(scores, labels, 0.5) == 0.75
    assert metrics.accuracy(scores, labels, 0.0) == 0.75
    assert metrics.accuracy(scores, labels, 0.95) == 0.25
