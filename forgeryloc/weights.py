"""Checkpoint files: safetensors tensors plus the metadata needed to use them.

Metadata (all strings, as safetensors requires):
  format           "forgeryloc.m2sformer"
  format_version   integer, FORMAT_VERSION
  config           JSON of M2SFormerConfig (name and every architecture parameter)
  input_size       side of the square input the model was trained at
  normalization    JSON {"mean": [...], "std": [...]}
  threshold        default probability threshold for the binary mask
  score_threshold  default image-level score above which an image is flagged
  image_score      the statistic of the probability map that is the image score
                   (image_scores.STATISTICS; "mean" when absent)
  pixel_score_threshold  the flag threshold for images scored without JPEG evidence (the
                   pixel path: a PNG, a withheld stream); absent: score_threshold
  jpeg_logit_floor the fusion's lower bound on the JPEG stream's logits (absent: none), so
                   that "no inconsistency in the file" cannot veto the RGB map
  jpeg_gate_logit  files whose JPEG-stream logits all stay below it get the pixel path's map
                   (their score keeps the evidence); absent: every file's map is fused
  embeddings       where the easy/hard word vectors came from
  provenance       JSON: how the weights were made (data, recipe, steps, metrics, ...)
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import write_bytes_atomic
from .image_scores import DEFAULT_STATISTIC, check_statistic
from .imaging import sha256_file  # noqa: F401 - the weights' hash, used from here too
from .model.m2sformer import M2SFormer, M2SFormerConfig

FORMAT = "forgeryloc.m2sformer"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_WEIGHTS_NAME = "forgeryloc-default.safetensors"
WEIGHTS_ENV = "FORGERYLOC_WEIGHTS"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with a message for the user."""


def _optional_float(metadata: dict[str, str], key: str) -> float | None:
    return float(metadata[key]) if key in metadata else None


@dataclass
class CheckpointInfo:
    """How to use a set of weights: everything but the tensors."""
    config: M2SFormerConfig
    input_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    threshold: float = 0.5
    score_threshold: float = 0.5
    image_score: str = DEFAULT_STATISTIC  # the statistic score_threshold is calibrated for
    jpeg_logit_floor: float | None = None  # lower bound on the stream's logits in the fusion
    pixel_score_threshold: float | None = None  # flags without JPEG evidence (None: the above)
    # The stream's map is fused only into files where some block's logit reaches this; a file
    # below it (no double compression the stream can read, e.g. resized before its last save)
    # is drawn by the pixel path alone and still scored with the evidence. None: always fused.
    jpeg_gate_logit: float | None = None
    embeddings: str = "stand-in (random, fixed seed)"
    provenance: dict = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        optional = {name: repr(float(value)) for name, value in (
            ("jpeg_logit_floor", self.jpeg_logit_floor),
            ("pixel_score_threshold", self.pixel_score_threshold),
            ("jpeg_gate_logit", self.jpeg_gate_logit)) if value is not None}
        return {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "config": json.dumps(self.config.to_dict()),
            "input_size": str(self.input_size),
            "normalization": json.dumps({"mean": list(self.mean), "std": list(self.std)}),
            "threshold": repr(self.threshold),
            "score_threshold": repr(self.score_threshold),
            "image_score": self.image_score,
            "embeddings": self.embeddings,
            "provenance": json.dumps(self.provenance, sort_keys=True),
            **optional,
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, source: str) -> "CheckpointInfo":
        metadata = metadata or {}
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not a forgeryloc checkpoint (metadata 'format' is "
                                  f"{metadata.get('format')!r}, expected {FORMAT!r})")
        try:
            version = int(metadata["format_version"])
            if version > FORMAT_VERSION:
                raise CheckpointError(f"{source}: format version {version} is newer than this "
                                      f"forgeryloc understands ({FORMAT_VERSION}); upgrade it")
            config = M2SFormerConfig.from_dict(json.loads(metadata["config"]))
            normalization = json.loads(metadata["normalization"])
            info = cls(config=config, input_size=int(metadata["input_size"]),
                       mean=tuple(float(v) for v in normalization["mean"]),
                       std=tuple(float(v) for v in normalization["std"]),
                       threshold=float(metadata["threshold"]),
                       score_threshold=float(metadata.get("score_threshold", 0.5)),
                       image_score=check_statistic(metadata.get("image_score",
                                                                DEFAULT_STATISTIC)),
                       jpeg_logit_floor=_optional_float(metadata, "jpeg_logit_floor"),
                       pixel_score_threshold=_optional_float(metadata,
                                                             "pixel_score_threshold"),
                       jpeg_gate_logit=_optional_float(metadata, "jpeg_gate_logit"),
                       embeddings=metadata.get("embeddings", "unknown"),
                       provenance=json.loads(metadata.get("provenance", "{}")))
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{source}: invalid checkpoint metadata ({error})") from None
        if info.input_size % 32 or info.input_size <= 0:
            raise CheckpointError(f"{source}: input_size {info.input_size} is not a multiple of 32")
        if len(info.mean) != 3 or len(info.std) != 3 or min(info.std) <= 0:
            raise CheckpointError(f"{source}: normalization needs 3 means and 3 positive stds")
        return info


