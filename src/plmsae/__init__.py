"""plmsae: sparse autoencoders on protein language models.

Pipeline, one function per stage (the CLI commands have the same names and options):

    embed -> train -> evaluate -> associate -> explain -> report / annotate
    demo, run, compare tie them together.

Imports are lazy so that ``import plmsae`` stays fast and light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("plmsae")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"

# public name -> module that defines it
_EXPORTS = {
    "read_fasta": "plmsae.data.fasta",
    "read_annotations": "plmsae.data.annotations",
    "Ontology": "plmsae.data.ontology",
    "embed": "plmsae.embedding.embedder",
    "ActivationStore": "plmsae.embedding.store",
    "load_model": "plmsae.embedding.model",
    "SAE": "plmsae.sae.base",
    "load_sae": "plmsae.sae.checkpoint",
    "save_sae": "plmsae.sae.checkpoint",
    "train": "plmsae.sae.train",
    "evaluate": "plmsae.sae.evaluate",
    "export": "plmsae.sae.export",
    "associate": "plmsae.analysis.associate",
    "explain": "plmsae.interpret.explain",
    "report": "plmsae.atlas.report",
    "annotate": "plmsae.atlas.annotate",
    "demo": "plmsae.pipeline.demo",
    "run": "plmsae.pipeline.run",
    "compare": "plmsae.pipeline.compare",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        obj = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'plmsae' has no attribute {name!r}")
