"""Initialise a `SkyReelsV4Transformer3DModel` from a HunyuanVideo-1.5 transformer (Diffusers format).

The video tower takes the HunyuanVideo-1.5 weights under the same names (a block's parameters move into its layer's
`.video`, the output head into `proj_out.video`: `tower_key_to_joint`); its text condition-type embedding becomes
`text_type_embedding`. Everything new — the audio tower (unless `--audio_source`
gives a T2A-pretrained `SkyReelsV4AudioTransformer1DModel`), the cross-modal blocks, the single-stream blocks'
text cross-attention — is fresh, with zero-initialised outputs, so with audio absent the converted model reproduces
`HunyuanVideo15Transformer3DModel` on the same inputs (ByT5 and image-embedding streams masked out; SkyReels-V4 has
neither). `--check` verifies that on random inputs.

    python conversion/convert_hunyuanvideo15_to_skyreels_v4.py --source path/to/hunyuanvideo-1.5/transformer \\
        --output out/skyreels-v4-transformer --dtype bf16 --check

Sources are a Diffusers model folder (`config.json` + safetensors) or a `.safetensors` state dict with
`--source_config`. Pickle checkpoints are refused.
"""

import argparse
import os
import sys

import torch
from diffusers import HunyuanVideo15Transformer3DModel
from tqdm import tqdm

from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel, SkyReelsV4Transformer3DModel
from skyreels_diffusers.models.transformer_skyreels_v4 import tower_key_to_joint


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DTYPES, load_source, load_video_tower, save_atomically  # noqa: E402


# HunyuanVideo-1.5 parts SkyReels-V4 has no input for (ByT5 glyph text, SigLIP image embeddings).
UNUSED_PREFIXES = ("image_embedder.", "context_embedder_2.")
# Our config entry -> HunyuanVideo-1.5's (the token refiner's depth is named after what it is here).
CONFIG_KEYS = {
    "in_channels": "in_channels",
    "out_channels": "out_channels",
    "num_attention_heads": "num_attention_heads",
    "attention_head_dim": "attention_head_dim",
    "num_layers": "num_layers",
    "num_token_refiner_layers": "num_refiner_layers",
    "mlp_ratio": "mlp_ratio",
    "patch_size": "patch_size",
    "patch_size_t": "patch_size_t",
    "text_embed_dim": "text_embed_dim",
    "rope_theta": "rope_theta",
    "rope_axes_dim": "rope_axes_dim",
}


def convert(
    config: dict,
    state_dict: dict[str, torch.Tensor],
    audio_model: SkyReelsV4AudioTransformer1DModel | None = None,
    audio_in_channels: int = 40,
    strict: bool = False,
    show_progress: bool = True,
) -> tuple[SkyReelsV4Transformer3DModel, list[str], list[str]]:
    """Returns the converted model, the source keys left unused, and the target keys initialised fresh."""
    target_config = {ours: config[theirs] for ours, theirs in CONFIG_KEYS.items() if theirs in config}
    target_config["rope_axes_dim"] = tuple(target_config["rope_axes_dim"])
    target_config["num_single_layers"] = 0  # HunyuanVideo-1.5 is dual-stream only
    target_config["audio_in_channels"] = audio_model.config.in_channels if audio_model else audio_in_channels
    model = SkyReelsV4Transformer3DModel(**target_config)
    target = model.state_dict()

    converted, unused = {}, []
    for key, tensor in tqdm(state_dict.items(), desc="tensors", disable=not show_progress):
        if key == "cond_type_embed.weight":
            converted["text_type_embedding"] = tensor[0]  # row 0 marks MLLM text tokens
            unused.append(f"{key}[1:] (ByT5 and image condition types)")
        elif key.startswith(UNUSED_PREFIXES):
            unused.append(key)
        elif tower_key_to_joint(key, "video") in target:
            converted[key] = tensor
        else:
            unused.append(key)
    if strict and unused:
        raise ValueError(f"--strict: {len(unused)} source keys have no place in the target: {unused[:10]} ...")
    return model, unused, load_video_tower(model, converted, audio_model)


