"""Issue 12 item 3 and issue 13 item 8 in the explain stage: an activity definition that gives
every source both classes for detection, paired SAE-vs-neuron differences, and an offline
explainer that names only concepts that passed the association test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from synthetic_assoc import CONCEPTS, N_PLANTED

from plmsae.interpret import offline
from plmsae.interpret.explain import explain
from plmsae.interpret.scoring import paired_difference
from plmsae.interpret.selection import DEFAULT_ACTIVE_FRACTION


def _dense_neurons(assoc_dir, seed: int = 1) -> np.ndarray:
    """Neurons as max-pooling makes them: positive on every protein, shifted up on the
    proteins of concept j; with association rows (threshold 0.5 of the max) for neuron j."""
    rng = np.random.default_rng(seed)
    member = sp.load_npz(assoc_dir / "annotations.npz").toarray().astype(bool)
    n = member.shape[0]
    x = (3 + rng.normal(0, 0.5, (n, 8)) + 2.5 * member[:, :8]).astype(np.float32)
    sp.save_npz(assoc_dir / "activations" / "neuron.npz", sp.csr_matrix(x))
    a = pd.read_parquet(assoc_dir / "associations.parquet")
    keep = a[a["source"] != "neuron"]
    rows = [
        {
            **a.iloc[0].to_dict(),
            "source": "neuron",
            "feature": j,
            "concept": CONCEPTS[j][0],
            "category": CONCEPTS[j][1],
            "threshold": 0.5,
            "q_value": 1e-6,
            "p_value": 1e-7,
            "precision": 0.8,
            "f1": 0.7,
        }
        for j in range(4)  # neurons 0-3 are associated, 4-7 are not
    ]
    pd.concat([keep, pd.DataFrame(rows)], ignore_index=True).to_parquet(
        assoc_dir / "associations.parquet", index=False
    )
    return x


def test_every_scored_feature_of_every_source_has_both_detection_classes(assoc_dir):
    x = _dense_neurons(assoc_dir)
    assert (x > 0).all()  # with "active = above 0" no neuron could be scored by detection
    block = explain(assoc_dir, llm="offline", n_features=8, n_bootstrap=200).summary
    scores = pd.read_parquet(assoc_dir / "scores.parquet")
    ex = pd.read_parquet(assoc_dir / "explanations.parquet")
    for src in ("sae", "neuron"):
        ok = ex[(ex["source"] == src) & (ex["status"] == "ok")]
        det = scores[(scores["source"] == src) & (scores["method"] == "detection")]
        assert len(ok) > 0 and set(det["feature"]) == set(ok["feature"]), src
    # the associated neurons got a cutoff from their association, so both classes exist
    assert {0, 1, 2, 3} <= set(scores.loc[scores["source"] == "neuron", "feature"])
    sims = pd.read_parquet(assoc_dir / "simulations.parquet")
    for (src, f), g in sims.groupby(["source", "feature"]):
        assert (g["activation"] > 0).any() and (g["activation"] == 0).any(), (src, f)
    assert "active = per-protein activation above a cutoff" in block["activity"]
    assert f"{DEFAULT_ACTIVE_FRACTION:g} of the max" in block["activity"]
    # paired, bootstrapped SAE minus neuron differences for both scores
    for metric in ("simulation_r", "detection_balanced_accuracy"):
        d = block["sae_minus_neuron"][metric]
        assert d["ci"][0] <= d["difference"] <= d["ci"][1] and d["n"]["neuron"] > 0
    assert block["sae_minus_neuron_median_r"] == block["sae_minus_neuron"]["simulation_r"]


def test_paired_difference():
    rng = np.random.default_rng(0)
    proteins = [f"P{i}" for i in range(30)]

    def feature(noise: float) -> dict:
        truth = rng.uniform(0, 10, 30) * (rng.random(30) < 0.6)
        pred = truth + rng.normal(0, noise, 30)
        return {
            "proteins": proteins,
            "truth": truth,
            "predicted": pred,
            "true_active": truth > 0,
            "predicted_active": pred > 2,
        }

    good = [feature(0.5) for _ in range(15)]
    bad = [feature(8.0) for _ in range(15)]
    d = paired_difference({"sae": good, "neuron": bad}, "simulation_r", n_boot=300, seed=1)
    assert d["difference"] > 0.3 and d["ci"][0] > 0
    d = paired_difference({"sae": good, "neuron": bad}, "detection_balanced_accuracy", 300)
    assert d["difference"] > 0 and d["ci"][0] > 0
    same = paired_difference({"sae": good, "neuron": good}, "simulation_r", n_boot=300)
    assert same["difference"] == 0 and same["ci"][0] < 0 < same["ci"][1]
    assert paired_difference({"sae": good}, "simulation_r") == {"difference": None, "ci": None}


def test_offline_names_only_associated_concepts_and_says_when_there_are_none(assoc_dir):
    """issue 13 item 8: a feature with associations is described by them alone; a feature
    without says so (the methyltransferase feature described as a 4-protein plant concept)."""
    explain(assoc_dir, llm="offline", features=["sae:0-13"], n_bootstrap=100)
    ex = pd.read_parquet(assoc_dir / "explanations.parquet").set_index(["source", "feature"])
    a = pd.read_parquet(assoc_dir / "associations.parquet")
    a = a[(a["source"] == "sae") & (a["q_value"] < 0.05) & (a["precision"] >= 0.5)]
    names = {c: nm for c, _, nm, _ in CONCEPTS}
    n_none = 0
    for f in range(N_PLANTED + 4):
        row = ex.loc[("sae", f)]
        if row["status"] != "ok":
            continue
        assoc_names = {names[c] for c in a.loc[a["feature"] == f, "concept"]}
        if assoc_names:
            named = [nm for nm in names.values() if nm in row["description"]]
            assert set(named) <= assoc_names, (f, row["description"], assoc_names)
        else:
            n_none += 1
            assert row["label"] == "no associated concept"
            assert row["description"].startswith(offline.NO_ASSOCIATION)
    assert n_none >= 1  # the random SAE features 10-13 have no association


def test_describe_without_associations():
    assert offline.describe([], ["a"], ["GO:BP"], associated=False) == (
        "no associated concept",
        offline.NO_ASSOCIATION,
    )
    label, text = offline.describe([0], ["DNA binding"], ["GO:MF"], associated=False)
    assert label == "no associated concept" and "untested" in text and "DNA binding" in text
    assert offline.describe([0], ["DNA binding"], ["GO:MF"])[0] == "DNA binding"


@pytest.mark.parametrize("cutoff", [0.0, 2.0])
def test_scale_relative_to_the_activity_cutoff(cutoff):
    from plmsae.interpret.sampling import scale

    s = scale(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), cutoff)
    assert s[-1] == 1.0 and (s >= 0).all()
    assert (s[np.array([0.0, 1.0, 2.0, 3.0, 4.0]) <= cutoff] == 0).all()
