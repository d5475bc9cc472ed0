import os
import warnings

import pytest
import torch


# Tests never reach a model hub: everything is built locally from tiny configs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under pytest-xdist (`-n auto`, as the README runs the suite) the workers share the cores: each gets its share of
# them, since oversubscribed cores run tiny tensors many times slower than one thread does.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

# Slow tests in files whose tests carry no marks of their own (each took over 7 s on a loaded 2-core machine; the
# others are marked where they are defined). `python -m pytest -q -m "not slow"` skips them all.
SLOW_ELSEWHERE = {
    "tests/test_precision.py::test_every_pipeline_runs_after_to_bfloat16_and_agrees_with_float32",
    "tests/test_cache.py::test_cached_generation_is_close_and_computes_less",
    "tests/test_cache.py::test_pyramid_attention_broadcast_through_the_refiner",
    "tests/test_refiner.py::test_chain_base_to_refiner_end_to_end",
    "tests/test_transformer_skyreels_v4.py::test_compiles_without_graph_breaks",
}
SLOW_TIMEOUT_S = 600  # for slow tests without a timeout of their own


def pytest_collection_modifyitems(config, items):
    found = set()
    for item in items:
        name = item.nodeid.split("[")[0]
        if name in SLOW_ELSEWHERE:
            found.add(name)
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    collected_files = {item.nodeid.split("::")[0] for item in items}
    missing = {name for name in SLOW_ELSEWHERE - found if name.split("::")[0] in collected_files}
    if missing and not config.getoption("keyword") and not config.getoption("markexpr", ""):
        # A renamed test would silently join the quick loop: say so (only on unfiltered runs, where all are seen).
        warnings.warn(f"tests/conftest.py SLOW_ELSEWHERE names unknown tests: {sorted(missing)}", stacklevel=1)
