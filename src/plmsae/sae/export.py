"""Export an SAE to another library's format: ``plmsae export SAE --format saelens --out DIR``.

SAELens (``sae_lens.SAE.load_from_disk(DIR)``): ``cfg.json`` + ``sae_weights.safetensors`` with
``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec`` (+ ``threshold``).
Architectures map as topk -> ``topk``; relu -> ``standard``; jumprelu -> ``jumprelu``;
batchtopk and matryoshka -> ``jumprelu`` with their global inference threshold on every latent
(SAELens' own inference form of BatchTopK). plmsae's scalar normalisation is folded into the
weights (``W_enc * s``, ``W_dec / s``, ``b_dec / s``: same codes, same reconstruction), layer
norm maps to SAELens' ``layer_norm`` and ``sqrt_d`` to its ``constant_norm_rescale`` (identical
conventions). The plmsae config travels along
under ``metadata.plmsae``. Transcoders are not exported (SAELens' transcoder class reads a
different hook layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plmsae._util import InputError, atomic_path, prepare_out_dir, write_json
from plmsae.config import StageConfig, argument, option, stage_function
from plmsae.sae.base import SAE
from plmsae.sae.batchtopk import BatchTopKSAE
from plmsae.sae.checkpoint import load_sae
from plmsae.sae.jumprelu import JumpReLUSAE

#: plmsae normalisation -> SAELens ``normalize_activations`` ("scalar" is folded into the weights)
SAELENS_NORMALISATION = {"layernorm": "layer_norm", "sqrt_d": "constant_norm_rescale"}
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_ARCH = {
    "topk": "topk",
    "relu": "standard",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",
    "matryoshka": "jumprelu",
}


def saelens_checkpoint(sae: SAE) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """SAELens' ``cfg.json`` (as a dict) and weights of ``sae``."""
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
        if isinstance(sae, JumpReLUSAE):
            tensors["threshold"] = sae.log_threshold.exp()
        elif isinstance(sae, BatchTopKSAE):  # and Matryoshka
            tensors["threshold"] = sae.threshold.clamp_min(0).expand(cfg.d_sae).clone()
    spec = cfg.model or {}
    out = {
        "architecture": SAELENS_ARCH[cfg.arch],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": SAELENS_NORMALISATION.get(cfg.normalisation, "none"),
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


def write_saelens(sae: SAE, out: Path) -> list[Path]:
    """Write ``sae`` as a SAELens checkpoint into directory ``out``; returns the files."""
    from safetensors.torch import save_file

    cfg, tensors = saelens_checkpoint(sae)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / SAELENS_WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    write_json(out / SAELENS_CFG, cfg)
    return [out / SAELENS_CFG, out / SAELENS_WEIGHTS]


EXPORTERS: dict[str, Callable[[SAE, Path], list[Path]]] = {"saelens": write_saelens}


@dataclass
class ExportConfig(StageConfig):
    """Write an SAE in another library's format.

    saelens: cfg.json and sae_weights.safetensors, for sae_lens.SAE.load_from_disk(OUT).
    The exported SAE gives the same codes and reconstructions as in plmsae.
    """

    sae: Path | None = argument(help="SAE directory (plmsae train --out).")
    out: Path = option(help="Directory to write.")
    format: str = option("saelens", help=f"Target format: {', '.join(EXPORTERS)}.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in EXPORTERS:
            raise InputError(
                f"unknown --format {self.format!r}.", fix=f"use one of {', '.join(EXPORTERS)}."
            )


@dataclass
class ExportResult:
    """What :func:`export` wrote: the directory, its format and files."""

    out: Path
    format: str
    files: list[Path]


@stage_function(ExportConfig)
def export(cfg: ExportConfig) -> ExportResult:
    """Export the SAE in ``cfg.sae`` to ``cfg.out`` in ``cfg.format``; returns an
    :class:`ExportResult`. For an SAE in memory call the writer directly
    (``write_saelens(sae, out)``)."""
    if cfg.sae is None:
        raise InputError("export needs an SAE directory.", fix="pass the SAE directory.")
    sae = load_sae(cfg.sae)
    out = prepare_out_dir(cfg.out)
    return ExportResult(out, cfg.format, EXPORTERS[cfg.format](sae, out))
