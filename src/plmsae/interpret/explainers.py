"""The two explainers of the explain stage: each turns a prepared :class:`~.selection.Job` into
one result row (a dict with the columns of ``explanations.parquet``, the two held-out scores and
the simulated activations).

- :class:`OfflineExplainer`: the statistical explainer of :mod:`.offline` (not an LLM);
- :class:`LLMExplainer`: an LLM through :class:`~.providers.LLMClient`; it writes the
  description from the prompt of :mod:`.prompts`, then simulates the held-out proteins from the
  description alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

from plmsae.analysis.assocdir import PRECISION_MIN, Q_MAX, AssocDir
from plmsae.interpret import offline
from plmsae.interpret.prompts import (
    ProteinText,
    ReplyError,
    ReplyFormat,
    enrichment_rows,
    explanation_format,
    model_text,
    parse_explanation,
    parse_simulation,
    prompt_version,
    render,
    simulation_format,
)
from plmsae.interpret.providers import BudgetExceeded, CallFailed, Completer, LLMSpec, Reply
from plmsae.interpret.sampling import Pools, band_weights, feature_rng
from plmsae.interpret.scoring import balanced_accuracy, pearson
from plmsae.interpret.selection import Job
from plmsae.interpret.windows import ResidueWindows

EXPLAIN_MAX_TOKENS = 400
#: simulation reply budget: a JSON object with one '"12": 7,' entry per protein takes up to ~8
#: tokens, twice that when a server pretty-prints it under a schema (one entry per line)
SIMULATE_BASE_TOKENS = 64
SIMULATE_TOKENS_PER_PROTEIN = 16
OFFLINE = LLMSpec("offline", "")
OFFLINE_PROMPT_VERSION = "offline-v1"
OFFLINE_MODEL = "none (statistical, not an LLM)"

T = TypeVar("T")


def result_row(job: Job, spec: LLMSpec, **values: Any) -> dict[str, Any]:
    """One result row for ``job``: explanations.parquet's columns (in order) plus
    ``simulation_r``, ``detection_bacc``, ``predictions`` and ``predicted_active`` ([n_heldout]
    or None; held-out proteins in ``job.heldout_rows`` order)."""
    is_llm = spec.provider != "offline"
    return {
        "source": job.source,
        "feature": int(job.feature),
        "selection": job.selection,
        "label": "",
        "description": "",
        "explainer": spec.name if is_llm else offline.EXPLAINER,
        "is_llm": is_llm,
        "prompt_version": prompt_version() if is_llm else OFFLINE_PROMPT_VERSION,
        "model": spec.model if is_llm else OFFLINE_MODEL,
        "status": "ok",
        "simulation_r": np.nan,
        "detection_bacc": np.nan,
        "n_explain": len(job.explain_rows),
        "n_heldout": len(job.heldout_rows),
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "predictions": None,
        "predicted_active": None,
        **values,
    }


class OfflineExplainer:
    """The offline statistical explainer (:mod:`.offline`) over one association directory."""

    weighted = True  # fit the band-sampled distribution that the scores are computed on

    def __init__(self, ad: AssocDir, pools: Pools):
        self.ad, self.pools = ad, pools
        # once, not per feature
        self.train: sp.csc_matrix = ad.annotations[pools.explain].astype(np.float64).tocsc()
        self.names = ad.concepts["name"].tolist()
        self.categories = ad.concepts["category"].astype(str).tolist()
        self.associated = associated_columns(ad)
        min_concept = int(ad.summary.get("settings", {}).get("min_concept", 10))
        self.testable = ad.concepts["n_proteins"].to_numpy() >= min_concept

    def candidates(self, job: Job) -> tuple[np.ndarray, bool]:
        """(bool [n_concepts] the concepts the description may name, whether they passed the
        association test): the feature's associated concepts, else every testable concept."""
        cols = self.associated.get(job.key)
        if cols is None:
            return self.testable, False
        mask = np.zeros(len(self.names), bool)
        mask[cols] = True
        return mask, True

    def run(self, job: Job) -> dict[str, Any]:
        y = job.scaled[self.pools.explain]
        candidates, associated = self.candidates(job)
        m = offline.fit_offline(
            self.train,
            y * 10,
            self.names,
            self.categories,
            weight=band_weights(y) if self.weighted else None,
            candidates=candidates,
            associated=associated,
        )
        truth = job.scaled[job.heldout_rows] * 10
        pred = m.predict(self.ad.annotations[job.heldout_rows])
        return result_row(
            job,
            OFFLINE,
            label=m.label,
            description=m.description,
            simulation_r=pearson(pred, truth),
            detection_bacc=balanced_accuracy(pred > m.threshold, truth > 0),
            predictions=pred,
            predicted_active=pred > m.threshold,
        )


def associated_columns(ad: AssocDir) -> dict[tuple[str, int], np.ndarray]:
    """(source, feature) -> concept columns (concepts.parquet rows) it is associated with
    (q < Q_MAX and precision >= PRECISION_MIN) in the association rows ``ad`` holds (the explain
    stage has dropped those of the held-out split)."""
    a = ad.associations
    if a.empty or "precision" not in a.columns:
        return {}
    sig = a[(a["q_value"] < Q_MAX) & (a["precision"] >= PRECISION_MIN)]
    sig = sig[sig["concept"].isin(ad.concept_index)]
    return {
        (str(src), int(f)): np.unique(g["concept"].map(ad.concept_index).to_numpy(np.int64))
        for (src, f), g in sig.groupby(["source", "feature"])
    }


