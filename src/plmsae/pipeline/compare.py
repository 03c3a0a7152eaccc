"""`plmsae compare RUN_DIR ...`: layers and models side by side, to choose one for a task.

For each layer of each run (a directory written by `plmsae run` or `plmsae demo`, or one of its
``L{layer}`` directories): SAE fidelity (FVE, L0, dead fraction, masked-LM loss recovered), the
number and fraction of features associated per category for the SAE, the neuron baseline and the
random baseline, how many distinct concepts each finds (the SAE also counted with as many features
as the baselines, since a larger dictionary finds more concepts by size alone), and the median
explanation score. A rich table in the terminal; with ``--html``
a page with the same table and an SVG chart.
"""

from __future__ import annotations

import dataclasses
from html import escape
from pathlib import Path
from typing import Any

from plmsae._util import atomic_write, read_json
from plmsae.analysis.assocdir import SOURCES, SUMMARY
from plmsae.config import StageConfig, argument, option, stage_function
from plmsae.pipeline.rundir import EVALUATION, find_units
from plmsae.sae.checkpoint import CFG_FILE

METRICS = (("fve", "FVE"), ("l0", "L0"), ("dead_fraction", "dead"), ("loss_recovered", "loss rec."))


def _count(block: Any) -> int | None:
    if isinstance(block, (int, float)):
        return int(block)
    if isinstance(block, dict):
        for key in ("n_features_associated", "n_associated", "n"):
            if isinstance(block.get(key), (int, float)):
                return int(block[key])
    return None


def collect(unit: Path) -> dict[str, Any]:
    """One row: identity, fidelity and association figures of one layer's run."""
    cfg = read_json(unit / "sae" / CFG_FILE)
    ev_path = unit / "sae" / EVALUATION
    evaluation = read_json(ev_path) if ev_path.exists() else cfg.get("metrics", {})
    summ_path = unit / "assoc" / SUMMARY
    summary = read_json(summ_path) if summ_path.exists() else {}
    model = cfg.get("model", {})
    row: dict[str, Any] = {
        "run": str(unit),
        "model": model.get("description") or model.get("id") or "?",
        "layer": cfg.get("layer"),
        "level": cfg.get("level"),
        "arch": cfg.get("arch"),
        "d_sae": cfg.get("d_sae"),
        "k": cfg.get("k"),
        **{key: evaluation.get(key) for key, _ in METRICS},
        "sources": {},
    }
    for source in SOURCES:
        block = summary.get(source, {})
        n = block.get("n_features")
        cats = {cat: _count(v) for cat, v in (block.get("by_category") or {}).items()}
        row["sources"][source] = {
            "n_features": n,
            "n_associated": block.get("n_features_associated"),
            "fraction": (
                block["n_features_associated"] / n
                if n and block.get("n_features_associated") is not None
                else None
            ),
            "by_category": {
                c: {"n": v, "fraction": (v / n if n and v is not None else None)}
                for c, v in cats.items()
            },
            # distinct concepts found; for the SAE also with as many features as the baselines
            "n_concepts": (block.get("concepts") or {}).get("n_concepts_associated"),
            "n_concepts_matched": (block.get("concepts") or {}).get(
                "n_concepts_associated_matched"
            ),
        }
    explain = summary.get("explain", {})
    row["explain"] = {}
    for source in ("sae", "neuron"):
        sim = (explain.get("sources") or {}).get(source, {}).get("simulation_r") or {}
        row["explain"][source] = sim.get("median")
    return row


@dataclasses.dataclass
class CompareConfig(StageConfig):
    """Compare layers and models: SAE fidelity, features associated by category, distinct
    concepts found, and explanation scores, side by side."""

    run_dirs: list[Path] = argument(
        help="Run directories (plmsae run/demo) or their L<layer> directories."
    )
    html: Path | None = option(
        None, help="Also write an HTML page with the table and an SVG chart."
    )


@dataclasses.dataclass
class CompareResult:
    """One row per layer of each run (see :func:`collect`), and the HTML page if written."""

    rows: list[dict[str, Any]]
    html: Path | None = None


@stage_function(CompareConfig)
def compare(cfg: CompareConfig) -> CompareResult:
    """Compare layers and models of finished runs."""
    rows = [collect(u) for d in cfg.run_dirs for u in find_units(d)]
    if cfg.html is not None:
        with atomic_write(cfg.html, "w") as fh:
            fh.write(render_html(rows))
    return CompareResult(rows=rows, html=cfg.html)


