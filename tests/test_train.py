"""Training: schedule, data mixing, checkpoints, resume, and that a short run actually learns."""
import json
import math
import sys

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


# ---- provenance: a checkpoint records exactly the run that made it --------------------------

def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _expected_provenance(config, record, arch, train_images=48, val_images=24):
    """What a checkpoint written at the end of `record`'s epoch must say, field by field."""
    from dataclasses import asdict

    from forgeryloc import __version__
    from forgeryloc.image_scores import STATISTICS
    recipe = {k: v for k, v in asdict(config).items() if k not in ("out_dir", "resume")}
    return {"tool": f"forgeryloc {__version__}", "recipe": {**recipe, "arch": arch},
            "training_images_real": train_images, "validation_images": val_images,
            "step": record["step"], "epochs_completed": record["epoch"] + 1,
            "minutes": record["elapsed_minutes"], "device": "cpu", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "mixed_precision": "none",
            "hardware": "test bench",
            "validation": {"epoch": record["epoch"],
                           **{k[4:]: v for k, v in record.items() if k.startswith("val_")},
                           "image_score": STATISTICS["mean"]}}


def test_best_and_last_record_the_run_that_wrote_them(tmp_path, tiny_registered, synthetic_sets,
                                                      monkeypatch):
    """Every provenance field of best and last: the config run, the architecture built, the
    steps and epochs, the device, and the validation of the epoch whose weights are in the file;
    a resumed run records the architecture of the checkpoint it continued, not --arch's default."""
    from forgeryloc.weights import sha256_file

    monkeypatch.setenv("FORGERYLOC_TRAIN_HARDWARE", "test bench")
    train, val, _ = synthetic_sets
    config = _config(tmp_path, tiny_registered, train, val, epochs=2, epoch_size=8)
    Trainer(config).run()
    run = tmp_path / "run"
    records = _records(run)
    assert [(r["epoch"], r["step"]) for r in records] == [(0, 2), (1, 4)]
    best = max(records, key=lambda r: r["val_dsc"])  # the first of equals, as the trainer keeps
    for name, record in (("last", records[-1]), ("best", best)):
        card = load_model(run / f"{name}.safetensors")[1]
        assert card.provenance == _expected_provenance(config, record, "tiny"), name

    before = sha256_file(run / "last.safetensors")
    resumed = _config(tmp_path, "m2sformer-b2", train, val, epochs=3, epoch_size=8,
                      resume=str(run / "last.safetensors"))
    Trainer(resumed).run()
    provenance = load_model(run / "last.safetensors")[1].provenance
    assert provenance.pop("started_from") == {
        "how": "resume", "file": "last.safetensors", "sha256": before, "step": 4,
        "recipe": _expected_provenance(config, records[-1], "tiny")["recipe"]}
    assert provenance == _expected_provenance(resumed, _records(run)[-1], "tiny")


def test_with_a_weight_average_only_the_validated_weights_carry_the_validation(
        tmp_path, tiny_registered, synthetic_sets, monkeypatch):
    monkeypatch.setenv("FORGERYLOC_TRAIN_HARDWARE", "test bench")
    train, val, _ = synthetic_sets
    config = _config(tmp_path, tiny_registered, train, val, epochs=1, epoch_size=8,
                     ema_decay=0.9)
    Trainer(config).run()
    run = tmp_path / "run"
    expected = _expected_provenance(config, _records(run)[0], "tiny")
    for name in ("best", "last.ema"):
        assert load_model(run / f"{name}.safetensors")[1].provenance == {
            **expected, "weights": "weight average"}, name
    raw = load_model(run / "last.safetensors")[1].provenance
    assert "validation" not in raw and raw["weights"].startswith("raw")


