"""``plmsae import FORMAT SOURCE --out SAE``: a published SAE as a plmsae checkpoint.

Formats (one module each, which documents the peer's conventions and how they map):
``interplm`` (:mod:`.interplm`), ``interprot`` (:mod:`.interprot`), ``esmc-biohub``
(:mod:`.biohub`) and ``saelens`` (:mod:`.saelens`). SOURCE is a local file or directory or
``hf://owner/repo[/path]`` (:mod:`.source`). The result is an ordinary checkpoint
(:mod:`plmsae.sae.checkpoint`) that evaluate, associate, explain, report, annotate and compare
use unchanged; ``cfg.json`` records the model it reads (family, ID, width, depth), the layer and
hook point, and under ``training.imported`` the format, source, file hashes, the peer's own
config and notes on how each convention was carried over.

Normalisation, bias conventions and activation functions are carried over exactly (the codes
and reconstructions equal the peer's own forward; see each module). What a checkpoint does not
say (the model, the layer, k, what it reads) is asked for with a clear error, never guessed;
what it says and an option contradicts is refused. With ``--store`` (a store of that model at
that layer) the import ends with a quick fidelity check (FVE, L0 on ``--tokens`` residues,
recorded as ``metrics.evaluate`` and as the SAE's headline ``metrics``), so a wrong layer,
model or normalisation shows at once.

Steps (:class:`Importer`): ``read_checkpoint``, ``settle_metadata``, ``write_checkpoint``
(reused when OUT holds this very import), ``check_fidelity``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from plmsae._util import (
    VERSION,
    InputError,
    prepare_out_dir,
    read_json,
    sha256_file,
    sha256_json,
    write_json,
)
from plmsae.config import StageConfig, argument, option, stage_function
from plmsae.sae.architectures import sae_class
from plmsae.sae.base import SAE, SAEConfig
from plmsae.sae.checkpoint import CFG_FILE, is_checkpoint, load_sae, read_sae_config, save_sae
from plmsae.sae.imports import biohub, interplm, interprot, saelens
from plmsae.sae.imports.common import Imported
from plmsae.sae.imports.source import Source

log = logging.getLogger(__name__)

#: FORMAT -> reader(source, options) -> Imported
FORMATS: dict[str, Callable[[Source, Any], Imported]] = {
    interplm.FORMAT: interplm.read,
    interprot.FORMAT: interprot.read,
    biohub.FORMAT: biohub.read,
    saelens.FORMAT: saelens.read,
}
HIDDEN_STATES = biohub.HIDDEN_STATES
#: below this FVE on a store of the right model and layer, the import is suspect
FVE_WARN = 0.5


@dataclass
class ImportConfig(StageConfig):
    """Import a published SAE (InterPLM, InterProt, Biohub ESM-C, SAELens) as a plmsae SAE.

    SOURCE is a file or directory, or hf://owner/repo[/path] (read through the Hugging Face
    cache; HF_HUB_OFFLINE is respected). What the checkpoint does not say is asked for:
    --model (hub ID or local directory, as you pass it to plmsae embed), --layer, --k (InterProt),
    --arch (InterPLM TopK or BatchTopK files without their config.yaml, which hold the same
    tensors), --hook-point hidden_states (Biohub and SAELens SAEs that do not say what they
    read; plmsae stores hidden states only). With --store, a quick fidelity check (FVE, L0).
    """

    format: str = argument(help=f"Format of the published SAE: {', '.join(FORMATS)}.")
    source: str = argument(
        help="Checkpoint file or directory, or hf://owner/repo[/path] on the Hugging Face hub."
    )
    out: Path = option(help="Directory to write the plmsae SAE to.")
    model: str | None = option(None, help="Model the SAE reads: hub ID or local directory.")
    layer: int | None = option(None, help="Layer it reads (0 = embeddings, i = after block i).")
    k: int | None = option(None, help="Active latents per token (TopK; InterProt files lack it).")
    arch: str | None = option(None, help="topk or batchtopk (InterPLM files without config.yaml).")
    hook_point: str | None = option(None, help=f"'{HIDDEN_STATES}' (Biohub: what the SAE reads).")
    revision: str | None = option(None, help="Branch, tag or commit of an hf:// source.")
    store: Path | None = option(
        None, help="Activation store of that model and layer for a quick fidelity check."
    )
    tokens: int = option(20_000, help="Residues of --store for the fidelity check.")
    device: str = option("cpu", help="cpu, cuda or cuda:N (for the fidelity check).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in FORMATS:
            self.reject("format", "is not a format plmsae imports.", f"use {', '.join(FORMATS)}.")
        if self.hook_point not in (None, HIDDEN_STATES):
            self.reject(
                "hook_point",
                "plmsae stores hidden states only, so an SAE on other activations (MLP outputs, "
                "residual updates, attention) cannot be used on its stores.",
                f"import SAEs on hidden states; confirm with --hook-point {HIDDEN_STATES}.",
            )
        if self.arch not in (None, "topk", "batchtopk"):
            self.reject(
                "arch", "is only asked for InterPLM TopK/BatchTopK.", "use topk or batchtopk."
            )
        for name in ("k", "tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                self.reject(name, "must be at least 1.", "pass 1 or more.")
        if self.layer is not None and self.layer < 0:
            self.reject("layer", "must be 0 or more.", "0 = embeddings, i = after block i.")


@dataclass
class ImportResult:
    """The imported SAE: where, what it is and reads, how it was carried over, and the quick
    fidelity check (``check``: store, n_tokens, fve, l0, dead_fraction) when --store was given."""

    out: Path
    format: str
    source: str
    arch: str
    d_in: int
    d_sae: int
    k: int | None
    normalisation: str
    model: str
    family: str
    layer: int
    hook_point: str
    notes: list[str] = field(default_factory=list)
    reused: bool = False
    check: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


class Importer:
    """Imports the SAE that ``cfg`` names; :meth:`run` does it all, step by step."""

    def __init__(self, cfg: ImportConfig):
        self.cfg = cfg
        self.source: Source | None = None
        self.imported: Imported | None = None
        self.sae_cfg: SAEConfig | None = None
        self.reused = False
        self.check: dict[str, Any] | None = None
        self.warnings: list[str] = []

    def run(self) -> ImportResult:
        steps = (self.read_checkpoint, self.settle_metadata, self.write_checkpoint)
        for step in (*steps, self.check_fidelity):
            step()
        return self.result()

    def read_checkpoint(self) -> None:
        """Fetch (hub) and read the peer's files into plmsae's layout."""
        self.source = Source(self.cfg.source, self.cfg.revision)
        self.imported = FORMATS[self.cfg.format](self.source, self.cfg)

    def settle_metadata(self) -> None:
        """Model, layer, k and hook point from the checkpoint and the options: missing ones
        asked for, contradictions refused; the SAE's config."""
        from plmsae.embedding.model import describe_model

        imp, cfg = self._imported, self.cfg
        model_name = _model_name(imp, cfg)
        spec = describe_model(model_name).to_dict()
        if int(spec["d_model"]) != imp.d_in:
            raise InputError(
                f"this SAE reads {imp.d_in}-d vectors but {model_name} has width "
                f"{spec['d_model']}.",
                path=cfg.source,
                fix="pass the model the SAE was trained on to --model.",
            )
        layer = _layer(imp, cfg, spec)
        if imp.k is not None and cfg.k is not None and cfg.k != imp.k:
            raise InputError(
                f"--k {cfg.k} contradicts the checkpoint (k = {imp.k}).",
                path=cfg.source,
                fix="drop --k.",
            )
        from plmsae.embedding.adapters import hook_point

        self.sae_cfg = SAEConfig(
            **imp.config_fields(),
            model=spec,
            layer=layer,
            hook_point=hook_point(spec["family"], layer, spec["n_layers"]),
            special_tokens="plmsae stores residues only (the model's special tokens dropped)",
            training={"imported": self._provenance(model_name)},
            plmsae_version=VERSION,
        )

    def write_checkpoint(self) -> None:
        """Write OUT (sae.safetensors + cfg.json); reuse it when it holds this very import."""
        out = prepare_out_dir(self.cfg.out)
        want = self._settings_sha
        if is_checkpoint(out):
            have = read_sae_config(out).training.get("imported", {}).get("settings_sha256")
            if have == want:
                self.reused = True
                log.info("%s already holds this import; reused", out)
                return
            raise InputError(
                "this directory holds another SAE.",
                path=out,
                fix="choose another --out (or delete the directory).",
            )
        if any(out.iterdir()):
            raise InputError(
                "output directory exists, is not empty and is not an SAE.",
                path=out,
                fix="choose another --out.",
            )
        cfg = self._sae_cfg
        sae: SAE = sae_class(cfg.arch)(cfg)
        sae.load_state_dict(self._imported.tensors, strict=True)
        save_sae(sae, out)
        log.info("imported %s %s SAE -> %s", self.cfg.format, cfg.arch, out)

    def check_fidelity(self) -> None:
        """FVE and L0 on ``--store`` (recorded as ``metrics.evaluate``); a warning when the FVE
        is far below what an SAE reaches on its own layer."""
        cfg, store = self.cfg, self.cfg.store
        if store is None:
            return
        from plmsae.embedding.store import ActivationStore
        from plmsae.sae.evaluate import EvaluateConfig, Evaluator, record_evaluation

        ev = EvaluateConfig(sae=cfg.out, store=store, tokens=cfg.tokens, device=cfg.device)
        sae = load_sae(cfg.out, device=cfg.device)
        result = Evaluator(ev, sae, ActivationStore(store)).run()
        record_evaluation(cfg.out, result)
        r = result.reconstruction
        _record_check(cfg.out, r)
        self.check = {
            "store": str(cfg.store),
            "n_tokens": r.n_tokens,
            "fve": r.fve,
            "l0": r.l0,
            "dead_fraction": r.dead_fraction,
        }
        if r.fve < FVE_WARN:
            self.warnings.append(
                f"FVE {r.fve:.3f} on {cfg.store} is far below what an SAE reaches on its own "
                "layer: check --layer and --model (and that the store is of that model)."
            )
            log.warning(self.warnings[-1])

    def result(self) -> ImportResult:
        c, imp = self._sae_cfg, self._imported
        spec = c.model or {}
        return ImportResult(
            out=self.cfg.out,
            format=self.cfg.format,
            source=self.cfg.source,
            arch=c.arch,
            d_in=c.d_in,
            d_sae=c.d_sae,
            k=c.k,
            normalisation=c.normalisation,
            model=str(spec.get("id")),
            family=str(spec.get("family")),
            layer=int(c.layer or 0),
            hook_point=str(c.hook_point),
            notes=list(imp.notes),
            reused=self.reused,
            check=self.check,
            warnings=self.warnings,
        )

    # ---------------------------------------------------------------- helpers
    @property
    def _imported(self) -> Imported:
        if self.imported is None:
            raise RuntimeError("Importer.read_checkpoint() has not run yet.")
        return self.imported

    @property
    def _sae_cfg(self) -> SAEConfig:
        if self.sae_cfg is None:
            raise RuntimeError("Importer.settle_metadata() has not run yet.")
        return self.sae_cfg

    @property
    def _settings_sha(self) -> str:
        return str(self._sae_cfg.training["imported"]["settings_sha256"])

    def _provenance(self, model_name: str) -> dict[str, Any]:
        """What ``cfg.json`` records under ``training.imported``."""
        imp, src = self._imported, self.source
        files = {p.name: sha256_file(p) for p in (src.fetched if src else [])}
        settings = {
            "format": self.cfg.format,
            "source": self.cfg.source,
            "revision": self.cfg.revision,
            "files": files,
            "options": {k: getattr(self.cfg, k) for k in ("model", "layer", "k", "arch")},
        }
        return {
            **settings,
            "model": model_name,
            "notes": imp.notes,
            "peer": imp.peer,
            "settings_sha256": sha256_json(settings),
        }


