"""SkyReels-V4 for Hugging Face Diffusers: joint video + audio generation, inpainting and editing."""

__version__ = "0.1.0.dev0"

# Pipeline folders name this package as the library of our components; Diffusers' loader picks a component's load
# method by looking the library base classes up in that module, so they are importable from here.
from diffusers import ModelMixin
from transformers import ProcessorMixin

from .loaders import SkyReelsV4LoraLoaderMixin
from .models import (
    SkyReelsV4AudioTransformer1DModel,
    SkyReelsV4RefinerTransformer3DModel,
    SkyReelsV4Transformer3DModel,
    SkyReelsV4TransformerOutput,
)
from .pipelines import (
    GenerationLimits,
    SkyReelsV4InpaintPipeline,
    SkyReelsV4Pipeline,
    SkyReelsV4PipelineOutput,
    SkyReelsV4RefinerPipeline,
)
from .processing_qwen2_5_vl import Qwen2_5_VLImageTextProcessor


__all__ = [
    "GenerationLimits",
    "ModelMixin",
    "ProcessorMixin",
    "Qwen2_5_VLImageTextProcessor",
    "SkyReelsV4AudioTransformer1DModel",
    "SkyReelsV4InpaintPipeline",
    "SkyReelsV4LoraLoaderMixin",
    "SkyReelsV4Pipeline",
    "SkyReelsV4PipelineOutput",
    "SkyReelsV4RefinerPipeline",
    "SkyReelsV4RefinerTransformer3DModel",
    "SkyReelsV4Transformer3DModel",
    "SkyReelsV4TransformerOutput",
]
