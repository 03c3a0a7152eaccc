"""evaluate: reconstruction metrics and the masked-LM splice on the tiny random ESM-2."""

import json

import pytest
import torch

from plmsae._util import InputError
from plmsae.sae.architectures import create_sae
from plmsae.sae.base import SAEConfig
from plmsae.sae.checkpoint import save_sae
from plmsae.sae.data import TensorStore
from plmsae.sae.evaluate import _hook_module, evaluate, reconstruction_metrics


@pytest.fixture(scope="module")
def tiny_store(tiny_esm_dir, tmp_path_factory):
    import random

    from plmsae.embedding.embedder import embed

    rnd = random.Random(0)
    d = tmp_path_factory.mktemp("tiny_store")
    fasta = d / "tiny.fasta"
    fasta.write_text(
        "".join(
            f">P{i:05d}\n"
            + "".join(rnd.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rnd.randint(30, 90)))
            + "\n"
            for i in range(6)
        )
    )
    return embed(fasta, out=d / "store", model=str(tiny_esm_dir), layers=[2, 3])


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
def test_identity_recovers_all_and_zero_none(layer, tiny_store, tiny_esm_dir, tmp_path, capsys):
    ident = _sae_dir(tmp_path / "id", tiny_store, layer, "identity")
    zero = _sae_dir(tmp_path / "zero", tiny_store, layer, "zero")
    r = evaluate(ident, tiny_store, model=str(tiny_esm_dir), json=True, n_proteins=5)
    printed = json.loads(capsys.readouterr().out)
    assert printed["loss_recovered"] == pytest.approx(r["loss_recovered"])
    assert r["fve"] == pytest.approx(1.0, abs=1e-6)
    assert r["loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert r["kl"] == pytest.approx(0.0, abs=1e-6)
    assert r["ce_zero"] != pytest.approx(r["ce_clean"], abs=1e-3)
    z = evaluate(zero, tiny_store, model=str(tiny_esm_dir), n_proteins=5)
    assert z["loss_recovered"] == pytest.approx(0.0, abs=1e-6)
    assert z["kl"] > 0
    assert json.loads((tmp_path / "zero" / "cfg.json").read_text())["metrics"]["evaluate"][
        "loss_recovered"
    ] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_hook_module_output_is_hidden_state(layer, tiny_esm_dir):
    from plmsae.embedding.model import load_model

    lm = load_model(str(tiny_esm_dir))
    enc = lm.tokenizer(["MKTAYIAKQR"], return_tensors="pt")
    seen = {}
    h = _hook_module(lm.model, layer, lm.spec.n_layers).register_forward_hook(
        lambda m, i, o: seen.setdefault("o", o[0] if isinstance(o, tuple) else o)
    )
    with torch.no_grad():
        out = lm.model(**enc, output_hidden_states=True)
    h.remove()
    assert torch.equal(seen["o"], out.hidden_states[layer])


def test_protein_level_does_not_splice(tiny_store, tiny_esm_dir, tmp_path):
    from plmsae.sae.train import train

    sae, _ = train(
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
    assert "not applicable" in r["splice"] and r["n_tokens"] == 6


def test_evaluate_refuses_other_layer(tiny_store, tmp_path):
    d = _sae_dir(tmp_path / "id", tiny_store, 1, "identity")
    with pytest.raises(InputError, match="layer 1"):
        evaluate(d, tiny_store)


def test_reconstruction_metrics_counts():
    x = torch.randn(300, 8)
    sae = create_sae(SAEConfig(arch="topk", d_in=8, d_sae=1000, k=2))
    r = reconstruction_metrics(sae.eval(), TensorStore(x).batches(64, epochs=1), tokens=250)
    assert r["n_tokens"] == 250 and r["l0"] <= 2
    h = r["density_histogram"]
    assert sum(h["counts"]) + h["never_fired"] == 1000
    assert r["dead_fraction"] == h["never_fired"] / 1000


def test_cli_train_evaluate_export(tiny_store, tiny_esm_dir, tmp_path):
    from typer.testing import CliRunner

    from plmsae.cli import app

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
    res = json.loads(r.output[r.output.index("{") :].splitlines()[0])
    assert res["l0"] <= 4 and res["n_tokens"] > 0 and "loss_recovered" in res
    r = CliRunner().invoke(
        app, ["export", str(tmp_path / "s"), "--format", "saelens", "--out", str(tmp_path / "sl")]
    )
    assert r.exit_code == 0 and (tmp_path / "sl" / "sae_weights.safetensors").is_file()
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "s"), str(tmp_path / "nostore")])
    assert r.exit_code == 2 and "error" in r.output
