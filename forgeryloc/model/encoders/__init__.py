"""M2SFormer's encoders by name (the config's `encoder` field).

Every encoder maps B x 3 x H x W images to a list of four maps at strides 4, 8, 16 and 32 whose
channels are the config's `embed_dims`; the skip connection and decoder need nothing more.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

from ..pvt_v2 import PyramidVisionTransformerV2
from .efficientnet_lite import VARIANTS as LITE_VARIANTS, EfficientNetLite

if TYPE_CHECKING:
    from ..m2sformer import M2SFormerConfig


def _pvt_v2(c: M2SFormerConfig) -> nn.Module:
    return PyramidVisionTransformerV2(c.embed_dims, c.num_heads, c.mlp_ratios, c.depths,
                                      c.sr_ratios, drop_path_rate=c.drop_path_rate)


def _efficientnet_lite(variant: str) -> Callable[[M2SFormerConfig], nn.Module]:
    return lambda c: EfficientNetLite(variant, drop_path_rate=c.drop_path_rate)


ENCODERS: dict[str, Callable[[M2SFormerConfig], nn.Module]] = {
    "pvt_v2": _pvt_v2,
    **{variant: _efficientnet_lite(variant) for variant in LITE_VARIANTS},
}


def build_encoder(config: M2SFormerConfig) -> nn.Module:
    """The encoder a config names; refuses one whose pyramid widths differ from embed_dims."""
    try:
        builder = ENCODERS[config.encoder]
    except KeyError:
        raise ValueError(f"unknown encoder {config.encoder!r}; choose one of "
                         f"{sorted(ENCODERS)}") from None
    encoder = builder(config)
    widths = tuple(getattr(encoder, "widths", config.embed_dims))
    if widths != tuple(config.embed_dims):
        raise ValueError(f"encoder {config.encoder} gives widths {widths}, but the config's "
                         f"embed_dims are {tuple(config.embed_dims)}")
    return encoder


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_normalization(config: M2SFormerConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the inputs the encoder's ImageNet weights were trained with: the Lite
    release's (x - 127) / 128 for EfficientNet-Lite, ImageNet statistics for PVT-v2."""
    if config.encoder in LITE_VARIANTS:
        from .efficientnet_lite import INPUT_MEAN, INPUT_STD
        return INPUT_MEAN, INPUT_STD
    return IMAGENET_MEAN, IMAGENET_STD
