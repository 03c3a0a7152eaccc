"""What every importer returns, and the safe readers of third-party weight files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from plmsae._util import InputError


@dataclass
class Imported:
    """A published SAE in plmsae's layout, before the metadata the user supplies is added.

    ``tensors`` is the plmsae state dict: ``W_enc [d_sae, d_in]``, ``b_enc``, ``W_dec [d_sae,
    d_in]``, ``b_dec`` (+ ``log_threshold`` for JumpReLU, ``threshold`` for BatchTopK).
    ``model``, ``layer``, ``k``, ``hook_point`` are what the checkpoint itself says (None: it
    does not say); ``peer_hook`` is the peer's own name for where the SAE reads, if any.
    ``notes`` say how the peer's conventions were carried over; ``peer`` is recorded as is."""

    format: str
    arch: str
    tensors: dict[str, Tensor]
    normalisation: str = "none"
    apply_b_dec_to_input: bool = True
    k: int | None = None
    threshold: float | None = None
    model: str | None = None
    layer: int | None = None
    peer_hook: str | None = None
    hidden_states: bool | None = None  # True: reads hidden states; False: something else
    notes: list[str] = field(default_factory=list)
    peer: dict[str, Any] = field(default_factory=dict)

    def config_fields(self) -> dict[str, Any]:
        """The :class:`~plmsae.sae.base.SAEConfig` fields the checkpoint itself decides."""
        names = ("arch", "d_in", "d_sae", "k", "threshold", "normalisation")
        return {n: getattr(self, n) for n in (*names, "apply_b_dec_to_input")}

    @property
    def d_sae(self) -> int:
        return int(self.tensors["W_enc"].shape[0])

    @property
    def d_in(self) -> int:
        return int(self.tensors["W_enc"].shape[1])


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file, or of a PyTorch pickle read with
    ``torch.load(weights_only=True)`` (plain tensors only; a Lightning checkpoint's
    ``state_dict`` is taken from it)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for pickles that hold code or objects
        raise InputError(
            "not a plain weights file (only tensors are read from PyTorch pickles): "
            + (str(e).splitlines()[0] if str(e) else type(e).__name__),
            path=path,
            fix="convert the checkpoint to safetensors from a trusted source.",
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise InputError(
            "expected a dict of tensors (a state dict).", path=path, fix="pass the SAE's weights."
        )
    return {str(k): v for k, v in obj.items()}


def require_keys(state: dict[str, Tensor], keys: tuple[str, ...], path: Any, peer: str) -> None:
    """Refuse a state dict that lacks one of ``keys``, naming what it holds."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise InputError(
            f"not a {peer} SAE: tensors {missing} are missing (found {sorted(state)}).",
            path=path,
            fix=f"pass a checkpoint written by {peer}, or choose the matching FORMAT.",
        )


def floats(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous float32 copies."""
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in state.items()}


def log_threshold(threshold: Tensor) -> Tensor:
    """plmsae's JumpReLU parameter for a peer threshold: ``z = pre * (pre > exp(log_t))``. A
    threshold <= 0 behaves as 0 in every peer (ReLU before or after the jump), hence log(0)."""
    return torch.log(threshold.to(torch.float32).clamp_min(0.0))


def scale_note(name: str, scale: Tensor, how: str) -> str | None:
    """A note about per-latent statistics that plmsae does not apply, when they are real."""
    if torch.allclose(scale, torch.ones_like(scale)):
        return None
    return (
        f"{name} holds per-latent statistics ({how}); not applied: the codes are the peer's raw "
        "codes (plmsae's analyses compare each latent with its own maximum, so the scale of a "
        "latent does not change them)"
    )
