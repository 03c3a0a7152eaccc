"""Sparse encode/decode with sparse backward passes: the reason the TopK trainer is fast.

With ``k`` of ``d_sae`` latents active per token, the gradients of ``W_enc`` and ``W_dec`` have
only ``k`` non-zero rows per token. Dense autograd would spend two ``[B, d_sae] x d`` matmuls on
them; here they are one CSR sparse x dense product each, and the gradient of the active values is
a sampled dense-dense product (SDDMM). Both functions are ordinary ``autograd.Function`` s, so
losses built from them back-propagate (and all-reduce under DistributedDataParallel) normally.

Shapes: ``x [B, d_in]``, ``W_enc [d_sae, d_in]``, ``idx [B, k]`` (int64 latent indices; padding
entries carry any index and a zero ``mask``), ``vals [B, k]``, ``W_dec [d_sae, d_out]``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")


def _sampled_rowdot(idx: Tensor, a: Tensor, W: Tensor) -> Tensor:
    """``out[b, j] = a[b] . W[idx[b, j]]`` without materialising ``W[idx]`` ([B, k])."""
    B, k = idx.shape
    if a.device.type == "cpu":
        crow = torch.arange(0, B * k + 1, k, device=idx.device, dtype=torch.int64)
        S = torch.sparse_csr_tensor(
            crow,
            idx.reshape(-1),
            torch.zeros(B * k, dtype=a.dtype),
            size=(B, W.shape[0]),
            check_invariants=False,
        )
        return torch.sparse.sampled_addmm(S, a, W.t(), beta=0.0).values().view(B, k)
    # GPU: a batched gather-dot is fast and supports every dtype
    return torch.bmm(W[idx], a.unsqueeze(-1)).squeeze(-1)


def _transpose_pattern(idx: Tensor, n_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """(order, crow, cols) of the CSR ``[n_rows, B]`` transposed pattern of ``idx``, cached on
    the ``idx`` tensor: the encoder and decoder backward passes of one step share one sort."""
    cached = getattr(idx, "_plmsae_transpose", None)
    if cached is not None and cached[0] == idx._version:
        return cached[1]
    B, k = idx.shape
    flat = idx.reshape(-1)
    # int32 keys sort ~1.6x faster than int64 on CPU; a stable order keeps results deterministic
    order = torch.argsort(flat.to(torch.int32), stable=True)
    counts = torch.bincount(flat, minlength=n_rows)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=idx.device)
    torch.cumsum(counts, 0, out=crow[1:])
    cols = torch.div(order, k, rounding_mode="floor")
    result = (order, crow, cols)
    idx._plmsae_transpose = (idx._version, result)  # type: ignore[attr-defined]
    return result


def _scatter_rows(idx: Tensor, coef: Tensor, a: Tensor, n_rows: int) -> Tensor:
    """``G[i] = sum_{b,j: idx[b,j]=i} coef[b,j] * a[b]`` ([n_rows, d]) as CSR^T x dense."""
    order, crow, cols = _transpose_pattern(idx, n_rows)
    S_t = torch.sparse_csr_tensor(
        crow,
        cols,
        coef.reshape(-1)[order].to(a.dtype),
        size=(n_rows, a.shape[0]),
        check_invariants=False,
    )
    return S_t @ a


class SparseEncode(torch.autograd.Function):
    """``vals[b, j] = x[b] . W_enc[idx[b, j]] + b_enc[idx[b, j]]`` (pre-activations of the
    selected latents, exact in the weights' dtype). ``values``: those pre-activations when the
    caller already has them in the weights' dtype (the selection matmul ran in it): they are
    used as they are instead of being computed again; the backward pass is the same."""

    @staticmethod
    def forward(
        ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, idx: Tensor, values: Tensor | None = None
    ) -> Tensor:
        ctx.save_for_backward(x, W_enc, idx)
        if values is not None:
            return values.to(W_enc.dtype, copy=True)
        return _sampled_rowdot(idx, x, W_enc) + b_enc[idx]

    @staticmethod
    def backward(ctx, g: Tensor):
        x, W_enc, idx = ctx.saved_tensors
        g = g.contiguous()
        g_x = g_W = g_b = None
        if ctx.needs_input_grad[0]:
            g_x = F.embedding_bag(idx, W_enc, per_sample_weights=g.to(W_enc.dtype), mode="sum")
        if ctx.needs_input_grad[1]:
            g_W = _scatter_rows(idx, g, x, W_enc.shape[0])
        if ctx.needs_input_grad[2]:
            g_b = torch.zeros(W_enc.shape[0], dtype=g.dtype, device=g.device)
            g_b.index_add_(0, idx.reshape(-1), g.reshape(-1))
        return g_x, g_W, g_b, None, None


class SparseDecode(torch.autograd.Function):
    """``out[b] = sum_j vals[b, j] * W_dec[idx[b, j]]`` ([B, d_out])."""

    @staticmethod
    def forward(ctx, idx: Tensor, vals: Tensor, W_dec: Tensor) -> Tensor:
        ctx.save_for_backward(idx, vals, W_dec)
        return F.embedding_bag(idx, W_dec, per_sample_weights=vals.to(W_dec.dtype), mode="sum")

    @staticmethod
    def backward(ctx, g: Tensor):
        idx, vals, W_dec = ctx.saved_tensors
        g = g.contiguous()
        g_vals = g_W = None
        if ctx.needs_input_grad[1]:
            g_vals = _sampled_rowdot(idx, g, W_dec).to(vals.dtype)
        if ctx.needs_input_grad[2]:
            g_W = _scatter_rows(idx, vals, g, W_dec.shape[0])
        return None, g_vals, g_W


def sparse_encode(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, idx: Tensor, values: Tensor | None = None
) -> Tensor:
    """Pre-activations ``[B, k]`` of latents ``idx`` with a sparse backward pass
    (:class:`SparseEncode`; ``values``: already computed in the weights' dtype)."""
    return SparseEncode.apply(x, W_enc, b_enc, idx, values)


def sparse_decode(idx: Tensor, vals: Tensor, W_dec: Tensor) -> Tensor:
    return SparseDecode.apply(idx, vals, W_dec)


def to_dense(idx: Tensor, vals: Tensor, d_sae: int) -> Tensor:
    """Scatter ``[..., k]`` (idx, vals) into dense codes ``[..., d_sae]``."""
    z = torch.zeros(*idx.shape[:-1], d_sae, dtype=vals.dtype, device=vals.device)
    return z.scatter_(-1, idx, vals)
