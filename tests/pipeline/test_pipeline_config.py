"""Config parsing of `plmsae run`: paths, stage options checked against the stage functions."""

from __future__ import annotations

import pytest

from plmsae._util import InputError
from plmsae.pipeline.run import PipelineConfig

BASE = """
out = "run"
[data]
fasta = "p.fasta"
annotations = "go.tsv"
ontology = "go.obo"
[model]
layers = [2, 4]
"""


def write(tmp_path, text):
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return p


def test_paths_resolve_relative_to_the_config(tmp_path):
    cfg = PipelineConfig.from_toml(write(tmp_path, BASE + "[train]\nlatents = 64\nk = 4\n"))
    assert cfg.out == (tmp_path / "run").resolve()
    assert cfg.fasta == (tmp_path / "p.fasta").resolve()
    assert cfg.layers == [2, 4]
    assert cfg.stages["train"] == {"latents": 64, "k": 4}
    assert cfg.stages["explain"] == {}


def test_unknown_stage_option_is_named_with_the_valid_ones(tmp_path):
    with pytest.raises(InputError) as e:
        PipelineConfig.from_toml(write(tmp_path, BASE + "[train]\nlatentz = 64\n"))
    msg = str(e.value)
    assert "cfg.toml" in msg and "latentz" in msg and "latents" in msg


def test_pipeline_managed_option_is_refused(tmp_path):
    with pytest.raises(InputError, match="set by the pipeline"):
        PipelineConfig.from_toml(write(tmp_path, BASE + "[train]\nlayer = 3\n"))


def test_missing_data_and_bad_layers(tmp_path):
    with pytest.raises(InputError, match=r"\[data\] ontology"):
        PipelineConfig.from_toml(write(tmp_path, BASE.replace('ontology = "go.obo"\n', "")))
    with pytest.raises(InputError, match="layers"):
        PipelineConfig.from_toml(write(tmp_path, BASE.replace("[2, 4]", "[]")))
    with pytest.raises(InputError, match="not valid TOML"):
        PipelineConfig.from_toml(write(tmp_path, BASE + "[train\n"))
    with pytest.raises(InputError, match="not found"):
        PipelineConfig.from_toml(tmp_path / "nope.toml")


def test_example_configs_parse(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for p in sorted((root / "examples").glob("*.toml")):
        cfg = PipelineConfig.from_toml(p)
        assert cfg.layers, p
