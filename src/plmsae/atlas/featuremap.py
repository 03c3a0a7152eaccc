"""The feature map of an atlas: a 2-D UMAP (``umap-learn``) of the features, one point each,
coloured by the category of the feature's top concept; hover for the label, click for the page.

Two spaces can be mapped (``report --feature-map``): ``decoder``, the SAE's unit decoder
directions (features that write the same direction sit together), or ``activations``, each
feature's activation profile over the atlas proteins (features that fire on the same proteins sit
together; features that never fire are left out). ``auto`` maps the decoder when the SAE
checkpoint is found, else nothing.

Written as ``SITE/map.html`` with the points in ``assets/map-data.js`` (a JS variable: pages
opened from ``file://`` may not fetch JSON) and drawn by ``assets/map.js`` on a canvas, so
20,000 points stay quick; no library, no request.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAP_PAGE = "map.html"
MAP_DATA = "map-data.js"
MAP_SCRIPT = "map.js"
SOURCES = ("auto", "decoder", "activations", "none")
#: colours of the top concept's category (Tableau 10), the last for features with none
CATEGORY_COLOURS = {
    "GO:BP": "#4e79a7",
    "GO:MF": "#f28e2b",
    "GO:CC": "#59a14f",
    "GO": "#76b7b2",
    "family": "#e15759",
    "location": "#b07aa1",
    "residue": "#edc948",
}
NO_CONCEPT = "#c7c7c7"
#: coordinates are stored as integers 0..GRID
GRID = 4095


@dataclass
class FeatureMap:
    """Map coordinates (``xy [n, 2]``) of ``features`` in the space ``source``; ``seconds``:
    time to compute the layout."""

    features: np.ndarray
    xy: np.ndarray
    source: str
    seconds: float
    note: str = ""


def layout(x: Any, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """2-D UMAP (cosine metric) of the rows of ``x`` (dense or scipy sparse); the first two
    principal components when there are too few rows for UMAP."""
    n = x.shape[0]
    if n < max(n_neighbors + 2, 10):
        dense = x.toarray() if hasattr(x, "toarray") else np.asarray(x, dtype=np.float64)
        centred = dense - dense.mean(0)
        if n < 2:
            return np.zeros((n, 2))
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        out = u[:, :2] * s[:2]
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        low_memory=True,
        # exact neighbours by matrix products: umap's own search (pynndescent) spends over a
        # minute compiling with numba in every new process, the exact one about a second here
        precomputed_knn=cosine_knn(x, n_neighbors),
    )
    with warnings.catch_warnings():
        # a fixed seed makes umap run on one thread, and it says so on every call
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        # the map is drawn once: it never transforms new points, which needs umap's own index
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def cosine_knn(x: Any, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest rows of ``x`` ([n, d], dense or scipy sparse) by cosine distance:
    (indices int64 [n, k], distances float32 [n, k]), nearest first, each row itself included
    (as umap's own search gives). Memory: one ``[block, n]`` slab of similarities."""
    if hasattr(x, "toarray"):
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
        unit = x.multiply(1.0 / np.maximum(norms, 1e-12)[:, None]).tocsr().astype(np.float32)
    else:
        dense = np.asarray(x, dtype=np.float32)
        unit = dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
    n = unit.shape[0]
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for a in range(0, n, block):
        sim = unit[a : a + block] @ unit.T
        sim = np.asarray(sim.toarray() if hasattr(sim, "toarray") else sim, dtype=np.float32)
        rows = np.arange(len(sim))
        sim[rows, a + rows] = 1.0  # each row nearest to itself, also for all-zero rows
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-near, axis=1, kind="stable")
        idx[a : a + block] = np.take_along_axis(part, order, axis=1)
        dist[a : a + block] = np.clip(1.0 - np.take_along_axis(near, order, axis=1), 0.0, 2.0)
    return idx, dist


