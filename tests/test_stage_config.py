"""plmsae.config and the CLI builder: one spelling per option in Python, CLI and TOML."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.cli.build import build_command
from plmsae.config import StageConfig, argument, option, stage_function


@dataclasses.dataclass
class ToyConfig(StageConfig):
    """Do a toy thing [with brackets] to STORE."""

    store: Path = argument(help="Input [data] directory.")
    latents: int = option(64, help="Number of latents.")
    k: int | None = option(None, help="Active latents.")
    layers: list[int] = option(help="Layers.", factory=lambda: [4])
    fast: bool = option(True, help="Go fast.")
    secret: int = option(0, help="For tests.", hidden=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k is not None and self.k > self.latents:
            self.reject("k", f"is larger than --latents {self.latents}.", "use --k <= --latents.")


@stage_function(ToyConfig)
def toy(cfg: ToyConfig) -> dict:
    """Run the toy stage."""
    return cfg.to_dict()


def _app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode=None)  # as plmsae.cli.app
    app.command("toy")(build_command(ToyConfig, toy.run, lambda r, c: c.print(f"ok {r['k']}")))

    @app.command("other")
    def other() -> None:  # a second command keeps "toy" a subcommand
        pass

    return app


def test_function_signature_is_the_config():
    params = inspect.signature(toy).parameters
    assert list(params) == ToyConfig.option_names()
    assert params["latents"].default == 64
    assert "latents: Number of latents." in toy.__doc__
    out = toy("s", latents=8, layers=(1, 2))
    assert out == {
        "store": "s",
        "latents": 8,
        "k": None,
        "layers": [1, 2],
        "fast": True,
        "secret": 0,
    }


def test_checks_name_the_flag():
    with pytest.raises(InputError, match=r"--k 9: is larger than --latents 4\. Fix: use --k"):
        toy("s", latents=4, k=9)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(InputError, match="unknown option.*laters.*use only.*latents"):
        ToyConfig.from_dict({"laters": 3}, source="x.toml", store="s")
    assert ToyConfig.from_dict({"latents": 3}, store="s").latents == 3


def test_cli_options_match_fields_and_parse():
    runner = CliRunner()
    app = _app()
    res = runner.invoke(
        app, ["toy", "st", "--k", "3", "--layers", "1,2", "--layers", "6", "--no-fast", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {
        "store": "st",
        "latents": 64,
        "k": 3,
        "layers": [1, 2, 6],
        "fast": False,
        "secret": 0,
    }
    res = runner.invoke(app, ["toy", "st", "--k", "100"])
    assert res.exit_code == 2
    assert "error:" in res.output and "--k 100" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["toy", "st", "--layers", "a,b"])
    assert res.exit_code == 2 and "is not a list of int" in res.output


def test_cli_help_keeps_brackets_and_hides_hidden():
    res = CliRunner().invoke(_app(), ["toy", "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0
    assert "[data]" in res.output and "[with brackets]" in res.output
    assert "--secret" not in res.output and "--batch" not in res.output
    assert "--latents" in res.output and "--no-fast" in res.output
