#!/usr/bin/env python
"""Regenerate the bundled demo data (src/plmsae/data/files/), or draw a larger subset.

    python scripts/make_demo_data.py                      # the shipped demo: 2,000 proteins
    python scripts/make_demo_data.py --n 20000 --out DIR  # a bigger deterministic subset

Reads the Swiss-Prot 2014 FASTA, its GO TSV and go-basic 2022-07-01 from --data (default:
../shared/data next to the checkout). Same arguments give byte-identical files.

:func:`make_subset` does the work, in steps: read the reference data and keep the candidate
proteins, choose GO terms that get a quota of proteins, draw the proteins, write the FASTA, the
annotations and the ontology subset, check that the subset reproduces the full ontology's
propagation, and write ``PROVENANCE.md`` with the record.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import typer  # noqa: E402

from plmsae._util import InputError, atomic_write, sha256_file  # noqa: E402
from plmsae.data.annotations import read_annotations  # noqa: E402
from plmsae.data.demo import SOURCE_FASTA, SOURCE_GO, SOURCE_OBO, STANDARD_SEQUENCE  # noqa: E402
from plmsae.data.fasta import iter_fasta  # noqa: E402
from plmsae.data.ontology import NAMESPACE_CATEGORY, Ontology  # noqa: E402

GO_CATEGORIES = tuple(NAMESPACE_CATEGORY.values())  # GO:BP, GO:MF, GO:CC
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "src" / "plmsae" / "data" / "files"


@dataclass
class Reference:
    """The reference data, reduced to what the subset is drawn from.

    ``raw``: protein -> GO terms as in the TSV; ``full``: category -> protein -> propagated
    terms; ``sequences``: the candidate proteins (FASTA order) -> sequence.
    """

    sources: dict[str, Path]
    go: Ontology
    raw: dict[str, frozenset[str]]
    full: dict[str, dict[str, frozenset[str]]]
    sequences: dict[str, str]

    def terms(self, protein: str, category: str) -> frozenset[str]:
        return self.full[category].get(protein, frozenset())


def make_subset(
    out: str | Path,
    data_dir: str | Path,
    *,
    n: int = 2000,
    min_length: int = 50,
    max_length: int = 600,
    seed: int = 0,
    terms_per_namespace: int = 40,
    min_proteins: int = 40,
    prefix: str = "demo",
) -> dict:
    """Draw ``n`` proteins from the Swiss-Prot reference data in ``data_dir`` into ``out``.

    Proteins: ``min_length``-``max_length`` residues, only the 20 standard amino acids, at
    least one GO annotation. Coverage: per GO namespace, the ``terms_per_namespace`` most
    frequent terms annotated to 0.5-10% of the candidates (common but not trivial) get at least
    ``min_proteins`` proteins each (sampled first); the rest of the ``n`` are drawn uniformly.
    Everything is seeded by ``seed`` and deterministic, the gzip files byte for byte.

    Writes ``{prefix}.fasta.gz``, ``{prefix}_go.tsv.gz`` (source annotations, unpropagated),
    ``{prefix}_go.obo.gz`` (every term the propagated annotations need, with names, namespaces,
    definitions, alt IDs, ``is_a``/``part_of``, and the obsolete terms the annotations cite) and
    ``PROVENANCE.md``. Returns the provenance record (counts, settings, checksums).
    """
    out = Path(out)
    ref = read_reference(Path(data_dir), min_length, max_length)
    candidates = list(ref.sequences)  # FASTA order
    if n > len(candidates):
        raise InputError(
            f"asked for {n} proteins, only {len(candidates)} qualify.",
            path=ref.sources[SOURCE_FASTA],
            fix="lower --n or widen the length limits.",
        )
    targets = target_terms(ref, candidates, terms_per_namespace)
    ids, have = draw(ref, candidates, targets, n=n, min_proteins=min_proteins, seed=seed)
    paths = write_subset(ref, ids, out, prefix)
    sub_go, sub = check_subset(ref, ids, paths)
    settings = {
        "n": n,
        "min_length": min_length,
        "max_length": max_length,
        "seed": seed,
        "terms_per_namespace": terms_per_namespace,
        "min_proteins": min_proteins,
    }
    counts = subset_counts(ref, ids, candidates, sub_go, sub)
    counts["targets_below_quota"] = sum(1 for t in targets if have[t] < min_proteins)
    record = {
        "settings": settings,
        "counts": counts,
        "sources": {name: {"sha256": sha256_file(p)} for name, p in ref.sources.items()},
        "files": {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in paths.values()
        },
    }
    with atomic_write(out / "PROVENANCE.md", "w") as fh:
        fh.write(provenance_text(record, prefix))
    return record


def read_reference(data_dir: Path, min_length: int, max_length: int) -> Reference:
    """Load the ontology and annotations, and keep the proteins that may be drawn."""
    sources = {name: data_dir / name for name in (SOURCE_FASTA, SOURCE_GO, SOURCE_OBO)}
    for p in sources.values():
        if not p.is_file():
            raise InputError(
                "reference data file not found.",
                path=p,
                fix="pass --data pointing at the directory with the Swiss-Prot "
                "2014 FASTA, its GO TSV and go-basic 2022-07-01 (shared/data).",
            )
    go = Ontology.load(sources[SOURCE_OBO])
    raw = read_annotations(sources[SOURCE_GO]).protein_concepts["GO"]
    full = read_annotations(sources[SOURCE_GO], go).protein_concepts
    sequences: dict[str, str] = {}
    for protein in iter_fasta(sources[SOURCE_FASTA]):
        if (
            min_length <= len(protein.sequence) <= max_length
            and STANDARD_SEQUENCE.match(protein.sequence)
            and protein.id in raw
            and any(protein.id in full[c] for c in GO_CATEGORIES)
        ):
            sequences[protein.id] = protein.sequence
    return Reference(sources, go, raw, full, sequences)


def target_terms(ref: Reference, candidates: list[str], terms_per_namespace: int) -> list[str]:
    """Per namespace, the most frequent terms annotated to 0.5-10% of the candidates."""
    targets: list[str] = []
    for cat in GO_CATEGORIES:
        counts = Counter(t for c in candidates for t in ref.full[cat].get(c, ()))
        band = [
            (k, t)
            for t, k in counts.items()
            if 0.005 * len(candidates) <= k <= 0.10 * len(candidates)
        ]
        ranked = [t for _, t in sorted(band, key=lambda kt: (-kt[0], kt[1]))]
        targets += ranked[:terms_per_namespace]
    return targets


def draw(
    ref: Reference,
    candidates: list[str],
    targets: list[str],
    *,
    n: int,
    min_proteins: int,
    seed: int,
) -> tuple[list[str], Counter]:
    """``n`` proteins (in FASTA order): first ``min_proteins`` per target term, then uniformly.
    Also returns how many chosen proteins each target term has."""
    target_set = set(targets)
    pools: dict[str, list[str]] = {t: [] for t in targets}
    for c in candidates:
        for cat in GO_CATEGORIES:
            for t in ref.terms(c, cat) & target_set:
                pools[t].append(c)
    rng = random.Random(seed)
    chosen: set[str] = set()
    have: Counter = Counter()

    def take(c: str) -> None:
        chosen.add(c)
        for cat in GO_CATEGORIES:
            have.update(ref.terms(c, cat) & target_set)

    for t in targets:  # quota pass
        missing = min_proteins - have[t]
        if missing <= 0 or len(chosen) >= n:
            continue
        pool = [c for c in pools[t] if c not in chosen]
        for c in rng.sample(pool, min(missing, len(pool), n - len(chosen))):
            take(c)
    rest = [c for c in candidates if c not in chosen]
    for c in rng.sample(rest, n - len(chosen)):  # uniform fill
        take(c)
    return [c for c in candidates if c in chosen], have


def write_subset(ref: Reference, ids: list[str], out: Path, prefix: str) -> dict[str, Path]:
    """The FASTA, the source annotations and the ontology subset of ``ids``."""
    # ontology subset: every propagated term, plus the obsolete terms the annotations cite
    keep = set().union(*(ref.terms(c, cat) for c in ids for cat in GO_CATEGORIES))
    cited = set().union(*(ref.raw[c] for c in ids))
    nodes = ref.go.graph.nodes
    obsolete = sorted(
        t for t in cited if ref.go.primary(t) is None and t in nodes and "name" in nodes[t]
    )
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "fasta": out / f"{prefix}.fasta.gz",
        "annotations": out / f"{prefix}_go.tsv.gz",
        "ontology": out / f"{prefix}_go.obo.gz",
    }
    seqs = ref.sequences
    write_gz(
        paths["fasta"],
        "".join(
            f">{c}\n" + "".join(seqs[c][i : i + 60] + "\n" for i in range(0, len(seqs[c]), 60))
            for c in ids
        ),
    )
    write_gz(paths["annotations"], "".join(f"{c}\t{';'.join(sorted(ref.raw[c]))}\n" for c in ids))
    write_gz(paths["ontology"], obo_subset(ref.go, sorted(keep), obsolete))
    return paths


def check_subset(
    ref: Reference, ids: list[str], paths: dict[str, Path]
) -> tuple[Ontology, dict[str, dict[str, frozenset[str]]]]:
    """Check that the subset files reproduce the full-ontology propagation of ``ids``; return
    the subset ontology and the subset's propagated annotations."""
    sub_go = Ontology.load(paths["ontology"])
    sub = read_annotations(paths["annotations"], sub_go).protein_concepts
    for cat in GO_CATEGORIES:
        for c in ids:
            if sub.get(cat, {}).get(c, frozenset()) != ref.terms(c, cat):
                raise RuntimeError(f"subset ontology does not reproduce {cat} of {c}")
    return sub_go, sub


