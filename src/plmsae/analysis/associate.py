"""``plmsae associate``: which features track which biology (GO, families, locations, sites).

:class:`AssociateConfig` holds the options, :class:`Associator` does the work in named steps
(each output is reused by a re-run with the same settings, as recorded in ``.state.json``), and
:func:`associate` opens the inputs and runs it. File names and columns: :mod:`.assocdir`.

1. split: proteins clustered with MMseqs2 (30 % identity, 80 % coverage) and whole clusters
   assigned to ``validation``/``test`` (``proteins.parquet``; reused);
2. concepts: GO terms propagated to ancestors and split by namespace (GO:BP, GO:MF, GO:CC),
   families, locations, residue concepts: UniProt features and, for residue-level SAEs, the
   built-in sequence concepts of :mod:`.sequence_concepts` (``concepts.parquet``,
   ``annotations.npz``);
3. activations: per-protein activations of the SAE features and of the two baselines (signed
   neurons, random directions of matched sparsity; :mod:`.baselines`) in one streaming pass over
   the store, max over residues by default, with each feature's residue profile (density, top
   amino acid, position; :mod:`.specificity`) from the same pass
   (``activations/{sae,neuron,random}.npz``, ``features.parquet``; reused);
4. statistics for every feature x concept, a category at a time
   (:func:`plmsae.analysis.stats.score_categories`):
   threshold (fraction of the feature's max) chosen by F1 on ``validation``, one-sided Fisher
   p-value, BH q-value (family: source x category), precision, recall, F1, odds ratio and AUROC on
   ``test``; then once more with the two splits' roles swapped, to mark the associations that
   replicate (``associations.parquet``); residue concepts per residue, InterPLM-style
   (``residue_associations.parquet``, :mod:`plmsae.analysis.residue`);
5. redundancy: features that fire on the same proteins or share a decoder direction are grouped
   (:mod:`.redundancy`; ``group`` in ``features.parquet``);
6. coherence: how related each feature's associated GO terms are (:mod:`.coherence`);
7. summary: per source, how many features have an association (q < 0.05 and precision
   >= 0.5 on test; residue concepts: F1 >= 0.5 on test), by category; the concept-centric
   headline at matched feature count (:mod:`.headline`); how many association proteins the SAE
   was trained on (``summary.json``, ``run.json``, ``features.parquet``).

Population of a protein-level category: every protein of the store with at least one annotation
in that category (namespace). Tested concepts (``n_concepts_tested``): >= ``min_concept`` proteins
in the population and covering at most ``max_concept_fraction`` of the population on each of the
validation and test splits (default 10 %: more general terms are "associated" with almost any
direction, random ones included; with the cap, precision >= 0.5 on test means at least 5-fold
enrichment on test). Tested pairs: a tested concept, F1 > 0 on validation, >= ``min_both`` active
proteins carrying it on test.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from plmsae._util import (
    VERSION,
    InputError,
    atomic_path,
    prepare_out_dir,
    progress,
    read_json,
    release_freed_memory,
    sha256_file,
    sha256_json,
    write_json,
)
from plmsae.analysis import assocdir
from plmsae.analysis.assocdir import (
    ASSOC_COLUMNS,
    PRECISION_MIN,
    Q_MAX,
    RESIDUE_F1_MIN,
    SOURCES,
    activation_file,
)
from plmsae.analysis.baselines import NEURON_BASELINES
from plmsae.analysis.headline import RECOVERED_F1
from plmsae.analysis.sequence_concepts import NAMES as BUILTIN_NAMES
from plmsae.analysis.summary import (  # noqa: F401 (concept_coverage, summarize: public here too)
    concept_coverage,
    summarize,
    tested_pair_counts,
)
from plmsae.config import StageConfig, argument, option, stage_function

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from plmsae.analysis.activations import Encoder
    from plmsae.analysis.redundancy import Groups
    from plmsae.analysis.residue import ResidueConcepts, ResidueCounts
    from plmsae.analysis.sequence_concepts import SequenceConcepts
    from plmsae.analysis.specificity import ResidueProfile
    from plmsae.data.annotations import Annotations
    from plmsae.data.ontology import Ontology
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.base import SAE

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.0, 0.15, 0.5, 0.6, 0.8)
DEFAULT_SPLIT_FRACTIONS = (0.0, 0.5, 0.5)
POOLS = ("max", "mean")
SPLIT_METHODS = ("mmseqs", "random")
#: the steps of :meth:`Associator.run` whose wall time goes to run.json, with their keys there
TIMED_STEPS = (
    ("split", "split_s"),
    ("concepts", "concepts_s"),
    ("activations", "activations_s"),
    ("statistics", "statistics_s"),
    ("residue_statistics", "residue_s"),
    ("redundancy", "redundancy_s"),
    ("coherence", "coherence_s"),
)


@dataclass
class AssociateConfig(StageConfig):
    """Associate SAE features (and neuron / random baselines) with GO terms, families,
    locations and residue-level concepts; writes ASSOC_DIR (see docs/design.md)."""

    sae: Path = argument(help="SAE checkpoint directory (plmsae train --out).")
    store: Path = argument(help="Activation store (plmsae embed --out).")
    annotations: Path = option(help="GO TSV (ACC<TAB>GO:1;GO:2), GAF or UniProt TSV export.")
    out: Path = option(help="Output directory (ASSOC_DIR).")
    ontology: Path | None = option(
        None, help="GO OBO file (plain or .gz): propagate terms, split namespaces."
    )
    pool: str = option("max", help="Per-protein pooling of residue-level activations: max or mean.")
    thresholds: list[float] = option(
        help="Activation thresholds as fractions of each feature's max.",
        factory=lambda: list(DEFAULT_THRESHOLDS),
    )
    min_concept: int = option(
        10, help="Test a concept only with at least this many proteins in its population."
    )
    max_concept_fraction: float = option(
        0.1,
        help="Test a concept only when it covers at most this fraction of its population on "
        "each of the validation and test splits (general terms look associated with any "
        "direction; with 0.1, precision >= 0.5 means >= 5-fold enrichment; 1 tests every "
        "concept).",
    )
    min_both: int = option(
        3, help="Test a pair only with this many active proteins carrying the concept on test."
    )
    split_method: str = option(
        "mmseqs",
        help="mmseqs (homology clusters; random with a warning when mmseqs2 is missing) or random.",
    )
    min_seq_id: float = option(0.3, help="MMseqs2 clustering identity.")
    coverage: float = option(0.8, help="MMseqs2 clustering coverage (-c, cov-mode 0).")
    split_fractions: list[float] = option(
        help="Fractions of proteins (whole clusters) for train, validation, test.",
        factory=lambda: list(DEFAULT_SPLIT_FRACTIONS),
    )
    fasta: Path | None = option(
        None, help="Sequences for clustering (default: the store's FASTA, or the TSV's Sequence)."
    )
    baselines: bool = option(True, help="Also score the neuron and random-direction baselines.")
    neuron_baseline: str = option(
        "signed",
        help="Neuron baseline: signed (ReLU(x) and ReLU(-x), 2 x d_model features), relu "
        "(ReLU(x) only) or minmax (each neuron min-max scaled, as in the PNAS paper).",
    )
    n_random: int | None = option(
        None, help="Random directions (default: as many as the neuron features)."
    )
    sequence_concepts: bool = option(
        True,
        help="Score built-in residue concepts computed from the sequence (amino acids, chain "
        "termini, hydrophobic stretches, charge clusters, low complexity, PROSITE motifs); "
        "residue-level SAEs only.",
    )
    layer: int | None = option(None, help="Store layer (default: the SAE's layer).")
    seed: int = option(0, help="Seed for splits and random directions.")
    overwrite: bool = option(False, help="Replace an ASSOC_DIR written with other settings.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool not in POOLS:
            self.reject("pool", "is not max or mean.", "use --pool max or --pool mean.")
        if self.split_method not in SPLIT_METHODS:
            self.reject("split_method", "is not a split method.", "use mmseqs or random.")
        if self.neuron_baseline not in NEURON_BASELINES:
            self.reject(
                "neuron_baseline", "is not a neuron baseline.", "use signed, relu or minmax."
            )
        if not 0.0 < self.max_concept_fraction <= 1.0:
            self.reject("max_concept_fraction", "must be in (0, 1].", "e.g. 0.1.")
        if self.thresholds is None:  # the Python API's old spelling of "the default"
            self.thresholds = list(DEFAULT_THRESHOLDS)
        self.thresholds = [float(t) for t in self.thresholds]
        if any(not 0.0 <= t < 1.0 for t in self.thresholds):
            self.reject("thresholds", "must be fractions in [0, 1).", "e.g. --thresholds 0,0.5.")
        self.split_fractions = self._fractions()

    def _fractions(self) -> list[float]:
        raw: Any = self.split_fractions
        try:  # "0,0.5,0.5" (a TOML string, the old spelling) or three numbers
            vals = [float(v) for v in (raw.split(",") if isinstance(raw, str) else raw)]
        except (TypeError, ValueError):
            vals = []
        if len(vals) != 3 or any(v < 0 for v in vals) or sum(vals) <= 0:
            self.reject(
                "split_fractions",
                "is not three non-negative numbers.",
                "give train,validation,test, e.g. 0,0.5,0.5.",
            )
        if vals[1] <= 0 or vals[2] <= 0:
            self.reject(
                "split_fractions",
                "leaves validation or test empty.",
                "both validation and test need a positive fraction.",
            )
        return vals


@dataclass
class SourceCounts:
    """What :func:`associate` found for one source (``summary.json``): features associated
    (any category), distinct concepts associated, features associated per category, distinct
    features (redundancy groups) and the headline measures (``{measure: {all, matched,
    matched_ci}}``, :mod:`.headline`)."""

    n_features: int
    n_features_associated: int
    n_concepts_associated: int
    by_category: dict[str, int]
    n_concepts_associated_matched: float | None = None
    matched_n_features: int | None = None
    unique_features: int | None = None
    headline: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, block: dict[str, Any], headline: dict | None = None) -> SourceCounts:
        """From one source's summary.json block and its ``headline.sources`` entry."""
        concepts = block.get("concepts", {})
        head = (headline or {}).get("values", {})
        return cls(
            n_features=int(block["n_features"]),
            n_features_associated=int(block["n_features_associated"]),
            n_concepts_associated=int(concepts.get("n_concepts_associated", 0)),
            by_category={
                c: int(v["n_features_associated"]) for c, v in block["by_category"].items()
            },
            n_concepts_associated_matched=concepts.get("n_concepts_associated_matched"),
            matched_n_features=concepts.get("matched_n_features"),
            unique_features=(block.get("redundancy") or {}).get("n_groups"),
            headline=head,
        )


