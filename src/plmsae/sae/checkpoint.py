"""The SAE checkpoint: a directory with ``sae.safetensors`` and ``cfg.json``; names, writer, reader.

``cfg.json`` is :class:`plmsae.sae.base.SAEConfig` as JSON (``"format": "plmsae-sae"``, a format
version, the architecture, sizes, normalisation constants, the model spec, layer, hook point,
training settings and metrics). :func:`load_sae` refuses a checkpoint made for another model
(family, ID/path, revision), width or layer, so an SAE is never silently applied to the wrong
activations; imported SAEs (:mod:`plmsae.sae.imports`) record the model they were published for
in the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from plmsae._util import InputError, atomic_path, read_json, write_json
from plmsae.embedding.adapters import DEFAULT_FAMILY
from plmsae.sae.architectures import sae_class
from plmsae.sae.base import FORMAT, SAE, SAEConfig

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def save_sae(sae: SAE, path: str | Path) -> Path:
    """Write ``sae.safetensors`` and ``cfg.json`` into directory ``path`` (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sae.sync_config()
    tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    with atomic_path(path / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "arch": sae.cfg.arch})
    write_json(path / CFG_FILE, sae.cfg.to_dict())
    return path


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds both files of a finished checkpoint."""
    path = Path(path)
    return (path / CFG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_sae_config(path: str | Path) -> SAEConfig:
    """The ``cfg.json`` of checkpoint directory ``path`` (without loading the weights)."""
    path = Path(path)
    if not is_checkpoint(path):
        raise InputError(
            f"no SAE checkpoint here (need {CFG_FILE} and {WEIGHTS_FILE}).",
            path=path,
            fix="point to the --out directory of `plmsae train`.",
        )
    return SAEConfig.from_dict(read_json(path / CFG_FILE), path / CFG_FILE)


def load_sae(
    path: str | Path,
    *,
    model: Any = None,
    layer: int | None = None,
    d_in: int | None = None,
    device: str | torch.device = "cpu",
) -> SAE:
    """Load a checkpoint directory, refusing a mismatch with what the caller will feed it.

    ``model``: a model name/path, a ``ModelSpec``/``LoadedModel`` or a spec dict; ``layer``:
    the layer the activations come from; ``d_in``: their width."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_sae_config(path)
    check_compatible(cfg, path, model=model, layer=layer, d_in=d_in)
    sae = sae_class(cfg.arch, path / CFG_FILE)(cfg)
    state = load_file(str(path / WEIGHTS_FILE))
    expected = {k: tuple(v.shape) for k, v in sae.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        raise InputError(
            f"weights do not match cfg.json (expected {expected}, found {got}).",
            path=path / WEIGHTS_FILE,
            fix="the checkpoint is damaged or mixed up; re-train or re-export it.",
        )
    sae.load_state_dict(state)
    return sae.to(device)


def _model_identity(model: Any) -> dict[str, Any] | None:
    """(id, revision, d_model, n_layers) of whatever the caller passed as ``model``."""
    if model is None:
        return None
    if hasattr(model, "spec"):
        model = model.spec
    if dataclasses.is_dataclass(model) and not isinstance(model, type):
        model = dataclasses.asdict(model)
    if isinstance(model, dict):
        return model
    return {"id": str(model)}


def _same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ids_a = {str(a.get("id")), str(a.get("path"))} - {"None"}
    ids_b = {str(b.get("id")), str(b.get("path"))} - {"None"}
    if not ids_a & ids_b:
        return False
    ra, rb = a.get("revision"), b.get("revision")
    return ra is None or rb is None or ra == rb


def check_compatible(
    cfg: SAEConfig,
    path: Path | str | None,
    *,
    model: Any = None,
    layer: int | None = None,
    d_in: int | None = None,
) -> None:
    """Raise :class:`InputError` when an SAE does not belong to this model / layer / width."""
    if d_in is not None and int(d_in) != cfg.d_in:
        raise InputError(
            f"this SAE reads {cfg.d_in}-d activations but the data are {d_in}-d.",
            path=path,
            fix="use an SAE trained on the same model and layer.",
        )
    if layer is not None and cfg.layer is not None and int(layer) != cfg.layer:
        raise InputError(
            f"this SAE was trained on layer {cfg.layer}, not layer {layer}.",
            path=path,
            fix=f"use layer {cfg.layer} or an SAE trained on layer {layer}.",
        )
    want = _model_identity(model)
    if want is not None and cfg.model:
        if (
            want.get("d_model") is not None
            and int(want["d_model"]) != cfg.d_in
            and not cfg.is_transcoder
        ):
            raise InputError(
                f"this SAE reads {cfg.d_in}-d activations but model "
                f"{want.get('id')} has width {want['d_model']}.",
                path=path,
                fix="use an SAE trained on this model.",
            )
        have_family = cfg.model.get("family") or DEFAULT_FAMILY
        if want.get("family") and want["family"] != have_family:
            raise InputError(
                f"this SAE reads {have_family} activations (model {cfg.model.get('id')!r}), "
                f"not {want['family']} ones (model {want.get('id')!r}): a model family's "
                "hidden states mean nothing to an SAE of another.",
                path=path,
                fix="use the model the SAE was trained on, or an SAE trained on this model.",
            )
        if not _same_model(want, cfg.model):
            raise InputError(
                f"this SAE was trained on model {cfg.model.get('id')!r} (revision "
                f"{cfg.model.get('revision')}), not on {want.get('id')!r} (revision "
                f"{want.get('revision')}).",
                path=path,
                fix="use the model the SAE was trained on, or an SAE trained on this model.",
            )
