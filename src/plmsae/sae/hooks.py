"""Where an SAE's layer lives in a model.

Layer 0 is the embeddings, layer ``i`` the output of block ``i`` (``hidden_states[i]``), and the
last layer of ESM-2 the output of ``emb_layer_norm_after``. :func:`hook_point` names that module
for the model's family (recorded in ``cfg.json`` and exported to SAELens; the names per family
are the adapters', :mod:`plmsae.embedding.adapters`); :func:`hook_module` finds it in a loaded
ESM-2 (``EsmForMaskedLM`` / ``EsmModel``), for the masked-LM splice.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def hook_point(layer: int | None, n_layers: int | None, family: str | None = None) -> str | None:
    """Name (in the family's task model, e.g. ``EsmForMaskedLM``) of the module whose output is
    ``hidden_states[layer]``; ``family`` None is ESM-2."""
    from plmsae.embedding.adapters import hook_point as family_hook_point

    return family_hook_point(family, layer, n_layers)


def hook_module(model: Any, layer: int, n_layers: int) -> nn.Module:
    """The module of ``model`` (with or without its masked-LM head) whose output is
    ``hidden_states[layer]``."""
    base: Any = getattr(model, "esm", model)
    if layer == 0:
        return base.embeddings
    if layer == n_layers and getattr(base.encoder, "emb_layer_norm_after", None) is not None:
        return base.encoder.emb_layer_norm_after
    return base.encoder.layer[layer - 1]
