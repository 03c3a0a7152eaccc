"""``plmsae discover ASSOC_DIR``: candidate missing annotations.

A feature whose association with a concept is precise on the test split (precision >=
``min_precision``, q < ``max_q``) fires almost only on proteins that carry the concept. Where it
fires above the association's threshold (threshold x the feature's maximum, as ``associate``
counts a protein active) on a protein that does not carry the concept, the annotation may be
missing. :class:`Discoverer` lists those (protein, concept) pairs:

1. ``precise``: the precise (feature, concept, threshold) rows of ``associations.parquet``;
2. ``evidence``: for each, the proteins above its threshold without the concept;
3. ``groups``: features that say the same thing do not count twice: per concept, features whose
   active protein sets overlap by Jaccard >= ``redundant_jaccard`` form one group (connected
   components);
4. ``rank``: per (protein, concept): ``n_independent`` = groups that agree, and the score
   ``n_independent + mean over those groups of the best relative activation`` (activation /
   the feature's maximum, in (0, 1]), so more independent agreement ranks first and, among
   equals, stronger activation;
5. ``homologs``: for the reported candidates, the nearest homolog that carries the concept
   (MMseqs2 search; its identity and E-value), a second, independent line of evidence;
6. ``write``: the table (``--out``, TSV or Parquet).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from plmsae._util import InputError
from plmsae.analysis.assocdir import CATEGORY_NAMES, RUN, SOURCES, AssocDir
from plmsae.apply.common import check_table_path, write_table
from plmsae.config import StageConfig, argument, option, stage_function

log = logging.getLogger(__name__)

CANDIDATE_COLUMNS = [
    "rank",
    "protein",
    "name",
    "split",
    "concept",
    "concept_name",
    "category",
    "score",
    "n_independent",
    "n_features",
    "features",
    "activations",
    "relative",
    "precision",
    "q_value",
    "annotated_in_category",
    "homolog",
    "homolog_identity",
    "homolog_evalue",
]
_PROTEIN_CATEGORIES = [c for c in CATEGORY_NAMES if c != "residue"]


@dataclass
class DiscoverConfig(StageConfig):
    """List candidate missing annotations: proteins on which features that are precise for a
    concept fire although the protein does not carry it.

    A feature counts for a concept when its association on the test split is precise
    (--min-precision, --max-q). Candidates rank by how many independent features agree
    (features with near-identical active proteins count once, --redundant-jaccard), then by
    activation; each comes with its features, activations and, with MMseqs2, the nearest
    homolog that carries the concept."""

    assoc_dir: Path = argument(help="Association directory written by `plmsae associate`.")
    out: Path | None = option(
        None, help="Also write the candidates to this file (.tsv or .parquet)."
    )
    min_precision: float = option(
        0.9, help="Use a feature for a concept only when its precision on test is at least this."
    )
    max_q: float = option(
        1e-6, help="Use a feature for a concept only when its q-value on test is below this."
    )
    categories: list[str] | None = option(
        None,
        help="Concept categories to consider (GO:BP, GO:MF, GO:CC, GO, family, location). "
        "Default: all.",
    )
    redundant_jaccard: float = option(
        0.5,
        help="Features for one concept whose active proteins overlap by at least this Jaccard "
        "index count as one.",
    )
    top: int = option(100, help="Candidates reported (0 = all).")
    homologs: bool = option(
        True,
        help="Give each reported candidate's nearest homolog that carries the concept (MMseqs2; "
        "skipped with a note when mmseqs or the sequences are missing).",
    )
    fasta: Path | None = option(
        None,
        help="Sequences for the homolog search (default: the FASTA the store named in "
        "run.json was embedded from).",
    )
    source: str = option("sae", help="Feature source: sae, or a baseline (neuron, random).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.min_precision <= 1:
            self.reject("min_precision", "must be in [0, 1].", "e.g. --min-precision 0.9.")
        if not 0 < self.max_q <= 1:
            self.reject("max_q", "must be in (0, 1].", "e.g. --max-q 1e-6.")
        if not 0 < self.redundant_jaccard <= 1:
            self.reject("redundant_jaccard", "must be in (0, 1].", "e.g. --redundant-jaccard 0.5.")
        if self.top < 0:
            self.reject("top", "must be 0 (all) or more.", "e.g. --top 100.")
        if self.source not in SOURCES:
            self.reject("source", f"is not one of {', '.join(SOURCES)}.", "use --source sae.")
        bad = sorted(set(self.categories or []) - set(_PROTEIN_CATEGORIES))
        if bad:
            self.reject(
                "categories",
                f"has unknown categories {bad}.",
                f"choose from {', '.join(_PROTEIN_CATEGORIES)}.",
            )
        check_table_path(self.out, "out")


@dataclass
class DiscoverResult:
    """Candidate missing annotations, best first.

    candidates: the reported rows (:data:`CANDIDATE_COLUMNS`; ``features``, ``activations`` and
    ``relative`` are lists, strongest first). n_candidates: all (protein, concept) pairs found
    before ``top``. n_features / n_concepts / n_groups: precise features, their concepts and the
    independent groups they form. homolog_note: why there is no homolog evidence, if there is
    none. settings: the options used; out: the file written.
    """

    candidates: pd.DataFrame
    n_candidates: int
    n_features: int
    n_concepts: int
    n_groups: int
    settings: dict[str, Any]
    homolog_note: str | None = None
    out: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        rows = self.candidates.astype(object).where(self.candidates.notna(), None)
        return {
            "n_candidates": self.n_candidates,
            "n_features": self.n_features,
            "n_concepts": self.n_concepts,
            "n_groups": self.n_groups,
            "homolog_note": self.homolog_note,
            "settings": self.settings,
            "out": None if self.out is None else str(self.out),
            "candidates": rows.to_dict(orient="records"),
        }


@dataclass
class _Evidence:
    """Per precise row: its active proteins; per firing without the concept: (row, protein,
    activation)."""

    active: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    proteins: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


class Discoverer:
    """Finds candidate missing annotations in one association directory (module docstring:
    the steps). ``assoc`` may be passed when already open."""

    def __init__(self, cfg: DiscoverConfig, assoc: AssocDir | None = None):
        self.cfg = cfg
        self.assoc = assoc or AssocDir(cfg.assoc_dir)
        self.homolog_note: str | None = None

    def run(self) -> DiscoverResult:
        if not (self.assoc.path / RUN).exists():
            raise InputError(
                f"{RUN} is missing.",
                path=self.assoc.path,
                fix="point at a finished association directory (written by `plmsae associate`).",
            )
        self.precise()
        self.evidence()
        self.groups()
        table = self.rank()
        n_all = len(table)
        if self.cfg.top:
            table = table.head(self.cfg.top).copy()
        self.homologs(table)
        out = None
        if self.cfg.out is not None:
            out = write_table(table[CANDIDATE_COLUMNS], self.cfg.out)
        return DiscoverResult(
            candidates=table[CANDIDATE_COLUMNS].reset_index(drop=True),
            n_candidates=n_all,
            n_features=int(self.rows_["feature"].nunique()),
            n_concepts=int(self.rows_["concept"].nunique()),
            n_groups=int(len(np.unique(self.group_))),
            settings=self.cfg.to_dict(),
            homolog_note=self.homolog_note,
            out=out,
        )

    # -- 1. precise associations -----------------------------------------------------------------
    def precise(self) -> pd.DataFrame:
        """The associations precise on test, with each feature's maximum (``feature_max``)."""
        cfg, ad = self.cfg, self.assoc
        a = ad.read_associations(cfg.source, q_max=cfg.max_q)
        if "precision" not in a.columns or "threshold" not in a.columns:
            raise InputError(
                "associations.parquet has no precision or threshold column.",
                path=ad.path,
                fix="re-run `plmsae associate` with this version of plmsae.",
            )
        keep = (a["precision"].fillna(0) >= cfg.min_precision) & (a["category"] != "residue")
        keep &= a["concept"].isin(ad.concept_index)
        if cfg.categories:
            keep &= a["category"].isin(cfg.categories)
        rows = a[keep].sort_values(["concept", "feature"]).reset_index(drop=True)
        feats = ad.features(cfg.source).set_index("feature")["max_activation"]
        acts = ad.activations(cfg.source)
        col_max = np.asarray(acts.max(axis=0).toarray()).ravel()
        fmax = rows["feature"].map(feats).to_numpy(dtype=np.float64)
        fallback = col_max[rows["feature"].to_numpy(dtype=np.int64)]
        rows["feature_max"] = np.where(np.isfinite(fmax) & (fmax > 0), fmax, fallback)
        self.rows_ = rows
        log.info(
            "discover: %d precise associations (%d features, %d concepts)",
            len(rows),
            rows["feature"].nunique(),
            rows["concept"].nunique(),
        )
        return rows

    # -- 2. firings without the concept ----------------------------------------------------------
    def evidence(self) -> _Evidence:
        """Active proteins of every precise row, and those of them without the concept."""
        ad, rows = self.assoc, self.rows_
        x = ad.activations(self.cfg.source).tocsc()
        ann = ad.annotations.tocsc()
        ev = _Evidence()
        concepts = rows["concept"].map(ad.concept_index).to_numpy(dtype=np.int64)
        cut = rows["threshold"].to_numpy(dtype=np.float64) * rows["feature_max"].to_numpy()
        for k, (f, c) in enumerate(zip(rows["feature"].to_numpy(dtype=np.int64), concepts)):
            idx = x.indices[x.indptr[f] : x.indptr[f + 1]]
            val = x.data[x.indptr[f] : x.indptr[f + 1]]
            on = val > cut[k]
            active, values = idx[on], val[on]
            ev.active.append(active)
            missing = ~np.isin(active, ann.indices[ann.indptr[c] : ann.indptr[c + 1]])
            ev.rows.append(np.full(int(missing.sum()), k, dtype=np.int64))
            ev.proteins.append(active[missing])
            ev.values.append(values[missing])
        self.evidence_ = ev
        return ev

    # -- 3. redundant features -------------------------------------------------------------------
    def groups(self) -> np.ndarray:
        """Group id of every precise row: per concept, connected components of the features
        whose active sets have Jaccard >= ``redundant_jaccard``."""
        from scipy.sparse.csgraph import connected_components

        n = len(self.assoc.proteins)
        group = np.zeros(len(self.rows_), dtype=np.int64)
        next_id = 0
        for _, idx in self.rows_.groupby("concept", sort=False).indices.items():
            sets = [self.evidence_.active[k] for k in idx]
            m = sp.csc_matrix(
                (
                    np.ones(sum(len(s) for s in sets), dtype=np.float64),
                    np.concatenate(sets) if sets else np.zeros(0, np.int64),
                    np.cumsum([0] + [len(s) for s in sets]),
                ),
                shape=(n, len(sets)),
            )
            inter = (m.T @ m).toarray()
            size = np.diag(inter)
            union = size[:, None] + size[None, :] - inter
            jacc = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            _, labels = connected_components(
                sp.csr_matrix(jacc >= self.cfg.redundant_jaccard), directed=False
            )
            group[idx] = next_id + labels
            next_id += int(labels.max()) + 1 if len(labels) else 0
        self.group_ = group
        return group

    # -- 4. rank ---------------------------------------------------------------------------------
    def rank(self) -> pd.DataFrame:
        """One row per (protein, concept), best first."""
        rows, ev = self.rows_, self.evidence_
        k = np.concatenate(ev.rows) if ev.rows else np.zeros(0, np.int64)
        if not len(k):
            return pd.DataFrame(columns=CANDIDATE_COLUMNS)
        e = pd.DataFrame(
            {
                "row": k,
                "protein_i": np.concatenate(ev.proteins),
                "activation": np.concatenate(ev.values),
            }
        )
        e["concept"] = rows["concept"].to_numpy()[k]
        e["feature"] = rows["feature"].to_numpy()[k]
        e["group"] = self.group_[k]
        e["relative"] = e["activation"] / rows["feature_max"].to_numpy()[k]
        e["precision"] = rows["precision"].to_numpy()[k]
        e["q_value"] = rows["q_value"].to_numpy()[k]
        e = e.sort_values(
            ["protein_i", "concept", "relative", "feature"],
            ascending=[True, True, False, True],
            kind="stable",
        )
        key = ["protein_i", "concept"]
        strength = e.groupby([*key, "group"], sort=False)["relative"].max().groupby(level=key)
        table = e.groupby(key, sort=False).agg(
            features=("feature", list),
            activations=("activation", list),
            relative=("relative", list),
            precision=("precision", "max"),
            q_value=("q_value", "min"),
        )
        table["n_features"] = table["features"].map(len)
        table["n_independent"] = strength.size()
        table["score"] = table["n_independent"] + strength.mean()
        table = table.reset_index()
        table = table.sort_values(
            ["score", "protein_i", "concept"], ascending=[False, True, True], kind="stable"
        )
        return self._describe(table.reset_index(drop=True))

    def _describe(self, table: pd.DataFrame) -> pd.DataFrame:
        """Protein and concept names, split, whether the protein has any annotation in the
        concept's category; the homolog columns empty."""
        ad = self.assoc
        prot, conc = ad.proteins, ad.concepts.set_index("concept")
        i = table["protein_i"].to_numpy(dtype=np.int64)
        table["rank"] = np.arange(1, len(table) + 1)
        table["protein"] = prot["id"].to_numpy()[i]
        table["name"] = prot["name"].to_numpy()[i]
        table["split"] = prot["split"].astype(str).to_numpy()[i]
        table["concept_name"] = table["concept"].map(conc["name"])
        table["category"] = table["concept"].map(conc["category"])
        ann = ad.annotations
        has = {}
        for cat in table["category"].unique():
            cols = np.flatnonzero(ad.concepts["category"].to_numpy() == cat)
            has[cat] = np.asarray(ann[:, cols].sum(axis=1)).ravel() > 0
        table["annotated_in_category"] = [bool(has[c][p]) for c, p in zip(table["category"], i)]
        table["homolog"] = None
        table["homolog_identity"] = np.nan
        table["homolog_evalue"] = np.nan
        return table

    # -- 5. homologs -----------------------------------------------------------------------------
    def homologs(self, table: pd.DataFrame) -> None:
        """Fill ``homolog, homolog_identity, homolog_evalue`` of ``table``'s rows in place: the
        best MMseqs2 hit among the proteins that carry the concept."""
        from plmsae.analysis.splits import mmseqs_available
        from plmsae.apply.homology import best_annotated_hits, search

        if table.empty:
            return
        if not self.cfg.homologs:
            self.homolog_note = "homologs not searched (--no-homologs)"
            return
        if not mmseqs_available():
            self.homolog_note = "homologs not searched: mmseqs (MMseqs2) is not installed"
            return
        seqs = self.sequences()
        if seqs is None:
            return
        ad = self.assoc
        ids = ad.proteins["id"].to_numpy()
        ann = ad.annotations.tocsc()
        carriers: dict[str, set[str]] = {}
        for c in table["concept"].unique():
            j = ad.concept_index[c]
            carriers[c] = set(ids[ann.indices[ann.indptr[j] : ann.indptr[j + 1]]])
        queries = {p: seqs[p] for p in table["protein"].unique() if p in seqs}
        targets = {p: seqs[p] for p in set().union(*carriers.values()) if p in seqs}
        hits = search(queries, targets)
        found = best_annotated_hits(hits, list(zip(table["protein"], table["concept"])), carriers)
        table["homolog"] = [h for h, _, _ in found]
        table["homolog_identity"] = [np.nan if i is None else i for _, i, _ in found]
        table["homolog_evalue"] = [np.nan if e is None else e for _, _, e in found]

    def sequences(self) -> dict[str, str] | None:
        """Sequences of the association's proteins (``--fasta``, else the store's FASTA), or
        None with a note when they cannot be found."""
        from plmsae.data.fasta import read_fasta
        from plmsae.embedding.store import ActivationStore

        path = self.cfg.fasta
        if path is None:
            store = self.assoc.run.get("store")
            src = None
            if store:
                try:
                    src = (ActivationStore(store).meta.get("input") or {}).get("path")
                except (InputError, OSError):
                    src = None
            path = Path(src) if src and Path(src).is_file() else None
        if path is None:
            self.homolog_note = (
                "homologs not searched: the store's FASTA was not found; pass --fasta"
            )
            return None
        return {p.id: p.sequence for p in read_fasta(path)}


@stage_function(DiscoverConfig)
def discover(cfg: DiscoverConfig) -> DiscoverResult:
    """List candidate missing annotations in an association directory: proteins on which
    features precise for a concept fire although the protein does not carry it.

    Returns a :class:`DiscoverResult` (the candidates as a DataFrame, best first)."""
    return Discoverer(cfg).run()
