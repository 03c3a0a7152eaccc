"""The atlas data model: what the report and annotate read from an association directory.

:func:`load_atlas` reads an ASSOC_DIR through :class:`plmsae.analysis.assocdir.AssocDir` (and the
explain stage's files through :mod:`plmsae.interpret.explanations`) into an :class:`Atlas`: the
SAE features only, one best association row per (feature, concept), explanations and scores keyed
by feature, and the thresholds that decide what counts as "associated".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from plmsae._util import InputError
from plmsae.analysis.assocdir import (
    ANNOTATIONS,
    CATEGORY_NAMES,
    PRECISION_MIN,
    Q_MAX,
    RESIDUE_F1_MIN,
    RUN,
    AssocDir,
)

if TYPE_CHECKING:  # heavy imports stay lazy: `plmsae annotate` must start fast
    import pandas as pd
    import scipy.sparse as sp

#: association columns the report shows; filled with NaN when an older file lacks them
_ASSOC_SHOWN = (
    "precision",
    "recall",
    "f1",
    "n_both",
    "n_active",
    "n_concept",
    "threshold",
    "auroc",
)


@dataclass
class Atlas:
    """What an association directory holds, as loaded for the report (SAE features only).

    proteins: rows in activation-matrix order (``id, split, cluster, length, name``).
    features: one row per SAE feature (``feature, density, max_activation, top_proteins``).
    associations: best row per (feature, concept), sorted by feature then q-value, with the
    concept's ``name`` and readable ``category_name`` joined in.
    residue_associations: best row per (feature, concept), by feature then F1 (may be empty).
    explanations: feature -> explanations.parquet row; scores: feature -> method -> row.
    activations: float32 CSC [n_proteins, n_features] (None when not loaded).
    annotations: bool CSC [n_proteins, n_concepts] (None when not loaded or absent).
    """

    path: Path
    run: dict
    summary: dict
    proteins: pd.DataFrame
    concepts: pd.DataFrame
    features: pd.DataFrame
    associations: pd.DataFrame
    residue_associations: pd.DataFrame
    explanations: dict[int, dict]
    scores: dict[int, dict[str, dict]]
    activations: sp.csc_matrix | None = None
    annotations: sp.csc_matrix | None = None
    q_max: float = Q_MAX
    min_precision: float = PRECISION_MIN
    residue_f1_min: float = RESIDUE_F1_MIN
    concept_index: dict[str, int] = field(default_factory=dict)

    def is_significant(self, row: dict) -> bool:
        """Whether an association row counts: q below ``q_max`` and precision at least
        ``min_precision``."""
        prec = row.get("precision")
        prec = 0.0 if prec is None or prec != prec else prec
        return bool(row["q_value"] < self.q_max and prec >= self.min_precision)

    def is_residue_hit(self, row: dict) -> bool:
        """Whether a residue association row counts: F1 at least ``residue_f1_min``."""
        f1 = row.get("f1")
        return f1 is not None and f1 == f1 and f1 >= self.residue_f1_min

    def explanation(self, feature: int) -> dict:
        """``{label, description, is_llm, explainer, model}`` of a feature ('' when not
        explained)."""
        e = self.explanations.get(int(feature))
        if not e:
            return {"label": "", "description": "", "is_llm": None, "explainer": "", "model": ""}
        is_llm = e.get("is_llm")
        return {
            "label": str(e.get("label") or ""),
            "description": str(e.get("description") or ""),
            "is_llm": None if is_llm is None else bool(is_llm),
            "explainer": str(e.get("explainer") or ""),
            "model": str(e.get("model") or ""),
        }


def load_atlas(
    assoc_dir: str | Path, activations: bool = True, significant_only: bool = False
) -> Atlas:
    """Read an association directory (format in docs/design.md, stages 4 and 5).

    ``activations=False`` skips the activation and annotation matrices and
    ``significant_only=True`` reads only the SAE rows of associations.parquet below q_max
    (what annotate needs, fast even for a large atlas). explanations.parquet and scores.parquet
    are optional (the explain stage may not have run). Returns an :class:`Atlas`.
    """
    d = AssocDir(assoc_dir)
    if not (d.path / RUN).exists():
        raise InputError(
            f"{RUN} is missing.",
            path=d.path / RUN,
            fix="point at a finished association directory (written by `plmsae associate`).",
        )
    settings = d.summary.get("settings", {}) if isinstance(d.summary, dict) else {}
    q_max = float(_first(settings, ("q_max",), Q_MAX))
    if significant_only:
        assoc = d.read_associations("sae", q_max)
    else:
        assoc = d.associations
    atlas = Atlas(
        path=d.path,
        run=d.run,
        summary=d.summary,
        proteins=d.proteins,
        concepts=d.concepts,
        features=d.features("sae"),
        associations=_best_rows(assoc[assoc["source"] == "sae"], d.concepts),
        residue_associations=_best_residue_rows(d.residue_associations, d.concepts),
        explanations=_explanations(d.path),
        scores=_scores(d.path),
        q_max=q_max,
        min_precision=float(_first(settings, ("min_precision", "precision_min"), PRECISION_MIN)),
        residue_f1_min=float(_first(settings, ("residue_f1_min",), RESIDUE_F1_MIN)),
    )
    if activations:
        atlas.activations = d.activations("sae")
        if (d.path / ANNOTATIONS).exists():
            atlas.annotations = d.annotations.tocsc()
            atlas.concept_index = d.concept_index
    return atlas


def _first(d: dict, keys: Iterable[str], default: float) -> float:
    for k in keys:
        if isinstance(d.get(k), (int, float)):
            return d[k]
    return default


def _best_rows(assoc: pd.DataFrame, concepts: pd.DataFrame) -> pd.DataFrame:
    """One row per (feature, concept) of an associations table: the threshold with the smallest
    q (then the best F1), with the concept's ``name`` and ``category_name`` joined in; sorted by
    feature, then q-value."""
    assoc = assoc.copy()
    for col in _ASSOC_SHOWN:
        if col not in assoc.columns:
            assoc[col] = np.nan
    if "category" not in assoc.columns:
        assoc = assoc.merge(concepts[["concept", "category"]], on="concept", how="left")
    assoc["_f1"] = assoc["f1"].fillna(-1.0)
    assoc = assoc.sort_values(
        ["feature", "q_value", "_f1"], ascending=[True, True, False], kind="stable"
    )
    assoc = assoc.drop_duplicates(["feature", "concept"]).drop(columns="_f1")
    assoc = assoc.merge(concepts[["concept", "name"]], on="concept", how="left")
    assoc["name"] = assoc["name"].fillna("").astype(str)
    assoc["category_name"] = (
        assoc["category"].map(CATEGORY_NAMES).fillna(assoc["category"].astype(str))
    )
    return assoc.sort_values(["feature", "q_value"], kind="stable").reset_index(drop=True)


def _best_residue_rows(res: pd.DataFrame, concepts: pd.DataFrame) -> pd.DataFrame:
    """The SAE rows of residue_associations.parquet, best F1 per (feature, concept), named."""
    res = res[res["source"] == "sae"]
    sort_col = "f1" if "f1" in res.columns else "concept"
    res = res.sort_values(["feature", sort_col], ascending=[True, sort_col == "concept"])
    res = res.drop_duplicates(["feature", "concept"]).merge(
        concepts[["concept", "name"]], on="concept", how="left"
    )
    res["name"] = res["name"].fillna(res["concept"])
    return res


def _explanations(path: Path) -> dict[int, dict]:
    from plmsae.interpret.explanations import read_explanations

    return {int(r["feature"]): r for r in read_explanations(path, "sae").to_dict("records")}


def _scores(path: Path) -> dict[int, dict[str, dict]]:
    from plmsae.interpret.explanations import read_scores

    scores: dict[int, dict[str, dict]] = {}
    for r in read_scores(path, "sae").to_dict("records"):
        scores.setdefault(int(r["feature"]), {})[str(r["method"])] = r
    return scores


def group_records(df: pd.DataFrame, limit: int | None = None) -> dict[int, list[dict]]:
    """Rows of a table as ``{feature: [row dict, ...]}`` in table order (the first ``limit`` per
    feature when given): plain Python records, because per-page pandas access is far too slow
    for 20,000 pages."""
    out: dict[int, list[dict]] = {}
    for r in df.to_dict("records"):
        lst = out.setdefault(int(r["feature"]), [])
        if limit is None or len(lst) < limit:
            lst.append(r)
    return out