@dataclass
class AssociateResult:
    """The ASSOC_DIR written (``out``), per-source counts, the split, step timings (seconds)
    and which steps a re-run took from the directory instead of recomputing; the
    concept-centric ``headline`` block and the ``training_overlap`` of summary.json."""

    out: Path
    sources: dict[str, SourceCounts]
    n_proteins: int
    n_validation: int
    n_test: int
    split_method: str
    level: str
    timings: dict[str, float]
    reused: list[str]
    headline: dict[str, Any] = field(default_factory=dict)
    training_overlap: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"out": str(self.out)}


class Associator:
    """Runs the association stage on loaded inputs (see the module docstring for the steps).

    ``store``, ``sae`` and ``annotations`` (read with the ontology, if any) must be what
    ``cfg.store``, ``cfg.sae``, ``cfg.annotations`` and ``cfg.ontology`` name: those paths and
    the files' checksums are recorded in run.json and decide what a re-run may reuse;
    ``ontology`` (the loaded ``cfg.ontology``) is needed for the GO coherence analysis only.
    ``run()`` does every step; each step is also a method that leaves its output in an
    attribute ending in ``_``.
    """

    def __init__(
        self,
        cfg: AssociateConfig,
        store: ActivationStore,
        sae: SAE,
        annotations: Annotations,
        ontology: Ontology | None = None,
    ):
        self.cfg, self.store, self.annotations, self.ontology = cfg, store, annotations, ontology
        self.sae = sae.eval()
        self.out = Path(cfg.out)
        self.ids: list[str] = list(store.ids)
        self.level: str = sae.cfg.level
        self.layer = _resolve_layer(store, sae.cfg.layer if cfg.layer is None else cfg.layer)
        width = 2 if cfg.neuron_baseline == "signed" else 1
        self.n_neuron = width * int(store.d_model)
        self.n_random = int(cfg.n_random if cfg.n_random is not None else self.n_neuron)
        self.settings = self._settings()
        self.inputs = self._inputs()
        self.run_hash = sha256_json(
            {"settings": self.settings, "inputs": self.inputs, "ids": self.ids}
        )
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []
        self._seq_map: dict[str, str] | None = None
        self._seq_loaded = False

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> AssociateResult:
        """Every step in order; returns what was found."""
        self.prepare()
        for step, key in TIMED_STEPS:
            start = time.perf_counter()
            getattr(self, step)()
            self.timings[key] = round(time.perf_counter() - start, 3)
            release_freed_memory()
        self.summary()
        return self.result()

    def prepare(self) -> None:
        """Create ``out``, or check that it holds a run with the same inputs and settings (with
        ``overwrite``: forget the finished steps of the other run)."""
        out = prepare_out_dir(self.out)
        run = out / assocdir.RUN
        if not run.exists() or read_json(run).get("settings_sha256") == self.run_hash:
            return
        if not self.cfg.overwrite:
            raise InputError(
                "this directory holds an association run with other inputs or settings.",
                path=out,
                fix="choose another --out, or pass --overwrite to replace it.",
            )
        for name in (assocdir.ACTIVATIONS, assocdir.STATE):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    # -- 1. split --------------------------------------------------------------------------------
    def split(self) -> pd.DataFrame:
        """``proteins.parquet``: split, cluster, length and name of every protein (reused when
        the split settings and proteins are unchanged)."""
        from plmsae.analysis import splits

        cfg, path = self.cfg, self.out / assocdir.PROTEINS
        keys = ("split_method", "min_seq_id", "coverage", "split_fractions", "seed")
        split_hash = sha256_json({k: self.settings[k] for k in keys} | {"ids": self.ids})
        state = self._state()
        if path.exists() and state.get("proteins") == split_hash:
            self.proteins_ = pd.read_parquet(path)
            self.split_method_used_: str = state.get("split_method_used", cfg.split_method)
            self.reused.append("split")
            return self.proteins_
        seqs = self._sequences() if cfg.split_method == "mmseqs" else None
        split, clusters, self.split_method_used_ = splits.make_splits(
            self.ids,
            seqs,
            method=cfg.split_method,
            min_seq_id=cfg.min_seq_id,
            coverage=cfg.coverage,
            fractions=cfg.split_fractions,
            seed=cfg.seed,
        )
        self.proteins_ = pd.DataFrame(
            {
                "id": self.ids,
                "split": split.astype(str),
                "cluster": clusters.astype(np.int64),
                "length": np.asarray(self.store.lengths, dtype=np.int64),
                "name": [self.annotations.protein_names.get(p, "") for p in self.ids],
            }
        )
        _write_parquet(self.proteins_, path)
        self._set_state(proteins=split_hash, split_method_used=self.split_method_used_)
        return self.proteins_

    @property
    def split_(self) -> np.ndarray:
        """Split name of every protein [n_proteins] (after :meth:`split`)."""
        return self.proteins_["split"].to_numpy()

    # -- 2. concepts -----------------------------------------------------------------------------
    def concepts(self) -> pd.DataFrame:
        """``concepts.parquet`` and ``annotations.npz`` (bool [n_proteins, n_concepts]); which
        concepts pass the filter (``tested_`` [n_concepts] bool)."""
        from plmsae.analysis.stats import testable_concepts

        self.builtin_ = self._builtin()
        self.concepts_, self.annotation_matrix_ = concept_table(
            self.annotations, self.ids, self.builtin_
        )
        external = ~self.concepts_["concept"].str.startswith("seq:").to_numpy()
        if self.annotation_matrix_[:, external].nnz == 0:
            raise InputError(
                f"none of the {len(self.ids)} proteins of the store has an annotation here "
                f"(store IDs look like {self.ids[:2]}).",
                path=self.cfg.annotations,
                fix="use annotations keyed by the same accessions as the FASTA that was "
                "embedded (UniProt sp|P12345|NAME headers become P12345).",
            )
        _write_parquet(self.concepts_, self.out / assocdir.CONCEPTS)
        with atomic_path(self.out / assocdir.ANNOTATIONS) as tmp:
            sp.save_npz(tmp, self.annotation_matrix_.astype(bool), compressed=True)
        cfg, cats = self.cfg, self.concepts_["category"].to_numpy()
        protein = cats != "residue"
        self.tested_ = np.zeros(len(cats), dtype=bool)
        self.tested_[protein] = testable_concepts(
            self.annotation_matrix_[:, protein],
            cats[protein],
            self.split_,
            min_concept=cfg.min_concept,
            max_concept_fraction=cfg.max_concept_fraction,
        )
        self.tested_[~protein] = self.concepts_["n_proteins"].to_numpy()[~protein] >= (
            cfg.min_concept
        )
        return self.concepts_

    def _builtin(self) -> SequenceConcepts | None:
        """The built-in sequence concepts, for residue-level SAEs when asked for and the
        sequences are known."""
        from plmsae.analysis.sequence_concepts import SequenceConcepts

        if not self.cfg.sequence_concepts or self.level != "residue":
            return None
        seqs = self._sequence_map()
        if seqs is None:
            log.warning(
                "built-in sequence concepts are skipped: no sequences are known (pass --fasta)."
            )
            return None
        return SequenceConcepts(seqs)

    # -- 3. activations --------------------------------------------------------------------------
    def activations(self) -> dict[str, sp.csr_matrix]:
        """Per-protein activations of every source (reused when the SAE, store, pooling and
        baselines are unchanged) and ``features.parquet`` (with the residue profile)."""
        from plmsae.analysis.activations import protein_activations
        from plmsae.analysis.specificity import ResidueProfile

        self.encoders_ = self._encoders()
        state = self._state()
        if state.get("activations") == self._activations_hash() and all(
            activation_file(self.out, s).exists() for s in self.encoders_
        ):
            self.pooled_ = {
                s: sp.load_npz(activation_file(self.out, s)).tocsr() for s in self.encoders_
            }
            self.peaks_ = {s: np.asarray(v) for s, v in state["peaks"].items()}
            self.features_ = self._reused_features()
            self.reused.append("activations")
            return self.pooled_
        widths = {s: w for s, (_, w) in self.encoders_.items()}
        profile = ResidueProfile(widths, self._sequence_map()) if self.level == "residue" else None
        with progress() as bar:
            task = bar.add_task("activations", total=len(self.ids), rate="")
            self.pooled_, self.peaks_ = protein_activations(
                self.store,
                self.encoders_,
                self.ids,
                level=self.level,
                pool=self.cfg.pool,
                layer=self.layer,
                progress_cb=lambda done: bar.update(task, completed=done),
                profile=profile,
            )
        for s, m in self.pooled_.items():
            with atomic_path(activation_file(self.out, s)) as tmp:
                sp.save_npz(tmp, m.astype(np.float32, copy=False), compressed=True)
        self.features_ = self._feature_table(profile)
        _write_parquet(self.features_, self.out / assocdir.FEATURES)
        peaks = {s: v.tolist() for s, v in self.peaks_.items()}
        self._set_state(activations=self._activations_hash(), peaks=peaks)
        return self.pooled_

    def _encoders(self) -> dict[str, tuple[Encoder, int]]:
        """source -> (encode function, number of features); calibrates the baselines and keeps
        every source's decoder directions (``directions_``) for the redundancy grouping."""
        import torch

        from plmsae.analysis import baselines as base
        from plmsae.analysis.activations import calibration_sample

        store, sae, cfg = self.store, self.sae, self.cfg
        # TopK SAEs hand over (values, indices): pooling then touches only the k codes per residue
        encode = getattr(sae, "encode_sparse", None) or sae.encode
        encoders: dict[str, tuple[Encoder, int]] = {"sae": (encode, int(sae.cfg.d_sae))}
        self.directions_ = {"sae": sae.W_dec.detach().float().cpu().numpy()}
        if not cfg.baselines:
            return encoders
        sample = calibration_sample(
            store, self.ids, level=self.level, layer=self.layer, seed=cfg.seed
        )
        neuron = base.NeuronBaseline(store.d_model, cfg.neuron_baseline).calibrate(sample)
        encoders["neuron"] = (neuron.encode, neuron.n_features)
        with torch.no_grad():
            density = base.median_live_density(sae.encode, sample)
        rand = base.RandomDirections(store.d_model, self.n_random, seed=cfg.seed)
        encoders["random"] = (rand.calibrate(sample, density).encode, self.n_random)
        self.directions_ |= {"neuron": neuron.directions, "random": rand.directions}
        self.settings["random_target_density"] = density
        return encoders

    def _activations_hash(self) -> str:
        cfg = self.cfg
        return sha256_json(
            {
                "inputs": self.inputs,
                "pool": cfg.pool,
                "layer": self.layer,
                "level": self.level,
                "n_random": self.n_random,
                "neuron_baseline": cfg.neuron_baseline,
                "seed": cfg.seed,
                "baselines": cfg.baselines,
                "ids": self.ids,
                "profile": "v1",
            }
        )

    def _feature_table(self, profile: ResidueProfile | None) -> pd.DataFrame:
        """features.parquet's first columns (FEATURE_COLUMNS, then the residue profile)."""
        from plmsae.analysis.activations import top_rows
        from plmsae.analysis.specificity import empty_profile

        feats = []
        for s, m in self.pooled_.items():
            base = pd.DataFrame(
                {
                    "source": s,
                    "feature": np.arange(m.shape[1]),
                    "density": np.diff(m.tocsc().indptr) / max(1, m.shape[0]),
                    "max_activation": m.max(axis=0).toarray().ravel()
                    if m.nnz
                    else np.zeros(m.shape[1]),
                    "top_proteins": top_rows(m, self.ids),
                }
            )
            prof = profile.columns(s) if profile is not None else empty_profile(m.shape[1])
            feats.append(pd.concat([base, prof], axis=1))
        return pd.concat(feats, ignore_index=True)

    def _reused_features(self) -> pd.DataFrame:
        """features.parquet of the earlier run (its first columns only)."""
        from plmsae.analysis.specificity import PROFILE_COLUMNS

        path = self.out / assocdir.FEATURES
        df = pd.read_parquet(path) if path.exists() else None
        if df is None or any(c not in df.columns for c in PROFILE_COLUMNS):
            return self._feature_table(None)
        return df[[*assocdir.FEATURE_COLUMNS, *PROFILE_COLUMNS]].reset_index(drop=True)

    # -- 4. statistics ---------------------------------------------------------------------------
    def statistics(self) -> pd.DataFrame:
        """``associations.parquet``: every tested (source, feature, protein-level concept), with
        ``replicated`` from a second scoring with the splits' roles swapped. It is written one
        source and concept category at a time (a BH family each); what stays in memory is the
        pairs the later steps read (``pairs_``, :func:`notable`) and the number of tested pairs
        per source and category (``pair_counts_``): the whole table grows with the proteins."""
        pairs, counts = [], []
        with (
            progress() as bar,
            assocdir.parquet_parts(self.out / assocdir.ASSOCIATIONS, ASSOC_COLUMNS) as write,
        ):
            for s, m in self.pooled_.items():
                task = bar.add_task(f"statistics {s}", total=2 * m.shape[1], rate="")
                # the swapped scoring first, kept as its associated pairs only
                replicated = associated_pairs(
                    self._score_source(s, m, ("test", "validation"), bar, task)
                )
                for part in self._score_source(s, m, ("validation", "test"), bar, task):
                    part = mark_replicated(part, replicated)
                    write(part)
                    pairs.append(part[notable(part)])
                    counts.append(tested_pair_counts(part))
                    del part
        self.pairs_ = pd.concat(pairs, ignore_index=True) if pairs else _no_pairs()
        self.pair_counts_ = (
            pd.concat(counts, ignore_index=True) if counts else tested_pair_counts(self.pairs_)
        )
        return self.pairs_

    def _score_source(
        self,
        source: str,
        acts: sp.csr_matrix,
        roles: tuple[str, str],
        bar: Progress,
        task: TaskID,
    ) -> Iterator[pd.DataFrame]:
        """The tested pairs of one source, one concept category at a time, threshold chosen on
        ``roles[0]``, reported on ``roles[1]``."""
        from plmsae.analysis.stats import score_categories

        cfg = self.cfg
        protein_cols = (self.concepts_["category"] != "residue").to_numpy()
        categories = self.concepts_["category"].to_numpy()
        done = 0 if roles[1] == "validation" else acts.shape[1]
        for res in score_categories(
            acts,
            self.annotation_matrix_[:, protein_cols],
            categories[protein_cols],
            self.split_,
            thresholds=cfg.thresholds,
            min_concept=cfg.min_concept,
            max_concept_fraction=cfg.max_concept_fraction,
            min_both=cfg.min_both,
            select_split=roles[0],
            report_split=roles[1],
            progress_cb=lambda category, n, total: bar.update(task, completed=done + n),
        ):
            cidx = np.flatnonzero(protein_cols)[res.pop("concept")]
            n = len(cidx)
            columns = res | {
                "source": np.full(n, source, dtype=object),
                "concept": self.concepts_["concept"].to_numpy()[cidx],
                "category": categories[cidx],
                "f1_validation": res.pop("f1_select"),
                "split": np.full(n, roles[1], dtype=object),
                "replicated": np.zeros(n, dtype=bool),
            }
            res.clear()
            # the arrays become the columns as they are (no copy into blocks), and this frame
            # holds none of them while the next category is scored
            yield pd.DataFrame({k: columns.pop(k) for k in ASSOC_COLUMNS}, copy=False)

    def residue_statistics(self) -> pd.DataFrame:
        """``residue_associations.parquet``: InterPLM-style residue scores of UniProt residue
        features and the built-in sequence concepts (no rows for protein-level SAEs)."""
        from plmsae.analysis import residue

        intervals = self.annotations.residue_concepts
        table = residue.empty_table()
        if intervals and self.level != "residue":
            log.warning("residue-level concepts are skipped: the SAE is protein-level.")
        elif intervals or self.builtin_ is not None:
            rows = self.concepts_[self.concepts_["category"] == "residue"]
            builtin_names = [
                c
                for c, n in zip(rows["concept"], rows["n_proteins"])
                if c.startswith("seq:") and n >= self.cfg.min_concept
            ]
            concepts = residue.ResidueConcepts.select(
                intervals, self.ids, self.cfg.min_concept, self.builtin_, builtin_names
            )
            if concepts.names:
                sel, rep = (self._count_residues(concepts, part) for part in ("validation", "test"))
                table = residue.score_table(sel, rep, concepts, self.cfg.thresholds, self.encoders_)
        self.residue_associations_ = table
        _write_parquet(table, self.out / assocdir.RESIDUE_ASSOCIATIONS)
        return table

    def _count_residues(self, concepts: ResidueConcepts, part: str) -> ResidueCounts:
        """Residue counts of every source on split ``part`` (one pass over its proteins)."""
        from plmsae.analysis.residue import count_residues

        thresholds = np.asarray(self.cfg.thresholds)
        cutoffs = {s: thresholds[:, None] * self.peaks_[s][None, :] for s in self.encoders_}
        proteins = concepts.carriers(p for p, s in zip(self.ids, self.split_) if s == part)
        return count_residues(
            self.store, self.encoders_, proteins, concepts, cutoffs, layer=self.layer
        )

    # -- 5. redundancy, 6. coherence -------------------------------------------------------------
    def redundancy(self) -> dict[str, Groups]:
        """Redundancy groups of every source (:func:`.redundancy.group_features`)."""
        from plmsae.analysis.redundancy import association_cutoffs, group_features

        a = self.pairs_[_associated(self.pairs_)]  # both consumers read these rows only
        self.groups_ = {
            s: group_features(
                m, self.directions_.get(s), association_cutoffs(m, a[a["source"] == s])
            )
            for s, m in self.pooled_.items()
        }
        return self.groups_

    def coherence(self) -> dict[str, Any]:
        """GO semantic coherence per source (:mod:`.coherence`; needs the ontology)."""
        from plmsae.analysis.coherence import coherence

        if self.ontology is None:
            self.coherence_: dict[str, Any] = {"note": "no ontology given", "sources": {}}
            return self.coherence_
        rows = self.concepts_[self.tested_]
        tested = {str(c): g["concept"].tolist() for c, g in rows.groupby("category")}
        self.coherence_ = coherence(
            self.ontology,
            self.pairs_,
            tested,
            sources=list(dict.fromkeys(self.pair_counts_["source"])),
            seed=self.cfg.seed,
        )
        return self.coherence_

    # -- 7. summary ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """``summary.json`` (per source and category, headline, coherence, training overlap),
        ``features.parquet`` (all columns) and ``run.json`` (inputs, settings)."""
        from plmsae.analysis.headline import headline
        from plmsae.analysis.overlap import training_overlap
        from plmsae.analysis.redundancy import redundancy_block
        from plmsae.analysis.summary import category_tested

        split, assoc = self.split_, self.pairs_
        n_features = {s: int(m.shape[1]) for s, m in self.pooled_.items()}
        out = summarize(
            n_features,
            assoc,
            self.pair_counts_,
            self.residue_associations_,
            self.concepts_,
            category_tested(self.concepts_, self.tested_),
        )
        sig = assoc[_associated(assoc)]
        for s in n_features:
            out[s]["redundancy"] = redundancy_block(self.groups_[s], sig[sig["source"] == s])
        out["headline"] = headline(
            assoc,
            self.residue_associations_ if self.level == "residue" else None,
            n_features,
            unique_features={s: out[s]["redundancy"]["n_groups"] for s in n_features},
            fraction_associated={s: out[s]["fraction_associated"] for s in n_features},
            seed=self.cfg.seed,
        )
        out["coherence"] = self.coherence_
        self.overlap_ = training_overlap(self.sae.cfg, self.ids, split)
        out["training_overlap"] = self.overlap_
        out["settings"] = self.settings | {
            "split_method_used": self.split_method_used_,
            "n_proteins": len(self.ids),
            "n_validation": int((split == "validation").sum()),
            "n_test": int((split == "test").sum()),
        }
        self.summary_ = out
        _write_parquet(self._full_features(), self.out / assocdir.FEATURES)
        write_json(self.out / assocdir.SUMMARY, self.summary_)
        write_json(self.out / assocdir.RUN, self._run_record())
        return self.summary_

    def _full_features(self) -> pd.DataFrame:
        """features.parquet with the redundancy group, best concept, kind and plain label."""
        from plmsae.analysis.specificity import feature_columns

        parts = []
        res = self.residue_associations_
        for s in self.pooled_:
            base = self.features_[self.features_["source"] == s].sort_values("feature")
            base = base.assign(group=self.groups_[s].group)
            parts.append(
                feature_columns(
                    base,
                    self.pairs_[self.pairs_["source"] == s],
                    res[res["source"] == s] if len(res) else res,
                    self.concepts_,
                )
            )
        return pd.concat(parts, ignore_index=True)

    def _run_record(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            **self.inputs,
            "model": self.store.meta.get("model"),
            "layer": self.layer,
            "level": self.level,
            "pooling": cfg.pool if self.level == "residue" else "mean",  # protein: the store's mean
            "thresholds": cfg.thresholds,
            "neuron_baseline": cfg.neuron_baseline,
            "split": {
                "method": self.split_method_used_,
                "min_seq_id": cfg.min_seq_id,
                "coverage": cfg.coverage,
                "fractions": cfg.split_fractions,
                "seed": cfg.seed,
            },
            "training_overlap": self.overlap_,
            "settings": self.settings,
            "settings_sha256": self.run_hash,
            "timings": self.timings,
            "plmsae_version": VERSION,
        }

    def result(self) -> AssociateResult:
        """What the run found (after :meth:`summary`)."""
        s = self.summary_["settings"]
        head = self.summary_.get("headline", {})
        return AssociateResult(
            out=self.out,
            sources={
                k: SourceCounts.from_summary(self.summary_[k], head.get("sources", {}).get(k))
                for k in SOURCES
                if k in self.summary_
            },
            n_proteins=s["n_proteins"],
            n_validation=s["n_validation"],
            n_test=s["n_test"],
            split_method=s["split_method_used"],
            level=self.level,
            timings=dict(self.timings),
            reused=list(self.reused),
            headline=head,
            training_overlap=self.summary_.get("training_overlap", {}),
        )

    # -- records and helpers ---------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "pool": cfg.pool,
            "thresholds": cfg.thresholds,
            "min_concept": cfg.min_concept,
            "max_concept_fraction": cfg.max_concept_fraction,
            "min_both": cfg.min_both,
            "split_method": cfg.split_method,
            "min_seq_id": cfg.min_seq_id,
            "coverage": cfg.coverage,
            "split_fractions": cfg.split_fractions,
            "baselines": cfg.baselines,
            "neuron_baseline": cfg.neuron_baseline,
            "n_neuron": self.n_neuron if cfg.baselines else 0,
            "n_random": self.n_random,
            "sequence_concepts": bool(cfg.sequence_concepts and self.level == "residue"),
            "seed": cfg.seed,
            "layer": self.layer,
            "level": self.level,
            "select_split": "validation",
            "report_split": "test",
            "replication": "the same pairs scored again with the roles swapped (threshold "
            "chosen on test, statistics on validation); replicated = associated both ways",
            "population": "per category: proteins of the store with >= 1 annotation in it",
            "concept_filter": ">= min_concept proteins in the population and <= "
            "max_concept_fraction of it on each of validation and test",
            "associated": f"q < {Q_MAX} and precision >= {PRECISION_MIN} on test "
            f"(residue concepts: F1 >= {RESIDUE_F1_MIN} on test)",
            "q_value_family": "Benjamini-Hochberg per source x category",
            "odds_ratio": "Haldane-Anscombe +0.5 on every cell when a cell is 0",
            "random_directions": "unit Gaussian directions on centred inputs, bias matched to the "
            "SAE's median live-feature density on a calibration sample",
        }

    def _inputs(self) -> dict[str, Any]:
        from plmsae.sae.checkpoint import WEIGHTS_FILE

        cfg = self.cfg
        return {
            "sae": str(cfg.sae.resolve()),
            "sae_sha256": _maybe_hash(cfg.sae / WEIGHTS_FILE),
            "store": str(cfg.store.resolve()),
            "annotations": str(cfg.annotations.resolve()),
            "annotations_sha256": _maybe_hash(cfg.annotations),
            "ontology": str(cfg.ontology.resolve()) if cfg.ontology is not None else None,
            "ontology_sha256": _maybe_hash(cfg.ontology),
        }

    def _state(self) -> dict:
        p = self.out / assocdir.STATE
        return read_json(p) if p.exists() else {}

    def _set_state(self, **kv: Any) -> None:
        write_json(self.out / assocdir.STATE, self._state() | kv)

    def _sequences(self) -> list[str] | None:
        seqs = self._sequence_map(required=True)
        return None if seqs is None else [seqs[p] for p in self.ids]

    def _sequence_map(self, required: bool = False) -> dict[str, str] | None:
        """protein id -> sequence (:func:`sequences_for`), read once; None when unknown. Missing
        sequences raise when ``required`` (clustering), else they only turn the sequence-based
        parts off (with a warning)."""
        if not self._seq_loaded:
            try:
                seqs = sequences_for(self.ids, self.cfg.fasta, self.store, self.annotations)
            except InputError:
                if required:
                    raise
                log.warning("sequences of some proteins are missing: sequence-based parts off")
                seqs = None
            self._seq_map = None if seqs is None else dict(zip(self.ids, seqs))
            self._seq_loaded = True
        return self._seq_map


def _associated(df: pd.DataFrame) -> np.ndarray:
    return ((df["q_value"] < Q_MAX) & (df["precision"] >= PRECISION_MIN)).to_numpy()


def notable(table: pd.DataFrame) -> np.ndarray:
    """The rows of an associations table that the steps after the statistics read: associated
    (q < Q_MAX and precision >= PRECISION_MIN) or recovered (F1 >= RECOVERED_F1)."""
    return _associated(table) | (table["f1"] >= RECOVERED_F1).to_numpy()


def _no_pairs() -> pd.DataFrame:
    return pd.DataFrame(columns=ASSOC_COLUMNS)


def associated_pairs(tables: Iterable[pd.DataFrame]) -> pd.MultiIndex:
    """(feature, concept) of the associated pairs of one source's tables (its categories)."""
    cols = ["feature", "concept"]
    rows = [t.loc[_associated(t), cols] for t in tables]
    return pd.MultiIndex.from_frame(pd.concat(rows) if rows else pd.DataFrame(columns=cols))


