"""The package's public surface: lazy stage functions, and one spelling per option in the CLI,
Python, TOML and docs/design.md."""

import ast
import builtins
import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

from typer.main import get_command
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def test_stage_functions_are_functions_even_after_subpackage_imports():
    import plmsae
    import plmsae.atlas.report
    import plmsae.embedding.store

    assert callable(plmsae.embed) and plmsae.embed.__name__ == "embed"
    assert callable(plmsae.report) and plmsae.report.__name__ == "report"
    assert plmsae.ActivationStore.__name__ == "ActivationStore"


def test_cli_python_and_config_share_every_option():
    from plmsae.cli import app
    from plmsae.stages import STAGES

    group = get_command(app)
    assert list(group.commands) == list(STAGES)
    for name, fn in STAGES.items():
        fields = fn.config.option_names()
        assert list(inspect.signature(fn).parameters) == fields, name
        cmd = group.commands[name]
        assert {p.name for p in cmd.params} == {*fields, "json_output"}, name
        flags = {o for p in cmd.params for o in p.opts if o.startswith("--")}
        for f in dataclasses.fields(fn.config):
            if not f.metadata.get("positional"):
                assert "--" + f.name.replace("_", "-") in flags, (name, f.name)


def test_toml_sections_accept_every_option_the_pipeline_does_not_set():
    from plmsae.pipeline.run import MANAGED, STAGE_CONFIGS

    for name, config in STAGE_CONFIGS.items():
        free = set(config.option_names()) - MANAGED[name]
        assert MANAGED[name] <= set(config.option_names()), name
        assert free, name


def test_design_doc_lists_every_option():
    """docs/design.md's option table is the same set as the config fields."""
    from plmsae.stages import STAGES

    text = (ROOT / "docs" / "design.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `([\w_]+)` \| `(--[\w-]+|[A-Z_]+)` \|", text, re.M)
    documented: dict[str, set[str]] = {}
    for stage, field, _flag in rows:
        documented.setdefault(stage, set()).add(field)
    for name, fn in STAGES.items():
        assert documented.get(name) == set(fn.config.option_names()), name


def test_version_and_help():
    from plmsae import __version__
    from plmsae.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output
    res = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "[data]" in res.output and "[model]" in res.output
    for name in ("train", "explain", "associate", "report"):
        res = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0
        assert "Returns" not in res.output and "``" not in res.output, name


def test_readme_python_snippet_imports_what_it_uses():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for code in blocks:
        tree = ast.parse(code)
        defined = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
        used = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        assert used <= defined, used - defined


def test_cli_reports_user_errors_without_traceback(tmp_path):
    bad = tmp_path / "empty.fasta"
    bad.write_text("")
    r = subprocess.run(
        [sys.executable, "-m", "plmsae", "embed", str(bad), "--out", str(tmp_path / "store")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "empty.fasta" in r.stderr and "Traceback" not in r.stderr
