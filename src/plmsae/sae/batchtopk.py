"""BatchTopK SAE (Bussmann et al. 2024): the ``B * k`` largest activations over the whole batch.

Tokens may use more or fewer than k latents; the average is k. At inference there is no batch,
so a latent fires when its pre-activation exceeds a global threshold, learnt during training as an
exponential moving average of the smallest selected activation per batch (recorded as
``cfg.threshold`` and in the weights as ``threshold``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from plmsae.sae.base import TrainState
from plmsae.sae.sparse import sparse_encode
from plmsae.sae.topk import TopKFamily

THRESHOLD_EMA = 0.99


class BatchTopKSAE(TopKFamily):
    arch = "batchtopk"
    threshold: Tensor  # buffer: the inference threshold on pre-activations

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.tensor(float(cfg.threshold or 0.0)))

    def activation(self, pre: Tensor) -> Tensor:
        return pre * (pre > self.threshold.clamp_min(0.0))

    def sync_config(self) -> None:
        self.cfg.threshold = float(self.threshold)

    def _batch_select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """Padded ``(idx [B, kmax], mask [B, kmax])`` of the batch's ``B * k`` largest."""
        B, M = pre.shape
        flat = pre.reshape(-1).topk(B * self.k, sorted=False).indices.sort().values
        rows = torch.div(flat, M, rounding_mode="floor")
        counts = torch.bincount(rows, minlength=B)
        kmax = max(int(counts.max()), 1)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(flat.numel(), device=pre.device) - starts[rows]
        idx = torch.zeros(B, kmax, dtype=torch.int64, device=pre.device)
        mask = torch.zeros(B, kmax, dtype=torch.bool, device=pre.device)
        idx[rows, pos] = flat - rows * M
        mask[rows, pos] = True
        return idx, mask

    def _select_values(self, x_n: Tensor):
        xc = self._xc(x_n)
        pre = self._selection_pre(xc)
        idx, mask = self._batch_select(pre)
        exact = self._exact(pre.gather(1, idx))
        vals = sparse_encode(xc, self.W_enc, self.b_enc, idx, exact).relu() * mask
        if self.training:
            with torch.no_grad():
                selected = vals[mask & (vals > 0)]
                if selected.numel():
                    lo = selected.min()
                    t = self.threshold
                    t.copy_(lo if float(t) == 0.0 else THRESHOLD_EMA * t + (1 - THRESHOLD_EMA) * lo)
        return xc, pre, idx, vals

    def training_loss(self, x_n: Tensor, y_n: Tensor, state: TrainState) -> tuple[Tensor, dict]:
        xc, pre, idx, vals = self._select_values(x_n)
        return self._finish(idx, vals, xc, pre, y_n, state)
