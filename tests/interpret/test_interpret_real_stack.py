"""The explain stage on a real association directory: tiny random ESM-2 -> embed -> random TopK
SAE -> ``plmsae associate`` -> ``plmsae explain`` (offline, and an LLM served by the fake server,
with sequence windows from the store and the SAE)."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def real_assoc(tmp_path_factory, tiny_esm_dir, family_fasta):
    import torch

    from plmsae.analysis.associate import associate
    from plmsae.embedding.embedder import embed
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    d = tmp_path_factory.mktemp("explain_real")
    fasta = d / "proteins.fasta"
    ids, seqs = family_fasta(fasta, n_families=16, length=60, n_mutations=3)
    store_dir = embed(fasta, d / "store", model=str(tiny_esm_dir), layers=[2]).store
    store = ActivationStore(store_dir)
    torch.manual_seed(0)
    sae = create_sae(
        SAEConfig(
            arch="topk", d_in=32, d_sae=48, k=6, layer=2, level="residue", model=store.meta["model"]
        )
    )
    save_sae(sae, d / "sae")
    rows = ["Entry\tProtein names\tGene Ontology (GO)\tProtein families"]
    for i, pid in enumerate(ids):
        fam = i // 4
        go = "kinase activity [GO:0016301]" if fam % 2 else "transporter activity [GO:0005215]"
        rows.append(f"{pid}\tProtein {i}\t{go}\t{'Alpha' if fam % 3 else 'Beta'} family")
    tsv = d / "uniprot.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    out = associate(
        d / "sae",
        store_dir,
        annotations=tsv,
        out=d / "assoc",
        split_method="random",
        min_concept=2,
        min_both=1,
        max_concept_fraction=1.0,
    ).out
    return out


@pytest.mark.slow
def test_explain_on_a_real_association_run(real_assoc, tmp_path, fake_llm, monkeypatch):
    import re
    import shutil

    from plmsae.interpret.explain import explain

    assoc = shutil.copytree(real_assoc, tmp_path / "assoc")
    block = explain(assoc, llm="offline", n_features=6, n_bootstrap=100).summary
    ex = pd.read_parquet(assoc / "explanations.parquet")
    # The tiny random model's max-pooled neurons fire on every protein (both signs), so none has
    # the inactive held-out proteins a detection score needs and none is eligible; neurons with
    # both classes are explained in test_interpret_science.py.
    assert "sae" in set(ex["source"]) and set(ex["source"]) <= {"sae", "neuron"}
    assert (~ex["is_llm"]).all()
    assert (ex["status"].str.startswith(("ok", "skipped"))).all()
    assert block["sources"]["sae"]["n_scored"] > 0
    assert "validation" in block["split"]  # associate computes its statistics on test
    summary = json.loads((assoc / "summary.json").read_text())
    assert "explain" in summary and "sae" in summary  # the association summary is kept

    # an LLM run with sequence windows around the strongest residues (store + SAE from run.json)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    ok = ex[(ex.source == "sae") & (ex.status == "ok")]["feature"].tolist()[:2]
    block = explain(
        assoc,
        llm="anthropic:claude-haiku-4-5",
        base_url=fake_llm.url,
        features=[f"sae:{','.join(map(str, ok))}"],
        sources=["sae"],
        n_bootstrap=50,
    ).summary
    assert block["residue_windows"] == "shown for active explanation proteins"
    prompt = fake_llm.requests[0]["body"]["messages"][0]["content"]
    assert (
        "Strongest residue and its sequence window:" in prompt and "residue-level feature" in prompt
    )
    win = re.search(r"window: ([A-Z])(\d+): (\.\.\.)?[A-Z]*\[([A-Z])\]", prompt)
    assert win and win.group(1) == win.group(4)
    assert block["sources"]["sae"]["n_scored"] == len(ok)
