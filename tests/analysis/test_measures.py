"""The measures of issues 12 and 13 on small worked examples: redundancy groups, the
concept-centric headline at matched size, per-feature specificity, GO coherence, the concept
filter (and with it the fold-enrichment claim)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from plmsae.analysis import headline, redundancy, specificity, stats


def test_redundancy_groups_features_on_the_same_proteins_or_decoder():
    rng = np.random.default_rng(0)
    n = 200
    base = (rng.random((n, 6)) < 0.1).astype(np.float32)
    acts = np.zeros((n, 8), np.float32)
    acts[:, :6] = base * rng.random((n, 6))
    acts[:, 6] = acts[:, 0] * 2  # same proteins as feature 0: one group
    acts[:, 7] = 1.0  # dense: never linked by its (trivially shared) active set
    acts[:, 5] = 1.0  # dense too
    dirs = rng.normal(size=(8, 16))
    dirs[3] = dirs[2] + 0.05 * rng.normal(size=16)  # near-duplicate decoder of feature 2
    g = redundancy.group_features(sp.csr_matrix(acts), dirs)
    assert g.group[6] == g.group[0] == 0 and g.group[3] == g.group[2] == 2
    assert g.group[7] == 7 and g.group[5] == 5  # dense features stay apart
    assert g.n_groups == 6 and g.n_jaccard_links == 1 and g.n_cosine_links == 1
    assoc = pd.DataFrame(
        {
            "feature": [0, 6, 2, 3, 4],
            "concept": ["GO:1", "GO:1", "GO:2", "GO:2", "GO:2"],
            "q_value": [0.01] * 5,
            "precision": [0.9] * 5,
        }
    )
    # active sets at each feature's cutoff: feature 1 and a copy that also fires weakly on
    # every other protein are one group only when the weak activations are below the cutoff
    weak = acts.copy()
    weak[:, 4] = acts[:, 1] + 0.01 * (acts[:, 1] == 0)
    at_zero = redundancy.group_features(sp.csr_matrix(weak), None)
    assert at_zero.group[4] == 4 and at_zero.group[1] == 1
    cut = np.zeros(8)
    cut[4] = 0.02  # above the weak 0.01
    at_cut = redundancy.group_features(sp.csr_matrix(weak), None, cut)
    assert at_cut.group[4] == at_cut.group[1] == 1
    cutoffs = redundancy.association_cutoffs(
        sp.csr_matrix(acts),
        pd.DataFrame(
            {"feature": [2], "threshold": [0.5], "f1": [0.9], "q_value": [0.01], "precision": [0.9]}
        ),
    )
    assert cutoffs[2] == pytest.approx(0.5 * acts[:, 2].max()) and cutoffs[0] == 0
    block = redundancy.redundancy_block(g, assoc)
    assert block["n_features_associated"] == 5 and block["n_groups_associated"] == 3
    assert block["associated_features_per_concept_max"] == 3
    assert block["associated_groups_per_concept_median"] == 1.5  # GO:1: 1 group, GO:2: 2
    assert block["jaccard_min"] == 0.7 and block["cosine_min"] == 0.9


def _assoc(rows):
    cols = ["source", "feature", "concept", "q_value", "precision", "f1", "replicated"]
    return pd.DataFrame(rows, columns=cols)


def test_headline_counts_concepts_at_matched_size_with_intervals():
    # 100 SAE features, 0-9 each associated with their own concept (0-4 replicate);
    # 10 neurons: 0-2 associated with GO:0 (one concept), neuron 3 recovers GO:7 (F1 0.6)
    rows = [("sae", f, f"GO:{f}", 0.001, 0.9, 0.9, f < 5) for f in range(10)]
    rows += [("neuron", f, "GO:0", 0.01, 0.6, 0.3, True) for f in range(3)]
    rows += [("neuron", 3, "GO:7", 0.2, 0.4, 0.6, False)]
    head = headline.headline(
        _assoc(rows),
        None,
        {"sae": 100, "neuron": 10},
        unique_features={"sae": 90, "neuron": 10},
        fraction_associated={"sae": 0.1, "neuron": 0.3},
        draws=200,
        seed=1,
    )
    assert head["matched_n_features"] == 10 and head["draws"] == 200
    assert [m["key"] for m in head["measures"]] == [
        "concepts_recovered",
        "concepts_associated",
        "concepts_replicated",
    ]
    sae = head["sources"]["sae"]["values"]
    assert sae["concepts_associated"]["all"] == 10 and sae["concepts_replicated"]["all"] == 5
    # a random 10 of 100 features holds one of the ten associated features on average
    assert sae["concepts_associated"]["matched"] == pytest.approx(1, abs=1)
    lo, hi = sae["concepts_associated"]["matched_ci"]
    assert 0 <= lo <= sae["concepts_associated"]["matched"] <= hi <= 4
    neuron = head["sources"]["neuron"]["values"]
    assert neuron["concepts_associated"]["all"] == neuron["concepts_associated"]["matched"] == 1
    assert neuron["concepts_recovered"]["all"] == 1  # F1 counts without significance
    # the bootstrap interval of a source at the matched size is centred on its plain value
    lo, hi = neuron["concepts_associated"]["matched_ci"]
    assert lo <= 1 <= hi
    assert "90 distinct of 100" in head["note"] and "SAE 10% vs model neurons 30%" in head["note"]
    with_residue = headline.headline(
        _assoc(rows),
        pd.DataFrame({"source": ["sae"], "feature": [1], "concept": ["seq:aa:Q"], "f1": [0.7]}),
        {"sae": 100, "neuron": 10},
    )
    assert with_residue["measures"][-1]["key"] == "residue_concepts_recovered"
    assert with_residue["sources"]["sae"]["values"]["residue_concepts_recovered"]["all"] == 1
    assert with_residue["sources"]["neuron"]["values"]["residue_concepts_recovered"]["all"] == 0


def test_residue_profile_density_amino_acid_and_position():
    seqs = {"A": "QAQAQAQAQA", "B": "MKQL"}
    prof = specificity.ResidueProfile({"x": 3}, seqs)
    prof.begin_batch(["A", "B"], [10, 4])
    z = torch.zeros(14, 3)
    z[[0, 2, 4, 6, 8, 12], 0] = 1.0  # feature 0: every glutamine
    z[[0, 10], 1] = torch.tensor([2.0, 1.0])  # feature 1: first residues (Q of A, M of B)
    prof.add("x", z, 3)
    cols = prof.columns("x")
    assert cols["residue_density"].tolist() == pytest.approx([6 / 14, 2 / 14, 0.0])
    assert cols["top_amino_acid"].tolist() == ["Q", "Q", ""]
    assert cols["top_amino_acid_share"][0] == 1.0
    assert cols["top_amino_acid_share"][1] == pytest.approx(2 / 3)
    assert cols["position_bias"].tolist() == ["", "N-terminal", ""]
    assert cols["position_mean"][1] == 0.0
    # TopK (values, indices) pairs give the same numbers as dense codes
    prof2 = specificity.ResidueProfile({"x": 3}, seqs)
    prof2.begin_batch(["A", "B"], [10, 4])
    vals, idx = z.topk(2, dim=1)
    prof2.add("x", (vals, idx), 3)
    pd.testing.assert_frame_equal(prof2.columns("x"), cols)


def test_kind_and_plain_label():
    def row(**kw):
        return {"max_activation": 1.0, "density": 0.1} | kw

    assert specificity.kind_and_label(row(max_activation=0.0)) == ("dead", "never fires")
    q = row(best_concept="seq:aa:Q", best_concept_recall=0.95, density=0.99)
    assert specificity.kind_and_label(q) == ("sequence-chemistry", "fires on every glutamine (Q)")
    assert specificity.kind_and_label(row(best_concept="seq:nterm"))[1] == "N-terminal residues"
    share = row(top_amino_acid="C", top_amino_acid_share=0.9)
    assert specificity.kind_and_label(share) == (
        "sequence-chemistry",
        "fires mostly on cysteine (C)",
    )
    dense = row(density=0.97, position_bias="C-terminal")
    assert specificity.kind_and_label(dense) == ("dense", "fires on 97% of proteins, C-terminal")
    go = row(best_concept="GO:0008168", top_amino_acid="C", top_amino_acid_share=0.9)
    assert specificity.kind_and_label(go) == ("specific", "")
    motif = specificity.kind_and_label(row(best_concept="seq:motif:P-loop"))
    assert motif[0] == "specific" and "P-loop" in motif[1]


def test_best_concept_over_protein_and_residue_concepts():
    concepts = pd.DataFrame(
        {
            "concept": ["GO:1", "GO:2", "seq:aa:Q"],
            "category": ["GO:BP", "GO:MF", "residue"],
            "name": ["one", "two", "glutamine (Q)"],
        }
    )
    assoc = pd.DataFrame(
        {
            "feature": [0, 0, 1],
            "concept": ["GO:1", "GO:2", "GO:1"],
            "f1": [0.6, 0.9, 0.95],
            "q_value": [0.01, 0.2, 0.01],  # GO:2 is not significant: not the best concept
            "precision": [0.7, 0.9, 0.3],  # feature 1 is imprecise: not associated
            "recall": [0.5, 0.9, 0.9],
        }
    )
    residue = pd.DataFrame({"feature": [2], "concept": ["seq:aa:Q"], "f1": [0.8], "recall": [0.99]})
    best = specificity.best_concepts(assoc, residue, concepts, 4)
    assert best["best_concept"].tolist() == ["GO:1", "", "seq:aa:Q", ""]
    assert best["best_concept_name"][2] == "glutamine (Q)"
    assert best["best_concept_q"][0] == 0.01 and np.isnan(best["best_concept_q"][2])
    assert best["best_concept_category"][0] == "GO:BP"


def test_concept_filter_caps_prevalence_on_each_split_so_precision_means_fold():
    """issue 12 item 6: the 10 % cap is measured on validation and on test, so an association
    (precision >= 0.5 on test) is at least 5-fold enriched on test; n_concepts_tested counts the
    concepts that pass the filter."""
    rng = np.random.default_rng(3)
    n = 400
    split = np.array(["validation", "test"] * (n // 2))
    # concept 0: 9 % of each split; concept 1: 8 % overall but 12 % of test (capped there)
    c = np.zeros((n, 3), dtype=np.int8)
    c[np.flatnonzero(split == "validation")[:18], 0] = 1
    c[np.flatnonzero(split == "test")[:18], 0] = 1
    c[np.flatnonzero(split == "validation")[:8], 1] = 1
    c[np.flatnonzero(split == "test")[:24], 1] = 1
    c[:, 2] = 1  # everywhere: never tested
    cats = np.array(["GO:BP"] * 3)
    tested = stats.testable_concepts(
        sp.csr_matrix(c), cats, split, min_concept=10, max_concept_fraction=0.1
    )
    assert tested.tolist() == [True, False, False]
    acts = sp.csr_matrix(c[:, :2] * rng.uniform(0.5, 1.0, (n, 2)).astype(np.float32))
    res = stats.score_features(
        acts, sp.csr_matrix(c), cats, split, max_concept_fraction=0.1, min_concept=10
    )
    assert set(res["concept"].tolist()) == {0}
    fold = res["precision"] / (res["n_concept"] / res["n_population"])
    assert (fold[res["precision"] >= 0.5] >= 5).all()


@pytest.mark.parametrize("entry_chunk", [7, 1 << 22])
def test_redundancy_links_match_a_dense_computation(monkeypatch, entry_chunk):
    # row-major arrays read a slice of entries at a time: the same links as Jaccard and cosine
    # computed densely, with explicit zeros, empty rows and columns, and per-feature cutoffs
    monkeypatch.setattr(redundancy, "_ENTRY_CHUNK", entry_chunk)
    monkeypatch.setattr(redundancy, "_CELLS", 50)
    rng = np.random.default_rng(3)
    n, f = 120, 40
    dense = np.where(rng.random((n, f)) < 0.15, rng.random((n, f)), 0.0).astype(np.float32)
    dense[:, 10:20] = dense[:, :10] * (rng.random((n, 10)) < 0.95)  # near-copies
    dense[5] = 0.0
    dense[:, 30] = 0.0
    acts = sp.csr_matrix(dense)
    acts.data[::9] = 0.0  # explicit zeros stay stored
    cut = rng.random(f) * 0.3
    on = (acts.toarray() > cut) & (acts.toarray() != 0)
    size = on.sum(axis=0)
    eligible = (size >= 5) & (size <= 0.5 * n)
    inter = on.T.astype(float) @ on
    union = size[:, None] + size[None, :] - inter
    jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    want = {
        (i, j)
        for i in range(f)
        for j in range(i + 1, f)
        if eligible[i] and eligible[j] and jac[i, j] >= redundancy.JACCARD_MIN
    }
    got = redundancy.group_features(acts, None, cut)
    assert got.n_jaccard_links == len(want) >= 3
    for i, j in want:
        assert got.group[i] == got.group[j]
    assert list(np.flatnonzero(~got.live)) == [30]
    cutoffs = redundancy.association_cutoffs(
        -acts,  # all stored values negative: a column's max is 0 where it has zeros
        pd.DataFrame(
            {"feature": [0], "threshold": [0.5], "f1": [1.0], "q_value": [0.0], "precision": [1.0]}
        ),
    )
    assert cutoffs[0] == 0.0