def test_info_shows_a_trained_checkpoint_row_by_row(tmp_path, tiny_registered, synthetic_sets):
    """The card, the architecture and the provenance as tables of one row per field (nested
    ones dotted: recipe.arch, validation.dsc), no wrapped JSON, no cut keys, within 80 columns."""
    from typer.testing import CliRunner

    from forgeryloc.cli import app
    train, val, _ = synthetic_sets
    Trainer(_config(tmp_path, tiny_registered, train, val, epochs=1, epoch_size=8)).run()
    result = CliRunner().invoke(app, ["info", str(tmp_path / "run" / "last.safetensors")],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80

    def row(key):
        found = [line for line in lines if line.startswith(f"│ {key} ")]
        assert len(found) == 1, (key, result.output)
        return found[0].split("│")[2].strip()

    assert row("config") == row("name") == row("recipe.arch") == "tiny"
    assert row("device") == "cpu"
    assert row("embeddings") == "stand-in (random, fixed seed); trained with them"
    assert float(row("validation.dsc")) == _records(tmp_path / "run")[0]["val_dsc"]
    assert row("validation.floor_blob_pixel_auc")
    assert "{" not in result.output and "…" not in result.output


def test_a_fused_checkpoint_keeps_the_provenance_of_each_part(tmp_path, tiny_registered,
                                                              synthetic_sets):
    from dataclasses import asdict

    from typer.testing import CliRunner

    from forgeryloc.cli import app
    from forgeryloc.train_jpeg import JpegTrainConfig, load_stream, train_jpeg_stream
    train, val, _ = synthetic_sets
    Trainer(_config(tmp_path, tiny_registered, train, val, epochs=1, epoch_size=8)).run()
    stream_config = JpegTrainConfig(out_dir=str(tmp_path / "stream"), datasets=[str(train)],
                                    synth_share=0.0, window=8, batch_size=2, steps_per_epoch=1,
                                    max_minutes=1e-6, frequencies=4, width=8, workers=0)
    train_jpeg_stream(stream_config)
    stream_record = _records(tmp_path / "stream")[-1]
    stream_provenance = load_stream(tmp_path / "stream" / "last.safetensors")[1]
    assert stream_provenance["recipe"] == asdict(stream_config)
    assert {k: stream_provenance[k] for k in stream_record} == stream_record
    assert (stream_provenance["device"], stream_provenance["torch"]) == ("cpu", torch.__version__)

    result = CliRunner().invoke(app, [
        "fuse", "--weights", str(tmp_path / "run" / "best.safetensors"),
        "--jpeg", str(tmp_path / "stream" / "last.safetensors"), "-o", str(tmp_path / "fused.st"),
        "--data", str(train), "--synth-count", "0", "--seed", "3"])
    assert result.exit_code == 0, result.output
    provenance = load_model(tmp_path / "fused.st")[1].provenance
    assert provenance["rgb"] == load_model(tmp_path / "run" / "best.safetensors")[1].provenance
    assert provenance["jpeg_stream"] == stream_provenance
    assert provenance["fusion"]["seed"] == 3 and provenance["fusion"]["device"] == "cpu"


def test_shipping_repairs_the_provenance_of_older_checkpoints(tiny_config):
    """A checkpoint resumed from a tiny model under the old trainer said arch m2sformer-b2, an
    empty device and `epoch` for the completed count: shipping records what the file holds
    (in a fused file, in its RGB part's provenance)."""
    from script_loading import load_script

    from forgeryloc.model.jpeg_stream import JpegStreamConfig
    from forgeryloc.weights import CheckpointInfo
    ship_weights = load_script("ship_weights")
    card = CheckpointInfo(config=tiny_config, provenance={
        "recipe": {"arch": "m2sformer-b2", "lr": 1e-4}, "device": "", "epoch": 13, "step": 9})
    ship_weights.repair_legacy_provenance(card)
    assert card.provenance == {"recipe": {"arch": "tiny", "lr": 1e-4}, "epochs_completed": 13,
                               "step": 9}
    fused = CheckpointInfo(config=tiny_config.with_jpeg_stream(JpegStreamConfig()), provenance={
        "rgb": {"recipe": {"arch": "m2sformer-b2"}, "device": ""}, "fusion": {"seed": 0}})
    ship_weights.repair_legacy_provenance(fused)
    assert fused.provenance == {"rgb": {"recipe": {"arch": "tiny"}}, "fusion": {"seed": 0}}


@pytest.mark.parametrize("freeze", [False, True])
def test_frozen_encoder_norm_keeps_the_encoder_statistics(tmp_path, synthetic_sets, freeze):
    """--freeze-encoder-norm: the encoder's BatchNorm statistics stay as they started (here
    a fresh Lite0's, mean 0 and variance 1); without it, training batches move them. The
    decoder's own BatchNorm layers keep learning their statistics either way."""
    train, val, _ = synthetic_sets
    Trainer(_config(tmp_path, "m2sformer-lite0", train, val, epochs=1, epoch_size=8,
                    freeze_encoder_norm=freeze)).run()
    model, _ = load_model(tmp_path / "run" / "last.safetensors")
    encoder = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    others = [m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
              and not name.startswith("encoder.")]
    assert encoder and others
    unchanged = all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) and
                    torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in encoder)
    assert unchanged == freeze
    assert any(not torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
               for m in others)


