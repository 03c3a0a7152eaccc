"""What the trainer and the evaluator read activations from: :class:`ActivationSource`, met by
:class:`plmsae.embedding.store.ActivationStore` (on disk) and :class:`TensorStore` (in memory,
for tensors you already hold: tests, benchmarks, notebooks).

Rank ``r`` of ``world_size`` gets slice ``r`` of every global batch of a :class:`TensorStore`, so
a multi-process run sees exactly the global batches of a single-process run with
``batch_size * world_size``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor


class ActivationSource(Protocol):
    """Activations by layer: ``layers``, width ``d_model``, ``n_tokens`` residues, ``len()``
    proteins with ``ids``, ``meta`` (the store's meta.json: ``model`` spec, ``input`` FASTA,
    ``pooling``) and shuffled batches ``[B, d]`` (or ``(x, y)`` pairs with ``target_layer``)."""

    layers: list[int]
    d_model: int
    n_tokens: int
    ids: list[str]
    meta: dict[str, Any]

    def __len__(self) -> int: ...

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
    ) -> Iterator[Any]: ...


class TensorStore:
    """``TensorStore(x [N, d], y=None, meta=None)``; ``y`` is a transcoder target ``[N, d_out]``."""

    def __init__(
        self,
        x: Tensor,
        y: Tensor | None = None,
        meta: dict[str, Any] | None = None,
        layer: int = 0,
        target_layer: int | None = None,
    ):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = None if y is None else torch.as_tensor(y, dtype=torch.float32)
        self.meta = dict(meta or {})
        self.layers = [layer] + ([target_layer] if target_layer is not None else [])
        self.d_model = self.x.shape[1]
        self.n_tokens = self.x.shape[0]
        self.ids = [str(i) for i in range(self.n_tokens)]

    def __len__(self) -> int:
        return self.n_tokens

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
    ) -> Iterator[Tensor | tuple[Tensor, Tensor]]:
        n, gb = self.n_tokens, batch_size * world_size
        if gb > n:
            raise ValueError(f"global batch {gb} is larger than the {n} rows held")
        if target_layer is not None and self.y is None:
            raise ValueError("this TensorStore holds no transcoder target y")
        epoch = 0
        while epochs is None or epoch < epochs:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
            for start in range(0, n - gb + 1, gb):
                rows = order[start + rank * batch_size : start + (rank + 1) * batch_size]
                if target_layer is not None:
                    yield self.x[rows], self.y[rows]  # type: ignore[index]
                else:
                    yield self.x[rows]
            epoch += 1
