"""Baselines scored through the same code as SAE features: raw model neurons and random
directions of matched sparsity.

- ``neuron`` (``neuron_baseline``):
  - ``signed`` (default): 2 x d features, feature i < d = ReLU(x_i), feature d + i = ReLU(-x_i).
    A hidden unit carries information in both signs; keeping only the positive half (``relu``)
    throws half of each neuron away and makes the baseline weaker than it is (both signs raised
    the neuron terms of the audit in issue 12 from 177 to 202).
  - ``relu``: d features, ReLU(x_i) (the positive half only).
  - ``minmax``: d features, the PNAS (Gujral et al. 2025) neuron baseline: each neuron shifted by
    its minimum on a calibration sample of the store, so that "active at fraction t of the max"
    means min-max scaled activation > t. Negative values below the calibration minimum are
    clipped to 0.
  After pooling, thresholds are fractions of each feature's max, exactly as for SAE features.
- ``random``: feature j = ReLU(u_j . (x - mean) - b_j) with u_j a random unit vector (Gaussian,
  normalised; seeded) and b_j set so that direction j fires on the same fraction of inputs as the
  SAE's median live feature (fraction of residues for residue-level SAEs, of proteins for
  protein-level ones), measured on a calibration sample of the store. A random direction is thus
  as sparse as a typical SAE feature but carries no learned structure. By default there are as
  many random directions as neuron features.

Each baseline has ``directions`` ([n_features, d] unit vectors in the model's space: the
"decoder direction" the redundancy grouping compares, :mod:`plmsae.analysis.redundancy`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

NEURON_BASELINES = ("signed", "relu", "minmax")


class NeuronBaseline:
    """Model neurons as features: ``encode(x [..., d]) -> [..., n_features]`` (see the module
    docstring for the three ``kind`` s)."""

    def __init__(self, d_model: int, kind: str = "signed"):
        if kind not in NEURON_BASELINES:
            raise ValueError(f"neuron baseline must be one of {NEURON_BASELINES}, not {kind!r}")
        self.d, self.kind = d_model, kind
        self.minimum = torch.zeros(d_model)

    @property
    def n_features(self) -> int:
        return 2 * self.d if self.kind == "signed" else self.d

    def calibrate(self, sample: torch.Tensor) -> NeuronBaseline:
        """``minmax``: remember each neuron's minimum over ``sample`` [m, d] (others: no-op)."""
        if self.kind == "minmax" and len(sample):
            self.minimum = sample.min(dim=0).values.float()
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "signed":
            return torch.cat([torch.relu(x), torch.relu(-x)], dim=-1)
        if self.kind == "minmax":
            return torch.relu(x - self.minimum)
        return torch.relu(x)

    @property
    def directions(self) -> np.ndarray:
        """[n_features, d]: +e_i (and -e_i for the negative half of signed neurons)."""
        eye = np.eye(self.d, dtype=np.float32)
        return np.concatenate([eye, -eye]) if self.kind == "signed" else eye

    def feature_name(self, f: int) -> str:
        """A readable name of feature ``f`` (``+x12``, ``-x12``)."""
        if self.kind == "signed":
            return f"{'+' if f < self.d else '-'}x{f % self.d}"
        return f"x{f}"


class RandomDirections:
    """ReLU(u . (x - mean) - b) for ``n`` random unit directions ``u`` (see module docstring)."""

    def __init__(self, d_model: int, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_model, n, generator=g)
        self.weight = w / w.norm(dim=0, keepdim=True)
        self.mean = torch.zeros(d_model)
        self.bias = torch.zeros(n)
        self.target_density: float | None = None

    def calibrate(self, sample: torch.Tensor, target_density: float) -> RandomDirections:
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

    @property
    def directions(self) -> np.ndarray:
        """[n, d] the unit directions."""
        return self.weight.T.numpy().astype(np.float32)


def median_live_density(
    encode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int = 1024
) -> float:
    """Median over features with any activation of the fraction of rows where they fire, for
    the codes ``encode(x)`` [m, F] of the SAE on a calibration sample ``x`` [m, d]. Dead features
    are left out so that a partly dead SAE does not make the random baseline artificially
    silent. Encoded ``rows`` at a time: all m codes at once would take m x F x 4 bytes (1.2 GiB
    at 16,384 rows and 20,000 features)."""
    fired = torch.zeros((), dtype=torch.int64)
    for a in range(0, len(x), rows):
        fired = fired + (encode(x[a : a + rows]) > 0).sum(dim=0)
    dens = fired.float() / max(1, len(x))  # float32, as the mean of 0/1 codes was
    live = dens[dens > 0]
    return float(np.median(live.numpy())) if len(live) else 0.0
