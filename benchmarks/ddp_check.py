"""Two-rank DistributedDataParallel check of ``plmsae train`` (run by ``benchmarks/gpu.sh``).

    torchrun --standalone --nproc_per_node 2 benchmarks/ddp_check.py --out DIR [--device cuda]
    python benchmarks/ddp_check.py --out DIR --compare [--device cuda]

Under torchrun each rank trains the same TopK SAE on its half of every global batch of the same
synthetic activations and writes its weights to DIR/rank{r}.safetensors; ``--compare`` then
trains one process on the whole global batches and prints one JSON line: the largest weight
difference between the ranks (0 when the all-reduce keeps them in step), between rank 0 and the
one-process run (float summation order only), the backend and the tokens/s of both runs.

Backend: nccl when every rank has its own GPU; on a machine with fewer GPUs than ranks the ranks
share GPU 0 over gloo (NCCL refuses two ranks on one device), and on CPU gloo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("PLMSAE_NO_PROGRESS", "1")

from plmsae.sae.data import TensorStore
from plmsae.sae.train import TrainConfig, Trainer


def data(n: int = 65536, d: int = 256, seed: int = 0) -> torch.Tensor:
    """Sparse non-negative combinations of 2,048 unit directions plus noise."""
    g = torch.Generator().manual_seed(seed)
    D = torch.nn.functional.normalize(torch.randn(2048, d, generator=g), dim=1)
    idx = torch.randint(0, 2048, (n, 8), generator=g)
    mag = torch.rand(n, 8, generator=g) * 3
    return torch.nn.functional.embedding_bag(idx, D, per_sample_weights=mag, mode="sum") + 0.05 * (
        torch.randn(n, d, generator=g)
    )


def train(
    out: Path, device: str, steps: int, latents: int
) -> tuple[dict[str, torch.Tensor], float]:
    cfg = TrainConfig(
        store=None,
        out=out,
        latents=latents,
        k=32,
        batch_size=4096,
        tokens=steps * 4096,
        lr=1e-3,
        select_dtype="float32",
        checkpoint_every=0,
        device=device,
    )
    result = Trainer(cfg, TensorStore(data())).fit()
    state = {k: v.detach().cpu().contiguous() for k, v in result.sae.state_dict().items()}
    return state, float(result.metrics["tokens_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--latents", type=int, default=8192)
    ap.add_argument("--compare", action="store_true")
    a = ap.parse_args()
    from safetensors.torch import load_file, save_file

    if not a.compare:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        backend = "gloo"
        if a.device == "cuda":
            if torch.cuda.device_count() >= world:
                backend = "nccl"
            else:
                os.environ["LOCAL_RANK"] = "0"  # every rank on GPU 0
        torch.distributed.init_process_group(backend)
        state, tps = train(a.out / "ddp", a.device, a.steps, a.latents)
        save_file(state, str(a.out / f"rank{rank}.safetensors"))
        if rank == 0:
            (a.out / "ddp.json").write_text(json.dumps({"backend": backend, "tokens_per_s": tps}))
        torch.distributed.destroy_process_group()
        return
    single, tps = train(a.out / "single", a.device, a.steps, a.latents)
    ranks = sorted(a.out.glob("rank*.safetensors"))
    r = [load_file(str(p)) for p in ranks]
    between = max(float((r[0][k] - x[k]).abs().max()) for x in r[1:] for k in x)
    vs_single = max(float((r[0][k] - single[k]).abs().max()) for k in single)
    print(
        json.dumps(
            {
                "ranks": len(r),
                "device": a.device,
                **json.loads((a.out / "ddp.json").read_text()),
                "single_tokens_per_s": tps,
                "max_diff_between_ranks": between,
                "max_diff_vs_one_process": vs_single,
            }
        )
    )


if __name__ == "__main__":
    main()
