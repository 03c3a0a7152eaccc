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

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


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
    tc_r, tc_c, ti_r, ti_c, inst_concept = [], [], [], [], []
    tt_r, tt_c = [], []
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
