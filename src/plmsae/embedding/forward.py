"""Running a protein language model over proteins: long-sequence windows, batches, special
tokens dropped.

The one way plmsae computes activations, shared by ``plmsae embed`` (which writes them to a
store) and the one-protein query of ``plmsae annotate``. What differs between model families
(tokens, where residue 0 sits, the forward pass) is the model's adapter
(:mod:`plmsae.embedding.adapters`, ``lm.adapter``).

- All requested layers come from one forward pass, and blocks above the highest requested layer
  are not run at all (layer 2 of a 6-layer model costs a third of the full forward).
- Sequences are sorted by length and packed into batches of at most ``batch_tokens`` padded
  tokens (little padding), run under ``torch.inference_mode``, and put back in input order.

Long sequences: a model sees at most ``spec.max_residues`` residues (1022 for ESM-2). Longer
proteins are cut into overlapping windows of that size (overlap at least a quarter of the window,
windows evenly spaced); each window is run as its own sequence with its special tokens, and every
residue takes its vector from the window whose centre is nearest (so it has at least ~1/8 of a
window of context on each side that the protein has).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plmsae.data.fasta import Protein
    from plmsae.embedding.model import LoadedModel

#: minimum overlap of neighbouring windows, as a fraction of the window
WINDOW_OVERLAP = 0.25


def min_overlap(window: int) -> int:
    """Fewest residues two neighbouring windows of ``window`` residues share."""
    return max(1, int(math.ceil(window * WINDOW_OVERLAP)))


def windows(length: int, window: int) -> list[tuple[int, int, int, int]]:
    """Cover ``length`` residues with windows of ``window`` residues.

    Returns ``(start, end, keep_start, keep_end)`` per window: the window is residues
    ``[start, end)`` and contributes residues ``[keep_start, keep_end)`` (nearest centre).
    Proteins that fit give one window ``(0, L, 0, L)``.
    """
    if length <= window:
        return [(0, length, 0, length)]
    step = window - min_overlap(window)
    n = math.ceil((length - window) / step) + 1
    starts = [round(k * (length - window) / (n - 1)) for k in range(n)]
    cuts = [0] + [(starts[k] + window + starts[k + 1]) // 2 for k in range(n - 1)] + [length]
    return [(s, s + window, cuts[k], cuts[k + 1]) for k, s in enumerate(starts)]


def forward_layers(lm: LoadedModel, batch_ids: list[list[int]], layers: list[int]) -> dict:
    """One padded forward pass of token-ID lists; returns ``{layer: float32 tensor [B, T, d]}``
    (hidden_states numbering). Blocks above ``max(layers)`` are not run."""
    return lm.adapter.forward_layers(batch_ids, layers)


def compute_activations(
    lm: LoadedModel,
    proteins: Sequence[Protein],
    layers: list[int],
    batch_tokens: int,
    dtype: str,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Per-residue and pooled activations of ``proteins`` in memory, in input order: the tensors
    of one store shard (``offsets`` int64 [n+1], ``residues.{layer}`` [sum L, d] in ``dtype``,
    ``pooled.{layer}`` float32 [n, d], the mean computed before the cast). Shared by
    ``plmsae embed`` and the one-protein query so both compute activations the same way.
    ``on_batch(n)`` is called after each forward batch with the number of residues it stored."""
    import torch

    lengths = [len(p.sequence) for p in proteins]
    offsets = torch.zeros(len(proteins) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    # float32 output buffers written in place (no per-protein copies or concatenations)
    residues = {
        layer: torch.empty((int(offsets[-1]), lm.spec.d_model), dtype=torch.float32)
        for layer in layers
    }
    segments = _segments(proteins, lm.spec.max_residues)
    first = lm.adapter.n_prefix  # token of residue 0 (after BOS / [CLS], if any)
    for chunk in _length_sorted_batches(segments, batch_tokens):
        batch = [
            lm.adapter.token_ids(proteins[segments[k][0]].sequence[segments[k][1] : segments[k][2]])
            for k in chunk
        ]
        hidden = {layer: h.cpu() for layer, h in forward_layers(lm, batch, layers).items()}
        for b, k in enumerate(chunk):
            i, s, _, ks, ke = segments[k]
            row = int(offsets[i])
            for layer in layers:  # skip the leading special tokens; keep this window's residues
                residues[layer][row + ks : row + ke] = hidden[layer][
                    b, first + ks - s : first + ke - s
                ]
        if on_batch is not None:
            on_batch(sum(segments[k][4] - segments[k][3] for k in chunk))
    return _shard_tensors(residues, offsets, layers, dtype)


def _segments(proteins: Sequence[Protein], window: int) -> list[tuple[int, int, int, int, int]]:
    """``(protein index, window start, window end, keep start, keep end)`` of every window."""
    return [(i, *w) for i, p in enumerate(proteins) for w in windows(len(p.sequence), window)]


def _length_sorted_batches(
    segments: list[tuple[int, int, int, int, int]], batch_tokens: int
) -> Iterator[list[int]]:
    """Indices of ``segments``, longest first, in batches of at most ``batch_tokens`` padded
    tokens (BOS/EOS included; at least one segment per batch)."""
    order = sorted(range(len(segments)), key=lambda k: (-(segments[k][2] - segments[k][1]), k))
    start = 0
    while start < len(order):
        width = segments[order[start]][2] - segments[order[start]][1] + 2  # longest first
        n = max(1, batch_tokens // width)
        chunk = order[start : start + n]
        start += len(chunk)
        yield chunk


def _shard_tensors(residues: dict, offsets: Any, layers: list[int], dtype: str) -> dict:
    """The named tensors of a shard: offsets, float32 means per protein, residues in ``dtype``."""
    import torch

    store_dtype = getattr(torch, dtype)
    n = len(offsets) - 1
    tensors = {"offsets": offsets}
    for layer in layers:
        x = residues.pop(layer)
        tensors[f"pooled.{layer}"] = torch.stack(
            [x[offsets[i] : offsets[i + 1]].mean(0) for i in range(n)]
        )
        tensors[f"residues.{layer}"] = x if store_dtype == torch.float32 else x.to(store_dtype)
    return tensors
