"""ImageNet PVT-v2 encoder weights (timm or the original PVT release) for `train --init-encoder`.

Read safely: safetensors, or a pickle through `torch.load(weights_only=True)`."""
from __future__ import annotations

from pathlib import Path

import torch

from . import pvt_names
from .model.m2sformer import M2SFormer


def encoder_key(key: str) -> str | None:
    """Our encoder's name for a tensor of a PVT-v2 checkpoint (None: not an encoder tensor)."""
    return pvt_names.encoder_key(
        key.removeprefix("module.").removeprefix("backbone.").removeprefix("encoder."))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    payload = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict", "model_state_dict"):
        if isinstance(payload, dict) and isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: no state dict found")
    return {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}


def load_encoder_weights(model: M2SFormer, path: str | Path) -> int:
    """Copies every matching tensor into model.encoder; refuses a file that matches too little."""
    ours = model.encoder.state_dict()
    mapped = {}
    for key, tensor in read_state_dict(path).items():
        name = encoder_key(key)
        if name in ours and ours[name].shape == tensor.shape:
            mapped[name] = tensor.float()
    if len(mapped) < len(ours):
        missing = sorted(set(ours) - set(mapped))
        raise ValueError(f"{path}: {len(missing)} of {len(ours)} encoder tensors have no match "
                         f"(e.g. {missing[:3]}); is it a PVT-v2 of the same size "
                         f"({model.config.name})?")
    model.encoder.load_state_dict(mapped)
    return len(mapped)
