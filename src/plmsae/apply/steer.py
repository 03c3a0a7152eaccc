"""``plmsae steer SEQUENCE --sae SAE --features F --value V``: feature interventions, with
controls.

The protein runs through the model once (``clean``) and the SAE's layer is read. The SAE encodes
it; the chosen features are clamped to ``value`` or scaled by it (at ``positions``, default every
residue) and decoded; the change of the reconstruction, ``delta``, is spliced back by a forward
hook on the layer's module (:func:`plmsae.sae.hooks.hook_module`, the same hook code as the
masked-LM splice of ``plmsae evaluate``), and the remaining blocks, the final layer norm and the
masked-LM head run as usual (they are not skipped). ``splice="delta"`` adds ``delta`` to the
layer (the SAE's reconstruction error stays, so an identity edit leaves the logits unchanged);
``splice="reconstruction"`` replaces the layer by the edited reconstruction.

Every result comes with controls, run in the same batch:

- ``random_i`` (``n_controls`` of them): the same size of edit along random features: at each
  residue, a vector of the norm of ``delta`` in the direction of the decoder rows of as many
  random features (not the edited ones) as were edited;
- ``reconstruction``: the SAE's reconstruction error alone (the unedited reconstruction spliced
  in).

For each condition, against ``clean``, over the residues (probabilities over the 20 standard
amino acids): mean and max KL divergence, the fraction of residues whose most likely amino acid
changes, the mean change of the wild-type residue's probability, the largest logit change; and
``n_samples`` sequences resampled from its per-residue probabilities (``temperature``, seeded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from plmsae._util import InputError, write_json
from plmsae.apply.common import Loaded, load_sae_and_model, read_one_protein
from plmsae.config import StageConfig, argument, option, stage_function

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
MODES = ("clamp", "scale")
SPLICES = ("delta", "reconstruction")
#: positions listed in the result, the largest KL divergence of the edit first
TOP_POSITIONS = 20
#: conditions whose sequences are resampled (and whose probabilities go to --out)
SAMPLED = ("clean", "edit", "reconstruction", "random_0")


@dataclass
class SteerConfig(StageConfig):
    """Edit SAE features inside the model and see how the masked-LM head's amino-acid
    probabilities change, next to controls.

    At the SAE's layer the --features are clamped to --value or scaled by it; the change of the
    SAE's reconstruction is spliced back by a forward hook and the remaining blocks and the
    masked-LM head run. Controls: the same size of edit along random features (--n-controls),
    and the SAE's reconstruction error alone. Needs a model with its masked-LM head."""

    sequence: str = argument(
        help="The protein: a sequence in one-letter code, or a FASTA file with one record."
    )
    sae: Path = option(help="SAE checkpoint directory (from `plmsae train`), residue level.")
    features: list[int] = option(help="SAE features to edit, e.g. 12,301.")
    value: float = option(help="clamp: the activation to set; scale: the factor.")
    mode: str = option(
        "clamp", help="clamp (set the features to --value) or scale (multiply them by --value)."
    )
    positions: list[int] | None = option(
        None, help="Residues to edit, 1-based (default: every residue)."
    )
    splice: str = option(
        "delta",
        help="delta: add the edit's change of the reconstruction to the layer (the SAE's error "
        "stays; an identity edit changes nothing); reconstruction: replace the layer by the "
        "edited reconstruction.",
    )
    n_controls: int = option(8, help="Random-feature controls of matched norm.")
    n_samples: int = option(
        5, help="Sequences resampled per condition from its per-residue probabilities."
    )
    temperature: float = option(1.0, help="Sampling temperature.")
    seed: int = option(0, help="Seed for the control features and the samples.")
    model: str | None = option(
        None,
        help="ESM-2 model with its masked-LM head (default: the one recorded in the SAE's "
        "cfg.json).",
    )
    out: Path | None = option(
        None, help="Also write the result with per-residue probabilities as JSON to this file."
    )
    device: str = option("cpu", help="torch device (cpu, cuda).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            self.reject("mode", f"is not one of {', '.join(MODES)}.", "use --mode clamp or scale.")
        if self.splice not in SPLICES:
            self.reject("splice", f"is not one of {', '.join(SPLICES)}.", "use --splice delta.")
        if not self.features:
            self.reject("features", "names no feature.", "e.g. --features 12,301.")
        for name in ("n_controls", "n_samples"):
            if getattr(self, name) < 0:
                self.reject(name, "must be 0 or more.", f"e.g. --{name.replace('_', '-')} 5.")
        if not self.temperature > 0:
            self.reject("temperature", "must be positive.", "e.g. --temperature 1.")
        if not np.isfinite(self.value):
            self.reject("value", "must be a finite number.", "e.g. --value 5.")
        from plmsae.atlas.annotate import check_output_file

        check_output_file(self.out, "out")


@dataclass
class SteerResult:
    """An intervention and its controls.

    settings: model, layer, features, mode, value, positions (1-based; None = all), splice,
    controls, seed, temperature. features: per edited feature its activation before the edit
    (``mean``, ``max`` over the edited residues). edit_norm / layer_norm: mean norm of the
    spliced change and of the layer's activations over the edited residues. conditions:
    ``clean``, ``edit``, ``reconstruction``, ``random_0``... -> ``kl_mean, kl_max,
    kl_mean_edited, argmax_changed, wt_prob_change, logits_max_abs_diff`` (against clean).
    controls: the random controls' ``kl_mean`` mean and max, and the ratios ``edit_over_random``
    and ``edit_over_reconstruction``. positions: the residues the edit changes most. samples:
    condition -> resampled sequences with their identity to the protein. probabilities:
    condition -> float32 [L, 20] (not in ``to_dict``; written to ``out``).
    """

    protein: str
    sequence: str
    settings: dict[str, Any]
    features: list[dict[str, Any]]
    edit_norm: float
    layer_norm: float
    conditions: dict[str, dict[str, float]]
    controls: dict[str, float | None]
    positions: list[dict[str, Any]]
    samples: dict[str, list[dict[str, Any]]]
    probabilities: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    out: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "protein": self.protein,
            "sequence": self.sequence,
            "settings": self.settings,
            "features": self.features,
            "edit_norm": self.edit_norm,
            "layer_norm": self.layer_norm,
            "conditions": self.conditions,
            "controls": self.controls,
            "positions": self.positions,
            "samples": self.samples,
            "out": None if self.out is None else str(self.out),
        }


