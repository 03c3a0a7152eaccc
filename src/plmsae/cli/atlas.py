"""Printers of the atlas stages: ``plmsae report`` and ``plmsae annotate`` on the terminal."""

from __future__ import annotations

import math

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
    """One table per protein: its strongest features, where they fire and (with an atlas) what
    they mean. Nothing with ``--quiet``."""
    if result.quiet:
        return
    s = result.settings
    console.print(
        f"[bold]{escape(str(s['model']))}[/], layer {s['layer']}, SAE with "
        f"{s['d_sae']:,} features ({s['level']} level)",
        highlight=False,
    )
    for r in result.proteins:
        if not r["features"]:
            console.print(f"{escape(r['id'])}: no feature is active.")
        else:
            console.print(_protein_table(r, s))
    if s["assoc"] is None:
        console.print("[dim]Add --assoc ASSOC_DIR to see what these features mean.[/]")


def _protein_table(r: dict, settings: dict) -> Table:
    labelled = settings["assoc"] is not None
    residues = settings["level"] != "protein"
    t = Table(
        title=f"{r['id']}  ({r['length']} residues)",
        title_justify="left",
        title_style="bold",
        show_lines=False,
        expand=False,
    )
    t.add_column("feature", justify="right", style="cyan", no_wrap=True)
    t.add_column("activation", justify="right", no_wrap=True)
    if labelled:
        t.add_column("of max", justify="right", no_wrap=True)
    if residues:
        t.add_column(f"fires at (≥{settings['frac']:.0%} of max)", overflow="fold")
    if labelled:
        t.add_column("label / description", overflow="fold")
        t.add_column("top concept (q)", overflow="fold")
        t.add_column("density", justify="right", no_wrap=True)
    for f in r["features"]:
        cells = [str(f["feature"]), fmt(f["activation"])]
        if labelled:
            rel = f["relative"]
            cells.append("–" if rel is None or not math.isfinite(rel) else f"{100 * rel:.0f}%")
        if residues:
            cells.append(format_spans(f["spans"], r["sequence"], limit=4))
        if labelled:
            cells += [_label(f), _concept(f), _density(f["density"])]
        t.add_row(*[escape(c) for c in cells])
    return t


def _label(f: dict) -> str:
    """'label: description' (the description cut at 140 characters)."""
    label = f["label"] or ""
    desc = f["description"]
    if desc and desc != label:
        desc = desc if len(desc) <= 140 else desc[:139] + "…"
        label = f"{label}: {desc}" if label else desc
    return label


def _concept(f: dict) -> str:
    if not f["concept"]:
        return ""
    return f"{f['concept_name'] or f['concept']} ({fmt(f['q_value'])})"


def _density(density: float | None) -> str:
    return "–" if density is None else f"{100 * density:.1f}%"
