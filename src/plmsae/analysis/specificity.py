"""How specific each feature is: the columns of ``features.parquet`` that say what kind of
feature it is before anyone reads its associations.

Per-residue profile (residue-level runs, accumulated in the activations pass, no second pass over
the store; :class:`ResidueProfile`):
- ``residue_density``: fraction of residues with activation > 0 (NaN at protein level);
- ``top_amino_acid`` / ``top_amino_acid_share``: the amino acid carrying most of the feature's
  activation mass (sum of its activations) and that share of the mass;
- ``position_mean``: mean relative position (0 = first residue, 1 = last) weighted by activation;
  ``position_bias``: "N-terminal" / "C-terminal" when at least :data:`TERMINAL_SHARE` of the mass
  lies in the first / last :data:`TERMINAL_REGION` of the chain (5 times the share of a feature
  spread evenly), else "".

From the statistics (:func:`feature_columns`): ``best_concept`` (+ ``_name``, ``_category``,
``_f1``, ``_q``) = the associated concept with the highest F1 on test over protein-level
(q < 0.05, precision >= 0.5) and residue concepts (F1 >= 0.5); ``kind``:
- "dead": never active;
- "sequence-chemistry": the best concept is a built-in sequence property (amino-acid identity,
  chain terminus, hydropathy, charge, low complexity; PROSITE motifs count as specific), or the
  feature has no associated concept and puts >= :data:`AA_SHARE` of its mass on one amino acid;
- "dense": active on at least half of the proteins;
- "specific": the rest;
and ``plain_label``, what a trivial feature does in words ("fires on every glutamine (Q)",
"N-terminal residues"; "" for specific features).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plmsae.analysis import sequence_concepts as seqc
from plmsae.analysis.activations import triples
from plmsae.analysis.assocdir import PRECISION_MIN, Q_MAX, RESIDUE_F1_MIN

TERMINAL_REGION = 0.1
TERMINAL_SHARE = 0.5
AA_SHARE = 0.8
DENSE = 0.5
EVERY_RECALL = 0.9  # "fires on every X" only when it finds at least this share of them
KINDS = ("dead", "sequence-chemistry", "dense", "specific")
PROFILE_COLUMNS = [
    "residue_density",
    "top_amino_acid",
    "top_amino_acid_share",
    "position_bias",
    "position_mean",
]
BEST_COLUMNS = [
    "best_concept",
    "best_concept_name",
    "best_concept_category",
    "best_concept_f1",
    "best_concept_q",
]
#: what a feature whose best concept is a built-in one does, in words
_PLAIN = {
    "nterm": "N-terminal residues",
    "cterm": "C-terminal residues",
    "hydrophobic": "hydrophobic stretches",
    "charge:positive": "positive charge clusters (K/R)",
    "charge:negative": "negative charge clusters (D/E)",
    "low-complexity": "low-complexity segments",
}


class ResidueProfile:
    """Per-feature residue statistics of every source, accumulated batch by batch (see the
    module docstring); ``sequences`` (protein id -> sequence) gives the amino acids, without it
    only the density and position columns are filled."""

    def __init__(self, widths: dict[str, int], sequences: dict[str, str] | None):
        self.sequences = sequences
        self.n_residues = 0
        self.stats = {
            name: {
                "nonzero": np.zeros(w),
                "mass": np.zeros(w),
                "aa": np.zeros(21 * w),
                "pos": np.zeros(w),
                "nterm": np.zeros(w),
                "cterm": np.zeros(w),
            }
            for name, w in widths.items()
        }
        self._aa = np.zeros(0, np.int64)
        self._pos = np.zeros(0)

    def begin_batch(self, ids: list[str], lengths) -> None:
        """The residues of the next batch: amino acid and relative position of each."""
        lengths = np.asarray(lengths, dtype=np.int64)
        aa = []
        for pid, L in zip(ids, lengths.tolist()):
            seq = (self.sequences or {}).get(pid)
            codes = seqc.aa_codes(seq[:L]) if seq is not None and len(seq) >= L else None
            aa.append(np.where(codes >= 0, codes, 20) if codes is not None else np.full(L, 20))
        self._aa = np.concatenate(aa).astype(np.int64) if aa else np.zeros(0, np.int64)
        start = np.repeat(np.cumsum(lengths) - lengths, lengths)
        denom = np.repeat(np.maximum(lengths - 1, 1), lengths)
        self._pos = (np.arange(int(lengths.sum())) - start) / denom
        self.n_residues += int(lengths.sum())

    def add(self, name: str, codes, width: int) -> None:
        """Accumulate one encoder's codes of the current batch (dense codes by matrix products,
        a TopK pair by its k entries per residue)."""
        if not isinstance(codes, tuple):
            self._add_dense(name, codes.float().clamp_min(0).numpy())
            return
        rows, cols, vals = (t.numpy() for t in triples(codes, width))
        keep = vals > 0
        rows, cols, vals = rows[keep], cols[keep].astype(np.int64), vals[keep].astype(np.float64)
        st = self.stats[name]
        pos = self._pos[rows]
        st["nonzero"] += np.bincount(cols, minlength=width)
        st["mass"] += np.bincount(cols, weights=vals, minlength=width)
        st["aa"] += np.bincount(self._aa[rows] * width + cols, weights=vals, minlength=21 * width)
        st["pos"] += np.bincount(cols, weights=vals * pos, minlength=width)
        n, c = pos <= TERMINAL_REGION, pos >= 1.0 - TERMINAL_REGION
        st["nterm"] += np.bincount(cols[n], weights=vals[n], minlength=width)
        st["cterm"] += np.bincount(cols[c], weights=vals[c], minlength=width)

    def _add_dense(self, name: str, z: np.ndarray) -> None:
        st = self.stats[name]
        onehot = np.zeros((21, len(self._aa)), dtype=np.float32)
        onehot[self._aa, np.arange(len(self._aa))] = 1.0
        pos = self._pos.astype(np.float32)
        st["nonzero"] += (z > 0).sum(axis=0)
        st["mass"] += z.sum(axis=0, dtype=np.float64)
        st["aa"] += (onehot @ z).astype(np.float64).ravel()
        st["pos"] += (pos @ z).astype(np.float64)
        st["nterm"] += ((pos <= TERMINAL_REGION).astype(np.float32) @ z).astype(np.float64)
        st["cterm"] += ((pos >= 1.0 - TERMINAL_REGION).astype(np.float32) @ z).astype(np.float64)

    def columns(self, name: str) -> pd.DataFrame:
        """:data:`PROFILE_COLUMNS` of one source, one row per feature."""
        st = self.stats[name]
        mass = st["mass"]
        width = len(mass)
        aa = st["aa"].reshape(21, width)[:20]
        top = aa.argmax(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(mass > 0, aa[top, np.arange(width)] / mass, np.nan)
            pos_mean = np.where(mass > 0, st["pos"] / mass, np.nan)
            n_share = np.where(mass > 0, st["nterm"] / mass, 0.0)
            c_share = np.where(mass > 0, st["cterm"] / mass, 0.0)
        has_aa = self.sequences is not None
        letters = np.array(list(seqc.AMINO_ACIDS), dtype=object)
        bias = np.where(
            n_share >= TERMINAL_SHARE,
            "N-terminal",
            np.where(c_share >= TERMINAL_SHARE, "C-terminal", ""),
        )
        return pd.DataFrame(
            {
                "residue_density": st["nonzero"] / max(self.n_residues, 1),
                "top_amino_acid": np.where((mass > 0) & has_aa, letters[top], ""),
                "top_amino_acid_share": share if has_aa else np.full(width, np.nan),
                "position_bias": bias.astype(object),
                "position_mean": pos_mean,
            }
        )


def empty_profile(width: int) -> pd.DataFrame:
    """The profile columns of a protein-level source (nothing per residue)."""
    return pd.DataFrame(
        {
            "residue_density": np.full(width, np.nan),
            "top_amino_acid": [""] * width,
            "top_amino_acid_share": np.full(width, np.nan),
            "position_bias": [""] * width,
            "position_mean": np.full(width, np.nan),
        }
    )


def best_concepts(
    assoc: pd.DataFrame, residue: pd.DataFrame, concepts: pd.DataFrame, n_features: int
) -> pd.DataFrame:
    """:data:`BEST_COLUMNS` (and ``best_concept_recall``) of one source's features from its rows
    of associations.parquet (``assoc``) and residue_associations.parquet (``residue``)."""
    parts = []
    if len(assoc):
        sig = assoc[(assoc["q_value"] < Q_MAX) & (assoc["precision"] >= PRECISION_MIN)]
        parts.append(sig[["feature", "concept", "f1", "q_value", "recall"]])
    if len(residue):
        hit = residue[residue["f1"] >= RESIDUE_F1_MIN]
        parts.append(hit[["feature", "concept", "f1", "recall"]].assign(q_value=np.nan))
    out = pd.DataFrame(
        {
            "best_concept": [""] * n_features,
            "best_concept_name": [""] * n_features,
            "best_concept_category": [""] * n_features,
            "best_concept_f1": np.full(n_features, np.nan),
            "best_concept_q": np.full(n_features, np.nan),
            "best_concept_recall": np.full(n_features, np.nan),
        }
    )
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not len(rows):
        return out
    best = rows.sort_values(["f1", "q_value"], ascending=[False, True], kind="stable")
    best = best.drop_duplicates("feature")
    info = concepts.set_index("concept")
    f = best["feature"].to_numpy(dtype=np.int64)
    out.loc[f, "best_concept"] = best["concept"].to_numpy()
    out.loc[f, "best_concept_name"] = info.loc[best["concept"], "name"].to_numpy()
    out.loc[f, "best_concept_category"] = info.loc[best["concept"], "category"].to_numpy()
    out.loc[f, "best_concept_f1"] = best["f1"].to_numpy(dtype=np.float64)
    out.loc[f, "best_concept_q"] = best["q_value"].to_numpy(dtype=np.float64)
    out.loc[f, "best_concept_recall"] = best["recall"].to_numpy(dtype=np.float64)
    return out


def _is_chemistry(concept: str) -> bool:
    return seqc.is_builtin(concept) and not concept.startswith(f"{seqc.PREFIX}motif:")


def kind_and_label(row: dict) -> tuple[str, str]:
    """(``kind``, ``plain_label``) of one feature from its features.parquet values."""
    concept = row.get("best_concept") or ""
    if not row.get("max_activation", 0) > 0:
        return "dead", "never fires"
    if _is_chemistry(concept):
        return "sequence-chemistry", builtin_label(concept, row.get("best_concept_recall"))
    share = row.get("top_amino_acid_share")
    if not concept and share is not None and share >= AA_SHARE and row.get("top_amino_acid"):
        aa = row["top_amino_acid"]
        return "sequence-chemistry", f"fires mostly on {seqc.AA_NAMES[aa]} ({aa})"
    if row.get("density", 0) >= DENSE:
        where = f", {row['position_bias']}" if row.get("position_bias") else ""
        return "dense", f"fires on {row['density']:.0%} of proteins{where}"
    if concept.startswith(f"{seqc.PREFIX}motif:"):
        return "specific", seqc.NAMES.get(concept, concept)
    return "specific", ""


def builtin_label(concept: str, recall: float | None = None) -> str:
    """Words for a built-in concept: "fires on every glutamine (Q)", "N-terminal residues"."""
    key = concept[len(seqc.PREFIX) :]
    if key.startswith("aa:"):
        aa = key[3:]
        every = recall is not None and recall >= EVERY_RECALL
        return f"fires on {'every ' if every else ''}{seqc.AA_NAMES[aa]} ({aa})"
    return _PLAIN.get(key, seqc.NAMES.get(concept, concept))


def feature_columns(
    base: pd.DataFrame,
    assoc: pd.DataFrame,
    residue: pd.DataFrame,
    concepts: pd.DataFrame,
) -> pd.DataFrame:
    """``base`` (one source's rows of features.parquet, in feature order) with the best concept,
    ``kind`` and ``plain_label`` added."""
    best = best_concepts(assoc, residue, concepts, len(base))
    out = pd.concat([base.reset_index(drop=True), best], axis=1)
    kl = [kind_and_label(r) for r in out.to_dict("records")]
    out["kind"] = [k for k, _ in kl]
    out["plain_label"] = [lab for _, lab in kl]
    return out.drop(columns=["best_concept_recall"])
