"""plmsae import: InterPLM, InterProt and Biohub ESM-C checkpoints written as the peers write
them are imported, and the plmsae SAE's codes and reconstructions equal the peer's own forward
(written in tests/sae/peers.py from their code: none of the three installs from PyPI) within
1e-5 on random inputs; what a checkpoint does not say is asked for; contradictions are refused;
the quick fidelity check and the CLI printer."""

from __future__ import annotations

import json

import pytest
import torch
from peers import (
    F_,
    D,
    biohub_forward,
    biohub_repository,
    interplm_checkpoint,
    interplm_forward,
    interprot_checkpoint,
    interprot_forward,
)

from plmsae._util import InputError
from plmsae.sae.checkpoint import load_sae, read_sae_config
from plmsae.sae.imports import ImportConfig, import_sae

ATOL = 1e-5


def _x(n=200, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g) * 2 + 0.5


def _assert_same(sae, codes, recon, x):
    with torch.no_grad():
        z, stats = sae.encode(x, return_stats=True)
        y = sae.decode(z, stats)
    assert ((z > 0) == (codes > 0)).all()
    torch.testing.assert_close(z, codes, atol=ATOL, rtol=0)
    torch.testing.assert_close(y, recon, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "kind,sqrt_d",
    [
        ("relu", False),
        ("relu", True),
        ("tied", False),
        ("jumprelu", False),
        ("jumprelu", True),
        ("topk", False),
        ("topk", True),
        ("batchtopk", False),
    ],
)
def test_interplm_equals_peer_forward(tmp_path, tiny_esm_dir, kind, sqrt_d):
    path = tmp_path / "layer_2" / "ae_normalized.pt"
    state = interplm_checkpoint(path, kind, sqrt_d)
    arch = {"tied": "relu"}.get(kind, kind)
    extra = {"arch": arch} if kind in ("topk", "batchtopk") else {}
    res = import_sae(
        "interplm", str(path), out=tmp_path / "sae", model=str(tiny_esm_dir), layer=2, **extra
    )
    assert (res.arch, res.d_in, res.d_sae, res.layer) == (arch, D, F_, 2)
    assert res.normalisation == ("sqrt_d" if sqrt_d else "none")
    sae = load_sae(res.out, model=str(tiny_esm_dir.resolve()), layer=2, d_in=D)
    x = _x()
    codes, recon = interplm_forward(state, kind, x)
    _assert_same(sae, codes, recon, x)
    if kind == "topk":
        assert ((sae.encode(x) > 0).sum(-1) <= 5).all() and sae.cfg.k == 5
    assert any("activation_rescale_factor" in n for n in res.notes)


def test_interplm_records_model_layer_hook_and_provenance(tmp_path, tiny_esm_dir):
    path = tmp_path / "ae.pt"
    interplm_checkpoint(path, "relu")
    res = import_sae("interplm", str(path), out=tmp_path / "sae", model=str(tiny_esm_dir), layer=3)
    cfg = read_sae_config(res.out)
    assert cfg.model["id"] == str(tiny_esm_dir.resolve()) and cfg.model["family"] == "esm2"
    assert (cfg.model["n_layers"], cfg.model["d_model"], cfg.layer) == (3, 32, 3)
    assert cfg.hook_point == "esm.encoder.emb_layer_norm_after"  # the last layer
    imp = cfg.training["imported"]
    assert imp["format"] == "interplm" and imp["source"] == str(path)
    assert list(imp["files"]) == ["ae.pt"] and len(imp["files"]["ae.pt"]) == 64
    assert imp["peer"]["class"] == "ReLUSAE"
    # the same command again reuses the checkpoint; another import into it is refused
    again = import_sae(
        "interplm", str(path), out=tmp_path / "sae", model=str(tiny_esm_dir), layer=3
    )
    assert again.reused
    with pytest.raises(InputError, match="holds another SAE"):
        import_sae("interplm", str(path), out=tmp_path / "sae", model=str(tiny_esm_dir), layer=2)
    # the model guard: refused on another model and on another layer
    with pytest.raises(InputError, match="trained on layer 3"):
        load_sae(res.out, layer=2)
    with pytest.raises(InputError, match="not on 'facebook/esm2_t6_8M_UR50D'"):
        load_sae(res.out, model="facebook/esm2_t6_8M_UR50D")


def test_interplm_arch_from_config_yaml_or_asked(tmp_path, tiny_esm_dir):
    path = tmp_path / "run" / "ae.pt"
    interplm_checkpoint(path, "batchtopk")
    common = dict(out=tmp_path / "a", model=str(tiny_esm_dir), layer=1)
    with pytest.raises(InputError, match="--arch topk or --arch batchtopk"):
        import_sae("interplm", str(path), **common)
    (path.parent / "config.yaml").write_text(
        "!!python/object:interplm.train.configs.TrainingRunConfig\n"
        "trainer_cfg: !!python/object:interplm.train.trainers.batch_top_k.BatchTopKTrainerConfig\n"
        "  k: 5\n"
    )
    assert import_sae("interplm", str(path), **common).arch == "batchtopk"
    with pytest.raises(InputError, match="contradicts config.yaml"):
        import_sae("interplm", str(path), **{**common, "out": tmp_path / "b"}, arch="topk")


