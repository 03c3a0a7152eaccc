"""Writing the atlas site: templates, links, page contexts and the atomic swap into place.

Everything is plain files: no CDN, no web font, no request leaves the page, and every value from
the data is escaped (jinja2 autoescape; JSON for scripts with ``<``, ``>`` and ``&`` escaped).
A site is built in a temporary directory next to ``out`` and renamed into place at the end
(:func:`building`), so an interrupted run leaves the previous site untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plmsae._util import VERSION, InputError
from plmsae.analysis.assocdir import CATEGORY_NAMES, SOURCE_NAMES
from plmsae.atlas.model import KINDS, Atlas, headline, headline_cell
from plmsae.atlas.tracks import Tracks, concept_intervals

if TYPE_CHECKING:
    import jinja2

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: files of a site: the marker that says "written by plmsae report", pages, assets
SITE_MARKER = "site.json"
INDEX = "index.html"
FEATURES = "features"
ASSETS = "assets"
TABLE_DATA = "atlas-data.js"
STATIC_FILES = ("style.css", "table.js")

_GO = re.compile(r"^GO:\d{7}$")
_PFAM = re.compile(r"^PF\d{5}$")
_INTERPRO = re.compile(r"^IPR\d{6}$")
_UNIPROT_ACC = re.compile(
    r"^(?:[OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9](?:[A-Z][A-Z0-9]{2}[0-9]){1,2})(?:-\d+)?$"
)

# --------------------------------------------------------------------------------------------
# Links, formatting and the jinja environment
# --------------------------------------------------------------------------------------------


def concept_url(concept: str) -> str | None:
    """A plain link to the concept's public page (QuickGO, InterPro), or None."""
    if _GO.match(concept):
        return f"https://www.ebi.ac.uk/QuickGO/term/{concept}"
    if _PFAM.match(concept):
        return f"https://www.ebi.ac.uk/interpro/entry/pfam/{concept}/"
    if _INTERPRO.match(concept):
        return f"https://www.ebi.ac.uk/interpro/entry/InterPro/{concept}/"
    return None


def protein_url(pid: str) -> str | None:
    """UniProt entry page for a UniProt accession, None for other IDs."""
    return f"https://www.uniprot.org/uniprotkb/{pid}/entry" if _UNIPROT_ACC.match(pid) else None


def page_name(feature: int) -> str:
    """File name of a feature's page in ``SITE/features/``: ``00042.html``."""
    return f"{int(feature):05d}.html"


def pct(x: Any) -> str:
    """0.123 -> '12.3%'; tiny fractions keep two significant digits (0.00012 -> '0.012%')."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    x = 100 * float(x)
    return f"{x:.2g}%" if 0 < x < 0.1 else f"{x:.1f}%"


def environment() -> jinja2.Environment:
    """The jinja2 environment of the atlas: autoescape always on, templates from the package."""
    import jinja2

    from plmsae.atlas.plots import fmt

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["headline_cell"] = headline_cell
    env.globals.update(
        concept_url=concept_url,
        protein_url=protein_url,
        page_name=page_name,
        category_names=CATEGORY_NAMES,
        source_names=SOURCE_NAMES,
    )
    return env


def stamp() -> dict[str, str]:
    """``{version, generated}`` for the footer of every page."""
    return {"version": VERSION, "generated": time.strftime("%Y-%m-%d %H:%M", time.localtime())}


def script_json(obj: Any) -> str:
    """JSON safe to place inside a <script> element or a .js file: <, > and & are \\u-escaped, so
    data containing ``</script>`` or ``<!--`` cannot end the script."""
    text = json.dumps(
        obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=_jsonable
    )
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


# --------------------------------------------------------------------------------------------
# The site directory: check, build in a temporary directory, swap in
# --------------------------------------------------------------------------------------------


def check_out(out: Path) -> None:
    """Refuse to replace a directory that is not an earlier plmsae site (it could be anything),
    and a site path below a file."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(
            f"cannot be created: {parent} is a file.", path=out, fix="choose another --out."
        )
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / SITE_MARKER).exists())
    ):
        raise InputError(
            "exists and is not a plmsae report, so it will not be replaced.",
            path=out,
            fix="choose a new or empty directory for --out.",
        )


