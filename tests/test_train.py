"""Training: schedule, data mixing, checkpoints, resume, and that a short run actually learns."""
import json
import math

import numpy as np
import pytest
import torch

from forgeryloc.model import m2sformer
from forgeryloc.train import MixedEpoch, TrainConfig, Trainer, cosine_lr
from forgeryloc.weights import load_model


def test_cosine_schedule_with_warmup():
    config = TrainConfig(out_dir="x", lr=1e-3, min_lr=1e-5, warmup_steps=10)
    assert cosine_lr(0.0, config, 0) == pytest.approx(1e-4)
    assert cosine_lr(0.0, config, 9) == pytest.approx(1e-3)
    assert cosine_lr(0.0, config, 10) == pytest.approx(1e-3)
    assert cosine_lr(0.5, config, 100) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_lr(1.0, config, 100) == pytest.approx(1e-5)
    assert cosine_lr(3.0, config, 100) == pytest.approx(1e-5)


class _Constant(torch.utils.data.Dataset):
    def __init__(self, value, length=5):
        self.value, self.length = value, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return torch.full((3, 4, 4), float(self.value)), torch.zeros(1, 4, 4), index


def test_mixed_epoch_follows_the_weights_and_is_deterministic():
    mixed = MixedEpoch([(_Constant(0), 1.0), (_Constant(1), 3.0)], length=2000, seed=1)
    draws = [float(mixed[i][0][0, 0, 0]) for i in range(len(mixed))]
    assert abs(np.mean(draws) - 0.75) < 0.04
    assert draws == [float(mixed[i][0][0, 0, 0]) for i in range(len(mixed))]
    mixed.set_epoch(1)
    assert draws != [float(mixed[i][0][0, 0, 0]) for i in range(len(mixed))]


@pytest.fixture()
def tiny_registered(monkeypatch, tiny_config):
    monkeypatch.setitem(m2sformer.CONFIGS, "tiny", tiny_config)
    return "tiny"


@pytest.fixture(scope="module")
def synthetic_sets(shared, tmp_path_factory):
    from forgeryloc.data.synth import write_dataset
    root = tmp_path_factory.mktemp("synth")
    photos = [shared / "data/photos/bsds500"]
    write_dataset(photos, root / "train", count=48, seed=1, authentic_fraction=0.1)
    write_dataset(photos, root / "val", count=24, seed=2, authentic_fraction=0.25)
    return root / "train", root / "val", photos


def _config(tmp_path, arch, train, val, **overrides):
    values = dict(out_dir=str(tmp_path / "run"), arch=arch, datasets=[str(train)], val=str(val),
                  size=64, batch_size=4, epochs=2, epoch_size=48, lr=2e-3, workers=0,
                  device="cpu", augment=True, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def test_short_run_writes_checkpoints_and_resumes(tmp_path, tiny_registered, synthetic_sets):
    train, val, _ = synthetic_sets
    Trainer(_config(tmp_path, tiny_registered, train, val, epochs=1)).run()
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0] and records[0]["step"] == 12
    model, card = load_model(run / "last.safetensors")
    assert card.config.name == "tiny" and card.input_size == 64
    assert card.provenance["step"] == 12 and "validation" in card.provenance
    assert (run / "best.safetensors").is_file()
    resumed = _config(tmp_path, tiny_registered, train, val, epochs=2,
                      resume=str(run / "last.safetensors"))
    state = Trainer(resumed).run()
    assert state["step"] == 24 and state["epoch"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]


