"""JPEG traces in decoded pixels: the stream's input re-estimated from a picture that was a JPEG
once and was then stored losslessly (a PNG, TIFF or BMP made from a JPEG, a lossless export of
an edit of one).

Decoding a JPEG leaves each 8 x 8 block's DCT on the file's grid close to a multiple of that
frequency's quantisation step: the luma's DCT is step x coefficient plus the rounding to 8-bit
pixels (a spread of about 0.3-0.5). So the grid, the table and the coefficients can be read
back from the pixels (Fan & de Queiroz, "Identification of bitmap compression history: JPEG
detection and quantizer estimation", IEEE TIP 2003):

1. the grid: of the 64 possible, the one on whose blocks the lowest AC frequencies lie most
   clearly on a lattice (a crop moves it; tried on up to 24 x 24 blocks);
2. the luma (JFIF weights) on that grid, its blocks' DCT (JPEG's orthonormal scaling); the
   table is measured on the blocks without a pixel at 0 or 255 (the decoder clipped those
   after its inverse DCT, which moves them off the lattice: text on white, bright skies);
3. per frequency, the step: the largest q in 2 .. MAX_STEP such that most values |v| >
   ZERO_BAND lie within TOLERANCE of a multiple of q, far more than chance (2 TOLERANCE / q)
   would put there; multiples of the step fail (the values at one step land half-way), so do
   its neighbours (one step off by 1 or more); divisors pass but are not the largest; a DC
   step within twice DC_TOLERANCE cannot be told from its divisors and counts as unmeasured;
4. frequencies with too few nonzero values for the test (and such a DC) take the step of
   libjpeg's table at the quality that best matches the steps found, where it matches most of
   them (most encoders scale that table); otherwise the median of the closest measured steps
   before them in zigzag order (editors' tables, often flat at high frequencies);
5. coefficients = round(DCT / step).

The picture counts as a decoded JPEG when at least MIN_LATTICE_FREQUENCIES of the lowest
fifteen AC frequencies show a lattice with step 2 or more on enough values; otherwise there is
no estimate (a photo that was never a JPEG, or one resized or rotated since its last JPEG save:
resampling erases the lattice). On casia1-dev's files decoded to pixels, the coefficients at the
file's own table agree with the file's on about 98% of the values."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.jpeg_tables import ijg_tables
from .evidence.double_jpeg import _DCT
from .evidence.noise import grey
from .jpeg_coefficients import _ZIGZAG
from .jpeg_input import JpegInput

MAX_STEP = 128             # the coarsest step tested
ZERO_BAND = 1.0            # values this close to 0 fit any lattice and are left out
MIN_VALUES = 40            # nonzero values a frequency needs for its step to be tested
MIN_STEP_VALUES = 12       # values beyond half a step a step needs to be accepted
TOLERANCE = 0.75           # a value lies on the lattice when this close to a multiple (the
                           # rounding to 8-bit pixels spreads values by ~0.3-0.5 DCT units)
DC_TOLERANCE = 1.5         # the DC's values spread about twice as far (libjpeg's integer IDCT)
MIN_ON_LATTICE = 0.6       # share of the nonzero values on the lattice to accept a step ...
MIN_Z = 6.0                # ... and standard deviations above chance
MIN_EXCESS_Z = 3.0         # a divisor of the step holding this much more than chance wins
MIN_LATTICE_FREQUENCIES = 4  # of the 15 lowest AC frequencies, to call the picture a JPEG
LOW_FREQUENCIES = 15
ORIGIN_FREQUENCIES = (1, 8)  # natural indices of the AC frequencies that find the grid ...
ORIGIN_BLOCKS_SIDE = 24      # ... on at most 24 x 24 blocks spread over the picture
MAX_VALUES = 4096            # values per frequency a step is measured on (evenly spread)
MIN_UNCLIPPED = 0.1        # the table is measured on blocks without clipped pixels when
MIN_UNCLIPPED_BLOCKS = 64  # at least this share and this many of them are left (else all)
MAX_BLOCKS = 16384         # blocks used to estimate the table (a 1 MP area), evenly spread
IJG_MATCH = 0.8            # share of measured steps IJG's table must match to fill the rest
NEIGHBOURS = 6             # otherwise: measured steps a missing one takes the median of
MAX_PIXELS = 40_000_000   # larger pictures are not searched (memory: ~12 bytes a pixel)

ZIGZAG = _ZIGZAG  # natural index of each zigzag position


@dataclass(frozen=True)
class PixelJpegEstimate:
    input: JpegInput          # the stream's input, as if read from the file
    table: np.ndarray         # 64 estimated steps, natural order
    measured: np.ndarray      # 64 bools: the step was measured (else filled, see _filled)
    quality: int              # the IJG quality whose table fits the measured steps best
    origin: tuple[int, int]   # pixel of block (0, 0)'s corner, each in (-8, 0]


def luma(rgb: np.ndarray) -> np.ndarray:
    """H x W float32 luma (JFIF) of H x W x 3 uint8 (or H x W grey) pixels."""
    rgb = np.asarray(rgb)
    return rgb.astype(np.float32) if rgb.ndim == 2 else grey(rgb[..., :3])


def grid_origin(y: np.ndarray) -> tuple[tuple[int, int], float]:
    """((top, left) of the block grid, each in (-8, 0]; its evidence): of the 64 possible
    grids, the one on whose blocks the lowest AC frequencies lie most clearly on a lattice
    (summed over ORIGIN_FREQUENCIES: how far above chance the best step's share is, in
    standard deviations), tried on at most ORIGIN_BLOCKS_SIDE^2 blocks spread over it."""
    height, width = y.shape
    side = ORIGIN_BLOCKS_SIDE
    rows = np.linspace(0, max(0, height - 16) // 8, min(side, max(1, (height - 8) // 8))
                       ).astype(np.int64) * 8
    cols = np.linspace(0, max(0, width - 16) // 8, min(side, max(1, (width - 8) // 8))
                       ).astype(np.int64) * 8
    best, best_evidence = (0, 0), -np.inf
    for top in range(8):
        for left in range(8):
            r = rows + top if rows.max() + top + 8 <= height else rows
            c = cols + left if cols.max() + left + 8 <= width else cols
            blocks = (y[r[:, None, None, None] + np.arange(8)[None, None, :, None],
                        c[None, :, None, None] + np.arange(8)[None, None, None, :]]
                      - 128.0).reshape(-1, 64)                       # N x 64
            dct = blocks @ _DCT_2D.T                                  # N x 64
            evidence = sum(_lattice_evidence(dct[:, index]) for index in ORIGIN_FREQUENCIES)
            if evidence > best_evidence:
                best, best_evidence = (top, left), evidence
    # blocks start at pixels p, p + 8, ...: the one before covers pixels 0 .. p - 1
    return tuple(p - 8 if p else 0 for p in best), float(best_evidence)


def clipped_blocks(rgb: np.ndarray, origin: tuple[int, int], blocks: tuple[int, int]
                   ) -> np.ndarray:
    """Hb x Wb bool: the blocks of the grid at `origin` with a pixel at 0 or 255 in any
    channel (8-bit pictures; others: none). The decoder clipped those pixels after the
    inverse DCT, so such a block's DCT is off the lattice (bright text on white, skies)."""
    pixels = np.asarray(rgb)
    if pixels.dtype != np.uint8:
        return np.zeros(blocks, bool)
    saturated = (pixels == 0) | (pixels == 255)
    if saturated.ndim == 3:
        saturated = saturated[..., :3].any(axis=2)
    top, left = -origin[0], -origin[1]
    height, width = saturated.shape
    padded = np.pad(saturated, ((top, blocks[0] * 8 - height - top),
                                (left, blocks[1] * 8 - width - left)), mode="edge")
    return padded.reshape(blocks[0], 8, blocks[1], 8).any(axis=(1, 3))


