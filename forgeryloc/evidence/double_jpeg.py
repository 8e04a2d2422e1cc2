"""Aligned double JPEG compression, from the histograms of the quantised DCT coefficients.

A JPEG saved, decoded and saved again on the same 8 x 8 grid with another step leaves a
periodic pattern in each frequency's histogram: some values become empty (the first step was
coarser) or twice as likely as their neighbours (it was finer). A region pasted in between
the two saves, or moved off the grid, lost that pattern: it looks compressed once. This is
the model of Bianchi & Piva (2012) and the histogram periodicity of Lin et al. (2009), written
here as a likelihood test per frequency and a likelihood ratio per block. Exactly:

For each of the first FREQUENCIES AC frequencies of the luma (zigzag order) whose step q2 is
known and that has at least MIN_NONZERO nonzero values y (the file's quantised coefficients):
  - the coefficients c before any quantisation are estimated by calibration (Lukas &
    Fridrich 2003): the DCT of the decoded luma on a grid shifted by 4 pixels, where the
    file's quantisation left no mark (a window of at most CALIBRATION_SIDE square);
  - single compression: P1(y) = the share of round(c / q2) = y;
  - double compression with an earlier step q1: P2(y) = the share of
    round((round(c / q1) q1 + e) / q2) = y, e ~ N(0, ROUNDING_SIGMA^2) the rounding to
    pixels between the saves; q1 is tried over 2 .. max(3 q2, 12) and the best kept;
  - both over y = -ymax .. ymax and one tail bin (ymax: the 99.5th percentile of |y|, within
    [6, 30]), each bin raised by half a count so that none is impossible;
  - the frequency shows double quantisation when the best q1 raises the log-likelihood of
    the file's histogram by more than MIN_GAIN nats and by MIN_GAIN_PER_VALUE per nonzero
    value.
The image estimate: `detected` when at least MIN_FREQUENCIES frequencies show it; `score`,
the mean over examined frequencies of the log-likelihood gain per nonzero value (0 for
none); the first steps q1 found.
The block map: for each block, the sum over the frequencies that show double quantisation
of log P1(y) - log P2(y) (each term clipped to +-TERM_CLIP nats), through a logistic: the
probability, with even prior odds, that the block was compressed once where the rest was
compressed twice. Without double quantisation in the image there is no map.

What it cannot see: a file compressed once (whatever was done before), a second save with
the same tables, double compression off the 8 x 8 grid (a crop), or any PNG / TIFF input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..jpeg_coefficients import _ZIGZAG, JpegCoefficients

FREQUENCIES = 15          # the lowest AC frequencies examined, zigzag positions 1 .. 15
MIN_NONZERO = 200         # nonzero values a frequency needs to be examined
ROUNDING_SIGMA = 0.6      # coefficient noise from rounding to 8-bit pixels between saves
MIN_GAIN = 15.0           # nats the double model must gain over the single one ...
MIN_GAIN_PER_VALUE = 0.01  # ... and per nonzero value
MIN_FREQUENCIES = 2       # frequencies that must show it for the image estimate
TERM_CLIP = 4.0           # nats one coefficient may add to a block's evidence
CALIBRATION_SIDE = 512    # the calibration reads at most this square of pixels (~4,000 blocks)


@dataclass(frozen=True)
class FrequencyFit:
    position: int            # zigzag position (1 = the first AC frequency)
    step: int                # q2, the file's step
    first_step: int          # q1 of the best double model
    gain: float              # log-likelihood gain of that model over single compression
    values: int              # nonzero values in the histogram
    single_log: np.ndarray   # log P1 over y = -ymax .. ymax and the tail bin (last)
    double_log: np.ndarray   # log P2, the same bins

    @property
    def shows_double(self) -> bool:
        return self.gain > MIN_GAIN and self.gain > MIN_GAIN_PER_VALUE * self.values

    @property
    def ymax(self) -> int:
        return (len(self.single_log) - 2) // 2


def fit_frequencies(jpeg: JpegCoefficients, grey: np.ndarray) -> list[FrequencyFit]:
    """The single and best double model of each examined frequency. grey: the decoded luma
    (or grey picture) inside `calibration_box`, as displayed (H x W, 0 .. 255)."""
    table = np.asarray(jpeg.luma_table).ravel()
    calibrated = calibration_coefficients(grey)
    fits = []
    for position in range(1, FREQUENCIES + 1):
        index = int(_ZIGZAG[position])
        step = int(table[index])
        if step < 1:
            continue
        values = jpeg.luma[:, :, index // 8, index % 8].ravel()
        fit = _fit(position, step, values, calibrated[:, index])
        if fit is not None:
            fits.append(fit)
    return fits


def estimate(fits: list[FrequencyFit]) -> dict:
    """The image-level double-compression estimate (see the module's docstring)."""
    shown = [fit for fit in fits if fit.shows_double]
    score = float(np.mean([max(0.0, fit.gain) / fit.values for fit in fits])) if fits else 0.0
    return {"detected": len(shown) >= MIN_FREQUENCIES, "score": round(score, 5),
            "frequencies_examined": len(fits), "frequencies_double": len(shown),
            "first_steps": {str(fit.position): fit.first_step for fit in shown}}


def single_compression_map(jpeg: JpegCoefficients, fits: list[FrequencyFit]
                           ) -> np.ndarray | None:
    """Hb x Wb float32: probability that each block was compressed once (see the module's
    docstring); None when no frequency shows double quantisation."""
    shown = [fit for fit in fits if fit.shows_double]
    if len(shown) < MIN_FREQUENCIES:
        return None
    evidence = np.zeros(jpeg.luma.shape[:2], dtype=np.float32)
    for fit in shown:
        index = int(_ZIGZAG[fit.position])
        terms = np.clip(fit.single_log - fit.double_log, -TERM_CLIP, TERM_CLIP)
        terms = terms.astype(np.float32)
        ymax = fit.ymax
        values = jpeg.luma[:, :, index // 8, index % 8].astype(np.int32)
        bins = np.where(np.abs(values) > ymax, 2 * ymax + 1, values + ymax)
        evidence += terms[bins]
    return (1.0 / (1.0 + np.exp(-evidence))).astype(np.float32)


# --------------------------------------------------------------------------- the models

def calibration_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the displayed pixels the calibration reads: the image
    without its first 4 rows and columns (off the 8 x 8 grid), at most CALIBRATION_SIDE
    square from its centre, on the grid shifted by 4."""
    def span(size: int) -> tuple[int, int]:
        inner = max(0, size - 4) // 8 * 8
        keep = min(inner, CALIBRATION_SIDE)
        start = 4 + (inner - keep) // 16 * 8
        return start, start + keep
    (top, bottom), (left, right) = span(height), span(width)
    return left, top, right, bottom


def calibration_coefficients(grey: np.ndarray) -> np.ndarray:
    """N x 64 DCT coefficients (natural order, JPEG's orthonormal scaling) of the 8 x 8
    blocks of a grey window cut off the file's grid: an estimate of the coefficients before
    any quantisation (Lukas & Fridrich 2003)."""
    grey = np.asarray(grey, dtype=np.float32)
    rows, cols = grey.shape[0] // 8, grey.shape[1] // 8
    blocks = (grey[:rows * 8, :cols * 8] - 128.0).reshape(rows, 8, cols, 8).transpose(0, 2, 1, 3)
    return blocks.reshape(-1, 64) @ _DCT_2D                            # N x 64, one product


def _dct_matrix() -> np.ndarray:
    k = np.arange(8)
    basis = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    basis[0] /= np.sqrt(2)
    return basis.astype(np.float32)


_DCT = _dct_matrix()
# the 2-D DCT of a row-major 8 x 8 block B, D B D^T, as one 64 x 64 matrix on the right
_DCT_2D = np.kron(_DCT, _DCT).T.copy()


def _fit(position: int, step: int, values: np.ndarray, unquantised: np.ndarray
         ) -> FrequencyFit | None:
    magnitudes = np.abs(values.astype(np.int32))
    nonzero = int(np.count_nonzero(magnitudes))
    if nonzero < MIN_NONZERO or unquantised.size < MIN_NONZERO:
        return None
    ymax = int(np.clip(np.ceil(upper_percentile(magnitudes[magnitudes > 0], 99.5)), 6, 30))
    histogram = _histogram(values, ymax)
    single = _log_probabilities(_quantised(unquantised, step, ymax))
    first_steps = np.arange(2, min(100, max(3 * step, 12)) + 1)
    first_steps = first_steps[first_steps != step]
    doubles = _log_probabilities(_requantised(unquantised, first_steps, step, ymax))
    gains = (doubles - single) @ histogram                     # one per first step
    best = int(np.argmax(gains))  # the first of equal gains, the smallest q1
    return FrequencyFit(position=position, step=step, first_step=int(first_steps[best]),
                        gain=float(gains[best]), values=nonzero, single_log=single,
                        double_log=doubles[best])


def upper_percentile(values: np.ndarray, percent: float) -> float:
    """np.percentile(values, percent) of a 1-D array (its default, linear interpolation),
    computed the same way to the last bit without its generic machinery, which cost more
    than the rest of a frequency's histogram."""
    count = len(values)
    position = (count - 1) * (percent / 100)
    below = min(int(np.floor(position)), count - 1)
    above = min(below + 1, count - 1)
    low, high = np.partition(values, (below, above))[[below, above]].astype(np.float64)
    fraction = position - below
    if fraction >= 0.5:  # numpy's lerp takes the other end here
        return float(high - (high - low) * (1 - fraction))
    return float(low + (high - low) * fraction)


def _histogram(values: np.ndarray, ymax: int) -> np.ndarray:
    """Counts of y = -ymax .. ymax, then of the tail |y| > ymax."""
    clipped = np.clip(values.astype(np.int32), -ymax - 1, ymax + 1) + ymax + 1
    counts = np.bincount(clipped, minlength=2 * ymax + 3).astype(np.float64)
    return np.concatenate([counts[1:-1], [counts[0] + counts[-1]]])


def _quantised(unquantised: np.ndarray, step: int, ymax: int) -> np.ndarray:
    """Bin counts of round(c / step), the calibrated single-compression histogram."""
    return _histogram(np.rint(unquantised / step), ymax)


def _requantised(unquantised: np.ndarray, first_steps: np.ndarray, step: int, ymax: int
                 ) -> np.ndarray:
    """For each of K first steps q1: the expected bin counts of round((k q1 + e) / q2),
    k = round(c / q1) the first save's index, e ~ N(0, ROUNDING_SIGMA^2) (each level k q1
    spreads over the bins its noise reaches): K x (2 ymax + 2). The levels of all first steps
    are counted in one pass (each step's indices offset into a range of its own) and spread
    over the bins together."""
    first_steps = np.asarray(first_steps, dtype=np.int64)
    divisors = first_steps.astype(np.float32)
    # round(c / q1) is monotone in c: each step's lowest and highest index come from the
    # extreme coefficients
    extremes = np.array([unquantised.min(), unquantised.max()], np.float32)
    lowest, highest = np.rint(extremes[None, :] / divisors[:, None]).astype(np.int64).T
    span = int((highest - lowest).max()) + 1
    indices = unquantised[None, :] / divisors[:, None]               # K x N
    np.rint(indices, out=indices)
    indices = indices.astype(np.int64)
    indices += (np.arange(len(first_steps)) * span - lowest)[:, None]
    counts = np.bincount(indices.ravel(), minlength=len(first_steps) * span)  # K * span
    kept = np.flatnonzero(counts)                                   # (step, level) pairs
    owner = kept // span                                            # ascending
    levels = ((kept % span) + lowest[owner]) * first_steps[owner]     # integers
    # Bin edge minus level is a multiple of one half: the normal CDF is evaluated once per
    # such value (a few thousand) instead of once per (level, edge) pair, then looked up.
    halves = np.arange(-2 * ymax - 1, 2 * ymax + 2, 2) * step       # 2 x the edges
    offsets = halves[None, :] - 2 * levels[:, None]                  # 2 x (edge - level)
    lowest_offset = int(offsets.min())
    grid = np.arange(lowest_offset, int(offsets.max()) + 1) / 2.0
    cdf = _normal_cdf(grid / ROUNDING_SIGMA)[offsets - lowest_offset]  # levels x edges
    weighted = counts[kept, None] * np.diff(cdf, axis=1)            # levels x bins
    # each first step's levels summed in their order (every step has some)
    inside = np.add.reduceat(weighted, np.searchsorted(owner, np.arange(len(first_steps))),
                             axis=0)                                # K x bins
    total = float(unquantised.size)
    tail = np.maximum(0.0, total - inside.sum(axis=1, keepdims=True))
    return np.concatenate([inside, tail], axis=1)


def _normal_cdf(values: np.ndarray) -> np.ndarray:
    """The standard normal CDF, elementwise, in float64 (torch's ndtr: scipy would add a
    tenth of a second to every scan's start-up)."""
    return torch.special.ndtr(torch.from_numpy(np.asarray(values, np.float64))).numpy()


def _log_probabilities(counts: np.ndarray) -> np.ndarray:
    """log of bin probabilities (over the last axis), each count raised by half a value (no
    bin is impossible)."""
    smoothed = counts + 0.5
    return np.log(smoothed / smoothed.sum(axis=-1, keepdims=True))
