"""The structure view in a real browser (headless Chromium, WebGL through SwiftShader, driven by
Playwright), on a feature page of an atlas and on an annotate page, with a real structure:
E. coli adenylate kinase, PDB 4AKE (docs/structures/P69441_4AKE.pdb.gz, from mdanalysistests).

Checked: the canvas is not blank (pixels read back from WebGL), residues with high activation
are drawn red and residues with none are not (each CA atom projected to the screen and the
pixels there read), and no request leaves file:// (every request routed and recorded).
Skipped when /usr/bin/chromium or playwright is missing, like tests/atlas/test_browser.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from adk import ADK, ADK_PDB
from synthetic import make_assoc_dir

from plmsae.atlas import tracks
from plmsae.atlas.model import load_atlas
from plmsae.atlas.report import report

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
# WebGL without a GPU: Chromium's software renderer (SwiftShader through ANGLE)
ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def region(f: int) -> slice:
    """Where feature ``f`` fires on adenylate kinase: the LID domain (odd f) or the N-terminal
    P-loop region (even f)."""
    return slice(120, 160) if f % 2 else slice(5, 45)


def adk_track(f: int) -> np.ndarray:
    t = np.zeros(len(ADK), np.float32)
    t[region(f)] = 2.0 + f % 3
    return t


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=ARGS,
        )
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    """A page whose every request is routed: file:// goes on, anything else is refused and
    recorded in ``page.left``; console errors are recorded in ``page.errors``."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = ctx.new_page()
    pg.left, pg.errors, pg.requests = [], [], []

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            pg.left.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """An atlas of 16 'proteins' that all carry the adenylate kinase sequence, with a
    structures folder holding 4AKE under each accession."""
    base = tmp_path_factory.mktemp("structure-site")
    assoc = make_assoc_dir(base / "assoc", n_proteins=16, n_features=10, seed=3, lengths=[214] * 16)
    atlas = load_atlas(assoc)
    structures = base / "structures"
    structures.mkdir()
    for pid in atlas.proteins["id"]:
        if pid.isalnum():
            shutil.copyfile(ADK_PDB, structures / f"{pid}.pdb.gz")

    def fake_tracks(sae_path, store_path, needed, layer=None, on_protein=None, **kw):
        return {(f, pid): adk_track(f) for pid, feats in needed.items() for f in feats}

    (base / "sae").mkdir()
    (base / "store").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracks, "residue_tracks", fake_tracks)
        mp.setattr(tracks, "read_sequences", lambda fasta, ids: dict.fromkeys(ids, ADK))
        report(
            assoc, out=base / "site", sae=base / "sae", store=base / "store", structures=structures
        )
    return base / "site"


# Reads the WebGL canvas back (3Dmol's pngURI renders and returns it) and, for every CA atom,
# the pixels around its projection on the screen.
PIXELS = """async (i) => {
  const st = window.plmsaeStructures[i], v = st.viewer, view = st.data.views[st.shown];
  const img = new Image();
  img.src = v.pngURI();
  await img.decode();
  const c = document.createElement('canvas');
  c.width = img.width; c.height = img.height;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  let drawn = 0, red = 0;
  for (let k = 0; k < px.length; k += 4) {
    const r = px[k], gg = px[k + 1], b = px[k + 2];
    if (r < 235 || gg < 235 || b < 235) drawn++;
    if (r > 150 && gg < 110 && b < 110) red++;
  }
  const box = v.getCanvas().getBoundingClientRect(), sx = c.width / box.width;
  const atoms = v.getModel().selectedAtoms({atom: 'CA'});
  const samples = atoms.map(a => {
    const s = v.modelToScreen({x: a.x, y: a.y, z: a.z});
    // modelToScreen answers in page coordinates
    const cx = Math.round((s.x - box.left - window.scrollX) * sx);
    const cy = Math.round((s.y - box.top - window.scrollY) * sx);
    let best = 0, n = 0;
    for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) {
      const x = cx + dx, y = cy + dy;
      if (x < 0 || y < 0 || x >= c.width || y >= c.height) continue;
      const k = 4 * (y * c.width + x);
      best += px[k] - (px[k + 1] + px[k + 2]) / 2; n++;
    }
    return {resi: a.resi, value: view.values[a.resi - 1], redness: n ? best / n : null};
  });
  return {width: c.width, height: c.height, drawn: drawn, red: red, samples: samples,
          shown: st.shown, key: view.key};
}"""


