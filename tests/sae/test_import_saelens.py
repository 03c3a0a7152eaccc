"""plmsae import saelens: checkpoints written by SAELens itself (``SAE.save_model`` in its own
environment, .venv-saelens: it pins torch) are imported, and the codes / reconstructions equal
SAELens' own ``encode`` / ``decode`` within 1e-5; pre-6 configs, plmsae's own exports and the
refusals need no SAELens."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_export import PY, _make

from plmsae._util import InputError
from plmsae.sae.checkpoint import load_sae, read_sae_config
from plmsae.sae.export import write_saelens
from plmsae.sae.imports import import_sae

ATOL = 1e-5

#: (name, class, config, hook name, the layer plmsae must find or None = ask)
CASES = [
    ("standard", "StandardSAE", {"normalize_activations": "none"}, "esm.encoder.layer.1", 2),
    (
        "standard_norm",
        "StandardSAE",
        {"normalize_activations": "constant_norm_rescale", "apply_b_dec_to_input": False},
        "esm.encoder.emb_layer_norm_after",
        3,
    ),
    (
        "topk_rescaled",
        "TopKSAE",
        {"k": 5, "rescale_acts_by_decoder_norm": True, "normalize_activations": "layer_norm"},
        "esm.embeddings",
        0,
    ),
    (
        "topk",
        "TopKSAE",
        {"k": 7, "normalize_activations": "expected_average_only_in"},
        "esm.encoder.layer.0",
        1,
    ),
    ("jumprelu", "JumpReLUSAE", {}, "blocks.1.hook_resid_post", None),
]

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from safetensors.torch import load_file, save_file
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata
    root, model = sys.argv[1], sys.argv[2]
    cases = json.loads(open(root + "/cases.json").read())
    x = load_file(root + "/x.safetensors")["x"]
    for i, (name, cls, cfg, hook) in enumerate(cases):
        sae_cls = getattr(sae_lens, cls)
        cfg_cls = getattr(sae_lens, cls + "Config")
        meta = SAEMetadata(model_name=model, hook_name=hook)
        sae = sae_cls(cfg_cls(d_in=32, d_sae=96, metadata=meta, **cfg))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for key, p in sae.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if key.startswith("b") else 0.2))
            if cls == "JumpReLUSAE":
                sae.threshold.copy_(torch.rand(96, generator=g) * 0.4 - 0.05)
            z = sae.encode(x)
            y = sae.decode(z)
        sae.save_model(root + "/" + name)
        save_file({"z": z.contiguous(), "y": y.contiguous()}, root + "/" + name + "_out.safetensors")
        print(type(sae).__name__, sae_lens.__version__)
""")


