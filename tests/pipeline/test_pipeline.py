"""`plmsae run` end to end on a tiny random ESM-2 and 40 bundled proteins: every stage runs,
a re-run reuses every stage, a changed setting recomputes that stage and the ones after it only,
and `plmsae compare` reads the result."""

from __future__ import annotations

import gzip
import json

import pytest

from plmsae.pipeline.compare import compare
from plmsae.pipeline.run import PipelineConfig, run_pipeline


@pytest.fixture()
def small_data(tmp_path):
    from plmsae.data.demo import demo_paths

    paths = demo_paths()
    records = gzip.open(paths.fasta, "rt").read().split(">")[1:41]
    fasta = tmp_path / "small.fasta"
    fasta.write_text("".join(">" + r for r in records))
    return fasta, paths.annotations, paths.ontology


def _config(tmp_path, small_data, tiny_esm_dir, latents=64):
    fasta, ann, obo = small_data
    return PipelineConfig.from_dict(
        {
            "out": str(tmp_path / "run"),
            "data": {"fasta": str(fasta), "annotations": str(ann), "ontology": str(obo)},
            "model": {"name": str(tiny_esm_dir), "layers": [2]},
            "train": {"latents": latents, "k": 4, "batch_size": 256, "tokens": 2048},
            "associate": {"min_concept": 3, "min_both": 2, "split_method": "random"},
            "explain": {"llm": "offline", "n_features": 5},
            "report": {"max_features": 5},
        }
    )


def _mtimes(run):
    return {
        p.relative_to(run).as_posix(): p.stat().st_mtime_ns
        for p in [
            run / "store" / "meta.json",
            *run.glob("L*/sae/sae.safetensors"),
            *run.glob("L*/sae/evaluation.json"),
            *run.glob("L*/assoc/summary.json"),
            *run.glob("L*/site/index.html"),
        ]
    }


def test_run_reuses_and_recomputes_only_what_changed(tmp_path, small_data, tiny_esm_dir):
    cfg = _config(tmp_path, small_data, tiny_esm_dir)
    result = run_pipeline(cfg)
    run = cfg.out
    for layer in (2,):
        assert (run / f"L{layer}" / "sae" / "cfg.json").exists()
        ev = json.loads((run / f"L{layer}" / "sae" / "evaluation.json").read_text())
        assert 0 < ev["l0"] <= 4 + 1e-6
        summary = json.loads((run / f"L{layer}" / "assoc" / "summary.json").read_text())
        assert summary["sae"]["n_features"] == 64
        assert (run / f"L{layer}" / "assoc" / "explanations.parquet").exists()
        assert result.layers[layer].index.exists()
    before = _mtimes(run)
    assert len(before) == 1 + 4

    run_pipeline(_config(tmp_path, small_data, tiny_esm_dir))
    assert _mtimes(run) == before  # nothing recomputed

    run_pipeline(_config(tmp_path, small_data, tiny_esm_dir, latents=32))
    after = _mtimes(run)
    assert after["store/meta.json"] == before["store/meta.json"]  # embedding reused
    for key in before:
        if key.startswith("L"):
            assert after[key] != before[key], key  # SAE and everything after it recomputed
    summary = json.loads((run / "L2" / "assoc" / "summary.json").read_text())
    assert summary["sae"]["n_features"] == 32

    rows = compare([run], html=tmp_path / "compare.html").rows
    assert [r["layer"] for r in rows] == [2]
    assert all(r["sources"]["sae"]["n_features"] == 32 for r in rows)
    explain = json.loads((run / "L2" / "assoc" / "summary.json").read_text())["explain"]
    sim = (explain.get("sources") or {}).get("sae", {}).get("simulation_r") or {}
    assert rows[0]["explain"]["sae"] == sim.get("median")
    summary = json.loads((run / "L2" / "assoc" / "summary.json").read_text())
    for s in ("sae", "neuron", "random"):
        assert (
            rows[0]["sources"][s]["n_concepts"] == summary[s]["concepts"]["n_concepts_associated"]
        )
    assert rows[0]["sources"]["sae"]["n_concepts_matched"] == (
        summary["sae"]["concepts"].get("n_concepts_associated_matched")
    )
    html = (tmp_path / "compare.html").read_text()
    assert "<svg" in html and "<table>" in html and "concepts SAE (matched)" in html
