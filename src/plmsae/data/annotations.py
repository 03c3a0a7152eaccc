"""Protein annotations: GO terms, families, locations and per-residue features.

:func:`read_annotations` sniffs the format of its input (plain or gzip):

- **two-column TSV** ``ACCESSION<TAB>GO:0000001;GO:0000002`` (the format of ``../shared/data``);
- **GAF 2.x** (GO annotation file): column 2 is the accession, 5 the GO ID, 10 the protein name;
  annotations with a ``NOT`` qualifier are skipped;
- **UniProt TSV export** (uniprot.org "Download" as TSV, or the REST API with ``format=tsv``): a
  header row with ``Entry`` and any of ``Sequence``, ``Protein names``, ``Organism``, ``Gene
  Ontology IDs`` (or the ``Gene Ontology (...)`` columns), ``Protein families``, ``Subcellular
  location [CC]`` and the feature columns in :data:`FEATURE_COLUMNS`.

Concepts
--------
- GO terms: category ``GO`` as written in the file when no ontology is given. With an ontology,
  alt IDs are mapped to primary terms, obsolete and unknown IDs are dropped (counted, logged),
  terms are propagated to all ancestors over ``is_a``/``part_of`` and split by namespace into
  ``GO:BP``, ``GO:MF``, ``GO:CC``.
- Families (``family``): the ``Protein families`` column holds classifications separated by
  ``;``, each a comma-separated path such as ``Protein kinase superfamily, CAMK Ser/Thr protein
  kinase family, CaMK subfamily``. Each prefix of the path is a concept (``family:Protein kinase
  superfamily``, ``family:Protein kinase superfamily, CAMK Ser/Thr protein kinase family``, ...),
  the family analogue of propagating GO terms to their ancestors.
- Locations (``location``): ``SUBCELLULAR LOCATION: Cytoplasm, cytosol {ECO:...}. Nucleus.``
  gives ``location:Cytoplasm``, ``location:Cytoplasm, cytosol`` and ``location:Nucleus``
  (evidence, isoform prefixes, ``Note=`` text and membrane topology such as ``Single-pass
  membrane protein`` are removed; the comma path is propagated like families).
- Residue concepts (category ``residue``): each feature becomes 0-based half-open intervals
  ``(start, end)``; ``TRANSMEM 10..30`` -> ``(9, 30)``, ``BINDING 12`` -> ``(11, 12)``. Concept IDs
  are the feature name, with the ligand or note where it says what the feature is:
  ``Transmembrane``, ``Signal peptide``, ``Active site``, ``Binding site:ATP``,
  ``Domain:Protein kinase``, ``Motif:Nuclear localization signal``. Numbering of repeated
  domains is removed (``PDZ 2`` -> ``Domain:PDZ``), and text after ``;`` in a note
  (``Phosphoserine; by PKA`` -> ``Modified residue:Phosphoserine``).
- Uncertain positions: ``<N`` and ``>N`` (the feature continues beyond N, usually past the
  sequence end) and ``?N`` (about N) use N; a feature with an unknown end (``?``) or on another
  isoform (``P12345-2:10..20``) is dropped and counted in ``counts``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from plmsae._util import InputError
from plmsae.data._io import gzip_errors, open_text

if TYPE_CHECKING:
    from plmsae.data.ontology import Ontology

log = logging.getLogger(__name__)

#: UniProt TSV feature column -> (concept prefix, qualifier that names the concept or None).
FEATURE_COLUMNS: dict[str, tuple[str, str | None]] = {
    "Transmembrane": ("Transmembrane", None),
    "Intramembrane": ("Intramembrane", None),
    "Signal peptide": ("Signal peptide", None),
    "Transit peptide": ("Transit peptide", "note"),
    "Active site": ("Active site", None),
    "Binding site": ("Binding site", "ligand"),
    "Metal binding": ("Binding site", "note"),  # exports before UniProt 2022_01
    "Nucleotide binding": ("Binding site", "note"),  # exports before UniProt 2022_01
    "Domain [FT]": ("Domain", "note"),
    "Motif": ("Motif", "note"),
    "Zinc finger": ("Zinc finger", "note"),
    "DNA binding": ("DNA binding", "note"),
    "Repeat": ("Repeat", "note"),
    "Region": ("Region", "note"),
    "Coiled coil": ("Coiled coil", None),
    "Compositional bias": ("Compositional bias", "note"),
    "Modified residue": ("Modified residue", "note"),
    "Glycosylation": ("Glycosylation", "note"),
    "Lipidation": ("Lipidation", "note"),
}

GAF_MIN_COLUMNS = 15


@dataclass
class Annotations:
    """Annotations of proteins, by concept category.

    protein_concepts : category -> protein id -> frozenset of concept ids. Categories: ``GO``
        (raw, no ontology) or ``GO:BP``/``GO:MF``/``GO:CC`` (propagated), ``family``,
        ``location``. Immutable: proteins with the same annotations share one frozenset.
    residue_concepts : residue concept id -> protein id -> [(start, end)] 0-based half-open.
    concept_names : concept id -> readable name (GO names when an ontology was given).
    protein_names : protein id -> protein name, when the file has one.
    protein_organisms : protein id -> organism (UniProt TSV ``Organism``), when the file has it.
    sequences : protein id -> sequence, when the file has one (UniProt TSV ``Sequence``).
    counts : what was read, mapped and dropped (``go_alt_ids_mapped``,
        ``go_obsolete_or_unknown``, ``gaf_not_qualifier``, ``features_uncertain`` ...).
    format : ``go_tsv``, ``gaf`` or ``uniprot_tsv``.
    """

    protein_concepts: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    residue_concepts: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    concept_names: dict[str, str] = field(default_factory=dict)
    protein_names: dict[str, str] = field(default_factory=dict)
    protein_organisms: dict[str, str] = field(default_factory=dict)
    sequences: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    format: str = ""

    def protein_ids(self) -> set[str]:
        """All proteins with at least one annotation of any kind."""
        ids: set[str] = set()
        for by_protein in self.protein_concepts.values():
            ids.update(by_protein)
        for intervals_by_protein in self.residue_concepts.values():
            ids.update(intervals_by_protein)
        return ids


def read_annotations(path: str | os.PathLike, ontology: "Ontology | None" = None) -> Annotations:
    """Read GO annotations (two-column TSV or GAF 2.x) or a UniProt TSV export; see the module
    docstring for formats and concepts. With ``ontology``, GO terms are mapped, cleaned,
    propagated and split into ``GO:BP``/``GO:MF``/``GO:CC``."""
    path = Path(path)
    fmt = sniff_format(path)
    with _gc_paused():
        return _read(path, fmt, ontology)


@contextlib.contextmanager
def _gc_paused():
    """Building millions of small sets creates no reference cycles, but triggers the cyclic
    garbage collector over and over (it doubled the time to propagate Swiss-Prot)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read(path: Path, fmt: str, ontology: "Ontology | None") -> Annotations:
    ann = Annotations(format=fmt)
    go: dict[str, frozenset[str]] = {}
    with gzip_errors(path), open_text(path, "annotation file") as fh:
        if fmt == "go_tsv":
            _read_go_tsv(path, fh, go)
        elif fmt == "gaf":
            _read_gaf(path, fh, go, ann)
        else:
            _read_uniprot_tsv(path, fh, go, ann)
    if go:
        if ontology is None:
            ann.protein_concepts["GO"] = go
        else:
            _propagate_go(go, ontology, ann, path)
    if not ann.protein_ids():
        raise InputError(
            "no annotations found.",
            path=path,
            fix="check that the file has data rows (and, for a UniProt export, "
            "annotation columns such as 'Gene Ontology IDs').",
        )
    return ann