def build_map(
    source: str, sae: Path | None, activations: Any, n_features: int, seed: int = 0
) -> FeatureMap | None:
    """The map of ``n_features`` features from the SAE's decoder (``sae``: a checkpoint
    directory) or from ``activations`` (proteins x features, scipy sparse); None for ``none``,
    or for ``auto`` without a readable SAE."""
    from plmsae.sae.checkpoint import is_checkpoint

    if source == "none":
        return None
    has_sae = sae is not None and is_checkpoint(sae)
    if source == "auto":
        if not has_sae:
            return None
        source = "decoder"
    t0 = time.perf_counter()
    if source == "decoder":
        if not has_sae:
            from plmsae._util import InputError

            raise InputError(
                "--feature-map decoder needs the SAE checkpoint, and none was found.",
                path=sae,
                fix="pass --sae, or --feature-map activations.",
            )
        from plmsae.sae.match import decoder_directions

        x = decoder_directions(sae)  # type: ignore[arg-type]
        features = np.arange(min(len(x), n_features))
        x, note = x[features], ""
    else:
        cols = activations.tocsc()[:, :n_features].T.tocsr()
        alive = np.flatnonzero(np.diff(cols.indptr) > 0)
        features, x = alive, cols[alive]
        dropped = n_features - len(alive)
        note = f"{dropped:,} features that never fire are not drawn." if dropped else ""
    xy = layout(x, seed=seed)
    return FeatureMap(features, xy, source, time.perf_counter() - t0, note)


def map_data(fmap: FeatureMap, rows: list[dict]) -> dict:
    """The page's data: integer coordinates, feature, label, category index, page flag."""
    by_feature = {r["feature"]: r for r in rows}
    xy = fmap.xy
    lo, hi = xy.min(0) if len(xy) else np.zeros(2), xy.max(0) if len(xy) else np.ones(2)
    scaled = np.rint((xy - lo) / np.where(hi > lo, hi - lo, 1.0) * GRID).astype(int)
    categories = [*CATEGORY_COLOURS, "none"]
    out: dict[str, list] = {"x": [], "y": [], "f": [], "l": [], "c": [], "p": []}
    for (x, y), f in zip(scaled.tolist(), fmap.features.tolist()):
        r = by_feature.get(int(f), {})
        concepts = r.get("concepts") or []
        cat = concepts[0][2] if concepts else "none"
        out["x"].append(x)
        out["y"].append(GRID - y)
        out["f"].append(int(f))
        out["l"].append(str(r.get("label") or r.get("plain_label") or ""))
        out["c"].append(categories.index(cat) if cat in categories else len(categories) - 1)
        out["p"].append(1 if r.get("page") else 0)
    return {
        **out,
        "categories": categories,
        "colours": [*CATEGORY_COLOURS.values(), NO_CONCEPT],
        "grid": GRID,
        "source": fmap.source,
    }


def write_map(
    site_dir: Path, env: Any, ctx: dict, fmap: FeatureMap, rows: list[dict]
) -> dict[str, Any]:
    """``map.html``, ``assets/map-data.js`` and ``assets/map.js`` in ``site_dir``; returns what
    site.json records (points, source, layout and write seconds)."""
    from plmsae.analysis.assocdir import CATEGORY_NAMES
    from plmsae.atlas.site import ASSETS, script_json

    t0 = time.perf_counter()
    data = map_data(fmap, rows)
    (site_dir / ASSETS / MAP_DATA).write_text(
        "// plmsae feature map data (generated)\nwindow.PLMSAE_MAP = " + script_json(data) + ";\n",
        encoding="utf-8",
    )
    shutil.copyfile(HERE / "static" / MAP_SCRIPT, site_dir / ASSETS / MAP_SCRIPT)
    counts = np.bincount(np.asarray(data["c"], dtype=int), minlength=len(data["categories"]))
    legend = [
        (CATEGORY_NAMES.get(c, "no concept" if c == "none" else c), colour, int(n))
        for c, colour, n in zip(data["categories"], data["colours"], counts)
        if n
    ]
    html = env.get_template("map.html").render(
        **ctx,
        root="",
        fmap=fmap,
        n_points=len(data["f"]),
        legend=legend,
        seconds=round(fmap.seconds, 1),
    )
    (site_dir / MAP_PAGE).write_text(html, encoding="utf-8")
    return {
        "n_points": len(data["f"]),
        "source": fmap.source,
        "layout_seconds": round(fmap.seconds, 3),
        "write_seconds": round(time.perf_counter() - t0, 3),
    }
