"""Architectures: shapes, sparsity, gradients of the sparse path, save/load, mismatch refusal."""

import json

import pytest
import torch
from _synth import structured

from plmsae._util import InputError
from plmsae.sae.architectures import ARCHITECTURES, create_sae
from plmsae.sae.base import SAEConfig, TrainState
from plmsae.sae.checkpoint import load_sae, save_sae


def make(arch, **kw):
    torch.manual_seed(0)
    cfg = SAEConfig(
        arch=arch,
        d_in=16,
        d_sae=64,
        k=4,
        auxk_alpha=1 / 32,
        model={"id": "test/model", "revision": "r1", "d_model": 16},
        layer=2,
        **kw,
    )
    sae = create_sae(cfg)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_shapes_and_nonnegative(arch):
    sae = make(arch)
    x = torch.randn(5, 7, 16)
    z = sae.encode(x)
    assert z.shape == (5, 7, 64) and (z >= 0).all()
    assert sae.decode(z).shape == (5, 7, 16)
    assert sae(x).shape == (5, 7, 16)
    loss, info = sae.training_loss(x.reshape(-1, 16), x.reshape(-1, 16), TrainState())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in sae.parameters())


def test_topk_exactly_k():
    sae = make("topk")
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive -> exactly k
    z = sae.encode(torch.randn(100, 16))
    assert ((z > 0).sum(-1) == 4).all()


def test_topk_sparse_backward_matches_dense_autograd():
    sae = make("topk")
    x = torch.randn(40, 16)
    dead = torch.rand(64, generator=torch.Generator().manual_seed(1)) < 0.5
    st = TrainState(dead_mask=dead, loss_scale=0.1)
    loss, _ = sae.training_loss(x, x, st)
    loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    # the same loss written densely
    xc = x - sae.b_dec
    pre = xc @ sae.W_enc.T + sae.b_enc
    v, i = pre.topk(4)
    z = torch.zeros_like(pre).scatter(1, i, v.relu())
    e = x - (z @ sae.W_dec + sae.b_dec)
    ref = e.pow(2).sum() * 0.1 / 40
    d_idx = dead.nonzero().squeeze(1)
    k_aux = min(8, len(d_idx))
    _, j = pre[:, d_idx].detach().topk(k_aux)
    za = torch.zeros_like(pre).scatter(1, d_idx[j], pre.gather(1, d_idx[j]).relu())
    ref = (
        ref
        + (1 / 32)
        * min(len(d_idx) / 8, 1)
        * ((za @ sae.W_dec) - e.detach()).pow(2).sum()
        * 0.1
        / 40
    )
    assert torch.allclose(loss, ref, rtol=1e-5)
    ref.backward()
    for n, p in sae.named_parameters():
        assert torch.allclose(p.grad, sparse_grads[n], atol=1e-5), n


def test_batchtopk_average_k_and_threshold():
    sae = make("batchtopk")
    sae.train()
    x = torch.randn(50, 16)
    _, info = sae.training_loss(x, x, TrainState())
    assert float(info["l0"]) <= 4.0 + 1e-6 and float(sae.threshold) > 0
    sae.eval()
    z = sae.encode(x)
    assert ((z > 0) == (sae.pre_acts(x - 0) > sae.threshold)).float().mean() > 0.9


def test_jumprelu_threshold_gets_gradient():
    sae = make("jumprelu")
    x = torch.randn(64, 16)
    with torch.no_grad():
        sae.log_threshold.fill_(-1.0)
        sae.cfg.jumprelu_bandwidth = 1.0
    loss, _ = sae.training_loss(x, x, TrainState())
    loss.backward()
    assert sae.log_threshold.grad.abs().sum() > 0


@pytest.mark.parametrize("norm", ["scalar", "layernorm", "none"])
def test_normalisation_is_undone(norm):
    cfg = SAEConfig(arch="relu", d_in=8, d_sae=16, normalisation=norm, norm_scale=0.25)
    sae = create_sae(cfg)
    with torch.no_grad():  # exact identity through [I; -I]
        eye = torch.eye(8)
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = torch.randn(10, 8) * 3 + 2
    tol = 1e-4 if norm == "layernorm" else 1e-5  # x / (std + eps) * std: SAELens' convention
    assert torch.allclose(sae(x), x, atol=tol)
    z, stats = sae.encode(x, return_stats=True)
    assert torch.allclose(sae.decode(z, stats), x, atol=tol)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_save_load_bit_exact(arch, tmp_path):
    sae = make(arch)
    save_sae(sae, tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["arch"] == arch and cfg["d_in"] == 16 and cfg["layer"] == 2
    back = load_sae(tmp_path / "s")
    for (n, a), (_, b) in zip(sae.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n
    x = torch.randn(9, 16)
    assert torch.equal(sae.encode(x), back.encode(x))
    assert torch.equal(sae(x), back(x))


def test_load_refuses_mismatch(tmp_path):
    save_sae(make("topk"), tmp_path / "s")
    load_sae(tmp_path / "s", model={"id": "test/model", "revision": "r1"}, layer=2, d_in=16)
    with pytest.raises(InputError, match="layer 2, not layer 3"):
        load_sae(tmp_path / "s", layer=3)
    with pytest.raises(InputError, match="reads 16-d"):
        load_sae(tmp_path / "s", d_in=32)
    with pytest.raises(InputError, match="trained on model 'test/model'"):
        load_sae(tmp_path / "s", model="facebook/esm2_t12_35M_UR50D")
    with pytest.raises(InputError, match="revision"):
        load_sae(tmp_path / "s", model={"id": "test/model", "revision": "other"})
    with pytest.raises(InputError, match="no SAE checkpoint"):
        load_sae(tmp_path)


def test_plmsae_top_level_api(tmp_path):
    import plmsae

    save_sae(make("topk"), tmp_path / "s")
    sae = plmsae.load_sae(tmp_path / "s")
    x = torch.tensor(structured(n=10, d=16).numpy())
    assert sae.decode(sae.encode(x)).shape == x.shape


def test_unknown_architecture_is_named(tmp_path):
    with pytest.raises(InputError, match="unknown SAE architecture 'gated'.*topk, batchtopk"):
        create_sae(SAEConfig(arch="gated", d_in=4, d_sae=8))
    save_sae(make("topk"), tmp_path / "s")
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    (tmp_path / "s" / "cfg.json").write_text(json.dumps({**raw, "arch": "gated"}))
    with pytest.raises(InputError, match="cfg.json: unknown SAE architecture 'gated'"):
        load_sae(tmp_path / "s")