def _categories(rows: list[dict]) -> list[str]:
    cats: list[str] = []
    for r in rows:
        for c in r["sources"]["sae"]["by_category"]:
            if c not in cats:
                cats.append(c)
    return cats


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "-"
    if pct:
        return f"{x:.1%}"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


CONCEPT_COLUMNS = ("concepts SAE (matched)", "concepts neuron", "concepts random")


def _concept_cells(src: dict) -> list[str]:
    sae, matched = src["sae"].get("n_concepts"), src["sae"].get("n_concepts_matched")
    first = _fmt(sae) + (f" ({matched:.0f})" if isinstance(matched, (int, float)) else "")
    return [first, _fmt(src["neuron"].get("n_concepts")), _fmt(src["random"].get("n_concepts"))]


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The comparison as a header and text cells, for the terminal and the HTML page."""
    cats = _categories(rows)
    head = [
        "model",
        "layer",
        "level",
        *(n for _, n in METRICS),
        "SAE assoc.",
        "neuron assoc.",
        "random assoc.",
        *cats,
        *CONCEPT_COLUMNS,
        "median r SAE",
        "median r neuron",
    ]
    cells = []
    for r in rows:
        src = r["sources"]
        cells.append(
            [
                str(r["model"]),
                _fmt(r["layer"]),
                _fmt(r["level"]),
                *(_fmt(r[k]) for k, _ in METRICS),
                *(_fmt(src[s]["fraction"], pct=True) for s in SOURCES),
                *(
                    _fmt(src["sae"]["by_category"].get(c, {}).get("fraction"), pct=True)
                    for c in cats
                ),
                *_concept_cells(src),
                _fmt(r["explain"]["sae"]),
                _fmt(r["explain"]["neuron"]),
            ]
        )
    return head, cells


def chart_svg(rows: list[dict]) -> str:
    """Grouped bars: fraction of features associated, per run (group) and source (bar)."""
    colours = {"sae": "#2b6cb0", "neuron": "#dd6b20", "random": "#a0aec0"}
    width, height, left, bottom, top = max(360, 120 * len(rows) + 80), 260, 50, 60, 20
    plot_h = height - bottom - top
    fracs = [r["sources"][s]["fraction"] or 0 for r in rows for s in colours]
    ymax = max([0.05, *fracs]) * 1.1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="fraction of features associated">'
    ]
    for i in range(5):
        v = ymax * i / 4
        y = top + plot_h * (1 - v / ymax)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e2e8f0"/><text x="{left - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end">{v:.0%}</text>'
        )
    group_w = (width - left - 10) / max(1, len(rows))
    for gi, r in enumerate(rows):
        x0 = left + gi * group_w + 10
        bar_w = (group_w - 20) / len(colours)
        for si, (s, colour) in enumerate(colours.items()):
            v = r["sources"][s]["fraction"] or 0
            h = plot_h * v / ymax
            parts.append(
                f'<rect x="{x0 + si * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(s)}: {v:.1%}</title></rect>"
            )
        label = escape(f"L{r['layer']} {r['level'] or ''}")
        parts.append(
            f'<text x="{x0 + (group_w - 20) / 2:.1f}" y="{height - bottom + 16}" '
            f'font-size="11" text-anchor="middle">{label}</text>'
        )
    for si, (s, colour) in enumerate(colours.items()):
        parts.append(
            f'<rect x="{left + si * 90}" y="{height - 22}" width="10" height="10" '
            f'fill="{colour}"/><text x="{left + si * 90 + 14}" y="{height - 13}" '
            f'font-size="11">{escape(s)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(rows: list[dict]) -> str:
    head, cells = table(rows)
    body = ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in cells]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>plmsae compare</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:"
        "collapse}td,th{border:1px solid #cbd5e0;padding:4px 8px;text-align:right}"
        "td:first-child{text-align:left}</style></head><body><h1>plmsae compare</h1>"
        "<p>Fraction of features with at least one concept at q &lt; 0.05 and precision "
        "&ge; 0.5 on the test split, for SAE features, raw neurons and random directions. "
        "Concepts: distinct concepts with such a feature; in brackets, the SAE restricted "
        "to as many random features as the baselines have (median of 20 draws).</p>"
        + chart_svg(rows)
        + "<table><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in head)
        + "</tr>"
        + "".join(body)
        + "</table></body></html>\n"
    )
