"""Tests of the tiny offline components (skyreels_diffusers.tiny_components)."""

import json
import math
import socket

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from transformers.utils import is_torchvision_available

from skyreels_diffusers import Qwen2_5_VLImageTextProcessor
from skyreels_diffusers.tiny_components import (
    AUDIO_VAE_KINDS,
    CAPTION_TAG_TOKENS,
    QWEN_SPECIAL_TOKENS,
    VIDEO_VAE_KINDS,
    build_tiny_audio_vae,
    build_tiny_text_encoder,
    build_tiny_video_vae,
)


@pytest.fixture(autouse=True, scope="module")
def _offline_single_thread():
    """No network, and one intra-op thread.

    These models are so small that thread hand-offs dominate: on a busy 2-core machine two threads made
    each op up to ~100x slower than one.
    """

    def refuse_connection(self, address, *args, **kwargs):
        raise AssertionError(f"tests must not touch the network, tried to connect to {address!r}")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse_connection)
        mp.setattr(socket.socket, "connect_ex", refuse_connection)
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_encoder_and_processor():
    return build_tiny_text_encoder(seed=0)


def _messages(content, system="Describe the video and the audio."):
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": content},
    ]


def _image(seed, size=(32, 32)):
    pixels = np.random.RandomState(seed).randint(0, 256, size=(*size, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def _public_config(model):
    # JSON round trip so tuples and lists compare equal; private keys record load-time bookkeeping.
    return json.loads(json.dumps({k: v for k, v in model.config.items() if not k.startswith("_")}))


def _state_dicts_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------------
# Text encoder
# --------------------------------------------------------------------------------------------------


def test_tokenizer_vocab_and_special_tokens(text_encoder_and_processor):
    text_encoder, processor = text_encoder_and_processor
    tokenizer = processor.tokenizer
    config = text_encoder.config

    assert len(tokenizer) == config.text_config.vocab_size == text_encoder.get_input_embeddings().weight.shape[0]
    assert tokenizer.padding_side == "right"
    assert tokenizer.pad_token == "<|endoftext|>"

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS + CAPTION_TAG_TOKENS}
    assert len(set(ids.values())) == len(ids)
    assert all(0 <= i < len(tokenizer) for i in ids.values())
    assert config.image_token_id == ids["<|image_pad|>"] == processor.image_token_id
    assert config.video_token_id == ids["<|video_pad|>"]
    assert config.vision_start_token_id == ids["<|vision_start|>"]
    assert config.vision_end_token_id == ids["<|vision_end|>"]
    assert config.text_config.pad_token_id == tokenizer.pad_token_id == ids["<|endoftext|>"]

    # Each tag and control token is one token, alone and inside a caption.
    for token, token_id in ids.items():
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [token_id]
    caption = "<text>OPEN</text><sfx>a door creaks</sfx><dialogue>Hi!</dialogue><singing>la</singing><bgm>piano</bgm>"
    caption_ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
    assert [i for i in caption_ids if i in ids.values()] == [ids[t] for t in CAPTION_TAG_TOKENS]
    # Tags are not special: they survive skip_special_tokens.
    assert tokenizer.decode(caption_ids, skip_special_tokens=True) == caption

    # Byte-level BPE: words outside the corpus, punctuation and non-ASCII text round-trip exactly.
    odd = "Zebras jog past 42 pyramids — naïve façade, 東京!"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd


def test_chat_template(text_encoder_and_processor):
    _, processor = text_encoder_and_processor
    content = [{"type": "image"}, {"type": "text", "text": "a cat"}]
    rendered = processor.apply_chat_template(
        _messages(content, "Be brief."), tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>a cat<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_prompt = processor.apply_chat_template(_messages(content, "Be brief."), tokenize=False)
    assert no_prompt == rendered[: -len("<|im_start|>assistant\n")]

    video = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}]}], tokenize=False)
    assert video == "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
    as_string = processor.apply_chat_template([{"role": "user", "content": "plain"}], tokenize=False)
    assert as_string == "<|im_start|>user\nplain<|im_end|>\n"
    # The tokenizer carries the same template, for text-only use.
    assert processor.tokenizer.chat_template == processor.chat_template

    with pytest.raises(Exception, match="content item type must be text, image or video"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "audio"}]}], tokenize=False)


