"""Initialise a `SkyReelsV4Transformer3DModel` from a HunyuanVideo (v1) transformer in Diffusers format (SkyReels-V1
shares this layout): dual- and single-stream blocks map one to one onto the `.video` part of each layer
(`tower_key_to_joint`).

SkyReels-V4 has no CLIP text encoder and no guidance embedding, so HunyuanVideo's pooled-text and guidance terms are
folded into the timestep embedding's output bias at the conversion's `--guidance` value with an all-zero pooled
text vector; a text-to-video source's patch embedding is widened to `2C+1` input channels with zero weights for the
condition and mask channels. With audio absent, the converted model then reproduces
`HunyuanVideoTransformer3DModel` run with that guidance and zero pooled projections (`--check`).

    python conversion/convert_hunyuanvideo_to_skyreels_v4.py --source path/to/hunyuanvideo/transformer \\
        --output out/skyreels-v4-transformer --guidance 6.0 --dtype bf16 --check
"""

import argparse
import os
import sys

import torch
from diffusers import HunyuanVideoTransformer3DModel
from tqdm import tqdm

from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel, SkyReelsV4Transformer3DModel
from skyreels_diffusers.models.transformer_skyreels_v4 import tower_key_to_joint


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DTYPES, load_source, load_video_tower, save_atomically  # noqa: E402


# Our config entry -> HunyuanVideo's (the token refiner's depth is named after what it is here).
CONFIG_KEYS = {
    "num_attention_heads": "num_attention_heads",
    "attention_head_dim": "attention_head_dim",
    "num_layers": "num_layers",
    "num_single_layers": "num_single_layers",
    "num_token_refiner_layers": "num_refiner_layers",
    "mlp_ratio": "mlp_ratio",
    "patch_size": "patch_size",
    "patch_size_t": "patch_size_t",
    "text_embed_dim": "text_embed_dim",
    "rope_theta": "rope_theta",
    "rope_axes_dim": "rope_axes_dim",
}
FOLDED = ("time_text_embed.text_embedder.", "time_text_embed.guidance_embedder.")


@torch.no_grad()
def folded_bias(source: HunyuanVideoTransformer3DModel, guidance: float) -> torch.Tensor:
    """The constant HunyuanVideo adds to the timestep embedding with zero pooled text and a fixed guidance."""
    embed = source.time_text_embed
    dim = source.config.pooled_projection_dim
    constant = embed.text_embedder(torch.zeros(1, dim))[0]
    if embed.guidance_embedder is not None:
        guidance_proj = embed.time_proj(torch.tensor([guidance * 1000.0]))
        constant = constant + embed.guidance_embedder(guidance_proj)[0]
    return constant


def convert(
    source: HunyuanVideoTransformer3DModel,
    guidance: float,
    audio_model: SkyReelsV4AudioTransformer1DModel | None = None,
    audio_in_channels: int = 40,
    strict: bool = False,
    show_progress: bool = True,
) -> tuple[SkyReelsV4Transformer3DModel, list[str], list[str]]:
    """Returns the converted model, the source keys left unused (folded keys excluded) and the fresh target keys."""
    config = source.config
    if config.image_condition_type == "token_replace":
        raise ValueError("HunyuanVideo 'token_replace' image conditioning has no SkyReels-V4 counterpart.")
    out_channels = config.out_channels or config.in_channels
    target_config = {ours: config[theirs] for ours, theirs in CONFIG_KEYS.items()}
    target_config.update(
        in_channels=2 * out_channels + 1,
        out_channels=out_channels,
        rope_axes_dim=tuple(config.rope_axes_dim),
        audio_in_channels=audio_model.config.in_channels if audio_model else audio_in_channels,
    )
    model = SkyReelsV4Transformer3DModel(**target_config)
    target = model.state_dict()

    converted, unused = {}, []
    for key, tensor in tqdm(source.state_dict().items(), desc="tensors", disable=not show_progress):
        if key.startswith(FOLDED):
            continue
        name = key
        if key.startswith("time_text_embed.timestep_embedder."):  # the refiner keeps its own time_text_embed
            name = key.replace("time_text_embed.", "time_embed.", 1)
        if key == "x_embedder.proj.weight" and tensor.shape[1] != target_config["in_channels"]:
            # Text-to-video source: the condition and mask channels start with zero weights.
            widened = torch.zeros(target[tower_key_to_joint(name, "video")].shape, dtype=tensor.dtype)
            widened[:, : tensor.shape[1]] = tensor
            tensor = widened
        if tower_key_to_joint(name, "video") in target:
            converted[name] = tensor
        else:
            unused.append(key)
    if strict and unused:
        raise ValueError(f"--strict: {len(unused)} source keys have no place in the target: {unused[:10]}")
    bias_key = "time_embed.timestep_embedder.linear_2.bias"
    converted[bias_key] = converted[bias_key] + folded_bias(source, guidance).to(converted[bias_key].dtype)
    return model, unused, load_video_tower(model, converted, audio_model)


