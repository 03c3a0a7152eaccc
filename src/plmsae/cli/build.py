"""Turn a stage config dataclass into a typer command: one option per field, nothing else.

The command parses the command line into the config, runs the stage, and hands the result to a
printer (``show(result, console)``), or prints it as JSON with ``--json``. Errors the user can fix
become one line on stderr (:mod:`plmsae.cli.errors`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from plmsae.cli.errors import exit_on_user_errors
from plmsae.config import StageConfig, default_of, flag, required, strip_optional, type_hints

Printer = Callable[[Any, Console], None]

JSON_HELP = "Print the result as one JSON object instead of text."


def build_command(
    config: type[StageConfig], run: Callable[[Any], Any], show: Printer
) -> Callable[..., None]:
    """A function whose signature typer reads as the command's arguments and options."""
    hints = type_hints(config)
    lists = {f.name: _list_item(hints[f.name]) for f in dataclasses.fields(config)}

    def command(**values: Any) -> None:
        as_json = values.pop("json_output")
        with exit_on_user_errors():
            for name, item in lists.items():
                if item is not None and values.get(name) is not None:
                    values[name] = split_list(values[name], item, name)
            result = run(config(**values))
        out = Console(highlight=False)
        if as_json:
            out.print_json(json.dumps(jsonable(result)))
        else:
            show(result, out)

    params = [_parameter(f, hints[f.name], lists[f.name]) for f in dataclasses.fields(config)]
    params.append(
        inspect.Parameter(
            "json_output",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option("--json", help=JSON_HELP)],
        )
    )
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = help_text(config)
    return command


def _parameter(f: dataclasses.Field, hint: Any, item: type | None) -> inspect.Parameter:
    help_text = f.metadata.get("help", "")
    if f.metadata.get("positional"):
        return inspect.Parameter(
            f.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[hint, typer.Argument(help=help_text, metavar=f.name.upper())],
        )
    default: Any = default_of(f)
    is_required = required(f)
    if item is not None:  # lists: "--layers 2,4" or "--layers 2 --layers 4"
        hint, help_text = list[str] | None, help_text + " Comma-separated or repeated."
        default = None if is_required or not default else [",".join(map(str, default))]
    names = [flag(f.name)]
    if strip_optional(hint) is bool:
        names = [f"{flag(f.name)}/--no-{flag(f.name)[2:]}"]
    opt = typer.Option(
        *names,
        metavar=f"{item.__name__.upper()},..." if item is not None else None,
        help=help_text,
        hidden=f.metadata.get("hidden", False),
        show_default=not is_required,
    )
    return inspect.Parameter(
        f.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=inspect.Parameter.empty if is_required else default,
        annotation=Annotated[hint, opt],
    )


def help_text(config: type[StageConfig]) -> str:
    """The command help: the config's docstring, each paragraph on one line."""
    paragraphs = inspect.cleandoc(config.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def split_list(values: list[str], item: type, name: str) -> list[Any]:
    """``["2,4", "6"]`` -> ``[2, 4, 6]`` of the field's item type."""
    from plmsae._util import InputError

    parts = [p.strip() for v in values for p in str(v).split(",") if p.strip()]
    try:
        return [item(p) for p in parts]
    except ValueError:
        raise InputError(
            f"{flag(name)} {','.join(parts)!r} is not a list of {item.__name__}.",
            fix=f"e.g. {flag(name)} 1,2.",
        ) from None


def jsonable(value: Any) -> Any:
    """Results as JSON: dataclasses and ``to_dict()`` objects, paths as strings."""
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _list_item(hint: Any) -> type | None:
    base = strip_optional(hint)
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        return item
    return None