def _record_check(out: Path, r: Any) -> None:
    """The check's FVE, L0 and dead fraction also as the SAE's headline metrics (what a trained
    SAE's ``metrics`` hold, and what ``plmsae compare`` shows)."""
    raw = read_json(out / CFG_FILE)
    raw.setdefault("metrics", {}).update(fve=r.fve, l0=r.l0, dead_fraction=r.dead_fraction)
    write_json(out / CFG_FILE, raw)


def _model_name(imp: Imported, cfg: ImportConfig) -> str:
    """``--model``, else the model the checkpoint names; asked for when neither says."""
    if imp.hidden_states is False:
        raise InputError(
            "this SAE reads residual updates (MLP outputs), not hidden states; plmsae stores "
            "hidden states only, so it cannot be used on plmsae's stores.",
            path=cfg.source,
            fix="import an SAE of the hidden-states collections.",
        )
    if cfg.model is not None:
        if imp.model is not None and imp.model != cfg.model:
            imp.notes.append(f"the checkpoint names model {imp.model!r}; --model {cfg.model} used")
        return cfg.model
    if imp.model is None:
        raise InputError(
            f"{cfg.format} checkpoints do not say which model they read.",
            path=cfg.source,
            fix="pass --model: the hub ID or local directory of the model the SAE was trained "
            "on, as you pass it to `plmsae embed` (e.g. facebook/esm2_t6_8M_UR50D).",
        )
    return imp.model


