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


def weighted_pearson(pred: np.ndarray, truth: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of ``pred`` and ``truth`` ([n]) under each row of weights ``w`` ([B, n]):
    [B]; 0 where the weighted ``pred`` is constant, NaN where ``truth`` is (as :func:`pearson`)."""
    tot = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mp = (w @ pred) / tot
        mt = (w @ truth) / tot
        dp = pred[None, :] - mp[:, None]
        dt = truth[None, :] - mt[:, None]
        vp = (w * dp * dp).sum(axis=1)
        vt = (w * dt * dt).sum(axis=1)
        r = (w * dp * dt).sum(axis=1) / np.sqrt(vp * vt)
    r = np.where(vp <= 1e-12, 0.0, r)
    return np.where((vt <= 1e-12) | (tot <= 0), np.nan, r)


def weighted_balanced_accuracy(
    pred_active: np.ndarray, true_active: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Balanced accuracy under each row of weights ``w`` ([B, n]): [B]; NaN where a class of the
    truth has no weight (as :func:`balanced_accuracy`)."""
    p, t = np.asarray(pred_active, bool), np.asarray(true_active, bool)
    pos, neg = w[:, t].sum(axis=1), w[:, ~t].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = w[:, t & p].sum(axis=1) / pos
        spec = w[:, ~t & ~p].sum(axis=1) / neg
    return np.where((pos > 0) & (neg > 0), (sens + spec) / 2, np.nan)


METRICS = {"simulation_r": "predicted", "detection_balanced_accuracy": "predicted_active"}


def paired_difference(
    features: dict[str, list[dict]], metric: str, n_boot: int = 2000, seed: int = 0
) -> dict:
    """SAE minus neuron difference of the median score over features, with a paired bootstrap.

    ``features``: source ("sae", "neuron") -> one dict per scored feature with ``proteins``
    (held-out protein ids [n]), ``truth`` (0..10), ``predicted`` (0..10) and ``true_active`` /
    ``predicted_active`` (bool). Each resample draws one Poisson(1) weight per held-out protein,
    shared by every feature of both sources (the pairing: a protein that is easy or hard to
    predict is so for both), and resamples each source's features with replacement; every
    feature's score (``simulation_r``: weighted Pearson r; ``detection_balanced_accuracy``:
    weighted balanced accuracy) is recomputed under the weights, and the difference of the two
    medians taken. Returns ``{difference, ci (95 %), n: {source: features}, n_boot}``."""
    a, b = features.get("sae", []), features.get("neuron", [])
    if not a or not b:
        return {"difference": None, "ci": None}
    proteins = sorted({p for f in a + b for p in f["proteins"]})
    where = {p: i for i, p in enumerate(proteins)}
    rng = np.random.default_rng(seed)
    weights = rng.poisson(1.0, size=(n_boot, len(proteins))).astype(np.float64)
    ones = np.ones((1, len(proteins)))

    def scores(feats: list[dict], w: np.ndarray) -> np.ndarray:  # [n_features, B]
        out = []
        for f in feats:
            wf = w[:, [where[p] for p in f["proteins"]]]
            if metric == "simulation_r":
                out.append(weighted_pearson(f["predicted"], f["truth"], wf))
            else:
                out.append(weighted_balanced_accuracy(f["predicted_active"], f["true_active"], wf))
        return np.array(out)

    point = [np.nanmedian(scores(fs, ones)[:, 0]) for fs in (a, b)]
    boot = []
    for fs in (a, b):
        s = scores(fs, weights)  # [n_features, B]
        pick = rng.integers(0, len(fs), size=(n_boot, len(fs)))
        boot.append(np.nanmedian(s[pick, np.arange(n_boot)[:, None]], axis=1))
    diff = boot[0] - boot[1]
    diff = diff[~np.isnan(diff)]
    if np.isnan(point).any() or not len(diff):
        return {"difference": None, "ci": None}
    lo, hi = np.quantile(diff, [0.025, 0.975])
    return {
        "difference": float(point[0] - point[1]),
        "ci": [float(lo), float(hi)],
        "n": {"sae": len(a), "neuron": len(b)},
        "n_boot": int(n_boot),
        "paired": "held-out proteins resampled jointly for both sources (Poisson weights); "
        "features resampled within each source",
    }
