"""Core statistics against hand-computed tables, scipy, statsmodels and a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import fisher_exact, hypergeom, mannwhitneyu
from statsmodels.stats.multitest import multipletests

from plmsae.analysis import stats


def test_hand_computed_2x2():
    # N=10 proteins, 4 active, 3 with the concept, 2 both:
    # P(X>=2) = [C(3,2)C(7,2) + C(3,3)C(7,1)] / C(10,4) = (3*21 + 7) / 210 = 70/210 = 1/3
    p = stats.fisher_greater(2, 4, 3, 10)
    assert p == pytest.approx(1 / 3, rel=1e-12)
    m = stats.table_metrics(2, 4, 3, 10)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # a=2 b=2 c=1 d=5 -> OR = 2*5/(2*1) = 5 (no zero cell, no correction)
    assert m["odds_ratio"] == pytest.approx(5.0)
    # a zero cell: a=3 b=0 c=0 d=7 -> Haldane-Anscombe (3.5*7.5)/(0.5*0.5)
    assert stats.table_metrics(3, 3, 3, 10)["odds_ratio"] == pytest.approx(3.5 * 7.5 / 0.25)
    # all mass in the table: 3 active = the 3 concept proteins out of 10 -> 1/C(10,3)
    assert stats.fisher_greater(3, 3, 3, 10) == pytest.approx(1 / 120, rel=1e-12)


def test_fisher_matches_scipy_on_random_tables():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(400):
        N = int(rng.integers(5, 3000))
        K = int(rng.integers(0, N + 1))
        n = int(rng.integers(0, N + 1))
        lo, hi = max(0, n + K - N), min(n, K)
        a = int(rng.integers(lo, hi + 1))
        rows.append((a, n, K, N))
    a, n, K, N = map(np.array, zip(*rows))
    ours = stats.fisher_greater(a, n, K, N)
    ref = np.array(
        [
            fisher_exact([[ai, ni - ai], [Ki - ai, Ni - ni - Ki + ai]], alternative="greater")[1]
            for ai, ni, Ki, Ni in rows
        ]
    )
    ok = ref > 1e-300
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-9)
    assert (ours[~ok] < 1e-290).all()


def test_extreme_tails_and_edges():
    # tiny p far in the tail: compare with scipy's hypergeom.sf
    p = stats.hypergeom_sf(150, 100000, 200, 300)
    assert p == pytest.approx(hypergeom.sf(149, 100000, 200, 300), rel=1e-9)
    assert 0 < p < 1e-300 or p < 1e-250
    assert stats.hypergeom_sf(0, 50, 10, 5) == 1.0  # k at the bottom of the support
    assert stats.hypergeom_sf(6, 50, 10, 5) == 0.0  # k above the support
    out = stats.hypergeom_sf(np.array([[1, 2], [3, 4]]), 40, 10, 10)
    assert out.shape == (2, 2) and np.all(np.diff(out.ravel()) < 0)
    with pytest.raises(ValueError):
        stats.hypergeom_sf(1, 10, 11, 2)


def test_bh_matches_statsmodels():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(size=500), rng.uniform(size=50) * 1e-6, [1.0, 0.5, 0.5]])
    ours = stats.bh_qvalues(p)
    ref = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    with_nan = stats.bh_qvalues(np.array([0.01, np.nan, 0.04]))
    assert np.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], multipletests([0.01, 0.04], method="fdr_bh")[1])


def test_auroc_from_sparse_ranks_matches_mann_whitney():
    rng = np.random.default_rng(2)
    n, F = 300, 6
    dense = rng.exponential(size=(n, F)) * (rng.random((n, F)) < 0.3)
    dense[:, 2] = np.round(dense[:, 2])  # heavy ties among non-zeros
    concept = rng.random(n) < 0.25
    acts = sp.csr_matrix(dense)
    ranks = stats.column_ranks(acts)
    rank_sum = np.asarray(ranks.T @ concept.astype(float)).ravel()
    pos_nz = np.asarray((acts > 0).T @ concept.astype(int)).ravel()
    nnz = np.asarray((acts > 0).sum(axis=0)).ravel()
    auc = stats.auroc_from_rank_sums(rank_sum, pos_nz, nnz, concept.sum(), n)
    for f in range(F):
        u = mannwhitneyu(dense[concept, f], dense[~concept, f]).statistic
        assert auc[f] == pytest.approx(u / (concept.sum() * (~concept).sum()), rel=1e-12)


def test_enrichment_matches_loop():
    rng = np.random.default_rng(3)
    active = sp.csr_matrix(rng.random((200, 7)) < 0.2)
    concepts = sp.csr_matrix(rng.random((200, 5)) < 0.3)
    res = stats.enrichment(active, concepts, min_both=1)
    A, C = active.toarray(), concepts.toarray()
    for f, c, both, p in zip(res["feature"], res["concept"], res["n_both"], res["p_value"]):
        a = int((A[:, f] & C[:, c]).sum())
        assert both == a
        ref = fisher_exact(
            [[a, A[:, f].sum() - a], [C[:, c].sum() - a, 200 - A[:, f].sum() - C[:, c].sum() + a]],
            alternative="greater",
        )[1]
        assert p == pytest.approx(ref, rel=1e-9)
    assert len(res["feature"]) == int(((A.T.astype(int) @ C.astype(int)) >= 1).sum())
    np.testing.assert_array_equal(res["n_active"], A.sum(axis=0))


@pytest.mark.parametrize("chunking", ["none", "features", "nonzeros"])
@pytest.mark.parametrize("route", ["dense", "sparse"])
def test_score_features_against_brute_force(route, chunking, monkeypatch):
    # both product routes: BLAS on dense feature rows, sparse x sparse otherwise; all features
    # at once, two at a time, and as many as fit in 350 non-zeros (each feature has ~160, so
    # chunks of one and two; each chunk builds its own tables)
    monkeypatch.setattr(stats._Concepts, "DENSE_MIN_DENSITY", 0.0 if route == "dense" else 2.0)
    if chunking == "nonzeros":
        monkeypatch.setattr(stats, "NONZERO_CHUNK", 350)
    chunk = 2 if chunking == "features" else None
    rng = np.random.default_rng(4)
    n, F = 400, 5
    dense = rng.exponential(size=(n, F)) * (rng.random((n, F)) < 0.4)
    concept_a = rng.random(n) < 0.3
    dense[concept_a, 0] += 3.0  # feature 0 tracks concept A
    fam = rng.random(n) < 0.5
    C = np.stack([concept_a, rng.random(n) < 0.2, fam & (rng.random(n) < 0.6), ~fam], axis=1)
    C[:20] = False  # 20 proteins outside every population
    category = np.array(["GO:BP", "GO:BP", "family", "family"])
    split = np.where(rng.random(n) < 0.5, "validation", "test")
    thresholds = (0.0, 0.15, 0.5)
    res = stats.score_features(
        sp.csr_matrix(dense),
        sp.csr_matrix(C),
        category,
        split,
        thresholds=thresholds,
        min_concept=5,
        min_both=3,
        chunk=chunk,
    )
    fmax = dense.max(axis=0)
    seen = 0
    for cat in ("GO:BP", "family"):
        cols = np.flatnonzero(category == cat)
        pop = C[:, cols].any(axis=1)
        for c in cols:
            for f in range(F):

                def counts(part, t):
                    rows = pop & (split == part)
                    act = dense[rows, f] > t * fmax[f]
                    return (
                        int((act & C[rows, c]).sum()),
                        int(act.sum()),
                        int(C[rows, c].sum()),
                        int(rows.sum()),
                    )

                f1s = [
                    2
                    * counts("validation", t)[0]
                    / max(1, counts("validation", t)[1] + counts("validation", t)[2])
                    for t in thresholds
                ]
                best = int(np.argmax(f1s))
                a, na, nc, npop = counts("test", thresholds[best])
                hit = (res["feature"] == f) & (res["concept"] == c)
                if f1s[best] > 0 and a >= 3:
                    assert hit.sum() == 1
                    i = int(np.flatnonzero(hit)[0])
                    assert res["threshold"][i] == thresholds[best]
                    assert (
                        res["n_both"][i],
                        res["n_active"][i],
                        res["n_concept"][i],
                        res["n_population"][i],
                    ) == (a, na, nc, npop)
                    ref = fisher_exact(
                        [[a, na - a], [nc - a, npop - na - nc + a]], alternative="greater"
                    )[1]
                    assert res["p_value"][i] == pytest.approx(ref, rel=1e-9)
                    rows = pop & (split == "test")
                    x, y = dense[rows, f], C[rows, c]
                    u = mannwhitneyu(x[y], x[~y]).statistic
                    assert res["auroc"][i] == pytest.approx(u / (y.sum() * (~y).sum()), rel=1e-9)
                    seen += 1
                else:
                    assert hit.sum() == 0
    assert seen == len(res["feature"]) and seen > 5
    # feature 0 / concept A is found and strongly significant
    i = np.flatnonzero((res["feature"] == 0) & (res["concept"] == 0))[0]
    assert res["q_value"][i] < 1e-6 and res["auroc"][i] > 0.9
    # q-values: one BH family per category
    for cat_cols in ([0, 1], [2, 3]):
        m = np.isin(res["concept"], cat_cols)
        np.testing.assert_allclose(
            res["q_value"][m], multipletests(res["p_value"][m], method="fdr_bh")[1]
        )


def test_bh_grouped_matches_statsmodels_per_group():
    rng = np.random.default_rng(5)
    group = np.sort(rng.integers(0, 6, 400))
    p = rng.random(400) ** 4
    q = stats.bh_qvalues_grouped(group, p)
    q50 = stats.bh_qvalues_grouped(group, p, n_tests=200)
    for g in np.unique(group):
        m = group == g
        np.testing.assert_allclose(q[m], multipletests(p[m], method="fdr_bh")[1], rtol=1e-12)
        padded = np.concatenate([p[m], np.ones(200 - m.sum())])
        np.testing.assert_allclose(
            q50[m], multipletests(padded, method="fdr_bh")[1][: m.sum()], rtol=1e-12
        )
    with pytest.raises(ValueError):
        stats.bh_qvalues_grouped(np.array([1, 0]), np.array([0.1, 0.2]))


def test_max_concept_fraction_excludes_general_concepts():
    """A concept on half the population is not tested at the default cap; a 5 % one is."""
    import numpy as np
    import scipy.sparse as sp

    from plmsae.analysis.stats import score_features

    rng = np.random.default_rng(0)
    n = 400
    general = np.zeros(n, bool)
    general[: n // 2] = True
    specific = np.zeros(n, bool)
    specific[:20] = True
    concepts = sp.csr_matrix(np.stack([general, specific], 1).astype(np.int8))
    acts = sp.csr_matrix((general * 1.0 + specific * 1.0 + rng.random(n) * 0.01)[:, None])
    split = np.where(np.arange(n) % 2 == 0, "validation", "test")
    cats = np.array(["GO:MF", "GO:MF"])
    tested_all = score_features(acts, concepts, cats, split, max_concept_fraction=1.0)
    tested_cap = score_features(acts, concepts, cats, split, max_concept_fraction=0.1)
    assert set(tested_all["concept"].tolist()) == {0, 1}
    assert set(tested_cap["concept"].tolist()) == {1}


def test_feature_chunks_respect_both_budgets():
    indptr = np.cumsum([0, 5, 1, 1, 9, 0, 0, 2])  # non-zeros per column: 5 1 1 9 0 0 2
    chunks = stats.feature_chunks(indptr, max_features=3, max_nonzero=6)
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 3), (3, 4), (4, 7)]
    assert [(c.start, c.stop) for c in stats.feature_chunks(indptr, 100, 10**9)] == [(0, 7)]
    assert stats.feature_chunks(np.zeros(1, dtype=int), 4, 4) == []


def test_score_categories_yields_one_bh_family_at_a_time():
    """One part per category with a tested pair, each with its own BH q-values; joined, they
    are score_features' arrays."""
    rng = np.random.default_rng(3)
    n, n_feat = 300, 12
    acts = sp.random(n, n_feat, density=0.2, random_state=3, format="csr").toarray()
    concepts = sp.csr_matrix((rng.random((n, 9)) < 0.15).astype(np.int8))
    for f in range(3):  # planted: feature f fires on the carriers of concept 3 f
        acts[:, f] = concepts[:, 3 * f].toarray().ravel() * (1 + rng.random(n))
    acts = sp.csr_matrix(acts)
    cats = np.array(["GO:BP"] * 3 + ["GO:MF"] * 3 + ["family"] * 3)
    split = np.where(np.arange(n) % 2 == 0, "validation", "test")
    kw = {"min_concept": 5, "min_both": 2}
    parts = list(stats.score_categories(acts, concepts, cats, split, **kw))
    assert len(parts) == 3
    for part, cat in zip(parts, ["GO:BP", "GO:MF", "family"]):
        assert set(cats[part["concept"]]) == {cat}
        q = multipletests(part["p_value"], method="fdr_bh")[1]
        np.testing.assert_allclose(part["q_value"], q, rtol=1e-12)
    whole = stats.score_features(acts, concepts, cats, split, **kw)
    for k, v in whole.items():
        np.testing.assert_array_equal(v, np.concatenate([p[k] for p in parts]), err_msg=k)
