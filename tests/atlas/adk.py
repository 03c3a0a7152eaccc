"""The real structure the structure tests use: E. coli adenylate kinase (UniProt P69441), PDB
4AKE as shipped by mdanalysistests (docs/structures/PROVENANCE.md), and its sequence."""

from pathlib import Path

ADK_PDB = Path(__file__).resolve().parents[2] / "docs" / "structures" / "P69441_4AKE.pdb.gz"
ADK = (
    "MRIILLGAPGAGKGTQAQFIMEKYGIPQISTGDMLRAAVKSGSELGKQAKDIMDAGKLVTDELVIALVKERIAQEDCRNGFLLDGFPRTI"
    "PQADAMKEAGINVDYVLEFDVPDELIVDRIVGRRVHAPSGRVYHVKFNPPKVEGKDDVTGEELTTRKDDQEETVRKRLVEYHQMTAPLIG"
    "YYSKEAEAGNTKYAKVDGTKPVAEVRADLEKILG"
)
