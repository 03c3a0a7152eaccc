"""Acceptance of the default budget on real activations (validation: 51 minutes on one shared
core, too long for CI; run by hand with ``pytest -m validation``).

The first 600 proteins of the bundled demo set, embedded with the offline ESM-2 8M model at
layer 4 (~180,000 residues); ``plmsae train`` with its defaults at 2,560 latents and k = 32 (the
set-up of issue 16, where one pass gave 38 steps and FVE 0.57) must reach an FVE within 0.03 of
a run three times as long at the same width and k. FVE from ``plmsae evaluate`` on the store.
``PLMSAE_DEMO600_STORE=DIR`` keeps the store in DIR (embedding resumes: a complete store there is
verified and reused), e.g. to share it with ``benchmarks/sae_train.py --store DIR``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.validation, pytest.mark.timeout(7200)]


def test_default_budget_reaches_the_long_run(tmp_path):
    import plmsae
    from plmsae.data.demo import demo_paths

    with gzip.open(demo_paths().fasta, "rt") as fh:
        text = fh.read()
    records = [">" + r for r in text.split(">")[1:]]
    (tmp_path / "p600.fasta").write_text("".join(itertools.islice(records, 600)))
    out = Path(os.environ.get("PLMSAE_DEMO600_STORE", tmp_path / "store"))
    store = plmsae.embed(tmp_path / "p600.fasta", out=out, layers=[4])
    default = plmsae.train(store.store, out=tmp_path / "default", latents=2560, k=32)
    budget = json.loads((tmp_path / "default" / "cfg.json").read_text())["training"]["budget"]
    assert budget["rule"] == "plateau"
    steps = default.metrics["steps"]
    assert steps > 3 * (store.n_residues // 4096)  # several passes, not one
    long = plmsae.train(
        store.store, out=tmp_path / "long", latents=2560, k=32, tokens=3 * steps * 4096
    )
    fve = {
        name: plmsae.evaluate(tmp_path / name, store.store, save=False).to_dict()["fve"]
        for name in ("default", "long")
    }
    print(  # the figures of docs/benchmarks.md (pytest -s)
        f"residues {store.n_residues} default steps {steps} (plateau at "
        f"{budget['plateau_step']}) FVE {fve['default']:.4f}; long steps "
        f"{long.metrics['steps']} FVE {fve['long']:.4f}"
    )
    assert long.metrics["steps"] == 3 * steps
    assert fve["default"] >= fve["long"] - 0.03, fve
