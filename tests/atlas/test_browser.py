"""The atlas in a real browser: headless Chromium (apt `chromium`) driven by Playwright.

The report is opened from disk (file://). Checked: search, sort and pagination of the feature
table; a feature page draws its SVG track; no console errors; no request other than file://;
markup planted in protein IDs, names, labels and descriptions (``<img src=x onerror=alert(1)>``,
``</script>``) shows as text and runs nothing. Skipped, with the reason shown, when
/usr/bin/chromium is absent (CI installs it; never `playwright install`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import EVIL, make_assoc_dir, random_sequence

from plmsae.atlas import tracks
from plmsae.atlas.model import load_atlas
from plmsae.atlas.report import report

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
N_FEATURES = 120


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(
            f"{CHROMIUM} is not installed (apt-get install -y chromium); browser tests need it"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=ARGS,
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A 120-feature report with (synthetic) per-residue tracks."""
    base = tmp_path_factory.mktemp("browser")
    assoc = make_assoc_dir(base / "assoc", n_proteins=50, n_features=N_FEATURES, seed=1)
    atlas = load_atlas(assoc)
    lengths = dict(zip(atlas.proteins["id"], atlas.proteins["length"]))
    seqs = {pid: random_sequence(int(n), i) for i, (pid, n) in enumerate(lengths.items())}

    def fake_tracks(sae_path, store_path, needed, layer=None, on_protein=None, **kw):
        out = {}
        for pid, feats in needed.items():
            for f in feats:
                t = np.zeros(lengths[pid], np.float16)
                t[10:14] = 1.0 + f % 7
                out[(f, pid)] = t
        return out

    (base / "sae").mkdir()
    (base / "store").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracks, "residue_tracks", fake_tracks)
        mp.setattr(tracks, "read_sequences", lambda fasta, ids: {i: seqs[i] for i in ids})
        report(assoc, out=base / "site", sae=base / "sae", store=base / "store")
    return base / "site"


