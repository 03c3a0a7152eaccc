"""evaluate: reconstruction metrics and the masked-LM splice on the tiny random ESM-2."""

import json

import pytest
import torch
from _cli import sae_app
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.sae.architectures import create_sae
from plmsae.sae.base import SAEConfig
from plmsae.sae.checkpoint import save_sae
from plmsae.sae.data import TensorStore
from plmsae.sae.evaluate import evaluate, reconstruction_metrics
from plmsae.sae.hooks import hook_module, hook_point


def _sae_dir(path, store, layer, kind):
    from plmsae.embedding.store import ActivationStore

    spec = ActivationStore(store).meta["model"]
    d = 32
    sae = create_sae(
        SAEConfig(arch="relu", d_in=d, d_sae=2 * d, normalisation="none", model=spec, layer=layer)
    )
    with torch.no_grad():  # relu(x) - relu(-x) = x exactly
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]) if kind == "identity" else torch.zeros(2 * d, d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return save_sae(sae, path)


@pytest.mark.parametrize("layer", [2, 3])  # 3 = last layer: after emb_layer_norm_after
def test_identity_recovers_all_and_zero_none(layer, tiny_store, tiny_esm_dir, tmp_path):
    ident = _sae_dir(tmp_path / "id", tiny_store, layer, "identity")
    zero = _sae_dir(tmp_path / "zero", tiny_store, layer, "zero")
    r = evaluate(ident, tiny_store, model=str(tiny_esm_dir), n_proteins=5)
    res = CliRunner().invoke(
        sae_app(),
        ["evaluate", str(ident), str(tiny_store), "--model", str(tiny_esm_dir), "--n-proteins", "5"]
        + ["--json", "--no-save"],
    )
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output[res.output.index("{") :])
    assert printed["loss_recovered"] == pytest.approx(r.splice.loss_recovered)
    assert printed == json.loads(json.dumps(r.to_dict()))
    assert r.reconstruction.fve == pytest.approx(1.0, abs=1e-6)
    assert r.splice.loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert r.splice.kl == pytest.approx(0.0, abs=1e-6)
    assert r.splice.ce_zero != pytest.approx(r.splice.ce_clean, abs=1e-3)
    z = evaluate(zero, tiny_store, model=str(tiny_esm_dir), n_proteins=5)
    assert z.splice.loss_recovered == pytest.approx(0.0, abs=1e-6)
    assert z.splice.kl > 0
    assert json.loads((tmp_path / "zero" / "cfg.json").read_text())["metrics"]["evaluate"][
        "loss_recovered"
    ] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_hook_module_output_is_hidden_state(layer, tiny_esm_dir):
    from plmsae.embedding.model import load_model

    lm = load_model(str(tiny_esm_dir))
    enc = lm.tokenizer(["MKTAYIAKQR"], return_tensors="pt")
    seen = {}
    module = hook_module(lm.model, layer, lm.spec.n_layers)
    assert lm.model.get_submodule(hook_point(layer, lm.spec.n_layers)) is module
    h = module.register_forward_hook(
        lambda m, i, o: seen.setdefault("o", o[0] if isinstance(o, tuple) else o)
    )
    with torch.no_grad():
        out = lm.model(**enc, output_hidden_states=True)
    h.remove()
    assert torch.equal(seen["o"], out.hidden_states[layer])


def test_protein_level_does_not_splice(tiny_store, tiny_esm_dir, tmp_path):
    from plmsae.sae.train import train

    train(
        tiny_store,
        out=tmp_path / "p",
        level="protein",
        layer=2,
        latents=16,
        k=2,
        batch_size=3,
        tokens=6,
        checkpoint_every=0,
    )
    r = evaluate(tmp_path / "p", tiny_store, model=str(tiny_esm_dir))
    assert "not applicable" in r.splice_note and r.reconstruction.n_tokens == 6
    assert r.to_dict()["splice"] == r.splice_note and r.splice is None


def test_evaluate_refuses_other_layer(tiny_store, tmp_path):
    d = _sae_dir(tmp_path / "id", tiny_store, 1, "identity")
    with pytest.raises(InputError, match="layer 1"):
        evaluate(d, tiny_store)


def test_reconstruction_metrics_counts():
    x = torch.randn(300, 8)
    sae = create_sae(SAEConfig(arch="topk", d_in=8, d_sae=1000, k=2))
    r = reconstruction_metrics(sae.eval(), TensorStore(x).batches(64, epochs=1), tokens=250)
    assert r.n_tokens == 250 and r.l0 <= 2
    h = r.density_histogram
    assert sum(h["counts"]) + h["never_fired"] == 1000
    assert r.dead_fraction == h["never_fired"] / 1000


def test_cli_train_evaluate_export(tiny_store, tiny_esm_dir, tmp_path):
    app = sae_app()
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(tiny_store),
            "--out",
            str(tmp_path / "s"),
            "--latents",
            "64",
            "--k",
            "4",
            "--layer",
            "2",
            "--batch-size",
            "64",
            "--tokens",
            "640",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "64 latents, k 4" in r.output and "saved to" in r.output
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "s"),
            str(tiny_store),
            "--model",
            str(tiny_esm_dir),
            "--json",
            "--n-proteins",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    # CliRunner mixes in stderr (transformers' loading bar): the JSON object starts at "{"
    res = json.loads(r.output[r.output.index("{") :])
    assert res["l0"] <= 4 and res["n_tokens"] > 0 and "loss_recovered" in res
    saved = json.loads((tmp_path / "s" / "cfg.json").read_text())["metrics"]["evaluate"]
    assert saved == res
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "s"), str(tiny_store)])
    assert r.exit_code == 0, r.output
    assert "FVE" in r.output and "latent density histogram (log10)" in r.output
    r = CliRunner().invoke(
        app, ["export", str(tmp_path / "s"), "--format", "saelens", "--out", str(tmp_path / "sl")]
    )
    assert r.exit_code == 0 and (tmp_path / "sl" / "sae_weights.safetensors").is_file()
    assert "sae_lens.SAE.load_from_disk" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "s"), str(tmp_path / "nostore")])
    assert r.exit_code == 2 and "error" in r.output


def test_evaluate_and_export_refuse_bad_options(tiny_store, tmp_path):
    app = sae_app()
    (tmp_path / "file").write_text("x")
    sae = _sae_dir(tmp_path / "id", tiny_store, 2, "identity")
    r = CliRunner().invoke(app, ["evaluate", str(sae), str(tiny_store), "--tokens", "0"])
    assert r.exit_code == 2 and "--tokens 0" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["export", str(sae), "--out", str(tmp_path / "file")])
    assert r.exit_code == 2 and "exists and is not a directory" in r.output
    r = CliRunner().invoke(
        app, ["export", str(sae), "--out", str(tmp_path / "x"), "--format", "hf"]
    )
    assert r.exit_code == 2 and "unknown --format 'hf'" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "100"})
    assert "Measure how well an SAE reconstructs" in r.output and "--json" in r.output
