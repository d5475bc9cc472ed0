import math

import pytest
import torch
import torch.nn.functional as F

from skyreels_diffusers.models.attention_video_sparse import cube_layout, video_sparse_attention, vsa_topk


def qkv(grid, batch=2, heads=2, dim=16, seed=0, text=5):
    generator = torch.Generator().manual_seed(seed)
    tokens = grid[0] * grid[1] * grid[2]
    video = [torch.randn(batch, tokens, heads, dim, generator=generator) for _ in range(4)]
    text_tokens = [torch.randn(batch, text, heads, dim, generator=generator) for _ in range(3)]
    mask = torch.ones(batch, text, dtype=torch.bool)
    mask[-1, 3:] = False
    return video, text_tokens, mask


def dense(q, k, v, tk=None, tv=None, mask=None):
    keys, values = k, v
    attn_mask = None
    if tk is not None:
        keys, values = torch.cat([k, tk], 1), torch.cat([v, tv], 1)
        attn_mask = None if mask is None else F.pad(mask, (k.shape[1], 0), value=True)[:, None, None]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=attn_mask
    )
    return out.transpose(1, 2)


@pytest.mark.parametrize("grid", [(4, 4, 4), (8, 4, 8), (5, 6, 7)])
@pytest.mark.parametrize("with_text", [False, True])
def test_all_cubes_selected_fine_branch_equals_dense(grid, with_text):
    (q, k, v, _), (tq, tk, tv), mask = qkv(grid)
    text = {"text_query": tq, "text_key": tk, "text_value": tv, "text_mask": mask} if with_text else {}
    for backend in ("gather", "reference"):
        out, text_out = video_sparse_attention(q, k, v, grid, sparsity=0.0, backend=backend, **text)
        expected = dense(q, k, v, tk, tv, mask) if with_text else dense(q, k, v)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if with_text:
        all_keys = dense(tq, torch.cat([k, tk], 1), torch.cat([v, tv], 1))
        masked = F.scaled_dot_product_attention(
            tq.transpose(1, 2),
            torch.cat([k, tk], 1).transpose(1, 2),
            torch.cat([v, tv], 1).transpose(1, 2),
            attn_mask=F.pad(mask, (k.shape[1], 0), value=True)[:, None, None],
        ).transpose(1, 2)
        torch.testing.assert_close(text_out, masked, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(all_keys[-1], masked[-1])  # the text mask matters


def test_text_without_mask_pads_to_whole_cubes_correctly():
    grid = (4, 4, 8)
    (q, k, v, _), (tq, tk, tv), _ = qkv(grid, seed=4)  # 5 text tokens: the gather pads them to one 64-row cube
    out, _ = video_sparse_attention(q, k, v, grid, sparsity=0.0, text_query=tq, text_key=tk, text_value=tv)
    torch.testing.assert_close(out, dense(q, k, v, tk, tv), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid", [(8, 8, 4), (5, 6, 7), (3, 9, 5)])
@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.9])
def test_gather_equals_masked_reference(grid, sparsity):
    (q, k, v, gate), (tq, tk, tv), mask = qkv(grid, seed=1)
    kwargs = {
        "gate": gate,
        "sparsity": sparsity,
        "text_query": tq,
        "text_key": tk,
        "text_value": tv,
        "text_mask": mask,
    }
    gathered, gathered_text = video_sparse_attention(q, k, v, grid, backend="gather", chunk_size=3, **kwargs)
    reference, reference_text = video_sparse_attention(q, k, v, grid, backend="reference", **kwargs)
    torch.testing.assert_close(gathered, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gathered_text, reference_text)
    if sparsity > 0.5:  # sparse attention really differs from dense
        assert not torch.allclose(
            video_sparse_attention(q, k, v, grid, backend="gather", sparsity=sparsity)[0], dense(q, k, v), atol=1e-3
        )


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


# Skipped only when this torch build has no flex_attention; any error from the flex backend itself fails the test.
@pytest.mark.skipif(
    not flex_attention_available(), reason="torch.nn.attention.flex_attention is not in this torch build"
)
def test_flex_equals_reference():
    grid = (5, 6, 7)
    (q, k, v, gate), (tq, tk, tv), mask = qkv(grid, seed=2)
    kwargs = {"gate": gate, "sparsity": 0.7, "text_query": tq, "text_key": tk, "text_value": tv, "text_mask": mask}
    flex, _ = video_sparse_attention(q, k, v, grid, backend="flex", **kwargs)
    reference, _ = video_sparse_attention(q, k, v, grid, backend="reference", **kwargs)
    torch.testing.assert_close(flex, reference, atol=1e-5, rtol=1e-5)