def test_shipping_records_the_validation_and_its_conditions(tmp_path, tiny_checkpoint,
                                                            monkeypatch):
    """ship_weights keeps `evaluate --json` outputs: the plain one as `validation`, those of
    altered copies as `validation_conditions` (what scans quote as forgeries flagged)."""
    from script_loading import load_script

    from typer.testing import CliRunner

    from forgeryloc.cli import app
    from forgeryloc.flag_meaning import forgeries_flagged
    from forgeryloc.weights import load_model
    plain = {"dataset": "set", "tampered": 10, "tampered_flagged": 7, "authentic": 4,
             "authentic_flagged": 0, "dsc": 0.5, "resave_quality": None, "rescale": None,
             "score_threshold": 0.9, "skipped": []}
    resaved = {**plain, "tampered_flagged": 4, "resave_quality": 90, "protocol": "long text"}
    for name, summary in (("plain.json", plain), ("q90.json", resaved)):
        (tmp_path / name).write_text(json.dumps(summary))
    out = tmp_path / "shipped.safetensors"
    monkeypatch.setattr(sys, "argv", [
        "ship_weights.py", str(tiny_checkpoint), "--score-threshold", "0.9", "--hardware", "test",
        "--evaluation", str(tmp_path / "plain.json"),
        "--condition-evaluation", str(tmp_path / "q90.json"), "--out", str(out)])
    load_script("ship_weights").main()
    provenance = load_model(out)[1].provenance
    assert provenance["validation"] == {k: v for k, v in plain.items() if k != "skipped"}
    assert provenance["validation_conditions"] == [
        {k: v for k, v in resaved.items() if k not in ("skipped", "protocol")}]
    caught = ("7 of 10 (70%) of set files as they are; "
              "4 of 10 (40%) of set files re-saved at JPEG quality 90")
    assert forgeries_flagged(provenance, 0.9) == caught
    assert forgeries_flagged(provenance, 0.95) == ""  # counted at another threshold
    shown = CliRunner().invoke(app, ["info", str(out), "--json"])
    assert json.loads(shown.stdout)["forgeries_flagged"] == caught


@pytest.mark.parametrize("fp16", [False, True])
def test_a_fused_file_splits_into_its_networks(tmp_path, tiny_config, monkeypatch, fp16):
    """scripts/split_checkpoint.py: the RGB part's tensors unchanged (or rounded to fp16), the
    stream, fusion and the fusion's thresholds gone from it, the RGB provenance kept and the
    source named; the stream's tensors as they were, in train-jpeg's format."""
    from script_loading import load_script

    from forgeryloc.model.jpeg_stream import JpegStreamConfig
    from forgeryloc.model.m2sformer import M2SFormer
    from forgeryloc.train_jpeg import load_stream
    from forgeryloc.weights import CheckpointInfo, save_checkpoint, sha256_file
    torch.manual_seed(0)
    fused = M2SFormer(tiny_config.with_jpeg_stream(JpegStreamConfig(width=8))).eval()
    source = tmp_path / "fused.safetensors"
    save_checkpoint(fused, CheckpointInfo(
        config=fused.config, input_size=64, score_threshold=0.98, pixel_score_threshold=0.9,
        jpeg_gate_logit=2.0, provenance={"rgb": {"recipe": {"lr": 1e-4}}, "fusion": {}}), source)
    out, stream_out = tmp_path / "rgb.safetensors", tmp_path / "stream.safetensors"
    monkeypatch.setattr(sys, "argv", ["split_checkpoint.py", str(source), "--rgb", str(out),
                                      "--stream", str(stream_out)] + (["--fp16"] if fp16 else []))
    load_script("split_checkpoint").main()
    model, card = load_model(out)
    assert card.config.jpeg_stream is None and card.config.name == tiny_config.name
    assert card.jpeg_gate_logit is None and card.pixel_score_threshold is None
    assert card.score_threshold == 0.5 and card.input_size == 64
    assert card.provenance == {"recipe": {"lr": 1e-4}, "extracted_from": {
        "file": "fused.safetensors", "sha256": sha256_file(source)}}
    state = fused.state_dict()
    for name, value in model.state_dict().items():
        expected = state[name].half().float() if fp16 and value.is_floating_point() else state[name]
        assert torch.equal(value, expected), name
    assert not any(name.startswith(("jpeg_stream.", "fusion.")) for name in model.state_dict())
    stream, _ = load_stream(stream_out)
    for name, value in stream.state_dict().items():
        assert torch.equal(value, state[f"jpeg_stream.{name}"]), name
