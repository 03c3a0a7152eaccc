"""scripts/validation_study.py: the concept-centric coverage counts and the tables it writes."""

import importlib.util
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


def _assoc(rows):
    return pd.DataFrame(rows, columns=["source", "feature", "concept", "q_value", "precision",
                                       "f1"])


def test_term_coverage_counts_distinct_significant_terms(study, tmp_path):
    rows = []
    # 4 SAE features: two hit GO:1 (same term twice), one GO:2, one only non-significant
    rows += [("sae", 0, "GO:1", 0.01, 0.9, 0.8), ("sae", 1, "GO:1", 0.001, 0.6, 0.4),
             ("sae", 2, "GO:2", 0.04, 0.5, 0.2), ("sae", 3, "GO:3", 0.2, 0.9, 0.6)]
    # 2 neurons: one significant but imprecise (not associated), one associated with GO:2
    rows += [("neuron", 0, "GO:1", 0.01, 0.3, 0.3), ("neuron", 1, "GO:2", 0.01, 0.7, 0.55)]
    rows += [("random", 0, "GO:1", 0.5, 0.1, 0.1), ("random", 1, "GO:2", 0.5, 0.1, 0.1)]
    path = tmp_path / "associations.parquet"
    _assoc(rows).to_parquet(path)

    cov = study.term_coverage(path, draws=50)
    assert cov["sae"]["terms_associated"] == 2          # GO:1, GO:2 (GO:3 has q 0.2)
    assert cov["sae"]["terms_f1_05"] == 2               # GO:1 (0.8) and GO:3 (0.6)
    assert cov["neuron"]["terms_associated"] == 1
    assert cov["neuron"]["terms_f1_05"] == 1
    assert cov["random"]["terms_associated"] == 0
    # matched to the baselines' 2 features: draws of 2 of the 4 SAE features give 0, 1 or 2 terms
    assert cov["sae"]["matched_n_features"] == 2
    assert 0 < cov["sae"]["terms_associated_matched"] <= 2

    table = study.coverage_table([{"level": "residue", "layer": 4, "coverage": cov}])
    assert "| residue | 4 | 2 |" in table and table.count("\n") == 3


def test_markdown_table_shows_missing_heldout_as_dash(study):
    src = {"n_features": 10, "n_associated": 3, "fraction": 0.3,
           "by_category": {"GO:BP": {"n": 2, "fraction": 0.2}}}
    row = {"level": "protein", "layer": 2, "fve": 0.9, "l0": 16.0, "dead_fraction": 0.1,
           "sources": {"sae": src, "neuron": src, "random": src},
           "explain": {"sae": 0.5, "neuron": None}}
    line = study.markdown_table([row]).splitlines()[2]
    assert line.startswith("| protein | 2 | 0.900 | - | 16.000 | 0.100 | 3/10 (30.0%)")
    assert line.endswith("| 0.500 | - |")
    row["fve_heldout"] = 0.85
    assert "| 0.900 | 0.850 |" in study.markdown_table([row])
