"""Neighbours (decoder cosine, co-activation) and families (shared top concept) in the atlas."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from synthetic import make_assoc_dir

from plmsae.atlas.neighbours import coactivation_neighbours, decoder_neighbours, families


def test_decoder_and_coactivation_neighbours():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(50, 16))
    w[7] = w[3] + 0.05 * rng.normal(size=16)  # 7 writes nearly 3's direction
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    nb = decoder_neighbours(w.astype(np.float32), [3, 7], k=4)
    assert nb[3][0][0] == 7 and nb[3][0][1] > 0.95 and nb[7][0][0] == 3
    assert all(g != 3 for g, _ in nb[3]) and len(nb[3]) == 4  # never itself
    acts = np.zeros((40, 6), np.float32)
    acts[:20, 0] = 1.0
    acts[:18, 1] = 2.0  # 18 of 0's 20 proteins: Jaccard 0.9
    acts[10:30, 2] = 1.0  # 10 shared of 30: 0.33
    acts[35:, 3] = 1.0  # disjoint: not listed
    co = coactivation_neighbours(sp.csr_matrix(acts), [0, 5], k=3)
    assert [g for g, _ in co[0]] == [1, 2] and np.isclose(co[0][0][1], 0.9)
    assert co[5] == []  # a feature that never fires has no neighbours


def test_families_group_by_top_concept():
    rows = [
        {
            "feature": f,
            "label": "ATP binding",
            "concepts": [["GO:1", "ATP binding", "GO:MF"]],
            "page": f % 2 == 0,
        }
        for f in range(3)
    ] + [
        {"feature": 3, "label": "x", "concepts": [["GO:2", "nucleus", "GO:CC"]], "page": True},
        {"feature": 4, "label": "", "concepts": [], "page": False},
    ]
    fams = families(rows)
    assert len(fams) == 1 and fams[0]["name"] == "ATP binding"
    assert [g["feature"] for g in fams[0]["features"]] == [0, 1, 2]


def test_report_lists_neighbours_and_families(tmp_path):
    from plmsae.atlas.report import report
    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    assoc = make_assoc_dir(tmp_path / "assoc", n_proteins=40, n_features=30, seed=4)
    torch.manual_seed(0)
    sae = save_sae(create_sae(SAEConfig(arch="topk", d_in=16, d_sae=30, k=4)), tmp_path / "sae")
    res = report(assoc, out=tmp_path / "site", tracks=False, sae=sae, feature_map="none")
    assert res.n_pages > 0
    page = next((tmp_path / "site" / "features").iterdir()).read_text()
    assert "Nearest features" in page and "By decoder cosine" in page
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'id="families"' in index and "<details" in index
    assert not (tmp_path / "site" / "map.html").exists()
