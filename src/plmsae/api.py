"""The public Python API of plmsae (``plmsae.X`` reads from here, on first use).

The stage functions (same names and options as the CLI commands), their configs and engines,
and the objects the stages read and write.
"""

from __future__ import annotations

from plmsae._util import InputError, PlmsaeError, show_progress
from plmsae.analysis.assocdir import AssocDir
from plmsae.data.annotations import read_annotations
from plmsae.data.fasta import read_fasta
from plmsae.data.ontology import Ontology
from plmsae.embedding.model import load_model
from plmsae.embedding.store import ActivationStore
from plmsae.sae.architectures import ARCHITECTURES, create_sae
from plmsae.sae.base import SAE, SAEConfig
from plmsae.sae.checkpoint import load_sae, save_sae
from plmsae.sae.imports import import_sae
from plmsae.stages import (
    STAGES,
    annotate,
    associate,
    compare,
    demo,
    discover,
    embed,
    evaluate,
    explain,
    export,
    report,
    run,
    steer,
    train,
    variants,
)

__all__ = [
    "ARCHITECTURES",
    "STAGES",
    "SAE",
    "ActivationStore",
    "AssocDir",
    "InputError",
    "Ontology",
    "PlmsaeError",
    "SAEConfig",
    "annotate",
    "associate",
    "compare",
    "create_sae",
    "demo",
    "discover",
    "embed",
    "evaluate",
    "explain",
    "export",
    "import_sae",
    "load_model",
    "load_sae",
    "read_annotations",
    "read_fasta",
    "report",
    "run",
    "save_sae",
    "show_progress",
    "steer",
    "train",
    "variants",
]
