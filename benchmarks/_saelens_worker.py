"""SAELens side of ``benchmarks/sae_train.py`` (runs in ``.venv-saelens``: SAELens pins its own
torch, so it cannot share plmsae's environment).

    python _saelens_worker.py DATA.safetensors LATENTS K BATCH STEPS

DATA holds ``train`` and ``test`` float32 ``[N, d]``. The worker reads commands on stdin, one per
line, and answers each with one JSON line on stdout:

- ``setup``: build SAELens' ``TopKTrainingSAE`` (its defaults but ``k``) and ``SAETrainer``
  (its defaults: Adam, lr 3e-4, constant schedule, gradient-norm clipping at 1, AuxK) ->
  ``{"seconds"}``;
- ``step``: one iteration of ``SAETrainer.fit()``'s loop on the next batch -> ``{"seconds"}``;
- ``eval``: FVE and the fraction of latents that never fire on ``test`` -> ``{"fve",
  "dead_fraction"}`` (not timed);
- ``quit``.

Batches come in plmsae's ``TensorStore`` order (seed 0: per epoch ``randperm`` with generator
seed ``epoch``, full global batches only), so every system sees the same batches.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from safetensors.torch import load_file


def batches(x: torch.Tensor, batch_size: int, seed: int = 0):
    """The batches of ``plmsae.sae.data.TensorStore(x).batches(batch_size, seed=seed)``."""
    n, epoch = len(x), 0
    while True:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
        for start in range(0, n - batch_size + 1, batch_size):
            yield x[order[start : start + batch_size]]
        epoch += 1


def main() -> None:
    path, latents, k, batch_size, steps = sys.argv[1], *map(int, sys.argv[2:6])
    data = load_file(path)
    train, test = data["train"], data["test"]
    # imported before anything is timed (SAELens takes ~40 s to import on a loaded 2-core CPU)
    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    state: dict = {}
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "setup":
            t0 = time.perf_counter()
            torch.manual_seed(0)
            sae = TopKTrainingSAE(
                TopKTrainingSAEConfig(d_in=train.shape[1], d_sae=latents, k=k, device="cpu")
            )
            trainer = SAETrainer(
                cfg=SAETrainerConfig(
                    total_training_samples=steps * batch_size,
                    train_batch_size_samples=batch_size,
                    device="cpu",
                    lr_end=3e-5,  # SAELens' runner config sets lr / 10 (unused when constant)
                    logger=LoggingConfig(log_to_wandb=False),
                ),
                sae=sae,
                data_provider=batches(train, batch_size),
            )
            state.update(sae=sae, trainer=trainer)
            reply = {"seconds": time.perf_counter() - t0}
        elif cmd == "step":
            t0 = time.perf_counter()
            trainer = state["trainer"]
            trainer.maybe_reset_sparsity()
            trainer.step(next(trainer.data_provider))
            trainer.n_training_steps += 1
            reply = {"seconds": time.perf_counter() - t0}
        elif cmd == "eval":
            reply = evaluate(state["sae"], test, latents)
        elif cmd == "quit":
            print(json.dumps({}), flush=True)
            return
        else:
            raise SystemExit(f"unknown command {cmd!r}")
        print(json.dumps(reply), flush=True)


@torch.no_grad()
def evaluate(sae, x: torch.Tensor, latents: int) -> dict:
    sae.eval()
    fired = torch.zeros(latents, dtype=torch.bool)
    err = 0.0
    for a in range(0, len(x), 8192):
        xb = x[a : a + 8192]
        z = sae.encode(xb)
        err += float((sae.decode(z) - xb).pow(2).sum())
        fired |= (z > 0).any(0)
    sae.train()
    total = float((x - x.mean(0)).pow(2).sum())
    return {"fve": 1 - err / total, "dead_fraction": 1 - float(fired.float().mean())}


if __name__ == "__main__":
    main()
