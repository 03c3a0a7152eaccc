"""InterPLM SAEs (github.com/ElanaPearl/InterPLM; ``Elana/InterPLM-esm2-8m`` and ``-650m`` on
the hub): a ``torch.save``'d state dict (``ae.pt``, ``ae_normalized.pt``, ``ae_unnormalized.pt``),
optionally with the training run's ``config.yaml`` beside it.

InterPLM's classes (``interplm.sae.dictionary``) and how their forward maps onto plmsae's:

============  ===============================================  ==================================
InterPLM      tensors                                          plmsae
============  ===============================================  ==================================
ReLUSAE       bias, encoder.{weight,bias}, decoder.weight       relu; b_dec = bias
ReLUSAE_Tied  encoder.{weight,bias}, decoder.{weight,bias}      relu, encoder reads x (no b_dec)
JumpReLUSAE   ... decoder.bias, threshold [d_sae]               jumprelu, encoder reads x; the
                                                                threshold per latent
TopKSAE       encoder.*, decoder.weight, b_dec, k, threshold    topk (encode's default: top k)
BatchTopKSAE  the same tensors                                  batchtopk (encode's default:
                                                                the global threshold)
============  ===============================================  ==================================

``decoder.weight`` is ``[d_in, d_sae]`` (``nn.Linear``); plmsae stores its transpose. A
``normalize_to_sqrt_d`` flag in the state dict means each input is scaled to norm sqrt(d) first
(plmsae's ``sqrt_d``), and plmsae decodes back to input units as InterPLM's
``forward(x, unnormalize=True)`` does; the codes are those inside InterPLM's ``forward``
(``encode`` of the normalised input). ``activation_rescale_factor`` (InterPLM's "normalized"
features, per-latent maxima) is not applied: the codes are ``encode``'s default, raw features. TopK and BatchTopK files hold the same tensors: the class comes from
``config.yaml`` (its trainer) or ``--arch``. The model and layer are not in the file: ``--model``
and ``--layer`` (InterPLM embeds with ``EsmModel(..., output_hidden_states=True)``,
``hidden_states[layer]`` without <cls>/<eos>, which is plmsae's layer numbering).
"""

from __future__ import annotations

import re
from typing import Any

from plmsae._util import InputError
from plmsae.sae.imports.common import (
    Imported,
    floats,
    log_threshold,
    read_tensors,
    require_keys,
    scale_note,
)

FORMAT = "interplm"
#: trainer module in config.yaml -> plmsae architecture
TRAINERS = {"relu": "relu", "top_k": "topk", "batch_top_k": "batchtopk", "jump_relu": "jumprelu"}
_TRAINER_TAG = re.compile(r"trainer_cfg:\s*!!python/object:interplm\.train\.trainers\.(\w+)\.")


def read(source: Any, options: Any) -> Imported:
    """The InterPLM checkpoint at ``source`` (a :class:`~plmsae.sae.imports.source.Source`)."""
    path = source.file()
    state = read_tensors(path)
    require_keys(state, ("encoder.weight", "encoder.bias", "decoder.weight"), path, "InterPLM")
    arch = _architecture(state, source, options, path)
    t = floats(state)
    tensors = {
        "W_enc": t["encoder.weight"],
        "b_enc": t["encoder.bias"],
        "W_dec": t["decoder.weight"].t().contiguous(),
    }
    out = Imported(format=FORMAT, arch=arch, tensors=tensors, hidden_states=True)
    if arch in ("topk", "batchtopk"):
        tensors["b_dec"] = t["b_dec"]
        out.k = int(state["k"])
        if arch == "batchtopk":
            out.threshold = float(state["threshold"])
            tensors["threshold"] = t["threshold"].reshape(())
    elif "bias" in state:  # ReLUSAE: a pre-encoder bias, subtracted in and added out
        tensors["b_dec"] = t["bias"]
    else:  # ReLUSAE_Tied and JumpReLUSAE: the encoder reads x; the decoder has its own bias
        tensors["b_dec"] = t["decoder.bias"]
        out.apply_b_dec_to_input = False
        out.notes.append("the encoder reads x itself (InterPLM subtracts no bias before it)")
        if arch == "jumprelu":
            tensors["log_threshold"] = log_threshold(t["threshold"])
    if bool(state.get("normalize_to_sqrt_d", False)):
        out.normalisation = "sqrt_d"
        out.notes.append(
            "normalize_to_sqrt_d: each input is scaled to norm sqrt(d) and the reconstruction "
            "scaled back (InterPLM forward(x, unnormalize=True))"
        )
    note = None
    if "activation_rescale_factor" in state:
        note = scale_note(
            "activation_rescale_factor", state["activation_rescale_factor"], "feature maxima"
        )
    out.notes += [note] if note else []
    out.peer = {"file": source.name, "class": _CLASSES[arch], "tensors": sorted(state)}
    return out


_CLASSES = {
    "relu": "ReLUSAE",
    "jumprelu": "JumpReLUSAE",
    "topk": "TopKSAE",
    "batchtopk": "BatchTopKSAE",
}


def _architecture(state: dict, source: Any, options: Any, path: Any) -> str:
    """The plmsae architecture of an InterPLM state dict (TopK vs BatchTopK from config.yaml or
    ``--arch``: their tensors are the same)."""
    if "k" not in state:
        if "threshold" in state:
            require_keys(state, ("decoder.bias",), path, "InterPLM JumpReLU")
            return "jumprelu"
        if "bias" not in state:
            require_keys(state, ("decoder.bias",), path, "InterPLM ReLU (tied)")
        return "relu"
    require_keys(state, ("b_dec", "threshold"), path, "InterPLM TopK/BatchTopK")
    config = source.member("config.yaml", optional=True)
    found = _TRAINER_TAG.search(config.read_text()) if config is not None else None
    from_config = TRAINERS.get(found.group(1)) if found else None
    arch = options.arch or from_config
    if arch not in ("topk", "batchtopk"):
        raise InputError(
            "InterPLM TopK and BatchTopK SAEs hold the same tensors and no config.yaml says "
            "which this is." + (f" (--arch {arch} is neither.)" if arch else ""),
            path=path,
            fix="pass --arch topk or --arch batchtopk (the trainer it was made with), or put "
            "the run's config.yaml next to the file.",
        )
    if from_config and options.arch and options.arch != from_config:
        raise InputError(
            f"--arch {options.arch} contradicts config.yaml (trainer {found.group(1)}).",  # type: ignore[union-attr]
            path=config,
            fix=f"drop --arch or pass --arch {from_config}.",
        )
    return arch
