"""The MAC count behind every "% of matmul peak" figure."""
import torch.nn.functional as F
from torch import nn

from forgeryloc.complexity import count_macs
from forgeryloc.model.m2sformer import build_model


class _Attention(nn.Module):
    """Self-attention over the pixels of a conv's output: conv MACs + attention MACs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1, bias=False)

    def forward(self, images):
        tokens = self.conv(images).flatten(2).transpose(1, 2)[:, None]  # B x 1 x HW x 16
        return F.scaled_dot_product_attention(tokens, tokens, tokens)


def test_attention_is_counted_on_the_cpu():
    """Q K^T and the weighted sum of V: 2 x HW x HW x 16 MACs, beside the conv's."""
    size, pixels = 8, 64
    expected = 2 * (pixels * 3 * 16) + 2 * 2 * pixels * pixels * 16  # batch 2
    assert count_macs(_Attention(), size, batch=2) == expected


def test_m2sformer_b2_count_matches_the_reference_figure():
    """The design notes give 10.3 GMACs for the reference b2 at 256x256 (a MAC counter's)."""
    macs = count_macs(build_model("m2sformer-b2"), 256)
    assert abs(macs / 1e9 - 10.3) < 0.2, macs
