"""The SAE architectures plmsae can train and load, by the name stored in ``cfg.json``."""

from __future__ import annotations

import torch

from plmsae.sae.base import SAE, SAEConfig
from plmsae.sae.batchtopk import BatchTopKSAE
from plmsae.sae.jumprelu import JumpReLUSAE
from plmsae.sae.matryoshka import MatryoshkaSAE
from plmsae.sae.relu import ReLUSAE
from plmsae.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "relu": ReLUSAE,
    "jumprelu": JumpReLUSAE,
    "matryoshka": MatryoshkaSAE,
}


def create_sae(cfg: SAEConfig, generator: torch.Generator | None = None) -> SAE:
    """A freshly initialised SAE of ``cfg.arch``: unit-norm random decoder rows, encoder =
    decoder transposed (autoencoders) or an independent draw (transcoders)."""
    sae = ARCHITECTURES[cfg.arch](cfg)
    sae.reset_parameters(generator)
    return sae
