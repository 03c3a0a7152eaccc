"""plmsae discover on a small association directory whose answer is known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import typer
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.analysis import assocdir as ad
from plmsae.analysis.splits import mmseqs_available
from plmsae.apply.discover import CANDIDATE_COLUMNS, DiscoverConfig, Discoverer, discover
from plmsae.cli.apply import show_discover
from plmsae.cli.build import build_command

N = 40
C1 = list(range(0, 10))  # carriers of GO:0000001
C2 = list(range(20, 30))  # carriers of GO:0000002
MISSING_1 = 12  # no GO:0000001, but three precise features (two redundant) fire on it
MISSING_2 = 32  # no GO:0000002, one precise feature fires on it
WEAK = 13  # fires on feature 0 below its threshold


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)


def _activations() -> np.ndarray:
    x = np.zeros((N, 6), np.float32)
    x[C1 + [MISSING_1], 0] = 2.0
    x[WEAK, 0] = 0.5  # below 0.5 x max (= 1.0)
    x[C1[:9] + [MISSING_1], 1] = 1.8  # near copy of feature 0 (Jaccard 10/11)
    x[C1[:3] + [MISSING_1], 2] = 3.0  # another view of the concept (Jaccard with 0: 4/11)
    x[C2 + [MISSING_2], 3] = 1.0
    x[C2[:5] + list(range(33, 38)), 4] = 1.0  # imprecise: half its proteins lack the concept
    x[MISSING_1, 0] = 1.5  # the candidate's activations differ from the carriers'
    return x


def make_assoc(root: Path) -> Path:
    """40 proteins, two GO:MF concepts, six SAE features (see the constants)."""
    ids = [f"P{i:05d}" for i in range(N)]
    _write_parquet(
        pd.DataFrame(
            {
                "id": ids,
                "split": ["validation" if i % 2 else "test" for i in range(N)],
                "cluster": np.arange(N),
                "length": 100,
                "name": [f"protein <{i}>" for i in range(N)],
            }
        ),
        root / ad.PROTEINS,
    )
    concepts = pd.DataFrame(
        {
            "concept": ["GO:0000001", "GO:0000002"],
            "category": ["GO:MF", "GO:MF"],
            "name": ["first activity", "second activity"],
            "n_proteins": [10, 10],
        }
    )
    _write_parquet(concepts, root / ad.CONCEPTS)
    ann = np.zeros((N, 2), bool)
    ann[C1, 0] = ann[C2, 1] = True
    ann[range(30, 40), 1] = False
    sp.save_npz(root / ad.ANNOTATIONS, sp.csr_matrix(ann))
    x = _activations()
    (root / ad.ACTIVATIONS).mkdir()
    sp.save_npz(ad.activation_file(root, "sae"), sp.csr_matrix(x))
    feats = pd.DataFrame(
        {
            "source": "sae",
            "feature": range(6),
            "density": (x > 0).mean(0),
            "max_activation": x.max(0),
            "top_proteins": [[] for _ in range(6)],
        }
    )
    _write_parquet(feats, root / ad.FEATURES)
    rows = [  # feature, concept, threshold, precision, q
        (0, "GO:0000001", 0.5, 0.95, 1e-9),
        (1, "GO:0000001", 0.5, 0.95, 1e-9),
        (2, "GO:0000001", 0.5, 0.95, 1e-8),
        (3, "GO:0000002", 0.5, 0.95, 1e-9),
        (4, "GO:0000002", 0.5, 0.5, 1e-7),
    ]
    assoc = pd.DataFrame(
        [
            {
                "source": "sae",
                "feature": f,
                "concept": c,
                "category": "GO:MF",
                "threshold": t,
                "precision": p,
                "q_value": q,
                "p_value": q,
                "split": "test",
            }
            for f, c, t, p, q in rows
        ]
    )
    _write_parquet(assoc, root / ad.ASSOCIATIONS)
    (root / ad.RUN).write_text(json.dumps({"level": "residue", "pooling": "max"}))
    return root


@pytest.fixture()
def assoc(tmp_path) -> Path:
    return make_assoc(tmp_path / "assoc")


def test_candidates_ranked_by_independent_agreement(assoc):
    res = discover(assoc, homologs=False)
    c = res.candidates
    assert list(c.columns) == CANDIDATE_COLUMNS
    got = list(zip(c["protein"], c["concept"]))
    assert got == [("P00012", "GO:0000001"), ("P00032", "GO:0000002")]
    first = c.iloc[0]
    # features 0 and 1 are near copies (Jaccard 0.91): one group; feature 2 is another
    assert first["n_features"] == 3 and first["n_independent"] == 2
    assert first["features"] == [1, 2, 0]  # strongest relative activation first
    assert first["relative"][0] == pytest.approx(1.0) and first["activations"][2] == 1.5
    assert first["score"] == pytest.approx(2 + (1.0 + 1.0) / 2)
    assert c.iloc[1]["n_independent"] == 1
    assert first["name"] == "protein <12>" and first["concept_name"] == "first activity"
    assert bool(first["annotated_in_category"]) is False
    assert res.n_features == 4 and res.n_concepts == 2 and res.n_groups == 3
    assert res.homolog_note == "homologs not searched (--no-homologs)"


def test_thresholds_precision_and_redundancy_options(assoc):
    # the imprecise feature 4 counts only when --min-precision lets it in
    loose = discover(assoc, homologs=False, min_precision=0.4).candidates
    assert {"P00033", "P00037"} <= set(loose["protein"])
    # WEAK fires on feature 0 below its threshold: never a candidate
    assert "P00013" not in set(loose["protein"])
    # a stricter q leaves out feature 2 (q 1e-8)
    strict = discover(assoc, homologs=False, max_q=5e-9).candidates
    assert strict.iloc[0]["n_features"] == 2 and strict.iloc[0]["n_independent"] == 1
    # redundancy threshold above the copies' Jaccard: three independent features
    sep = discover(assoc, homologs=False, redundant_jaccard=0.95).candidates
    assert sep.iloc[0]["n_independent"] == 3
    only = discover(assoc, homologs=False, top=1).candidates
    assert len(only) == 1


def test_writes_tsv_and_parquet(assoc, tmp_path):
    res = discover(assoc, homologs=False, out=tmp_path / "c.tsv")
    text = (tmp_path / "c.tsv").read_text().splitlines()
    assert text[0].split("\t") == CANDIDATE_COLUMNS
    assert "\t1,2,0\t" in text[1]
    discover(assoc, homologs=False, out=tmp_path / "c.parquet")
    back = pd.read_parquet(tmp_path / "c.parquet")
    assert list(back["features"][0]) == [1, 2, 0] and res.out == tmp_path / "c.tsv"


@pytest.mark.skipif(not mmseqs_available(), reason="mmseqs2 is not installed")
def test_nearest_annotated_homolog(assoc, tmp_path, family_fasta):
    ids, seqs = family_fasta(tmp_path / "fam.fasta", 10, 120, 6, members=4, seed=3)
    # families of four: P00000-P00003 are one (carriers of GO:0000001); P00012 becomes a
    # one-residue variant of P00003, so P00003 is its nearest annotated homolog
    mapping = {f"P{i:05d}": seqs[i] for i in range(N)}
    mapping["P00012"] = seqs[3][:60] + ("W" if seqs[3][60] != "W" else "A") + seqs[3][61:]
    fasta = tmp_path / "proteins.fasta"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in mapping.items()))
    res = discover(assoc, fasta=fasta)
    first = res.candidates.iloc[0]
    assert first["protein"] == "P00012" and first["homolog"] == "P00003"
    assert first["homolog_identity"] > 0.95 and first["homolog_evalue"] < 1e-10
    assert res.homolog_note is None


def test_missing_sequences_give_a_note(assoc):
    res = discover(assoc)  # run.json names no store
    assert "pass --fasta" in res.homolog_note
    assert res.candidates["homolog"].isna().all()


def test_bad_options(assoc, tmp_path):
    with pytest.raises(InputError, match="--categories"):
        DiscoverConfig(assoc, categories=["GO:XX"])
    with pytest.raises(InputError, match=r"\.tsv or \.parquet"):
        DiscoverConfig(assoc, out=tmp_path / "c.csv")
    with pytest.raises(InputError, match="--min-precision"):
        DiscoverConfig(assoc, min_precision=2)
    with pytest.raises(InputError, match="run.json"):
        Discoverer(DiscoverConfig(tmp_path)).run()


def test_cli(assoc, tmp_path):
    app = typer.Typer(rich_markup_mode=None)
    app.command("discover")(build_command(DiscoverConfig, discover.run, show_discover))
    app.command("other")(lambda: None)
    res = CliRunner().invoke(
        app,
        ["discover", str(assoc), "--no-homologs", "--out", str(tmp_path / "c.tsv")],
        env={"COLUMNS": "120"},
    )
    assert res.exit_code == 0, res.output
    assert "2 candidate missing annotations" in res.output and "P00012" in res.output
    res = CliRunner().invoke(app, ["discover", str(assoc), "--no-homologs", "--json"])
    assert json.loads(res.output)["candidates"][0]["features"] == [1, 2, 0]
    res = CliRunner().invoke(app, ["discover", str(assoc), "--categories", "nope"])
    assert res.exit_code == 2
