"""plmsae annotate: reading the query (sequence on the command line or FASTA)."""

from __future__ import annotations

import numpy as np
import pytest

from plmsae._util import InputError
from plmsae.atlas.annotate import read_query


def test_read_query_sequence():
    [p] = read_query("mktay iakqr\nqisfv*")
    assert p.id == "query" and p.sequence == "MKTAYIAKQRQISFV"


def test_read_query_fasta_file_and_text(tiny_fasta):
    ps = read_query(str(tiny_fasta))
    assert [p.id for p in ps][:2] == ["P00001", "P00002"]
    ps = read_query(">a first\nMKT\nAYI\n>b\nGGG\n")
    assert [(p.id, p.sequence) for p in ps] == [("a", "MKTAYI"), ("b", "GGG")]


def test_read_query_errors(tmp_path):
    with pytest.raises(InputError, match=r"letters ESM-2 does not read: J \(first at residue 3\)"):
        read_query("MKJT")
    with pytest.raises(InputError, match="neither a FASTA file nor a protein sequence"):
        read_query(str(tmp_path / "missing.fasta"))
    with pytest.raises(InputError, match="neither a FASTA file nor a protein sequence"):
        read_query("MK1T")


# --- ranking, groups and thresholds (issue 13 item 3, issue 12 item 6) ------------------------

SEQ = "MQKLQAQGTQWQERQSQVQL"  # 20 residues, Q at 1, 4, 6, 9, 11, 14, 16, 18 (0-based)


def _annotator(monkeypatch, z_prot, z_res=None, **cfg):
    """An Annotator whose atlas knowledge is set by hand and whose encoder returns ``z_prot``."""
    from pathlib import Path

    from plmsae.atlas.annotate import AnnotateConfig, Annotator

    a = Annotator(AnnotateConfig(sequence_or_fasta="MK", sae=Path("unused"), **cfg))
    dense = {"density": 0.9, "kind": "dense", "plain_label": ""}
    spec = {"density": 0.1, "kind": "specific", "plain_label": ""}
    a.labels = {
        0: dense,
        1: dense,
        2: dense,
        3: {
            "density": 0.95,
            "kind": "sequence-chemistry",
            "plain_label": "fires on every glutamine",
        },
        4: dict(spec),
        5: dict(spec),
        6: {**spec, "label": "kinase", "description": "Fires on kinases.", "is_llm": True},
        7: dict(spec),
        8: dict(spec),
        9: dict(spec),
        10: {"density": 0.3, "kind": "specific", "plain_label": ""},
    }
    a.assoc_rows = {
        4: [{"concept": "GO:1", "name": "ATP binding", "q": 1e-9, "threshold": 0.5}],
        # the best association needs 80 % of the maximum; 0.6 does not reach it
        5: [{"concept": "GO:2", "name": "nucleus", "q": 1e-12, "threshold": 0.8}],
        8: [
            {"concept": "GO:3", "name": "DNA binding", "q": 1e-20, "threshold": 2.0},
            {"concept": "GO:4", "name": "chromatin", "q": 1e-5, "threshold": 0.15},
        ],
    }
    a.max_act = np.ones(12, np.float32)
    a.local_chemistry = False
    monkeypatch.setattr(a, "encode", lambda residues: (z_prot, z_res))
    return a


def _protein():
    from plmsae.data.fasta import Protein

    return Protein("P01308", SEQ, "INS_HUMAN Insulin OS=Homo sapiens OX=9606 GN=INS PE=1 SV=1")


Z = np.array([0.95, 0.97, 0.99, 0.9, 0.6, 0.6, 0.9, 0.99, 1.3, 0.0, 0.5, 0.0], np.float32)


def test_annotate_ranks_specific_features_by_evidence(monkeypatch):
    r = _annotator(monkeypatch, Z).annotate_protein(_protein(), None)
    assert (r["name"], r["organism"]) == ("Insulin", "Homo sapiens")
    feats = {f["feature"]: f for f in r["features"] + r["chemistry"]}
    # associated (8 before 4: relative x (1 - density)), described (6), neither (7, 5, 10)
    assert [f["feature"] for f in r["features"]] == [8, 4, 6, 7, 5, 10]
    assert [f["rank"] for f in r["features"]] == [1, 2, 3, 4, 5, 6]
    assert all(f["density"] < 0.5 and f["group"] == "specific" for f in r["features"])
    # dense features are left out and counted; sequence chemistry is listed apart, labelled
    assert r["n_left_out"] == {"dense": 3} and r["n_active"] == 10
    assert [(f["feature"], f["label"]) for f in r["chemistry"]] == [(3, "fires on every glutamine")]
    # relative activation capped at 100 %, flagged
    assert feats[8]["relative"] == 1.0 and feats[8]["above_max"] is True
    assert feats[4]["relative"] == pytest.approx(0.6) and feats[4]["above_max"] is False
    # a concept is named only above its association's threshold: 8 passes 0.15 but not 2.0
    assert (feats[8]["concept"], feats[8]["label"], feats[8]["threshold"]) == (
        "GO:4",
        "chromatin",
        0.15,
    )
    assert feats[4]["evidence"] == "associated" and feats[4]["label"] == "ATP binding"
    assert feats[5]["evidence"] == "none" and feats[5]["label"] == "" and feats[5]["concept"] == ""
    assert feats[5]["above_threshold"] is False and feats[5]["below_concept"] == "nucleus"
    assert feats[6]["evidence"] == "described" and feats[6]["label"] == "kinase"
    assert feats[7]["above_threshold"] is None  # no association at all


