"""``plmsae variants SEQUENCE --mutations A23G,... | --dms FILE``: what a mutation does to the
features.

The wild type and every variant are embedded the way ``plmsae embed`` embeds (same batching and
long-sequence windows, :func:`plmsae.atlas.annotate.embed_residues`) and encoded with the SAE.
For each variant and feature:

- per residue (``site_*``): the activation at the mutated residue(s) (summed over the sites of a
  multi-mutant), wild type and variant, and the change;
- pooled (``pooled_*``): the protein's activation (max over residues, or the association run's
  pooling with ``--assoc``), wild type and variant, and the change; ``gained`` = from 0 to
  active, ``lost`` = from active to 0, ``up``/``down`` otherwise;
- ``peak``: the residue (1-based) where the feature's activation changes most (a mutation can
  switch a feature on or off away from the site).

Changes smaller than :data:`NOISE` x the wild type's largest pooled activation are set to 0 (an
identical sequence gives exactly zero). With a DMS table (mutation, score), each feature's change
is correlated with the score over the variants (Spearman's rho, BH q-values per level), so one can
see which features track fitness. Written to ``--out``: ``variants``, ``changes`` and
``correlations`` as TSV and Parquet, and ``variants.html`` (atlas style, opens from disk).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from plmsae._util import InputError, atomic_write
from plmsae.apply.common import (
    Loaded,
    feature_labels,
    label_of,
    load_sae_and_model,
    read_one_protein,
    write_tables,
)
from plmsae.config import StageConfig, argument, option, stage_function

log = logging.getLogger(__name__)

#: changes below this fraction of the wild type's largest pooled activation count as zero
NOISE = 1e-5
#: variants embedded per forward chunk (bounds memory)
CHUNK = 64
#: a feature is correlated with the DMS score only when it changes in at least this many variants
MIN_CHANGED = 3
#: at most this many variants get a section on the HTML page (the most changed first)
PAGE_VARIANTS = 60
#: the files written into --out
VARIANTS_TABLE, CHANGES_TABLE, CORRELATIONS_TABLE, PAGE = (
    "variants",
    "changes",
    "correlations",
    "variants.html",
)
_SUBSTITUTION = re.compile(r"^([A-Z])(\d+)([A-Z])$")
_WILD_TYPE = {"wt", "_wt", "wildtype", "wild-type", "wild_type"}
_MUTATION_COLUMNS = ("mutation", "mutations", "mutant", "variant")
_SCORE_COLUMNS = ("score", "dms_score", "fitness")


@dataclass
class VariantsConfig(StageConfig):
    """Which SAE features each amino-acid substitution gains or loses (at the site and pooled
    over the protein), and with a DMS table which features track the measured score.

    Mutations are 1-based (A23G: residue 23 is A, becomes G); a multi-mutant joins substitutions
    with ':' (A23G:K40R). --out DIR gets the tables (TSV and Parquet) and an HTML page."""

    sequence: str = argument(
        help="The wild-type protein: a sequence in one-letter code, or a FASTA file with one "
        "record."
    )
    sae: Path = option(help="SAE checkpoint directory (from `plmsae train`).")
    mutations: list[str] | None = option(
        None, help="Variants such as A23G or A23G:K40R (1-based positions)."
    )
    dms: Path | None = option(
        None,
        help="DMS table (TSV or CSV with a header): a mutation column (mutation, mutant or "
        "variant) and a score column (score or DMS_score).",
    )
    model: str | None = option(
        None, help="ESM-2 model to embed with (default: the one recorded in the SAE's cfg.json)."
    )
    assoc: Path | None = option(
        None, help="Association directory of this SAE, for feature labels and its pooling."
    )
    out: Path | None = option(
        None, help="Directory for the tables (TSV and Parquet) and variants.html."
    )
    top: int = option(10, help="Features listed per variant (largest changes first).")
    device: str = option("cpu", help="torch device (cpu, cuda).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mutations and self.dms is None:
            raise InputError("no variants given.", fix="pass --mutations A23G,K40R or --dms TABLE.")
        if self.top < 1:
            self.reject("top", "must be at least 1.", "e.g. --top 10.")


@dataclass(frozen=True)
class Variant:
    """One variant: ``substitutions`` are (0-based position, wild-type residue, new residue);
    none for the wild type itself."""

    name: str
    substitutions: tuple[tuple[int, str, str], ...]
    score: float | None = None

    @property
    def sites(self) -> list[int]:
        return [p for p, _, _ in self.substitutions]

    def apply(self, sequence: str) -> str:
        seq = list(sequence)
        for pos, _, new in self.substitutions:
            seq[pos] = new
        return "".join(seq)


def parse_variant(text: str, sequence: str, score: float | None = None) -> Variant:
    """``A23G`` or ``A23G:K40R`` (1-based) checked against ``sequence``; ``WT`` = no change."""
    name = str(text).strip()
    if name.lower() in _WILD_TYPE:
        return Variant(name, (), score)
    subs = []
    for part in name.replace(";", ":").split(":"):
        m = _SUBSTITUTION.match(part.strip().upper())
        if not m:
            raise InputError(
                f"{part!r} is not a substitution like A23G.",
                record=f"variant {name}",
                fix="write wild-type residue, 1-based position, new residue (A23G); join the "
                "substitutions of a multi-mutant with ':'.",
            )
        wt, pos, new = m.group(1), int(m.group(2)), m.group(3)
        if not 1 <= pos <= len(sequence):
            raise InputError(
                f"position {pos} is outside the sequence (1..{len(sequence)}).",
                record=f"variant {name}",
                fix="number residues from 1 on the wild-type sequence given.",
            )
        if sequence[pos - 1] != wt:
            raise InputError(
                f"residue {pos} is {sequence[pos - 1]}, not {wt}.",
                record=f"variant {name}",
                fix="check that the variants refer to this wild-type sequence (1-based).",
            )
        subs.append((pos - 1, wt, new))
    if len({p for p, _, _ in subs}) != len(subs):
        raise InputError(
            "a position is mutated twice.", record=f"variant {name}", fix="list it once."
        )
    return Variant(name, tuple(subs), score)


def read_dms(path: Path, sequence: str) -> list[Variant]:
    """Variants and scores of a DMS table (rows without a score are dropped, with a log line)."""
    if not Path(path).is_file():
        raise InputError("DMS table not found.", path=path, fix="check --dms.")
    try:
        df = pd.read_csv(path, sep=None, engine="python")
    except (ValueError, pd.errors.ParserError) as e:
        raise InputError(f"cannot read it as TSV/CSV ({e}).", path=path, fix="check --dms.") from e
    cols = {str(c).strip().lower(): c for c in df.columns}
    mcol = next((cols[c] for c in _MUTATION_COLUMNS if c in cols), None)
    scol = next((cols[c] for c in _SCORE_COLUMNS if c in cols), None)
    if mcol is None or scol is None:
        raise InputError(
            f"needs a mutation column ({', '.join(_MUTATION_COLUMNS)}) and a score column "
            f"({', '.join(_SCORE_COLUMNS)}); found {list(df.columns)}.",
            path=path,
            fix="rename the columns.",
        )
    scores = pd.to_numeric(df[scol], errors="coerce")
    if scores.isna().any():
        log.warning("%s: %d rows without a numeric score dropped", path, int(scores.isna().sum()))
    out = []
    for i, (m, s) in enumerate(zip(df[mcol], scores)):
        if pd.isna(s):
            continue
        try:
            out.append(parse_variant(str(m), sequence, float(s)))
        except InputError as e:
            raise InputError(e.problem, path=path, record=i + 2, fix=e.fix) from None
    if not out:
        raise InputError("no variant with a score.", path=path, fix="check --dms.")
    return out


@dataclass
class VariantsResult:
    """The features each variant changes.

    variants: one row per variant (``variant, positions, score, n_gained, n_lost, n_site_changed,
    l1_site, l1_pooled, top_feature, top_label``). changes: the ``top`` largest changes per
    variant (``variant, feature, label, site_wt, site_mut, site_delta, site_change, pooled_wt,
    pooled_mut, pooled_delta, pooled_change, peak``). correlations (with a DMS table): per level
    (site, pooled) and feature changed in >= 3 variants, ``rho, p_value, q_value, n_changed,
    mean_delta, label``, strongest first; None without scores. files: what was written.
    """

    protein: str
    length: int
    variants: pd.DataFrame
    changes: pd.DataFrame
    correlations: pd.DataFrame | None
    settings: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def records(df: pd.DataFrame | None) -> list[dict] | None:
            if df is None:
                return None
            return df.astype(object).where(df.notna(), None).to_dict(orient="records")

        return {
            "protein": self.protein,
            "length": self.length,
            "settings": self.settings,
            "variants": records(self.variants),
            "changes": records(self.changes),
            "correlations": records(self.correlations),
            "files": [str(p) for p in self.files],
        }


@dataclass
class _Deltas:
    """Per-variant change vectors (sparse rows) and what the page draws."""

    site: list[sp.csr_matrix] = field(default_factory=list)
    pooled: list[sp.csr_matrix] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # changes rows
    tracks: list[np.ndarray | None] = field(default_factory=list)  # top feature along the variant
    starts: list[int] = field(default_factory=list)  # first row of each variant in ``rows``
    top: list[int] = field(default_factory=list)  # each variant's largest change (-1: none)
    gained: list[int] = field(default_factory=list)  # pooled: features from 0 to active
    lost: list[int] = field(default_factory=list)  # pooled: features from active to 0


class VariantScanner:
    """Scores the variants of ``cfg`` (module docstring). ``loaded`` (SAE and model) and
    ``labels`` (feature -> info) may be passed when already loaded."""

    def __init__(
        self, cfg: VariantsConfig, *, loaded: Loaded | None = None, labels: dict | None = None
    ):
        self.cfg, self.loaded, self.labels = cfg, loaded, labels

    def run(self) -> VariantsResult:
        self.load()
        self.parse()
        self.encode()
        result = self.result()
        if self.cfg.out is not None:
            result.files = self.write(result)
        return result

    def load(self) -> None:
        """Protein, SAE, model, labels and pooling."""
        from plmsae.analysis.assocdir import AssocDir

        cfg = self.cfg
        self.protein = read_one_protein(cfg.sequence)
        if self.loaded is None:
            self.loaded = load_sae_and_model(cfg.sae, cfg.model, cfg.device)
        if self.labels is None:
            self.labels = feature_labels(cfg.assoc)
        run = AssocDir(cfg.assoc).run if cfg.assoc is not None else {}
        self.pooling = str(run.get("pooling") or "max")

    def parse(self) -> list[Variant]:
        """The variants of ``--mutations`` and ``--dms``, in that order."""
        seq = self.protein.sequence
        found = [parse_variant(m, seq) for m in self.cfg.mutations or []]
        if self.cfg.dms is not None:
            found += read_dms(self.cfg.dms, seq)
        self.variants_ = found
        return found

    def encode(self) -> _Deltas:
        """Embed and encode the wild type and the variants (in chunks); the changes."""
        from plmsae.atlas.annotate import embed_residues
        from plmsae.data.fasta import Protein

        assert self.loaded is not None
        lm, layer, wt = self.loaded.lm, self.loaded.layer, self.protein
        self.z_wt = self._encode(embed_residues(lm, [wt], layer)[0])
        self.pool_wt = self._pool(self.z_wt)
        self.tol = NOISE * max(1.0, float(self.pool_wt.max(initial=0.0)))
        d = _Deltas()
        for s in range(0, len(self.variants_), CHUNK):
            chunk = self.variants_[s : s + CHUNK]
            prots = [Protein(f"v{s + i}", v.apply(wt.sequence), "") for i, v in enumerate(chunk)]
            for v, res in zip(chunk, embed_residues(lm, prots, layer)):
                self._compare(v, self._encode(res), d)
        self.deltas_ = d
        return d

    def _encode(self, residues: np.ndarray) -> np.ndarray:
        import torch

        assert self.loaded is not None
        with torch.no_grad():
            x = torch.from_numpy(residues).to(self.cfg.device)
            return self.loaded.sae.encode(x).float().cpu().numpy()

    def _pool(self, z: np.ndarray) -> np.ndarray:
        return z.mean(0) if self.pooling == "mean" else z.max(0)

    def _compare(self, v: Variant, z: np.ndarray, d: _Deltas) -> None:
        """The changes of one variant: sparse rows for the correlations, the top features'
        rows, the track of its top feature."""
        diff = z - self.z_wt
        diff[np.abs(diff) <= self.tol] = 0.0
        sites = v.sites
        site = diff[sites].sum(0) if sites else np.zeros(diff.shape[1], np.float32)
        pooled = self._pool(z) - self.pool_wt
        pooled[np.abs(pooled) <= self.tol] = 0.0
        after = self.pool_wt + pooled
        d.gained.append(int(((self.pool_wt <= 0) & (after > 0)).sum()))
        d.lost.append(int(((self.pool_wt > 0) & (after <= 0)).sum()))
        d.site.append(sp.csr_matrix(site[None, :]))
        d.pooled.append(sp.csr_matrix(pooled[None, :]))
        size = np.maximum(np.abs(site), np.abs(pooled))
        order = [f for f in np.argsort(-size, kind="stable")[: self.cfg.top] if size[f] > 0]
        site_wt = self.z_wt[sites].sum(0) if sites else np.zeros_like(site)
        d.starts.append(len(d.rows))
        d.top.append(int(order[0]) if order else -1)
        for f in map(int, order):
            d.rows.append(
                {
                    "variant": v.name,
                    "feature": f,
                    "label": label_of(self.labels or {}, f),
                    "site_wt": float(site_wt[f]),
                    "site_mut": float(site_wt[f] + site[f]),
                    "site_delta": float(site[f]),
                    "site_change": _change(float(site_wt[f]), float(site[f])),
                    "pooled_wt": float(self.pool_wt[f]),
                    "pooled_mut": float(self.pool_wt[f] + pooled[f]),
                    "pooled_delta": float(pooled[f]),
                    "pooled_change": _change(float(self.pool_wt[f]), float(pooled[f])),
                    "peak": int(np.argmax(np.abs(diff[:, f]))) + 1,
                }
            )
        d.tracks.append(z[:, int(order[0])].copy() if order else None)

    def result(self) -> VariantsResult:
        d = self.deltas_
        changes = pd.DataFrame(d.rows, columns=_CHANGE_COLUMNS)
        site, pooled = sp.vstack(d.site).tocsr(), sp.vstack(d.pooled).tocsr()
        table = variant_table(self.variants_, site, pooled)
        table["n_gained"], table["n_lost"], table["top_feature"] = d.gained, d.lost, d.top
        table["top_label"] = [label_of(self.labels or {}, f) if f >= 0 else "" for f in d.top]
        scores = np.array([np.nan if v.score is None else v.score for v in self.variants_])
        corr = None
        if np.isfinite(scores).sum() >= MIN_CHANGED:
            corr = correlations({"site": site, "pooled": pooled}, scores, self.labels or {})
        assert self.loaded is not None
        spec = self.loaded.lm.spec
        settings = {
            "model": spec.description or spec.id,
            "layer": self.loaded.layer,
            "d_sae": self.loaded.d_sae,
            "pooling": self.pooling,
            "sae": str(self.cfg.sae),
            "assoc": None if self.cfg.assoc is None else str(self.cfg.assoc),
            "noise": NOISE,
        }
        return VariantsResult(
            self.protein.id, len(self.protein.sequence), table, changes, corr, settings
        )

    def write(self, result: VariantsResult) -> list[Path]:
        """The tables and the page into ``--out``."""
        from plmsae.apply.common import out_dir
        from plmsae.apply.pages import variants_page

        assert self.cfg.out is not None
        out = out_dir(self.cfg.out)
        files = write_tables(result.variants, out, VARIANTS_TABLE)
        files += write_tables(result.changes, out, CHANGES_TABLE)
        if result.correlations is not None:
            files += write_tables(result.correlations, out, CORRELATIONS_TABLE)
        page = variants_page(self, result)
        with atomic_write(out / PAGE, "w") as fh:
            fh.write(page)
        return [*files, out / PAGE]


_CHANGE_COLUMNS = [
    "variant",
    "feature",
    "label",
    "site_wt",
    "site_mut",
    "site_delta",
    "site_change",
    "pooled_wt",
    "pooled_mut",
    "pooled_delta",
    "pooled_change",
    "peak",
]


def _change(before: float, delta: float) -> str:
    if delta == 0:
        return ""
    after = before + delta
    if before <= 0 < after:
        return "gained"
    if after <= 0 < before:
        return "lost"
    return "up" if delta > 0 else "down"


def variant_table(
    variants: list[Variant], site: sp.csr_matrix, pooled: sp.csr_matrix
) -> pd.DataFrame:
    """One row per variant: how much changed (``n_gained``, ``n_lost`` and the top feature are
    filled in by the scanner)."""
    names = [v.name for v in variants]
    return pd.DataFrame(
        {
            "variant": names,
            "positions": [",".join(str(p + 1) for p in v.sites) for v in variants],
            "score": [np.nan if v.score is None else v.score for v in variants],
            "n_gained": 0,
            "n_lost": 0,
            "n_site_changed": np.diff(site.indptr).astype(np.int64),
            "l1_site": np.asarray(abs(site).sum(axis=1)).ravel(),
            "l1_pooled": np.asarray(abs(pooled).sum(axis=1)).ravel(),
            "top_feature": -1,
            "top_label": "",
        }
    )


def correlations(
    deltas: dict[str, sp.csr_matrix], scores: np.ndarray, labels: dict[int, dict]
) -> pd.DataFrame:
    """Spearman's rho of each feature's change with the score, per level, over the variants
    with a score; features changed in fewer than :data:`MIN_CHANGED` variants are not tested.
    Two-sided p-values (t approximation), BH q-values per level."""
    from scipy import stats

    from plmsae.analysis.stats import bh_qvalues

    ok = np.isfinite(scores)
    y = stats.rankdata(scores[ok])
    parts = []
    for level, m in deltas.items():
        m = m[np.flatnonzero(ok)].tocsc()
        cols = np.flatnonzero(np.diff(m.indptr) >= MIN_CHANGED)
        if not len(cols):
            continue
        x = stats.rankdata(m[:, cols].toarray(), axis=0)
        rho = _pearson_columns(x, y)
        n = int(ok.sum())
        t = rho * np.sqrt(np.maximum(n - 2, 1) / np.maximum(1e-12, 1 - rho**2))
        p = 2 * stats.t.sf(np.abs(t), df=max(n - 2, 1))
        p[~np.isfinite(rho)] = np.nan
        parts.append(
            pd.DataFrame(
                {
                    "level": level,
                    "feature": cols,
                    "rho": rho,
                    "p_value": p,
                    "q_value": bh_qvalues(p),
                    "n_changed": np.diff(m.indptr)[cols],
                    "mean_delta": np.asarray(m[:, cols].mean(axis=0)).ravel(),
                    "label": [label_of(labels, int(f)) for f in cols],
                }
            )
        )
    columns = ["level", "feature", "rho", "p_value", "q_value", "n_changed", "mean_delta", "label"]
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values("p_value", kind="stable", na_position="last").reset_index(drop=True)


def _pearson_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of ``x`` [n, m] with ``y`` [n] (NaN for constant columns)."""
    xc = x - x.mean(0)
    yc = y - y.mean()
    denom = np.sqrt((xc**2).sum(0) * (yc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc[:, None]).sum(0) / denom
    return np.clip(r, -1.0, 1.0)


@stage_function(VariantsConfig)
def variants(cfg: VariantsConfig) -> VariantsResult:
    """The SAE features each variant of a protein gains or loses (at the site and pooled), and
    with a DMS table the features whose change tracks the score.

    Returns a :class:`VariantsResult`; with ``out`` the tables and an HTML page are written."""
    return VariantScanner(cfg).run()
