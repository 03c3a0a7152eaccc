"""Fixtures for the report tests: a synthetic association directory (tests/atlas/synthetic.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_assoc_dir


@pytest.fixture(scope="session")
def assoc_dir(tmp_path_factory) -> Path:
    return make_assoc_dir(tmp_path_factory.mktemp("assoc") / "assoc")
