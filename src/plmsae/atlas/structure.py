"""Protein structures in the atlas: find, fetch, read, align to the embedded sequence, and write the
files a page needs to paint a feature's per-residue activation on the structure (3Dmol.js).

Structures come from a directory of PDB/mmCIF files named by accession (``P69441.pdb``,
``P69441.cif.gz``, ``AF-P69441-F1-model_v4.pdb`` ...), from one file given for one protein, or
(only when asked) from AlphaFold DB, downloaded once into a cache. The chain whose sequence aligns
best to the embedded sequence is used; the alignment (Biopython's ``PairwiseAligner``, global,
BLOSUM62, free end gaps) maps each residue of the sequence to a residue of the structure, and
mismatches and unmatched residues are reported, never shifted silently.

Pages stay small and offline: each structure is written once as a JS file
(``structures/<ID>.js``, because a page opened from ``file://`` may not ``fetch()`` a local file)
that the page references with ``<script src>``; the vendored ``3Dmol-min.js`` (npm ``3dmol``,
BSD-3-Clause, licence beside it) and ``structure.js`` go into ``assets/``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plmsae._util import InputError, atomic_write

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
#: files copied next to the pages that show a structure (in ``assets/``)
VIEWER_FILES = ("3Dmol-min.js", "3Dmol-LICENSE.txt", "structure.js")
#: the folder of a site (or next to an annotate page) that holds the structures as JS files
STRUCTURE_DIR = "structures"
AFDB_URL = "https://alphafold.ebi.ac.uk"
SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
_ACCESSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNIPROT = re.compile(
    r"^(?:[OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9](?:[A-Z][A-Z0-9]{2}[0-9]){1,2})(?:-\d+)?$"
)
#: residue names of force fields (CHARMM, AMBER) for protonation states -> the standard name
FORCE_FIELD_NAMES = {
    **dict.fromkeys(("HSD", "HSE", "HSP", "HID", "HIE", "HIP", "HISD", "HISE", "HISH"), "HIS"),
    **dict.fromkeys(("CYX", "CYM", "CYS2"), "CYS"),
    "ASH": "ASP",
    "GLH": "GLU",
    "LYN": "LYS",
}
#: how many mismatches a structure note spells out
SHOW_MISMATCHES = 5


class StructureUnavailable(Exception):
    """AlphaFold DB could not be reached (offline, timeouts, server errors after the retries)."""


# --------------------------------------------------------------------------------------------
# Reading a structure file
# --------------------------------------------------------------------------------------------


@dataclass
class Chain:
    """One protein chain: its one-letter sequence and its residues (Bio.PDB residue objects)."""

    id: str
    sequence: str
    residues: list[Any]


def read_chains(path: Path) -> list[Chain]:
    """The protein chains of the first model of a PDB or mmCIF file (plain or gzip; the format
    from the suffix, else from the content). Raises InputError for a file with no protein."""
    from Bio.PDB import MMCIFParser, PDBParser
    from Bio.PDB.Polypeptide import is_aa
    from Bio.SeqUtils import seq1

    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8", errors="replace")
    name = path.name.lower().removesuffix(".gz")
    is_cif = name.endswith((".cif", ".mmcif")) or (
        not name.endswith((".pdb", ".ent")) and text.lstrip().startswith("data_")
    )
    parser = MMCIFParser(QUIET=True) if is_cif else PDBParser(QUIET=True)
    try:
        model = next(iter(parser.get_structure(path.stem, io.StringIO(text))))
    except (StopIteration, ValueError, KeyError, IndexError) as e:
        raise InputError(
            f"is not a readable PDB/mmCIF file ({str(e) or 'no model'}).",
            path=path,
            fix="pass a PDB or mmCIF file (e.g. an AlphaFold DB model).",
        ) from e
    chains = []
    for ch in model:
        residues = [
            r
            for r in ch
            if r.id[0] == " "
            and (is_aa(r, standard=False) or r.get_resname() in FORCE_FIELD_NAMES)
            and "CA" in r
        ]
        if residues:
            seq = "".join(seq1(residue_name(r)) or "X" for r in residues)
            chains.append(Chain(str(ch.id), seq, residues))
    if not chains:
        raise InputError(
            "holds no protein chain (no amino-acid residue with a CA atom).",
            path=path,
            fix="pass a protein structure file.",
        )
    return chains


def residue_name(residue: Any) -> str:
    """A residue's standard three-letter name (``HSD`` -> ``HIS``)."""
    name = str(residue.get_resname()).strip()
    return FORCE_FIELD_NAMES.get(name, name)


