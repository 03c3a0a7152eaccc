"""Fixtures for the embed stage: an isolated plmsae cache, no hub access, the tiny model loaded
once, and a FASTA whose first protein is longer than the tiny model's context (126 residues)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("PLMSAE_CACHE", str(tmp_path_factory.getbasetemp() / "plmsae_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_esm_dir):
    from plmsae.embedding.model import load_model

    return load_model(str(tiny_esm_dir))


@pytest.fixture()
def tiny_store(tmp_path, tiny_fasta, tiny_lm) -> Path:
    """Layers 0, 1 and 3 (last) of the tiny model, shards of >= 200 residues (3 shards)."""
    from plmsae.embedding.embedder import embed

    return embed(tiny_fasta, tmp_path / "store", model=tiny_lm, layers=[3, 0, 1], shard_size=200)
