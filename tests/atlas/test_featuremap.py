"""The feature map: UMAP layout (umap-learn), data for the page, and 20,000 points drawn in
headless Chromium with hover labels and click-through to feature pages (no request leaves
file://)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from plmsae.atlas import featuremap as fm
from plmsae.atlas import site


@pytest.mark.slow  # umap-learn compiles its numba kernels on first use
def test_layout_and_activation_map_drop_silent_features():
    rng = np.random.default_rng(0)
    # 60 features in three groups by the proteins they fire on; features 5 and 17 never fire
    acts = np.zeros((90, 60), np.float32)
    for f in range(60):
        g = f % 3
        acts[30 * g : 30 * g + 30, f] = rng.random(30) + 0.5
    acts[:, [5, 17]] = 0
    fmap = fm.build_map("activations", None, sp.csr_matrix(acts), 60)
    assert fmap is not None and fmap.source == "activations"
    assert len(fmap.features) == 58 and 5 not in fmap.features and "2 features" in fmap.note
    # features of one group sit closer to each other than to the others
    groups = fmap.features % 3
    d = np.linalg.norm(fmap.xy[:, None] - fmap.xy[None], axis=-1)
    same = d[groups[:, None] == groups[None]].mean()
    other = d[groups[:, None] != groups[None]].mean()
    assert same < 0.5 * other
    assert fm.build_map("auto", None, sp.csr_matrix(acts), 60) is None  # no SAE: no map
    assert fm.build_map("none", None, sp.csr_matrix(acts), 60) is None


@pytest.mark.parametrize("sparse", [False, True])
def test_cosine_knn_is_exact_and_puts_each_row_first(sparse):
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 40)) * (rng.random((300, 40)) < 0.3)
    x[7] = 0  # a row with no direction is still its own nearest
    idx, dist = fm.cosine_knn(sp.csr_matrix(x) if sparse else x, 10, block=64)
    assert idx.shape == dist.shape == (300, 10) and (idx[:, 0] == np.arange(300)).all()
    assert (np.diff(dist, axis=1) >= 0).all() and dist[:, 0] == pytest.approx(0, abs=1e-6)
    ref_d, _ = NearestNeighbors(n_neighbors=10, metric="cosine").fit(x).kneighbors(x)
    live = np.flatnonzero(np.abs(x).sum(1) > 0)
    # the same neighbour distances as sklearn's brute-force search (ties may swap indices)
    np.testing.assert_allclose(dist[live, 1:], ref_d[live, 1:], atol=1e-5)


def test_map_data_categories_and_pages():
    fmap = fm.FeatureMap(
        np.array([0, 1, 2]), np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]]), "decoder", 0.1
    )
    rows = [
        {
            "feature": 0,
            "label": "ATP binding",
            "concepts": [["GO:1", "ATP", "GO:MF", 1e-9]],
            "page": True,
        },
        {"feature": 1, "label": "", "plain_label": "fires on Q", "concepts": [], "page": False},
        {"feature": 2, "label": "x", "concepts": [["c", "n", "residue", None]], "page": True},
    ]
    d = fm.map_data(fmap, rows)
    assert d["x"] == [0, 2048, 4095] and d["y"] == [4095, 0, 2047]  # y up
    assert [d["categories"][c] for c in d["c"]] == ["GO:MF", "none", "residue"]
    assert d["l"] == ["ATP binding", "fires on Q", "x"] and d["p"] == [1, 0, 1]


N = 20_000


@pytest.fixture(scope="module")
def map_site(tmp_path_factory) -> Path:
    """A site with only the map: 20,000 features in 40 clusters, every third with a page."""
    out = tmp_path_factory.mktemp("map") / "site"
    (out / site.ASSETS).mkdir(parents=True)
    (out / site.FEATURES).mkdir()
    shutil.copyfile(site.STATIC / "style.css", out / site.ASSETS / "style.css")
    rng = np.random.default_rng(1)
    centres = rng.random((40, 2)) * 100
    which = rng.integers(0, 40, N)
    xy = centres[which] + rng.normal(size=(N, 2))
    cats = ["GO:BP", "GO:MF", "GO:CC", "family", "residue"]
    rows = [
        {
            "feature": f,
            "label": f"feature label {f}",
            "concepts": [["c", "n", cats[which[f] % 5], None]] if which[f] % 7 else [],
            "page": f % 3 == 0,
        }
        for f in range(N)
    ]
    for f in range(0, N, 3):
        (out / site.FEATURES / site.page_name(f)).write_text(f"<title>page {f}</title>")
    ctx = {"title": "t", "model_name": "m", "layer": 4, "level": "residue", **site.stamp()}
    info = fm.write_map(
        out, site.environment(), ctx, fm.FeatureMap(np.arange(N), xy, "decoder", 1.0), rows
    )
    assert info["n_points"] == N
    return out


@pytest.mark.slow
def test_twenty_thousand_points_hover_and_click(map_site):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        ctx = b.new_context(viewport={"width": 1200, "height": 1000})
        left, errors = [], []
        ctx.route(
            "**/*",
            lambda r: (
                r.continue_()
                if r.request.url.startswith("file://")
                else (left.append(r.request.url), r.abort())
            ),
        )
        pg = ctx.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto((map_site / "map.html").as_uri())
        pg.wait_for_function("window.plmsaeMap && window.plmsaeMap.drawn > 0")
        assert pg.evaluate("window.plmsaeMap.drawn") == N
        # the canvas holds coloured pixels
        coloured = pg.evaluate("""() => { const c = document.getElementById('map');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] < 240 || d[i+1] < 240 || d[i+2] < 240) n++;
            return n / (c.width * c.height); }""")
        assert coloured > 0.02
        # hover a point with a page: its label; click: its page
        f = 3 * 1234
        pos = pg.evaluate(f"() => [window.plmsaeMap.px[{f}], window.plmsaeMap.py[{f}]]")
        box = pg.locator("#map").bounding_box()
        x, y = box["x"] + pos[0], box["y"] + pos[1]
        pg.mouse.move(x, y)
        tip = pg.inner_text("#map-tip")
        assert tip.startswith("#") and "feature label" in tip
        shown = int(tip[1:].split()[0])
        assert pg.evaluate(f"window.plmsaeMap.pointAt({pos[0]}, {pos[1]})") == shown
        if shown % 3 == 0:
            pg.mouse.click(x, y)
            pg.wait_for_url(f"**/features/{shown:05d}.html")
        assert left == [] and errors == []
        b.close()
