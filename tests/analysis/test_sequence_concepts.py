"""Built-in residue concepts (issue 13 item 1): computed from the sequence alone, with the
positions a biologist would mark by hand."""

from __future__ import annotations

import numpy as np

from plmsae.analysis import residue
from plmsae.analysis import sequence_concepts as sc


def _by_concept(seq: str) -> dict[str, list[tuple[int, int]]]:
    c, s, e = sc.instances(seq)
    out: dict[str, list[tuple[int, int]]] = {}
    for ci, a, b in zip(c.tolist(), s.tolist(), e.tolist()):
        out.setdefault(sc.CONCEPTS[ci], []).append((a, b))
    return out


def test_amino_acids_termini_and_names():
    got = _by_concept("MQAQX")
    assert got["seq:aa:Q"] == [(1, 2), (3, 4)]  # one single-residue instance per glutamine
    assert got["seq:aa:M"] == [(0, 1)] and "seq:aa:W" not in got  # X is no amino acid
    assert got["seq:nterm"] == [(0, 5)] and got["seq:cterm"] == [(0, 5)]
    long = _by_concept("A" * 30)
    assert long["seq:nterm"] == [(0, 5)] and long["seq:cterm"] == [(25, 30)]
    assert sc.NAMES["seq:aa:Q"] == "glutamine (Q)"
    assert all(c.startswith("seq:") for c in sc.CONCEPTS) and len(sc.CONCEPTS) == 31
    assert sc.single_residue("seq:aa:Q") and not sc.single_residue("seq:hydrophobic")


def test_hydrophobic_stretch_charge_clusters_and_low_complexity():
    # a 21-residue leucine/isoleucine/valine helix between two polar stretches
    tm = "LIVLLAIVLLVIALLIVLAVL"
    seq = "DSTKPQNSGTEDPSGNTQKS" + tm + "SNPQGTDKSEGPNTSQDKSG"
    got = _by_concept(seq)
    ((start, end),) = got["seq:hydrophobic"]
    assert start <= 20 and end >= 41 and end - start <= 21 + 2 * 18  # covers the helix
    # five lysines/arginines in ten residues: a positive cluster; acidic tail: negative
    got = _by_concept("GSGSGSGSGS" + "KRKKRAGSKR" + "GSGSGSGSGS" + "EEDDEEDSEE")
    assert len(got["seq:charge:positive"]) == 1 and len(got["seq:charge:negative"]) == 1
    # a poly-Q run is low complexity; a varied sequence is not
    ((start, end),) = _by_concept("MSTAGH" + "Q" * 14 + "WYFPRD")["seq:low-complexity"]
    assert start <= 6 and end >= 20 and (start, end) != (0, 26)  # the run and a little flank
    assert "seq:low-complexity" not in _by_concept("ACDEFGHIKLMNPQRSTVWY")


def test_prosite_motifs():
    got = _by_concept("MNSTANPSANATNGSAAA")
    # N-{P}-[ST]-{P}: NSTA at 1, NATN at 9, NGSA at 12; NPSA is not a sequon (P after N)
    assert got["seq:motif:N-glyc"] == [(1, 5), (9, 13), (12, 16)]
    assert _by_concept("MGPPGSGKSTLL")["seq:motif:P-loop"] == [(1, 9)]  # [AG]x4GK[ST]
    assert _by_concept("MAAAAAKDEL")["seq:motif:KDEL"] == [(6, 10)]  # C-terminal only
    assert "seq:motif:KDEL" not in _by_concept("MKDELAAAAA")
    zf = "YKCPECGKSFSQSSNLQKHQRTH"  # a C2H2 zinc finger of Zif268-like proteins
    assert _by_concept(zf)["seq:motif:C2H2"] == [(2, 23)]


def test_membership_and_vectorised_layout_match_the_interval_layout():
    seqs = {"A": "MQKQLLNGSA", "B": "QQQ"}
    concepts = sc.SequenceConcepts(seqs)
    m = concepts.membership(["A", "B", "C"]).toarray()
    q = sc.CONCEPTS.index("seq:aa:Q")
    assert m[:, q].tolist() == [True, True, False]  # C has no sequence: no concept
    # the same concepts as interval lists through the original layout give the same matrices
    intervals: dict[str, dict[str, list]] = {}
    for pid, seq in seqs.items():
        c, s, e = sc.instances(seq)
        for ci, a, b in zip(c.tolist(), s.tolist(), e.tolist()):
            intervals.setdefault(sc.CONCEPTS[ci], {}).setdefault(pid, []).append((a, b))
    names = sorted(intervals)
    lay_a, inst_a = residue.layout(["A", "B"], [10, 3], intervals, names, ["seq"])
    rc = residue.ResidueConcepts.select({}, ["A", "B"], 1, concepts, names)
    lay_b, inst_b = rc.layout(["A", "B"], [10, 3])
    order = [rc.names.index(n) for n in names]
    np.testing.assert_array_equal(
        lay_a.token_concept.toarray(), lay_b.token_concept.toarray()[:, order]
    )
    assert lay_b.token_type.toarray().all()  # every residue belongs to the "seq" population
    assert sorted(np.array(rc.names)[inst_b].tolist()) == sorted(np.array(names)[inst_a].tolist())
    assert rc.single_residue[rc.names.index("seq:aa:Q")]
    assert not rc.single_residue[rc.names.index("seq:nterm")]
