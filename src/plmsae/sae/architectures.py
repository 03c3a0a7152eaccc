"""The SAE architectures plmsae can train and load, by the name stored in ``cfg.json``.

:data:`ARCHITECTURES` is the one list of architecture names: the ``train --arch`` check, the
checkpoint reader and :func:`create_sae` all look names up here (:func:`sae_class`).
"""

from __future__ import annotations

import os

import torch

from plmsae._util import InputError
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

#: architectures with a fixed number ``k`` of active latents per token (on average for batch*)
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")


def sae_class(arch: str, path: str | os.PathLike | None = None) -> type[SAE]:
    """The class of architecture ``arch``; an :class:`InputError` naming ``path`` if unknown."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise InputError(
            f"unknown SAE architecture {arch!r}.",
            path=path,
            fix=f"use one of {', '.join(ARCHITECTURES)}.",
        ) from None


def create_sae(cfg: SAEConfig, generator: torch.Generator | None = None) -> SAE:
    """A freshly initialised SAE of ``cfg.arch``: unit-norm random decoder rows, encoder =
    decoder transposed (autoencoders) or an independent draw (transcoders)."""
    sae = sae_class(cfg.arch)(cfg)
    sae.reset_parameters(generator)
    return sae
