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
   features x every term of each namespace (default all three) x the proteins among the first
   ``--n-proteins`` with a term of that namespace, timed end to end (``plmsae_total_s``).
   ``plmsae_s_per_feature`` and ``goatools_s_per_feature`` are per feature and namespace;
   ``ratio`` = goatools / plmsae. goatools is timed on a 20,000-protein population, plmsae on
   up to 100,000, so the ratio understates the gap.

3. ``--scale``: ``plmsae.associate`` end to end (split, concepts, activations with the neuron
   and random baselines, statistics, summary) on ``--scale-proteins`` proteins (default 500,000)
   x ``--scale-features`` features (default 20,000): a protein-level TopK SAE (k =
   ``--scale-k``, 64) with random weights and per-feature biases (so that feature densities
   spread over orders of magnitude, as in trained SAEs) encodes synthetic pooled vectors; the
   GO annotations are the real ones of the Swiss-Prot GO table, reused in turn (protein i gets
   the terms of line i mod 463,936), with the GO ontology. Runs in a child process; reports the
   wall time of each step and the child's peak resident memory (``ru_maxrss``), with the number
   of non-zero activations next to proteins x features.

    PYTHONPATH=src python benchmarks/associate.py --json
    PYTHONPATH=src python benchmarks/associate.py --n-features 2000 --n-proteins 20000
    PYTHONPATH=src python benchmarks/associate.py --scale --json
    PYTHONPATH=src python benchmarks/associate.py --scale --scale-proteins 100000
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from _peaks import track_step_peaks

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def load_go(n_proteins: int, tmp: Path):
    """Read the first ``n_proteins`` lines of the GO TSV with plmsae (ontology: propagated,
    split by namespace). Returns (annotations, ontology, path of the subset TSV)."""
    from plmsae.data.annotations import read_annotations
    from plmsae.data.ontology import Ontology

    subset = tmp / f"go_subset_{n_proteins}.tsv"
    with gzip.open(DATA / "swissprot2014_go.tsv.gz", "rt") as fh, open(subset, "w") as out:
        for i, line in enumerate(fh):
            if i >= n_proteins:
                break
            out.write(line)
    onto = Ontology.load(DATA / "go-basic-2022-07-01.obo.gz")
    return read_annotations(subset, onto), onto, subset


def namespace_matrix(ann, namespace: str):
    """(protein ids with a term of the namespace = the population, propagated 0/1 matrix
    [P, terms], term ids)."""
    by_protein = ann.protein_concepts.get(namespace, {})
    ids = sorted(by_protein)
    terms = sorted({t for ts in by_protein.values() for t in ts})
    t_index = {t: i for i, t in enumerate(terms)}
    rows = np.repeat(np.arange(len(ids)), [len(by_protein[p]) for p in ids])
    cols = np.array([t_index[t] for p in ids for t in by_protein[p]], dtype=np.int64)
    mat = sp.csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(ids), len(terms)))
    return ids, mat, terms


def raw_terms(subset: Path, onto, ids, namespace: str) -> dict[str, set[str]]:
    """Cleaned (primary, non-obsolete) but unpropagated terms of the namespace, for goatools."""
    ns_name = {
        "GO:BP": "biological_process",
        "GO:MF": "molecular_function",
        "GO:CC": "cellular_component",
    }[namespace]
    wanted = set(ids)
    raw: dict[str, set[str]] = {}
    with open(subset) as fh:
        for line in fh:
            acc, _, rest = line.rstrip("\n").partition("\t")
            if acc not in wanted:
                continue
            keep = set()
            for t in rest.replace(",", ";").split(";"):
                p = onto.primary(t.strip()) if t.strip() else None
                if p is not None and onto.namespace(p) == ns_name:
                    keep.add(p)
            raw[acc] = keep
    return raw


def synthetic_activity(
    n_proteins: int, n_features: int, dmin: float, dmax: float, seed: int
) -> sp.csc_matrix:
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
        goea = GOEnrichmentStudy(
            ids,
            assoc,
            dag,
            propagate_counts=True,
            alpha=0.05,
            methods=["fdr_bh"],
            relationships={"part_of"},
            alternative="greater",
            log=None,
        )
    results, times = [], []
    for study in study_sets:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(quiet):
            recs = goea.run_study(study, prt=None)
        times.append(time.perf_counter() - t0)
        results.append(
            {r.GO: (r.study_count, r.study_n, r.pop_count, r.pop_n, r.p_uncorrected) for r in recs}
        )
    return results, times