def test_coarse_mean_divides_by_real_tokens():
    grid = (1, 1, 2)  # one cube holding 2 real tokens and 62 padded ones
    q = torch.zeros(1, 2, 1, 4)
    k = torch.zeros(1, 2, 1, 4)
    v = torch.tensor([[[[2.0, 0, 0, 0]], [[4.0, 0, 0, 0]]]])
    gate = torch.ones(1, 2, 1, 4)
    with_gate, _ = video_sparse_attention(q, k, v, grid, gate=gate, sparsity=0.0)
    fine, _ = video_sparse_attention(q, k, v, grid, sparsity=0.0)
    # The coarse value is the mean over the 2 real tokens (3.0), not over all 64 slots (0.09375).
    torch.testing.assert_close(with_gate - fine, torch.tensor([3.0, 0, 0, 0]).expand(1, 2, 1, 4))
    _, real, _ = cube_layout(grid)
    assert real.shape == (1, 64) and int(real.sum()) == 2


def test_gradients_flow_through_gather_and_match_reference():
    grid = (5, 4, 6)
    (q, k, v, gate), _, _ = qkv(grid, batch=1, seed=3)
    grads = {}
    for backend in ("gather", "reference"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, gate)]
        out, _ = video_sparse_attention(*leaves[:3], grid, gate=leaves[3], sparsity=0.5, backend=backend)
        out.square().sum().backward()
        grads[backend] = [leaf.grad for leaf in leaves]
    for gathered, reference in zip(grads["gather"], grads["reference"]):
        assert gathered is not None and gathered.abs().sum() > 0
        torch.testing.assert_close(gathered, reference, atol=1e-4, rtol=1e-4)


def test_topk_formula():
    assert vsa_topk(64, 0.875) == 8
    assert vsa_topk(10, 0.875) == math.ceil(1.25)
    assert vsa_topk(3, 0.99) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.5}, "sparsity"),
        ({"backend": "cuda"}, "backend"),
        ({"video_grid": (4, 4, 5)}, "video tokens"),
        ({"video_grid": (4, 4)}, "video_grid"),
    ],
)
def test_bad_inputs(kwargs, message):
    (q, k, v, _), _, _ = qkv((4, 4, 4))
    args = {"video_grid": (4, 4, 4), **kwargs}
    with pytest.raises(ValueError, match=message):
        video_sparse_attention(q, k, v, **args)
    with pytest.raises(ValueError, match="query"):
        video_sparse_attention(q[0], k, v, (4, 4, 4))


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 1000])
def test_gather_inference_path_equals_autograd_path(chunk_size):
    # Without autograd the gather runs matmul attention over chunks of query cubes that may span (batch, head)
    # planes; with autograd it runs SDPA on fresh gathers. Both must agree, text and padded cubes included.
    grid = (5, 6, 7)
    (q, k, v, gate), (tq, tk, tv), mask = qkv(grid, seed=5)
    kwargs = {"gate": gate, "sparsity": 0.6, "text_key": tk, "text_value": tv, "text_mask": mask}
    with torch.no_grad():
        fast, _ = video_sparse_attention(q, k, v, grid, backend="gather", chunk_size=chunk_size, **kwargs)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    slow, _ = video_sparse_attention(*leaves, grid, backend="gather", chunk_size=chunk_size, **kwargs)
    torch.testing.assert_close(fast, slow.detach(), atol=1e-5, rtol=1e-5)


def test_gather_in_key_slabs_equals_reference(monkeypatch):
    # Over the budget, one query cube's keys and values are gathered in slabs of 16 cubes (here 16 video + 1 text).
    from skyreels_diffusers.models import attention_video_sparse

    monkeypatch.setattr(attention_video_sparse, "MATMUL_BUDGET_BYTES", 1)
    calls = []
    slab_path = attention_video_sparse._attend_in_slabs
    monkeypatch.setattr(
        attention_video_sparse, "_attend_in_slabs", lambda *a, **kw: calls.append(kw["slab"]) or slab_path(*a, **kw)
    )
    grid = (7, 8, 15)  # 2 x 2 x 4 cubes, padded
    (q, k, v, gate), (tq, tk, tv), mask = qkv(grid, seed=6)
    kwargs = {"gate": gate, "sparsity": 0.0, "text_key": tk, "text_value": tv, "text_mask": mask}
    with torch.no_grad():
        slabs, _ = video_sparse_attention(q, k, v, grid, backend="gather", **kwargs)
        reference, _ = video_sparse_attention(q, k, v, grid, backend="reference", **kwargs)
    torch.testing.assert_close(slabs, reference, atol=1e-5, rtol=1e-5)
    assert calls and set(calls) == {16}  # slabs of 16 key cubes (one call per worker thread)


def test_gather_with_worker_threads_equals_one_thread():
    # With several torch threads the chunks go to single-threaded workers; the caller's thread count is restored.
    grid = (5, 6, 7)
    (q, k, v, gate), (tq, tk, tv), mask = qkv(grid, seed=7)
    kwargs = {"gate": gate, "sparsity": 0.5, "text_key": tk, "text_value": tv, "text_mask": mask, "chunk_size": 1}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = video_sparse_attention(q, k, v, grid, backend="gather", **kwargs)
        torch.set_num_threads(3)
        several, _ = video_sparse_attention(q, k, v, grid, backend="gather", **kwargs)
        with torch.inference_mode():  # thread-local modes reach the workers
            several_inference, _ = video_sparse_attention(q, k, v, grid, backend="gather", **kwargs)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(several, one, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(several_inference, one, atol=1e-6, rtol=1e-6)