def test_text_only_batch_right_padding(text_encoder_and_processor):
    text_encoder, processor = text_encoder_and_processor
    prompts = [
        processor.apply_chat_template(
            _messages([{"type": "text", "text": t}]), tokenize=False, add_generation_prompt=True
        )
        for t in ("a cat", "<sfx>rain on a tin roof</sfx> a dog runs across the park while birds sing")
    ]
    inputs = processor(text=prompts, images=None, padding=True, return_tensors="pt")
    mask = inputs["attention_mask"]
    assert mask.dtype == torch.long and mask[1].all() and not mask[0].all()
    assert mask[0, 0] == 1 and mask[0, -1] == 0  # right padding

    with torch.no_grad():
        out = text_encoder(**inputs, output_hidden_states=True)
    num_layers = text_encoder.config.text_config.num_hidden_layers
    assert len(out.hidden_states) == num_layers + 1
    for hidden in out.hidden_states:
        assert hidden.shape == (2, inputs["input_ids"].shape[1], text_encoder.config.text_config.hidden_size)
        assert torch.isfinite(hidden).all()

    # Right padding: the short prompt's real tokens match its unbatched encoding.
    single = processor(text=prompts[:1], padding=True, return_tensors="pt")
    with torch.no_grad():
        out_single = text_encoder(**single, output_hidden_states=True)
    n = int(mask[0].sum())
    assert single["input_ids"].shape[1] == n
    torch.testing.assert_close(out.hidden_states[-1][0, :n], out_single.hidden_states[-1][0], atol=1e-5, rtol=1e-5)


def test_image_batch(text_encoder_and_processor):
    text_encoder, processor = text_encoder_and_processor
    prompts = [
        processor.apply_chat_template(_messages([{"type": "text", "text": "a cat"}]), tokenize=False),
        processor.apply_chat_template(
            _messages([{"type": "image"}, {"type": "text", "text": "the man in @image_1 says hello"}]),
            tokenize=False,
            add_generation_prompt=True,
        ),
    ]
    inputs = processor(text=prompts, images=[_image(0)], padding=True, return_tensors="pt")
    # 32x32 -> 4x4 patches of 8x8 -> 2x2 merged vision tokens.
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert inputs["pixel_values"].shape == (16, 3 * 2 * 8 * 8)
    assert int((inputs["input_ids"] == text_encoder.config.image_token_id).sum()) == 4
    assert inputs["mm_token_type_ids"].sum() == 4  # image tokens are type 1

    with torch.no_grad():
        out = text_encoder(**inputs, output_hidden_states=True)
    assert out.hidden_states[-1].shape == (2, inputs["input_ids"].shape[1], 32)

    # The image reaches the text stream: another image changes the states of the tokens after it.
    other = processor(text=prompts, images=[_image(1)], padding=True, return_tensors="pt")
    with torch.no_grad():
        out_other = text_encoder(**other, output_hidden_states=True)
    assert torch.equal(out.hidden_states[-1][0], out_other.hidden_states[-1][0])
    assert not torch.allclose(out.hidden_states[-1][1], out_other.hidden_states[-1][1])

    # A larger image is capped at the max pixel budget (48x48 -> 3x3 tokens).
    big = processor(text=prompts[1:], images=[_image(2, size=(200, 200))], return_tensors="pt")
    assert big["image_grid_thw"].tolist() == [[1, 6, 6]]


