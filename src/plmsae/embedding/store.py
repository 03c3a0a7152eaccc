"""The activation store format: file names, format version and the one reader.

``plmsae embed`` (:mod:`plmsae.embedding.embedder`) writes a store with the names defined here;
everything else reads it through :class:`ActivationStore`.

Layout (docs/design.md, "Stage 2"):

- :data:`META` (``meta.json``): ``format_version`` (:data:`FORMAT_VERSION`), model, layers,
  ``d_model``, storage dtype, input path/SHA-256/counts, long-sequence policy, shard records
  (file, SHA-256, bytes, proteins, residues) and ``complete`` (false while embed runs);
- :data:`PROTEINS` (``proteins.parquet``): columns :data:`PROTEIN_COLUMNS` = ``id``, ``length``,
  ``shard``, ``row`` (protein order = input order = shard order);
- :data:`SHARDS` (``shards/``): ``NNNNN.safetensors`` (:func:`shard_file`) holding per layer
  ``residues.{layer}`` ``[residues in shard, d]`` (storage dtype), ``pooled.{layer}``
  ``[proteins in shard, d]`` (float32) and ``offsets`` ``[proteins + 1]`` (row offsets of each
  protein's residues), each with a sidecar ``NNNNN.json`` (its record, for resuming).

Everything comes back as float32. Random access opens shards lazily with
``safetensors.safe_open`` (memory-mapped) and reads only the requested rows; open handles are
cached (LRU). Opening a store checks its format version, that it is complete and that every
shard has its recorded size; :meth:`ActivationStore.verify` checks every shard's SHA-256
(``plmsae embed`` does this when it resumes).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from plmsae._util import InputError, read_json, sha256_file

#: version of the layout below, written to ``meta.json``; the reader refuses any other
FORMAT_VERSION = 1
META = "meta.json"
PROTEINS = "proteins.parquet"
PROTEIN_COLUMNS = ("id", "length", "shard", "row")
SHARDS = "shards"
#: suffix of a shard's sidecar record (``shards/00000.json`` next to ``shards/00000.safetensors``)
SIDECAR_SUFFIX = ".json"

_REPAIR = "re-run `plmsae embed` with the same arguments to repair it."


def shard_file(index: int) -> str:
    """Path of shard ``index`` relative to the store: ``shards/00000.safetensors``."""
    return f"{SHARDS}/{index:05d}.safetensors"


class ActivationStore:
    """An activation store on disk (see the module docstring).

    Attributes: ``ids`` (list[str], input order), ``layers`` (list[int]), ``d_model`` (int),
    ``meta`` (dict, the ``meta.json``), ``lengths`` (int64 ndarray [N], residues per protein),
    ``n_tokens`` (total residues). ``len(store)`` is the number of proteins.
    """

    def __init__(self, path: str | os.PathLike, *, max_open_shards: int = 64):
        self.path = Path(path)
        self.meta: dict[str, Any] = self._read_meta()
        self.layers: list[int] = [int(x) for x in self.meta["layers"]]
        self.d_model: int = int(self.meta["d_model"])
        self._shards: list[dict] = self.meta["shards"]
        self._check_shard_sizes()
        self._read_proteins()
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._max_open = max_open_shards
        self._verified: set[int] = set()  # shards whose SHA-256 was checked by this object

    def _read_meta(self) -> dict[str, Any]:
        """``meta.json`` of a complete store of a known format version, else InputError."""
        meta_path = self.path / META
        if not meta_path.is_file():
            raise InputError(
                f"not an activation store (no {META}).",
                path=self.path,
                fix="pass a directory written by `plmsae embed`.",
            )
        meta = read_json(meta_path)
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise InputError(
                f"activation store format version {version!r} is not one this plmsae reads "
                f"(it reads version {FORMAT_VERSION}; the store was written by plmsae "
                f"{meta.get('plmsae_version', '?')}).",
                path=self.path,
                fix="open it with the plmsae version that wrote it, or re-embed the FASTA "
                "with this version (`plmsae embed` into a new --out).",
            )
        if not meta.get("complete"):
            raise InputError(
                "the activation store is incomplete (plmsae embed was interrupted or "
                "is still running).",
                path=self.path,
                fix="re-run `plmsae embed` with "
                "the same arguments to finish it (finished shards are kept).",
            )
        return meta

    def _check_shard_sizes(self) -> None:
        for rec in self._shards:
            f = self.path / rec["file"]
            if not f.is_file():
                raise InputError(f"shard {rec['file']} is missing.", path=self.path, fix=_REPAIR)
            if f.stat().st_size != rec["bytes"]:
                raise InputError(
                    f"shard {rec['file']} has {f.stat().st_size} bytes, expected "
                    f"{rec['bytes']} (damaged or truncated).",
                    path=self.path,
                    fix=_REPAIR,
                )

    def _read_proteins(self) -> None:
        """Protein table: ids, lengths, and where each protein's rows are in its shard."""
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(self.path / PROTEINS)
        except Exception as e:  # pyarrow raises several types for damaged files
            raise InputError(f"cannot read {PROTEINS} ({e}).", path=self.path, fix=_REPAIR) from e
        self.ids: list[str] = table.column("id").to_pylist()
        self.lengths: np.ndarray = table.column("length").to_numpy().astype(np.int64)
        self._shard_of = table.column("shard").to_numpy().astype(np.int64)
        self._row_of = table.column("row").to_numpy().astype(np.int64)
        self._index = {pid: i for i, pid in enumerate(self.ids)}
        self.n_tokens: int = int(self.lengths.sum())
        # residue offsets of each protein within its shard (rows = proteins.parquet order)
        self._start = np.zeros(len(self.ids), dtype=np.int64)
        for s in range(len(self._shards)):
            sel = np.flatnonzero(self._shard_of == s)
            self._start[sel] = np.concatenate([[0], np.cumsum(self.lengths[sel])[:-1]])

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        model = self.meta.get("model", {}).get("description", "?")
        return (
            f"ActivationStore({str(self.path)!r}: {len(self)} proteins, {self.n_tokens} "
            f"residues, layers {self.layers}, d={self.d_model}, model {model})"
        )

    # --- checks --------------------------------------------------------------------------------

    def verify(self) -> None:
        """Check every shard against its recorded SHA-256; raise InputError naming the first bad
        one."""
        for s in range(len(self._shards)):
            self._verify_shard(s)

    def _verify_shard(self, s: int) -> None:
        if s in self._verified:
            return
        rec = self._shards[s]
        if sha256_file(self.path / rec["file"]) != rec["sha256"]:
            raise InputError(
                f"shard {rec['file']} does not match its recorded SHA-256 (damaged or changed).",
                path=self.path,
                fix=_REPAIR,
            )
        self._verified.add(s)

    def _layer(self, layer: int | None) -> int:
        if layer is None:
            if len(self.layers) == 1:
                return self.layers[0]
            raise InputError(
                f"the store has layers {self.layers}; say which one.",
                path=self.path,
                fix="pass layer=... (Python) or --layer (CLI).",
            )
        if int(layer) not in self.layers:
            raise InputError(
                f"layer {layer} is not in the store (it has {self.layers}).",
                path=self.path,
                fix="embed that layer with `plmsae embed --layers`.",
            )
        return int(layer)

    def _protein(self, pid: str) -> int:
        try:
            return self._index[pid]
        except KeyError:
            raise KeyError(f"protein {pid!r} is not in the store {self.path}") from None

    def _handle(self, s: int):
        h = self._handles.get(s)
        if h is not None:
            self._handles.move_to_end(s)
            return h
        h = self._handles[s] = self._open(s)
        if len(self._handles) > self._max_open:
            self._handles.popitem(last=False)
        return h

    def _open(self, s: int):
        from safetensors import safe_open

        file = self.path / self._shards[s]["file"]
        try:
            h = safe_open(str(file), framework="pt")
        except Exception as e:  # safetensors raises its own error type for damaged headers
            raise InputError(
                f"shard {self._shards[s]['file']} cannot be read ({e}).",
                path=self.path,
                fix=_REPAIR,
            ) from e
        return h

    def _tensor(self, s: int, name: str, start: int | None = None, stop: int | None = None):
        """Rows ``[start, stop)`` (all when None) of tensor ``name`` of shard ``s``, float32."""
        if start is None:
            # Whole-shard reads feed training and analysis: check the shard's bytes once per
            # process (as cheap as the read itself), so a damaged shard is named, not trained on.
            self._verify_shard(s)
        try:
            if start is None:
                # A private handle, dropped after the copy: a cached one keeps every shard read
                # mapped, and memory then grows with the store instead of staying at one shard.
                t = self._open(s).get_tensor(name)
                f = t.float()
                return f.clone() if f is t else f
            t = self._handle(s).get_slice(name)[start:stop]
        except InputError:
            raise
        except Exception as e:
            raise InputError(
                f"shard {self._shards[s]['file']}: cannot read {name} ({e}).",
                path=self.path,
                fix=_REPAIR,
            ) from e
        return t.float()

    # --- random access -------------------------------------------------------------------------

    def residues(self, id: str, layer: int | None = None) -> np.ndarray:
        """Per-residue activations of protein ``id``: float32 ``[L, d]``, row j = residue j."""
        layer = self._layer(layer)
        i = self._protein(id)
        start = int(self._start[i])
        t = self._tensor(
            int(self._shard_of[i]), f"residues.{layer}", start, start + int(self.lengths[i])
        )
        return t.numpy()

    def pooled(self, id: str, layer: int | None = None) -> np.ndarray:
        """Mean over residues of protein ``id``: float32 ``[d]``."""
        layer = self._layer(layer)
        i = self._protein(id)
        row = int(self._row_of[i])
        return self._tensor(int(self._shard_of[i]), f"pooled.{layer}", row, row + 1)[0].numpy()

    def pooled_matrix(self, layer: int | None = None) -> np.ndarray:
        """Per-protein vectors of all proteins, float32 ``[N, d]`` in ``ids`` order."""
        layer = self._layer(layer)
        parts = [self._tensor(s, f"pooled.{layer}").numpy() for s in range(len(self._shards))]
        return np.concatenate(parts) if parts else np.zeros((0, self.d_model), np.float32)

    def iter_residues(
        self, layer: int | None = None, ids: list[str] | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(id, float32 [L, d])`` shard by shard, in store (input) order; with ``ids``,
        only those proteins (still in store order). Memory: one shard."""
        layer = self._layer(layer)
        wanted = (
            None
            if ids is None
            else np.array(sorted({self._protein(p) for p in ids}), dtype=np.int64)
        )
        for s in range(len(self._shards)):
            rows = np.flatnonzero(self._shard_of == s)
            if wanted is not None:
                rows = rows[np.isin(rows, wanted)]
                if len(rows) == 0:
                    continue
            whole = self._tensor(s, f"residues.{layer}").numpy()
            for i in rows:
                a = int(self._start[i])
                yield self.ids[i], whole[a : a + int(self.lengths[i])]

    # --- training batches ----------------------------------------------------------------------

    def batches(
        self,
        batch_size: int,
        *,
        level: str = "residue",
        layer: int | None = None,
        target_layer: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
        buffer_rows: int = 65536,
    ) -> Iterator[Any]:
        """Stream float32 training batches ``Tensor [B, d]`` from disk (``(x, y)`` pairs of the
        same rows at ``layer`` and ``target_layer`` when ``target_layer`` is given).

        level: ``"residue"`` (rows = residues) or ``"protein"`` (rows = mean-pooled proteins).
        Shuffling: shard order is permuted per epoch, and rows are shuffled inside a buffer of
        whole shards holding at least ``buffer_rows`` rows (memory: that buffer plus one shard).
        Deterministic for a given ``seed`` (epoch e uses ``(seed, e)``).
        Ranks: with at least ``world_size`` shards, rank r reads shards ``r, r+W, ...`` of the
        epoch's order; otherwise every rank reads every shard and takes rows ``r, r+W, ...``.
        Either way ranks see disjoint rows, and with ``world_size > 1`` every rank yields the
        same number of full batches per epoch (the remainder is dropped); a single rank also
        yields the last partial batch. ``epochs=None`` repeats forever (stop after the number of
        tokens you want); ``epochs=n`` makes n passes.
        """
        if level not in ("residue", "protein"):
            raise InputError(f"level must be 'residue' or 'protein', not {level!r}.")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise InputError(
                f"bad batch_size={batch_size} / rank={rank} / world_size={world_size}.",
                fix="batch_size >= 1, 0 <= rank < world_size.",
            )
        kind = "residues" if level == "residue" else "pooled"
        x_name = f"{kind}.{self._layer(layer)}"
        y_name = None if target_layer is None else f"{kind}.{self._layer(target_layer)}"
        key = "n_residues" if level == "residue" else "n_proteins"
        plan = _RankPlan(
            np.array([rec[key] for rec in self._shards], dtype=np.int64), rank, world_size
        )
        epoch = 0
        while epochs is None or epoch < epochs:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(plan.n_shards) if shuffle else np.arange(plan.n_shards)
            mine, limit = plan.shards(order, batch_size)
            buffers = self._buffers(mine, plan.rows, x_name, y_name, buffer_rows, batch_size)
            yield from _batched(
                buffers, batch_size, rng if shuffle else None, limit, last_partial=world_size == 1
            )
            epoch += 1

    def _buffers(
        self,
        shards: np.ndarray,
        rows: slice,
        x_name: str,
        y_name: str | None,
        buffer_rows: int,
        batch_size: int,
    ) -> Iterator[tuple[list, list, bool]]:
        """Read ``rows`` of tensors ``x_name`` (and ``y_name``) of ``shards`` in order, in
        groups of whole shards: ``(xs, ys, last)`` with lists of float32 tensors (``ys`` empty
        without ``y_name``); ``last`` marks the final group. A group closes once it and the rows
        :func:`_batched` carries over from the previous group (``rows % batch_size``) hold at
        least ``buffer_rows`` rows."""
        xs: list[Any] = []
        ys: list[Any] = []
        n_buf = 0
        for j, s in enumerate(shards):
            xs.append(self._tensor(int(s), x_name)[rows])
            if y_name is not None:
                ys.append(self._tensor(int(s), y_name)[rows])
            n_buf += len(xs[-1])
            last = j == len(shards) - 1
            if n_buf < buffer_rows and not last:
                continue
            yield xs, ys, last
            xs, ys, n_buf = [], [], n_buf % batch_size


class _RankPlan:
    """Which shards (or rows of every shard) one rank reads, and how many batches it may yield.

    ``rows_in``: rows per shard. With at least ``world_size`` shards, ranks split the shards and
    ``rows`` is every row; otherwise ranks share every shard and ``rows`` takes every W-th row.
    """

    def __init__(self, rows_in: np.ndarray, rank: int, world_size: int):
        self.rows_in = rows_in
        self.rank = rank
        self.world_size = world_size
        self.n_shards = len(rows_in)
        self.split_shards = self.n_shards >= world_size
        self.rows = slice(None) if self.split_shards else slice(rank, None, world_size)

    def shards(self, order: np.ndarray, batch_size: int) -> tuple[np.ndarray, int | None]:
        """This rank's shards in the epoch's ``order``, and the number of full batches every
        rank can yield (None for a single rank: no limit)."""
        w = self.world_size
        if self.split_shards:
            mine = order[self.rank :: w]
            per_rank = [int(self.rows_in[order[r::w]].sum()) for r in range(w)]
        else:
            mine = order
            per_rank = [int(sum(len(range(r, n, w)) for n in self.rows_in)) for r in range(w)]
        limit = min(per_rank) // batch_size if w > 1 else None
        return mine, limit


def _batched(
    buffers: Iterator[tuple[list, list, bool]],
    batch_size: int,
    rng: np.random.Generator | None,
    limit: int | None,
    last_partial: bool,
) -> Iterator[Any]:
    """Cut buffers of rows into batches: each buffer (plus the rows left over from the previous
    one) is shuffled with ``rng`` (None: kept in order) and yields its full batches, at most
    ``limit`` in all; the rows left after the last buffer form one more batch if
    ``last_partial``."""
    import torch

    n_yielded = 0
    carry_x: list[Any] = []
    carry_y: list[Any] = []
    for xs, ys, last in buffers:
        x = torch.cat(carry_x + xs)
        y = torch.cat(carry_y + ys) if ys else None
        if rng is not None:
            perm = torch.from_numpy(rng.permutation(len(x)))
            x = x[perm]
            y = y[perm] if y is not None else None
        n_full = len(x) // batch_size
        for b in range(n_full):
            if limit is not None and n_yielded >= limit:
                break
            part = slice(b * batch_size, (b + 1) * batch_size)
            yield (x[part], y[part]) if y is not None else x[part]
            n_yielded += 1
        rest = slice(n_full * batch_size, None)
        if last:
            if last_partial and len(x[rest]):
                yield (x[rest], y[rest]) if y is not None else x[rest]
            carry_x, carry_y = [], []
        else:
            carry_x = [x[rest]]
            carry_y = [y[rest]] if y is not None else []