def subset_counts(
    ref: Reference,
    ids: list[str],
    candidates: list[str],
    sub_go: Ontology,
    sub: dict[str, dict[str, frozenset[str]]],
) -> dict:
    """The counts of the provenance record (without ``targets_below_quota``)."""
    per_cat = {cat: Counter(t for c in ids for t in sub[cat].get(c, ())) for cat in GO_CATEGORIES}
    lengths = [len(ref.sequences[c]) for c in ids]
    return {
        "proteins": len(ids),
        "residues": sum(lengths),
        "min_length": min(lengths),
        "max_length": max(lengths),
        "candidates": len(candidates),
        "annotations_raw": sum(len(ref.raw[c]) for c in ids),
        "ontology_terms": len(sub_go.terms),
        "ontology_obsolete": sub_go.n_obsolete,
        "ontology_alt_ids": len(sub_go.alt_ids),
        "proteins_per_namespace": {cat: len(sub[cat]) for cat in GO_CATEGORIES},
        "terms_with_30_proteins": {
            cat: sum(1 for k in per_cat[cat].values() if k >= 30) for cat in GO_CATEGORIES
        },
    }


def write_gz(path: Path, text: str) -> None:
    """gzip without a timestamp or file name in the header, so the bytes are reproducible."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


def obo_subset(go: Ontology, keep: list[str], obsolete: list[str]) -> str:
    """OBO 1.2 text of the terms ``keep`` and ``obsolete`` of ``go`` (is_a and part_of only)."""
    header = go.graph.graph
    lines = [
        "format-version: 1.2",
        f"data-version: {header.get('data-version', '')}",
        "remark: subset of go-basic for the plmsae demo: the terms that the demo proteins' "
        "propagated annotations need (is_a and part_of only). CC BY 4.0, Gene Ontology "
        "Consortium.",
        f"ontology: {header.get('ontology', 'go')}",
        "",
    ]
    for tid in keep + obsolete:
        lines += obo_term(go, tid)
    lines += [
        "[Typedef]",
        "id: part_of",
        "name: part of",
        "namespace: external",
        "xref: BFO:0000050",
        "is_transitive: true",
        "",
    ]
    return "\n".join(lines)


def obo_term(go: Ontology, tid: str) -> list[str]:
    """The ``[Term]`` stanza of ``tid`` (lines, ending with a blank one)."""
    g = go.graph
    data = g.nodes[tid]
    lines = [
        "[Term]",
        f"id: {tid}",
        f"name: {data['name']}",
        f"namespace: {data.get('namespace', '')}",
    ]
    lines += [f"alt_id: {a}" for a in data.get("alt_id", ())]
    if data.get("def"):
        lines.append(f"def: {data['def']}")
    if data.get("is_obsolete") == "true":
        lines.append("is_obsolete: true")
    else:
        parents = sorted(
            (rel, p)
            for _, p, rel in g.out_edges(tid, keys=True)
            if rel in ("is_a", "part_of") and go.primary(p) is not None
        )
        for rel, p in parents:
            tag = "is_a:" if rel == "is_a" else "relationship: part_of"
            lines.append(f"{tag} {p} ! {g.nodes[p]['name']}")
    lines.append("")
    return lines


def provenance_text(record: dict, prefix: str) -> str:
    """``PROVENANCE.md``: files, sources, licence, how they were made, and the record."""
    c, s = record["counts"], record["settings"]
    command = (
        f"python scripts/make_demo_data.py --data ../shared/data --n {s['n']} "
        f"--min-length {s['min_length']} --max-length {s['max_length']} --seed {s['seed']} "
        f"--terms-per-namespace {s['terms_per_namespace']} "
        f"--min-proteins {s['min_proteins']} --prefix {prefix}"
    )
    return f"""# Provenance of the Swiss-Prot subset `{prefix}.*` (plmsae demo data)

