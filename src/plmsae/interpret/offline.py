"""The offline explainer: a statistical stand-in for an LLM, so the stage runs with no network.

It is NOT a language model and is labelled ``explainer="offline-statistical"``, ``is_llm=False``
everywhere its results appear. For one feature it

1. picks up to three annotation concepts by greedy forward selection on the explanation-pool
   proteins (all of them, not only the 32 examples an LLM sees): each step takes the concept
   whose membership correlates best (positively) with what the previous concepts leave
   unexplained. The candidates are the concepts that passed the association test for this
   feature (q < 0.05 and precision >= 0.5, on a split the feature is not scored on) when it has
   any; otherwise the concepts large enough to be tested, and the description then says plainly
   that no concept passed the test;
2. fits activation ~ intercept + non-negative weights x membership (``scipy.optimize.nnls``) on
   the same proteins, and a detection threshold that maximises balanced accuracy there. Both
   fits weight each protein so that the pool looks like a band sample of itself
   (:func:`plmsae.interpret.sampling.band_weights`), the distribution the held-out scores are
   computed on;
3. writes the description from those concepts ("Proteins annotated with <name> (<category>)
   and ..."), label = the first concept's name;
4. simulates held-out proteins by their membership in those concepts, from the fit alone.

Nothing about the held-out proteins is used to fit, so its simulation scores are honest, and
comparable to an LLM's on the same held-out proteins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import nnls

from plmsae.analysis.assocdir import CATEGORY_NAMES
from plmsae.interpret.scoring import balanced_accuracy, pearson

MAX_CONCEPTS = 3
MIN_SUPPORT = 3  # a concept must annotate at least this many training proteins
MIN_CORRELATION = 0.05  # stop adding concepts below this residual correlation

EXPLAINER = "offline-statistical"


@dataclass
class OfflineExplanation:
    concepts: list[int]  # column indices of concepts.parquet
    weights: np.ndarray  # [len(concepts)] non-negative, on the 0..10 activation scale
    intercept: float
    threshold: float  # predicted activation above this = predicted active
    train_r: float  # Pearson r of the fit on the training proteins
    label: str
    description: str

    def predict(self, membership: sp.csr_matrix) -> np.ndarray:
        """Simulated activations 0..10 [n] from concept membership [n, n_concepts] (bool CSR)."""
        if not self.concepts:
            return np.full(membership.shape[0], self.intercept)
        x = membership[:, self.concepts].toarray().astype(np.float64)  # any sparse format
        return np.clip(x @ self.weights + self.intercept, 0.0, 10.0)


def _greedy_concepts(
    a: sp.csc_matrix, y: np.ndarray, w: np.ndarray, k: int, candidates: np.ndarray | None = None
) -> list[int]:
    """Forward selection by weighted correlation of 0/1 concept columns with the residual, among
    the columns in ``candidates`` (bool [n_concepts]; default all)."""
    n = len(y)
    count = np.diff(a.indptr)
    s = np.asarray(a.T @ w).ravel()  # weighted support
    W = w.sum()
    var = s - s * s / W  # weighted variance x W of a 0/1 column
    ok = (count >= MIN_SUPPORT) & (count < n) & (var > 1e-12)
    if candidates is not None:
        ok &= candidates
    chosen: list[int] = []
    resid = y - (w @ y) / W
    for _ in range(k):
        rc = resid - (w @ resid) / W
        ss = float(w @ (rc * rc))
        if ss <= 1e-12:
            break
        cov = np.asarray(a.T @ (w * rc)).ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = np.where(ok, cov / np.sqrt(var * ss), -np.inf)
        corr[chosen] = -np.inf
        j = int(np.argmax(corr))
        if not corr[j] > MIN_CORRELATION:
            break
        chosen.append(j)
        x = np.column_stack([a[:, chosen].toarray(), np.ones(n)]) * np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(x, y * np.sqrt(w), rcond=None)
        resid = y - (x / np.sqrt(np.maximum(w, 1e-300))[:, None]) @ coef
    return chosen


def _best_threshold(pred: np.ndarray, active: np.ndarray) -> float:
    values = np.unique(pred)
    if len(values) < 2 or active.all() or not active.any():
        return float(values[0]) if len(values) else 0.0
    cuts = (values[:-1] + values[1:]) / 2
    accs = [balanced_accuracy(pred > c, active) for c in cuts]
    return float(cuts[int(np.argmax(accs))])


NO_ASSOCIATION = (
    "No concept passed the association test for this feature (q < 0.05 and precision >= 0.5)."
)


def describe(
    chosen: list[int],
    concept_names: list[str],
    concept_categories: list[str],
    associated: bool = True,
) -> tuple[str, str]:
    """(label, description) naming the chosen concepts (column indices) and their categories;
    ``associated=False``: they did not pass the association test, and the text says so."""
    if not chosen:
        if not associated:
            return "no associated concept", NO_ASSOCIATION
        return (
            "no annotation match",
            "No annotation concept tracks this feature on the training proteins.",
        )
    parts = [
        f"{concept_names[j]} ({CATEGORY_NAMES.get(concept_categories[j], concept_categories[j])})"
        for j in chosen
    ]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if not associated:
        return (
            "no associated concept",
            f"{NO_ASSOCIATION} Weak, untested match on the training proteins: {listed}.",
        )
    return concept_names[chosen[0]], f"Proteins annotated with {listed}."


def fit_offline(
    membership: sp.csr_matrix,
    activation: np.ndarray,
    concept_names: list[str],
    concept_categories: list[str],
    weight: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
    associated: bool = True,
) -> OfflineExplanation:
    """Fit on training proteins. membership: [n, n_concepts] 0/1 (pass float64 CSC to avoid a
    conversion per feature); activation: [n] on the 0..10 scale; weight: [n] per-protein weights
    (default 1; :func:`plmsae.interpret.sampling.band_weights` mimics the band sampling);
    candidates: bool [n_concepts], the concepts it may name (default all); associated: whether
    those passed the association test (else the description says that none did)."""
    y = np.asarray(activation, dtype=np.float64)
    a = (
        membership
        if (membership.format == "csc" and membership.dtype == np.float64)
        else membership.astype(np.float64).tocsc()
    )
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    keep_rows = w > 0
    if not keep_rows.all():
        a, y, w = a[keep_rows], y[keep_rows], w[keep_rows]
    chosen = _greedy_concepts(a, y, w, MAX_CONCEPTS, candidates)
    if chosen:
        sw = np.sqrt(w)
        x = np.column_stack([a[:, chosen].toarray(), np.ones(len(y))])
        coef, _ = nnls(x * sw[:, None], y * sw)
        keep = coef[:-1] > 0
        chosen = [c for c, k in zip(chosen, keep) if k]
        weights, intercept = coef[:-1][keep], float(coef[-1])
    else:
        weights, intercept = np.zeros(0), float(w @ y / w.sum())
    label, description = describe(chosen, concept_names, concept_categories, associated)
    model = OfflineExplanation(chosen, weights, intercept, 0.0, float("nan"), label, description)
    pred = model.predict(a)
    model.train_r = pearson(pred, y)
    model.threshold = _best_threshold(pred, y > 0)
    return model
