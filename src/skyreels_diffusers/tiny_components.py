"""Tiny, randomly initialised, offline-built components of the real library classes.

The SkyReels-V4 pipelines are assembled from a multimodal LLM text encoder, a video VAE and an audio
VAE (docs/design.md, "Latent spaces"). Tests, the random-weight demo and the training of the tiny default
model need real instances of those classes without downloading anything (no network at run time or in tests).
Every factory here builds one in well under a second, deterministically from ``seed``:

- :func:`build_tiny_text_encoder`: ``Qwen2_5_VLForConditionalGeneration`` (text + vision tower) and a
  processor whose byte-level BPE tokenizer is trained in memory on a small built-in caption corpus;
- :func:`build_tiny_video_vae`: ``AutoencoderKLHunyuanVideo15`` or ``AutoencoderKLWan``, both with the
  real 4x causal temporal compression (``4k + 1`` frames -> ``k + 1`` latent frames);
- :func:`build_tiny_audio_vae`: ``MMAudioVAE`` + ``MMAudioVocoder`` (44.1 kHz, 1024 samples per
  latent, as the real ones) or ``AutoencoderOobleck`` (44.1 kHz, 2048 samples per latent, no vocoder).

Weights are random, so outputs carry no meaning; shapes, dtypes, configs and APIs are the real ones.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLHunyuanVideo15,
    AutoencoderKLWan,
    AutoencoderOobleck,
    MMAudioVAE,
    MMAudioVocoder,
)
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer
from transformers.utils import is_torchvision_available

from .processing_qwen2_5_vl import Qwen2_5_VLImageTextProcessor


__all__ = [
    "AUDIO_VAE_KINDS",
    "CAPTION_TAG_TOKENS",
    "QWEN_SPECIAL_TOKENS",
    "TINY_QWEN_CHAT_TEMPLATE",
    "VIDEO_VAE_KINDS",
    "build_tiny_audio_vae",
    "build_tiny_text_encoder",
    "build_tiny_video_vae",
]

VIDEO_VAE_KINDS = ("hunyuanvideo15", "wan", "image")
AUDIO_VAE_KINDS = ("mmaudio", "oobleck")

# Control tokens of Qwen2.5-VL, in the relative order the real vocabulary has them. `<|endoftext|>` is
# the pad (and unk) token, as in the real tokenizer.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Structured-caption tags of SkyReels-V4 (paper: visual text, sound effects, dialogue, singing, music).
CAPTION_TAG_TOKENS = (
    "<text>",
    "</text>",
    "<sfx>",
    "</sfx>",
    "<dialogue>",
    "</dialogue>",
    "<singing>",
    "</singing>",
    "<bgm>",
    "</bgm>",
)

# Renders ChatML like Qwen2.5-VL: each message is `<|im_start|>role\n...<|im_end|>\n`; content is either
# a string or a list of {"type": "text"|"image"|"video"} items, and each image/video item becomes one
# placeholder that the processor expands to the right number of vision tokens. Unlike the real template
# it adds no default system prompt: the system prompt is pipeline config (docs/design.md, "Text").
TINY_QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}"
    "{{- item['text'] -}}"
    "{%- elif item['type'] == 'image' -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- else -%}"
    "{{- raise_exception('content item type must be text, image or video, got ' + item['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

# Small English corpus of audio-visual captions the tiny BPE is trained on. Words outside it still
# tokenize (byte-level BPE covers all 256 bytes), only into more pieces.
_CAPTION_CORPUS = (
    "You are a helpful assistant. Describe the video and the audio in detail.",
    "system user assistant describe image video frame reference audio prompt caption",
    "A red ball bounces on a wooden floor in a bright room, each bounce makes a sharp knock.",
    "A small dog runs across the green grass in a sunny park while birds sing in the trees.",
    "A woman stands by the window and says hello, her voice is soft and calm.",
    "A man plays the guitar on a stage under blue lights and sings a slow song.",
    "Rain falls on the roof of an old house at night, thunder rumbles in the distance.",
    "The camera slowly pans left over the city skyline at sunset, cars hum on the street below.",
    "Waves crash on the rocky shore, wind blows and seagulls cry above the sea.",
    "A cat sleeps on a blue sofa, a clock ticks quietly on the wall.",
    "Two children laugh and talk while they build a sand castle on the beach.",
    "A train passes through a snowy forest, the wheels clatter and the horn blows twice.",
    "Close up of hands typing on a keyboard, soft piano music plays in the background.",
    "A yellow square moves to the right, a green circle grows, a white triangle spins.",
    "The sound of footsteps on gravel, a door opens and closes, a bell rings.",
    "An orchestra plays loud drums and violins, the crowd claps and cheers.",
    "A bird flies over a quiet lake in the morning, water splashes, a fish jumps.",
    "<text>OPEN</text> <sfx>a beep</sfx> <dialogue>Hello there!</dialogue> "
    "<singing>la la la</singing> <bgm>calm piano</bgm>",
    "0 1 2 3 4 5 6 7 8 9 first second third left right up down fast slow loud quiet",
)

# Target size of the BPE part of the vocabulary; the trainer may stop earlier once every corpus word is
# one token. The special tokens and tags are appended after it, as in the real Qwen vocabulary.
_TINY_BPE_VOCAB_SIZE = 400

# Vision tower geometry: 8x8 patches merged 2x2, so one vision token covers 16x16 pixels and a 32x32
# image gives 4 tokens. The image budget keeps at most 48x48 pixels (9 tokens).
_TINY_PATCH_SIZE = 8
_TINY_MERGE_SIZE = 2
_TINY_TEMPORAL_PATCH_SIZE = 2
_TINY_MIN_PIXELS = 16 * 16
_TINY_MAX_PIXELS = 48 * 48


def _check_seed(seed: object) -> int:
    # bool is an int subclass, but `seed=True` is a bug, not a seed.
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be a non-negative int, got {seed!r} of type {type(seed).__name__}.")
    if seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed}.")
    return seed


def _check_kind(kind: object, accepted: tuple[str, ...]) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"`kind` must be one of {accepted}, got {kind!r} of type {type(kind).__name__}.")
    if kind not in accepted:
        raise ValueError(f"`kind` must be one of {accepted}, got {kind!r}.")
    return kind


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # Seed the weight initialisation without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------------
# Text encoder
# --------------------------------------------------------------------------------------------------


def _build_tiny_tokenizer() -> Qwen2Tokenizer:
    """Train a byte-level BPE on the built-in corpus and wrap it in the real ``Qwen2Tokenizer`` class."""
    # Train with the exact pre-tokenization Qwen2Tokenizer applies, so the learned merges fit it.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_BPE_VOCAB_SIZE,
        min_frequency=1,
        # All 256 byte symbols, so any UTF-8 text tokenizes without an unknown token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(_CAPTION_CORPUS, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]

    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(merge) for merge in trained["merges"]],
        # Right padding keeps every real token at the position it has unpadded (Qwen2.5-VL's text-only
        # path numbers positions 0..L-1 regardless of the mask), so batched == unbatched embeddings.
        padding_side="right",
        model_max_length=2048,
    )
    # Qwen2Tokenizer already registered <|endoftext|> (pad/eos/unk); append the rest in the real order.
    tokenizer.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS[1:]],
        special_tokens=True,
    )
    # Tags are ordinary (non-special) added tokens: one id each, and kept by `skip_special_tokens` decoding.
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in CAPTION_TAG_TOKENS])
    tokenizer.chat_template = TINY_QWEN_CHAT_TEMPLATE
    return tokenizer


def _build_tiny_processor(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLProcessor:
    geometry = {
        "patch_size": _TINY_PATCH_SIZE,
        "temporal_patch_size": _TINY_TEMPORAL_PATCH_SIZE,
        "merge_size": _TINY_MERGE_SIZE,
        "min_pixels": _TINY_MIN_PIXELS,
        "max_pixels": _TINY_MAX_PIXELS,
    }
    if is_torchvision_available():
        # The same backend AutoImageProcessor picks when it loads the saved processor back.
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        return Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(**geometry),
            tokenizer=tokenizer,
            # Bound a clip's total pixels the reference way (and silence the warning about the old default).
            video_processor=Qwen2VLVideoProcessor(**geometry, cap_pixels_per_frame=True, max_video_tokens=2048),
            chat_template=TINY_QWEN_CHAT_TEMPLATE,
        )

    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2_5_VLImageTextProcessor(
        image_processor=Qwen2VLImageProcessorPil(**geometry),
        tokenizer=tokenizer,
        chat_template=TINY_QWEN_CHAT_TEMPLATE,
    )


def build_tiny_text_encoder(seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Build a tiny random ``Qwen2_5_VLForConditionalGeneration`` and its processor, offline.

    Text model: hidden size 32, 2 layers, 2 query heads / 1 key-value head (head dim 16), multimodal RoPE
    sections ``[2, 3, 3]`` (t, h, w; they sum to head_dim / 2 as the real ``[16, 24, 24]`` does for 128).
    Vision tower: hidden size 32, 2 blocks (one windowed, the last one full attention, like the real
    model's pattern), 8x8 patches, 2x2 spatial merge, ``out_hidden_size`` = text hidden size.

    The processor is a ``Qwen2_5_VLProcessor`` (image + video processors) when torchvision is installed;
    without torchvision it is :class:`Qwen2_5_VLImageTextProcessor` (text + images only), because
    transformers cannot build the stock class there. Its tokenizer is the real ``Qwen2Tokenizer`` class
    over a byte-level BPE trained on a built-in caption corpus, with the Qwen control tokens and the
    SkyReels caption tags as single tokens; ``len(processor.tokenizer)`` equals the embedding size. The
    tokenizer pads on the right.

    Args:
        seed: Seed of the weight initialisation. The tokenizer does not depend on it.

    Returns:
        ``(text_encoder, processor)``, the model in eval mode, float32, on CPU.
    """
    seed = _check_seed(seed)
    tokenizer = _build_tiny_tokenizer()
    processor = _build_tiny_processor(tokenizer)
    token_id = tokenizer.convert_tokens_to_ids

    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": tokenizer.model_max_length,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": _TINY_PATCH_SIZE,
            "temporal_patch_size": _TINY_TEMPORAL_PATCH_SIZE,
            "spatial_merge_size": _TINY_MERGE_SIZE,
            # Windows of 2x2 merged tokens (window_size // merge // patch), like the real 112 // 2 // 14 = 4.
            "window_size": 2 * _TINY_MERGE_SIZE * _TINY_PATCH_SIZE,
            "fullatt_block_indexes": [1],
            "out_hidden_size": 32,
            "tokens_per_second": 2,
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    with _seeded(seed):
        text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    return text_encoder.eval(), processor


