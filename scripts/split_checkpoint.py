"""The parts of a checkpoint as files of their own: its RGB network (from a fused RGB +
JPEG-stream file, or an RGB one) as an RGB checkpoint, a training start for `train
--init-weights` (with --fp16, small enough to keep or to bring back from a device run); and a
fused file's JPEG stream as `train-jpeg` writes one, for `fuse --jpeg` or `train-jpeg --init`.

    python scripts/split_checkpoint.py weights/forgeryloc-default.safetensors \
        [--rgb RGB.safetensors [--fp16]] [--stream STREAM.safetensors]
"""
import argparse
import dataclasses
from pathlib import Path

import torch

from forgeryloc.model.m2sformer import build_model
from forgeryloc.train_jpeg import save_stream
from forgeryloc.weights import CheckpointInfo, load_model, save_checkpoint, sha256_file


def save_rgb(model, card: CheckpointInfo, source: Path, out: Path, fp16: bool) -> None:
    rgb = build_model(dataclasses.replace(card.config, jpeg_stream=None,
                                          name=card.config.name.removesuffix("-jpeg")))
    wanted = rgb.state_dict()
    rgb.load_state_dict({name: value for name, value in model.state_dict().items()
                         if name in wanted})  # strict: every RGB tensor must be there
    if card.config.jpeg_stream is None:  # already an RGB network: only the dtype changes
        rgb_card = card
    else:  # a fused file's thresholds and gate belong to the fusion, not to its RGB part
        rgb_card = CheckpointInfo(
            config=rgb.config, input_size=card.input_size, mean=card.mean, std=card.std,
            threshold=card.threshold, embeddings=card.embeddings,
            provenance={**card.provenance.get("rgb", {}), "extracted_from": {
                "file": source.name, "sha256": sha256_file(source)}})
    save_checkpoint(rgb, rgb_card, out, **({"dtype": torch.float16} if fp16 else {}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--rgb", type=Path, help="where the RGB network goes")
    parser.add_argument("--fp16", action="store_true", help="the RGB network's tensors as float16")
    parser.add_argument("--stream", type=Path, help="where a fused file's JPEG stream goes")
    args = parser.parse_args()
    if args.rgb is None and args.stream is None:
        parser.error("nothing to write: give --rgb and / or --stream")
    model, card = load_model(args.checkpoint)
    if args.rgb is not None:
        save_rgb(model, card, args.checkpoint, args.rgb, args.fp16)
    if args.stream is not None:
        if model.jpeg_stream is None:
            parser.error(f"{args.checkpoint} has no JPEG stream")
        save_stream(model.jpeg_stream, args.stream, card.provenance.get("jpeg_stream", {}))


if __name__ == "__main__":
    main()