def mark_replicated(main: pd.DataFrame, replicated: pd.MultiIndex) -> pd.DataFrame:
    """``main`` (pairs reported on test) with ``replicated`` = associated there AND among
    ``replicated`` (the associated pairs of the same source scored with the splits' roles
    swapped, :func:`associated_pairs`)."""
    hit = pd.MultiIndex.from_frame(main[["feature", "concept"]]).isin(replicated)
    main["replicated"] = _associated(main) & hit
    return main


@stage_function(AssociateConfig)
def associate(cfg: AssociateConfig) -> AssociateResult:
    """Associate SAE features (and neuron / random baselines) with GO terms, families,
    locations and residue-level concepts; writes ASSOC_DIR (see docs/design.md) and returns an
    :class:`AssociateResult`."""
    from plmsae.data.annotations import read_annotations
    from plmsae.data.ontology import Ontology
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.checkpoint import load_sae

    store = ActivationStore(cfg.store)
    model = store.meta.get("model")
    sae = load_sae(cfg.sae, d_in=store.d_model, layer=cfg.layer, model=model)
    ontology = Ontology.load(cfg.ontology) if cfg.ontology is not None else None
    annotations = read_annotations(cfg.annotations, ontology)
    return Associator(cfg, store, sae, annotations, ontology).run()


