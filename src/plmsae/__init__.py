"""plmsae: sparse autoencoders on protein language models.

Pipeline, one function per stage (the CLI commands have the same names and options):

    embed -> train -> evaluate -> associate -> explain -> report / annotate
    demo, run, compare tie them together.

``import plmsae`` is light: the public names (:mod:`plmsae.api`) are imported on first use.
"""

from __future__ import annotations

from typing import Any

from plmsae._util import VERSION as __version__

__all__ = ["__version__"]  # and, on first use, every name of plmsae.api


def __getattr__(name: str) -> Any:
    import plmsae.api as api  # not `from plmsae import api`: that would ask __getattr__ again

    if name not in api.__all__:
        raise AttributeError(f"module 'plmsae' has no attribute {name!r}")
    value = getattr(api, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    import plmsae.api as api

    return sorted({*globals(), *api.__all__})
