"""What `explain` reports and how its client waits, against the local stand-in server
(conftest.FakeLLM): the json structured-output mode, prose despite a schema, jittered backoff,
the option checks, the per-run outcome printed by the CLI, and the one-line reason of a run
that explained nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.interpret.explain import ExplainConfig, ExplainResult, explain
from plmsae.interpret.providers import Interrupted, LLMClient, LLMSpec, _Failure

LOCAL = "openai:smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def cli_args(assoc_dir, fake_llm, *more: str) -> list[str]:
    args = ["explain", str(assoc_dir), "--llm", LOCAL, "--base-url", fake_llm.url + "/v1"]
    return [*args, "--sources", "sae", "--retry-delay", "0.01", "--n-bootstrap", "50", *more]


def test_json_mode_sends_json_object_on_every_request(assoc_dir, fake_llm):
    block = explain(
        assoc_dir,
        llm=LOCAL,
        base_url=fake_llm.url + "/v1",
        sources=["sae"],
        features=["0-2"],
        structured_output="json",
        n_bootstrap=50,
    ).summary
    assert block["outcome"]["explained"] == 3 and block["structured_output"] == "json"
    bodies = fake_llm.bodies("/chat/completions")
    assert len(bodies) == 6
    assert all(b["response_format"] == {"type": "json_object"} for b in bodies)


def test_prose_despite_a_schema_is_reasked_with_the_schema_and_reported(
    assoc_dir, fake_llm, explain_app
):
    """A server that ignores response_format and answers in prose: the re-ask still carries the
    schema; the feature fails with its reason; the others are explained and the run exits 0."""
    fake_llm.faults = ["malformed", "malformed"]  # the first feature's explanation, twice
    r = CliRunner().invoke(
        explain_app, cli_args(assoc_dir, fake_llm, "--features", "0-2", "--concurrency", "1")
    )
    assert r.exit_code == 0, r.output
    first, reask = fake_llm.bodies()[:2]
    assert reask["response_format"] == first["response_format"]
    assert reask["response_format"]["type"] == "json_schema"
    assert reask["messages"][1] == {
        "role": "assistant",
        "content": "I believe this feature is about kinases.",
    }
    out = " ".join(r.output.split())
    assert "explained and scored: 2 of 3 features" in out
    assert "failed: 1 1 explanation reply malformed after a re-ask" in out
    assert "1 re-asks of malformed replies" in out and "structured output: schema" in out
    block = json.loads((assoc_dir / "summary.json").read_text())["explain"]
    assert block["outcome"]["failed_by_reason"] == {"explanation reply malformed after a re-ask": 1}
    assert block["usage"]["reasks"] == 1 and block["usage"]["calls"] == 6


def test_overloaded_server_all_failed_exits_1_with_one_line(assoc_dir, fake_llm, explain_app):
    fake_llm.faults = [503] * 100  # every request refused: retried with backoff, then recorded
    r = CliRunner().invoke(
        explain_app,
        cli_args(assoc_dir, fake_llm, "--features", "0-1", "--max-retries", "1"),
    )
    assert r.exit_code == 1, r.output
    error = " ".join(r.output[r.output.index("error:") :].split())
    assert error.startswith("error: nothing was explained: 2 of 2 features failed (")
    assert error.endswith("see the status column of explanations.parquet.")
    assert len(fake_llm.requests) == 2 * 2  # one try and one retry per explanation
    assert "explained and scored: 0 of 2" in r.output


def test_backoff_is_jittered_capped_and_interruptible(tmp_path, monkeypatch):
    c = LLMClient(LLMSpec("openai", "m"), tmp_path, retry_delay=1.0, max_delay=5.0)
    waits: list[float] = []
    monkeypatch.setattr(c._stop, "wait", lambda s: waits.append(s) or False)
    for _ in range(20):  # calls that failed together
        c._wait(_Failure("overload", "HTTP 500"), 1)
    assert all(1.0 <= w < 2.0 for w in waits) and len(set(waits)) > 10
    waits.clear()
    c._wait(_Failure("overload", "HTTP 500"), 2)  # doubled
    c._wait(_Failure("overload", "HTTP 429", delay=3.0), 1)  # the server's retry-after, plus jitter
    c._wait(_Failure("overload", "HTTP 500"), 6)  # 32 s: capped
    assert 2.0 <= waits[0] < 4.0 and 3.0 <= waits[1] < 4.0 and waits[2] == 5.0
    monkeypatch.undo()
    c.interrupt()
    with pytest.raises(Interrupted):  # Ctrl-C ends a backoff at once
        c._wait(_Failure("overload", "HTTP 500"), 1)


def test_option_checks(assoc_dir):
    with pytest.raises(InputError, match="structured_output|structured-output"):
        ExplainConfig(assoc_dir=assoc_dir, structured_output="xml")
    with pytest.raises(InputError, match="timeout"):
        ExplainConfig(assoc_dir=assoc_dir, timeout=0)
    assert ExplainConfig(assoc_dir=assoc_dir).timeout is None  # derived from the tokens
    for mode in ("auto", "schema", "json", "off"):
        assert ExplainConfig(assoc_dir=assoc_dir, structured_output=mode).structured_output == mode


def _result(**outcome) -> ExplainResult:
    out = {"explained": 0, "features": 4, "failed": 0, "skipped": 0, "budget": 0}
    out |= outcome
    out.setdefault("failed_by_reason", {})
    return ExplainResult(Path("a"), "openai:m", summary={"outcome": out})


def test_failure_line_names_why_nothing_was_explained():
    assert _result(explained=1, failed=3).failure is None
    assert ExplainResult(Path("a"), "openai:m").failure is None  # a dry run
    assert _result(skipped=4).failure == "nothing was explained: all 4 features were skipped."
    assert "--max-cost stopped the run" in (_result(budget=4).failure or "")
    line = _result(failed=4, failed_by_reason={"explanation call timed out": 3, "x": 1}).failure
    assert line == (
        "nothing was explained: 4 of 4 features failed (explanation call timed out: 3; x: 1); "
        "see the status column of explanations.parquet."
    )
