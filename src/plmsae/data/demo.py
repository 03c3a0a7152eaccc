"""The bundled demo data set, and deterministic subsets of the Swiss-Prot reference data.

:func:`demo_paths` returns the files shipped in ``plmsae/data/files/``: about 2,000 Swiss-Prot
proteins (UniProtKB/Swiss-Prot 2014_01) of 50-600 residues, their GO annotations as in the
source (not propagated; alt IDs and obsolete terms left as they are, so the demo exercises the
same clean-up as real data), and the part of GO (go-basic 2022-07-01) that their propagated
terms need. ``PROVENANCE.md`` next to them says where they come from and how they were made.

:func:`make_subset` draws such a subset of any size from the full reference data
(``../shared/data``); ``scripts/make_demo_data.py`` is its command line.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from plmsae._util import InputError, atomic_write, sha256_file

log = logging.getLogger(__name__)

SOURCE_FASTA = "swissprot2014.fasta.gz"
SOURCE_GO = "swissprot2014_go.tsv.gz"
SOURCE_OBO = "go-basic-2022-07-01.obo.gz"
GO_CATEGORIES = ("GO:BP", "GO:MF", "GO:CC")
STANDARD_SEQUENCE = re.compile("^[ACDEFGHIKLMNPQRSTVWY]+$")


@dataclass(frozen=True)
class DemoPaths:
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
    from plmsae.data.annotations import read_annotations
    from plmsae.data.fasta import iter_fasta
    from plmsae.data.ontology import Ontology

    out, data_dir = Path(out), Path(data_dir)
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
    for p in iter_fasta(sources[SOURCE_FASTA]):
        if (
            min_length <= len(p.sequence) <= max_length
            and STANDARD_SEQUENCE.match(p.sequence)
            and p.id in raw
            and any(p.id in full[c] for c in GO_CATEGORIES)
        ):
            sequences[p.id] = p.sequence
    candidates = list(sequences)  # FASTA order
    if n > len(candidates):
        raise InputError(
            f"asked for {n} proteins, only {len(candidates)} qualify.",
            path=sources[SOURCE_FASTA],
            fix="lower --n or widen the length limits.",
        )

    # target terms: per namespace the most frequent terms in the 0.5-10% band
    targets: list[str] = []
    for cat in GO_CATEGORIES:
        counts = Counter(t for c in candidates for t in full[cat].get(c, ()))
        band = [
            (k, t)
            for t, k in counts.items()
            if 0.005 * len(candidates) <= k <= 0.10 * len(candidates)
        ]
        targets += [t for _, t in sorted(band, key=lambda kt: (-kt[0], kt[1]))][
            :terms_per_namespace
        ]
    target_set = set(targets)
    pools: dict[str, list[str]] = {t: [] for t in targets}
    for c in candidates:
        for cat in GO_CATEGORIES:
            for t in full[cat].get(c, frozenset()) & target_set:
                pools[t].append(c)

    rng = random.Random(seed)
    chosen: set[str] = set()
    have: Counter = Counter()

    def take(c: str) -> None:
        chosen.add(c)
        for cat in GO_CATEGORIES:
            have.update(full[cat].get(c, frozenset()) & target_set)

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
    ids = [c for c in candidates if c in chosen]

    # ontology subset: every propagated term, plus the obsolete terms the annotations cite
    keep = set().union(*(full[cat].get(c, frozenset()) for c in ids for cat in GO_CATEGORIES))
    cited = set().union(*(raw[c] for c in ids))
    obsolete = sorted(
        t
        for t in cited
        if go.primary(t) is None and t in go.graph.nodes and "name" in go.graph.nodes[t]
    )

    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "fasta": out / f"{prefix}.fasta.gz",
        "annotations": out / f"{prefix}_go.tsv.gz",
        "ontology": out / f"{prefix}_go.obo.gz",
    }
    _write_gz(
        paths["fasta"],
        "".join(
            f">{c}\n"
            + "".join(sequences[c][i : i + 60] + "\n" for i in range(0, len(sequences[c]), 60))
            for c in ids
        ),
    )
    _write_gz(paths["annotations"], "".join(f"{c}\t{';'.join(sorted(raw[c]))}\n" for c in ids))
    _write_gz(paths["ontology"], _obo_subset(go, sorted(keep), obsolete))

    # check: the subset files reproduce the full-ontology propagation of the chosen proteins
    sub_go = Ontology.load(paths["ontology"])
    sub = read_annotations(paths["annotations"], sub_go).protein_concepts
    for cat in GO_CATEGORIES:
        for c in ids:
            if sub.get(cat, {}).get(c, frozenset()) != full[cat].get(c, frozenset()):
                raise RuntimeError(f"subset ontology does not reproduce {cat} of {c}")

    per_cat = {cat: Counter(t for c in ids for t in sub[cat].get(c, ())) for cat in GO_CATEGORIES}
    lengths = [len(sequences[c]) for c in ids]
    record = {
        "settings": {
            "n": n,
            "min_length": min_length,
            "max_length": max_length,
            "seed": seed,
            "terms_per_namespace": terms_per_namespace,
            "min_proteins": min_proteins,
        },
        "counts": {
            "proteins": len(ids),
            "residues": sum(lengths),
            "min_length": min(lengths),
            "max_length": max(lengths),
            "candidates": len(candidates),
            "annotations_raw": sum(len(raw[c]) for c in ids),
            "ontology_terms": len(sub_go.terms),
            "ontology_obsolete": sub_go.n_obsolete,
            "ontology_alt_ids": len(sub_go.alt_ids),
            "proteins_per_namespace": {cat: len(sub[cat]) for cat in GO_CATEGORIES},
            "terms_with_30_proteins": {
                cat: sum(1 for k in per_cat[cat].values() if k >= 30) for cat in GO_CATEGORIES
            },
            "targets_below_quota": sum(1 for t in targets if have[t] < min_proteins),
        },
        "sources": {name: {"sha256": sha256_file(p)} for name, p in sources.items()},
        "files": {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in paths.values()
        },
    }
    with atomic_write(out / "PROVENANCE.md", "w") as fh:
        fh.write(_provenance_text(record, prefix))
    return record


def _write_gz(path: Path, text: str) -> None:
    """gzip without a timestamp or file name in the header, so the bytes are reproducible."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


def _obo_subset(go, keep: list[str], obsolete: list[str]) -> str:
    g = go.graph
    header = g.graph
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
        data = g.nodes[tid]
        lines += [
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


def _provenance_text(record: dict, prefix: str) -> str:
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
(`plmsae.data.demo.make_subset`; `--out` defaults to `src/plmsae/data/files`): proteins of {s["min_length"]}-{s["max_length"]} residues with only
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
