"""The image score: one number per image, from its probability map, by which images are ranked
and flagged. Which statistic a checkpoint uses belongs to it (metadata `image_score`), like the
flag threshold calibrated for that statistic: the best one depends on how the network spreads
its evidence (scripts/image_score_experiment.py chooses it on a training split).

  "mean"   the mean of the pixel probabilities: the expected share of manipulated pixels.
           Checkpoints without the key use it.
  "top1%"  the mean of the highest 1% of the pixel probabilities, taken over the 16-bit levels
           the probability PNG stores: a small confident region scores high where its mean
           would be diluted by the rest of the picture, and anyone can recompute the score
           from the written map.

Both are computed band by band (ScoreAccumulator), so a 100 MP map is never whole in memory."""
from __future__ import annotations

import math

import numpy as np

STATISTICS = {
    "mean": "mean of the pixel probabilities",
    "top1%": "mean of the highest 1% of the pixel probabilities (their 16-bit levels, as in "
             "the probability map written)",
}
DEFAULT_STATISTIC = "mean"
TOP_SHARE = 0.01
LEVEL_MAX = 65535  # probability p is stored as the level round(p * LEVEL_MAX)


def check_statistic(name: str) -> str:
    if name not in STATISTICS:
        raise ValueError(f"unknown image score {name!r} (one of {', '.join(STATISTICS)})")
    return name


def clean_probability(values: np.ndarray) -> np.ndarray:
    """float32 copy in [0, 1] with NaN as 0 (no evidence) and +-inf clipped."""
    band = np.fmax(np.asarray(values, dtype=np.float32), np.float32(0.0))  # NaN, -inf: 0
    return np.fmin(band, np.float32(1.0), out=band)


def probability_levels(probability: np.ndarray) -> np.ndarray:
    """uint16 levels round(p * 65535) of a probability band; NaN is 0, infinities clipped."""
    return np.rint(clean_probability(probability) * np.float32(LEVEL_MAX)).astype(np.uint16)


class ScoreAccumulator:
    """acc.add(band) for each band of a map, then acc.value(): the statistic over all of them
    (the same whatever the bands)."""

    def __init__(self, statistic: str = DEFAULT_STATISTIC):
        self.statistic = check_statistic(statistic)
        self.pixels = 0
        self._total = 0.0
        self._histogram = np.zeros(LEVEL_MAX + 1, np.int64) if statistic == "top1%" else None

    def add(self, probability: np.ndarray, levels: np.ndarray | None = None) -> None:
        """levels: probability_levels(probability) where the caller has them already."""
        self.pixels += probability.size
        if self._histogram is None:
            self._total += float(np.asarray(probability, np.float32).sum(dtype=np.float64))
            return
        if levels is None:
            levels = probability_levels(probability)
        self._histogram += np.bincount(levels.ravel(), minlength=LEVEL_MAX + 1)

    def value(self) -> float:
        if self.pixels == 0:
            raise ValueError("no pixels were added")
        if self._histogram is None:
            return self._total / self.pixels
        kept = max(1, math.ceil(self.pixels * TOP_SHARE))
        counts = self._histogram[::-1]                      # level 65535 first
        levels = np.arange(LEVEL_MAX, -1, -1, dtype=np.float64)
        before = np.cumsum(counts) - counts                 # pixels above each level
        taken = np.clip(kept - before, 0, counts)           # of each level, among the top
        return float(taken @ levels) / (LEVEL_MAX * kept)


def image_score(probability: np.ndarray, statistic: str = DEFAULT_STATISTIC) -> float:
    """The statistic of a whole H x W probability map."""
    accumulator = ScoreAccumulator(statistic)
    accumulator.add(np.asarray(probability, dtype=np.float32))
    return accumulator.value()
