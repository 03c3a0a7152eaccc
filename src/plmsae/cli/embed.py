"""What ``plmsae embed`` prints when it is done."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from plmsae.embedding.embedder import EmbedResult


def show_embed(result: EmbedResult, console: Console) -> None:
    """The store written, its size, the model, and how many shards were computed or reused."""
    console.print(f"[bold]wrote[/] {escape(str(result.store))}")
    console.print(
        f"  {result.n_proteins:,} proteins, {result.n_residues:,} residues, "
        f"layers {', '.join(map(str, result.layers))}"
    )
    console.print(f"  model: {escape(result.model)}")
    n = f"{result.n_shards} shard{'' if result.n_shards == 1 else 's'}"
    if result.tokens_per_s is None:
        shards = f"{n}, all reused from an earlier run"
    else:
        shards = (
            f"{n}: {result.shards_computed} computed "
            f"({result.tokens_per_s:,.0f} tokens/s), {result.shards_reused} reused"
        )
    console.print(f"  {shards}")
