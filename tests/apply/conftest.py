"""Fixtures of the apply tests: the tiny random ESM-2 (tests/conftest.py) loaded once, and a
random TopK SAE on its layer 2 saved as a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from _apply_sae import make_sae


@pytest.fixture(scope="session")
def tiny_lm(tiny_esm_dir):
    from plmsae.embedding.model import load_model

    return load_model(str(tiny_esm_dir))


@pytest.fixture(scope="session")
def tiny_sae(tiny_lm, tmp_path_factory) -> Path:
    return make_sae(tiny_lm, tmp_path_factory.mktemp("apply") / "sae")
