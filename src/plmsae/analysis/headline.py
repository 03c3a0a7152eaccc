"""The concept-centric headline of ``summary.json``: how many distinct concepts each source finds,
compared at equal feature count.

Counting features that have an association rewards duplicates (many SAE features are near-copies
of each other) and dense baseline directions that pass the test for a general term, so the
headline counts concepts instead:

- ``concepts_recovered``: protein-level concepts that some single feature recovers at F1 >= 0.5
  on the test split (among tested pairs);
- ``concepts_associated``: distinct concepts with a feature at q < 0.05 and precision >= 0.5 on
  test;
- ``concepts_replicated``: concepts associated on test (threshold chosen on validation) AND
  associated with the same feature on validation with the roles swapped (threshold chosen on
  test). The two splits are disjoint sets of homology clusters;
- ``residue_concepts_recovered`` (residue-level SAEs): residue concepts (UniProt sites and the
  built-in sequence concepts) some feature recovers at F1 >= 0.5 per residue on test.

Each source is counted with all its features (``all``) and at the size of the smallest source
(``matched``, ``matched_n_features``): a source with more features is counted on ``draws`` random
subsets of that many features (median, and the 2.5 / 97.5 percentiles as ``matched_ci``); a source
of the matched size keeps its plain value, with a feature-bootstrap interval: the 2.5 / 97.5
percentiles of the counts over ``draws`` resamples of its features with replacement, shifted by
(plain value - bootstrap median), because resampling with replacement repeats features and so
undercounts distinct concepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from plmsae.analysis.assocdir import PRECISION_MIN, Q_MAX, RESIDUE_F1_MIN, SOURCE_NAMES

DRAWS = 50
RECOVERED_F1 = 0.5
MEASURES = [
    {
        "key": "concepts_recovered",
        "label": f"concepts recovered (one feature F1 ≥ {RECOVERED_F1})",
        "description": "protein-level concepts (GO terms, families, locations) that a single "
        f"feature predicts at F1 ≥ {RECOVERED_F1} on the test split",
    },
    {
        "key": "concepts_associated",
        "label": "distinct concepts associated",
        "description": f"distinct concepts with a feature at q < {Q_MAX} and precision ≥ "
        f"{PRECISION_MIN} on the test split",
    },
    {
        "key": "concepts_replicated",
        "label": "concepts that replicate",
        "description": "concepts associated on test AND associated with the same feature on "
        "validation when the two splits (disjoint homology clusters) swap roles",
    },
]
RESIDUE_MEASURE = {
    "key": "residue_concepts_recovered",
    "label": f"residue concepts recovered (F1 ≥ {RESIDUE_F1_MIN})",
    "description": "residue-level concepts (sequence properties, UniProt sites) that a single "
    f"feature recovers per residue at F1 ≥ {RESIDUE_F1_MIN} on the test split",
}


def measure_pairs(assoc: pd.DataFrame, residue: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """The (feature, concept) pairs that count for each measure, from one source's rows of
    associations.parquet (with the ``replicated`` column) and residue_associations.parquet."""
    sig = (assoc["q_value"] < Q_MAX) & (assoc["precision"] >= PRECISION_MIN)
    rep = assoc["replicated"].fillna(False).astype(bool) if "replicated" in assoc else False
    out = {
        "concepts_recovered": assoc.loc[assoc["f1"] >= RECOVERED_F1, ["feature", "concept"]],
        "concepts_associated": assoc.loc[sig, ["feature", "concept"]],
        "concepts_replicated": assoc.loc[sig & rep, ["feature", "concept"]],
    }
    if residue is not None:
        out["residue_concepts_recovered"] = residue.loc[
            residue["f1"] >= RESIDUE_F1_MIN, ["feature", "concept"]
        ]
    return out


class _Counter:
    """Distinct concepts among the pairs of a subset of features, fast for many subsets."""

    def __init__(self, pairs: pd.DataFrame, n_features: int):
        self.feature = pairs["feature"].to_numpy(dtype=np.int64)
        self.concept = pd.factorize(pairs["concept"])[0]
        self.n_concepts = int(self.concept.max()) + 1 if len(self.concept) else 0
        self.n_features = n_features

    def count(self, chosen: np.ndarray | None = None) -> int:
        if chosen is None:
            return int(len(np.unique(self.concept)))
        mask = np.zeros(self.n_features, bool)
        mask[chosen] = True
        return int(np.count_nonzero(np.bincount(self.concept[mask[self.feature]], minlength=1)))


def matched_values(
    pairs: dict[str, pd.DataFrame], n_features: int, n_match: int, draws: int, seed: int
) -> dict[str, dict[str, Any]]:
    """``{measure: {all, matched, matched_ci}}`` of one source (see the module docstring)."""
    counters = {k: _Counter(v, n_features) for k, v in pairs.items()}
    rng = np.random.default_rng(seed)
    subsets = n_features > n_match
    chosen = [
        rng.choice(n_features, n_match, replace=False)
        if subsets
        else rng.integers(0, n_features, n_features)
        for _ in range(draws)
    ]
    out: dict[str, dict[str, Any]] = {}
    for key, c in counters.items():
        plain = c.count()
        counts = np.array([c.count(ch) for ch in chosen], dtype=np.float64)
        if not len(counts) or n_features == 0:
            out[key] = {"all": plain, "matched": float(plain), "matched_ci": [plain, plain]}
            continue
        lo, med, hi = np.percentile(counts, [2.5, 50, 97.5])
        if subsets:
            out[key] = {"all": plain, "matched": float(med), "matched_ci": [float(lo), float(hi)]}
        else:
            shift = plain - med
            out[key] = {
                "all": plain,
                "matched": float(plain),
                "matched_ci": [float(lo + shift), float(hi + shift)],
            }
    return out


def headline(
    assoc: pd.DataFrame,
    residue: pd.DataFrame | None,
    n_features: dict[str, int],
    *,
    unique_features: dict[str, int] | None = None,
    fraction_associated: dict[str, float] | None = None,
    draws: int = DRAWS,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``headline`` block of summary.json. ``assoc``: associations.parquet rows of every
    source (with ``replicated``); ``residue``: residue_associations.parquet rows, or None for a
    protein-level SAE (no residue measure); ``n_features``: source -> number of features."""
    n_match = min(n_features.values()) if n_features else 0
    measures = MEASURES + ([RESIDUE_MEASURE] if residue is not None else [])
    sources: dict[str, Any] = {}
    for i, (src, n) in enumerate(n_features.items()):
        pairs = measure_pairs(
            assoc[assoc["source"] == src],
            residue[residue["source"] == src] if residue is not None else None,
        )
        sources[src] = {
            "n_features": int(n),
            "matched_by": f"median of {draws} random subsets of {n_match:,} features"
            if n > n_match
            else f"all features; CI from {draws} feature bootstraps",
            "values": matched_values(pairs, n, n_match, draws, seed + i),
        }
        if unique_features is not None and src in unique_features:
            sources[src]["unique_features"] = int(unique_features[src])
        if fraction_associated is not None and src in fraction_associated:
            sources[src]["fraction_associated"] = float(fraction_associated[src])
    return {
        "note": headline_note(sources, n_match, draws),
        "matched_n_features": int(n_match),
        "draws": int(draws),
        "measures": measures,
        "sources": sources,
    }