Files: `{prefix}.fasta.gz` ({c["proteins"]:,} proteins, {c["residues"]:,} residues,
{c["min_length"]}-{c["max_length"]} residues each), `{prefix}_go.tsv.gz` (their GO annotations,
`ACCESSION<TAB>GO:1;GO:2`, {c["annotations_raw"]:,} annotations, not propagated, as in the source),
`{prefix}_go.obo.gz` ({c["ontology_terms"]:,} GO terms with {c["ontology_alt_ids"]:,} alt IDs, plus
{c["ontology_obsolete"]} obsolete terms that the annotations cite).

## Sources
- Proteins and GO annotations: UniProtKB/Swiss-Prot release 2014_01, as packaged by Debian's
  `metastudent-data` 2.0.1 (`dataset_201401`): `{SOURCE_FASTA}`, `{SOURCE_GO}`.
- Ontology: the Gene Ontology, go-basic release 2022-07-01 (OBO 1.2), from Debian's
  `r-bioc-go.db` 3.16.0: `{SOURCE_OBO}`.

## Licence and attribution
Both are distributed under the Creative Commons Attribution 4.0 International licence
(CC BY 4.0, https://creativecommons.org/licenses/by/4.0/).
- UniProt: "The UniProt Consortium. UniProt: the Universal Protein Knowledgebase.
  UniProtKB/Swiss-Prot release 2014_01. https://www.uniprot.org (CC BY 4.0)."
- Gene Ontology: "Ashburner et al. Gene ontology: tool for the unification of biology. Nat
  Genet 2000; The Gene Ontology Consortium. The Gene Ontology knowledgebase in 2023. Genetics
  2023. GO release 2022-07-01 (go-basic), http://geneontology.org (CC BY 4.0)."
Changes: a subset of proteins, their annotations and the ontology terms they need were selected
as described below; nothing else was altered.

## How it was made
`{command}`
(`make_subset` in that script; `--out` defaults to `src/plmsae/data/files`): proteins of {s["min_length"]}-{s["max_length"]} residues with only
the 20 standard amino acids and at least one GO annotation ({c["candidates"]:,} candidates); per GO
namespace the {s["terms_per_namespace"]} most frequent terms annotated to 0.5-10% of the
candidates get at least {s["min_proteins"]} proteins each (sampled first, seeded), the rest are
drawn uniformly. The ontology subset keeps every term of the proteins' annotations propagated over
`is_a` and `part_of` in go-basic 2022-07-01, with names, namespaces, definitions, alt IDs and
those two relations; the script checks that it reproduces the full ontology's propagation.
The output is deterministic (gzip without timestamps).

Terms with at least 30 proteins: GO:BP {c["terms_with_30_proteins"]["GO:BP"]},
GO:MF {c["terms_with_30_proteins"]["GO:MF"]}, GO:CC {c["terms_with_30_proteins"]["GO:CC"]}.

## Record
```json
{json.dumps(record, indent=2)}
```
"""


def main(
    data: Annotated[Path, typer.Option(help="Directory with the reference data.")] = DEFAULT_DATA,
    out: Annotated[Path, typer.Option(help="Output directory.")] = DEFAULT_OUT,
    n: Annotated[int, typer.Option("--n", help="Number of proteins.")] = 2000,
    min_length: Annotated[int, typer.Option(help="Shortest protein (residues).")] = 50,
    max_length: Annotated[int, typer.Option(help="Longest protein (residues).")] = 600,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    terms_per_namespace: Annotated[
        int, typer.Option(help="Frequent GO terms per namespace given a quota.")
    ] = 40,
    min_proteins: Annotated[int, typer.Option(help="Quota of proteins per such term.")] = 40,
    prefix: Annotated[str, typer.Option(help="File name prefix.")] = "demo",
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
