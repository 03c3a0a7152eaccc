"""InterProt SAEs (github.com/etowahadams/interprot; ``liambai/InterProt-ESM2-SAEs`` on the hub):
a safetensors file (or a PyTorch state dict, with or without Lightning's ``sae.`` prefix) of
``interprot.sae_model.SparseAutoencoder``.

Its forward (``get_acts`` / ``forward_val``): each input is layer-normalised by its own mean and
unbiased std (eps 1e-5 added to the std), ``b_pre`` subtracted, ``pre = x @ w_enc + b_enc``, the
top k pre-activations kept and ReLU'd, ``recon = latents @ w_dec + b_pre``, then
``recon * std + mean``. That is plmsae's ``topk`` with ``layernorm`` normalisation exactly
(``W_enc = w_enc.T``, ``W_dec = w_dec``, ``b_dec = b_pre``).

The file holds neither k (the class defaults to 128; the published file names say ``_k<k>``)
nor the model and layer (the published SAEs read ``hidden_states[24]`` of ESM-2 650M,
``facebook/esm2_t33_650M_UR50D``): ``--k``, ``--model`` and ``--layer`` are required.
"""

from __future__ import annotations

from typing import Any

from plmsae._util import InputError
from plmsae.sae.imports.common import Imported, floats, read_tensors, require_keys

FORMAT = "interprot"
KEYS = ("w_enc", "w_dec", "b_enc", "b_pre")


def read(source: Any, options: Any) -> Imported:
    """The InterProt checkpoint at ``source``."""
    path = source.file()
    state = read_tensors(path)
    if all(("sae." + k) in state for k in KEYS):  # a Lightning module's state dict
        state = {k[len("sae.") :]: v for k, v in state.items() if k.startswith("sae.")}
    require_keys(state, KEYS, path, "InterProt")
    if options.k is None:
        raise InputError(
            "InterProt checkpoints do not record k (active latents per token).",
            path=path,
            fix="pass --k: the k the SAE was trained with (the published file names say "
            "_k<k>; InterProt's SparseAutoencoder defaults to 128).",
        )
    t = floats({k: state[k] for k in KEYS})
    tensors = {
        "W_enc": t["w_enc"].t().contiguous(),
        "b_enc": t["b_enc"],
        "W_dec": t["w_dec"],
        "b_dec": t["b_pre"],
    }
    return Imported(
        format=FORMAT,
        arch="topk",
        tensors=tensors,
        normalisation="layernorm",
        k=int(options.k),
        hidden_states=True,
        notes=[
            "layer norm per input (mean, unbiased std + 1e-5) and b_pre as b_dec: InterProt's "
            "forward_val exactly",
            "InterProt's examples feed hidden_states[layer] with <cls>/<eos>; plmsae stores "
            "residues only",
        ],
        peer={"file": source.name, "class": "SparseAutoencoder", "tensors": sorted(state)},
    )
