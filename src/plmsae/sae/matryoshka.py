"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): nested dictionaries.

The first ``m_1 < m_2 < ... < d_sae`` latents must each reconstruct the input on their own, so
early latents learn general features and later ones refine them. The loss is the mean over
prefixes of the normalised squared error using only the latents below that prefix; selection and
inference are BatchTopK's.
"""

from __future__ import annotations

from torch import Tensor

from plmsae.sae.base import TrainState
from plmsae.sae.batchtopk import BatchTopKSAE
from plmsae.sae.sparse import sparse_decode


def default_prefixes(d_sae: int) -> list[int]:
    """d_sae/16, /8, /4, /2, d_sae."""
    return sorted({max(1, d_sae // f) for f in (16, 8, 4, 2)} | {d_sae})


class MatryoshkaSAE(BatchTopKSAE):
    arch = "matryoshka"

    def __init__(self, cfg):
        if not cfg.matryoshka_prefixes:
            cfg.matryoshka_prefixes = default_prefixes(cfg.d_sae)
        p = list(cfg.matryoshka_prefixes)
        if p != sorted(set(p)) or p[-1] != cfg.d_sae or p[0] < 1:
            from plmsae._util import InputError

            raise InputError(
                f"matryoshka prefixes {p} must increase and end at d_sae={cfg.d_sae}.",
                fix="pass increasing sizes, the last equal to --latents.",
            )
        super().__init__(cfg)

    def training_loss(self, x_n: Tensor, y_n: Tensor, state: TrainState) -> tuple[Tensor, dict]:
        xc, pre, idx, vals = self._select_values(x_n)
        B = xc.shape[0]
        prefix_loss: Tensor | None = None
        inner = list(self.cfg.matryoshka_prefixes or [])[:-1]
        for m in inner:
            recon_m = sparse_decode(idx, vals * (idx < m), self.W_dec) + self.b_dec
            term = (y_n - recon_m).pow(2).sum() * state.loss_scale / B
            prefix_loss = term if prefix_loss is None else prefix_loss + term
        n = len(inner) + 1
        return self._finish(
            idx,
            vals,
            xc,
            pre,
            y_n,
            state,
            extra_loss=prefix_loss / n if prefix_loss is not None else None,
            recon_weight=1.0 / n,
        )
