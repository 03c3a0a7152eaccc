"""compare --match: features matched across two SAEs by decoder cosine (plmsae.sae.match)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plmsae._util import InputError
from plmsae.sae.architectures import create_sae
from plmsae.sae.base import SAEConfig
from plmsae.sae.checkpoint import save_sae
from plmsae.sae.match import decoder_directions, match_decoders, match_saes


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_half_shared_is_found():
    rng = np.random.default_rng(0)
    a = unit(rng.normal(size=(400, 64)))
    # b: a's first 200 directions (shuffled, slightly perturbed) and 300 unrelated ones
    perm = rng.permutation(200)
    shared = unit(a[perm] + 0.05 * rng.normal(size=(200, 64)))
    b = np.concatenate([shared, unit(rng.normal(size=(300, 64)))])
    m = match_decoders(a, b, threshold=0.7)
    assert m.shared_a == pytest.approx(0.5)
    assert m.shared_b == pytest.approx(200 / 500)
    assert m.mutual == 200
    assert m.assignment_shared == pytest.approx(0.5)
    # the matches are the right ones: a[perm[i]] <-> b[i]
    assert (m.best_b[perm] == np.arange(200)).all()
    d = m.to_dict()
    assert d["mutual_fraction"] == pytest.approx(0.5) and d["n_b"] == 500
    # unrelated directions in 64 dimensions stay far below 0.7
    assert m.cos_ab[200:].max() < 0.7


def test_saes_on_disk_and_width_mismatch(tmp_path):
    def make(seed, d_in=16, d_sae=32):
        torch.manual_seed(seed)
        cfg = SAEConfig(arch="topk", d_in=d_in, d_sae=d_sae, k=4, layer=2)
        return save_sae(create_sae(cfg), tmp_path / f"s{seed}_{d_in}_{d_sae}")

    a, b = make(0), make(0, d_sae=32)
    assert decoder_directions(a).shape == (32, 16)
    np.testing.assert_allclose(np.linalg.norm(decoder_directions(a), axis=1), 1.0, rtol=1e-5)
    same = match_saes(a, b)
    assert same.shared_a == 1.0 and same.mutual == 32  # the same seed: the same SAE
    other = match_saes(a, make(1))
    assert other.shared_a < 0.2  # random initialisations share (almost) nothing
    with pytest.raises(InputError, match="different widths"):
        match_saes(a, make(2, d_in=8))


def test_compare_match_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from plmsae.cli.build import build_command
    from plmsae.cli.pipeline import show_compare
    from plmsae.pipeline.compare import CompareConfig, compare

    for seed in (0, 1):
        torch.manual_seed(seed)
        save_sae(create_sae(SAEConfig(arch="topk", d_in=16, d_sae=32, k=4)), tmp_path / f"s{seed}")
    res = compare([tmp_path / "s0", tmp_path / "s0", tmp_path / "s1"], match=True)
    assert res.rows == [] and len(res.matches) == 3
    assert res.matches[0]["shared_a"] == 1.0 and res.matches[1]["shared_a"] < 0.2
    with pytest.raises(InputError, match="--match"):
        compare([tmp_path / "s0", tmp_path / "s1"])
    app = typer.Typer(rich_markup_mode=None)
    app.command("compare")(build_command(CompareConfig, compare.run, show_compare))
    app.command("other")(lambda: None)
    args = ["compare", str(tmp_path / "s0"), str(tmp_path / "s1"), "--match"]
    out = CliRunner().invoke(app, [*args, "--match-threshold", "0.1"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())
    assert "features shared (decoder cosine ≥ 0.1):" in text and "mutual best pairs" in text
