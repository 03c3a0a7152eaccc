"""A small end-to-end association setup: 96 proteins in 24 near-duplicate families embedded with
the tiny random ESM-2, a random TopK SAE on layer 2, a tiny GO ontology, and a UniProt TSV whose
GO term ``GO:0000010`` is planted on the proteins where SAE feature PLANTED fires most."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

OBO = """format-version: 1.2
ontology: go

[Term]
id: GO:0008150
name: biological_process
namespace: biological_process

[Term]
id: GO:0000010
name: process A
namespace: biological_process
is_a: GO:0008150 ! biological_process

[Term]
id: GO:0000011
name: process B
namespace: biological_process
is_a: GO:0008150 ! biological_process

[Term]
id: GO:0003674
name: molecular_function
namespace: molecular_function

[Term]
id: GO:0000020
name: function C
namespace: molecular_function
is_a: GO:0003674 ! molecular_function
"""


@pytest.fixture(scope="session")
def assoc_inputs(tmp_path_factory, tiny_esm_dir, family_fasta):
    import torch

    # the SAE stage lands in its own commits; until then these end-to-end tests cannot run
    pytest.importorskip("plmsae.sae.base", reason="plmsae.sae is not in this checkout yet")
    from plmsae.analysis.activations import protein_activations
    from plmsae.embedding.embedder import embed
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import load_sae, save_sae

    d = tmp_path_factory.mktemp("assoc_inputs")
    fasta = d / "proteins.fasta"
    ids, seqs = family_fasta(fasta, n_families=24, length=90, n_mutations=4)
    store_dir = d / "store"
    embed(fasta, store_dir, model=str(tiny_esm_dir), layers=[2])
    store = ActivationStore(store_dir)
    torch.manual_seed(0)
    cfg = SAEConfig(
        arch="topk", d_in=32, d_sae=48, k=6, layer=2, level="residue", model=store.meta["model"]
    )
    sae = create_sae(cfg)
    save_sae(sae, d / "sae")
    sae = load_sae(d / "sae")
    acts, _ = protein_activations(store, {"sae": (sae.encode, 48)}, store.ids)
    dense = acts["sae"].toarray()
    planted = int(np.argmax(dense.std(axis=0)))
    top = set(np.array(store.ids)[np.argsort(-dense[:, planted])[:40]])
    rows = ["Entry\tSequence\tGene Ontology IDs\tProtein families\tTransmembrane"]
    for i, (pid, s) in enumerate(zip(ids, seqs)):
        go = ["GO:0000010"] if pid in top else ["GO:0000011"]
        if i % 3 == 0:
            go.append("GO:0000020")
        fam = "Alpha family" if i % 2 else "Beta family"
        tm = f'TRANSMEM {10 + i % 5}..{30 + i % 5}; /note="Helical"' if i % 2 == 0 else ""
        rows.append(f"{pid}\t{s}\t{'; '.join(go)}\t{fam}\t{tm}")
    tsv = d / "uniprot.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    obo = d / "mini.obo"
    obo.write_text(OBO)
    return {
        "fasta": fasta,
        "store": store_dir,
        "sae": d / "sae",
        "annotations": tsv,
        "ontology": obo,
        "planted": planted,
        "ids": ids,
    }


@pytest.fixture()
def go_obo(tmp_path) -> Path:
    p = tmp_path / "mini.obo"
    p.write_text(
        OBO
        + """
[Term]
id: GO:0000012
name: process A1
namespace: biological_process
is_a: GO:0000010 ! process A

[Term]
id: GO:0000013
name: process A2
namespace: biological_process
relationship: part_of GO:0000010 ! process A
"""
    )
    return p
