"""JumpReLU SAE (Rajamanoharan et al. 2024; Gemma Scope): ``z = pre * H(pre - theta)`` with a
learnt per-latent threshold ``theta = exp(log_threshold)`` and an L0 penalty.

The step function has no gradient; ``theta`` learns through straight-through estimators with a
rectangle kernel of width ``jumprelu_bandwidth`` (pseudo-derivatives of Eq. 11-12 of the paper).
loss = (||y - y_hat||^2 + l0_coefficient * ||z||_0) / E||y - E y||^2, per token.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from plmsae.sae.base import SAE, TrainState

DEFAULT_L0 = 1.0
DEFAULT_BANDWIDTH = 1e-3
INITIAL_THRESHOLD = 1e-3


def _rect(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_pre = g * (pre > theta)
        g_theta = (-(theta / eps) * _rect((pre - theta) / eps) * g).sum(0)
        return g_pre, g_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_theta = (-(1.0 / eps) * _rect((pre - theta) / eps) * g).sum(0)
        return None, g_theta, None


class JumpReLUSAE(SAE):
    arch = "jumprelu"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(INITIAL_THRESHOLD)))

    def reset_parameters(self, generator=None):
        super().reset_parameters(generator)
        with torch.no_grad():
            self.log_threshold.fill_(math.log(INITIAL_THRESHOLD))

    @property
    def _eps(self) -> float:
        return self.cfg.jumprelu_bandwidth or DEFAULT_BANDWIDTH

    def activation(self, pre: Tensor) -> Tensor:
        theta = self.log_threshold.exp()
        return pre * (pre > theta)

    def training_loss(self, x_n: Tensor, y_n: Tensor, state: TrainState) -> tuple[Tensor, dict]:
        pre = self.pre_acts(x_n).relu()
        theta = self.log_threshold.exp()
        z = _JumpReLU.apply(pre, theta, self._eps)
        recon = z @ self.W_dec + self.b_dec
        err_sq = (y_n - recon).pow(2).sum()
        l0 = _Step.apply(pre, theta, self._eps).sum()
        coef = self.cfg.l0_coefficient if self.cfg.l0_coefficient is not None else DEFAULT_L0
        B = x_n.shape[0]
        loss = (err_sq + coef * l0) * state.loss_scale / B
        active = z.detach() > 0
        return loss, {"err_sq": err_sq.detach(), "l0": active.sum() / B, "fired": active.sum(0)}
