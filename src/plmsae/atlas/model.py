"""The atlas data model: what the report, annotate, the demo and compare read from an
association directory.

:func:`load_atlas` reads an ASSOC_DIR through :class:`plmsae.analysis.assocdir.AssocDir` (and the
explain stage's files through :mod:`plmsae.interpret.explanations`) into an :class:`Atlas`: the
SAE features only (with their specificity columns, derived from density when the run predates
them), one best association row per (feature, concept), explanations and scores keyed by
feature, and the thresholds that decide what counts as "associated". :func:`headline` reads the
concept-centric comparison of SAE, neurons and random directions from summary.json (or what an
older summary.json has of it).
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
    SOURCES,
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


#: what kind of feature it is (features.parquet ``kind``): one that fires on a subset of proteins,
#: one that tracks residue chemistry (an amino acid, a terminus), one that fires on most proteins
KINDS = ("specific", "sequence-chemistry", "dense", "dead")
#: a feature active on at least this fraction of proteins is "dense" (not specific), whatever
#: features.parquet says
DENSE_MIN = 0.5
#: specificity columns of features.parquet and the value each takes when a run predates them
SPECIFICITY_DEFAULTS: dict[str, object] = {
    "residue_density": np.nan,
    "top_amino_acid": "",
    "top_amino_acid_share": np.nan,
    "position_bias": "",
    "position_mean": np.nan,
    "best_concept": "",
    "best_concept_name": "",
    "best_concept_category": "",
    "best_concept_f1": np.nan,
    "best_concept_q": np.nan,
    "kind": "",
    "plain_label": "",
    "group": -1,
}


@dataclass
class Atlas:
    """What an association directory holds, as loaded for the report (SAE features only).

    proteins: rows in activation-matrix order (``id, split, cluster, length, name, organism``).
    features: one row per SAE feature (``feature, density, max_activation, top_proteins`` and
    the specificity columns of :data:`SPECIFICITY_DEFAULTS`; ``kind`` always set).
    has_specificity: whether features.parquet had the specificity columns (else ``kind`` comes
    from density alone and ``plain_label`` is empty).
    associations: best row per (feature, concept), sorted by feature then q-value, with the
    concept's ``name`` and readable ``category_name`` joined in.
    residue_associations: best row per (feature, concept), by feature then F1 (may be empty).
    explanations: feature -> explanations.parquet row; scores: feature -> method -> row.
    activations: float32 CSC [n_proteins, n_features] (None when not loaded).
    annotations: bool CSC [n_proteins, n_concepts] (None when not loaded or absent).
    significant: every associated SAE row (all thresholds), for annotate's threshold check.
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
    significant: pd.DataFrame | None = None
    has_specificity: bool = False

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
    assoc = assoc[assoc["source"] == "sae"]
    features = d.features("sae")
    proteins = d.proteins
    if "organism" not in proteins.columns:
        proteins = proteins.assign(organism="")
    atlas = Atlas(
        path=d.path,
        run=d.run,
        summary=d.summary,
        proteins=proteins,
        concepts=d.concepts,
        features=with_specificity(features),
        has_specificity="kind" in features.columns,
        associations=_best_rows(assoc, d.concepts),
        residue_associations=_best_residue_rows(d.residue_associations, d.concepts),
        explanations=_explanations(d.path),
        scores=_scores(d.path),
        q_max=q_max,
        min_precision=float(_first(settings, ("min_precision", "precision_min"), PRECISION_MIN)),
        residue_f1_min=float(_first(settings, ("residue_f1_min",), RESIDUE_F1_MIN)),
    )
    prec = assoc["precision"] if "precision" in assoc.columns else 1.0
    atlas.significant = assoc[(assoc["q_value"] < q_max) & (prec >= atlas.min_precision)]
    if activations:
        atlas.activations = d.activations("sae")
        if (d.path / ANNOTATIONS).exists():
            atlas.annotations = d.annotations.tocsc()
            atlas.concept_index = d.concept_index
    return atlas


def with_specificity(features: pd.DataFrame) -> pd.DataFrame:
    """features.parquet rows with every specificity column (defaults where a run predates
    them) and ``kind`` set: the file's value, else ``dead`` (never active), ``dense`` (active on
    at least :data:`DENSE_MIN` of the proteins) or ``specific``."""
    features = features.copy()
    for col, default in SPECIFICITY_DEFAULTS.items():
        if col not in features.columns:
            features[col] = default
        elif isinstance(default, str):
            features[col] = features[col].fillna("").astype(str)
    density = features["density"].to_numpy(dtype=np.float64)
    max_act = features["max_activation"].to_numpy(dtype=np.float64)
    fallback = np.where(
        ~(np.nan_to_num(density) > 0) | ~(np.nan_to_num(max_act) > 0),
        "dead",
        np.where(density >= DENSE_MIN, "dense", "specific"),
    )
    kind = features["kind"].to_numpy(dtype=object)
    features["kind"] = np.where(np.isin(kind, KINDS), kind, fallback)
    features["group"] = features["group"].fillna(-1).astype(np.int64)
    return features


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


# --------------------------------------------------------------------------------------------
# The headline: concepts found by SAE features vs neurons vs random directions
# --------------------------------------------------------------------------------------------

