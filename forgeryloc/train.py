"""Training: real datasets and on-the-fly synthetic forgeries mixed by ratio, the paper's recipe
by default (AdamW 1e-4, weight decay 1e-4, cosine per step to 1e-6, 256x256), validation every
epoch, best/last checkpoints with full metadata, resumable, DistributedDataParallel under torchrun.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from . import __version__
from .cpu import keep_large_allocations
from .data.datasets import Sample, SegmentationDataset, read_dataset, split_holdout
from .evaluate import evaluate_samples
from .model.loss import m2sformer_loss
from .model.encoders import input_normalization
from .model.m2sformer import M2SFormer, build_model, get_config
from .image_scores import STATISTICS
from .predict import Predictor
from .preprocess import resize_mask, resize_rgb, to_tensor
from .provenance import runtime
from .weights import (CheckpointInfo, IMAGENET_MEAN, IMAGENET_STD, load_model, read_checkpoint,
                      save_checkpoint, sha256_file)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    out_dir: str
    arch: str = "m2sformer-b2"
    datasets: list[str] = field(default_factory=list)
    dataset_weight: float = 1.0
    synth_photos: list[str] = field(default_factory=list)
    synth_weight: float = 1.0
    val: str | None = None
    val_fraction: float = 0.0
    group_pattern: str | None = None  # source-photo ids in file names (default: CASIA's)
    size: int = 256
    crop: int | None = None         # train on random crop x crop windows of the size x size input
    batch_size: int = 8
    accumulate: int = 1
    epochs: int = 100
    epoch_size: int | None = None   # samples per epoch; default: the real datasets' size
    max_minutes: float | None = None
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    grad_clip: float | None = None
    ema_decay: float | None = None  # validate and ship an exponential moving average of weights
    augment: bool = True
    freeze_encoder_norm: bool = False  # the encoder's BatchNorm statistics stay as initialised
    workers: int = 2
    seed: int = 0
    resume: str | None = None
    init_weights: str | None = None
    init_encoder: str | None = None
    checkpoint_minutes: float = 10.0
    device: str = "auto"


def set_training(model: M2SFormer, freeze_encoder_norm: bool) -> None:
    """Training mode; with freeze_encoder_norm, the encoder's BatchNorm layers normalise with
    their stored statistics and do not update them (batches of 8 give noisy estimates that
    would replace the pretrained ones); their affine weights still learn."""
    model.train()
    if freeze_encoder_norm:
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


class SyntheticForgeries(Dataset):
    """Synthetic forgeries made on the fly: item i of epoch e is fixed by (seed, e, i)."""

    def __init__(self, photo_roots: Sequence[str], size: int, seed: int, length: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        from .data.synth import ForgerySynthesizer, PhotoLibrary

        self.synthesizer = ForgerySynthesizer(PhotoLibrary(photo_roots))
        self.size, self.seed, self.length, self.epoch = size, seed, length, 0
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        forgery = self.synthesizer.sample(self.epoch * self.length + index, self.seed)
        image = to_tensor(resize_rgb(forgery.image, self.size, self.size), self.mean, self.std)
        mask = torch.from_numpy(resize_mask(forgery.mask, self.size, self.size)).float()[None]
        return image, mask, index


class MixedEpoch(Dataset):
    """`length` items per epoch, each drawn from one source with probability ~ its weight."""

    def __init__(self, sources: list[tuple[Dataset, float]], length: int, seed: int):
        self.sources = [s for s, w in sources if w > 0]
        weights = np.array([w for _, w in sources if w > 0], dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for source in self.sources:
            if hasattr(source, "epoch"):
                source.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        source = self.sources[rng.choice(len(self.sources), p=self.probabilities)]
        image, mask, _ = source[int(rng.integers(len(source)))]
        return image, mask


def random_windows(images: torch.Tensor, masks: torch.Tensor, crop: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random crop x crop window per item, at the input's scale (B x C x crop x crop).

    Training on windows of the resized image costs (crop/size)^2 of a full forward while the
    network sees objects and traces at the scale inference will show them.
    """
    height, width = images.shape[-2:]
    if crop >= min(height, width):
        return images, masks
    tops = torch.randint(0, height - crop + 1, (len(images),), generator=generator).tolist()
    lefts = torch.randint(0, width - crop + 1, (len(images),), generator=generator).tolist()
    windows = [(slice(None), slice(t, t + crop), slice(l, l + crop)) for t, l in zip(tops, lefts)]
    return (torch.stack([image[w] for image, w in zip(images, windows)]),
            torch.stack([mask[w] for mask, w in zip(masks, windows)]))


