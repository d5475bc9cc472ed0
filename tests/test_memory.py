"""Diffusers' memory features on the SkyReels-V4 models, applied by Diffusers as they are: layerwise casting, and
block-level group offloading over the top-level block lists (each joint block holds video, audio and the A/V
exchange)."""

import pytest
import torch
from diffusers.hooks.group_offloading import ModuleGroup
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from skyreels_diffusers import SkyReelsV4AudioTransformer1DModel
from skyreels_diffusers.tiny_components import build_tiny_refiner, build_tiny_transformer


def perturbed(model, seed=1):
    """Give every weight (the zero-initialised outputs included) a random offset, so every layer shapes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def joint_case():
    model = perturbed(build_tiny_transformer())
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 17, 3, 4, 6, generator=generator),
        "timestep": torch.tensor([600.0]),
        "encoder_hidden_states": torch.randn(1, 5, 32, generator=generator),
        "encoder_attention_mask": torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool),
        "audio_hidden_states": torch.randn(1, 8, 24, generator=generator),
    }
    return model, inputs, lambda out: torch.cat([out.sample.flatten(), out.audio_sample.flatten()])


def refiner_case():
    model = perturbed(build_tiny_refiner())
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 17, 5, 8, 12, generator=generator),
        "timestep": torch.tensor([400.0]),
        "encoder_hidden_states": torch.randn(1, 5, 32, generator=generator),
        "encoder_attention_mask": torch.ones(1, 5, dtype=torch.bool),
        "audio_latents": torch.randn(1, 8, 25, generator=generator),
    }
    return model, inputs, lambda out: out.sample


def audio_case():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SkyReelsV4AudioTransformer1DModel(
            in_channels=8,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=1,
            num_single_layers=1,
            num_token_refiner_layers=1,
            text_embed_dim=32,
        ).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 8, 12, generator=generator),
        "timestep": torch.tensor([300.0]),
        "encoder_hidden_states": torch.randn(1, 5, 32, generator=generator),
    }
    return perturbed(model), inputs, lambda out: out.sample


CASES = {"joint": joint_case, "refiner": refiner_case, "audio": audio_case}


def run(model, inputs, flatten):
    with torch.no_grad():
        return flatten(model(**inputs))


# --------------------------------------------------------------------------------------------------
# Layerwise casting
# --------------------------------------------------------------------------------------------------


def is_stored_low(name: str, module: torch.nn.Module) -> bool:
    """Diffusers' rule, with the models' `_skip_layerwise_casting_patterns`: the linear layers of the blocks are
    stored in the low dtype; norms and adaLN modulations (modules named `norm*`), the embedders, the timestep
    embedding and the output heads stay in the compute dtype."""
    in_blocks = name.startswith(("transformer_blocks.", "single_transformer_blocks."))
    return in_blocks and isinstance(module, torch.nn.Linear) and "norm" not in name


@pytest.mark.parametrize("case", sorted(CASES))
def test_layerwise_casting_stores_block_linears_and_keeps_norms_and_embeddings(case):
    model, inputs, flatten = CASES[case]()
    reference = run(model, inputs, flatten)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)

    modules = dict(model.named_modules())
    for name, param in model.named_parameters():
        module_name = name.rsplit(".", 1)[0]
        low = module_name in modules and is_stored_low(module_name, modules[module_name])
        assert param.dtype == (torch.float8_e4m3fn if low else torch.float32), name
    assert sum(p.numel() for p in model.parameters() if p.dtype == torch.float8_e4m3fn) > 0

    output = run(model, inputs, flatten)
    error = (output - reference).norm() / reference.norm()
    assert 0 < error < 0.05, error  # fp8 weights: close, not equal


# --------------------------------------------------------------------------------------------------
# Group offloading
# --------------------------------------------------------------------------------------------------


def offload_groups(model) -> list[ModuleGroup]:
    """The offloading groups Diffusers made. The one place this test reads Diffusers' private names: Diffusers has no
    public way to list a model's offloading groups (missing: e.g. `get_group_offload_groups(model)`)."""
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING
    from diffusers.hooks.hooks import HookRegistry

    groups = {}
    for module in model.modules():
        hook = HookRegistry.check_if_exists_or_initialize(module).get_hook(_GROUP_OFFLOADING)
        if hook is not None:
            groups[id(hook.group)] = hook.group
    return list(groups.values())


def group_tensors(group: ModuleGroup) -> dict[int, torch.Tensor]:
    tensors = [t for m in group.modules for t in (*m.parameters(), *m.buffers())]
    return {id(t): t for t in (*tensors, *group.parameters, *group.buffers)}


class OnloadChecker(TorchFunctionMode):
    """Records every weight an op reads while its offloading group is not onloaded. With the onload and offload
    devices both the CPU a missed onload does not fail, so it is tracked through `ModuleGroup.onload_`/`offload_`."""

    def __init__(self, model, monkeypatch):
        super().__init__()
        self.names = {id(t): name for name, t in (*model.named_parameters(), *model.named_buffers())}
        self.onloaded, self.missed, self.paused = set(), set(), False
        for method, update in (("onload_", set.update), ("offload_", set.difference_update)):
            monkeypatch.setattr(ModuleGroup, method, self._tracked(getattr(ModuleGroup, method), update))

    def _tracked(self, original, update):
        def tracked(group):
            self.paused = True  # the transfers themselves touch the weights
            try:
                original(group)
            finally:
                self.paused = False
            update(self.onloaded, group_tensors(group))

        return tracked

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused and getattr(func, "__name__", "") != "__get__":  # reading `.dtype` is no use
            for value in pytree.tree_leaves((args, kwargs)):
                if isinstance(value, torch.Tensor) and id(value) in self.names and id(value) not in self.onloaded:
                    self.missed.add(self.names[id(value)])
        return func(*args, **kwargs)


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_group_offload_onloads_every_weight_and_matches(case, offload_type, monkeypatch):
    model, inputs, flatten = CASES[case]()
    reference = run(model, inputs, flatten)
    checker = OnloadChecker(model, monkeypatch)
    blocks = {"num_blocks_per_group": 1} if offload_type == "block_level" else {}
    model.enable_group_offload(torch.device("cpu"), offload_type=offload_type, **blocks)
    with checker:
        output = run(model, inputs, flatten)
    assert not checker.missed, f"used while offloaded: {sorted(checker.missed)}"
    assert torch.equal(output, reference)


@pytest.mark.parametrize("case", sorted(CASES))
def test_block_level_offload_groups_each_block_alone(case):
    model, _, _ = CASES[case]()
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    model.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)

    groups = offload_groups(model)
    weights = [{id(t) for t in group_tensors(g).values() if isinstance(t, torch.nn.Parameter)} for g in groups]
    assert sum(map(len, weights)) == len(list(model.parameters()))  # every weight in exactly one group
    # One group per top-level block (each joint block holds its video, audio and A/V exchange), one for the rest
    assert len(groups) == len(blocks) + 1
    assert all({id(p) for p in block.parameters()} in weights for block in blocks)
