"""One checkpoint from an RGB network and a JPEG stream: the stream is attached to the network
and the late fusion's five weights are fitted by logistic regression on pixels of training
images (never the validation split): real training-split JPEGs and fresh synthetic compression
histories, each seen once with its JPEG evidence and once without it (as a PNG would be).

Resized copies (fit with `rescale`): a share site's resize and re-save erase the file's history
and leave a single compression on a new grid everywhere, which the stream reads as "nothing
inconsistent here", the same as a camera's original; its strongly negative logits would then
veto whatever the RGB network sees. With such copies in the fit, the fusion also gets a floor
on the stream's logits (the one, of FLOORS or none, with the lowest pixel BCE): the stream can
raise the map as far as it likes, but lower it only so far."""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .data.datasets import Sample, load_pair
from .data.jpeg_blocks import resaved
from .data.jpeg_tables import resaved_jpeg
from .data.synth import decode_jpeg
from .fused_maps import EPSILON, sample_points
from .imaging import ImageReadError
from .jpeg_input import JpegInput, read_jpeg_input
from .model.jpeg_stream import JpegStream
from .model.m2sformer import M2SFormer
from .predict import Predictor
from .preprocess import rescaled_pair

log = logging.getLogger(__name__)

PIXELS_PER_IMAGE = 2048
FLOORS = tuple(float(f) for f in range(-8, 1))  # candidate floors on the stream's logits
RESCALE_FACTORS = (0.5, 0.9)   # resized copies: a factor drawn from this range, then ...
RESCALE_QUALITIES = (70, 95)   # ... a re-save at a quality drawn from this one (IJG tables)


def attach_stream(model: M2SFormer, stream: JpegStream) -> M2SFormer:
    """A new model: `model`'s weights plus `stream` and an initial fusion."""
    fused = M2SFormer(model.config.with_jpeg_stream(stream.config))
    missing, unexpected = fused.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("jpeg_stream.", "fusion.")) for k in missing)
    fused.jpeg_stream.load_state_dict(stream.state_dict())
    return fused.eval()


