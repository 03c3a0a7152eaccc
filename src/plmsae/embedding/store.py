"""Reading an activation store written by ``plmsae embed``.

Layout (docs/design.md, "Stage 2"): ``meta.json``, ``proteins.parquet`` (``id``, ``length``,
``shard``, ``row``: protein order = input order = shard order), and ``shards/NNNNN.safetensors``
holding per layer ``residues.{layer}`` ``[residues in shard, d]`` (storage dtype),
``pooled.{layer}`` ``[proteins in shard, d]`` (float32) and ``offsets`` ``[proteins + 1]``
(row offsets of each protein's residues). Everything comes back as float32.

Random access opens shards lazily with ``safetensors.safe_open`` (memory-mapped) and reads only
the requested rows; open handles are cached (LRU). Opening a store checks that it is complete and
that every shard has its recorded size; :meth:`ActivationStore.verify` checks every shard's
SHA-256 (``plmsae embed`` does this when it resumes).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from plmsae._util import InputError, read_json, sha256_file

_REPAIR = "re-run `plmsae embed` with the same arguments to repair it."


class ActivationStore:
    """An activation store on disk (see the module docstring).

    Attributes: ``ids`` (list[str], input order), ``layers`` (list[int]), ``d_model`` (int),
    ``meta`` (dict, the ``meta.json``), ``lengths`` (int64 ndarray [N], residues per protein),
    ``n_tokens`` (total residues). ``len(store)`` is the number of proteins.
    """

    def __init__(self, path: str | os.PathLike, *, max_open_shards: int = 64):
        import pyarrow.parquet as pq

        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise InputError(
                "not an activation store (no meta.json).",
                path=self.path,
                fix="pass a directory written by `plmsae embed`.",
            )
        self.meta = read_json(meta_path)
        if not self.meta.get("complete"):
            raise InputError(
                "the activation store is incomplete (plmsae embed was interrupted or "
                "is still running).",
                path=self.path,
                fix="re-run `plmsae embed` with "
                "the same arguments to finish it (finished shards are kept).",
            )
        self.layers: list[int] = [int(x) for x in self.meta["layers"]]
        self.d_model: int = int(self.meta["d_model"])
        self._shards: list[dict] = self.meta["shards"]
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
        proteins_path = self.path / "proteins.parquet"
        try:
            table = pq.read_table(proteins_path)
        except Exception as e:  # pyarrow raises several types for damaged files
            raise InputError(
                f"cannot read proteins.parquet ({e}).", path=self.path, fix=_REPAIR
            ) from e
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
        self._handles: OrderedDict[int, object] = OrderedDict()
        self._max_open = max_open_shards
        self._verified: set[int] = set()  # shards whose SHA-256 was checked by this object

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
                fix="embed that layer with `plmsae embed --layer`.",
            )
        return int(layer)

    def _protein(self, pid: str) -> int:
        try:
            return self._index[pid]
        except KeyError:
            raise KeyError(f"protein {pid!r} is not in the store {self.path}") from None

    def _handle(self, s: int):
        from safetensors import safe_open

        h = self._handles.get(s)
        if h is not None:
            self._handles.move_to_end(s)
            return h
        file = self.path / self._shards[s]["file"]
        try:
            h = safe_open(str(file), framework="pt")
        except Exception as e:  # safetensors raises its own error type for damaged headers
            raise InputError(
                f"shard {self._shards[s]['file']} cannot be read ({e}).",
                path=self.path,
                fix=_REPAIR,
            ) from e
        self._handles[s] = h
        if len(self._handles) > self._max_open:
            self._handles.popitem(last=False)
        return h

    def _tensor(self, s: int, name: str, start: int | None = None, stop: int | None = None):
        """Rows ``[start, stop)`` (all when None) of tensor ``name`` of shard ``s``, float32."""
        if start is None:
            # Whole-shard reads feed training and analysis: check the shard's bytes once per
            # process (as cheap as the read itself), so a damaged shard is named, not trained on.
            self._verify_shard(s)
        h = self._handle(s)
        try:
            if start is None:
                t = h.get_tensor(name)
            else:
                t = h.get_slice(name)[start:stop]
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
    ):
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
        import torch

        if level not in ("residue", "protein"):
            raise InputError(f"level must be 'residue' or 'protein', not {level!r}.")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise InputError(
                f"bad batch_size={batch_size} / rank={rank} / world_size={world_size}.",
                fix="batch_size >= 1, 0 <= rank < world_size.",
            )
        layer = self._layer(layer)
        tlayer = None if target_layer is None else self._layer(target_layer)
        kind = "residues" if level == "residue" else "pooled"
        key = "n_residues" if level == "residue" else "n_proteins"
        rows_in = np.array([rec[key] for rec in self._shards], dtype=np.int64)
        n_shards = len(self._shards)
        split_shards = n_shards >= world_size
        epoch = 0
        while epochs is None or epoch < epochs:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(n_shards) if shuffle else np.arange(n_shards)
            if split_shards:
                mine = order[rank::world_size]
                per_rank = [int(rows_in[order[r::world_size]].sum()) for r in range(world_size)]
            else:
                mine = order
                per_rank = [
                    int(sum(len(range(r, n, world_size)) for n in rows_in))
                    for r in range(world_size)
                ]
            limit = min(per_rank) // batch_size if world_size > 1 else None
            n_yielded = 0
            buf_x: list = []
            buf_y: list = []
            n_buf = 0
            for j, s in enumerate(mine):
                sl = slice(None) if split_shards else slice(rank, None, world_size)
                buf_x.append(self._tensor(int(s), f"{kind}.{layer}")[sl])
                if tlayer is not None:
                    buf_y.append(self._tensor(int(s), f"{kind}.{tlayer}")[sl])
                n_buf += len(buf_x[-1])
                if n_buf < buffer_rows and j < len(mine) - 1:
                    continue
                x = torch.cat(buf_x)
                y = torch.cat(buf_y) if tlayer is not None else None
                if shuffle:
                    perm = torch.from_numpy(rng.permutation(len(x)))
                    x = x[perm]
                    y = y[perm] if y is not None else None
                last = j == len(mine) - 1
                n_full = len(x) // batch_size
                for b in range(n_full):
                    if limit is not None and n_yielded >= limit:
                        break
                    part = slice(b * batch_size, (b + 1) * batch_size)
                    yield (x[part], y[part]) if y is not None else x[part]
                    n_yielded += 1
                rest = slice(n_full * batch_size, None)
                if last:
                    if world_size == 1 and len(x[rest]):
                        yield (x[rest], y[rest]) if y is not None else x[rest]
                    buf_x, buf_y, n_buf = [], [], 0
                else:
                    buf_x = [x[rest]]
                    buf_y = [y[rest]] if y is not None else []
                    n_buf = len(buf_x[0])
            epoch += 1
