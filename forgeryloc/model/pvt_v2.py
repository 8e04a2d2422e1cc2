"""PVT-v2 encoder (Wang et al., "PVT v2", 2022): four stages of overlapping patch embedding,
transformer blocks with spatial-reduction attention, and a closing LayerNorm.

The transformer block is shared with the decoder, which uses it with one head, no spatial
reduction and no q/kv biases.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """B x HW x C -> B x C x H x W as a channels-last view (no copy for contiguous tokens)."""
    return tokens.unflatten(1, (height, width)).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x HW x C (a view when x is channels-last)."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class OverlapPatchEmbed(nn.Module):
    """Strided convolution followed by LayerNorm over tokens."""

    def __init__(self, in_channels: int, embed_dim: int, kernel_size: int, stride: int,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size, stride, kernel_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(map_to_tokens(x)), height, width


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from a map shrunk by `sr_ratio`."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # output laid out as [k | v] x heads
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        q = self.q(x).view(batch, tokens, self.num_heads, head_dim).transpose(1, 2)  # B x h x N x d
        if self.sr_ratio > 1:
            reduced = self.sr(tokens_to_map(x, height, width))
            x = self.norm(map_to_tokens(reduced))  # B x N' x C
        kv = self.kv(x).view(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each B x h x N' x d
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(out))


class DepthwiseConvMlp(nn.Module):
    """Linear -> depthwise 3x3 conv on the token map -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = map_to_tokens(self.dwconv(tokens_to_map(self.fc1(x), height, width)))
        if torch.is_grad_enabled():
            x = F.gelu(x)
        else:  # in place: the hidden activation is the largest tensor of a stage; same values
            torch.ops.aten.gelu_(x)
        return self.drop(self.fc2(self.drop(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int = 1,
                 qkv_bias: bool = True, norm_eps: float = 1e-6, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = DepthwiseConvMlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


class EncoderStage(nn.Module):
    def __init__(self, in_channels: int, dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 sr_ratio: int, first: bool, drop_paths: Sequence[float]):
        super().__init__()
        kernel, stride = (7, 4) if first else (3, 2)
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, kernel, stride)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio, sr_ratio, drop_path=drop_paths[i])
            for i in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, height, width = self.patch_embed(x)
        for block in self.blocks:
            tokens = block(tokens, height, width)
        return tokens_to_map(self.norm(tokens), height, width)


class PyramidVisionTransformerV2(nn.Module):
    """Returns the four stage maps at strides 4, 8, 16 and 32."""

    def __init__(self, embed_dims: Sequence[int], num_heads: Sequence[int],
                 mlp_ratios: Sequence[float], depths: Sequence[int], sr_ratios: Sequence[int],
                 in_channels: int = 3, drop_path_rate: float = 0.0):
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        start = 0
        for i, depth in enumerate(depths):
            self.stages.append(EncoderStage(
                in_channels if i == 0 else embed_dims[i - 1], embed_dims[i], depth,
                num_heads[i], mlp_ratios[i], sr_ratios[i], first=i == 0,
                drop_paths=rates[start:start + depth]))
            start += depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)  # token views need no copies
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
