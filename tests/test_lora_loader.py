import contextlib
import copy
import logging

import pytest
import safetensors.torch
import torch
from diffusers import DiffusionPipeline
from diffusers.training_utils import _collate_lora_metadata
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from test_transformer_skyreels_v4 import TINY, make_inputs, randomize_cross_modal

from skyreels_diffusers import SkyReelsV4Transformer3DModel
from skyreels_diffusers.loaders import SkyReelsV4LoraLoaderMixin


TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


class TinyLoraPipeline(DiffusionPipeline, SkyReelsV4LoraLoaderMixin):
    """The smallest real pipeline with the mixin: only a transformer."""

    def __init__(self, transformer: SkyReelsV4Transformer3DModel):
        super().__init__()
        self.register_modules(transformer=transformer)


def run(transformer, **kwargs):
    with torch.no_grad():
        out = transformer(**make_inputs(), **kwargs)
    return torch.cat([out.sample.flatten(), out.audio_sample.flatten()])


def adapt(base, seed, rank=4, alpha=8):
    """A copy of `base` with a PEFT LoRA whose B matrices are non-zero (as after training)."""
    model = copy.deepcopy(base)
    model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """Base transformer, two saved LoRAs (alpha != rank, so the stored metadata matters) and reference outputs."""
    torch.manual_seed(0)
    base = randomize_cross_modal(SkyReelsV4Transformer3DModel(**TINY).eval())
    refs = {"base": run(base)}
    dirs = {}
    for name, seed, rank in (("a", 1, 4), ("b", 2, 2)):
        adapted = adapt(base, seed, rank=rank)
        refs[name] = run(adapted)
        dirs[name] = tmp_path_factory.mktemp(f"lora_{name}")
        TinyLoraPipeline.save_lora_weights(
            dirs[name],
            transformer_lora_layers=get_peft_model_state_dict(adapted),
            **_collate_lora_metadata({"transformer": adapted}),
        )
        refs[f"{name}_state_dict"] = get_peft_model_state_dict(adapted)
    return base, dirs, refs


@pytest.fixture
def pipe(lora):
    return TinyLoraPipeline(transformer=copy.deepcopy(lora[0]))


def closer_to_both(mixed, ref_a, ref_b):
    gap = (ref_a - ref_b).norm()
    return (mixed - ref_a).norm() < gap and (mixed - ref_b).norm() < gap


def test_save_writes_one_prefixed_safetensors_file(lora):
    _, dirs, refs = lora
    files = [p.name for p in dirs["a"].iterdir()]
    assert files == ["pytorch_lora_weights.safetensors"]
    on_disk = safetensors.torch.load_file(dirs["a"] / files[0])
    expected = {f"transformer.{k}": v for k, v in refs["a_state_dict"].items()}
    assert on_disk.keys() == expected.keys()
    assert any(".video." in k for k in on_disk)
    assert any(".audio." in k for k in on_disk)
    assert any(".cross_modal." in k for k in on_disk)
    assert all(torch.equal(on_disk[k], expected[k]) for k in expected)

    for source in (dirs["a"], dirs["a"] / files[0], str(dirs["a"])):
        state_dict, metadata = TinyLoraPipeline.lora_state_dict(source, return_lora_metadata=True)
        assert state_dict.keys() == expected.keys()
        assert metadata["transformer.r"] == 4 and metadata["transformer.lora_alpha"] == 8


def test_load_matches_adapted_model(lora, pipe):
    _, dirs, refs = lora
    assert not torch.equal(refs["a"], refs["base"])
    pipe.load_lora_weights(dirs["a"], adapter_name="style")
    assert torch.equal(run(pipe.transformer), refs["a"])
    assert pipe.get_active_adapters() == ["style"]
    assert pipe.get_list_adapters() == {"transformer": ["style"]}
    with pytest.raises(ValueError, match="already in use"):
        pipe.load_lora_weights(dirs["a"], adapter_name="style")


def test_keys_of_other_components_are_left_out(lora, pipe):
    _, _, refs = lora
    prefixed = {f"transformer.{k}": v for k, v in refs["a_state_dict"].items()}
    with warnings_from("skyreels_diffusers.loaders.lora_pipeline") as messages:
        pipe.load_lora_weights({**prefixed, "text_encoder.layers.0.q_proj.lora_A.weight": torch.zeros(2, 2)})
    assert any("not for `transformer`" in m for m in messages) and pipe.get_list_adapters()
    pipe.delete_adapters(pipe.get_active_adapters())


