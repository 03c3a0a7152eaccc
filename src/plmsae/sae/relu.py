"""ReLU SAE with an L1 penalty weighted by decoder row norms (Anthropic, April 2024 update;
InterPLM's SAEs are of this kind).

loss = (||y - y_hat||^2 + l1_coefficient * sum_i z_i ||W_dec[i]||) / E||y - E y||^2, per token.
The decoder is not norm-constrained: the penalty makes the scale of z and W_dec identifiable.
"""

from __future__ import annotations

from torch import Tensor

from plmsae.sae.base import SAE, TrainState

DEFAULT_L1 = 5.0


class ReLUSAE(SAE):
    arch = "relu"

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def training_loss(self, x_n: Tensor, y_n: Tensor, state: TrainState) -> tuple[Tensor, dict]:
        z = self.activation(self.pre_acts(x_n))
        recon = z @ self.W_dec + self.b_dec
        err_sq = (y_n - recon).pow(2).sum()
        l1 = (z * self.W_dec.norm(dim=1)).sum()
        coef = self.cfg.l1_coefficient if self.cfg.l1_coefficient is not None else DEFAULT_L1
        B = x_n.shape[0]
        loss = (err_sq + coef * l1) * state.loss_scale / B
        active = z.detach() > 0
        return loss, {"err_sq": err_sq.detach(), "l0": active.sum() / B, "fired": active.sum(0)}