# --------------------------------------------------------------------------------------------------
# Video VAEs
# --------------------------------------------------------------------------------------------------


def build_tiny_video_vae(
    kind: str = "hunyuanvideo15", seed: int = 0
) -> AutoencoderKLHunyuanVideo15 | AutoencoderKLWan | AutoencoderKL:
    """Build a tiny random video VAE with the real 4x causal temporal compression.

    ``"hunyuanvideo15"``: ``AutoencoderKLHunyuanVideo15``, 8 latent channels, 4x spatial compression (the
    smallest the class supports with 4x temporal: its encoder folds time into the spatial downsamplers),
    ``scaling_factor`` left at the real 1.03682. ``"wan"``: ``AutoencoderKLWan``, 4 latent channels
    (``z_dim``), 4x spatial; its ``latents_mean`` / ``latents_std`` are placeholders chosen away from 0 / 1
    so that a pipeline that forgets to apply them fails its tests.

    Both map ``(B, 3, 4k + 1, H, W)`` to latents ``(B, C, k + 1, H / 4, W / 4)`` and back. ``"image"``: an image
    ``AutoencoderKL`` (4x spatial, 4 channels) that the pipelines apply frame by frame (no temporal compression).

    Args:
        kind: ``"hunyuanvideo15"``, ``"wan"`` or ``"image"``.
        seed: Seed of the weight initialisation.

    Returns:
        The VAE in eval mode, float32, on CPU.
    """
    kind = _check_kind(kind, VIDEO_VAE_KINDS)
    seed = _check_seed(seed)
    with _seeded(seed):
        if kind == "hunyuanvideo15":
            # Three levels: the first two each halve H, W and T (4x4x4 in all), the last keeps the size.
            # block_out_channels[-1] must be a multiple of 2 * latent_channels (encoder shortcut groups).
            vae = AutoencoderKLHunyuanVideo15(
                in_channels=3,
                out_channels=3,
                latent_channels=8,
                block_out_channels=(8, 16, 16),
                layers_per_block=1,
                spatial_compression_ratio=4,
                temporal_compression_ratio=4,
            )
        elif kind == "image":
            vae = AutoencoderKL(
                down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(8, 16, 16),
                latent_channels=4,
                norm_num_groups=4,
                mid_block_add_attention=False,
            )
        else:
            # Wan encodes the first frame alone and then chunks of 4 frames, so 4x temporal is built in;
            # dim_mult of length 3 gives two 2x spatial downsamplers, both also downsampling time.
            # `scale_factor_spatial` is declarative (pipelines read it), so it must match dim_mult.
            vae = AutoencoderKLWan(
                base_dim=8,
                z_dim=4,
                dim_mult=[1, 2, 2],
                num_res_blocks=1,
                attn_scales=[],
                temperal_downsample=[True, True],
                latents_mean=[0.25, -0.5, 0.1, -0.2],
                latents_std=[1.5, 0.75, 2.0, 1.25],
                scale_factor_temporal=4,
                scale_factor_spatial=4,
            )
    return vae.eval()