def _pixel_logits(predictor: Predictor, rgb: np.ndarray, jpeg: JpegInput | None,
                  rng: np.random.Generator, mask: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(RGB logits, JPEG logits or None, labels) at a random sample of an image's pixels."""
    height, width = mask.shape
    outputs = predictor.forward(predictor.preprocess(rgb)[None])
    probability = predictor.finding_from_resized(outputs, 0, height, width).probability
    picks = rng.choice(height * width, size=min(PIXELS_PER_IMAGE, height * width),
                       replace=False)
    rows, cols = np.divmod(picks, width)
    clipped = np.clip(probability[rows, cols], EPSILON, 1 - EPSILON)
    rgb_logits = np.log(clipped) - np.log1p(-clipped)
    jpeg_logits = None
    if jpeg is not None:
        grid = predictor.jpeg_block_logits(jpeg)
        jpeg_logits = sample_points(grid, rows - jpeg.origin[0], cols - jpeg.origin[1])
    return rgb_logits, jpeg_logits, (mask[rows, cols] > 0).astype(np.float32)


def _fitting_images(samples: Sequence[Sample], synthetic: Sequence, launder: float,
                    rng: np.random.Generator, rescale: float = 0.0) -> Iterator[tuple]:
    """(pixels, mask, JPEG input or None) of each fitting image: the real samples, a
    `launder` share of them once more as the file re-saved (q70-95), the synthetic ones,
    and a `rescale` share of the real and synthetic JPEGs once more resized and re-saved
    (_resized_copy). An unreadable image is left out with a warning."""
    for sample in samples:
        try:
            rgb, mask = load_pair(sample)
            jpeg = read_jpeg_input(sample.image)[0]
        except ImageReadError as error:
            log.warning("fusion fit: skipping %s (%s)", sample.image, error)
            continue
        yield rgb, mask, jpeg
        if jpeg is not None and launder > 0 and rng.random() < launder:
            with open(sample.image, "rb") as handle:
                data = resaved(handle.read(), rng, (70, 95))
            yield decode_jpeg(data), mask, read_jpeg_input(data)[0]
        if jpeg is not None and rescale > 0 and rng.random() < rescale:
            yield _resized_copy(rgb, mask, rng)
    for forgery in synthetic:
        rgb = forgery.decode()
        yield rgb, forgery.mask, read_jpeg_input(forgery.jpeg)[0]
        if rescale > 0 and rng.random() < rescale:
            yield _resized_copy(rgb, forgery.mask, rng)


def _resized_copy(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple:
    """(pixels, mask, JPEG input) of an image resized by a factor in RESCALE_FACTORS and saved
    at a quality in RESCALE_QUALITIES, as a share site would."""
    small_rgb, small_mask = rescaled_pair(rgb, mask, float(rng.uniform(*RESCALE_FACTORS)))
    data = resaved_jpeg(small_rgb, int(rng.integers(RESCALE_QUALITIES[0],
                                                    RESCALE_QUALITIES[1] + 1)))
    return decode_jpeg(data), small_mask, read_jpeg_input(data)[0]


def fit_fusion(predictor: Predictor, samples: Sequence[Sample], synthetic: Sequence = (),
               seed: int = 0, launder: float = 0.0, rescale: float = 0.0
               ) -> tuple[tuple[float, ...], float | None, dict]:
    """Fits (a0, c0, a1, b, c1) by minimising the pixel BCE; returns them, the floor on the
    stream's logits (None: none; searched only when rescale > 0) and a summary.
    launder, rescale: the shares of JPEGs also seen re-saved once more, and resized and
    re-saved (see _fitting_images)."""
    rng = np.random.default_rng(seed)
    present, absent = [], []
    for rgb, mask, jpeg in _fitting_images(samples, synthetic, launder,
                                           np.random.default_rng([seed, 1]), rescale):
        rgb_logits, jpeg_logits, labels = _pixel_logits(predictor, rgb, jpeg, rng, mask)
        absent.append((rgb_logits, labels))
        if jpeg_logits is not None:
            present.append((rgb_logits, jpeg_logits, labels))
    if not present:
        raise ValueError("no JPEG among the fitting images")
    return fit_weights(absent, present, search_floor=rescale > 0)


def fit_weights(absent: list[tuple], present: list[tuple], search_floor: bool = False
                ) -> tuple[tuple[float, ...], float | None, dict]:
    """The fusion of fitting pixels: absent, per image (RGB logits, labels) without JPEG
    evidence; present, per image (RGB logits, JPEG logits, labels) with it. Returns
    (a0, c0, a1, b, c1), the floor on the JPEG logits (None: none, the only candidate unless
    search_floor) and a summary."""
    rgb_a = torch.from_numpy(np.concatenate([r for r, _ in absent]))
    label_a = torch.from_numpy(np.concatenate([y for _, y in absent]))
    rgb_p = torch.from_numpy(np.concatenate([r for r, _, _ in present]))
    jpeg_p = torch.from_numpy(np.concatenate([j for _, j, _ in present]))
    label_p = torch.from_numpy(np.concatenate([y for _, _, y in present]))
    (a0, c0), bce_absent = _logistic([rgb_a], label_a, [1.0, 0.0])
    fits = {}
    for floor in (None, *FLOORS) if search_floor else (None,):
        raised = jpeg_p if floor is None else jpeg_p.clamp(min=floor)
        fits[floor] = _logistic([rgb_p, raised], label_p, [1.0, 1.0, 0.0])
    floor = min(fits, key=lambda f: fits[f][1])
    (a1, b, c1), bce_present = fits[floor]
    # The logistic fit gives calibrated probabilities, but a region's pixels are few: its
    # 0.5 threshold under-segments. Each intercept is then set where the mean per-image DSC
    # at 0.5 on the same fitting images is best, so that the threshold means "flag this".
    c0 = _best_intercept([a0 * r for r, _ in absent], [y for _, y in absent], c0)
    c1 = _best_intercept([a1 * r + b * (j if floor is None else np.maximum(j, floor))
                          for r, j, _ in present], [y for _, _, y in present], c1)
    fitted = (a0, c0, a1, b, c1)
    summary = {"images_with_jpeg": len(present), "images": len(absent),
               "pixels": int(len(label_a) + len(label_p)), "bce": bce_absent + bce_present,
               "jpeg_logit_floor": floor,
               "bce_with_jpeg_by_floor": {str(f): round(fit[1], 6) for f, fit in fits.items()}}
    return fitted, floor, summary


def _logistic(features: list[torch.Tensor], labels: torch.Tensor, start: list[float]
              ) -> tuple[tuple[float, ...], float]:
    """(weights of each feature, then the intercept; the pixel BCE) of a logistic regression
    fitted by L-BFGS from `start`."""
    weights = torch.tensor(start, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        logits = sum(w * x for w, x in zip(weights, features)) + weights[-1]
        return F.binary_cross_entropy_with_logits(logits, labels)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        return tuple(float(w) for w in weights.detach()), float(objective())


def _best_intercept(logits: list[np.ndarray], labels: list[np.ndarray], start: float) -> float:
    """The intercept, within 4 of `start`, maximising the mean DSC at 0.5 over images that
    have manipulated pixels (on their sampled pixels)."""
    pairs = [(z, y > 0) for z, y in zip(logits, labels) if y.any()]
    if not pairs:
        return start
    candidates = start + np.linspace(-4, 4, 81)

    def mean_dsc(c: float) -> float:
        scores = []
        for z, truth in pairs:
            predicted = z + c >= 0
            scores.append(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
        return float(np.mean(scores))

    return float(max(candidates, key=mean_dsc))


def set_fusion(model: M2SFormer, weights: Sequence[float]) -> None:
    with torch.no_grad():
        model.fusion.weights.copy_(torch.tensor(list(weights), dtype=torch.float32))
