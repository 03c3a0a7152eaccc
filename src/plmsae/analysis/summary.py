"""The per-source counts of ``summary.json`` (features associated per category, concepts tested
and found); the concept-centric headline is in :mod:`.headline`.

Definitions (docs/design.md, stage 4):
- ``n_concepts``: concepts of the category carried by at least one protein of the store;
- ``n_concepts_tested``: concepts that pass the filter (>= ``min_concept`` proteins in the
  population, at most ``max_concept_fraction`` of it on validation and on test), whether or not
  a feature then has a tested pair with them;
- ``n_concepts_with_tested_pair``: tested concepts that some feature of the source has a tested
  pair with (F1 > 0 on validation, >= ``min_both`` on test);
- ``n_concepts_matched``: concepts with an associated feature of the source.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from plmsae.analysis.assocdir import PRECISION_MIN, Q_MAX, RESIDUE_F1_MIN


def summarize(
    n_features: dict[str, int],
    assoc: pd.DataFrame,
    pair_counts: pd.DataFrame,
    residue_table: pd.DataFrame,
    concepts: pd.DataFrame,
    tested: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The per-source blocks of ``summary.json``: features associated overall and per category
    (protein-level: q < Q_MAX and precision >= PRECISION_MIN; residue: F1 >= RESIDUE_F1_MIN)
    and the distinct concepts found (:func:`concept_coverage`). ``assoc``: rows of
    associations.parquet, at least the associated ones and those with F1 >= 0.5 (what the
    statistics step keeps in memory); ``pair_counts``: :func:`tested_pair_counts` of the whole
    table. ``tested``: category -> number of concepts that pass the filter (default: those with
    a tested pair)."""
    sig = assoc[(assoc["q_value"] < Q_MAX) & (assoc["precision"] >= PRECISION_MIN)]
    res_hit = (
        residue_table[residue_table["f1"] >= RESIDUE_F1_MIN]
        if len(residue_table)
        else residue_table
    )
    counts = pair_counts.set_index(["source", "category"])
    res_counts = tested_pair_counts(residue_table).set_index(["source", "category"])
    cats = [c for c in dict.fromkeys(concepts["category"]) if c != "residue"]
    n_concepts = concepts["category"].value_counts()
    out: dict[str, Any] = {}
    for s, n in n_features.items():
        s_sig = sig[sig["source"] == s]
        by_cat = {
            c: _category_block(
                _counts(counts, s, c),
                s_sig[s_sig["category"] == c],
                n,
                n_concepts.get(c, 0),
                None if tested is None else tested.get(c, 0),
            )
            for c in cats
        }
        assoc_feats = set(s_sig["feature"].tolist())
        if len(residue_table):
            r = res_hit[res_hit["source"] == s]
            by_cat["residue"] = _category_block(
                _counts(res_counts, s, "residue"),
                r,
                n,
                n_concepts.get("residue", 0),
                None if tested is None else tested.get("residue"),
            ) | {"criterion": f"F1 >= {RESIDUE_F1_MIN} on test (InterPLM)"}
            assoc_feats |= set(r["feature"].tolist())
        out[s] = {
            "n_features": n,
            "n_features_associated": len(assoc_feats),
            "fraction_associated": len(assoc_feats) / n if n else 0.0,
            "by_category": by_cat,
        }
    coverage = concept_coverage(assoc, n_features)
    for s in out:
        out[s]["concepts"] = coverage[s]
    return out


def tested_pair_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per (source, category) of ``table`` (rows of associations.parquet or
    residue_associations.parquet, every tested pair): ``n_pairs_tested`` and
    ``n_concepts_with_tested_pair`` (distinct concepts among those pairs)."""
    g = table.groupby(["source", "category"], sort=False)["concept"]
    return pd.DataFrame(
        {"n_pairs_tested": g.size(), "n_concepts_with_tested_pair": g.nunique()}
    ).reset_index()


def _counts(counts: pd.DataFrame, source: str, category: str) -> tuple[int, int]:
    """(pairs tested, concepts with a tested pair) of one source and category of ``counts``
    (:func:`tested_pair_counts` indexed by source and category); zeros when it has none."""
    if (source, category) not in counts.index:
        return 0, 0
    row = counts.loc[(source, category)]
    return int(row["n_pairs_tested"]), int(row["n_concepts_with_tested_pair"])


def _category_block(
    tested: tuple[int, int], hits: pd.DataFrame, n: int, n_concepts: int, n_tested: int | None
) -> dict:
    """summary.json counts of one source and category: ``tested`` (pairs, concepts with a
    tested pair), ``hits`` (the associated rows among them)."""
    n_pairs, with_pair = tested
    return {
        "n_features_associated": int(hits["feature"].nunique()),
        "fraction_associated": hits["feature"].nunique() / n if n else 0.0,
        "n_concepts": int(n_concepts),
        "n_concepts_tested": int(with_pair if n_tested is None else n_tested),
        "n_concepts_with_tested_pair": with_pair,
        "n_concepts_matched": int(hits["concept"].nunique()),
        "n_pairs_tested": n_pairs,
        "n_pairs_associated": int(len(hits)),
    }


def concept_coverage(
    assoc: pd.DataFrame, n_features: dict[str, int], *, draws: int = 20, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Which concepts each source finds, counted per concept rather than per feature.

    ``assoc``: rows of ``associations.parquet`` (columns source, feature, concept, q_value,
    precision, f1). ``n_features``: source -> number of features. Per source:
    ``n_concepts_associated`` (distinct concepts with a feature at q < 0.05 and precision >= 0.5),
    ``n_concepts_f1_05`` (concepts some feature recovers at F1 >= 0.5 on test). A source with
    more features than the smallest one is also counted on ``draws`` seeded random subsets of
    that many features, features without any association included:
    ``n_concepts_associated_matched`` (median) and ``matched_n_features``. (The headline of
    :mod:`.headline` gives the same counts with intervals, and for replicated concepts.)
    """
    from plmsae.analysis.headline import matched_values, measure_pairs

    n_match = min(n_features.values()) if n_features else 0
    out: dict[str, dict[str, Any]] = {}
    for i, (source, n) in enumerate(n_features.items()):
        pairs = measure_pairs(assoc[assoc["source"] == source], None)
        pairs = {k: pairs[k] for k in ("concepts_associated", "concepts_recovered")}
        vals = matched_values(pairs, n, n_match, draws if n > n_match > 0 else 0, seed + i)
        block: dict[str, Any] = {
            "n_concepts_associated": vals["concepts_associated"]["all"],
            "n_concepts_f1_05": vals["concepts_recovered"]["all"],
        }
        if n > n_match > 0:
            block["n_concepts_associated_matched"] = vals["concepts_associated"]["matched"]
            block["matched_n_features"] = n_match
        out[source] = block
    return out


def category_tested(concepts: pd.DataFrame, mask: np.ndarray) -> dict[str, int]:
    """category -> number of concepts of ``concepts`` (rows of concepts.parquet) in ``mask``."""
    return {str(c): int(n) for c, n in concepts.loc[mask, "category"].value_counts().items()}
