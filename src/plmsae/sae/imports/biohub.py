"""Biohub's ESM-C SAEs (``biohub/ESMC-{300M,600M,6B}-sae-*`` on the hub): a repository with a
``config.json`` (``d_model``, ``codebook_dim``, ``k``, ``available_layers``, sometimes
``use_residual_update_instead_of_states``) and one ``layer_{N}.safetensors`` per layer holding
exactly ``W_enc [d_model, codebook]``, ``W_dec [codebook, d_model]``, ``b_dec``, ``idf``, ``max``.

Their forward (Biohub's ``_ESMCSAELayer.forward``): z-score each input by its own mean and
unbiased std (+1e-5), ``pre = relu((z - b_dec) @ W_enc)`` (no encoder bias), keep the top k,
``recon = codes @ W_dec + b_dec``, which reconstructs the z-scored input. plmsae imports it as
``topk`` with ``layernorm`` normalisation and ``b_enc = 0``: identical codes (ReLU before or
after the top-k selection gives the same values), and a reconstruction that is Biohub's mapped
back to input units (``recon * std + mean``), as every plmsae SAE decodes.

Layer ``N`` of a Biohub SAE is the input of 0-based block ``N`` of ESM-C, the last one after the
final norm: plmsae's layer ``N`` of the model's hidden states. ``idf`` / ``max`` (normalised
features ``codes / max * idf``) are not applied: the codes are raw. What the checkpoints do not
say is asked for: ``--model`` (e.g. ``biohub/ESMC-600M``), ``--layer`` for a repository with
several layers (a ``layer_N.safetensors`` file names its own), and ``--hook-point
hidden_states`` when ``config.json`` does not say whether the SAE reads hidden states or
residual updates (the MLP-output collections).
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch

from plmsae._util import InputError
from plmsae.sae.imports.common import Imported, floats, read_tensors, require_keys, scale_note

FORMAT = "esmc-biohub"
KEYS = ("W_enc", "W_dec", "b_dec", "idf", "max")
CONFIG = "config.json"
RESIDUAL_FLAG = "use_residual_update_instead_of_states"
HIDDEN_STATES = "hidden_states"
RESIDUAL_UPDATE = "residual_update"
_LAYER_FILE = re.compile(r"layer_(\d+)\.safetensors$")


def read(source: Any, options: Any) -> Imported:
    """The Biohub ESM-C SAE at ``source``: a repository / directory (with ``--layer`` unless it
    holds one layer) or one ``layer_N.safetensors``."""
    config_path = source.member(CONFIG, optional=source.is_file)
    config = json.loads(config_path.read_text()) if config_path is not None else {}
    layer = _layer(source, config, options)
    path = source.file() if source.is_file else source.member(f"layer_{layer}.safetensors")
    state = read_tensors(path)
    require_keys(state, KEYS, path, "Biohub ESM-C")
    extra = sorted(set(state) - set(KEYS))
    if extra:
        raise InputError(
            f"unexpected tensors {extra} for a Biohub ESM-C SAE layer.",
            path=path,
            fix="pass a layer_N.safetensors of a biohub/ESMC-*-sae-* repository.",
        )
    t = floats({k: state[k] for k in KEYS})
    d_in, d_sae = t["W_enc"].shape
    k = _k(config, options, path)
    _check_sizes(config, d_in, d_sae, config_path)
    tensors = {
        "W_enc": t["W_enc"].t().contiguous(),
        "b_enc": torch.zeros(d_sae),
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
    }
    notes = [
        "no encoder bias (b_enc = 0); z-scored input (layer norm, unbiased std + 1e-5); Biohub "
        "reconstructs the z-scored input, plmsae maps it back to input units",
    ]
    note = scale_note("idf / max", t["max"] / t["idf"], "normalised features codes / max * idf")
    return Imported(
        format=FORMAT,
        arch="topk",
        tensors=tensors,
        normalisation="layernorm",
        k=k,
        layer=layer,
        hidden_states=_reads_hidden_states(config, options, config_path),
        notes=notes + ([note] if note else []),
        peer={"file": path.name, "config": config},
    )


def _layer(source: Any, config: dict, options: Any) -> int:
    """The layer: a layer file's own, a single-layer repository's, or ``--layer``."""
    available = config.get("available_layers")
    m = _LAYER_FILE.search(source.name) if source.is_file else None
    if source.is_file and m is None:
        raise InputError(
            "a Biohub SAE layer file is named layer_<N>.safetensors.",
            path=source.text,
            fix="point to the repository (with --layer) or to its layer_<N>.safetensors.",
        )
    known = int(m.group(1)) if m else (available[0] if available and len(available) == 1 else None)
    layer = options.layer if options.layer is not None else known
    if layer is None:
        raise InputError(
            f"this repository holds SAEs for layers {available}; which one?",
            path=source.text,
            fix="pass --layer N (Biohub's layer N = plmsae's layer N of the hidden states).",
        )
    if known is not None and layer != known:
        raise InputError(
            f"--layer {layer} contradicts the checkpoint, which is for layer {known}.",
            path=source.text,
            fix=f"drop --layer or pass --layer {known}.",
        )
    if available is not None and layer not in available:
        raise InputError(
            f"no SAE for layer {layer} here; available layers: {available}.",
            path=source.text,
            fix="pass one of the available layers to --layer.",
        )
    return int(layer)


def _k(config: dict, options: Any, path: Any) -> int:
    if config.get("k") is not None and options.k is not None and int(options.k) != config["k"]:
        raise InputError(
            f"--k {options.k} contradicts config.json (k = {config['k']}).",
            path=path,
            fix="drop --k.",
        )
    k = config.get("k", options.k)
    if k is None:
        raise InputError(
            "no config.json next to this layer file says k.",
            path=path,
            fix="pass --k (the repository name says it: ...-k64-...), or import the "
            "repository directory with its config.json.",
        )
    return int(k)


def _check_sizes(config: dict, d_in: int, d_sae: int, path: Any) -> None:
    for key, have in (("d_model", d_in), ("codebook_dim", d_sae)):
        if config.get(key) is not None and int(config[key]) != have:
            raise InputError(
                f"config.json says {key} = {config[key]} but the weights have {have}.",
                path=path,
                fix="the files are mixed up; download them again.",
            )


def _reads_hidden_states(config: dict, options: Any, path: Any) -> bool:
    """True when the SAE reads hidden states (config flag, else ``--hook-point``)."""
    flag = config.get(RESIDUAL_FLAG)
    if flag is not None:
        expected = RESIDUAL_UPDATE if flag else HIDDEN_STATES
        if options.hook_point is not None and options.hook_point != expected:
            raise InputError(
                f"--hook-point {options.hook_point} contradicts config.json "
                f"({RESIDUAL_FLAG} = {flag}).",
                path=path,
                fix="drop --hook-point.",
            )
        return not flag
    if options.hook_point is None:
        raise InputError(
            "this Biohub SAE does not say whether it reads hidden states or residual updates "
            "(MLP outputs): the two collections share one config layout.",
            path=path,
            fix=f"pass --hook-point {HIDDEN_STATES} for the 'hidden states' collections "
            "(biohub/ESMC-*-sae-k*-codebook*, -layer*-); SAEs on MLP outputs cannot be used "
            "on plmsae's stores, which hold hidden states.",
        )
    return options.hook_point == HIDDEN_STATES
