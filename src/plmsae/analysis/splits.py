"""Homology-aware splits: cluster sequences with MMseqs2, then split whole clusters.

Thresholds are chosen on one split (``validation``) and statistics reported on another
(``test``). Near-identical proteins on both sides would let a feature that memorises a family
look like it generalises, so proteins are clustered first (``mmseqs easy-cluster``, default 30 %
identity, 80 % coverage of both sequences: ``--cov-mode 0 -c 0.8``) and every cluster goes to one
split. Without mmseqs2 the split is random per protein, with a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np

from plmsae._util import InputError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.0, 0.5, 0.5)  # the SAE is trained elsewhere: all proteins select or report


def mmseqs_available() -> bool:
    return shutil.which("mmseqs") is not None


def cluster_sequences(
    ids: list[str],
    sequences: list[str],
    *,
    min_seq_id: float = 0.3,
    coverage: float = 0.8,
    threads: int | None = None,
) -> np.ndarray:
    """Cluster labels (int64 [n], the index of each protein's cluster representative in ``ids``)
    from ``mmseqs easy-cluster --min-seq-id MIN_SEQ_ID -c COVERAGE --cov-mode 0``.

    Raises :class:`InputError` when mmseqs2 is missing or fails."""
    if not mmseqs_available():
        raise InputError(
            "mmseqs (MMseqs2) is not on PATH.",
            fix="install it (`apt-get install mmseqs2` or conda `mmseqs2`), or use "
            "--split-method random.",
        )
    if len(ids) != len(sequences):
        raise ValueError("ids and sequences differ in length")
    with tempfile.TemporaryDirectory(prefix="plmsae_mmseqs_") as tmpdir:
        tmp = Path(tmpdir)
        fasta = tmp / "in.fasta"
        with open(fasta, "w") as fh:
            for i, seq in enumerate(sequences):
                fh.write(f">p{i}\n{seq}\n")  # neutral names: no header parsing surprises
        cmd = [
            "mmseqs",
            "easy-cluster",
            str(fasta),
            str(tmp / "out"),
            str(tmp / "work"),
            "--min-seq-id",
            str(min_seq_id),
            "-c",
            str(coverage),
            "--cov-mode",
            "0",
            "--threads",
            str(threads or max(1, (os.cpu_count() or 1))),
            "-v",
            "1",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise InputError(
                f"mmseqs easy-cluster failed (exit {res.returncode}): "
                f"{(res.stderr or res.stdout).strip()[-500:]}",
                fix="check the sequences, or use --split-method random.",
            )
        labels = np.arange(len(ids), dtype=np.int64)
        with open(tmp / "out_cluster.tsv") as fh:
            for line in fh:
                rep, member = line.split()
                labels[int(member[1:])] = int(rep[1:])
    return labels


def split_clusters(clusters: np.ndarray, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> np.ndarray:
    """Assign whole clusters to ``train``/``validation``/``test``: clusters in a seeded random
    order, each to the split whose protein count is furthest below its target. Returns the split
    name of each protein (object array [n])."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise InputError(
            f"split fractions {fractions.tolist()} are not three non-negative numbers.",
            fix="give train,validation,test fractions, e.g. 0,0.5,0.5.",
        )
    fractions = fractions / fractions.sum()
    clusters = np.asarray(clusters)
    uniq, inverse, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    target = fractions * len(clusters)
    filled = np.zeros(3)
    assign = np.empty(len(uniq), dtype=np.int64)
    for c in order:
        s = int(np.argmax(np.where(fractions > 0, target - filled, -np.inf)))
        assign[c] = s
        filled[s] += sizes[c]
    return np.array(SPLITS, dtype=object)[assign[inverse]]


def make_splits(
    ids: list[str],
    sequences: list[str] | None,
    *,
    method: str = "mmseqs",
    min_seq_id: float = 0.3,
    coverage: float = 0.8,
    fractions=DEFAULT_FRACTIONS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(split [n], cluster [n], method used). ``method``: ``mmseqs`` (falls back to ``random``
    with a warning when mmseqs2 is absent or no sequences are known) or ``random``."""
    if method not in ("mmseqs", "random"):
        raise InputError(f"unknown split method {method!r}.", fix="use mmseqs or random.")
    if method == "mmseqs":
        if sequences is None or not mmseqs_available():
            why = "mmseqs2 is not installed" if sequences is not None else "no sequences are known"
            msg = (
                f"{why}: splitting proteins at random, so near-identical proteins can sit in "
                "both validation and test and associations look better than they are. Install "
                "mmseqs2 (apt-get install mmseqs2) and pass --fasta for homology-aware splits."
            )
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
            method = "random"
        else:
            clusters = cluster_sequences(ids, sequences, min_seq_id=min_seq_id, coverage=coverage)
            return split_clusters(clusters, fractions, seed), clusters, "mmseqs"
    clusters = np.arange(len(ids), dtype=np.int64)
    return split_clusters(clusters, fractions, seed), clusters, "random"
