"""Redundant features: groups of features that fire on the same proteins or share a decoder
direction, so that counts of "features associated" can be read per distinct feature.

Two live features are linked when
- their active sets have a Jaccard index >= :data:`JACCARD_MIN` (0.7). A feature's active set
  is the proteins where it is above the threshold of its best association (the fraction of its
  max chosen for that concept on validation; activation > 0 for a feature without association),
  so that two features count as copies when they mark the same proteins as strongly as their
  associations use them (max-pooled features also fire weakly on many other proteins). Both
  sets must hold >= :data:`JACCARD_MIN_PROTEINS` proteins and at most
  :data:`JACCARD_MAX_DENSITY` (half) of all proteins. Two independent features of density p
  have an expected Jaccard of p / (2 - p), at most 0.33 for p <= 0.5, so 0.7 is far above
  chance; for two sets of equal size it means that each shares >= 82 % of its proteins with the
  other. Features active on most proteins share their active sets trivially (a glutamine
  feature and a valine feature both fire on nearly every protein), so they are linked only
  through their decoders;
- or their decoder directions (unit vectors in the model's space) have a cosine >=
  :data:`COSINE_MIN` (0.9): two dictionary atoms that near-duplicate each other.
Groups are the connected components of these links (union-find by
``scipy.sparse.csgraph.connected_components``); a group's id is its smallest feature index. Dead
features (never active) form groups of their own and are not counted as distinct features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from plmsae.analysis.assocdir import PRECISION_MIN, Q_MAX

JACCARD_MIN = 0.7
JACCARD_MIN_PROTEINS = 5
JACCARD_MAX_DENSITY = 0.5
COSINE_MIN = 0.9
_CHUNK = 1024


@dataclass
class Groups:
    """Redundancy groups of one source: ``group`` [F] (smallest feature index of each feature's
    group), ``live`` [F] bool, and the number of links of each kind."""

    group: np.ndarray
    live: np.ndarray
    n_jaccard_links: int
    n_cosine_links: int

    @property
    def n_groups(self) -> int:
        """Distinct live features: groups with at least one live feature."""
        return int(len(np.unique(self.group[self.live])))


def _pairs_above(
    score: Callable[[np.ndarray], np.ndarray], cutoff: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of n items with ``score(rows)[r, j]`` >= cutoff, in chunks of rows."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for s in range(0, n, _CHUNK):
        idx = np.arange(s, min(s + _CHUNK, n))
        sc = score(idx)
        i, j = np.nonzero(sc >= cutoff)
        i = idx[i]
        keep = j > i
        rows.append(i[keep])
        cols.append(j[keep])
    cat = np.concatenate
    return (cat(rows), cat(cols)) if rows else (np.zeros(0, np.int64), np.zeros(0, np.int64))


def jaccard_pairs(
    active: sp.spmatrix, eligible: np.ndarray, cutoff: float = JACCARD_MIN
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of ``eligible`` columns of the 0/1 matrix ``active`` [proteins, F] with
    Jaccard >= ``cutoff``, computed in chunks of columns (memory: chunk x F floats)."""
    cols = np.flatnonzero(eligible)
    if len(cols) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = sp.csc_matrix(active[:, cols], dtype=np.float32)
    a.data[:] = 1.0
    size = np.asarray(a.sum(axis=0)).ravel()
    at = a.T.tocsr()

    def score(idx: np.ndarray) -> np.ndarray:
        inter = (at[idx] @ a).toarray()
        union = size[idx, None] + size[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, inter / union, 0.0)

    i, j = _pairs_above(score, cutoff, len(cols))
    return cols[i], cols[j]


