"""Multimodal guidance: per-modality CFG, spatio-temporal guidance (STG), modality guidance and rescale, on Diffusers'
guider protocol, with one transformer pass per term that is on, shared by both modalities."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.guiders import AdaptiveProjectedGuidance, SkipLayerGuidance
from diffusers.hooks import LayerSkipConfig

from skyreels_diffusers.models.transformer_skyreels_v4 import SkyReelsV4TransformerOutput
from skyreels_diffusers.pipelines.denoising import LatentStream, PassInputs, denoise
from skyreels_diffusers.pipelines.guidance import GuidanceArguments, multimodal_guider
from skyreels_diffusers.tiny_components import build_tiny_pipeline, build_tiny_transformer


PROMPT = "<text>A red ball bounces in a box.</text><sfx>A knock on every bounce.</sfx>"


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline()


class ToyTransformer(torch.nn.Module):
    """Predicts a different, known field for every kind of pass, so the guided prediction can be written out by hand:
    the prompt's mean says conditional or unconditional, the flags say isolated or perturbed (per modality)."""

    dtype = torch.float32

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.fields = {
            name: (torch.randn(1, 2, 3, 4, 4, generator=generator), torch.randn(1, 2, 6, generator=generator))
            for name in ("cond", "uncond", "isolated", "video_perturbed", "audio_perturbed")
        }
        self.calls = []

    def forward(self, hidden_states, audio_hidden_states, timestep, audio_timestep, encoder_hidden_states, **flags):
        conditional = bool(encoder_hidden_states.mean() > 0)
        if flags.get("isolate_modalities"):
            kind = "isolated"
        elif flags.get("spatio_temporal_guidance_blocks") or flags.get("audio_spatio_temporal_guidance_blocks"):
            kind = "perturbed"
        else:
            kind = "cond" if conditional else "uncond"
        self.calls.append(kind)
        video, audio = self.fields["cond" if kind == "perturbed" else kind]
        if flags.get("spatio_temporal_guidance_blocks"):
            video = self.fields["video_perturbed"][0]
        if flags.get("audio_spatio_temporal_guidance_blocks"):
            audio = self.fields["audio_perturbed"][1]
            video = video + 100.0  # through the exchange, perturbing the audio would change the video's prediction
        return SkyReelsV4TransformerOutput(sample=video, audio_sample=audio)


def one_step(model, video_guider, audio_guider):
    """One Euler step of both modalities from zero latents: the result is `(sigma_1 - sigma_0) * guided prediction`."""
    streams = []
    for name, input_name, output_name, timestep_name, shape, guider in (
        ("latents", "hidden_states", "sample", "timestep", (1, 2, 3, 4, 4), video_guider),
        ("audio_latents", "audio_hidden_states", "audio_sample", "audio_timestep", (1, 2, 6), audio_guider),
    ):
        scheduler = FlowMatchEulerDiscreteScheduler()
        scheduler.set_timesteps(2)
        streams.append(
            LatentStream(
                name,
                torch.zeros(shape),
                input_name,
                output_name,
                timestep_name,
                scheduler,
                scheduler.timesteps[:1],
                guider=guider,
            )
        )
    inputs = PassInputs(
        {"encoder_hidden_states": torch.ones(1, 3, 4)}, {"encoder_hidden_states": -torch.ones(1, 3, 4)}
    )
    result = denoise(model, streams, inputs)
    step = streams[0].scheduler.sigmas[1] - streams[0].scheduler.sigmas[0]
    return result["latents"] / step, result["audio_latents"] / step


def by_hand(cond, uncond, perturbed, isolated, cfg, stg, modality, rescale):
    pred = cond + (cfg - 1) * (cond - uncond) + stg * (cond - perturbed) + (modality - 1) * (cond - isolated)
    if rescale:
        dims = tuple(range(1, cond.ndim))
        pred = pred * (rescale * cond.std(dim=dims, keepdim=True) / pred.std(dim=dims, keepdim=True) + 1 - rescale)
    return pred


@pytest.mark.parametrize(
    "video, audio",
    [
        ((3.0, 0.0, 1.0, 0.0), (7.0, 0.0, 1.0, 0.0)),  # per-modality CFG only
        ((3.0, 1.0, 3.0, 0.7), (7.0, 1.0, 3.0, 0.7)),  # LTX-2's defaults
        ((1.0, 2.0, 1.0, 0.0), (1.0, 0.0, 2.5, 0.0)),  # STG on the video alone, modality on the audio alone
    ],
)
def test_each_term_reproduces_the_formula(video, audio):
    model = ToyTransformer()
    guiders = [
        # blocks named for both modalities: only a modality whose STG is on is perturbed
        multimodal_guider(GuidanceArguments(cfg, stg, modality, rescale, [0]))
        for cfg, stg, modality, rescale in (video, audio)
    ]
    guided = one_step(model, *guiders)
    fields = model.fields
    for index, (prediction, (cfg, stg, modality, rescale)) in enumerate(zip(guided, (video, audio))):
        perturbed = fields["video_perturbed" if index == 0 else "audio_perturbed"][index]
        if index == 0 and audio[1]:  # one STG pass for both: the audio's perturbation reaches the video
            perturbed = perturbed + 100.0
        expected = by_hand(
            fields["cond"][index],
            fields["uncond"][index],
            perturbed,
            fields["isolated"][index],
            cfg,
            stg,
            modality,
            rescale,
        )
        # The guider sums the same terms in its own order: equal to float32 rounding (measured max 5e-7).
        torch.testing.assert_close(prediction, expected, rtol=0, atol=1e-5)
    # One pass per term that is on in either modality, each run once for both.
    expected_passes = {"cond"}
    expected_passes |= {"uncond"} if video[0] != 1 or audio[0] != 1 else set()
    expected_passes |= {"perturbed"} if video[1] or audio[1] else set()
    expected_passes |= {"isolated"} if video[2] != 1 or audio[2] != 1 else set()
    assert sorted(model.calls) == sorted(expected_passes)


