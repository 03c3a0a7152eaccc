"""What ``plmsae train``, ``evaluate``, ``export`` and ``import`` print (the stages themselves
print nothing)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from plmsae.sae.evaluate import EvaluateResult
from plmsae.sae.export import ExportResult
from plmsae.sae.imports import ImportResult
from plmsae.sae.train import TrainResult


def show_train(result: TrainResult, console: Console) -> None:
    """The SAE trained (or reused), where it is, and its final training metrics."""
    cfg, m = result.sae.cfg, result.metrics
    what = f"[bold]{cfg.arch}[/] {'transcoder' if cfg.is_transcoder else 'SAE'}"
    k = f", k {cfg.k}" if cfg.k else ""
    layer = f", layer {cfg.layer}" if cfg.layer is not None else ""
    if cfg.target_layer is not None:
        layer += f" -> {cfg.target_layer}"
    console.print(f"{what}: {cfg.d_sae:,} latents{k}, {cfg.level} level{layer}")
    if result.reused:
        console.print(f"  already trained with these settings: {escape(str(result.out))}")
    elif result.resumed_from_step is not None:
        console.print(
            f"  resumed from the checkpoint at step {result.resumed_from_step:,} "
            f"of {m.get('steps', 0):,}"
        )
    if m.get("fve") is not None:
        console.print(
            f"  FVE {m['fve']:.4f}   L0 {m['l0']:.1f}   dead {m['dead_fraction']:.1%}"
            "   (moving averages over the last batches)"
        )
    if m.get("steps") is not None:
        console.print(
            f"  {m['steps']:,} steps, {m['tokens']:,} tokens, {m['seconds']:,.0f} s "
            f"({m['tokens_per_s']:,.0f} tokens/s)"
        )
    if not result.reused:
        console.print(f"  saved to {escape(str(result.out))}")


def show_evaluate(result: EvaluateResult, console: Console) -> None:
    """Reconstruction metrics, the masked-LM splice and the firing-density histogram."""
    r, c = result.reconstruction, console
    c.print(
        f"[bold]{result.arch}[/] SAE, {result.level} level, layer {result.layer}, "
        f"{result.d_sae} latents; {r.n_tokens:,} tokens"
    )
    c.print(
        f"  FVE {r.fve:.4f}   MSE {r.mse:.4g}   L0 {r.l0:.1f}   "
        f"dead {r.dead_fraction:.1%} ({escape(r.dead_definition)})"
    )
    s = result.splice
    if s is not None:
        c.print(
            f"  masked-LM CE clean {s.ce_clean:.4f}, with SAE {s.ce_sae:.4f}, "
            f"zero-ablated {s.ce_zero:.4f}: loss recovered "
            f"{s.loss_recovered:.4f}, KL {s.kl:.4g} "
            f"({s.n_masked_tokens} masked residues of {s.n_proteins} proteins)"
        )
    elif result.splice_note is not None:
        c.print(f"  masked-LM splice: {escape(result.splice_note)}")
    h = r.density_histogram
    c.print(
        "  latent density histogram (log10): "
        + ", ".join(
            f"{lo:g}..{lo + 0.5:g}: {n}"
            for lo, n in zip(h["log10_density_edges"], h["counts"])
            if n
        )
        + f"; never fired: {h['never_fired']}"
    )


def show_export(result: ExportResult, console: Console) -> None:
    """Where the exported SAE is and how to load it."""
    out = escape(str(result.out))
    console.print(f"wrote the SAE in {result.format} format to {out}")
    if result.format == "saelens":
        console.print(f"  load it with sae_lens.SAE.load_from_disk({out!r})")


def show_import(result: ImportResult, console: Console) -> None:
    """What was imported, what it reads, how conventions were carried over, the quick fidelity
    check and where the SAE is."""
    r, c = result, console
    k = f", k {r.k}" if r.k else ""
    c.print(
        f"imported {escape(r.format)} [bold]{r.arch}[/] SAE: {r.d_sae:,} latents{k}, "
        f"{r.normalisation} normalisation"
    )
    c.print(
        f"  reads layer {r.layer} of {escape(r.model)} ({r.family}, {r.d_in}-d), "
        f"hook point {escape(r.hook_point)}"
    )
    for note in r.notes:
        c.print(f"  - {escape(note)}")
    if r.check is not None:
        chk = r.check
        c.print(
            f"  fidelity on {escape(chk['store'])}: FVE {chk['fve']:.4f}, L0 {chk['l0']:.1f}, "
            f"dead {chk['dead_fraction']:.1%} ({chk['n_tokens']:,} residues)"
        )
    for warning in r.warnings:
        c.print(f"  [yellow]warning:[/] {escape(warning)}")
    where = escape(str(r.out))
    c.print(f"  already imported: {where}" if r.reused else f"  saved to {where}")