def test_annotate_all_and_top(monkeypatch):
    r = _annotator(monkeypatch, Z, all=True).annotate_protein(_protein(), None)
    ranked = [f["feature"] for f in r["features"]]
    assert set(ranked) == {0, 1, 2, 4, 5, 6, 7, 8, 10} and r["n_left_out"] == {}
    assert ranked[:3] == [8, 4, 6]  # the evidence still leads; the dense ones rank by score
    assert [f["group"] for f in r["features"] if f["feature"] < 3] == ["dense"] * 3
    r = _annotator(monkeypatch, Z, top=2).annotate_protein(_protein(), None)
    assert [f["feature"] for f in r["features"]] == [8, 4] and len(r["chemistry"]) == 1


def test_chemistry_from_the_query_when_the_atlas_predates_kinds(monkeypatch):
    from plmsae.atlas.annotate import chemistry_labels

    is_q = np.array([c == "Q" for c in SEQ], np.float32)
    z_res = np.zeros((len(SEQ), 12), np.float32)
    z_res[:, 10] = 0.5 * is_q  # fires on every glutamine and nowhere else
    z_res[:, 7] = 0.99 * is_q
    z_res[3, 7] = 0.0  # ... but feature 7 misses 1 of 8: still 'nearly every'
    z_res[:, 7] += 0.99 * np.array([c == "K" for c in SEQ])  # and fires on K (1 residue)
    z_res[:5, 4] = 0.6  # a stretch: not one amino acid
    z_res[[0], 6] = 0.9  # M1 only: too few to say
    assert chemistry_labels(z_res, SEQ, np.array([4, 6, 7, 10])) == {
        7: "fires on every glutamine here",
        10: "fires on every glutamine here",
    }
    z_prot = z_res.max(0)
    a = _annotator(monkeypatch, z_prot, z_res)
    a.local_chemistry = True
    r = a.annotate_protein(_protein(), None)
    assert {f["feature"] for f in r["chemistry"]} == {7, 10}
    assert all(f["group"] == "specific" for f in r["features"])
    assert r["chemistry"][0]["spans"] and r["chemistry"][0]["peak"] is not None


def test_annotate_out_formats(tmp_path, monkeypatch):
    import pandas as pd

    from plmsae.atlas.annotate import AnnotateConfig, AnnotateResult, result_table

    with pytest.raises(InputError, match=r"--out .*suffix '.csv'.*Fix: name the file .json"):
        AnnotateConfig(sequence_or_fasta="MK", sae=tmp_path, out=tmp_path / "a.csv")
    r = _annotator(monkeypatch, Z).annotate_protein(_protein(), None)
    table = result_table([r])
    assert list(table["feature"]) == [8, 4, 6, 7, 5, 10, 3]
    assert list(table["group"]) == ["specific"] * 6 + ["sequence-chemistry"]
    assert set(table["protein_name"]) == {"Insulin"} and set(table["organism"]) == {"Homo sapiens"}
    a = _annotator(monkeypatch, Z, out=tmp_path / "x.tsv")
    a.write(AnnotateResult([r], {}))
    back = pd.read_csv(tmp_path / "x.tsv", sep="\t")
    assert list(back["feature"]) == list(table["feature"]) and back["label"][1] == "ATP binding"
    a = _annotator(monkeypatch, Z, out=tmp_path / "x.parquet")
    a.write(AnnotateResult([r], {}))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "x.parquet"), table)


def test_printed_labels_are_never_cut_mid_word(monkeypatch):
    import io

    from rich.console import Console

    from plmsae.atlas.annotate import AnnotateResult
    from plmsae.cli.atlas import show_annotate

    a = _annotator(monkeypatch, Z)
    long = "Fires on " + " ".join(f"word{i}" for i in range(60)) + "."
    a.labels[6] = {**a.labels[6], "label": "", "description": long}
    r = a.annotate_protein(_protein(), None)
    settings = {
        "model": "m",
        "layer": 4,
        "d_sae": 12,
        "level": "residue",
        "assoc": "x",
        "all": False,
    }
    console = Console(record=True, width=80, file=io.StringIO())
    show_annotate(AnnotateResult([r], settings), console)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    words = " ".join(line.split("│")[5] for line in text.splitlines() if line.count("│") == 7)
    shown = [w for w in words.split() if w.startswith("word")]
    assert shown and all(w in long.split() for w in shown)  # whole words only
    assert "…" in words and "left out: 3 dense" in text
    assert "P01308 Insulin (Homo sapiens), 20 residues" in text
