"""TopK SAE (Gao et al. 2024; the PNAS protein SAEs) with the AuxK dead-latent loss.

Training step on a normalised batch ``x [B, d]``:

1. pre-activations ``[B, d_sae]`` without autograd (the dense encoder matmul, optionally in
   bfloat16 for the *selection* only: ``select_dtype``),
2. the k largest per token (:func:`~plmsae.sae.rowtopk.topk_rows`), their exact values
   recomputed in float32 by :func:`sparse_encode`,
3. decode with ``embedding_bag``; gradients of W_enc / W_dec / the values are sparse
   (:mod:`plmsae.sae.sparse`),
4. AuxK: the ``k_aux = d_out/2`` largest pre-activations among dead latents reconstruct the
   residual, weighted by ``auxk_alpha * min(n_dead / k_aux, 1)``.

Decoder rows stay at unit norm (gradient parallel to each row removed before the step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from plmsae._util import InputError
from plmsae.sae.base import SAE, TrainState, remove_parallel_grad_, unit_norm_rows_
from plmsae.sae.rowtopk import topk_rows
from plmsae.sae.sparse import sparse_decode, sparse_encode, to_dense


class TopKFamily(SAE):
    """Shared by TopK, BatchTopK and Matryoshka: sparse training path, AuxK, unit-norm decoder."""

    #: dtype of the matmul that only *selects* active latents ("float32" or "bfloat16")
    select_dtype: str = "float32"

    @property
    def k(self) -> int:
        """Active latents per token (on average for BatchTopK and Matryoshka)."""
        if self.cfg.k is None:
            raise InputError(f"a {self.arch} SAE needs k (cfg.json has none).", fix="set k.")
        return self.cfg.k

    def _xc(self, x_n: Tensor) -> Tensor:
        return x_n - self.b_dec if self.cfg.centres_input else x_n

    @torch.no_grad()
    def _selection_pre(self, xc: Tensor) -> Tensor:
        """Pre-activations used to choose latents (no autograd). The bias rides along as an
        extra input column of ones: ``[xc, 1] @ [W_enc, b_enc].T`` writes the result once,
        where ``addmm`` would first copy the bias into the whole ``[B, d_sae]`` output."""
        dtype = torch.bfloat16 if self.select_dtype == "bfloat16" else self.W_enc.dtype
        W = getattr(self, "_W_sel", None)
        if W is None or W.dtype != dtype or W.device != self.W_enc.device:
            W = self._W_sel = self._augmented_encoder(dtype)
        x1 = torch.ones(xc.shape[0], xc.shape[1] + 1, dtype=dtype, device=xc.device)
        x1[:, :-1] = xc
        return x1 @ W.t()

    def _exact(self, selected: Tensor) -> Tensor | None:
        """The selection's pre-activations when they are exact (computed in the weights' dtype),
        so that :func:`sparse_encode` need not compute them again; None after bfloat16
        selection."""
        return selected if selected.dtype == self.W_enc.dtype else None

    def _augmented_encoder(self, dtype) -> Tensor:
        W = torch.empty(self.cfg.d_sae, self.cfg.d_in + 1, dtype=dtype, device=self.W_enc.device)
        W[:, :-1] = self.W_enc.detach()
        W[:, -1] = self.b_enc.detach()
        return W

    def _auxk(self, xc: Tensor, pre: Tensor, residual: Tensor, state: TrainState) -> Tensor | None:
        """AuxK loss: dead latents' top ``k_aux`` reconstruct the (detached) residual."""
        if not self.cfg.auxk_alpha or state.dead_mask is None:
            return None
        dead = state.dead_mask.nonzero().squeeze(1)
        if dead.numel() == 0:
            return None
        k_aux = max(1, self.cfg.d_target // 2)
        scale = min(dead.numel() / k_aux, 1.0)
        k_aux = min(k_aux, dead.numel())
        with torch.no_grad():
            _, j = topk_rows(pre.index_select(1, dead), k_aux)
            aux_idx = dead[j]
        aux_vals = sparse_encode(xc, self.W_enc, self.b_enc, aux_idx).relu()
        e_hat = sparse_decode(aux_idx, aux_vals, self.W_dec)
        err = (e_hat - residual.detach()).pow(2).sum()
        return self.cfg.auxk_alpha * scale * err * state.loss_scale / xc.shape[0]

    def before_step(self) -> None:
        remove_parallel_grad_(self.W_dec)

    @torch.no_grad()
    def after_step(self) -> None:
        unit_norm_rows_(self.W_dec.data)
        W = getattr(self, "_W_sel", None)
        if W is not None:  # refresh the selection copy of the encoder in place
            W[:, :-1] = self.W_enc
            W[:, -1] = self.b_enc

    def _finish(
        self,
        idx: Tensor,
        vals: Tensor,
        xc: Tensor,
        pre: Tensor,
        y_n: Tensor,
        state: TrainState,
        extra_loss: Tensor | None = None,
        recon_weight: float = 1.0,
    ) -> tuple[Tensor, dict]:
        recon = sparse_decode(idx, vals, self.W_dec) + self.b_dec
        residual = y_n - recon
        err_sq = residual.pow(2).sum()
        B = xc.shape[0]
        loss = err_sq * (state.loss_scale * recon_weight / B)
        if extra_loss is not None:
            loss = loss + extra_loss
        aux = self._auxk(xc, pre, residual, state)
        if aux is not None:
            loss = loss + aux
        active = vals.detach() > 0
        counts = torch.bincount(idx[active], minlength=self.cfg.d_sae)
        info = {
            "err_sq": err_sq.detach(),
            "l0": active.sum() / B,
            "fired": counts,
            "auxk": aux.detach() if aux is not None else None,
        }
        return loss, info


class TopKSAE(TopKFamily):
    """Exactly ``k`` latents per token (fewer if some of the top k are not positive)."""

    arch = "topk"

    def activation(self, pre: Tensor) -> Tensor:
        vals, idx = topk_rows(pre, self.k)
        return to_dense(idx, vals.relu(), self.cfg.d_sae)

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(vals [..., k], idx [..., k])`` instead of dense codes."""
        x_n, _ = self.normalise(x)
        vals, idx = topk_rows(self.pre_acts(x_n), self.k)
        return vals.relu(), idx

    def training_loss(self, x_n: Tensor, y_n: Tensor, state: TrainState) -> tuple[Tensor, dict]:
        xc = self._xc(x_n)
        pre = self._selection_pre(xc)
        top_vals, top_idx = topk_rows(pre, self.k)
        vals = sparse_encode(xc, self.W_enc, self.b_enc, top_idx, self._exact(top_vals)).relu()
        return self._finish(top_idx, vals, xc, pre, y_n, state)
