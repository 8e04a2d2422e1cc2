"""Shapes and behaviour of the network modules on tiny inputs."""
import math

import pytest
import torch

from forgeryloc.model.decoder import Curvature, DecoderStage, difficulty_from_curvature
from forgeryloc.model.loss import edge_target, m2sformer_loss
from forgeryloc.model.m2s_attention import M2SSkipConnection, dct_filters
from forgeryloc.model.m2sformer import CONFIGS, M2SFormer, build_model, count_parameters
from forgeryloc.model.pvt_v2 import PyramidVisionTransformerV2, SpatialReductionAttention


def test_paper_model_has_the_authors_parameter_count():
    assert count_parameters(build_model("m2sformer-b2")) == 28_149_291


def test_lighter_configs_are_smaller():
    sizes = [count_parameters(build_model(name)) for name in
             ("m2sformer-b0", "m2sformer-b1", "m2sformer-b2")]
    assert sizes[0] < sizes[1] < sizes[2]
    rgb = {"m2sformer-b0", "m2sformer-b1", "m2sformer-b2", "m2sformer-lite0",
           "m2sformer-lite1", "m2sformer-lite2"}
    assert set(CONFIGS) == rgb | {f"{name}-jpeg" for name in rgb}


def test_jpeg_twins_add_the_stream_and_nothing_else():
    plain, twin = build_model("m2sformer-b0"), build_model("m2sformer-b0-jpeg")
    extra = set(twin.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith(("jpeg_stream.", "fusion.")) for k in extra)
    assert set(plain.state_dict()) <= set(twin.state_dict())
    assert twin.config.jpeg_stream.frequencies == 64
    from forgeryloc.model.m2sformer import M2SFormerConfig
    assert M2SFormerConfig.from_dict(twin.config.to_dict()) == twin.config


@pytest.mark.parametrize("size", [(64, 64), (224, 320), (96, 32)])
def test_encoder_strides(size):
    encoder = PyramidVisionTransformerV2((8, 16, 24, 32), (1, 2, 3, 4), (2, 2, 2, 2),
                                         (1, 1, 1, 1), (8, 4, 2, 1)).eval()
    features = encoder(torch.randn(1, 3, *size))
    for stride, dims, feature in zip((4, 8, 16, 32), (8, 16, 24, 32), features):
        assert feature.shape == (1, dims, math.ceil(size[0] / stride), math.ceil(size[1] / stride))


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attention = SpatialReductionAttention(16, num_heads=2, sr_ratio=2).eval()
    x = torch.randn(2, 64, 16)
    out = attention(x, 8, 8)
    # The same computation written out by hand.
    q = attention.q(x).view(2, 64, 2, 8).transpose(1, 2)
    grid = x.transpose(1, 2).reshape(2, 16, 8, 8)
    reduced = attention.norm(attention.sr(grid).flatten(2).transpose(1, 2))
    k, v = attention.kv(reduced).view(2, -1, 2, 2, 8).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(2, 64, 16))
    assert torch.allclose(out, expected, atol=1e-5)


def test_dct_filters_are_orthonormal_basis_images():
    filters = dct_filters(32, 16).flatten(1).double()
    gram = filters @ filters.T
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=1e-5)
    # The first pair (0, 0) is the constant (DC) image.
    assert torch.allclose(filters[0], torch.full_like(filters[0], 1 / 32), atol=1e-6)


def test_skip_connection_keeps_stage_sizes():
    skip = M2SSkipConnection((8, 16, 24, 32), 16, 32, 2, 16, 4).eval()
    features = [torch.randn(1, c, s, s + 2) for c, s in zip((8, 16, 24, 32), (16, 8, 4, 2))]
    refined = skip(features)
    assert [tuple(r.shape) for r in refined] == [(1, 16, s, s + 2) for s in (16, 8, 4, 2)]


def test_curvature_of_a_paraboloid_and_a_plane():
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    plane = (2 * x + 3 * y)[None, None]
    assert Curvature()(plane)[..., 2:-2, 2:-2].abs().max() < 1e-4
    bowl = ((x - 15.5) ** 2 + (y - 15.5) ** 2)[None, None]
    curvature = Curvature()(bowl)[0, 0, 4:-4, 4:-4]
    assert (curvature.abs() > 0).all() and len({round(float(v)) for v in curvature.sign().flatten()}) == 1
    score, label = difficulty_from_curvature(torch.zeros(3, 1, 8, 8))
    assert torch.allclose(score, torch.full((3,), 0.5)) and label.tolist() == [0, 0, 0]


def test_decoder_stage_gate_depends_on_embedding():
    torch.manual_seed(0)
    stage = DecoderStage(16 + 8, 32, embedding_dim=12).eval()
    x, skip = torch.randn(2, 16, 4, 4), torch.randn(2, 8, 8, 8)
    easy = 10 * torch.randn(1, 12).expand(2, 12)
    hard = -easy  # opposite vectors: some hidden unit of the gate is active for one of them
    out_easy, out_hard = stage(x, skip, easy), stage(x, skip, hard)
    assert out_easy.shape == (2, 32, 8, 8)
    assert not torch.allclose(out_easy, out_hard)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 224, 320), (1, 1, 96, 64)])
def test_forward_outputs_match_input_size(tiny_config, shape):
    model = M2SFormer(tiny_config).eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
    for name in ("prediction", "edge", "global_prior", "curvature"):
        assert getattr(out, name).shape == (shape[0], 1, *shape[2:])
    assert out.difficulty_score.shape == (shape[0],)
    assert set(out.difficulty_label.tolist()) <= {0, 1}
    assert ((out.difficulty_score > 0.5).long() == out.difficulty_label).all()


def test_forward_rejects_sizes_that_are_not_multiples_of_32(tiny_config):
    with pytest.raises(ValueError, match="multiples of 32"):
        M2SFormer(tiny_config)(torch.randn(1, 3, 64, 70))


def test_embeddings_are_a_buffer_in_the_state_dict(tiny_config):
    state = M2SFormer(tiny_config).state_dict()
    assert state["difficulty_embeddings"].shape == (2, tiny_config.embedding_dim)
    assert not any("filters" in key or "sobel" in key for key in state)


def test_edge_target_marks_the_boundary_only():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    edges = edge_target(mask)[0, 0]
    assert edges[8, 8] == 0 and edges[0, 0] == 0
    assert edges[4, 8] == 1 and edges[3, 8] == 1 and edges[8, 11] == 1
    assert edge_target(torch.ones(1, 1, 8, 8)).sum() == 0


def test_loss_decreases_when_prediction_matches(tiny_config):
    torch.manual_seed(0)
    model = M2SFormer(tiny_config)
    images = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 16:40, 16:40] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        losses = m2sformer_loss(model(images), mask)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        first = first if first is not None else losses["loss"].item()
    assert set(losses) == {"loss", "region", "edge", "prior"}
    assert losses["loss"].item() < 0.7 * first
