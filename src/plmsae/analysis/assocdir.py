"""The association directory (ASSOC_DIR): its file names, columns, constants and one lazy reader.

``plmsae associate`` writes it; ``explain`` adds explanations to it (their files are named in
:mod:`plmsae.interpret.explanations`); ``report``, ``annotate`` and ``compare`` read it. Every
module that touches an ASSOC_DIR goes through the names and the reader here (format:
docs/design.md, stage 4).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from plmsae._util import InputError, atomic_path, read_json

# --- file names ---------------------------------------------------------------------------------
RUN = "run.json"
STATE = ".state.json"
SUMMARY = "summary.json"
PROTEINS = "proteins.parquet"
CONCEPTS = "concepts.parquet"
ANNOTATIONS = "annotations.npz"
ACTIVATIONS = "activations"  # folder of {source}.npz
FEATURES = "features.parquet"
ASSOCIATIONS = "associations.parquet"
RESIDUE_ASSOCIATIONS = "residue_associations.parquet"

# --- what the files hold ------------------------------------------------------------------------
#: feature sources: the SAE and its two baselines
SOURCES = ("sae", "neuron", "random")
SOURCE_NAMES = {"sae": "SAE features", "neuron": "model neurons", "random": "random features"}
#: concept categories in display order, with readable names
CATEGORY_NAMES = {
    "GO:BP": "GO biological process",
    "GO:MF": "GO molecular function",
    "GO:CC": "GO cellular component",
    "GO": "GO term",
    "family": "protein family",
    "location": "subcellular location",
    "residue": "residue feature",
}
PROTEIN_COLUMNS = ["id", "split", "cluster", "length", "name"]
CONCEPT_COLUMNS = ["concept", "category", "name", "n_proteins"]
FEATURE_COLUMNS = ["source", "feature", "density", "max_activation", "top_proteins"]
#: features.parquet after the summary step: FEATURE_COLUMNS, the residue profile, the redundancy
#: group, the best concept, kind and plain label (plmsae.analysis.specificity); value when absent
FEATURE_EXTRA_COLUMNS: dict[str, Any] = {
    "residue_density": np.nan,  # fraction of residues with activation > 0 (NaN: protein level)
    "top_amino_acid": "",
    "top_amino_acid_share": np.nan,
    "position_bias": "",  # "N-terminal" | "C-terminal" | ""
    "position_mean": np.nan,  # mean relative position of the activation mass, 0..1
    "group": -1,  # redundancy group: smallest feature index of the group
    "best_concept": "",
    "best_concept_name": "",
    "best_concept_category": "",
    "best_concept_f1": np.nan,
    "best_concept_q": np.nan,  # NaN for residue concepts (no test)
    "kind": "",  # "sequence-chemistry" | "dense" | "dead" | "specific"
    "plain_label": "",  # e.g. "fires on every glutamine (Q)"; "" for specific features
}
FEATURE_KINDS = ("sequence-chemistry", "dense", "dead", "specific")
ASSOC_COLUMNS = [
    "source",
    "feature",
    "concept",
    "category",
    "threshold",
    "n_active",
    "n_concept",
    "n_both",
    "n_population",
    "p_value",
    "q_value",
    "precision",
    "recall",
    "f1",
    "odds_ratio",
    "auroc",
    "f1_validation",
    "split",
    "replicated",  # also associated with the splits' roles swapped (threshold chosen on test)
]
RESIDUE_COLUMNS = [
    "source",
    "feature",
    "concept",
    "category",
    "threshold",
    "n_true_positive",
    "n_active",
    "n_residues",
    "n_instances",
    "precision",
    "recall",
    "domain_recall",
    "f1",
    "f1_validation",
    "split",
]

# --- what "associated" means --------------------------------------------------------------------
Q_MAX = 0.05
PRECISION_MIN = 0.5
RESIDUE_F1_MIN = 0.5

_FIX = "re-run `plmsae associate` to write a complete association directory."


@contextlib.contextmanager
def parquet_parts(path: Path, columns: list[str]) -> Iterator[Callable[[pd.DataFrame], None]]:
    """Yield ``write(df)``, which appends the rows of ``df`` to the Parquet file ``path``, so that
    a table written in parts is never whole in memory. The file is renamed into place when the
    block ends without an error (:func:`plmsae._util.atomic_path`); with no rows written, it has
    ``columns`` and no rows. Every part has the columns and dtypes of the first one with rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp, contextlib.ExitStack() as stack:
        writer: pq.ParquetWriter | None = None

        def write(df: pd.DataFrame) -> None:
            nonlocal writer
            if not len(df):  # an empty part's str columns have no Arrow type to match
                return
            schema = None if writer is None else writer.schema
            table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
            if writer is None:
                writer = stack.enter_context(pq.ParquetWriter(tmp, table.schema))
            writer.write_table(table)

        yield write
        if writer is None:
            pd.DataFrame(columns=columns).to_parquet(tmp, index=False)