def sniff_format(path: str | os.PathLike) -> str:
    """``go_tsv``, ``gaf`` or ``uniprot_tsv`` from the first lines of the file."""
    path = Path(path)
    with open_text(path, "annotation file") as fh, gzip_errors(path):
        first = next((line.rstrip("\r\n") for line in fh if line.strip()), None)
    if first is None:
        raise InputError(
            "the annotation file is empty.", path=path, fix="pass a file with annotations."
        )
    fields = first.split("\t")
    if first.startswith("!gaf-version") or (first.startswith("!") and not first.startswith("!gp")):
        return "gaf"
    if "Entry" in fields:
        return "uniprot_tsv"
    if len(fields) == 2 and _GO_LIST.fullmatch(fields[1].strip()):
        return "go_tsv"
    if len(fields) >= GAF_MIN_COLUMNS and _TERM_ID.fullmatch(fields[4]):
        return "gaf"
    raise InputError(
        f"unknown annotation format (first line: {first[:80]!r}).",
        path=path,
        record=1,
        fix="pass a two-column TSV 'ACCESSION<TAB>GO:0000001;GO:0000002', a GAF 2.x file "
        "(starting with '!gaf-version'), or a UniProt TSV export with an 'Entry' column.",
    )


# --- GO term lists ---------------------------------------------------------------------------

