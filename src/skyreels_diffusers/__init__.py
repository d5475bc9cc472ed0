"""SkyReels-V4 for Hugging Face Diffusers: joint video + audio generation, inpainting and editing."""

__version__ = "0.1.0.dev0"

from .models import SkyReelsV4AudioTransformer1DModel, SkyReelsV4Transformer3DModel, SkyReelsV4TransformerOutput


__all__ = ["SkyReelsV4AudioTransformer1DModel", "SkyReelsV4Transformer3DModel", "SkyReelsV4TransformerOutput"]
