"""The M2S skip connection: multi-spectral (2D DCT) channel attention followed by multi-scale
spatial attention over the four encoder maps, brought to one common resolution."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# FcaNet's "top16" frequency pairs, defined on a 7x7 grid.
TOP16_U = (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2)
TOP16_V = (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2)


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True (the convention of the whole network)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def dct_filters(resolution: int, num_frequencies: int = 16) -> torch.Tensor:
    """The fixed 2D DCT-II basis images of FcaNet, num_frequencies x resolution x resolution."""
    if num_frequencies > len(TOP16_U):
        raise ValueError(f"at most {len(TOP16_U)} DCT frequencies are defined")
    positions = torch.arange(resolution, dtype=torch.float64)

    def basis(freq: int) -> torch.Tensor:
        values = torch.cos(math.pi * freq * (positions + 0.5) / resolution) / math.sqrt(resolution)
        return values * math.sqrt(2) if freq != 0 else values

    filters = []
    for u, v in zip(TOP16_U[:num_frequencies], TOP16_V[:num_frequencies]):
        u_scaled, v_scaled = (u * resolution) // 7, (v * resolution) // 7
        filters.append(basis(u_scaled)[:, None] * basis(v_scaled)[None, :])
    return torch.stack(filters).float()


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
                 bias: bool = False) -> list[nn.Module]:
    padding = dilation * (kernel_size // 2)
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                      bias=bias),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class MultiSpectralChannelAttention(nn.Module):
    """Channel attention from DCT-weighted average and max pooling (shared bottleneck MLP)."""

    def __init__(self, channels: int, resolution: int, num_frequencies: int, reduction: int):
        super().__init__()
        filters = dct_filters(resolution, num_frequencies).flatten(1)  # K x RR
        self.register_buffer("filters", filters, persistent=False)
        self.register_buffer("mean_filter", filters.mean(0), persistent=False)  # RR
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        flat = x.flatten(2)  # B x C x RR
        # mean_k(mean(x * f_k)) = mean(x * mean_k f_k): one product instead of K.
        avg = (flat * self.mean_filter.to(x.dtype)).mean(-1)  # B x C
        # The max is not linear: one product per filter. A loop over K measured 2-3x faster
        # on CPU than one B x C x K x RR product, which does not stay in cache.
        peak = torch.stack([(flat * f).amax(-1) for f in self.filters.to(x.dtype)]).mean(0)
        pooled = torch.stack((avg, peak)).view(2 * batch, channels, 1, 1)
        avg_logits, max_logits = self.fc(pooled).view(2, batch, channels, 1, 1)
        return x * torch.sigmoid(avg_logits + max_logits)


class ScaleBranch(nn.Module):
    """One spatial-attention branch working at 1/2^scale of the common resolution."""

    def __init__(self, channels: int, scale: int):
        super().__init__()
        self.pool = 2 ** scale
        inner = max(channels // self.pool, 64)
        self.body = nn.Sequential(*conv_bn_relu(channels, channels, 3, dilation=1 + scale),
                                  *conv_bn_relu(channels, inner))
        self.gate = nn.Conv2d(inner, 1, 1, bias=False)
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.ones(1))
        self.out = nn.Sequential(*conv_bn_relu(inner, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool, self.pool)
        features = self.body(x)
        attention = torch.sigmoid(self.gate(features))  # B x 1 x h x w
        features = features * attention * self.alpha + features * (1 - attention) * self.beta
        return resize(self.out(features), size)


class M2SSkipConnection(nn.Module):
    """Maps the four encoder features to four refined `skip_channels` maps of the same sizes."""

    def __init__(self, encoder_dims: Sequence[int], skip_channels: int, resolution: int,
                 num_scales: int, num_frequencies: int, reduction: int):
        super().__init__()
        self.resolution = resolution
        channels = skip_channels * len(encoder_dims)
        self.reducers = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(dim, skip_channels, bias=True)) for dim in encoder_dims)
        self.spectral = MultiSpectralChannelAttention(channels, resolution, num_frequencies,
                                                      reduction)
        if any(resolution // 2 ** s < 8 for s in range(num_scales)):
            raise ValueError(f"{num_scales} scales need a target resolution of at least "
                             f"{8 * 2 ** (num_scales - 1)}")
        self.scales = nn.ModuleList(ScaleBranch(channels, s) for s in range(num_scales))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        common = (self.resolution, self.resolution)
        reduced = [resize(reduce(f), common) for reduce, f in zip(self.reducers, features)]
        x = self.spectral(torch.cat(reduced, dim=1))  # B x 4*skip x R x R
        refined = torch.stack([branch(x) for branch in self.scales]).mean(0) + x
        chunks = refined.chunk(len(features), dim=1)
        return [resize(chunk, f.shape[-2:]) for chunk, f in zip(chunks, features)]