# --- helpers -----------------------------------------------------------------------------------


def _resolve_layer(store: ActivationStore, layer: int | None) -> int:
    """The store layer to read: ``layer``, or the store's only one."""
    if layer is None and len(store.layers) == 1:
        layer = store.layers[0]
    if layer not in store.layers:
        raise InputError(
            f"the store has layers {store.layers}, not the SAE's layer {layer}.",
            path=store.path,
            fix="embed that layer, or pass --layer.",
        )
    return int(layer)


def _maybe_hash(path: Path | None) -> str | None:
    return sha256_file(path) if path is not None and Path(path).is_file() else None


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def sequences_for(
    ids: list[str], fasta: Path | None, store: ActivationStore, annotations: Annotations
) -> list[str] | None:
    """Sequences for clustering, in ``ids`` order: from ``fasta``, else the FASTA the store was
    embedded from, else the annotations' Sequence column; None when none is known."""
    from plmsae.data.fasta import read_fasta

    path = fasta
    if path is None:
        cand = (store.meta.get("input") or {}).get("path")
        if cand and Path(cand).is_file():
            path = Path(cand)
    seqs: dict[str, str] = {}
    if path is not None:
        seqs = {p.id: p.sequence for p in read_fasta(path)}
    elif annotations.sequences:
        seqs = dict(annotations.sequences)
    else:
        return None
    missing = [p for p in ids if p not in seqs]
    if missing:
        raise InputError(
            f"{len(missing)} proteins of the store have no sequence here (first: {missing[0]}).",
            path=path,
            fix="pass --fasta with the sequences the store was embedded from.",
        )
    return [seqs[p] for p in ids]


