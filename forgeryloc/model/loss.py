"""The training loss of M2SFormer: weighted region BCE + boundary BCE + weighted prior BCE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .m2sformer import M2SFormerOutput

_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8
_SOBEL_Y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 8


def edge_target(mask: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W binary boundary map: normalised Sobel magnitude of the mask >= 0.5."""
    kernels = torch.stack((_SOBEL_X, _SOBEL_Y)).unsqueeze(1).to(mask)  # 2 x 1 x 3 x 3
    gradients = F.conv2d(F.pad(mask, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = torch.sqrt((gradients ** 2).sum(1, keepdim=True) + 1e-6)
    return (magnitude >= 0.5).to(mask.dtype)


def balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with a per-image positive weight = #negatives / #positives."""
    positives = target.sum(dim=(1, 2, 3), keepdim=True)
    negatives = target[0].numel() - positives
    pos_weight = negatives / (positives + 1e-6)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


def m2sformer_loss(outputs: M2SFormerOutput, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """mask: B x 1 x H x W in {0, 1} at the outputs' size. Returns the total and its terms."""
    mask = mask.float()
    region = balanced_bce(outputs.prediction.float(), mask)
    prior = balanced_bce(outputs.global_prior.float(), mask)
    edge = F.binary_cross_entropy_with_logits(outputs.edge.float(), edge_target(mask))
    return {"loss": region + edge + prior, "region": region, "edge": edge, "prior": prior}
