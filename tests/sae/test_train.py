"""Training: learning, AuxK revival, determinism, exact resume, transcoders, outputs."""

import json

import pytest
import torch
from _synth import fit, structured

from plmsae._util import InputError
from plmsae.sae.architectures import ARCHITECTURES
from plmsae.sae.checkpoint import load_sae
from plmsae.sae.data import TensorStore
from plmsae.sae.train import Trainer, TrainingStopped, lr_at

SMALL = dict(
    latents=128, k=4, batch_size=200, checkpoint_every=0, log_every=1, select_dtype="float32"
)


def _losses(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_loss_decreases_on_structured_data(arch, synth_store, tmp_path):
    kw = dict(SMALL, lr=3e-3, tokens=60 * 200)
    if arch == "relu":
        kw["l1_coefficient"] = 0.1
    if arch == "jumprelu":
        kw["l0_coefficient"] = 0.05
    fit(synth_store, out=tmp_path / arch, arch=arch, **kw)
    rec = _losses(tmp_path / arch)
    first, last = rec[0], rec[-1]
    # matryoshka also pays for its tiny prefixes (8, 16 ... latents), so its loss falls less
    assert last["loss"] < (0.9 if arch == "matryoshka" else 0.75) * first["loss"], (first, last)
    assert last["fve"] > 0.5
    if arch == "topk":
        assert last["l0"] == 4
    cfg = json.loads((tmp_path / arch / "cfg.json").read_text())
    assert cfg["training"]["tokens"] == 60 * 200 and cfg["layer"] == 2
    assert cfg["model"]["id"] == "test/model" and cfg["hook_point"] == "esm.encoder.layer.1"


def test_auxk_revives_dead_latents(synth_store, tmp_path, monkeypatch):
    """Handicap half the latents (encoder bias -3 row norms: they almost never win the top k): with AuxK
    they come back within 60 steps, without it a third stay dead."""

    orig = Trainer.init_normalisation

    def sabotage(self, sae):
        r = orig(self, sae)
        with torch.no_grad():
            # -3 in units of the (unit-norm before fitting) encoder rows' scale
            sae.b_enc[64:] = -3.0 * sae.W_enc[64:].norm(dim=1)
        return r

    def run(alpha, out):
        fit(
            synth_store,
            out=out,
            arch="topk",
            **dict(SMALL, lr=1e-2, tokens=60 * 200, auxk_alpha=alpha, dead_tokens=2000),
        )
        return _losses(out)[-1]["dead_fraction"]

    monkeypatch.setattr(Trainer, "init_normalisation", sabotage)

    assert run(0.0, tmp_path / "no_aux") >= 0.25
    assert run(1.0, tmp_path / "aux") < 0.1


def test_fixed_seed_identical(synth_store, tmp_path):
    a = fit(synth_store, out=tmp_path / "a", arch="topk", **dict(SMALL, tokens=20 * 200)).sae
    b = fit(synth_store, out=tmp_path / "b", arch="topk", **dict(SMALL, tokens=20 * 200)).sae
    c = fit(
        synth_store, out=tmp_path / "c", arch="topk", seed=1, **dict(SMALL, tokens=20 * 200)
    ).sae
    for n, p in a.state_dict().items():
        assert torch.equal(p, b.state_dict()[n])
    assert not torch.equal(a.W_enc, c.W_enc)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_resume_after_kill_is_bit_exact(arch, synth_store, tmp_path):
    kw = dict(SMALL, tokens=30 * 200, checkpoint_every=7, arch=arch)
    full = fit(synth_store, out=tmp_path / "full", **kw).sae
    with pytest.raises(TrainingStopped):
        fit(synth_store, out=tmp_path / "cut", stop_after_steps=12, **kw)
    assert (tmp_path / "cut" / "checkpoint" / "state.json").is_file()
    assert not (tmp_path / "cut" / "cfg.json").exists()
    result = fit(synth_store, out=tmp_path / "cut", **kw)
    resumed = result.sae
    assert result.resumed_from_step == 12 and not result.reused
    for n, p in full.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[n]), n
    # the metrics log has each step once, as in the uninterrupted run
    assert [r["step"] for r in _losses(tmp_path / "cut")] == list(range(1, 31))
    assert _losses(tmp_path / "cut")[-1]["loss"] == _losses(tmp_path / "full")[-1]["loss"]
    assert not (tmp_path / "cut" / "checkpoint").exists()


def test_finished_run_is_reused_and_other_settings_refused(synth_store, tmp_path):
    first = fit(synth_store, out=tmp_path / "a", arch="topk", **dict(SMALL, tokens=5 * 200))
    again = fit(synth_store, out=tmp_path / "a", arch="topk", **dict(SMALL, tokens=5 * 200))
    a, b = first.sae, again.sae
    assert torch.equal(a.W_enc, b.W_enc)
    assert again.reused and not first.reused and again.metrics == first.metrics
    with pytest.raises(InputError, match="other settings"):
        fit(synth_store, out=tmp_path / "a", arch="topk", **dict(SMALL, tokens=6 * 200))


@pytest.mark.parametrize("target", ["next", "difference"])
def test_transcoder(target, tmp_path):
    x = structured(n=4000, d=16, seed=3)
    A = torch.randn(16, 24, generator=torch.Generator().manual_seed(4)) / 4
    y = x @ A if target == "next" else x + torch.relu(x) @ A[:, :16]
    st = TensorStore(x, y, layer=1, target_layer=2)
    sae = fit(
        st,
        out=tmp_path / target,
        arch="topk",
        target_layer=2,
        transcoder_target=target,
        **dict(SMALL, k=8, lr=2e-2, tokens=60 * 200),
    ).sae
    assert sae.cfg.is_transcoder and sae.cfg.target_layer == 2
    want = y if target == "next" else y - x
    pred = sae(x)
    assert pred.shape == want.shape
    fve = 1 - (pred - want).pow(2).sum() / (want - want.mean(0)).pow(2).sum()
    assert fve > 0.5
    back = load_sae(tmp_path / target)
    assert torch.equal(back(x), pred)
    with pytest.raises(InputError, match="layer norm"):
        fit(st, out=tmp_path / "ln", target_layer=2, normalisation="layernorm", **SMALL)


def test_lr_schedule():
    lrs = [lr_at(s, 1.0, 100, 10, 0.2) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0 and lrs[50] == 1.0
    assert lrs[80] == 1.0 and lrs[90] == pytest.approx(0.5) and lrs[99] == pytest.approx(0.05)


def test_bad_options(synth_store, tmp_path):
    with pytest.raises(InputError, match="unknown --arch"):
        fit(synth_store, out=tmp_path, arch="gated")
    with pytest.raises(InputError, match="no layer 5"):
        fit(synth_store, out=tmp_path, layer=5)