@pytest.fixture()
def page(browser):
    """A fresh page that records console errors, page errors, dialogs and every request."""
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.events = {"console": [], "dialogs": [], "requests": []}
    pg.on(
        "console",
        lambda m: (
            pg.events["console"].append(f"{m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    pg.on("pageerror", lambda e: pg.events["console"].append(f"pageerror: {e}"))
    pg.on("dialog", lambda d: (pg.events["dialogs"].append(d.message), d.dismiss()))
    pg.on("request", lambda r: pg.events["requests"].append(r.url))
    yield pg
    ctx.close()


def rows_data(site: Path) -> list[dict]:
    text = (site / "assets" / "atlas-data.js").read_text()
    return json.loads(re.search(r"window\.PLMSAE_ATLAS = (.*);\s*$", text, flags=re.S).group(1))[
        "rows"
    ]


def clean(page) -> None:
    assert page.events["console"] == [], page.events["console"]
    assert page.events["dialogs"] == [], "a planted alert() ran: " + repr(page.events["dialogs"])
    assert all(u.startswith("file://") for u in page.events["requests"]), page.events["requests"]
    assert page.evaluate("document.querySelectorAll('img').length") == 0


def features_shown(page) -> list[int]:
    return [
        int(t.strip().lstrip("#"))
        for t in page.locator("#rows tr td:first-child").all_inner_texts()
    ]


def search(page, text: str) -> None:
    page.fill("#q", text)
    # the table applies a search after a short debounce and then records it in the URL hash
    page.wait_for_function(
        "(t) => (new URLSearchParams(location.hash.slice(1)).get('q') || '') === t", arg=text
    )


def test_table_search_sort_paginate(site, page):
    rows = rows_data(site)
    page.goto((site / "index.html").as_uri())
    page.wait_for_selector("#rows tr")
    assert page.inner_text("#count") == f"{N_FEATURES} of {N_FEATURES} features"
    assert page.evaluate("window.scrollY") == 0  # opening the atlas does not jump to the table
    # default order: best q-value first, features without any tested concept last
    by_q = sorted(rows, key=lambda r: (r["best_q"] is None, r["best_q"] or 0, r["feature"]))
    assert features_shown(page) == [r["feature"] for r in by_q[:50]]
    page.click("th[data-key=feature]")
    assert features_shown(page) == list(range(50))
    assert "page 1 of 3" in page.inner_text("#page-info")

    # pagination
    page.click("#next")
    assert features_shown(page) == list(range(50, 100)) and "page 2 of 3" in page.inner_text(
        "#page-info"
    )
    page.click("#next")
    assert features_shown(page) == list(range(100, 120)) and page.is_disabled("#next")
    page.click("#prev")
    assert features_shown(page)[0] == 50

    # search filters (words are ANDed, case-insensitive, over label, description and concepts)
    search(page, "Feature LABEL 11")
    want = [r["feature"] for r in rows if "feature label 11" in r["label"].lower()]
    assert features_shown(page) == want and len(want) == 11  # 11, 110..119
    assert page.inner_text("#count") == f"11 of {N_FEATURES} features"
    search(page, "atp binding")
    assert 2 in features_shown(page)
    search(page, "no such thing at all")
    assert "No feature matches" in page.inner_text("#rows")
    search(page, "")

    # sorting by density: first click descending, second ascending
    page.click("th[data-key=density]")
    dens = [r["density"] for r in sorted(rows, key=lambda r: (-r["density"], r["feature"]))][:50]
    assert (
        features_shown(page)
        == [r["feature"] for r in sorted(rows, key=lambda r: (-r["density"], r["feature"]))][:50]
    )
    assert page.get_attribute("th[data-key=density]", "aria-sort") == "descending"
    page.click("th[data-key=density]")
    shown = features_shown(page)
    by_f = {r["feature"]: r["density"] for r in rows}
    assert [by_f[f] for f in shown] == sorted(by_f[f] for f in shown) and dens[0] >= by_f[shown[0]]

    # associated only
    page.check("#only-assoc")
    n_assoc = sum(1 for r in rows if r["n_associated"] > 0)
    assert page.inner_text("#count") == f"{n_assoc} of {N_FEATURES} features"
    clean(page)


def test_state_survives_back_navigation(site, page):
    page.goto((site / "index.html").as_uri())
    page.wait_for_selector("#rows tr")
    search(page, "ATP")
    page.click("#rows a >> nth=0")
    page.wait_for_selector("svg.track")
    page.go_back()
    page.wait_for_selector("#rows tr")
    assert page.input_value("#q") == "ATP" and 2 in features_shown(page)
    clean(page)


def test_planted_markup_is_text(site, page):
    page.goto((site / "index.html").as_uri())
    page.wait_for_selector("#rows tr")
    search(page, "evil")
    assert 1 in features_shown(page)  # (the planted concept name matches too)
    assert EVIL in page.inner_text("#rows")  # shown literally
    page.goto((site / "features" / "00001.html").as_uri())
    body = page.inner_text("body")
    assert EVIL in body and "</script>" in body  # protein ID, protein name and description as text
    assert page.evaluate("document.scripts.length") == 0  # feature pages need no script at all
    page.wait_for_timeout(300)  # give a stray onerror handler the chance to fire
    clean(page)


def test_feature_page_draws_track(site, page):
    page.goto((site / "features" / "00002.html").as_uri())
    tracks = page.locator("svg.track")
    assert tracks.count() >= 3
    box = tracks.first.bounding_box()
    assert box["width"] > 100 and box["height"] > 40
    bars = tracks.first.locator("path[transform]")
    assert bars.first.bounding_box()["height"] > 5  # the activation bars are drawn
    assert re.fullmatch(r"[A-Z]+", page.locator("svg.track text.seq").first.text_content())
    assert page.locator("svg.plot").count() == 1  # histogram
    assert page.locator('a[href^="https://www.ebi.ac.uk/QuickGO/term/GO:0005524"]').count() == 1
    clean(page)


def test_works_without_javascript(site, browser):
    ctx = browser.new_context(java_script_enabled=False)
    pg = ctx.new_page()
    pg.goto((site / "index.html").as_uri())
    assert "JavaScript is off" in pg.inner_text("body")
    assert pg.locator('a[href^="features/"]').count() > 0
    assert not pg.locator("#feature-table").is_visible()
    pg.goto((site / "features" / "00002.html").as_uri())
    assert pg.locator("svg.track").first.is_visible()
    ctx.close()
