"""Fixtures of the apply tests: the tiny random ESM-2 (tests/conftest.py) loaded once, and a
random TopK SAE on its layer 2 saved as a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_lm(tiny_esm_dir):
    from plmsae.embedding.model import load_model

    return load_model(str(tiny_esm_dir))


def make_sae(lm, out: Path, *, layer: int = 2, d_sae: int = 64, k: int = 8, seed: int = 0) -> Path:
    """A randomly initialised TopK SAE for ``lm`` at ``layer``, written to ``out``."""
    import torch

    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    cfg = SAEConfig(
        arch="topk",
        d_in=lm.spec.d_model,
        d_sae=d_sae,
        k=k,
        model=lm.spec.to_dict(),
        layer=layer,
        level="residue",
    )
    sae = create_sae(cfg, torch.Generator().manual_seed(seed))
    return save_sae(sae, out)


@pytest.fixture(scope="session")
def tiny_sae(tiny_lm, tmp_path_factory) -> Path:
    return make_sae(tiny_lm, tmp_path_factory.mktemp("apply") / "sae")
