"""Scores of an explanation on held-out proteins, and bootstrap summaries over features.

- simulation: Pearson r between simulated (0..10) and true activations (Gujral et al. 2025;
  Bills et al. 2023). A constant simulation carries no information and scores r = 0.
- detection: balanced accuracy of "predicted active" (simulated activation above the
  explainer's threshold: > 0 for an LLM, fitted on the training proteins for the offline
  explainer) against "truly active" (activation > 0).
"""

from __future__ import annotations

import numpy as np


def pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson r; 0.0 when ``pred`` is constant, NaN when ``truth`` is constant (unscorable)."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if len(truth) < 2 or np.ptp(truth) == 0:
        return float("nan")
    if np.ptp(pred) == 0:
        return 0.0
    return float(np.corrcoef(pred, truth)[0, 1])


def balanced_accuracy(pred_active: np.ndarray, true_active: np.ndarray) -> float:
    """Mean of sensitivity and specificity; NaN when either class is absent from the truth."""
    pred_active = np.asarray(pred_active, bool)
    true_active = np.asarray(true_active, bool)
    if true_active.all() or not true_active.any():
        return float("nan")
    return float((pred_active[true_active].mean() + (~pred_active[~true_active]).mean()) / 2)


def bootstrap_ci(
    values, stat=np.median, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat`` over ``values`` (resampled with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    stats = stat(v[idx], axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarize(values, n_boot: int = 2000, seed: int = 0) -> dict:
    """{n, median, median_ci, mean, mean_ci} of the non-NaN values (95% bootstrap CIs)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return {"n": 0, "median": None, "median_ci": None, "mean": None, "mean_ci": None}
    return {
        "n": int(len(v)),
        "median": float(np.median(v)),
        "median_ci": list(bootstrap_ci(v, np.median, n_boot, seed)),
        "mean": float(np.mean(v)),
        "mean_ci": list(bootstrap_ci(v, np.mean, n_boot, seed)),
    }


def median_difference(a, b, n_boot: int = 2000, seed: int = 0) -> dict:
    """median(a) - median(b) of two independent samples, with a 95% bootstrap CI."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return {"difference": None, "ci": None}
    rng = np.random.default_rng(seed)
    da = np.median(a[rng.integers(0, len(a), (n_boot, len(a)))], axis=1)
    db = np.median(b[rng.integers(0, len(b), (n_boot, len(b)))], axis=1)
    lo, hi = np.quantile(da - db, [0.025, 0.975])
    return {"difference": float(np.median(a) - np.median(b)), "ci": [float(lo), float(hi)]}
