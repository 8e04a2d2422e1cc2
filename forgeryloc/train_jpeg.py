"""Training the JPEG stream on its own: real JPEG forgeries and synthetic compression histories,
windows of whole blocks, block-level weighted BCE plus Dice, validation with the evaluation
protocol (and its floors) on a source-grouped holdout, best/last stream checkpoints."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, DataLoader

from .data.datasets import Sample, load_pair, read_dataset, split_holdout
from .data.jpeg_blocks import (
    RealJpegWindows, SyntheticJpegWindows, grid_from_jpeg, grid_from_sample,
)
from .data.jpeg_tables import resaved_jpeg
from .evaluate import PAPER_THRESHOLD, MetricsCollector, resize_probability
from .imaging import ImageReadError
from .model.jpeg_stream import JpegStream, JpegStreamConfig
from .provenance import runtime

log = logging.getLogger(__name__)


@dataclass
class JpegTrainConfig:
    out_dir: str
    datasets: list[str] = field(default_factory=list)
    val_fraction: float = 0.25
    group_pattern: str | None = None
    synth_photos: list[str] = field(default_factory=list)
    synth_share: float = 0.5        # share of each batch drawn from synthetic histories
    window: int = 32                # blocks per side of a training window
    batch_size: int = 16
    steps_per_epoch: int = 200
    max_minutes: float = 10.0
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    frequencies: int = 64
    width: int = 128
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    eval_size: int = 256
    launder: float = 0.0            # share of windows whose file was saved once more (q70-95)
    from_pixels: float = 0.0        # share whose input is estimated from the decoded pixels
    defocus: float = 0.0            # share of synthetic photos with a blurred background
    init: str | None = None         # a stream checkpoint to start from (fine-tuning)
    resave_check: int | None = 90   # validate also after one more save at this IJG quality


def block_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """BCE with positives weighted by their rarity in the batch, plus a soft Dice per window
    (so that small regions count and the 0.5 threshold keeps a meaning)."""
    positives = (target * weight).sum()
    total = weight.sum().clamp(min=1)
    pos_weight = ((total - positives) / positives.clamp(min=1)).clamp(1, 10).detach()
    per_block = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    per_block = per_block * (1 + (pos_weight - 1) * target)
    bce = (per_block * weight).sum() / total
    prob = torch.sigmoid(logits) * weight
    inter = (prob * target).sum(dim=(1, 2, 3))
    union = prob.sum(dim=(1, 2, 3)) + (target * weight).sum(dim=(1, 2, 3))
    has_region = (target.sum(dim=(1, 2, 3)) > 0).float()
    dice = 1 - (2 * inter + 1) / (union + 1)
    dice = (dice * has_region).sum() / has_region.sum().clamp(min=1)
    return bce + dice


def block_probability_to_pixels(block_logits: torch.Tensor, height: int, width: int
                                ) -> np.ndarray:
    """1 x 1 x Hb x Wb logits -> H x W probabilities (bilinear over block centres)."""
    blocks_h, blocks_w = block_logits.shape[-2:]
    up = F.interpolate(block_logits.float(), size=(blocks_h * 8, blocks_w * 8), mode="bilinear",
                       align_corners=False)
    return torch.sigmoid(up)[0, 0, :height, :width].cpu().numpy()


@torch.no_grad()
def validate_stream(stream: JpegStream, samples: list[Sample], device, size: int = 256,
                    resave_quality: int | None = None) -> dict:
    """The evaluation protocol (maps resized to size x size, threshold 0.5) on whole images,
    or on the JPEGs saved once more at `resave_quality`; a sample that is not a JPEG has no
    stream map: it is listed as skipped."""
    was_training = stream.training
    stream.eval()
    collector = MetricsCollector(size, PAPER_THRESHOLD, 0.5)
    for sample in samples:
        try:
            rgb, mask = load_pair(sample)
            grid = grid_from_sample(sample)
            if grid is not None and resave_quality is not None:
                grid = grid_from_jpeg(resaved_jpeg(rgb, resave_quality), mask)
        except ImageReadError as error:
            collector.skipped.append(f"{sample.image}: {error}")
            continue
        if grid is None:
            collector.skipped.append(f"{sample.image}: not a JPEG")
            continue
        coefficients = torch.from_numpy(grid.coefficients)[None].to(device)
        table = torch.from_numpy(grid.table)[None].to(device)
        logits, _ = stream(coefficients, table)
        height, width = mask.shape
        prob = block_probability_to_pixels(logits, height, width)
        collector.add(sample, resize_probability(prob, size), prob, mask)
    stream.train(was_training)
    return collector.result().summary


VAL_KEYS = ("dsc", "iou", "pixel_auc", "image_auc", "predicted_fraction_tampered",
            "true_fraction", "floor_all_dsc", "floor_blob_dsc", "floor_blob_pixel_auc")


def save_stream(stream: JpegStream, path: Path, record: dict) -> None:
    from safetensors.torch import save as save_bytes

    from .atomic import write_bytes_atomic
    tensors = {k: v.detach().cpu().contiguous() for k, v in stream.state_dict().items()}
    metadata = {"format": "forgeryloc.jpeg_stream",
                "config": json.dumps(stream.config.to_dict()),
                "provenance": json.dumps(record, sort_keys=True)}
    write_bytes_atomic(path, save_bytes(tensors, metadata=metadata))


def load_stream(path: str | Path) -> tuple[JpegStream, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != "forgeryloc.jpeg_stream":
        raise ValueError(f"{path}: not a forgeryloc JPEG-stream file")
    stream = JpegStream(JpegStreamConfig.from_dict(json.loads(metadata["config"])))
    stream.load_state_dict(load_file(str(path)))
    return stream, json.loads(metadata.get("provenance", "{}"))


def train_jpeg_stream(config: JpegTrainConfig, on_log: Callable[[dict], None] | None = None
                      ) -> dict:
    c = config
    torch.manual_seed(c.seed)
    device = torch.device(c.device)
    out = Path(c.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, val = [], []
    for root in c.datasets:
        part_train, part_val = split_holdout(read_dataset(root), c.val_fraction, c.seed,
                                             c.group_pattern)
        train += part_train
        val += part_val
    epoch_items = c.steps_per_epoch * c.batch_size
    sources = []
    if train and c.synth_share < 1:
        sources.append(RealJpegWindows(train, c.window, c.seed,
                                       round(epoch_items * (1 - c.synth_share)),
                                       launder=c.launder, from_pixels=c.from_pixels))
    if c.synth_photos and c.synth_share > 0:
        sources.append(SyntheticJpegWindows(c.synth_photos, c.window, c.seed,
                                            round(epoch_items * c.synth_share),
                                            launder=c.launder, from_pixels=c.from_pixels,
                                            defocus=c.defocus))
    if not sources:
        raise ValueError("no training data: give --data and/or --synth")
    mixed = ConcatDataset(sources)
    if c.init:
        stream, _ = load_stream(c.init)
        stream = stream.float().to(device)
        c.frequencies, c.width = stream.config.frequencies, stream.config.width
    else:
        stream = JpegStream(JpegStreamConfig(frequencies=c.frequencies, width=c.width))
        stream = stream.to(device)
    optimizer = torch.optim.AdamW(stream.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    loader_kwargs = dict(batch_size=c.batch_size, shuffle=True, drop_last=True,
                         num_workers=c.workers, pin_memory=device.type == "cuda",
                         generator=torch.Generator().manual_seed(c.seed))
    if c.workers:
        loader_kwargs["persistent_workers"] = False
    budget = c.max_minutes * 60
    started = time.monotonic()
    state = {"step": 0, "epoch": 0, "best_score": -1.0}
    history = []
    stop = False
    while not stop:
        for source in sources:
            source.epoch = state["epoch"]
        running, seen = 0.0, 0
        for coefficients, table, target, weight in DataLoader(mixed, **loader_kwargs):
            progress = min((time.monotonic() - started) / budget, 1.0)
            lr = c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + np.cos(np.pi * progress))
            for group in optimizer.param_groups:
                group["lr"] = lr
            coefficients, table = coefficients.to(device), table.to(device)
            target, weight = target.to(device), weight.to(device)
            logits, _ = stream(coefficients, table)
            loss = block_loss(logits, target, weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state["step"] += 1
            running += loss.item()
            seen += 1
            if progress >= 1.0:
                stop = True
                break
        state["epoch"] += 1
        record = {"epoch": state["epoch"], "step": state["step"],
                  "elapsed_minutes": round((time.monotonic() - started) / 60, 2),
                  "train_loss": running / max(seen, 1)}
        if val:
            summary = validate_stream(stream, val, device, c.eval_size)
            record.update({f"val_{k}": summary[k] for k in VAL_KEYS})
            record["val_score"] = record["val_dsc"]
            if c.resave_check:
                resave = validate_stream(stream, val, device, c.eval_size, c.resave_check)
                tag = f"val_q{c.resave_check}"
                record.update({f"{tag}_{k}": resave[k] for k in ("dsc", "pixel_auc",
                                                                 "image_auc")})
                if c.launder > 0:  # a laundering run is chosen for both cases at once
                    record["val_score"] = (record["val_dsc"] + record[f"{tag}_dsc"]) / 2
        history.append(record)
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if on_log:
            on_log(record)
        provenance = {"recipe": asdict(c), **record, **runtime(device),
                      "train_images": len(train), "val_images": len(val)}
        save_stream(stream, out / "last.safetensors", provenance)
        if val and record["val_score"] > state["best_score"]:
            state["best_score"] = record["val_score"]
            save_stream(stream, out / "best.safetensors", provenance)
    return {"history": history, **state}
