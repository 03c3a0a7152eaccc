"""The package's public surface: lazy stage functions, CLI commands with the same names."""

import subprocess
import sys


def test_stage_functions_are_functions_even_after_subpackage_imports():
    import plmsae.atlas.report
    import plmsae.embedding.store

    assert callable(plmsae.embed) and plmsae.embed.__name__ == "embed"
    assert callable(plmsae.report) and plmsae.report.__name__ == "report"
    assert plmsae.ActivationStore.__name__ == "ActivationStore"


def test_every_stage_is_a_cli_command_with_the_same_options():
    import inspect

    from typer.main import get_command

    from plmsae.cli import COMMANDS, app

    group = get_command(app)
    for name, module, func in COMMANDS:
        fn = getattr(__import__(module, fromlist=[func]), func)
        cmd = group.commands[name]
        py_params = set(inspect.signature(fn).parameters)
        cli_params = {p.name for p in cmd.params}
        assert py_params == cli_params, name


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
