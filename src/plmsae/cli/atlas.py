"""Printers of the atlas stages: ``plmsae report`` and ``plmsae annotate`` on the terminal."""

from __future__ import annotations

import math
import textwrap

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plmsae.atlas.annotate import AnnotateResult
from plmsae.atlas.plots import fmt, format_spans
from plmsae.atlas.report import ReportResult


def show_report(result: ReportResult, console: Console) -> None:
    """Where the atlas is and what it holds; why tracks are missing, when they are."""
    console.print(
        f"[bold]atlas:[/] {escape(str(result.index))} "
        f"({result.n_pages:,} feature pages, {result.n_features:,} features listed)"
    )
    if result.track_note:
        console.print(f"[dim]{escape(result.track_note)}[/]")


def show_annotate(result: AnnotateResult, console: Console) -> None:
    """Per protein: the ranked features (specific ones, by evidence), then the sequence-chemistry
    features, then what was left out; readable at 80 columns. Nothing with ``--quiet``."""
    if result.quiet:
        return
    s = result.settings
    console.print(
        f"[bold]{escape(str(s['model']))}[/], layer {s['layer']}, SAE with "
        f"{s['d_sae']:,} features ({s['level']} level)",
        highlight=False,
    )
    labelled = s["assoc"] is not None
    for r in result.proteins:
        console.print()
        console.print(_protein_title(r), highlight=False)
        if not r["features"] and not r["chemistry"]:
            console.print("  no feature is listed for this protein.")
        if r["features"]:
            title = "strongest features"
            if labelled:
                title = "features, by evidence" if s["all"] else "specific features, by evidence"
            console.print(_feature_table(r, r["features"], s, title))
        if r["chemistry"]:
            console.print(_feature_table(r, r["chemistry"], s, "sequence chemistry"))
        if r["n_left_out"]:
            parts = ", ".join(f"{n:,} {g}" for g, n in r["n_left_out"].items())
            console.print(
                f"[dim]left out: {parts} (active on most proteins); --all ranks them too.[/]",
                highlight=False,
            )
    if not labelled:
        console.print("[dim]Add --assoc ASSOC_DIR to see what these features mean.[/]")
    else:
        console.print(
            "[dim]rel. = activation / the feature's strongest activation over the atlas "
            "proteins, capped at 100% (+: the query exceeds them all); dens. = share of atlas proteins it is active on; a "
            "concept is named only when the activation passes its association's threshold.[/]",
            highlight=False,
        )


def _protein_title(r: dict) -> str:
    name = f" {r['name']}" if r["name"] else ""
    org = f" ({r['organism']})" if r["organism"] else ""
    return f"[bold]{escape(r['id'])}[/]{escape(name + org)}, {r['length']:,} residues"


def _feature_table(r: dict, feats: list[dict], settings: dict, title: str) -> Table:
    labelled = settings["assoc"] is not None
    residues = settings["level"] != "protein"
    t = Table(title=title, title_justify="left", title_style="italic", expand=False)
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("feature", justify="right", style="cyan", no_wrap=True)
    t.add_column("rel." if labelled else "act.", justify="right", no_wrap=True)
    if residues:
        t.add_column("fires at", max_width=22)
    t.add_column("label (evidence)", ratio=1, min_width=18)
    if labelled:
        t.add_column("dens.", justify="right", no_wrap=True)
    for f in feats:
        cells = [str(f["rank"] or ""), str(f["feature"]), _strength(f)]
        if residues:
            cells.append(format_spans(f["spans"], r["sequence"], limit=3))
        cells.append(_label(f))
        if labelled:
            cells.append(_density(f["density"]))
        t.add_row(*[escape(c) for c in cells])
    return t


def _strength(f: dict) -> str:
    rel = f["relative"]
    if rel is None or not math.isfinite(rel):
        return fmt(f["activation"])
    return f"{100 * rel:.0f}%" + ("+" if f["above_max"] else "")


def _label(f: dict) -> str:
    """The label with its evidence; a description shortened at a word boundary."""
    label = f["label"] or ""
    if f["evidence"] == "associated":
        label += f" (q {fmt(f['q_value'])})"
    elif f["evidence"] == "described":
        desc = f["description"] if f["description"] != f["label"] else ""
        label = label or textwrap.shorten(desc, 90, placeholder=" …")
        label += " (described)"
    elif f.get("below_concept"):
        label = (label + "; " if label else "") + f"below its threshold for {f['below_concept']}"
    if f["group"] in ("dense", "dead"):
        label = f"[{f['group']}] {label}".strip()
    return label or "–"


def _density(density: float | None) -> str:
    return "–" if density is None else f"{100 * density:.0f}%"
