"""Counting model work in a pipeline call, so tests can tell that a bad input was refused before any of it."""

from contextlib import contextmanager

import pytest


MODEL_COMPONENTS = ("text_encoder", "transformer", "vae", "audio_vae", "vocoder")


@contextmanager
def model_calls(pipe):
    """Yields a list that collects the name of each model component whose layers run inside the block (hooks on
    every submodule: the VAEs run through `encode`/`decode`, not `forward`)."""
    calls, handles = [], []
    for name in MODEL_COMPONENTS:
        component = getattr(pipe, name, None)
        if component is not None:
            for module in component.modules():
                handles.append(module.register_forward_pre_hook(lambda *args, name=name: calls.append(name)))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def refused_before_model_work(pipe, error=ValueError, match=None):
    """`pytest.raises(error, match=match)`, and no model component ran before the error."""
    with model_calls(pipe) as calls, pytest.raises(error, match=match) as info:
        yield info
    assert not calls, f"refused only after model work ({sorted(set(calls))}): {info.value}"
