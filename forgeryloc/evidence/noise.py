"""Local noise level: the spread of a high-pass residual in each WINDOW x WINDOW window.

The residual is the grey picture filtered with Immerkaer's 3 x 3 kernel
[[1, -2, 1], [-2, 4, -2], [1, -2, 1]], which cancels smooth shading and leaves mostly
sensor noise and fine texture (J. Immerkaer, "Fast noise variance estimation", CVIU 1996).
For Gaussian noise of deviation sigma the residual's deviation is 6 sigma; the level of a
window is median(|residual|) / (0.6745 * 6): sigma, in grey levels, estimated robustly (the
median ignores the few strong edges a window may hold). A region from another camera,
blurred, or synthesised often has a noise level unlike its surroundings (Mahdian & Saic
2009); texture raises the level too, so compare regions of alike content.

Computed band by band at the picture's own size, one 16-row stripe of windows at a time
with a row of context above and below.
"""
from __future__ import annotations

import numpy as np

WINDOW = 16
_MAD_TO_SIGMA = 1.0 / (0.6745 * 6.0)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def grey(rgb: np.ndarray) -> np.ndarray:
    """float32 luma (ITU-R 601) of r x W x 3 uint8 rows."""
    return np.asarray(rgb, dtype=np.float32) @ LUMA


def residual(rows: np.ndarray) -> np.ndarray:
    """The kernel's response on the interior of r x W rows: (r - 2) x (W - 2)."""
    a = np.asarray(rows, dtype=np.float32)
    vertical = a[:-2] - 2 * a[1:-1] + a[2:]                # [1, -2, 1] down the columns
    return vertical[:, :-2] - 2 * vertical[:, 1:-1] + vertical[:, 2:]


def window_levels(grey_rows: np.ndarray, context: tuple[bool, bool]) -> np.ndarray:
    """Noise level of each window of a stripe of rows: ceil(r / 16) x ceil(W / 16) float32.
    context: whether the first / last row is context from the neighbouring stripe (else
    the edge row is repeated)."""
    rows = np.asarray(grey_rows, dtype=np.float32)
    if not context[0]:
        rows = np.concatenate([rows[:1], rows])
    if not context[1]:
        rows = np.concatenate([rows, rows[-1:]])
    rows = np.concatenate([rows[:, :1], rows, rows[:, -1:]], axis=1)
    response = np.abs(residual(rows))                      # r x W
    height, width = response.shape
    tall, wide = -(-height // WINDOW), -(-width // WINDOW)
    # partial windows at the right and bottom edges are filled by mirroring
    padded = np.pad(response, ((0, tall * WINDOW - height), (0, wide * WINDOW - width)),
                    mode="symmetric")
    windows = padded.reshape(tall, WINDOW, wide, WINDOW).transpose(0, 2, 1, 3)
    windows = windows.reshape(tall, wide, WINDOW * WINDOW)
    return (np.median(windows, axis=2) * _MAD_TO_SIGMA).astype(np.float32)


def noise_grid(rows_of, height: int, width: int, stripe_windows: int | None = None
               ) -> np.ndarray:
    """ceil(H / 16) x ceil(W / 16) float32 noise levels; rows_of(top, bottom) gives those
    rows as r x W x 3 uint8. Memory: one stripe of rows at a time."""
    stripe = WINDOW * (stripe_windows or max(1, (1 << 20) // max(1, width * WINDOW)))
    parts = []
    for top in range(0, height, stripe):
        bottom = min(height, top + stripe)
        first, last = max(0, top - 1), min(height, bottom + 1)
        levels = window_levels(grey(rows_of(first, last)), (first < top, last > bottom))
        parts.append(levels)
    return np.concatenate(parts, axis=0)