#: why counting associated features favours the baselines (shown next to that figure)
FRACTION_CAVEAT = (
    "The share of features with an association favours the baselines: an SAE splits what it "
    "knows over many narrow, often redundant features, many too rare to pass a test, while each "
    "of the few neurons or random directions mixes several concepts and so usually passes one. "
    "Counting distinct concepts with the same number of features compares what each set of "
    "directions finds."
)
_LEGACY_NOTE = (
    "This association run predates the size-matched headline (concepts recovered and replicated, "
    "with confidence intervals): re-run `plmsae associate` to get it. Shown: distinct concepts "
    "associated (the SAE also with as many features as the baselines, median of 20 draws) and "
    "concepts recovered by one feature at F1 ≥ 0.5 (not size-matched)."
)


def headline(summary: dict) -> dict | None:
    """The concept-centric comparison of summary.json, one shape for every reader.

    Returns ``{legacy, note, caveat, matched_n_features, draws, sources, n_features, rows,
    secondary}``: ``rows`` = one per measure ``{key, label, description, cells: {source: {value,
    ci, all, matched}}}`` (``value``: the size-matched figure when there is one, else the figure
    over all features; ``ci``: ``(lo, hi)`` or None); ``secondary``: per source the fraction of
    features associated (with ``unique_features`` when redundancy groups were counted).
    ``legacy`` is True when summary.json predates the ``headline`` block (built from its
    ``concepts`` blocks); None when it has neither.
    """
    if not isinstance(summary, dict):
        return None
    sources = [s for s in SOURCES if isinstance(summary.get(s), dict)]
    block = summary.get("headline")
    if isinstance(block, dict) and isinstance(block.get("sources"), dict):
        out = _headline_block(block, sources)
    elif any(isinstance(summary[s].get("concepts"), dict) for s in sources):
        out = _legacy_headline(summary, sources)
    else:
        return None
    out["caveat"] = FRACTION_CAVEAT
    out["secondary"] = {
        s: {
            "n_features": summary[s].get("n_features"),
            "n_features_associated": summary[s].get("n_features_associated"),
            "fraction_associated": _frac(summary[s]),
            "unique_features": ((block or {}).get("sources") or {})
            .get(s, {})
            .get("unique_features")
            if isinstance(block, dict)
            else None,
        }
        for s in sources
    }
    return out


def _frac(block: dict) -> float | None:
    f = block.get("fraction_associated")
    if isinstance(f, (int, float)):
        return float(f)
    n, m = block.get("n_features"), block.get("n_features_associated")
    return m / n if isinstance(n, int) and n and isinstance(m, (int, float)) else None


def _number(x: object) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x == x else None


def _headline_block(block: dict, present: list[str]) -> dict:
    srcs = block["sources"]
    sources = [s for s in SOURCES if isinstance(srcs.get(s), dict)] or present
    rows = []
    for m in block.get("measures") or []:
        if not isinstance(m, dict) or "key" not in m:
            continue
        cells = {}
        for s in sources:
            v = (srcs.get(s, {}).get("values") or {}).get(m["key"])
            v = v if isinstance(v, dict) else {"all": v}
            matched, everything = _number(v.get("matched")), _number(v.get("all"))
            ci = v.get("matched_ci") or v.get("ci")
            cells[s] = {
                "value": matched if matched is not None else everything,
                "ci": tuple(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None,
                "all": everything,
                "matched": matched is not None,
            }
        rows.append(
            {
                "key": str(m["key"]),
                "label": str(m.get("label") or m["key"]),
                "description": str(m.get("description") or ""),
                "cells": cells,
            }
        )
    return {
        "legacy": False,
        "note": str(block.get("note") or ""),
        "matched_n_features": block.get("matched_n_features"),
        "draws": block.get("draws"),
        "sources": sources,
        "n_features": {s: srcs[s].get("n_features") for s in sources if s in srcs},
        "rows": rows,
    }


def _legacy_headline(summary: dict, sources: list[str]) -> dict:
    def cells(key: str, matched_key: str | None) -> dict:
        out = {}
        for s in sources:
            c = summary[s].get("concepts") or {}
            everything = _number(c.get(key))
            matched = _number(c.get(matched_key)) if matched_key else None
            out[s] = {
                "value": matched if matched is not None else everything,
                "ci": None,
                "all": everything,
                "matched": matched is not None,
            }
        return out

    matched_n = next(
        (
            summary[s]["concepts"].get("matched_n_features")
            for s in sources
            if isinstance(summary[s].get("concepts"), dict)
            and summary[s]["concepts"].get("matched_n_features")
        ),
        None,
    )
    return {
        "legacy": True,
        "note": _LEGACY_NOTE,
        "matched_n_features": matched_n,
        "draws": 20 if matched_n else None,
        "sources": sources,
        "n_features": {s: summary[s].get("n_features") for s in sources},
        "rows": [
            {
                "key": "concepts_associated",
                "label": "distinct concepts associated",
                "description": "concepts with at least one associated feature "
                "(q < 0.05, precision ≥ 0.5 on test)",
                "cells": cells("n_concepts_associated", "n_concepts_associated_matched"),
            },
            {
                "key": "concepts_recovered",
                "label": "concepts recovered (one feature F1 ≥ 0.5)",
                "description": "concepts that a single feature predicts with F1 ≥ 0.5 on test",
                "cells": cells("n_concepts_f1_05", None),
            },
        ],
    }


def headline_cell(cell: dict | None, digits: int = 0) -> str:
    """``121 [110–133]`` (value and CI), ``300*`` when not size-matched, ``–`` when missing."""
    if not cell or cell.get("value") is None:
        return "–"
    text = f"{cell['value']:,.{digits}f}"
    ci = cell.get("ci")
    if ci and all(isinstance(x, (int, float)) for x in ci):
        text += f" [{ci[0]:,.{digits}f}–{ci[1]:,.{digits}f}]"
    return text
