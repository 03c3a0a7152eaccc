"""Read an association directory (ASSOC_DIR, written by ``plmsae associate``; format in
docs/design.md) for the explain stage.

Only the parts the explainers need are loaded: proteins, concepts, the protein x concept
annotation matrix, per-protein activations per source, and the association table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from plmsae._util import InputError, read_json

SOURCES = ("sae", "neuron", "random")
_FIX = "re-run `plmsae associate` to write a complete association directory."


def _need(path: Path) -> Path:
    if not path.exists():
        raise InputError("missing file of the association directory.", path=path, fix=_FIX)
    return path


def _read_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    df = pd.read_parquet(_need(path))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"columns {missing} are missing (found {list(df.columns)}).", path=path, fix=_FIX
        )
    return df


def _read_npz(path: Path) -> sp.csr_matrix:
    try:
        return sp.load_npz(_need(path)).tocsr()  # load_npz refuses object arrays (no pickles)
    except (ValueError, OSError) as e:
        raise InputError(f"not a scipy sparse .npz file ({e}).", path=path, fix=_FIX) from e


@dataclass
class AssocDir:
    """An association directory, loaded lazily where it is large.

    ``proteins`` rows and ``annotations`` rows share one order; ``concepts`` rows and
    ``annotations`` columns share one order.
    """

    path: Path
    proteins: pd.DataFrame  # id, split, cluster, length, name
    concepts: pd.DataFrame  # concept, category, name, n_proteins
    annotations: sp.csr_matrix  # bool [n_proteins, n_concepts]
    associations: pd.DataFrame  # may be empty
    run: dict
    _acts: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> "AssocDir":
        path = Path(path)
        if not path.is_dir():
            raise InputError(
                "not a directory.",
                path=path,
                fix="pass the output directory of `plmsae associate`.",
            )
        proteins = _read_parquet(path / "proteins.parquet", ["id", "split", "cluster"])
        if "name" not in proteins.columns:
            proteins["name"] = ""
        proteins["name"] = proteins["name"].fillna("").astype(str)
        concepts = _read_parquet(path / "concepts.parquet", ["concept", "category", "name"])
        concepts["name"] = concepts["name"].fillna("").astype(str)
        annotations = _read_npz(path / "annotations.npz")
        if annotations.shape != (len(proteins), len(concepts)):
            raise InputError(
                f"annotation matrix has shape {annotations.shape}, expected "
                f"({len(proteins)} proteins, {len(concepts)} concepts).",
                path=path / "annotations.npz",
                fix=_FIX,
            )
        annotations = annotations.astype(bool).tocsr()
        if "n_proteins" not in concepts.columns:
            concepts["n_proteins"] = np.asarray(annotations.sum(0)).ravel()
        assoc_path = path / "associations.parquet"
        associations = (
            pd.read_parquet(assoc_path)
            if assoc_path.exists()
            else pd.DataFrame(
                columns=[
                    "source",
                    "feature",
                    "concept",
                    "category",
                    "q_value",
                    "precision",
                    "recall",
                    "f1",
                ]
            )
        )
        run = read_json(path / "run.json") if (path / "run.json").exists() else {}
        return cls(
            path,
            proteins.reset_index(drop=True),
            concepts.reset_index(drop=True),
            annotations,
            associations,
            run,
        )

    def available_sources(self) -> list[str]:
        return [s for s in SOURCES if (self.path / "activations" / f"{s}.npz").exists()]

    def activations(self, source: str) -> sp.csc_matrix:
        """Per-protein activations of one source, float32 CSC [n_proteins, n_features]."""
        if source not in self._acts:
            p = self.path / "activations" / f"{source}.npz"
            if not p.exists():
                raise InputError(
                    f"no activations for source {source!r}.",
                    path=p,
                    fix=f"choose from {self.available_sources()} with --source.",
                )
            x = _read_npz(p)
            if x.shape[0] != len(self.proteins):
                raise InputError(
                    f"{x.shape[0]} rows, but proteins.parquet has {len(self.proteins)}.",
                    path=p,
                    fix=_FIX,
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

    def association_splits(self) -> set[str]:
        """The splits the association statistics were computed on (empty when not recorded)."""
        a = self.associations
        return set(a["split"].astype(str).unique()) if "split" in a.columns and len(a) else set()

    def drop_associations_on(self, split: str) -> None:
        """Forget association rows computed on ``split`` (the held-out proteins)."""
        if split and "split" in self.associations.columns:
            self.associations = self.associations[self.associations["split"].astype(str) != split]

    @property
    def level(self) -> str:
        return str(self.run.get("level", "protein"))
