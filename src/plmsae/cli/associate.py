"""What ``plmsae associate`` prints: per source, the features associated, the distinct concepts
found and the features associated per category, readable at 80 columns."""

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


def show_associate(result: AssociateResult, console: Console) -> None:
    """Print an :class:`AssociateResult`: the split, a table (rows: counts and categories,
    columns: sources), the size-matched concept count, and where the files are."""
    console.print(
        f"Proteins: {result.n_proteins:,} ({result.n_validation:,} validation, "
        f"{result.n_test:,} test; {result.split_method} split); {result.level}-level SAE."
    )
    if result.reused:
        console.print(f"Reused from the earlier run in --out: {', '.join(result.reused)}.")
    if result.sources:
        console.print(_table(result.sources))
        console.print(
            f"Associated: q < {Q_MAX} and precision >= {PRECISION_MIN} on test "
            f"(residue concepts: F1 >= {RESIDUE_F1_MIN})."
        )
    for note in _matched_notes(result.sources):
        console.print(note)
    console.print(f"Association directory: {escape(str(result.out))}")


def _table(sources: dict[str, SourceCounts]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("")
    for source in sources:
        table.add_column(SOURCE_NAMES.get(source, source), justify="right")
    table.add_row("features", *(f"{c.n_features:,}" for c in sources.values()))
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


def _matched_notes(sources: dict[str, SourceCounts]) -> list[str]:
    """A bigger dictionary finds more concepts by size alone: say what equal size gives."""
    matched = {
        s: c
        for s, c in sources.items()
        if c.n_concepts_associated_matched is not None and c.matched_n_features is not None
    }
    if not matched:
        return []
    size = next(iter(matched.values())).matched_n_features
    counts = ", ".join(
        f"{SOURCE_NAMES.get(s, s)} {c.n_concepts_associated_matched:g}" for s, c in matched.items()
    )
    return [
        f"Distinct concepts at equal size ({size:,} features, median of random subsets): {counts}."
    ]
