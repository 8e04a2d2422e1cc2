"""Import of the authors' checkpoint format (a pickled `{"model_state_dict": ...}`).

The file is read with `torch.load(weights_only=True)`, so a crafted pickle cannot run code. Every
tensor of theirs is mapped to one of ours with its shape checked; nothing may be missing or left
over. Their 16 DCT buffers are recomputed by our model and compared instead of copied.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from . import pvt_names
from .model.m2s_attention import dct_filters
from .model.m2sformer import M2SFormer
from .weights import describe_mismatch

# (their key pattern, our key template); applied in order, first match wins.
_RENAMES = [
    (r"feature_encoding\.(.*)", lambda m: _in_encoder(pvt_names.encoder_key(m[1]))),
    (r"skip_connection_module\.skip_connection_reduction(\d)\.(.*)", lambda m: f"skip.reducers.{int(m[1]) - 1}.{m[2]}"),
    (r"skip_connection_module\.msms_block\.fc\.(.*)", lambda m: f"skip.spectral.fc.{m[1]}"),
    (r"skip_connection_module\.msms_block\.init_conv_scale_(\d)\.(.*)", lambda m: f"skip.scales.{m[1]}.body.{m[2]}"),
    (r"skip_connection_module\.msms_block\.spatial_attention_map_scale_(\d)\.0\.(.*)", lambda m: f"skip.scales.{m[1]}.gate.{m[2]}"),
    (r"skip_connection_module\.msms_block\.final_conv_scale_(\d)\.(.*)", lambda m: f"skip.scales.{m[1]}.out.{m[2]}"),
    (r"skip_connection_module\.msms_block\.alpha_list\.(\d)", lambda m: f"skip.scales.{m[1]}.alpha"),
    (r"skip_connection_module\.msms_block\.beta_list\.(\d)", lambda m: f"skip.scales.{m[1]}.beta"),
    (r"decoder_stage(\d)\.patch_embedding\.(.*)", lambda m: f"decoder.{int(m[1]) - 1}.embed.{m[2]}"),
    (r"decoder_stage(\d)\.block\.mlp\.dwconv\.dwconv\.(.*)", lambda m: f"decoder.{int(m[1]) - 1}.block.mlp.dwconv.{m[2]}"),
    (r"decoder_stage(\d)\.block\.(.*)", lambda m: f"decoder.{int(m[1]) - 1}.block.{m[2]}"),
    (r"decoder_stage(\d)\.norm\.(.*)", lambda m: f"decoder.{int(m[1]) - 1}.norm.{m[2]}"),
    (r"decoder_stage(\d)\.text_guided_attention\.attention_map\.(.*)", lambda m: f"decoder.{int(m[1]) - 1}.gate.layers.{m[2]}"),
    (r"global_prior\.0\.(.*)", lambda m: f"prior_head.{m[1]}"),
    (r"seg_head\.region_conv\.0\.(.*)", lambda m: f"prediction_head.{m[1]}"),
    (r"seg_head\.edge_conv\.0\.(.*)", lambda m: f"edge_head.{m[1]}"),
]
_DCT_KEY = re.compile(r"skip_connection_module\.msms_block\.dct_weight_(\d+)")


class ConversionError(ValueError):
    """The official checkpoint does not fit the model."""


def _in_encoder(key: str | None) -> str | None:
    return None if key is None else f"encoder.{key}"


def our_key(their_key: str) -> str | None:
    return pvt_names.rename(their_key, _RENAMES)


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Loads the authors' file safely; accepts a bare state dict too."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling errors have many types
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # The line that names what the pickle wanted (e.g. "... GLOBAL posix.system ..."),
        # rather than torch's advice to retry with weights_only=False.
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line),
                      lines[0] if lines else type(error).__name__)
        raise ConversionError(f"{path}: refused, not a plain checkpoint of tensors ({reason}); "
                              f"nothing in it was run") from None
    state = payload.get("model_state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: no model_state_dict of tensors found")
    return state


def convert_state_dict(theirs: dict[str, torch.Tensor], model: M2SFormer) -> dict[str, torch.Tensor]:
    """Maps every tensor onto `model`'s state dict (fp32), checking names and shapes."""
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unknown, mismatched = [], []
    expected_dct = dct_filters(model.config.target_resolution, model.config.dct_frequencies)
    for key, tensor in theirs.items():
        dct = _DCT_KEY.fullmatch(key)
        if dct:
            index = int(dct[1])
            if index >= len(expected_dct):
                unknown.append(key)
                continue
            # Their buffers repeat one filter per channel: C x R x R.
            if not torch.allclose(tensor.float(), expected_dct[index].expand_as(tensor), atol=2e-3):
                raise ConversionError(f"{key}: DCT filter differs from the recomputed one")
            continue
        name = our_key(key)
        if name is None or name not in ours:
            unknown.append(key)
            continue
        target = ours[name]
        if tuple(tensor.shape) != tuple(target.shape):
            mismatched.append(f"{key} {tuple(tensor.shape)} -> {name} {tuple(target.shape)}")
            continue
        converted[name] = tensor.to(target.dtype)
    missing = sorted(set(ours) - set(converted) - {"difficulty_embeddings"})
    if unknown or mismatched or missing:
        raise ConversionError(f"checkpoint does not fit {model.config.name}: "
                              + describe_mismatch(missing, unknown, mismatched))
    return converted


def read_embeddings(path: str | Path) -> torch.Tensor:
    """Reads the easy/hard word vectors from an .npz (`text_embedding_easy`/`_hard` or
    `easy`/`hard`), returns 2 x E."""
    with np.load(Path(path), allow_pickle=False) as archive:
        for easy_key, hard_key in (("text_embedding_easy", "text_embedding_hard"),
                                   ("easy", "hard")):
            if easy_key in archive and hard_key in archive:
                vectors = [np.asarray(archive[k], dtype=np.float32).reshape(-1)
                           for k in (easy_key, hard_key)]
                return torch.from_numpy(np.stack(vectors))
    raise ConversionError(f"{path}: needs arrays 'text_embedding_easy' and 'text_embedding_hard'")


def infer_config_name(theirs: dict[str, torch.Tensor]) -> str:
    """Tells b0, b1 and b2 apart by the first stage width and the encoder depth."""
    width = theirs["feature_encoding.patch_embed1.proj.weight"].shape[0]
    stage3_blocks = {k.split(".")[2] for k in theirs if k.startswith("feature_encoding.block3.")}
    if width == 32:
        return "m2sformer-b0"
    return "m2sformer-b2" if len(stage3_blocks) == 6 else "m2sformer-b1"
