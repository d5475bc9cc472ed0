"""Nothing in `src/` uses a name that Diffusers (or another library) keeps private, except through the one module
that says why: `models/diffusers_extension_points.py`.

Two kinds of use are found in the source: an import of a private module or name from a library, and an attribute
`obj._name` where `_name` is defined nowhere in this package (so it belongs to a library)."""

import ast
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "src" / "skyreels_diffusers"
LIBRARIES = {"diffusers", "transformers", "accelerate", "peft", "huggingface_hub", "safetensors"}
EXTENSION_POINTS = "models/diffusers_extension_points.py"

# Underscore names that are part of the libraries' protocol for authors of models and pipelines, each used as every
# Diffusers model or pipeline uses it.
AUTHOR_PROTOCOL = {
    "_execution_device",  # DiffusionPipeline/ModularPipeline: the device to run on, read by every Diffusers pipeline
    "_gradient_checkpointing_func",  # set by ModelMixin.enable_gradient_checkpointing, called by every model's forward
    "_identifier_key",  # BaseGuidance: the batch field naming a guidance pass, read by Diffusers' modular denoisers
    "_input_predictions",  # BaseGuidance: the passes a guider may ask for, the guider protocol's own declaration
}
# PyTorch reports the CPU's bfloat16 features only through `torch._C._cpu._get_cpu_capability()`
# (`torch.backends.cpu.get_cpu_capability()` returns the vector ISA alone), used in `utils/precision.py`.
TORCH_CPU_FEATURES = {"_C", "_cpu", "_get_cpu_capability"}


def sources():
    return sorted(PACKAGE.rglob("*.py"))


def names_defined_here() -> set[str]:
    defined = set()
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
    return defined


def private_uses(path: Path, defined: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"line {node.lineno}: imports from private module {node.module}")
            found += [
                f"line {node.lineno}: imports private {node.module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: imports private module {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in LIBRARIES and any(p.startswith("_") for p in alias.name.split("."))
            ]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__"):
            if node.attr not in defined and node.attr not in AUTHOR_PROTOCOL | TORCH_CPU_FEATURES:
                found.append(f"line {node.lineno}: reads library-private attribute .{node.attr}")
    return found


@pytest.mark.parametrize("path", sources(), ids=lambda path: path.relative_to(PACKAGE).as_posix())
def test_no_private_library_names(path):
    if path.relative_to(PACKAGE).as_posix() == EXTENSION_POINTS:
        pytest.skip("the one module allowed to import Diffusers' private names, each with the public API missing")
    assert not private_uses(path, names_defined_here()), private_uses(path, names_defined_here())


def test_the_scanner_finds_private_imports_and_attributes(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from diffusers.hooks._helpers import TransformerBlockRegistry\n"
        "from diffusers.hooks.group_offloading import _GROUP_OFFLOADING\n"
        "import diffusers.models._modeling_parallel\n"
        "config = model._internal_dict\n"
        "device = pipe._execution_device\n"
    )
    found = private_uses(sample, {"ours"})
    assert len(found) == 4, found
    assert not any("_execution_device" in line for line in found)
