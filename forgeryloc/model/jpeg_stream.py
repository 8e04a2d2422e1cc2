"""The JPEG-domain stream: a small network on a JPEG file's own 8x8 block grid.

Input: the quantised DCT coefficients of the luminance channel as they are stored in the file
(no decoding to pixels, so the grid and the rounding are exact) and the file's luminance
quantisation table. Each of the lowest `frequencies` coefficients (zigzag order) becomes a
one-hot vector of its absolute value clipped at `clip` (the per-block, per-frequency histogram
entries of CAT-Net, Kwon et al. 2022); a 1x1 convolution embeds them, the table modulates the
embedding (scale and shift per channel, so the network knows the last compression's step
sizes), and dilated 3x3 convolutions compare each block with its neighbourhood, where double
quantisation shows as histogram gaps and peaks that a pasted region lacks. Output: one logit
per block (and the features, for fusion).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def zigzag_order() -> list[int]:
    """Natural (row-major u * 8 + v) indices of the 64 DCT frequencies in JPEG zigzag order."""
    cells = [(u, v) for u in range(8) for v in range(8)]
    cells.sort(key=lambda c: (c[0] + c[1], c[0] if (c[0] + c[1]) % 2 else c[1]))
    return [u * 8 + v for u, v in cells]


@dataclass(frozen=True)
class JpegStreamConfig:
    frequencies: int = 16                 # lowest zigzag frequencies read
    clip: int = 20                        # |coefficient| clipped here: clip + 1 histogram bins
    width: int = 96                       # channels of every layer
    dilations: tuple[int, ...] = (1, 2, 4, 8, 4, 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "JpegStreamConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class JpegStream(nn.Module):
    def __init__(self, config: JpegStreamConfig = JpegStreamConfig()):
        super().__init__()
        self.config = c = config
        self.register_buffer("frequency_index", torch.tensor(zigzag_order()[:c.frequencies]),
                             persistent=False)
        bins = c.clip + 1
        self.embed = nn.Conv2d(c.frequencies * bins, c.width, 1, bias=False)
        self.table_film = nn.Linear(64, 2 * c.width)
        nn.init.zeros_(self.table_film.weight)
        nn.init.zeros_(self.table_film.bias)
        self.embed_norm = nn.BatchNorm2d(c.width)
        self.body = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c.width, c.width, 3, padding=d, dilation=d, bias=False),
                          nn.BatchNorm2d(c.width), nn.ReLU(inplace=True))
            for d in c.dilations)
        self.head = nn.Conv2d(c.width, 1, 1)

    def histogram_volume(self, coefficients: torch.Tensor) -> torch.Tensor:
        """B x 64 x Hb x Wb quantised coefficients -> B x (F * bins) x Hb x Wb one-hot floats."""
        c = self.config
        chosen = coefficients.index_select(1, self.frequency_index)       # B x F x Hb x Wb
        bins = chosen.abs().clamp(max=c.clip).long()
        one_hot = F.one_hot(bins, c.clip + 1)                           # B x F x Hb x Wb x K
        batch, _, height, width, _ = one_hot.shape
        return one_hot.permute(0, 1, 4, 2, 3).reshape(batch, -1, height, width).float()

    def embed_histograms(self, coefficients: torch.Tensor) -> torch.Tensor:
        """self.embed applied to histogram_volume(coefficients), without the volume: the 1x1
        convolution of a one-hot input is a sum of one weight column per frequency, i.e. an
        embedding bag (~20x fewer operations and no F * bins channel volume)."""
        c = self.config
        chosen = coefficients.index_select(1, self.frequency_index)       # B x F x Hb x Wb
        batch, frequencies, height, width = chosen.shape
        offsets = torch.arange(frequencies, device=chosen.device, dtype=torch.int32) * (c.clip + 1)
        # B x F x Hb x Wb -> (B * Hb * Wb) x F indices into the F * bins rows of the table
        index = (chosen.permute(0, 2, 3, 1).abs().clamp(max=c.clip).to(torch.int32)
                 + offsets).reshape(-1, frequencies)
        table = self.embed.weight.view(c.width, -1).t().contiguous()     # F * bins x width
        embedded = F.embedding_bag(index, table, mode="sum")
        # (B * Hb * Wb) x width -> B x width x Hb x Wb (channels-last in memory, as the
        # convolutions that follow run fastest on a CPU)
        return embedded.view(batch, height, width, c.width).permute(0, 3, 1, 2)

    def forward(self, coefficients: torch.Tensor, table: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """coefficients: B x 64 x Hb x Wb (natural order, integer valued); table: B x 64 step
        sizes. Returns (B x 1 x Hb x Wb block logits, B x width x Hb x Wb features)."""
        x = self.embed_histograms(coefficients)
        # log2 of the steps (1..255 -> 0..8), centred: the modulation's input.
        steps = torch.log2(table.float().clamp(min=1)) / 4 - 1
        scale, shift = self.table_film(steps).chunk(2, dim=1)           # B x width each
        x = self.embed_norm(x) * (1 + scale[..., None, None]) + shift[..., None, None]
        x = F.relu(x)
        for layer in self.body:
            x = x + layer(x)
        return self.head(x), x


class LateFusion(nn.Module):
    """Per-pixel logistic fusion of the RGB network's logit and the JPEG stream's logit.

    With JPEG evidence:    a1 * rgb + b * jpeg + c1
    without (a PNG, a TIFF, a JPEG that cannot be read): a0 * rgb + c0,
    so a model trained with both cases works as an RGB model on other inputs. Starts as the
    RGB map plus the JPEG logit. A checkpoint may also bound the JPEG logit from below
    (CheckpointInfo.jpeg_logit_floor, applied by Predictor.with_jpeg)."""

    def __init__(self):
        super().__init__()
        self.weights = nn.Parameter(torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]))  # a0 c0 a1 b c1

    def forward(self, rgb_logits: torch.Tensor, jpeg_logits: torch.Tensor | None
                ) -> torch.Tensor:
        a0, c0, a1, b, c1 = self.weights
        if jpeg_logits is None:
            return a0 * rgb_logits + c0
        return a1 * rgb_logits + b * jpeg_logits + c1
