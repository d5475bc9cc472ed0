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
"""The modular SkyReels-V4 pipelines: Diffusers' `ModularPipeline` with the classic pipelines' steps.

`SkyReelsV4ModularPipeline` runs every base-stage task (`SkyReelsV4AutoBlocks` by default) and
`SkyReelsV4RefinerModularPipeline` the Refiner stage (`SkyReelsV4RefinerBlocks`). Both inherit the step methods of the
classic pipelines (`SkyReelsV4Steps`, `SkyReelsV4InpaintSteps`, `SkyReelsV4RefinerSteps`, the shared
`SkyReelsV4PipelineMixin`), which the blocks call: the same code runs in both forms, so the outputs are identical.
"""

import os

from diffusers.modular_pipelines import ComponentsManager, ModularPipeline, ModularPipelineBlocks
from diffusers.modular_pipelines.modular_pipeline_utils import ComponentSpec
from diffusers.video_processor import VideoProcessor

from ...loaders import SkyReelsV4LoraLoaderMixin
from ...pipelines.pipeline_mixin import SkyReelsV4PipelineMixin
from ...pipelines.pipeline_skyreels_v4 import SkyReelsV4Steps
from ...pipelines.pipeline_skyreels_v4_inpaint import SkyReelsV4InpaintSteps
from ...pipelines.pipeline_skyreels_v4_refiner import SkyReelsV4RefinerSteps
from ...pipelines.vae_utils import audio_vae_spec, video_vae_spec
from ...pipelines.validation import GenerationLimits


def _without_absent_components(config: dict | None) -> dict | None:
    """A pipeline index entry `[null, null, ...]` (no vocoder, say) means the folder has no such component; Diffusers
    would still point its loading spec at `<folder>/<name>`, fail to load it on every `load_components` and save the
    broken spec again."""
    if config is None:
        return None
    return {
        name: entry
        for name, entry in config.items()
        if not (isinstance(entry, (list, tuple)) and len(entry) >= 2 and entry[0] is None and entry[1] is None)
    }


class _SkyReelsV4ModularBase(SkyReelsV4PipelineMixin, ModularPipeline):
    """What the step methods read from a pipeline, derived from the components loaded at the time of the call
    (a modular pipeline loads and swaps components after `__init__`)."""

    default_blocks_class: type[ModularPipelineBlocks] | None = None
    _callback_tensor_inputs: list[str] = []  # the modular loop takes no step callbacks

    def __init__(
        self,
        blocks: ModularPipelineBlocks | None = None,
        pretrained_model_name_or_path: str | os.PathLike | None = None,
        *args,
        modular_config_dict: dict | None = None,
        config_dict: dict | None = None,
        **kwargs,
    ):
        # Diffusers resolves `default_blocks_name` inside the `diffusers` module only; ours live here.
        if blocks is None and self.default_blocks_class is not None:
            blocks = self.default_blocks_class()
        if pretrained_model_name_or_path is not None and modular_config_dict is None and config_dict is None:
            hub_kwargs = ("cache_dir", "force_download", "proxies", "token", "local_files_only", "revision")
            modular_config_dict, config_dict = self._load_pipeline_config(
                pretrained_model_name_or_path, **{name: kwargs.pop(name) for name in hub_kwargs if name in kwargs}
            )
        super().__init__(
            blocks,
            pretrained_model_name_or_path,
            *args,
            modular_config_dict=_without_absent_components(modular_config_dict),
            config_dict=_without_absent_components(config_dict),
            **kwargs,
        )
        self.limits = GenerationLimits.from_config(self.config)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        trust_remote_code: bool | None = None,
        components_manager: ComponentsManager | None = None,
        collection: str | None = None,
        workflow: str | None = None,
        blocks: ModularPipelineBlocks | None = None,
        **kwargs,
    ):
        """Diffusers' `ModularPipeline.from_pretrained` for a SkyReels-V4 pipeline folder (its `model_index.json`,
        or a `modular_model_index.json` saved by `save_pretrained`): the component specs come from the folder and
        the blocks from this package (`blocks`, default `default_blocks_class`), so no code from the folder runs
        and `trust_remote_code` is not needed. (Diffusers' own `from_pretrained` would build a plain
        `ModularPipeline`, without the step methods the blocks call.)"""
        if trust_remote_code:
            raise ValueError(
                "`trust_remote_code` is not used: the blocks come from the installed skyreels_diffusers package; pass "
                "custom blocks as `blocks=` instead."
            )
        return cls(
            blocks,
            pretrained_model_name_or_path,
            components_manager=components_manager,
            collection=collection,
            workflow=workflow,
            **kwargs,
        )

    def set_progress_bar_config(self, **kwargs):
        """Diffusers' setting, reaching blocks at any depth (the denoise step sits inside the core denoise
        blocks)."""
        pending = list(self._blocks.sub_blocks.values())
        while pending:
            block = pending.pop()
            if hasattr(block, "set_progress_bar_config"):
                block.set_progress_bar_config(**kwargs)
            pending.extend(getattr(block, "sub_blocks", {}).values())

    def _component(self, name: str):
        return getattr(self, name, None) if name in self._component_specs else None

    @property
    def vae_spec(self):
        vae = self._component("vae")
        return None if vae is None else video_vae_spec(vae)

    @property
    def audio_spec(self):
        audio_vae = self._component("audio_vae")
        return None if audio_vae is None else audio_vae_spec(audio_vae)

    @property
    def video_processor(self) -> VideoProcessor:
        spec = self.vae_spec
        return VideoProcessor(vae_scale_factor=spec.spatial_compression if spec else 16)


