"""Residue-level concept scores on a worked example computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from plmsae.analysis import residue


def test_worked_example():
    # Two proteins of lengths 6 and 4 (residues 0-5 and 6-9 when concatenated).
    # Concept "Domain:X": protein A residues [1,4) and protein B residues [0,2) -> 2 instances, 5 residues.
    # Concept "Binding site:ATP": protein A residue 5 (single residue).
    rc = {"Domain:X": {"A": [(1, 4)], "B": [(0, 2)]}, "Binding site:ATP": {"A": [(5, 6)]}}
    concepts = ["Domain:X", "Binding site:ATP"]
    types = ["Domain", "Binding site"]
    lay, inst = residue.layout(["A", "B"], [6, 4], rc, concepts, types)
    assert lay.token_concept.toarray()[:, 0].tolist() == [0, 1, 1, 1, 0, 0, 1, 1, 0, 0]
    assert inst.tolist() == [0, 1, 0]
    # only protein A has a Binding site annotation -> its 6 residues are that population
    assert lay.token_type.toarray()[:, 1].tolist() == [1] * 6 + [0] * 4
    # feature 0 fires on A:1,A:2 (1.0, 0.4), A:5 (0.2) and B:3 (0.9); max = 1.0
    z = np.zeros((10, 1))
    z[[1, 2, 5, 9], 0] = [1.0, 0.4, 0.2, 0.9]
    thresholds = np.array([0.0, 0.5])
    counts = residue.residue_counts(z, lay, inst, thresholds[:, None] * 1.0, len(concepts))
    # threshold 0: active residues 1,2,5,9. Domain:X tp = {1,2} = 2; Binding tp = {5} = 1
    assert counts["tp"][0, 0].tolist() == [2, 1]
    # Domain population = both proteins -> 4 active; Binding population = protein A -> 3 active
    assert counts["active"][0, 0].tolist() == [4, 3]
    # instances found: domain A yes, domain B no; the binding site yes
    assert counts["found"][0, 0].tolist() == [1, 1]
    # threshold 0.5: active residues 1 and 9
    assert counts["tp"][1, 0].tolist() == [1, 0]
    assert counts["active"][1, 0].tolist() == [2, 1]
    assert counts["found"][1, 0].tolist() == [1, 0]
    res = residue.residue_scores(
        counts,
        counts,
        n_pos_sel=[5, 1],
        n_pos_rep=[5, 1],
        n_inst_sel=[2, 1],
        n_inst_rep=[2, 1],
        concept_types=np.array([0, 1]),
        single_residue=np.array([False, True]),
        thresholds=thresholds,
    )
    by_concept = {int(c): i for i, c in enumerate(res["concept"])}
    d = by_concept[0]
    # Domain:X: t=0: P=2/4, domain recall=1/2 -> F1=0.5; t=0.5: P=1/2, dR=1/2 -> F1=0.5 -> tie -> t=0
    assert res["threshold"][d] == 0.0
    assert res["precision"][d] == pytest.approx(0.5)
    assert res["recall"][d] == pytest.approx(2 / 5)
    assert res["domain_recall"][d] == pytest.approx(0.5)
    assert res["f1"][d] == pytest.approx(0.5)
    b = by_concept[1]
    # Binding site: t=0: P=1/3, R=1 -> F1=0.5; t=0.5: tp=0 -> F1=0 -> t=0 chosen
    assert res["threshold"][b] == 0.0
    assert res["precision"][b] == pytest.approx(1 / 3)
    assert res["f1"][b] == pytest.approx(0.5)
