"""Fidelity to the authors' code, through their own checkpoint format."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from forgeryloc.cli import app
from forgeryloc.weights import load_model


@pytest.fixture(scope="module")
def converted(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "reference.safetensors"
    result = CliRunner().invoke(app, [
        "convert", str(shared / "reference/official_format_random_init.pth.tar"), str(out),
        "--embeddings", str(shared / "reference/official_reference_io.npz")])
    assert result.exit_code == 0, result.output
    return out


def test_converted_checkpoint_reproduces_the_reference_outputs(shared, converted):
    reference = np.load(shared / "reference/official_reference_io.npz")
    model, card = load_model(converted)
    assert card.config.name == "m2sformer-b2"
    with torch.no_grad():
        out = model(torch.from_numpy(reference["image"]).float())
    for name in ("prediction", "edge", "global_prior"):
        error = np.abs(getattr(out, name).numpy() - reference[name]).max()
        assert error <= 1e-4, f"{name}: max abs error {error}"
    expected_hard = reference["difficulty_score"] > 0.5
    assert out.difficulty_label.numpy().astype(bool).tolist() == expected_hard.tolist()


def test_convert_without_embeddings_warns_about_stand_ins(shared, tmp_path):
    result = CliRunner().invoke(app, [
        "convert", str(shared / "reference/official_format_random_init.pth.tar"),
        str(tmp_path / "x.safetensors")])
    assert result.exit_code == 0
    assert "stand-ins" in result.output
    _, card = load_model(tmp_path / "x.safetensors")
    assert card.embeddings.startswith("stand-in")


def test_convert_refuses_a_state_dict_with_a_missing_tensor(shared, tmp_path):
    state = torch.load(shared / "reference/official_format_random_init.pth.tar",
                       weights_only=True)["model_state_dict"]
    state.pop("decoder_stage2.norm.weight")
    state["unexpected.extra"] = torch.zeros(3)
    broken = tmp_path / "broken.pth.tar"
    torch.save({"model_state_dict": state}, broken)
    result = CliRunner().invoke(app, ["convert", str(broken), str(tmp_path / "o.safetensors")])
    assert result.exit_code == 2
    assert "missing" in result.output and "unexpected" in result.output
    assert not (tmp_path / "o.safetensors").exists()


def test_every_official_key_is_mapped(shared):
    import json
    from forgeryloc.model.m2sformer import build_model
    from forgeryloc.official import our_key
    shapes = json.loads((shared / "reference/official_state_dict_shapes.json").read_text())
    ours = build_model("m2sformer-b2").state_dict()
    mapped = {our_key(k): v for k, v in shapes.items() if "dct_weight" not in k}
    assert None not in mapped
    assert set(mapped) == set(ours) - {"difficulty_embeddings"}
    assert all(list(ours[k].shape) == v for k, v in mapped.items())