class WeightAverage:
    """Exponential moving average of a model's weights (BatchNorm statistics copied as they are).

    The decay ramps up as (1 + step) / (10 + step) so that early averages do not remember the
    initial weights for thousands of steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            averaged = list(self.model.parameters())
            torch._foreach_lerp_(averaged, [p.detach() for p in model.parameters()], 1 - decay)
            for mine, theirs in zip(self.model.buffers(), model.buffers()):
                mine.copy_(theirs)


def cosine_lr(progress: float, config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine from lr to min_lr over progress in [0, 1]."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, config: TrainConfig, on_log: Callable[[dict], None] | None = None):
        self.config = config
        self.on_log = on_log
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.out = Path(config.out_dir)

    # ---- set-up -------------------------------------------------------------------------
    def _device(self) -> torch.device:
        from .predict import pick_device
        if self.distributed and torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return pick_device(self.config.device)

    def _data(self):
        c = self.config
        train: list[Sample] = []
        val: list[Sample] = []
        for root in c.datasets:
            samples = read_dataset(root)
            if c.val is None and c.val_fraction > 0:
                part_train, part_val = split_holdout(samples, c.val_fraction, c.seed,
                                                     c.group_pattern)
                train += part_train
                val += part_val
            else:
                train += samples
        if c.val is not None:
            val = read_dataset(c.val)
        sources = []
        if train:
            sources.append((SegmentationDataset(train, c.size, self.mean, self.std,
                                                augment=c.augment, seed=c.seed), c.dataset_weight))
        epoch_size = c.epoch_size or max(len(train), 1000)
        if c.synth_photos:
            sources.append((SyntheticForgeries(c.synth_photos, c.size, c.seed, epoch_size,
                                               self.mean, self.std), c.synth_weight))
        if not sources:
            raise ValueError("no training data: give --data folders and/or --synth photo folders")
        return MixedEpoch(sources, epoch_size, c.seed), train, val

    def _normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The input statistics: a checkpoint's own when continuing one, else those the
        architecture's encoder weights expect."""
        c = self.config
        start = c.resume or c.init_weights
        if start:
            info = read_checkpoint(start)[1]
            return tuple(info.mean), tuple(info.std)
        return input_normalization(get_config(c.arch))

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> dict:
        c = self.config
        if c.batch_size < 2:
            raise ValueError("--batch-size must be at least 2 (BatchNorm in the difficulty gate)")
        owns_group = self.distributed and not dist.is_initialized()
        if owns_group:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        torch.manual_seed(c.seed)
        device = self._device()
        if device.type == "cpu":
            keep_large_allocations()
        self.mean, self.std = self._normalization()
        mixed, train_samples, val_samples = self._data()

        self.val_images = len(val_samples)
        state = {"step": 0, "epoch": 0, "elapsed": 0.0, "best_dsc": -1.0, "history": []}
        self.started_from = None
        if c.resume or c.init_weights:
            model, start = load_model(c.resume or c.init_weights)
            model.train()
            self.started_from = self._origin(c.resume or c.init_weights, start.provenance,
                                             model.config.name)
        else:
            model = build_model(c.arch)
            if c.init_encoder:
                from .pretrained import load_encoder_weights, resolve_encoder_file
                source = resolve_encoder_file(model, c.init_encoder)  # a file, or "auto"
                log.info("encoder: %d tensors from %s", load_encoder_weights(model, source), source)
        model.to(device)
        self.model, self.model_config = model, model.config
        average = None
        if c.ema_decay:
            average = WeightAverage(model, c.ema_decay)
            saved = Path(c.resume).with_suffix(".ema.safetensors") if c.resume else None
            if saved is not None and saved.is_file():
                average.model.load_state_dict(load_model(saved)[0].state_dict())
        optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        if c.resume:
            state = self._load_state(c.resume, optimizer, state)
        ddp_model = model
        if self.distributed:
            ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        sampler = (torch.utils.data.DistributedSampler(mixed, shuffle=False, drop_last=True)
                   if self.distributed else None)
        loader_kwargs = dict(batch_size=c.batch_size, sampler=sampler, shuffle=False,
                             drop_last=True, num_workers=c.workers,
                             pin_memory=device.type == "cuda")
        if c.workers > 0:
            loader_kwargs.update(persistent_workers=False, prefetch_factor=4)
        steps_per_epoch = max(1, len(mixed) // (c.batch_size * self.world * c.accumulate))
        total_steps = steps_per_epoch * c.epochs
        budget = c.max_minutes * 60 if c.max_minutes else None
        amp = device.type == "cuda"
        self.runtime = runtime(device, self.world, "bf16" if amp else None)
        started = time.monotonic() - state["elapsed"]
        last_checkpoint = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        stop = False
        while state["epoch"] < c.epochs and not stop:
            mixed.set_epoch(state["epoch"])
            if sampler is not None:
                sampler.set_epoch(state["epoch"])
            ddp_model.train()
            set_training(model, c.freeze_encoder_norm)
            running, seen = 0.0, 0
            optimizer.zero_grad(set_to_none=True)
            for batch_index, (images, masks) in enumerate(DataLoader(mixed, **loader_kwargs)):
                if c.crop:
                    windows = torch.Generator().manual_seed(
                        (c.seed * 1_000_003 + state["epoch"]) * 1_000_003 + batch_index)
                    images, masks = random_windows(images, masks, c.crop, windows)
                images, masks = images.to(device, non_blocking=True), masks.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    outputs = ddp_model(images)
                losses = m2sformer_loss(outputs, masks)
                (losses["loss"] / c.accumulate).backward()
                running += losses["loss"].item() * len(images)
                seen += len(images)
                if (batch_index + 1) % c.accumulate:
                    continue
                elapsed = time.monotonic() - started
                progress = elapsed / budget if budget else state["step"] / max(total_steps, 1)
                lr = cosine_lr(progress, c, state["step"])
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if c.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if average is not None:
                    average.update(model, state["step"])
                state["step"] += 1
                if self.on_log and state["step"] % 10 == 0:
                    self.on_log({"step": state["step"], "epoch": state["epoch"], "lr": lr,
                                 "loss": running / max(seen, 1), "elapsed": elapsed})
                if budget and elapsed >= budget:
                    stop = True
                    break
                if time.monotonic() - last_checkpoint > c.checkpoint_minutes * 60:
                    state["elapsed"] = time.monotonic() - started
                    self._save(model, optimizer, state, "last", train_samples, None, average)
                    last_checkpoint = time.monotonic()
            state["elapsed"] = time.monotonic() - started
            if self.distributed:  # BatchNorm statistics drift per rank: take rank 0's
                for buffer in model.buffers():
                    dist.broadcast(buffer, src=0)
            record = {"epoch": state["epoch"], "step": state["step"],
                      "elapsed_minutes": round(state["elapsed"] / 60, 2),
                      "train_loss": running / max(seen, 1)}
            state["epoch"] += 1
            shipped = average.model if average is not None else model
            metrics = self._validate(shipped, val_samples, device) if val_samples else None
            if metrics:
                record.update({f"val_{k}": v for k, v in metrics.items()})
                metrics = {"epoch": record["epoch"], **metrics,
                           "image_score": STATISTICS["mean"]}  # what image_auc ranks
            state["history"].append(record)
            if self.rank == 0:
                with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                if self.on_log:
                    self.on_log(record)
                improved = bool(metrics) and metrics["dsc"] > state["best_dsc"]
                if improved:  # before saving "last", so a resumed run knows the best so far
                    state["best_dsc"] = metrics["dsc"]
                self._save(model, optimizer, state, "last", train_samples, metrics, average)
                if improved:
                    self._save(shipped, optimizer, state, "best", train_samples, metrics)
            last_checkpoint = time.monotonic()
        if self.distributed:
            dist.barrier()
            if owns_group:
                dist.destroy_process_group()
        return state

    def _validate(self, model: M2SFormer, samples: list[Sample], device) -> dict | None:
        if self.rank != 0:
            return None
        was_training = model.training
        model.eval()
        predictor = Predictor(model, self._card(None, None), device)
        result = evaluate_samples(predictor, samples, batch_size=self.config.batch_size)
        if was_training:
            set_training(model, self.config.freeze_encoder_norm)
        keys = ("dsc", "iou", "dsc_native", "f1_best_oracle", "pixel_auc", "image_auc",
                "predicted_fraction_tampered", "true_fraction", "floor_all_dsc", "floor_blob_dsc",
                "floor_blob_pixel_auc")
        return {k: result.summary[k] for k in keys}

    # ---- checkpoints --------------------------------------------------------------------
    def _recipe(self, arch: str) -> dict:
        """The run's settings, local paths of its outputs left out, with `arch` the architecture
        built (a continued checkpoint's own, whatever --arch said)."""
        recipe = {k: v for k, v in asdict(self.config).items() if k not in ("out_dir", "resume")}
        return {**recipe, "arch": arch}

    def _origin(self, path: str, earlier: dict, arch: str) -> dict:
        """The checkpoint a run continues: its file, hash and step, and its recipe where the
        earlier training differed from this one."""
        origin = {"how": "resume" if self.config.resume else "init_weights",
                  "file": Path(path).name, "sha256": sha256_file(path)}
        if "step" in earlier:
            origin["step"] = earlier["step"]
        if earlier.get("recipe") not in (None, self._recipe(arch)):
            origin["recipe"] = earlier["recipe"]
        return origin

    def _card(self, state: dict | None, metrics: dict | None,
              train_samples: list[Sample] | None = None,
              weights: str | None = None) -> CheckpointInfo:
        """`metrics`: the validation of exactly these weights (their epoch's), or None."""
        provenance = {"tool": f"forgeryloc {__version__}"}
        if state is not None:
            provenance.update(recipe=self._recipe(self.model_config.name),
                              training_images_real=len(train_samples or []),
                              validation_images=self.val_images,
                              step=state["step"], epochs_completed=state["epoch"],
                              minutes=round(state["elapsed"] / 60, 2), **self.runtime)
            if self.started_from:
                provenance["started_from"] = self.started_from
            if weights:
                provenance["weights"] = weights
        if metrics:
            provenance["validation"] = metrics
        return CheckpointInfo(config=self.model_config, mean=self.mean, std=self.std,
                              input_size=self.config.size, provenance=provenance,
                              embeddings="stand-in (random, fixed seed); trained with them")

    def _save(self, model, optimizer, state, name, train_samples, metrics,
              average: WeightAverage | None = None) -> None:
        """Weights of `model` (the best checkpoint holds the averaged ones when averaging);
        "last" also keeps the average beside it so that a resumed run goes on averaging.
        `metrics` were measured on the averaged weights when averaging: the raw ones record none."""
        if self.rank != 0:
            return
        if self.config.ema_decay is None:
            card = self._card(state, metrics, train_samples)
        elif name == "best":  # `model` is the average here
            card = self._card(state, metrics, train_samples, "weight average")
        else:
            card = self._card(state, None, train_samples,
                              f"raw (validated: the average in {name}.ema.safetensors)")
        save_checkpoint(model, card, self.out / f"{name}.safetensors")
        if average is not None:
            save_checkpoint(average.model,
                            self._card(state, metrics, train_samples, "weight average"),
                            self.out / f"{name}.ema.safetensors")
        # Optimizer and loop state: tensors and plain values only, loadable with weights_only.
        resume_state = {"optimizer": optimizer.state_dict(),
                        "loop": {k: state[k] for k in ("step", "epoch", "elapsed", "best_dsc")},
                        "history": json.dumps(state["history"])}
        temporary = self.out / f".{name}.state.pt.tmp"
        torch.save(resume_state, temporary)
        os.replace(temporary, self.out / f"{name}.state.pt")

    def _load_state(self, checkpoint: str, optimizer, state: dict) -> dict:
        path = Path(checkpoint).with_suffix("").with_suffix(".state.pt")
        if not path.is_file():
            log.warning("no optimizer state beside %s: starting a fresh schedule", checkpoint)
            return state
        saved = torch.load(path, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["loop"])
        state["history"] = json.loads(saved["history"])
        return state