def test_save_load_offline(text_encoder_and_processor, tmp_path):
    text_encoder, processor = text_encoder_and_processor
    processor.save_pretrained(tmp_path / "processor")
    text_encoder.save_pretrained(tmp_path / "text_encoder")

    loaded_class = Qwen2_5_VLProcessor if is_torchvision_available() else Qwen2_5_VLImageTextProcessor
    assert type(processor) is loaded_class
    by_class = loaded_class.from_pretrained(tmp_path / "processor", local_files_only=True)
    by_auto = AutoProcessor.from_pretrained(tmp_path / "processor", local_files_only=True)
    loaded_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        tmp_path / "text_encoder", local_files_only=True
    ).eval()
    assert _state_dicts_equal(text_encoder, loaded_encoder)

    prompts = [
        processor.apply_chat_template(_messages([{"type": "text", "text": "<bgm>jazz</bgm> a cat"}]), tokenize=False),
        processor.apply_chat_template(
            _messages([{"type": "image"}, {"type": "text", "text": "a dog"}]), tokenize=False
        ),
    ]
    images = [_image(3)]
    reference = processor(text=prompts, images=images, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = text_encoder(**reference, output_hidden_states=True).hidden_states
    for loaded in (by_class, by_auto):
        assert type(loaded) is loaded_class
        assert loaded.tokenizer.padding_side == "right"
        assert len(loaded.tokenizer) == len(processor.tokenizer)
        assert loaded.apply_chat_template(_messages([{"type": "text", "text": "x"}]), tokenize=False) == (
            processor.apply_chat_template(_messages([{"type": "text", "text": "x"}]), tokenize=False)
        )
        inputs = loaded(text=prompts, images=images, padding=True, return_tensors="pt")
        assert inputs.keys() == reference.keys()
        assert all(torch.equal(inputs[k], reference[k]) for k in reference)
        with torch.no_grad():
            got = loaded_encoder(**inputs, output_hidden_states=True).hidden_states
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


class _TextPipeline(DiffusionPipeline):
    def __init__(self, text_encoder, processor):
        super().__init__()
        self.register_modules(text_encoder=text_encoder, processor=processor)


def test_processor_round_trips_through_a_diffusion_pipeline(text_encoder_and_processor, tmp_path):
    # Whichever processor class the factory picked, DiffusionPipeline must save and load it.
    text_encoder, processor = text_encoder_and_processor
    _TextPipeline(text_encoder=text_encoder, processor=processor).save_pretrained(tmp_path)
    loaded = _TextPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert type(loaded.processor) is type(processor)
    assert loaded.processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert _state_dicts_equal(loaded.text_encoder, text_encoder)


@pytest.mark.skipif(is_torchvision_available(), reason="checks the no-torchvision fallback processor")
def test_video_input_without_torchvision_is_refused(text_encoder_and_processor):
    _, processor = text_encoder_and_processor
    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="videos.*torchvision"):
        processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[frames], return_tensors="pt")


def test_text_encoder_seeding():
    rng_before = torch.random.get_rng_state()
    a, processor_a = build_tiny_text_encoder(seed=0)
    b, processor_b = build_tiny_text_encoder(seed=0)
    c, _ = build_tiny_text_encoder(seed=1)
    # The factories leave the caller's RNG stream alone.
    assert torch.equal(rng_before, torch.random.get_rng_state())
    assert _state_dicts_equal(a, b)
    assert not _state_dicts_equal(a, c)
    # The tokenizer does not depend on the seed.
    assert processor_a.tokenizer.get_vocab() == processor_b.tokenizer.get_vocab()
    assert processor_a.tokenizer.backend_tokenizer.to_str() == processor_b.tokenizer.backend_tokenizer.to_str()


# --------------------------------------------------------------------------------------------------
# Video VAEs
# --------------------------------------------------------------------------------------------------


def _video_vae_geometry(vae):
    """(temporal ratio, spatial ratio, latent channels) read the way each pipeline family reads them."""
    config = vae.config
    if "temporal_compression_ratio" in config:  # AutoencoderKLHunyuanVideo15
        return config.temporal_compression_ratio, config.spatial_compression_ratio, config.latent_channels
    return config.scale_factor_temporal, config.scale_factor_spatial, config.z_dim  # AutoencoderKLWan


