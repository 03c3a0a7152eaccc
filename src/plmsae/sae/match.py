"""Matching features across two SAEs by decoder cosine: which features of one SAE the other also
learned (layers, widths, seeds).

For SAEs A and B on the same model space, each feature of A is matched to the feature of B whose
decoder direction is most similar (cosine of the unit decoder rows); a feature is *shared* when
that best cosine reaches ``threshold`` (0.7 by default, the usual bar in SAE universality
studies). Mutual nearest neighbours and a one-to-one assignment (Hungarian, scipy's
``linear_sum_assignment``, for widths up to :data:`MAX_ASSIGNMENT`) are reported too. The
cosines are computed in blocks, so two SAEs of 20,000+ features fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plmsae._util import InputError
from plmsae.sae.checkpoint import WEIGHTS_FILE, read_sae_config

#: largest d_sae_a * d_sae_b for which the one-to-one assignment is computed
MAX_ASSIGNMENT = 8192 * 8192
BLOCK = 2048


def decoder_directions(sae_dir: str | Path) -> np.ndarray:
    """Unit decoder rows ``float32 [d_sae, d_out]`` of a checkpoint (read from its safetensors,
    without building the model)."""
    from safetensors import safe_open

    read_sae_config(sae_dir)  # a clear error for a directory that is not a checkpoint
    with safe_open(str(Path(sae_dir) / WEIGHTS_FILE), framework="pt") as fh:
        w = fh.get_tensor("W_dec").float().numpy()
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return (w / np.maximum(norms, 1e-12)).astype(np.float32)


def _blocks(a: np.ndarray, b: np.ndarray, block: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(a), block):
        yield start, a[start : start + block] @ b.T


def best_matches(a: np.ndarray, b: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``: the index of the most similar row of ``b`` and that cosine."""
    idx = np.empty(len(a), np.int64)
    cos = np.empty(len(a), np.float32)
    for start, sims in _blocks(a, b, block):
        j = sims.argmax(axis=1)
        idx[start : start + len(j)] = j
        cos[start : start + len(j)] = sims[np.arange(len(j)), j]
    return idx, cos


@dataclass
class MatchResult:
    """Features of SAE ``a`` matched to SAE ``b`` by decoder cosine.

    ``best_b``/``cos_ab``: per feature of a, its best feature of b and the cosine (and the
    reverse); ``shared_a``: fraction of a's features whose best cosine reaches ``threshold``;
    ``mutual``: pairs that are each other's best match with cosine >= threshold;
    ``assignment_shared``: fraction of a's features matched one-to-one at >= threshold (None
    when too large to assign)."""

    a: str
    b: str
    threshold: float
    n_a: int
    n_b: int
    best_b: np.ndarray
    cos_ab: np.ndarray
    best_a: np.ndarray
    cos_ba: np.ndarray
    assignment_shared: float | None = None

    @property
    def shared_a(self) -> float:
        return float((self.cos_ab >= self.threshold).mean()) if self.n_a else 0.0

    @property
    def shared_b(self) -> float:
        return float((self.cos_ba >= self.threshold).mean()) if self.n_b else 0.0

    @property
    def mutual(self) -> int:
        i = np.arange(self.n_a)
        ok = (self.best_a[self.best_b] == i) & (self.cos_ab >= self.threshold)
        return int(ok.sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "threshold": self.threshold,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "shared_a": self.shared_a,
            "shared_b": self.shared_b,
            "mutual": self.mutual,
            "mutual_fraction": self.mutual / max(1, min(self.n_a, self.n_b)),
            "assignment_shared": self.assignment_shared,
            "median_cos_ab": float(np.median(self.cos_ab)) if self.n_a else None,
            "median_cos_ba": float(np.median(self.cos_ba)) if self.n_b else None,
        }


def match_decoders(
    a: np.ndarray, b: np.ndarray, threshold: float = 0.7, names: tuple[str, str] = ("a", "b")
) -> MatchResult:
    """Match the unit decoder rows ``a`` to ``b`` (see :class:`MatchResult`)."""
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"the SAEs' decoders have different widths ({a.shape[1]} and {b.shape[1]}): they "
            "write to different spaces and cannot be matched.",
            fix="match SAEs trained on the same model (any layer, width or seed).",
        )
    best_b, cos_ab = best_matches(a, b)
    best_a, cos_ba = best_matches(b, a)
    result = MatchResult(
        names[0], names[1], threshold, len(a), len(b), best_b, cos_ab, best_a, cos_ba
    )
    if len(a) * len(b) <= MAX_ASSIGNMENT and len(a) and len(b):
        from scipy.optimize import linear_sum_assignment

        sims = a @ b.T
        rows, cols = linear_sum_assignment(sims, maximize=True)
        result.assignment_shared = float((sims[rows, cols] >= threshold).sum() / len(a))
    return result


def match_saes(sae_a: str | Path, sae_b: str | Path, threshold: float = 0.7) -> MatchResult:
    """Match the features of two SAE checkpoints by decoder cosine."""
    return match_decoders(
        decoder_directions(sae_a),
        decoder_directions(sae_b),
        threshold,
        (str(sae_a), str(sae_b)),
    )


def match_all(sae_dirs: list[Path], threshold: float = 0.7) -> list[MatchResult]:
    """Every pair of the SAEs (in the order given), matched by decoder cosine."""
    dirs = [Path(d) for d in sae_dirs]
    if len(dirs) < 2:
        raise InputError(
            f"matching needs two SAEs or more; got {len(dirs)}.",
            fix="pass two run directories or SAE checkpoint directories with --match.",
        )
    units = {d: decoder_directions(d) for d in dirs}
    return [
        match_decoders(units[a], units[b], threshold, (str(a), str(b)))
        for i, a in enumerate(dirs)
        for b in dirs[i + 1 :]
    ]
