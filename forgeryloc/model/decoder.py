"""Difficulty-guided decoder: curvature of the global prior, the easy/hard decision, and the
three decoder stages gated by the chosen difficulty embedding."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .m2s_attention import resize
from .pvt_v2 import OverlapPatchEmbed, TransformerBlock, tokens_to_map

SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


class Curvature(nn.Module):
    """Per-pixel curvature of a logit map from Sobel derivatives (fp32 whatever the autocast)."""

    def __init__(self):
        super().__init__()
        kernels = torch.tensor((SOBEL_X, SOBEL_Y)).unsqueeze(1)  # 2 x 1 x 3 x 3
        self.register_buffer("sobel", kernels, persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            p = logits.float()
            kx, ky = self.sobel[:1], self.sobel[1:]
            fx, fy = F.conv2d(p, kx, padding=1), F.conv2d(p, ky, padding=1)
            fxx, fxy = F.conv2d(fx, kx, padding=1), F.conv2d(fx, ky, padding=1)
            fyy = F.conv2d(fy, ky, padding=1)
            numerator = fx ** 2 * fyy - 2 * fx * fy * fxy + fy ** 2 * fxx
            return numerator / ((fx ** 2 + fy ** 2) ** 1.5 + 1e-8)


def difficulty_from_curvature(curvature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image score sigmoid(sum of curvature) and label (1 = hard when score > 0.5)."""
    score = torch.sigmoid(curvature.sum(dim=(1, 2, 3)))
    return score, (score > 0.5).long()


class DifficultyGate(nn.Module):
    """Channel gate computed from a B x E difficulty embedding."""

    def __init__(self, embedding_dim: int, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        self.layers = nn.Sequential(
            nn.Conv2d(embedding_dim, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return x * self.layers(embedding[:, :, None, None])  # gate: B x C x 1 x 1


class DecoderStage(nn.Module):
    """Upsample, concatenate the skip, embed, one full-attention block, gate by difficulty."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = OverlapPatchEmbed(in_channels, out_channels, kernel_size=3, stride=1)
        self.block = TransformerBlock(out_channels, num_heads=1, mlp_ratio=mlp_ratio,
                                      sr_ratio=1, qkv_bias=False, norm_eps=1e-5)
        self.norm = nn.LayerNorm(out_channels, eps=1e-5)
        self.gate = DifficultyGate(embedding_dim, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor,
                embedding: torch.Tensor) -> torch.Tensor:
        x = torch.cat((resize(x, skip.shape[-2:]), skip), dim=1)
        tokens, height, width = self.embed(x)
        tokens = self.norm(self.block(tokens, height, width))
        return self.gate(tokens_to_map(tokens, height, width), embedding)