def cosine_pairs(
    directions: np.ndarray, live: np.ndarray, cutoff: float = COSINE_MIN
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of live features whose decoder directions ([F, d]) have cosine >= cutoff."""
    cols = np.flatnonzero(live)
    if len(cols) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    w = np.asarray(directions, dtype=np.float32)[cols]
    w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)

    def score(idx: np.ndarray) -> np.ndarray:
        return w[idx] @ w.T

    i, j = _pairs_above(score, cutoff, len(cols))
    return cols[i], cols[j]


def group_features(
    acts: sp.spmatrix,
    directions: np.ndarray | None,
    cutoffs: np.ndarray | None = None,
    *,
    jaccard_min: float = JACCARD_MIN,
    cosine_min: float = COSINE_MIN,
    max_density: float = JACCARD_MAX_DENSITY,
    min_proteins: int = JACCARD_MIN_PROTEINS,
) -> Groups:
    """Redundancy groups of the features of ``acts`` [proteins, F] (per-protein activations),
    with active sets above ``cutoffs`` [F] (absolute; default 0), and their decoder
    ``directions`` [F, d] (None: activity links only)."""
    x = sp.csc_matrix(acts)
    n_prot, n_feat = x.shape
    live = np.diff(x.indptr) > 0
    cut = np.zeros(n_feat) if cutoffs is None else np.asarray(cutoffs, dtype=np.float64)
    on = x.data > np.repeat(cut, np.diff(x.indptr))
    active = sp.csc_matrix((on.astype(np.float32), x.indices, x.indptr), shape=x.shape)
    active.eliminate_zeros()
    size = np.diff(active.indptr)
    eligible = (size >= min_proteins) & (size <= max_density * n_prot)
    ji, jj = jaccard_pairs(active, eligible, jaccard_min)
    if directions is not None and len(directions) == n_feat:
        ci, cj = cosine_pairs(directions, live, cosine_min)
    else:
        ci, cj = np.zeros(0, np.int64), np.zeros(0, np.int64)
    i, j = np.concatenate([ji, ci]), np.concatenate([jj, cj])
    graph = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n_feat, n_feat))
    _, label = connected_components(graph, directed=False)
    first = np.full(label.max() + 1 if n_feat else 0, n_feat, dtype=np.int64)
    np.minimum.at(first, label, np.arange(n_feat))
    return Groups(first[label], live, int(len(ji)), int(len(ci)))


def association_cutoffs(acts: sp.spmatrix, assoc: pd.DataFrame) -> np.ndarray:
    """[F] absolute cutoff per feature: the threshold (fraction of the column max) of its best
    association (highest F1 among q < Q_MAX, precision >= PRECISION_MIN), 0 without one.
    ``assoc``: the source's rows of associations.parquet."""
    x = sp.csc_matrix(acts)
    fmax = x.max(axis=0).toarray().ravel() if x.nnz else np.zeros(x.shape[1])
    frac = np.zeros(x.shape[1])
    sig = assoc[(assoc["q_value"] < Q_MAX) & (assoc["precision"] >= PRECISION_MIN)]
    best = sig.sort_values("f1", ascending=False, kind="stable").drop_duplicates("feature")
    frac[best["feature"].to_numpy(dtype=np.int64)] = best["threshold"].to_numpy(dtype=np.float64)
    return frac * fmax


def redundancy_block(groups: Groups, assoc: pd.DataFrame) -> dict:
    """summary.json ``redundancy`` of one source: groups and what the associations look like
    counted per group instead of per feature (``assoc``: the source's rows of
    associations.parquet)."""
    live_groups = groups.group[groups.live]
    _, sizes = np.unique(live_groups, return_counts=True)
    sig = assoc[(assoc["q_value"] < Q_MAX) & (assoc["precision"] >= PRECISION_MIN)]
    pairs = sig[["feature", "concept"]].drop_duplicates()
    pairs = pairs.assign(group=groups.group[pairs["feature"].to_numpy(dtype=np.int64)])
    per_concept = pairs.groupby("concept").agg(
        features=("feature", "nunique"), groups=("group", "nunique")
    )
    return {
        "jaccard_min": JACCARD_MIN,
        "jaccard_min_proteins": JACCARD_MIN_PROTEINS,
        "jaccard_max_density": JACCARD_MAX_DENSITY,
        "active_set": "proteins above the threshold of the feature's best association "
        "(activation > 0 without association)",
        "cosine_min": COSINE_MIN,
        "n_live_features": int(groups.live.sum()),
        "n_groups": groups.n_groups,
        "n_redundant_groups": int((sizes > 1).sum()),
        "median_group_size": float(np.median(sizes)) if len(sizes) else 0.0,
        "median_redundant_group_size": float(np.median(sizes[sizes > 1]))
        if (sizes > 1).any()
        else 0.0,
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "n_links_jaccard": groups.n_jaccard_links,
        "n_links_cosine": groups.n_cosine_links,
        "n_features_associated": int(pairs["feature"].nunique()),
        "n_groups_associated": int(pairs["group"].nunique()),
        "n_pairs_associated": int(len(pairs)),
        "n_group_concept_pairs_associated": int(len(pairs[["group", "concept"]].drop_duplicates())),
        "associated_features_per_concept_median": float(per_concept["features"].median())
        if len(per_concept)
        else 0.0,
        "associated_features_per_concept_max": int(per_concept["features"].max())
        if len(per_concept)
        else 0,
        "associated_groups_per_concept_median": float(per_concept["groups"].median())
        if len(per_concept)
        else 0.0,
    }
