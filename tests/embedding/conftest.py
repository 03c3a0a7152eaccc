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


@pytest.fixture(scope="session")
def embed_lm():
    """``embed_lm(fasta, out, model=lm, **options)``: ``plmsae embed`` with an already loaded
    model (the engine, as Python callers that hold a LoadedModel run it); returns the store
    directory."""
    from plmsae.embedding.embedder import EmbedConfig, Embedder

    def run(fasta, out, *, model, **options) -> Path:
        return Embedder(EmbedConfig(fasta, out, **options), lm=model).run().store

    return run


@pytest.fixture()
def embed_app():
    """A typer app whose only command is ``embed`` built from its config (args without the
    command name), as ``plmsae embed`` is built."""
    import typer

    from plmsae.cli.build import build_command
    from plmsae.cli.embed import show_embed
    from plmsae.embedding.embedder import EmbedConfig, embed

    app = typer.Typer()
    app.command("embed")(build_command(EmbedConfig, embed.run, show_embed))
    return app


@pytest.fixture()
def tiny_store(tmp_path, tiny_fasta, tiny_lm, embed_lm) -> Path:
    """Layers 0, 1 and 3 (last) of the tiny model, shards of >= 200 residues (3 shards)."""
    return embed_lm(tiny_fasta, tmp_path / "store", model=tiny_lm, layers=[3, 0, 1], shard_size=200)
