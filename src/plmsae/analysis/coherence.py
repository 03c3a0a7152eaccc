"""GO semantic coherence of each feature's associated terms (the analysis of Gujral et al.,
PNAS 2025): are the GO terms one feature is associated with related to each other more closely
than terms picked at random?

A feature associated with a term is associated with its ancestors too (annotations are
propagated), and a term and its own ancestor are trivially "related"; so each feature's
associated terms are first reduced to the most specific ones (a term that is an ancestor of
another of its terms is dropped). For every feature with at least one pair of such terms in the
same namespace (associated: q < 0.05 and precision >= 0.5 on test), over all such pairs:
- **LCA depth**: the depth of the deepest common ancestor of the two terms (over ``is_a`` and
  ``part_of``; depth = the longest path from the namespace root, goatools' ``depth``). Deeper =
  the two terms share a more specific ancestor = more related;
- **path length**: the shortest path between the two terms in the undirected ``is_a``/``part_of``
  graph (networkx graph built from the obonet ontology; the breadth-first searches run in
  ``scipy.sparse.csgraph``). Shorter = more related.
Each feature's mean over its pairs is compared with size-matched random term sets: per draw, as
many terms per namespace as the feature has, drawn without replacement from the GO terms that
were tested in that namespace. Per source the summary gives the medians over features
(observed and random), the fraction of features more coherent than the median of their own
random draws, and a one-sided Wilcoxon signed-rank test of observed vs random-mean per feature.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from plmsae.analysis.assocdir import PRECISION_MIN, Q_MAX

if TYPE_CHECKING:
    from plmsae.data.ontology import Ontology

DRAWS = 20
_BFS_CHUNK = 256


def term_depths(ontology: Ontology, terms: list[str]) -> dict[str, int]:
    """Longest ``is_a``/``part_of`` path from a root to each term and to its ancestors."""
    depth: dict[str, int] = {}

    def get(t: str) -> int:
        if t not in depth:
            parents = ontology.parents(t)
            depth[t] = 1 + max(get(p) for p in parents) if parents else 0
        return depth[t]

    for t in terms:
        for a in ontology.ancestors(t):
            get(a)
    return depth


def relation_graph(ontology: Ontology):
    """The undirected ``is_a``/``part_of`` graph of the live terms (networkx)."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(ontology.terms)
    g.add_edges_from((t, p) for t in ontology.terms for p in ontology.parents(t))
    return g


#: "no value" in the geometry matrices: a pair across namespaces, or terms not connected
MISSING = -1


class TermGeometry:
    """Pairwise LCA depth and path length among ``terms`` (tested GO terms), as int16 matrices
    [n_terms, n_terms] filled row block by row block; pairs across namespaces are
    :data:`MISSING`. Two bytes per pair, and no full-size temporaries: the number of tested
    terms grows with the proteins (4,377 at 100,000 of the scale benchmark's proteins)."""

    def __init__(self, ontology: Ontology, terms: list[str]):
        self.terms = list(terms)
        self.index = {t: i for i, t in enumerate(self.terms)}
        self.ancestors = {t: ontology.ancestors(t) for t in self.terms}
        self.namespace = np.array([ontology.namespace(t) for t in self.terms], dtype=object)
        self.lca = self._lca_depth(ontology)
        self.path = self._path_length(ontology)
        code = np.unique(self.namespace.astype(str), return_inverse=True)[1]
        for a in range(0, len(code), _BFS_CHUNK):
            other = code[a : a + _BFS_CHUNK, None] != code[None, :]
            self.lca[a : a + _BFS_CHUNK][other] = MISSING
            self.path[a : a + _BFS_CHUNK][other] = MISSING

    def _lca_depth(self, ontology: Ontology) -> np.ndarray:
        depth = term_depths(ontology, self.terms)
        anc = [sorted(ontology.ancestors(t)) for t in self.terms]
        universe = {a: i for i, a in enumerate(sorted({a for s in anc for a in s}))}
        member = np.zeros((len(self.terms), len(universe)), dtype=bool)
        for i, s in enumerate(anc):
            member[i, [universe[a] for a in s]] = True
        dep = np.array([depth[a] for a in universe], dtype=np.float64)
        out = np.full((len(self.terms), len(self.terms)), MISSING, dtype=np.int16)
        for i, s in enumerate(anc):
            cols = [universe[a] for a in s]
            shared = member[:, cols] * dep[cols][None, :]
            has = member[:, cols].any(axis=1)
            out[i] = np.where(has, shared.max(axis=1), MISSING)
        return out

    def _path_length(self, ontology: Ontology) -> np.ndarray:
        import networkx as nx
        from scipy.sparse.csgraph import shortest_path

        g = relation_graph(ontology)
        nodes = list(g.nodes)
        where = {t: i for i, t in enumerate(nodes)}
        adj = nx.to_scipy_sparse_array(g, nodelist=nodes, format="csr")
        idx = np.array([where[t] for t in self.terms], dtype=np.int64)
        out = np.empty((len(idx), len(idx)), dtype=np.int16)
        for s in range(0, len(idx), _BFS_CHUNK):
            d = shortest_path(adj, unweighted=True, directed=False, indices=idx[s : s + _BFS_CHUNK])
            d = d[:, idx]
            out[s : s + _BFS_CHUNK] = np.where(np.isinf(d), MISSING, d)
        return out

    def most_specific(self, terms: list[str]) -> list[str]:
        """``terms`` without those that are an ancestor of another one of them."""
        keep = set(terms)
        return [t for t in terms if not any(t in self.ancestors[u] for u in keep if u != t)]

    def set_means(self, groups: list[np.ndarray]) -> tuple[float, float, int]:
        """(mean LCA depth, mean path length, number of pairs) over the within-namespace pairs
        of several index sets (one per namespace)."""
        lca, path = [], []
        for g in groups:
            if len(g) < 2:
                continue
            i, j = np.triu_indices(len(g), k=1)
            lca.append(self.lca[g[i], g[j]])
            path.append(self.path[g[i], g[j]])
        if not lca:
            return np.nan, np.nan, 0
        lc, pa = (np.concatenate(v).astype(np.float64) for v in (lca, path))
        lc[lc == MISSING] = np.nan
        pa[pa == MISSING] = np.nan
        return float(np.nanmean(lc)), float(np.nanmean(pa)), int(len(lc))


