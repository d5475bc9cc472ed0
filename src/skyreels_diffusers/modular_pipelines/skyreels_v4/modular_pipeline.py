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
"""The modular SkyReels-V4 pipelines: Diffusers' `ModularPipeline` holding the components the blocks use.

`SkyReelsV4ModularPipeline` runs every base-stage task (`SkyReelsV4AutoBlocks` by default) and
`SkyReelsV4RefinerModularPipeline` the Refiner stage (`SkyReelsV4RefinerBlocks`). The blocks call the same plain
step functions as the classic pipelines (`skyreels_diffusers.pipelines.generation`, `inpainting`, `refining`), which
read the components and the few derived values below (`limits`, `vae_spec`, `audio_spec`, `video_processor`).
"""

import os

from diffusers import DiffusionPipeline
from diffusers.modular_pipelines import ComponentsManager, ModularPipeline, ModularPipelineBlocks
from diffusers.video_processor import VideoProcessor

from ...loaders import SkyReelsV4LoraLoaderMixin
from ...pipelines.vae_utils import audio_vae_spec, video_vae_spec
from ...pipelines.validation import GenerationLimits


HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "local_files_only", "revision")


def load_pipeline_index(cls, folder, **hub_kwargs) -> tuple[dict | None, dict | None]:
    """`(modular_model_index.json, model_index.json)` of a pipeline folder, whichever it has, through the public
    `load_config` of each pipeline kind."""
    try:
        return dict(cls.load_config(folder, **hub_kwargs)), None
    except OSError:
        return None, dict(DiffusionPipeline.load_config(folder, **hub_kwargs))


def without_absent_components(index: dict | None) -> dict | None:
    """A pipeline index entry `[null, null, ...]` (no vocoder, say) means the folder has no such component; Diffusers
    would still point its loading spec at `<folder>/<name>`, fail to load it on every `load_components` and save the
    broken spec again."""
    if index is None:
        return None
    return {
        name: entry
        for name, entry in index.items()
        if not (isinstance(entry, (list, tuple)) and len(entry) >= 2 and entry[0] is None and entry[1] is None)
    }


class _SkyReelsV4ModularBase(ModularPipeline):
    """What the step functions read besides the components, derived from the components loaded at the time of the
    call (a modular pipeline loads and swaps components after `__init__`)."""

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
            hub_kwargs = {name: kwargs.pop(name) for name in HUB_KWARGS if name in kwargs}
            modular_config_dict, config_dict = load_pipeline_index(
                type(self), pretrained_model_name_or_path, **hub_kwargs
            )
            modular_config_dict, config_dict = self.adapt_pipeline_index(
                pretrained_model_name_or_path, modular_config_dict, config_dict
            )
        super().__init__(
            blocks,
            pretrained_model_name_or_path,
            *args,
            modular_config_dict=without_absent_components(modular_config_dict),
            config_dict=without_absent_components(config_dict),
            **kwargs,
        )
        self.limits = GenerationLimits.from_config(self.config)

    def adapt_pipeline_index(self, folder, modular_index: dict | None, index: dict | None):
        """Hook for a stage whose components sit elsewhere in the folder (the Refiner's `refiner/`)."""
        return modular_index, index

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
        """A SkyReels-V4 pipeline folder (its `model_index.json`, or a `modular_model_index.json` saved by
        `save_pretrained`): the component specs come from the folder and the blocks from this package (`blocks`,
        default `default_blocks_class`), so no code from the folder runs and `trust_remote_code` is not needed.
        (Diffusers' own `from_pretrained` would look the pipeline class up inside `diffusers`.)"""
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

    def loaded(self, name: str):
        """The component `name`, or None when the blocks do not use it or it is not loaded."""
        return getattr(self, name, None) if name in self.component_names else None

    @property
    def vae_spec(self):
        vae = self.loaded("vae")
        return None if vae is None else video_vae_spec(vae)

    @property
    def audio_spec(self):
        audio_vae = self.loaded("audio_vae")
        return None if audio_vae is None else audio_vae_spec(audio_vae)

    @property
    def video_processor(self) -> VideoProcessor:
        spec = self.vae_spec
        return VideoProcessor(vae_scale_factor=spec.spatial_compression if spec else 16)


class SkyReelsV4ModularPipeline(_SkyReelsV4ModularBase, SkyReelsV4LoraLoaderMixin):
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


class SkyReelsV4RefinerModularPipeline(_SkyReelsV4ModularBase):
    """A modular pipeline for the Refiner stage (`SkyReelsV4RefinerBlocks`). Loaded from a pipeline folder with a
    `refiner/` subfolder (the tiny default), its `transformer` is that Refiner; share the other components with the
    base stage through a `ComponentsManager` or `update_components`."""

    default_blocks_class = None  # set in `__init__.py`

    def adapt_pipeline_index(self, folder, modular_index, index):
        """A base pipeline folder's `model_index.json` names the base transformer; this stage loads `refiner/`. The
        index is rewritten in the modular form (a loading spec per component), which Diffusers reads as given."""
        folder = os.fspath(folder)
        if index is None or not os.path.isfile(os.path.join(folder, "refiner", "config.json")):
            return modular_index, index
        modular_index = {}
        for name, entry in index.items():
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None:
                library, class_name = entry
                if name == "transformer":
                    library, class_name, subfolder = (
                        "skyreels_diffusers",
                        "SkyReelsV4RefinerTransformer3DModel",
                        "refiner",
                    )
                else:
                    subfolder = name
                spec = {"repo": folder, "subfolder": subfolder, "type_hint": (library, class_name)}
                modular_index[name] = [library, class_name, spec]
            else:
                modular_index[name] = entry
        return modular_index, None
