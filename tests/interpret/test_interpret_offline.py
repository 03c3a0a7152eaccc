"""The explain stage end to end with the offline statistical explainer (no network)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from synthetic_assoc import CONCEPTS, N_PLANTED
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.interpret.explain import explain


def test_offline_outputs_and_labels(assoc_dir):
    block = explain(assoc_dir, llm="offline", n_features=20, n_bootstrap=300).summary
    ex = pd.read_parquet(assoc_dir / "explanations.parquet")
    for col in (
        "source",
        "feature",
        "label",
        "description",
        "explainer",
        "is_llm",
        "prompt_version",
        "model",
        "status",
    ):
        assert col in ex.columns
    # labelled as non-LLM everywhere it appears
    assert (ex["explainer"] == "offline-statistical").all() and not ex["is_llm"].any()
    assert ex["model"].str.contains("not an LLM").all()
    assert block["is_llm"] is False and "NOT an LLM" in block["note"]
    summary = json.loads((assoc_dir / "summary.json").read_text())
    assert summary["explain"]["explainer"] == "offline-statistical"
    assert summary["sae"]["n_features"] == N_PLANTED + 4  # the association block is kept
    # planted SAE features are labelled with their concept
    sae = ex[ex.source == "sae"].set_index("feature")
    hits = sum(sae.loc[f, "label"] == CONCEPTS[f][2] for f in range(N_PLANTED))
    assert hits >= N_PLANTED - 1, sae["label"].tolist()
    assert sae.loc[0, "description"].startswith(
        "Proteins annotated with ATP binding (GO molecular function)"
    )
    scores = pd.read_parquet(assoc_dir / "scores.parquet")
    assert set(scores["method"]) == {"simulation", "detection"}
    assert list(scores.columns[:5]) == ["source", "feature", "method", "score", "n"]
    assert ((scores["n"] > 15) & (scores["n"] <= 32)).all()
    # SAE features beat the dense, weakly tied neurons on the synthetic data
    s, n = block["sources"]["sae"]["simulation_r"], block["sources"]["neuron"]["simulation_r"]
    assert s["median"] > n["median"] + 0.3 and s["median_ci"][0] <= s["median"] <= s["median_ci"][1]
    assert block["sae_minus_neuron_median_r"]["ci"][0] > 0
    assert block["sources"]["sae"]["detection_balanced_accuracy"]["median"] > 0.75
    sims = pd.read_parquet(assoc_dir / "simulations.parquet")
    test_ids = set(pd.read_parquet(assoc_dir / "proteins.parquet").query("split == 'test'")["id"])
    assert set(sims["protein"]) <= test_ids  # scored on held-out clusters only


def test_offline_is_deterministic_and_does_not_look_at_heldout(assoc_dir, tmp_path):
    explain(assoc_dir, llm="offline", n_features=6, n_bootstrap=100)
    first = pd.read_parquet(assoc_dir / "explanations.parquet")
    explain(assoc_dir, llm="offline", n_features=6, n_bootstrap=100)
    pd.testing.assert_frame_equal(first, pd.read_parquet(assoc_dir / "explanations.parquet"))
    # scramble the annotations of the held-out (test) proteins: descriptions must not change
    prot = pd.read_parquet(assoc_dir / "proteins.parquet")
    ann = sp.load_npz(assoc_dir / "annotations.npz").tolil()
    test = np.flatnonzero(prot["split"] == "test")
    rng = np.random.default_rng(5)
    ann[test] = ann[rng.permutation(test)].toarray()[:, rng.permutation(ann.shape[1])]
    sp.save_npz(assoc_dir / "annotations.npz", ann.tocsr())
    explain(assoc_dir, llm="offline", n_features=6, n_bootstrap=100)
    after = pd.read_parquet(assoc_dir / "explanations.parquet")
    assert after["description"].tolist() == first["description"].tolist()
    # ... while the scores do change (the truth no longer matches the annotations)
    sc = pd.read_parquet(assoc_dir / "scores.parquet")
    assert sc.query("source == 'sae' and method == 'simulation'")["score"].median() < 0.4


def test_explicit_features_and_skips(assoc_dir):
    explain(assoc_dir, llm="offline", features=["sae:0,1", "neuron:3"], n_bootstrap=100)
    ex = pd.read_parquet(assoc_dir / "explanations.parquet")
    assert sorted(zip(ex.source, ex.feature)) == [("neuron", 3), ("sae", 0), ("sae", 1)]
    assert (ex["selection"] == "user").all()
    with pytest.raises(InputError, match="feature 99 does not exist"):
        explain(assoc_dir, llm="offline", features=["99"])
    with pytest.raises(InputError, match="no activations for source"):
        explain(assoc_dir, llm="offline", sources=["transcoder"])


def test_missing_file_is_a_clear_error(assoc_dir):
    (assoc_dir / "concepts.parquet").unlink()
    with pytest.raises(InputError, match=r"concepts\.parquet.*missing file.*plmsae associate"):
        explain(assoc_dir, llm="offline")


def test_cli_offline_and_dry_run(assoc_dir, monkeypatch, explain_app):
    app = explain_app
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    runner = CliRunner()
    r = runner.invoke(app, ["explain", "--help"])
    assert r.exit_code == 0 and "--max-cost" in r.output and "--dry-run" in r.output
    r = runner.invoke(app, ["explain", str(assoc_dir), "--dry-run", "--n-features", "4"])
    assert r.exit_code == 0, r.output
    assert "offline" in r.output and not (assoc_dir / "explanations.parquet").exists()
    r = runner.invoke(app, ["explain", str(assoc_dir), "--n-features", "4", "--n-bootstrap", "50"])
    assert r.exit_code == 0, r.output
    assert len(pd.read_parquet(assoc_dir / "explanations.parquet")) == 8
    r = runner.invoke(app, ["explain", str(assoc_dir / "nope")])
    assert r.exit_code == 2 and "not a directory" in r.output


def test_heldout_is_validation_when_associations_come_from_test(assoc_dir):
    """The associate stage's default: statistics on test; then validation is held out, and
    no association row from the held-out split reaches selection or prompts."""
    a = pd.read_parquet(assoc_dir / "associations.parquet")
    a["split"] = "test"
    a.to_parquet(assoc_dir / "associations.parquet")
    block = explain(assoc_dir, llm="offline", n_features=6, n_bootstrap=100).summary
    assert "held-out = association split 'validation'" in block["split"]
    sims = pd.read_parquet(assoc_dir / "simulations.parquet")
    prot = pd.read_parquet(assoc_dir / "proteins.parquet").set_index("id")
    assert set(prot.loc[sims["protein"].unique(), "split"]) == {"validation"}
    assert block["sources"]["sae"]["n_scored"] == 6


def test_cli_prints_the_summary_per_source(assoc_dir, monkeypatch, explain_app):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    args = ["explain", str(assoc_dir), "--n-features", "6", "--n-bootstrap", "50"]
    r = CliRunner().invoke(explain_app, args)
    assert r.exit_code == 0, r.output
    block = json.loads((assoc_dir / "summary.json").read_text())["explain"]
    lines = r.output.splitlines()
    assert max(map(len, lines)) <= 80
    assert "offline-statistical" in lines[0] and any("NOT an LLM" in ln for ln in lines)
    for src, name in (("sae", "SAE features"), ("neuron", "model neurons")):
        s = block["sources"][src]
        row = next(ln for ln in lines if ln.strip().startswith(name)).split()
        counts = [s[k] for k in ("n_features", "n_scored", "failures", "skipped")]
        assert row[2:6] == [str(c) for c in counts], row  # after the two-word source name
        lo, hi = s["simulation_r"]["median_ci"]
        assert f"{s['simulation_r']['median']:.2f} [{lo:.2f}, {hi:.2f}]" in " ".join(row)
    assert "SAE features minus neurons" in r.output and "explanations.parquet" in r.output
    # --json prints the result itself
    r = CliRunner().invoke(explain_app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["summary"] == block and out["explainer"] == "offline-statistical"
    assert out["estimate"] is None and out["assoc_dir"] == str(assoc_dir)


def test_cli_help_is_written_for_users(explain_app):
    r = CliRunner().invoke(explain_app, ["explain", "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0
    assert "Describe features in plain English" in r.output and "--dry-run" in r.output
    assert "Returns" not in r.output and "``" not in r.output
    assert "--sources" in r.output and "--source " not in r.output


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"n_features": 0}, "--n-features 0: must be at least 1"),
        ({"concurrency": 0}, "--concurrency 0: must be at least 1"),
        ({"n_bootstrap": 0}, "--n-bootstrap 0: must be at least 1"),
        ({"max_retries": -1}, "--max-retries -1: must not be negative"),
        ({"retry_delay": -0.5}, "--retry-delay -0.5: must not be negative"),
        ({"max_cost": -1.0}, "--max-cost -1.0: must not be negative"),
        ({"timeout": 0.0}, "--timeout 0.0: must be positive"),
        ({"sources": []}, r"--sources \[\]: must name each source once"),
        ({"sources": ["sae", "sae"]}, r"--sources \['sae', 'sae'\]: must name each source once"),
    ],
)
def test_config_checks_name_the_option(tmp_path, options, flag):
    from plmsae.interpret.explain import ExplainConfig

    with pytest.raises(InputError, match=flag + ".* Fix: "):
        ExplainConfig(tmp_path, **options)
    with pytest.raises(InputError, match=flag):  # the same from TOML, before any file is read
        ExplainConfig.from_dict(options, assoc_dir=tmp_path / "missing")


def test_cli_features_may_be_comma_separated_across_sources(assoc_dir, explain_app):
    args = ["explain", str(assoc_dir), "--llm", "offline", "--n-bootstrap", "50"]
    r = CliRunner().invoke(explain_app, [*args, "--features", "sae:0,1,neuron:3,4"])
    assert r.exit_code == 0, r.output
    ex = pd.read_parquet(assoc_dir / "explanations.parquet")
    assert list(zip(ex.source, ex.feature)) == [
        ("sae", 0),
        ("sae", 1),
        ("neuron", 3),
        ("neuron", 4),
    ]


def test_engine_takes_an_open_assoc_dir_and_writes_the_format(assoc_dir):
    from plmsae.analysis.assocdir import AssocDir
    from plmsae.interpret.explain import ExplainConfig, ExplainRun
    from plmsae.interpret.explanations import (
        EXPLANATION_COLUMNS,
        SCORE_COLUMNS,
        SIMULATION_COLUMNS,
        read_explanations,
        read_scores,
        read_simulations,
    )

    assert read_explanations(assoc_dir).empty and read_simulations(assoc_dir).empty
    cfg = ExplainConfig(assoc_dir, llm="offline", n_features=4, n_bootstrap=50)
    result = ExplainRun(cfg, AssocDir(assoc_dir)).run()
    assert not result.dry_run and [p.name for p in result.files] == [
        "explanations.parquet",
        "scores.parquet",
        "simulations.parquet",
        "summary.json",
    ]
    assert list(read_explanations(assoc_dir).columns) == EXPLANATION_COLUMNS
    assert list(read_scores(assoc_dir).columns) == SCORE_COLUMNS
    assert list(read_simulations(assoc_dir, "sae").columns) == SIMULATION_COLUMNS
    assert set(read_scores(assoc_dir, "neuron")["source"]) == {"neuron"}
    assert result.summary["sources"]["sae"]["n_features"] == 4


def test_too_few_proteins_is_a_clear_error(tmp_path):
    from synthetic_assoc import write_assoc_dir

    d = write_assoc_dir(tmp_path / "small", n_proteins=30)
    with pytest.raises(InputError, match="no feature has enough active proteins.*Fix: features"):
        explain(d, llm="offline", n_bootstrap=10)
