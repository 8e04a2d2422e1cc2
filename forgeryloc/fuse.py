"""One checkpoint from an RGB network and a JPEG stream: the stream is attached to the network
and the late fusion's five weights are fitted by logistic regression on pixels of training
images (never the validation split): real training-split JPEGs and fresh synthetic compression
histories, each seen once with its JPEG evidence and once without it (as a PNG would be)."""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .data.datasets import Sample, load_pair
from .data.jpeg_blocks import resaved
from .data.synth import decode_jpeg
from .fused_maps import EPSILON, sample_points
from .imaging import ImageReadError
from .jpeg_input import JpegInput, read_jpeg_input
from .model.jpeg_stream import JpegStream
from .model.m2sformer import M2SFormer
from .predict import Predictor

log = logging.getLogger(__name__)

PIXELS_PER_IMAGE = 2048


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
                    rng: np.random.Generator) -> Iterator[tuple]:
    """(pixels, mask, JPEG input or None) of each fitting image: the real samples, a
    `launder` share of them once more as the file re-saved (q70-95), the synthetic ones.
    An unreadable image is left out with a warning."""
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
    for forgery in synthetic:
        yield forgery.decode(), forgery.mask, read_jpeg_input(forgery.jpeg)[0]


def fit_fusion(predictor: Predictor, samples: Sequence[Sample], synthetic: Sequence = (),
               seed: int = 0, launder: float = 0.0) -> tuple[tuple[float, ...], dict]:
    """Fits (a0, c0, a1, b, c1) by minimising the pixel BCE; returns them and a summary.
    launder: the share of real JPEGs also seen re-saved once more (see _fitting_images)."""
    rng = np.random.default_rng(seed)
    present, absent = [], []
    for rgb, mask, jpeg in _fitting_images(samples, synthetic, launder,
                                           np.random.default_rng([seed, 1])):
        rgb_logits, jpeg_logits, labels = _pixel_logits(predictor, rgb, jpeg, rng, mask)
        absent.append((rgb_logits, labels))
        if jpeg_logits is not None:
            present.append((rgb_logits, jpeg_logits, labels))
    if not present:
        raise ValueError("no JPEG among the fitting images")
    weights = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0], requires_grad=True)
    rgb_a = torch.from_numpy(np.concatenate([r for r, _ in absent]))
    label_a = torch.from_numpy(np.concatenate([y for _, y in absent]))
    rgb_p = torch.from_numpy(np.concatenate([r for r, _, _ in present]))
    jpeg_p = torch.from_numpy(np.concatenate([j for _, j, _ in present]))
    label_p = torch.from_numpy(np.concatenate([y for _, _, y in present]))
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        a0, c0, a1, b, c1 = weights
        return (F.binary_cross_entropy_with_logits(a0 * rgb_a + c0, label_a)
                + F.binary_cross_entropy_with_logits(a1 * rgb_p + b * jpeg_p + c1, label_p))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        bce = float(objective())
    a0, c0, a1, b, c1 = (float(w) for w in weights.detach())
    # The logistic fit gives calibrated probabilities, but a region's pixels are few: its
    # 0.5 threshold under-segments. Each intercept is then set where the mean per-image DSC
    # at 0.5 on the same fitting images is best, so that the threshold means "flag this".
    c0 = _best_intercept([a0 * r for r, _ in absent], [y for _, y in absent], c0)
    c1 = _best_intercept([a1 * r + b * j for r, j, _ in present], [y for _, _, y in present], c1)
    fitted = (a0, c0, a1, b, c1)
    summary = {"images_with_jpeg": len(present), "images": len(absent),
               "pixels": int(len(label_a) + len(label_p)), "bce": bce}
    return fitted, summary


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
