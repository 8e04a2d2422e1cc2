"""Predictor: runs a loaded M2SFormer on batches, in the paper's resize mode or in native-resolution
tiles, and turns logits into maps (maps.py) and findings at the original image size."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image
from .cpu import keep_large_allocations, one_blas_thread
from .fused_maps import FusedMaps
from .image_scores import DEFAULT_STATISTIC, ScoreAccumulator
from .jpeg_input import JpegInput
from .maps import ImageMaps, ResizedMaps, TiledMaps, image_shape, nearest, robust_curvature
from .model.m2sformer import HARD, M2SFormer
from .preprocess import resize_rgb, to_tensor
from .weights import CheckpointInfo

# The JPEG stream runs on grids up to this many blocks at once (a 16 MP photo), larger ones in
# overlapping windows: its one-hot input takes ~5 KB a block.
STREAM_WINDOW = 512
STREAM_MARGIN = 32  # blocks of context kept on each side of a window (receptive radius 21)


def pick_device(requested: str = "auto") -> torch.device:
    """auto: CUDA, then Apple MPS, then CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available")
    if requested == "mps" and not (getattr(torch.backends, "mps", None)
                                   and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for but MPS is not available")
    if requested not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {requested!r} (auto, cpu, cuda or mps)")
    return torch.device(requested)


def gated_note(largest_logit: float, gate: float) -> str:
    """The record's jpeg_evidence of a file whose stream logits all stayed below the gate."""
    return (f"read, in the score only: no block reached the stream's gate (largest logit "
            f"{largest_logit:.2f} < {gate:g}: no double compression it can read); the map is "
            f"the pixel path's")


def _stream_spans(length: int) -> list[tuple[int, int]]:
    """The JPEG stream's windows along one axis of the block grid (start, stop)."""
    if length <= STREAM_WINDOW:
        return [(0, length)]
    step = STREAM_WINDOW - 2 * STREAM_MARGIN
    return [(start, min(start + step, length)) for start in range(0, length, step)]


@dataclass
class Finding:
    """What the model says about one image, at the image's own size."""
    probability: np.ndarray      # H x W float32 in [0, 1]
    curvature: np.ndarray        # H x W float32, robust difficulty map
    difficulty_score: float
    difficulty_label: str        # "easy" or "hard"
    score: float                 # image-level manipulation score in [0, 1] (image_scores.py)

    @classmethod
    def from_maps(cls, maps: ImageMaps, statistic: str = DEFAULT_STATISTIC) -> "Finding":
        """Gathers streamed maps into whole arrays (for images of moderate size); the image
        score is `statistic` of the probability map (of the bands' score_probability where
        they carry one)."""
        probability = np.empty((maps.height, maps.width), np.float32)
        scoring = ScoreAccumulator(statistic)
        for band in maps.bands():
            probability[band.rows] = band.probability
            scoring.add(band.probability if band.score_probability is None
                        else band.score_probability)
        curvature = nearest(maps.preview(maps.height, maps.width)[1], maps.height, maps.width)
        return cls(probability=probability, curvature=curvature,
                   difficulty_score=maps.difficulty_score,
                   difficulty_label=maps.difficulty_label, score=scoring.value())

    def mask(self, threshold: float) -> np.ndarray:
        return self.probability >= threshold

    def area(self, threshold: float) -> float:
        return float(self.mask(threshold).mean())


class Predictor:
    """Owns the model on one device; all inference goes through here."""

    def __init__(self, model: M2SFormer, info: CheckpointInfo, device: str | torch.device = "cpu",
                 mixed_precision: bool = True, compile_model: bool = False):
        self.device = torch.device(device)
        if self.device.type == "cpu":  # both process-wide, for good (cpu.py)
            keep_large_allocations()
            one_blas_thread()
        self.network = model.to(self.device).eval()  # eager, e.g. for replicas in workers
        self.model = self.network
        self.compiled = compile_model
        if compile_model:
            # A one-off cost (about a minute for m2sformer-b2 on 2 CPU cores) that fused
            # kernels repay over a few thousand images; the results differ from eager mode
            # in the last bits, so the setting is part of a scan's recorded settings.
            self.model = torch.compile(self.model, dynamic=False)
        self.info = info
        self.size = info.input_size
        use_amp = mixed_precision and self.device.type == "cuda"
        self._autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp \
            else contextlib.nullcontext

    @property
    def jpeg_stream(self):
        """The checkpoint's JPEG-domain stream, or None for an RGB-only model."""
        return getattr(self.network, "jpeg_stream", None)

    @property
    def fusion_weights(self) -> tuple[float, ...]:
        return tuple(float(w) for w in self.network.fusion.weights.detach().cpu())

    @torch.inference_mode()
    def jpeg_block_logits(self, jpeg: JpegInput) -> np.ndarray:
        """Hb x Wb logits of the JPEG stream for one file; a large grid goes through windows
        with STREAM_MARGIN blocks of context, so every block's logit is the whole grid's
        (the stream is convolutional with a reach of 21 blocks)."""
        coefficients, table = jpeg.coefficients, jpeg.table.to(self.device)[None]
        blocks_h, blocks_w = coefficients.shape[1:]
        out = np.empty((blocks_h, blocks_w), np.float32)
        for top, bottom in _stream_spans(blocks_h):
            for left, right in _stream_spans(blocks_w):
                y0, x0 = max(top - STREAM_MARGIN, 0), max(left - STREAM_MARGIN, 0)
                y1 = min(bottom + STREAM_MARGIN, blocks_h)
                x1 = min(right + STREAM_MARGIN, blocks_w)
                window = coefficients[:, y0:y1, x0:x1][None].to(self.device)
                logits = self.jpeg_stream(window, table)[0][0, 0].float().cpu().numpy()
                out[top:bottom, left:right] = logits[top - y0:bottom - y0, left - x0:right - x0]
        return out

    def with_jpeg(self, maps: ImageMaps, jpeg: JpegInput | None) -> ImageMaps:
        """The maps with the JPEG evidence fused in (RGB-only models: the maps as they are)."""
        if self.jpeg_stream is None:
            return maps
        logits = self.jpeg_block_logits(jpeg) if jpeg is not None else None
        origin = jpeg.origin if jpeg is not None else (0, 0)
        gate = self.info.jpeg_gate_logit
        largest = float(logits.max()) if logits is not None else None
        floor = self.info.jpeg_logit_floor
        if logits is not None and floor is not None:  # no veto: see fuse.fit_fusion
            np.maximum(logits, np.float32(floor), out=logits)
        if gate is not None and largest is not None and largest < gate:
            # Nothing the stream can read: on such files (a copy resized before its last save
            # above all) its low logits say "compressed once", not "authentic", and would
            # veto the pixels' evidence in the map, which the pixel path draws alone. The
            # score keeps them: on camera originals "compressed once" is what it should weigh.
            return FusedMaps(maps, None, self.fusion_weights, origin,
                             jpeg_note=gated_note(largest, gate), score_logits=logits)
        return FusedMaps(maps, logits, self.fusion_weights, origin)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 -> 3 x S x S model input (the paper's resize protocol)."""
        return to_tensor(resize_rgb(rgb, self.size, self.size), self.info.mean, self.info.std)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """B x 3 x h x w normalised -> float32 CPU tensors: probability, prior (logits),
        curvature (B x 1 x h x w), difficulty_score and difficulty_label (B)."""
        batch = batch.to(self.device, non_blocking=True)
        with self._autocast():
            out = self.model(batch)
        return {"probability": torch.sigmoid(out.prediction.float()).cpu(),
                "prior": out.global_prior.float().cpu(),
                "curvature": out.curvature.float().cpu(),
                "difficulty_score": out.difficulty_score.float().cpu(),
                "difficulty_label": out.difficulty_label.cpu()}

    def maps_from_resized(self, outputs: dict[str, torch.Tensor], index: int, height: int,
                          width: int) -> ResizedMaps:
        """The index-th S x S outputs of `forward`, to be streamed at height x width."""
        curvature = robust_curvature(outputs["curvature"][index, 0].numpy(),
                                     outputs["prior"][index, 0].numpy())
        label = int(outputs["difficulty_label"][index])
        return ResizedMaps(outputs["probability"][index, 0].numpy(), curvature, height, width,
                           difficulty_score=float(outputs["difficulty_score"][index]),
                           difficulty_label="hard" if label == HARD else "easy")

    def finding_from_resized(self, outputs: dict[str, torch.Tensor], index: int, height: int,
                             width: int) -> Finding:
        """Brings the index-th S x S outputs of `forward` back to height x width."""
        return Finding.from_maps(self.maps_from_resized(outputs, index, height, width),
                                 self.info.image_score)

    def predict(self, rgb: np.ndarray, mode: str = "resize", overlap: float = 0.5,
                batch_size: int = 8) -> Finding:
        """One image, H x W x 3 uint8."""
        height, width = rgb.shape[:2]
        if mode == "resize":
            outputs = self.forward(self.preprocess(rgb)[None])
            return self.finding_from_resized(outputs, 0, height, width)
        if mode == "tile":
            return self.predict_tiled(rgb, overlap, batch_size)
        raise ValueError(f"unknown mode {mode!r} (resize or tile)")

    def tiled_maps(self, rgb: np.ndarray | Image.Image, overlap: float = 0.5,
                   batch_size: int = 8, preview_shape: tuple[int, int] | None = None,
                   on_tiles: Callable[[int, int], None] | None = None,
                   threads: int = 1) -> TiledMaps:
        """Native resolution, streamed (the network runs as the bands are consumed);
        on_tiles(done, total) hears of each forward of tiles; threads > 1 forwards tiles
        side by side, each on one torch thread (see TiledMaps)."""
        return TiledMaps(self, rgb, overlap, batch_size, preview_shape or image_shape(rgb),
                         on_tiles, threads)

    def predict_tiled(self, rgb: np.ndarray, overlap: float = 0.5,
                      batch_size: int = 8) -> Finding:
        """Native resolution: overlapping S x S tiles, blended with a smooth window."""
        return Finding.from_maps(self.tiled_maps(rgb, overlap, batch_size),
                                 self.info.image_score)