def test_a_short_run_learns_to_localise_synthetic_forgeries(tmp_path, tiny_registered,
                                                           synthetic_sets):
    """A few hundred steps of a tiny model beat the untrained model on held-out forgeries."""
    from forgeryloc.data.datasets import read_dataset
    from forgeryloc.evaluate import evaluate_samples
    from forgeryloc.predict import Predictor

    train, val, photos = synthetic_sets
    config = _config(tmp_path, tiny_registered, train, val, synth_photos=[str(p) for p in photos],
                     epochs=6, epoch_size=96, lr=3e-3, warmup_steps=10, weight_decay=1e-2)
    torch.manual_seed(0)
    untrained = m2sformer.build_model("tiny").eval()
    trainer = Trainer(config)
    samples = read_dataset(val)
    card = None
    state = trainer.run()
    trained, card = load_model(tmp_path / "run" / "last.safetensors")
    before = evaluate_samples(Predictor(untrained, card), samples).summary
    after = evaluate_samples(Predictor(trained, card), samples).summary
    losses = [r["train_loss"] for r in state["history"]]
    assert losses[-1] < losses[0]
    assert after["pixel_auc"] > max(before["pixel_auc"], 0.5) + 0.05, (before, after)
    assert not math.isnan(after["dsc"])


def _pvt_original_name(key: str) -> str:
    stage, rest = key.split(".", 2)[1:]
    index = int(stage) + 1
    if rest.startswith("patch_embed."):
        return f"patch_embed{index}.{rest.removeprefix('patch_embed.')}"
    if rest.startswith("blocks."):
        return f"block{index}.{rest.removeprefix('blocks.')}".replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
    return f"norm{index}.{rest.removeprefix('norm.')}"


def _timm_name(key: str) -> str:
    if key.startswith("stages.0.patch_embed."):
        return key.replace("stages.0.patch_embed.", "patch_embed.")
    return key.replace(".patch_embed.", ".downsample.")


@pytest.mark.parametrize("naming", [_pvt_original_name, _timm_name])
def test_init_encoder_reads_pvt_and_timm_checkpoints(tmp_path, naming):
    from forgeryloc.pretrained import load_encoder_weights
    source = m2sformer.build_model("m2sformer-b0")
    state = {naming(k): v for k, v in source.encoder.state_dict().items()}
    state["head.weight"] = torch.zeros(1000, 256)  # an ImageNet classifier is ignored
    path = tmp_path / "pvt_v2_b0.pth"
    torch.save({"model": state}, path)
    target = m2sformer.build_model("m2sformer-b0")
    assert load_encoder_weights(target, path) == len(source.encoder.state_dict())
    for name, value in source.encoder.state_dict().items():
        assert torch.equal(value, target.encoder.state_dict()[name])
    with pytest.raises(ValueError, match="no match"):
        load_encoder_weights(m2sformer.build_model("m2sformer-b1"), path)


def test_weight_average_follows_the_weights_and_resumes(tmp_path, tiny_registered, synthetic_sets):
    """With --ema-decay the best checkpoint holds the average, which differs from the raw weights
    ; a resumed run goes on averaging."""
    train, val, _ = synthetic_sets
    torch.manual_seed(0)
    Trainer(_config(tmp_path, tiny_registered, train, val, epochs=1, ema_decay=0.9)).run()
    run = tmp_path / "run"
    raw, _ = load_model(run / "last.safetensors")
    average, _ = load_model(run / "last.ema.safetensors")
    best, _ = load_model(run / "best.safetensors")
    for name, value in average.state_dict().items():
        torch.testing.assert_close(best.state_dict()[name], value)
    moved = [name for name, value in average.named_parameters()
             if not torch.allclose(value, raw.state_dict()[name])]
    assert moved, "the average equals the raw weights"
    resumed = _config(tmp_path, tiny_registered, train, val, epochs=2, ema_decay=0.9,
                      resume=str(run / "last.safetensors"))
    Trainer(resumed).run()
    again, _ = load_model(run / "last.ema.safetensors")
    assert any(not torch.allclose(v, average.state_dict()[k]) for k, v in again.named_parameters())


def test_weight_average_ramps_up_from_the_current_weights():
    from forgeryloc.train import WeightAverage

    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = average.model.weight.clone()
    average.update(model, step=0)  # decay min(0.99, 1/10): mostly the new weights
    torch.testing.assert_close(average.model.weight, 0.1 * before + 0.9 * model.weight)