def check_drawn(page, i: int = 0) -> dict:
    page.wait_for_function(
        "(i) => window.plmsaeStructures && window.plmsaeStructures.length > i", arg=i
    )
    got = page.evaluate(PIXELS, i)
    n = got["width"] * got["height"]
    assert got["width"] > 300 and got["height"] > 300
    assert got["drawn"] > 0.05 * n, f"canvas nearly blank: {got['drawn']} of {n} pixels drawn"
    assert got["red"] > 0.002 * n, "no residue drawn in the high-activation colour"
    hot = [s["redness"] for s in got["samples"] if s["value"] and s["value"] > 0]
    cold = [s["redness"] for s in got["samples"] if s["value"] == 0]
    assert len(hot) >= 30 and len(cold) >= 100
    # colours follow the activation: red where the feature fires, pale grey where it is 0
    assert np.median(hot) > 60 and np.median(cold) < 20, (np.median(hot), np.median(cold))
    return got


def paged(site: Path, odd: bool) -> int:
    """A feature with a page, odd or even."""
    return next(
        int(p.stem) for p in sorted((site / "features").iterdir()) if int(p.stem) % 2 == odd
    )


def no_request_left(page) -> None:
    assert page.left == [], page.left
    assert all(u.startswith("file://") for u in page.requests), page.requests
    assert page.errors == [], page.errors


def test_feature_page_draws_the_structure(site, page):
    from plmsae.atlas.site import page_name

    f = paged(site, odd=True)  # fires on the LID domain
    page.goto((site / "features" / page_name(f)).as_uri())
    got = check_drawn(page)
    hot = {s["resi"] for s in got["samples"] if s["value"]}
    note = page.inner_text(".structure-note")
    assert ".pdb.gz (file)" in note and "sequence residues placed" in note
    assert len(hot) == 40
    # switching to another top protein redraws (one viewer, buttons per protein)
    buttons = page.locator(".structure-pick button")
    if buttons.count() > 1:
        buttons.nth(1).click()
        assert page.evaluate("window.plmsaeStructures[0].shown") == 1
        check_drawn(page)
    no_request_left(page)
    assert (site / "structures").is_dir() and (site / "assets" / "3Dmol-min.js").is_file()
    html = (site / "features" / page_name(f)).read_text()
    assert "ATOM  " not in html  # the structure is referenced, not inlined


def test_even_feature_lights_the_other_end(site, page):
    from plmsae.atlas.site import page_name

    page.goto((site / "features" / page_name(paged(site, odd=False))).as_uri())
    got = check_drawn(page)
    hot = sorted(s["resi"] for s in got["samples"] if s["value"])
    lid = sorted(s["resi"] for s in got["samples"] if s["value"] is not None)
    assert hot and max(hot) < 60 and len(lid) > 200
    no_request_left(page)


def test_annotate_page_draws_the_structure(tmp_path, page, monkeypatch):
    from plmsae.atlas.annotate import AnnotateConfig, AnnotateResult, Annotator
    from plmsae.data.fasta import Protein

    html = tmp_path / "my page.html"
    a = Annotator(
        AnnotateConfig(sequence_or_fasta="MK", sae=Path("unused"), html=html, structure=ADK_PDB)
    )
    a.labels = {f: {"density": 0.1, "kind": "specific", "plain_label": ""} for f in range(4)}
    a.assoc_rows, a.max_act, a.local_chemistry = {}, np.full(4, 3.0, np.float32), False
    z_res = np.stack([adk_track(f) * (f + 1) / 4 for f in range(4)], axis=1)
    monkeypatch.setattr(a, "encode", lambda residues: (z_res.max(0), z_res))
    protein = a.annotate_protein(Protein("P69441", ADK, "KAD_ECOLI Adenylate kinase"), None)
    settings = {"model": "ESM-2 8M", "layer": 6, "level": "residue", "d_sae": 4}
    settings.update(pooling="max", frac=0.5, assoc=None, all=False, dense_min=0.5)
    a.write(AnnotateResult([protein], settings))
    page.goto(html.as_uri())
    got = check_drawn(page)
    assert got["key"] == "P69441"
    # one view per listed feature; the buttons switch the colouring
    buttons = page.locator(".structure-pick button")
    assert buttons.count() == 4
    for k in range(4):
        buttons.nth(k).click()
        got = check_drawn(page)
        f = int(page.locator(".structure-pick button").nth(k).inner_text().split()[0].lstrip("#"))
        hot = [s["resi"] for s in got["samples"] if s["value"]]
        assert (min(hot) > 100) == bool(f % 2)
    assert (tmp_path / "my page_files" / "structures" / "P69441.js").is_file()
    assert "structures" in settings and settings["structures"]["n_structures"] == 1
    no_request_left(page)
