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
_CELLS = 1 << 22  # scores per chunk of rows: a few dense temporaries of 16 MiB each
_ENTRY_CHUNK = 1 << 22


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
    """Pairs (i < j) of n items with ``score(rows)[r, j]`` >= cutoff, in chunks of rows of at
    most :data:`_CELLS` scores."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    step = max(1, _CELLS // max(n, 1))
    for s in range(0, n, step):
        idx = np.arange(s, min(s + step, n))
        sc = score(idx)
        i, j = np.nonzero(sc >= cutoff)
        i = idx[i]
        keep = j > i
        rows.append(i[keep])
        cols.append(j[keep])
    cat = np.concatenate
    return (cat(rows), cat(cols)) if rows else (np.zeros(0, np.int64), np.zeros(0, np.int64))


def jaccard_pairs(
    active: sp.csr_matrix, eligible: np.ndarray, cutoff: float = JACCARD_MIN
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of ``eligible`` columns of the 0/1 matrix ``active`` [proteins, F] with
    Jaccard >= ``cutoff``, computed in chunks of columns (memory: :data:`_CELLS` floats a few
    times, and two copies of the eligible columns' non-zeros)."""
    cols = np.flatnonzero(eligible)
    if len(cols) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a = _columns(sp.csr_matrix(active), cols)
    size = np.bincount(a.indices, minlength=len(cols)).astype(np.float32)
    # the transpose of a CSC copy is a CSR matrix of the columns: a chunk of its rows is a cheap
    # slice, and CSR @ CSR needs no conversion per chunk
    at = a.tocsc().T

    def score(idx: np.ndarray) -> np.ndarray:
        inter = (at[idx] @ a).toarray()
        union = size[idx, None] + size[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, inter / union, 0.0)

    i, j = _pairs_above(score, cutoff, len(cols))
    return cols[i], cols[j]


def _columns(x: sp.csr_matrix, cols: np.ndarray) -> sp.csr_matrix:
    """The 0/1 CSR matrix [rows, len(cols)] of ``x``'s non-zeros in the (sorted) ``cols``,
    built from ``x``'s arrays a slice of entries at a time (scipy's column indexing copies all
    of ``x``, and a cumulative count over all non-zeros takes 8 bytes each)."""
    remap = np.full(x.shape[1], -1, dtype=np.int32)
    remap[cols] = np.arange(len(cols))
    indices: list[np.ndarray] = []
    indptr = np.zeros_like(x.indptr, dtype=np.int64)
    done = 0
    for s in range(0, x.nnz, _ENTRY_CHUNK):
        e = min(s + _ENTRY_CHUNK, x.nnz)
        new = remap[x.indices[s:e]]
        keep = (new >= 0) & (x.data[s:e] != 0)
        indices.append(new[keep])
        # kept entries before each row start inside this slice
        rows = slice(*np.searchsorted(x.indptr, [s, e], side="right"))
        indptr[rows] = done + np.concatenate([[0], np.cumsum(keep)])[x.indptr[rows] - s]
        done += len(indices[-1])
    kept = np.concatenate(indices) if indices else np.zeros(0, np.int32)
    data = np.ones(len(kept), dtype=np.float32)
    return sp.csr_matrix((data, kept, indptr), shape=(x.shape[0], len(cols)))


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


def _above(x: sp.csr_matrix, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[nnz] bool, each stored entry of ``x`` above its column's ``cut``, and [F] how many per
    column, a slice of entries at a time (the gathered cutoffs are float64)."""
    on = np.empty(x.nnz, dtype=bool)
    size = np.zeros(x.shape[1], dtype=np.int64)
    for s in range(0, x.nnz, _ENTRY_CHUNK):
        e = slice(s, s + _ENTRY_CHUNK)
        on[e] = x.data[e] > cut[x.indices[e]]
        size += np.bincount(x.indices[e][on[e]], minlength=x.shape[1])
    return on, size


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
    # row-major as the activations come (a column-major copy held every non-zero twice)
    x = sp.csr_matrix(acts)
    if not x.has_canonical_format:
        x = x.copy()
        x.sum_duplicates()
    n_prot, n_feat = x.shape
    live = np.bincount(x.indices, minlength=n_feat) > 0
    cut = np.zeros(n_feat) if cutoffs is None else np.asarray(cutoffs, dtype=np.float64)
    on, size = _above(x, cut)
    eligible = (size >= min_proteins) & (size <= max_density * n_prot)
    active = sp.csr_matrix((on, x.indices, x.indptr), shape=x.shape)
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
    x = sp.csr_matrix(acts)
    # the column maxima from the row-major arrays (scipy's max over axis 0 copies x to CSC);
    # a column with fewer stored entries than rows also holds zeros
    stored_max = np.full(x.shape[1], -np.inf)
    np.maximum.at(stored_max, x.indices, x.data)
    partly_zero = np.bincount(x.indices, minlength=x.shape[1]) < x.shape[0]
    fmax = np.where(partly_zero, np.maximum(stored_max, 0.0), stored_max)
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
