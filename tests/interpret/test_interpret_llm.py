"""LLM providers through the real anthropic/openai SDK clients, against a local fake server."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
from synthetic_assoc import CONCEPTS
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.interpret.explain import explain

SENTINEL = "sk-SENTINEL-do-not-leak-0123456789"
PER_CALL_USD = (1000 * 3.0 + 50 * 15.0) / 1e6  # fake usage at claude-sonnet-4-6 list prices


def render(result) -> str:
    """What the CLI prints for ``result``, at 80 columns."""
    import io

    from rich.console import Console

    from plmsae.cli.explain import show_explain

    buf = io.StringIO()
    show_explain(result, Console(file=buf, width=80, highlight=False))
    return buf.getvalue()


def _all_bytes(path):
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def test_anthropic_retries_cache_and_no_key_leak(
    assoc_dir, fake_llm, monkeypatch, caplog, capsys, explain_app
):
    app = explain_app
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SENTINEL)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_llm.url)  # the base URL override is honoured
    fake_llm.faults = [429, "slow"]  # rate limited, then a timeout, then fine
    args = [
        "explain",
        str(assoc_dir),
        "--sources",
        "sae",
        "--features",
        "0-3",
        "--retry-delay",
        "0.01",
        "--timeout",
        "0.5",
        "--concurrency",
        "2",
        "--n-bootstrap",
        "100",
    ]
    r = CliRunner().invoke(app, args)  # --llm auto: the key is set, so Anthropic
    assert r.exit_code == 0, r.output
    assert "LLM calls: 8 (0 from the cache, 2 retries)" in r.output and "cost: $0.0" in r.output
    ex = pd.read_parquet(assoc_dir / "explanations.parquet")
    assert (ex["status"] == "ok").all(), ex["status"].tolist()
    assert ex["is_llm"].all() and (ex["explainer"] == "anthropic:claude-sonnet-4-6").all()
    assert (ex["prompt_version"] == "explain-v3+simulate-v3+reask-v1").all()
    n_calls = 2 * len(ex)
    assert len(fake_llm.requests) == n_calls + 2  # + the 429 and the timeout
    assert all(q["path"] == "/v1/messages" and SENTINEL in q["auth"] for q in fake_llm.requests)
    first_prompt = fake_llm.requests[-1]["body"]["messages"][0]["content"]
    assert "GO:" in first_prompt or "Family" in first_prompt  # annotations as names with IDs
    block = json.loads((assoc_dir / "summary.json").read_text())["explain"]
    assert block["usage"]["retries"] == 2 and block["usage"]["cached"] == 0
    assert block["usage"]["cost_usd"] == pytest.approx(n_calls * PER_CALL_USD, rel=1e-6)
    # the fake model is informative on planted features: predictions are mapped back correctly
    assert ex["label"].tolist() == [c[2] for c in CONCEPTS[:4]]
    assert block["sources"]["sae"]["simulation_r"]["median"] > 0.5
    before = {p.name: p.read_bytes() for p in assoc_dir.glob("*.parquet")}

    # second run: every reply from llm_cache/, zero requests, identical results
    n_before = len(fake_llm.requests)
    block2 = explain(
        assoc_dir,
        llm="anthropic:claude-sonnet-4-6",
        sources=["sae"],
        features=["0-3"],
        n_bootstrap=100,
    ).summary
    assert len(fake_llm.requests) == n_before
    assert block2["usage"]["cached"] == block2["usage"]["calls"] == n_calls
    assert block2["usage"]["cost_usd"] == 0
    for name in ("explanations.parquet", "scores.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(assoc_dir / name), pd.read_parquet(pd.io.common.BytesIO(before[name]))
        )
    # the key is nowhere: files, logs, console
    out = capsys.readouterr()
    assert SENTINEL.encode() not in _all_bytes(assoc_dir)
    assert SENTINEL not in caplog.text + r.output + out.out + out.err
    assert any((assoc_dir / "llm_cache").rglob("*.json"))


def test_openai_failures_are_recorded_not_fatal(assoc_dir, fake_llm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    fake_llm.faults = [
        500,
        500,  # sae 0: explanation fails twice -> gives up (max_retries=1)
        "malformed",
        None,
        None,  # sae 1: malformed, re-asked, fine; simulation fine
        "malformed",
        "malformed",  # sae 2: malformed twice -> recorded failure
        500,
        None,
        None,  # sae 3: one 500, retried, fine
    ]
    kw = dict(
        llm="openai:qwen2.5:7b",
        base_url=fake_llm.url + "/v1",
        features=["sae:0-3"],
        sources=["sae"],
        concurrency=1,
        max_retries=1,
        retry_delay=0.01,
        n_bootstrap=100,
        price="0,0",
    )
    block = explain(assoc_dir, **kw).summary
    ex = pd.read_parquet(assoc_dir / "explanations.parquet").set_index("feature")
    assert ex.loc[0, "status"].startswith(
        "failed: explanation call failed (gave up after 2 attempts"
    )
    assert ex.loc[1, "status"] == "ok" and ex.loc[3, "status"] == "ok"
    assert ex.loc[2, "status"].startswith("failed: explanation reply malformed after a re-ask")
    assert len(fake_llm.requests) == 10
    assert all(q["path"] == "/v1/chat/completions" for q in fake_llm.requests)
    reask = fake_llm.requests[3]["body"]["messages"]
    assert [m["role"] for m in reask] == [
        "user",
        "assistant",
        "user",
    ] and "could not be used" in reask[2]["content"]
    sc = pd.read_parquet(assoc_dir / "scores.parquet")
    assert sorted(set(sc["feature"])) == [1, 3]
    assert block["sources"]["sae"]["failures"] == 2 and block["sources"]["sae"]["n_scored"] == 2
    # re-run: the transport failure is asked again, everything else (malformed replies too) is cached
    explain(assoc_dir, **kw)
    assert len(fake_llm.requests) == 12
    ex2 = pd.read_parquet(assoc_dir / "explanations.parquet").set_index("feature")
    assert ex2.loc[0, "status"] == "ok" and ex2.loc[2, "status"] == ex.loc[2, "status"]
    assert all(SENTINEL in q["auth"] for q in fake_llm.requests)
    assert SENTINEL.encode() not in _all_bytes(assoc_dir)


def test_max_cost_stops_before_exceeding(assoc_dir, fake_llm, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SENTINEL)
    result = explain(
        assoc_dir,
        llm="anthropic:claude-sonnet-4-6",
        base_url=fake_llm.url,
        sources=["sae"],
        n_features=8,
        max_cost=0.05,
        concurrency=3,
        n_bootstrap=100,
    )
    block = result.summary
    assert "Stopped before exceeding --max-cost" in render(result)
    n = len(fake_llm.requests)
    assert 0 < n < 16
    assert (
        block["usage"]["cost_usd"] == pytest.approx(n * PER_CALL_USD)
        and block["usage"]["cost_usd"] <= 0.05
    )
    assert block["stopped_by_budget"] and block["sources"]["sae"]["not_requested_budget"] > 0
    ex = pd.read_parquet(assoc_dir / "explanations.parquet")
    assert ex["status"].str.startswith("budget").any() and (ex["status"] == "ok").any()


def test_dry_run_calls_nothing(assoc_dir, fake_llm, monkeypatch, capsys):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SENTINEL)
    result = explain(
        assoc_dir,
        llm="anthropic:claude-haiku-4-5",
        base_url=fake_llm.url,
        n_features=3,
        dry_run=True,
    )
    assert capsys.readouterr().out == ""  # library code prints nothing
    est = result.estimate
    out = render(result)
    assert est["calls"] == 2 * est["features"] == 12 and est["cost_usd"] > 0
    assert "estimated cost" in out and "calls: 12" in out
    assert not fake_llm.requests and not (assoc_dir / "explanations.parquet").exists()


def test_configuration_errors(assoc_dir, fake_llm, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(InputError, match="ANTHROPIC_API_KEY is not set"):
        explain(assoc_dir, llm="anthropic:claude-sonnet-4-6", base_url=fake_llm.url, n_features=2)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SENTINEL)
    fake_llm.faults = [401] * 10
    with pytest.raises(InputError, match="rejected the API key") as e:
        explain(assoc_dir, llm="anthropic:claude-sonnet-4-6", base_url=fake_llm.url, n_features=2)
    assert SENTINEL not in str(e.value)
    with pytest.raises(InputError, match="--price"):
        explain(assoc_dir, llm="openai:my-local", base_url=fake_llm.url + "/v1", max_cost=1.0)


def test_residue_windows_note_when_store_is_missing(assoc_dir, fake_llm, monkeypatch):
    from plmsae.interpret.windows import window

    assert window("MKTAYIAKQR", [0, 0, 0, 0, 5, 1, 0, 0, 0, 0]) == "Y5: MKTA[Y]IAKQR"
    seq = "A" * 30 + "W" + "C" * 30
    assert window(seq, [1.0 if c == "W" else 0 for c in seq], half=3) == "W31: ...AAA[W]CCC..."
    run = json.loads((assoc_dir / "run.json").read_text())
    run.update(level="residue", store=str(assoc_dir / "no_store"))
    (assoc_dir / "run.json").write_text(json.dumps(run))
    monkeypatch.setenv("ANTHROPIC_API_KEY", SENTINEL)
    block = explain(
        assoc_dir,
        llm="anthropic:claude-sonnet-4-6",
        base_url=fake_llm.url,
        features=["0"],
        sources=["sae"],
        n_bootstrap=50,
    ).summary
    assert "sequence windows not shown" in block["residue_windows"]
    assert block["sources"]["sae"]["n_scored"] == 1
    prompt = fake_llm.requests[0]["body"]["messages"][0]["content"]
    assert "residue-level feature" in prompt and "[brackets]" not in prompt
