"""An imported SAE goes through every later stage unchanged: the SAE of ``assoc_inputs`` written
as InterPLM writes a TopK SAE, imported with ``plmsae import interplm``, then evaluated
(the import's fidelity check), associated (the same associations as the original SAE), explained
(offline), reported, compared and used to annotate a sequence."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from plmsae.sae.checkpoint import load_sae
from plmsae.sae.imports import import_sae


@pytest.mark.slow
def test_imported_sae_runs_through_every_stage(assoc_inputs, tmp_path, tiny_esm_dir):
    from plmsae.analysis.associate import associate
    from plmsae.atlas.annotate import annotate
    from plmsae.atlas.report import report
    from plmsae.interpret.explain import explain
    from plmsae.pipeline.compare import compare

    native = load_sae(assoc_inputs["sae"])
    assert native.cfg.normalisation == "scalar" and native.cfg.norm_scale == 1.0
    state = {  # InterPLM's TopKSAE layout (nn.Linear encoder/decoder, b_dec, k, threshold)
        "encoder.weight": native.W_enc.detach(),
        "encoder.bias": native.b_enc.detach(),
        "decoder.weight": native.W_dec.detach().t().contiguous(),
        "b_dec": native.b_dec.detach(),
        "k": torch.tensor(native.cfg.k, dtype=torch.int),
        "threshold": torch.tensor(-1.0),
        "activation_rescale_factor": torch.ones(native.cfg.d_sae),
        "normalize_to_sqrt_d": torch.tensor(False),
    }
    torch.save(state, tmp_path / "ae.pt")
    unit = tmp_path / "L2"  # a run directory's layer unit: sae/ and assoc/
    res = import_sae(
        "interplm",
        str(tmp_path / "ae.pt"),
        out=unit / "sae",
        model=str(tiny_esm_dir),
        layer=2,
        arch="topk",
        store=assoc_inputs["store"],
    )
    assert res.check is not None and res.check["l0"] <= native.cfg.k
    kw = dict(
        annotations=assoc_inputs["annotations"],
        ontology=assoc_inputs["ontology"],
        split_method="random",
        min_concept=5,
        max_concept_fraction=1.0,
    )
    ours = associate(unit / "sae", assoc_inputs["store"], out=unit / "assoc", **kw)
    theirs = associate(assoc_inputs["sae"], assoc_inputs["store"], out=tmp_path / "native", **kw)
    a = pd.read_parquet(ours.out / "associations.parquet")
    b = pd.read_parquet(theirs.out / "associations.parquet")
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)
    explain(unit / "assoc", llm="offline", n_features=6, n_bootstrap=100)
    site = report(unit / "assoc", out=tmp_path / "site", tracks=True)
    assert site.index.is_file() and site.n_pages > 0
    rows = compare([unit]).rows
    assert rows[0]["arch"] == "topk" and rows[0]["fve"] == pytest.approx(res.check["fve"])
    protein = annotate("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", sae=unit / "sae", top=3).proteins[0]
    assert len(protein["features"]) == 3
