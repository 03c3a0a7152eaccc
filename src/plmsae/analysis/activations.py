"""Per-protein feature activations, streamed over an activation store, kept sparse.

Residue-level encoders (SAE features, neurons, random directions) are applied to every residue
and pooled per protein (``max`` by default, ``mean`` selectable); protein-level SAEs encode the
store's pooled (mean) vector of each protein. Output: CSR float32 [n_proteins, n_features] in the
order of the ``ids`` asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import scipy.sparse as sp
import torch

Encoder = Callable[[torch.Tensor], torch.Tensor]


class _SparseRows:
    """Accumulates dense row blocks into CSR pieces (only the non-zeros are kept)."""

    def __init__(self, n_cols: int):
        self.n_cols = n_cols
        self.parts: list[sp.csr_matrix] = []

    def add(self, block: torch.Tensor) -> None:
        self.parts.append(sp.csr_matrix(block.numpy().astype(np.float32, copy=False)))

    def matrix(self) -> sp.csr_matrix:
        """The rows added so far as one CSR matrix; the pieces are freed as they are copied in
        (``sp.vstack`` would hold every piece and the result at once: twice the matrix)."""
        n_rows = sum(p.shape[0] for p in self.parts)
        nnz = sum(p.nnz for p in self.parts)
        data = np.empty(nnz, dtype=np.float32)
        indices = np.empty(nnz, dtype=np.int64 if nnz > np.iinfo(np.int32).max else np.int32)
        indptr = np.zeros(n_rows + 1, dtype=indices.dtype)
        row = at = 0
        self.parts.reverse()
        while self.parts:
            p = self.parts.pop()
            data[at : at + p.nnz] = p.data
            indices[at : at + p.nnz] = p.indices
            rows = slice(row + 1, row + 1 + p.shape[0])
            indptr[rows] = p.indptr[1:]
            indptr[rows] += at
            row, at = row + p.shape[0], at + p.nnz
        return sp.csr_matrix((data, indices, indptr), shape=(n_rows, self.n_cols))


def triples(codes, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, column, value) of the codes that can be non-zero. ``codes``: dense ``[T, F]`` or the
    ``(values [T, k], indices [T, k])`` pair of a TopK SAE's ``encode_sparse`` (its k entries per
    row are all returned; a ReLU'd 0 among them is harmless to max, sum and scatter)."""
    if isinstance(codes, tuple):
        vals, idx = codes
        rows = torch.arange(vals.shape[0]).repeat_interleave(vals.shape[1])
        return rows, idx.reshape(-1), vals.reshape(-1).float()
    rows, cols = codes.nonzero(as_tuple=True)
    return rows, cols, codes[rows, cols].float()


def dense_codes(codes, width: int) -> torch.Tensor:
    """Dense ``[T, F]`` float32 codes from either form accepted by :func:`triples`."""
    if not isinstance(codes, tuple):
        return codes.float()
    rows, cols, vals = triples(codes, width)
    out = torch.zeros(codes[0].shape[0], width)
    out[rows, cols] = vals
    return out


