"""End to end: associate() writes ASSOC_DIR as docs/design.md says, finds a planted association,
reuses finished work and refuses to mix runs; the CLI command prints what it found."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from plmsae._util import InputError
from plmsae.analysis.assocdir import (
    ASSOC_COLUMNS,
    FEATURE_COLUMNS,
    FEATURE_EXTRA_COLUMNS,
    FEATURE_KINDS,
    RESIDUE_COLUMNS,
)
from plmsae.analysis.associate import AssociateConfig, AssociateResult, associate


def _run(inp, out, **kw) -> AssociateResult:
    kw.setdefault("split_method", "random")
    kw.setdefault("min_concept", 5)
    kw.setdefault("max_concept_fraction", 1.0)  # the planted concepts are common in this small set
    return associate(
        inp["sae"],
        inp["store"],
        annotations=inp["annotations"],
        out=out,
        ontology=inp["ontology"],
        **kw,
    )


def test_associate_end_to_end(assoc_inputs, tmp_path):
    result = _run(assoc_inputs, tmp_path / "assoc")
    out = result.out
    assert out == tmp_path / "assoc" and result.reused == []
    for name in (
        "run.json",
        "proteins.parquet",
        "concepts.parquet",
        "annotations.npz",
        "activations/sae.npz",
        "activations/neuron.npz",
        "activations/random.npz",
        "features.parquet",
        "associations.parquet",
        "residue_associations.parquet",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    proteins = pd.read_parquet(out / "proteins.parquet")
    assert list(proteins.columns) == ["id", "split", "cluster", "length", "name"]
    assert proteins["id"].tolist() == assoc_inputs["ids"]
    assert set(proteins["split"]) == {"validation", "test"}
    concepts = pd.read_parquet(out / "concepts.parquet")
    assert {"GO:BP", "GO:MF", "family", "residue"} <= set(concepts["category"])
    ann = sp.load_npz(out / "annotations.npz")
    assert ann.shape == (96, len(concepts)) and ann.dtype == bool
    # propagation: every protein has the BP root, the MF root where it has function C
    col = {c: i for i, c in enumerate(concepts["concept"])}
    assert ann[:, col["GO:0008150"]].sum() == 96
    assert ann[:, col["GO:0003674"]].sum() == ann[:, col["GO:0000020"]].sum() == 32
    acts = {s: sp.load_npz(out / "activations" / f"{s}.npz") for s in ("sae", "neuron", "random")}
    # signed neurons by default: ReLU(x) and ReLU(-x) of the 32 hidden units
    assert acts["sae"].shape == (96, 48) and acts["neuron"].shape == (96, 64)
    assert acts["random"].shape == (96, 64)  # default: as many random directions as neurons
    feats = pd.read_parquet(out / "features.parquet")
    assert set(feats["source"]) == {"sae", "neuron", "random"} and len(feats) == 48 + 64 + 64
    assert list(feats.columns) == [*FEATURE_COLUMNS, *FEATURE_EXTRA_COLUMNS]
    assert set(feats["kind"]) <= set(FEATURE_KINDS)
    sae_feats = feats[feats["source"] == "sae"]
    assert sae_feats["residue_density"].between(0, 1).all()
    assert (sae_feats.loc[sae_feats["max_activation"] > 0, "top_amino_acid"] != "").all()
    assoc = pd.read_parquet(out / "associations.parquet")
    assert list(assoc.columns) == ASSOC_COLUMNS
    assert (assoc["split"] == "test").all() and (assoc["n_both"] >= 3).all()
    sig = (assoc["q_value"] < 0.05) & (assoc["precision"] >= 0.5)
    assert not (assoc["replicated"] & ~sig).any()  # replicated implies associated on test
    assert (
        (assoc["q_value"] >= assoc["p_value"]) | np.isclose(assoc["q_value"], assoc["p_value"])
    ).all()
    hit = assoc[
        (assoc["source"] == "sae")
        & (assoc["feature"] == assoc_inputs["planted"])
        & (assoc["concept"] == "GO:0000010")
    ]
    assert len(hit) == 1
    assert hit["q_value"].iloc[0] < 0.05 and hit["precision"].iloc[0] >= 0.5
    assert hit["auroc"].iloc[0] > 0.8
    # the population of GO:BP is every protein (all have a BP term), split into test
    assert hit["n_population"].iloc[0] == (proteins["split"] == "test").sum()
    res = pd.read_parquet(out / "residue_associations.parquet")
    assert list(res.columns) == RESIDUE_COLUMNS
    # UniProt's transmembrane regions and the built-in sequence concepts, for every source
    assert "Transmembrane" in set(res["concept"])
    assert {"seq:aa:Q", "seq:nterm"} <= set(res["concept"])
    for src in ("sae", "neuron", "random"):
        assert (res.loc[res["source"] == src, "concept"].str.startswith("seq:")).any(), src
    assert set(concepts.loc[concepts["concept"].str.startswith("seq:"), "category"]) == {"residue"}
    test_ids = set(proteins.loc[proteins["split"] == "test", "id"])
    tm_test = [p for i, p in enumerate(assoc_inputs["ids"]) if i % 2 == 0 and p in test_ids]
    tm = res[res["concept"] == "Transmembrane"]
    assert (tm["n_instances"] == len(tm_test)).all() and (
        tm["n_residues"] == 21 * len(tm_test)
    ).all()
    for col in ("precision", "recall", "domain_recall", "f1"):
        assert res[col].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {
        "sae",
        "neuron",
        "random",
        "settings",
        "headline",
        "coherence",
        "training_overlap",
    }
    _check_headline(summary)
    # the fixture SAE was never trained: which proteins it saw is unknown
    assert summary["training_overlap"]["status"] == "unknown"
    assert summary["sae"]["n_features"] == 48
    assert summary["sae"]["n_features_associated"] >= 1
    assert summary["sae"]["by_category"]["GO:BP"]["n_features_associated"] >= 1
    cov = summary["sae"]["concepts"]
    sae_hits = assoc[
        (assoc["source"] == "sae") & (assoc["q_value"] < 0.05) & (assoc["precision"] >= 0.5)
    ]
    assert cov["n_concepts_associated"] == sae_hits["concept"].nunique() >= 1
    # 64 signed neurons vs 48 SAE features: the baselines are the larger sources here
    ncov = summary["neuron"]["concepts"]
    assert ncov["matched_n_features"] == 48
    assert 0 <= ncov["n_concepts_associated_matched"] <= ncov["n_concepts_associated"]
    assert "n_concepts_associated_matched" not in cov
    # n_concepts_tested: the concepts that pass the filter (here every one with >= 5 proteins)
    bp = summary["sae"]["by_category"]["GO:BP"]
    n_bp = ((concepts["category"] == "GO:BP") & (concepts["n_proteins"] >= 5)).sum()
    assert bp["n_concepts_tested"] == n_bp >= bp["n_concepts_with_tested_pair"]
    # the counts come from the rows kept in memory and per-category tallies: they are those
    # of the whole table on disk
    for src in ("sae", "neuron", "random"):
        for cat, block in summary[src]["by_category"].items():
            if cat == "residue":
                continue
            rows = assoc[(assoc["source"] == src) & (assoc["category"] == cat)]
            hits = rows[(rows["q_value"] < 0.05) & (rows["precision"] >= 0.5)]
            assert block["n_pairs_tested"] == len(rows), (src, cat)
            assert block["n_concepts_with_tested_pair"] == rows["concept"].nunique(), (src, cat)
            assert block["n_pairs_associated"] == len(hits), (src, cat)
            assert block["n_features_associated"] == hits["feature"].nunique(), (src, cat)
        recovered = assoc.loc[(assoc["source"] == src) & (assoc["f1"] >= 0.5), "concept"]
        values = summary["headline"]["sources"][src]["values"]
        assert values["concepts_recovered"]["all"] == recovered.nunique(), src
    assert summary["sae"]["by_category"]["GO:BP"]["n_pairs_tested"] > 0
    red = summary["sae"]["redundancy"]
    assert red["n_groups"] <= red["n_live_features"] <= 48 and red["jaccard_min"] == 0.7
    assert 0 < summary["settings"]["random_target_density"] <= 1
    run = json.loads((out / "run.json").read_text())
    assert run["layer"] == 2 and run["level"] == "residue" and run["annotations_sha256"]
    assert set(run["timings"]) == {
        "split_s",
        "concepts_s",
        "activations_s",
        "statistics_s",
        "residue_s",
        "redundancy_s",
        "coherence_s",
    }
    assert run["neuron_baseline"] == "signed" and run["training_overlap"]["status"] == "unknown"
    # the result carries summary.json's counts and the timings
    assert set(result.sources) == {"sae", "neuron", "random"}
    assert result.sources["sae"].n_features_associated == summary["sae"]["n_features_associated"]
    assert result.sources["sae"].n_concepts_associated == cov["n_concepts_associated"]
    assert (
        result.sources["sae"].by_category["GO:BP"]
        == (summary["sae"]["by_category"]["GO:BP"]["n_features_associated"])
    )
    assert result.sources["neuron"].matched_n_features == 48
    assert result.sources["sae"].unique_features == summary["sae"]["redundancy"]["n_groups"]
    assert result.headline == summary["headline"]
    assert (result.n_proteins, result.split_method) == (96, "random")
    assert result.timings == run["timings"]

    # a re-run reuses the activations; other settings in the same directory are refused
    mtime = os.stat(out / "activations" / "sae.npz").st_mtime_ns
    again = _run(assoc_inputs, out)
    assert os.stat(out / "activations" / "sae.npz").st_mtime_ns == mtime
    assert again.reused == ["split", "activations"] and again.sources == result.sources
    with pytest.raises(InputError, match="--overwrite"):
        _run(assoc_inputs, out, pool="mean")
    _run(assoc_inputs, out, pool="mean", overwrite=True, baselines=False)
    assert not (out / "activations" / "neuron.npz").exists()
    assert set(pd.read_parquet(out / "associations.parquet")["source"]) <= {"sae"}


def _check_headline(summary: dict) -> None:
    """summary.json's headline block: the contract with the atlas and demo printers."""
    head = summary["headline"]
    assert isinstance(head["note"], str) and len(head["note"]) > 100
    assert head["matched_n_features"] == min(summary[s]["n_features"] for s in head["sources"])
    assert head["draws"] == 50
    keys = [m["key"] for m in head["measures"]]
    assert keys[:3] == ["concepts_recovered", "concepts_associated", "concepts_replicated"]
    assert all(m["label"] and m["description"] for m in head["measures"])
    for src, block in head["sources"].items():
        assert block["n_features"] == summary[src]["n_features"]
        assert block["unique_features"] == summary[src]["redundancy"]["n_groups"]
        assert block["fraction_associated"] == summary[src]["fraction_associated"]
        for key in keys:
            v = block["values"][key]
            assert v["matched_ci"][0] <= v["matched"] <= v["matched_ci"][1], (src, key)
            assert v["matched"] <= v["all"] or v["matched"] == v["all"]
        assoc = block["values"]["concepts_associated"]["all"]
        assert assoc == summary[src]["concepts"]["n_concepts_associated"]
        assert block["values"]["concepts_replicated"]["all"] <= assoc


