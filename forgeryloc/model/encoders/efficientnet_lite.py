"""EfficientNet-Lite (Google's 2020 EfficientNet release for mobile CPUs and accelerators).

EfficientNet-B0's seven stages of inverted residual (MBConv) blocks, changed for integer
hardware: ReLU6 instead of swish, no squeeze-and-excitation, and a stem (32 channels) and head
(1280 channels) kept fixed, as are the repeats of the first and last stage, whatever the width
and depth multipliers. Convolutions have no bias; each is followed by BatchNorm (eps 1e-3, as
in the TensorFlow release whose statistics the ImageNet weights carry). Stride-2 convolutions
pad like TensorFlow's "SAME" (more on the bottom and right), which the weights were trained with
(symmetric padding costs the imported Lite0 7 points of top-1 on the tests' ImageNet sample).

As an M2SFormer encoder it returns a 4-level pyramid (strides 4, 8, 16, 32): the outputs of the
24-, 40-, 112- and 320-channel stages (scaled by the width multiplier). The ImageNet head is
`EfficientNetLiteClassifier`, kept to prove imported weights right, unused by M2SFormer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..pvt_v2 import DropPath

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NORM_EPS = 1e-3
PYRAMID_STRIDES = (4, 8, 16, 32)
# The release's input scaling, (pixel - 127) / 128, as a fraction of 255 per RGB channel.
INPUT_MEAN = (127 / 255,) * 3
INPUT_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class StageSpec:
    expand_ratio: int
    kernel_size: int
    stride: int
    repeats: int
    out_channels: int


# EfficientNet-B0's stages; the pyramid taps the last block of stages 1, 2, 4 and 6.
BASE_STAGES = (
    StageSpec(1, 3, 1, 1, 16),    # stride 2
    StageSpec(6, 3, 2, 2, 24),    # stride 4   -> level 0
    StageSpec(6, 5, 2, 2, 40),    # stride 8   -> level 1
    StageSpec(6, 3, 2, 3, 80),    # stride 16
    StageSpec(6, 5, 1, 3, 112),   # stride 16  -> level 2
    StageSpec(6, 5, 2, 4, 192),   # stride 32
    StageSpec(6, 3, 1, 1, 320),   # stride 32  -> level 3
)
PYRAMID_STAGES = (1, 2, 4, 6)


@dataclass(frozen=True)
class LiteVariant:
    width: float       # channel multiplier
    depth: float       # repeat multiplier
    resolution: int    # ImageNet training and evaluation size
    dropout: float     # before the classifier


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scales a width and rounds it to a multiple of `divisor`, never dropping below 90%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def pyramid_widths(variant: str) -> tuple[int, ...]:
    """Channels of the four pyramid levels, e.g. (24, 40, 112, 320) for Lite0."""
    width = VARIANTS[variant].width
    return tuple(round_channels(BASE_STAGES[i].out_channels, width) for i in PYRAMID_STAGES)


def stage_repeats(variant: LiteVariant) -> list[int]:
    """Blocks per stage; the first and the last stage are not deepened in the Lite models."""
    last = len(BASE_STAGES) - 1
    return [spec.repeats if i in (0, last) else math.ceil(spec.repeats * variant.depth)
            for i, spec in enumerate(BASE_STAGES)]


def pad_same(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """Zero padding of TensorFlow's "SAME": output ceil(size / stride), the odd pixel of
    padding at the bottom and right."""
    pads = []
    for size in reversed(x.shape[-2:]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ConvNormAct(nn.Module):
    """Convolution without bias -> BatchNorm -> ReLU6 (or no activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, groups: int = 1, activation: bool = True):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        # Stride 1: symmetric padding is TensorFlow's too; stride 2 pads in forward.
        padding = kernel_size // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              groups=groups, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, eps=NORM_EPS)
        self.act = nn.ReLU6(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = pad_same(x, self.kernel_size, self.stride)
        return self.act(self.norm(self.conv(x)))


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excitation: 1x1 expansion (absent at ratio 1) -> depthwise kxk
    (the block's stride) -> linear 1x1 projection, plus the input when the shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int,
                 kernel_size: int, stride: int, drop_path: float = 0.0):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = ConvNormAct(in_channels, hidden) if expand_ratio != 1 else None
        self.depthwise = ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = ConvNormAct(hidden, out_channels, activation=False)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        return x + self.drop_path(out) if self.residual else out


class EfficientNetLite(nn.Module):
    """Stem and MBConv blocks (one flat list, as in the released weights); returns the four
    pyramid maps at strides 4, 8, 16 and 32, `widths` channels each."""

    strides = PYRAMID_STRIDES

    def __init__(self, variant: str, drop_path_rate: float = 0.0, in_channels: int = 3):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; "
                             f"choose one of {sorted(VARIANTS)}")
        self.variant = variant
        spec = VARIANTS[variant]
        repeats = stage_repeats(spec)
        rates = torch.linspace(0, drop_path_rate, sum(repeats) + 1)[:-1].tolist()
        self.stem = ConvNormAct(in_channels, STEM_CHANNELS, 3, 2)
        self.blocks = nn.ModuleList()
        taps, widths, channels = [], [], STEM_CHANNELS
        for index, (stage, count) in enumerate(zip(BASE_STAGES, repeats)):
            out_channels = round_channels(stage.out_channels, spec.width)
            for repeat in range(count):
                self.blocks.append(InvertedResidual(
                    channels, out_channels, stage.expand_ratio, stage.kernel_size,
                    stage.stride if repeat == 0 else 1, rates[len(self.blocks)]))
                channels = out_channels
            if index in PYRAMID_STAGES:
                taps.append(len(self.blocks) - 1)
                widths.append(out_channels)
        self.taps = tuple(taps)        # index of the block that ends each pyramid level
        self.widths = tuple(widths)    # e.g. (24, 40, 112, 320) for Lite0

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        # Channels-last, as the PVT-v2 encoder's maps are: faster depthwise convolutions.
        x = self.stem(images.contiguous(memory_format=torch.channels_last))  # B x 32 x H/2 x W/2
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.taps:
                features.append(x)  # B x widths[level] x H/strides[level] x W/strides[level]
        return features


class EfficientNetLiteClassifier(nn.Module):
    """The ImageNet model: encoder -> 1x1 conv to 1280 -> global average -> dropout -> linear."""

    def __init__(self, variant: str, num_classes: int = 1000):
        super().__init__()
        self.encoder = EfficientNetLite(variant)
        self.head = ConvNormAct(self.encoder.widths[-1], HEAD_CHANNELS)
        self.dropout = nn.Dropout(VARIANTS[variant].dropout)
        self.fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x 3 x H x W normalised with INPUT_MEAN and INPUT_STD; B x classes logits."""
        last = self.encoder(images)[-1]               # B x C x H/32 x W/32
        pooled = self.head(last).mean(dim=(-2, -1))   # B x 1280
        return self.fc(self.dropout(pooled))
