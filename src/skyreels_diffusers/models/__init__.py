from .transformer_skyreels_v4 import SkyReelsV4Transformer3DModel, SkyReelsV4TransformerOutput
from .transformer_skyreels_v4_audio import SkyReelsV4AudioTransformer1DModel


__all__ = ["SkyReelsV4AudioTransformer1DModel", "SkyReelsV4Transformer3DModel", "SkyReelsV4TransformerOutput"]
