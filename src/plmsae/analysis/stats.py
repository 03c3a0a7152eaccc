"""Association statistics for every feature x concept at once: plain arrays in, arrays out.

The 2x2 table of one feature (at one threshold) and one concept, over a population of N proteins::

                      has concept     lacks concept
    feature active    a = n_both      b = n_active - n_both
    feature inactive  c = n_concept - n_both          d = N - n_active - n_concept + n_both

All counts for all pairs come from sparse matrix products (:func:`pair_counts`), the p-values
from a vectorised hypergeometric tail (:func:`hypergeom_sf`, exact to ~1e-12 relative; scipy's
``hypergeom.sf`` takes ~250 us per pair here, far too slow for 10^8 pairs), q-values from
Benjamini-Hochberg (:func:`bh_qvalues`, identical to statsmodels ``fdr_bh``), and the AUROC of
the raw activation from rank sums (:func:`column_ranks`, :func:`auroc_from_rank_sums`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import gammaln

_LOGFACT_CACHE: dict[str, np.ndarray] = {}


def _log_factorials(n_max: int) -> np.ndarray:
    """log(k!) for k = 0..n_max (cached, grown on demand)."""
    table = _LOGFACT_CACHE.get("t")
    if table is None or len(table) <= n_max:
        table = gammaln(np.arange(max(n_max + 1, 1024), dtype=np.float64) + 1.0)
        _LOGFACT_CACHE["t"] = table
    return table


def hypergeom_sf(k, N, K, n, *, rtol: float = 1e-16) -> np.ndarray:
    """P(X >= k) for X ~ Hypergeometric(N, K, n): the one-sided (greater) Fisher exact p-value of
    a table with a = k, row total n and column total K out of N. Arrays broadcast; float64 out.

    Sums the pmf term by term in the short direction with the ratio recurrence
    pmf(j+1)/pmf(j) = (K-j)(n-j) / ((j+1)(N-K-n+j+1)): above the mode the upper tail directly
    (full relative accuracy down to 1e-300 and below), at or below the mode 1 - P(X < k) (then
    p >= pmf(mode), so the subtraction loses nothing that matters). The first term comes from a
    log-factorial table; the loop is compiled with numba (about 15 terms per pair on average for
    feature x GO tables; plain numpy was 30x slower and scipy's ``hypergeom.sf`` 1000x).
    """
    k, N, K, n = np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in (k, N, K, n)))
    shape = k.shape
    k, N, K, n = (np.array(v.ravel(), dtype=np.int64) for v in (k, N, K, n))  # owned copies
    if k.size == 0:
        return np.zeros(shape)
    if (N < 0).any() or (K < 0).any() or (n < 0).any() or (K > N).any() or (n > N).any():
        raise ValueError("hypergeom_sf: need 0 <= K <= N and 0 <= n <= N")
    log_fact = _log_factorials(int(N.max()))
    return _sf_kernel()(k, N, K, n, log_fact, rtol).reshape(shape)


_KERNEL: dict[str, Any] = {}

#: most features scored at once: each chunk builds its own binarised tables and ranks, so that
#: they never exist for every feature at once
FEATURE_CHUNK = 1024
#: most non-zero activations in one chunk (unless one feature alone has more): a chunk's
#: tables and AUROC ranks take about 100 bytes per non-zero, and the dense neuron and random
#: baselines have as many non-zeros in a few hundred features as a sparse SAE in thousands
NONZERO_CHUNK = 1 << 21


def _sf_kernel():
    """Compile (once, cached on disk by numba) the per-pair tail-sum loop."""
    if "sf" not in _KERNEL:
        from numba import njit, prange

        @njit(cache=True, parallel=True, fastmath=False)
        def sf(k, N, K, n, lf, rtol):  # pragma: no cover - compiled
            out = np.empty(k.shape[0])
            for i in prange(k.shape[0]):
                lo = max(0, n[i] + K[i] - N[i])
                hi = min(n[i], K[i])
                if k[i] <= lo:
                    out[i] = 1.0
                    continue
                if k[i] > hi:
                    out[i] = 0.0
                    continue
                up = k[i] > ((n[i] + 1) * (K[i] + 1)) // (N[i] + 2)  # above the mode
                j0 = k[i] if up else k[i] - 1  # the lower branch sums P(X <= k-1)
                t = np.exp(
                    lf[K[i]]
                    - lf[j0]
                    - lf[K[i] - j0]
                    + lf[N[i] - K[i]]
                    - lf[n[i] - j0]
                    - lf[N[i] - K[i] - n[i] + j0]
                    - lf[N[i]]
                    + lf[n[i]]
                    + lf[N[i] - n[i]]
                )
                total = t
                Nf, Kf, nf = float(N[i]), float(K[i]), float(n[i])
                if up:
                    j = float(k[i])
                    while t > rtol * total and j < hi:
                        t *= (Kf - j) * (nf - j) / ((j + 1.0) * (Nf - Kf - nf + j + 1.0))
                        total += t
                        j += 1.0
                    out[i] = total
                else:
                    j = float(k[i] - 1)
                    while t > rtol * total and j > lo:
                        t *= j * (Nf - Kf - nf + j) / ((Kf - j + 1.0) * (nf - j + 1.0))
                        total += t
                        j -= 1.0
                    out[i] = min(1.0, max(0.0, 1.0 - total))
            return out

        _KERNEL["sf"] = sf
    return _KERNEL["sf"]


def fisher_greater(n_both, n_active, n_concept, n_population) -> np.ndarray:
    """One-sided Fisher exact p-value (over-representation) of each 2x2 table; arrays broadcast.

    Equal to ``scipy.stats.fisher_exact([[a, b], [c, d]], alternative="greater")`` and to
    goatools' ``alternative="greater"``."""
    return hypergeom_sf(n_both, n_population, n_concept, n_active)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of one family of tests; NaN stays NaN and
    is not counted. Same numbers as ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")``."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    pv = p[ok]
    m = len(pv)
    if m == 0:
        return q
    order = np.argsort(pv, kind="mergesort")
    scaled = pv[order] * m / np.arange(1, m + 1)
    scaled = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(scaled, 1.0)
    q[ok] = out
    return q


def bh_qvalues_grouped(group: np.ndarray, p: np.ndarray, n_tests=None) -> np.ndarray:
    """Benjamini-Hochberg separately within each group (e.g. per feature, as goatools corrects
    each study set). ``group`` must be sorted (non-decreasing); ``n_tests``: family size per
    group (a scalar, or [n_groups] in group order), default the number of p-values in the group (untested pairs
    with p = 1 make the family larger without changing the ranks of the others)."""
    group = np.asarray(group)
    p = np.asarray(p, dtype=np.float64)
    if len(group) and (np.diff(group) < 0).any():
        raise ValueError("bh_qvalues_grouped: group must be sorted")
    starts = (
        np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
        if len(group)
        else np.zeros(0, np.int64)
    )
    bounds = np.concatenate([starts, [len(group)]]).astype(np.int64)
    sizes = np.diff(bounds)
    m = (
        sizes.astype(np.float64)
        if n_tests is None
        else np.broadcast_to(np.asarray(n_tests, dtype=np.float64), sizes.shape).copy()
    )
    return _bh_kernel()(bounds, p, m)


def _bh_kernel():
    if "bh" not in _KERNEL:
        from numba import njit, prange

        @njit(cache=True, parallel=True)
        def bh(bounds, p, m):  # pragma: no cover - compiled
            q = np.empty(p.shape[0])
            for g in prange(bounds.shape[0] - 1):
                a, b = bounds[g], bounds[g + 1]
                seg = p[a:b]
                order = np.argsort(seg, kind="mergesort")
                running = 1.0
                for r in range(b - a - 1, -1, -1):
                    v = seg[order[r]] * m[g] / (r + 1)
                    if v < running:
                        running = v
                    q[a + order[r]] = running
            return q

        _KERNEL["bh"] = bh
    return _KERNEL["bh"]


def table_metrics(n_both, n_active, n_concept, n_population) -> dict[str, np.ndarray]:
    """precision = a/(a+b), recall = a/(a+c), f1, and the odds ratio ad/bc of each table.

    Odds ratio: with a zero cell the Haldane-Anscombe correction (0.5 added to every cell) is
    used, so it is finite; without zero cells it is the plain sample odds ratio. Precision is 0
    when the feature is never active."""
    a = np.asarray(n_both, dtype=np.float64)
    n_active = np.asarray(n_active, dtype=np.float64)
    n_concept = np.asarray(n_concept, dtype=np.float64)
    b = n_active - a
    c = n_concept - a
    d = np.asarray(n_population, dtype=np.float64) - n_active - n_concept + a
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_active > 0, a / n_active, 0.0)
        recall = np.where(n_concept > 0, a / n_concept, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
        h = np.where(zero, 0.5, 0.0)
        odds = (a + h) * (d + h) / ((b + h) * (c + h))
    return {"precision": precision, "recall": recall, "f1": f1, "odds_ratio": odds}


def binarize(acts: sp.spmatrix, cutoffs: np.ndarray) -> sp.csr_matrix:
    """Indicator ``acts[i, f] > cutoffs[f]`` as a CSR int64 matrix (entries that are 0 in
    ``acts`` never count: every cutoff is >= 0)."""
    x = acts.tocsr()
    keep = x.data > np.asarray(cutoffs, dtype=np.float64)[x.indices]
    out = sp.csr_matrix(
        (
            np.ones(int(keep.sum()), dtype=np.int64),
            x.indices[keep],
            np.concatenate([[0], np.cumsum(_row_counts(x, keep))]),
        ),
        shape=x.shape,
    )
    return out


def _row_counts(x: sp.csr_matrix, keep: np.ndarray) -> np.ndarray:
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    return np.bincount(rows[keep], minlength=x.shape[0])


def pair_counts(active: sp.spmatrix, concepts: sp.spmatrix) -> np.ndarray:
    """n_both for every feature x concept: ``active^T @ concepts`` as a dense int64 array
    ``[n_features, n_concepts]``; ``active`` [n_proteins, n_features] 0/1, ``concepts``
    [n_proteins, n_concepts] 0/1. One sparse product instead of a loop over features."""
    at = sp.csr_matrix(active.T, dtype=np.int64)
    c = sp.csr_matrix(concepts, dtype=np.int64)
    return (at @ c).toarray()


def column_ranks(acts: sp.spmatrix) -> sp.csc_matrix:
    """Rank of each non-zero entry among the non-zero entries of its column (1 = smallest, ties
    averaged), as a CSC float64 matrix with the same sparsity. Together with the count of zeros
    (all tied at the bottom) this is the full ranking that the Mann-Whitney AUROC needs."""
    x = sp.csc_matrix(acts, dtype=np.float64)
    x.sort_indices()
    cols = np.repeat(np.arange(x.shape[1]), np.diff(x.indptr))
    order = np.lexsort((x.data, cols))
    vals, cs = x.data[order], cols[order]
    pos = np.arange(len(order)) - x.indptr[cs]  # 0-based position within the column
    # ties: runs of equal (column, value); average the 1-based positions over each run
    new = np.ones(len(order), dtype=bool)
    new[1:] = (vals[1:] != vals[:-1]) | (cs[1:] != cs[:-1])
    run = np.cumsum(new) - 1
    first = pos[new]
    counts = np.bincount(run)
    avg = first + (counts + 1) / 2.0
    ranks = np.empty(len(order))
    ranks[order] = avg[run]
    return sp.csc_matrix((ranks, x.indices, x.indptr), shape=x.shape)


def auroc_from_rank_sums(pos_rank_sum_nonzero, n_pos_nonzero, n_nonzero, n_pos, n_population):
    """AUROC (Mann-Whitney U / (n_pos * n_neg), ties counted 1/2) of a sparse non-negative score.

    pos_rank_sum_nonzero: sum over positives with a non-zero score of their rank among the
    non-zero scores (:func:`column_ranks`); n_pos_nonzero: how many positives are non-zero;
    n_nonzero: non-zero scores in the population. The zeros share the tied rank (n_zero+1)/2 and
    every non-zero rank is shifted up by n_zero. NaN when a class is empty."""
    s = np.asarray(pos_rank_sum_nonzero, dtype=np.float64)
    m = np.asarray(n_pos_nonzero, dtype=np.float64)
    n_pos = np.asarray(n_pos, dtype=np.float64)
    n_zero = np.asarray(n_population, dtype=np.float64) - np.asarray(n_nonzero, dtype=np.float64)
    rank_sum = (n_pos - m) * (n_zero + 1) / 2.0 + m * n_zero + s
    n_neg = np.asarray(n_population, dtype=np.float64) - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        u = rank_sum - n_pos * (n_pos + 1) / 2.0
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def enrichment(
    active: sp.spmatrix, concepts: sp.spmatrix, *, min_both: int = 1, chunk: int | None = None
) -> dict[str, np.ndarray]:
    """Fisher enrichment of every concept in every feature's study set, all features at once.

    The goatools computation for all features together: ``active`` [n_proteins, n_features] 0/1
    (study set of feature f = rows where column f is 1), ``concepts`` [n_proteins, n_concepts]
    0/1, the population = all rows. Returns flat arrays over the pairs with n_both >= min_both
    (``feature``, ``concept``, ``n_both`` as int32, one-sided ``p_value``) plus ``n_active``
    [n_features], ``n_concept`` [n_concepts] and ``n_population``. Memory: 20 bytes per pair."""
    active = sp.csc_matrix(active, dtype=np.int32)
    concepts = sp.csr_matrix(concepts, dtype=np.int32)
    n_pop = active.shape[0]
    n_active = np.asarray(active.sum(axis=0)).ravel().astype(np.int64)
    n_concept = np.asarray(concepts.sum(axis=0)).ravel().astype(np.int64)
    n_feat = active.shape[1]
    chunk = chunk or max(1, int(2e7 // max(concepts.shape[1], 1)))
    parts = []
    for a in range(0, n_feat, chunk):
        counts = (active[:, a : a + chunk].T.tocsr() @ concepts).tocoo()  # [chunk, n_concepts]
        keep = counts.data >= max(min_both, 1)
        f = (counts.row[keep] + a).astype(np.int32)
        c = counts.col[keep].astype(np.int32)
        both = counts.data[keep].astype(np.int32)
        parts.append((f, c, both, fisher_greater(both, n_active[f], n_concept[c], n_pop)))

    def cat(i, dt):
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dt)

    return {
        "feature": cat(0, np.int32),
        "concept": cat(1, np.int32),
        "n_both": cat(2, np.int32),
        "p_value": cat(3, np.float64),
        "n_active": n_active,
        "n_concept": n_concept,
        "n_population": n_pop,
    }


def score_features(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    """Every tested pair of :func:`score_categories` (same arguments) in one set of flat
    arrays, category after category."""
    out: dict[str, list] = {k: [] for k in _SCORE_FIELDS}
    for part in score_categories(*args, **kwargs):
        for k, v in part.items():
            out[k].append(v)
    # one field at a time, its pieces dropped once joined: never two copies of every field
    return {k: _join(out.pop(k), _SCORE_FIELDS[k]) for k in list(out)}


def score_categories(
    acts: sp.spmatrix,
    concepts: sp.spmatrix,
    concept_category: np.ndarray,
    split: np.ndarray,
    *,
    thresholds=(0.0, 0.15, 0.5, 0.6, 0.8),
    feature_max: np.ndarray | None = None,
    min_concept: int = 10,
    max_concept_fraction: float = 1.0,
    min_both: int = 3,
    select_split: str = "validation",
    report_split: str = "test",
    chunk: int | None = None,
    progress_cb=None,
) -> Iterator[dict[str, np.ndarray]]:
    """Score every feature x concept: threshold chosen on one split, statistics on another;
    yields the tested pairs of one concept category at a time.

    acts: [n_proteins, n_features] non-negative per-protein activations (sparse); concepts:
    [n_proteins, n_concepts] 0/1. concept_category: [n_concepts] category names.
    split: [n_proteins] split names. thresholds: fractions of each feature's max
    (``feature_max``, default: the column max of ``acts``); "active" means act > fraction * max.

    Per category the population is the proteins with at least one concept of that category.
    A concept is tested when it has >= ``min_concept`` proteins in the population (all splits)
    and covers at most ``max_concept_fraction`` of it on each of the two splits
    (:func:`testable_concepts`: precision p means >= p / max_concept_fraction -fold enrichment
    on the report split). For each pair the threshold with the best F1 on ``select_split`` is
    chosen (ties: the lower threshold); the pair is tested when its F1 there is > 0 and it has
    >= ``min_both`` proteins that are active and carry the concept on ``report_split``, where
    the 2x2 table, one-sided Fisher p, precision, recall, F1, odds ratio and the AUROC of the
    raw activation (threshold-free) are computed. q-values: Benjamini-Hochberg over all tested
    pairs of one category (one source per call: the family is source x category).
    ``progress_cb(category, features_done, n_features)`` follows each chunk of features.

    Yields, per category with a tested pair (one BH family), flat arrays over its tested pairs
    (feature, concept, threshold, n_active, n_concept, n_both, n_population, p_value, q_value,
    precision, recall, f1, odds_ratio, auroc, f1_select): a caller can write one category's
    pairs before the next is scored."""
    acts = sp.csc_matrix(acts, dtype=np.float32)  # column blocks of features are cheap
    concepts = sp.csr_matrix(concepts, dtype=np.int64)
    concept_category = np.asarray(concept_category)
    split = np.asarray(split)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n_feat = acts.shape[1]
    if feature_max is None:
        feature_max = acts.max(axis=0).toarray().ravel() if acts.nnz else np.zeros(n_feat)
    feature_max = np.asarray(feature_max, dtype=np.float64)
    cutoffs = thresholds[:, None] * feature_max[None, :]  # [T, F]
    for category in _unique_in_order(concept_category):
        cols_all = np.flatnonzero(concept_category == category)
        cols, in_pop = _testable(
            concepts,
            cols_all,
            split,
            min_concept,
            max_concept_fraction,
            (select_split, report_split),
        )
        if not len(cols):
            continue
        rows_sel = np.flatnonzero(in_pop & (split == select_split))
        rows_rep = np.flatnonzero(in_pop & (split == report_split))
        if len(rows_sel) == 0 or len(rows_rep) == 0:
            continue
        scorer = _CategoryScorer(acts, concepts, cols, rows_sel, rows_rep, cutoffs, thresholds)
        size = chunk or min(FEATURE_CHUNK, max(1, int(2e7 // (len(cols) * len(thresholds)))))
        out: dict[str, list] = {k: [] for k in _SCORE_FIELDS}
        for fs in feature_chunks(acts.indptr, size, NONZERO_CHUNK):
            found = scorer.score(fs, min_both)
            if found is None:
                continue
            for k, v in found.items():
                out[k].append(v)
            if progress_cb is not None:
                progress_cb(category, fs.stop, n_feat)
        if out["feature"]:
            _add_statistics(out, 0)  # the whole category at once: one BH family
            yield {k: _join(out.pop(k), _SCORE_FIELDS[k]) for k in list(out)}


def _join(pieces: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def feature_chunks(indptr: np.ndarray, max_features: int, max_nonzero: int) -> list[slice]:
    """Consecutive slices covering the columns of a CSC matrix with column pointers
    ``indptr`` [n_features + 1], each with at most ``max_features`` columns and at most
    ``max_nonzero`` non-zeros (a column with more than that gets a slice of its own)."""
    n_feat = len(indptr) - 1
    chunks, start = [], 0
    while start < n_feat:
        # the last column boundary whose non-zeros since ``start`` fit in the budget
        fits = int(np.searchsorted(indptr, indptr[start] + max_nonzero, side="right")) - 1
        stop = min(max(fits, start + 1), start + max_features, n_feat)
        chunks.append(slice(start, stop))
        start = stop
    return chunks


def _testable(
    concepts: sp.csr_matrix,
    cols_all: np.ndarray,
    split: np.ndarray,
    min_concept: int,
    max_concept_fraction: float,
    cap_splits: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """(tested concept columns, population mask [n_proteins]) of one category: >= min_concept
    proteins in the population, at most max_concept_fraction of the population on each of
    ``cap_splits``."""
    cat = concepts[:, cols_all]
    in_pop = np.diff(cat.indptr) > 0
    n_concept_pop = np.asarray(cat[in_pop].sum(axis=0)).ravel()
    keep = n_concept_pop >= min_concept
    for name in cap_splits:
        rows = in_pop & (split == name)
        n_split = np.asarray(cat[rows].sum(axis=0)).ravel()
        keep &= n_split <= max_concept_fraction * rows.sum()
    return cols_all[keep], in_pop


def testable_concepts(
    concepts: sp.spmatrix,
    concept_category: np.ndarray,
    split: np.ndarray,
    *,
    min_concept: int = 10,
    max_concept_fraction: float = 1.0,
    cap_splits: tuple[str, ...] = ("validation", "test"),
) -> np.ndarray:
    """bool [n_concepts]: the concepts :func:`score_features` tests (pass the filter), whether or
    not any feature then has a tested pair with them."""
    concepts = sp.csr_matrix(concepts, dtype=np.int64)
    concept_category = np.asarray(concept_category)
    out = np.zeros(concepts.shape[1], dtype=bool)
    for category in _unique_in_order(concept_category):
        cols_all = np.flatnonzero(concept_category == category)
        cols, _ = _testable(
            concepts, cols_all, np.asarray(split), min_concept, max_concept_fraction, cap_splits
        )
        out[cols] = True
    return out


class _CategoryScorer:
    """The concept side of one category, prepared once; the feature side (binarised
    activations per threshold, activity counts, ranks for the AUROC) is built per chunk of
    features in :meth:`score`, so that only one chunk's tables are held at a time (memory
    grows with the activations of one chunk, not with all of them times the thresholds)."""

    def __init__(self, acts, concepts, cols, rows_sel, rows_rep, cutoffs, thresholds):
        self.acts, self.rows_sel, self.rows_rep = acts, rows_sel, rows_rep  # acts: CSC
        self.cols, self.cutoffs, self.thresholds = cols, cutoffs, thresholds
        self.n_rep = len(rows_rep)
        c_sel = concepts[rows_sel][:, cols]
        c_rep = concepts[rows_rep][:, cols]
        self.nc_sel = np.asarray(c_sel.sum(axis=0)).ravel().astype(np.int64)
        self.nc_rep = np.asarray(c_rep.sum(axis=0)).ravel().astype(np.int64)
        self.c_sel, self.c_rep = _Concepts(c_sel), _Concepts(c_rep)

    def score(self, fs: slice, min_both: int) -> dict[str, np.ndarray] | None:
        """Counts, threshold and AUROC of the tested pairs of features ``fs`` (None: none)."""
        block = self.acts[:, fs]
        a_sel, a_rep = block[self.rows_sel], block[self.rows_rep]
        cutoffs = self.cutoffs[:, fs]
        # one 0/1 matrix per threshold, transposed to [f, proteins] for the products
        bin_sel = [binarize(a_sel, cut).T.tocsr() for cut in cutoffs]
        nact_sel = np.stack([np.diff(b.indptr) for b in bin_sel])  # [T, f]
        f_sel = np.stack([self.c_sel.counts(b) for b in bin_sel])  # [T, f, c]
        del bin_sel
        f1 = 2.0 * f_sel / (nact_sel[:, :, None] + self.nc_sel[None, None, :]).clip(min=1)
        best = np.argmax(f1, axis=0)  # first maximum = the lower threshold on ties
        f1_best = np.take_along_axis(f1, best[None], axis=0)[0]
        del f_sel, f1
        both = np.zeros(best.shape, dtype=np.int64)
        nact_rep = np.zeros_like(nact_sel)
        for t, cut in enumerate(cutoffs):
            b = binarize(a_rep, cut).T.tocsr()
            nact_rep[t] = np.diff(b.indptr)
            pick = best == t
            if pick.any():
                both[pick] = self.c_rep.counts(b)[pick]
        tested = (f1_best > 0) & (both >= min_both)
        fi, ci = np.nonzero(tested)
        if len(fi) == 0:
            return None
        t_idx = best[fi, ci]
        nonzero_rep = binarize(a_rep, np.zeros(a_rep.shape[1])).T.tocsr()
        rank_sum = self.c_rep.sums(column_ranks(a_rep).T.tocsr())[fi, ci]
        pos_nonzero = self.c_rep.counts(nonzero_rep)[fi, ci]
        nc = self.nc_rep[ci]
        return {
            "feature": fi + fs.start,
            "concept": self.cols[ci],
            "threshold": self.thresholds[t_idx],
            "n_active": nact_rep[t_idx, fi],
            "n_concept": nc,
            "n_both": both[fi, ci],
            "n_population": np.full(len(fi), self.n_rep),
            "f1_select": f1_best[fi, ci],
            "auroc": auroc_from_rank_sums(
                rank_sum, pos_nonzero, np.diff(nonzero_rep.indptr)[fi], nc, self.n_rep
            ),
        }


def _add_statistics(out: dict[str, list], start: int) -> None:
    """Replace the per-chunk pieces from ``start`` on by one piece each, with p-values,
    q-values (one BH family) and table metrics of all their pairs."""
    if len(out["feature"]) <= start:
        return
    sl = {k: np.concatenate(v[start:]) for k, v in out.items() if v[start:]}
    p = fisher_greater(sl["n_both"], sl["n_active"], sl["n_concept"], sl["n_population"])
    m = table_metrics(sl["n_both"], sl["n_active"], sl["n_concept"], sl["n_population"])
    for k in list(out):
        del out[k][start:]
        if k in sl:
            out[k].append(sl[k])
    out["p_value"].append(p)
    out["q_value"].append(bh_qvalues(p))
    for k in ("precision", "recall", "f1", "odds_ratio"):
        out[k].append(m[k])


class _Concepts:
    """A protein x concept 0/1 matrix that multiplies feature rows [f, proteins] by the
    cheaper route: sparse x sparse when the feature rows are sparse, dense BLAS when they are
    dense (max-pooled residue features often fire in a large share of proteins) and the dense
    concept matrix is small enough to hold."""

    DENSE_MAX_BYTES = 256 << 20
    DENSE_MIN_DENSITY = 0.02

    def __init__(self, c: sp.csr_matrix):
        self.sparse = sp.csr_matrix(c, dtype=np.int64)
        small = c.shape[0] * c.shape[1] * 8 <= self.DENSE_MAX_BYTES
        self.dense = c.toarray().astype(np.float64) if small else None

    def _use_dense(self, rows: sp.csr_matrix) -> bool:
        size = rows.shape[0] * rows.shape[1]
        return self.dense is not None and size > 0 and rows.nnz / size >= self.DENSE_MIN_DENSITY

    def counts(self, rows: sp.csr_matrix) -> np.ndarray:
        """int64 [f, concepts]: for each feature row, how many of its proteins carry each
        concept (float64 BLAS is exact for counts below 2^53)."""
        if self._use_dense(rows):
            return np.rint(rows.toarray().astype(np.float64) @ self.dense).astype(np.int64)
        return (rows @ self.sparse).toarray()

    def sums(self, rows: sp.csr_matrix) -> np.ndarray:
        """float64 [f, concepts]: sums of the row values over each concept's proteins."""
        if self._use_dense(rows):
            return rows.toarray() @ self.dense
        return (rows @ sp.csr_matrix(self.sparse, dtype=np.float64)).toarray()


_SCORE_FIELDS = {
    "feature": np.int64,
    "concept": np.int64,
    "threshold": np.float64,
    "n_active": np.int64,
    "n_concept": np.int64,
    "n_both": np.int64,
    "n_population": np.int64,
    "p_value": np.float64,
    "q_value": np.float64,
    "precision": np.float64,
    "recall": np.float64,
    "f1": np.float64,
    "odds_ratio": np.float64,
    "auroc": np.float64,
    "f1_select": np.float64,
}


def _unique_in_order(values: np.ndarray) -> list:
    seen: dict = {}
    for v in values.tolist():
        seen.setdefault(v, None)
    return list(seen)
