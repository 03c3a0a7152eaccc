"""Does ``plmsae discover`` find annotations that are really missing? Hide some and see.

On the bundled demo (2,000 Swiss-Prot proteins with GO terms) and an SAE trained on it (a
``plmsae demo`` run directory, reused: its store and SAE), ``--fraction`` (default 20 %) of the
(protein, GO term) annotation lines are hidden (seeded). ``plmsae associate`` is run again with
the remaining annotations (same split settings, no baselines), then ``plmsae discover`` lists
all its candidates, each with its nearest homolog that carries the concept (MMseqs2). A
candidate (protein, concept) is correct when the
full annotations, propagated over the ontology, carry it and the hidden ones do not (a hidden leaf
whose ancestors remain through other terms counts only for the concepts really lost).

Baseline: nearest-homolog transfer. Each protein's best MMseqs2 hit (bit score, not itself)
among the proteins that still have annotations gives it every concept the hit carries and it
lacks, ranked by the hit's identity (:func:`plmsae.apply.homology.nearest_transfer`). It is
scored over all concepts and over the concepts discover can report (those with a precise
feature), the like-for-like comparison.

Methods: ``discover`` (its own ranking: independent features, then activation);
``discover_homolog_supported_first`` (the same candidates, those with an annotated homolog that
carries the concept first); ``homolog_all_concepts`` and ``homolog_discover_concepts`` (the
baseline). Reported per method and N: precision@N, recall@N over all hidden (protein, concept)
pairs, and recall@N over the hidden pairs of the concepts discover can report; and the precision
of discover's candidates with and without an annotated homolog, and how many correct ones the
homolog transfer does not propose at all (what the features add).

    PYTHONPATH=src python benchmarks/discover_recovery.py --run /tmp/demo-after --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

TOP_N = (10, 50, 100, 200, 500)


def hide_annotations(src: Path, dst: Path, fraction: float, seed: int) -> dict:
    """Write the two-column GO TSV ``src`` to ``dst`` without ``fraction`` of its (protein,
    term) pairs, drawn uniformly without replacement; proteins left with none are dropped."""
    import gzip

    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt") as fh:
        lines = [ln.rstrip("\n").split("\t") for ln in fh if ln.strip()]
    pairs = [(acc, t) for acc, terms in lines for t in terms.split(";") if t]
    rng = np.random.default_rng(seed)
    hidden = set(rng.choice(len(pairs), size=round(fraction * len(pairs)), replace=False))
    kept: dict[str, list[str]] = {}
    for i, (acc, t) in enumerate(pairs):
        if i not in hidden:
            kept.setdefault(acc, []).append(t)
    dst.write_text("".join(f"{acc}\t{';'.join(ts)}\n" for acc, ts in kept.items()))
    return {"pairs": len(pairs), "hidden": len(hidden), "proteins_left": len(kept)}


def truth_matrix(ids: list[str], concepts: list[str], full_tsv: Path, ontology) -> sp.csr_matrix:
    """The full (propagated) annotations in the hidden ASSOC_DIR's protein and concept order."""
    from plmsae.analysis.associate import concept_table
    from plmsae.data.annotations import read_annotations

    df, m = concept_table(read_annotations(full_tsv, ontology), ids)
    where = {c: j for j, c in enumerate(df["concept"])}
    cols = np.array([where.get(c, -1) for c in concepts])
    m = sp.hstack([m, sp.csr_matrix((len(ids), 1), dtype=m.dtype)]).tocsc()
    return m[:, np.where(cols >= 0, cols, m.shape[1] - 1)].astype(bool).tocsr()


def scores(pairs: pd.DataFrame, missing: set[tuple[str, str]], reachable: set) -> dict:
    """precision@N and recall@N (all hidden pairs, and those of ``reachable`` concepts)."""
    hit = np.array([(p, c) in missing for p, c in zip(pairs["protein"], pairs["concept"])])
    reach = pairs["concept"].isin(reachable).to_numpy()
    n_reach = sum(1 for _, c in missing if c in reachable)
    out = {"n_candidates": len(pairs), "precision_all": float(hit.mean()) if len(hit) else None}
    for n in TOP_N:
        k = int(hit[:n].sum())
        out[f"top{n}"] = {
            "correct": k,
            "precision": k / min(n, len(hit)) if len(hit) else None,
            "recall": k / len(missing),
            "recall_reachable": int((hit & reach)[:n].sum()) / n_reach if n_reach else None,
        }
    return out


def hidden_association(args: argparse.Namespace, work: Path) -> tuple[Path, dict]:
    """Hide annotations and re-run ``plmsae associate`` on the demo store and SAE."""
    from plmsae.analysis.associate import associate
    from plmsae.data.demo import demo_paths

    demo = demo_paths()
    tag = f"{args.fraction:g}_seed{args.seed}"
    hidden_tsv = work / f"hidden_{tag}.tsv"
    hiding = hide_annotations(demo.annotations, hidden_tsv, args.fraction, args.seed)
    assoc_dir = work / f"assoc_{tag}"
    associate(
        Path(args.run) / "L4" / "sae" if args.sae is None else args.sae,
        Path(args.run) / "store",
        annotations=hidden_tsv,
        ontology=demo.ontology,
        out=assoc_dir,
        fasta=demo.fasta,
        baselines=False,
        overwrite=True,
    )
    return assoc_dir, hiding


