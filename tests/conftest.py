import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.is_dir():  # CI places shared/ beside the clone
    SHARED = Path(os.environ.get("FORGERYLOC_SHARED", Path.cwd().parent / "shared"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def tiny_config():
    """A very small M2SFormer with the full design, for fast tests."""
    from forgeryloc.model.m2sformer import M2SFormerConfig
    return M2SFormerConfig("tiny", embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4),
                           depths=(1, 1, 1, 1), skip_channels=16, decoder_dims=(32, 32, 32),
                           embedding_dim=12, reduction=4)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config):
    """A tiny random checkpoint file in the shipped format."""
    from forgeryloc.model.m2sformer import M2SFormer
    from forgeryloc.weights import CheckpointInfo, save_checkpoint
    torch.manual_seed(0)
    model = M2SFormer(tiny_config).eval()
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_checkpoint(model, CheckpointInfo(config=tiny_config, input_size=64,
                                          provenance={"note": "random test weights"}), path)
    return path