def synthetic_store(
    path: Path,
    ids: list[str],
    lengths: list[int],
    d: int,
    layer: int,
    seed: int,
    shard_residues: int = 200_000,
) -> Path:
    """An activation store in the on-disk format of ``plmsae embed`` holding Gaussian residue
    vectors (for timing ``associate`` without embedding thousands of proteins first)."""
    import pandas as pd
    import torch
    from safetensors.torch import save_file

    from plmsae._util import sha256_file, write_json

    rng = np.random.default_rng(seed)
    (path / "shards").mkdir(parents=True)
    shards, shard_of, row_of, start = [], [], [], 0
    while start < len(ids):
        stop, total = start, 0
        while stop < len(ids) and (total < shard_residues or stop == start):
            total += lengths[stop]
            stop += 1
        x = rng.standard_normal((total, d), dtype=np.float32)
        lens = np.array(lengths[start:stop])
        offsets = np.concatenate([[0], np.cumsum(lens)])
        pooled = np.stack([x[a:b].mean(0) for a, b in zip(offsets[:-1], offsets[1:])])
        f = path / "shards" / f"{len(shards):05d}.safetensors"
        save_file(
            {
                f"residues.{layer}": torch.from_numpy(x),
                f"pooled.{layer}": torch.from_numpy(pooled),
                "offsets": torch.from_numpy(offsets.astype(np.int64)),
            },
            str(f),
        )
        shards.append(
            {
                "file": f"shards/{f.name}",
                "sha256": sha256_file(f),
                "bytes": f.stat().st_size,
                "n_proteins": stop - start,
                "n_residues": int(total),
            }
        )
        shard_of += [len(shards) - 1] * (stop - start)
        row_of += list(range(stop - start))
        start = stop
    pd.DataFrame({"id": ids, "length": lengths, "shard": shard_of, "row": row_of}).to_parquet(
        path / "proteins.parquet", index=False
    )
    write_json(
        path / "meta.json",
        {
            "format_version": 1,
            "model": {"id": "synthetic", "revision": None, "d_model": d, "n_layers": layer},
            "layers": [layer],
            "d_model": d,
            "dtype": "float32",
            "input": {"path": None, "n_proteins": len(ids)},
            "shards": shards,
            "complete": True,
        },
    )
    return path


def pipeline(n_proteins: int, n_features: int, seed: int, tmp: Path) -> dict:
    """Time ``plmsae.associate`` end to end (activations for SAE, neurons and random
    directions, splits, statistics for every category) on a synthetic store of the first
    ``n_proteins`` GO-annotated Swiss-Prot proteins (lengths log-normal around 350, like
    Swiss-Prot, capped at 1022), a random TopK SAE (d_in 320 like ESM-2 8M, ``n_features``
    latents, k=32) and the real GO annotations of those proteins."""
    import torch

    from plmsae.analysis.assocdir import SUMMARY
    from plmsae.analysis.associate import associate
    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    subset = tmp / "pipeline_go.tsv"
    ids = []
    with gzip.open(DATA / "swissprot2014_go.tsv.gz", "rt") as fh, open(subset, "w") as out:
        for line in fh:
            if len(ids) >= n_proteins:
                break
            out.write(line)
            ids.append(line.split("\t", 1)[0])
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(300), 0.6, len(ids)), 30, 1022).astype(int).tolist()
    store = synthetic_store(tmp / "store", ids, lengths, 320, 6, seed)
    torch.manual_seed(seed)
    sae = create_sae(
        SAEConfig(
            arch="topk",
            d_in=320,
            d_sae=n_features,
            k=32,
            layer=6,
            level="residue",
            model={"id": "synthetic", "d_model": 320},
        )
    )
    save_sae(sae, tmp / "sae")
    peaks: dict[str, float] = {}
    track_step_peaks(peaks)
    t0 = time.perf_counter()
    result = associate(
        tmp / "sae",
        store,
        annotations=subset,
        out=tmp / "assoc",
        ontology=DATA / "go-basic-2022-07-01.obo.gz",
        split_method="random",
    )
    seconds = time.perf_counter() - t0
    summary = json.loads((result.out / SUMMARY).read_text())
    return {
        "pipeline_step_s": result.timings,
        "pipeline_proteins": len(ids),
        "pipeline_residues": int(sum(lengths)),
        "pipeline_features": n_features,
        "pipeline_associate_s": seconds,
        "pipeline_pairs_tested": sum(
            v["by_category"][c]["n_pairs_tested"]
            for k, v in summary.items()
            if k != "settings"
            for c in v["by_category"]
        ),
    }


