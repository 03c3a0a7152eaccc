"""FASTA reading: plain or gzip, UniProt-aware IDs, strict checks against the ESM-2 alphabet.

Rules (the same for :func:`read_fasta` and the streaming :func:`iter_fasta`):

- The ID is the first word of the header; UniProt headers ``sp|P12345|NAME_HUMAN ...`` and
  ``tr|A0A024|...`` give the accession (``P12345``). The rest of the header is the description.
  :attr:`Protein.name` and :attr:`Protein.organism` read UniProt's description
  (``HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2`` -> name
  ``Hemoglobin subunit alpha``, organism ``Homo sapiens``); other descriptions are the name.
- Sequences may span lines; blank lines, spaces and Windows line ends are ignored (as Biopython
  does); lower case is accepted and upper-cased.
- Allowed residues are the 20 standard amino acids plus the ambiguity codes ``X B Z U O``, which
  ESM-2 has tokens for and which are kept as they are.
- One ``*`` at the very end of a sequence (a translated stop codon) is removed; a ``*`` anywhere
  else, gaps (``-``, ``.``), digits and other characters are errors.
- Duplicate IDs, empty sequences, sequence lines before the first header and files with no
  records are errors. Every error names the file, the line, the record and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from plmsae._util import InputError
from plmsae.data._io import gzip_errors, open_text

#: Residue letters ESM-2 has tokens for: 20 standard amino acids and the ambiguity codes X B Z U O.
ESM_RESIDUES = "ACDEFGHIKLMNPQRSTVWY" + "XBZUO"

_BAD_RESIDUE = re.compile(f"[^{ESM_RESIDUES}]")
_ESM_RESIDUE_BYTES = ESM_RESIDUES.encode("ascii")
_UNIPROT_ID = re.compile(r"^(?:sp|tr)\|([^|]+)\|")
#: UniProt FASTA description: ``ENTRY_NAME Protein name OS=Organism OX=9606 GN=GENE PE=1 SV=2``
_UNIPROT_TAGS = re.compile(r"\s(OS|OX|GN|PE|SV)=")
_ENTRY_NAME = re.compile(r"^[A-Z0-9]{1,10}_[A-Z0-9]{1,5}$")


@dataclass(frozen=True, slots=True)
class Protein:
    """One FASTA record. ``sequence`` is upper case and contains only :data:`ESM_RESIDUES`."""

    id: str
    sequence: str
    description: str = ""

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def name(self) -> str:
        """The protein's name from a UniProt description (else the whole description)."""
        return describe(self.description)[0]

    @property
    def organism(self) -> str:
        """The organism (UniProt ``OS=``), '' when the description does not say."""
        return describe(self.description)[1]


def describe(description: str) -> tuple[str, str]:
    """``(name, organism)`` of a FASTA description.

    UniProt: ``"HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2"``
    -> ``("Hemoglobin subunit alpha", "Homo sapiens")`` (the entry name ``HBA_HUMAN`` is dropped
    when a name follows it); UniRef-style ``Tax=`` is read as the organism too. Anything else is
    the name as it is, with no organism: ``"my kinase"`` -> ``("my kinase", "")``.
    """
    text = " ".join(description.split())
    organism = ""
    m = _UNIPROT_TAGS.search(" " + text)
    if m:
        head, tags = text[: m.start()].strip(), " " + text[m.start() :]
        parts = _UNIPROT_TAGS.split(tags)  # ['', 'OS', 'Homo sapiens', 'OX', '9606', ...]
        fields = dict(zip(parts[1::2], (v.strip() for v in parts[2::2])))
        organism = fields.get("OS", "")
        text = head
    elif " Tax=" in text:
        text, _, rest = text.partition(" Tax=")
        organism = rest.split(" TaxID=")[0].strip()
    words = text.split(None, 1)
    if len(words) == 2 and _ENTRY_NAME.match(words[0]):
        text = words[1]
    return text, organism


def parse_header(header: str) -> tuple[str, str]:
    """``"sp|P12345|NAME_HUMAN Some protein"`` -> ``("P12345", "NAME_HUMAN Some protein")``;
    ``"seq1 a b"`` -> ``("seq1", "a b")``. ``header`` excludes the ``>``."""
    parts = header.split(None, 1)
    word = parts[0] if parts else ""
    rest = parts[1].strip() if len(parts) > 1 else ""
    m = _UNIPROT_ID.match(word) if word[:3] in ("sp|", "tr|") else None
    if m:
        entry_name = word[m.end() :]
        return m.group(1), f"{entry_name} {rest}".strip()
    return word, rest


