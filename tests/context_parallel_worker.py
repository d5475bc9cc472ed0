"""Per-rank bodies of the context-parallel tests (`test_context_parallel.py`), run by `torch.multiprocessing.spawn`
on CPU with gloo. Each rank first computes the single-process result itself, then enables Ulysses context
parallelism over all ranks and checks that the parallel result matches it."""

import os

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

from skyreels_diffusers import SkyReelsV4Transformer3DModel
from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_refiner


# Lengths chosen so that no token sequence divides by 2: 3x3x5 = 45 video tokens, 25 audio tokens, one reference
# image (15 tokens) and one keyframe (15 tokens).
FRAMES, HEIGHT, WIDTH, AUDIO_LEN, TEXT_LEN = 3, 3, 5, 25, 7
ATOL = 1e-5


def run_ranks(case: str, world_size: int, tmp_dir: str) -> None:
    """Entry point for the test: spawn `world_size` ranks running `case` (a function name below)."""
    torch.multiprocessing.spawn(_rank_main, args=(case, world_size, tmp_dir), nprocs=world_size, join=True)


def _rank_main(rank: int, case: str, world_size: int, tmp_dir: str) -> None:
    torch.set_num_threads(1)  # ranks share the machine's cores
    use_cpu_as_the_accelerator()
    init_file = os.path.join(tmp_dir, "init")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        globals()[case](world_size)
        dist.barrier()  # no rank tears down while another still exchanges
    finally:
        dist.destroy_process_group()


def use_cpu_as_the_accelerator() -> None:
    """Diffusers' `enable_parallelism` places rank r on accelerator `r % torch.accelerator.device_count()`, a division
    by zero on a machine without one (missing: a CPU / gloo path in `ModelMixin.enable_parallelism`). With one device
    reported, it builds its mesh on the CPU accelerator type, which gloo serves."""
    if torch.accelerator.device_count() == 0:
        torch.accelerator.device_count = lambda: 1


def _assert_close(name, actual, expected):
    max_error = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, atol=ATOL, rtol=1e-4), f"{name}: max abs error {max_error:.3g}"


def _trained_joint_model(num_attention_heads: int = 2) -> SkyReelsV4Transformer3DModel:
    """A tiny joint model whose zero-initialised layers (cross-modal and text cross-attention outputs) carry weights,
    so every attention path influences the output."""
    torch.manual_seed(0)
    model = SkyReelsV4Transformer3DModel(
        in_channels=9,
        out_channels=4,
        audio_in_channels=6,
        num_attention_heads=num_attention_heads,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_token_refiner_layers=1,
        text_embed_dim=24,
        rope_axes_dim=(4, 6, 6),
    ).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".to_out" in name and ("audio_attn" in name or "video_attn" in name or "text_attn" in name):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model


def _joint_inputs() -> dict:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(2, TEXT_LEN, dtype=torch.bool)
    mask[1, 4:] = False  # the second prompt is padded
    return {
        "hidden_states": torch.randn(2, 9, FRAMES, HEIGHT, WIDTH, generator=generator),
        "timestep": torch.tensor([700.0, 300.0]),
        "encoder_hidden_states": torch.randn(2, TEXT_LEN, 24, generator=generator),
        "encoder_attention_mask": mask,
        "audio_hidden_states": torch.randn(2, 6, AUDIO_LEN, generator=generator),
    }


def _joint_cases() -> dict[str, dict]:
    inputs = _joint_inputs()
    generator = torch.Generator().manual_seed(2)
    return {
        "t2av": inputs,
        "t2v": {**inputs, "audio_hidden_states": None},
        "t2a": {**inputs, "hidden_states": None},
        "references_and_keyframes": {
            **inputs,
            "reference_latents": torch.randn(2, 4, 1, HEIGHT, WIDTH, generator=generator),
            "audio_reference_latents": torch.randn(2, 6, 5, generator=generator),
            "keyframe_hidden_states": torch.randn(2, 9, 1, HEIGHT, WIDTH, generator=generator),
            "keyframe_positions": torch.tensor([1.5]),
        },
    }


def joint_forward(world_size: int, num_attention_heads: int = 2) -> None:
    model = _trained_joint_model(num_attention_heads)
    cases = _joint_cases()
    with torch.no_grad():
        expected = {name: model(**inputs) for name, inputs in cases.items()}
    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))
    assert model.context_parallel_shards == world_size
    block_lengths = []  # the sequence length each rank's first video block sees: its padded shard
    model.transformer_blocks[0].register_forward_pre_hook(
        lambda _, args, kwargs: kwargs["rotary_emb"] and block_lengths.append(kwargs["rotary_emb"][0].shape[0]),
        with_kwargs=True,
    )
    with torch.no_grad():
        for name, inputs in cases.items():
            actual = model(**inputs)
            for field in ("sample", "audio_sample", "keyframe_sample"):
                if getattr(expected[name], field) is None:
                    assert getattr(actual, field) is None, f"{name}.{field}"
                else:
                    _assert_close(f"{name}.{field}", getattr(actual, field), getattr(expected[name], field))
    num_video_tokens = FRAMES * HEIGHT * WIDTH
    assert block_lengths[0] == -(-num_video_tokens // world_size), block_lengths


def joint_forward_indivisible_heads(world_size: int) -> None:
    """3 heads over 2 ranks: Ulysses cannot split the heads, so the model gathers the keys instead."""
    joint_forward(world_size, num_attention_heads=3)


def refiner_forward(world_size: int) -> None:
    torch.manual_seed(0)
    refiner = build_tiny_refiner(temporal_upscale_factor=2)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # real gates and audio cross-attention, as after training
        for name, param in refiner.named_parameters():
            if "vsa_gate" in name or "audio_condition" in name and "to_out" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    channels = refiner.config.in_channels
    inputs = {
        # Patch 1: 5 x 5 x 9 = 225 tokens (odd), whose (4, 4, 4) VSA cubes leave partial cubes on every axis.
        "hidden_states": torch.randn(1, channels, 5, 5, 9, generator=generator),
        "timestep": torch.tensor([400.0]),
        "encoder_hidden_states": torch.randn(1, 5, refiner.config.text_embed_dim, generator=generator),
        "encoder_attention_mask": torch.tensor([[True, True, True, False, False]]),
        "audio_latents": torch.randn(1, refiner.config.audio_in_channels, 13, generator=generator),
    }
    with torch.no_grad():
        expected = {sparsity: refiner(**inputs, sparsity=sparsity).sample for sparsity in (0.0, 0.5)}
    refiner.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))
    with torch.no_grad():
        for sparsity, sample in expected.items():
            _assert_close(f"sparsity {sparsity}", refiner(**inputs, sparsity=sparsity).sample, sample)


def pipeline(world_size: int) -> None:
    pipe = build_tiny_pipeline(video_vae="wan", audio_vae="oobleck")
    kwargs = {"prompt": "<text>A red ball.</text><sfx>A knock.</sfx>", "num_inference_steps": 3, "output_type": "pt"}
    expected = pipe(**kwargs, generator=torch.Generator().manual_seed(0))
    pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))
    actual = pipe(**kwargs, generator=torch.Generator().manual_seed(0))
    _assert_close("frames", actual.frames, expected.frames)
    _assert_close("audio", actual.audio, expected.audio)