@torch.no_grad()
def check_equivalence(
    source: HunyuanVideoTransformer3DModel, converted: SkyReelsV4Transformer3DModel, guidance: float
) -> float:
    """Max abs difference on random inputs: HunyuanVideo with zero pooled text and `guidance` vs the video tower."""
    config = source.config
    generator = torch.Generator().manual_seed(0)
    batch, text_len = 1, 6
    latents = torch.randn(
        batch, config.in_channels, 2, 4 * config.patch_size, 4 * config.patch_size, generator=generator
    )
    text = torch.randn(batch, text_len, config.text_embed_dim, generator=generator)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    mask[:, -2:] = 0
    timestep = torch.tensor([437.0])
    expected = source(
        latents,
        timestep,
        text,
        mask,
        pooled_projections=torch.zeros(batch, config.pooled_projection_dim),
        guidance=torch.tensor([guidance * 1000.0]),
    ).sample
    hidden = latents
    if hidden.shape[1] != converted.config.in_channels:  # any condition channels: their weights are zero
        condition = torch.randn(
            batch, converted.config.in_channels - hidden.shape[1], *hidden.shape[2:], generator=generator
        )
        hidden = torch.cat([hidden, condition], dim=1)
    actual = converted(hidden.to(converted.dtype), timestep, text.to(converted.dtype), mask).sample
    return (expected.float() - actual.float()).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="HunyuanVideo transformer folder or .safetensors file")
    parser.add_argument("--source_config", default=None, help="config.json for a .safetensors --source")
    parser.add_argument("--output", required=True, help="new folder for the SkyReelsV4Transformer3DModel")
    parser.add_argument("--guidance", type=float, default=6.0, help="embedded guidance folded into the time bias")
    parser.add_argument("--audio_source", default=None, help="a SkyReelsV4AudioTransformer1DModel folder (T2A)")
    parser.add_argument("--audio_in_channels", type=int, default=40, help="audio latent channels of a fresh tower")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pt/.ckpt weights (trusted only)")
    parser.add_argument("--strict", action="store_true", help="fail on any unused source key")
    parser.add_argument("--check", action="store_true", help="verify the video tower reproduces the source (fp32)")
    args = parser.parse_args(argv)
    try:
        config, state_dict = load_source(args.source, args.source_config, args.allow_pickle)
        source = HunyuanVideoTransformer3DModel.from_config(config).eval()
        missing, unexpected = source.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"`--source` does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}."
            )
        audio_model = None
        if args.audio_source:
            audio_model = SkyReelsV4AudioTransformer1DModel.from_pretrained(args.audio_source, use_safetensors=True)
        model, unused, fresh = convert(source, args.guidance, audio_model, args.audio_in_channels, args.strict)
        print(f"unused source keys: {unused}; folded into the time bias: {[p + '*' for p in FOLDED]}")
        print(f"initialised fresh: {len(fresh)} target tensors, e.g. {fresh[:5]}")
        if args.check:
            difference = check_equivalence(source, model.eval(), args.guidance)
            print(f"check: max |HunyuanVideo - converted| = {difference:.3e} (fp32)")
            if difference > 1e-5:
                raise ValueError(f"The converted video tower differs from the source by {difference:.3e} > 1e-5.")
        save_atomically(model.to(DTYPES[args.dtype]), args.output)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
