"""`ruff` owns the layout (`ruff format`) and the lint rules of `pyproject.toml`, for every Python file of the repo."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    command = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("args", [("format", "--check", "."), ("check", ".")])
def test_ruff(args):
    result = ruff(*args)
    assert result.returncode == 0, (
        result.stdout + result.stderr + "\n(ruff comes with the test extra: pip install '.[test]')"
    )


# The package's layers, lowest first (docs/design.md): a module may import its own layer and those below it.
LAYERS = {"utils": 0, "models": 1, "loaders": 2, "pipelines": 3, "processing_qwen2_5_vl": 3, "tiny_components": 4}
PACKAGE = ROOT / "src" / "skyreels_diffusers"


def imported_layers(path: Path) -> set[str]:
    """The package subdivisions a module imports, absolute (`skyreels_diffusers.x`) or relative (`..x`, `.x`)."""
    import ast

    parts = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:  # resolve `from ..models import X` against the module's own package
            base = list(parts[: len(parts) - node.level])
            target = base + (node.module.split(".") if node.module else [])
            names = [target[0]] if target else [alias.name for alias in node.names]
        elif node.module and node.module.split(".")[0] == "skyreels_diffusers":
            rest = node.module.split(".")[1:]
            names = rest[:1] or [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in LAYERS)
    return found


@pytest.mark.parametrize("layer", ["utils", "models", "loaders", "pipelines"])
def test_no_layer_imports_a_higher_one(layer):
    violations = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        higher = {name for name in imported_layers(path) if LAYERS[name] > LAYERS[layer]}
        violations += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(higher)]
    assert not violations, violations
