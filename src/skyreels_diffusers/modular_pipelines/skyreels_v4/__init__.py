# Copyright 2026 The skyreels-diffusers authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""SkyReels-V4 as Diffusers modular pipeline blocks (see `modular_blocks_skyreels_v4.py`)."""

from .before_denoise import (
    SkyReelsV4InpaintPrepareLatentsStep,
    SkyReelsV4PrepareLatentsStep,
    SkyReelsV4RefinerPrepareLatentsStep,
    SkyReelsV4SetTimestepsStep,
)
from .decoders import SkyReelsV4DecodeStep, SkyReelsV4InpaintDecodeStep, SkyReelsV4RefinerDecodeStep
from .denoise import (
    SkyReelsV4DenoiseLoopWrapper,
    SkyReelsV4DenoiseStep,
    SkyReelsV4LoopAfterDenoiser,
    SkyReelsV4LoopBeforeDenoiser,
    SkyReelsV4LoopDenoiser,
    SkyReelsV4RefinerDenoiseStep,
    SkyReelsV4RefinerLoopBeforeDenoiser,
    SkyReelsV4RefinerLoopDenoiser,
)
from .encoders import (
    SkyReelsV4InpaintInputStep,
    SkyReelsV4RefinerConditionStep,
    SkyReelsV4RefinerInputStep,
    SkyReelsV4TextEncoderStep,
    SkyReelsV4TextInputStep,
    SkyReelsV4VaeEncoderStep,
)
from .modular_blocks_skyreels_v4 import (
    SkyReelsV4AutoBlocks,
    SkyReelsV4AutoCoreDenoiseStep,
    SkyReelsV4AutoDecodeStep,
    SkyReelsV4AutoInputStep,
    SkyReelsV4AutoVaeEncoderStep,
    SkyReelsV4Blocks,
    SkyReelsV4CoreDenoiseStep,
    SkyReelsV4InpaintBlocks,
    SkyReelsV4InpaintCoreDenoiseStep,
    SkyReelsV4RefinerBlocks,
)
from .modular_pipeline import SkyReelsV4ModularPipeline, SkyReelsV4RefinerModularPipeline


SkyReelsV4ModularPipeline.default_blocks_class = SkyReelsV4AutoBlocks
SkyReelsV4RefinerModularPipeline.default_blocks_class = SkyReelsV4RefinerBlocks

__all__ = [
    "SkyReelsV4AutoBlocks",
    "SkyReelsV4AutoCoreDenoiseStep",
    "SkyReelsV4AutoDecodeStep",
    "SkyReelsV4AutoInputStep",
    "SkyReelsV4AutoVaeEncoderStep",
    "SkyReelsV4Blocks",
    "SkyReelsV4CoreDenoiseStep",
    "SkyReelsV4DecodeStep",
    "SkyReelsV4DenoiseLoopWrapper",
    "SkyReelsV4DenoiseStep",
    "SkyReelsV4InpaintBlocks",
    "SkyReelsV4InpaintCoreDenoiseStep",
    "SkyReelsV4InpaintDecodeStep",
    "SkyReelsV4InpaintInputStep",
    "SkyReelsV4InpaintPrepareLatentsStep",
    "SkyReelsV4LoopAfterDenoiser",
    "SkyReelsV4LoopBeforeDenoiser",
    "SkyReelsV4LoopDenoiser",
    "SkyReelsV4ModularPipeline",
    "SkyReelsV4PrepareLatentsStep",
    "SkyReelsV4RefinerBlocks",
    "SkyReelsV4RefinerConditionStep",
    "SkyReelsV4RefinerDecodeStep",
    "SkyReelsV4RefinerDenoiseStep",
    "SkyReelsV4RefinerInputStep",
    "SkyReelsV4RefinerLoopBeforeDenoiser",
    "SkyReelsV4RefinerLoopDenoiser",
    "SkyReelsV4RefinerModularPipeline",
    "SkyReelsV4RefinerPrepareLatentsStep",
    "SkyReelsV4SetTimestepsStep",
    "SkyReelsV4TextEncoderStep",
    "SkyReelsV4TextInputStep",
    "SkyReelsV4VaeEncoderStep",
]