def _pool(codes, width: int, lengths: torch.Tensor, pool: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-protein pooled codes [B, F], per-feature max over the residues [F]) from the codes of
    the concatenated residues of B proteins. TopK pairs: only the k codes per residue are
    touched (scatter); dense codes (neurons, random directions, ReLU SAEs): segment reduction."""
    if not isinstance(codes, tuple):
        z = codes.float()
        return torch.segment_reduce(z, pool, lengths=lengths, axis=0), z.amax(dim=0)
    rows, cols, vals = triples(codes, width)
    protein = torch.repeat_interleave(torch.arange(len(lengths)), lengths)[rows]
    key = protein * width + cols
    n = len(lengths) * width
    if pool == "max":
        pooled = torch.zeros(n).scatter_reduce_(0, key, vals, "amax", include_self=True)
    else:
        pooled = torch.zeros(n).index_add_(0, key, vals)
    pooled = pooled.view(len(lengths), width)
    if pool == "mean":
        pooled = pooled / lengths[:, None].float()
    peak = torch.zeros(width).scatter_reduce_(0, cols, vals, "amax", include_self=True)
    return pooled, peak


def _residue_batches(
    store, ids: list[str], layer, max_tokens: int
) -> Iterable[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """(ids, residues [T, d], lengths [B]) batches of whole proteins, <= max_tokens residues
    each (a longer protein forms its own batch), in store order."""
    batch_ids: list[str] = []
    arrays: list[np.ndarray] = []
    total = 0
    for pid, x in store.iter_residues(layer=layer, ids=ids):
        if arrays and total + len(x) > max_tokens:
            yield (
                batch_ids,
                torch.from_numpy(np.concatenate(arrays)),
                torch.tensor([len(a) for a in arrays]),
            )
            batch_ids, arrays, total = [], [], 0
        batch_ids.append(pid)
        arrays.append(np.asarray(x, dtype=np.float32))
        total += len(x)
    if arrays:
        yield (
            batch_ids,
            torch.from_numpy(np.concatenate(arrays)),
            torch.tensor([len(a) for a in arrays]),
        )


@torch.no_grad()
def protein_activations(
    store,
    encoders: dict[str, tuple[Encoder, int]],
    ids: list[str],
    *,
    level: str = "residue",
    pool: str = "max",
    layer: int | None = None,
    max_tokens: int = 8192,
    progress_cb=None,
    profile=None,
) -> tuple[dict[str, sp.csr_matrix], dict[str, np.ndarray]]:
    """Per-protein activations of every encoder in one pass over the store.

    encoders: name -> (encode function, F); the function maps [T, d] to non-negative codes,
    dense [T, F] or a TopK ``(values, indices)`` pair (see :func:`triples`). ``level="residue"``:
    encode residues, pool per protein with ``pool``; ``level="protein"``: encode the store's
    pooled vectors. Rows follow ``ids``. Returns (name -> CSR float32 [len(ids), F],
    name -> float64 [F] the max of each feature over every encoded input, i.e. over residues
    for residue-level encoders; the residue-level concept scores use it as their scale).
    ``profile`` (residue level only): an object with ``begin_batch(ids, lengths)`` and
    ``add(name, codes, width)``, shown every batch's codes of every encoder in the same pass
    (:class:`plmsae.analysis.specificity.ResidueProfile`)."""
    if pool not in ("max", "mean"):
        raise ValueError(f"pool must be 'max' or 'mean', not {pool!r}")
    acc = {name: _SparseRows(width) for name, (_, width) in encoders.items()}
    peak = {name: torch.zeros(width) for name, (_, width) in encoders.items()}
    row_ids: list[str] = []
    if level == "protein":
        index = {pid: i for i, pid in enumerate(store.ids)}
        pooled = store.pooled_matrix(layer)
        rows = np.array([index[p] for p in ids], dtype=np.int64)
        for a in range(0, len(rows), 1024):
            x = torch.from_numpy(np.ascontiguousarray(pooled[rows[a : a + 1024]]))
            for name, (enc, width) in encoders.items():
                z = dense_codes(enc(x), width)
                peak[name] = torch.maximum(peak[name], z.amax(dim=0))
                acc[name].add(z)
            if progress_cb is not None:
                progress_cb(min(a + 1024, len(rows)))
        row_ids = list(ids)
    else:
        done = 0
        for batch_ids, x, lengths in _residue_batches(store, ids, layer, max_tokens):
            if profile is not None:
                profile.begin_batch(batch_ids, lengths)
            for name, (enc, width) in encoders.items():
                codes = enc(x)
                if profile is not None:
                    profile.add(name, codes, width)
                pooled, batch_peak = _pool(codes, width, lengths, pool)
                peak[name] = torch.maximum(peak[name], batch_peak)
                acc[name].add(pooled)
            row_ids.extend(batch_ids)
            done += len(batch_ids)
            if progress_cb is not None:
                progress_cb(done)
    out = {name: a.matrix() for name, a in acc.items()}
    if row_ids != list(ids):  # the store streams in its own order: put rows in ``ids`` order
        where = {pid: i for i, pid in enumerate(row_ids)}
        perm = np.array([where[p] for p in ids], dtype=np.int64)
        for name in out:  # one source at a time: each old matrix goes as its copy is made
            out[name] = out[name][perm]
    return out, {name: p.double().numpy() for name, p in peak.items()}


@torch.no_grad()
def calibration_sample(
    store, ids: list[str], *, level: str, layer: int | None, max_rows: int = 16384, seed: int = 0
) -> torch.Tensor:
    """Up to ``max_rows`` inputs of the SAE's kind (residues or pooled proteins) from proteins
    spread over the store (seeded), for calibrating the random baseline."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    if level == "protein":
        index = {pid: i for i, pid in enumerate(store.ids)}
        pooled = store.pooled_matrix(layer)
        rows = np.array([index[ids[i]] for i in order[:max_rows]], dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(pooled[rows]))
    chosen, total = [], 0
    lengths = dict(zip(store.ids, store.lengths.tolist()))
    for i in order:
        chosen.append(ids[i])
        total += lengths[ids[i]]
        if total >= max_rows:
            break
    # copies: a view would keep its whole shard alive, and the chosen proteins span every shard
    parts = [np.array(x, dtype=np.float32) for _, x in store.iter_residues(layer=layer, ids=chosen)]
    x = np.concatenate(parts) if parts else np.zeros((0, store.d_model), np.float32)
    if len(x) > max_rows:
        x = x[rng.choice(len(x), max_rows, replace=False)]
    return torch.from_numpy(x)


def top_rows(acts: sp.spmatrix, ids: list[str], k: int = 10) -> list[list[str]]:
    """The ``k`` proteins with the highest activation of each feature (descending)."""
    x = sp.csc_matrix(acts)
    out = []
    for f in range(x.shape[1]):
        a, b = x.indptr[f], x.indptr[f + 1]
        vals, rows = x.data[a:b], x.indices[a:b]
        top = rows[np.argsort(-vals, kind="stable")[:k]]
        out.append([ids[r] for r in top])
    return out
