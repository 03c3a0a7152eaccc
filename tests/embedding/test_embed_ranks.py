"""Several processes write one store: ``torchrun --nproc_per_node 2 plmsae embed`` (gloo, CPU)
gives the store of a one-process run, byte for byte; the ranks split the shards round robin."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from plmsae.embedding.embedder import Ranks

SRC = Path(__file__).resolve().parents[2] / "src"


def test_ranks_split_shards_round_robin():
    two = [Ranks(r, 2) for r in range(2)]
    assert [[s for s in range(7) if rk.mine(s)] for rk in two] == [[0, 2, 4, 6], [1, 3, 5]]
    assert all(Ranks().mine(s) for s in range(7))


def _embed(args: list[str], cwd: Path, ranks: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC), PLMSAE_NO_PROGRESS="1")
    env.pop("OMP_NUM_THREADS", None)  # the one-process run uses every core, torchrun 1 per rank
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        + [f"--nproc_per_node={ranks}", "-m", "plmsae"]
        if ranks > 1
        else [sys.executable, "-m", "plmsae"]
    )
    done = subprocess.run(launcher + ["embed", *args], cwd=cwd, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_ranks_write_the_one_process_store(tmp_path, tiny_esm_dir):
    rnd = random.Random(1)
    fasta = tmp_path / "p.fasta"
    fasta.write_text(
        "".join(
            f">Q{i:04d}\n"
            + "".join(rnd.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rnd.randint(20, 200)))
            + "\n"
            for i in range(60)
        )
    )
    common = [str(fasta), "--model", str(tiny_esm_dir), "--layers", "1,3", "--shard-size", "700"]
    _embed([*common, "--out", "one"], tmp_path, ranks=1)
    _embed([*common, "--out", "two"], tmp_path, ranks=2)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sum(name.endswith(".safetensors") for name in one) >= 5
    assert one.keys() == two.keys()
    assert [n for n in one if one[n] != two[n]] == []
    from plmsae.embedding.store import ActivationStore

    st = ActivationStore(tmp_path / "two")
    st.verify()
    assert len(st) == 60
    # a second torchrun over the finished store reuses every shard
    _embed([*common, "--out", "two"], tmp_path, ranks=2)
    assert _files(tmp_path / "two") == two