def test_bad_options(assoc_inputs, tmp_path):
    with pytest.raises(InputError, match="pool"):
        _run(assoc_inputs, tmp_path / "a", pool="median")
    with pytest.raises(InputError, match="fractions"):
        _run(assoc_inputs, tmp_path / "b", split_fractions="0.5,0.5")
    with pytest.raises(InputError, match="--split-fractions .*validation or test empty"):
        _run(assoc_inputs, tmp_path / "b", split_fractions=[0.5, 0.5, 0])
    with pytest.raises(InputError, match="--thresholds .*fractions in"):
        _run(assoc_inputs, tmp_path / "b", thresholds=[0, 1.5])
    with pytest.raises(InputError, match="layer"):
        _run(assoc_inputs, tmp_path / "c", layer=1)
    other = tmp_path / "other.tsv"
    other.write_text("X99999\tGO:0000010\n")
    with pytest.raises(InputError, match="none of the 96 proteins"):
        _run({**assoc_inputs, "annotations": other}, tmp_path / "d")


def _cli():
    import typer

    from plmsae.cli.associate import show_associate
    from plmsae.cli.build import build_command

    app = typer.Typer()
    app.command("associate")(build_command(AssociateConfig, associate.run, show_associate))

    @app.command("other")
    def other() -> None:  # a second command keeps "associate" a subcommand
        pass

    return app


