"""Which proteins an explainer sees for a feature, and which are held out to score it.

As in Gujral et al. (PNAS 2025): activations are min-max scaled per feature (after a ReLU, so
that a neuron's negative values count as inactive); proteins are drawn from five bands of the
scaled activation, 6 from the top band [0.8, 1.0], 3 from each of [0.6, 0.8), [0.4, 0.6),
[0.2, 0.4) and 2 from the bottom band (0, 0.2), plus 15 inactive proteins (scaled activation 0).
A band with too few proteins passes its shortfall on to the next band down.

The paper split one sample 50/50 into explanation and held-out examples. Here the two sets come
from disjoint homology clusters instead (the association stage's splits, see
:func:`split_pools`), both drawn with the band scheme above, so that no held-out protein has a
close homologue among the examples.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

# (low, high, n): band low <= s < high (the top band includes 1.0; the bottom band excludes 0)
BANDS = ((0.8, 1.0, 6), (0.6, 0.8, 3), (0.4, 0.6, 3), (0.2, 0.4, 3), (0.0, 0.2, 2))
N_INACTIVE = 15


def scale(activations: np.ndarray, cutoff: float = 0.0) -> np.ndarray:
    """Scaled activation in [0, 1] over all proteins, [n] -> [n]: 0 at or below the feature's
    activity ``cutoff`` (absolute; :func:`plmsae.interpret.selection.activity_cutoffs`), then
    linear up to 1 at its max. With cutoff 0 this is the ReLU'd min-max scaling of the paper for
    a non-negative feature; a higher cutoff makes a feature that is weakly on everywhere (a
    max-pooled neuron) have inactive proteins too."""
    a = np.maximum(np.asarray(activations, dtype=np.float64), 0.0)
    lo, hi = max(float(cutoff), a.min(initial=0.0)), a.max(initial=0.0)
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def feature_rng(seed: int, source: str, feature: int) -> np.random.Generator:
    """One reproducible random stream per (seed, source, feature), independent of run order."""
    return np.random.default_rng([seed, zlib.crc32(source.encode()), int(feature)])


def band_sample(
    scaled: np.ndarray,
    pool: np.ndarray,
    rng: np.random.Generator,
    bands=BANDS,
    n_inactive: int = N_INACTIVE,
) -> np.ndarray:
    """Protein indices drawn from ``pool`` (indices into ``scaled``) by activation band.

    Returns active proteins in band order (strongest band first), then inactive ones.
    """
    s = scaled[pool]
    chosen: list[np.ndarray] = []
    carry = 0
    for i, (lo, hi, n) in enumerate(bands):
        in_band = (s >= lo) & ((s <= hi) if i == 0 else (s < hi))
        if lo == 0.0:
            in_band &= s > 0
        cand = pool[in_band]
        want = n + carry
        take = rng.choice(cand, size=min(want, len(cand)), replace=False) if len(cand) else cand
        chosen.append(take[np.argsort(-scaled[take], kind="stable")])
        carry = want - len(take)
    inactive = pool[s == 0]
    chosen.append(
        rng.choice(inactive, size=min(n_inactive, len(inactive)), replace=False)
        if len(inactive)
        else inactive
    )
    return np.concatenate(chosen).astype(np.int64)


def band_weights(scaled: np.ndarray, bands=BANDS, n_inactive: int = N_INACTIVE) -> np.ndarray:
    """Per-protein weights [n] that make a whole pool look like a band sample of it: a protein
    in a band with quota q and m members weighs q / m (inactive proteins: 15 / their count).
    Lets the offline explainer fit the distribution it is scored on."""
    s = np.asarray(scaled)
    w = np.zeros(len(s))
    for i, (lo, hi, n) in enumerate(bands):
        in_band = (s >= lo) & ((s <= hi) if i == 0 else (s < hi))
        if lo == 0.0:
            in_band &= s > 0
        if in_band.any():
            w[in_band] = n / in_band.sum()
    inactive = s == 0
    if inactive.any():
        w[inactive] = n_inactive / inactive.sum()
    return w


@dataclass
class Pools:
    """Protein indices (rows of proteins.parquet) the two example sets are drawn from."""

    explain: np.ndarray  # examples shown to the explainer; also the offline explainer's train set
    heldout: np.ndarray  # held-out proteins for scoring
    heldout_split: str  # the association split used as held-out ("" for the cluster fallback)
    how: str  # how the split was made (recorded in summary.json)


def split_pools(
    proteins: pd.DataFrame, stats_splits: set[str] | None = None, seed: int = 0
) -> Pools:
    """Held-out pool = one association split (whole homology clusters), explanation pool = the rest.

    The held-out split is ``test``, unless the association statistics (``associations.parquet``
    ``split`` column, ``stats_splits``) were computed on ``test`` (the associate stage's default:
    thresholds chosen on validation, statistics on test); then it is ``validation``, so that the
    enrichment results shown to the explainer never come from the proteins it is scored on.
    Without such a split, whole clusters are assigned at random (seeded) to the two pools, about
    half of the proteins each, so homologues never straddle them.
    """
    split = proteins["split"].astype(str).to_numpy()
    stats_splits = stats_splits or set()
    for name in ("test", "validation"):
        if name in stats_splits:
            continue
        held = split == name
        if held.any() and (~held).any():
            used = ", ".join(sorted(stats_splits)) or "unknown"
            return Pools(
                np.flatnonzero(~held),
                np.flatnonzero(held),
                name,
                f"held-out = association split '{name}' (association statistics from: "
                f"{used}); explanation examples from the other splits. Held out from the "
                "explainer only: whether the SAE was trained on them is in training_overlap",
            )
    clusters = proteins["cluster"].astype(str).to_numpy()
    uniq, inverse, counts = np.unique(clusters, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    heldout_cluster = np.zeros(len(uniq), bool)
    heldout_cluster[order[np.cumsum(counts[order]) <= len(clusters) / 2]] = True
    held = heldout_cluster[inverse]
    return Pools(
        np.flatnonzero(~held),
        np.flatnonzero(held),
        "",
        "no usable split in proteins.parquet: clusters split 50/50 at random",
    )
