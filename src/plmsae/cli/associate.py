"""What ``plmsae associate`` prints: whether the association proteins were held out from
training, the concept-centric headline at matched feature count (distinct concepts recovered,
associated and replicated per source, with intervals), then per source the features associated
and per category, readable at 80 columns."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plmsae.analysis.assocdir import (
    CATEGORY_NAMES,
    PRECISION_MIN,
    Q_MAX,
    RESIDUE_F1_MIN,
    SOURCE_NAMES,
)
from plmsae.analysis.associate import AssociateResult, SourceCounts
from plmsae.analysis.overlap import overlap_sentence


def show_associate(result: AssociateResult, console: Console) -> None:
    """Print an :class:`AssociateResult`: the split and the training overlap, the headline
    table (rows: measures, columns: sources), the features table, and where the files are."""
    console.print(
        f"Proteins: {result.n_proteins:,} ({result.n_validation:,} validation, "
        f"{result.n_test:,} test; {result.split_method} split); {result.level}-level SAE."
    )
    if result.training_overlap:
        console.print(overlap_sentence(result.training_overlap))
    if result.reused:
        console.print(f"Reused from the earlier run in --out: {', '.join(result.reused)}.")
    if result.headline.get("sources"):
        console.print(_headline_table(result))
    if result.sources:
        console.print(_table(result.sources))
        console.print(
            f"Associated: q < {Q_MAX} and precision >= {PRECISION_MIN} on test "
            f"(residue concepts: F1 >= {RESIDUE_F1_MIN}). Distinct features: redundancy groups "
            "(same proteins or same decoder direction)."
        )
    console.print(f"Association directory: {escape(str(result.out))}")


def _headline_table(result: AssociateResult) -> Table:
    """Distinct concepts per source at matched size: "median [2.5 %, 97.5 %]"."""
    head = result.headline
    n = head.get("matched_n_features", 0)
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"Concepts found at {n:,} features per source (95% interval)",
        title_justify="left",
    )
    table.add_column("")
    sources = head["sources"]
    for source in sources:
        table.add_column(SOURCE_NAMES.get(source, source), justify="right")
    for m in head.get("measures", []):
        cells = []
        for block in sources.values():
            v = block.get("values", {}).get(m["key"])
            cells.append("-" if v is None else _interval(v["matched"], v["matched_ci"]))
        table.add_row(m["label"], *cells)
    return table


def _interval(value: float, ci: list[float]) -> str:
    return f"{value:,.0f} [{ci[0]:,.0f}-{ci[1]:,.0f}]"


def _table(sources: dict[str, SourceCounts]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("all features")
    for source in sources:
        table.add_column(SOURCE_NAMES.get(source, source), justify="right")
    table.add_row("features", *(f"{c.n_features:,}" for c in sources.values()))
    table.add_row(
        "distinct features",
        *("-" if c.unique_features is None else f"{c.unique_features:,}" for c in sources.values()),
    )
    table.add_row("associated", *(_count(c.n_features_associated, c) for c in sources.values()))
    table.add_row("distinct concepts", *(f"{c.n_concepts_associated:,}" for c in sources.values()))
    categories = dict.fromkeys(k for c in sources.values() for k in c.by_category)
    order = list(CATEGORY_NAMES)
    for cat in sorted(categories, key=lambda k: (order.index(k) if k in order else 99, k)):
        table.add_row(
            f"  {CATEGORY_NAMES.get(cat, cat)}",
            *(
                _count(c.by_category[cat], c) if cat in c.by_category else "-"
                for c in sources.values()
            ),
        )
    return table


def _count(n: int, source: SourceCounts) -> str:
    frac = n / source.n_features if source.n_features else 0.0
    return f"{n:,} ({frac:.1%})"
