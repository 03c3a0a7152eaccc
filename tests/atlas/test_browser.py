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
                n = lengths[pid]
                t = np.zeros(n, np.float16)
                t[10:14] = 1.0 + f % 7
                t[expected_peak(f, n)] = 9.0  # anywhere, the last residue included
                out[(f, pid)] = t
        return out

    (base / "sae").mkdir()
    (base / "store").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracks, "residue_tracks", fake_tracks)
        mp.setattr(tracks, "read_sequences", lambda fasta, ids: {i: seqs[i] for i in ids})
        report(assoc, out=base / "site", sae=base / "sae", store=base / "store")
    return base / "site"


def expected_peak(f: int, n: int) -> int:
    """Where the synthetic track of feature ``f`` on a protein of ``n`` residues peaks."""
    return (37 * f) % n if f % 3 else n - 1


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
    # default order: by evidence (associated and described first)
    by_evidence = sorted(rows, key=lambda r: r["evidence"])
    assert features_shown(page) == [r["feature"] for r in by_evidence[:50]]
    assert page.get_attribute("th[data-key=evidence]", "aria-sort") == "ascending"
    first = page.locator("#rows tr").first
    assert "described" in first.inner_text() and first.locator("td.desc .more").inner_text()
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

    # search filters (words are ANDed, case-insensitive, over label, description, concepts and
    # top proteins); the table keeps its sort (here: by feature)
    def hay(r):
        concepts = [str(x) for c in r["concepts"] for x in c[:2]]
        return " ".join(
            [f"#{r['feature']}", r["label"], r["description"], *concepts, *r["proteins"]]
        ).lower()

    search(page, "Feature LABEL 11")
    want = [r["feature"] for r in rows if all(w in hay(r) for w in ("feature", "label", "11"))]
    assert features_shown(page) == want and {11, *range(110, 120)} <= set(want)
    assert page.inner_text("#count") == f"{len(want)} of {N_FEATURES} features"
    search(page, "atp binding")
    assert 2 in features_shown(page)
    search(page, "kinase 4")  # top proteins' names are searched too ("Kinase </script>...")
    want = [r["feature"] for r in rows if all(w in hay(r) for w in ("kinase", "4"))]
    by_protein = [r for r in rows if any("Kinase" in p for p in r["proteins"])]
    assert features_shown(page) == want and by_protein
    assert {r["feature"] for r in by_protein if "4" in hay(r)} <= set(want)
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
    overviews, details = page.locator("svg.overview"), page.locator("svg.detail")
    assert overviews.count() >= 3 and details.count() == overviews.count()
    box = overviews.first.bounding_box()
    assert box["width"] > 600 and box["height"] > 40
    bars = overviews.first.locator("path[fill]")
    assert bars.first.bounding_box()["height"] > 5  # the activation bars are drawn
    letters = page.locator("svg.detail text.seq").first
    assert re.fullmatch(r"[A-Z]+", letters.text_content())
    # the detail view's letters sit one per cell, the peak letter highlighted
    pk = letters.locator("tspan.pk").bounding_box()
    cell = page.locator("svg.detail rect.peak-cell").first.bounding_box()
    assert cell["x"] <= pk["x"] and pk["x"] + pk["width"] <= cell["x"] + cell["width"] + 1
    assert page.locator("svg.logo").count() == 1 and page.locator("svg.logo text.logo-aa").count()
    assert page.locator("svg.plot").count() == 2  # the logo and the histogram
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


PEAK_IN_VIEW = """() => [...document.querySelectorAll('svg.overview')].map(svg => {
    const box = svg.getBoundingClientRect(), peak = svg.querySelector('g.peak');
    const mark = peak ? peak.querySelector('path').getBoundingClientRect() : null;
    let scrolls = false;
    for (let e = svg.parentElement; e; e = e.parentElement)
        if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible') scrolls = true;
    return {residue: peak ? +peak.dataset.residue : null, length: +svg.dataset.length,
            left: box.left, right: box.right, mark: mark ? (mark.left + mark.right) / 2 : null,
            viewport: document.documentElement.clientWidth, scrolls: scrolls};
})"""


@pytest.mark.parametrize("width", [1280, 700])
def test_peak_is_in_the_visible_overview_on_every_feature_page(site, page, width):
    """For every top protein on every feature page: the overview fits the window (nothing
    scrolls sideways) and the marked peak is the track's peak, inside the drawn overview."""
    page.set_viewport_size({"width": width, "height": 900})
    n_checked = 0
    for path in sorted((site / "features").iterdir()):
        f = int(path.stem)
        page.goto(path.as_uri())
        views = page.evaluate(PEAK_IN_VIEW)
        assert views, path
        for v in views:
            assert v["residue"] == expected_peak(f, v["length"]) + 1, (path, v)
            assert v["left"] >= 0 and v["right"] <= v["viewport"] and not v["scrolls"], (path, v)
            assert v["left"] <= v["mark"] <= v["right"], (path, v)
            # where it should be: residue r's centre at (r - 0.5) / length of the width
            frac = (v["mark"] - v["left"]) / (v["right"] - v["left"])
            assert frac == pytest.approx((v["residue"] - 0.5) / v["length"], abs=0.01), (path, v)
            n_checked += 1
    assert n_checked >= 8 * (N_FEATURES - 1) // 2
    clean(page)
