"""A synthetic ASSOC_DIR written exactly as docs/design.md specifies, with planted concept
features; shared by the explain tests (imported by name: a `conftest` import is ambiguous
when several test folders have one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import fisher_exact

CONCEPTS = [  # (concept, category, name, prevalence)
    ("GO:0005524", "GO:MF", "ATP binding", 0.25),
    ("GO:0003677", "GO:MF", "DNA binding", 0.15),
    ("GO:0004672", "GO:MF", "protein kinase activity", 0.12),
    ("GO:0016491", "GO:MF", "oxidoreductase activity", 0.15),
    ("GO:0006412", "GO:BP", "translation", 0.12),
    ("GO:0006810", "GO:BP", "transport", 0.2),
    ("GO:0006355", "GO:BP", "regulation of DNA-templated transcription", 0.15),
    ("GO:0005886", "GO:CC", "plasma membrane", 0.2),
    ("GO:0005634", "GO:CC", "nucleus", 0.2),
    ("GO:0005737", "GO:CC", "cytoplasm", 0.7),  # generic: hidden in prompts
    ("family:Protein kinase superfamily", "family", "Protein kinase superfamily", 0.1),
    (
        "family:Universal ribosomal protein uL2 family",
        "family",
        "Universal ribosomal protein uL2 family",
        0.1,
    ),
    ("location:Mitochondrion", "location", "Mitochondrion", 0.12),
    ("Transmembrane", "residue", "Transmembrane", 0.15),
]
N_PLANTED = 10  # SAE features 0..9 fire on concept f (f < 10); 10..13 fire at random


def bh(p: np.ndarray) -> np.ndarray:
    n = len(p)
    order = np.argsort(p)
    q = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1)
    return out


def write_assoc_dir(
    out: Path, n_proteins: int = 300, seed: int = 0, with_test_split: bool = True
) -> Path:
    """A small ASSOC_DIR following docs/design.md (stage 4) exactly."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "activations").mkdir(exist_ok=True)
    n = n_proteins
    cluster = np.sort(rng.integers(0, n // 3, n))
    cl_split = rng.choice(["train", "validation", "test"], size=n // 3, p=[0.6, 0.1, 0.3])
    split = (
        cl_split[cluster]
        if with_test_split
        else np.where(cl_split[cluster] == "test", "train", cl_split[cluster])
    )
    member = np.column_stack([rng.random(n) < prev for *_, prev in CONCEPTS])
    proteins = pd.DataFrame(
        {
            "id": [f"Q{i:05d}" for i in range(n)],
            "split": split,
            "cluster": [f"c{c}" for c in cluster],
            "length": rng.integers(50, 600, n),
            "name": [
                f"Uncharacterized protein {i}" if i % 7 == 0 else f"Protein {i}" for i in range(n)
            ],
        }
    )
    proteins.to_parquet(out / "proteins.parquet", index=False)
    concepts = pd.DataFrame(
        {
            "concept": [c for c, *_ in CONCEPTS],
            "category": [c for _, c, *_ in CONCEPTS],
            "name": [nm for _, _, nm, _ in CONCEPTS],
            "n_proteins": member.sum(0),
        }
    )
    concepts.to_parquet(out / "concepts.parquet", index=False)
    sp.save_npz(out / "annotations.npz", sp.csr_matrix(member))

    # SAE: sparse, features 0..N_PLANTED-1 follow one concept each (with noise)
    n_sae = N_PLANTED + 4
    sae = np.zeros((n, n_sae), np.float32)
    for f in range(n_sae):
        fires = (member[:, f] & (rng.random(n) < 0.9)) if f < N_PLANTED else rng.random(n) < 0.15
        fires |= rng.random(n) < 0.03
        sae[fires, f] = rng.lognormal(0.5, 0.4, fires.sum())
    # neurons: dense, weakly tied to concepts, negative values included
    n_neuron = 8
    neuron = (rng.normal(0, 1, (n, n_neuron)) + 0.4 * member[:, :n_neuron]).astype(np.float32)
    random_ = np.where(rng.random((n, 6)) < 0.2, rng.random((n, 6)), 0).astype(np.float32)
    acts = {"sae": sae, "neuron": neuron, "random": random_}
    rows, feats = [], []
    for src, x in acts.items():
        sp.save_npz(out / "activations" / f"{src}.npz", sp.csr_matrix(x))
        for f in range(x.shape[1]):
            active = x[:, f] > 0
            feats.append(
                {
                    "source": src,
                    "feature": f,
                    "density": float(active.mean()),
                    "max_activation": float(x[:, f].max()),
                    "top_proteins": proteins["id"].to_numpy()[np.argsort(-x[:, f])[:5]].tolist(),
                }
            )
            train = split == "train"
            for j, (cid, cat, _, _) in enumerate(CONCEPTS):
                a, c = active[train], member[train, j]
                both = int((a & c).sum())
                table = [[both, int((a & ~c).sum())], [int((~a & c).sum()), int((~a & ~c).sum())]]
                odds, p = fisher_exact(table, alternative="greater")
                prec = both / max(a.sum(), 1)
                rec = both / max(c.sum(), 1)
                rows.append(
                    {
                        "source": src,
                        "feature": f,
                        "concept": cid,
                        "category": cat,
                        "threshold": 0.0,
                        "n_active": int(a.sum()),
                        "n_concept": int(c.sum()),
                        "n_both": both,
                        "n_population": int(train.sum()),
                        "p_value": p,
                        "q_value": p,
                        "precision": prec,
                        "recall": rec,
                        "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                        "odds_ratio": odds,
                        "auroc": 0.5,
                        "split": "train",
                    }
                )
    assoc = pd.DataFrame(rows)
    assoc["q_value"] = bh(assoc["p_value"].to_numpy())
    assoc.to_parquet(out / "associations.parquet", index=False)
    pd.DataFrame(feats).to_parquet(out / "features.parquet", index=False)
    summary = {}
    for src in acts:
        a = assoc[(assoc.source == src) & (assoc.q_value < 0.05) & (assoc.precision >= 0.5)]
        summary[src] = {
            "n_features": int(acts[src].shape[1]),
            "n_features_associated": int(a.feature.nunique()),
            "by_category": a.groupby("category").feature.nunique().to_dict(),
        }
    summary["settings"] = {"synthetic": True}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "run.json").write_text(
        json.dumps(
            {
                "sae": "synthetic",
                "store": "synthetic",
                "layer": 4,
                "level": "protein",
                "pooling": "mean",
                "model": {"id": "synthetic", "description": "synthetic test model"},
            },
            indent=2,
        )
    )
    return out