def headline_note(sources: dict[str, Any], n_match: int, draws: int) -> str:
    """2-4 sentences for a biologist: what is counted, how sizes are matched, why the fraction of
    features associated favours the baselines."""
    parts = [
        "These figures count distinct biological concepts, not features: a concept counts when "
        f"one feature predicts its proteins on the test split (F1 ≥ {RECOVERED_F1}), is "
        f"significantly enriched among them (q < {Q_MAX}, precision ≥ {PRECISION_MIN}), or stays "
        "enriched when the two disjoint sets of homology clusters swap roles (replicates).",
        f"Every source is compared at the same feature count ({n_match:,}; a larger dictionary is "
        f"counted on {draws} random subsets of that size, with 95 % intervals).",
    ]
    sae = sources.get("sae", {})
    others = [s for s in sources if s != "sae" and "fraction_associated" in sources[s]]
    if "unique_features" in sae and "fraction_associated" in sae and others:
        base = ", ".join(
            f"{SOURCE_NAMES.get(s, s)} {sources[s]['fraction_associated']:.0%}" for s in others
        )
        parts.append(
            f"The per-feature fraction associated (SAE {sae['fraction_associated']:.0%} vs "
            f"{base}) favours the baselines: many SAE features are near-copies of each other "
            f"({sae['unique_features']:,} distinct of {sae['n_features']:,}), and a dense "
            "baseline direction passes the test for a general term easily."
        )
    return " ".join(parts)
