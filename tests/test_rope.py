"""The RoPE rotation of the attention processor (complex multiplication, text suffix copied once) against Diffusers'
`apply_rotary_emb`, alone and through the whole joint model."""

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed

import skyreels_diffusers.models.transformer_skyreels_v4 as transformer_module
from skyreels_diffusers.models.transformer_skyreels_v4 import (
    SkyReelsV4RotaryPosEmbed,
    _apply_rotary_emb_prefix,
    _apply_rotary_emb_prefix_real,
)
from skyreels_diffusers.tiny_components import build_tiny_transformer


TOKENS, HEADS, HEAD_DIM = 37, 3, 32


def rope_positions(num_tokens, seed=0):
    """Fractional, negative and large positions (as references, keyframes and audio have)."""
    return (torch.rand(num_tokens, generator=torch.Generator().manual_seed(seed)) - 0.3) * 90


def tables(num_tokens, head_dim=HEAD_DIM, seed=0):
    """Diffusers' RoPE tables (float32, each value repeated over its channel pair)."""
    return get_1d_rotary_pos_embed(head_dim, rope_positions(num_tokens, seed), 256.0, use_real=True)


def angles(positions, head_dim=HEAD_DIM, theta=256.0):
    """Angle of channel pair i of the token at position p, in float64: p * theta^(-2i/D), shape (tokens, D/2)."""
    return positions.double()[:, None] * theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def rotation_from_the_math(x, positions, theta=256.0):
    """Independent reference in float64: channel pair i = (x[2i], x[2i+1]) of the token at position p turns by the
    angle p * theta^(-2i/D): (x0 cos - x1 sin, x0 sin + x1 cos). Tokens past `len(positions)` are left as they are."""
    x = x.double()
    num_rotated, angle = len(positions), angles(positions, x.shape[-1], theta)
    cos, sin = angle.cos()[None, :, None], angle.sin()[None, :, None]  # over (batch, tokens, heads, D/2)
    x0, x1 = x[:, :num_rotated, :, 0::2], x[:, :num_rotated, :, 1::2]
    rotated = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    return torch.cat([rotated, x[:, num_rotated:]], dim=1)


def diffusers_prefix(x, rotary_emb):
    """The reference: Diffusers' rotation of the first `len(rotary_emb)` tokens, the rest untouched."""
    num_rotated = rotary_emb[0].shape[0]
    rotated = apply_rotary_emb(x[:, :num_rotated], rotary_emb, sequence_dim=1)
    return torch.cat([rotated, x[:, num_rotated:]], dim=1)


@pytest.mark.parametrize("num_rotated", [TOKENS, TOKENS - 5, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotation_matches_diffusers(num_rotated, dtype):
    x = torch.randn(2, TOKENS, HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(1)).to(dtype)
    rotary_emb = tables(num_rotated)
    expected = diffusers_prefix(x, rotary_emb)
    actual = _apply_rotary_emb_prefix(x, rotary_emb)
    assert actual.dtype == dtype and actual.shape == x.shape
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    else:  # Diffusers computes in fp32 and rounds once to bf16; so does the complex path
        torch.testing.assert_close(actual.float(), expected.float(), rtol=1e-2, atol=1e-2)
    assert torch.equal(actual[:, num_rotated:], x[:, num_rotated:])  # the text suffix is untouched
    assert torch.equal(_apply_rotary_emb_prefix_real(x, rotary_emb), expected)  # the path used under compile


@pytest.mark.parametrize("num_rotated", [TOKENS, TOKENS - 5, 1])
@pytest.mark.parametrize("rotate", [_apply_rotary_emb_prefix, _apply_rotary_emb_prefix_real])
def test_rotation_matches_the_math(num_rotated, rotate):
    """Both rotations against `rotation_from_the_math`, which shares no code with them or with Diffusers."""
    x = torch.randn(2, TOKENS, HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = rotation_from_the_math(x, rope_positions(num_rotated))
    # Both compute in float32 (Diffusers' `apply_rotary_emb` casts to it). Exact angles rounded once to float32 tables
    # (in the layout the code takes: each value repeated over its pair): measured max error 2.9e-7.
    angle = angles(rope_positions(num_rotated)).repeat_interleave(2, dim=1)
    actual = rotate(x.float(), (angle.cos().float(), angle.sin().float()))
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=1e-6)
    # Diffusers' float32 tables, as the model uses them (angles up to ~63 rad in float32): measured max error 4.2e-6.
    actual = rotate(x.float(), tables(num_rotated))
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=2e-5)


def test_rotation_of_non_contiguous_views_and_of_bf16_tables():
    """A query chunked out of fused projections (odd offsets are copied first) and tables moved to bf16."""
    fused = torch.randn(2, TOKENS, 3 * HEADS * HEAD_DIM + 1, generator=torch.Generator().manual_seed(2))
    for start in (0, 1):  # an even and an odd storage offset
        query = fused[..., start : start + HEADS * HEAD_DIM].unflatten(2, (HEADS, HEAD_DIM))
        rotary_emb = tables(TOKENS - 4)
        torch.testing.assert_close(_apply_rotary_emb_prefix(query, rotary_emb), diffusers_prefix(query, rotary_emb))
    rotary_emb = tuple(table.bfloat16() for table in tables(TOKENS))
    query = fused[..., : HEADS * HEAD_DIM].unflatten(2, (HEADS, HEAD_DIM))
    torch.testing.assert_close(_apply_rotary_emb_prefix(query, rotary_emb), diffusers_prefix(query, rotary_emb))


@pytest.mark.parametrize("num_rotated", [TOKENS, TOKENS - 5])
def test_rotation_gradients_match_diffusers(num_rotated):
    x = torch.randn(2, TOKENS, HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(3))
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    rotary_emb = tables(num_rotated)
    grads = []
    for rotate in (_apply_rotary_emb_prefix, diffusers_prefix):
        leaf = x.clone().requires_grad_()
        (rotate(leaf, rotary_emb) * weight).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)