class Steerer:
    """Runs one intervention with its controls (module docstring). ``loaded`` (the SAE and a
    model with its masked-LM head) may be passed when already loaded."""

    def __init__(self, cfg: SteerConfig, loaded: Loaded | None = None):
        self.cfg = cfg
        self.loaded = loaded

    def run(self) -> SteerResult:
        self.load()
        self.clean()
        self.edits()
        self.splice_all()
        result = self.measure()
        if self.cfg.out is not None:
            probs = {k: np.round(v, 4).tolist() for k, v in result.probabilities.items()}
            write_json(
                self.cfg.out,
                result.to_dict() | {"amino_acids": AMINO_ACIDS} | {"probabilities": probs},
            )
            result.out = self.cfg.out
        return result

    # -- inputs ----------------------------------------------------------------------------------
    def load(self) -> None:
        """The protein, the model (masked-LM head required) and the SAE; checks features and
        positions."""
        cfg = self.cfg
        self.protein = read_one_protein(cfg.sequence)
        if self.loaded is None:
            self.loaded = load_sae_and_model(cfg.sae, cfg.model, cfg.device, need_mlm=True)
        elif not self.loaded.lm.spec.has_mlm_head:
            from plmsae.apply.common import no_mlm_head

            raise no_mlm_head(self.loaded.lm.spec)
        seq, spec = self.protein.sequence, self.loaded.lm.spec
        if len(seq) > spec.max_residues:
            raise InputError(
                f"the protein has {len(seq)} residues; the model reads at most "
                f"{spec.max_residues} at once.",
                record=self.protein.id,
                fix="steer a shorter sequence or a window of it.",
            )
        bad = [f for f in cfg.features if not 0 <= f < self.loaded.d_sae]
        if bad:
            raise InputError(
                f"--features {bad} do not exist (the SAE has {self.loaded.d_sae} features).",
                fix=f"choose features in 0..{self.loaded.d_sae - 1}.",
            )
        bad = [p for p in cfg.positions or [] if not 1 <= p <= len(seq)]
        if bad:
            raise InputError(
                f"--positions {bad} are outside the protein (1..{len(seq)}).",
                fix="give 1-based residue numbers.",
            )
        self.where = (
            torch.tensor(sorted({p - 1 for p in cfg.positions}))
            if cfg.positions
            else torch.arange(len(seq))
        )

    def _inputs(self, batch: int) -> tuple[dict[str, Tensor], Tensor]:
        """Token inputs for ``batch`` copies of the protein and the residue mask [batch, L+2]."""
        assert self.loaded is not None
        ids = torch.tensor([self.loaded.lm.adapter.token_ids(self.protein.sequence)])
        ids = ids.repeat(batch, 1).to(self.cfg.device)
        residue = torch.ones_like(ids, dtype=torch.bool)
        residue[:, 0] = residue[:, -1] = False
        inputs = {"masked_ids": ids, "attention_mask": torch.ones_like(ids), "pick": residue}
        return inputs, residue

    def _module(self) -> Any:
        from plmsae.sae.hooks import hook_module

        assert self.loaded is not None
        lm = self.loaded.lm
        return hook_module(lm.model, self.loaded.layer, lm.spec.n_layers)

    # -- the clean pass --------------------------------------------------------------------------
    @torch.no_grad()
    def clean(self) -> Tensor:
        """The layer's activations of the protein ``x`` [L, d] (read by the hook)."""
        from plmsae.sae.evaluate import masked_logits

        assert self.loaded is not None
        inputs, residue = self._inputs(1)
        seen: dict[str, Tensor] = {}

        def read(h: Tensor) -> Tensor:
            seen["x"] = h.detach().float().clone()
            return h

        self.loaded.lm.model.eval()
        masked_logits(self.loaded.lm.model, self._module(), inputs, residue, read)
        self.x = seen["x"]
        return self.x

    # -- the edits -------------------------------------------------------------------------------
    @torch.no_grad()
    def edits(self) -> dict[str, Tensor]:
        """The layer's residue activations of every condition, ``{name: [L, d]}``."""
        assert self.loaded is not None
        sae, cfg, x = self.loaded.sae, self.cfg, self.x
        z, stats = sae.encode(x, return_stats=True)
        recon = sae.decode(z, stats).float()
        rows, cols = self.where[:, None], torch.tensor(cfg.features)[None, :]
        z_edit = z.clone()
        if cfg.mode == "clamp":
            z_edit[rows, cols] = cfg.value
        else:
            z_edit[rows, cols] = z[rows, cols] * cfg.value
        delta = sae.decode(z_edit, stats).float() - recon
        self.z, self.delta = z, delta
        base = x if cfg.splice == "delta" else recon
        conditions = {"clean": x, "edit": base + delta, "reconstruction": recon}
        g = torch.Generator().manual_seed(cfg.seed)
        others = torch.tensor([f for f in range(self.loaded.d_sae) if f not in set(cfg.features)])
        norm = delta.norm(dim=-1, keepdim=True)
        for i in range(cfg.n_controls):
            pick = others[torch.randperm(len(others), generator=g)[: len(cfg.features)]]
            z_rand = z.clone()
            z_rand[:, pick] += 1.0
            u = sae.decode(z_rand, stats).float() - recon
            u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            conditions[f"random_{i}"] = base + norm * u
        self.conditions_ = conditions
        return conditions

    # -- the spliced passes ----------------------------------------------------------------------
    @torch.no_grad()
    def splice_all(self) -> Tensor:
        """Logits of every condition, one batch: the hook puts each condition's activations into
        its row of the layer, the blocks above and the masked-LM head run. [n_conditions, L, V]"""
        from plmsae.sae.evaluate import masked_logits

        assert self.loaded is not None
        names = list(self.conditions_)
        stacked = torch.cat([self.conditions_[n] for n in names])  # rows in residue-mask order
        inputs, residue = self._inputs(len(names))
        logits = masked_logits(
            self.loaded.lm.model, self._module(), inputs, residue, lambda h: stacked.to(h.dtype)
        )
        self.logits_ = logits.view(len(names), len(self.protein.sequence), -1).cpu()
        return self.logits_

    # -- what changed ----------------------------------------------------------------------------
    def measure(self) -> SteerResult:
        """Metrics of every condition against ``clean``, the positions, the samples."""
        assert self.loaded is not None
        names = list(self.conditions_)
        vocab = self.loaded.lm.tokenizer.get_vocab()
        aa_ids = torch.tensor([vocab[a] for a in AMINO_ACIDS])
        logp = self.logits_[:, :, aa_ids].log_softmax(-1)  # [C, L, 20]
        wt = torch.tensor([AMINO_ACIDS.find(c) for c in self.protein.sequence])
        metrics = {
            n: condition_metrics(self.logits_[0], self.logits_[i], logp[0], logp[i], wt, self.where)
            for i, n in enumerate(names)
        }
        probs = {n: logp[names.index(n)].exp().numpy() for n in SAMPLED if n in names}
        return SteerResult(
            protein=self.protein.id,
            sequence=self.protein.sequence,
            settings=self._settings(),
            features=self._feature_rows(),
            edit_norm=float(self.delta[self.where].norm(dim=-1).mean()),
            layer_norm=float(self.x[self.where].norm(dim=-1).mean()),
            conditions=metrics,
            controls=control_summary(metrics),
            positions=self._positions(logp, names, wt),
            samples=self._samples(probs),
            probabilities={k: v.astype(np.float32) for k, v in probs.items()},
        )

    def _settings(self) -> dict[str, Any]:
        assert self.loaded is not None
        cfg, spec = self.cfg, self.loaded.lm.spec
        return {
            "model": spec.description or spec.id,
            "layer": self.loaded.layer,
            "sae": str(cfg.sae),
            "features": list(cfg.features),
            "mode": cfg.mode,
            "value": cfg.value,
            "positions": None if not cfg.positions else sorted(set(cfg.positions)),
            "splice": cfg.splice,
            "n_controls": cfg.n_controls,
            "seed": cfg.seed,
            "temperature": cfg.temperature,
        }

    def _feature_rows(self) -> list[dict[str, Any]]:
        z = self.z[self.where]
        return [
            {"feature": f, "mean": float(z[:, f].mean()), "max": float(z[:, f].max())}
            for f in self.cfg.features
        ]

    def _positions(self, logp: Tensor, names: list[str], wt: Tensor) -> list[dict[str, Any]]:
        """The residues whose distribution the edit changes most, with the controls' mean KL."""
        kl = kl_rows(logp[0], logp[names.index("edit")])
        randoms = [i for i, n in enumerate(names) if n.startswith("random_")]
        kl_random = (
            torch.stack([kl_rows(logp[0], logp[i]) for i in randoms]).mean(0) if randoms else None
        )
        p0, p1 = logp[0].exp(), logp[names.index("edit")].exp()
        rows = []
        for j in map(int, torch.argsort(kl, descending=True)[:TOP_POSITIONS]):
            w = int(wt[j])
            rows.append(
                {
                    "position": j + 1,
                    "residue": self.protein.sequence[j],
                    "p_wt_clean": None if w < 0 else float(p0[j, w]),
                    "p_wt_edit": None if w < 0 else float(p1[j, w]),
                    "top_clean": AMINO_ACIDS[int(p0[j].argmax())],
                    "p_top_clean": float(p0[j].max()),
                    "top_edit": AMINO_ACIDS[int(p1[j].argmax())],
                    "p_top_edit": float(p1[j].max()),
                    "kl": float(kl[j]),
                    "kl_random_mean": None if kl_random is None else float(kl_random[j]),
                }
            )
        return rows

    def _samples(self, probs: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        """``n_samples`` sequences per sampled condition, residue by residue."""
        cfg, seq = self.cfg, self.protein.sequence
        g = torch.Generator().manual_seed(cfg.seed + 1)
        out: dict[str, list[dict[str, Any]]] = {}
        if cfg.n_samples == 0:
            return out
        for name, p in probs.items():
            w = torch.from_numpy(p).double().clamp_min(1e-12) ** (1.0 / cfg.temperature)
            draws = torch.multinomial(w, cfg.n_samples, replacement=True, generator=g)
            out[name] = []
            for k in range(cfg.n_samples):
                s = "".join(AMINO_ACIDS[int(i)] for i in draws[:, k])
                ident = sum(a == b for a, b in zip(s, seq)) / len(seq)
                out[name].append({"sequence": s, "identity": ident})
        return out


def kl_rows(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p || q) per row of log-probabilities [L, A]."""
    return (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)


def condition_metrics(
    clean: Tensor, logits: Tensor, logp0: Tensor, logp: Tensor, wt: Tensor, where: Tensor
) -> dict[str, float]:
    """One condition against the clean pass (module docstring)."""
    kl = kl_rows(logp0, logp)
    known = wt >= 0
    idx = wt.clamp_min(0)[:, None]
    dp = logp.exp().gather(1, idx)[:, 0] - logp0.exp().gather(1, idx)[:, 0]
    return {
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "kl_mean_edited": float(kl[where].mean()),
        "argmax_changed": float((logp.argmax(-1) != logp0.argmax(-1)).float().mean()),
        "wt_prob_change": float(dp[known].mean()) if known.any() else float("nan"),
        "logits_max_abs_diff": float((logits - clean).abs().max()),
    }


def control_summary(metrics: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """How the edit compares with its controls (mean KL)."""
    rand = [m["kl_mean"] for n, m in metrics.items() if n.startswith("random_")]
    edit, recon = metrics["edit"]["kl_mean"], metrics["reconstruction"]["kl_mean"]
    mean = float(np.mean(rand)) if rand else None
    return {
        "random_kl_mean": mean,
        "random_kl_max": float(np.max(rand)) if rand else None,
        "reconstruction_kl_mean": recon,
        "edit_over_random": edit / mean if mean else None,
        "edit_over_reconstruction": edit / recon if recon else None,
    }


@stage_function(SteerConfig)
def steer(cfg: SteerConfig) -> SteerResult:
    """Clamp or scale SAE features inside the model and report how the masked-LM head's
    amino-acid probabilities change, with random-feature and reconstruction-error controls and
    resampled sequences.

    Returns a :class:`SteerResult`."""
    return Steerer(cfg).run()
