"""Residue-level concepts (UniProt features: transmembrane, signal peptide, sites, domains,
motifs), scored per residue as in InterPLM (Simon & Zou 2025).

For feature f, threshold t (fraction of the feature's max over residues) and concept c:
- precision = residues in c where f > t  /  residues where f > t,
- recall = residues in c where f > t  /  residues in c,
- domain recall = instances of c (intervals) with at least one residue where f > t  /  instances,
- F1 = harmonic mean of precision and domain recall for concepts with multi-residue instances
  (domains, motifs, regions, transmembrane ...) and of precision and residue recall for
  single-residue concepts (sites), InterPLM's rule.
Population: the residues of proteins that carry the concept's annotation type (the part of the
concept id before ``:``, e.g. all proteins with any ``Binding site`` for ``Binding site:ATP``),
so a protein that was never annotated for binding sites does not count its residues as
negatives. The threshold is chosen per pair on the selection split (best F1), metrics are
reported on the report split. Residue-level SAEs only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from plmsae.analysis.activations import Encoder, dense_codes
from plmsae.analysis.assocdir import RESIDUE_COLUMNS

#: residue concepts: concept id -> protein id -> [(start, end)] 0-based half-open intervals
Intervals = dict[str, dict[str, list[tuple[int, int]]]]


def concept_type(concept: str) -> str:
    return concept.split(":", 1)[0]


@dataclass
class ResidueLayout:
    """Token-level indicator matrices for a batch of proteins (rows = residues, concatenated)."""

    token_concept: sp.csr_matrix  # [T, n_concepts] 0/1
    token_instance: sp.csr_matrix  # [T, n_instances] 0/1
    token_type: sp.csr_matrix  # [T, n_types] 0/1: residue's protein carries that type


def layout(
    proteins: list[str],
    lengths: list[int],
    residue_concepts: dict[str, dict[str, list]],
    concepts: list[str],
    types: list[str],
) -> tuple[ResidueLayout, np.ndarray]:
    """Indicator matrices for proteins (in this order, residues concatenated) and the concept
    index of every instance (instances numbered in order of appearance)."""
    c_index = {c: i for i, c in enumerate(concepts)}
    t_index = {t: i for i, t in enumerate(types)}
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tc_r: list[np.ndarray] = []
    tc_c: list[np.ndarray] = []
    ti_r: list[np.ndarray] = []
    ti_c: list[np.ndarray] = []
    tt_r: list[np.ndarray] = []
    tt_c: list[np.ndarray] = []
    inst_concept: list[int] = []
    for p, pid in enumerate(proteins):
        off, L = int(offsets[p]), int(lengths[p])
        p_types = set()
        for c in concepts:
            for start, end in residue_concepts[c].get(pid, ()):
                start, end = max(0, int(start)), min(L, int(end))
                if end <= start:
                    continue
                rows = np.arange(off + start, off + end)
                tc_r.append(rows)
                tc_c.append(np.full(len(rows), c_index[c]))
                ti_r.append(rows)
                ti_c.append(np.full(len(rows), len(inst_concept)))
                inst_concept.append(c_index[c])
                p_types.add(concept_type(c))
        for t in p_types:
            tt_r.append(np.arange(off, off + L))
            tt_c.append(np.full(L, t_index[t]))
    T = int(offsets[-1])

    def mat(r, c, n):
        r = np.concatenate(r) if r else np.zeros(0, np.int64)
        c = np.concatenate(c) if c else np.zeros(0, np.int64)
        m = sp.csr_matrix((np.ones(len(r), np.int64), (r, c)), shape=(T, n))
        m.data[:] = 1  # overlapping instances of one concept count once per residue
        return m

    lay = ResidueLayout(
        mat(tc_r, tc_c, len(concepts)),
        mat(ti_r, ti_c, len(inst_concept)),
        mat(tt_r, tt_c, len(types)),
    )
    return lay, np.array(inst_concept, dtype=np.int64)


def residue_counts(
    z: np.ndarray | torch.Tensor,
    lay: ResidueLayout,
    inst_concept: np.ndarray,
    cutoffs: np.ndarray,
    n_concepts: int,
) -> dict[str, np.ndarray]:
    """Counts for one batch. z: [T, F] activations; cutoffs: [n_thresholds, F] (absolute).

    Returns ``tp`` [n_thr, F, n_concepts] (active residues inside the concept), ``active``
    [n_thr, F, n_types] (active residues in proteins of each type) and ``found``
    [n_thr, F, n_concepts] (instances with at least one active residue)."""
    z = z.numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
    inst_to_concept = sp.csr_matrix(
        (np.ones(len(inst_concept), np.int64), (np.arange(len(inst_concept)), inst_concept)),
        shape=(len(inst_concept), n_concepts),
    )
    tp, active, found = [], [], []
    for cut in np.asarray(cutoffs):
        b = sp.csr_matrix(z > cut[None, :], dtype=np.int64).T.tocsr()  # [F, T]
        tp.append((b @ lay.token_concept).toarray())
        active.append((b @ lay.token_type).toarray())
        hit = b @ lay.token_instance
        hit.data[:] = 1
        found.append((hit @ inst_to_concept).toarray())
    return {"tp": np.stack(tp), "active": np.stack(active), "found": np.stack(found)}


def residue_scores(
    sel: dict,
    rep: dict,
    *,
    n_pos_sel,
    n_pos_rep,
    n_inst_sel,
    n_inst_rep,
    concept_types: np.ndarray,
    single_residue: np.ndarray,
    thresholds,
) -> dict[str, np.ndarray]:
    """Choose each pair's threshold by F1 on the selection counts ``sel`` and report the metrics
    of the report counts ``rep`` (both as returned by :func:`residue_counts`, summed over
    batches). n_pos_*: residues per concept; n_inst_*: instances per concept; concept_types:
    [n_concepts] type index; single_residue: [n_concepts] bool (F1 with residue recall).
    Returns flat arrays over pairs with a reporting true positive."""
    thresholds = np.asarray(thresholds, dtype=np.float64)

    def metrics(c, n_pos, n_inst):
        tp = c["tp"].astype(np.float64)
        act = c["active"][:, :, concept_types].astype(np.float64)  # [T, F, C]
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.where(act > 0, tp / act, 0.0)
            rec = np.where(n_pos > 0, tp / n_pos, 0.0)
            drec = np.where(n_inst > 0, c["found"] / n_inst, 0.0)
            r = np.where(single_residue[None, None, :], rec, drec)
            f1 = np.where(prec + r > 0, 2 * prec * r / (prec + r), 0.0)
        return prec, rec, drec, f1

    _, _, _, f1_sel = metrics(sel, np.asarray(n_pos_sel), np.asarray(n_inst_sel))
    best = np.argmax(f1_sel, axis=0)  # [F, C]; ties -> the lower threshold
    prec, rec, drec, f1 = metrics(rep, np.asarray(n_pos_rep), np.asarray(n_inst_rep))

    def pick(a):
        return np.take_along_axis(a, best[None], axis=0)[0]

    tp = pick(rep["tp"])
    f_idx, c_idx = np.nonzero((tp > 0) & (pick(f1_sel) > 0))
    return {
        "feature": f_idx,
        "concept": c_idx,
        "threshold": thresholds[best[f_idx, c_idx]],
        "n_true_positive": tp[f_idx, c_idx],
        "n_active": pick(rep["active"][:, :, concept_types])[f_idx, c_idx],
        "n_residues": np.asarray(n_pos_rep)[c_idx],
        "n_instances": np.asarray(n_inst_rep)[c_idx],
        "precision": pick(prec)[f_idx, c_idx],
        "recall": pick(rec)[f_idx, c_idx],
        "domain_recall": pick(drec)[f_idx, c_idx],
        "f1": pick(f1)[f_idx, c_idx],
        "f1_select": pick(f1_sel)[f_idx, c_idx],
    }


@dataclass
class ResidueConcepts:
    """The residue concepts that are scored (those with >= ``min_concept`` proteins), in order.

    ``names`` [C] concept ids (sorted); ``types`` the annotation types among them (sorted);
    ``type_index`` [C] index of each concept's type in ``types``; ``single_residue`` [C] bool,
    True when every instance is one residue long (sites: F1 with residue recall, InterPLM)."""

    intervals: Intervals
    names: list[str]
    types: list[str]
    type_index: np.ndarray
    single_residue: np.ndarray

    @classmethod
    def select(cls, intervals: Intervals, ids: Iterable[str], min_concept: int) -> ResidueConcepts:
        idset = set(ids)
        names = sorted(
            c for c, by in intervals.items() if sum(p in idset for p in by) >= min_concept
        )
        types = sorted({concept_type(c) for c in names})
        type_index = np.array([types.index(concept_type(c)) for c in names])
        single = np.array(
            [all(e - s == 1 for iv in intervals[c].values() for s, e in iv) for c in names]
        )
        return cls(intervals, names, types, type_index, single)

    def carriers(self, ids: Iterable[str]) -> list[str]:
        """The proteins of ``ids`` (in that order) with at least one of the concepts."""
        return [p for p in ids if any(p in self.intervals[c] for c in self.names)]

    def layout(self, proteins: list[str], lengths: list[int]) -> tuple[ResidueLayout, np.ndarray]:
        """:func:`layout` of these concepts for a batch of proteins."""
        return layout(proteins, lengths, self.intervals, self.names, self.types)


@dataclass
class ResidueCounts:
    """Counts of one split, summed over its proteins: per source the :func:`residue_counts`
    arrays, and per concept its residues (``n_pos`` [C]) and instances (``n_inst`` [C])."""

    n_pos: np.ndarray
    n_inst: np.ndarray
    by_source: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def add(self, source: str, counts: dict[str, np.ndarray]) -> None:
        old = self.by_source.get(source)
        self.by_source[source] = counts if old is None else {k: old[k] + counts[k] for k in counts}


@torch.no_grad()
def count_residues(
    store,
    encoders: dict[str, tuple[Encoder, int]],
    proteins: list[str],
    concepts: ResidueConcepts,
    cutoffs: dict[str, np.ndarray],
    *,
    layer: int | None,
    max_tokens: int = 4096,
) -> ResidueCounts:
    """Stream ``proteins`` from the store once (batches of whole proteins, >= ``max_tokens``
    residues each but the last) and count, for every encoder, residues above each cutoff
    (``cutoffs[name]``: [n_thresholds, F] absolute) inside each concept."""
    n = len(concepts.names)
    counts = ResidueCounts(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))
    lengths = dict(zip(store.ids, store.lengths.tolist()))
    batch: list[tuple[str, np.ndarray]] = []
    total = 0
    for pid, x in store.iter_residues(layer=layer, ids=proteins):
        batch.append((pid, np.asarray(x, dtype=np.float32)))
        total += lengths[pid]
        if total >= max_tokens:
            _count_batch(batch, encoders, concepts, cutoffs, counts)
            batch, total = [], 0
    if batch:
        _count_batch(batch, encoders, concepts, cutoffs, counts)
    return counts


def _count_batch(
    batch: list[tuple[str, np.ndarray]],
    encoders: dict[str, tuple[Encoder, int]],
    concepts: ResidueConcepts,
    cutoffs: dict[str, np.ndarray],
    counts: ResidueCounts,
) -> None:
    lay, inst = concepts.layout([b[0] for b in batch], [len(b[1]) for b in batch])
    x = torch.from_numpy(np.concatenate([b[1] for b in batch]))
    for name, (enc, width) in encoders.items():
        z = dense_codes(enc(x), width)
        counts.add(name, residue_counts(z, lay, inst, cutoffs[name], len(concepts.names)))
    counts.n_pos[:] += np.asarray(lay.token_concept.sum(axis=0)).ravel()
    counts.n_inst[:] += np.bincount(inst, minlength=len(concepts.names))


def score_table(
    sel: ResidueCounts,
    rep: ResidueCounts,
    concepts: ResidueConcepts,
    thresholds,
    sources: Iterable[str],
) -> pd.DataFrame:
    """``residue_associations.parquet`` rows (RESIDUE_COLUMNS) of every source counted on both
    the selection split ``sel`` and the report split ``rep`` (:func:`residue_scores`)."""
    tables = []
    for name in sources:
        if name not in sel.by_source or name not in rep.by_source:
            continue
        res = residue_scores(
            sel.by_source[name],
            rep.by_source[name],
            n_pos_sel=sel.n_pos,
            n_pos_rep=rep.n_pos,
            n_inst_sel=sel.n_inst,
            n_inst_rep=rep.n_inst,
            concept_types=concepts.type_index,
            single_residue=concepts.single_residue,
            thresholds=thresholds,
        )
        df = pd.DataFrame({k: v for k, v in res.items() if k not in ("concept", "f1_select")})
        df.insert(0, "source", name)
        df.insert(2, "concept", np.array(concepts.names, dtype=object)[res["concept"]])
        df.insert(3, "category", "residue")
        df["f1_validation"] = res["f1_select"]
        df["split"] = "test"
        tables.append(df[RESIDUE_COLUMNS])
    return pd.concat(tables, ignore_index=True) if tables else empty_table()


def empty_table() -> pd.DataFrame:
    """A residue association table without rows."""
    return pd.DataFrame(columns=RESIDUE_COLUMNS)
