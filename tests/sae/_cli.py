"""The train / evaluate / export commands as the CLI builds them, for tests through typer."""

import typer

from plmsae.cli.build import build_command
from plmsae.cli.sae import show_evaluate, show_export, show_train
from plmsae.sae.evaluate import EvaluateConfig, evaluate
from plmsae.sae.export import ExportConfig, export
from plmsae.sae.train import TrainConfig, train


def sae_app() -> typer.Typer:
    app = typer.Typer()
    app.command("train")(build_command(TrainConfig, train.run, show_train))
    app.command("evaluate")(build_command(EvaluateConfig, evaluate.run, show_evaluate))
    app.command("export")(build_command(ExportConfig, export.run, show_export))
    return app
