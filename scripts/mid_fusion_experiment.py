"""Mid-level against late fusion of the JPEG stream, measured on the source-grouped holdout.

The shipped model fuses late: per pixel, at the image's size, the RGB map's logit and the
stream's block logit (LateFusion). The alternative asked for: the stream's features joined
with M2SFormer's decoder at its 1/8 stage. Here both networks stay frozen, and the join is
learned on the training split:

    x8 = decoder stages 1-2 (stride 8, C x S/8 x S/8)           (frozen, from the RGB input)
    f  = stream features (width x Hb x Wb), area-averaged to S/8 x S/8 (zeros: not a JPEG)
    x8 + P f  -> decoder stage 3 and prediction head (frozen)  -> S x S map

P is a 1x1 convolution without bias, zero at the start, so the model starts as, and without
JPEG evidence stays exactly, the RGB network. Only P learns (BCE + Dice on the S x S masks).
Features are computed once per image; the report gives the mid-level model's validation
numbers per epoch beside the late fusion's on the same images, with the floors.

    python scripts/mid_fusion_experiment.py ../shared/data/benchmarks/casia1-dev \
        --weights weights/forgeryloc-default.safetensors --epochs 12 --out runs/mid
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from forgeryloc.data.datasets import load_pair, read_dataset, split_holdout
from forgeryloc.evaluate import PAPER_THRESHOLD, MetricsCollector, resize_probability
from forgeryloc.jpeg_input import read_jpeg_input
from forgeryloc.model.decoder import difficulty_from_curvature
from forgeryloc.model.m2s_attention import resize
from forgeryloc.predict import Predictor
from forgeryloc.preprocess import resize_mask, resize_rgb, to_tensor
from forgeryloc.train_jpeg import block_loss, load_stream
from forgeryloc.weights import load_model

KEYS = ("dsc", "iou", "pixel_auc", "image_auc", "predicted_fraction_tampered",
        "floor_all_dsc", "floor_blob_dsc")


@torch.no_grad()
def features(model, predictor: Predictor, sample, size: int) -> dict:
    """The frozen parts' outputs for one image: stride-8 decoder map, stride-4 skip,
    difficulty embedding, pooled stream features, and the late-fused map at native size."""
    rgb, mask = load_pair(sample)
    image = to_tensor(resize_rgb(rgb, size, size), predictor.info.mean, predictor.info.std)[None]
    skips = model.skip(model.encoder(image))
    prior = resize(model.prior_head(skips[-1]), image.shape[-2:])
    _, label = difficulty_from_curvature(model.curvature(prior))
    embedding = model.difficulty_embeddings[label]
    x = skips[-1]
    for stage, skip in zip(model.decoder[:2], (skips[2], skips[1])):
        x = stage(x, skip, embedding)                       # stride 8 after two stages
    jpeg, _ = read_jpeg_input(str(sample.image))
    if jpeg is None:
        pooled = torch.zeros(1, model.jpeg_stream.config.width, *x.shape[-2:])
    else:
        coefficients = jpeg.coefficients[None]
        _, stream_features = model.jpeg_stream(coefficients, jpeg.table[None])
        # blocks beyond the picture (the last partial ones) are cut off before pooling
        blocks_h, blocks_w = -(-mask.shape[0] // 8), -(-mask.shape[1] // 8)
        pooled = F.adaptive_avg_pool2d(stream_features[..., :blocks_h, :blocks_w],
                                       x.shape[-2:])
    maps = predictor.with_jpeg(predictor.maps_from_resized(predictor.forward(image), 0,
                                                           *mask.shape), jpeg)
    late = np.concatenate([band.probability for band in maps.bands()])
    target = torch.from_numpy(resize_mask(mask, size, size)).float()[None, None]
    return {"x8": x, "skip4": skips[0], "embedding": embedding, "stream": pooled,
            "target": target, "late": late, "mask": mask, "sample": sample}


class MidFusion(nn.Module):
    def __init__(self, model, width: int):
        super().__init__()
        self.project = nn.Conv2d(width, model.config.decoder_dims[1], 1, bias=False)
        nn.init.zeros_(self.project.weight)
        self.stage, self.head = model.decoder[2], model.prediction_head

    def forward(self, x8, skip4, embedding, stream, size: int) -> torch.Tensor:
        x = self.stage(x8 + self.project(stream), skip4, embedding)
        return F.interpolate(self.head(x), size=(size, size), mode="bilinear",
                             align_corners=False)


def evaluate(fusion: MidFusion | None, items: list[dict], size: int) -> dict:
    """The protocol on the validation items: the mid-level model's maps, or (fusion None)
    the late fusion's."""
    collector = MetricsCollector(size, PAPER_THRESHOLD, 0.5)
    with torch.no_grad():
        for item in items:
            height, width = item["mask"].shape
            if fusion is None:
                native = item["late"]
            else:
                logits = fusion(item["x8"], item["skip4"], item["embedding"], item["stream"],
                                size)
                native = torch.sigmoid(F.interpolate(logits, size=(height, width),
                                                     mode="bilinear", align_corners=False)
                                       )[0, 0].numpy()
            collector.add(item["sample"], resize_probability(native, size), native,
                          item["mask"])
    summary = collector.result().summary
    return {key: round(float(summary[key]), 4) for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--weights", default="weights/forgeryloc-default.safetensors")
    parser.add_argument("--stream", help="another JPEG stream (train-jpeg) to fuse instead")
    parser.add_argument("--holdout", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="runs/mid")
    parser.add_argument("--limit", type=int, help="at most this many images per side (a smoke "
                        "run)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model, card = load_model(args.weights)
    if args.stream:
        model.jpeg_stream = load_stream(args.stream)[0].float()
    model.eval().requires_grad_(False)
    predictor = Predictor(model, card, "cpu")
    size = card.input_size
    train, val = split_holdout(read_dataset(args.data), args.holdout, args.seed)
    if args.limit:
        pick = np.random.default_rng(args.seed)
        train = [train[i] for i in sorted(pick.permutation(len(train))[:args.limit])]
        val = [val[i] for i in sorted(pick.permutation(len(val))[:args.limit])]
    started = time.monotonic()
    train_items = [features(model, predictor, s, size) for s in train]
    val_items = [features(model, predictor, s, size) for s in val]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"weights": args.weights, "stream": args.stream, "train_images": len(train),
              "val_images": len(val), "feature_minutes": round((time.monotonic() - started) / 60, 2),
              "late_fusion": evaluate(None, val_items, size), "epochs": []}
    fusion = MidFusion(model, model.jpeg_stream.config.width)
    fusion.project.requires_grad_(True)
    report["mid_fusion_at_start"] = evaluate(fusion, val_items, size)  # = the RGB network
    optimizer = torch.optim.AdamW(fusion.project.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_items), generator=generator).tolist()
        running = 0.0
        for start in range(0, len(order), args.batch_size):
            batch = [train_items[i] for i in order[start:start + args.batch_size]]
            stacked = {key: torch.cat([item[key] for item in batch])
                       for key in ("x8", "skip4", "embedding", "stream", "target")}
            logits = fusion(stacked["x8"], stacked["skip4"], stacked["embedding"],
                            stacked["stream"], size)
            loss = block_loss(logits, stacked["target"], torch.ones_like(stacked["target"]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(batch)
        record = {"epoch": epoch + 1, "train_loss": round(running / len(order), 4),
                  "minutes": round((time.monotonic() - started) / 60, 2),
                  **evaluate(fusion, val_items, size)}
        report["epochs"].append(record)
        print(json.dumps(record), flush=True)
    (out / "mid_fusion.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "epochs"}, indent=1))


if __name__ == "__main__":
    main()