@contextlib.contextmanager
def building(out: Path) -> Iterator[Path]:
    """A temporary site directory next to ``out`` (with ``features/`` and the static assets),
    renamed over ``out`` when the block succeeds and removed when it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (tmp / FEATURES).mkdir()
        (tmp / ASSETS).mkdir()
        for name in STATIC_FILES:
            shutil.copyfile(STATIC / name, tmp / ASSETS / name)
        yield tmp
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_table_data(site: Path, table: dict) -> None:
    """``assets/atlas-data.js``: the feature table as a JS variable (fetch() of a local JSON
    file is refused under file://)."""
    (site / ASSETS / TABLE_DATA).write_text(
        "// plmsae feature atlas data (generated)\nwindow.PLMSAE_ATLAS = "
        + script_json(table)
        + ";\n",
        encoding="utf-8",
    )


# --------------------------------------------------------------------------------------------
# Template contexts
# --------------------------------------------------------------------------------------------

METRIC_LABELS = [
    (
        "fve",
        "fraction of variance explained",
        "share of the variance of the model's activations that the "
        "SAE reconstruction keeps (1 = perfect)",
    ),
    ("l0", "L0", "average number of features active per input"),
    ("dead_fraction", "dead features", "fraction of features never active on the evaluation data"),
    (
        "loss_recovered",
        "loss recovered",
        "how much of the model's masked-LM loss is kept when its "
        "activations are replaced by the reconstruction (1 = all)",
    ),
    ("kl", "KL divergence", "divergence of the model's output with the reconstruction spliced in"),
    ("mse", "MSE", "mean squared reconstruction error"),
    ("n_tokens", "evaluation inputs", "residues (or proteins) the metrics were computed on"),
]


def site_context(atlas: Atlas, sae_cfg: dict, title: str | None, level: str) -> dict:
    """What every page of the site shows: title, model, layer, SAE settings and metrics."""
    spec = atlas.run.get("model") or sae_cfg.get("model") or {}
    if isinstance(spec, str):
        spec = {"id": spec}
    model_name = str(
        spec.get("description") or spec.get("id") or spec.get("path") or "unknown model"
    )
    metrics = sae_cfg.get("metrics") or atlas.summary.get("sae_metrics") or {}
    version_and_time = stamp()
    return {
        "title": title or "plmsae feature atlas",
        "model_name": model_name,
        "model_spec": spec,
        "layer": atlas.run.get("layer", sae_cfg.get("layer")),
        "level": level,
        "pooling": atlas.run.get("pooling", sae_cfg.get("pooling", "")),
        "sae_cfg": sae_cfg,
        "metrics": metric_rows(metrics),
        "version": version_and_time["version"],
        "n_proteins": len(atlas.proteins),
        "q_max": atlas.q_max,
        "min_precision": atlas.min_precision,
        "residue_f1_min": atlas.residue_f1_min,
        "generated": version_and_time["generated"],
    }


def metric_rows(metrics: dict) -> list[dict]:
    """Readable rows from cfg.json ``metrics``: flat, or nested by origin (``{"train": {...},
    "evaluate": {...}}``); held-out evaluation wins over training values, which are marked."""
    if not isinstance(metrics, dict):
        return []
    nested = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    sources = [("", metrics)]
    if nested:
        evals = [v for k, v in nested.items() if k.startswith("eval")]
        sources = [("", v) for v in evals] + [
            (" (training)", v) for k, v in nested.items() if not k.startswith("eval")
        ]
    out = []
    for key, name, help_ in METRIC_LABELS:
        for origin, d in sources:
            v = d.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                out.append({"key": key, "name": name + origin, "help": help_, "value": v})
                break
    return out


def index_context(atlas: Atlas, rows: list[dict], n_pages: int, static_top: list[dict]) -> dict:
    """The index page's own context (besides :func:`site_context`): counts, the static list for
    browsers without JavaScript, the SAE vs baselines comparison, the explain summary."""
    return {
        "root": "",
        "n_features": len(rows),
        "n_pages": n_pages,
        "static_top": static_top,
        "n_associated": sum(1 for r in rows if r["n_associated"] > 0),
        "n_kinds": {k: sum(1 for r in rows if r["kind"] == k) for k in KINDS},
        "has_specificity": atlas.has_specificity,
        "headline": headline(atlas.summary),
        "comparison": comparison(atlas),
        "explain_info": explain_info(atlas),
    }


def comparison(atlas: Atlas) -> dict:
    """Rows for the SAE vs neurons vs random table and bar chart, from summary.json."""
    from plmsae.atlas.plots import summary_svg

    sources = [s for s in ("sae", "neuron", "random") if isinstance(atlas.summary.get(s), dict)]
    totals = {s: atlas.summary[s] for s in sources}
    cats: list[str] = []
    for s in sources:
        for c in totals[s].get("by_category") or {}:
            if c not in cats:
                cats.append(c)
    order = {c: i for i, c in enumerate(CATEGORY_NAMES)}
    cats.sort(key=lambda c: order.get(c, len(order)))
    table, chart = [], []
    for c in cats:
        cells = {s: _category_cell(totals[s], c) for s in sources}
        table.append({"category": c, "name": CATEGORY_NAMES.get(c, c), "cells": cells})
        chart.append((CATEGORY_NAMES.get(c, c), {s: cells[s][1] for s in sources}))
    overall = {
        s: (int(totals[s].get("n_features_associated") or 0), int(totals[s].get("n_features") or 0))
        for s in sources
    }
    svg = summary_svg(chart, sources=sources, names=SOURCE_NAMES) if chart else None
    return {"sources": sources, "rows": table, "overall": overall, "svg": svg}


def _category_cell(total: dict, category: str) -> tuple[int, float]:
    """(features associated with the category, their percentage) of one source's summary."""
    n_feat = total.get("n_features") or 0
    v = (total.get("by_category") or {}).get(category, 0)
    v = v.get("n_features_associated", v.get("n", 0)) if isinstance(v, dict) else v
    return int(v or 0), 100.0 * (v or 0) / n_feat if n_feat else 0.0


def explain_info(atlas: Atlas) -> dict | None:
    """How the features were described (counts, explainers, models), None without explain."""
    ex = atlas.summary.get("explain") if isinstance(atlas.summary, dict) else None
    if not atlas.explanations and not ex:
        return None
    vals = list(atlas.explanations.values())
    return {
        "n": len(vals),
        "n_llm": sum(1 for e in vals if e.get("is_llm")),
        "explainers": sorted({str(e.get("explainer") or "") for e in vals} - {""}),
        "models": sorted({str(e.get("model") or "") for e in vals} - {""}),
        "summary": ex if isinstance(ex, dict) else {},
    }


class FeaturePages:
    """Contexts of the feature pages of one atlas.

    tested: feature -> its association rows (best first); residue: feature -> its residue
    association rows; tracks: the per-residue tracks drawn under the top proteins;
    residue_concepts: UniProt residue features (concept -> protein -> intervals) drawn under the
    tracks; paged: the features that have a page (for links between them).
    """

    def __init__(
        self,
        atlas: Atlas,
        tracks: Tracks,
        tested: dict[int, list[dict]],
        residue: dict[int, list[dict]],
        residue_concepts: dict[str, dict[str, list]] | None = None,
        paged: set[int] | None = None,
    ):
        if atlas.activations is None:
            raise ValueError("feature pages need the atlas loaded with activations")
        self.atlas, self.acts, self.tracks = atlas, atlas.activations, tracks
        self.tested, self.residue = tested, residue
        self.residue_concepts = residue_concepts or {}
        self.paged = paged
        cols = ("id", "name", "organism", "length", "split")
        self.prot = {c: atlas.proteins[c].tolist() for c in cols}
        self.spec = {
            int(r["feature"]): r
            for r in atlas.features.drop(columns=["top_proteins"]).to_dict("records")
        }
        self.groups: dict[int, list[int]] = {}
        for f, r in self.spec.items():
            if r["group"] >= 0:
                self.groups.setdefault(int(r["group"]), []).append(f)

    def context(self, f: int, top_rows: list[int]) -> dict:
        """Context of feature ``f``'s page; ``top_rows``: row indices of its top proteins."""
        from plmsae.atlas.plots import histogram_svg

        lo, hi = self.acts.indptr[f], self.acts.indptr[f + 1]
        col_rows, col_vals = self.acts.indices[lo:hi], self.acts.data[lo:hi]
        pos = col_vals > 0
        n_active = int(pos.sum())
        hist = histogram_svg(
            col_vals[pos], len(self.prot["id"]) - n_active, label=f"activation of feature {f}"
        )
        tested = self.tested.get(f, [])
        # the concepts below q_max (at most 40), topped up with the next best to at least 10 rows
        enr = [{**r, "significant": self.atlas.is_significant(r)} for r in tested[:40]]
        enr = enr[: max(10, sum(1 for r in enr if r["q_value"] < self.atlas.q_max))]
        best = next((r for r in enr if r["significant"]), None)
        residue_rows = [
            {**r, "significant": self.atlas.is_residue_hit(r)} for r in self.residue.get(f, [])
        ]
        top, logo = self.top(f, top_rows, dict(zip(col_rows.tolist(), col_vals.tolist())))
        return {
            "feature": f,
            "ex": self.atlas.explanation(f),
            "scores": self.atlas.scores.get(f, {}),
            "n_active": n_active,
            "histogram": hist,
            "top": top,
            "logo": logo,
            "spec": self.specificity(f),
            "track_note": self.tracks.note,
            "n_explained": len(self.atlas.explanations),
            "enrichments": enr,
            "n_tested": len(tested),
            "inactive": self.inactive(f, set(col_rows[pos].tolist()), best),
            "residue_assoc": residue_rows,
        }

    def specificity(self, f: int) -> dict:
        """What kind of feature it is (features.parquet's specificity columns), with the other
        features of its redundancy group."""
        r = dict(self.spec.get(f) or {})
        if not r:
            return {"kind": "", "plain_label": "", "group_members": [], "known": False}
        members = [g for g in self.groups.get(int(r["group"]), []) if g != f]
        r["group_members"] = [
            {"feature": g, "page": self.paged is None or g in self.paged} for g in members[:30]
        ]
        r["n_group"] = len(members) + 1
        r["known"] = self.atlas.has_specificity
        return r

    def lanes(self, f: int, pid: str, seq: str | None) -> list[tuple[str, list]]:
        """The feature's best residue concepts (up to 3, by F1) where they lie on one protein."""
        out = []
        for r in self.residue.get(f, [])[:3]:
            where = concept_intervals(str(r["concept"]), pid, seq, self.residue_concepts)
            f1 = r.get("f1")
            label = str(r.get("name") or r["concept"])
            if f1 is not None and f1 == f1:
                label += f" (F1 {f1:.2f})"
            out.append((label, where))
        return out

    def top(
        self, f: int, top_rows: list[int], act_of: dict[int, float]
    ) -> tuple[list[dict], dict | None]:
        """The top proteins with their activation, views (drawn on one scale), spans and
        concept lanes; and the sequence logo of the windows around their peaks."""
        from plmsae.atlas.plots import (
            LANE_COLOURS,
            active_spans,
            detail_svg,
            detail_window,
            format_spans,
            logo_svg,
            overview_svg,
            peak_of,
            peak_windows,
        )

        shown = [self.tracks.data.get((f, self.prot["id"][i])) for i in top_rows]
        scale = max([float(np.max(t)) for t in shown if t is not None and t.size] + [0.0]) or None
        top, for_logo = [], []
        for i, t in zip(top_rows, shown):
            pid = self.prot["id"][i]
            seq = self.tracks.sequences.get(pid)
            item = {**self.protein(i), "activation": act_of.get(i, 0.0), "track": None}
            item.update(spans="", overview=None, detail=None, peak=None, lanes=[])
            if t is not None:
                vals = t.astype(np.float32)
                spans = active_spans(vals)
                peak = peak_of(vals)
                window = detail_window(len(vals), peak)
                lanes = self.lanes(f, pid, seq if seq and len(seq) == len(vals) else None)
                title = f"activation of feature {f} along {pid}"
                kw: dict[str, Any] = {"scale_max": scale, "spans": spans, "lanes": lanes}
                kw.update(title=title, window=window)
                item["spans"] = format_spans(spans, seq)
                item["overview"] = overview_svg(vals, seq, **kw)
                item["detail"] = detail_svg(vals, seq, **kw)
                item["track"] = True
                item["peak"] = None if peak is None else peak + 1
                item["lanes"] = [
                    (label, LANE_COLOURS[k % len(LANE_COLOURS)], len(iv))
                    for k, (label, iv) in enumerate(lanes)
                ]
                if seq and len(seq) == len(vals):
                    for_logo.append((vals, seq))
            top.append(item)
        windows = peak_windows(for_logo)
        logo = {"svg": logo_svg(windows, 7), "n": len(windows)} if len(windows) >= 2 else None
        return top, logo

    def protein(self, i: int) -> dict:
        """``{id, name, organism, length, split}`` of protein row ``i``."""
        n = self.prot["length"][i]
        return {
            "id": self.prot["id"][i],
            "name": self.prot["name"][i],
            "organism": self.prot["organism"][i],
            "length": int(n) if n == n and n else 0,
            "split": self.prot["split"][i],
        }

    def inactive(self, f: int, active: set[int], best: dict | None, n: int = 6) -> list[dict]:
        """Proteins on which the feature is silent: first ones that carry its best concept (the
        informative misses), then others picked at random (seeded by the feature, so stable)."""
        chosen: list[tuple[int, str]] = []
        ann = self.atlas.annotations
        j = self.atlas.concept_index.get(best["concept"]) if best else None
        if best is not None and ann is not None and j is not None:
            name = best.get("name") or best["concept"]
            for i in ann.indices[ann.indptr[j] : ann.indptr[j + 1]]:
                if int(i) not in active:
                    chosen.append((int(i), f"annotated “{name}” but silent"))
                    if len(chosen) >= n // 2:
                        break
        n_prot = len(self.prot["id"])
        taken = {i for i, _ in chosen}
        for i in (
            np.random.default_rng(f).integers(0, n_prot, size=8 * n).tolist() if n_prot else []
        ):
            if len(chosen) >= n:
                break
            if i not in active and i not in taken:
                chosen.append((i, ""))
                taken.add(i)
        return [{**self.protein(i), "why": why} for i, why in chosen]