def protein_element(atom_name: str, resname: str) -> str:
    """The element of an amino-acid atom from its name (``CA`` is carbon here, ``HT1`` and
    ``1HB`` hydrogen; selenomethionine's ``SE`` selenium); files' element columns are often
    missing or guessed wrong (CHARMM files)."""
    name = atom_name.strip().upper()
    if resname == "MSE" and name.startswith("SE"):
        return "SE"
    letters = name.lstrip("0123456789")
    return letters[:1] or "X"


def pdb_text(chain: Chain) -> str:
    """The chain's atoms as PDB ATOM records, residues renumbered 1..n (no insertion codes), so
    that a page maps structure residue k to ``resi`` k + 1. B-factors (pLDDT for AlphaFold
    models) are kept."""
    lines, serial = [], 1
    for k, res in enumerate(chain.residues, start=1):
        resname = residue_name(res)[:3]
        for atom in res:
            element = protein_element(atom.get_id(), resname)
            if element == "H":
                continue  # hydrogens: not drawn in a cartoon, and half the file
            name = atom.get_id()
            name = f" {name:<3}" if len(name) < 4 and len(element) == 1 else f"{name:<4}"
            x, y, z = (float(c) for c in atom.coord)
            bf = float(atom.bfactor or 0.0)
            occ = float(atom.occupancy if atom.occupancy is not None else 1.0)
            lines.append(
                f"ATOM  {serial % 100000:5d} {name}{(atom.altloc or ' ')[:1]}{resname:>3} "
                f"{'A'}{k % 10000:4d}    {x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{bf:6.2f}"
                f"          {element:>2}"
            )
            serial += 1
    lines.append("END")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Aligning the structure to the embedded sequence
# --------------------------------------------------------------------------------------------


@dataclass
class Alignment:
    """How the residues of an embedded sequence map onto a structure chain.

    ``mapping[j]``: the structure residue (0-based, in chain order) of sequence residue j, or -1
    when the structure has no residue for it. ``mismatches``: (sequence residue 1-based, sequence
    letter, structure letter) where aligned letters differ."""

    mapping: np.ndarray
    score: float
    n_aligned: int
    n_identical: int
    mismatches: list[tuple[int, str, str]]
    n_structure: int

    @property
    def n_sequence_only(self) -> int:
        return int((self.mapping < 0).sum())

    @property
    def n_structure_only(self) -> int:
        return self.n_structure - self.n_aligned

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_sequence": len(self.mapping),
            "n_structure": self.n_structure,
            "n_aligned": self.n_aligned,
            "n_identical": self.n_identical,
            "n_mismatches": len(self.mismatches),
            "mismatches": [f"{a}{j}{b}" for j, a, b in self.mismatches[:SHOW_MISMATCHES]],
            "n_sequence_only": self.n_sequence_only,
            "n_structure_only": self.n_structure_only,
        }


def _aligner() -> Any:
    from Bio.Align import PairwiseAligner, substitution_matrices

    aligner = PairwiseAligner()
    aligner.mode = "global"
    aligner.substitution_matrix = substitution_matrices.load("BLOSUM62")
    aligner.open_gap_score = -10.0
    aligner.extend_gap_score = -0.5
    aligner.end_gap_score = 0.0  # a model of a fragment, or a signal peptide cut off, is free
    return aligner


def _clean(seq: str) -> str:
    """Letters BLOSUM62 knows (U, O, J -> X)."""
    return re.sub(r"[^ARNDCQEGHILKMFPSTWYVBZX*]", "X", seq.upper())


def align(sequence: str, structure_sequence: str) -> Alignment:
    """Align a structure chain's sequence to the embedded sequence (global, free end gaps)."""
    aln = _aligner().align(_clean(sequence), _clean(structure_sequence))[0]
    mapping = np.full(len(sequence), -1, dtype=np.int64)
    mismatches: list[tuple[int, str, str]] = []
    n_aligned = n_identical = 0
    for (s0, s1), (t0, t1) in zip(*aln.aligned):
        for j, k in zip(range(s0, s1), range(t0, t1)):
            mapping[j] = k
            n_aligned += 1
            if sequence[j].upper() == structure_sequence[k].upper():
                n_identical += 1
            else:
                mismatches.append((j + 1, sequence[j], structure_sequence[k]))
    return Alignment(
        mapping, float(aln.score), n_aligned, n_identical, mismatches, len(structure_sequence)
    )


