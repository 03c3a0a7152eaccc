"""Export an SAE to another library's format: ``plmsae export SAE --format saelens --out DIR``.

SAELens (``sae_lens.SAE.load_from_disk(DIR)``): ``cfg.json`` + ``sae_weights.safetensors`` with
``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec`` (+ ``threshold``).
Architectures map as topk -> ``topk``; relu -> ``standard``; jumprelu -> ``jumprelu``;
batchtopk and matryoshka -> ``jumprelu`` with their global inference threshold on every latent
(SAELens' own inference form of BatchTopK). plmsae's scalar normalisation is folded into the
weights (``W_enc * s``, ``W_dec / s``, ``b_dec / s``: same codes, same reconstruction), layer
norm maps to SAELens' ``layer_norm`` (identical convention). The plmsae config travels along
under ``metadata.plmsae``. Transcoders are not exported (SAELens' transcoder class reads a
different hook layout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from plmsae._util import InputError, atomic_path, write_json
from plmsae.sae.base import SAE
from plmsae.sae.checkpoint import load_sae

FORMATS = ("saelens",)
SAELENS_ARCH = {
    "topk": "topk",
    "relu": "standard",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",
    "matryoshka": "jumprelu",
}


def _saelens(sae: SAE) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    cfg = sae.cfg
    if cfg.is_transcoder:
        raise InputError(
            "transcoders cannot be exported to SAELens yet.",
            fix="export autoencoders only, or use the plmsae checkpoint directly.",
        )
    s = cfg.norm_scale if cfg.normalisation == "scalar" else 1.0
    with torch.no_grad():
        tensors = {
            "W_enc": (sae.W_enc * s).t().contiguous(),
            "b_enc": sae.b_enc.clone(),
            "W_dec": (sae.W_dec / s).contiguous(),
            "b_dec": sae.b_dec / s,
        }
        if cfg.arch == "jumprelu":
            tensors["threshold"] = sae.log_threshold.exp()
        elif cfg.arch in ("batchtopk", "matryoshka"):
            tensors["threshold"] = sae.threshold.clamp_min(0).expand(cfg.d_sae).clone()
    spec = cfg.model or {}
    out = {
        "architecture": SAELENS_ARCH[cfg.arch],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "layer_norm" if cfg.normalisation == "layernorm" else "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": "6.0.0",
            "model_name": spec.get("id"),
            "hook_name": cfg.hook_point,
            "hook_head_index": None,
            "prepend_bos": True,
            "exclude_special_tokens": True,
            "context_size": spec.get("max_tokens"),
            "dataset_path": cfg.store,
            "plmsae": cfg.to_dict(),
        },
    }
    if cfg.arch == "topk":
        out["k"] = cfg.k
        out["rescale_acts_by_decoder_norm"] = False
    return out, {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}


def export(
    sae: Annotated[Path, typer.Argument(help="SAE directory (plmsae train --out).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write.")],
    format: Annotated[str, typer.Option("--format", help="Target format: saelens.")] = "saelens",
) -> Path:
    """Write the SAE in another library's format (SAELens: sae_lens.SAE.load_from_disk(OUT))."""
    from safetensors.torch import save_file

    if format not in FORMATS:
        raise InputError(f"unknown --format {format!r}.", fix=f"use one of {', '.join(FORMATS)}.")
    model = sae if isinstance(sae, SAE) else load_sae(sae)
    cfg, tensors = _saelens(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "sae_weights.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(out / "cfg.json", cfg)
    return out