def concept_table(
    ann: Annotations, ids: list[str], builtin: SequenceConcepts | None = None
) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """``concepts.parquet`` rows (category order GO:BP, GO:MF, GO:CC, GO, family, location, then
    others, residue last: UniProt residue features sorted, then the ``builtin`` sequence
    concepts carried by at least one protein) and the protein x concept 0/1 matrix
    (int8 CSR [len(ids), n_concepts])."""
    index = {p: i for i, p in enumerate(ids)}
    order = ["GO:BP", "GO:MF", "GO:CC", "GO", "family", "location"]
    cats = sorted(ann.protein_concepts, key=lambda c: (order.index(c) if c in order else 99, c))
    if "GO" in cats and not any(c.startswith("GO:") for c in cats):
        log.warning(
            "GO terms were read without an ontology: not propagated to ancestors and not "
            "split by namespace. Pass --ontology for the standard analysis."
        )
    rows: list[int] = []
    cols: list[int] = []
    concept_ids: list[str] = []
    cat_of: list[str] = []
    for cat in cats:
        by_protein = ann.protein_concepts[cat]
        terms = sorted({t for p, ts in by_protein.items() if p in index for t in ts})
        t_index = {t: len(concept_ids) + i for i, t in enumerate(terms)}
        for p, ts in by_protein.items():
            if p in index:
                rows.extend([index[p]] * len(ts))
                cols.extend(t_index[t] for t in ts)
        concept_ids.extend(terms)
        cat_of.extend([cat] * len(terms))
    for c in sorted(ann.residue_concepts):
        prots = [p for p in ann.residue_concepts[c] if p in index]
        if prots:
            rows.extend(index[p] for p in prots)
            cols.extend([len(concept_ids)] * len(prots))
            concept_ids.append(c)
            cat_of.append("residue")
    names = dict(ann.concept_names)
    if builtin is not None:
        member = builtin.membership(ids).tocoo()
        carried = np.flatnonzero(np.bincount(member.col, minlength=len(builtin.names)))
        where = {c: len(concept_ids) + i for i, c in enumerate(carried.tolist())}
        keep = np.isin(member.col, carried)
        rows.extend(member.row[keep].tolist())
        cols.extend(where[c] for c in member.col[keep].tolist())
        concept_ids.extend(builtin.names[int(i)] for i in carried)
        cat_of.extend(["residue"] * len(carried))
        names |= {name: BUILTIN_NAMES[name] for name in builtin.names}
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(ids), len(concept_ids))
    )
    m.sum_duplicates()
    m.data[:] = 1
    df = pd.DataFrame(
        {
            "concept": concept_ids,
            "category": cat_of,
            "name": [names.get(c, c) for c in concept_ids],
            "n_proteins": np.asarray(m.sum(axis=0)).ravel().astype(np.int64),
        }
    )
    return df, m