_TERM_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_.]+")
_GO_LIST = re.compile(rf"(?:{_TERM_ID.pattern}(?:\s*;\s*{_TERM_ID.pattern})*\s*;?)?")
_GO_IN_TEXT = re.compile(r"GO:\d{7}")


def _split_terms(text: str) -> list[str]:
    """``"GO:1; GO:2;"`` -> ``["GO:1", "GO:2"]`` (text already checked against ``_GO_LIST``)."""
    return list(filter(None, text.replace(" ", "").split(";")))


def _read_go_tsv(path: Path, fh: TextIO, go: dict[str, frozenset[str]]) -> None:
    # Proteins often share the same term list (82k distinct lists for 464k Swiss-Prot proteins):
    # parse each distinct text once and share its frozenset.
    parsed: dict[str, frozenset[str]] = {}
    for lineno, line in enumerate(fh, 1):
        acc, sep, terms = line.rstrip("\r\n").partition("\t")
        acc = acc.strip()
        if not acc and not terms.strip():
            continue  # blank line
        terms_set = parsed.get(terms)
        if terms_set is None:
            if not sep or not acc or "\t" in terms or not _GO_LIST.fullmatch(terms.strip()):
                raise InputError(
                    f"malformed line {line.rstrip()[:80]!r}.",
                    path=path,
                    record=lineno,
                    fix="each line must be 'ACCESSION<TAB>GO:0000001;GO:0000002'.",
                )
            terms_set = parsed[terms] = frozenset(_split_terms(terms))
        elif not acc:
            raise InputError(
                f"malformed line {line.rstrip()[:80]!r}.",
                path=path,
                record=lineno,
                fix="each line must be 'ACCESSION<TAB>GO:0000001;GO:0000002'.",
            )
        got = go.get(acc)
        go[acc] = terms_set if got is None else got | terms_set


def _read_gaf(path: Path, fh: TextIO, go: dict[str, frozenset[str]], ann: Annotations) -> None:
    n_not = 0
    terms: dict[str, set[str]] = {}
    for lineno, line in enumerate(fh, 1):
        if line.startswith("!") or not line.strip():
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) < GAF_MIN_COLUMNS or not cols[1] or not _TERM_ID.fullmatch(cols[4]):
            raise InputError(
                f"malformed GAF line ({len(cols)} tab-separated columns, GO ID column "
                f"{cols[4] if len(cols) > 4 else ''!r}).",
                path=path,
                record=lineno,
                fix="GAF 2.x lines have 15-17 tab-separated columns: DB, accession, symbol, "
                "qualifier, GO ID, ...; check the file is not space-separated or truncated.",
            )
        if "NOT" in cols[3].split("|"):
            n_not += 1
            continue
        acc = cols[1]
        terms.setdefault(acc, set()).add(cols[4])
        if cols[9] and acc not in ann.protein_names:
            ann.protein_names[acc] = cols[9]
    go.update((acc, frozenset(t)) for acc, t in terms.items())
    ann.counts["gaf_not_qualifier"] = n_not
    if n_not:
        log.info("%s: skipped %d annotations with a NOT qualifier", path, n_not)