def hidden_pairs(assoc_dir: Path) -> set[tuple[str, str]]:
    """(protein, concept) pairs of the full annotations that the hidden ones lack."""
    from plmsae.analysis.assocdir import AssocDir
    from plmsae.data.demo import demo_paths
    from plmsae.data.ontology import Ontology

    demo, ad = demo_paths(), AssocDir(assoc_dir)
    ids, concepts = list(ad.proteins["id"]), list(ad.concepts["concept"])
    protein_level = ad.concepts["category"].to_numpy() != "residue"
    truth = truth_matrix(ids, concepts, demo.annotations, Ontology.load(demo.ontology))
    lost = (truth > ad.annotations).tocoo()
    return {(ids[i], concepts[j]) for i, j in zip(lost.row, lost.col) if protein_level[j]}


def run(args: argparse.Namespace) -> dict:
    from plmsae.analysis.assocdir import AssocDir
    from plmsae.apply.discover import DiscoverConfig, Discoverer
    from plmsae.apply.homology import nearest_transfer, search
    from plmsae.data.demo import demo_paths
    from plmsae.data.fasta import read_fasta

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    assoc_dir, hiding = hidden_association(args, work)
    t_assoc = time.perf_counter() - t0
    disc = Discoverer(
        DiscoverConfig(
            assoc_dir,
            top=0,
            fasta=demo_paths().fasta,
            min_precision=args.min_precision,
            max_q=args.max_q,
        )
    )
    found = disc.run().candidates
    t_disc = time.perf_counter() - t0 - t_assoc
    precise = set(disc.rows_["concept"])
    missing = hidden_pairs(assoc_dir)
    ad = AssocDir(assoc_dir)
    ids, concepts = list(ad.proteins["id"]), list(ad.concepts["concept"])
    seqs = {p.id: p.sequence for p in read_fasta(demo_paths().fasta)}
    t1 = time.perf_counter()
    transfer = nearest_transfer(
        ids, [seqs[p] for p in ids], ad.annotations, concepts, search(seqs, seqs)
    )
    category = dict(zip(concepts, ad.concepts["category"]))
    transfer = transfer[transfer["concept"].map(category) != "residue"]
    t_base = time.perf_counter() - t1
    supported = found["homolog"].notna()
    by_support = found.assign(s=supported).sort_values(
        ["s", "score"], ascending=False, kind="stable"
    )
    proposed = set(zip(transfer["protein"], transfer["concept"]))
    hit = [(p, c) in missing for p, c in zip(found["protein"], found["concept"])]
    novel = [(p, c) not in proposed for p, c in zip(found["protein"], found["concept"])]
    tag = f"{args.fraction:g}_seed{args.seed}"
    found.to_parquet(work / f"discover_{tag}.parquet")
    transfer.to_parquet(work / f"homolog_{tag}.parquet")
    return {
        "settings": vars(args) | {"top_n": list(TOP_N)},
        "hiding": hiding | {"hidden_concept_pairs": len(missing)},
        "reachable_hidden_pairs": sum(1 for _, c in missing if c in precise),
        "discover": scores(found, missing, precise)
        | {"n_features": int(disc.rows_["feature"].nunique()), "n_concepts": len(precise)},
        "discover_homolog_supported_first": scores(by_support, missing, precise),
        "homolog_all_concepts": scores(transfer, missing, precise),
        "homolog_discover_concepts": scores(
            transfer[transfer["concept"].isin(precise)], missing, precise
        ),
        "discover_strata": {
            "with_annotated_homolog": _stratum(np.array(hit), supported.to_numpy()),
            "without_annotated_homolog": _stratum(np.array(hit), ~supported.to_numpy()),
            "correct_not_proposed_by_homolog_transfer": int((np.array(hit) & novel).sum()),
            "correct_in_top50_not_proposed_by_homolog": int((np.array(hit) & novel)[:50].sum()),
        },
        "seconds": {
            "associate": round(t_assoc, 1),
            "discover_with_homologs": round(t_disc, 1),
            "homolog_baseline": round(t_base, 1),
        },
    }


def _stratum(hit: np.ndarray, mask: np.ndarray) -> dict:
    return {
        "n": int(mask.sum()),
        "correct": int(hit[mask].sum()),
        "precision": float(hit[mask].mean()) if mask.any() else None,
    }


def table(res: dict) -> str:
    lines = ["method | N | correct | precision@N | recall@N | recall@N (discover's concepts)"]
    for name in (
        "discover",
        "discover_homolog_supported_first",
        "homolog_all_concepts",
        "homolog_discover_concepts",
    ):
        for n in TOP_N:
            s = res[name][f"top{n}"]
            rr = s["recall_reachable"]
            lines.append(
                f"{name} | {n} | {s['correct']} | {s['precision']:.3f} | {s['recall']:.4f} | "
                f"{'-' if rr is None else f'{rr:.4f}'}"
            )
    lines.append(f"discover strata: {json.dumps(res['discover_strata'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="/tmp/demo-after", help="plmsae demo run directory")
    ap.add_argument("--sae", default=None, help="SAE directory (default RUN/L4/sae)")
    ap.add_argument("--work", default="/tmp/discover-recovery", help="scratch directory")
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-precision", type=float, default=0.9)
    ap.add_argument("--max-q", type=float, default=1e-6)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    if not (Path(args.run) / "store").is_dir():
        print(f"{args.run} is not a plmsae demo run; make one: plmsae demo --out {args.run}")
        return 2
    res = run(args)
    print(json.dumps(res, indent=2) if args.json else table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
