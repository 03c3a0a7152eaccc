"""Time to quality: plmsae's TopK trainer against EleutherAI sparsify and SAELens.

Every system trains a TopK SAE (``--latents``, ``--k``, batch ``--batch-size``) on the same real
activations (a plmsae store; by default the bundled demo proteins embedded with the offline
ESM-2 8M model at layer 4, built on first use) for the same token budget (``--tokens``), on the
same batches in the same order; FVE is measured on held-out vectors (residues of proteins that
are never trained on) every ``--eval-every`` tokens, outside the timed part. Systems:

- ``plmsae``: ``plmsae.sae.train.Trainer`` with its defaults (the real ``fit()`` loop);
- ``sparsify``: EleutherAI sparsify with its own default optimiser and learning rate
  (sign-SGD in a schedule-free wrapper, lr 5e-3 / sqrt(latents / 2^14));
- ``sparsify-adam``: sparsify with Adam, its default Adam lr 2e-4 / sqrt(latents / 2^14) and its
  linear warm-up / decay schedule (warm-up min(1000, 5 % of the steps));
- ``saelens``: SAELens' TopK training SAE and its own default optimiser (Adam, lr 3e-4,
  constant), run by ``benchmarks/_saelens_worker.py`` in ``.venv-saelens`` (SAELens pins its
  own torch), fed the same batches.

The systems run in lockstep, one training step each in turn, so that load from other processes
on the machine hits all of them alike. Reported per system: tokens/s (training steps only),
set-up seconds, final FVE, the fraction of latents that never fire on the held-out vectors
(dead), and the wall time (set-up + steps, evaluation excluded) to reach each FVE target: 0.7,
0.8, 98 % of the best final FVE and 98 % of the best peer's final FVE (the quality the best peer
settles at within the budget). ``time_to_target_ratio`` is the fastest peer's time over
plmsae's at the common target: the highest target that plmsae and at least one peer reach.

    python benchmarks/sae_train.py --json                       # demo store, 5M tokens
    python benchmarks/sae_train.py --store STORE --tokens 2e6   # another store, budget
    python benchmarks/sae_train.py --systems "plmsae;plmsae:lr=2e-3;sparsify-adam"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("PLMSAE_NO_PROGRESS", "1")

from plmsae.sae.data import TensorStore  # noqa: E402
from plmsae.sae.train import TrainConfig, Trainer, lr_at  # noqa: E402

SYSTEMS = ("plmsae", "sparsify", "sparsify-adam", "saelens")
FIXED_TARGETS = (0.7, 0.8)
BEST_FRACTION = 0.98
SAELENS_PYTHON = REPO / ".venv-saelens" / "bin" / "python"
DEFAULT_WORK = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plmsae-bench"


# ------------------------------------------------------------------------------------ data
def demo_store(work: Path, layer: int) -> Path:
    """The bundled demo proteins embedded with the offline default model (built once)."""
    from plmsae.data.demo import demo_paths
    from plmsae.embedding.embedder import embed

    out = work / f"demo-L{layer}"
    if not (out / "meta.json").is_file() or not json.loads((out / "meta.json").read_text()).get(
        "complete"
    ):
        print(f"embedding the demo proteins into {out} (once)", file=sys.stderr)
        embed(demo_paths().fasta, out=out, layers=[layer])
    return out


def load_activations(store_path: Path, layer: int | None, n_heldout: int, seed: int = 0):
    """(train [N, d], held-out [n_heldout, d]) float32 residue vectors of a store; every 20th
    protein is held out. Both are scaled so that E||x|| = sqrt(d) on the training part."""
    from plmsae.embedding.store import ActivationStore

    st = ActivationStore(store_path)
    train, held = [], []
    for i, (_, x) in enumerate(st.iter_residues(layer=layer)):
        (held if i % 20 == 19 else train).append(x)
    xt = torch.from_numpy(np.concatenate(train))
    xh = torch.from_numpy(np.concatenate(held))
    g = torch.Generator().manual_seed(seed)
    xh = xh[torch.randperm(len(xh), generator=g)[:n_heldout]]
    scale = math.sqrt(xt.shape[1]) / float(xt.norm(dim=1).mean())
    return (xt * scale).contiguous(), (xh * scale).contiguous()


def fve(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float(1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def held_out_scores(encode_decode, x: torch.Tensor, latents: int) -> tuple[float, float]:
    """(FVE, fraction of latents that never fire) on held-out ``x``; ``encode_decode(xb)``
    returns (reconstruction, indices of the active latents [B, k] or None, dense codes or None)."""
    fired = torch.zeros(latents, dtype=torch.bool)
    err = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for a in range(0, len(x), 8192):
            xb = x[a : a + 8192]
            recon, idx, vals = encode_decode(xb)
            err += (recon.float() - xb).pow(2).sum().double()
            fired[idx[vals > 0]] = True
    total = float((x - x.mean(0)).pow(2).sum())
    return 1 - float(err) / total, 1 - float(fired.float().mean())


# ------------------------------------------------------------------------------------ systems
class System:
    """One trainer under test, driven one step at a time; ``seconds`` is its timed total
    (set-up and steps; evaluation is outside)."""

    name = ""

    def __init__(self, args: argparse.Namespace, train_x: torch.Tensor, test_x: torch.Tensor):
        self.args, self.train_x, self.test_x = args, train_x, test_x
        self.steps = args.tokens // args.batch_size
        self.setup_s = 0.0
        self.step_s: list[float] = []

    def batches(self):
        """The same batches in the same order for every system (plmsae's TensorStore)."""
        return TensorStore(self.train_x).batches(self.args.batch_size, seed=0, epochs=None)

    def sync(self) -> None:
        """Wait for the GPU, so that a step's time is the step's work."""
        if self.args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def start(self) -> None: ...

    def step(self) -> None: ...

    def evaluate(self) -> tuple[float, float]: ...

    def close(self) -> None: ...


class Plmsae(System):
    """``Trainer.fit()`` in a thread, paused after every step (the ``record`` hook) until the
    driver asks for the next one. ``plmsae:lr=2e-3,select_dtype=float32`` overrides options."""

    name = "plmsae"

    def __init__(self, args, train_x, test_x, options: str = ""):
        super().__init__(args, train_x, test_x)
        self.options: dict[str, Any] = {}
        for item in filter(None, options.split(",")):
            key, _, value = item.partition("=")
            try:  # numbers, true/false, lists; anything else (float32) is a string
                self.options[key] = json.loads(value)
            except ValueError:
                self.options[key] = value
        if options:
            self.name = f"plmsae:{options}"

    def start(self) -> None:
        self.go: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.tmp = tempfile.TemporaryDirectory()
        system = self

        class Paced(Trainer):
            def build(self) -> None:
                super().build()
                system.sae = self.sae
                system.done.put(("setup", time.perf_counter()))
                system.go.get()
                system.t_go = time.perf_counter()

            def record(self, *a, **kw) -> None:
                super().record(*a, **kw)
                system.sync()
                system.done.put(("step", time.perf_counter()))
                system.go.get()
                system.t_go = time.perf_counter()

        a = self.args
        cfg = TrainConfig(
            store=None,
            out=Path(self.tmp.name) / "sae",
            arch="topk",
            latents=a.latents,
            k=a.k,
            batch_size=a.batch_size,
            tokens=self.steps * a.batch_size,
            checkpoint_every=0,
            log_every=10**9,
            device=a.device,
            **self.options,
        )
        self.error: BaseException | None = None

        def run() -> None:
            try:
                Paced(cfg, TensorStore(self.train_x)).fit()
            except BaseException as e:
                self.error = e
                self.done.put(("error", time.perf_counter()))

        t0 = time.perf_counter()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.setup_s = self._wait() - t0

    def _wait(self) -> float:
        kind, t = self.done.get()
        if kind == "error":
            raise RuntimeError("plmsae training failed") from self.error
        return t

    def step(self) -> None:
        self.go.put("step")
        t = self._wait()
        self.step_s.append(t - self.t_go)

    def evaluate(self) -> tuple[float, float]:
        sae = self.sae

        def run(xb):
            xb = xb.to(sae.device)
            vals, idx = sae.encode_sparse(xb)
            recon = sae.decode(sae.activation(sae.pre_acts(sae.normalise(xb)[0])))
            return recon.cpu(), idx.cpu(), vals.cpu()

        return held_out_scores(run, self.test_x, self.args.latents)

    def close(self) -> None:
        while self.thread.is_alive():  # let fit() run out its steps, write its SAE and return
            self.go.put("step")
            self.thread.join(timeout=0.1)
        self.tmp.cleanup()


class Sparsify(System):
    """EleutherAI sparsify's SparseCoder and its training step (as ``sparsify.Trainer`` does it
    for one hook point: b_dec from the first batch's mean, FVU loss, decoder kept unit-norm)."""

    name = "sparsify"
    optimiser = "signum"

    def start(self) -> None:
        with contextlib.redirect_stdout(sys.stderr):  # it prints a notice when importing
            from sparsify import SparseCoder, SparseCoderConfig

        t0 = time.perf_counter()
        a = self.args
        torch.manual_seed(0)
        self.sae = SparseCoder(
            self.train_x.shape[1], SparseCoderConfig(num_latents=a.latents, k=a.k), a.device
        )
        self.data = self.batches()
        self.lr_fn = None
        if self.optimiser == "signum":
            from schedulefree import ScheduleFreeWrapper
            from sparsify.sign_sgd import SignSGD

            lr = 5e-3 / (a.latents / 2**14) ** 0.5  # sparsify's default for signum
            self.opt = ScheduleFreeWrapper(
                SignSGD([{"params": self.sae.parameters(), "lr": lr}]), momentum=0.95
            )
            self.opt.train()
        else:
            lr = 2e-4 / (a.latents / 2**14) ** 0.5  # sparsify's default for Adam
            self.opt = torch.optim.Adam(self.sae.parameters(), lr=lr)
            warmup = min(1000, self.steps // 20)
            self.lr_fn = lambda step: lr_at(step, lr, self.steps, warmup, 1.0 - warmup / self.steps)
        self.n = 0
        self.setup_s = time.perf_counter() - t0

    def step(self) -> None:
        t0 = time.perf_counter()
        x = next(self.data).to(self.args.device)
        sae = self.sae
        if self.n == 0:
            with torch.no_grad():
                sae.b_dec.data = x.mean(0)
        if self.lr_fn is not None:
            for g in self.opt.param_groups:
                g["lr"] = self.lr_fn(self.n)
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        self.opt.step()
        self.opt.zero_grad()
        self.n += 1
        self.sync()
        self.step_s.append(time.perf_counter() - t0)

    def evaluate(self) -> tuple[float, float]:
        if self.optimiser == "signum":
            self.opt.eval()  # schedule-free: evaluate (and save) the averaged weights
        sae = self.sae

        def run(xb):
            out = sae(xb.to(self.args.device))
            return out.sae_out.cpu(), out.latent_indices.cpu(), out.latent_acts.cpu()

        try:
            return held_out_scores(run, self.test_x, self.args.latents)
        finally:
            if self.optimiser == "signum":
                self.opt.train()


class SparsifyAdam(Sparsify):
    name = "sparsify-adam"
    optimiser = "adam"


class SAELens(System):
    """SAELens in its own virtual environment, one step per request over a pipe."""

    name = "saelens"

    def start(self) -> None:
        if self.args.device != "cpu":
            raise SystemExit("the SAELens environment holds the CPU build of torch: cpu only")
        if not SAELENS_PYTHON.is_file():
            raise SystemExit(
                f"{SAELENS_PYTHON} is missing: build it with PLMSAE_SAELENS=1 bash scripts/setup.sh"
            )
        from safetensors.torch import save_file

        self.tmp = tempfile.TemporaryDirectory()
        data = Path(self.tmp.name) / "data.safetensors"
        save_file({"train": self.train_x, "test": self.test_x}, str(data))
        a = self.args
        cmd = [
            str(SAELENS_PYTHON),
            str(REPO / "benchmarks" / "_saelens_worker.py"),
            str(data),
            str(a.latents),
            str(a.k),
            str(a.batch_size),
            str(self.steps),
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.setup_s = float(self._ask("setup")["seconds"])

    def _ask(self, command: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the SAELens worker stopped (see its error output above)")
        return json.loads(line)

    def step(self) -> None:
        self.step_s.append(float(self._ask("step")["seconds"]))

    def evaluate(self) -> tuple[float, float]:
        r = self._ask("eval")
        return float(r["fve"]), float(r["dead_fraction"])

    def close(self) -> None:
        self._ask("quit")
        self.proc.wait()
        self.tmp.cleanup()


CLASSES = {c.name: c for c in (Plmsae, Sparsify, SparsifyAdam, SAELens)}


def make_system(spec: str, args, train_x, test_x) -> System:
    """``name`` or ``plmsae:key=value,...`` (plmsae with other train options)."""
    name, _, options = spec.partition(":")
    if name == "plmsae":
        return Plmsae(args, train_x, test_x, options)
    return CLASSES[name](args, train_x, test_x)


# ------------------------------------------------------------------------------------ driver
def warm_up(systems: list[System]) -> None:
    """Run each in-process system once on a tiny problem before anything is timed, so that
    imports and one-off initialisation (thread pools, lazily imported modules) are not charged
    to the first timed set-up; the SAELens worker imports SAELens before it reports ready."""
    args = argparse.Namespace(**vars(systems[0].args))
    args.latents, args.k, args.batch_size, args.tokens = 64, 4, 64, 128
    x = systems[0].train_x[:256].contiguous()
    quiet = logging.getLogger("plmsae")
    level, quiet.level = quiet.level, logging.ERROR  # no "small store" warning for the toy
    try:
        for cls in {type(s) for s in systems if not isinstance(s, SAELens)}:
            tiny = cls(args, x, x[:64])
            tiny.start()
            tiny.step()
            tiny.evaluate()
            tiny.close()
    finally:
        quiet.level = level


def run_lockstep(systems: list[System], eval_every: int) -> dict[str, list[dict]]:
    """Set up every system, then one step each in turn; every ``eval_every`` steps (and at the
    end) each is evaluated on the held-out vectors. Returns the curves."""
    curves: dict[str, list[dict]] = {s.name: [] for s in systems}
    warm_up(systems)
    for s in systems:
        s.start()
    steps = systems[0].steps
    for step in range(1, steps + 1):
        for s in systems:
            s.step()
        if step % eval_every == 0 or step == steps:
            for s in systems:
                f, dead = s.evaluate()
                curves[s.name].append(
                    {
                        "step": step,
                        "tokens": step * s.args.batch_size,
                        "seconds": s.setup_s + sum(s.step_s),
                        "fve": f,
                        "dead_fraction": dead,
                    }
                )
            if not s.args.json:
                line = "  ".join(f"{n} {c[-1]['fve']:.4f}" for n, c in curves.items())
                print(f"step {step:6d}/{steps}  FVE  {line}", file=sys.stderr, flush=True)
    for s in systems:
        s.close()
    return curves


def first_reach(curve: list[dict], target: float) -> dict | None:
    return next((p for p in curve if p["fve"] >= target), None)


def summarise(systems: list[System], curves: dict[str, list[dict]], args) -> dict[str, Any]:
    best = max(c[-1]["fve"] for c in curves.values())
    peers = [c[-1]["fve"] for n, c in curves.items() if not n.startswith("plmsae")]
    # 98 % of the best peer's final FVE: the quality the best peer settles at within the budget
    best_peer = [round(BEST_FRACTION * max(peers), 4)] if peers else []
    targets = sorted({*FIXED_TARGETS, round(BEST_FRACTION * best, 4), *best_peer})
    out: dict[str, Any] = {
        "data": args.data_note,
        "config": (
            f"TopK {args.d_in} -> {args.latents}, k = {args.k}, batch {args.batch_size}, "
            f"{systems[0].steps} steps = {systems[0].steps * args.batch_size:,} tokens, "
            f"FVE on {args.heldout:,} held-out residues every {args.eval_every} steps"
        ),
        "tokens": systems[0].steps * args.batch_size,
        "threads": torch.get_num_threads(),
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "load_average_start": args.load_start,
        "load_average_end": os.getloadavg(),
        "targets": targets,
        "systems": {},
    }
    for s in systems:
        c = curves[s.name]
        reach = {t: first_reach(c, t) for t in targets}
        out["systems"][s.name] = {
            "tokens_per_s": len(s.step_s) * args.batch_size / sum(s.step_s),
            "median_step_s": statistics.median(s.step_s),
            "setup_s": s.setup_s,
            "final_fve": c[-1]["fve"],
            "dead_fraction": c[-1]["dead_fraction"],
            "seconds_to_target": {str(t): (r["seconds"] if r else None) for t, r in reach.items()},
            "tokens_to_target": {str(t): (r["tokens"] if r else None) for t, r in reach.items()},
            "curve": c,
        }
        out[f"{s.name.replace('-', '_')}_final_fve"] = c[-1]["fve"]
        out[f"{s.name.replace('-', '_')}_tokens_per_s"] = out["systems"][s.name]["tokens_per_s"]
    out.update(ratios(out["systems"], targets))
    return out


def ratios(results: dict[str, dict], targets: list[float]) -> dict[str, Any]:
    """Per target: the fastest peer's seconds over plmsae's (None when plmsae or every peer
    misses it); the common target is the highest one with a ratio."""
    if "plmsae" not in results:
        return {}
    results = {n: r for n, r in results.items() if n == "plmsae" or ":" not in n}
    by_target: dict[str, Any] = {}
    for t in targets:
        mine = results["plmsae"]["seconds_to_target"][str(t)]
        peers = {
            n: r["seconds_to_target"][str(t)]
            for n, r in results.items()
            if n != "plmsae" and r["seconds_to_target"][str(t)] is not None
        }
        if mine is None or not peers:
            by_target[str(t)] = None
            continue
        fastest = min(peers, key=lambda n: peers[n])
        by_target[str(t)] = {"fastest_peer": fastest, "ratio": peers[fastest] / mine}
    common = [t for t in targets if by_target[str(t)] is not None]
    top = by_target[str(common[-1])] if common else None
    return {
        "ratio_by_target": by_target,
        "common_target": common[-1] if common else None,
        "fastest_peer": top["fastest_peer"] if top else None,
        "time_to_target_ratio": top["ratio"] if top else None,
    }


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store", type=Path, help="plmsae store (default: the demo store, built)")
    ap.add_argument("--layer", type=int, default=4, help="layer (and demo store layer)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where the demo store goes")
    ap.add_argument("--tokens", type=float, default=5e6, help="training budget in tokens")
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--eval-every", type=int, default=None, help="steps (default: 1/40 budget)")
    ap.add_argument("--heldout", type=int, default=32768, help="held-out residues")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (saelens: cpu only)")
    ap.add_argument(
        "--systems",
        default=";".join(SYSTEMS),
        help=f"';'-separated, among {', '.join(SYSTEMS)}; plmsae:lr=2e-3,... sets plmsae options",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--curves", action="store_true", help="keep the FVE curves in the JSON")
    args = ap.parse_args(argv)
    args.tokens = int(args.tokens)
    bad = {n.partition(":")[0] for n in args.systems.split(";")} - set(SYSTEMS)
    if bad:
        ap.error(f"unknown systems {sorted(bad)}")
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    args.load_start = os.getloadavg()
    store = args.store or demo_store(args.work, args.layer)
    train_x, test_x = load_activations(store, args.layer, args.heldout)
    args.d_in, args.heldout = train_x.shape[1], len(test_x)
    args.data_note = (
        f"store {store} layer {args.layer}: {len(train_x):,} training residues, "
        f"{len(test_x):,} held-out residues of other proteins"
    )
    steps = args.tokens // args.batch_size
    args.eval_every = args.eval_every or max(1, steps // 40)
    systems = [make_system(n, args, train_x, test_x) for n in args.systems.split(";")]
    curves = run_lockstep(systems, args.eval_every)
    out = summarise(systems, curves, args)
    if not args.curves:
        for r in out["systems"].values():
            r.pop("curve")
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for name, r in out["systems"].items():
            reach = "  ".join(
                f"{t}: {v:.0f}s" if v else f"{t}: -" for t, v in r["seconds_to_target"].items()
            )
            print(
                f"{name:14s} {r['tokens_per_s']:8,.0f} tok/s  final FVE {r['final_fve']:.4f}  "
                f"dead {r['dead_fraction']:.3f}  to target  {reach}"
            )
        print(
            f"time_to_target_ratio {out.get('time_to_target_ratio')} at {out.get('common_target')}"
        )
    return out


if __name__ == "__main__":
    main()
