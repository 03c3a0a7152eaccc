"""Printers of the apply stages: ``plmsae discover``, ``plmsae variants`` and ``plmsae steer``,
readable at 80 columns."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plmsae.apply.discover import DiscoverResult
from plmsae.apply.steer import SteerResult
from plmsae.apply.variants import VariantsResult
from plmsae.atlas.plots import fmt

#: rows printed (the files and --json hold all)
SHOW_CANDIDATES = 25
SHOW_VARIANTS = 20
SHOW_FEATURES = 5
SHOW_CORRELATIONS = 10


def _table(*columns: str, title: str | None = None) -> Table:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=title, title_justify="left")
    for c in columns:
        right = c.startswith(">")
        t.add_column(c.lstrip(">"), justify="right" if right else "left", overflow="fold")
    return t


def _num(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt(x)


def show_discover(result: DiscoverResult, console: Console) -> None:
    """The best candidates with their evidence, and how many there are."""
    s = result.settings
    console.print(
        f"{result.n_candidates:,} candidate missing annotations from {result.n_features:,} "
        f"features precise for {result.n_concepts:,} concepts ({result.n_groups:,} independent "
        f"groups; precision >= {s['min_precision']}, q < {s['max_q']:g} on test)."
    )
    if result.candidates.empty:
        return
    console.print(
        "[dim]agree: independent features (all features) that fire; act.: the strongest "
        "activation, % of the feature's maximum; homolog: nearest homolog with the concept, "
        "identity.[/]"
    )
    t = _table(">#", "protein", "concept", ">agree", ">act.", "homolog")
    for r in result.candidates.head(SHOW_CANDIDATES).itertuples(index=False):
        homolog = "–" if pd.isna(r.homolog) else f"{r.homolog} {100 * r.homolog_identity:.0f}%"
        t.add_row(
            str(r.rank),
            escape(r.protein),
            escape(f"{r.concept_name} ({r.concept})"),
            f"{r.n_independent} ({r.n_features})",
            f"{100 * r.relative[0]:.0f}%",
            escape(homolog),
        )
    console.print(t)
    if len(result.candidates) > SHOW_CANDIDATES:
        console.print(
            f"[dim]{len(result.candidates) - SHOW_CANDIDATES:,} more in --out / --json.[/]"
        )
    if result.homolog_note:
        console.print(f"[dim]{escape(result.homolog_note)}[/]")
    if result.out is not None:
        console.print(f"Candidates: {escape(str(result.out))}")


def show_variants(result: VariantsResult, console: Console) -> None:
    """Per variant its largest feature changes; with a DMS table the features that track it."""
    s = result.settings
    console.print(
        f"{escape(result.protein)} ({result.length} residues): {len(result.variants):,} "
        f"variants, SAE with {s['d_sae']:,} features on {escape(str(s['model']))}, layer "
        f"{s['layer']}."
    )
    for i, v in enumerate(result.variants.head(SHOW_VARIANTS).itertuples(index=False)):
        rows = result.changes[result.changes["variant"] == v.variant].head(SHOW_FEATURES)
        title = f"{v.variant}: {v.n_gained} gained, {v.n_lost} lost (pooled)" + (
            "" if math.isnan(v.score) else f", score {fmt(v.score)}"
        )
        if rows.empty:
            console.print(f"{escape(v.variant)}: no feature changes.")
            continue
        t = _table(">feature", "label", ">site", ">pooled", ">peak", title=escape(title))
        for c in rows.itertuples(index=False):
            t.add_row(
                str(c.feature),
                escape(c.label),
                _delta(c.site_wt, c.site_mut, c.site_change),
                _delta(c.pooled_wt, c.pooled_mut, c.pooled_change),
                str(c.peak),
            )
        console.print(t)
        if i == SHOW_VARIANTS - 1 and len(result.variants) > SHOW_VARIANTS:
            console.print(
                f"[dim]{len(result.variants) - SHOW_VARIANTS:,} more variants in --out.[/]"
            )
    _show_correlations(result, console)
    for p in result.files:
        if p.suffix == ".html":
            console.print(f"Page: {escape(str(p))}; tables next to it (TSV and Parquet).")


def _delta(before: float, after: float, change: str) -> str:
    word = f" {change}" if change in ("gained", "lost") else ""
    return f"{fmt(before)} → {fmt(after)}{word}"


def _show_correlations(result: VariantsResult, console: Console) -> None:
    corr = result.correlations
    if corr is None:
        return
    if corr.empty:
        console.print("No feature changes in enough scored variants to correlate.")
        return
    t = _table(
        "level",
        ">feature",
        "label",
        ">rho",
        ">q",
        ">changed",
        title="Features that track the score",
    )
    for r in corr.head(SHOW_CORRELATIONS).itertuples(index=False):
        t.add_row(
            r.level, str(r.feature), escape(r.label), _num(r.rho), _num(r.q_value), str(r.n_changed)
        )
    console.print(t)


def show_steer(result: SteerResult, console: Console) -> None:
    """The edit, each condition against the clean model, the verdict, the residues it moves
    most and the resampled sequences."""
    s = result.settings
    where = "every residue" if s["positions"] is None else f"residues {s['positions']}"
    verb = "clamped to" if s["mode"] == "clamp" else "scaled by"
    console.print(
        f"Features {s['features']} {verb} {fmt(s['value'])} at {where}; layer {s['layer']} of "
        f"{escape(str(s['model']))} ({s['splice']} splice). Edit norm {fmt(result.edit_norm)} "
        f"per residue (layer norm {fmt(result.layer_norm)})."
    )
    t = _table(
        "condition",
        ">KL mean",
        ">KL max",
        ">argmax changed",
        ">Δp(wt)",
        ">max |Δlogit|",
        title="Against the clean model (20 amino acids, every residue)",
    )
    for name, m in result.conditions.items():
        if name == "clean":
            continue
        t.add_row(
            name,
            _num(m["kl_mean"]),
            _num(m["kl_max"]),
            f"{100 * m['argmax_changed']:.0f}%",
            _num(m["wt_prob_change"]),
            _num(m["logits_max_abs_diff"]),
        )
    console.print(t)
    c = result.controls
    console.print(
        f"Edit / random features of matched norm (KL mean): {_num(c['edit_over_random'])}; "
        f"edit / reconstruction error alone: {_num(c['edit_over_reconstruction'])}."
    )
    _show_positions(result, console)
    if result.samples:
        console.print("Resampled sequences (identity to the protein, first 48 residues):")
    for name, samples in result.samples.items():
        for k, smp in enumerate(samples[:2]):
            seq = smp["sequence"]
            console.print(
                f"{name:>14} {k + 1} {100 * smp['identity']:3.0f}%  "
                f"{escape(seq[:48])}{'…' if len(seq) > 48 else ''}"
            )
    if result.out is not None:
        console.print(f"Result with per-residue probabilities: {escape(str(result.out))}")


def _show_positions(result: SteerResult, console: Console) -> None:
    t = _table(
        ">residue",
        ">p(wt) clean → edit",
        "top clean",
        "top edit",
        ">KL",
        ">KL random",
        title="Residues the edit moves most",
    )
    for p in result.positions[:10]:
        t.add_row(
            f"{p['residue']}{p['position']}",
            f"{_num(p['p_wt_clean'])} → {_num(p['p_wt_edit'])}",
            f"{p['top_clean']} {fmt(p['p_top_clean'])}",
            f"{p['top_edit']} {fmt(p['p_top_edit'])}",
            _num(p["kl"]),
            _num(p["kl_random_mean"]),
        )
    console.print(t)