class LLMExplainer:
    """An LLM explains a feature from its explanation proteins, then simulates the held-out
    proteins from the description alone. Thread-safe: jobs may run concurrently. ``client`` is
    an :class:`~.providers.LLMClient`, or a :class:`~.providers.ReplayClient` for --dry-run."""

    def __init__(self, ad: AssocDir, client: Completer, seed: int):
        self.ad, self.client, self.seed = ad, client, seed
        self.text = ProteinText(ad)
        self.model, self.pooling = model_text(ad)
        self.windows: ResidueWindows | None = None

    def load_windows(self, jobs: list[Job]) -> str:
        """For residue-level runs: sequence windows around the strongest residues of the
        active explanation proteins. Returns a note when they cannot be shown."""
        if self.ad.level != "residue":
            return ""
        ids = {
            self.ad.proteins["id"].iat[r] for j in jobs for r in j.explain_rows if j.scaled[r] > 0
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
        """The order the held-out proteins are shown in: shuffled, so that the band order does
        not give the answer away. [n_heldout] permutation."""
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
        """Output tokens asked for a simulation reply of ``n`` proteins."""
        return SIMULATE_BASE_TOKENS + SIMULATE_TOKENS_PER_PROTEIN * n

    def _complete(
        self, messages: list[dict], max_tokens: int, fmt: ReplyFormat, usage: dict
    ) -> Reply:
        reply = self.client.complete(messages, max_tokens, fmt)
        usage["input_tokens"] += reply.input_tokens
        usage["output_tokens"] += reply.output_tokens
        usage["cost_usd"] += reply.cost_usd
        return reply

    def _ask(
        self,
        prompt: str,
        max_tokens: int,
        fmt: ReplyFormat,
        parse: Callable[[str], T],
        usage: dict,
    ) -> T:
        """Ask, and re-ask once when the reply does not parse (then the ReplyError stands). A
        reply cut at the token limit (the client already asked again with twice the limit) is
        not re-asked: its ReplyError says ``truncated``."""
        messages = [{"role": "user", "content": prompt}]
        for attempt in range(2):
            reply = self._complete(messages, max_tokens, fmt, usage)
            try:
                return parse(reply.text)
            except ReplyError as e:
                if reply.truncated:
                    raise ReplyError(
                        f"{e}; cut at {reply.max_tokens} tokens", truncated=True
                    ) from None
                if attempt:
                    raise
                problem = str(e)
            self.client.count("reasks")
            messages = messages + [
                {"role": "assistant", "content": reply.text.strip() or "(empty reply)"},
                {"role": "user", "content": render("reask", problem=problem)},
            ]
        raise AssertionError("unreachable")  # pragma: no cover

    def run(self, job: Job) -> dict[str, Any]:
        usage = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        spec = self.client.spec
        try:
            label, description = self._ask(
                self.explain_prompt(job),
                EXPLAIN_MAX_TOKENS,
                explanation_format(),
                parse_explanation,
                usage,
            )
        except (ReplyError, CallFailed, BudgetExceeded) as e:
            return result_row(job, spec, status=status(e, "explanation"), **usage)
        n = len(job.heldout_rows)
        try:
            pred_shuffled = self._ask(
                self.simulate_prompt(job, description),
                self.simulate_max_tokens(n),
                simulation_format(n),
                lambda t: parse_simulation(t, n),
                usage,
            )
        except (ReplyError, CallFailed, BudgetExceeded) as e:
            failed = status(e, "simulation")
            return result_row(
                job, spec, label=label, description=description, status=failed, **usage
            )
        pred = np.empty(n)
        pred[self.heldout_order(job)] = pred_shuffled
        truth = job.scaled[job.heldout_rows] * 10
        return result_row(
            job,
            spec,
            label=label,
            description=description,
            simulation_r=pearson(pred, truth),
            detection_bacc=balanced_accuracy(pred > 0, truth > 0),
            predictions=pred,
            predicted_active=pred > 0,
            **usage,
        )


#: the reason part of a failed status, by the CallFailed reason
CALL_FAILURES = {
    "timeout": "call timed out",
    "context": "prompt too long for the server's context",
    "http": "call failed",
    "connection": "call failed",
}


def status(e: Exception, step: str) -> str:
    """The ``status`` of a feature whose ``step`` (explanation or simulation) did not finish:
    ``failed: <step> <reason> (<detail>)`` or ``budget: <step> not requested (<detail>)``."""
    if isinstance(e, BudgetExceeded):
        return f"budget: {step} not requested ({e})"
    if isinstance(e, ReplyError):
        if e.truncated:
            return f"failed: {step} reply cut at the token limit ({e})"
        return f"failed: {step} reply malformed after a re-ask ({e})"
    reason = CALL_FAILURES.get(getattr(e, "reason", "http"), "call failed")
    return f"failed: {step} {reason} ({e})"


def failure_reason(status: str) -> str:
    """``explanation reply malformed after a re-ask`` from a failed status (its detail
    dropped); "" for other statuses."""
    if not status.startswith("failed: "):
        return ""
    return status.removeprefix("failed: ").split(" (", 1)[0]
