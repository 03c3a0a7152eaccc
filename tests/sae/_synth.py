"""Synthetic activations for the SAE tests, and training on a source held in memory."""

import torch

from plmsae.sae.train import TrainConfig, Trainer, TrainResult


def structured(n=6000, d=32, n_features=128, active=3, seed=0, offset=1.0):
    """Sparse combinations of unit directions plus noise: an SAE can explain most variance."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_features, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, n_features)
    for _ in range(active):
        j = torch.randint(0, n_features, (n,), generator=g)
        codes[torch.arange(n), j] = torch.rand(n, generator=g) * 3 + 1
    return codes @ D + 0.05 * torch.randn(n, d, generator=g) + offset


def fit(source, **options) -> TrainResult:
    """``Trainer(TrainConfig(store=None, **options), source).fit()``."""
    return Trainer(TrainConfig(store=None, **options), source).fit()
