"""Names of PVT-v2 encoder tensors in other code bases, mapped to our encoder's
(`stages.N.patch_embed / blocks / norm ...`): the original PVT release (which the authors'
M2SFormer embeds as its `feature_encoding`) and timm."""
from __future__ import annotations

import re

# (their key pattern, our key template); applied in order, first match wins.
ENCODER_RENAMES = [
    # original PVT: patch_embed1 / block1.0 / norm1
    (r"patch_embed(\d)\.(.*)", lambda m: f"stages.{int(m[1]) - 1}.patch_embed.{m[2]}"),
    (r"block(\d)\.(.*)", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}"),
    (r"norm(\d)\.(.*)", lambda m: f"stages.{int(m[1]) - 1}.norm.{m[2]}"),
    # timm: patch_embed (stage 0), stages.N.downsample (later stages), stages.N.blocks / norm
    (r"patch_embed\.(.*)", lambda m: f"stages.0.patch_embed.{m[1]}"),
    (r"stages\.(\d)\.downsample\.(.*)", lambda m: f"stages.{m[1]}.patch_embed.{m[2]}"),
    (r"(stages\.\d\.(?:blocks|norm)\..*)", lambda m: m[1]),
]


def rename(key: str, rules) -> str | None:
    """The first rule (pattern, template) whose pattern matches the whole key renames it."""
    for pattern, template in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return template(match)
    return None


def encoder_key(key: str) -> str | None:
    """Our encoder's name for a PVT-v2 tensor name (None: not an encoder tensor). Both
    releases wrap the depthwise convolution twice (`mlp.dwconv.dwconv`); ours once."""
    return rename(key.replace("mlp.dwconv.dwconv.", "mlp.dwconv."), ENCODER_RENAMES)
