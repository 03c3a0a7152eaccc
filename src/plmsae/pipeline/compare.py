"""`plmsae compare RUN_DIR ...`: layers and models side by side, to choose one for a task.

For each layer of each run (a directory written by `plmsae run` or `plmsae demo`, or one of its
``L{layer}`` directories): a run label that tells the runs apart, the SAE (architecture, width,
k), fidelity (FVE, L0, dead fraction, masked-LM loss recovered), the headline of its association
directory (:func:`plmsae.atlas.model.headline`: concepts recovered, distinct, replicated, for the
SAE at the baselines' size with a range over draws, for neurons and random directions), the
fraction of features associated per source and category (the secondary figure), and the median
explanation score. The terminal gets a compact table that fits 80 columns (``--wide``: every
column); ``--html`` writes a page in the atlas style with every column and a chart.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from plmsae._util import InputError, atomic_write, read_json
from plmsae.analysis.assocdir import SOURCE_NAMES, SOURCES, SUMMARY
from plmsae.atlas.model import headline, headline_cell
from plmsae.config import StageConfig, argument, option, stage_function
from plmsae.pipeline.rundir import EVALUATION, find_units
from plmsae.sae.checkpoint import CFG_FILE, is_checkpoint

METRICS = (("fve", "FVE"), ("l0", "L0"), ("dead_fraction", "dead"), ("loss_recovered", "loss rec."))
#: the headline measures the compact table shows, with their short column names
COMPACT_MEASURES = (("concepts_recovered", "recovered"), ("concepts_associated", "distinct"))
SHORT = {"sae": "SAE", "neuron": "neu", "random": "rnd"}


def _count(block: Any) -> int | None:
    if isinstance(block, (int, float)):
        return int(block)
    if isinstance(block, dict):
        for key in ("n_features_associated", "n_associated", "n"):
            if isinstance(block.get(key), (int, float)):
                return int(block[key])
    return None


def collect(unit: Path) -> dict[str, Any]:
    """One row: identity, fidelity, headline and association figures of one layer's run."""
    cfg = read_json(unit / "sae" / CFG_FILE)
    ev_path = unit / "sae" / EVALUATION
    evaluation = read_json(ev_path) if ev_path.exists() else cfg.get("metrics", {})
    summ_path = unit / "assoc" / SUMMARY
    summary = read_json(summ_path) if summ_path.exists() else {}
    model = cfg.get("model", {})
    row: dict[str, Any] = {
        "run": str(unit),
        "label": unit.name,
        "model": model.get("description") or model.get("id") or "?",
        "model_short": model_short(model),
        "layer": cfg.get("layer"),
        "level": cfg.get("level"),
        "arch": cfg.get("arch"),
        "d_sae": cfg.get("d_sae"),
        "k": cfg.get("k"),
        **{key: evaluation.get(key) for key, _ in METRICS},
        "headline": headline(summary),
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


def model_short(spec: dict) -> str:
    """A few characters that name a model: ``facebook/esm2_t12_35M_UR50D`` -> ``esm2_t12_35M``,
    else the first two words of its description."""
    mid = str(spec.get("id") or "")
    if mid:
        return mid.rstrip("/").split("/")[-1].removesuffix("_UR50D")
    words = str(spec.get("description") or spec.get("path") or "?").split()
    return " ".join(words[:2])


def run_labels(paths: list[str]) -> list[str]:
    """Short labels that tell runs apart: the run directory's name (the part above
    ``L{layer}``), with as many parent directories as it takes to make different runs differ."""
    runs = [Path(p).parent if Path(p).name.startswith("L") else Path(p) for p in paths]
    distinct = sorted(set(runs))
    for depth in range(1, max((len(r.parts) for r in distinct), default=1) + 1):
        tails = {r: "/".join(r.parts[-depth:]) for r in distinct}
        if len(set(tails.values())) == len(distinct):
            return [tails[r] for r in runs]
    return [str(r) for r in runs]


@dataclasses.dataclass
class CompareConfig(StageConfig):
    """Compare layers and models: the concepts SAE features, neurons and random directions find,
    SAE fidelity, features associated by category, and explanation scores, side by side."""

    run_dirs: list[Path] = argument(
        help="Run directories (plmsae run/demo) or their L<layer> directories."
    )
    html: Path | None = option(None, help="Also write an HTML page with every column and a chart.")
    wide: bool = option(False, help="Print every column (the default table fits 80 columns).")
    match: bool = option(
        False,
        help="Also match features across the SAEs (every pair) by decoder cosine and report the "
        "fraction shared; RUN_DIRS may then be SAE checkpoint directories too.",
    )
    match_threshold: float = option(
        0.7, help="--match: a feature is shared when its best decoder cosine reaches this."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not -1.0 <= self.match_threshold <= 1.0:
            self.reject("match_threshold", "is not a cosine.", "pass a value in [-1, 1].")


@dataclasses.dataclass
class CompareResult:
    """One row per layer of each run (see :func:`collect`), the HTML page if written, and
    whether the terminal table shows every column."""

    rows: list[dict[str, Any]]
    html: Path | None = None
    wide: bool = False
    matches: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@stage_function(CompareConfig)
def compare(cfg: CompareConfig) -> CompareResult:
    """Compare layers and models of finished runs."""
    saes = [d for d in cfg.run_dirs if is_checkpoint(d)]
    if saes and not cfg.match:
        raise InputError(
            "is an SAE checkpoint, not a run directory.",
            path=saes[0],
            fix="pass --match to match SAEs by decoder cosine, or give run directories.",
        )
    rows = [collect(u) for d in cfg.run_dirs if d not in saes for u in find_units(d)]
    for r, label in zip(rows, run_labels([r["run"] for r in rows])):
        r["label"] = label
    if cfg.html is not None:
        with atomic_write(cfg.html, "w") as fh:
            fh.write(render_html(rows))
    matches = match_runs(cfg.run_dirs, cfg.match_threshold) if cfg.match else []
    return CompareResult(rows=rows, html=cfg.html, wide=cfg.wide, matches=matches)


def match_runs(paths: list[Path], threshold: float) -> list[dict[str, Any]]:
    """Every pair of SAEs among ``paths`` (checkpoints, or each layer's SAE of a run) matched by
    decoder cosine (:func:`plmsae.sae.match.match_all`)."""
    from plmsae.sae.match import match_all

    dirs: list[Path] = []
    for d in paths:
        dirs += [d] if is_checkpoint(d) else [u / "sae" for u in find_units(d)]
    return [m.to_dict() for m in match_all(dirs, threshold)]


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


def _sae(r: dict) -> str:
    k = f" k{r['k']}" if r.get("k") else ""
    return f"{r['arch'] or '?'} {r['d_sae'] or '?'}{k}"


def _layer(r: dict) -> str:
    return f"{_fmt(r['layer'])} {(r['level'] or '?')[:3]}"


def _measure_cells(r: dict, key: str) -> dict[str, dict | None]:
    head = r["headline"] or {}
    row = next((m for m in head.get("rows", []) if m["key"] == key), None)
    return row["cells"] if row else {}


def _cell(r: dict, key: str, source: str, ci: bool = True) -> str:
    """A headline figure as text (with its range when ``ci``); ``*`` marks an SAE figure over
    all its features where the run has a size-matched comparison for other measures (not
    comparable with the baselines)."""
    cell = _measure_cells(r, key).get(source)
    text = headline_cell(cell if ci or not cell else {**cell, "ci": None})
    if source == "sae" and cell and not cell["matched"] and text != "–":
        text += "*" if (r["headline"] or {}).get("matched_n_features") else ""
    return text


def compact_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The comparison in a few columns that fit 80 characters: run label, layer and level (the
    model when runs differ in it), SAE, FVE, and two headline measures as SAE/neurons/random
    (values; ranges with ``--wide``)."""
    models = {r["model"] for r in rows}
    archs = {r["arch"] for r in rows}
    head = ["run", "layer", *(["model"] if len(models) > 1 else []), "SAE", "FVE"]
    head += [f"{name}\nS/N/R" for _, name in COMPACT_MEASURES]
    cells = []
    for r in rows:
        line = [r["label"], _layer(r), *([r["model_short"]] if len(models) > 1 else [])]
        sae = _sae(r) if len(archs) > 1 else _sae(r).split(" ", 1)[1]
        line += [sae, _fmt(r["fve"])]
        for key, _ in COMPACT_MEASURES:
            line.append("/".join(_cell(r, key, s, ci=False) for s in SOURCES))
        cells.append(line)
    return head, cells


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Every column, for ``--wide`` and the HTML page."""
    cats = _categories(rows)
    keys: list[tuple[str, str]] = []
    for r in rows:
        for m in (r["headline"] or {}).get("rows", []):
            if m["key"] not in (k for k, _ in keys):
                keys.append((m["key"], m["label"]))
    head = ["run", "model", "layer", "level", "SAE", *(n for _, n in METRICS)]
    head += [f"{label}: {SOURCE_NAMES[s]}" for _, label in keys for s in SOURCES]
    head += [f"associated: {SOURCE_NAMES[s]}" for s in SOURCES]
    head += [f"SAE associated: {c}" for c in cats] + ["median r SAE", "median r neuron"]
    cells = []
    for r in rows:
        src = r["sources"]
        cells.append(
            [
                r["label"],
                str(r["model"]),
                _fmt(r["layer"]),
                _fmt(r["level"]),
                _sae(r),
                *(_fmt(r[k]) for k, _ in METRICS),
                *(_cell(r, k, s) for k, _ in keys for s in SOURCES),
                *(_fmt(src[s]["fraction"], pct=True) for s in SOURCES),
                *(
                    _fmt(src["sae"]["by_category"].get(c, {}).get("fraction"), pct=True)
                    for c in cats
                ),
                _fmt(r["explain"]["sae"]),
                _fmt(r["explain"]["neuron"]),
            ]
        )
    return head, cells


def chart_svg(rows: list[dict], key: str = "concepts_recovered") -> Markup:
    """Grouped bars: a headline measure per run (group) and source (bar), with the SAE's range
    over draws as a whisker."""
    colours = {"sae": "#2a6f97", "neuron": "#9c6644", "random": "#9ca3af"}
    width, height, left, bottom, top = max(480, 130 * len(rows) + 80), 260, 50, 60, 20
    plot_h = height - bottom - top
    vals = [
        [(_measure_cells(r, key).get(s) or {}) for s in colours] for r in rows
    ]  # per run, per source: cell
    ymax = max(
        [1.0] + [max(c.get("value") or 0, *(c.get("ci") or (0, 0))) for v in vals for c in v]
    )
    ymax *= 1.1
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(key)} by run and source">'
    ]
    for i in range(5):
        v = ymax * i / 4
        y = top + plot_h * (1 - v / ymax)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.0f}</text>'
        )
    group_w = (width - left - 10) / max(1, len(rows))
    y_of = lambda v: top + plot_h * (1 - v / ymax)  # noqa: E731
    for gi, (r, cells) in enumerate(zip(rows, vals)):
        x0 = left + gi * group_w + 10
        bar_w = (group_w - 20) / len(colours)
        for si, ((s, colour), c) in enumerate(zip(colours.items(), cells)):
            v = c.get("value") or 0
            x = x0 + si * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{y_of(v):.1f}" width="{bar_w - 2:.1f}" '
                f'height="{top + plot_h - y_of(v):.1f}" fill="{colour}"><title>'
                f"{escape(SOURCE_NAMES[s])}: {escape(headline_cell(c))}</title></rect>"
            )
            if c.get("ci"):
                lo, hi = c["ci"]
                xm = x + (bar_w - 2) / 2
                parts.append(
                    f'<path d="M{xm:.1f} {y_of(lo):.1f}V{y_of(hi):.1f}" stroke="#1f2933"/>'
                )
        label = escape(f"{r['label']} L{r['layer']}")
        parts.append(
            f'<text class="tick" x="{x0 + (group_w - 20) / 2:.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle">{label}</text>'
        )
    for si, (s, colour) in enumerate(colours.items()):
        parts.append(
            f'<rect x="{left + si * 130}" y="{height - 22}" width="10" height="10" '
            f'fill="{colour}"/><text class="tick" x="{left + si * 130 + 14}" y="{height - 13}">'
            f"{escape(SOURCE_NAMES[s])}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def render_html(rows: list[dict]) -> str:
    """The comparison as a page in the atlas style: the headline explained, every column, a
    chart of concepts recovered."""
    from plmsae.atlas import site

    head, cells = table(rows)
    note = next((r["headline"] for r in rows if r["headline"]), None)
    # chart a size-matched measure (an SAE figure over all its features is not comparable)
    key = next(
        (
            m["key"]
            for m in (note or {}).get("rows", [])
            if (m["cells"].get("sae") or {}).get("matched")
        ),
        None,
    )
    label = next((m["label"] for m in (note or {}).get("rows", []) if m["key"] == key), "")
    return (
        site.environment()
        .get_template("compare.html")
        .render(
            title="plmsae compare",
            model_name=f"{len(rows)} layer{'s' if len(rows) != 1 else ''} compared",
            layer=None,
            level="",
            root="",
            **site.stamp(),
            head=head,
            cells=cells,
            rows=rows,
            headline=note,
            chart=chart_svg(rows, key) if key else None,
            chart_label=label,
            inline_css=Markup((site.STATIC / "style.css").read_text()),
        )
    )
