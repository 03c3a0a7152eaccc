"""Which features the explain stage explains, and the proteins each one is shown and scored on.

:func:`select_features` turns ``--features`` (or the default selection: the best-associated half
and a random half per source) into :class:`Job` s; :func:`prepare` draws each job's explanation
and held-out proteins with the band scheme of :mod:`.sampling`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from plmsae._util import InputError
from plmsae.analysis.assocdir import PRECISION_MIN, Q_MAX, AssocDir
from plmsae.interpret.sampling import Pools, band_sample, feature_rng, scale

MIN_ACTIVE_EXPLAIN = 5  # active proteins a feature needs among the explanation proteins
MIN_ACTIVE_HELDOUT = 2  # ... and among the held-out proteins, to be explained and scored
MIN_INACTIVE_HELDOUT = 2  # inactive held-out proteins: detection needs both classes
#: activity cutoff (fraction of the feature's max) of a feature without an association, when
#: the association grid has no positive threshold (else its smallest positive one, 0.15 by
#: default: on the demo it leaves 83 % of max-pooled neurons with inactive proteins, 0.5 % at 0)
DEFAULT_ACTIVE_FRACTION = 0.15
ACTIVITY = (
    "active = per-protein activation above a cutoff: the threshold (fraction of the feature's "
    "max, from the association grid) at which its best associated concept has the highest F1 "
    "on the explanation proteins; for features without an association the grid's smallest "
    "positive threshold ({default} of the max)"
)


def _empty() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass
class Job:
    """One feature to explain. The arrays are empty until :func:`prepare` fills them."""

    source: str
    feature: int
    selection: str  # "top-associated" | "random" | "user"
    cutoff: float = 0.0  # activity cutoff (absolute activation; :func:`activity_cutoffs`)
    explain_rows: np.ndarray = field(default_factory=_empty)  # rows of proteins.parquet
    heldout_rows: np.ndarray = field(default_factory=_empty)
    scaled: np.ndarray = field(default_factory=_empty)  # [n_proteins] activation scaled to 0..1
    skip: str = ""  # why the feature is not explained ("" = it is)

    @property
    def key(self) -> tuple[str, int]:
        return self.source, self.feature


def parse_features(items: Iterable[str | int] | str | int, sources: Sequence[str]) -> dict:
    """``["sae:1,2,10-12", "neuron:5"]`` (or ints) -> ``{source: [features]}``.

    A number without a source prefix belongs to the source named before it (in the same or an
    earlier item), and to ``sae`` when none was named: ``["neuron:5", "7"]`` is neuron 5 and 7.
    """
    out: dict[str, list[int]] = {}
    if isinstance(items, (str, int)):
        items = [items]
    current = "sae"
    for item in items:
        for tok in str(item).replace(" ", "").split(","):
            if not tok:
                continue
            if ":" in tok:
                current, tok = tok.split(":", 1)
            out.setdefault(current, []).extend(_feature_ids(tok))
    for src in out:
        if src not in sources:
            raise InputError(
                f"--features names source {src!r}, which is not among the sources {list(sources)}.",
                record="--features",
                fix="add it with --sources, or fix the prefix.",
            )
    return {s: list(dict.fromkeys(v)) for s, v in out.items()}


def _feature_ids(tok: str) -> list[int]:
    try:
        if "-" in tok:
            a, b = (int(x) for x in tok.split("-"))
            return list(range(a, b + 1))
        return [int(tok)]
    except ValueError:
        raise InputError(
            f"{tok!r} is not a feature number or range.",
            record="--features",
            fix="write e.g. --features sae:1,2,10-12,neuron:5",
        ) from None


def activity_cutoffs(ad: AssocDir, source: str, pools: Pools) -> np.ndarray:
    """Per feature of ``source``, the absolute activation above which a protein counts as active
    ([n_features]): for a feature with associations (q < 0.05 and precision >= 0.5, among the
    rows ``ad`` holds, i.e. not from the held-out split) the threshold of the association grid
    (run.json ``thresholds``, fractions of the feature's max) at which its best concept (highest
    F1) is predicted best (F1) on the explanation proteins of the concept's category; for the
    others :data:`DEFAULT_ACTIVE_FRACTION` of the max. Nothing from the held-out proteins is used.
    """
    x = ad.activations(source)
    fmax = x.max(axis=0).toarray().ravel() if x.nnz else np.zeros(x.shape[1])
    grid = threshold_grid(ad)
    frac = np.full(x.shape[1], default_fraction(grid))
    a = ad.associations
    if a.empty or "precision" not in a.columns:
        return frac * fmax
    a = a[(a["source"] == source) & (a["q_value"] < Q_MAX) & (a["precision"] >= PRECISION_MIN)]
    best = a.sort_values("f1", ascending=False, kind="stable").drop_duplicates("feature")
    ann = ad.annotations[pools.explain].tocsc()
    cats = ad.concepts["category"].to_numpy()
    in_cat = {c: np.diff(ann[:, cats == c].tocsr().indptr) > 0 for c in set(best["category"])}
    for f, concept, cat in zip(best["feature"], best["concept"], best["category"]):
        col = ad.concept_index.get(concept)
        if col is None or not 0 <= f < x.shape[1]:
            continue
        pop = in_cat[cat]
        y = np.asarray(ann[:, col].toarray()).ravel()[pop] > 0
        act = np.asarray(x[pools.explain, f].toarray()).ravel()[pop]
        f1 = [_f1(act > t * fmax[f], y) for t in grid]
        frac[f] = grid[int(np.argmax(f1))]  # first maximum: the lower threshold on ties
    return frac * fmax


def threshold_grid(ad: AssocDir) -> np.ndarray:
    """The association thresholds (fractions of each feature's max) of run.json."""
    return np.asarray(ad.run.get("thresholds") or [0.0, 0.15, 0.5, 0.6, 0.8], dtype=np.float64)


def default_fraction(grid: np.ndarray) -> float:
    """Activity cutoff of a feature without an association: the grid's smallest positive one."""
    pos = grid[grid > 0]
    return float(pos.min()) if len(pos) else DEFAULT_ACTIVE_FRACTION


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float((pred & truth).sum())
    return 2 * tp / max(float(pred.sum() + truth.sum()), 1.0)


def active_counts(
    x: sp.csc_matrix, pools: Pools, cutoffs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Active proteins per feature in the explanation and held-out pools, and inactive ones in
    the held-out pool ([n_features] each). Active = activation above the feature's ``cutoffs``
    (default 0)."""
    n = x.shape[0]
    cut = np.zeros(x.shape[1]) if cutoffs is None else np.asarray(cutoffs, dtype=np.float64)
    in_expl = np.zeros(n, bool)
    in_expl[pools.explain] = True
    in_held = np.zeros(n, bool)
    in_held[pools.heldout] = True
    ce = np.zeros(x.shape[1], np.int64)
    ch = np.zeros(x.shape[1], np.int64)
    for f in range(x.shape[1]):
        s, e = x.indptr[f], x.indptr[f + 1]
        rows = x.indices[s:e][x.data[s:e] > cut[f]]
        ce[f], ch[f] = in_expl[rows].sum(), in_held[rows].sum()
    return ce, ch, len(pools.heldout) - ch


def select_features(
    ad: AssocDir,
    pools: Pools,
    sources: Sequence[str],
    features: Sequence[str | int],
    n_features: int,
    seed: int,
) -> list[Job]:
    """Jobs for the requested features; the default selection for sources not named.

    Default per source: up to n_features // 2 eligible features with the best association
    (highest F1 among concepts at q < 0.05 and precision >= 0.5, from association statistics not
    computed on the held-out split), then eligible features at random (seeded) up to n_features.
    Eligible = at least 5 active explanation proteins, 2 active and 2 inactive held-out proteins
    (active: above the feature's :func:`activity_cutoffs`). Neurons get the same rule and
    number as SAE features. With ``features`` naming some sources, the others
    get as many features as the longest list named.
    """
    wanted = parse_features(features, sources) if features else {}
    n_default = max((len(v) for v in wanted.values()), default=n_features)
    jobs: list[Job] = []
    for src in sources:
        cut = activity_cutoffs(ad, src, pools)
        counts = active_counts(ad.activations(src), pools, cut)
        ce, ch, ci = counts
        eligible = (
            (ce >= MIN_ACTIVE_EXPLAIN) & (ch >= MIN_ACTIVE_HELDOUT) & (ci >= MIN_INACTIVE_HELDOUT)
        )
        if src in wanted:
            new = [_user_job(ad, src, f, counts) for f in wanted[src]]
        else:
            new = _default_jobs(ad, src, eligible, n_default, seed)
        for j in new:
            j.cutoff = float(cut[j.feature]) if 0 <= j.feature < len(cut) else 0.0
        jobs += new
    return jobs


def _user_job(ad: AssocDir, source: str, feature: int, counts: tuple[np.ndarray, ...]) -> Job:
    ad.column(source, feature)  # validates the index
    n_expl, n_held, n_off = (int(c[feature]) for c in counts)
    skip = ""
    if n_expl < MIN_ACTIVE_EXPLAIN or n_held < MIN_ACTIVE_HELDOUT:
        skip = (
            f"skipped: too few active proteins (explanation {n_expl}, "
            f"held-out {n_held}; need {MIN_ACTIVE_EXPLAIN} and {MIN_ACTIVE_HELDOUT})"
        )
    elif n_off < MIN_INACTIVE_HELDOUT:
        skip = (
            f"skipped: active on all but {n_off} held-out proteins (need "
            f"{MIN_INACTIVE_HELDOUT} inactive for detection)"
        )
    return Job(source, feature, "user", skip=skip)


def _default_jobs(
    ad: AssocDir, source: str, eligible: np.ndarray, n_default: int, seed: int
) -> list[Job]:
    top: list[int] = []
    a = ad.associations
    if not a.empty and n_default > 1:
        a = a[(a["source"] == source) & (a["q_value"] < Q_MAX) & (a["precision"] >= PRECISION_MIN)]
        best = a.groupby("feature")["f1"].max().sort_values(ascending=False, kind="stable")
        top = [int(f) for f in best.index if 0 <= f < len(eligible) and eligible[f]]
        top = top[: n_default // 2]
    rest = np.setdiff1d(np.flatnonzero(eligible), top)
    rng = np.random.default_rng([seed, 7])
    rand = rng.choice(rest, size=min(n_default - len(top), len(rest)), replace=False)
    return [Job(source, f, "top-associated") for f in top] + [
        Job(source, int(f), "random") for f in np.sort(rand)
    ]


def prepare(ad: AssocDir, job: Job, pools: Pools, seed: int) -> Job:
    """Fill ``job`` with its scaled activations and its explanation and held-out proteins."""
    job.scaled = scale(ad.column(job.source, job.feature), job.cutoff)
    rng = feature_rng(seed, job.source, job.feature)
    job.explain_rows = band_sample(job.scaled, pools.explain, rng)
    job.heldout_rows = band_sample(job.scaled, pools.heldout, rng)
    return job
