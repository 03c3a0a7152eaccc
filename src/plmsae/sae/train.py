"""Train an SAE (or transcoder) on an activation store: ``plmsae train STORE ...``.

One obvious loop: shuffled batches stream from the store (bounded memory), each step is
``loss.backward()`` through the architecture's ``training_loss`` (TopK family: sparse backward, see
:mod:`plmsae.sae.sparse`), fused Adam, learning-rate warm-up then linear decay over the last 20%,
dead-latent counters (AuxK). Every ``checkpoint_every`` steps the full state (weights, Adam
moments, step, dead counters, RNG, data position) goes to ``OUT/checkpoint/`` in safetensors +
JSON; a killed run started again with the same arguments continues bit-exactly where the
checkpoint left it. Under ``torchrun`` each rank reads its own part of the store and gradients are
all-reduced by DistributedDataParallel (nccl on GPU, gloo on CPU).

Outputs in OUT: ``sae.safetensors`` + ``cfg.json`` (the SAE), ``metrics.jsonl`` (one JSON object
per logged step), ``checkpoint/`` (removed when training finishes unless ``--keep-checkpoint``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from plmsae._util import (
    InputError,
    atomic_path,
    atomic_write,
    progress,
    read_json,
    sha256_file,
    sha256_json,
    write_json,
)
from plmsae.sae.architectures import create_sae
from plmsae.sae.base import (
    ARCHS,
    NORMALISATIONS,
    SAE,
    SAEConfig,
    TrainState,
    default_lr,
)
from plmsae.sae.checkpoint import CFG_FILE, WEIGHTS_FILE, load_sae, save_sae

CKPT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"
NORM_SAMPLE_TOKENS = 65_536
DEFAULT_DEAD_STEPS = 200  # the paper: a latent is dead after 200 steps without firing


@dataclass
class TrainSettings:
    """Everything that determines a training run (hashed to decide whether OUT can resume)."""

    arch: str
    latents: int
    k: int | None
    level: str
    layer: int | None
    target_layer: int | None
    transcoder_target: str
    normalisation: str
    batch_size: int
    lr: float
    tokens: int
    warmup_steps: int
    decay_fraction: float
    seed: int
    auxk_alpha: float
    dead_tokens: int
    l1_coefficient: float | None
    l0_coefficient: float | None
    matryoshka_prefixes: list[int] | None
    select_dtype: str
    world_size: int


def _hook_point(layer: int | None, n_layers: int | None) -> str | None:
    """Module (in HF ``EsmForMaskedLM``) whose output is ``hidden_states[layer]``."""
    if layer is None:
        return None
    if layer == 0:
        return "esm.embeddings"
    if n_layers is not None and layer == n_layers:
        return "esm.encoder.emb_layer_norm_after"
    return f"esm.encoder.layer.{layer - 1}"


def _open_store(store: Any):
    if hasattr(store, "batches"):
        return store, getattr(store, "path", None)
    from plmsae.embedding.store import ActivationStore

    return ActivationStore(store), Path(store)


def lr_at(step: int, base_lr: float, total: int, warmup: int, decay_fraction: float) -> float:
    """Linear warm-up over ``warmup`` steps, constant, linear decay to 0 over the last
    ``decay_fraction`` of the steps."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    decay_start = int(total * (1 - decay_fraction))
    if decay_fraction > 0 and step >= decay_start:
        return base_lr * max(total - step, 0) / max(total - decay_start, 1)
    return base_lr


class _LossModule(torch.nn.Module):
    """DDP wraps a module's forward; this forward is the SAE's training loss."""

    def __init__(self, sae: SAE):
        super().__init__()
        self.sae = sae

    def forward(self, x_n, y_n, state):
        return self.sae.training_loss(x_n, y_n, state)


def _dist_env() -> tuple[int, int, int]:
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), ws, int(os.environ.get("LOCAL_RANK", "0"))


