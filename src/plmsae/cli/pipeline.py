"""Printers of `plmsae run`, `plmsae demo` and `plmsae compare`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plmsae.pipeline.compare import CompareResult, table
from plmsae.pipeline.demo import DemoResult
from plmsae.pipeline.run import PipelineResult


def show_run(result: PipelineResult, console: Console) -> None:
    """Which stages ran or were reused, and where each layer's atlas is."""
    if result.reused:
        console.print(f"reused: {', '.join(result.reused)}")
    if result.computed:
        console.print(f"computed: {', '.join(result.computed)}")
    for layer, paths in result.layers.items():
        console.print(f"layer {layer}: atlas {escape(str(paths.index))}")


def show_demo(result: DemoResult, console: Console) -> None:
    """The demo's headline figures: fidelity, associations per source, example features."""
    s = result.summary
    console.rule("[bold]plmsae demo: what it found")
    console.print(f"model: {escape(str(s['model']))}, layer {s['layer']}")
    console.print("SAE fidelity: " + _fidelity(s["evaluation"]))
    _association_table(s["associations"], console)
    for ex in s["examples"]:
        r = ex.get("simulation_r")
        rtxt = f" (simulation r = {r:.2f})" if isinstance(r, float) and r == r else ""
        console.print(
            f"feature {ex['feature']} \\[{escape(str(ex['label']))}]: "
            f"{escape(str(ex['description']))}{rtxt} — {escape(str(ex['explainer']))}"
        )
    console.print(f"[bold]atlas:[/] {escape(s['atlas'])}")


def _fidelity(ev: dict[str, Any]) -> str:
    names = (
        ("fve", "FVE"),
        ("l0", "L0"),
        ("dead_fraction", "dead fraction"),
        ("loss_recovered", "MLM loss recovered"),
    )
    return ", ".join(
        f"{name} {ev[key]:.3g}" for key, name in names if isinstance(ev.get(key), (int, float))
    )


def _association_table(associations: dict[str, dict], console: Console) -> None:
    t = Table(title="features with a GO association (q < 0.05, precision >= 0.5)")
    for col in ("source", "features", "associated", "fraction", "distinct terms"):
        t.add_column(col, justify="left" if col == "source" else "right")
    matched = None
    for source, block in associations.items():
        n, m = block.get("n_features"), block.get("n_features_associated")
        frac = f"{m / n:.1%}" if n and m is not None else "-"
        concepts = block.get("concepts") or {}
        t.add_row(source, str(n), str(m), frac, str(concepts.get("n_concepts_associated", "-")))
        if "n_concepts_associated_matched" in concepts:
            matched = (
                source,
                concepts["matched_n_features"],
                concepts["n_concepts_associated_matched"],
            )
    console.print(t)
    if matched:  # a bigger dictionary finds more terms by size alone: say what equal size gives
        console.print(
            f"{matched[0]} restricted to {matched[1]} random features (as many as the "
            f"baselines): {matched[2]:.0f} distinct terms (median of 20 draws)"
        )


def show_compare(result: CompareResult, console: Console) -> None:
    head, cells = table(result.rows)
    t = Table(title="plmsae compare: SAE features associated (q < 0.05, precision >= 0.5)")
    for col in head:
        t.add_column(col, justify="left" if col in ("model", "level") else "right")
    for row in cells:
        t.add_row(*(escape(c) for c in row))
    console.print(t)
    if result.html is not None:
        console.print(f"wrote {escape(str(result.html))}")
