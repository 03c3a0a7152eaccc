"""scripts/validation_study.py: the tables it writes and the coverage it reads back."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "validation_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("validation_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_term_coverage_reads_the_summary_or_recomputes_it(study, tmp_path):
    unit = tmp_path / "L4"
    (unit / "assoc").mkdir(parents=True)
    pd.DataFrame(
        [
            ("sae", 0, "GO:1", 0.01, 0.9, 0.8),
            ("sae", 5, "GO:2", 0.01, 0.9, 0.8),
            ("neuron", 1, "GO:2", 0.01, 0.7, 0.55),
        ],
        columns=["source", "feature", "concept", "q_value", "precision", "f1"],
    ).to_parquet(unit / "assoc" / "associations.parquet")
    summary = {s: {"n_features": n} for s, n in (("sae", 8), ("neuron", 2), ("random", 2))}
    (unit / "assoc" / "summary.json").write_text(json.dumps(summary))
    cov = study.term_coverage(unit, summary)  # a run made before summary.json held the coverage
    assert cov["sae"]["n_concepts_associated"] == 2 and cov["neuron"]["n_concepts_associated"] == 1
    assert cov["sae"]["matched_n_features"] == 2

    table = study.coverage_table([{"level": "residue", "layer": 4, "coverage": cov}])
    row = table.splitlines()[2]
    assert row.startswith("| residue | 4 | 2 | ") and row.endswith("| 2 | 1 | 0 |")

    for s in summary:  # newer runs: read, not recomputed
        summary[s]["concepts"] = {"n_concepts_associated": 7, "n_concepts_f1_05": 1}
    (unit / "assoc" / "summary.json").write_text(json.dumps(summary))
    assert study.term_coverage(unit, summary)["random"]["n_concepts_associated"] == 7


def test_markdown_table_shows_missing_heldout_as_dash(study):
    src = {
        "n_features": 10,
        "n_associated": 3,
        "fraction": 0.3,
        "by_category": {"GO:BP": {"n": 2, "fraction": 0.2}},
    }
    row = {
        "level": "protein",
        "layer": 2,
        "fve": 0.9,
        "l0": 16.0,
        "dead_fraction": 0.1,
        "sources": {"sae": src, "neuron": src, "random": src},
        "explain": {"sae": 0.5, "neuron": None},
    }
    line = study.markdown_table([row]).splitlines()[2]
    assert line.startswith("| protein | 2 | 0.900 | - | 16.000 | 0.100 | 3/10 (30.0%)")
    assert line.endswith("| 0.500 | - |")
    row["fve_heldout"] = 0.85
    assert "| 0.900 | 0.850 |" in study.markdown_table([row])
