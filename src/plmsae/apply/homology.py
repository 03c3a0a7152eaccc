"""Nearest homologs with MMseqs2: the evidence next to a candidate annotation, and the baseline
that transfers annotations from the nearest annotated homolog.

:func:`search` runs ``mmseqs easy-search`` (default sensitivity 5.7, E-value <= 1e-3) of query
sequences against target sequences and returns one row per hit (self hits dropped).
:func:`nearest_transfer` is the classic annotation-transfer baseline: every protein takes the
concepts of its best hit (by bit score) among the annotated proteins that it does not carry
itself, ranked by that hit's sequence identity.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from plmsae._util import InputError
from plmsae.analysis.splits import mmseqs_available

HIT_COLUMNS = ["query", "target", "identity", "evalue", "bits"]
TRANSFER_COLUMNS = ["protein", "concept", "homolog", "identity", "evalue", "bits"]


def _write_fasta(path: Path, prefix: str, sequences: list[str]) -> None:
    with open(path, "w") as fh:
        fh.writelines(f">{prefix}{i}\n{s}\n" for i, s in enumerate(sequences))


def search(
    queries: dict[str, str],
    targets: dict[str, str],
    *,
    sensitivity: float = 5.7,
    evalue: float = 1e-3,
    threads: int | None = None,
) -> pd.DataFrame:
    """Hits of ``queries`` (id -> sequence) in ``targets``: ``query, target, identity`` (fraction
    of identical aligned residues, 0..1), ``evalue, bits``; hits of a protein on itself (same
    id) are dropped. Raises :class:`InputError` when mmseqs2 is missing or fails."""
    if not mmseqs_available():
        raise InputError(
            "mmseqs (MMseqs2) is not on PATH.", fix="install it (apt-get install mmseqs2)."
        )
    q_ids, t_ids = list(queries), list(targets)
    if not q_ids or not t_ids:
        return pd.DataFrame(columns=HIT_COLUMNS)
    with tempfile.TemporaryDirectory(prefix="plmsae_search_") as tmpdir:
        tmp = Path(tmpdir)
        _write_fasta(tmp / "q.fasta", "q", [queries[i] for i in q_ids])
        _write_fasta(tmp / "t.fasta", "t", [targets[i] for i in t_ids])
        args = ["-s", str(sensitivity), "-e", str(evalue), "-v", "1"]
        args += ["--format-output", "query,target,fident,evalue,bits"]
        args += ["--threads", str(threads or max(1, os.cpu_count() or 1))]
        done = subprocess.run(
            ["mmseqs", "easy-search", str(tmp / "q.fasta"), str(tmp / "t.fasta")]
            + [str(tmp / "hits.m8"), str(tmp / "work"), *args],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise InputError(
                f"mmseqs easy-search failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}",
                fix="check the sequences, or pass --no-homologs.",
            )
        raw = pd.read_csv(tmp / "hits.m8", sep="\t", header=None, names=HIT_COLUMNS)
    raw["query"] = [q_ids[int(s[1:])] for s in raw["query"]]
    raw["target"] = [t_ids[int(s[1:])] for s in raw["target"]]
    hits = raw[raw["query"] != raw["target"]]
    return hits.sort_values(["query", "bits"], ascending=[True, False]).reset_index(drop=True)


def nearest_transfer(
    ids: list[str],
    sequences: list[str],
    annotations: sp.csr_matrix,
    concepts: list[str],
    hits: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The nearest-homolog transfer baseline on proteins ``ids`` (rows of ``annotations``, bool
    [n_proteins, n_concepts], columns = ``concepts``): each protein's best hit (highest bit
    score, not itself) among the proteins with at least one annotation gives it every concept
    the hit carries and the protein does not. ``hits`` (from :func:`search` of all against all)
    may be passed when already computed. Rows ``protein, concept, homolog, identity, evalue,
    bits``, best first (identity, then bit score)."""
    annotations = sp.csr_matrix(annotations, dtype=bool)
    index = {p: i for i, p in enumerate(ids)}
    annotated = np.asarray(annotations.sum(axis=1)).ravel() > 0
    if hits is None:
        seqs = dict(zip(ids, sequences))
        targets = {p: seqs[p] for p, a in zip(ids, annotated) if a}
        hits = search(seqs, targets)
    hits = hits[hits["target"].map(lambda t: bool(annotated[index[t]]) if t in index else False)]
    best = hits.sort_values("bits", ascending=False, kind="stable").drop_duplicates("query")
    rows = []
    for r in best.itertuples(index=False):
        q, t = index[r.query], index[r.target]
        have = set(annotations[q].indices)
        for c in annotations[t].indices:
            if c not in have:
                rows.append((r.query, concepts[c], r.target, r.identity, r.evalue, r.bits))
    out = pd.DataFrame(rows, columns=TRANSFER_COLUMNS)
    order = out.sort_values(["identity", "bits"], ascending=False, kind="stable")
    return order.reset_index(drop=True)


def best_annotated_hits(
    hits: pd.DataFrame, pairs: list[tuple[str, str]], carriers: dict[str, set[str]]
) -> list[tuple[str | None, float | None, float | None]]:
    """For each (protein, concept) pair, its best hit (highest bit score) among the proteins that
    carry the concept (``carriers[concept]``): ``(homolog, identity, evalue)``, or Nones when no
    such hit was found."""
    by_query = dict(list(hits.groupby("query", sort=False)))
    out: list[tuple[str | None, float | None, float | None]] = []
    for protein, concept in pairs:
        g = by_query.get(protein)
        if g is not None:
            g = g[g["target"].isin(carriers.get(concept, set()))]
        if g is None or g.empty:
            out.append((None, None, None))
            continue
        top = g.iloc[int(np.argmax(g["bits"].to_numpy()))]
        out.append((str(top["target"]), float(top["identity"]), float(top["evalue"])))
    return out
