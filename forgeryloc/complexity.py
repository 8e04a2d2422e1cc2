"""Multiply-accumulate count of a forward pass (convolutions and matrix products)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, input_size: int, batch: int = 1) -> int:
    """MACs of one forward at batch x 3 x input_size x input_size (attention included)."""
    parameter = next(model.parameters())
    images = torch.zeros(batch, 3, input_size, input_size, device=parameter.device,
                         dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    model.train(was_training)
    return counter.get_total_flops() // 2
