"""`trust_remote_code` consent: our `from_pretrained` trusts exactly the two-line stub this package writes, and any
other code in a pipeline folder, in any component slot, needs the caller's own `trust_remote_code=True` (as plain
`DiffusionPipeline.from_pretrained` requires). Payloads write a marker file when imported, so a test sees whether
they ran."""

import json
import shutil

import pytest

from skyreels_diffusers import SkyReelsV4Pipeline
from skyreels_diffusers.tiny_components import build_tiny_pipeline


PAYLOAD = """import pathlib
pathlib.Path({marker!r}).write_text("ran")


class Evil:
    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls()
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("genuine")
    build_tiny_pipeline(audio_vae="oobleck").save_pretrained(folder)
    return folder


def components(folder) -> list[str]:
    index = json.loads((folder / "model_index.json").read_text())
    return [name for name, entry in index.items() if isinstance(entry, list) and entry[0] and name != "_class_name"]


def test_the_genuine_folder_loads_without_trust_remote_code(saved):
    SkyReelsV4Pipeline.from_pretrained(saved)
    SkyReelsV4Pipeline.from_pretrained(saved)  # and again: loading leaves no code of its own in the folder
    assert sorted(p.name for p in saved.rglob("*.py")) == ["skyreels_v4_pipeline.py"]


def test_a_payload_in_any_component_slot_needs_trust_remote_code(saved, tmp_path):
    for component in components(saved):
        folder = tmp_path / component
        shutil.copytree(saved, folder)
        marker = tmp_path / f"{component}.ran"
        (folder / component / "evil.py").write_text(PAYLOAD.format(marker=str(marker)))
        index = json.loads((folder / "model_index.json").read_text())
        index[component] = ["evil", "Evil"]
        (folder / "model_index.json").write_text(json.dumps(index))
        with pytest.raises(ValueError, match="trust_remote_code"):
            SkyReelsV4Pipeline.from_pretrained(folder)
        assert not marker.exists(), f"the payload in `{component}` ran without consent"


def test_a_payload_shadowing_a_library_name_needs_trust_remote_code(saved, tmp_path):
    # Diffusers loads `<component>/<library>.py` when it exists, even for a library it knows, e.g. `diffusers`.
    folder = tmp_path / "shadow"
    shutil.copytree(saved, folder)
    marker = tmp_path / "shadow.ran"
    (folder / "scheduler" / "diffusers.py").write_text(PAYLOAD.format(marker=str(marker)))
    with pytest.raises(ValueError, match="trust_remote_code"):
        SkyReelsV4Pipeline.from_pretrained(folder)
    assert not marker.exists()


def test_a_stray_code_file_withdraws_consent(saved, tmp_path):
    # (A changed stub is refused too: tests/test_pipeline_skyreels_v4.py::test_tampered_stub_is_not_trusted.)
    stray = tmp_path / "stray"
    shutil.copytree(saved, stray)
    (stray / "helpers.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="trust_remote_code"):
        SkyReelsV4Pipeline.from_pretrained(stray)


def test_the_callers_own_consent_runs_the_code_as_in_diffusers(saved, tmp_path):
    folder = tmp_path / "consented"
    shutil.copytree(saved, folder)
    marker = tmp_path / "consented.ran"
    (folder / "scheduler" / "evil.py").write_text(PAYLOAD.format(marker=str(marker)))
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["evil", "Evil"]
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = SkyReelsV4Pipeline.from_pretrained(folder, trust_remote_code=True)
    assert marker.exists() and type(pipe.scheduler).__name__ == "Evil"