def _layer(imp: Imported, cfg: ImportConfig, spec: dict[str, Any]) -> int:
    """``--layer`` or the layer the checkpoint says (also through its hook name); checked
    against the model's depth."""
    from plmsae.embedding.adapters import hook_point

    n = int(spec["n_layers"])
    known = imp.layer
    if known is None and imp.peer_hook is not None:
        hits = [i for i in range(n + 1) if hook_point(spec["family"], i, n) == imp.peer_hook]
        known = hits[0] if hits else None
        imp.hidden_states = True if hits else imp.hidden_states
    if known is not None and cfg.layer is not None and known != cfg.layer:
        raise InputError(
            f"--layer {cfg.layer} contradicts the checkpoint, which reads layer {known}.",
            path=cfg.source,
            fix=f"drop --layer or pass --layer {known}.",
        )
    layer = cfg.layer if cfg.layer is not None else known
    hook = f" (its hook is {imp.peer_hook!r})" if imp.peer_hook else ""
    if layer is None:
        raise InputError(
            f"the checkpoint does not say which layer it reads{hook}.",
            path=cfg.source,
            fix="pass --layer (0 = embeddings, i = output of block i, hidden_states[i]).",
        )
    if imp.hidden_states is None and cfg.hook_point != HIDDEN_STATES:
        raise InputError(
            f"the checkpoint does not say that it reads the model's hidden states{hook}.",
            path=cfg.source,
            fix=f"pass --hook-point {HIDDEN_STATES} if it does (plmsae stores nothing else).",
        )
    if not 0 <= layer <= n:
        raise InputError(
            f"layer {layer} does not exist: the model has layers 0..{n}.",
            path=cfg.source,
            fix=f"pass a --layer between 0 and {n}.",
        )
    return int(layer)


@stage_function(ImportConfig)
def import_sae(cfg: ImportConfig) -> ImportResult:
    """Import a published SAE into a plmsae checkpoint directory (``plmsae import``).

    Returns an :class:`ImportResult`; the checkpoint loads with
    ``plmsae.load_sae(result.out)`` and works with every later stage.
    """
    with torch.no_grad():
        return Importer(cfg).run()