@torch.no_grad()
def check_equivalence(source: HunyuanVideo15Transformer3DModel, converted: SkyReelsV4Transformer3DModel) -> float:
    """Max abs difference between the source and the converted video tower on random inputs (audio absent)."""
    config = source.config
    generator = torch.Generator().manual_seed(0)
    batch, frames, size, text_len = 1, 2, 4 * config.patch_size, 6
    hidden = torch.randn(batch, config.in_channels, frames, size, size, generator=generator)
    text = torch.randn(batch, text_len, config.text_embed_dim, generator=generator)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    mask[:, -2:] = 0
    timestep = torch.tensor([437.0])
    expected = source(
        hidden,
        timestep,
        text,
        mask,
        encoder_hidden_states_2=torch.zeros(batch, 1, config.text_embed_2_dim),
        encoder_attention_mask_2=torch.zeros(batch, 1, dtype=torch.long),
        image_embeds=torch.zeros(batch, 1, config.image_embed_dim),
    ).sample
    actual = converted(hidden.to(converted.dtype), timestep, text.to(converted.dtype), mask).sample
    return (expected.float() - actual.float()).abs().max().item()


def pipeline_around(transformer: SkyReelsV4Transformer3DModel, pipeline_source: str):
    """A video-only `SkyReelsV4Pipeline` from a HunyuanVideo-1.5 pipeline folder's VAE, MLLM and tokenizer."""
    from diffusers import AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler
    from transformers import AutoModel, AutoTokenizer

    from skyreels_diffusers import SkyReelsV4Pipeline

    for part in ("vae", "text_encoder", "tokenizer"):
        if not os.path.isdir(os.path.join(pipeline_source, part)):
            raise ValueError(f"`--pipeline_source` {pipeline_source!r} has no {part}/ folder.")
    return SkyReelsV4Pipeline(
        text_encoder=AutoModel.from_pretrained(pipeline_source, subfolder="text_encoder", use_safetensors=True),
        processor=AutoTokenizer.from_pretrained(pipeline_source, subfolder="tokenizer"),
        transformer=transformer,
        vae=AutoencoderKLHunyuanVideo15.from_pretrained(pipeline_source, subfolder="vae", use_safetensors=True),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="HunyuanVideo-1.5 transformer folder or .safetensors file")
    parser.add_argument("--source_config", default=None, help="config.json for a .safetensors --source")
    parser.add_argument("--output", required=True, help="new folder for the SkyReelsV4Transformer3DModel")
    parser.add_argument("--audio_source", default=None, help="a SkyReelsV4AudioTransformer1DModel folder (T2A)")
    parser.add_argument("--audio_in_channels", type=int, default=40, help="audio latent channels of a fresh tower")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pt/.ckpt weights (trusted only)")
    parser.add_argument("--strict", action="store_true", help="fail on any unused source key")
    parser.add_argument("--check", action="store_true", help="verify the video tower reproduces the source (fp32)")
    parser.add_argument(
        "--pipeline_source",
        default=None,
        help="a HunyuanVideo-1.5 Diffusers pipeline folder: write a whole SkyReelsV4Pipeline folder around the "
        "converted transformer with its vae/, text_encoder/ and tokenizer/ (no audio components)",
    )
    args = parser.parse_args(argv)
    try:
        config, state_dict = load_source(args.source, args.source_config, args.allow_pickle)
        audio_model = None
        if args.audio_source:
            audio_model = SkyReelsV4AudioTransformer1DModel.from_pretrained(args.audio_source, use_safetensors=True)
        model, unused, fresh = convert(config, state_dict, audio_model, args.audio_in_channels, args.strict)
        print(f"used {len(state_dict) - len(unused) + 1} of {len(state_dict)} source tensors; unused: {unused}")
        print(f"initialised fresh: {len(fresh)} target tensors, e.g. {fresh[:5]}")
        if args.check:
            source = HunyuanVideo15Transformer3DModel.from_config(config)
            source.load_state_dict(state_dict)
            difference = check_equivalence(source.eval(), model.eval())
            print(f"check: max |HunyuanVideo-1.5 - converted| = {difference:.3e} (fp32)")
            if difference > 1e-5:
                raise ValueError(f"The converted video tower differs from the source by {difference:.3e} > 1e-5.")
        model = model.to(DTYPES[args.dtype])
        save_atomically(pipeline_around(model, args.pipeline_source) if args.pipeline_source else model, args.output)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
