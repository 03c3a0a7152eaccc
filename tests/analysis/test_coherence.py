"""GO semantic coherence (issue 12 item 5) on a hand-made ontology whose depths and paths are
known: a feature associated with sibling terms is more coherent than random sets of tested
terms; one associated with unrelated terms is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plmsae.analysis import coherence

#   BP root (depth 0) ─ A (1) ─ A1, A2, A3 (2); A1 ─ A1a (3, part_of)
#                    └ B (1) ─ B1, B2 (2)
TERMS = {
    "GO:0000100": ("root", None, None),
    "GO:0000110": ("A", "GO:0000100", "is_a"),
    "GO:0000111": ("A1", "GO:0000110", "is_a"),
    "GO:0000112": ("A2", "GO:0000110", "is_a"),
    "GO:0000113": ("A3", "GO:0000110", "is_a"),
    "GO:0000114": ("A1a", "GO:0000111", "part_of"),
    "GO:0000120": ("B", "GO:0000100", "is_a"),
    "GO:0000121": ("B1", "GO:0000120", "is_a"),
    "GO:0000122": ("B2", "GO:0000120", "is_a"),
}


@pytest.fixture()
def onto(tmp_path):
    from plmsae.data.ontology import Ontology

    text = ["format-version: 1.2", "ontology: go", ""]
    for tid, (name, parent, rel) in TERMS.items():
        text += ["[Term]", f"id: {tid}", f"name: {name}", "namespace: biological_process"]
        if rel == "is_a":
            text.append(f"is_a: {parent}")
        elif rel == "part_of":
            text.append(f"relationship: part_of {parent}")
        text.append("")
    p = tmp_path / "tiny.obo"
    p.write_text("\n".join(text))
    return Ontology.load(p)


def test_depths_lca_and_paths(onto):
    depth = coherence.term_depths(onto, ["GO:0000114"])
    assert depth["GO:0000114"] == 3 and depth["GO:0000100"] == 0
    g = coherence.TermGeometry(onto, ["GO:0000111", "GO:0000112", "GO:0000121", "GO:0000114"])
    i = g.index
    assert g.lca[i["GO:0000111"], i["GO:0000112"]] == 1  # siblings under A
    assert g.lca[i["GO:0000111"], i["GO:0000121"]] == 0  # only the root in common
    assert g.lca[i["GO:0000114"], i["GO:0000111"]] == 2  # A1 is the part_of parent
    assert g.path[i["GO:0000111"], i["GO:0000112"]] == 2
    assert g.path[i["GO:0000111"], i["GO:0000121"]] == 4
    assert g.path[i["GO:0000114"], i["GO:0000112"]] == 3


def test_coherent_feature_beats_random_sets(onto):
    tested = {"GO:BP": [t for t in TERMS if t not in ("GO:0000100",)]}
    g = coherence.TermGeometry(onto, tested["GO:BP"])
    assert g.most_specific(["GO:0000110", "GO:0000111", "GO:0000114", "GO:0000121"]) == [
        "GO:0000114",
        "GO:0000121",
    ]
    rows = []
    for f in range(12):  # twelve features on sibling pairs under A (depth 1, path 2)
        rows.append(("sae", f, "GO:0000111"))
        rows.append(("sae", f, "GO:0000112" if f % 2 else "GO:0000113"))
    for f in range(12):  # neurons: one term under A, one under B (root only in common)
        rows.append(("neuron", f, "GO:0000111" if f % 2 else "GO:0000112"))
        rows.append(("neuron", f, "GO:0000121" if f % 3 else "GO:0000122"))
    rows.append(("neuron", 99, "GO:0000121"))  # one term: no pair, not counted
    # a term and its own ancestor say nothing: A1 with its part A1a keeps only A1a (no pair);
    # A with A1 and A2 keeps the siblings
    rows += [("sae", 50, "GO:0000111"), ("sae", 50, "GO:0000114")]
    rows += [("sae", 51, t) for t in ("GO:0000110", "GO:0000111", "GO:0000112")]
    assoc = pd.DataFrame(rows, columns=["source", "feature", "concept"]).assign(
        q_value=0.001, precision=0.9
    )
    block = coherence.coherence(onto, assoc, tested, draws=30, seed=0)
    sae, neuron = block["sources"]["sae"], block["sources"]["neuron"]
    assert sae["n_features"] == 13 and neuron["n_features"] == 12
    assert sae["median_lca_depth"] == 1 and neuron["median_lca_depth"] == 0
    assert sae["median_lca_depth"] > sae["median_lca_depth_random"]
    assert sae["median_path_length"] == 2 and neuron["median_path_length"] == 4
    assert sae["fraction_more_coherent"] >= 0.5 and neuron["fraction_more_coherent"] == 0.0
    assert sae["wilcoxon_lca_depth_greater"]["p_value"] < 0.01
    assert neuron["wilcoxon_lca_depth_greater"]["p_value"] > 0.5
    assert block["n_terms_tested"] == 8 and block["draws"] == 30
    assert np.isfinite(sae["median_path_length_random"])


def test_pairs_across_namespaces_have_no_geometry(tmp_path):
    from plmsae.data.ontology import Ontology

    text = ["format-version: 1.2", "ontology: go", ""]
    for tid, ns, parent in [
        ("GO:0000100", "biological_process", None),
        ("GO:0000101", "biological_process", "GO:0000100"),
        ("GO:0000102", "biological_process", "GO:0000100"),
        ("GO:0000200", "molecular_function", None),
        ("GO:0000201", "molecular_function", "GO:0000200"),
    ]:
        text += ["[Term]", f"id: {tid}", f"name: {tid}", f"namespace: {ns}"]
        text += [f"is_a: {parent}"] if parent else []
        text.append("")
    (tmp_path / "two.obo").write_text("\n".join(text))
    onto = Ontology.load(tmp_path / "two.obo")
    g = coherence.TermGeometry(onto, ["GO:0000101", "GO:0000201", "GO:0000102"])
    assert g.lca.dtype == np.int16 and g.path.dtype == np.int16
    np.testing.assert_array_equal(g.lca, [[1, -1, 0], [-1, 1, -1], [0, -1, 1]])
    np.testing.assert_array_equal(g.path, [[0, -1, 2], [-1, 0, -1], [2, -1, 0]])
    assert g.set_means([np.array([0, 2])]) == (0.0, 2.0, 1)
