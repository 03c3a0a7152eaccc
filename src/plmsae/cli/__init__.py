"""The ``plmsae`` command line: a thin typer app over the stage functions.

Each stage function carries its own typer annotations (``Annotated[..., typer.Option(...)]``), so
the CLI command and the Python function have the same name and the same options by
construction. Errors that plmsae raises for the user (:class:`plmsae._util.PlmsaeError`) are
printed as one clear message with exit code 2, without a traceback.
"""

from __future__ import annotations

import errno
import functools
import importlib
import inspect
import sys

import typer
from rich.console import Console

from plmsae._util import PlmsaeError

app = typer.Typer(
    name="plmsae",
    help="Sparse autoencoders on protein language models: embed, train, evaluate, associate, "
    "explain, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (command name, module, function). Order is the pipeline order shown by --help.
COMMANDS = [
    ("embed", "plmsae.embedding.embedder", "embed"),
    ("train", "plmsae.sae.train", "train"),
    ("evaluate", "plmsae.sae.evaluate", "evaluate"),
    ("export", "plmsae.sae.export", "export"),
    ("associate", "plmsae.analysis.associate", "associate"),
    ("explain", "plmsae.interpret.explain", "explain"),
    ("report", "plmsae.atlas.report", "report"),
    ("annotate", "plmsae.atlas.annotate", "annotate"),
    ("demo", "plmsae.pipeline.demo", "demo"),
    ("run", "plmsae.pipeline.run", "run"),
    ("compare", "plmsae.pipeline.compare", "compare"),
]


_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _user_errors_to_exit(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            fn(*args, **kwargs)  # the stage's return value is for Python callers, not the shell
        except PlmsaeError as e:
            Console(stderr=True).print("[bold red]error:[/] " + _escape(str(e)), highlight=False)
            raise typer.Exit(code=2) from None
        except OSError as e:
            # A full disk or a read-only / forbidden output directory: say which file and what
            # to do. Finished outputs are intact (every stage writes atomically).
            if e.errno not in _WRITE_ERRNOS:
                raise
            fix = (
                "free disk space"
                if e.errno in (errno.ENOSPC, errno.EDQUOT)
                else "choose a writable output directory"
            )
            Console(stderr=True).print(
                "[bold red]error:[/] "
                + _escape(
                    f"{e.filename or ''}: {e.strerror}. Fix: {fix} "
                    "and re-run the same command; finished outputs "
                    "are kept."
                ),
                highlight=False,
            )
            raise typer.Exit(code=2) from None

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


for _name, _module, _func in COMMANDS:
    _fn = getattr(importlib.import_module(_module), _func)
    _short = " ".join(inspect.cleandoc(_fn.__doc__ or "").split("\n\n")[0].split())
    _short = _short.split(". ")[0].rstrip(".") + "."  # the first sentence, for the command list
    app.command(_name, short_help=_short)(_user_errors_to_exit(_fn))


@app.callback()
def _root() -> None:
    """Sparse autoencoders on protein language models."""
    from plmsae._util import show_progress

    show_progress()


@app.command("version")
def version() -> None:
    """Print the plmsae version."""
    from plmsae import __version__

    print(__version__)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