def test_cli(assoc_inputs, tmp_path):
    from typer.testing import CliRunner

    inp = assoc_inputs
    args = [
        "associate",
        str(inp["sae"]),
        str(inp["store"]),
        "--annotations",
        str(inp["annotations"]),
        "--ontology",
        str(inp["ontology"]),
        "--out",
        str(tmp_path / "cli"),
        "--split-method",
        "random",
        "--min-concept",
        "5",
        "--no-baselines",
        "--thresholds",
        "0,0.5",
    ]
    res = CliRunner().invoke(_cli(), args, env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["settings"]["thresholds"] == [0.0, 0.5]
    assert set(summary) == {"sae", "settings", "headline", "coherence", "training_overlap"}
    # the printer: per source features associated, distinct concepts, by category; 80 columns
    assert "SAE features" in res.output and "model neurons" not in res.output
    assert "distinct concepts" in res.output and "GO biological process" in res.output
    assert "Concepts found at 48 features per source" in res.output
    assert "concepts that replicate" in res.output and "distinct features" in res.output
    assert "SAE training proteins: unknown" in res.output
    assert "Proteins: 96 (48 validation, 48 test; random split)" in res.output
    assert str(tmp_path / "cli") in res.output.replace("\n", "")
    assert max(len(line) for line in res.output.splitlines()) <= 80
    res = CliRunner().invoke(_cli(), [*args, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["reused"] == ["split", "activations"] and set(got["sources"]) == {"sae"}
    assert got["sources"]["sae"]["n_features"] == 48
    res = CliRunner().invoke(
        _cli(),
        [
            "associate",
            str(inp["sae"]),
            str(tmp_path / "nostore"),
            "--annotations",
            str(inp["annotations"]),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 2 and "meta.json" in res.output


def test_cli_out_is_a_file(assoc_inputs, tmp_path):
    """issue 11 item 7: --out naming an existing file is one clear line, not FileExistsError."""
    from typer.testing import CliRunner

    inp = assoc_inputs
    taken = tmp_path / "taken.txt"
    taken.write_text("not a directory\n")
    res = CliRunner().invoke(
        _cli(),
        [
            "associate",
            str(inp["sae"]),
            str(inp["store"]),
            "--annotations",
            str(inp["annotations"]),
            "--out",
            str(taken),
            "--split-method",
            "random",
        ],
    )
    assert res.exit_code == 2, res.output
    assert "--out exists and is not a directory" in " ".join(res.output.split())
    assert "Traceback" not in res.output and "FileExistsError" not in res.output
    assert taken.read_text() == "not a directory\n"


def test_protein_level_sae_encodes_pooled_vectors(assoc_inputs, tmp_path):
    import torch

    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    store = ActivationStore(assoc_inputs["store"])
    torch.manual_seed(1)
    sae = create_sae(
        SAEConfig(
            arch="topk",
            d_in=32,
            d_sae=24,
            k=4,
            layer=2,
            level="protein",
            pooling="mean",
            model=store.meta["model"],
        )
    )
    save_sae(sae, tmp_path / "psae")
    out = associate(
        tmp_path / "psae",
        store.path,
        annotations=assoc_inputs["annotations"],
        ontology=assoc_inputs["ontology"],
        out=tmp_path / "p",
        split_method="random",
        min_concept=5,
        max_concept_fraction=1.0,
    ).out
    got = sp.load_npz(out / "activations" / "sae.npz").toarray()
    with torch.no_grad():
        want = sae.encode(torch.from_numpy(store.pooled_matrix(2))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    neuron = sp.load_npz(out / "activations" / "neuron.npz").toarray()
    pooled = store.pooled_matrix(2)
    np.testing.assert_allclose(
        neuron, np.maximum(np.concatenate([pooled, -pooled], axis=1), 0), rtol=1e-6
    )
    assert len(pd.read_parquet(out / "residue_associations.parquet")) == 0
    summary = json.loads((out / "summary.json").read_text())
    keys = [m["key"] for m in summary["headline"]["measures"]]
    assert "residue_concepts_recovered" not in keys  # protein level: no residue measure
    feats = pd.read_parquet(out / "features.parquet")
    assert feats["residue_density"].isna().all() and (feats["top_amino_acid"] == "").all()
    assert json.loads((out / "run.json").read_text())["pooling"] == "mean"


def test_engine_steps_on_loaded_inputs(assoc_inputs, tmp_path):
    """Python callers with loaded inputs drive the engine step by step."""
    from plmsae.analysis.associate import Associator
    from plmsae.data.annotations import read_annotations
    from plmsae.data.ontology import Ontology
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.checkpoint import load_sae

    inp = assoc_inputs
    cfg = AssociateConfig(
        inp["sae"],
        inp["store"],
        annotations=inp["annotations"],
        ontology=inp["ontology"],
        out=tmp_path / "steps",
        split_method="random",
        min_concept=5,
        max_concept_fraction=1.0,
        baselines=False,
    )
    onto = Ontology.load(inp["ontology"])
    eng = Associator(
        cfg,
        ActivationStore(inp["store"]),
        load_sae(inp["sae"]),
        read_annotations(inp["annotations"], onto),
    )
    eng.prepare()
    assert list(eng.split().columns) == ["id", "split", "cluster", "length", "name"]
    assert set(eng.concepts()["category"]) >= {"GO:BP", "residue"}
    assert set(eng.activations()) == {"sae"}
    kept = eng.statistics()
    assert list(kept.columns) == ASSOC_COLUMNS
    # in memory: only the rows the later steps read (associated, or F1 >= 0.5); on disk: all
    on_disk = pd.read_parquet(tmp_path / "steps" / "associations.parquet")
    sig = (on_disk["q_value"] < 0.05) & (on_disk["precision"] >= 0.5)
    notable = on_disk[sig | (on_disk["f1"] >= 0.5)].reset_index(drop=True)
    assert 0 < len(kept) < len(on_disk)
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), notable, check_dtype=False)
    assert list(eng.residue_statistics().columns) == RESIDUE_COLUMNS
    assert set(eng.redundancy()) == {"sae"}
    assert eng.coherence()["note"] == "no ontology given"  # not passed to the engine
    assert set(eng.summary()) == {"sae", "settings", "headline", "coherence", "training_overlap"}
    assert eng.result().sources["sae"].n_features == 48
    assert (tmp_path / "steps" / "summary.json").is_file()


def test_config_spellings_and_checks():
    """TOML/Python may give split_fractions as the old "0,0.5,0.5" string or as three numbers;
    thresholds become floats; bad values name the CLI flag."""
    paths = dict(sae="s", store="t", annotations="a.tsv", out="o")
    old = AssociateConfig.from_dict(
        {"split_fractions": "0,0.5,0.5", "thresholds": [0, 0.5]}, **paths
    )
    new = AssociateConfig(**paths, split_fractions=[0, 0.5, 0.5])
    assert old.split_fractions == new.split_fractions == [0.0, 0.5, 0.5]
    assert old.thresholds == [0.0, 0.5] and new.thresholds == [0.0, 0.15, 0.5, 0.6, 0.8]
    with pytest.raises(InputError, match="--split-method 'x': .*Fix: use mmseqs or random"):
        AssociateConfig(**paths, split_method="x")
    with pytest.raises(InputError, match="--split-fractions 'a,b,c': is not three"):
        AssociateConfig(**paths, split_fractions="a,b,c")
    assert AssociateConfig(**paths).neuron_baseline == "signed"
    with pytest.raises(InputError, match="--neuron-baseline 'abs': .*signed, relu or minmax"):
        AssociateConfig(**paths, neuron_baseline="abs")
    assert AssociateConfig(**paths).sequence_concepts is True
    # the help says what the cap means (and no longer claims a fold it cannot guarantee)
    import dataclasses

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(AssociateConfig)}
    assert "each of the validation and test splits" in helps["max_concept_fraction"]
    assert ">= 5-fold" in helps["max_concept_fraction"]


def test_training_overlap_is_recorded_and_reported(assoc_inputs, tiny_esm_dir, tmp_path):
    """issue 12 item 4: train records its proteins (store, count, hash of the IDs); associate
    reports how many association proteins the SAE was trained on, and says "held out" only
    when it saw none of them."""
    from plmsae.analysis.overlap import overlap_sentence
    from plmsae.data.fasta import read_fasta
    from plmsae.embedding.embedder import embed
    from plmsae.sae.train import train

    inp = assoc_inputs
    kw = dict(latents=16, k=2, batch_size=256, tokens=2048, layer=2, checkpoint_every=0)
    train(inp["store"], out=tmp_path / "seen", **kw)
    rec = json.loads((tmp_path / "seen" / "cfg.json").read_text())["training"]["proteins"]
    assert rec["store"] == str(inp["store"].resolve()) and rec["n_proteins"] == 96
    assert len(rec["ids_sha256"]) == 64
    opts = dict(baselines=False, sequence_concepts=False, max_concept_fraction=1.0)
    seen = _run({**inp, "sae": tmp_path / "seen"}, tmp_path / "a1", **opts)
    ov = seen.training_overlap
    assert ov["status"] == "known" and ov["n_seen_in_training"] == 96 and not ov["held_out"]
    assert sum(ov["by_split"].values()) == 96 and ov["fraction_seen_in_training"] == 1.0
    assert "not held out" in overlap_sentence(ov)
    run = json.loads((tmp_path / "a1" / "run.json").read_text())
    assert run["training_overlap"] == ov
    # an SAE trained on other proteins (other accessions): the association proteins are held out
    other = tmp_path / "other.fasta"
    prots = read_fasta(inp["fasta"])[:12]
    other.write_text("".join(f">X{i}\n{p.sequence}\n" for i, p in enumerate(prots)))
    embed(other, tmp_path / "other_store", model=str(tiny_esm_dir), layers=[2])
    train(tmp_path / "other_store", out=tmp_path / "unseen", **kw)
    unseen = _run({**inp, "sae": tmp_path / "unseen"}, tmp_path / "a2", **opts)
    assert unseen.training_overlap["n_seen_in_training"] == 0
    assert unseen.training_overlap["held_out"] is True
    assert "held out" in overlap_sentence(unseen.training_overlap)
