"""Where an SAE's layer lives in a Hugging Face ESM model (``EsmForMaskedLM`` / ``EsmModel``).

Layer 0 is the embeddings, layer ``i`` the output of block ``i`` (``hidden_states[i]``), and the
last layer the output of ``emb_layer_norm_after``. :func:`hook_point` names that module (recorded
in ``cfg.json`` and exported to SAELens); :func:`hook_module` finds it in a loaded model.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def hook_point(layer: int | None, n_layers: int | None) -> str | None:
    """Name (in ``EsmForMaskedLM``) of the module whose output is ``hidden_states[layer]``."""
    if layer is None:
        return None
    if layer == 0:
        return "esm.embeddings"
    if n_layers is not None and layer == n_layers:
        return "esm.encoder.emb_layer_norm_after"
    return f"esm.encoder.layer.{layer - 1}"


def hook_module(model: Any, layer: int, n_layers: int) -> nn.Module:
    """The module of ``model`` (with or without its masked-LM head) whose output is
    ``hidden_states[layer]``."""
    base: Any = getattr(model, "esm", model)
    if layer == 0:
        return base.embeddings
    if layer == n_layers and getattr(base.encoder, "emb_layer_norm_after", None) is not None:
        return base.encoder.emb_layer_norm_after
    return base.encoder.layer[layer - 1]