def _batches(
    src, settings: TrainSettings, rank: int, world_size: int, seed_offset: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(x, y) batches of this rank; y is None for autoencoders."""
    it = src.batches(
        settings.batch_size // world_size,
        level=settings.level,
        layer=settings.layer,
        target_layer=settings.target_layer,
        shuffle=True,
        seed=settings.seed + seed_offset,
        rank=rank,
        world_size=world_size,
        epochs=None,
    )
    for b in it:
        if isinstance(b, (tuple, list)):
            x, y = b
            if settings.transcoder_target == "difference":
                y = y - x
            yield x, y
        else:
            yield b, None


@torch.no_grad()
def _estimate_normalisation(sae: SAE, src, settings: TrainSettings, device) -> float:
    """Set the scalar(s), initialise b_dec at the mean target, return the loss scale
    1 / E||y_n - E y_n||^2 (so the reconstruction loss is about the FVU)."""
    xs, ys, n = [], [], 0
    sample = TrainSettings(**{**asdict(settings), "batch_size": min(settings.batch_size, 4096)})
    for x, y in _batches(src, sample, 0, 1, seed_offset=7919):
        xs.append(x)
        ys.append(x if y is None else y)
        n += x.shape[0]
        if n >= NORM_SAMPLE_TOKENS:
            break
    x = torch.cat(xs).to(device=device, dtype=torch.float32)
    y = torch.cat(ys).to(device=device, dtype=torch.float32)
    d_in, d_out = x.shape[1], y.shape[1]
    cfg = sae.cfg
    if cfg.normalisation == "scalar":
        cfg.norm_scale = float(math.sqrt(d_in) / x.norm(dim=1).mean().clamp_min(1e-12))
        cfg.target_norm_scale = (
            float(math.sqrt(d_out) / y.norm(dim=1).mean().clamp_min(1e-12))
            if cfg.is_transcoder
            else cfg.norm_scale
        )
    y_n = sae.normalise(y)[0] if not cfg.is_transcoder else sae.normalise_target(y)
    mean = y_n.mean(0)
    sae.b_dec.copy_(mean)
    _fit_encoder_scale(sae, x, y_n - mean)
    return float(1.0 / (y_n - mean).pow(2).sum(1).mean().clamp_min(1e-12))


@torch.no_grad()
def _fit_encoder_scale(sae: SAE, x: torch.Tensor, target: torch.Tensor, n: int = 2048) -> None:
    """Scale W_enc (and b_enc) by the least-squares factor that makes the initial
    reconstructions fit the centred targets: random unit-norm init otherwise starts with
    reconstructions far too large (FVE << 0) that Adam needs thousands of steps to shrink.
    TopK selection and ReLU are invariant to a positive scale, so only the values change."""
    if sae.cfg.arch == "jumprelu":
        return  # its thresholds are absolute, not scale-free
    x_n = sae.normalise(x[:n])[0]
    pre = sae.pre_acts(x_n)
    if sae.cfg.k:
        vals, idx = pre.topk(min(sae.cfg.k, pre.shape[1]), dim=-1, sorted=False)
        recon = torch.nn.functional.embedding_bag(
            idx, sae.W_dec, per_sample_weights=vals.relu(), mode="sum"
        )
    else:
        recon = pre.relu() @ sae.W_dec
    denom = float(recon.pow(2).sum())
    c = float((recon * target[:n]).sum()) / denom if denom > 0 else 0.0
    if c > 0:
        sae.W_enc.mul_(c)
        sae.b_enc.mul_(c)


# ------------------------------------------------------------------------------ checkpoints
def _save_checkpoint(
    path: Path,
    sae: SAE,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    tokens_since_fired: torch.Tensor,
) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    names = {id(p): n for n, p in sae.named_parameters()}
    groups = []
    for g in opt.state_dict()["param_groups"]:
        groups.append(dict(g.items()))
    for p in (p for g in opt.param_groups for p in g["params"]):
        for key, val in opt.state.get(p, {}).items():
            tensors[f"opt.{names[id(p)]}.{key}"] = torch.as_tensor(val).detach().cpu().contiguous()
    tensors["tokens_since_fired"] = tokens_since_fired.cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and sae.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(sae.device)
    with atomic_path(path / "state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {
        **state,
        "param_groups": groups,
        "param_order": [names[id(p)] for g in opt.param_groups for p in g["params"]],
        "cfg": sae.cfg.to_dict(),
        "state_sha256": sha256_file(path / "state.safetensors"),
    }
    write_json(path / "state.json", meta)  # written last: its presence marks a whole checkpoint


def _load_checkpoint(
    path: Path, sae: SAE, opt: torch.optim.Optimizer, device
) -> tuple[dict[str, Any], torch.Tensor] | None:
    from safetensors.torch import load_file

    if not (path / "state.json").is_file() or not (path / "state.safetensors").is_file():
        return None
    meta = read_json(path / "state.json")
    if sha256_file(path / "state.safetensors") != meta.get("state_sha256"):
        raise InputError(
            "checkpoint weights do not match their recorded checksum.",
            path=path / "state.safetensors",
            fix="delete the checkpoint directory to start training again.",
        )
    t = load_file(str(path / "state.safetensors"))
    sae.cfg = SAEConfig.from_dict(meta["cfg"])
    sae.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    sae.to(device)
    params = dict(sae.named_parameters())
    opt_state = {}
    for i, name in enumerate(meta["param_order"]):
        st = {
            key.split(".")[-1]: v.to(device) if v.dim() else v
            for key, v in t.items()
            if key.startswith(f"opt.{name}.")
        }
        if st:
            opt_state[i] = st
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    del params
    torch.set_rng_state(t["rng.cpu"])
    if "rng.cuda" in t and sae.device.type == "cuda":
        torch.cuda.set_rng_state(t["rng.cuda"], sae.device)
    return meta, t["tokens_since_fired"].to(device)


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    with atomic_write(path, "w") as fh:
        fh.write("".join(line + "\n" for line in keep))


# ------------------------------------------------------------------------------ the command
def train(
    store: Annotated[Path, typer.Argument(help="Activation store directory (plmsae embed).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for the SAE.")],
    arch: Annotated[str, typer.Option(help=f"Architecture: {', '.join(ARCHS)}.")] = "topk",
    latents: Annotated[int, typer.Option(help="Number of latents (d_sae).")] = 20_000,
    k: Annotated[
        int | None,
        typer.Option(
            help="Active latents per token (topk, batchtopk, matryoshka). Default: 16 for residue, "
            "64 for protein level (the paper)."
        ),
    ] = None,
    level: Annotated[str, typer.Option(help="residue or protein (mean-pooled).")] = "residue",
    layer: Annotated[
        int | None,
        typer.Option(help="Layer to train on (0 = embeddings); default: the store's only layer."),
    ] = None,
    target_layer: Annotated[
        int | None, typer.Option(help="Train a transcoder from --layer to this layer.")
    ] = None,
    transcoder_target: Annotated[
        str,
        typer.Option(
            help="Transcoder target: 'next' (the target layer) or 'difference' (target - input, "
            "the paper)."
        ),
    ] = "next",
    normalisation: Annotated[
        str,
        typer.Option(
            help="Input normalisation: 'scalar' (E||x|| = sqrt(d)), 'layernorm' (per sample, the "
            "paper) or 'none'."
        ),
    ] = "scalar",
    batch_size: Annotated[int, typer.Option(help="Global batch size in tokens.")] = 4096,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate; default 2e-4 / sqrt(latents / 2^14).")
    ] = None,
    tokens: Annotated[
        int | None,
        typer.Option(
            help="Training budget in tokens (residues or proteins); default one pass over the "
            "store."
        ),
    ] = None,
    warmup_steps: Annotated[
        int | None,
        typer.Option(help="Learning-rate warm-up steps; default min(1000, 5% of steps)."),
    ] = None,
    decay_fraction: Annotated[
        float,
        typer.Option(
            help="Fraction of the steps at the end over which the learning rate decays to 0."
        ),
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and data order.")] = 0,
    auxk_alpha: Annotated[
        float, typer.Option(help="Weight of the AuxK dead-latent loss (topk family).")
    ] = 1 / 32,
    dead_tokens: Annotated[
        int | None,
        typer.Option(
            help="A latent is dead after this many tokens without firing; default 200 steps."
        ),
    ] = None,
    l1_coefficient: Annotated[float | None, typer.Option(help="relu: L1 weight.")] = None,
    l0_coefficient: Annotated[float | None, typer.Option(help="jumprelu: L0 weight.")] = None,
    matryoshka_prefix: Annotated[
        list[int] | None,
        typer.Option(
            "--matryoshka-prefix", help="matryoshka: nested sizes (repeat); default d/16..d."
        ),
    ] = None,
    select_dtype: Annotated[
        str,
        typer.Option(
            help="dtype of the matmul that selects active latents (topk family): float32, bfloat16, "
            "or auto (bfloat16 on GPU and on CPUs with AVX512-BF16/AMX)."
        ),
    ] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    checkpoint_every: Annotated[
        int, typer.Option(help="Steps between checkpoints (0 = only at the end).")
    ] = 500,
    log_every: Annotated[int, typer.Option(help="Steps between metrics.jsonl lines.")] = 10,
    keep_checkpoint: Annotated[
        bool, typer.Option(help="Keep OUT/checkpoint after training finishes.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Start again even if OUT holds a run with other settings.")
    ] = False,
    stop_after_steps: Annotated[
        int | None,
        typer.Option(hidden=True, help="Stop (as if killed) after this many steps; for tests."),
    ] = None,
) -> tuple[SAE, dict[str, Any]]:
    """Train a sparse autoencoder (or transcoder) on an activation store.

    Returns ``(sae, metrics)``. Re-running with the same arguments resumes from OUT/checkpoint or
    returns the finished SAE.
    """
    if arch not in ARCHS:
        raise InputError(f"unknown --arch {arch!r}.", fix=f"use one of {', '.join(ARCHS)}.")
    if level not in ("residue", "protein"):
        raise InputError(f"unknown --level {level!r}.", fix="use residue or protein.")
    if normalisation not in NORMALISATIONS:
        raise InputError(
            f"unknown --normalisation {normalisation!r}.",
            fix=f"use one of {', '.join(NORMALISATIONS)}.",
        )
    if transcoder_target not in ("next", "difference"):
        raise InputError(
            f"unknown --transcoder-target {transcoder_target!r}.", fix="use next or difference."
        )
    if target_layer is not None and normalisation == "layernorm":
        raise InputError(
            "transcoders cannot use per-sample layer norm (the target's statistics "
            "are unknown at inference).",
            fix="use --normalisation scalar or none.",
        )
    out = Path(out)
    src, store_path = _open_store(store)
    rank, world_size, local_rank = _dist_env()
    if batch_size % world_size:
        raise InputError(
            f"--batch-size {batch_size} is not divisible by the {world_size} ranks.",
            fix=f"use a multiple of {world_size}.",
        )

    layers = list(getattr(src, "layers", []) or [])
    if layer is None:
        if len(layers) == 1 or (target_layer is not None and len(layers) == 2):
            layer = layers[0]
        elif layers:
            raise InputError(
                f"the store holds layers {layers}; say which to train on.",
                path=store_path,
                fix="pass --layer N.",
            )
    elif layers and layer not in layers:
        raise InputError(
            f"the store has no layer {layer} (it has {layers}).",
            path=store_path,
            fix=f"pass --layer with one of {layers}.",
        )
    if target_layer is not None and layers and target_layer not in layers:
        raise InputError(
            f"the store has no layer {target_layer} (it has {layers}).",
            path=store_path,
            fix="embed the target layer too.",
        )
    if k is None and arch in ("topk", "batchtopk", "matryoshka"):
        k = 16 if level == "residue" else 64
    n_available = int(getattr(src, "n_tokens", 0) if level == "residue" else len(src))
    if tokens is None:
        if not n_available:
            raise InputError(
                "the store does not say how many tokens it holds.",
                path=store_path,
                fix="pass --tokens.",
            )
        tokens = n_available
    total_steps = max(1, tokens // batch_size)
    if warmup_steps is None:
        warmup_steps = min(1000, total_steps // 20)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world_size > 1 and device.startswith("cuda"):
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if select_dtype == "auto":
        select_dtype = "bfloat16" if dev.type == "cuda" or _cpu_has_fast_bf16() else "float32"
    if select_dtype not in ("float32", "bfloat16"):
        raise InputError(
            f"unknown --select-dtype {select_dtype!r}.", fix="use float32, bfloat16 or auto."
        )

    settings = TrainSettings(
        arch=arch,
        latents=latents,
        k=k,
        level=level,
        layer=layer,
        target_layer=target_layer,
        transcoder_target=transcoder_target,
        normalisation=normalisation,
        batch_size=batch_size,
        lr=lr if lr is not None else default_lr(latents),
        tokens=tokens,
        warmup_steps=warmup_steps,
        decay_fraction=decay_fraction,
        seed=seed,
        auxk_alpha=auxk_alpha if arch in ("topk", "batchtopk", "matryoshka") else 0.0,
        dead_tokens=dead_tokens if dead_tokens is not None else DEFAULT_DEAD_STEPS * batch_size,
        l1_coefficient=l1_coefficient,
        l0_coefficient=l0_coefficient,
        matryoshka_prefixes=matryoshka_prefix or None,
        select_dtype=select_dtype,
        world_size=world_size,
    )
    settings_hash = sha256_json(asdict(settings))

    # finished already?
    if (out / CFG_FILE).is_file() and (out / WEIGHTS_FILE).is_file():
        done = read_json(out / CFG_FILE)
        if done.get("training", {}).get("settings_hash") == settings_hash:
            sae = load_sae(out, device=dev)
            return sae, dict(sae.cfg.metrics)
        if not overwrite:
            raise InputError(
                "OUT already holds an SAE trained with other settings.",
                path=out,
                fix="choose another --out or pass --overwrite.",
            )
    ckpt = out / CKPT_DIR
    if (ckpt / "state.json").is_file():
        prev = read_json(ckpt / "state.json").get("settings_hash")
        if prev != settings_hash:
            if not overwrite:
                raise InputError(
                    "OUT/checkpoint belongs to a run with other settings.",
                    path=ckpt,
                    fix="re-run with the same arguments to resume, choose another "
                    "--out, or pass --overwrite.",
                )
            if rank == 0:
                shutil.rmtree(ckpt)

    distributed = world_size > 1
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)

    # ---- the model
    meta = getattr(src, "meta", {}) or {}
    spec = meta.get("model")
    d_in = int(getattr(src, "d_model", 0) or 0)
    torch.manual_seed(seed)
    probe = next(
        _batches(
            src, TrainSettings(**{**asdict(settings), "batch_size": world_size}), 0, world_size
        )
    )
    d_in = probe[0].shape[1]
    d_out = probe[1].shape[1] if probe[1] is not None else d_in
    cfg = SAEConfig(
        arch=arch,
        d_in=d_in,
        d_sae=latents,
        d_out=d_out,
        k=k,
        l1_coefficient=l1_coefficient,
        l0_coefficient=l0_coefficient,
        matryoshka_prefixes=settings.matryoshka_prefixes,
        auxk_alpha=settings.auxk_alpha,
        dead_tokens=settings.dead_tokens,
        normalisation=normalisation,
        level=level,
        pooling=(meta.get("pooling", "mean") if level == "protein" else None),
        model=spec,
        layer=layer,
        target_layer=target_layer,
        transcoder_target=transcoder_target if target_layer is not None else None,
        hook_point=_hook_point(layer, (spec or {}).get("n_layers")),
        store=str(store_path) if store_path else None,
        plmsae_version=_version(),
    )
    gen = torch.Generator().manual_seed(seed)
    sae = create_sae(cfg, generator=gen)
    sae.select_dtype = select_dtype
    loss_scale = _estimate_normalisation(sae, src, settings, "cpu")
    sae.to(dev)
    opt = torch.optim.Adam(
        sae.parameters(), lr=settings.lr, betas=(0.9, 0.999), **_adam_kwargs(dev)
    )
    tokens_since_fired = torch.zeros(latents, dtype=torch.int64, device=dev)
    step, elapsed = 0, 0.0
    resumed = _load_checkpoint(ckpt, sae, opt, dev)
    if resumed is not None:
        ck_meta, tokens_since_fired = resumed
        step, elapsed, loss_scale = ck_meta["step"], ck_meta["elapsed_s"], ck_meta["loss_scale"]
    sae.select_dtype = select_dtype
    sae._W_sel = None
    if rank == 0:
        _truncate_metrics(out / METRICS_FILE, step) if resumed else (
            out.mkdir(parents=True, exist_ok=True),
            (out / METRICS_FILE).unlink(missing_ok=True),
        )
    module = _LossModule(sae)
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = DDP(module, device_ids=[dev.index] if dev.type == "cuda" else None)

    data = _batches(src, settings, rank, world_size)
    for _ in range(step):  # data position: skip what the checkpointed steps consumed
        next(data)

    tstate = TrainState(loss_scale=loss_scale, step=step)
    ema: dict[str, float] = {}
    log_fh = open(out / METRICS_FILE, "a") if rank == 0 else None
    t_start, tok_start = time.perf_counter(), step * batch_size
    bar = progress() if rank == 0 else contextlib.nullcontext()
    try:
        with bar as pbar:
            task = (
                pbar.add_task(f"train {arch}", total=total_steps, completed=step, rate="")
                if pbar is not None
                else None
            )
            while step < total_steps:
                if stop_after_steps is not None and step >= stop_after_steps:
                    raise _Stopped(step)
                x, y = next(data)
                x = x.to(dev, non_blocking=True)
                x_n, _ = sae.normalise(x)
                y_n = x_n if y is None else sae.normalise_target(y.to(dev, non_blocking=True))
                cur_lr = lr_at(step, settings.lr, total_steps, warmup_steps, decay_fraction)
                for g in opt.param_groups:
                    g["lr"] = cur_lr
                tstate.step = step
                tstate.dead_mask = tokens_since_fired >= settings.dead_tokens
                sae.train()
                loss, info = module(x_n, y_n, tstate)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                sae.before_step()
                opt.step()
                sae.after_step()
                fired = info["fired"].to(torch.int64)
                stats = torch.stack(
                    [
                        info["err_sq"].float(),
                        info["l0"].float() * x.shape[0],
                        loss.detach().float() * x.shape[0],
                        (y_n - y_n.mean(0)).pow(2).sum().detach().float(),
                        torch.tensor(float(x.shape[0]), device=dev),
                    ]
                )
                if distributed:
                    dist.all_reduce(fired)
                    dist.all_reduce(stats)
                tokens_since_fired += int(stats[4])  # tokens of this step over all ranks
                tokens_since_fired[fired > 0] = 0
                step += 1
                if rank == 0:
                    n_tok = float(stats[4])
                    fve = 1.0 - float(stats[0]) / max(float(stats[3]), 1e-12)
                    l0 = float(stats[1]) / n_tok
                    for name, v in (("fve", fve), ("l0", l0)):
                        ema[name] = v if name not in ema else 0.9 * ema[name] + 0.1 * v
                    now = time.perf_counter()
                    tps = (step * batch_size - tok_start) / max(now - t_start, 1e-9)
                    if step % log_every == 0 or step == total_steps:
                        dead_frac = float(
                            (tokens_since_fired >= settings.dead_tokens).float().mean()
                        )
                        rec = {
                            "step": step,
                            "tokens": step * batch_size,
                            "lr": cur_lr,
                            "loss": float(stats[2]) / n_tok,
                            "fve": fve,
                            "l0": l0,
                            "dead_fraction": dead_frac,
                            "tokens_per_s": tps,
                        }
                        if info.get("auxk") is not None:
                            rec["auxk_loss"] = float(info["auxk"])
                        log_fh.write(json.dumps(rec) + "\n")
                        log_fh.flush()
                    pbar.update(
                        task,
                        completed=step,
                        rate=f"{tps:,.0f} tok/s  FVE {ema['fve']:.3f}  L0 {ema['l0']:.1f}",
                    )
                if (
                    checkpoint_every
                    and step % checkpoint_every == 0
                    and step < total_steps
                    and rank == 0
                ):
                    _save_checkpoint(
                        ckpt,
                        sae,
                        opt,
                        {
                            "step": step,
                            "tokens": step * batch_size,
                            "settings_hash": settings_hash,
                            "loss_scale": loss_scale,
                            "elapsed_s": elapsed + time.perf_counter() - t_start,
                        },
                        tokens_since_fired,
                    )
    except _Stopped:
        if rank == 0:
            _save_checkpoint(
                ckpt,
                sae,
                opt,
                {
                    "step": step,
                    "tokens": step * batch_size,
                    "settings_hash": settings_hash,
                    "loss_scale": loss_scale,
                    "elapsed_s": elapsed + time.perf_counter() - t_start,
                },
                tokens_since_fired,
            )
        raise
    finally:
        if log_fh is not None:
            log_fh.close()

    seconds = elapsed + time.perf_counter() - t_start
    dead_fraction = float((tokens_since_fired >= settings.dead_tokens).float().mean())
    metrics = {
        "fve": ema.get("fve"),
        "l0": ema.get("l0"),
        "dead_fraction": dead_fraction,
        "steps": step,
        "tokens": step * batch_size,
        "seconds": seconds,
        "tokens_per_s": (step * batch_size - tok_start) / max(time.perf_counter() - t_start, 1e-9),
        "note": "fve and l0 are moving averages over the last training batches",
    }
    sae.cfg.training = {
        "settings": asdict(settings),
        "settings_hash": settings_hash,
        "tokens": step * batch_size,
        "steps": step,
        "seconds": seconds,
        "device": str(dev),
        "world_size": world_size,
        "dead_latents_never_fired_in_last_tokens": settings.dead_tokens,
    }
    sae.cfg.metrics = {"train": metrics}
    sae.eval()
    if rank == 0:
        save_sae(sae, out)
        if not keep_checkpoint and ckpt.exists():
            shutil.rmtree(ckpt)
    if distributed:
        dist.barrier()
    return sae, metrics


class _Stopped(RuntimeError):
    """Raised by --stop-after-steps (a deterministic stand-in for a kill in tests)."""

    def __init__(self, step: int):
        super().__init__(f"stopped after {step} steps (checkpoint written)")
        self.step = step


def _adam_kwargs(dev: torch.device) -> dict[str, Any]:
    # fused Adam: one kernel over all parameters (10x faster than foreach on this CPU)
    return {"fused": True}


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _version() -> str:
    from plmsae import __version__

    return __version__
