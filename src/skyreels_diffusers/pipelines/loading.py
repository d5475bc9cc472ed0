"""Pipeline folders that both `SkyReelsV4*Pipeline.from_pretrained` and `DiffusionPipeline.from_pretrained` load.

`DiffusionPipeline.from_pretrained` looks pipeline classes up inside `diffusers`, so our folders use Diffusers'
documented custom-pipeline form: `_class_name` is `["<file>", "<Class>"]`, and `<file>.py` in the folder only
imports the class from this installed package. Components name this package as their library
(`["skyreels_diffusers", "SkyReelsV4Transformer3DModel"]`), not the private module that defines them.
"""

import json
import logging
import os
import re

import skyreels_diffusers


STUB_TEMPLATE = '''"""Loads {class_name} from the installed `skyreels_diffusers` package (pip install skyreels-diffusers)."""

from skyreels_diffusers import {class_name}


__all__ = ["{class_name}"]
'''


def custom_pipeline_file_stem(class_name: str) -> str:
    """`SkyReelsV4InpaintPipeline` -> `skyreels_v4_inpaint_pipeline`."""
    return "skyreels_v4" + re.sub(r"(?=[A-Z])", "_", class_name.removeprefix("SkyReelsV4")).lower()


def write_custom_pipeline_files(save_directory: str | os.PathLike, class_name: str) -> None:
    """Rewrite `model_index.json` of a saved pipeline into the custom-pipeline form and add its loader stub."""
    stem = custom_pipeline_file_stem(class_name)
    index_path = os.path.join(save_directory, "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    index["_class_name"] = [stem, class_name]
    for name, entry in index.items():
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
            library, component_class = entry
            if library.startswith("skyreels_diffusers.") and hasattr(skyreels_diffusers, component_class):
                index[name] = ["skyreels_diffusers", component_class]
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(save_directory, f"{stem}.py"), "w", encoding="utf-8") as f:
        f.write(STUB_TEMPLATE.format(class_name=class_name))


def _read_pipeline_file(pretrained_model_name_or_path: str | os.PathLike, filename: str, **download_kwargs) -> str:
    if os.path.isdir(pretrained_model_name_or_path):
        path = os.path.join(pretrained_model_name_or_path, filename)
    else:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(str(pretrained_model_name_or_path), filename, **download_kwargs)
    with open(path, encoding="utf-8") as f:
        return f.read()


def is_own_stub_folder(pretrained_model_name_or_path: str | os.PathLike, **download_kwargs) -> bool:
    """True when the folder's custom-pipeline file is, byte for byte, our stub for a class of this package, and the
    folder holds no other code.

    Diffusers runs a folder's custom pipeline file only with `trust_remote_code=True`, and `trust_remote_code` then
    covers every code file the folder names: a component whose `<component>/<library>.py` exists is loaded from that
    file. Our stub only imports an installed class, so our own `from_pretrained` may trust it, but only after checking
    its exact content and that it is the folder's only Python file."""
    try:
        index = json.loads(_read_pipeline_file(pretrained_model_name_or_path, "model_index.json", **download_kwargs))
        class_entry = index.get("_class_name")
        if not (isinstance(class_entry, list) and len(class_entry) == 2):
            return False
        stem, class_name = class_entry
        if not (hasattr(skyreels_diffusers, class_name) and stem == custom_pipeline_file_stem(class_name)):
            return False
        if _code_files(pretrained_model_name_or_path, **download_kwargs) != [f"{stem}.py"]:
            return False
        stub = _read_pipeline_file(pretrained_model_name_or_path, f"{stem}.py", **download_kwargs)
        return stub == STUB_TEMPLATE.format(class_name=class_name)
    except (OSError, ValueError):
        return False


def _code_files(pretrained_model_name_or_path: str | os.PathLike, **download_kwargs) -> list[str]:
    """Every Python file of a pipeline folder or Hub repository, as paths relative to its root."""
    if os.path.isdir(pretrained_model_name_or_path):
        root = os.fspath(pretrained_model_name_or_path)
        files = [
            os.path.relpath(os.path.join(directory, name), root)
            for directory, _, names in os.walk(root)
            for name in names
        ]
    else:
        from huggingface_hub import HfApi

        revision = download_kwargs.get("revision")
        files = HfApi(token=download_kwargs.get("token")).list_repo_files(
            str(pretrained_model_name_or_path), revision=revision
        )
    return sorted(path.replace(os.sep, "/") for path in files if path.endswith((".py", ".pyc", ".so")))


class SkyReelsV4PipelineLoadingMixin:
    """Makes `save_pretrained` write folders in the custom-pipeline form described above, and lets
    `from_pretrained` load them without `trust_remote_code` when their stub is verifiably ours and the only code in
    the folder. Any other code file needs the caller's own `trust_remote_code=True`, as in Diffusers."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        write_custom_pipeline_files(save_directory, type(self).__name__)

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """Diffusers' `from_pipe`, keeping the source pipeline's dtype: Diffusers casts the shared components to
        `dtype`, float32 unless told otherwise, which would turn a bfloat16 pipeline (and, through the shared
        modules, the source pipeline too) back into float32."""
        if "torch_dtype" not in kwargs and "dtype" not in kwargs:
            transformer = getattr(pipeline, "transformer", None)
            kwargs["dtype"] = transformer.dtype if transformer is not None else pipeline.dtype
        # Casting to the dtype the components already have is a no-op; Diffusers still warns about fp32 modules.
        modeling_logger = logging.getLogger("diffusers.models.modeling_utils")
        level = modeling_logger.level
        modeling_logger.setLevel(logging.ERROR)
        try:
            return super().from_pipe(pipeline, **kwargs)
        finally:
            modeling_logger.setLevel(level)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        if "trust_remote_code" not in kwargs:
            download_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token") if k in kwargs}
            kwargs["trust_remote_code"] = is_own_stub_folder(pretrained_model_name_or_path, **download_kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