def test_missing_metadata_is_asked_for(tmp_path, tiny_esm_dir):
    path = tmp_path / "ae.pt"
    interplm_checkpoint(path, "relu")
    out = tmp_path / "sae"
    with pytest.raises(InputError, match="pass --model"):
        import_sae("interplm", str(path), out=out, layer=2)
    with pytest.raises(InputError, match="pass --layer"):
        import_sae("interplm", str(path), out=out, model=str(tiny_esm_dir))
    with pytest.raises(InputError, match="layers 0..3"):
        import_sae("interplm", str(path), out=out, model=str(tiny_esm_dir), layer=7)
    assert not (out / "cfg.json").exists()


def test_wrong_model_width_and_wrong_files_are_refused(tmp_path, tiny_esm_dir):
    from safetensors.torch import save_file

    path = tmp_path / "ae.pt"
    state = interplm_checkpoint(path, "relu")
    small = {k: (v[:, :16] if k == "encoder.weight" else v) for k, v in state.items()}
    small["decoder.weight"], small["bias"] = state["decoder.weight"][:16], state["bias"][:16]
    torch.save(small, tmp_path / "small.pt")
    with pytest.raises(InputError, match="reads 16-d vectors but .* has width 32"):
        import_sae(
            "interplm",
            str(tmp_path / "small.pt"),
            out=tmp_path / "o",
            model=str(tiny_esm_dir),
            layer=1,
        )
    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not a InterProt SAE"):
        import_sae("interprot", str(tmp_path / "other.safetensors"), out=tmp_path / "o", k=4)
    with pytest.raises(InputError, match="SAE source not found"):
        import_sae("interplm", str(tmp_path / "nowhere.pt"), out=tmp_path / "o")
    with pytest.raises(InputError, match="--format 'sparsify'"):
        ImportConfig("sparsify", str(path), out=tmp_path / "o")
    with pytest.raises(InputError, match="--hook-point 'mlp'"):
        ImportConfig("interplm", str(path), out=tmp_path / "o", hook_point="mlp")


def test_interprot_equals_peer_forward(tmp_path, tiny_esm_dir):
    path = tmp_path / "esm2_plm32_l2_sae96_k7.safetensors"
    state = interprot_checkpoint(path)
    with pytest.raises(InputError, match="do not record k"):
        import_sae("interprot", str(path), out=tmp_path / "sae", model=str(tiny_esm_dir), layer=2)
    res = import_sae(
        "interprot", str(path), out=tmp_path / "sae", model=str(tiny_esm_dir), layer=2, k=7
    )
    assert (res.arch, res.normalisation, res.k) == ("topk", "layernorm", 7)
    x = _x()
    _assert_same(load_sae(res.out), *interprot_forward(state, 7, x), x)
    # a Lightning-style state dict (keys prefixed "sae.") reads the same
    torch.save({"sae." + k: v for k, v in state.items()}, tmp_path / "last.ckpt")
    res = import_sae(
        "interprot",
        str(tmp_path / "last.ckpt"),
        out=tmp_path / "sae2",
        model=str(tiny_esm_dir),
        layer=2,
        k=7,
    )
    _assert_same(load_sae(res.out), *interprot_forward(state, 7, x), x)


def test_biohub_equals_peer_forward(tmp_path, tiny_esmc_dir):
    repo = tmp_path / "ESMC-tiny-sae-k6-codebook96"
    states = biohub_repository(repo, layers=[1, 2], k=6)
    common = dict(model=str(tiny_esmc_dir), hook_point="hidden_states")
    with pytest.raises(InputError, match=r"layers \[1, 2\]; which one"):
        import_sae("esmc-biohub", str(repo), out=tmp_path / "s", **common)
    with pytest.raises(InputError, match="no SAE for layer 3"):
        import_sae("esmc-biohub", str(repo), out=tmp_path / "s", layer=3, **common)
    res = import_sae("esmc-biohub", str(repo), out=tmp_path / "s", layer=2, **common)
    assert (res.arch, res.normalisation, res.k, res.family) == ("topk", "layernorm", 6, "esmc")
    assert res.hook_point == "esmc.layers.1"
    sae = load_sae(res.out)
    x = _x()
    feats, recon_z = biohub_forward(states[2], 6, x)
    with torch.no_grad():
        z, stats = sae.encode(x, return_stats=True)
        x_n, _ = sae.normalise(x)
        y_n = z @ sae.W_dec + sae.b_dec  # plmsae's reconstruction before denormalising
    torch.testing.assert_close(z, feats, atol=ATOL, rtol=0)
    torch.testing.assert_close(y_n, recon_z, atol=ATOL, rtol=0)  # Biohub's own output
    mu, std = stats
    torch.testing.assert_close(sae.decode(z, stats), recon_z * std + mu, atol=ATOL, rtol=0)
    # one layer file names its layer; --layer may not contradict it
    layer_file = repo / "layer_1.safetensors"
    res = import_sae("esmc-biohub", str(layer_file), out=tmp_path / "s1", **common)
    assert res.layer == 1
    feats1 = biohub_forward(states[1], 6, x)[0]
    torch.testing.assert_close(load_sae(res.out).encode(x), feats1, atol=ATOL, rtol=0)
    with pytest.raises(InputError, match="contradicts the checkpoint, which is for layer 1"):
        import_sae("esmc-biohub", str(layer_file), out=tmp_path / "s3", layer=2, **common)


