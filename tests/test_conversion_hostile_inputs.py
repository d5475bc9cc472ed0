"""Every conversion script answers a hostile or broken pickle passed with `--allow-pickle` with its `error:` line
and exit code 2 (never a traceback, never the pickle's code), and a staging folder left by a killed run is removed
by the next run."""

import os
import pickle
import subprocess
import sys

import pytest
from script_loading import load_script


TINY_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "pipelines", "skyreels-v4-tiny")


class RunsCode:
    """Unpickling this calls `os.system`: `torch.load(weights_only=True)` must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_pickle(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"weight": RunsCode(marker)}, f)
    return str(path)


def truncated_pickle(path):
    path.write_bytes(b"\x80\x04\x95")
    return str(path)


def invocations(weights, tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{}")
    out = str(tmp_path / "out")
    return {
        "convert_skyreels_v4_checkpoint": ["--checkpoint", weights, "--base_pipeline", TINY_DEFAULT, "--output", out],
        "convert_hunyuanvideo_to_skyreels_v4": ["--source", weights, "--source_config", str(config), "--output", out],
        "convert_hunyuanvideo15_to_skyreels_v4": [
            "--source",
            weights,
            "--source_config",
            str(config),
            "--output",
            out,
        ],
        "convert_lora": ["import", "--lora", weights, "--output", str(tmp_path / "lora.safetensors")],
    }


@pytest.mark.parametrize("kind", ["hostile", "truncated"])
@pytest.mark.parametrize(
    "script",
    [
        "convert_skyreels_v4_checkpoint",
        "convert_hunyuanvideo_to_skyreels_v4",
        "convert_hunyuanvideo15_to_skyreels_v4",
        "convert_lora",
    ],
)
def test_bad_pickle_with_allow_pickle_gives_the_error_line(script, kind, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    weights = hostile_pickle(tmp_path / "w.pt", marker) if kind == "hostile" else truncated_pickle(tmp_path / "w.pt")
    assert load_script(script).main([*invocations(weights, tmp_path)[script], "--allow-pickle"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "w.pt" in err, err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_stale_staging_of_a_dead_run_is_removed(tmp_path):
    common = load_script("_common")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".partial-out-{dead_pid}-abc"
    live = tmp_path / f".partial-out-{os.getpid()}-def"  # a concurrent run of this very process: kept
    other = tmp_path / f".partial-other-{dead_pid}-ghi"  # another output's staging: not ours to judge
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "config.json").write_text("{}")

    def write(folder):
        with open(os.path.join(folder, "config.json"), "w") as f:
            f.write("{}")

    common.save_atomically(write, str(tmp_path / "out"))
    assert (tmp_path / "out" / "config.json").exists()
    assert not stale.exists() and live.exists() and other.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-out-") and p != live]
