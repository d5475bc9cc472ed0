from .transformer_skyreels_v4 import SkyReelsV4Transformer3DModel, SkyReelsV4TransformerOutput
from .transformer_skyreels_v4_audio import SkyReelsV4AudioTransformer1DModel
from .transformer_skyreels_v4_refiner import SkyReelsV4RefinerTransformer3DModel


__all__ = [
    "SkyReelsV4AudioTransformer1DModel",
    "SkyReelsV4RefinerTransformer3DModel",
    "SkyReelsV4Transformer3DModel",
    "SkyReelsV4TransformerOutput",
]
