from .pipeline_output import SkyReelsV4PipelineOutput
from .pipeline_skyreels_v4 import SkyReelsV4Pipeline
from .pipeline_skyreels_v4_inpaint import SkyReelsV4InpaintPipeline
from .pipeline_skyreels_v4_refiner import SkyReelsV4RefinerPipeline
from .validation import GenerationLimits


__all__ = [
    "GenerationLimits",
    "SkyReelsV4InpaintPipeline",
    "SkyReelsV4Pipeline",
    "SkyReelsV4PipelineOutput",
    "SkyReelsV4RefinerPipeline",
]