def scale_inputs(n_proteins: int, n_features: int, k: int, seed: int, tmp: Path) -> None:
    """The store, SAE and annotation table of the ``--scale`` run, written under ``tmp``."""
    import torch

    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    ids = [f"S{i:07d}" for i in range(n_proteins)]
    with gzip.open(DATA / "swissprot2014_go.tsv.gz", "rt") as fh:
        terms = [line.rstrip("\n").split("\t", 1)[1] for line in fh if "\t" in line]
    with open(tmp / "go.tsv", "w") as out:
        out.writelines(f"{p}\t{terms[i % len(terms)]}\n" for i, p in enumerate(ids))
    del terms
    synthetic_store(tmp / "store", ids, [1] * n_proteins, 320, 6, seed, shard_residues=50_000)
    torch.manual_seed(seed)
    sae = create_sae(
        SAEConfig(
            arch="topk",
            d_in=320,
            d_sae=n_features,
            k=k,
            layer=6,
            level="protein",
            pooling="mean",
            model={"id": "synthetic", "d_model": 320},
        ),
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.no_grad():  # densities spread over orders of magnitude, as in trained SAEs
        sae.b_enc.copy_(torch.randn(n_features, generator=torch.Generator().manual_seed(seed)))
    save_sae(sae, tmp / "sae")


def scale_child(tmp: Path) -> dict:
    """``plmsae.associate`` on the ``--scale`` inputs (run in a child process: its peak
    memory is what ``ru_maxrss`` reports)."""
    import scipy.sparse as sp

    from plmsae.analysis.assocdir import ASSOCIATIONS, activation_file
    from plmsae.analysis.associate import associate

    peaks: dict[str, float] = {}
    starts: dict[str, float] = {}
    track_step_peaks(peaks, starts)
    t0 = time.perf_counter()
    result = associate(
        tmp / "sae",
        tmp / "store",
        annotations=tmp / "go.tsv",
        out=tmp / "assoc",
        ontology=DATA / "go-basic-2022-07-01.obo.gz",
        split_method="random",
    )
    seconds = time.perf_counter() - t0
    acts = sp.load_npz(activation_file(result.out, "sae"))
    import pyarrow.parquet as pq

    return {
        "associate_s": seconds,
        "step_s": result.timings,
        "sae_nonzero_activations": int(acts.nnz),
        "pairs_tested": pq.ParquetFile(result.out / ASSOCIATIONS).metadata.num_rows,
        # the per-step resets reset ru_maxrss too: the whole run's peak is the largest
        "peak_rss_gib": max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            *(v / 1024 for v in peaks.values()),
        ),
        "step_peak_rss_gib": {k: round(v / 1024, 2) for k, v in peaks.items()},
        "step_start_rss_gib": {k: round(v / 1024, 2) for k, v in starts.items()},
    }


def at_scale_end_to_end(args: argparse.Namespace) -> dict:
    """Part 3 (``--scale``): inputs here, ``associate`` in a child process."""
    n, f, k = args.scale_proteins, args.scale_features, args.scale_k
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        scale_inputs(n, f, k, args.seed, tmp)
        inputs_s = time.perf_counter() - t0
        done = subprocess.run(
            [sys.executable, __file__, "--scale-child", str(tmp)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(done.stderr[-4000:])
        child = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "scale_proteins": n,
        "scale_features": f,
        "scale_k": k,
        "proteins_x_features": n * f,
        "dense_float32_gib": n * f * 4 / 2**30,
        "inputs_s": inputs_s,
        **child,
    }


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-features", type=int, default=20000)
    ap.add_argument("--n-proteins", type=int, default=100000)
    ap.add_argument("--goatools-proteins", type=int, default=20000)
    ap.add_argument("--goatools-features", type=int, default=5)
    ap.add_argument(
        "--namespace",
        default="all",
        choices=["all", "GO:BP", "GO:MF", "GO:CC"],
        help="namespace(s) of the scale run; goatools always runs on GO:BP",
    )
    ap.add_argument("--density-min", type=float, default=1e-4)
    ap.add_argument("--density-max", type=float, default=3e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pipeline",
        metavar="PROTEINS,FEATURES",
        default=None,
        help="instead: time plmsae.associate end to end, e.g. 5000,4096",
    )
    ap.add_argument("--scale", action="store_true", help="instead: part 3, associate at scale")
    ap.add_argument("--scale-proteins", type=int, default=500_000)
    ap.add_argument("--scale-features", type=int, default=20_000)
    ap.add_argument("--scale-k", type=int, default=64)
    ap.add_argument("--scale-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def against_goatools(args: argparse.Namespace, tmp: Path) -> dict:
    """Part 1: goatools on a small population and a few features, compared pair by pair."""
    from plmsae.analysis import stats

    ann, onto, subset = load_go(args.goatools_proteins, tmp)
    ids, mat, terms = namespace_matrix(ann, "GO:BP")
    raw = raw_terms(subset, onto, ids, "GO:BP")
    act = synthetic_activity(len(ids), args.goatools_features, 3e-3, 3e-2, args.seed)
    studies = [
        [ids[i] for i in act.indices[act.indptr[f] : act.indptr[f + 1]]]
        for f in range(act.shape[1])
    ]
    stats.hypergeom_sf(np.array([2, 3]), 20, 5, 6)  # load the compiled kernels outside timing
    stats.bh_qvalues_grouped(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]))
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
    return {
        "goatools_proteins": len(ids),
        "goatools_terms": len(terms),
        "goatools_features": len(studies),
        "pairs_compared": n_cmp,
        "pairs_goatools_study_count_ge1": sum(1 for r in gres for v in r.values() if v[0] >= 1),
        "count_mismatches": count_mismatch,
        "max_rel_err_vs_goatools": max_rel,
        "goatools_s_per_feature": float(np.mean(gtimes)),
        "plmsae_s_per_feature_small": small_s / len(studies),
    }