def test_rope_tables_follow_the_positions():
    """`SkyReelsV4RotaryPosEmbed` concatenates Diffusers' per-axis tables; other positions give other tables."""
    rope = SkyReelsV4RotaryPosEmbed((8, 12, 12), 256.0)
    positions = torch.tensor([[-2.0, 0.0, 0.0], [0.0, 1.5, 3.0], [4.0, 7.0, 2.0]])
    cos, sin = rope(positions)
    for axis, (start, stop) in enumerate([(0, 8), (8, 20), (20, 32)]):
        axis_cos, axis_sin = get_1d_rotary_pos_embed(stop - start, positions[:, axis], 256.0, use_real=True)
        assert torch.equal(cos[:, start:stop], axis_cos) and torch.equal(sin[:, start:stop], axis_sin)
    other_cos, _ = rope(positions + torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(other_cos[:, :20], cos[:, :20]) and not torch.equal(other_cos[:, 20:], cos[:, 20:])


def test_joint_model_output_is_unchanged(monkeypatch):
    """The whole model (video with a reference and keyframes, audio with a reference, single-stream blocks with the
    text suffix, cross-modal RoPE) gives Diffusers' rotation's output."""
    model = build_tiny_transformer(vae_temporal_compression_ratio=1).eval()
    generator = torch.Generator().manual_seed(5)
    config = model.config
    inputs = {
        "hidden_states": torch.randn(1, config.in_channels, 3, 4, 4, generator=generator),
        "timestep": torch.tensor([600.0]),
        "encoder_hidden_states": torch.randn(1, 5, config.text_embed_dim, generator=generator),
        "encoder_attention_mask": torch.tensor([[True, True, True, True, False]]),
        "audio_hidden_states": torch.randn(1, config.audio_in_channels, 6, generator=generator),
        "reference_latents": torch.randn(1, config.out_channels, 1, 4, 4, generator=generator),
        "audio_reference_latents": torch.randn(1, config.audio_in_channels, 2, generator=generator),
        "keyframe_hidden_states": torch.randn(1, config.in_channels, 1, 8, 8, generator=generator),
        "keyframe_positions": torch.tensor([2.0]),
    }
    calls = []  # (tokens, rotated tokens) of every rotation

    def new_rotation(x, rotary_emb):
        calls.append((x.shape[1], rotary_emb[0].shape[0]))
        return _apply_rotary_emb_prefix(x, rotary_emb)

    monkeypatch.setattr(transformer_module, "_apply_rotary_emb_prefix", new_rotation)
    with torch.no_grad():
        new = model(**inputs)
        assert {tokens > rotated for tokens, rotated in calls} == {True, False}  # with and without a text suffix
        monkeypatch.setattr(transformer_module, "_apply_rotary_emb_prefix", _apply_rotary_emb_prefix_real)
        old = model(**inputs)
    for key in ("sample", "audio_sample", "keyframe_sample"):
        torch.testing.assert_close(getattr(new, key), getattr(old, key), rtol=1e-5, atol=1e-5)
