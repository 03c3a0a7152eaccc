"""Every stage on bad input ends with one clear message (file, record, fix; exit code 2, no
traceback) and leaves what was already computed intact."""

from __future__ import annotations

import errno
import gzip
import hashlib
import os

import pytest
from typer.testing import CliRunner

from plmsae.cli import app

runner = CliRunner()


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def digest(path):
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_esm_dir):
    """A store and an SAE made from 40 bundled proteins with the tiny random ESM-2."""
    from plmsae.data.demo import demo_paths

    d = tmp_path_factory.mktemp("robust")
    records = gzip.open(demo_paths().fasta, "rt").read().split(">")[1:41]
    fasta = d / "p.fasta"
    fasta.write_text("".join(">" + r for r in records))
    code, out = cli("embed", fasta, "--model", tiny_esm_dir, "--layers", 2, "--out", d / "store")
    assert code == 0, out
    code, out = cli(
        "train",
        d / "store",
        "--out",
        d / "sae",
        "--latents",
        32,
        "--k",
        4,
        "--batch-size",
        256,
        "--tokens",
        2048,
    )
    assert code == 0, out
    return d


def test_empty_fasta_and_only_x_sequence(tmp_path, tiny_esm_dir):
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    code, out = cli("embed", empty, "--model", tiny_esm_dir, "--out", tmp_path / "s1")
    assert code == 2 and "empty.fasta" in out and "Fix:" in out
    only_x = tmp_path / "x.fasta"
    only_x.write_text(">ok\nMKTAYIAKQR\n>P99999 all unknown\nXXXXXXXXXXXX\n")
    code, out = cli("embed", only_x, "--model", tiny_esm_dir, "--out", tmp_path / "s2")
    assert code == 2 and "x.fasta" in out and "P99999" in out and "standard amino acid" in out
    assert not (tmp_path / "s2" / "shards").exists() or not any(
        (tmp_path / "s2" / "shards").iterdir()
    )


def test_annotations_with_only_unknown_ids(finished, tmp_path):
    from plmsae.data.demo import demo_paths

    ann = tmp_path / "unknown.tsv"
    ann.write_text("NOTINSTORE1\tGO:0005515\nNOTINSTORE2\tGO:0003674\n")
    before = digest(finished)
    code, out = cli(
        "associate",
        finished / "sae",
        finished / "store",
        "--annotations",
        ann,
        "--ontology",
        demo_paths().ontology,
        "--out",
        tmp_path / "assoc",
    )
    assert code == 2, out
    assert "unknown.tsv" in out or "annotation" in out
    assert "Fix:" in out
    assert digest(finished) == before


def test_corrupted_shard_is_named_and_repairable(finished, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(finished / "store", store)
    shard = sorted((store / "shards").glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-100:] = b"\0" * 100
    shard.write_bytes(bytes(data))
    code, out = cli(
        "train",
        store,
        "--out",
        tmp_path / "sae",
        "--latents",
        32,
        "--k",
        4,
        "--batch-size",
        256,
        "--tokens",
        2048,
    )
    assert code == 2, out
    assert shard.name in out and "plmsae embed" in out


def test_full_disk_keeps_finished_outputs(finished, tmp_path, monkeypatch):
    """A write that fails with ENOSPC (as on a full disk) ends with a clear message; the store
    and SAE written before are untouched and no partial file is left behind."""
    import os

    from plmsae import _util

    real_replace = os.replace

    def full_disk(src, dst, *a, **k):
        if str(dst).startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst, *a, **k)

    before = digest(finished)
    monkeypatch.setattr(_util.os, "replace", full_disk)
    code, out = cli(
        "train",
        finished / "store",
        "--out",
        tmp_path / "sae2",
        "--latents",
        32,
        "--k",
        4,
        "--batch-size",
        256,
        "--tokens",
        2048,
    )
    assert code == 2, out
    assert "No space left on device" in out and "free disk space" in out
    monkeypatch.undo()
    assert digest(finished) == before
    leftovers = list(tmp_path.rglob("*.tmp*"))
    assert leftovers == []


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores directory permissions; the ENOSPC test covers the path"
)
def test_read_only_output_directory(finished, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code, out = cli(
        "train",
        finished / "store",
        "--out",
        ro / "sae",
        "--latents",
        32,
        "--k",
        4,
        "--batch-size",
        256,
        "--tokens",
        2048,
    )
    assert code == 2 and "writable" in out