def test_biohub_hook_point_is_asked_for_and_residual_updates_refused(tmp_path, tiny_esmc_dir):
    repo = tmp_path / "repo"
    biohub_repository(repo, layers=[2], k=6)
    model = str(tiny_esmc_dir)
    with pytest.raises(InputError, match="--hook-point hidden_states"):
        import_sae("esmc-biohub", str(repo), out=tmp_path / "s", model=model)
    res = import_sae(
        "esmc-biohub", str(repo), out=tmp_path / "s", model=model, hook_point="hidden_states"
    )
    assert res.layer == 2  # the only layer of this repository
    mlp = tmp_path / "mlp"
    biohub_repository(mlp, layers=[2], k=6, use_residual_update_instead_of_states=True)
    with pytest.raises(InputError, match="reads residual updates"):
        import_sae("esmc-biohub", str(mlp), out=tmp_path / "m", model=model)
    # k from config.json; a contradicting --k is refused; a lone layer file without it asks
    with pytest.raises(InputError, match="--k 5 contradicts config.json"):
        import_sae(
            "esmc-biohub",
            str(repo),
            out=tmp_path / "k",
            model=model,
            k=5,
            hook_point="hidden_states",
        )
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "layer_2.safetensors").write_bytes((repo / "layer_2.safetensors").read_bytes())
    with pytest.raises(InputError, match="pass --k"):
        import_sae(
            "esmc-biohub",
            str(lone / "layer_2.safetensors"),
            out=tmp_path / "l",
            model=model,
            hook_point="hidden_states",
        )


def test_fidelity_check_on_a_store_shows_a_wrong_layer(tmp_path, tiny_esm_dir, tiny_store):
    """An SAE fitted to layer 3 of the tiny model: imported for layer 3 its FVE is high; the
    same file imported for layer 2 is flagged at once."""
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.export import write_saelens
    from plmsae.sae.train import train

    fitted = train(
        tiny_store, out=tmp_path / "fit", latents=64, k=8, layer=3, batch_size=64, tokens=6000
    )
    write_saelens(fitted.sae, tmp_path / "sl")
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    del cfg["metadata"]["plmsae"]  # as a foreign SAELens SAE: only model_name / hook_name
    cfg["metadata"]["model_name"] = str(tiny_esm_dir)
    (tmp_path / "sl" / "cfg.json").write_text(json.dumps(cfg))
    good = import_sae("saelens", str(tmp_path / "sl"), out=tmp_path / "good", store=tiny_store)
    assert good.layer == 3 and good.check["fve"] > 0.5 and not good.warnings
    assert read_sae_config(good.out).metrics["evaluate"]["fve"] == good.check["fve"]
    cfg["metadata"]["hook_name"] = "blocks.2.hook_resid_post"  # a name that is no module here
    (tmp_path / "sl" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="hook is 'blocks.2.hook_resid_post'"):
        import_sae("saelens", str(tmp_path / "sl"), out=tmp_path / "bad", store=tiny_store)
    bad = import_sae(
        "saelens",
        str(tmp_path / "sl"),
        out=tmp_path / "bad",
        store=tiny_store,
        layer=2,
        hook_point="hidden_states",
    )
    assert bad.check["fve"] < 0.5 and "check --layer" in bad.warnings[0]
    assert ActivationStore(tiny_store).layers == [2, 3]


def test_cli_prints_and_json(tmp_path, tiny_esm_dir):
    import typer
    from typer.testing import CliRunner

    from plmsae.cli.build import build_command
    from plmsae.cli.sae import show_import

    app = typer.Typer(rich_markup_mode=None)
    app.command("import")(build_command(ImportConfig, import_sae.run, show_import))
    app.command("noop")(lambda: None)
    path = tmp_path / "ae.pt"
    interplm_checkpoint(path, "jumprelu", sqrt_d=True)
    args = [
        "import",
        "interplm",
        str(path),
        "--out",
        str(tmp_path / "sae"),
        "--model",
        str(tiny_esm_dir),
    ]
    runner = CliRunner()
    res = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert res.exit_code == 2 and "pass --layer" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, [*args, "--layer", "2"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "imported interplm jumprelu SAE: 96 latents, sqrt_d normalisation" in text
    assert "reads layer 2 of" in text and "(esm2, 32-d), hook point esm.encoder.layer.1" in text
    assert "normalize_to_sqrt_d" in text and f"saved to {tmp_path / 'sae'}" in text
    res = runner.invoke(app, [*args, "--layer", "2", "--json"])
    got = json.loads(res.stdout)
    assert got["reused"] and got["arch"] == "jumprelu" and got["out"] == str(tmp_path / "sae")
