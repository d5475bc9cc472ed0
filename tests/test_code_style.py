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
