"""p-values equal goatools' GOEnrichmentStudy (Fisher, propagate_counts) on the same study and
population sets."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import scipy.sparse as sp

from plmsae.analysis import stats


def test_enrichment_equals_goatools(go_obo, tmp_path):
    goea_mod = pytest.importorskip("goatools.go_enrichment")
    from goatools.obo_parser import GODag

    from plmsae.data.annotations import read_annotations
    from plmsae.data.ontology import Ontology

    rng = np.random.default_rng(0)
    leaves = ["GO:0000011", "GO:0000012", "GO:0000013", "GO:0000010"]
    ids = [f"P{i:05d}" for i in range(120)]
    raw = {
        p: {leaves[i % 4]} | ({"GO:0000012"} if rng.random() < 0.2 else set())
        for i, p in enumerate(ids)
    }
    tsv = tmp_path / "go.tsv"
    tsv.write_text("".join(f"{p}\t{';'.join(sorted(t))}\n" for p, t in raw.items()))
    ann = read_annotations(tsv, Ontology.load(go_obo))
    bp = ann.protein_concepts["GO:BP"]
    terms = sorted({t for ts in bp.values() for t in ts})
    C = sp.csr_matrix(np.array([[t in bp[p] for t in terms] for p in ids]))
    # three study sets, one enriched for process A and its part_of child
    studies = [
        [p for p in ids if "GO:0000013" in raw[p] or rng.random() < 0.1],
        [p for p in ids if rng.random() < 0.3],
        ids[:7],
    ]
    A = sp.csr_matrix(np.array([[p in set(s) for s in studies] for p in ids]))
    ours = stats.enrichment(A, C, min_both=1)

    with contextlib.redirect_stdout(io.StringIO()):
        dag = GODag(str(go_obo), optional_attrs={"relationship"}, prt=None)
        goea = goea_mod.GOEnrichmentStudy(
            ids,
            {p: set(t) for p, t in raw.items()},
            dag,
            propagate_counts=True,
            relationships={"part_of"},
            alternative="greater",
            methods=["fdr_bh"],
            log=None,
        )
        results = [{r.GO: r for r in goea.run_study(s, prt=None)} for s in studies]
    n_compared = 0
    for f, c, both, p in zip(ours["feature"], ours["concept"], ours["n_both"], ours["p_value"]):
        r = results[f][terms[c]]
        assert (r.study_count, r.study_n, r.pop_count, r.pop_n) == (
            both,
            ours["n_active"][f],
            ours["n_concept"][c],
            len(ids),
        )
        assert p == pytest.approx(r.p_uncorrected, rel=1e-9)
        n_compared += 1
    # every goatools term with a study count is one of ours
    assert n_compared == sum(1 for res in results for r in res.values() if r.study_count >= 1)
    assert n_compared > 10
    # the planted study is strongly enriched for A2; A holds A2 (part_of) and A1 (is_a) proteins
    i = np.flatnonzero((ours["feature"] == 0) & (ours["concept"] == terms.index("GO:0000013")))[0]
    assert ours["p_value"][i] < 1e-6
    a = terms.index("GO:0000010")
    assert ours["n_concept"][a] == sum(
        bool(raw[p] & {"GO:0000010", "GO:0000012", "GO:0000013"}) for p in ids
    )
