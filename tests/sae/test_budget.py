"""The default budget (no --tokens): train until the FVE stops improving, then decay and stop;
logged, recorded in cfg.json, resumable bit for bit; a warning for stores small for the width."""

import json
import logging
import math

import pytest
import torch
from _synth import fit, structured

import plmsae.sae.train as train_mod
from plmsae.sae.data import TensorStore
from plmsae.sae.train import Plateau, TrainingStopped, lr_at

SMALL = dict(latents=64, k=4, batch_size=100, checkpoint_every=0, select_dtype="float32", lr=3e-3)


@pytest.fixture()
def quick_plateau(monkeypatch):
    """The plateau rule at a tenth of its scale (checks from step 100, every 10 steps)."""
    monkeypatch.setattr(train_mod, "PLATEAU_MIN_STEPS", 100)
    monkeypatch.setattr(train_mod, "PLATEAU_CHECK_EVERY", 10)


def test_plateau_rule(quick_plateau):
    rising = Plateau(max_steps=10_000, decay_fraction=0.2)
    for t in range(1, 400):
        assert not rising.observe(0.2 * math.log(t))  # +0.02 per tenth: still improving
    assert rising.stop_step == 10_000 and rising.decay_start is None
    flat = Plateau(max_steps=10_000, decay_fraction=0.2)
    found = [t for t in range(1, 400) if flat.observe(0.8 - 0.5 / t)]
    assert found == [100]  # the first check: the last tenth gains < 0.002 over the one before
    assert (flat.decay_start, flat.stop_step) == (100, 125)  # decays over 0.2 / 0.8 of 100 steps
    assert not flat.observe(0.8)  # decided once
    assert lr_at(110, 1.0, 125, 0, 0.2, decay_start=100) == pytest.approx(15 / 25)


def test_default_budget_stops_at_the_plateau(quick_plateau, tmp_path, caplog):
    store = TensorStore(structured(n=3000))
    with caplog.at_level(logging.INFO, logger="plmsae.sae.train"):
        result = fit(store, out=tmp_path / "a", **SMALL, log_every=1)
    budget = json.loads((tmp_path / "a" / "cfg.json").read_text())["training"]["budget"]
    assert budget["rule"] == "plateau" and budget["plateau_step"] >= 100
    assert budget["steps"] == result.metrics["steps"] < budget["most_steps"] == 50_000
    assert budget["steps"] == budget["plateau_step"] + round(budget["plateau_step"] / 4)
    assert "until the FVE stops improving" in caplog.text and "stopped improving" in caplog.text
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == budget["steps"] and lines[-1]["lr"] < SMALL["lr"] / 10
    # a run to the same point with a fixed budget would not be longer: the rule stopped early
    assert result.metrics["fve"] > 0.5


def test_default_budget_resumes_bit_exactly(quick_plateau, tmp_path):
    store = TensorStore(structured(n=3000))
    whole = fit(store, out=tmp_path / "whole", **SMALL).sae
    plateau = json.loads((tmp_path / "whole" / "cfg.json").read_text())["training"]["budget"]
    stop_at = plateau["plateau_step"] + 5  # inside the decay: the plateau state must come back
    with pytest.raises(TrainingStopped):
        fit(
            store,
            out=tmp_path / "cut",
            **{**SMALL, "checkpoint_every": 7},
            stop_after_steps=stop_at,
        )
    resumed = fit(store, out=tmp_path / "cut", **SMALL)
    assert resumed.resumed_from_step == stop_at
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.sae.state_dict()[k]), k


def test_fixed_tokens_keep_their_settings_hash(tmp_path):
    """Runs with --tokens hash as before the default budget existed (no ``stop`` key)."""
    store = TensorStore(structured(n=1000))
    fit(store, out=tmp_path / "a", **SMALL, tokens=300)
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())["training"]
    assert "stop" not in {k for k, v in cfg["settings"].items() if v is not None}
    assert cfg["budget"] == {"rule": "tokens", "steps": 3}


def test_small_store_warning(tmp_path, caplog):
    store = TensorStore(structured(n=3000))
    with caplog.at_level(logging.WARNING, logger="plmsae.sae.train"):
        fit(store, out=tmp_path / "a", **{**SMALL, "latents": 16}, tokens=200)
    assert "per latent" not in caplog.text  # 3,000 tokens for 16 latents: enough
    with caplog.at_level(logging.WARNING, logger="plmsae.sae.train"):
        fit(store, out=tmp_path / "b", **{**SMALL, "latents": 64}, tokens=200)
    assert "3,000 residues for 64 latents (fewer than 100 per latent)" in caplog.text
    assert "at most 30" in caplog.text
