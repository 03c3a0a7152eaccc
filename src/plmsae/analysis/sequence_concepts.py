"""Built-in residue concepts computed from the sequence alone (concept ids ``seq:...``).

Every residue-level SAE gets per-residue meaning without external annotation: the concepts below
are scored through the residue statistics of :mod:`plmsae.analysis.residue`, for the SAE and both
baselines, next to UniProt residue features when those are given. All of them share the
annotation type ``seq``, so their population is every residue of every protein with a sequence
(absence is real absence: nothing here depends on what a curator looked at).

- ``seq:aa:X`` (20): the residue is amino acid X (single-residue concept: F1 with residue recall).
- ``seq:nterm`` / ``seq:cterm``: the first / last :data:`TERMINAL` residues of the chain.
- ``seq:hydrophobic``: hydrophobic stretches, residues covered by a 19-residue window whose mean
  Kyte-Doolittle hydropathy is >= 1.6 (Kyte & Doolittle 1982: the window and cut-off that pick out
  transmembrane helices).
- ``seq:charge:positive`` / ``seq:charge:negative``: charge clusters, residues covered by a
  10-residue window with net charge >= +5 / <= -5 (K, R = +1; D, E = -1): at least half the
  window of one sign net, which random composition (about 11 % K+R, 12 % D+E) reaches rarely.
- ``seq:low-complexity``: residues covered by a 12-residue window whose Shannon entropy of the
  amino-acid composition is <= 2.2 bits, SEG's trigger window and complexity (Wootton & Federhen
  1993; the extension step of SEG is left out).
- ``seq:motif:*``: PROSITE patterns (overlapping matches kept): N-glycosylation sequon
  N-{P}-[ST]-{P} (PS00001), P-loop [AG]-x(4)-G-K-[ST] (PS00017), C2H2 zinc finger
  C-x(2,4)-C-x(3)-[LIVMFYWC]-x(8)-H-x(3,5)-H (PS00028), EF-hand calcium-binding loop (PS00018),
  ER-retention signal [KRHQSA]-[DENQ]-E-L at the C-terminus (PS00014). These are well-known
  functional motifs short enough to be matched reliably by a pattern.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp

PREFIX = "seq:"
TYPE = "seq"  # the annotation type of every built-in concept (the part before the first ':')
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
AA_NAMES = {
    "A": "alanine",
    "C": "cysteine",
    "D": "aspartate",
    "E": "glutamate",
    "F": "phenylalanine",
    "G": "glycine",
    "H": "histidine",
    "I": "isoleucine",
    "K": "lysine",
    "L": "leucine",
    "M": "methionine",
    "N": "asparagine",
    "P": "proline",
    "Q": "glutamine",
    "R": "arginine",
    "S": "serine",
    "T": "threonine",
    "V": "valine",
    "W": "tryptophan",
    "Y": "tyrosine",
}
KYTE_DOOLITTLE = {
    "A": 1.8,
    "R": -4.5,
    "N": -3.5,
    "D": -3.5,
    "C": 2.5,
    "Q": -3.5,
    "E": -3.5,
    "G": -0.4,
    "H": -3.2,
    "I": 4.5,
    "L": 3.8,
    "K": -3.9,
    "M": 1.9,
    "F": 2.8,
    "P": -1.6,
    "S": -0.8,
    "T": -0.7,
    "W": -0.9,
    "Y": -1.3,
    "V": 4.2,
}
TERMINAL = 5
HYDROPATHY_WINDOW, HYDROPATHY_MIN = 19, 1.6
CHARGE_WINDOW, CHARGE_MIN = 10, 5
ENTROPY_WINDOW, ENTROPY_MAX = 12, 2.2
#: PROSITE patterns as regular expressions (matched with a look-ahead: overlaps kept)
MOTIFS = {
    "N-glyc": ("N-glycosylation sequon N-{P}-[ST]-{P} (PROSITE PS00001)", r"N[^P][ST][^P]"),
    "P-loop": ("P-loop NTPase motif [AG]x4GK[ST] (PROSITE PS00017)", r"[AG].{4}GK[ST]"),
    "C2H2": (
        "C2H2 zinc finger (PROSITE PS00028)",
        r"C.{2,4}C.{3}[LIVMFYWC].{8}H.{3,5}H",
    ),
    "EF-hand": (
        "EF-hand calcium-binding loop (PROSITE PS00018)",
        r"D[^W][DNS][^ILVFYW][DENSTG][DNQGHRK][^GP][LIVMC][DENQSTAGC].{2}[DE][LIVMFYW]",
    ),
    "KDEL": ("ER-retention signal [KRHQSA][DENQ]EL at the C-terminus (PROSITE PS00014)", None),
}
_KDEL = re.compile(r"[KRHQSA][DENQ]EL$")


def _names() -> dict[str, str]:
    names = {f"{PREFIX}aa:{a}": f"{AA_NAMES[a]} ({a})" for a in AMINO_ACIDS}
    names[f"{PREFIX}nterm"] = f"N-terminus (first {TERMINAL} residues)"
    names[f"{PREFIX}cterm"] = f"C-terminus (last {TERMINAL} residues)"
    names[f"{PREFIX}hydrophobic"] = "hydrophobic stretch (Kyte-Doolittle, 19-residue window)"
    names[f"{PREFIX}charge:positive"] = "positive charge cluster (K/R)"
    names[f"{PREFIX}charge:negative"] = "negative charge cluster (D/E)"
    names[f"{PREFIX}low-complexity"] = "low-complexity segment (SEG-like)"
    for key, (name, _) in MOTIFS.items():
        names[f"{PREFIX}motif:{key}"] = name
    return names


#: every built-in concept id -> readable name, in a fixed order
NAMES: dict[str, str] = _names()
CONCEPTS: list[str] = list(NAMES)
_INDEX = {c: i for i, c in enumerate(CONCEPTS)}
_AA_CODE = np.full(256, -1, dtype=np.int16)
for _i, _a in enumerate(AMINO_ACIDS):
    _AA_CODE[ord(_a)] = _i
_KD = np.array([KYTE_DOOLITTLE[a] for a in AMINO_ACIDS])
_CHARGE = np.array([{"K": 1, "R": 1, "D": -1, "E": -1}.get(a, 0) for a in AMINO_ACIDS])
_MOTIF_RE = {k: re.compile(f"(?=({p}))") for k, (_, p) in MOTIFS.items() if p is not None}


def is_builtin(concept: str) -> bool:
    return concept.startswith(PREFIX)


def single_residue(concept: str) -> bool:
    """Whether every instance of the built-in concept is one residue (amino-acid identity)."""
    return concept.startswith(f"{PREFIX}aa:")


def aa_codes(sequence: str) -> np.ndarray:
    """Index of each residue in :data:`AMINO_ACIDS` (int16 [L]; -1 for X, B, Z, U, O)."""
    return _AA_CODE[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]


def _window_runs(mask: np.ndarray, window: int, length: int) -> list[tuple[int, int]]:
    """Maximal segments covered by windows [i, i + window) whose start i has ``mask[i]``."""
    starts = np.flatnonzero(mask)
    if not len(starts):
        return []
    cover = np.zeros(length + 1, dtype=np.int32)
    np.add.at(cover, starts, 1)
    np.add.at(cover, np.minimum(starts + window, length), -1)
    on = np.cumsum(cover[:-1]) > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _windowed(values: np.ndarray, window: int) -> np.ndarray:
    """Sliding sums over ``window`` residues ([L - window + 1]; empty when L < window)."""
    if len(values) < window:
        return np.zeros(0)
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return c[window:] - c[:-window]


_CLOGC = np.array([c * np.log2(c) if c else 0.0 for c in range(ENTROPY_WINDOW + 1)])


def _low_complexity(codes: np.ndarray) -> list[tuple[int, int]]:
    """SEG-like trigger windows: entropy (bits) = log2(w) - sum(c log2 c) / w over the counts."""
    L = len(codes)
    if L < ENTROPY_WINDOW:
        return []
    onehot = np.zeros((L + 1, 21), dtype=np.int32)
    onehot[np.arange(1, L + 1), np.where(codes >= 0, codes, 20)] = 1
    c = np.cumsum(onehot, axis=0)
    counts = c[ENTROPY_WINDOW:] - c[:-ENTROPY_WINDOW]  # [L - w + 1, 21]
    h = np.log2(ENTROPY_WINDOW) - _CLOGC[counts].sum(axis=1) / ENTROPY_WINDOW
    return _window_runs(h <= ENTROPY_MAX + 1e-9, ENTROPY_WINDOW, L)


def instances(sequence: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every built-in concept instance of one sequence: (concept index into :data:`CONCEPTS`,
    start, end), int64 arrays, 0-based half-open residue intervals."""
    codes = aa_codes(sequence)
    L = len(codes)
    known = np.flatnonzero(codes >= 0)
    cidx = [codes[known].astype(np.int64)]
    start, end = [known.astype(np.int64)], [known.astype(np.int64) + 1]

    def add(concept: str, segments) -> None:
        if len(segments):
            s = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
            cidx.append(np.full(len(s), _INDEX[concept], np.int64))
            start.append(s[:, 0])
            end.append(s[:, 1])

    if L:
        add(f"{PREFIX}nterm", [(0, min(TERMINAL, L))])
        add(f"{PREFIX}cterm", [(max(0, L - TERMINAL), L)])
    safe = np.where(codes >= 0, codes, 0)
    kd = _windowed(np.where(codes >= 0, _KD[safe], 0.0), HYDROPATHY_WINDOW) / HYDROPATHY_WINDOW
    add(f"{PREFIX}hydrophobic", _window_runs(kd >= HYDROPATHY_MIN, HYDROPATHY_WINDOW, L))
    charge = _windowed(np.where(codes >= 0, _CHARGE[safe], 0), CHARGE_WINDOW)
    add(f"{PREFIX}charge:positive", _window_runs(charge >= CHARGE_MIN, CHARGE_WINDOW, L))
    add(f"{PREFIX}charge:negative", _window_runs(charge <= -CHARGE_MIN, CHARGE_WINDOW, L))
    add(f"{PREFIX}low-complexity", _low_complexity(codes))
    for key, rx in _MOTIF_RE.items():
        add(
            f"{PREFIX}motif:{key}",
            [(m.start(), m.start() + len(m.group(1))) for m in rx.finditer(sequence)],
        )
    kdel = _KDEL.search(sequence)
    if kdel:
        add(f"{PREFIX}motif:KDEL", [(kdel.start(), kdel.end())])
    return np.concatenate(cidx), np.concatenate(start), np.concatenate(end)


class SequenceConcepts:
    """The built-in concepts of a set of proteins (``sequences``: protein id -> sequence);
    instances are computed on demand (a protein's are recomputed, cheaply, when asked again)."""

    def __init__(self, sequences: dict[str, str]):
        self.sequences = sequences
        self.names = list(CONCEPTS)

    def instances(self, pid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(concept index into ``names``, start, end) of protein ``pid`` (empty when unknown)."""
        seq = self.sequences.get(pid)
        if seq is None:
            z = np.zeros(0, np.int64)
            return z, z, z
        return instances(seq)

    def membership(self, ids: list[str]) -> sp.csr_matrix:
        """bool CSR [len(ids), n_concepts]: the protein has at least one instance."""
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        for i, pid in enumerate(ids):
            c = np.unique(self.instances(pid)[0])
            rows.append(np.full(len(c), i, np.int64))
            cols.append(c)
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        return sp.csr_matrix(
            (np.ones(len(r), bool), (r, c)), shape=(len(ids), len(self.names)), dtype=bool
        )