def count_passes(pipe, **kwargs):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        out = pipe(
            PROMPT,
            negative_prompt="blurry",
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            **kwargs,
        )
    finally:
        handle.remove()
    return out, len(calls)


@pytest.mark.parametrize(
    "settings, passes",
    [
        ({"guidance_scale": 1.0}, 1),  # off means off: one pass, whatever the other defaults
        ({"guidance_scale": 1.0, "stg_scale": 0.0, "modality_scale": 1.0, "guidance_rescale": 0.7}, 1),
        ({"guidance_scale": 4.0}, 2),
        ({"guidance_scale": 1.0, "audio_guidance_scale": 4.0}, 2),
        ({"guidance_scale": 4.0, "stg_scale": 1.0, "spatio_temporal_guidance_blocks": [0]}, 3),
        ({"guidance_scale": 1.0, "audio_modality_scale": 3.0}, 2),
        (
            {
                "guidance_scale": 3.0,
                "audio_guidance_scale": 7.0,
                "stg_scale": 1.0,
                "spatio_temporal_guidance_blocks": [1],
                "audio_spatio_temporal_guidance_blocks": [0],
                "modality_scale": 3.0,
                "guidance_rescale": 0.7,
            },
            4,
        ),
    ],
)
def test_passes_per_step_match_the_terms_that_are_on(pipe, settings, passes):
    assert count_passes(pipe, **settings)[1] == 2 * passes  # two steps


def test_batched_and_sequential_passes_agree(pipe):
    settings = {"guidance_scale": 4.0, "stg_scale": 1.0, "spatio_temporal_guidance_blocks": [0], "modality_scale": 2.0}
    sequential, _ = count_passes(pipe, **settings, batched_guidance=False)
    batched, _ = count_passes(pipe, **settings, batched_guidance=True)
    # Padding the negative prompt with masked tokens changes only the summation order (measured max 1e-6).
    torch.testing.assert_close(batched.frames, sequential.frames, rtol=0, atol=1e-5)
    torch.testing.assert_close(batched.audio, sequential.audio, rtol=0, atol=1e-5)


def test_stg_perturbs_the_named_blocks_of_each_modality():
    model = build_tiny_transformer()
    with torch.no_grad():  # non-zero exchange and outputs, so every block shapes both predictions
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 17, 3, 4, 6, generator=generator),
        "timestep": torch.tensor([600.0]),
        "encoder_hidden_states": torch.randn(1, 5, 32, generator=generator),
        "audio_hidden_states": torch.randn(1, 8, 24, generator=generator),
    }
    with torch.no_grad():
        plain = model(**inputs)
        video_block = model(**inputs, spatio_temporal_guidance_blocks=[1])
        audio_block = model(**inputs, audio_spatio_temporal_guidance_blocks=[1])
        isolated = model(**inputs, isolate_modalities=True)
    for output in (video_block, audio_block, isolated):
        assert not torch.equal(output.sample, plain.sample) and not torch.equal(
            output.audio_sample, plain.audio_sample
        )
    assert not torch.equal(video_block.sample, audio_block.sample)
    with pytest.raises(ValueError, match="spatio_temporal_guidance_blocks"):
        model(**inputs, spatio_temporal_guidance_blocks=[2])  # one dual- and one single-stream block


def test_any_diffusers_guider_per_modality(pipe):
    skip = SkipLayerGuidance(
        guidance_scale=3.0,
        skip_layer_guidance_scale=2.0,
        skip_layer_guidance_start=0.0,
        skip_layer_guidance_stop=1.0,
        skip_layer_config=LayerSkipConfig(indices=[0], fqn="transformer_blocks", skip_attention=True),
    )
    out, passes = count_passes(pipe, guider=skip, audio_guider=AdaptiveProjectedGuidance(guidance_scale=3.0))
    # conditional and unconditional passes, and Diffusers' skip-layer pass after the first step (its window is open)
    assert passes == 2 + 3
    plain, _ = count_passes(pipe, guidance_scale=3.0)
    assert not np.allclose(out.frames, plain.frames)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"stg_scale": 1.0}, "spatio_temporal_guidance_blocks"),
        ({"stg_scale": 1.0, "spatio_temporal_guidance_blocks": [5]}, "spatio_temporal_guidance_blocks"),
        ({"audio_modality_scale": -1.0}, "audio_modality_scale"),
        ({"guidance_rescale": 1.5}, "guidance_rescale"),
        ({"audio_guider": "cfg"}, "audio_guider"),
    ],
)
def test_bad_guidance_arguments_are_refused_by_name(pipe, settings, message):
    with pytest.raises((ValueError, TypeError), match=message):
        count_passes(pipe, **settings)