def _propagate_go(
    go: dict[str, frozenset[str]], ontology: "Ontology", ann: Annotations, path: Path
) -> None:
    from plmsae.data.ontology import NAMESPACE_CATEGORY

    category_of = {
        t: NAMESPACE_CATEGORY.get(term.namespace, term.namespace)
        for t, term in ontology.terms.items()
    }
    # Many proteins share the same term set (464k Swiss-Prot proteins have 82k distinct sets):
    # propagate each distinct set once and share the resulting frozensets between proteins.
    by_set: dict[frozenset[str], tuple[dict[str, frozenset[str]], int, int]] = {}
    split_cache: dict[str, list[tuple[str, frozenset[str]]]] = {}
    dropped_ids: set[str] = set()
    n_alt = n_dropped = 0
    out: dict[str, dict[str, frozenset[str]]] = {}
    for acc, key in go.items():
        got = by_set.get(key)
        if got is None:
            merged: dict[str, set[str]] = {}
            alt = dropped = 0
            for t in key:
                p = ontology.primary(t)
                if p is None:
                    dropped += 1
                    dropped_ids.add(t)
                    continue
                alt += p != t
                parts = split_cache.get(p)
                if parts is None:
                    parts = split_cache[p] = _ancestors_by_category(ontology, p, category_of)
                for cat, anc in parts:
                    if cat in merged:
                        merged[cat] |= anc
                    else:
                        merged[cat] = set(anc)
            got = by_set[key] = ({c: frozenset(v) for c, v in merged.items()}, alt, dropped)
        by_cat, alt, dropped = got
        n_alt += alt
        n_dropped += dropped
        for cat, concepts in by_cat.items():
            out.setdefault(cat, {})[acc] = concepts
    for cat in sorted(out):
        ann.protein_concepts[cat] = out[cat]
    used = set().union(*(anc for parts in split_cache.values() for _, anc in parts))
    for t in sorted(used):
        ann.concept_names[t] = ontology.terms[t].name
    ann.counts["go_alt_ids_mapped"] = n_alt
    ann.counts["go_obsolete_or_unknown"] = n_dropped
    if n_dropped:
        log.warning(
            "%s: dropped %d annotations to %d obsolete or unknown GO terms (e.g. %s)",
            path,
            n_dropped,
            len(dropped_ids),
            ", ".join(sorted(dropped_ids)[:3]),
        )
    if n_alt:
        log.info("%s: mapped %d annotations from alt IDs to primary GO terms", path, n_alt)


def _ancestors_by_category(
    ontology: "Ontology", term: str, category_of: dict[str, str]
) -> list[tuple[str, frozenset[str]]]:
    """The ancestors of ``term`` grouped by category (one group in go-basic, whose is_a and
    part_of never cross namespaces; grouped anyway for other ontologies)."""
    by_cat: dict[str, set[str]] = {}
    for a in ontology.ancestors(term):
        by_cat.setdefault(category_of[a], set()).add(a)
    return [(c, frozenset(v)) for c, v in by_cat.items()]


# --- UniProt TSV export ----------------------------------------------------------------------


