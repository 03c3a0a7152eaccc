"""SAELens export: sae_lens.SAE.load_from_disk loads it and encodes/decodes as plmsae does.

sae-lens pins its own torch/transformers, so it lives in a separate environment: set
PLMSAE_SAELENS_PYTHON to a python that has sae_lens (default: /work/venv-saelens/bin/python or
.venv-saelens/bin/python in the checkout, when present). Set-up:
    python3 -m venv .venv-saelens && .venv-saelens/bin/pip install torch==2.13.0 sae-lens
"""

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from plmsae.sae.architectures import create_sae
from plmsae.sae.base import SAEConfig
from plmsae.sae.export import write_saelens


def _saelens_python():
    cands = [
        os.environ.get("PLMSAE_SAELENS_PYTHON"),
        "/work/venv-saelens/bin/python",
        str(Path(__file__).resolve().parents[2] / ".venv-saelens" / "bin" / "python"),
    ]
    for c in cands:
        if c and Path(c).is_file():
            return c
    return None


PY = _saelens_python()

SCRIPT = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import load_file, save_file
    from sae_lens import SAE
    x = load_file(sys.argv[1])["x"]
    for d in sys.argv[2:]:
        sae = SAE.load_from_disk(d)
        with torch.no_grad():
            z = sae.encode(x)
            y = sae.decode(z)
        save_file({"z": z.contiguous(), "y": y.contiguous()}, d + "/out.safetensors")
        print(type(sae).__name__)
""")


def _make(arch, norm):
    torch.manual_seed(0)
    sae = create_sae(
        SAEConfig(
            arch=arch,
            d_in=24,
            d_sae=96,
            k=5,
            normalisation=norm,
            norm_scale=0.37,
            model={"id": "test/model"},
            layer=2,
            hook_point="esm.encoder.layer.1",
        )
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.5)
        if arch == "jumprelu":
            sae.log_threshold.normal_(-1.5, 0.3)
        if arch in ("batchtopk", "matryoshka"):
            sae.threshold.fill_(0.3)
    return sae.eval()


def test_export_writes_saelens_layout(tmp_path):
    out = tmp_path / "sl"
    write_saelens(_make("topk", "scalar"), out)
    import json

    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 5 and cfg["d_sae"] == 96
    w = load_file(str(out / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (24, 96) and w["W_dec"].shape == (96, 24)


CASES = [
    ("topk", "scalar"),
    ("topk", "layernorm"),
    ("relu", "none"),
    ("jumprelu", "scalar"),
    ("batchtopk", "scalar"),
    ("matryoshka", "none"),
]


@pytest.mark.slow
@pytest.mark.skipif(
    PY is None,
    reason="no python with sae_lens: set PLMSAE_SAELENS_PYTHON or "
    "create .venv-saelens (see this file's docstring)",
)
def test_saelens_round_trip(tmp_path):
    """One sae_lens process loads every case (its import takes ~10 s)."""
    x = torch.randn(50, 24) * 3 + 1
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    dirs = []
    for arch, norm in CASES:
        d = tmp_path / f"{arch}_{norm}"
        write_saelens(_make(arch, norm), d)
        dirs.append(str(d))
    (tmp_path / "run.py").write_text(SCRIPT)
    r = subprocess.run(
        [PY, str(tmp_path / "run.py"), str(tmp_path / "x.safetensors"), *dirs],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == [
        "TopKSAE",
        "TopKSAE",
        "StandardSAE",
        "JumpReLUSAE",
        "JumpReLUSAE",
        "JumpReLUSAE",
    ]
    for (arch, norm), d in zip(CASES, dirs):
        sae = _make(arch, norm)
        got = load_file(d + "/out.safetensors")
        with torch.no_grad():
            z, stats = sae.encode(x, return_stats=True)
            y = sae.decode(z, stats)
        assert ((got["z"] > 0) == (z > 0)).all(), (arch, norm)
        assert torch.allclose(got["z"], z, atol=1e-4, rtol=1e-4), (arch, norm)
        assert torch.allclose(got["y"], y, atol=1e-4, rtol=1e-4), (arch, norm)
