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


def _empty() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass
class Job:
    """One feature to explain. The arrays are empty until :func:`prepare` fills them."""

    source: str
    feature: int
    selection: str  # "top-associated" | "random" | "user"
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


def active_counts(x: sp.csc_matrix, pools: Pools) -> tuple[np.ndarray, np.ndarray]:
    """Active proteins per feature in the explanation and held-out pools ([n_features] each).

    Active = above the feature's minimum after a ReLU (the bands' scaled activation > 0)."""
    n = x.shape[0]
    in_expl = np.zeros(n, bool)
    in_expl[pools.explain] = True
    in_held = np.zeros(n, bool)
    in_held[pools.heldout] = True
    ce = np.zeros(x.shape[1], np.int64)
    ch = np.zeros(x.shape[1], np.int64)
    for f in range(x.shape[1]):
        s, e = x.indptr[f], x.indptr[f + 1]
        vals = np.maximum(x.data[s:e], 0)
        lo = vals.min() if e - s == n and n else 0.0
        rows = x.indices[s:e][vals > lo]
        ce[f], ch[f] = in_expl[rows].sum(), in_held[rows].sum()
    return ce, ch


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
    Eligible = at least 5 active explanation proteins and 2 active held-out proteins. Neurons get
    the same rule and number as SAE features. With ``features`` naming some sources, the others
    get as many features as the longest list named.
    """
    wanted = parse_features(features, sources) if features else {}
    n_default = max((len(v) for v in wanted.values()), default=n_features)
    jobs: list[Job] = []
    for src in sources:
        ce, ch = active_counts(ad.activations(src), pools)
        eligible = (ce >= MIN_ACTIVE_EXPLAIN) & (ch >= MIN_ACTIVE_HELDOUT)
        if src in wanted:
            jobs += [_user_job(ad, src, f, ce, ch) for f in wanted[src]]
        else:
            jobs += _default_jobs(ad, src, eligible, n_default, seed)
    return jobs


def _user_job(ad: AssocDir, source: str, feature: int, ce: np.ndarray, ch: np.ndarray) -> Job:
    ad.column(source, feature)  # validates the index
    n_expl, n_held = ce[feature], ch[feature]
    eligible = n_expl >= MIN_ACTIVE_EXPLAIN and n_held >= MIN_ACTIVE_HELDOUT
    skip = (
        ""
        if eligible
        else f"skipped: too few active proteins (explanation {n_expl}, "
        f"held-out {n_held}; need {MIN_ACTIVE_EXPLAIN} and {MIN_ACTIVE_HELDOUT})"
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
    job.scaled = scale(ad.column(job.source, job.feature))
    rng = feature_rng(seed, job.source, job.feature)
    job.explain_rows = band_sample(job.scaled, pools.explain, rng)
    job.heldout_rows = band_sample(job.scaled, pools.heldout, rng)
    return job