# --------------------------------------------------------------------------------------------------
# Audio VAEs
# --------------------------------------------------------------------------------------------------


def build_tiny_audio_vae(
    kind: str = "mmaudio", seed: int = 0
) -> tuple[MMAudioVAE, MMAudioVocoder] | tuple[AutoencoderOobleck, None]:
    """Build a tiny random audio VAE (and its vocoder, if it has one).

    ``"mmaudio"``: ``MMAudioVAE`` over a 32-bin log-mel of 44.1 kHz mono audio, ``hop_length`` 512 and one
    latent per 2 mel frames (``latent_hop_length`` 1024 samples, as the real one), 8 latent channels,
    ``scaling_factor`` left at the real 0.417; plus an ``MMAudioVocoder`` whose upsampling rates multiply
    to the same hop of 512. ``"oobleck"``: ``AutoencoderOobleck`` on 44.1 kHz stereo waveforms with the
    real hop of 2048 samples per latent (``downsampling_ratios`` 2, 4, 4, 8, 8), 4 latent channels, and
    ``None`` as vocoder (it decodes straight to a waveform).

    Args:
        kind: ``"mmaudio"`` or ``"oobleck"``.
        seed: Seed of the weight initialisation.

    Returns:
        ``(audio_vae, vocoder)`` for ``"mmaudio"``, ``(audio_vae, None)`` for ``"oobleck"``; eval mode,
        float32, CPU.
    """
    kind = _check_kind(kind, AUDIO_VAE_KINDS)
    seed = _check_seed(seed)
    with _seeded(seed):
        if kind == "mmaudio":
            mel_bins = 32
            hop_length = 512
            audio_vae = MMAudioVAE(
                mel_bins=mel_bins,
                latent_channels=8,
                hidden_channels=8,
                # Two levels at least: the decoder's 2x upsampler sits on level 1.
                channel_multipliers=(1, 2),
                layers_per_block=1,
                sample_rate=44_100,
                n_fft=2048,
                hop_length=hop_length,
            )
            vocoder = MMAudioVocoder(
                num_mels=mel_bins,
                upsample_initial_channel=16,
                # 8 * 8 * 8 = 512 = the VAE's hop_length, so mel frames map to the same sample count.
                upsample_rates=(8, 8, 8),
                upsample_kernel_sizes=(16, 16, 16),
                resblock_kernel_sizes=(3,),
                resblock_dilation_sizes=((1,),),
            )
            return audio_vae.eval(), vocoder.eval()

        # The encoder's last conv outputs mean and scale stacked, so it is twice the latent width.
        latent_channels = 4
        audio_vae = AutoencoderOobleck(
            encoder_hidden_size=2 * latent_channels,
            downsampling_ratios=[2, 4, 4, 8, 8],
            channel_multiples=[1, 2, 2, 2, 2],
            decoder_channels=8,
            decoder_input_channels=latent_channels,
            audio_channels=2,
            sampling_rate=44_100,
        )
        return audio_vae.eval(), None


