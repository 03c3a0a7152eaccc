"""Benchmark: plmsae's all-features-at-once GO enrichment vs goatools, one feature at a time.

Concept side (real): the first ``--n-proteins`` proteins of ../shared/data/swissprot2014_go.tsv.gz
with GO terms, read with ``plmsae.data.read_annotations`` and the go-basic 2022-07-01 ontology
(alt IDs mapped, obsolete dropped, propagated over is_a and part_of), one namespace
(``--namespace``, default GO:BP). Population: the proteins with at least one term of it.

Feature side (synthetic): ``--n-features`` features whose per-protein activation densities are
log-uniform in [``--density-min``, ``--density-max``] (default 1e-4 .. 3e-2, median ~0.17 %: a
TopK protein-level SAE with k=64 of 20,000 latents has a mean density of 0.32 %); the study set of
a feature is the proteins where it is active, as in the PNAS analysis.

1. Correctness and goatools speed: on ``--goatools-proteins`` proteins (default 20,000) and
   ``--goatools-features`` features, goatools ``GOEnrichmentStudy(propagate_counts=True,
   relationships={"part_of"}, alternative="greater", methods=["fdr_bh"])`` gets the cleaned,
   unpropagated terms; plmsae gets the propagated matrix. Every (feature, term) with a study
   count >= 1 is compared: population and study counts must be equal, and the uncorrected
   p-values agree to a relative error reported as ``max_rel_err_vs_goatools`` (where p > 1e-300).
   goatools' time per feature (one namespace) is measured on those features.
2. Scale: plmsae ``stats.enrichment`` (counts by sparse products, one-sided Fisher p-values for
   every pair with n_both >= 1, then BH per feature as goatools does) for all ``--n-features``
   features x every term of the namespace x ``--n-proteins`` proteins, timed end to end.
   ``ratio`` = goatools s/feature / plmsae s/feature.

    PYTHONPATH=src python benchmarks/associate.py --json
    PYTHONPATH=src python benchmarks/associate.py --n-features 2000 --n-proteins 20000
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def load_go(n_proteins: int, namespace: str, tmp: Path):
    """(protein ids, propagated 0/1 matrix [P, terms] for the namespace, term ids,
    raw cleaned terms per protein for goatools, ontology)."""
    from plmsae.data.annotations import read_annotations
    from plmsae.data.ontology import Ontology

    subset = tmp / "go_subset.tsv"
    with gzip.open(DATA / "swissprot2014_go.tsv.gz", "rt") as fh, open(subset, "w") as out:
        for i, line in enumerate(fh):
            if i >= n_proteins:
                break
            out.write(line)
    onto = Ontology.load(DATA / "go-basic-2022-07-01.obo.gz")
    ann = read_annotations(subset, onto)
    by_protein = ann.protein_concepts.get(namespace, {})
    ids = sorted(by_protein)
    terms = sorted({t for ts in by_protein.values() for t in ts})
    t_index = {t: i for i, t in enumerate(terms)}
    rows = np.repeat(np.arange(len(ids)), [len(by_protein[p]) for p in ids])
    cols = np.array([t_index[t] for p in ids for t in by_protein[p]], dtype=np.int64)
    mat = sp.csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(ids), len(terms)))
    # raw terms (primary IDs, before propagation) of the namespace, for goatools to propagate
    ns_name = {"GO:BP": "biological_process", "GO:MF": "molecular_function",
               "GO:CC": "cellular_component"}[namespace]
    raw: dict[str, set[str]] = {}
    with open(subset) as fh:
        for line in fh:
            acc, _, rest = line.rstrip("\n").partition("\t")
            if acc not in by_protein:
                continue
            keep = set()
            for t in rest.replace(",", ";").split(";"):
                p = onto.primary(t.strip()) if t.strip() else None
                if p is not None and onto.namespace(p) == ns_name:
                    keep.add(p)
            raw[acc] = keep
    return ids, mat, terms, raw, onto


def synthetic_activity(n_proteins: int, n_features: int, dmin: float, dmax: float,
                       seed: int) -> sp.csc_matrix:
    rng = np.random.default_rng(seed)
    dens = np.exp(rng.uniform(np.log(dmin), np.log(dmax), n_features))
    counts = np.maximum(1, rng.binomial(n_proteins, dens))
    rows = np.concatenate([rng.choice(n_proteins, k, replace=False) for k in counts])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    data = np.ones(len(rows), dtype=np.int8)
    return sp.csc_matrix((data, rows, indptr), shape=(n_proteins, n_features))


def run_goatools(ids, raw, obo_gz: Path, study_sets, tmp: Path):
    from goatools.go_enrichment import GOEnrichmentStudy
    from goatools.obo_parser import GODag

    obo = tmp / "go.obo"
    with gzip.open(obo_gz, "rb") as fh:
        obo.write_bytes(fh.read())
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        dag = GODag(str(obo), optional_attrs={"relationship"}, prt=None)
        assoc = {p: set(raw[p]) for p in ids}
        goea = GOEnrichmentStudy(ids, assoc, dag, propagate_counts=True, alpha=0.05,
                                 methods=["fdr_bh"], relationships={"part_of"},
                                 alternative="greater", log=None)
    results, times = [], []
    for study in study_sets:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(quiet):
            recs = goea.run_study(study, prt=None)
        times.append(time.perf_counter() - t0)
        results.append({r.GO: (r.study_count, r.study_n, r.pop_count, r.pop_n, r.p_uncorrected)
                        for r in recs})
    return results, times


def bh_per_feature(feature: np.ndarray, p: np.ndarray, n_tests: int) -> np.ndarray:
    """BH within each feature over ``n_tests`` terms (the untested pairs have p = 1), as goatools
    corrects each study separately."""
    order = np.lexsort((p, feature))
    f, ps = feature[order], p[order]
    start = np.searchsorted(f, f, side="left")
    rank = np.arange(len(f)) - start + 1
    scaled = ps * n_tests / rank
    # running minimum from the end within each feature
    out = np.empty_like(scaled)
    bounds = np.flatnonzero(np.diff(f)) + 1
    for seg in np.split(np.arange(len(f)), bounds):
        if len(seg):
            out[seg] = np.minimum.accumulate(scaled[seg][::-1])[::-1]
    q = np.empty_like(out)
    q[order] = np.minimum(out, 1.0)
    return q


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-features", type=int, default=20000)
    ap.add_argument("--n-proteins", type=int, default=100000)
    ap.add_argument("--goatools-proteins", type=int, default=20000)
    ap.add_argument("--goatools-features", type=int, default=5)
    ap.add_argument("--namespace", default="GO:BP", choices=["GO:BP", "GO:MF", "GO:CC"])
    ap.add_argument("--density-min", type=float, default=1e-4)
    ap.add_argument("--density-max", type=float, default=3e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from plmsae.analysis import stats

    out: dict = {"namespace": args.namespace}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. goatools on a small population, a few features -----------------------------------
        ids, mat, terms, raw, _ = load_go(args.goatools_proteins, args.namespace, tmp)
        act = synthetic_activity(len(ids), args.goatools_features, 3e-3, 3e-2, args.seed)
        studies = [[ids[i] for i in act.indices[act.indptr[f]:act.indptr[f + 1]]]
                   for f in range(act.shape[1])]
        stats.enrichment(act[:, :1], mat[:, :10])  # compile the numba kernel outside the timing
        gres, gtimes = run_goatools(ids, raw, DATA / "go-basic-2022-07-01.obo.gz", studies, tmp)
        t0 = time.perf_counter()
        ours = stats.enrichment(act, mat, min_both=1)
        small_s = time.perf_counter() - t0
        max_rel, n_cmp, count_mismatch = 0.0, 0, 0
        for f, c, both, p in zip(ours["feature"], ours["concept"], ours["n_both"], ours["p_value"]):
            g = gres[f].get(terms[c])
            if g is None:
                count_mismatch += 1
                continue
            sc, sn, pc, pn, gp = g
            if (sc, sn, pc, pn) != (both, ours["n_active"][f], ours["n_concept"][c], len(ids)):
                count_mismatch += 1
            if gp > 1e-300:
                max_rel = max(max_rel, abs(p - gp) / gp)
                n_cmp += 1
        n_goatools_nonzero = sum(1 for r in gres for v in r.values() if v[0] >= 1)
        out.update({
            "goatools_proteins": len(ids), "goatools_terms": len(terms),
            "goatools_features": len(studies),
            "pairs_compared": n_cmp, "pairs_goatools_study_count_ge1": n_goatools_nonzero,
            "count_mismatches": count_mismatch,
            "max_rel_err_vs_goatools": max_rel,
            "goatools_s_per_feature": float(np.mean(gtimes)),
            "plmsae_s_per_feature_small": small_s / len(studies),
        })
        # 2. scale ------------------------------------------------------------------------------
        ids, mat, terms, _, _ = load_go(args.n_proteins, args.namespace, tmp)
        act = synthetic_activity(len(ids), args.n_features, args.density_min, args.density_max,
                                 args.seed + 1)
        t0 = time.perf_counter()
        res = stats.enrichment(act, mat, min_both=1)
        t_enrich = time.perf_counter() - t0
        q = bh_per_feature(res["feature"], res["p_value"], len(terms))
        total = time.perf_counter() - t0
        out.update({
            "n_features": args.n_features, "n_proteins": len(ids), "n_terms": len(terms),
            "annotation_nnz": int(mat.nnz), "activation_density_mean": act.nnz / np.prod(act.shape),
            "pairs_with_n_both_ge1": int(len(res["p_value"])),
            "pairs_q_lt_0.05": int((q < 0.05).sum()),
            "plmsae_enrichment_s": t_enrich, "plmsae_total_s": total,
            "plmsae_s_per_feature": total / args.n_features,
        })
        out["ratio"] = out["goatools_s_per_feature"] / out["plmsae_s_per_feature"]
        out["goatools_extrapolated_s"] = out["goatools_s_per_feature"] * args.n_features
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:34s} {v}")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