def test_load_from_state_dict_with_metadata(lora, pipe):
    _, dirs, refs = lora
    state_dict, metadata = TinyLoraPipeline.lora_state_dict(dirs["a"], return_lora_metadata=True)
    keys = list(state_dict)
    pipe.load_lora_weights(state_dict, metadata=metadata)
    assert list(state_dict) == keys  # the caller's dict is not consumed
    assert torch.equal(run(pipe.transformer), refs["a"])


def test_set_adapters_weight_interpolates(lora, pipe):
    _, dirs, refs = lora
    pipe.load_lora_weights(dirs["a"], adapter_name="a")
    pipe.set_adapters("a", 0.5)
    half = run(pipe.transformer)
    assert not torch.equal(half, refs["a"]) and not torch.equal(half, refs["base"])
    assert closer_to_both(half, refs["a"], refs["base"])
    pipe.set_adapters("a", 1.0)
    assert torch.equal(run(pipe.transformer), refs["a"])
    with pytest.raises(ValueError, match="not in the list of present adapters"):
        pipe.set_adapters("missing")


def test_two_adapters(lora, pipe):
    _, dirs, refs = lora
    pipe.load_lora_weights(dirs["a"], adapter_name="a")
    pipe.load_lora_weights(dirs["b"], adapter_name="b")
    assert pipe.get_list_adapters() == {"transformer": ["a", "b"]}
    pipe.set_adapters(["a", "b"], [1.0, 1.0])
    assert sorted(pipe.get_active_adapters()) == ["a", "b"]
    both = run(pipe.transformer)
    assert not torch.equal(both, refs["a"]) and not torch.equal(both, refs["b"])
    pipe.set_adapters("a")
    assert torch.equal(run(pipe.transformer), refs["a"])
    pipe.set_adapters("b")
    assert torch.equal(run(pipe.transformer), refs["b"])
    pipe.delete_adapters("a")
    assert pipe.get_list_adapters() == {"transformer": ["b"]}
    assert torch.equal(run(pipe.transformer), refs["b"])


def test_fuse_unfuse_and_unload_after_fuse(lora, pipe):
    _, dirs, refs = lora
    pipe.load_lora_weights(dirs["a"])
    pipe.fuse_lora()
    assert pipe.num_fused_loras == 1
    torch.testing.assert_close(run(pipe.transformer), refs["a"], atol=1e-5, rtol=1e-5)
    pipe.unfuse_lora()
    assert pipe.num_fused_loras == 0
    unfused = {k.replace(".base_layer.", "."): v for k, v in pipe.transformer.state_dict().items() if "lora_" not in k}
    torch.testing.assert_close(unfused, lora[0].state_dict(), atol=1e-6, rtol=1e-6)  # base weights are back
    torch.testing.assert_close(run(pipe.transformer), refs["a"], atol=1e-5, rtol=1e-5)
    pipe.disable_lora()
    torch.testing.assert_close(run(pipe.transformer), refs["base"], atol=1e-5, rtol=1e-5)
    pipe.enable_lora()
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # the LoRA layers go, the fused weights stay
    assert not any(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules())
    torch.testing.assert_close(run(pipe.transformer), refs["a"], atol=1e-5, rtol=1e-5)


# The base output again after unloading, or at scale 0, runs other modules (PEFT's wrappers, then the restored layers)
# over equal weights: bit-equal on an AMX Xeon, 2.4e-7 apart with ATen/MKL/oneDNN held to AVX2 (outputs of mean
# magnitude 0.59; adapter "a" moves them by 0.19 on average).
BASE_TOLERANCE = {"rtol": 0, "atol": 2e-6}


def test_unload_restores_base(lora, pipe):
    base, dirs, refs = lora
    pipe.load_lora_weights(dirs["a"])
    pipe.unload_lora_weights()
    torch.testing.assert_close(run(pipe.transformer), refs["base"], **BASE_TOLERANCE)
    assert pipe.transformer.state_dict().keys() == base.state_dict().keys()
    assert pipe.get_list_adapters() == {}


