"""Multiply-accumulate count of a forward pass (convolutions, matrix products and attention)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None,
                         **kwargs) -> int:
    """PyTorch's counter knows the GPU attention kernels but not the CPU one, whose work is
    the same: Q K^T and the weighted sum of V."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Kernels scaled_dot_product_attention may dispatch to that the counter has no formula for.
_EXTRA_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def count_macs(model: nn.Module, input_size: int, batch: int = 1) -> int:
    """MACs of one forward at batch x 3 x input_size x input_size (attention included)."""
    parameter = next(model.parameters())
    images = torch.zeros(batch, 3, input_size, input_size, device=parameter.device,
                         dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False,
                                          custom_mapping=_EXTRA_FORMULAS) as counter:
        model(images)
    model.train(was_training)
    return counter.get_total_flops() // 2
