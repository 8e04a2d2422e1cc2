"""Shallow depth of field for synthetic training photos: one subject stays sharp, the rest of
the picture is blurred, as a long lens at a wide aperture leaves it.

Applied before a photo's first compression, it changes no compression history: an authentic
example stays authentic, every block of it compressed alike. It was written because the shipped
JPEG stream lights up on in-focus subjects against blurred or flat backgrounds in authentic web
photos; one 60-minute fine-tune with it (train-jpeg --defocus 0.5) did not make the stream
quieter there at the epoch its validation chose (checkpoints/README.md), so it is an option,
off by default."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

MIN_SUBJECT = 0.05   # the sharp subject covers at least this share of the picture ...
MAX_SUBJECT = 0.6    # ... and at most this
EDGE_SIGMA = 1.5     # the subject's edge fades over about this many pixels


def subject_mask(rng: np.random.Generator, shape: tuple[int, int],
                 labels: np.ndarray | None) -> tuple[np.ndarray, str]:
    """H x W bool: a human-drawn segment of the right size when the photo has one, else an
    ellipse of random centre and radii; and which of the two it is."""
    height, width = shape
    if labels is not None:
        values, counts = np.unique(labels, return_counts=True)
        shares = counts / labels.size
        fitting = values[(shares >= MIN_SUBJECT) & (shares <= MAX_SUBJECT)]
        if len(fitting):
            return labels == fitting[int(rng.integers(len(fitting)))], "segment"
    rows, cols = np.ogrid[:height, :width]
    centre = rng.uniform(0.25, 0.75, 2) * (height, width)
    radii = rng.uniform(0.15, 0.4, 2) * (height, width)
    inside = ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1
    return inside, "ellipse"


def defocus(rng: np.random.Generator, rgb: np.ndarray, labels: np.ndarray | None,
            sigma: tuple[float, float]) -> tuple[np.ndarray, dict]:
    """The photo (H x W x 3 uint8) with everything but one subject blurred by a Gaussian of a
    standard deviation drawn from `sigma`, the subject's edge feathered; and the record."""
    subject, kind = subject_mask(rng, rgb.shape[:2], labels)
    spread = float(rng.uniform(*sigma))
    picture = Image.fromarray(rgb)
    blurred = np.asarray(picture.filter(ImageFilter.GaussianBlur(spread)), np.float32)
    weight = Image.fromarray(subject.astype(np.uint8) * 255)
    weight = np.asarray(weight.filter(ImageFilter.GaussianBlur(EDGE_SIGMA)), np.float32)[..., None]
    weight /= 255.0
    mixed = weight * rgb.astype(np.float32) + (1 - weight) * blurred
    out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out, {"sigma": round(spread, 3), "subject": kind,
                 "subject_fraction": round(float(subject.mean()), 4)}