@pytest.mark.slow
@pytest.mark.skipif(
    PY is None,
    reason="no python with sae_lens: build .venv-saelens with PLMSAE_SAELENS=1 bash scripts/setup.sh",
)
def test_saelens_checkpoints_equal_saelens_forward(tmp_path, tiny_esm_dir):
    """One SAELens process writes every case (its import takes ~10 s)."""
    x = torch.randn(200, 32, generator=torch.Generator().manual_seed(3)) * 2 + 0.5
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    (tmp_path / "cases.json").write_text(json.dumps([c[:4] for c in CASES]))
    (tmp_path / "run.py").write_text(SCRIPT)
    r = subprocess.run(
        [PY, str(tmp_path / "run.py"), str(tmp_path), str(tiny_esm_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert [line.split()[0] for line in r.stdout.splitlines()] == [c[1] for c in CASES]
    for name, *_, layer in CASES:
        src = tmp_path / name
        if layer is None:  # "blocks.1.hook_resid_post" names no module of ESM-2
            with pytest.raises(InputError, match="does not say which layer"):
                import_sae("saelens", str(src), out=tmp_path / f"{name}_sae")
            res = import_sae(
                "saelens",
                str(src),
                out=tmp_path / f"{name}_sae",
                layer=2,
                hook_point="hidden_states",
            )
        else:
            res = import_sae("saelens", str(src), out=tmp_path / f"{name}_sae")
        assert res.layer == (layer if layer is not None else 2), name
        assert res.model == str(tiny_esm_dir.resolve())
        sae = load_sae(res.out, model=str(tiny_esm_dir.resolve()))
        want = load_file(str(tmp_path / f"{name}_out.safetensors"))
        with torch.no_grad():
            z, stats = sae.encode(x, return_stats=True)
            y = sae.decode(z, stats)
        assert ((z > 0) == (want["z"] > 0)).all(), name
        torch.testing.assert_close(z, want["z"], atol=ATOL, rtol=0, msg=name)
        torch.testing.assert_close(y, want["y"], atol=ATOL, rtol=0, msg=name)


def test_a_model_that_cannot_be_described_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    write_saelens(_make("topk", "scalar"), tmp_path / "sl")  # recorded for hub ID test/model
    with pytest.raises(InputError, match="config of model test/model: not in the local Hugging"):
        import_sae("saelens", str(tmp_path / "sl"), out=tmp_path / "x")


def test_export_then_import_round_trip_with_a_real_model(tmp_path, tiny_esm_dir, tiny_store):
    from plmsae.sae.train import train

    fitted = train(
        tiny_store, out=tmp_path / "fit", latents=48, k=6, layer=2, tokens=2000, batch_size=64
    )
    write_saelens(fitted.sae, tmp_path / "sl")
    res = import_sae("saelens", str(tmp_path / "sl"), out=tmp_path / "back")
    assert (res.layer, res.arch, res.k) == (2, "topk", 6)
    assert any("exported by plmsae" in n for n in res.notes)
    back = load_sae(res.out)
    x = torch.randn(100, 32) * 3
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), fitted.sae.encode(x), atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(back(x), fitted.sae(x), atol=1e-4, rtol=1e-5)
    assert read_sae_config(res.out).model["id"] == fitted.sae.cfg.model["id"]


def test_pre6_config_and_refusals(tmp_path, tiny_esm_dir):
    d = tmp_path / "old"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    w = {
        "W_enc": torch.randn(32, 96, generator=g),
        "b_enc": torch.randn(96, generator=g),
        "W_dec": torch.randn(96, 32, generator=g),
        "b_dec": torch.randn(32, generator=g),
    }
    save_file(w, str(d / "sae_weights.safetensors"))
    old = {  # SAELens 3-5 layout: hook_point, activation_fn_str, activation_fn_kwargs
        "d_in": 32,
        "d_sae": 96,
        "model_name": str(tiny_esm_dir),
        "hook_point": "esm.encoder.layer.0",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 4},
        "normalize_activations": False,
        "apply_b_dec_to_input": True,
        "sae_lens_training_version": "4.0.0",
    }
    (d / "cfg.json").write_text(json.dumps(old))
    res = import_sae("saelens", str(d), out=tmp_path / "a")
    assert (res.arch, res.k, res.layer, res.normalisation) == ("topk", 4, 1, "none")
    x = torch.randn(50, 32)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    top = pre.topk(4, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    torch.testing.assert_close(load_sae(res.out).encode(x), z, atol=ATOL, rtol=0)
    for change, match in (
        ({"architecture": "gated", "sae_lens_version": "6.0.0"}, "architecture 'gated'"),
        ({"activation_fn_str": "tanh-relu", "activation_fn_kwargs": {}}, "activation function"),
        ({"hook_point": "blocks.0.attn.hook_z"}, "reshape_activations 'hook_z'"),
    ):
        (d / "cfg.json").write_text(json.dumps({**old, **change}))
        with pytest.raises(InputError, match=match):
            import_sae("saelens", str(d), out=tmp_path / "b")
    (d / "cfg.json").unlink()
    with pytest.raises(InputError, match="cfg.json is missing"):
        import_sae("saelens", str(d), out=tmp_path / "b")
