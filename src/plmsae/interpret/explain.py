"""The explain stage: describe features in plain English and score the descriptions.

For each selected feature (SAE features, and raw ESM neurons as the baseline):

1. sample explanation proteins across the feature's activation range (train + validation
   clusters) and held-out proteins the same way (test clusters), see :mod:`.sampling`;
2. the explainer writes a one-sentence description and a short label from the explanation
   proteins' annotations (names, not only IDs) and the feature's enrichment results;
3. the explainer predicts the held-out proteins' activations (0..10) from the description
   alone; simulation score = Pearson r with the truth, detection score = balanced accuracy of
   active vs inactive (:mod:`.scoring`).

Explainers: an LLM (``anthropic:MODEL``, ``openai:MODEL``; :mod:`.providers`) or the offline
statistical explainer (:mod:`.offline`, not an LLM, labelled as such in every output).
Results go into the association directory: ``explanations.parquet``, ``scores.parquet``,
``simulations.parquet`` and an ``"explain"`` block in ``summary.json``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import scipy.sparse as sp
import typer

from plmsae._util import InputError, atomic_path, progress, read_json, write_json
from plmsae.analysis.assocdir import AssocDir
from plmsae.interpret import offline as offline_mod
from plmsae.interpret.prompts import (
    ProteinText,
    ReplyError,
    enrichment_rows,
    model_text,
    parse_explanation,
    parse_simulation,
    prompt_version,
    render,
)
from plmsae.interpret.providers import (
    BudgetExceeded,
    CallFailed,
    LLMClient,
    LLMSpec,
    parse_llm,
    price_for,
)
from plmsae.interpret.sampling import (
    Pools,
    band_sample,
    band_weights,
    feature_rng,
    scale,
    split_pools,
)
from plmsae.interpret.scoring import balanced_accuracy, median_difference, pearson, summarize
from plmsae.interpret.windows import ResidueWindows

log = logging.getLogger("plmsae.interpret")

DEFAULT_SOURCES = ("sae", "neuron")
MIN_ACTIVE_EXPLAIN = 5  # active proteins a feature needs among the explanation proteins
MIN_ACTIVE_HELDOUT = 2  # ... and among the held-out proteins, to be explained and scored
EXPLAIN_MAX_TOKENS = 400


@dataclass
class Job:
    source: str
    feature: int
    selection: str  # "top-associated" | "random" | "user"
    explain_rows: np.ndarray | None = None
    heldout_rows: np.ndarray | None = None
    scaled: np.ndarray | None = None  # [n_proteins] activation scaled to 0..1
    skip: str = ""


# --------------------------------------------------------------------------- feature selection


def parse_features(items, sources) -> dict[str, list[int]]:
    """``["sae:1,2,10-12", "neuron:5"]`` (or ints) -> {source: [features]}.

    A number without a source prefix belongs to the prefix before it in the same item, and to
    ``sae`` at the start of an item.
    """
    out: dict[str, list[int]] = {}
    if isinstance(items, (str, int)):
        items = [items]
    for item in items:
        current = "sae"
        for tok in str(item).replace(" ", "").split(","):
            if not tok:
                continue
            if ":" in tok:
                current, tok = tok.split(":", 1)
            try:
                if "-" in tok:
                    a, b = (int(x) for x in tok.split("-"))
                    ids = list(range(a, b + 1))
                else:
                    ids = [int(tok)]
            except ValueError:
                raise InputError(
                    f"{tok!r} is not a feature number or range.",
                    record="--features",
                    fix="write e.g. --features sae:1,2,10-12 --features neuron:5",
                ) from None
            out.setdefault(current, []).extend(ids)
    for src in out:
        if src not in sources:
            raise InputError(
                f"--features names source {src!r}, which is not among the sources {list(sources)}.",
                record="--features",
                fix="add it with --source, or fix the prefix.",
            )
    return {s: list(dict.fromkeys(v)) for s, v in out.items()}


def active_counts(x: sp.csc_matrix, pools: Pools) -> tuple[np.ndarray, np.ndarray]:
    """Active proteins per feature in the explanation and held-out pools ([n_features] each).

    Active = above the feature's minimum after a ReLU (the bands' scaled activation > 0)."""
    n = x.shape[0]
    in_expl = np.zeros(n, bool)
    in_expl[pools.explain] = True
    in_held = np.zeros(n, bool)
    in_held[pools.heldout] = True
    ce = np.zeros(x.shape[1], np.int64)
    ch = np.zeros(x.shape[1], np.int64)
    for f in range(x.shape[1]):
        s, e = x.indptr[f], x.indptr[f + 1]
        vals = np.maximum(x.data[s:e], 0)
        lo = vals.min() if e - s == n and n else 0.0
        rows = x.indices[s:e][vals > lo]
        ce[f], ch[f] = in_expl[rows].sum(), in_held[rows].sum()
    return ce, ch


def select_features(
    ad: AssocDir, pools: Pools, sources, features, n_features: int, seed: int
) -> list[Job]:
    """Jobs for the requested features; the default selection for sources not named.

    Default per source: up to n_features // 2 eligible features with the best association
    (highest F1 among concepts at q < 0.05 and precision >= 0.5, from association statistics not
    computed on the held-out split), then eligible features at random (seeded) up to n_features.
    Eligible = at least 5 active explanation proteins and 2 active held-out proteins. Neurons get the same rule and number as SAE features.
    """
    wanted = parse_features(features, sources) if features else {}
    n_default = max((len(v) for v in wanted.values()), default=n_features)
    jobs: list[Job] = []
    for src in sources:
        x = ad.activations(src)
        ce, ch = active_counts(x, pools)
        eligible = (ce >= MIN_ACTIVE_EXPLAIN) & (ch >= MIN_ACTIVE_HELDOUT)
        if src in wanted:
            for f in wanted[src]:
                ad.column(src, f)  # validates the index
                jobs.append(
                    Job(
                        src,
                        f,
                        "user",
                        skip=""
                        if eligible[f]
                        else f"skipped: too few active proteins (explanation {ce[f]}, "
                        f"held-out {ch[f]}; need {MIN_ACTIVE_EXPLAIN} and {MIN_ACTIVE_HELDOUT})",
                    )
                )
            continue
        top: list[int] = []
        a = ad.associations
        if not a.empty and n_default > 1:
            a = a[(a["source"] == src) & (a["q_value"] < 0.05) & (a["precision"] >= 0.5)]
            best = a.groupby("feature")["f1"].max().sort_values(ascending=False, kind="stable")
            top = [int(f) for f in best.index if 0 <= f < len(eligible) and eligible[f]][
                : n_default // 2
            ]
        rest = np.setdiff1d(np.flatnonzero(eligible), top)
        rng = np.random.default_rng([seed, 7])
        rand = rng.choice(rest, size=min(n_default - len(top), len(rest)), replace=False)
        jobs += [Job(src, f, "top-associated") for f in top]
        jobs += [Job(src, int(f), "random") for f in np.sort(rand)]
    return jobs


def prepare(ad: AssocDir, job: Job, pools: Pools, seed: int) -> Job:
    job.scaled = scale(ad.column(job.source, job.feature))
    rng = feature_rng(seed, job.source, job.feature)
    job.explain_rows = band_sample(job.scaled, pools.explain, rng)
    job.heldout_rows = band_sample(job.scaled, pools.heldout, rng)
    return job


# --------------------------------------------------------------------------- explainers


def _result(job: Job, spec: LLMSpec, **kw) -> dict:
    is_llm = spec.provider != "offline"
    return {
        "source": job.source,
        "feature": int(job.feature),
        "selection": job.selection,
        "label": "",
        "description": "",
        "explainer": spec.name if is_llm else offline_mod.EXPLAINER,
        "is_llm": is_llm,
        "prompt_version": prompt_version() if is_llm else "offline-v1",
        "model": spec.model if is_llm else "none (statistical, not an LLM)",
        "status": "ok",
        "simulation_r": np.nan,
        "detection_bacc": np.nan,
        "n_explain": 0 if job.explain_rows is None else len(job.explain_rows),
        "n_heldout": 0 if job.heldout_rows is None else len(job.heldout_rows),
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "predictions": None,
        **kw,
    }


class OfflineExplainer:
    """The offline statistical explainer (:mod:`.offline`) over one association directory."""

    def __init__(self, ad: AssocDir, pools: Pools):
        self.ad, self.pools = ad, pools
        self.train = (
            ad.annotations[pools.explain].astype(np.float64).tocsc()
        )  # once, not per feature
        self.names = ad.concepts["name"].tolist()
        self.categories = ad.concepts["category"].astype(str).tolist()

    weighted = True  # fit the band-sampled distribution that the scores are computed on

    def run(self, job: Job) -> dict:
        y = job.scaled[self.pools.explain]
        m = offline_mod.fit_offline(
            self.train,
            y * 10,
            self.names,
            self.categories,
            weight=band_weights(y) if self.weighted else None,
        )
        truth = job.scaled[job.heldout_rows] * 10
        pred = m.predict(self.ad.annotations[job.heldout_rows])
        return _result(
            job,
            LLMSpec("offline", ""),
            label=m.label,
            description=m.description,
            simulation_r=pearson(pred, truth),
            detection_bacc=balanced_accuracy(pred > m.threshold, truth > 0),
            predictions=pred,
        )


class LLMExplainer:
    def __init__(self, ad: AssocDir, client: LLMClient, seed: int):
        self.ad, self.client, self.seed = ad, client, seed
        self.text = ProteinText(ad)
        self.model, self.pooling = model_text(ad)
        self.windows = None

    def load_windows(self, jobs: list[Job]) -> str:
        """For residue-level runs: sequence windows around the strongest residues of the
        active explanation proteins. Returns a note when they cannot be shown."""
        if self.ad.level != "residue":
            return ""
        ids = {
            self.ad.proteins["id"].iat[r]
            for j in jobs
            if j.explain_rows is not None
            for r in j.explain_rows
            if j.scaled[r] > 0
        }
        self.windows = ResidueWindows(self.ad.run, ids)
        return self.windows.note

    def explain_prompt(self, job: Job) -> str:
        proteins = []
        for r in job.explain_rows:
            rec = self.text.record(r, job.scaled[r] * 10)
            rec["window"] = (
                self.windows.get(job.source, job.feature, rec["id"])
                if self.windows is not None and job.scaled[r] > 0
                else ""
            )
            proteins.append(rec)
        return render(
            "explain",
            model=self.model,
            pooling=self.pooling,
            proteins=proteins,
            enrichment=enrichment_rows(self.ad, job.source, job.feature),
            windows=self.windows is not None and not self.windows.note,
        )

    def heldout_order(self, job: Job) -> np.ndarray:
        # shown shuffled so that the band order does not give the answer away
        return feature_rng(self.seed + 1, job.source, job.feature).permutation(
            len(job.heldout_rows)
        )

    def simulate_prompt(self, job: Job, description: str) -> str:
        rows = job.heldout_rows[self.heldout_order(job)]
        return render(
            "simulate",
            model=self.model,
            description=description,
            proteins=[self.text.record(r) for r in rows],
        )

    @staticmethod
    def simulate_max_tokens(n: int) -> int:
        return 16 + 8 * n

    def _ask(self, prompt: str, max_tokens: int, parse, usage: dict):
        messages = [{"role": "user", "content": prompt}]
        for attempt in range(2):
            reply = self.client.complete(messages, max_tokens)
            usage["input_tokens"] += reply.input_tokens
            usage["output_tokens"] += reply.output_tokens
            usage["cost_usd"] += reply.cost_usd
            try:
                return parse(reply.text)
            except ReplyError as e:
                if attempt:
                    raise
                messages = messages + [
                    {"role": "assistant", "content": reply.text.strip() or "(empty reply)"},
                    {"role": "user", "content": render("reask", problem=str(e))},
                ]

    def run(self, job: Job) -> dict:
        usage = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        spec = self.client.spec
        try:
            step = "explanation"
            label, description = self._ask(
                self.explain_prompt(job), EXPLAIN_MAX_TOKENS, parse_explanation, usage
            )
        except (ReplyError, CallFailed, BudgetExceeded) as e:
            return _result(job, spec, status=_status(e, step), **usage)
        n = len(job.heldout_rows)
        try:
            step = "simulation"
            pred_shuffled = self._ask(
                self.simulate_prompt(job, description),
                self.simulate_max_tokens(n),
                lambda t: parse_simulation(t, n),
                usage,
            )
        except (ReplyError, CallFailed, BudgetExceeded) as e:
            return _result(
                job, spec, label=label, description=description, status=_status(e, step), **usage
            )
        pred = np.empty(n)
        pred[self.heldout_order(job)] = pred_shuffled
        truth = job.scaled[job.heldout_rows] * 10
        return _result(
            job,
            spec,
            label=label,
            description=description,
            simulation_r=pearson(pred, truth),
            detection_bacc=balanced_accuracy(pred > 0, truth > 0),
            predictions=pred,
            **usage,
        )


def _status(e: Exception, step: str) -> str:
    if isinstance(e, BudgetExceeded):
        return f"budget: {step} not requested ({e})"
    if isinstance(e, ReplyError):
        return f"failed: {step} reply malformed after a re-ask ({e})"
    return f"failed: {step} call ({e})"


# --------------------------------------------------------------------------- the stage


def explain(
    assoc_dir: Annotated[
        Path, typer.Argument(help="Association directory written by `plmsae associate`.")
    ],
    llm: Annotated[
        str,
        typer.Option(
            "--llm",
            help="Explainer: offline (statistical, no LLM), anthropic:MODEL, openai:MODEL, or "
            "auto = anthropic:claude-sonnet-4-6 when ANTHROPIC_API_KEY is set, else offline.",
        ),
    ] = "auto",
    features: Annotated[
        list[str] | None,
        typer.Option(
            "--features",
            help="Features to explain, e.g. sae:1,2,10-12 or neuron:5 (bare numbers are SAE "
            "features); repeatable. Sources not named get the default selection of the same size. "
            "Default: per source, the best-associated half of --n-features plus a random half.",
        ),
    ] = None,
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="Feature sources: sae, neuron (the baseline), random. Default: sae and neuron.",
        ),
    ] = None,
    n_features: Annotated[
        int,
        typer.Option("--n-features", help="Features per source in the default selection.", min=1),
    ] = 50,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost",
            help="Stop before LLM spending (from reported usage) could exceed this many USD.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the number of calls and the estimated tokens and cost; call nothing.",
        ),
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="LLM calls in flight at once.", min=1)
    ] = 4,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="API base URL (default: ANTHROPIC_BASE_URL / OPENAI_BASE_URL, else the vendor's); "
            "e.g. http://localhost:8000/v1 for vLLM, :8080/v1 llama.cpp, :11434/v1 Ollama.",
        ),
    ] = None,
    price: Annotated[
        str | None,
        typer.Option(
            "--price",
            help="IN,OUT USD per million tokens, for models missing from the price table.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for feature and protein sampling.")] = 0,
    max_retries: Annotated[
        int, typer.Option("--max-retries", help="Retries per call on 429/5xx/timeouts.")
    ] = 5,
    retry_delay: Annotated[
        float, typer.Option("--retry-delay", help="First retry delay in seconds (doubles).")
    ] = 1.0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per HTTP request.")] = 120.0,
    n_bootstrap: Annotated[
        int, typer.Option("--n-bootstrap", help="Bootstrap resamples for CIs.")
    ] = 2000,
) -> dict:
    """Explain features in plain English and score the explanations on held-out proteins.

    Writes explanations.parquet, scores.parquet, simulations.parquet and summary.json["explain"].

    LLM replies are cached in ASSOC_DIR/llm_cache/: a re-run is free and identical.

    Returns the "explain" summary block (with --dry-run: the estimate).
    """
    assoc_dir = Path(assoc_dir)
    ad = AssocDir.load(assoc_dir)
    spec = parse_llm(llm)
    sources = list(sources or DEFAULT_SOURCES)
    for s in sources:
        if s not in ad.available_sources():
            raise InputError(
                f"no activations for source {s!r} (found {ad.available_sources()}).",
                path=assoc_dir / "activations",
                fix="choose sources that exist with --source.",
            )
    pools = split_pools(ad.proteins, ad.association_splits(), seed)
    ad.drop_associations_on(pools.heldout_split)  # belt and braces: nothing from held-out proteins
    jobs = [
        prepare(ad, j, pools, seed) if not j.skip else j
        for j in select_features(ad, pools, sources, features, n_features, seed)
    ]
    if not jobs:
        raise InputError(
            "no feature has enough active proteins to be explained and scored.",
            path=assoc_dir,
            fix=f"features need >= {MIN_ACTIVE_EXPLAIN} active proteins "
            f"in train/validation and >= {MIN_ACTIVE_HELDOUT} in test; use more proteins.",
        )
    client = explainer = None
    if spec.provider != "offline":
        client = LLMClient(
            spec,
            assoc_dir / "llm_cache",
            base_url=base_url,
            max_cost=max_cost,
            price=price_for(spec.model, price),
            max_retries=max_retries,
            retry_delay=retry_delay,
            timeout=timeout,
        )
        explainer = LLMExplainer(ad, client, seed)
    windows_note = explainer.load_windows(jobs) if explainer is not None else ""
    if dry_run:
        return _dry_run(jobs, spec, client, explainer)

    results = []
    stopped = False
    with progress() as prog:
        task = prog.add_task(f"explain ({spec.name})", total=len(jobs), rate="")
        todo = [j for j in jobs if not j.skip]
        results += [_result(j, spec, status=j.skip) for j in jobs if j.skip]
        if explainer is None:
            offline = OfflineExplainer(ad, pools)
            for j in todo:
                results.append(offline.run(j))
                prog.advance(task)
        else:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                futures = [pool.submit(explainer.run, j) for j in todo]
                try:
                    for fut in as_completed(futures):
                        results.append(fut.result())
                        stopped |= results[-1]["status"].startswith("budget")
                        prog.update(task, advance=1, rate=f"${client.usage.cost_usd:.3f}")
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        prog.advance(task, len(jobs) - len(todo))
    return _write(
        ad,
        jobs,
        results,
        spec,
        client,
        pools,
        seed,
        n_bootstrap,
        max_cost,
        stopped,
        windows_note,
        explainer.text.note if explainer is not None else "",
    )


def _dry_run(jobs: list[Job], spec: LLMSpec, client: LLMClient | None, explainer) -> dict:
    todo = [j for j in jobs if not j.skip]
    est = {
        "llm": spec.name,
        "features": len(todo),
        "skipped": len(jobs) - len(todo),
        "by_source": pd.Series([j.source for j in todo], dtype=object).value_counts().to_dict(),
        "calls": 0,
        "cached_calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
    }
    if client is not None:
        placeholder = "x" * 220  # a typical one-sentence description
        for j in todo:
            p_exp = [{"role": "user", "content": explainer.explain_prompt(j)}]
            p_sim = [{"role": "user", "content": explainer.simulate_prompt(j, placeholder)}]
            for msgs, mt in (
                (p_exp, EXPLAIN_MAX_TOKENS),
                (p_sim, explainer.simulate_max_tokens(len(j.heldout_rows))),
            ):
                est["calls"] += 1
                if msgs is p_exp and client.is_cached(msgs, mt):
                    est["cached_calls"] += 1
                    continue
                n_in, n_out = client.estimate(msgs, mt)
                est["input_tokens"] += n_in
                est["output_tokens"] += n_out
                est["cost_usd"] += client.cost(n_in, n_out)
        est["price_usd_per_mtok"] = client.price
    est["cost_usd"] = round(est["cost_usd"], 4)
    price_note = (
        "no price known: pass --price IN,OUT"
        if client is not None and client.price is None
        else "list prices from the table in plmsae/interpret/providers.py"
    )
    print(
        f"explain --dry-run with {spec.name}: {est['features']} features {est['by_source']} "
        f"({est['skipped']} skipped: too few active proteins)"
    )
    if client is None:
        print("offline statistical explainer (not an LLM): 0 API calls, no cost.")
    else:
        print(
            f"  calls: {est['calls']} (explain + simulate per feature; re-asks of malformed replies "
            f"not counted; {est['cached_calls']} explanation calls already cached)"
        )
        print(
            f"  estimated tokens: ~{est['input_tokens']:,} input, <= {est['output_tokens']:,} output"
        )
        print(
            f"  estimated cost: <= ${est['cost_usd']:.4f} ({price_note}; an estimate, check your bill)"
        )
    return est


def _write(
    ad: AssocDir,
    jobs,
    results,
    spec,
    client,
    pools,
    seed,
    n_bootstrap,
    max_cost,
    stopped,
    windows_note: str = "",
    explainer_note: str = "",
) -> dict:
    order = {(j.source, j.feature): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["source"], r["feature"])])
    jobs_by_key = {(j.source, j.feature): j for j in jobs}

    sims = []
    for r in results:
        pred = r.pop("predictions")
        if pred is None:
            continue
        j = jobs_by_key[(r["source"], r["feature"])]
        sims.append(
            pd.DataFrame(
                {
                    "source": r["source"],
                    "feature": r["feature"],
                    "protein": ad.proteins["id"].to_numpy()[j.heldout_rows],
                    "activation": (j.scaled[j.heldout_rows] * 10).astype(np.float32),
                    "simulated": pred.astype(np.float32),
                }
            )
        )
    expl = pd.DataFrame(results)
    ok = expl[expl["status"] == "ok"]
    scores = pd.concat(
        [
            pd.DataFrame(
                {
                    "source": ok["source"],
                    "feature": ok["feature"],
                    "method": method,
                    "score": ok[col],
                    "n": ok["n_heldout"],
                    "explainer": ok["explainer"],
                }
            )
            for method, col in (("simulation", "simulation_r"), ("detection", "detection_bacc"))
        ],
        ignore_index=True,
    )
    scores = scores[scores["score"].notna()].reset_index(drop=True)
    explanations = expl.drop(columns=["simulation_r", "detection_bacc"])

    block = {
        "explainer": explanations["explainer"].iloc[0],
        "is_llm": spec.provider != "offline",
        "note": (
            "LLM-written explanations"
            if spec.provider != "offline"
            else "offline-statistical explainer: NOT an LLM; descriptions name the concepts whose "
            "membership best predicts the feature on training proteins"
        ),
        "model": explanations["model"].iloc[0],
        "prompt_version": explanations["prompt_version"].iloc[0],
        "split": pools.how,
        "seed": seed,
        "sampling": "per feature and set: bands 0.8-1.0: 6, 0.6-0.8/0.4-0.6/0.2-0.4: 3 each, "
        "0-0.2: 2, plus 15 inactive (min-max scaled after ReLU)",
        "sources": {},
    }
    if client is not None:
        block["go_ancestors"] = explainer_note or "pruned: prompts list the most specific GO terms"
    if ad.level == "residue" and client is not None:
        block["residue_windows"] = windows_note or "shown for active explanation proteins"
    for src in dict.fromkeys(j.source for j in jobs):
        e = expl[expl["source"] == src]
        ok = e[e["status"] == "ok"]
        block["sources"][src] = {
            "n_features": int(len(e)),
            "n_scored": int(len(ok)),
            "failures": int(e["status"].str.startswith("failed").sum()),
            "skipped": int(e["status"].str.startswith("skipped").sum()),
            "not_requested_budget": int(e["status"].str.startswith("budget").sum()),
            "simulation_r": summarize(ok["simulation_r"], n_bootstrap, seed),
            "detection_balanced_accuracy": summarize(ok["detection_bacc"], n_bootstrap, seed),
            "simulation_r_by_selection": {
                sel: summarize(g["simulation_r"], n_bootstrap, seed)
                for sel, g in ok.groupby("selection")
            },
        }
    if {"sae", "neuron"} <= set(block["sources"]):
        ok = expl[expl["status"] == "ok"]
        block["sae_minus_neuron_median_r"] = median_difference(
            ok.loc[ok["source"] == "sae", "simulation_r"],
            ok.loc[ok["source"] == "neuron", "simulation_r"],
            n_bootstrap,
            seed,
        )
    if client is not None:
        block["usage"] = client.usage.as_dict()
        block["max_cost_usd"] = max_cost
        block["stopped_by_budget"] = bool(stopped)
        block["prices_are_estimates"] = True

    for name, df in (
        ("explanations", explanations),
        ("scores", scores),
        (
            "simulations",
            pd.concat(sims, ignore_index=True)
            if sims
            else pd.DataFrame(columns=["source", "feature", "protein", "activation", "simulated"]),
        ),
    ):
        with atomic_path(ad.path / f"{name}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    summary_path = ad.path / "summary.json"
    summary = read_json(summary_path) if summary_path.exists() else {}
    summary["explain"] = block
    write_json(summary_path, summary)
    if stopped:
        log.warning(
            "stopped before exceeding --max-cost $%s; features not explained are marked "
            "'budget' in explanations.parquet",
            max_cost,
        )
    return block
