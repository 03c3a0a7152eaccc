"""The ``plmsae`` command line: one command per stage, built from the stage's config.

Every command's options are the fields of its config dataclass (:mod:`plmsae.config`), so the
CLI, the Python function and TOML keys share one spelling. The CLI owns what the library does
not do: printing results (the printers below), progress bars and INFO logs on stderr, and exit
codes (:mod:`plmsae.cli.errors`).
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from plmsae._util import VERSION
from plmsae.cli.apply import show_discover, show_steer, show_variants
from plmsae.cli.associate import show_associate
from plmsae.cli.atlas import show_annotate, show_report
from plmsae.cli.build import build_command
from plmsae.cli.embed import show_embed
from plmsae.cli.explain import show_explain
from plmsae.cli.pipeline import show_compare, show_demo, show_run
from plmsae.cli.sae import show_evaluate, show_export, show_import, show_train
from plmsae.stages import STAGES

PRINTERS: dict[str, Callable[[Any, Console], None]] = {
    "embed": show_embed,
    "train": show_train,
    "evaluate": show_evaluate,
    "export": show_export,
    "import": show_import,
    "associate": show_associate,
    "explain": show_explain,
    "report": show_report,
    "annotate": show_annotate,
    "discover": show_discover,
    "variants": show_variants,
    "steer": show_steer,
    "demo": show_demo,
    "run": show_run,
    "compare": show_compare,
}

app = typer.Typer(
    name="plmsae",
    help="Sparse autoencoders on protein language models: embed, train, evaluate, associate, "
    "explain, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain click help: readable at 80 columns (rich panels truncate long flags there)
    rich_markup_mode=None,
)


def _short_help(doc: str) -> str:
    """The first sentence of a config's docstring, for the command list."""
    first = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    return first.split(". ")[0].rstrip(".") + "."


for _name, _fn in STAGES.items():
    app.command(_name, short_help=_short_help(_fn.config.__doc__ or ""))(
        build_command(_fn.config, _fn.run, PRINTERS[_name])
    )


def _version(value: bool) -> None:
    if value:
        print(f"plmsae {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or INFO messages.")
    ] = False,
) -> None:
    """Sparse autoencoders on protein language models."""
    from plmsae._util import show_progress

    show_progress(not quiet)
    handler = RichHandler(
        console=Console(stderr=True), show_time=False, show_path=False, markup=False
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("plmsae")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