# --------------------------------------------------------------------------------------------------
# Whole pipelines
# --------------------------------------------------------------------------------------------------


def build_tiny_transformer(
    latent_channels: int = 8,
    audio_latent_channels: int = 8,
    audio_samples_per_latent: int = 1024,
    text_embed_dim: int = 32,
    vae_temporal_compression_ratio: int = 4,
    seed: int = 0,
):
    """A tiny random ``SkyReelsV4Transformer3DModel`` (hidden 32: 2 heads of 16, one dual- and one
    single-stream block) whose channels match the given VAEs and text encoder."""
    from .models import SkyReelsV4Transformer3DModel

    with _seeded(_check_seed(seed)):
        transformer = SkyReelsV4Transformer3DModel(
            in_channels=2 * latent_channels + 1,
            out_channels=latent_channels,
            audio_in_channels=audio_latent_channels,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=1,
            num_single_layers=1,
            num_token_refiner_layers=1,
            text_embed_dim=text_embed_dim,
            rope_axes_dim=(4, 6, 6),
            audio_samples_per_latent=audio_samples_per_latent,
            vae_temporal_compression_ratio=vae_temporal_compression_ratio,
        )
    return transformer.eval()


def build_tiny_pipeline(video_vae: str = "hunyuanvideo15", audio_vae: str = "mmaudio", seed: int = 0):
    """A ``SkyReelsV4Pipeline`` of tiny random components (see the factories above) producing 32x32 clips of
    9 frames by default. Its weights are random: it exercises the real code paths, its output is noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from .pipelines import SkyReelsV4Pipeline
    from .pipelines.vae_utils import audio_vae_spec, video_vae_spec

    text_encoder, processor = build_tiny_text_encoder(seed)
    vae = build_tiny_video_vae(video_vae, seed)
    audio, vocoder = build_tiny_audio_vae(audio_vae, seed)
    audio_spec = audio_vae_spec(audio)
    transformer = build_tiny_transformer(
        latent_channels=video_vae_spec(vae).latent_channels,
        audio_latent_channels=audio_spec.latent_channels,
        audio_samples_per_latent=audio_spec.samples_per_latent,
        text_embed_dim=text_encoder.config.text_config.hidden_size,
        vae_temporal_compression_ratio=video_vae_spec(vae).temporal_compression,
        seed=seed,
    )
    return SkyReelsV4Pipeline(
        text_encoder=text_encoder,
        processor=processor,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        audio_vae=audio,
        vocoder=vocoder,
        text_hidden_layer=-1,
        default_height=32,
        default_width=32,
        default_num_frames=9,
    )


def build_tiny_refiner(video_transformer=None, temporal_upscale_factor: int = 2, seed: int = 0):
    """A tiny ``SkyReelsV4RefinerTransformer3DModel`` initialised from a tiny joint model's video tower (built
    with :func:`build_tiny_transformer` when not given); its VSA gates and audio cross-attention start at zero."""
    from .models import SkyReelsV4RefinerTransformer3DModel

    video_transformer = video_transformer or build_tiny_transformer(seed=seed)
    with _seeded(_check_seed(seed)):
        refiner = SkyReelsV4RefinerTransformer3DModel.from_video_transformer(
            video_transformer, temporal_upscale_factor=temporal_upscale_factor
        )
    return refiner.eval()
