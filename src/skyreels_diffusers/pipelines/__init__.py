from .pipeline_output import SkyReelsV4PipelineOutput
from .pipeline_skyreels_v4 import SkyReelsV4Pipeline


__all__ = ["SkyReelsV4Pipeline", "SkyReelsV4PipelineOutput"]
