"""A random TopK SAE for a loaded model, saved as a checkpoint (the apply tests' SAE)."""

from __future__ import annotations

from pathlib import Path


def make_sae(lm, out: Path, *, layer: int = 2, d_sae: int = 64, k: int = 8, seed: int = 0) -> Path:
    """A randomly initialised TopK SAE for ``lm`` at ``layer``, written to ``out``."""
    import torch

    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    cfg = SAEConfig(
        arch="topk",
        d_in=lm.spec.d_model,
        d_sae=d_sae,
        k=k,
        model=lm.spec.to_dict(),
        layer=layer,
        level="residue",
    )
    sae = create_sae(cfg, torch.Generator().manual_seed(seed))
    return save_sae(sae, out)
