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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from plmsae.analysis import sequence_concepts
from plmsae.analysis.activations import Encoder, triples
from plmsae.analysis.assocdir import RESIDUE_COLUMNS
from plmsae.analysis.sequence_concepts import SequenceConcepts

#: residue concepts: concept id -> protein id -> [(start, end)] 0-based half-open intervals
Intervals = dict[str, dict[str, list[tuple[int, int]]]]


def concept_type(concept: str) -> str:
    return concept.split(":", 1)[0]


@dataclass
class ResidueLayout:
    """Token-level indicator matrices for a batch of proteins (rows = residues, concatenated)."""

    token_concept: sp.csr_matrix  # [T, n_concepts] 0/1
    token_instance: sp.csr_matrix  # [T, n_instances] 0/1 (multi-residue concepts' instances)
    token_type: sp.csr_matrix  # [T, n_types] 0/1: residue's protein carries that type
    instance_concept: np.ndarray  # [n_instances] concept of each token_instance column
    single: np.ndarray  # [n_concepts] bool: single-residue concept (an instance = a residue)


def layout(
    proteins: list[str],
    lengths: list[int],
    residue_concepts: dict[str, dict[str, list]],
    concepts: list[str],
    types: list[str],
) -> tuple[ResidueLayout, np.ndarray]:
    """Indicator matrices for proteins (in this order, residues concatenated) and the concept
    index of every instance (instances numbered in order of appearance) from interval lists."""
    c_index = {c: i for i, c in enumerate(concepts)}
    t_index = {t: i for i, t in enumerate(types)}
    type_index = np.array([t_index[concept_type(c)] for c in concepts], dtype=np.int64)

    def instances(pid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _interval_arrays(pid, concepts, residue_concepts, c_index)

    single = np.array([_all_single(residue_concepts[c]) for c in concepts], dtype=bool)
    return layout_instances(
        proteins, lengths, instances, type_index, len(concepts), len(types), single
    )


def _interval_arrays(
    pid: str, names: list[str], intervals: Intervals, index: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concept index, start, end) of the intervals of ``pid`` for concepts ``names``."""
    cidx: list[int] = []
    bounds: list[tuple[int, int]] = []
    for c in names:
        iv = intervals[c].get(pid, ())
        cidx.extend([index[c]] * len(iv))
        bounds.extend((int(s), int(e)) for s, e in iv)
    b = np.asarray(bounds, dtype=np.int64).reshape(-1, 2)
    return np.asarray(cidx, dtype=np.int64), b[:, 0], b[:, 1]


def layout_instances(
    proteins: list[str],
    lengths: list[int],
    instances: Callable[[str], tuple[np.ndarray, np.ndarray, np.ndarray]],
    type_index: np.ndarray,
    n_concepts: int,
    n_types: int,
    single: np.ndarray | None = None,
) -> tuple[ResidueLayout, np.ndarray]:
    """:func:`layout` from a function giving each protein's instances as arrays (concept index,
    start, end; 0-based half-open): vectorised per protein, so that concepts with an instance on
    every residue (amino-acid identity) stay cheap. Instances of ``single`` (single-residue)
    concepts get no column in ``token_instance``: an instance found is a residue active there.
    Returns the layout and the concept of every instance (all of them, in order)."""
    single = np.zeros(n_concepts, bool) if single is None else np.asarray(single, bool)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cr", "cc", "ir", "ic", "tr", "tc")}
    inst_concept: list[np.ndarray] = []
    multi_concept: list[np.ndarray] = []
    n_inst = 0
    for p, pid in enumerate(proteins):
        off, L = int(offsets[p]), int(lengths[p])
        cidx, start, end = instances(pid)
        start, end = np.maximum(start, 0), np.minimum(end, L)
        keep = end > start
        cidx, start, end = cidx[keep], start[keep], end[keep]
        if not len(cidx):
            continue
        size = end - start
        which = np.repeat(np.arange(len(cidx)), size)
        within = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        rows = off + start[which] + within
        parts["cr"].append(rows)
        parts["cc"].append(cidx[which])
        multi = ~single[cidx]
        renum = np.cumsum(multi) - 1  # column of each multi-residue instance
        on = multi[which]
        parts["ir"].append(rows[on])
        parts["ic"].append(n_inst + renum[which[on]])
        inst_concept.append(cidx)
        multi_concept.append(cidx[multi])
        n_inst += int(multi.sum())
        for t in np.unique(type_index[cidx]):
            parts["tr"].append(np.arange(off, off + L))
            parts["tc"].append(np.full(L, t))
    T = int(offsets[-1])

    def mat(r: str, c: str, n: int) -> sp.csr_matrix:
        rr = np.concatenate(parts[r]) if parts[r] else np.zeros(0, np.int64)
        cc = np.concatenate(parts[c]) if parts[c] else np.zeros(0, np.int64)
        m = sp.csr_matrix((np.ones(len(rr), np.int64), (rr, cc)), shape=(T, n))
        m.data[:] = 1  # overlapping instances of one concept count once per residue
        return m

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)

    lay = ResidueLayout(
        mat("cr", "cc", n_concepts),
        mat("ir", "ic", n_inst),
        mat("tr", "tc", n_types),
        cat(multi_concept),
        single,
    )
    return lay, cat(inst_concept)


def residue_counts(
    z,
    lay: ResidueLayout,
    inst_concept: np.ndarray,
    cutoffs: np.ndarray,
    n_concepts: int,
) -> dict[str, np.ndarray]:
    """Counts for one batch. z: [T, F] activations (numpy or torch, dense) or a TopK SAE's
    ``(values, indices)`` pair; cutoffs: [n_thresholds, F] (absolute, >= 0); ``inst_concept``:
    the concept of every instance of the batch (from the layout; the counts of multi-residue
    instances come from ``lay.token_instance``).

    Returns ``tp`` [n_thr, F, n_concepts] (active residues inside the concept), ``active``
    [n_thr, F, n_types] (active residues in proteins of each type) and ``found``
    [n_thr, F, n_concepts] (instances with at least one active residue; for single-residue
    concepts the same as ``tp``). Works on the non-zero codes only (a residue is active when its
    code is > the cutoff >= 0), so a TopK SAE costs k entries per residue, not F."""
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    n_thr, n_feat = cutoffs.shape
    n_tok = lay.token_concept.shape[0]
    feat, tok, vals = _feature_major(z, n_feat)
    # level of each entry = how many cutoffs it is above (cutoffs grow with the threshold), so
    # that one sparse product per indicator matrix counts every threshold at once: row
    # f * n_thr + (level - 1) of ``b`` holds the residues where feature f reaches that level
    seg = np.bincount(feat, minlength=n_feat)
    level = np.zeros(len(vals), dtype=np.int64)
    for cut in cutoffs:
        level += vals > np.repeat(cut, seg)
    on = level > 0
    b = sp.csr_matrix(
        (np.ones(int(on.sum()), np.int64), (feat[on] * n_thr + level[on] - 1, tok[on])),
        shape=(n_feat * n_thr, n_tok),
    )

    def at_least(m: sp.spmatrix) -> np.ndarray:
        """[n_thr, F, n]: counts at level > t, from counts per exact level [F * n_thr, n]."""
        d = np.asarray(m.toarray()).reshape(n_feat, n_thr, -1)
        return np.flip(np.cumsum(np.flip(d, axis=1), axis=1), axis=1).transpose(1, 0, 2)

    tp = at_least(b @ lay.token_concept)
    active = at_least(b @ lay.token_type)
    inst_to_concept = sp.csr_matrix(
        (
            np.ones(len(lay.instance_concept), np.int64),
            (np.arange(len(lay.instance_concept)), lay.instance_concept),
        ),
        shape=(len(lay.instance_concept), n_concepts),
    )
    hit = at_least(b @ lay.token_instance) > 0  # [n_thr, F, n_instances]
    found = (hit.reshape(n_thr * n_feat, -1).astype(np.int64) @ inst_to_concept).reshape(
        n_thr, n_feat, n_concepts
    )
    found[:, :, lay.single] = tp[:, :, lay.single]
    return {"tp": tp, "active": active, "found": np.ascontiguousarray(found)}


def _feature_major(z, n_feat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(feature, residue, value) of the codes that can be non-zero, sorted by feature."""
    if isinstance(z, np.ndarray):
        z = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    if isinstance(z, tuple):  # TopK pair: k entries per residue, sort them
        rows, cols, vals = (t.numpy() for t in triples(z, n_feat))
        order = np.argsort(cols, kind="stable")
        return cols[order].astype(np.int64), rows[order].astype(np.int64), vals[order]
    zt = z.float().T  # dense: nonzero of the transpose comes out sorted by feature
    f, r = zt.nonzero(as_tuple=True)
    return f.numpy().astype(np.int64), r.numpy().astype(np.int64), zt[f, r].numpy()


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
    """The residue concepts that are scored, in order: UniProt ones (those with >=
    ``min_concept`` proteins, sorted), then the built-in sequence concepts asked for.

    ``names`` [C] concept ids; ``types`` the annotation types among them (sorted);
    ``type_index`` [C] index of each concept's type in ``types``; ``single_residue`` [C] bool,
    True when every instance is one residue long (sites: F1 with residue recall, InterPLM);
    ``builtin``: the built-in concepts' source (:class:`.sequence_concepts.SequenceConcepts`)."""

    intervals: Intervals
    names: list[str]
    types: list[str]
    type_index: np.ndarray
    single_residue: np.ndarray
    builtin: SequenceConcepts | None = None

    @classmethod
    def select(
        cls,
        intervals: Intervals,
        ids: Iterable[str],
        min_concept: int,
        builtin: SequenceConcepts | None = None,
        builtin_names: Iterable[str] = (),
    ) -> ResidueConcepts:
        """UniProt concepts of ``intervals`` with >= ``min_concept`` proteins among ``ids``,
        then ``builtin_names`` (already filtered by the caller) computed by ``builtin``."""
        idset = set(ids)
        names = sorted(
            c for c, by in intervals.items() if sum(p in idset for p in by) >= min_concept
        )
        single = [_all_single(intervals[c]) for c in names]
        extra = [c for c in builtin_names if c not in intervals] if builtin is not None else []
        names += extra
        single += [sequence_concepts.single_residue(c) for c in extra]
        types = sorted({concept_type(c) for c in names})
        type_index = np.array([types.index(concept_type(c)) for c in names], dtype=np.int64)
        return cls(intervals, names, types, type_index, np.array(single, bool), builtin)

    def carriers(self, ids: Iterable[str]) -> list[str]:
        """The proteins of ``ids`` (in that order) with at least one of the concepts."""
        uniprot = [c for c in self.names if c in self.intervals]
        has = self.builtin is not None and self._builtin_map() is not None
        seqs = self.builtin.sequences if has and self.builtin is not None else {}
        return [p for p in ids if p in seqs or any(p in self.intervals[c] for c in uniprot)]

    def _builtin_map(self) -> np.ndarray | None:
        """Index in ``names`` of each built-in concept of ``builtin.names`` (-1: not scored)."""
        if self.builtin is None:
            return None
        where = {c: i for i, c in enumerate(self.names)}
        m = np.array([where.get(c, -1) for c in self.builtin.names], dtype=np.int64)
        return m if (m >= 0).any() else None

    def instances(self, pid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index into ``names``, start, end) of every instance on protein ``pid``."""
        index = {c: i for i, c in enumerate(self.names)}
        uniprot = [c for c in self.names if c in self.intervals]
        cidx, start, end = _interval_arrays(pid, uniprot, self.intervals, index)
        bmap = self._builtin_map()
        if bmap is None or self.builtin is None:
            return cidx, start, end
        bc, bs, be = self.builtin.instances(pid)
        mapped = bmap[bc]
        keep = mapped >= 0
        return (
            np.concatenate([cidx, mapped[keep]]),
            np.concatenate([start, bs[keep]]),
            np.concatenate([end, be[keep]]),
        )

    def layout(self, proteins: list[str], lengths: list[int]) -> tuple[ResidueLayout, np.ndarray]:
        """:func:`layout_instances` of these concepts for a batch of proteins."""
        return layout_instances(
            proteins,
            lengths,
            self.instances,
            self.type_index,
            len(self.names),
            len(self.types),
            self.single_residue,
        )


def _all_single(by_protein: dict[str, list]) -> bool:
    """Whether every interval of a concept is one residue long."""
    for iv in by_protein.values():
        b = np.asarray(iv, dtype=np.int64).reshape(-1, 2)
        if len(b) and not (b[:, 1] - b[:, 0] == 1).all():
            return False
    return True


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
    for name, (enc, _) in encoders.items():
        counts.add(name, residue_counts(enc(x), lay, inst, cutoffs[name], len(concepts.names)))
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
