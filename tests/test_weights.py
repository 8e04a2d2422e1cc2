"""Checkpoint files: metadata, validation, the info command."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from forgeryloc.cli import app
from forgeryloc.model.m2sformer import M2SFormer
from forgeryloc.weights import CheckpointError, CheckpointInfo, load_model, read_checkpoint


def test_round_trip_keeps_weights_and_metadata(tiny_checkpoint, tiny_config):
    model, card = load_model(tiny_checkpoint)
    assert card.config == tiny_config and card.input_size == 64
    assert card.provenance == {"note": "random test weights"}
    tensors, _ = read_checkpoint(tiny_checkpoint)
    for name, value in model.state_dict().items():
        assert torch.equal(value, tensors[name].to(value.dtype))


def test_fp16_checkpoint_loads_as_fp32(tmp_path, tiny_config):
    from forgeryloc.weights import save_checkpoint
    path = save_checkpoint(M2SFormer(tiny_config), CheckpointInfo(config=tiny_config),
                           tmp_path / "half.safetensors", dtype=torch.float16)
    assert load_file(path)["prior_head.weight"].dtype == torch.float16
    model, _ = load_model(path)
    assert next(model.parameters()).dtype == torch.float32


def test_missing_metadata_is_refused(tmp_path, tiny_checkpoint):
    tensors = load_file(tiny_checkpoint)
    bare = tmp_path / "bare.safetensors"
    save_file(tensors, bare)
    with pytest.raises(CheckpointError, match="not a forgeryloc checkpoint"):
        load_model(bare)


def test_shapes_that_do_not_match_the_config_are_refused(tmp_path, tiny_checkpoint):
    from safetensors import safe_open
    with safe_open(str(tiny_checkpoint), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(tiny_checkpoint)
    tensors["prior_head.weight"] = torch.zeros(1, 7, 1, 1)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad, metadata=metadata)
    with pytest.raises(CheckpointError, match="do not match config"):
        load_model(bad)
    config = json.loads(metadata["config"])
    config["depths"] = [2, 1, 1, 1]
    save_file(load_file(tiny_checkpoint), bad, metadata={**metadata, "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match="missing"):
        load_model(bad)


def test_truncated_file_is_refused(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_model(cut)


def test_info_prints_the_model_card(tiny_checkpoint):
    result = CliRunner().invoke(app, ["info", str(tiny_checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.output)
    assert card["config"] == "tiny" and card["input_size"] == 64
    assert card["parameters"] == sum(p.numel() for p in M2SFormer(
        CheckpointInfo.from_metadata({"format": "forgeryloc.m2sformer", "format_version": "1",
                                      "config": json.dumps(card["architecture"]),
                                      "input_size": "64", "normalization": json.dumps(
                                          {"mean": card["mean"], "std": card["std"]}),
                                      "threshold": "0.5"}, "x").config).parameters())
    assert len(card["sha256"]) == 64 and card["gmacs"] > 0


def test_info_on_a_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("hello")
    result = CliRunner().invoke(app, ["info", str(bad)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "error" in result.output
