"""LoRA loading for SkyReels-V4 pipelines, on top of Diffusers' `LoraBaseMixin`.

Files hold PEFT LoRA factors in the Diffusers layout, every key prefixed with the component name (`transformer.`):
`transformer.transformer_blocks.0.video.attn.to_q.lora_A.weight`, ... -- what `save_lora_weights` writes and what
`get_peft_model_state_dict(pipe.transformer)` gives with that prefix, with the adapter's `LoraConfig` in the file
header under Diffusers' `lora_adapter_metadata` entry, as Diffusers writes it. Only safetensors is read or written.

Everything that works on adapters once they are loaded (`unload_lora_weights`, `fuse_lora`, `unfuse_lora`,
`set_adapters`, `delete_adapters`, `get_active_adapters`, `get_list_adapters`, `enable_lora`, `disable_lora`, ...)
is Diffusers' own, inherited from `LoraBaseMixin`; loading into the model is `PeftAdapterMixin.load_lora_adapter`.
What this module adds is the local, safetensors-only file reading and writing, and the checks that turn Diffusers'
silent fallbacks (a pickle fallback, a Hub lookup for a mistyped path, a warning-only no-op load) into errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import safetensors
import safetensors.torch
import torch
from diffusers.loaders import HunyuanVideoLoraLoaderMixin
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE, LoraBaseMixin
from diffusers.utils import logging, require_peft_backend

from ..models.transformer_skyreels_v4 import tower_key_to_joint


logger = logging.get_logger(__name__)

TRANSFORMER_NAME = "transformer"
SAFETENSORS_SUFFIX = ".safetensors"
# Suffixes of pickled checkpoints (`torch.save`), which may run code when loaded; refused by policy.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

_STATE_DICT_KWARGS = ("weight_name", "subfolder", "use_safetensors", "local_files_only", "metadata")
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision")


def _describe_keys(keys, limit: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _refuse_non_safetensors(name: str, path: str) -> None:
    if path.endswith(SAFETENSORS_SUFFIX):
        return
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise ValueError(
            f"`{name}` got {path!r}, a pickled checkpoint; SkyReels-V4 reads LoRA weights from safetensors files only "
            f"(pickle can run arbitrary code when loaded). Convert it once in a trusted environment, e.g. "
            f"`safetensors.torch.save_file(torch.load(path, weights_only=True), 'pytorch_lora_weights.safetensors')`."
        )
    raise ValueError(f"`{name}` got {path!r}; accepted: a `{SAFETENSORS_SUFFIX}` file.")


def _resolve_lora_file(path: str | os.PathLike, weight_name: str | None, subfolder: str | None) -> str:
    """The local `.safetensors` file that `path` (a file or a folder), `weight_name` and `subfolder` name."""
    path = os.fspath(path)
    if os.path.isfile(path):
        if subfolder is not None:
            raise ValueError(
                f"`subfolder` got {subfolder!r}, but `pretrained_model_name_or_path_or_dict` is a file ({path!r}); "
                "`subfolder` is accepted only with a folder."
            )
        if weight_name is not None and weight_name != os.path.basename(path):
            raise ValueError(
                f"`weight_name` got {weight_name!r}, but `pretrained_model_name_or_path_or_dict` is the file "
                f"{path!r}; pass `weight_name` only with a folder (or leave it out)."
            )
        _refuse_non_safetensors("pretrained_model_name_or_path_or_dict", path)
        return path
    if not os.path.isdir(path):
        raise ValueError(
            f"`pretrained_model_name_or_path_or_dict` got {path!r}, which is not an existing file or folder. "
            f"Accepted: a local `{SAFETENSORS_SUFFIX}` file, a folder holding one, or a state dict. Hub repository "
            "ids are not fetched: download the file first (e.g. `huggingface_hub.hf_hub_download`) and pass its path."
        )
    if subfolder is not None:
        folder = os.path.join(path, subfolder)
        if not os.path.isdir(folder):
            raise ValueError(f"`subfolder` got {subfolder!r}, but {folder!r} is not a folder.")
        path = folder
    if weight_name is not None:
        if not isinstance(weight_name, str):
            raise TypeError(f"`weight_name` got {type(weight_name).__name__}; accepted: a file name (str) or None.")
        _refuse_non_safetensors("weight_name", weight_name)
        file = os.path.join(path, weight_name)
        if not os.path.isfile(file):
            available = sorted(f for f in os.listdir(path) if f.endswith(SAFETENSORS_SUFFIX))
            raise ValueError(
                f"`weight_name` got {weight_name!r}, but there is no such file in {path!r}; "
                f"`{SAFETENSORS_SUFFIX}` files there: {available or 'none'}."
            )
        return file
    weight_name = _lora_file_in_folder(path)
    if weight_name is None:
        pickles = sorted(f for f in os.listdir(path) if f.lower().endswith(PICKLE_SUFFIXES))
        hint = (
            f" It holds pickled checkpoints ({_describe_keys(pickles)}), which are refused: SkyReels-V4 reads LoRA "
            "weights from safetensors files only."
            if pickles
            else ""
        )
        raise ValueError(
            f"`pretrained_model_name_or_path_or_dict` got the folder {path!r}, which holds no usable "
            f"`{SAFETENSORS_SUFFIX}` file (expected {LORA_WEIGHT_NAME_SAFE!r}).{hint}"
        )
    return os.path.join(path, weight_name)


def _lora_file_in_folder(folder: str) -> str | None:
    """The LoRA file of a folder, picked as Diffusers' loaders pick it: `pytorch_lora_weights.safetensors` if present,
    else the first `.safetensors` file that is not an optimizer, scheduler or training-checkpoint file (with a
    warning when there are several)."""
    candidates = sorted(
        name
        for name in os.listdir(folder)
        if name.endswith(SAFETENSORS_SUFFIX)
        and not any(part in name for part in ("scheduler", "optimizer", "checkpoint"))
    )
    if LORA_WEIGHT_NAME_SAFE in candidates:
        return LORA_WEIGHT_NAME_SAFE
    if len(candidates) > 1:
        logger.warning(
            f"{folder!r} holds more than one `.safetensors` file; loading {candidates[0]!r}. Pass `weight_name` to "
            "choose."
        )
    return candidates[0] if candidates else None


def _read_lora_file(file: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors of a LoRA safetensors file and the adapter metadata in its header (Diffusers' layout)."""
    state_dict = safetensors.torch.load_file(file)
    with safetensors.safe_open(file, framework="pt") as handle:
        header = handle.metadata() or {}
    raw = header.get(LORA_ADAPTER_METADATA_KEY)
    return state_dict, json.loads(raw) if raw else None


