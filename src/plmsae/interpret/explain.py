"""The explain stage: describe features in plain English and score the descriptions.

For each selected feature (SAE features, and raw ESM neurons as the baseline):

1. sample explanation proteins across the feature's activation range (train + validation
   clusters) and held-out proteins the same way (test clusters), see :mod:`.sampling` and
   :mod:`.selection`;
2. the explainer writes a one-sentence description and a short label from the explanation
   proteins' annotations (names, not only IDs) and the feature's enrichment results;
3. the explainer predicts the held-out proteins' activations (0..10) from the description
   alone; simulation score = Pearson r with the truth, detection score = balanced accuracy of
   active vs inactive (:mod:`.scoring`).

Explainers (:mod:`.explainers`): an LLM (``anthropic:MODEL``, ``openai:MODEL``;
:mod:`.providers`) or the offline statistical explainer (:mod:`.offline`, not an LLM, labelled as
such in every output). Results go into the association directory; their names and columns are
in :mod:`.explanations`.

:class:`ExplainConfig` holds the options, :class:`ExplainRun` does the work in named steps, and
:func:`explain` is the public function (``plmsae explain`` on the command line).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import Progress, TaskID

from plmsae._util import InputError, progress
from plmsae.analysis.assocdir import ACTIVATIONS, AssocDir
from plmsae.config import StageConfig, argument, flag, option, stage_function
from plmsae.interpret import offline
from plmsae.interpret.explainers import (
    LLMExplainer,
    OfflineExplainer,
    failure_reason,
    result_row,
)
from plmsae.interpret.explanations import (
    EXPLANATION_COLUMNS,
    EXPLANATIONS,
    LLM_CACHE,
    METHODS,
    SCORE_COLUMNS,
    SIMULATION_COLUMNS,
    write_explain_outputs,
)
from plmsae.interpret.providers import (
    STRUCTURED_OUTPUT,
    Interrupted,
    LLMClient,
    ReplayClient,
    parse_llm,
    price_for,
)
from plmsae.interpret.sampling import Pools, split_pools
from plmsae.interpret.scoring import METRICS, paired_difference, summarize
from plmsae.interpret.selection import (
    ACTIVITY,
    MIN_ACTIVE_EXPLAIN,
    MIN_ACTIVE_HELDOUT,
    Job,
    default_fraction,
    prepare,
    select_features,
    threshold_grid,
)

log = logging.getLogger(__name__)

DEFAULT_SOURCES = ("sae", "neuron")
#: the result column each score method of scores.parquet comes from
SCORE_OF_METHOD = dict(zip(METHODS, ("simulation_r", "detection_bacc")))
SAMPLING = (
    "per feature and set: bands 0.8-1.0: 6, 0.6-0.8/0.4-0.6/0.2-0.4: 3 each, "
    "0-0.2: 2, plus 15 inactive (min-max scaled after ReLU)"
)
OFFLINE_NOTE = (
    "offline-statistical explainer: NOT an LLM; descriptions name the concepts whose "
    "membership best predicts the feature on training proteins"
)
#: after Ctrl-C, seconds to wait for the calls in flight (their replies are cached) before
#: leaving them behind
INTERRUPT_GRACE_S = 5.0


@dataclass
class ExplainConfig(StageConfig):
    """Describe features in plain English and score the descriptions on proteins the explainer
    never saw (the test split's homology clusters; the SAE may have been trained on them).

    For each source (SAE features, and model neurons as the baseline) it picks features (the
    best-associated half of --n-features and a random half, or those named with --features).
    The explainer (an LLM, or the offline statistical explainer without one) writes a short
    label and a one-sentence description from the annotations of proteins sampled across the
    feature's activation range, then predicts the feature's activation on proteins from other
    homology clusters (the test split) from the description alone; the score is how well that
    prediction matches.

    Adds explanations.parquet, scores.parquet, simulations.parquet and an "explain" block in
    summary.json to ASSOC_DIR. LLM replies are cached in ASSOC_DIR/llm_cache/, so a re-run costs
    nothing and gives the same results. Try --dry-run first for the number of calls and the
    estimated cost.
    """

    assoc_dir: Path = argument(help="Association directory written by `plmsae associate`.")
    llm: str = option(
        "auto",
        help="Explainer: offline (statistical, no LLM), anthropic:MODEL, openai:MODEL, or "
        "auto = anthropic:claude-sonnet-4-6 when ANTHROPIC_API_KEY is set, else offline.",
    )
    features: list[str] | None = option(
        None,
        help="Features to explain, e.g. sae:1,2,10-12,neuron:5 (a bare number belongs to the "
        "source named before it, sae at first). Sources not named get the default selection of "
        "the same size. Default: per source, the best-associated half of --n-features plus a "
        "random half.",
    )
    sources: list[str] = option(
        help="Feature sources: sae, neuron (the baseline), random.",
        factory=lambda: list(DEFAULT_SOURCES),
    )
    n_features: int = option(50, help="Features per source in the default selection.")
    max_cost: float | None = option(
        None, help="Stop before LLM spending (from reported usage) could exceed this many USD."
    )
    dry_run: bool = option(
        False, help="Print the number of calls and the estimated tokens and cost; call nothing."
    )
    concurrency: int = option(
        4, help="Most LLM calls in flight at once (halved while the server is overloaded)."
    )
    base_url: str | None = option(
        None,
        help="API base URL (default: ANTHROPIC_BASE_URL / OPENAI_BASE_URL, else the vendor's); "
        "e.g. http://localhost:8000/v1 for vLLM, :8080/v1 llama.cpp, :11434/v1 Ollama.",
    )
    price: str | None = option(
        None, help="IN,OUT USD per million tokens, for models missing from the price table."
    )
    seed: int = option(0, help="Seed for feature and protein sampling.")
    max_retries: int = option(5, help="Retries per call on 429/5xx/timeouts.")
    retry_delay: float = option(1.0, help="First retry delay in seconds (doubles).")
    timeout: float | None = option(
        None,
        help="Seconds per HTTP request. Default: from the request's tokens at a slow CPU "
        "server's speed (60 s + 0.02 s per prompt token + 0.2 s per reply token, times the "
        "calls in flight), doubled after a timeout.",
    )
    structured_output: str = option(
        "auto",
        help="How replies are held to JSON: schema (OpenAI response_format json_schema, "
        "Anthropic tool use), json (OpenAI json_object, Anthropic '{' prefill), off (the prompt "
        "alone), or auto = schema, then json, then off when the server refuses one.",
    )
    n_bootstrap: int = option(2000, help="Bootstrap resamples for CIs.")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_features", "concurrency", "n_bootstrap"):
            if getattr(self, name) < 1:
                self.reject(name, "must be at least 1.", f"use {flag(name)} 1 or more.")
        for name in ("max_retries", "retry_delay", "max_cost"):
            value = getattr(self, name)
            if value is not None and value < 0:
                self.reject(name, "must not be negative.", "use 0 or more.")
        if self.timeout is not None and not self.timeout > 0:
            self.reject("timeout", "must be positive.", "use a number of seconds > 0, e.g. 600.")
        if self.structured_output not in STRUCTURED_OUTPUT:
            self.reject(
                "structured_output",
                "is not a known mode.",
                f"use one of {', '.join(STRUCTURED_OUTPUT)}.",
            )
        if not self.sources or len(set(self.sources)) < len(self.sources):
            self.reject(
                "sources",
                "must name each source once.",
                "use e.g. --sources sae,neuron (from sae, neuron, random).",
            )


@dataclass
class ExplainResult:
    """What :func:`explain` did.

    ``summary`` is the "explain" block it wrote to summary.json (explainer, split, per source
    ``n_features``/``n_scored``/``failures``/``skipped``/``not_requested_budget`` and score
    summaries with bootstrap CIs, LLM ``usage`` and ``stopped_by_budget``); empty with
    ``dry_run``, which fills ``estimate`` instead (features, calls, tokens, cost).
    """

    assoc_dir: Path
    explainer: str  # "offline-statistical" or "PROVIDER:MODEL"
    summary: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)  # written (none with dry_run)
    seconds: float = 0.0  # time spent explaining (not in summary.json: re-runs stay identical)

    @property
    def dry_run(self) -> bool:
        return self.estimate is not None

    @property
    def stopped_by_budget(self) -> bool:
        """Whether --max-cost stopped the LLM before every feature was explained."""
        return bool(self.summary.get("stopped_by_budget"))

    @property
    def failure(self) -> str | None:
        """One line saying why nothing was explained; None when a feature was (or dry run)."""
        out = self.summary.get("outcome")
        if not out or out["explained"]:
            return None
        if out["skipped"] == out["features"]:
            return f"nothing was explained: all {out['features']} features were skipped."
        if out["budget"] and not out["failed"]:
            return "nothing was explained: --max-cost stopped the run before the first feature."
        reasons = "; ".join(f"{k}: {n}" for k, n in out["failed_by_reason"].items())
        return (
            f"nothing was explained: {out['failed']} of {out['features']} features failed "
            f"({reasons}); see the status column of {EXPLANATIONS}."
        )


@dataclass
class Tables:
    """The outputs of one run before they are written (columns of :mod:`.explanations`)."""

    results: pd.DataFrame  # explanations' columns plus simulation_r and detection_bacc
    explanations: pd.DataFrame
    scores: pd.DataFrame
    simulations: pd.DataFrame


class ExplainRun:
    """Explain and score the features of one association directory.

    ``ExplainRun(cfg).run()`` reads ``cfg.assoc_dir``; pass an :class:`AssocDir` that is already
    open as ``assoc_dir`` (its association rows from the held-out split are dropped). Steps, in
    order: :meth:`check_sources`, :meth:`split`, :meth:`select_features`, :meth:`prepare_jobs`,
    :meth:`connect` (LLMs only), then :meth:`estimate` (dry run) or :meth:`run_explainer`,
    :meth:`tables`, :meth:`summarise` and :meth:`write`.
    """

    def __init__(self, cfg: ExplainConfig, assoc_dir: AssocDir | None = None):
        self.cfg = cfg
        self.ad = assoc_dir if assoc_dir is not None else AssocDir.load(cfg.assoc_dir)
        self.spec = parse_llm(cfg.llm)
        self.is_llm = self.spec.provider != "offline"
        self.explainer_name = self.spec.name if self.is_llm else offline.EXPLAINER
        self.client: LLMClient | None = None
        self.llm: LLMExplainer | None = None
        self.windows_note = ""
        self.seconds = 0.0  # time taken by run_explainer

    def run(self) -> ExplainResult:
        self.check_sources()
        pools = self.split()
        jobs = self.prepare_jobs(self.select_features(pools), pools)
        if self.is_llm:
            self.connect(jobs)
        if self.cfg.dry_run:
            return ExplainResult(self.ad.path, self.explainer_name, estimate=self.estimate(jobs))
        rows, stopped = self.run_explainer(jobs, pools)
        tables = self.tables(jobs, rows)
        block = self.summarise(tables, pools, stopped)
        files = self.write(tables, block)
        return ExplainResult(
            self.ad.path, self.explainer_name, summary=block, files=files, seconds=self.seconds
        )

    # -- steps ------------------------------------------------------------------------------
    def check_sources(self) -> None:
        """Refuse sources without activations in the association directory."""
        available = self.ad.available_sources()
        for s in self.cfg.sources:
            if s not in available:
                raise InputError(
                    f"no activations for source {s!r} (found {available}).",
                    path=self.ad.path / ACTIVATIONS,
                    fix="choose sources that exist with --sources.",
                )

    def split(self) -> Pools:
        """Explanation and held-out proteins (whole homology clusters); association rows
        computed on the held-out split are dropped, so nothing shown comes from them."""
        pools = split_pools(self.ad.proteins, self.ad.association_splits(), self.cfg.seed)
        self.ad.drop_associations_on(pools.heldout_split)
        return pools

    def select_features(self, pools: Pools) -> list[Job]:
        """The features to explain (see :func:`.selection.select_features`); skipped ones too."""
        cfg = self.cfg
        jobs = select_features(
            self.ad, pools, cfg.sources, cfg.features or [], cfg.n_features, cfg.seed
        )
        if not jobs:
            raise InputError(
                "no feature has enough active proteins to be explained and scored.",
                path=self.ad.path,
                fix=f"features need >= {MIN_ACTIVE_EXPLAIN} active proteins "
                f"in train/validation and >= {MIN_ACTIVE_HELDOUT} in test; use more proteins.",
            )
        return jobs

    def prepare_jobs(self, jobs: list[Job], pools: Pools) -> list[Job]:
        """Draw the explanation and held-out proteins of every job that is not skipped."""
        return [j if j.skip else prepare(self.ad, j, pools, self.cfg.seed) for j in jobs]

    def connect(self, jobs: list[Job]) -> None:
        """The LLM client (with its reply cache) and explainer; residue windows for prompts."""
        cfg = self.cfg
        self.client = LLMClient(
            self.spec,
            self.ad.path / LLM_CACHE,
            base_url=cfg.base_url,
            max_cost=cfg.max_cost,
            price=price_for(self.spec.model, cfg.price),
            max_retries=cfg.max_retries,
            retry_delay=cfg.retry_delay,
            timeout=cfg.timeout,
            structured_output=cfg.structured_output,
            concurrency=cfg.concurrency,
        )
        self.llm = LLMExplainer(self.ad, self.client, cfg.seed)
        self.windows_note = self.llm.load_windows(jobs)

    def estimate(self, jobs: list[Job]) -> dict[str, Any]:
        """What explaining ``jobs`` would take: features, new calls (replayed through the reply
        cache, so a finished run predicts none), tokens and cost (list prices; an estimate),
        and the worst case when every new reply must be asked again. Calls nothing."""
        todo = [j for j in jobs if not j.skip]
        est: dict[str, Any] = {
            "llm": self.spec.name,
            "features": len(todo),
            "skipped": len(jobs) - len(todo),
            "by_source": pd.Series([j.source for j in todo], dtype=object).value_counts().to_dict(),
            "calls": 0,
            "cached_calls": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
        }
        if self.llm is not None and self.client is not None:
            replay = ReplayClient(self.client)
            llm = LLMExplainer(self.ad, replay, self.cfg.seed)
            llm.windows = self.llm.windows
            for j in todo:
                llm.run(j)
            est.update(replay.totals)
            # worst case: every new reply malformed, asked again with the prompt and reply resent
            est["max_calls"] = 2 * est["calls"]
            est["max_input_tokens"] = 2 * est["input_tokens"] + est["output_tokens"]
            est["local"] = self.client.local
            est["price_usd_per_mtok"] = self.client.price
            est["max_cost_usd"] = round(
                self.client.cost(est["max_input_tokens"], 2 * est["output_tokens"]), 4
            )
        est["cost_usd"] = round(est["cost_usd"], 4)
        return est

    def run_explainer(self, jobs: list[Job], pools: Pools) -> tuple[list[dict], bool]:
        """One result row per job, in job order, and whether the LLM budget stopped the run."""
        todo = [j for j in jobs if not j.skip]
        rows = [result_row(j, self.spec, status=j.skip) for j in jobs if j.skip]
        stopped = False
        start = time.monotonic()
        with progress() as prog:
            task = prog.add_task(f"explain ({self.spec.name})", total=len(jobs), rate="")
            if self.llm is None:
                explainer = OfflineExplainer(self.ad, pools)
                for j in todo:
                    rows.append(explainer.run(j))
                    prog.advance(task)
            else:
                new, stopped = self._run_llm(todo, prog, task)
                rows += new
            prog.advance(task, len(jobs) - len(todo))
        self.seconds = time.monotonic() - start
        order = {j.key: i for i, j in enumerate(jobs)}
        rows.sort(key=lambda r: order[(r["source"], r["feature"])])
        return rows, stopped

    def _run_llm(self, todo: list[Job], prog: Progress, task: TaskID) -> tuple[list[dict], bool]:
        """The LLM jobs on ``concurrency`` worker threads. On Ctrl-C (or any error) the client
        sends nothing more, the calls in flight get :data:`INTERRUPT_GRACE_S` to finish (their
        replies are cached for the re-run) and are then left behind (daemon threads)."""
        assert self.llm is not None and self.client is not None
        llm = self.llm
        pending: queue.Queue[Job] = queue.Queue()
        for j in todo:
            pending.put(j)
        done: queue.Queue[tuple[dict | None, BaseException | None]] = queue.Queue()

        def work() -> None:
            while True:
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((llm.run(job), None))
                except BaseException as e:  # handed to the main thread
                    done.put((None, e))
                    return

        workers = [
            threading.Thread(target=work, name=f"explain-{i}", daemon=True)
            for i in range(min(self.cfg.concurrency, len(todo)))
        ]
        for w in workers:
            w.start()
        rows: list[dict] = []
        try:
            while len(rows) < len(todo):
                try:
                    row, error = done.get(timeout=0.2)
                except queue.Empty:
                    continue
                if error is not None:
                    raise error
                assert row is not None
                rows.append(row)
                prog.update(task, advance=1, rate=self._rate())
        except BaseException as e:
            self._stop_workers(workers, len(rows), len(todo), e)
            raise
        return rows, any(r["status"].startswith("budget") for r in rows)

    def _rate(self) -> str:
        """The progress bar's running total: dollars with a price, else tokens."""
        assert self.client is not None
        u = self.client.usage
        if self.client.price is not None:
            return f"${u.cost_usd:.3f}"
        return f"{(u.input_tokens + u.output_tokens) / 1000:.1f}k tokens"

    def _stop_workers(
        self, workers: list[threading.Thread], n_done: int, n_todo: int, e: BaseException
    ) -> None:
        assert self.client is not None
        self.client.interrupt()
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        left = sum(w.is_alive() for w in workers)
        log.warning(
            "%s after %d of %d features: no new requests sent%s; finished replies are in %s, "
            "so the same command resumes from them",
            "interrupted" if isinstance(e, (KeyboardInterrupt, Interrupted)) else "stopped",
            n_done,
            n_todo,
            f", {left} left in flight" if left else "",
            LLM_CACHE,
        )

    def tables(self, jobs: list[Job], rows: list[dict]) -> Tables:
        """The three output tables from the result rows (in job order)."""
        by_key = {j.key: j for j in jobs}
        ids = self.ad.proteins["id"].to_numpy()
        sims = []
        for r in rows:
            pred = r["predictions"]
            if pred is None:
                continue
            j = by_key[(r["source"], r["feature"])]
            values = [r["source"], r["feature"], ids[j.heldout_rows]]
            values += [(j.scaled[j.heldout_rows] * 10).astype(np.float32), pred.astype(np.float32)]
            sims.append(pd.DataFrame(dict(zip(SIMULATION_COLUMNS, values))))
        self.paired_ = paired_inputs(rows, by_key, ids)
        per_protein = ("predictions", "predicted_active")
        results = pd.DataFrame([{k: v for k, v in r.items() if k not in per_protein} for r in rows])
        return Tables(
            results=results,
            explanations=results[EXPLANATION_COLUMNS],
            scores=score_table(results),
            simulations=pd.concat(sims, ignore_index=True)
            if sims
            else pd.DataFrame(columns=SIMULATION_COLUMNS),
        )

    def summarise(self, tables: Tables, pools: Pools, stopped: bool) -> dict[str, Any]:
        """The "explain" block of summary.json."""
        ex, cfg = tables.explanations, self.cfg
        block: dict[str, Any] = {
            "explainer": ex["explainer"].iloc[0],
            "is_llm": self.is_llm,
            "note": "LLM-written explanations" if self.is_llm else OFFLINE_NOTE,
            "model": ex["model"].iloc[0],
            "prompt_version": ex["prompt_version"].iloc[0],
            "split": pools.how,
            "seed": cfg.seed,
            "sampling": SAMPLING,
            "outcome": outcome(tables.results),
            "sources": {},
        }
        if self.llm is not None:
            block["go_ancestors"] = (
                self.llm.text.note or "pruned: prompts list the most specific GO terms"
            )
        if self.ad.level == "residue" and self.llm is not None:
            block["residue_windows"] = self.windows_note or "shown for active explanation proteins"
        res = tables.results
        for src in dict.fromkeys(ex["source"]):
            block["sources"][src] = source_summary(
                res[res["source"] == src], cfg.n_bootstrap, cfg.seed
            )
        block["activity"] = ACTIVITY.format(
            default=f"{default_fraction(threshold_grid(self.ad)):g}"
        )
        if {"sae", "neuron"} <= set(block["sources"]):
            block["sae_minus_neuron"] = {
                m: paired_difference(self.paired_, m, cfg.n_bootstrap, cfg.seed) for m in METRICS
            }
            block["sae_minus_neuron_median_r"] = block["sae_minus_neuron"]["simulation_r"]
        if self.client is not None:
            block["usage"] = self.client.usage.as_dict()
            if self.client.price is None:  # unknown, not free
                block["usage"]["cost_usd"] = None
            block["local_server"] = self.client.local
            block["structured_output"] = self.client.mode
            block["max_cost_usd"] = cfg.max_cost
            block["stopped_by_budget"] = bool(stopped)
            block["prices_are_estimates"] = True
        return block

    def write(self, tables: Tables, block: dict[str, Any]) -> list[Path]:
        """Write the tables and the summary block into the association directory."""
        files = write_explain_outputs(
            self.ad.path, tables.explanations, tables.scores, tables.simulations, block
        )
        if block.get("stopped_by_budget"):
            log.warning(
                "stopped before exceeding --max-cost $%s; features not explained are marked "
                "'budget' in %s",
                self.cfg.max_cost,
                EXPLANATIONS,
            )
        return files


def paired_inputs(rows: list[dict], jobs: dict, ids: np.ndarray) -> dict[str, list[dict]]:
    """Per source, the held-out proteins, truth and predictions of every scored feature (the
    input of :func:`.scoring.paired_difference`)."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] != "ok" or r["predictions"] is None:
            continue
        j = jobs[(r["source"], r["feature"])]
        truth = j.scaled[j.heldout_rows] * 10
        pred = np.asarray(r["predictions"], dtype=np.float64)
        active = r.get("predicted_active")
        out.setdefault(r["source"], []).append(
            {
                "proteins": ids[j.heldout_rows].tolist(),
                "truth": truth,
                "predicted": pred,
                "true_active": truth > 0,
                "predicted_active": pred > 0 if active is None else np.asarray(active, bool),
            }
        )
    return out


def score_table(results: pd.DataFrame) -> pd.DataFrame:
    """scores.parquet: one row per scored (feature, method) of the rows whose status is ok."""
    ok = results[results["status"] == "ok"]
    scores = pd.concat(
        [
            pd.DataFrame(
                dict(
                    zip(
                        SCORE_COLUMNS,
                        (
                            ok["source"],
                            ok["feature"],
                            method,
                            ok[col],
                            ok["n_heldout"],
                            ok["explainer"],
                        ),
                    )
                )
            )
            for method, col in SCORE_OF_METHOD.items()
        ],
        ignore_index=True,
    )
    return scores[scores["score"].notna()].reset_index(drop=True)


def outcome(results: pd.DataFrame) -> dict[str, Any]:
    """What happened to the run's features: explained (and scored), failed by reason, skipped,
    not requested for the budget."""
    status = results["status"].astype(str)
    reasons = status.map(failure_reason)
    by_reason = reasons[reasons != ""].value_counts()
    return {
        "features": int(len(results)),
        "explained": int((status == "ok").sum()),
        "failed": int(status.str.startswith("failed").sum()),
        "failed_by_reason": {str(k): int(v) for k, v in by_reason.items()},
        "skipped": int(status.str.startswith("skipped").sum()),
        "budget": int(status.str.startswith("budget").sum()),
    }


def source_summary(rows: pd.DataFrame, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Counts by status and score summaries (bootstrap CIs) of one source's result rows."""
    ok = rows[rows["status"] == "ok"]
    status = rows["status"].str
    return {
        "n_features": int(len(rows)),
        "n_scored": int(len(ok)),
        "failures": int(status.startswith("failed").sum()),
        "skipped": int(status.startswith("skipped").sum()),
        "not_requested_budget": int(status.startswith("budget").sum()),
        "simulation_r": summarize(ok["simulation_r"], n_bootstrap, seed),
        "detection_balanced_accuracy": summarize(ok["detection_bacc"], n_bootstrap, seed),
        "simulation_r_by_selection": {
            sel: summarize(g["simulation_r"], n_bootstrap, seed)
            for sel, g in ok.groupby("selection")
        },
    }


@stage_function(ExplainConfig)
def explain(cfg: ExplainConfig) -> ExplainResult:
    """Explain features in plain English and score the explanations on the test split's proteins,
    which the explainer never saw.

    Writes explanations.parquet, scores.parquet, simulations.parquet and summary.json["explain"]
    into ``assoc_dir`` (with ``dry_run``: nothing). LLM replies are cached in
    ``assoc_dir/llm_cache/``: a re-run is free and identical. Returns an :class:`ExplainResult`
    (``summary``: the "explain" block; ``estimate`` with ``dry_run``).
    """
    return ExplainRun(cfg).run()
