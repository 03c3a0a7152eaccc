"""`plmsae train` through the CLI builder: impossible options refused before anything is written,
a file as --out, Ctrl-C (checkpoint, exit 130, exact resume that says so), the help text."""

import json
import logging
import os
import signal

import pytest
import torch
from _cli import sae_app
from _synth import fit
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.sae.checkpoint import load_sae
from plmsae.sae.train import TrainConfig, Trainer

ARGS = ["--layer", "2", "--latents", "64", "--k", "4", "--batch-size", "32", "--tokens", "320"]
ARGS += ["--log-every", "1", "--select-dtype", "float32", "--checkpoint-every", "4"]


def _train(store, out, *extra):
    return CliRunner().invoke(sae_app(), ["train", str(store), "--out", str(out), *ARGS, *extra])


def _metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def _same_sae(a, b):
    sa, sb = load_sae(a).state_dict(), load_sae(b).state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_k_larger_than_latents_is_refused_before_writing(tiny_store, tmp_path):
    r = _train(tiny_store, tmp_path / "o", "--k", "32", "--latents", "16")
    assert r.exit_code == 2, r.output
    assert "--k 32: is larger than --latents 16" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(latents=32, level="protein"), "--latents 32: is smaller than k = 64"),
        (
            dict(arch="matryoshka", latents=64, matryoshka_prefixes=[8, 128]),
            "must end at --latents 64",
        ),
        (
            dict(arch="matryoshka", latents=64, matryoshka_prefixes=[32, 8, 64]),
            "must be positive and increasing",
        ),
        (dict(log_every=0), "--log-every 0: must be at least 1"),
        (dict(tokens=0), "--tokens 0: must be at least 1"),
        (dict(decay_fraction=1.5), "--decay-fraction 1.5: must be between 0 and 1"),
        (dict(lr=0.0), "--lr 0.0: must be positive"),
        (dict(select_dtype="float16"), "unknown --select-dtype 'float16'"),
        (dict(target_layer=3, normalisation="layernorm"), "layer norm"),
    ],
)
def test_impossible_combinations_are_refused(options, message, tmp_path):
    with pytest.raises(InputError, match=message):
        TrainConfig(store=tmp_path, out=tmp_path / "o", **options)


def test_batch_size_must_split_over_the_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InputError, match="--batch-size 4096: is not divisible by the 3 ranks"):
        TrainConfig(store=tmp_path, out=tmp_path / "o")
    with pytest.raises(InputError, match="--batch-size 2: is not divisible by the 3 ranks"):
        TrainConfig(store=tmp_path, out=tmp_path / "o", batch_size=2)  # fewer rows than ranks


def test_out_that_is_a_file_is_a_clear_error(tiny_store, tmp_path):
    (tmp_path / "taken").write_text("not a directory")
    r = _train(tiny_store, tmp_path / "taken")
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())  # rich wraps at the terminal width
    assert "--out exists and is not a directory" in text and "Traceback" not in text


def test_help_is_written_for_users():
    r = CliRunner().invoke(sae_app(), ["train", "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0
    assert "Train a sparse autoencoder" in r.output and "resumes" in r.output
    assert "Returns" not in r.output and "``" not in r.output
    assert "--matryoshka-prefixes" in r.output and "--stop-after-steps" not in r.output


def _interrupt_at(monkeypatch, step, *, mid_step=False):
    """Ctrl-C during training step ``step``: a real SIGINT (the trainer finishes the step), or a
    KeyboardInterrupt raised inside the step (as a second Ctrl-C would)."""
    orig = Trainer.train_step

    def train_step(self, *a, **k):
        if self.step == step and mid_step:
            raise KeyboardInterrupt
        out = orig(self, *a, **k)
        if self.step == step + 1 and not mid_step:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_ctrl_c_checkpoints_and_the_rerun_resumes_exactly(
    tiny_store, tmp_path, monkeypatch, caplog
):
    full = _train(tiny_store, tmp_path / "full")
    assert full.exit_code == 0, full.output
    with monkeypatch.context() as m:
        _interrupt_at(m, 5)
        cut = _train(tiny_store, tmp_path / "cut")
    assert cut.exit_code == 130, cut.output
    assert "interrupted" in cut.output and "Traceback" not in cut.output
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6  # the step under way when Ctrl-C came was finished first
    assert not (tmp_path / "cut" / "cfg.json").exists()
    with caplog.at_level(logging.INFO, logger="plmsae.sae.train"):
        again = _train(tiny_store, tmp_path / "cut")
    assert again.exit_code == 0, again.output
    assert f"resuming from {tmp_path / 'cut' / 'checkpoint'} at step 6 of 10" in caplog.text
    assert "resumed from the checkpoint at step 6 of 10" in again.output
    assert _same_sae(tmp_path / "full", tmp_path / "cut")
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "full")
    assert not (tmp_path / "cut" / "checkpoint").exists()
    rerun = _train(tiny_store, tmp_path / "cut")
    assert rerun.exit_code == 0 and "already trained with these settings" in rerun.output


def test_interrupt_inside_a_step_resumes_from_the_last_checkpoint(
    synth_store, tmp_path, monkeypatch
):
    kw = dict(latents=64, k=4, batch_size=200, tokens=12 * 200, log_every=1, checkpoint_every=4)
    kw.update(select_dtype="float32")
    full = fit(synth_store, out=tmp_path / "full", **kw)
    with monkeypatch.context() as m:
        _interrupt_at(m, 6, mid_step=True)
        with pytest.raises(KeyboardInterrupt):
            fit(synth_store, out=tmp_path / "cut", **kw)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4  # no checkpoint of a half-done step
    resumed = fit(synth_store, out=tmp_path / "cut", **kw)
    assert resumed.resumed_from_step == 4
    for k, v in full.sae.state_dict().items():
        assert torch.equal(v, resumed.sae.state_dict()[k]), k
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "full")
