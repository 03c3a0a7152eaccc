"""SAELens SAEs (``sae_lens``, PyPI ``sae-lens``): a directory with ``cfg.json`` and
``sae_weights.safetensors`` as ``SAE.save_model`` / ``SAE.load_from_disk`` write and read them
(SAELens 6; pre-6 configs are read the way SAELens' own loader upgrades them).

SAELens' inference forward: ``x`` normalised (``normalize_activations``), ``b_dec`` subtracted
when ``apply_b_dec_to_input``, ``pre = x @ W_enc + b_enc``, the activation, ``codes @ W_dec +
b_dec``, normalisation undone. Architectures: ``standard`` (ReLU) -> plmsae ``relu``; ``topk``
-> ``topk`` (with ``rescale_acts_by_decoder_norm`` the decoder norms are folded into the
encoder and out of the decoder, as SAELens' own ``fold_W_dec_norm``: same codes, same
reconstruction); ``jumprelu`` (``relu(pre) * (pre > threshold)``, per-latent threshold) ->
``jumprelu``. Normalisations: ``none``; ``layer_norm`` -> ``layernorm`` (the same convention);
``constant_norm_rescale`` -> ``sqrt_d``; ``expected_average_only_in`` and
``covariance_whitening`` -> ``none``, as SAELens itself applies nothing at run time for them
when loading from disk. Gated SAEs, transcoders and
``hook_z`` reshaping are refused. ``W_enc`` is ``[d_in, d_sae]`` in SAELens, transposed here.

The model and hook come from ``metadata`` (``model_name``, ``hook_name``): an SAE exported by
plmsae carries its plmsae config there and is imported exactly; otherwise ``hook_name`` gives the
layer when it names a module of the model (e.g. ``esm.encoder.layer.3``), else ``--layer``.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from plmsae._util import InputError
from plmsae.sae.export import SAELENS_CFG as CFG
from plmsae.sae.export import SAELENS_NORMALISATION
from plmsae.sae.export import SAELENS_WEIGHTS as WEIGHTS
from plmsae.sae.imports.common import Imported, floats, log_threshold, read_tensors, require_keys

FORMAT = "saelens"
ARCHS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
#: SAELens normalize_activations -> plmsae normalisation (the inverse of export's mapping; the
#: last two apply nothing at run time in SAELens)
NORMALISATIONS = {v: k for k, v in SAELENS_NORMALISATION.items()} | dict.fromkeys(
    ("none", "expected_average_only_in", "covariance_whitening"), "none"
)
_PRE6_RENAMES = {"hook_point": "hook_name", "activation_fn_str": "activation_fn"}
_METADATA_KEYS = ("model_name", "hook_name", "hook_head_index", "prepend_bos", "context_size")


def read(source: Any, options: Any) -> Imported:
    """The SAELens checkpoint directory at ``source``."""
    cfg = _config(json.loads(source.member(CFG).read_text()), source.text)
    weights_path = source.member(WEIGHTS)
    state = read_tensors(weights_path)
    require_keys(state, ("W_enc", "b_enc", "W_dec", "b_dec"), weights_path, "SAELens")
    arch = ARCHS[cfg["architecture"]]
    t = floats(state)
    if "scaling_factor" in t and not torch.allclose(t["scaling_factor"], torch.tensor(1.0)):
        raise InputError(
            "this SAELens SAE has a fine-tuning scaling factor, which plmsae does not model.",
            path=weights_path,
            fix="fold it into W_dec with SAELens before importing.",
        )
    W_enc, b_enc, W_dec = t["W_enc"].t().contiguous(), t["b_enc"], t["W_dec"]
    notes = []
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        norms = W_dec.norm(dim=-1)
        W_enc, b_enc, W_dec = W_enc * norms[:, None], b_enc * norms, W_dec / norms[:, None]
        notes.append("rescale_acts_by_decoder_norm folded into the weights (same codes)")
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": t["b_dec"]}
    if arch == "jumprelu":
        if "threshold" not in t:
            require_keys(state, ("log_threshold",), weights_path, "SAELens JumpReLU")
        threshold = t["threshold"] if "threshold" in t else t["log_threshold"].exp()
        tensors["log_threshold"] = log_threshold(threshold)
    norm = cfg.get("normalize_activations") or "none"
    if norm in ("expected_average_only_in", "covariance_whitening"):
        notes.append(
            f"normalize_activations {norm}: SAELens applies nothing at run time for it (the "
            "statistics are folded into the weights, or not at all), nor does plmsae; the "
            "fidelity check shows if something was needed"
        )
    return _imported(cfg, arch, tensors, NORMALISATIONS[norm], notes, source)


def _imported(cfg: dict, arch: str, tensors: dict, norm: str, notes: list, source: Any):
    meta = cfg.get("metadata") or {}
    ours = meta.get("plmsae") or {}
    model = ours.get("model") or {}
    out = Imported(
        format=FORMAT,
        arch=arch,
        tensors=tensors,
        normalisation=norm,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        k=int(cfg["k"]) if arch == "topk" else None,
        model=model.get("path") or model.get("id") or meta.get("model_name"),
        layer=ours.get("layer"),
        peer_hook=meta.get("hook_name"),
        notes=notes,
        peer={"cfg": {k: v for k, v in cfg.items() if k != "metadata"}, "metadata": meta},
    )
    if ours:
        out.hidden_states = True
        out.notes.append("exported by plmsae: model and layer from its recorded config")
    return out


def _config(cfg: dict, where: str) -> dict:
    """SAELens 6 config (pre-6 ones upgraded as SAELens does), checked for what plmsae reads."""
    meta = cfg.get("metadata") or {}
    version = str(meta.get("sae_lens_version") or cfg.get("sae_lens_version") or "0")
    if int(version.split(".")[0] or 0) < 6:
        cfg = {_PRE6_RENAMES.get(k, k): v for k, v in cfg.items()}
        cfg["metadata"] = {k: cfg[k] for k in _METADATA_KEYS if k in cfg}
        if cfg.get("activation_fn") == "topk" and (cfg.get("activation_fn_kwargs") or {}).get("k"):
            cfg["architecture"], cfg["k"] = "topk", cfg["activation_fn_kwargs"]["k"]
        cfg.setdefault("architecture", "standard")
        hook_z = "hook_z" in str(cfg.get("hook_name") or "")
        cfg.setdefault("reshape_activations", "hook_z" if hook_z else "none")
        if isinstance(cfg.get("normalize_activations"), bool):
            cfg["normalize_activations"] = (
                "expected_average_only_in" if cfg["normalize_activations"] else "none"
            )
        if cfg["architecture"] == "standard" and cfg.get("activation_fn", "relu") != "relu":
            _refuse(f"activation function {cfg['activation_fn']!r}", where)
    if cfg.get("architecture") not in ARCHS:
        _refuse(f"architecture {cfg.get('architecture')!r}", where)
    if cfg.get("reshape_activations", "none") != "none":
        _refuse(f"reshape_activations {cfg['reshape_activations']!r}", where)
    if (cfg.get("normalize_activations") or "none") not in NORMALISATIONS:
        _refuse(f"normalize_activations {cfg['normalize_activations']!r}", where)
    return cfg


def _refuse(what: str, where: str) -> None:
    raise InputError(
        f"SAELens {what} is not supported by plmsae.",
        path=where,
        fix=f"import standard (ReLU), topk or jumprelu SAEs with normalize_activations "
        f"{', '.join(NORMALISATIONS)}.",
    )
