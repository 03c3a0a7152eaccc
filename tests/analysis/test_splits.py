"""Homology-aware splits keep clusters whole."""

from __future__ import annotations

import numpy as np
import pytest

from plmsae.analysis import splits


def _mutate(seq: str, rng, n: int) -> str:
    s = list(seq)
    for i in rng.choice(len(s), n, replace=False):
        s[i] = "ACDEFGHIKLMNPQRSTVWY"[rng.integers(20)]
    return "".join(s)


@pytest.mark.skipif(not splits.mmseqs_available(), reason="mmseqs2 not installed")
def test_mmseqs_split_keeps_near_duplicates_together():
    rng = np.random.default_rng(0)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    ids, seqs, family = [], [], []
    for fam in range(12):  # 12 unrelated families of 4 near-identical members each
        base = "".join(rng.choice(aa, 120))
        for m in range(4):
            ids.append(f"F{fam}_{m}")
            seqs.append(_mutate(base, rng, 6))
            family.append(fam)
    family = np.array(family)
    split, clusters, method = splits.make_splits(ids, seqs, fractions=(0, 0.5, 0.5), seed=1)
    assert method == "mmseqs"
    # every family is one cluster, and each cluster sits in a single split
    for fam in range(12):
        assert len(set(clusters[family == fam])) == 1
        assert len(set(split[family == fam])) == 1
    assert len(set(clusters)) == 12
    assert set(split) == {"validation", "test"}
    assert abs((split == "test").sum() - 24) <= 4


def test_split_clusters_is_whole_and_balanced():
    rng = np.random.default_rng(1)
    clusters = rng.integers(0, 200, 2000)
    split = splits.split_clusters(clusters, (0.6, 0.2, 0.2), seed=3)
    for c in np.unique(clusters):
        assert len(set(split[clusters == c])) == 1
    frac = [(split == s).mean() for s in splits.SPLITS]
    np.testing.assert_allclose(frac, [0.6, 0.2, 0.2], atol=0.03)
    again = splits.split_clusters(clusters, (0.6, 0.2, 0.2), seed=3)
    assert (again == split).all()


def test_random_fallback_warns(monkeypatch):
    monkeypatch.setattr(splits, "mmseqs_available", lambda: False)
    with pytest.warns(UserWarning, match="at random"):
        split, clusters, method = splits.make_splits(["a", "b", "c", "d"], ["MK"] * 4)
    assert method == "random" and len(set(clusters)) == 4