def at_scale(args: argparse.Namespace, namespaces: list[str], tmp: Path) -> dict:
    """Part 2: every feature x every term of each namespace, timed end to end."""
    from plmsae.analysis import stats

    ann, _, _ = load_go(args.n_proteins, tmp)
    mats = {ns: namespace_matrix(ann, ns) for ns in namespaces}
    del ann
    n_all = max(len(m[0]) for m in mats.values())
    act_all = synthetic_activity(
        n_all, args.n_features, args.density_min, args.density_max, args.seed + 1
    ).tocsr()
    out: dict = {}
    total, t_enrich, n_pairs, n_sig, n_terms = 0.0, 0.0, 0, 0, 0
    for ns, (ids, mat, terms) in mats.items():
        act = act_all[: len(ids)]  # the namespace's population: its annotated proteins
        t0 = time.perf_counter()
        res = stats.enrichment(act, mat, min_both=1)
        t_enrich += time.perf_counter() - t0
        # BH per feature over every term of the namespace, as goatools corrects each study
        q = stats.bh_qvalues_grouped(res["feature"], res["p_value"], len(terms))
        total += time.perf_counter() - t0
        n_pairs += len(res["p_value"])
        n_sig += int((q < 0.05).sum())
        n_terms += len(terms)
        out[f"n_proteins_{ns}"] = len(ids)
        out[f"n_terms_{ns}"] = len(terms)
        del res, q
    return out | {
        "n_features": args.n_features,
        "n_terms": n_terms,
        "activation_density_mean": act_all.nnz / np.prod(act_all.shape),
        "pairs_with_n_both_ge1": n_pairs,
        "pairs_q_lt_0.05": n_sig,
        "plmsae_enrichment_s": t_enrich,
        "plmsae_total_s": total,
        "plmsae_s_per_feature": total / args.n_features / len(namespaces),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.scale_child:
        out = scale_child(args.scale_child)
        print(json.dumps(out))
        return out
    if args.scale:
        out = at_scale_end_to_end(args)
        print(json.dumps(out, indent=2) if args.json else out)
        return out
    if args.pipeline:
        n_p, n_f = (int(v) for v in args.pipeline.split(","))
        with tempfile.TemporaryDirectory() as tmp:
            out = pipeline(n_p, n_f, args.seed, Path(tmp))
        print(json.dumps(out, indent=2) if args.json else out)
        return out

    namespaces = ["GO:BP", "GO:MF", "GO:CC"] if args.namespace == "all" else [args.namespace]
    out: dict = {"namespaces": namespaces}
    with tempfile.TemporaryDirectory() as tmpdir:
        out.update(against_goatools(args, Path(tmpdir)))
        out.update(at_scale(args, namespaces, Path(tmpdir)))
    out["ratio"] = out["goatools_s_per_feature"] / out["plmsae_s_per_feature"]
    out["goatools_extrapolated_s"] = (
        out["goatools_s_per_feature"] * args.n_features * len(namespaces)
    )
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:34s} {v}")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
