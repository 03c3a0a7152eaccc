"""Checkpoints written the way InterPLM, InterProt and Biohub write them, and each peer's own
forward pass as the reference for the import tests.

None of the three installs from PyPI (InterPLM and InterProt are GitHub-only; PyPI's ``esm``
3.2.1 has no SAE code and pins transformers < 4.48.2), so the forward passes below are written
here from the publishers' code, as read at:

- InterPLM ``interplm/sae/dictionary.py`` (ReLUSAE, ReLUSAE_Tied, JumpReLUSAE, TopKSAE,
  BatchTopKSAE, and ``Dictionary._normalize_input_and_get_norms``), state dicts saved with
  ``torch.save(module.state_dict())`` (their ``_save_to_state_dict`` adds
  ``normalize_to_sqrt_d``);
- InterProt ``interprot/sae_model.py`` (SparseAutoencoder.LN / get_acts / forward_val), weights
  as the published ``.safetensors``;
- Biohub ``transformers/models/esmc/modeling_esmc_sae.py`` (``_ESMCSAELayer.forward``,
  ``_zscore_normalize_representation``), repositories of ``config.json`` + ``layer_N.safetensors``.

The fixtures are built with the same ``nn.Module`` layouts (``nn.Linear`` weights are
``[out, in]``) so the tensor names, shapes and dtypes are what the peers write.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

D, F_ = 32, 96  # width of the tiny ESM-2 (tests/conftest.py) and the number of latents


def _randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "bias" in name else 0.2))


# --------------------------------------------------------------------------------- InterPLM
class _InterPLM(nn.Module):
    """The tensors of InterPLM's classes: encoder/decoder nn.Linear, plus per class extras."""

    def __init__(self, kind: str, sqrt_d: bool, k: int = 5):
        super().__init__()
        self.kind, self.sqrt_d = kind, sqrt_d
        tied_or_jump = kind in ("tied", "jumprelu")
        self.encoder = nn.Linear(D, F_, bias=True)
        self.decoder = nn.Linear(F_, D, bias=tied_or_jump)
        if kind == "relu":
            self.bias = nn.Parameter(torch.zeros(D))
        if kind in ("topk", "batchtopk"):
            self.register_buffer("k", torch.tensor(k, dtype=torch.int))
            self.register_buffer("threshold", torch.tensor(-1.0))
            self.b_dec = nn.Parameter(torch.zeros(D))
        if kind == "jumprelu":
            self.threshold = nn.Parameter(torch.ones(F_) * 0.001)
        self.register_buffer("activation_rescale_factor", torch.ones(F_))

    def state(self) -> dict:
        d = dict(self.state_dict())
        d["normalize_to_sqrt_d"] = torch.tensor(self.sqrt_d, dtype=torch.bool)
        return d