@dataclass
class AlignedStructure:
    """A structure chain aligned to a protein's embedded sequence."""

    protein: str
    path: Path
    chain: str
    source: str
    alignment: Alignment
    text: str

    def values(self, track: np.ndarray) -> list[float | None]:
        """A per-residue track of the sequence carried onto the structure's residues (None where
        a structure residue has no sequence residue)."""
        out: list[float | None] = [None] * self.alignment.n_structure
        for j, k in enumerate(self.alignment.mapping[: len(track)]):
            if k >= 0:
                v = float(track[j])
                out[int(k)] = round(v, 4) if np.isfinite(v) else None
        return out

    def note(self) -> str:
        """One line on what the structure is and how well it matches the sequence."""
        a = self.alignment
        parts = [
            f"{self.path.name} ({self.source}), chain {self.chain.strip() or '(unnamed)'}: "
            f"{a.n_aligned} of "
            f"{len(a.mapping)} sequence residues placed"
        ]
        if a.mismatches:
            shown = ", ".join(f"{x}{j}{y}" for j, x, y in a.mismatches[:SHOW_MISMATCHES])
            more = " …" if len(a.mismatches) > SHOW_MISMATCHES else ""
            parts.append(f"{len(a.mismatches)} differ from the sequence ({shown}{more})")
        if a.n_sequence_only:
            parts.append(f"{a.n_sequence_only} sequence residues have no structure residue")
        if a.n_structure_only:
            parts.append(f"{a.n_structure_only} structure residues are not in the sequence")
        return "; ".join(parts) + "."

    def to_dict(self) -> dict[str, Any]:
        return {
            "protein": self.protein,
            "path": str(self.path),
            "chain": self.chain,
            "source": self.source,
            **self.alignment.to_dict(),
        }


def load_aligned(path: Path, protein: str, sequence: str, source: str = "file") -> AlignedStructure:
    """Read a structure file and align its best-matching chain to ``sequence``."""
    chains = read_chains(path)
    best = max(((align(sequence, c.sequence), c) for c in chains), key=lambda x: x[0].score)
    alignment, chain = best
    if alignment.n_aligned == 0 or alignment.n_identical < 0.3 * min(
        len(sequence), len(chain.sequence)
    ):
        log.warning(
            "%s: the structure %s matches the sequence poorly (%d identical residues of %d)",
            protein,
            path,
            alignment.n_identical,
            len(sequence),
        )
    return AlignedStructure(protein, Path(path), chain.id, source, alignment, pdb_text(chain))


# --------------------------------------------------------------------------------------------
# Finding and fetching structure files
# --------------------------------------------------------------------------------------------


def find_structure_file(directory: Path, accession: str) -> Path | None:
    """A structure file for ``accession`` in ``directory``: ``ACC.pdb``, ``ACC.cif``, ``.ent``,
    ``.mmcif`` (any of them gzipped) or an AlphaFold DB name ``AF-ACC-F1-model_v*``; the case of
    the accession is ignored."""
    if not _ACCESSION.match(accession):
        return None
    want = accession.lower()
    found: list[tuple[int, str, Path]] = []
    for p in Path(directory).iterdir():
        name = p.name.lower().removesuffix(".gz")
        stem, suffix = Path(name).stem, Path(name).suffix
        if suffix not in SUFFIXES or not p.is_file():
            continue
        if stem == want:
            found.append((0, name, p))
        elif re.fullmatch(rf"af-{re.escape(want)}-f1-model_v\d+", stem):
            found.append((1, name, p))
    return min(found)[2] if found else None


Opener = Callable[..., Any]


