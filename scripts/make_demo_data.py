#!/usr/bin/env python
"""Regenerate the bundled demo data (src/plmsae/data/files/), or draw a larger subset.

    python scripts/make_demo_data.py                      # the shipped demo: 2,000 proteins
    python scripts/make_demo_data.py --n 20000 --out DIR  # a bigger deterministic subset

Reads the Swiss-Prot 2014 FASTA, its GO TSV and go-basic 2022-07-01 from --data (default:
../shared/data next to the checkout). Same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import typer  # noqa: E402

from plmsae.data.demo import make_subset  # noqa: E402


def main(
    data: Path = typer.Option(
        REPO.parent / "shared" / "data", "--data", help="Directory with the reference data."
    ),
    out: Path = typer.Option(
        REPO / "src" / "plmsae" / "data" / "files", "--out", help="Output directory."
    ),
    n: int = typer.Option(2000, "--n", help="Number of proteins."),
    min_length: int = typer.Option(50, "--min-length", help="Shortest protein (residues)."),
    max_length: int = typer.Option(600, "--max-length", help="Longest protein (residues)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    terms_per_namespace: int = typer.Option(
        40, "--terms-per-namespace", help="Frequent GO terms per namespace given a quota."
    ),
    min_proteins: int = typer.Option(40, "--min-proteins", help="Quota of proteins per such term."),
    prefix: str = typer.Option("demo", "--prefix", help="File name prefix."),
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    record = make_subset(
        out,
        data,
        n=n,
        min_length=min_length,
        max_length=max_length,
        seed=seed,
        terms_per_namespace=terms_per_namespace,
        min_proteins=min_proteins,
        prefix=prefix,
    )
    print(json.dumps(record["counts"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