def block_dct(y: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """64 x Hb x Wb float32 DCT (natural order) of the level-shifted luma on the grid whose
    block (0, 0) starts at pixel `origin`; partial blocks at the edges are padded by
    repeating the last pixel (as encoders do)."""
    top, left = -origin[0], -origin[1]
    height, width = y.shape
    blocks_h, blocks_w = -(-(height + top) // 8), -(-(width + left) // 8)
    padded = np.pad(y - 128.0, ((top, blocks_h * 8 - height - top),
                                (left, blocks_w * 8 - width - left)), mode="edge")
    blocks = padded.reshape(blocks_h, 8, blocks_w, 8).transpose(0, 2, 1, 3)  # Hb x Wb x 8 x 8
    coefficients = blocks.reshape(-1, 64) @ _DCT_2D.T                         # Hb Wb x 64
    return np.ascontiguousarray(coefficients.T.reshape(64, blocks_h, blocks_w))


# the 2-D DCT of a block flattened row by row: coefficient u * 8 + v = (D B D^T)[u, v]
_DCT_2D = np.kron(_DCT, _DCT)                                          # 64 x 64


def _lattice_test(values: np.ndarray, tolerance: float = 0.75
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the steps q = 2 .. MAX_STEP, over the values that would not round to 0 at q
    (|v| > q / 2; rounding noise around the zero coefficients stays out): (steps, how many
    values, the share within `tolerance` of a multiple of q, that share's distance above
    chance in standard deviations)."""
    steps = np.arange(2, MAX_STEP + 1, dtype=np.float32)[:, None]
    magnitudes = np.abs(values)[None, :]
    included = magnitudes > np.maximum(steps / 2, ZERO_BAND)              # K x N
    residuals = values[None, :] - steps * np.rint(values[None, :] / steps)
    counts = included.sum(axis=1)
    on_lattice = (included & (np.abs(residuals) < tolerance)).sum(axis=1) / np.maximum(counts, 1)
    # values unrelated to q land near a multiple this often (a step within twice the
    # tolerance catches everything: no evidence either way)
    chance = np.minimum(2 * tolerance / steps[:, 0], 1.0)
    spread = np.sqrt(np.maximum(chance * (1 - chance), 1e-12) / np.maximum(counts, 1))
    z = np.where(chance < 1.0, (on_lattice - chance) / spread, 0.0)
    return steps[:, 0], counts, on_lattice, z


def _nonzero(values: np.ndarray) -> np.ndarray:
    return values[np.abs(values) > ZERO_BAND].astype(np.float32)


def _lattice_evidence(values: np.ndarray) -> float:
    values = _nonzero(values)
    if values.size < 8:
        return 0.0
    _, counts, on_lattice, z = _lattice_test(values)
    return float(np.max(np.where((on_lattice >= MIN_ON_LATTICE) & (counts >= 8), z, 0.0)))


def measured_step(values: np.ndarray, tolerance: float = 0.75) -> int | None:
    """The step of the lattice the nonzero values lie on (1: none); None when there are too
    few nonzero values to tell. The largest step that passes, unless one of its divisors holds
    significantly more values than chance would add: then the largest such divisor (a host
    compressed twice has only even multiples of its last step, a region pasted in between
    the odd ones too; the last step is the one that explains both)."""
    values = _nonzero(values)
    if values.size < MIN_VALUES:
        return None
    if values.size > MAX_VALUES:
        values = values[np.linspace(0, values.size - 1, MAX_VALUES).astype(np.int64)]
    steps, counts, on_lattice, z = _lattice_test(values, tolerance)
    passed = (on_lattice >= MIN_ON_LATTICE) & (z > MIN_Z) & (counts >= MIN_STEP_VALUES)
    if not passed.any():
        return 1
    step = int(steps[passed].max())
    while True:
        # the finer lattice's share among the values the coarser one counts
        share = on_lattice[step - 2]
        kept = np.abs(values) > max(step / 2, ZERO_BAND)
        finer = [d for d in range(step - 1, 1, -1) if step % d == 0 and passed[d - 2]
                 and _excess_z(_share_on(values[kept], d, tolerance), share, d,
                               int(kept.sum()), tolerance)
                 > MIN_EXCESS_Z]
        if not finer:
            return step
        step = finer[0]


def _share_on(values: np.ndarray, step: int, tolerance: float) -> float:
    return float((np.abs(values - step * np.rint(values / step)) < tolerance).mean())


def _excess_z(share_finer: float, share: float, finer: int, count: int,
              tolerance: float) -> float:
    """How far (in standard deviations) the finer lattice's share exceeds the coarser one's
    plus what chance adds among the values off the coarser lattice."""
    off = (1 - share) * count
    if off < 1:
        return 0.0
    chance = min(1.0, 2 * tolerance / finer)
    extra = (share_finer - share) * count
    return float((extra - off * chance) / np.sqrt(off * chance * (1 - chance) + 1e-9))


def ijg_table(quality: int) -> np.ndarray:
    """libjpeg's luma table at `quality` (1 .. 100), natural order."""
    return np.asarray(ijg_tables(quality).luma, np.float64)


def _fitted_quality(table: np.ndarray, measured: np.ndarray) -> int:
    """The IJG quality whose table is closest (in log steps) to the measured ones."""
    qualities = np.arange(1, 101)
    errors = [np.abs(np.log(ijg_table(q)[measured]) - np.log(table[measured])).sum()
              for q in qualities]
    return int(qualities[int(np.argmin(errors))])


def search(rgb: np.ndarray) -> tuple[PixelJpegEstimate | None, str]:
    """(the estimate or None, why none): estimate() within the size limit."""
    height, width = np.asarray(rgb).shape[:2]
    if height * width > MAX_PIXELS:
        return None, "too large to look for JPEG traces in the pixels"
    found = estimate(rgb)
    return found, "" if found is not None else "no JPEG traces in the pixels"


def stream_note(found: PixelJpegEstimate | None, why_not: str, file_note: str) -> str:
    """The record's jpeg_evidence for a file without coefficients (file_note says why)."""
    if found is None:
        return f"{file_note}; {why_not}"
    return (f"{file_note}; estimated from the pixels (a decoded JPEG: grid at {found.origin}, "
            f"table close to IJG quality {found.quality}, {int(found.measured.sum())} of 64 "
            f"steps measured)")


def clue(found: PixelJpegEstimate | None, why_not: str) -> dict:
    """The file clue `jpeg_in_pixels` of a file that is not a JPEG."""
    if found is None:
        return {"found": False, "note": why_not}
    return {"found": True, "grid_origin": list(found.origin), "ijg_quality_fit": found.quality,
            "steps_measured": int(found.measured.sum()),
            "luma_table": [int(step) for step in found.table]}


def stream_input(rgb: np.ndarray, file_note: str) -> tuple[JpegInput | None, str]:
    """For a picture whose file gave no coefficients (file_note says why): the estimate's
    input and a note that says it was estimated, or None and both reasons."""
    found, why_not = search(rgb)
    return (found.input if found is not None else None), stream_note(found, why_not, file_note)


def _filled(table: np.ndarray, measured: np.ndarray, quality: int) -> np.ndarray:
    """Steps for the frequencies that could not be measured: IJG's table at the fitted
    quality where it matches most measured steps exactly (an IJG-made file); otherwise each
    takes the median of the NEIGHBOURS closest measured steps before it in zigzag order
    (editors' tables, often flat at high frequencies)."""
    ijg = ijg_table(quality)
    if np.mean(ijg[measured] == table[measured]) >= IJG_MATCH:
        return ijg
    filled = ijg.copy()
    known = [int(index) for index in ZIGZAG if measured[index]]
    for position, index in enumerate(ZIGZAG):
        if measured[index]:
            continue
        before = [k for k in ZIGZAG[:position] if measured[k]][-NEIGHBOURS:]
        if before:
            filled[index] = np.median(table[before])
        elif known:
            filled[index] = table[known[0]]
    return filled


def _spread(flat: np.ndarray) -> np.ndarray:
    """At most MAX_BLOCKS of the 64 x N blocks, evenly spread (the table is the same
    everywhere)."""
    if flat.shape[1] <= MAX_BLOCKS:
        return flat
    return flat[:, np.linspace(0, flat.shape[1] - 1, MAX_BLOCKS).astype(np.int64)]


def estimate(rgb: np.ndarray) -> PixelJpegEstimate | None:
    """The JPEG stream's input re-estimated from decoded pixels (H x W x 3 uint8 or H x W),
    or None when the pixels show no JPEG lattice (see the module's docstring)."""
    y = luma(rgb)
    if min(y.shape) < 16:
        return None
    origin, _ = grid_origin(y)
    dct = block_dct(y, origin)                                     # 64 x Hb x Wb
    flat = dct.reshape(64, -1)
    # the blocks without clipped pixels first; all blocks where those show no lattice
    # (fewer values: the high frequencies of a picture that is mostly white or black)
    unclipped = ~clipped_blocks(rgb, origin, dct.shape[1:]).ravel()
    subsets = [_spread(flat)]
    if np.count_nonzero(unclipped) >= max(MIN_UNCLIPPED_BLOCKS, MIN_UNCLIPPED * unclipped.size) \
            and not unclipped.all():
        subsets.insert(0, _spread(flat[:, unclipped]))
    table = np.ones(64)
    measured = np.zeros(64, bool)
    low = ZIGZAG[1:LOW_FREQUENCIES + 1]
    for position, index in enumerate(ZIGZAG):
        if position == LOW_FREQUENCIES + 1 and \
                np.count_nonzero(measured[low] & (table[low] >= 2)) < MIN_LATTICE_FREQUENCIES:
            return None  # decided on the lowest frequencies: not a decoded JPEG
        for values in subsets:  # the first lattice found; else what the last (all) says
            step = measured_step(values[index], DC_TOLERANCE if index == 0 else TOLERANCE)
            if step is not None and step > 1:
                break
        if index == 0 and step is not None and step <= 2 * DC_TOLERANCE:
            step = None  # within twice its tolerance every step fits the DC: left to the fill
        # beyond the lowest frequencies, "no lattice" is left to the fill: there the few
        # values away from 0 are mostly clipping and noise around zero coefficients
        if step is not None and (step > 1 or position <= LOW_FREQUENCIES):
            table[index], measured[index] = step, True
    quality = _fitted_quality(table, measured)
    table = np.where(measured, table, _filled(table, measured, quality))
    coefficients = np.clip(np.rint(dct / table[:, None, None]), -2048, 2047).astype(np.int16)
    jpeg = JpegInput(torch.from_numpy(coefficients), torch.from_numpy(table.astype(np.float32)),
                     origin)
    return PixelJpegEstimate(jpeg, table.astype(np.float32), measured, quality, origin)
