"""Stage configs: one dataclass per stage whose fields are that stage's options everywhere.

A field's name is its Python keyword and its TOML key (``[train] latents = 4096``); its CLI flag
is the same name with ``-`` for ``_`` (``--batch-size``). Its help text (one line, set with
:func:`option` or :func:`argument`) is the CLI help and the Python docstring entry. Checks go in
``__post_init__`` and raise :class:`plmsae._util.InputError` through :meth:`StageConfig.reject`,
which names the option as the user typed it.

:func:`stage_function` turns a function that takes a config into the public function with the
config's fields as keyword arguments (``plmsae.train(store, out=..., latents=...)``), so the
Python signature, the CLI and TOML keys come from one place.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from plmsae._util import InputError

MISSING: Any = dataclasses.MISSING


def option(
    default: Any = MISSING,
    *,
    help: str,
    factory: Callable[[], Any] | None = None,
    hidden: bool = False,
) -> Any:
    """A stage option (``--name`` on the command line). ``factory`` for mutable defaults."""
    meta = {"help": help, "positional": False, "hidden": hidden}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def argument(*, help: str) -> Any:
    """A required positional argument (``plmsae train STORE``)."""
    return dataclasses.field(metadata={"help": help, "positional": True, "hidden": False})


def flag(name: str) -> str:
    """The CLI spelling of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclasses.dataclass
class StageConfig:
    """Base of every stage config: conversion of paths and sequences, dict/TOML round trip."""

    def __post_init__(self) -> None:
        hints = type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            base = strip_optional(hints[f.name])
            if value is None:
                continue
            if base is Path and not isinstance(value, Path):
                setattr(self, f.name, Path(value))
            elif typing.get_origin(base) is list and isinstance(value, (tuple, list)):
                setattr(self, f.name, list(value))

    def reject(self, name: str, problem: str, fix: str) -> typing.NoReturn:
        """Raise an InputError about option ``name`` (shown as the user wrote it)."""
        raise InputError(f"{flag(name)} {getattr(self, name)!r}: {problem}", fix=fix)

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "<python>", **fixed: Any):
        """Build from a mapping (a TOML section); unknown keys name the valid ones."""
        names = set(cls.option_names())
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(
                f"unknown option(s) {', '.join(unknown)}.",
                path=source,
                fix=f"use only {', '.join(sorted(names - set(fixed)))}.",
            )
        return cls(**{**values, **fixed})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able values (paths as strings), keyed by field name."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


C = TypeVar("C", bound=StageConfig)
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class StageFunction(Protocol[R_co]):
    """A public stage function: call it with options, or ``.run(config)``; ``.config`` is the
    options dataclass."""

    __name__: str
    config: type[StageConfig]

    def __call__(self, *args: Any, **options: Any) -> R_co: ...

    def run(self, cfg: Any) -> R_co: ...


def stage_function(config: type[C]) -> Callable[[Callable[[C], R]], StageFunction[R]]:
    """Decorate ``run(cfg) -> R`` into ``fn(*args, **options) -> R`` with the config's signature.

    The decorated function keeps ``run``'s name and docstring, gains an "Options" section, and
    exposes ``fn.config`` (the dataclass) and ``fn.run`` (the config-taking function).
    """

    def wrap(run: Callable[[C], R]) -> StageFunction[R]:
        @functools.wraps(run)
        def fn(*args: Any, **options: Any) -> R:
            return run(config(*args, **options))

        hints = type_hints(config)
        params = [
            inspect.Parameter(
                f.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=inspect.Parameter.empty if required(f) else default_of(f),
                annotation=hints[f.name],
            )
            for f in dataclasses.fields(config)
        ]
        ret = inspect.signature(run).return_annotation
        fn.__signature__ = inspect.Signature(params, return_annotation=ret)  # type: ignore[attr-defined]
        fn.__doc__ = (run.__doc__ or "").rstrip() + "\n\n" + options_doc(config)
        fn.config = config  # type: ignore[attr-defined]
        fn.run = run  # type: ignore[attr-defined]
        return cast("StageFunction[R]", fn)

    return wrap


def options_doc(config: type[StageConfig]) -> str:
    """The "Options" docstring section: one line per field."""
    lines = ["Options (CLI flag = name with '-' for '_'; TOML key = name):"]
    for f in dataclasses.fields(config):
        default = "required" if required(f) else f"default {default_of(f)!r}"
        lines.append(f"    {f.name}: {f.metadata.get('help', '')} ({default})")
    return "\n".join(lines)


def type_hints(config: type) -> dict[str, Any]:
    return typing.get_type_hints(config)


def strip_optional(hint: Any) -> Any:
    """``X | None`` -> ``X``; other hints unchanged."""
    args = typing.get_args(hint)
    if args and type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return hint


def required(f: dataclasses.Field) -> bool:
    """Whether a config field has no default (a required argument or option)."""
    return f.default is MISSING and f.default_factory is MISSING


def default_of(f: dataclasses.Field) -> Any:
    """A config field's default value (a fresh one for factories); MISSING when required."""
    factory: Any = f.default_factory
    return factory() if factory is not MISSING else f.default


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
