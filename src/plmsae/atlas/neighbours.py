"""Neighbours and families of features in an atlas.

- **By decoder cosine**: the features whose unit decoder directions are most similar (they write
  nearly the same direction into the model).
- **By co-activation**: the features active on the most similar sets of proteins (Jaccard index
  of the proteins where each is active).
- **Families**: features whose top concept is the same, grouped (the index lists them,
  collapsible), e.g. eight features all labelled "ATP binding".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

#: neighbours listed per feature and measure
N_NEIGHBOURS = 8
BLOCK = 1024


def _top(sims: np.ndarray, own: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per row: the k largest values (excluding column ``own[row]``), best first."""
    out = []
    sims = sims.copy()
    sims[np.arange(len(own)), own] = -np.inf
    k = min(k, sims.shape[1] - 1)
    if k <= 0:
        return [[] for _ in own]
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    for r in range(len(own)):
        cols = part[r][np.argsort(-sims[r, part[r]], kind="stable")]
        out.append([(int(c), float(sims[r, c])) for c in cols if np.isfinite(sims[r, c])])
    return out


def decoder_neighbours(
    directions: np.ndarray, features: list[int], k: int = N_NEIGHBOURS
) -> dict[int, list[tuple[int, float]]]:
    """For each of ``features``: the ``k`` features of largest decoder cosine (``directions``:
    unit decoder rows of every feature)."""
    out: dict[int, list[tuple[int, float]]] = {}
    feats = np.asarray(features, dtype=np.int64)
    for start in range(0, len(feats), BLOCK):
        block = feats[start : start + BLOCK]
        sims = directions[block] @ directions.T
        for f, row in zip(block.tolist(), _top(sims, block, k)):
            out[f] = row
    return out


def coactivation_neighbours(
    activations: Any, features: list[int], k: int = N_NEIGHBOURS, min_jaccard: float = 0.05
) -> dict[int, list[tuple[int, float]]]:
    """For each of ``features``: the ``k`` features whose sets of active proteins overlap it
    most (Jaccard index >= ``min_jaccard``). ``activations``: proteins x features, sparse."""
    active = (activations.tocsc() > 0).astype(np.float32)
    sizes = np.asarray(active.sum(axis=0)).ravel()
    out: dict[int, list[tuple[int, float]]] = {}
    feats = np.asarray(features, dtype=np.int64)
    for start in range(0, len(feats), BLOCK):
        block = feats[start : start + BLOCK]
        inter = (active[:, block].T @ active).toarray()
        union = sizes[block][:, None] + sizes[None, :] - inter
        jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        for f, row in zip(block.tolist(), _top(jac, block, k)):
            out[f] = [(g, j) for g, j in row if j >= min_jaccard]
    return out


def families(rows: list[dict], min_size: int = 2) -> list[dict]:
    """Features grouped by their top concept (``row["concepts"][0]``): ``{concept, name,
    category, features: [{feature, label, page}]}``, largest family first."""
    groups: dict[str, list[dict]] = defaultdict(list)
    names: dict[str, tuple[str, str]] = {}
    for r in rows:
        concepts = r.get("concepts") or []
        if not concepts:
            continue
        concept, name, category = (str(x) for x in concepts[0][:3])
        groups[concept].append(
            {"feature": r["feature"], "label": r.get("label", ""), "page": r.get("page", False)}
        )
        names[concept] = (name, category)
    out = [
        {"concept": c, "name": names[c][0], "category": names[c][1], "features": members}
        for c, members in groups.items()
        if len(members) >= min_size
    ]
    out.sort(key=lambda g: (-len(g["features"]), g["name"]))
    return out