@dataclass
class AlphaFoldClient:
    """Downloads AlphaFold DB models into ``cache`` once (``AF-<ACC>.pdb``; a 404 is remembered
    as ``AF-<ACC>.missing``). Each request has a ``timeout``; network errors and 5xx answers are
    retried ``retries`` times with doubling delays; then :class:`StructureUnavailable`."""

    cache: Path
    base_url: str = AFDB_URL
    timeout: float = 20.0
    retries: int = 2
    retry_delay: float = 1.0
    opener: Opener = urllib.request.urlopen

    def get(self, accession: str) -> Path | None:
        if not _UNIPROT.match(accession):
            return None  # AlphaFold DB is keyed by UniProt accessions
        hit = self.cache / f"AF-{accession}.pdb"
        missing = self.cache / f"AF-{accession}.missing"
        if hit.exists():
            return hit
        if missing.exists():
            return None
        meta = self._request(f"{self.base_url.rstrip('/')}/api/prediction/{accession}")
        if meta is None:
            self._remember_missing(missing)
            return None
        entries = json.loads(meta.decode("utf-8"))
        entry = entries[0] if isinstance(entries, list) and entries else entries
        url = entry.get("pdbUrl") if isinstance(entry, dict) else None
        if not url:
            self._remember_missing(missing)
            return None
        data = self._request(str(url))
        if data is None or b"ATOM" not in data[:1_000_000]:
            self._remember_missing(missing)
            return None
        self.cache.mkdir(parents=True, exist_ok=True)
        with atomic_write(hit) as fh:
            fh.write(data)
        return hit

    def _remember_missing(self, path: Path) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        path.write_text("no AlphaFold DB model\n")

    def _request(self, url: str) -> bytes | None:
        """The body of ``url``; None for a 404; StructureUnavailable after the retries."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "plmsae"})
                with self.opener(req, timeout=self.timeout) as resp:
                    return bytes(resp.read())
            except urllib.error.HTTPError as e:
                if e.code in (400, 404, 410):
                    return None
                last = e
                if e.code < 500 and e.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                last = e
        raise StructureUnavailable(
            f"AlphaFold DB ({self.base_url}) could not be reached after {self.retries + 1} "
            f"tries: {getattr(last, 'reason', None) or last}. Structures already in the cache "
            f"({self.cache}) and in --structures are still used; without a network, download "
            "the models elsewhere and pass their folder as --structures."
        )


@dataclass
class StructureSource:
    """Where structures come from, in order: ``files`` (protein -> file), ``directory``, then
    AlphaFold DB when ``client`` is set. After one failed fetch the network is not tried again
    in this run (``note`` says why)."""

    directory: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    client: AlphaFoldClient | None = None
    note: str | None = None

    def get(self, protein: str) -> tuple[Path, str] | None:
        if protein in self.files:
            return self.files[protein], "file"
        if self.directory is not None:
            p = find_structure_file(self.directory, protein)
            if p is not None:
                return p, "file"
        if self.client is not None:
            try:
                p = self.client.get(protein)
            except StructureUnavailable as e:
                log.warning("%s", e)
                self.note, self.client = str(e), None
                return None
            if p is not None:
                return p, "AlphaFold DB"
        return None

    @property
    def empty(self) -> bool:
        return self.directory is None and not self.files and self.client is None


def structure_source(
    directory: Path | None,
    fetch: bool,
    cache: Path | None,
    files: dict[str, Path] | None = None,
    timeout: float = 20.0,
) -> StructureSource:
    """A :class:`StructureSource` from the stage options (``--structures``, ``--fetch-structures``,
    ``--structure-cache``)."""
    if directory is not None and not Path(directory).is_dir():
        raise InputError(
            "is not a directory.",
            path=directory,
            fix="pass a folder of PDB/mmCIF files named by accession to --structures.",
        )
    client = None
    if fetch:
        from platformdirs import user_cache_dir

        client = AlphaFoldClient(
            Path(cache) if cache else Path(user_cache_dir("plmsae")) / "alphafold",
            base_url=AFDB_URL,
            timeout=timeout,
        )
    return StructureSource(Path(directory) if directory else None, dict(files or {}), client)


# --------------------------------------------------------------------------------------------
# Page data and files
# --------------------------------------------------------------------------------------------


def script_name(protein: str) -> str:
    """File name of a protein's structure script: ``structures/<safe id>.js``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", protein)[:80] + ".js"


