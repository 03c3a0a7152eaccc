"""The compiled row-wise top-k selects what torch.topk selects."""

from __future__ import annotations

import sys

import pytest
import torch

from plmsae.sae.rowtopk import MIN_ELEMENTS, topk_rows


def _check_same_as_torch(x: torch.Tensor, k: int) -> None:
    vals, idx = topk_rows(x, k)
    ref_vals, _ = x.topk(k, dim=-1, sorted=False)
    assert vals.shape == idx.shape == ref_vals.shape
    assert vals.dtype == x.dtype and idx.dtype == torch.int64
    # the same values (ties may be broken at other positions), distinct positions holding them
    assert torch.equal(vals.sort(-1).values.nan_to_num(), ref_vals.sort(-1).values.nan_to_num())
    assert torch.equal(x.gather(-1, idx).nan_to_num(), vals.nan_to_num())
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()


def test_kernel_is_used_for_an_sae_batch():
    x = torch.randn(4096, 1024)
    _check_same_as_torch(x, 32)
    assert "plmsae.sae._rowtopk_kernel" in sys.modules


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_ties_and_dtypes(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        n = int(torch.randint(4, 3000, (1,), generator=g))
        B = max(1, MIN_ELEMENTS // n + int(torch.randint(0, 300, (1,), generator=g)))
        k = int(torch.randint(1, n // 4 + 1, (1,), generator=g))
        x = torch.randn(B, n, generator=g)
        if seed % 3 == 1:  # few distinct values: ties everywhere
            x = torch.randint(0, 3, (B, n), generator=g).float()
        if seed % 3 == 2:
            x = x.double()
        _check_same_as_torch(x, k)


def test_sorted_constant_and_infinite_rows():
    n = 1024
    up = torch.arange(n, dtype=torch.float32).repeat(64, 1)
    x = torch.cat([up, -up, torch.zeros(64, n), torch.full((64, n), -torch.inf)])
    x[:8, ::3] = torch.inf
    _check_same_as_torch(x, 32)


def test_rows_with_nan_rank_nan_highest_as_torch_does():
    x = torch.randn(256, 1024)
    x[::7, 5] = torch.nan
    x[3, :] = torch.nan
    vals, idx = topk_rows(x, 16)
    ref_vals, ref_idx = x.topk(16, dim=-1, sorted=False)
    assert torch.equal(vals.isnan(), ref_vals.isnan())
    assert torch.equal(idx[::7].sort(-1).values, ref_idx[::7].sort(-1).values)
    _check_same_as_torch(x, 16)


def test_leading_dimensions_and_autograd():
    x = torch.randn(4, 64, 1024, requires_grad=True)
    vals, idx = topk_rows(x, 8)
    assert vals.shape == (4, 64, 8)
    vals.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.zeros_like(x).scatter_(-1, idx, 1.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_ranked_as_float32(dtype):
    """The bfloat16 selection matmul's output (the default on CPUs with fast bfloat16) takes
    the kernel too: many ties at 8 bits of mantissa, the same values as torch.topk."""
    sys.modules.pop("plmsae.sae._rowtopk_kernel", None)
    x = torch.randn(4096, 1024).to(dtype)
    x[:4, :40] = 1.0  # ties across the k-th value
    _check_same_as_torch(x, 32)
    assert "plmsae.sae._rowtopk_kernel" in sys.modules
    x.requires_grad_(True)
    vals, idx = topk_rows(x, 32)
    vals.float().sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x).scatter_(-1, idx, 1.0))


def test_what_the_kernel_does_not_take_goes_to_torch():
    for x, k in [
        (torch.randn(8, 16), 3),  # small
        (torch.randn(256, 1024, dtype=torch.float64).to(torch.int32), 8),  # dtype
        (torch.randn(256, 1024), 300),  # k > n / 4
    ]:
        vals, idx = topk_rows(x, k)
        ref_vals, ref_idx = x.topk(k, dim=-1, sorted=False)
        assert torch.equal(vals, ref_vals) and torch.equal(idx, ref_idx)
