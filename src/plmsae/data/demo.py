"""The bundled demo data set.

:func:`demo_paths` returns the files shipped in ``plmsae/data/files/``: about 2,000 Swiss-Prot
proteins (UniProtKB/Swiss-Prot 2014_01) of 50-600 residues, their GO annotations as in the
source (not propagated; alt IDs and obsolete terms left as they are, so the demo exercises the
same clean-up as real data), and the part of GO (go-basic 2022-07-01) that their propagated
terms need. ``PROVENANCE.md`` next to them says where they come from and how they were made:
``scripts/make_demo_data.py`` (a developer tool, not part of the package) draws them from the
full reference data (``../shared/data``, file names :data:`SOURCE_FASTA`, :data:`SOURCE_GO`,
:data:`SOURCE_OBO`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from plmsae._util import InputError

#: the reference data the demo is drawn from (in ../shared/data)
SOURCE_FASTA = "swissprot2014.fasta.gz"
SOURCE_GO = "swissprot2014_go.tsv.gz"
SOURCE_OBO = "go-basic-2022-07-01.obo.gz"
#: sequences of only the 20 standard amino acids (the demo's proteins)
STANDARD_SEQUENCE = re.compile("^[ACDEFGHIKLMNPQRSTVWY]+$")


@dataclass(frozen=True)
class DemoPaths:
    """The bundled demo files: FASTA, two-column GO TSV, OBO subset and PROVENANCE.md."""

    fasta: Path
    annotations: Path
    ontology: Path
    provenance: Path


def demo_paths() -> DemoPaths:
    """Paths of the bundled demo files (FASTA, two-column GO TSV, OBO subset, PROVENANCE.md)."""
    root = Path(str(files("plmsae.data") / "files"))
    paths = DemoPaths(
        root / "demo.fasta.gz",
        root / "demo_go.tsv.gz",
        root / "demo_go.obo.gz",
        root / "PROVENANCE.md",
    )
    for p in (paths.fasta, paths.annotations, paths.ontology):
        if not p.is_file():
            raise InputError(
                "the bundled demo data is missing.",
                path=p,
                fix="reinstall plmsae, or regenerate the files with "
                "'python scripts/make_demo_data.py' in a source checkout.",
            )
    return paths
