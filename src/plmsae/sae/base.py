"""The one base class of every plmsae sparse autoencoder (and transcoder), and its config.

An SAE maps an activation ``x [..., d_in]`` to non-negative codes ``z [..., d_sae]`` and back::

    x_n = normalise(x)                       # cfg.json: "none", "scalar", "layernorm", "sqrt_d"
    pre = (x_n - b_dec) @ W_enc.T + b_enc    # b_dec is not subtracted for transcoders, nor when
                                             # apply_b_dec_to_input is false (imported SAEs)
    z   = activation(pre)                    # TopK, BatchTopK, ReLU, JumpReLU, Matryoshka
    y   = denormalise(z @ W_dec + b_dec)

Weights use the ``nn.Linear`` layout: ``W_enc [d_sae, d_in]`` and ``W_dec [d_sae, d_out]`` (row
``i`` of ``W_dec`` is latent ``i``'s direction), so sparse decoding is one ``embedding_bag``.

:class:`SAEConfig` is everything needed to use an SAE safely (architecture, sizes, k or threshold,
normalisation and its constants, level and pooling, the model spec, layer and hook point, BOS/EOS
handling, training settings and metrics, plmsae version); :mod:`plmsae.sae.checkpoint` writes and
reads it with the weights, :mod:`plmsae.sae.architectures` maps ``arch`` to its class.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from plmsae._util import InputError

#: normalisations ``plmsae train`` offers
NORMALISATIONS = ("scalar", "layernorm", "none")
#: every normalisation an SAE may have: also "sqrt_d", per sample x * sqrt(d_in) / ||x|| (SAELens'
#: constant_norm_rescale, InterPLM's normalize_to_sqrt_d), for imported SAEs
ALL_NORMALISATIONS = (*NORMALISATIONS, "sqrt_d")
#: normalisations with per-sample statistics that decode() needs
PER_SAMPLE = ("layernorm", "sqrt_d")
FORMAT = "plmsae-sae"
FORMAT_VERSION = 1
LN_EPS = 1e-5


@dataclass
class SAEConfig:
    """Everything needed to use an SAE safely; written as ``cfg.json`` next to the weights.

    ``arch`` is checked where its class is looked up
    (:func:`plmsae.sae.architectures.sae_class`)."""

    arch: str
    d_in: int
    d_sae: int
    d_out: int | None = None  # width of the target (transcoders); None = d_in
    k: int | None = (
        None  # topk / batchtopk / matryoshka: active latents per token (average for batch*)
    )
    threshold: float | None = None  # batchtopk / matryoshka: inference threshold on pre-activations
    l1_coefficient: float | None = None  # relu: L1 weight (times decoder row norms)
    l0_coefficient: float | None = None  # jumprelu: L0 weight
    jumprelu_bandwidth: float | None = None  # jumprelu: straight-through kernel width
    matryoshka_prefixes: list[int] | None = None  # matryoshka: nested prefix sizes, last = d_sae
    auxk_alpha: float = 0.0  # topk family: weight of the AuxK dead-latent loss
    dead_tokens: int | None = None  # a latent is dead after this many tokens without firing
    # normalisation: "scalar": x * norm_scale with E||x*scale|| = sqrt(d_in) on training data;
    # "layernorm": per sample (x - mean) / std, undone on the way out; "sqrt_d": per sample
    # x * sqrt(d_in) / ||x||, undone on the way out; "none".
    normalisation: str = "scalar"
    norm_scale: float = 1.0
    target_norm_scale: float = 1.0  # transcoders: scale of the target
    apply_b_dec_to_input: bool = True  # False: the encoder reads x_n itself, not x_n - b_dec
    # what the SAE was trained on
    level: str = "residue"  # "residue" or "protein"
    pooling: str | None = None  # protein level: how residues were pooled ("mean")
    model: dict[str, Any] | None = None  # ModelSpec as dict (id, revision, n_layers, d_model ...)
    layer: int | None = None  # 0 = embeddings, i = output of block i (hidden_states[i])
    target_layer: int | None = None  # transcoders
    transcoder_target: str | None = None  # "next" (layer L+1) or "difference" (L+1 - L)
    hook_point: str | None = None  # module whose output is layer `layer` in HF EsmForMaskedLM
    special_tokens: str = "BOS (<cls>) and EOS excluded from training and evaluation"
    store: str | None = None  # activation store trained on
    training: dict[str, Any] = field(default_factory=dict)  # settings, tokens, steps, seconds
    metrics: dict[str, Any] = field(default_factory=dict)  # final training / evaluation metrics
    plmsae_version: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.normalisation not in ALL_NORMALISATIONS:
            raise InputError(
                f"unknown normalisation {self.normalisation!r}.",
                fix=f"use one of {', '.join(ALL_NORMALISATIONS)}.",
            )
        if self.d_out is None:
            self.d_out = self.d_in

    @property
    def d_target(self) -> int:
        """Width of the reconstruction: ``d_out`` (transcoders) or ``d_in``."""
        return self.d_in if self.d_out is None else self.d_out

    @property
    def is_transcoder(self) -> bool:
        return self.target_layer is not None or self.d_out != self.d_in

    @property
    def centres_input(self) -> bool:
        """Whether the encoder reads ``x_n - b_dec`` (autoencoders, unless imported without)."""
        return self.apply_b_dec_to_input and not self.is_transcoder

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path | None = None) -> "SAEConfig":
        if d.get("format") != FORMAT:
            raise InputError(
                'not a plmsae SAE config (no "format": "plmsae-sae").',
                path=path,
                fix="point to a directory written by `plmsae train`.",
            )
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(
                f"SAE format version {d['format_version']} is newer than this plmsae "
                f"reads ({FORMAT_VERSION}).",
                path=path,
                fix="upgrade plmsae.",
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class SAE(nn.Module):
    """Base sparse autoencoder. Subclasses set ``arch`` and implement :meth:`activation` and
    :meth:`training_loss`; :data:`plmsae.sae.architectures.ARCHITECTURES` lists them."""

    arch: ClassVar[str] = ""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.d_target
        self.W_enc = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self._last_stats: tuple[Tensor, Tensor] | None = None

    # ---------------------------------------------------------------- construction
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        d_sae, d_in, d_out = self.cfg.d_sae, self.cfg.d_in, self.cfg.d_target
        W = torch.randn(d_sae, d_out, generator=generator)
        self.W_dec.copy_(W / W.norm(dim=1, keepdim=True))
        if d_out == d_in and not self.cfg.is_transcoder:
            self.W_enc.copy_(self.W_dec)
        else:
            W = torch.randn(d_sae, d_in, generator=generator)
            self.W_enc.copy_(W / W.norm(dim=1, keepdim=True))
        self.b_enc.zero_()
        self.b_dec.zero_()

    # ---------------------------------------------------------------- normalisation
    def normalise(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Input to the SAE's working scale; returns the per-sample stats for layer norm."""
        x = x.to(self.W_enc.dtype)
        if self.cfg.normalisation == "scalar":
            return x * self.cfg.norm_scale, None
        if self.cfg.normalisation == "layernorm":
            # SAELens' "layer_norm" convention exactly (unbiased std, eps added to it), so that
            # exported SAEs encode identically
            mu = x.mean(-1, keepdim=True)
            x = x - mu
            std = x.std(-1, keepdim=True)
            return x / (std + LN_EPS), (mu, std)
        if self.cfg.normalisation == "sqrt_d":  # SAELens' constant_norm_rescale
            # (a zero vector stays finite, as in InterPLM, which clamps the norm alike)
            scale = x.norm(dim=-1, keepdim=True).clamp_min(1e-8) / math.sqrt(x.shape[-1])
            return x / scale, (torch.zeros_like(scale), scale)
        return x, None

    def normalise_target(self, y: Tensor) -> Tensor:
        """Transcoder targets use their own scalar (or none); layer norm is refused at training."""
        y = y.to(self.W_dec.dtype)
        if self.cfg.normalisation == "scalar":
            return y * self.cfg.target_norm_scale
        return y

    def denormalise(self, y: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.cfg.normalisation == "scalar":
            scale = self.cfg.target_norm_scale if self.cfg.is_transcoder else self.cfg.norm_scale
            return y / scale
        if self.cfg.normalisation in PER_SAMPLE:
            if stats is None:
                raise InputError(
                    f"this SAE normalises each input by its own statistics "
                    f"({self.cfg.normalisation}), so decode(z) needs them.",
                    fix="call decode(z, stats=...) with the stats returned by "
                    "encode(x, return_stats=True), or call sae(x).",
                )
            mu, std = stats
            return y * std + mu
        return y

    # ---------------------------------------------------------------- the model
    def pre_acts(self, x_n: Tensor) -> Tensor:
        """Pre-activations ``[..., d_sae]`` of normalised inputs."""
        if self.cfg.centres_input:
            x_n = x_n - self.b_dec
        return nn.functional.linear(x_n, self.W_enc, self.b_enc)

    def activation(self, pre: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Codes ``[..., d_sae]`` from pre-activations, at inference."""
        raise NotImplementedError

    def encode(self, x: Tensor, return_stats: bool = False):
        """Codes ``z [..., d_sae]`` (non-negative) of activations ``x [..., d_in]``.

        With ``return_stats=True`` also returns the per-sample normalisation statistics that
        :meth:`decode` needs for layer-norm SAEs (None otherwise)."""
        x_n, stats = self.normalise(x)
        z = self.activation(self.pre_acts(x_n))
        self._last_stats = stats
        return (z, stats) if return_stats else z

    def decode(self, z: Tensor, stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Reconstruction ``[..., d_out]`` in the input's units. For layer-norm SAEs ``stats``
        defaults to those of the last :meth:`encode` call when the shapes fit."""
        last = self._last_stats
        per_sample = self.cfg.normalisation in PER_SAMPLE
        if stats is None and per_sample and last is not None and last[0].shape[:-1] == z.shape[:-1]:
            stats = last
        y = z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        return self.denormalise(y, stats)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` (autoencoders) or prediction of the target (transcoders)."""
        z, stats = self.encode(x, return_stats=True)
        return self.decode(z, stats)

    # ---------------------------------------------------------------- training hooks
    def training_loss(self, x_n: Tensor, y_n: Tensor, state: "TrainState") -> tuple[Tensor, dict]:
        """(loss, info) on a normalised batch. ``info`` holds ``err_sq`` (sum of squared errors,
        detached), ``l0`` (mean active latents per token) and ``fired`` (bool [d_sae])."""
        raise NotImplementedError  # pragma: no cover - abstract

    def after_step(self) -> None:
        """Called after each optimiser step (TopK family: keep decoder rows at unit norm)."""

    def before_step(self) -> None:
        """Called before each optimiser step, after gradients are final."""

    def sync_config(self) -> None:
        """Copy learned constants into ``cfg`` before a checkpoint is written (BatchTopK: its
        inference threshold)."""

    @property
    def device(self) -> torch.device:
        return self.W_enc.device


@dataclass
class TrainState:
    """Mutable training state an architecture may read (dead latents, step)."""

    dead_mask: Tensor | None = None  # bool [d_sae]
    step: int = 0
    loss_scale: float = 1.0  # 1 / (expected squared norm of the centred target per token)


def unit_norm_rows_(W: Tensor) -> None:
    W.div_(W.norm(dim=1, keepdim=True).clamp_min(torch.finfo(W.dtype).eps))


def remove_parallel_grad_(W: nn.Parameter) -> None:
    """Project out the part of each decoder row's gradient parallel to the (unit) row, so Adam
    does not fight the unit-norm constraint."""
    if W.grad is None:
        return
    parallel = torch.linalg.vecdot(W.grad, W.data, dim=1).unsqueeze(1)
    W.grad.addcmul_(parallel, W.data, value=-1.0)


def default_lr(d_sae: int) -> float:
    """Learning rate that scales with 1/sqrt(width) (the OpenAI / sparsify heuristic), at five
    times sparsify's Adam base: on ESM-2 8M activations 2e-4 / sqrt(width / 2^14) was far from
    the plateau after a pass where this rate was near it (1,024 and 4,096 latents;
    docs/benchmarks.md)."""
    return 1e-3 / math.sqrt(d_sae / 2**14)
