"""Sampling, scoring, prompt parsing: the small pieces of the explain stage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plmsae._util import InputError
from plmsae.interpret.prompts import ReplyError, parse_explanation, parse_simulation, prompt_version
from plmsae.interpret.providers import parse_llm, price_for
from plmsae.interpret.sampling import BANDS, N_INACTIVE, band_sample, scale, split_pools
from plmsae.interpret.scoring import balanced_accuracy, bootstrap_ci, pearson, summarize
from plmsae.interpret.selection import parse_features


def test_scale_relu_minmax():
    s = scale(np.array([-2.0, 0.0, 1.0, 3.0]))
    assert s.tolist() == pytest.approx([0, 0, 1 / 3, 1])
    assert scale(np.zeros(4)).tolist() == [0, 0, 0, 0]


def test_band_sample_counts_and_bands():
    rng = np.random.default_rng(0)
    a = np.concatenate([np.zeros(100), rng.random(400)])
    s = scale(a)
    pool = np.arange(500)
    idx = band_sample(s, pool, np.random.default_rng(1))
    n_active = sum(n for *_, n in BANDS)
    assert len(idx) == n_active + N_INACTIVE and len(set(idx)) == len(idx)
    act, inact = s[idx[:n_active]], s[idx[n_active:]]
    assert (act[:6] >= 0.8).all() and ((act[6:9] >= 0.6) & (act[6:9] < 0.8)).all()
    assert ((act[-2:] > 0) & (act[-2:] < 0.2)).all()
    assert (inact == 0).all()
    # a band with too few proteins passes its shortfall down: one protein above 0.8
    s2 = np.concatenate([[1.0], np.linspace(0.01, 0.79, 50), np.zeros(30)])
    idx2 = band_sample(s2, np.arange(len(s2)), np.random.default_rng(0))
    assert len(idx2) == n_active + N_INACTIVE and (s2[idx2[:1]] == 1.0).all()
    assert ((s2[idx2[1:6]] >= 0.6) & (s2[idx2[1:6]] < 0.8)).all()  # 5 carried + 3 own band
    # only draws from the pool
    sub = np.arange(0, 500, 2)
    assert set(band_sample(s, sub, np.random.default_rng(2))) <= set(sub)


def test_split_pools_respects_clusters():
    df = pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(12)],
            "cluster": [i // 3 for i in range(12)],
            "split": ["train"] * 6 + ["validation"] * 3 + ["test"] * 3,
        }
    )
    p = split_pools(df, {"train"})
    assert p.heldout.tolist() == [9, 10, 11] and p.explain.tolist() == list(range(9))
    assert p.heldout_split == "test"
    # association statistics computed on test (the associate stage's default): hold out validation
    p = split_pools(df, {"test"})
    assert p.heldout.tolist() == [6, 7, 8] and p.heldout_split == "validation"
    df["split"] = "train"  # no usable split: whole clusters go to either side
    p = split_pools(df, seed=3)
    cl = df["cluster"].to_numpy()
    assert not set(cl[p.explain]) & set(cl[p.heldout])
    assert len(p.heldout) and len(p.explain) and "clusters" in p.how and p.heldout_split == ""


def test_pearson_and_balanced_accuracy():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([5, 5, 5], [1, 2, 3]) == 0.0  # constant simulation: no information
    assert np.isnan(pearson([1, 2, 3], [1, 1, 1]))  # constant truth: unscorable
    assert balanced_accuracy([1, 0, 0, 0], [1, 1, 0, 0]) == pytest.approx(0.75)
    assert np.isnan(balanced_accuracy([1, 0], [1, 1]))


def test_bootstrap_summary():
    v = np.random.default_rng(0).normal(0.3, 0.1, 200)
    s = summarize(v, n_boot=500)
    assert s["n"] == 200 and s["median_ci"][0] < s["median"] < s["median_ci"][1]
    assert s["mean_ci"][0] < 0.3 < s["mean_ci"][1]
    lo, hi = bootstrap_ci([1.0, np.nan, 1.0])
    assert lo == hi == 1.0
    assert summarize([np.nan])["n"] == 0


def test_reply_parsers():
    assert parse_explanation(
        'Sure!\n```json\n{"label": "kinases", "description": "Protein  kinases."}\n```'
    ) == ("kinases", "Protein kinases.")
    for bad in (
        "no json here",
        '{"label": ""}',
        '{"label": "x"}',
        "[1, 2]",
        '{"label": "x", "description": 3}',
        '{"label": "...", "description": "..."}',  # the old prompt's placeholder echoed
        '{"label": "<label>", "description": "Proteins with kinase domains."}',
        '{"label": "Protein 17", "description": "Proteins like protein 3 and protein 5."}',
        '{"label": "kinases", "description": "Proteins 1-6."}',
        '{"label": "kinases", "description": "kinases"}',
    ):
        with pytest.raises(ReplyError):
            parse_explanation(bad)
    # a real protein name with a number stays valid
    assert (
        parse_explanation(
            '{"label": "Protein 4.1 family", "description": "Band protein 4.1 family members."}'
        )[0]
        == "Protein 4.1 family"
    )
    assert parse_simulation('{"1": 0, "2": 7.5, "3": 10}', 3).tolist() == [0, 7.5, 10]
    for bad in (
        '{"1": 0, "2": 7}',
        '{"1": 0, "2": 7, "3": 11}',
        '{"1": 0, "2": 7, "4": 1}',
        '{"a": 1}',
        '{"1": "x", "2": 1, "3": 1}',
    ):
        with pytest.raises(ReplyError):
            parse_simulation(bad, 3)


def test_prompt_version_and_llm_parsing(monkeypatch):
    assert prompt_version() == "explain-v3+simulate-v3+reask-v1"
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert parse_llm("auto").provider == "offline"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    assert parse_llm(None).provider == "anthropic"
    assert parse_llm("openai:llama3.1:8b").model == "llama3.1:8b"
    with pytest.raises(InputError):
        parse_llm("gemini:pro")
    assert price_for("claude-sonnet-4-5-20250929") == (3.0, 15.0)
    assert price_for("claude-opus-4-1-20250805") == (15.0, 75.0) and price_for(
        "claude-opus-4-6"
    ) == (5.0, 25.0)
    assert price_for("my-local-model") is None and price_for("x", "0,0") == (0.0, 0.0)
    with pytest.raises(InputError, match="--price"):
        price_for("x", "cheap")


def test_parse_features():
    assert parse_features(["sae:1,3-5", "neuron:2,7"], ["sae", "neuron"]) == {
        "sae": [1, 3, 4, 5],
        "neuron": [2, 7],
    }
    assert parse_features([4, 2], ["sae"]) == {"sae": [4, 2]}
    # a bare number belongs to the source named before it, also in a later item (the CLI splits
    # "--features neuron:5,7" into ["neuron:5", "7"])
    assert parse_features(["neuron:5", "7"], ["sae", "neuron"]) == {"neuron": [5, 7]}
    with pytest.raises(InputError, match="--features"):
        parse_features(["sae:x"], ["sae"])
    with pytest.raises(InputError, match="random"):
        parse_features(["random:1"], ["sae", "neuron"])


def test_retry_after_header():
    from types import SimpleNamespace

    from plmsae.interpret.providers import _retry_after

    assert _retry_after(SimpleNamespace(headers={"retry-after": "2"})) == 2.0
    assert (
        _retry_after(SimpleNamespace(headers={"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    )
    assert (
        _retry_after(SimpleNamespace(headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
        is None
    )
    assert _retry_after(SimpleNamespace(headers={})) is None


def test_band_weights_match_quotas():
    from plmsae.interpret.sampling import band_weights

    s = np.concatenate([np.zeros(30), np.full(12, 0.9), np.full(6, 0.5), np.full(4, 0.1)])
    w = band_weights(s)
    assert w[:30].sum() == pytest.approx(N_INACTIVE) and w[30:42].sum() == pytest.approx(6)
    assert w[42:48].sum() == pytest.approx(3) and w[48:].sum() == pytest.approx(2)


def test_prompt_lists_most_specific_go_terms(tmp_path):
    import json

    from synthetic_assoc import write_assoc_dir

    from plmsae.analysis.assocdir import AssocDir
    from plmsae.interpret.prompts import ProteinText

    d = write_assoc_dir(tmp_path / "a", n_proteins=60)
    # protein kinase activity (GO:0004672) is_a ATP binding (GO:0005524) in this mini ontology
    (tmp_path / "mini.obo").write_text(
        "format-version: 1.2\n\n[Term]\nid: GO:0005524\nname: ATP binding\nnamespace: molecular_function\n\n"
        "[Term]\nid: GO:0004672\nname: protein kinase activity\nnamespace: molecular_function\n"
        "is_a: GO:0005524 ! ATP binding\n"
    )
    ad = AssocDir.load(d)
    col = {c: j for j, c in enumerate(ad.concepts["concept"])}
    both = next(
        r
        for r in range(60)
        if ad.annotations[r, col["GO:0004672"]] and ad.annotations[r, col["GO:0005524"]]
    )
    names = lambda rec: [n for _, ns in rec["annotations"] for n in ns]  # noqa: E731
    assert "ATP binding (GO:0005524)" in names(ProteinText(ad).record(both))
    run = json.loads((d / "run.json").read_text())
    (d / "run.json").write_text(json.dumps({**run, "ontology": str(tmp_path / "mini.obo")}))
    text = ProteinText(AssocDir.load(d))
    assert text.note == ""
    got = names(text.record(both))
    assert "protein kinase activity (GO:0004672)" in got and "ATP binding (GO:0005524)" not in got
