"""The stages of plmsae in pipeline order: one public function each, with the same name and
options as its CLI command (``fn.config`` is the options dataclass, ``fn.run`` takes one); the
key is the command's name."""

from __future__ import annotations

from typing import Any

from plmsae.analysis.associate import associate
from plmsae.apply.discover import discover
from plmsae.apply.steer import steer
from plmsae.apply.variants import variants
from plmsae.atlas.annotate import annotate
from plmsae.atlas.report import report
from plmsae.config import StageFunction
from plmsae.embedding.embedder import embed
from plmsae.interpret.explain import explain
from plmsae.pipeline.compare import compare
from plmsae.pipeline.demo import demo
from plmsae.pipeline.run import run
from plmsae.sae.evaluate import evaluate
from plmsae.sae.export import export
from plmsae.sae.imports import import_sae
from plmsae.sae.train import train

STAGES: dict[str, StageFunction[Any]] = {
    "embed": embed,
    "train": train,
    "evaluate": evaluate,
    "export": export,
    "import": import_sae,  # `import` is a Python keyword: the function is import_sae
    "associate": associate,
    "explain": explain,
    "report": report,
    "annotate": annotate,
    "discover": discover,
    "variants": variants,
    "steer": steer,
    "demo": demo,
    "run": run,
    "compare": compare,
}
