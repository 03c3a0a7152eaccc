"""Baselines scored through the same code as SAE features: raw model neurons and random
directions of matched sparsity.

- ``neuron``: feature i = ReLU(x_i) of the model's hidden state (the layer the SAE reads). After
  pooling, thresholds are fractions of each neuron's max, exactly as for SAE features (the
  per-feature min-max scaling of the PNAS neuron baseline: the min of a ReLU'd neuron is 0).
- ``random``: feature j = ReLU(u_j . (x - mean) - b_j) with u_j a random unit vector (Gaussian,
  normalised; seeded) and b_j set so that direction j fires on the same fraction of inputs as the
  SAE's median live feature (fraction of residues for residue-level SAEs, of proteins for
  protein-level ones), measured on a calibration sample of the store. A random direction is thus
  as sparse as a typical SAE feature but carries no learned structure.
"""

from __future__ import annotations

import numpy as np
import torch


class NeuronBaseline:
    """ReLU'd hidden units: ``encode(x [..., d]) -> [..., d]``."""

    def __init__(self, d_model: int):
        self.d = d_model

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class RandomDirections:
    """ReLU(u . (x - mean) - b) for ``n`` random unit directions ``u`` (see module docstring)."""

    def __init__(self, d_model: int, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_model, n, generator=g)
        self.weight = w / w.norm(dim=0, keepdim=True)
        self.mean = torch.zeros(d_model)
        self.bias = torch.zeros(n)
        self.target_density: float | None = None

    def calibrate(self, sample: torch.Tensor, target_density: float) -> "RandomDirections":
        """Centre on ``sample`` [m, d] and set each bias so that a ``target_density`` fraction of
        the sample rows activate."""
        self.mean = sample.mean(dim=0)
        proj = (sample - self.mean) @ self.weight
        q = float(np.clip(1.0 - target_density, 0.0, 1.0))
        self.bias = torch.quantile(proj, q, dim=0)
        self.target_density = float(target_density)
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.mean) @ self.weight - self.bias)


def median_live_density(z: torch.Tensor) -> float:
    """Median over features with any activation of the fraction of rows where they fire
    (``z`` [m, F] from the SAE on a calibration sample). Dead features are left out so that a
    partly dead SAE does not make the random baseline artificially silent."""
    dens = (z > 0).float().mean(dim=0)
    live = dens[dens > 0]
    return float(np.median(live.numpy())) if len(live) else 0.0