def feature_coherence(
    geometry: TermGeometry, hits: pd.DataFrame, *, draws: int = DRAWS, seed: int = 0
) -> pd.DataFrame:
    """Per feature with >= 1 within-namespace pair of associated terms: observed mean LCA depth
    and path length, their means over ``draws`` size-matched random sets, and the share of draws
    the feature beats (deeper LCA). ``hits``: associated (feature, concept) rows, GO terms of
    ``geometry`` only."""
    by_ns: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(0, np.int64))
    for ns in dict.fromkeys(geometry.namespace):
        by_ns[ns] = np.flatnonzero(geometry.namespace == ns)
    rng = np.random.default_rng(seed)
    rows = []
    for feature, terms in hits.groupby("feature")["concept"]:
        specific = geometry.most_specific(list(dict.fromkeys(terms)))
        idx = np.array([geometry.index[t] for t in specific], dtype=np.int64)
        groups = [
            idx[geometry.namespace[idx] == ns] for ns in dict.fromkeys(geometry.namespace[idx])
        ]
        lca, path, n_pairs = geometry.set_means(groups)
        if n_pairs == 0:
            continue
        rand = np.array(
            [
                geometry.set_means(
                    [
                        rng.choice(by_ns[geometry.namespace[g[0]]], len(g), replace=False)
                        for g in groups
                    ]
                )[:2]
                for _ in range(draws)
            ]
        )
        rows.append(
            {
                "feature": int(feature),
                "n_terms": len(idx),
                "n_pairs": n_pairs,
                "lca_depth": lca,
                "lca_depth_random": float(np.nanmean(rand[:, 0])),
                "lca_depth_random_median": float(np.nanmedian(rand[:, 0])),
                "path_length": path,
                "path_length_random": float(np.nanmean(rand[:, 1])),
                "beats_random": float(np.mean(lca > rand[:, 0])),
            }
        )
    return pd.DataFrame(rows)


def _wilcoxon(x: np.ndarray, y: np.ndarray, alternative: str) -> dict[str, Any] | None:
    from scipy.stats import wilcoxon

    ok = ~(np.isnan(x) | np.isnan(y))
    d = x[ok] - y[ok]
    if len(d) < 2 or not np.any(d != 0):
        return None
    res = wilcoxon(d, alternative=alternative)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "n": int(len(d))}


def source_block(per_feature: pd.DataFrame) -> dict[str, Any]:
    """summary.json ``coherence.sources[source]`` from :func:`feature_coherence`'s table."""
    if not len(per_feature):
        return {"n_features": 0}
    f = per_feature

    def med(col: str) -> float:
        return float(np.nanmedian(f[col]))

    return {
        "n_features": int(len(f)),
        "median_terms": med("n_terms"),
        "median_lca_depth": med("lca_depth"),
        "median_lca_depth_random": med("lca_depth_random"),
        "median_path_length": med("path_length"),
        "median_path_length_random": med("path_length_random"),
        "fraction_more_coherent": float(
            np.mean(f["lca_depth"].to_numpy() > f["lca_depth_random_median"].to_numpy())
        ),
        "wilcoxon_lca_depth_greater": _wilcoxon(
            f["lca_depth"].to_numpy(), f["lca_depth_random"].to_numpy(), "greater"
        ),
        "wilcoxon_path_length_less": _wilcoxon(
            f["path_length"].to_numpy(), f["path_length_random"].to_numpy(), "less"
        ),
    }


def coherence(
    ontology: Ontology,
    assoc: pd.DataFrame,
    tested: dict[str, list[str]],
    *,
    sources: list[str] | None = None,
    draws: int = DRAWS,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``coherence`` block of summary.json. ``assoc``: associations.parquet rows (all
    sources; the associated ones suffice); ``tested``: GO category (``GO:BP`` ...) -> the terms
    that passed the filter (the random sets are drawn from these); ``sources``: the sources
    with a tested pair, in order (default: those of ``assoc``)."""
    terms = sorted({t for cat, ts in tested.items() if cat.startswith("GO:") for t in ts})
    terms = [t for t in terms if t in ontology]
    block: dict[str, Any] = {
        "note": "per feature with >= 2 associated GO terms in one namespace (its most specific "
        "terms: ancestors of its other terms dropped): mean depth of the lowest common ancestor "
        "of its term pairs (deeper = more related) and mean shortest is_a/part_of path "
        f"(shorter = more related), against size-matched random sets of tested terms ({draws} "
        "draws); one-sided Wilcoxon signed-rank tests over features",
        "draws": draws,
        "n_terms_tested": len(terms),
        "sources": {},
    }
    if len(terms) < 2:
        return block
    geometry = TermGeometry(ontology, terms)
    sig = assoc[
        (assoc["q_value"] < Q_MAX)
        & (assoc["precision"] >= PRECISION_MIN)
        & assoc["concept"].isin(geometry.index)
    ]
    for i, src in enumerate(dict.fromkeys(assoc["source"]) if sources is None else sources):
        per = feature_coherence(geometry, sig[sig["source"] == src], draws=draws, seed=seed + i)
        block["sources"][src] = source_block(per)
    return block