CAUSAL_VIDEO_VAE_KINDS = ("hunyuanvideo15", "wan")


def test_image_vae_runs_frame_by_frame():
    from skyreels_diffusers.pipelines.vae_utils import VideoVAESpec, decode_video, encode_video, video_vae_spec

    vae = build_tiny_video_vae("image", seed=0)
    assert video_vae_spec(vae) == VideoVAESpec(temporal_compression=1, spatial_compression=4, latent_channels=4)
    video = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = encode_video(vae, video)
        assert latents.shape == (2, 4, 3, 8, 8)
        frame = vae.encode(video[1, :, 2][None]).latent_dist.mode()
        torch.testing.assert_close(latents[1, :, 2], ((frame - 0.0) * vae.config.scaling_factor)[0])
        assert decode_video(vae, latents).shape == video.shape


@pytest.mark.parametrize("kind", CAUSAL_VIDEO_VAE_KINDS)
def test_video_vae_shapes(kind):
    vae = build_tiny_video_vae(kind, seed=0)
    temporal, spatial, channels = _video_vae_geometry(vae)
    assert temporal == 4 and spatial == 4
    assert channels == {"hunyuanvideo15": 8, "wan": 4}[kind]

    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(video).latent_dist
        assert isinstance(posterior, DiagonalGaussianDistribution)
        latents = posterior.mode()
        assert latents.shape == (1, channels, 3, 8, 8)  # (9 - 1) / 4 + 1 latent frames
        decoded = vae.decode(latents).sample
        assert decoded.shape == video.shape
        assert torch.isfinite(decoded).all()

        # Causal: a single image is one latent frame; 4k + 1 frames are k + 1 latent frames.
        for frames, latent_frames in ((1, 1), (5, 2)):
            z = vae.encode(torch.zeros(1, 3, frames, 32, 48)).latent_dist.mode()
            assert z.shape == (1, channels, latent_frames, 8, 12)
            assert vae.decode(z).sample.shape == (1, 3, frames, 32, 48)