class PageStructures:
    """The structures of the proteins shown on a set of pages: loaded and aligned once each,
    written once as ``<dir>/structures/<ID>.js``, with the viewer's assets."""

    def __init__(self, source: StructureSource):
        self.source = source
        self.models: dict[str, AlignedStructure] = {}
        self.failed: dict[str, str] = {}

    def prepare(self, sequences: dict[str, str], proteins: Iterable[str]) -> None:
        """Find and align a structure for each protein that has a sequence."""
        if self.source.empty:
            return
        for pid in dict.fromkeys(proteins):
            seq = sequences.get(pid)
            if not seq or pid in self.models or pid in self.failed:
                continue
            got = self.source.get(pid)
            if got is None:
                continue
            try:
                self.models[pid] = load_aligned(got[0], pid, seq, got[1])
            except InputError as e:
                log.warning("%s", e)
                self.failed[pid] = str(e)

    @property
    def note(self) -> str | None:
        return self.source.note

    def view(self, items: Iterable[tuple[str, str, np.ndarray | None]], prefix: str) -> dict | None:
        """The data of one viewer: ``items`` = (protein, button label, per-residue track) for
        the proteins a page shows, in order; those with a structure and a track become views.
        ``prefix``: the relative path from the page to the folder holding ``structures/``."""
        views = []
        for pid, label, track in items:
            model = self.models.get(pid)
            if model is None or track is None:
                continue
            vals = np.asarray(track, dtype=np.float32)
            views.append(
                {
                    "key": pid,
                    "label": label,
                    "values": model.values(vals),
                    "max": float(np.max(vals)) if vals.size else 0.0,
                    "note": model.note(),
                    "mismatch": bool(model.alignment.mismatches),
                }
            )
        if not views:
            return None
        from markupsafe import Markup

        from plmsae.atlas.site import script_json

        keys = list(dict.fromkeys(str(v["key"]) for v in views))
        return {
            "views": views,
            "json": Markup(script_json({"views": views})),
            "scripts": [f"{prefix}{STRUCTURE_DIR}/{script_name(k)}" for k in keys],
        }

    def write(self, root: Path, assets: Path) -> None:
        """``root/structures/<ID>.js`` for every structure and the viewer files in ``assets``."""
        if not self.models:
            return
        from plmsae.atlas.site import script_json

        (root / STRUCTURE_DIR).mkdir(parents=True, exist_ok=True)
        assets.mkdir(parents=True, exist_ok=True)
        for pid, model in self.models.items():
            js = (
                "(window.PLMSAE_STRUCTURES = window.PLMSAE_STRUCTURES || {})["
                + script_json(pid)
                + "] = "
                + script_json(model.text)
                + ";\n"
            )
            with atomic_write(root / STRUCTURE_DIR / script_name(pid), "w") as fh:
                fh.write(js)
        for name in VIEWER_FILES:
            shutil.copyfile(STATIC / name, assets / name)

    def summary(self) -> dict[str, Any]:
        """For site.json / the annotate settings: what was shown and how it aligned."""
        return {
            "n_structures": len(self.models),
            "structures": [m.to_dict() for m in self.models.values()],
            "failed": self.failed,
            "note": self.note,
        }


def query_structures(
    proteins: list[dict],
    file: Path | None,
    directory: Path | None,
    fetch: bool,
    cache: Path | None,
) -> PageStructures | None:
    """The structures of annotated proteins (``annotate --structure``, ``--structures``,
    ``--fetch-structures``), aligned to their sequences; None when none was asked for."""
    if file is None and directory is None and not fetch:
        return None
    files: dict[str, Path] = {}
    if file is not None:
        if len(proteins) != 1:
            raise InputError(
                f"--structure gives one structure, but the query has {len(proteins)} proteins.",
                path=file,
                fix="annotate one protein, or pass a folder of files named by accession as "
                "--structures.",
            )
        if not Path(file).is_file():
            raise InputError("does not exist.", path=file, fix="pass a PDB or mmCIF file.")
        files[str(proteins[0]["id"])] = Path(file)
    structures = PageStructures(structure_source(directory, fetch, cache, files))
    sequences = {str(p["id"]): str(p["sequence"]) for p in proteins}
    structures.prepare(sequences, sequences)
    return structures


def _button(f: dict) -> str:
    """A structure-view button of an annotate page: ``#12 ATP binding`` (label cut at a word)."""
    label = str(f.get("label") or "")
    if len(label) > 28:
        label = label[:28].rsplit(" ", 1)[0] + " …"
    return f"#{f['feature']}" + (f" {label}" if label else "")


def add_structure_views(pages: list[dict], structures: PageStructures, prefix: str) -> None:
    """Give each protein of an annotate page its structure view (``structure``: one view per
    listed feature that has a track), or None."""
    for p in pages:
        feats = [*p.get("features", []), *p.get("chemistry", [])]
        items = [
            (str(p["id"]), _button(f), f.get("track")) for f in feats if f.get("track") is not None
        ]
        p["structure"] = structures.view(items, prefix)