def activation_file(root: Path, source: str) -> Path:
    """Where the per-protein activations of ``source`` live in the ASSOC_DIR ``root``."""
    return Path(root) / ACTIVATIONS / f"{source}.npz"


def read_parquet(path: Path, columns: Iterable[str] = (), **kw: Any) -> pd.DataFrame:
    """A Parquet file of an ASSOC_DIR, with a clear error when it is missing, damaged or old."""
    if not path.exists():
        raise InputError("missing file of the association directory.", path=path, fix=_FIX)
    try:
        df = pd.read_parquet(path, **kw)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise InputError(
            f"cannot read it ({e}).",
            path=path,
            fix="the file is damaged; re-run the stage that wrote it.",
        ) from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"columns {missing} are missing (found {list(df.columns)}).",
            path=path,
            fix="re-run the stage that wrote it with this version of plmsae.",
        )
    return df


def read_npz(path: Path) -> sp.csr_matrix:
    """A sparse matrix of an ASSOC_DIR (``load_npz`` refuses object arrays: no pickles)."""
    if not path.exists():
        raise InputError("missing file of the association directory.", path=path, fix=_FIX)
    try:
        return sp.load_npz(path).tocsr()
    except (ValueError, OSError) as e:
        raise InputError(f"not a scipy sparse .npz file ({e}).", path=path, fix=_FIX) from e