@pytest.mark.parametrize("kind", CAUSAL_VIDEO_VAE_KINDS)
def test_video_vae_batch(kind):
    vae = build_tiny_video_vae(kind, seed=0)
    if kind == "hunyuanvideo15":
        # diffusers 0.42.1: the causal attention of AutoencoderKLHunyuanVideo15's mid block builds a
        # (B, L, L) mask for (B, 1, L, C) queries, which fails for B > 1; slicing runs one sample at a time.
        vae.enable_slicing()
    _, _, channels = _video_vae_geometry(vae)
    video = torch.rand(2, 3, 5, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(video).latent_dist.mode()
        assert latents.shape == (2, channels, 2, 8, 8)
        single = vae.encode(video[1:]).latent_dist.mode()
        torch.testing.assert_close(latents[1:], single, atol=1e-5, rtol=1e-5)
        assert vae.decode(latents).sample.shape == video.shape


@pytest.mark.parametrize("kind", CAUSAL_VIDEO_VAE_KINDS)
def test_video_vae_seeding_and_save_load(kind, tmp_path):
    a, b, c = (build_tiny_video_vae(kind, seed=s) for s in (0, 0, 1))
    assert _state_dicts_equal(a, b)
    assert not _state_dicts_equal(a, c)

    a.save_pretrained(tmp_path)
    loaded = type(a).from_pretrained(tmp_path, local_files_only=True).eval()
    assert _public_config(loaded) == _public_config(a)
    z = torch.randn(1, _video_vae_geometry(a)[2], 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.decode(z).sample, a.decode(z).sample)


# --------------------------------------------------------------------------------------------------
# Audio VAEs
# --------------------------------------------------------------------------------------------------


def test_mmaudio_round_trip_shapes():
    vae, vocoder = build_tiny_audio_vae("mmaudio", seed=0)
    assert vae.config.sample_rate == 44_100
    assert vae.latent_hop_length == 2 * vae.config.hop_length == 1024
    assert math.prod(vocoder.config.upsample_rates) == vae.config.hop_length
    assert vocoder.config.num_mels == vae.config.mel_bins

    num_latents = 10
    waveform = torch.rand(2, num_latents * 1024, generator=torch.Generator().manual_seed(0)) * 2 - 1  # mono
    with torch.no_grad():
        posterior = vae.encode(waveform).latent_dist
        assert isinstance(posterior, DiagonalGaussianDistribution)
        latents = posterior.mode()
        assert latents.shape == (2, vae.config.latent_channels, num_latents)
        mel = vae.decode(latents).sample
        assert mel.shape == (2, vae.config.mel_bins, 2 * num_latents)
        audio = vocoder(mel).sample
    assert audio.shape == (2, 1, num_latents * 1024)
    assert audio.abs().max() <= 1.0
    # A length that is not a multiple of the hop drops the partial latent.
    with torch.no_grad():
        assert vae.encode(waveform[:, :-7]).latent_dist.mode().shape[-1] == num_latents - 1


def test_oobleck_round_trip_shapes():
    vae, vocoder = build_tiny_audio_vae("oobleck", seed=0)
    assert vocoder is None
    assert vae.config.sampling_rate == 44_100
    assert vae.hop_length == math.prod(vae.config.downsampling_ratios) == 2048

    num_latents = 6
    waveform = torch.rand(2, 2, num_latents * 2048, generator=torch.Generator().manual_seed(0)) * 2 - 1  # stereo
    with torch.no_grad():
        latents = vae.encode(waveform).latent_dist.mode()
        assert latents.shape == (2, vae.config.decoder_input_channels, num_latents)
        audio = vae.decode(latents).sample
    assert audio.shape == waveform.shape


@pytest.mark.parametrize("kind", AUDIO_VAE_KINDS)
def test_audio_vae_seeding_and_save_load(kind, tmp_path):
    (a, voc_a), (b, voc_b), (c, voc_c) = (build_tiny_audio_vae(kind, seed=s) for s in (0, 0, 1))
    assert _state_dicts_equal(a, b)
    assert not _state_dicts_equal(a, c)
    if kind == "mmaudio":
        assert _state_dicts_equal(voc_a, voc_b)
        assert not _state_dicts_equal(voc_a, voc_c)

    a.save_pretrained(tmp_path / "vae")
    loaded = type(a).from_pretrained(tmp_path / "vae", local_files_only=True).eval()
    channels = a.config.latent_channels if kind == "mmaudio" else a.config.decoder_input_channels
    z = torch.randn(1, channels, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.decode(z).sample, a.decode(z).sample)
    if kind == "mmaudio":
        voc_a.save_pretrained(tmp_path / "vocoder")
        loaded_vocoder = type(voc_a).from_pretrained(tmp_path / "vocoder", local_files_only=True).eval()
        mel = torch.randn(1, a.config.mel_bins, 3, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(loaded_vocoder(mel).sample, voc_a(mel).sample)


# --------------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, accepted", [(build_tiny_video_vae, VIDEO_VAE_KINDS), (build_tiny_audio_vae, AUDIO_VAE_KINDS)]
)
def test_bad_kind(build, accepted):
    with pytest.raises(ValueError) as error:
        build(kind="nope")
    message = str(error.value)
    assert "`kind`" in message and "'nope'" in message
    assert all(repr(k) in message for k in accepted)
    with pytest.raises(TypeError, match="`kind`.*int"):
        build(kind=3)


@pytest.mark.parametrize("build", [build_tiny_text_encoder, build_tiny_video_vae, build_tiny_audio_vae])
def test_bad_seed(build):
    with pytest.raises(ValueError, match="`seed`.*-1"):
        build(seed=-1)
    with pytest.raises(TypeError, match="`seed`.*float"):
        build(seed=1.5)
    with pytest.raises(TypeError, match="`seed`.*bool"):
        build(seed=True)
