"""Training speed of plmsae's TopK trainer against EleutherAI sparsify, on the same activations.

Both train TopK 480 -> 20,000 latents, k = 64, batch 4,096, Adam at the same learning rate and
schedule, for the same number of tokens, on the same batches in the same order; the runs alternate
(plmsae, sparsify, plmsae, sparsify ...) so that load from other processes hits both alike.
tokens/s counts training steps only (not set-up); FVE is measured afterwards on held-out vectors.

    python benchmarks/sae_train.py                 # synthetic sparse-structured 480-d activations
    python benchmarks/sae_train.py --store STORE   # real activations from a plmsae store
    python benchmarks/sae_train.py --json          # one JSON object

Variants (``--variants``): ``plmsae`` (default settings: bf16 selection where the CPU has
AVX512-BF16), ``plmsae-fp32`` (float32 selection), ``dense`` (a plain PyTorch TopK loop with
dense autograd: what the sparse backward buys), ``sparsify``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("PLMSAE_NO_PROGRESS", "1")

from plmsae.sae.base import default_lr
from plmsae.sae.data import TensorStore
from plmsae.sae.train import TrainConfig, Trainer, lr_at

D_IN, LATENTS, K, BATCH = 480, 20_000, 64, 4096


def synthetic(n: int, d: int = D_IN, n_dirs: int = 4000, active: int = 24, seed: int = 0):
    """Sparse non-negative combinations of random unit directions + noise + a mean offset,
    scaled so that E||x|| = sqrt(d) (what plmsae's scalar normalisation produces)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_dirs, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    freq = torch.rand(n_dirs, generator=g) ** 3 + 1e-3  # a few common, many rare directions
    out = torch.empty(n, d)
    for s in range(0, n, 8192):
        m = min(8192, n - s)
        idx = torch.multinomial(freq, active * m, replacement=True, generator=g).view(m, active)
        mag = torch.empty(m, active).exponential_(generator=g)
        out[s : s + m] = torch.nn.functional.embedding_bag(
            idx, D, per_sample_weights=mag, mode="sum"
        )
    out += 0.05 * torch.randn(n, d, generator=g) + 0.5 * torch.randn(d, generator=g)
    return out * (math.sqrt(d) / out.norm(dim=1).mean())


def real(store_path: str, n: int, layer: int | None):
    from plmsae.embedding.store import ActivationStore

    st = ActivationStore(store_path)
    xs, got = [], 0
    for b in st.batches(8192, level="residue", layer=layer, shuffle=True, seed=0, epochs=1):
        xs.append(b)
        got += b.shape[0]
        if got >= n:
            break
    x = torch.cat(xs)[:n]
    if x.shape[0] < n:
        raise SystemExit(f"store has only {x.shape[0]} residues, need {n}")
    return x * (math.sqrt(x.shape[1]) / x.norm(dim=1).mean())


def fve(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float(1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def run_plmsae(train_x, test_x, steps, select_dtype):
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(
            store=None,
            out=Path(d) / "sae",
            arch="topk",
            latents=LATENTS,
            k=K,
            batch_size=BATCH,
            tokens=steps * BATCH,
            checkpoint_every=0,
            select_dtype=select_dtype,
            device="cpu",
            seed=0,
            log_every=1,
        )
        sae = Trainer(cfg, TensorStore(train_x)).fit().sae
        rec = [json.loads(line) for line in (Path(d) / "sae" / "metrics.jsonl").open()]
    # the log's tokens_per_s is cumulative from the start; leave out the first step (one-off
    # allocations) as for the other variants
    t1 = rec[0]["tokens"] / rec[0]["tokens_per_s"]
    tn = rec[-1]["tokens"] / rec[-1]["tokens_per_s"]
    with torch.no_grad():
        f = fve(sae(test_x), test_x)
    return (rec[-1]["tokens"] - rec[0]["tokens"]) / (tn - t1), f


def _batches(train_x, steps):
    """The same batches in the same order as plmsae's TensorStore (seed 0, rank 0)."""
    it = TensorStore(train_x).batches(BATCH, shuffle=True, seed=0, epochs=None)
    return [next(it) for _ in range(steps)]


def run_sparsify(train_x, test_x, steps):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    sae = SparseCoder(D_IN, SparseCoderConfig(num_latents=LATENTS, k=K))
    batches = _batches(train_x, steps)
    with torch.no_grad():
        sae.b_dec.copy_(train_x[:65536].mean(0))  # plmsae starts b_dec at the mean too
    lr = default_lr(LATENTS)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)  # sparsify's own default is signum
    warmup = min(1000, steps // 20)
    t0 = None
    for step, x in enumerate(batches):
        if step == 1:
            t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr, steps, warmup, 0.2)
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sae.set_decoder_norm_to_unit_norm()
    tps = (steps - 1) * BATCH / (time.perf_counter() - t0)
    with torch.no_grad():
        f = fve(sae(test_x).sae_out, test_x)
    return tps, f


def run_dense(train_x, test_x, steps):
    """A plain PyTorch TopK SAE: dense pre-activations, scatter, dense decode, autograd."""
    torch.manual_seed(0)
    W_dec = torch.randn(LATENTS, D_IN)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_enc = torch.nn.Parameter(W_dec.clone())
    W_dec = torch.nn.Parameter(W_dec)
    b_enc = torch.nn.Parameter(torch.zeros(LATENTS))
    b_dec = torch.nn.Parameter(train_x[:65536].mean(0).clone())
    params = [W_enc, b_enc, W_dec, b_dec]
    lr = default_lr(LATENTS)
    opt = torch.optim.Adam(params, lr=lr)
    scale = 1 / float((train_x[:65536] - train_x[:65536].mean(0)).pow(2).sum(1).mean())

    def fwd(x):
        pre = (x - b_dec) @ W_enc.T + b_enc
        v, i = pre.topk(K, dim=-1, sorted=False)
        z = torch.zeros_like(pre).scatter(1, i, v.relu())
        return z @ W_dec + b_dec

    warmup = min(1000, steps // 20)
    t0 = None
    for step, x in enumerate(_batches(train_x, steps)):
        if step == 1:
            t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr, steps, warmup, 0.2)
        loss = (fwd(x) - x).pow(2).sum(1).mean() * scale
        loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True)
    tps = (steps - 1) * BATCH / (time.perf_counter() - t0)
    with torch.no_grad():
        f = fve(fwd(test_x), test_x)
    return tps, f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="training steps of 4,096 tokens")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    ap.add_argument("--store", help="use real activations from this plmsae store")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument(
        "--variants",
        default="plmsae,sparsify",
        help="comma list of plmsae, plmsae-fp32, dense, sparsify",
    )
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    n_train = a.steps * BATCH
    data = real(a.store, n_train + 8192, a.layer) if a.store else synthetic(n_train + 8192)
    global D_IN
    D_IN = data.shape[1]
    train_x, test_x = data[:n_train].contiguous(), data[n_train:].contiguous()
    runners = {
        "plmsae": lambda: run_plmsae(train_x, test_x, a.steps, "auto"),
        "plmsae-fp32": lambda: run_plmsae(train_x, test_x, a.steps, "float32"),
        "dense": lambda: run_dense(train_x, test_x, a.steps),
        "sparsify": lambda: run_sparsify(train_x, test_x, a.steps),
    }
    variants = a.variants.split(",")
    res: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for r in range(a.rounds):
        for v in variants:
            tps, f = runners[v]()
            res[v].append((tps, f))
            if not a.json:
                print(f"round {r + 1} {v:12s} {tps:8.0f} tokens/s  FVE {f:.4f}", flush=True)
    out = {
        "data": f"store {a.store}" if a.store else "synthetic sparse-structured 480-d",
        "config": f"TopK {D_IN}->{LATENTS}, k={K}, batch {BATCH}, {a.steps} steps, Adam",
        "threads": torch.get_num_threads(),
        "rounds": a.rounds,
    }
    for v in variants:
        key = v.replace("-", "_")
        out[f"{key}_tokens_per_s"] = statistics.median(t for t, _ in res[v])
        out[f"{key}_fve"] = statistics.median(f for _, f in res[v])
    if "plmsae" in res and "sparsify" in res:
        # ratio per round (the two runs of a round saw similar machine load), then the median
        out["ratio"] = statistics.median(
            p[0] / s[0] for p, s in zip(res["plmsae"], res["sparsify"])
        )
    if a.json:
        print(json.dumps(out))
    else:
        for key, val in out.items():
            print(f"{key}: {val:.4g}" if isinstance(val, float) else f"{key}: {val}")


if __name__ == "__main__":
    main()