def interplm_checkpoint(path: Path, kind: str, sqrt_d: bool = False, seed: int = 0) -> dict:
    """``torch.save`` an InterPLM state dict of ``kind`` (relu, tied, jumprelu, topk,
    batchtopk); returns it."""
    m = _InterPLM(kind, sqrt_d)
    _randomise(m, seed)
    with torch.no_grad():
        if kind == "jumprelu":
            m.threshold.copy_(torch.rand(F_, generator=torch.Generator().manual_seed(seed)) * 0.3)
            m.threshold[:3] = -0.1  # thresholds below zero act as zero
        if kind == "batchtopk":
            m.threshold.fill_(0.15)
        m.activation_rescale_factor.uniform_(0.5, 2.0)  # "normalized" statistics, not applied
    state = m.state()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def interplm_forward(state: dict, kind: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, reconstruction in input units) as InterPLM's classes compute them: ``encode(x)``
    with its defaults, and ``forward(x, unnormalize=True)``."""
    We, be, Wd = state["encoder.weight"], state["encoder.bias"], state["decoder.weight"]
    sqrt_d = bool(state["normalize_to_sqrt_d"])
    norms = x.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    xn = F.normalize(x, p=2, dim=-1) * math.sqrt(D) if sqrt_d else x
    if kind == "relu":
        f = F.relu((xn - state["bias"]) @ We.T + be)
        xh = f @ Wd.T + state["bias"]
    elif kind == "tied":
        f = F.relu(xn @ We.T + be)
        xh = f @ Wd.T + state["decoder.bias"]
    elif kind == "jumprelu":
        pre = xn @ We.T + be
        f = F.relu(pre * (pre > state["threshold"]))
        xh = f @ Wd.T + state["decoder.bias"]
    else:
        post_relu = F.relu((xn - state["b_dec"]) @ We.T + be)
        if kind == "topk":  # TopKSAE.encode(use_threshold=False)
            top = post_relu.topk(int(state["k"]), dim=-1, sorted=False)
            f = torch.zeros_like(post_relu).scatter_(-1, top.indices, top.values)
        else:  # BatchTopKSAE.encode(use_threshold=True)
            f = post_relu * (post_relu > state["threshold"])
        xh = f @ Wd.T + state["b_dec"]
    if sqrt_d:
        xh = xh * norms / math.sqrt(D)
    return f, xh


# --------------------------------------------------------------------------------- InterProt
def interprot_checkpoint(path: Path, seed: int = 0) -> dict:
    """The published InterProt layout: w_enc [d, F], w_dec [F, d], b_enc, b_pre and the
    dead-latent counter buffer, as safetensors."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "w_enc": torch.randn(D, F_, generator=g) * 0.2,
        "w_dec": torch.randn(F_, D, generator=g) * 0.2,
        "b_enc": torch.randn(F_, generator=g) * 0.3,
        "b_pre": torch.randn(D, generator=g) * 0.3,
        "stats_last_nonzero": torch.zeros(F_, dtype=torch.long),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


def interprot_forward(state: dict, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseAutoencoder.get_acts and forward_val."""
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    std = xc.std(dim=-1, keepdim=True)
    xn = xc / (std + 1e-5) - state["b_pre"]
    pre = xn @ state["w_enc"] + state["b_enc"]
    top = torch.topk(pre, k=k, dim=-1, sorted=False)
    latents = torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))
    recon = (latents @ state["w_dec"] + state["b_pre"]) * std + mu
    return latents, recon


# --------------------------------------------------------------------------------- Biohub
def biohub_repository(d: Path, layers: list[int], k: int, seed: int = 0, **config) -> dict:
    """``config.json`` + ``layer_N.safetensors`` per layer (W_enc [d, F], W_dec [F, d], b_dec,
    idf, max); returns ``{layer: state}``."""
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"d_model": D, "codebook_dim": F_, "k": k, "available_layers": layers}
    cfg.update({"model_type": "esmc_sae", **config})
    (d / "config.json").write_text(json.dumps(cfg))
    states = {}
    for i, layer in enumerate(layers):
        g = torch.Generator().manual_seed(seed + i)
        states[layer] = {
            "W_enc": torch.randn(D, F_, generator=g) * 0.2,
            "W_dec": torch.randn(F_, D, generator=g) * 0.2,
            "b_dec": torch.randn(D, generator=g) * 0.3,
            "idf": torch.rand(F_, generator=g) + 0.5,
            "max": torch.rand(F_, generator=g) + 1.0,
        }
        save_file(states[layer], str(d / f"layer_{layer}.safetensors"))
    return states


def biohub_forward(state: dict, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """_ESMCSAELayer.forward: (feature magnitudes, reconstruction of the z-scored input)."""
    xc = x - x.mean(dim=-1, keepdim=True)
    z = xc / (xc.std(dim=-1, keepdim=True) + 1e-5)
    pre = F.relu((z - state["b_dec"]) @ state["W_enc"])
    top = torch.topk(pre, k, dim=-1)
    feats = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    return feats, feats @ state["W_dec"] + state["b_dec"]
