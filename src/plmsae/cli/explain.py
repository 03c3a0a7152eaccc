"""What ``plmsae explain`` prints: the per-source summary of a run, or the dry run's estimate."""

from __future__ import annotations

import textwrap
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plmsae.analysis.assocdir import SOURCE_NAMES
from plmsae.cli.errors import fail
from plmsae.interpret.explain import ExplainResult
from plmsae.interpret.explanations import EXPLANATIONS

WIDTH = 80
EXIT_NOTHING_EXPLAINED = 1
SCORE_CAPTION = (
    "r: Pearson r of simulated and true activations of test-split proteins the explainer never saw"
)


def show_explain(result: ExplainResult, console: Console) -> None:
    """Print an explain result, readable at 80 columns; exit 1 with a one-line reason on stderr
    when nothing was explained."""
    if result.estimate is not None:
        show_estimate(result.estimate, console)
        return
    block = result.summary
    console.print(f"Explained features with [bold]{escape(result.explainer)}[/]")
    say(console, block["note"], 2)
    say(console, f"split: {block['split']}", 2)
    for key in ("go_ancestors", "residue_windows"):
        if key in block:
            say(console, f"{key.replace('_', ' ')}: {block[key]}", 2)
    console.print(source_table(block["sources"]))
    diff = block.get("sae_minus_neuron_median_r")
    if diff and diff.get("difference") is not None:
        say(
            console,
            "SAE features minus neurons, median simulation r: "
            f"{diff['difference']:+.2f} {_ci(diff['ci'])}",
        )
    if "outcome" in block:
        show_outcome(block["outcome"], result.seconds, console)
    if "usage" in block:
        show_usage(block, console)
    say(console, f"Wrote {', '.join(p.name for p in result.files)} in {result.assoc_dir}")
    if result.failure:
        raise fail(result.failure, code=EXIT_NOTHING_EXPLAINED)


def show_outcome(out: dict[str, Any], took_s: float, console: Console) -> None:
    """Features explained, failed (by reason), skipped and the time taken."""
    minutes, seconds = divmod(round(took_s), 60)
    took = f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"
    parts = [f"explained and scored: {out['explained']} of {out['features']} features in {took}"]
    for key, what in (("skipped", "skipped"), ("budget", "not requested (--max-cost)")):
        if out[key]:
            parts.append(f"{out[key]} {what}")
    say(console, "; ".join(parts))
    if out["failed"]:
        say(console, f"failed: {out['failed']}", style="yellow")
        for reason, n in out["failed_by_reason"].items():
            say(console, f"{n:>4}  {reason}", 2, style="yellow")


def source_table(sources: dict[str, Any]) -> Table:
    """One row per source: counts by status and the median simulation r with its 95% CI."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, caption=SCORE_CAPTION)
    table.add_column("source", no_wrap=True)
    for name in ("features", "scored", "failed", "skipped", "budget"):
        table.add_column(name, justify="right")
    table.add_column("median r [95% CI]", justify="right", no_wrap=True)
    for src, s in sources.items():
        r = s["simulation_r"]
        median = "-" if r["median"] is None else f"{r['median']:.2f} {_ci(r['median_ci'])}"
        counts = ("n_features", "n_scored", "failures", "skipped", "not_requested_budget")
        table.add_row(SOURCE_NAMES.get(src, src), *(str(s[k]) for k in counts), escape(median))
    return table


def show_usage(block: dict[str, Any], console: Console) -> None:
    """LLM calls, tokens and cost; whether the budget stopped the run."""
    u = block["usage"]
    extra = [
        f"{u.get(k, 0)} {what}"
        for k, what in (
            ("reasks", "re-asks of malformed replies"),
            ("length_reasks", "re-asks cut at the token limit"),
        )
        if u.get(k)
    ]
    say(
        console,
        f"LLM calls: {u['calls']} ({u['cached']} from the cache, {u['retries']} retries"
        + "".join(f", {e}" for e in extra)
        + f"); tokens: {u['input_tokens']:,} input, {u['output_tokens']:,} output",
    )
    if "structured_output" in block:
        say(console, f"structured output: {block['structured_output']}")
    budget = "" if block.get("max_cost_usd") is None else f" of --max-cost ${block['max_cost_usd']}"
    if u["cost_usd"] is not None:
        say(
            console,
            f"cost: ${u['cost_usd']:.4f}{budget} (list prices; an estimate, check your bill)",
        )
    elif not block.get("local_server"):
        say(console, "cost: unknown (no price for this model; pass --price IN,OUT)")
    if block.get("stopped_by_budget"):
        n = sum(s["not_requested_budget"] for s in block["sources"].values())
        say(
            console,
            f"Stopped before exceeding --max-cost: {n} features not explained "
            f"(status 'budget' in {EXPLANATIONS}).",
            style="yellow",
        )


def show_estimate(est: dict[str, Any], console: Console) -> None:
    """The dry run: features, calls, tokens and cost it would take."""
    by_source = ", ".join(f"{k} {v}" for k, v in est["by_source"].items()) or "none"
    console.print("explain --dry-run: nothing was called or written.")
    say(console, f"explainer: {est['llm']}", 2)
    say(
        console,
        f"features: {est['features']} ({by_source}); "
        f"{est['skipped']} skipped (too few active proteins)",
        2,
    )
    if est["llm"] == "offline":
        say(console, "offline statistical explainer (not an LLM): 0 API calls, no cost.", 2)
        return
    say(
        console,
        f"calls: {est['calls']} new, {est['cached_calls']} answered from the cache (explain + "
        "simulate per feature, and the re-asks the cache holds)",
        2,
    )
    if not est["calls"]:
        say(console, "nothing to call: every reply is in the cache.", 2)
        return
    say(
        console,
        f"estimated tokens: ~{est['input_tokens']:,} input, <= {est['output_tokens']:,} output; "
        f"if every new reply had to be asked again: {est['max_calls']} calls, "
        f"~{est['max_input_tokens']:,} input tokens",
        2,
    )
    if est.get("price_usd_per_mtok") is None:
        if not est.get("local"):
            say(console, "estimated cost: unknown (no price known: pass --price IN,OUT)", 2)
        return
    say(
        console,
        f"estimated cost: <= ${est['cost_usd']:.4f}, <= ${est['max_cost_usd']:.4f} with "
        "re-asks (list prices from the table in plmsae/interpret/providers.py or --price; "
        "an estimate, check your bill)",
        2,
    )


def say(console: Console, text: str, indent: int = 0, style: str = "") -> None:
    """Print plain ``text`` (no markup) wrapped to at most 80 columns; continuation lines are
    indented two more spaces."""
    width = min(console.width, WIDTH)
    first, rest = " " * indent, " " * (indent + 2)
    lines = textwrap.fill(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
    console.print(escape(lines), style=style or None, soft_wrap=True)


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