class AssocDir:
    """An association directory, each part read on first use.

    ``proteins`` rows, ``annotations`` rows and activation rows share one order; ``concepts``
    rows and ``annotations`` columns share one order.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(
                "not a directory.",
                path=self.path,
                fix="pass the output directory of `plmsae associate`.",
            )
        self._acts: dict[str, sp.csc_matrix] = {}

    @classmethod
    def load(cls, path: str | Path) -> AssocDir:
        return cls(path)

    # -- small JSON files
    @functools.cached_property
    def run(self) -> dict:
        return read_json(self.path / RUN) if (self.path / RUN).exists() else {}

    @functools.cached_property
    def summary(self) -> dict:
        return read_json(self.path / SUMMARY) if (self.path / SUMMARY).exists() else {}

    @property
    def level(self) -> str:
        return str(self.run.get("level", "protein"))

    # -- tables
    @functools.cached_property
    def proteins(self) -> pd.DataFrame:
        """``id, split, cluster, length, name`` in activation-row order."""
        df = read_parquet(self.path / PROTEINS, ["id", "split", "cluster"])
        for col, default in (("length", 0), ("name", "")):
            if col not in df.columns:
                df[col] = default
        df["id"] = df["id"].astype(str)
        df["name"] = df["name"].fillna("").astype(str)
        return df.reset_index(drop=True)

    @functools.cached_property
    def concepts(self) -> pd.DataFrame:
        df = read_parquet(self.path / CONCEPTS, ["concept", "category"])
        if "name" not in df.columns:
            df["name"] = df["concept"]
        df["name"] = df["name"].fillna("").astype(str)
        return df.reset_index(drop=True)

    @functools.cached_property
    def concept_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.concepts["concept"])}

    @functools.cached_property
    def annotations(self) -> sp.csr_matrix:
        """bool CSR [n_proteins, n_concepts]."""
        m = read_npz(self.path / ANNOTATIONS)
        if m.shape != (len(self.proteins), len(self.concepts)):
            raise InputError(
                f"annotation matrix has shape {m.shape}, expected "
                f"({len(self.proteins)} proteins, {len(self.concepts)} concepts).",
                path=self.path / ANNOTATIONS,
                fix=_FIX,
            )
        return m.astype(bool).tocsr()

    def features(self, source: str = "sae") -> pd.DataFrame:
        """One row per feature of ``source``, sorted by feature."""
        df = read_parquet(
            self.path / FEATURES, ["source", "feature"], filters=[("source", "==", source)]
        )
        for col in ("density", "max_activation"):
            if col not in df.columns:
                df[col] = np.nan
        if "top_proteins" not in df.columns:
            df["top_proteins"] = [[] for _ in range(len(df))]
        for col, default in FEATURE_EXTRA_COLUMNS.items():  # directories of older versions
            if col not in df.columns:
                df[col] = default
        return df.sort_values("feature").reset_index(drop=True)

    @functools.cached_property
    def associations(self) -> pd.DataFrame:
        """Every tested (source, feature, concept, threshold) row; empty when none was tested."""
        if not (self.path / ASSOCIATIONS).exists():
            return pd.DataFrame(columns=ASSOC_COLUMNS)
        return read_parquet(self.path / ASSOCIATIONS, ["source", "feature", "concept", "q_value"])

    def read_associations(self, source: str, q_max: float | None = None) -> pd.DataFrame:
        """Rows of one source (and below ``q_max``), read with a Parquet filter: fast on large
        directories when only the significant rows are wanted."""
        filters: list[tuple[str, str, Any]] = [("source", "==", source)]
        if q_max is not None:
            filters.append(("q_value", "<", q_max))
        return read_parquet(
            self.path / ASSOCIATIONS, ["source", "feature", "concept", "q_value"], filters=filters
        )

    @functools.cached_property
    def residue_associations(self) -> pd.DataFrame:
        if not (self.path / RESIDUE_ASSOCIATIONS).exists():
            return pd.DataFrame(columns=RESIDUE_COLUMNS)
        return read_parquet(self.path / RESIDUE_ASSOCIATIONS, ["source", "feature", "concept"])

    # -- activations
    def available_sources(self) -> list[str]:
        return [s for s in SOURCES if activation_file(self.path, s).exists()]

    def activations(self, source: str) -> sp.csc_matrix:
        """Per-protein activations of one source, float32 CSC [n_proteins, n_features]."""
        if source not in self._acts:
            p = activation_file(self.path, source)
            if not p.exists():
                raise InputError(
                    f"no activations for source {source!r}.",
                    path=p,
                    fix=f"choose from {self.available_sources()}.",
                )
            x = read_npz(p)
            if x.shape[0] != len(self.proteins):
                raise InputError(
                    f"{x.shape[0]} rows, but {PROTEINS} has {len(self.proteins)}.", path=p, fix=_FIX
                )
            self._acts[source] = x.astype(np.float32).tocsc()
        return self._acts[source]

    def column(self, source: str, feature: int) -> np.ndarray:
        """Activations of one feature over all proteins, dense float32 [n_proteins]."""
        x = self.activations(source)
        if not 0 <= feature < x.shape[1]:
            raise InputError(
                f"feature {feature} does not exist (source {source!r} has {x.shape[1]} features).",
                path=self.path,
                fix=f"choose features in 0..{x.shape[1] - 1}.",
            )
        return np.asarray(x[:, feature].toarray()).ravel()

    # -- splits
    def association_splits(self) -> set[str]:
        """The splits the association statistics were computed on (empty when not recorded)."""
        a = self.associations
        return set(a["split"].astype(str).unique()) if "split" in a.columns and len(a) else set()

    def drop_associations_on(self, split: str) -> None:
        """Forget association rows computed on ``split`` (the held-out proteins)."""
        a = self.associations
        if split and "split" in a.columns:
            self.associations = a[a["split"].astype(str) != split]