def _is_joint_layout(path: str) -> bool:
    """Whether a parameter path (without `transformer.`) is already in the joint model's layout."""
    parts = path.split(".")
    if parts[0] in ("transformer_blocks", "single_transformer_blocks"):
        return len(parts) > 2 and parts[2] in ("video", "audio", "cross_modal")
    if parts[0] == "proj_out":
        return len(parts) > 1 and parts[1] in ("video", "audio")
    return True


class SkyReelsV4LoraLoaderMixin(LoraBaseMixin):
    r"""
    Load, save, fuse and switch LoRA adapters of [`SkyReelsV4Transformer3DModel`] in SkyReels-V4 pipelines.

    Files are safetensors with Diffusers/PEFT keys prefixed `transformer.` (see [`save_lora_weights`]). Adapter
    management (`set_adapters`, `delete_adapters`, `get_active_adapters`, `get_list_adapters`, `enable_lora`,
    `disable_lora`, `unload_lora_weights`, `fuse_lora`, `unfuse_lora`) is Diffusers' [`~loaders.LoraBaseMixin`].
    At inference, `attention_kwargs={"scale": s}` scales all active LoRAs for one call.
    """

    _lora_loadable_modules = [TRANSFORMER_NAME]
    transformer_name = TRANSFORMER_NAME

    @classmethod
    def lora_state_dict(
        cls,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        return_lora_metadata: bool = False,
        **kwargs,
    ):
        r"""
        Read a LoRA state dict from a local safetensors file, a folder holding one, or a state dict.

        Args:
            pretrained_model_name_or_path_or_dict (`str`, `os.PathLike` or `dict`):
                A `.safetensors` file, a folder holding one (`pytorch_lora_weights.safetensors` is preferred), or a
                state dict of tensors. Pickled checkpoints (`.bin`, `.pt`, ...) are refused, and nothing is fetched
                from the Hub.
            return_lora_metadata (`bool`, defaults to `False`):
                Also return the LoRA adapter metadata stored in the file (`LoraConfig` fields, keys prefixed
                `transformer.`), or `None` when there is none.
            weight_name (`str`, *optional*): the file to read inside the folder; must end in `.safetensors`.
            subfolder (`str`, *optional*): a folder inside the given folder to read from.
            use_safetensors (`bool`, *optional*): only `None` or `True` (safetensors is the only format).
            local_files_only (`bool`, *optional*): accepted for Diffusers compatibility; reading is always local.
            metadata (`dict`, *optional*): with a state dict only, its adapter metadata in the same layout as the
                file's (`{"transformer.r": 4, "transformer.lora_alpha": 8, ...}`), so that ranks and alphas survive.

        Returns:
            The state dict, or `(state_dict, metadata)` with `return_lora_metadata=True`.
        """
        unexpected = sorted(set(kwargs) - set(_STATE_DICT_KWARGS))
        if unexpected:
            hub = [k for k in unexpected if k in _HUB_KWARGS]
            hint = f" ({', '.join(hub)} only apply to Hub downloads; LoRA files are read locally)" if hub else ""
            raise TypeError(
                f"`lora_state_dict` got unexpected keyword argument(s) {unexpected}{hint}; accepted: "
                f"{['return_lora_metadata', *_STATE_DICT_KWARGS]}."
            )
        use_safetensors = kwargs.get("use_safetensors")
        if use_safetensors not in (None, True):
            raise ValueError(
                f"`use_safetensors` got {use_safetensors!r}; accepted: None or True (SkyReels-V4 reads LoRA weights "
                "from safetensors files only)."
            )
        metadata = kwargs.get("metadata")

        if isinstance(pretrained_model_name_or_path_or_dict, Mapping):
            state_dict = dict(pretrained_model_name_or_path_or_dict)  # never modify the caller's dict
            bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
            if bad:
                raise TypeError(
                    f"`pretrained_model_name_or_path_or_dict` got a dict with non-str keys or non-tensor values "
                    f"({_describe_keys(bad)}); accepted: dict[str, torch.Tensor]."
                )
            if metadata is not None:
                if not isinstance(metadata, Mapping):
                    raise TypeError(f"`metadata` got {type(metadata).__name__}; accepted: a dict or None.")
                metadata = dict(metadata)
                prefix = f"{cls.transformer_name}."
                unprefixed = [k for k in metadata if not str(k).startswith(prefix)]
                if unprefixed:
                    raise ValueError(
                        f"`metadata` has key(s) not starting with {prefix!r} ({_describe_keys(unprefixed)}); "
                        f"accepted: the file layout, e.g. {{'{prefix}r': 4, '{prefix}lora_alpha': 8}}."
                    )
            for name in ("weight_name", "subfolder"):
                if kwargs.get(name) is not None:
                    raise ValueError(f"`{name}` got {kwargs[name]!r}, but it only applies to a folder, not a dict.")
        elif isinstance(pretrained_model_name_or_path_or_dict, (str, os.PathLike)):
            if metadata is not None:
                raise ValueError(
                    "`metadata` got a value, but it is accepted only with a state dict; files carry their own."
                )
            file = _resolve_lora_file(
                pretrained_model_name_or_path_or_dict, kwargs.get("weight_name"), kwargs.get("subfolder")
            )
            try:
                state_dict, metadata = _read_lora_file(file)
            except (safetensors.SafetensorError, json.JSONDecodeError) as error:
                raise ValueError(
                    f"`pretrained_model_name_or_path_or_dict`: {file!r} is not a readable safetensors file ({error})."
                ) from error
        else:
            raise TypeError(
                f"`pretrained_model_name_or_path_or_dict` got {type(pretrained_model_name_or_path_or_dict).__name__}; "
                "accepted: a path (str or os.PathLike) to a `.safetensors` file or a folder, or a state dict."
            )

        state_dict = cls._convert_non_diffusers_lora(state_dict)
        return (state_dict, metadata) if return_lora_metadata else state_dict

    @classmethod
    def _convert_non_diffusers_lora(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """
        Bring HunyuanVideo-style LoRA files into this model's layout:

        - the original HunyuanVideo / SkyReels-V1 naming (`double_blocks.N.img_attn_qkv...`) goes through Diffusers'
          own HunyuanVideo LoRA reader (`HunyuanVideoLoraLoaderMixin.lora_state_dict`) first;
        - Diffusers' HunyuanVideo (and HunyuanVideo-1.5) layout names the modules of our video tower, so each
          `transformer.<path>` moves into its layer's video part (`tower_key_to_joint`; the timestep embedder is
          `time_embed`).

        Keys already in this model's layout are left unchanged.
        """
        if any("img_attn_qkv" in key or "txt_attn_qkv" in key for key in state_dict):
            state_dict = HunyuanVideoLoraLoaderMixin.lora_state_dict(dict(state_dict))
        prefix = f"{cls.transformer_name}."
        converted = {}
        for key, value in state_dict.items():
            path = key[len(prefix) :]
            if key.startswith(prefix) and not _is_joint_layout(path):
                if path.startswith("time_text_embed.timestep_embedder."):
                    path = path.replace("time_text_embed.", "time_embed.", 1)
                key = prefix + tower_key_to_joint(path, "video")
            converted[key] = value
        return converted

    @classmethod
    def _check_diffusers_layout(cls, state_dict: dict[str, torch.Tensor]) -> None:
        if not state_dict:
            raise ValueError("`pretrained_model_name_or_path_or_dict` holds no tensors; expected LoRA weights.")
        not_lora = [k for k in state_dict if "lora" not in k]
        if not_lora:
            raise ValueError(
                f"`pretrained_model_name_or_path_or_dict` is not a LoRA checkpoint: {len(not_lora)} key(s) without "
                f"'lora' ({_describe_keys(not_lora)}); expected PEFT LoRA keys such as "
                f"'{cls.transformer_name}.transformer_blocks.0.video.attn.to_q.lora_A.weight'."
            )

    @require_peft_backend
    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None,
        hotswap: bool = False,
        **kwargs,
    ) -> None:
        r"""
        Load a LoRA into `self.transformer` as a new adapter (active at weight 1.0).

        Args:
            pretrained_model_name_or_path_or_dict (`str`, `os.PathLike` or `dict`): see [`lora_state_dict`].
            adapter_name (`str`, *optional*): the adapter's name (`default_0`, `default_1`, ... when not given); it
                must not be in use already.
            hotswap (`bool`, defaults to `False`): replace the weights of the already loaded adapter `adapter_name`
                in place (see Diffusers' `load_lora_weights`).
            low_cpu_mem_usage (`bool`, *optional*): create the LoRA layers on the meta device before loading.
            kwargs: `weight_name`, `subfolder`, `use_safetensors`, `local_files_only`, `metadata`; see
                [`lora_state_dict`].
        """
        if adapter_name is not None and not isinstance(adapter_name, str):
            raise TypeError(f"`adapter_name` got {type(adapter_name).__name__}; accepted: a str or None.")
        transformer = getattr(self, self.transformer_name, None)
        if transformer is None:
            raise ValueError(
                f"`load_lora_weights` needs the pipeline's `{self.transformer_name}` component, but it is None."
            )
        low_cpu_mem_usage = kwargs.pop("low_cpu_mem_usage", True)
        state_dict, metadata = self.lora_state_dict(
            pretrained_model_name_or_path_or_dict, return_lora_metadata=True, **kwargs
        )
        # As Diffusers' loaders do, keys of other components are left out (this pipeline loads LoRAs into its
        # transformer only), and weights with none for the transformer are a no-op: Diffusers' `load_lora_adapter`
        # then logs its "No LoRA keys associated to ..." warning.
        prefix = f"{self.transformer_name}."
        others = [key for key in state_dict if not key.startswith(prefix)]
        if others:
            logger.warning(
                f"{len(others)} LoRA key(s) are not for `{self.transformer_name}` (prefix {prefix!r}) and are not "
                f"loaded ({_describe_keys(others)})."
            )
            state_dict = {key: value for key, value in state_dict.items() if key.startswith(prefix)}
        if state_dict:
            self._check_diffusers_layout(state_dict)
        self.load_lora_into_transformer(
            state_dict,
            transformer=transformer,
            adapter_name=adapter_name,
            _pipeline=self,
            low_cpu_mem_usage=low_cpu_mem_usage,
            hotswap=hotswap,
            metadata=metadata,
        )

    @classmethod
    def load_lora_into_transformer(
        cls,
        state_dict: dict[str, torch.Tensor],
        transformer,
        adapter_name: str | None = None,
        _pipeline=None,
        low_cpu_mem_usage: bool = False,
        hotswap: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """
        Load `transformer.`-prefixed LoRA weights into `transformer` with Diffusers'
        `PeftAdapterMixin.load_lora_adapter` (keys with another prefix are left out).
        """
        if not callable(getattr(transformer, "load_lora_adapter", None)):
            raise TypeError(
                f"`transformer` got {type(transformer).__name__}; accepted: a model with Diffusers' "
                "`PeftAdapterMixin` (such as `SkyReelsV4Transformer3DModel`)."
            )
        logger.info(f"Loading {cls.transformer_name}.")
        transformer.load_lora_adapter(
            state_dict,
            prefix=cls.transformer_name,
            network_alphas=None,
            adapter_name=adapter_name,
            metadata=metadata,
            _pipeline=_pipeline,
            low_cpu_mem_usage=low_cpu_mem_usage,
            hotswap=hotswap,
        )

    @classmethod
    def save_lora_weights(
        cls,
        save_directory: str | os.PathLike,
        transformer_lora_layers: dict[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        weight_name: str | None = None,
        safe_serialization: bool = True,
        transformer_lora_adapter_metadata: dict[str, Any] | None = None,
    ) -> None:
        r"""
        Write the transformer's LoRA weights to `save_directory/pytorch_lora_weights.safetensors`, keys prefixed
        `transformer.`.

        Args:
            save_directory (`str` or `os.PathLike`): the folder to write to (created if missing).
            transformer_lora_layers (`dict[str, torch.Tensor]`): the adapter's weights without prefix, as
                `peft.utils.get_peft_model_state_dict(pipe.transformer, adapter_name=...)` returns them.
            is_main_process (`bool`, defaults to `True`): in distributed training, only the main process writes.
            weight_name (`str`, *optional*): the file name; defaults to `pytorch_lora_weights.safetensors` and must
                end in `.safetensors`.
            safe_serialization (`bool`, defaults to `True`): only `True` (safetensors is the only format).
            transformer_lora_adapter_metadata (`dict`, *optional*): the adapter's `LoraConfig.to_dict()`, stored in
                the file header so that loading recreates the same ranks and `lora_alpha` (without it, `lora_alpha`
                is taken to equal the rank).
        """
        if safe_serialization is not True:
            raise ValueError(
                f"`safe_serialization` got {safe_serialization!r}; accepted: True (SkyReels-V4 writes LoRA weights "
                "as safetensors only)."
            )
        if weight_name is not None:
            if not isinstance(weight_name, str):
                raise TypeError(f"`weight_name` got {type(weight_name).__name__}; accepted: a file name (str).")
            _refuse_non_safetensors("weight_name", weight_name)
        if not isinstance(save_directory, (str, os.PathLike)):
            raise TypeError(f"`save_directory` got {type(save_directory).__name__}; accepted: a folder path.")
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory` got {os.fspath(save_directory)!r}, a file; accepted: a folder.")
        if transformer_lora_layers is None or (
            isinstance(transformer_lora_layers, Mapping) and not transformer_lora_layers
        ):
            raise ValueError(
                "`transformer_lora_layers` got nothing to save; pass the adapter's weights, e.g. "
                "`get_peft_model_state_dict(pipe.transformer)`."
            )
        if not isinstance(transformer_lora_layers, Mapping):
            raise TypeError(
                f"`transformer_lora_layers` got {type(transformer_lora_layers).__name__}; accepted: a state dict of "
                "LoRA tensors such as `get_peft_model_state_dict(pipe.transformer)` returns."
            )
        not_lora = [k for k in transformer_lora_layers if "lora" not in k]
        if not_lora:
            raise ValueError(
                f"`transformer_lora_layers` has {len(not_lora)} key(s) that are not LoRA weights "
                f"({_describe_keys(not_lora)}); accepted: `get_peft_model_state_dict(pipe.transformer)`."
            )
        prefixed = [k for k in transformer_lora_layers if k.startswith(f"{cls.transformer_name}.")]
        if prefixed:
            raise ValueError(
                f"`transformer_lora_layers` has keys already prefixed {cls.transformer_name + '.'!r} "
                f"({_describe_keys(prefixed)}); pass them without prefix, the prefix is added on save."
            )
        if transformer_lora_adapter_metadata is not None and not isinstance(
            transformer_lora_adapter_metadata, Mapping
        ):
            raise TypeError(
                f"`transformer_lora_adapter_metadata` got {type(transformer_lora_adapter_metadata).__name__}; "
                "accepted: a dict such as `LoraConfig.to_dict()`, or None."
            )
        if not is_main_process:
            return
        # Diffusers' file layout: `transformer.`-prefixed tensors, and the adapter config as sorted JSON (sets as
        # lists) under the `lora_adapter_metadata` header entry, its keys prefixed the same way.
        prefix = f"{cls.transformer_name}."
        header = {"format": "pt"}
        if transformer_lora_adapter_metadata:
            config = {
                prefix + key: sorted(value) if isinstance(value, set) else value
                for key, value in transformer_lora_adapter_metadata.items()
            }
            header[LORA_ADAPTER_METADATA_KEY] = json.dumps(config, indent=2, sort_keys=True)
        os.makedirs(save_directory, exist_ok=True)
        tensors = {prefix + key: value.contiguous() for key, value in transformer_lora_layers.items()}
        path = os.path.join(save_directory, weight_name or LORA_WEIGHT_NAME_SAFE)
        safetensors.torch.save_file(tensors, path, metadata=header)
        logger.info(f"LoRA weights saved in {path}")

    def fuse_lora(
        self,
        components: list[str] | None = None,
        lora_scale: float = 1.0,
        safe_fusing: bool = False,
        adapter_names: list[str] | None = None,
        **kwargs,
    ) -> None:
        r"""
        Merge the active (or the named) LoRAs into the transformer's weights, scaled by `lora_scale`; see
        [`~loaders.LoraBaseMixin.fuse_lora`]. `components` defaults to `["transformer"]`.
        """
        super().fuse_lora(
            components=[self.transformer_name] if components is None else components,
            lora_scale=lora_scale,
            safe_fusing=safe_fusing,
            adapter_names=adapter_names,
            **kwargs,
        )

    def unfuse_lora(self, components: list[str] | None = None, **kwargs) -> None:
        r"""
        Undo [`fuse_lora`]; see [`~loaders.LoraBaseMixin.unfuse_lora`]. `components` defaults to `["transformer"]`.
        """
        super().unfuse_lora(components=[self.transformer_name] if components is None else components, **kwargs)