def describe_mismatch(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    """One line naming what a state dict lacks, has too much of, or has in the wrong shape."""
    return "; ".join(f"{len(items)} {label} (e.g. {items[:3]})" for label, items in
                     (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong))
                     if items)


def save_checkpoint(model: M2SFormer, info: CheckpointInfo, path: str | Path,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Writes the model's state (floats cast to `dtype`) and `info` atomically."""
    from safetensors.torch import save

    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, save(tensors, metadata=info.to_metadata()))
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Reads tensors and metadata; raises CheckpointError with a readable message."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            info = CheckpointInfo.from_metadata(handle.metadata(), str(path))
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: unreadable safetensors file ({error})") from None
    return tensors, info


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu"
               ) -> tuple[M2SFormer, CheckpointInfo]:
    """Builds the model a checkpoint describes and loads its weights, in eval mode (fp32)."""
    path = Path(path) if path is not None else default_weights_path()
    tensors, info = read_checkpoint(path)
    held = sum(t.numel() for t in tensors.values()) * 4  # as float32
    model = _build_within(info.config, 2 * held + (64 << 20), str(path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: tensors do not match config {info.config.name} "
                              f"({describe_mismatch(missing, unexpected, wrong)})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return model.eval().to(device), info


class _OverBudget(Exception):
    pass


def _build_within(config: M2SFormerConfig, budget: int, source: str) -> M2SFormer:
    """Builds the network a checkpoint's config describes, refusing before any allocation that
    would take the network past `budget` bytes: the config is just text in the file, and one
    describing a network far larger than the tensors the file holds must not get the memory
    to build it."""
    from torch.overrides import TorchFunctionMode

    factories = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
                 torch.empty_strided, torch.eye}

    class Budget(TorchFunctionMode):
        used = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in factories:
                sizes = kwargs.get("size", args[0] if args else ())
                if func is torch.eye:
                    sizes = (args[0], args[1] if len(args) > 1 else args[0])
                elif not isinstance(sizes, (tuple, list, torch.Size)):
                    sizes = [a for a in args if isinstance(a, int)]
                count = 1
                for size in sizes:
                    count *= max(0, int(size))
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                Budget.used += count * dtype.itemsize
                if Budget.used > budget:
                    raise _OverBudget
            return func(*args, **kwargs)

    try:
        with Budget():
            return M2SFormer(config)
    except _OverBudget:
        raise CheckpointError(f"{source}: its config ({config.name}) describes a network far "
                              f"larger than the tensors the file holds") from None
    except (ValueError, TypeError, ArithmeticError, IndexError, KeyError, RuntimeError,
            AssertionError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{source}: its config ({config.name}) cannot be built "
                              f"({reason})") from None


def _installed_copy() -> Path | None:
    """The checkpoint installed with the package (a data file of the distribution)."""
    from importlib import metadata

    try:
        files = metadata.distribution("forgeryloc").files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == DEFAULT_WEIGHTS_NAME:
            return Path(file.locate()).resolve()
    return None


def default_weights_path() -> Path:
    """$FORGERYLOC_WEIGHTS, else the shipped checkpoint (source checkout or installed copy)."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return Path(override)
    candidates = [Path(__file__).resolve().parent.parent / "weights" / DEFAULT_WEIGHTS_NAME,
                  _installed_copy(),
                  Path(sys.prefix) / "share" / "forgeryloc" / "weights" / DEFAULT_WEIGHTS_NAME]
    candidates = [c for c in candidates if c is not None]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError("no weights given and the shipped checkpoint was not found (looked in "
                          + ", ".join(str(c) for c in candidates)
                          + f"); pass --weights FILE or set {WEIGHTS_ENV}")
