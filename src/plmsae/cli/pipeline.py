"""Printers of `plmsae run`, `plmsae demo` and `plmsae compare`."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plmsae.atlas.model import headline_cell
from plmsae.pipeline.compare import CompareResult, compact_table, table
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
    """The demo's headline: the concepts SAE features, neurons and random directions find
    (size-matched), then the per-feature fraction with its caveat, fidelity, example features
    and the atlas."""
    s = result.summary
    console.rule("[bold]plmsae demo: what it found")
    console.print(f"model: {escape(str(s['model']))}, layer {s['layer']}", highlight=False)
    console.print("SAE fidelity: " + _fidelity(s["evaluation"]), highlight=False)
    head = s.get("headline")
    if head:
        console.print(headline_table(head))
        if head["note"]:  # it gives the per-feature fractions and why they favour the baselines
            console.print(escape(head["note"]), highlight=False)
        else:
            console.print(
                "[bold]features with an association[/]: " + escape(_fractions(head)),
                highlight=False,
            )
            console.print(f"[dim]{escape(head['caveat'])}[/]", highlight=False)
    else:
        _association_table(s["associations"], console)
    for ex in s["examples"]:
        r = ex.get("simulation_r")
        rtxt = f" (simulation r = {r:.2f})" if isinstance(r, float) and r == r else ""
        console.print(
            f"feature {ex['feature']} \\[{escape(str(ex['label']))}]: "
            f"{escape(str(ex['description']))}{rtxt} — {escape(str(ex['explainer']))}"
        )
    pages = s.get("n_pages")
    console.print(
        f"[bold]atlas:[/] {escape(s['atlas'])}" + (f" ({pages:,} feature pages)" if pages else "")
    )


def headline_table(head: dict) -> Table:
    """The headline block as a table: one row per measure, one column per source (the SAE's
    size-matched median and 95% range over the draws)."""
    n = head["n_features"]
    matched = head.get("matched_n_features")
    title = "concepts found (features per source in brackets)"
    if matched:
        draws = f"{head['draws']} draws" if head.get("draws") else "draws"
        title = f"concepts found; SAE: {matched:,} features at a time, median of {draws}"
        title += "" if head["legacy"] else " [95% range]"
    t = Table(title=title, title_justify="left")
    t.add_column("measure", ratio=1)
    for src in head["sources"]:
        size = f" ({n[src]:,})" if n.get(src) else ""
        t.add_column(f"{SOURCE_SHORT.get(src, src)}{size}", justify="right")
    for row in head["rows"]:
        cells = []
        for src in head["sources"]:
            cell = row["cells"].get(src)
            text = headline_cell(cell)
            if cell and src == "sae" and not cell["matched"] and matched and text != "–":
                text += "*"
            cells.append(text)
        t.add_row(escape(row["label"]), *cells)
    if any(
        c and not c["matched"] and src == "sae" and matched
        for r in head["rows"]
        for src, c in r["cells"].items()
    ):
        t.caption = "* all SAE features, not size-matched"
    return t


#: short source names for narrow tables
SOURCE_SHORT = {"sae": "SAE", "neuron": "neurons", "random": "random"}


def _fractions(head: dict) -> str:
    parts = []
    for src in head["sources"]:
        sec = head["secondary"].get(src, {})
        f = sec.get("fraction_associated")
        parts.append(f"{SOURCE_SHORT.get(src, src)} " + ("–" if f is None else f"{f:.1%}"))
    return " · ".join(parts)


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


def show_matches(matches: list[dict], console: Console) -> None:
    """``compare --match``: per pair of SAEs, the fraction of features shared (best decoder
    cosine >= the threshold), mutual nearest pairs and the one-to-one assignment."""
    for m in matches:
        one = m["assignment_shared"]
        console.print(
            f"features shared (decoder cosine ≥ {m['threshold']:g}): "
            f"{m['shared_a']:.1%} of {m['n_a']:,} in {escape(m['a'])}, "
            f"{m['shared_b']:.1%} of {m['n_b']:,} in {escape(m['b'])}; "
            f"{m['mutual']:,} mutual best pairs"
            + (f"; one-to-one {one:.1%}" if one is not None else "")
            + f"; median best cosine {m['median_cos_ab']:.2f}",
            highlight=False,
        )


def show_compare(result: CompareResult, console: Console) -> None:
    """The compact comparison (fits 80 columns) or, with ``--wide``, every figure (one row per
    figure, one column per layer of a run); what the columns mean; the HTML page written."""
    rows = result.rows
    if not rows:  # compare --match of SAE checkpoints only
        show_matches(result.matches, console)
        return
    title = "plmsae compare: concepts found by SAE, neurons, random directions"
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    if result.wide:
        head, cells = table(rows)
        t.add_column("figure", overflow="fold", min_width=max(20, min(44, 76 - 19 * len(cells))))
        for line in cells:
            t.add_column(f"{line[0]} L{line[2]}", justify="right", overflow="fold", max_width=17)
        for i, name in enumerate(head[1:], 1):
            t.add_row(escape(name), *(escape(line[i]) for line in cells))
    else:
        head, cells = compact_table(rows)
        for col in head:
            left = col in ("run", "layer", "model", "SAE")
            t.add_column(col, justify="left" if left else "right", overflow="fold")
        for row in cells:
            t.add_row(*(escape(c) for c in row))
    console.print(t)
    note = next((r["headline"] for r in rows if r["headline"]), None)
    if note:
        matched = note.get("matched_n_features")
        size = (
            f"SAE counted with {matched:,} features at a time (as many as the baselines), "
            f"median{'' if note['legacy'] else ' [95% range]'} over draws"
            + ("; * = all SAE features, not size-matched" if note["legacy"] else "")
            + ". "
            if matched
            else ""
        )
        legend = "" if result.wide else "S/N/R = SAE features / neurons / random directions; "
        console.print(
            f"[dim]{legend}recovered = concepts a single feature predicts with F1 ≥ 0.5; "
            f"distinct = concepts with an associated feature. {escape(size)}"
            f"{'--wide shows every figure. ' if not result.wide else ''}[/]",
            highlight=False,
        )
        if note["legacy"]:
            console.print(f"[dim]{escape(note['note'])}[/]", highlight=False)
    show_matches(result.matches, console)
    if result.html is not None:
        console.print(f"wrote {escape(str(result.html))}")
