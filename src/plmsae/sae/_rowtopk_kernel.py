"""The compiled kernel of :mod:`plmsae.sae.rowtopk` (numba; imported on first use, so that
importing plmsae does not import numba). Module-level functions, so that numba's on-disk cache
finds them again in the next process."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _select_largest(cv, ci, cnt, k):  # pragma: no cover - compiled
    """Reorder ``cv[:cnt]`` (and ``ci`` alongside) so that its first ``k`` entries are the
    ``k`` largest: quickselect with Hoare partitions around a median of three."""
    lo = 0
    hi = cnt - 1
    while lo < hi:
        a, b, c = cv[lo], cv[(lo + hi) >> 1], cv[hi]
        p = max(min(a, b), min(max(a, b), c))  # the median of the three
        i, j = lo, hi
        while i <= j:
            while cv[i] > p:
                i += 1
            while cv[j] < p:
                j -= 1
            if i <= j:
                cv[i], cv[j] = cv[j], cv[i]
                ci[i], ci[j] = ci[j], ci[i]
                i += 1
                j -= 1
        # cv[lo..j] >= p >= cv[i..hi]; entries between i and j equal p
        if k - 1 <= j:
            hi = j
        elif k - 1 >= i:
            lo = i
        else:
            break


@njit(cache=True, parallel=True, boundscheck=False)
def topk_kernel(x, k, vals, idx, fallback):  # pragma: no cover - compiled
    """Top ``k`` of each row of ``x [B, n]`` into ``vals``, ``idx [B, k]``; rows with a NaN
    are only flagged in ``fallback [B]``."""
    B, n = x.shape
    chunk = 64  # rows per task: one scratch buffer each
    for c in prange((B + chunk - 1) // chunk):
        cv = np.empty(n, x.dtype)
        ci = np.empty(n, np.int64)
        for b in range(c * chunk, min(B, (c + 1) * chunk)):
            row = x[b]
            bound = np.inf  # the smallest of k group maxima
            for g in range(k):
                m = row[g * n // k]
                for j in range(g * n // k + 1, (g + 1) * n // k):
                    m = max(m, row[j])
                bound = min(bound, m)
            cnt = 0
            nans = 0
            for j in range(n):  # branch-free: write every entry, advance past the kept
                v = row[j]
                cv[cnt] = v
                ci[cnt] = j
                cnt += v >= bound
                nans += v != v
            if nans or cnt < k:
                fallback[b] = True
                continue
            _select_largest(cv, ci, cnt, k)
            for j in range(k):
                vals[b, j] = cv[j]
                idx[b, j] = ci[j]
