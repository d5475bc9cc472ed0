"""Compose SkyReels-V4 from modular blocks: the base stage with a guider per modality, then the Refiner sharing the
base stage's components through a `ComponentsManager`; writes an MP4 with its soundtrack.

    python examples/modular/compose_blocks.py --prompt "<text>A red circle bounces.</text><sfx>A knock.</sfx>" \\
        --out modular.mp4

Runs on the embedded tiny default (`pipelines/skyreels-v4-tiny`) unless `--model` names another folder.
"""

import argparse
import os

import torch
from diffusers.guiders import AdaptiveProjectedGuidance, ClassifierFreeGuidance
from diffusers.modular_pipelines import ComponentsManager

from skyreels_diffusers.modular_pipelines import SkyReelsV4Blocks, SkyReelsV4RefinerModularPipeline
from skyreels_diffusers.utils import export_to_video_with_audio


HERE = os.path.dirname(os.path.abspath(__file__))
TINY_DEFAULT = os.path.join(HERE, "..", "..", "pipelines", "skyreels-v4-tiny")
SHARED = ("text_encoder", "processor", "vae", "audio_vae", "scheduler")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="<text>A red circle bounces in a box.</text><sfx>A hollow knock.</sfx>")
    parser.add_argument("--model", default=TINY_DEFAULT, help="a pipeline folder (with a `refiner/` subfolder)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="modular.mp4")
    args = parser.parse_args()

    manager = ComponentsManager()
    # 1. The base stage from the text-to-audio-video blocks (named steps: input, text_encoder, denoise, decode; any
    #    can be replaced in `blocks.sub_blocks` before the pipeline is built).
    blocks = SkyReelsV4Blocks()
    print(blocks)
    base = blocks.init_pipeline(args.model, components_manager=manager, collection="skyreels")
    base.load_components()
    # Guidance per modality: adaptive projected guidance for the picture, plain CFG at a lower scale for the sound.
    base.update_components(
        guider=AdaptiveProjectedGuidance(guidance_scale=5.0),
        audio_guider=ClassifierFreeGuidance(guidance_scale=3.0),
    )
    generator = torch.Generator().manual_seed(args.seed)
    stage1 = base(
        prompt=args.prompt,
        num_inference_steps=args.steps,
        generator=generator,
        output_type="latent",
        output=["latents", "audio_latents", "audio_duration"],
    )

    # 2. The Refiner stage: its own transformer, every other component shared with the base stage.
    refiner = SkyReelsV4RefinerModularPipeline.from_pretrained(
        args.model, components_manager=manager, collection="skyreels"
    )
    refiner.load_components(names=["transformer"])
    refiner.update_components(**{name: getattr(base, name) for name in SHARED})
    out = refiner(
        prompt=args.prompt,
        low_res_latents=stage1["latents"],
        audio_latents=stage1["audio_latents"],
        num_inference_steps=args.steps,
        generator=generator,
        output=["videos", "audio", "audio_sample_rate"],
    )
    fps = refiner.transformer.config.fps * refiner.transformer.config.temporal_upscale_factor
    export_to_video_with_audio(
        out["videos"][0], args.out, fps=fps, audio=out["audio"][0], audio_sample_rate=out["audio_sample_rate"]
    )
    print(manager)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