class SkyReelsV4ModularPipeline(
    SkyReelsV4Steps, SkyReelsV4InpaintSteps, _SkyReelsV4ModularBase, SkyReelsV4LoraLoaderMixin
):
    """A modular pipeline for the SkyReels-V4 base stage: text-to-audio-video, text-to-video, text-to-audio, the
    inpainting tasks (image-to-video, frame conditions, extension, editing, references, audio reference),
    video-to-audio and audio-to-video. Its default blocks, `SkyReelsV4AutoBlocks`, pick the branch from the inputs.

    ```py
    >>> from skyreels_diffusers.modular_pipelines import SkyReelsV4ModularPipeline

    >>> pipe = SkyReelsV4ModularPipeline.from_pretrained("pipelines/skyreels-v4-tiny")
    >>> pipe.load_components()
    >>> out = pipe(prompt="<text>A red circle bounces.</text>", output=["videos", "audio"])
    ```
    """

    default_blocks_class = None  # set in `__init__.py`, after the blocks are defined


class SkyReelsV4RefinerModularPipeline(SkyReelsV4RefinerSteps, _SkyReelsV4ModularBase):
    """A modular pipeline for the Refiner stage (`SkyReelsV4RefinerBlocks`). Loaded from a pipeline folder with a
    `refiner/` subfolder (the tiny default), its `transformer` is that Refiner; share the other components with the
    base stage through a `ComponentsManager` or `update_components`."""

    default_blocks_class = None  # set in `__init__.py`

    def __init__(self, blocks=None, pretrained_model_name_or_path=None, *args, **kwargs):
        super().__init__(blocks, pretrained_model_name_or_path, *args, **kwargs)
        refiner_folder = None if pretrained_model_name_or_path is None else os.fspath(pretrained_model_name_or_path)
        if refiner_folder and os.path.isfile(os.path.join(refiner_folder, "refiner", "config.json")):
            from ...models import SkyReelsV4RefinerTransformer3DModel

            self._component_specs["transformer"] = ComponentSpec(
                name="transformer",
                type_hint=SkyReelsV4RefinerTransformer3DModel,
                pretrained_model_name_or_path=refiner_folder,
                subfolder="refiner",
                default_creation_method="from_pretrained",
            )