def _read_uniprot_tsv(
    path: Path, fh: TextIO, go: dict[str, frozenset[str]], ann: Annotations
) -> None:
    header: list[str] | None = None
    col: dict[str, int] = {}
    for lineno, line in enumerate(fh, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if header is None:
            header = fields
            col = {name: i for i, name in enumerate(fields)}
            go_cols = [i for name, i in col.items() if name.startswith("Gene Ontology")]
            if "Gene Ontology IDs" in col:
                go_cols = [col["Gene Ontology IDs"]]
            feature_cols = [(col[name], name) for name in FEATURE_COLUMNS if name in col]
            for key in ("features_uncertain", "features_other_isoform"):
                ann.counts[key] = 0
            continue
        if len(fields) != len(header):
            raise InputError(
                f"row has {len(fields)} tab-separated fields, the header has {len(header)}.",
                path=path,
                record=lineno,
                fix="re-export the table as TSV from UniProt; fields must not contain tabs.",
            )
        acc = fields[col["Entry"]].strip()
        if not acc:
            raise InputError(
                "empty 'Entry' field.",
                path=path,
                record=lineno,
                fix="every row needs its UniProt accession in the 'Entry' column.",
            )
        record = f"line {lineno}, entry {acc}"
        if "Sequence" in col and fields[col["Sequence"]].strip():
            ann.sequences[acc] = fields[col["Sequence"]].strip().upper()
        if "Protein names" in col:
            name = _protein_name(fields[col["Protein names"]])
            if name:
                ann.protein_names[acc] = name
        if "Organism" in col and fields[col["Organism"]].strip():
            ann.protein_organisms[acc] = fields[col["Organism"]].strip()
        terms = frozenset(t for i in go_cols for t in _GO_IN_TEXT.findall(fields[i]))
        if terms:
            go[acc] = go[acc] | terms if acc in go else terms
        if "Protein families" in col:
            _add_paths(ann, "family", acc, fields[col["Protein families"]].split(";"))
        if "Subcellular location [CC]" in col:
            _add_paths(
                ann, "location", acc, parse_locations(fields[col["Subcellular location [CC]"]])
            )
        seq_len = len(ann.sequences[acc]) if acc in ann.sequences else None
        for i, name in feature_cols:
            text = fields[i].strip()
            if text:
                _add_features(ann, path, f"{record}, column '{name}'", acc, name, text, seq_len)
    if header is None:
        raise InputError("the file has no header row.", path=path, fix="export with column names.")
    if "Entry" not in col:  # pragma: no cover - sniffing guarantees it
        raise InputError("no 'Entry' column.", path=path, record=1, fix="include the Entry column.")


def _protein_name(text: str) -> str:
    """``Serine/threonine-protein kinase PLK1 (EC 2.7.11.21) (Polo-like kinase 1)`` -> the
    recommended name ``Serine/threonine-protein kinase PLK1`` (alternative names, EC numbers and
    ``[Cleaved into: ...]`` parts dropped)."""
    for sep in (" [", " ("):
        i = text.find(sep)
        if i > 0:
            text = text[:i]
    return text.strip()


def _add_paths(ann: Annotations, category: str, acc: str, entries: Iterable[str]) -> None:
    """Add each comma-path entry and all its prefixes as concepts ``category:prefix``."""
    concepts: set[str] = set()
    for entry in entries:
        parts = [p.strip() for p in entry.strip().rstrip(".").split(", ") if p.strip()]
        for k in range(1, len(parts) + 1):
            name = ", ".join(parts[:k])
            cid = f"{category}:{name}"
            concepts.add(cid)
            ann.concept_names.setdefault(cid, name)
    if concepts:
        by_protein = ann.protein_concepts.setdefault(category, {})
        by_protein[acc] = by_protein.get(acc, frozenset()) | concepts


_EVIDENCE = re.compile(r"\{[^}]*\}")
_ISOFORM = re.compile(r"^\s*\[[^\]]*\]:\s*")
#: Membrane topology and orientation words of UniProt location statements (not locations).
_TOPOLOGY = re.compile(r"(membrane protein|anchor|side)$", re.IGNORECASE)


def parse_locations(text: str) -> list[str]:
    """``SUBCELLULAR LOCATION: Cell membrane {ECO:1}; Multi-pass membrane protein. Nucleus.
    Note=...`` -> ``["Cell membrane", "Nucleus"]`` (in order, without duplicates)."""
    out: list[str] = []
    for block in text.split("SUBCELLULAR LOCATION:"):
        block = _EVIDENCE.sub("", block)
        block = block.split("Note=", 1)[0]
        block = _ISOFORM.sub("", block)
        for statement in block.split("."):
            # "Cell membrane; Single-pass type I membrane protein; Extracellular side"
            for piece in statement.split(";"):
                loc = " ".join(piece.split())
                if loc and not _TOPOLOGY.search(loc) and loc not in out:
                    out.append(loc)
    return out


# --- UniProt feature strings -----------------------------------------------------------------

_ITEM = re.compile(r'(?:[^;"]|"[^"]*")+')
_QUALIFIER = re.compile(r'^/(\w+)=(?:"([^"]*)"|(\S*))$')
_FEATURE_START = re.compile(r"^([A-Z][A-Z_]+)\s+(\S+)$")
_POSITION = re.compile(r"^([<>?]?)(\d*)$")
_NUMBERING = re.compile(r"\s+\d+$")


def parse_features(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """``TRANSMEM 10..30; /note="Helical"; TRANSMEM 45..65`` ->
    ``[("TRANSMEM", "10..30", {"note": "Helical"}), ("TRANSMEM", "45..65", {})]``.
    Raises ``ValueError`` on text that is not a UniProt feature string."""
    features: list[tuple[str, str, dict[str, str]]] = []
    for m in _ITEM.finditer(text):
        item = m.group(0).strip()
        if not item:
            continue
        q = _QUALIFIER.match(item)
        if q:
            if not features:
                raise ValueError(f"qualifier {item!r} before any feature")
            features[-1][2][q.group(1)] = q.group(2) if q.group(2) is not None else q.group(3)
            continue
        f = _FEATURE_START.match(item)
        if not f:
            raise ValueError(f"cannot read {item[:60]!r}")
        features.append((f.group(1), f.group(2), {}))
    return features


def parse_location(location: str) -> tuple[int, int] | None:
    """UniProt location (1-based, inclusive) -> 0-based half-open ``(start, end)``.

    ``"10..30"`` -> ``(9, 30)``; ``"12"`` -> ``(11, 12)``; ``"<1..50"`` -> ``(0, 50)``;
    ``"?5..30"`` -> ``(4, 30)``; ``"?..30"`` or ``"10..?"`` -> ``None`` (unknown end).
    Raises ``ValueError`` on anything else."""
    start_text, dots, end_text = location.partition("..")
    if not dots:
        end_text = start_text
    positions = []
    for part in (start_text, end_text):
        m = _POSITION.match(part)
        if not m or (not m.group(2) and m.group(1) != "?"):
            raise ValueError(f"cannot read position {part!r} in {location!r}")
        if not m.group(2):  # '?' alone: unknown position
            return None
        positions.append(int(m.group(2)))
    start, end = positions
    if start < 1 or end < start:
        raise ValueError(f"location {location!r} is not a 1-based range with start <= end")
    return start - 1, end


def _add_features(
    ann: Annotations, path: Path, record: str, acc: str, column: str, text: str, seq_len: int | None
) -> None:
    prefix, qualifier = FEATURE_COLUMNS[column]
    fix = (
        "feature columns must hold UniProt feature strings such as "
        "'TRANSMEM 10..30; /note=\"Helical\"' or 'BINDING 12; /ligand=\"ATP\"'; re-export the "
        "table from uniprot.org (TSV)."
    )
    try:
        features = parse_features(text)
    except ValueError as e:
        raise InputError(f"malformed feature ({e}).", path=path, record=record, fix=fix) from None
    for keyword, location, quals in features:
        if ":" in location:  # e.g. "P12345-2:10..20", a feature on another isoform
            ann.counts["features_other_isoform"] += 1
            continue
        try:
            interval = parse_location(location)
        except ValueError as e:
            raise InputError(
                f"malformed {keyword} location ({e}).", path=path, record=record, fix=fix
            ) from None
        if interval is None:
            ann.counts["features_uncertain"] += 1
            continue
        if seq_len is not None and interval[1] > seq_len:
            raise InputError(
                f"{keyword} {location} ends after the sequence ({seq_len} residues).",
                path=path,
                record=record,
                fix="the features and the Sequence column must describe the same isoform; "
                "re-export the entry.",
            )
        concept = prefix
        label = ""
        if qualifier is not None:
            label = quals.get(qualifier) or quals.get("note", "")
            label = _NUMBERING.sub("", label.split(";")[0].strip())
        if label:
            concept = f"{prefix}:{label}"
        ann.concept_names.setdefault(concept, concept)
        ann.residue_concepts.setdefault(concept, {}).setdefault(acc, []).append(interval)