def test_attention_kwargs_scale(lora, pipe):
    _, dirs, refs = lora
    pipe.load_lora_weights(dirs["a"])
    torch.testing.assert_close(run(pipe.transformer, attention_kwargs={"scale": 0.0}), refs["base"], **BASE_TOLERANCE)
    assert closer_to_both(run(pipe.transformer, attention_kwargs={"scale": 0.5}), refs["a"], refs["base"])
    assert torch.equal(run(pipe.transformer), refs["a"])  # the per-call scale does not stick


def test_refuses_pickle_files(lora, pipe, tmp_path):
    _, _, refs = lora
    state_dict = {f"transformer.{k}": v for k, v in refs["a_state_dict"].items()}
    torch.save(state_dict, tmp_path / "pytorch_lora_weights.bin")
    with pytest.raises(ValueError, match=r"pretrained_model_name_or_path_or_dict.*pickled.*safetensors"):
        pipe.load_lora_weights(tmp_path / "pytorch_lora_weights.bin")
    with pytest.raises(ValueError, match=r"folder.*no usable `\.safetensors`.*pickled"):
        pipe.load_lora_weights(tmp_path)
    safetensors.torch.save_file(state_dict, tmp_path / "pytorch_lora_weights.safetensors")
    with pytest.raises(ValueError, match=r"weight_name.*pickled"):
        pipe.load_lora_weights(tmp_path, weight_name="pytorch_lora_weights.bin")
    with pytest.raises(ValueError, match="use_safetensors"):
        pipe.load_lora_weights(tmp_path, use_safetensors=False)
    with pytest.raises(ValueError, match="safe_serialization"):
        TinyLoraPipeline.save_lora_weights(tmp_path, refs["a_state_dict"], safe_serialization=False)
    assert pipe.get_list_adapters() == {}


@contextlib.contextmanager
def warnings_from(logger_name: str):
    """Messages a Diffusers-style logger warns while the block runs."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def test_missing_path_and_bad_inputs(lora, pipe, tmp_path):
    _, dirs, refs = lora
    missing = tmp_path / "no_such_lora"
    with pytest.raises(ValueError, match=r"pretrained_model_name_or_path_or_dict.*no_such_lora.*not an existing"):
        pipe.load_lora_weights(missing)
    with pytest.raises(ValueError, match=r"weight_name.*other\.safetensors.*no such file"):
        pipe.load_lora_weights(dirs["a"], weight_name="other.safetensors")
    with pytest.raises(TypeError, match=r"pretrained_model_name_or_path_or_dict.*int"):
        pipe.load_lora_weights(3)
    with pytest.raises(TypeError, match="adapter_name"):
        pipe.load_lora_weights(dirs["a"], adapter_name=1)
    with pytest.raises(TypeError, match=r"revision.*Hub"):
        pipe.load_lora_weights(dirs["a"], revision="main")
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        pipe.load_lora_weights(tmp_path / "broken.safetensors")
    # No `transformer.` key at all: nothing for this pipeline, a no-op with a warning (as Diffusers' loaders do).
    with (
        warnings_from("skyreels_diffusers.loaders.lora_pipeline") as ours,
        warnings_from("diffusers.loaders.peft") as diffusers,
    ):
        pipe.load_lora_weights(dict(refs["a_state_dict"]))
    assert any("are not for `transformer`" in m for m in ours) and pipe.get_list_adapters() == {}
    assert any(m.startswith("No LoRA keys associated to") for m in diffusers)  # Diffusers' own message
    with pytest.raises(ValueError, match="not a LoRA checkpoint"):
        pipe.load_lora_weights({"transformer.proj_out.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="transformer_lora_layers"):
        TinyLoraPipeline.save_lora_weights(tmp_path / "out", {})
    with pytest.raises(ValueError, match=r"transformer_lora_layers.*already prefixed"):
        prefixed = {f"transformer.{k}": v for k, v in refs["a_state_dict"].items()}
        TinyLoraPipeline.save_lora_weights(tmp_path / "out", prefixed)
    with pytest.raises(ValueError, match=r"weight_name.*\.safetensors"):
        TinyLoraPipeline.save_lora_weights(tmp_path / "out", refs["a_state_dict"], weight_name="lora.txt")
    assert pipe.get_list_adapters() == {}
