"""Whether a picture is of the kind the detector was made for: a photograph.

The network and its flag thresholds were fitted and measured on photographs. On a drawn
picture (a mask, a logo, a cartoon, a slide) its map lights up on flat colour and hard edges:
the binary masks shipped in examples/masks scored 0.93-0.94 and a three-colour cartoon 1.00,
all flagged. A flag there says nothing about manipulation, so a scan reports such a picture's
score and map but does not flag it, and its record says why (`scope`).

A picture is called drawn when
  - it has at most MAX_DRAWN_COLOURS distinct colours (a drawing saved losslessly), or
  - at least MIN_FLAT_SHARE of its 8 x 8 pixel blocks are one grey level throughout (a
    drawing, also after JPEG compression, which leaves flat blocks flat).
Photographs measured (scripts/picture_scope.py): casia1-dev, 735 files: largest flat share
0.656 (an object on a white background), fewest colours 4,115; imagenet-sample, 300: 0.513,
234 (a grey photograph); BSDS500, 500: 0.310, 4,592; kodak24: 0.089, 13,452. Both limits are
conservative: a screenshot of text on a plain page (flat share about 0.7) stays in scope."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_DRAWN_COLOURS = 64
MIN_FLAT_SHARE = 0.85
BLOCK = 8


@dataclass(frozen=True)
class PictureKind:
    colours: int | None   # distinct colours; None: more than MAX_DRAWN_COLOURS
    flat_share: float     # share of the 8 x 8 blocks that are one grey level throughout

    @property
    def drawn(self) -> bool:
        return self.colours is not None or self.flat_share >= MIN_FLAT_SHARE

    def note(self) -> str | None:
        """The record's `scope`: None for a photograph, else why the image is not flagged."""
        if not self.drawn:
            return None
        reasons = []
        if self.colours is not None:
            reasons.append(f"{self.colours} colour{'s' if self.colours != 1 else ''}")
        reasons.append(f"{100 * self.flat_share:.0f}% of its 8 x 8 blocks flat")
        return (f"not a photograph ({', '.join(reasons)}): the detector was made and measured "
                f"for photographs, so its score is no evidence here and the image is not "
                f"flagged")


def picture_kind(picture: Image.Image) -> PictureKind:
    """The two measures of a decoded picture (any mode Pillow decodes)."""
    colours = picture.getcolors(MAX_DRAWN_COLOURS)  # None past the limit (stops early)
    return PictureKind(colours=None if colours is None else len(colours),
                       flat_share=flat_block_share(np.asarray(picture.convert("L"))))


def flat_block_share(grey: np.ndarray, band_rows: int = 64) -> float:
    """Share of the whole 8 x 8 blocks of an H x W uint8 picture that hold one value; 0 for a
    picture smaller than one block. Block rows are taken band_rows at a time, so a huge
    picture needs no second whole-picture copy."""
    rows, cols = grey.shape[0] // BLOCK, grey.shape[1] // BLOCK
    if rows == 0 or cols == 0:
        return 0.0
    flat_blocks = 0
    for top in range(0, rows, band_rows):
        count = min(band_rows, rows - top)
        band = grey[top * BLOCK:(top + count) * BLOCK, :cols * BLOCK]
        blocks = band.reshape(count, BLOCK, cols, BLOCK).transpose(0, 2, 1, 3)
        blocks = np.ascontiguousarray(blocks).reshape(-1, BLOCK, BLOCK)   # N x 8 x 8
        # each block row as one 64-bit word: a block is flat when its rows are equal and its
        # first row is one value (N x 8 words, N x 8 pixels)
        words = blocks.view(np.uint64).reshape(-1, BLOCK)
        first_row = blocks[:, 0, :]
        flat = (words == words[:, :1]).all(axis=1) & (first_row == first_row[:, :1]).all(axis=1)
        flat_blocks += int(np.count_nonzero(flat))
    return flat_blocks / (rows * cols)