def iter_fasta(path: str | os.PathLike) -> Iterator[Protein]:
    """Stream the records of a FASTA file (plain or gzip) as :class:`Protein`, checked as described
    in the module docstring. Memory: one block of the file plus the set of IDs seen so far."""
    path = Path(path)
    seen: set[str] = set()
    n = 0
    with gzip_errors(path), open_text(path, "FASTA file") as fh:
        # Read big blocks and split them into whole records (much faster than line by line);
        # ``line`` is the line number of the first line of ``buf``.
        buf, line, first = "", 1, True
        while True:
            block = fh.read(_BLOCK_CHARS)
            buf += block
            if first and buf:
                buf, line = _skip_to_first_header(path, buf, line, eof=not block)
                first = not buf
            if block:
                cut = buf.rfind("\n>")
                if cut < 0:
                    continue
                part, buf = buf[:cut], buf[cut + 1 :]
            else:
                part, buf = buf, ""
            if part:
                for record in part[1:].split("\n>"):
                    yield _parse_record(path, record, line, seen)
                    n += 1
                    line += record.count("\n") + 1
            if not block:
                break
    if n == 0:
        raise InputError(
            "no FASTA records found.",
            path=path,
            fix="pass a FASTA file with at least one '>ID' record.",
        )


def read_fasta(path: str | os.PathLike) -> list[Protein]:
    """Read all records of a FASTA file (plain or gzip); see :func:`iter_fasta` for the rules."""
    return list(iter_fasta(path))


_BLOCK_CHARS = 1 << 23


def _skip_to_first_header(path: Path, buf: str, line: int, eof: bool) -> tuple[str, int]:
    """Drop blank lines before the first header; anything else there is an error."""
    stripped = buf.lstrip()
    if not stripped and not eof:
        return "", line + buf.count("\n")  # only blank lines so far
    if stripped and not stripped.startswith(">"):
        bad_line = line + buf[: len(buf) - len(stripped)].count("\n")
        raise InputError(
            "sequence data before the first '>' header.",
            path=path,
            record=bad_line,
            fix="check that this is a FASTA file; every record starts with a "
            "'>ID description' line.",
        )
    skipped = buf[: len(buf) - len(stripped)]
    return stripped, line + skipped.count("\n")


def _parse_record(path: Path, record: str, line: int, seen: set[str]) -> Protein:
    """``record`` is one record without its leading '>'; ``line`` is the line of its header."""
    header, _, body = record.partition("\n")
    pid, desc = parse_header(header)
    if not pid:
        raise InputError(
            "header without an ID.",
            path=path,
            record=line,
            fix="give every record an ID right after '>', e.g. '>P12345 description'.",
        )
    if pid in seen:
        raise InputError(
            f"duplicate ID {pid!r}.",
            path=path,
            record=f"line {line}, record {pid}",
            fix="make the IDs unique (the ID is the first word of the header, or the "
            "accession of a UniProt header).",
        )
    seen.add(pid)
    seq = "".join(body.split()).upper()
    if seq.endswith("*"):
        seq = seq[:-1]
    if not seq:
        raise InputError(
            "empty sequence.",
            path=path,
            record=f"line {line}, record {pid}",
            fix="remove the record or add its sequence on the lines below the header.",
        )
    # bytes.translate with a delete table is a fast C scan; the regex only runs to locate an error
    if not seq.isascii() or seq.encode("ascii").translate(None, _ESM_RESIDUE_BYTES):
        bad = _BAD_RESIDUE.search(seq)
        assert bad is not None  # the byte scan above found a character outside ESM_RESIDUES
        _raise_bad_residue(path, pid, body, line, bad.start())
    if not seq.strip("XBZ"):
        # e.g. a sequence of only X: the model sees nothing but unknown tokens, and every
        # downstream statistic on it would be noise.
        raise InputError(
            f"sequence of {len(seq)} residues has no standard amino acid "
            f"(only ambiguity codes such as X).",
            path=path,
            record=f"line {line}, record {pid}",
            fix="remove the record, or give its real sequence.",
        )
    return Protein(pid, seq, desc)


def _raise_bad_residue(path: Path, pid: str, body: str, header_line: int, pos: int):
    offset = 0
    for i, text in enumerate(body.split("\n"), header_line + 1):
        residues = "".join(text.split())
        if pos < offset + len(residues):
            line, char = i, residues[pos - offset]
            break
        offset += len(residues)
    if char == "*":
        fix = (
            "a '*' (stop) is allowed only at the very end of a sequence; split or trim the record."
        )
    elif char in "-.":
        fix = "remove alignment gaps ('-', '.'): plmsae needs unaligned sequences."
    else:
        fix = f"use only the amino-acid letters {ESM_RESIDUES} (replace unknown residues by X)."
    raise InputError(
        f"character {char!r} at residue {pos + 1} is not an amino acid that ESM-2 can read.",
        path=path,
        record=f"line {line}, record {pid}",
        fix=fix,
    )
