"""What ``plmsae explain`` adds to an association directory: file names, columns, one reader.

``explanations.parquet`` (one row per explained feature), ``scores.parquet`` (held-out scores of
the rows whose status is ``ok``), ``simulations.parquet`` (true and simulated activation per
held-out protein), the ``"explain"`` block of ``summary.json`` and the reply cache
``llm_cache/``. Format: docs/design.md, stage 5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from plmsae._util import atomic_path, read_json, write_json
from plmsae.analysis.assocdir import SUMMARY, read_parquet

EXPLANATIONS = "explanations.parquet"
SCORES = "scores.parquet"
SIMULATIONS = "simulations.parquet"
LLM_CACHE = "llm_cache"
SUMMARY_KEY = "explain"  # the block of summary.json

EXPLANATION_COLUMNS = [
    "source",
    "feature",
    "selection",
    "label",
    "description",
    "explainer",
    "is_llm",
    "prompt_version",
    "model",
    "status",
    "n_explain",
    "n_heldout",
    "input_tokens",
    "output_tokens",
    "cost_usd",
]
SCORE_COLUMNS = ["source", "feature", "method", "score", "n", "explainer"]
SIMULATION_COLUMNS = ["source", "feature", "protein", "activation", "simulated"]
#: score methods: Pearson r of simulated vs true activations; balanced accuracy of active vs not
METHODS = ("simulation", "detection")


def read_explanations(assoc_dir: str | Path, source: str | None = None) -> pd.DataFrame:
    """explanations.parquet (of one source), or an empty table when explain has not run."""
    return _read(Path(assoc_dir) / EXPLANATIONS, EXPLANATION_COLUMNS[:5], source)


def read_scores(assoc_dir: str | Path, source: str | None = None) -> pd.DataFrame:
    """scores.parquet (of one source), or an empty table when explain has not run."""
    return _read(Path(assoc_dir) / SCORES, SCORE_COLUMNS[:4], source)


def read_simulations(assoc_dir: str | Path, source: str | None = None) -> pd.DataFrame:
    """simulations.parquet (of one source), or an empty table when explain has not run."""
    return _read(Path(assoc_dir) / SIMULATIONS, SIMULATION_COLUMNS, source)


def _read(path: Path, columns: list[str], source: str | None) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=columns)
    df = read_parquet(path, columns)
    if source is not None:
        df = df[df["source"] == source].reset_index(drop=True)
    return df


def write_explain_outputs(
    assoc_dir: str | Path,
    explanations: pd.DataFrame,
    scores: pd.DataFrame,
    simulations: pd.DataFrame,
    block: dict[str, Any],
) -> list[Path]:
    """Write the three tables (each atomically) and ``summary.json[SUMMARY_KEY] = block``,
    keeping the rest of summary.json. Returns the paths written."""
    d = Path(assoc_dir)
    paths = []
    for name, df in ((EXPLANATIONS, explanations), (SCORES, scores), (SIMULATIONS, simulations)):
        with atomic_path(d / name) as tmp:
            df.to_parquet(tmp, index=False)
        paths.append(d / name)
    summary = read_json(d / SUMMARY) if (d / SUMMARY).exists() else {}
    summary[SUMMARY_KEY] = block
    write_json(d / SUMMARY, summary)
    return [*paths, d / SUMMARY]
