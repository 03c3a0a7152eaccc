"""The feature atlas: a static HTML site written from an association directory.

``report(ASSOC_DIR, out=SITE)`` writes::

    SITE/index.html             run, SAE metrics, SAE vs neurons vs random, searchable feature table
    SITE/features/00042.html    one page per feature: description, scores, enrichments, histogram,
                                top proteins with per-residue tracks, inactive examples
    SITE/assets/                style.css, table.js, atlas-data.js (the table data as a JS variable,
                                because fetch() of a local JSON file is refused under file://)
    SITE/site.json              what was written from what

Everything is plain files: no CDN, no web font, no request leaves the page, and every value from
the data is escaped (jinja2 autoescape; JSON for scripts with ``<``, ``>`` and ``&`` escaped).
The site is built in a temporary directory next to ``out`` and renamed into place at the end,
so an interrupted run leaves the previous site untouched.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from plmsae._util import InputError, PlmsaeError, progress, read_json, write_json
from plmsae.analysis.assocdir import (
    CATEGORY_NAMES,
    PRECISION_MIN,
    Q_MAX,
    RESIDUE_F1_MIN,
    SOURCE_NAMES,
)

if TYPE_CHECKING:  # heavy imports stay lazy: `plmsae annotate` must start fast
    import pandas as pd

HERE = Path(__file__).parent
SITE_MARKER = "site.json"

SCORE_NAMES = {"detection": "detection", "simulation": "simulation"}

_GO = re.compile(r"^GO:\d{7}$")
_PFAM = re.compile(r"^PF\d{5}$")
_INTERPRO = re.compile(r"^IPR\d{6}$")
_UNIPROT_ACC = re.compile(
    r"^(?:[OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9](?:[A-Z][A-Z0-9]{2}[0-9]){1,2})(?:-\d+)?$"
)


# --------------------------------------------------------------------------------------------
# Reading ASSOC_DIR
# --------------------------------------------------------------------------------------------


@dataclass
class Atlas:
    """What an association directory holds, as loaded for the report (SAE features only).

    proteins: rows in activation-matrix order (``id, split, cluster, length, name``).
    features: one row per SAE feature (``feature, density, max_activation, top_proteins``).
    associations: best row per (feature, concept), sorted by feature then q-value, with the
    concept's ``name`` and readable ``category_name`` joined in.
    activations: scipy CSC [n_proteins, n_features] (None when not loaded).
    """

    path: Path
    run: dict
    summary: dict
    proteins: "pd.DataFrame"
    concepts: "pd.DataFrame"
    features: "pd.DataFrame"
    associations: "pd.DataFrame"
    residue_associations: "pd.DataFrame | None"
    explanations: dict[int, dict]
    scores: dict[int, dict[str, dict]]
    activations: Any = None
    annotations: Any = None
    q_max: float = 0.05
    min_precision: float = 0.5
    residue_f1_min: float = 0.5
    concept_index: dict[str, int] = field(default_factory=dict)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(
            f"{what} is missing.",
            path=path,
            fix="point at a finished association directory (written by `plmsae associate`).",
        )
    return path


def _read_parquet(path: Path, columns: Iterable[str], what: str, **kw) -> "pd.DataFrame":
    import pandas as pd

    try:
        df = pd.read_parquet(_need(path, what), **kw)
    except InputError:
        raise
    except Exception as e:  # pyarrow raises several types for damaged files
        raise InputError(
            f"cannot read {what} ({e}).",
            path=path,
            fix="the file is damaged; re-run the stage that wrote it.",
        ) from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"{what} lacks the column(s) {', '.join(missing)} (has {', '.join(df.columns)}).",
            path=path,
            fix="re-run the stage that wrote it with this version of plmsae.",
        )
    return df


def _load_npz(path: Path, what: str):
    import scipy.sparse as sp

    try:
        return sp.load_npz(_need(path, what))
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"cannot read {what} ({e}).",
            path=path,
            fix="the file is damaged; re-run `plmsae associate`.",
        ) from e


def load_atlas(
    assoc_dir: str | os.PathLike, activations: bool = True, significant_only: bool = False
) -> Atlas:
    """Read an association directory (format in docs/design.md, stage 4 and 5).

    ``activations=False`` skips the activation and annotation matrices and
    ``significant_only=True`` reads only the SAE rows of associations.parquet below q_max
    (what annotate needs, fast even for a large atlas).
    explanations.parquet and scores.parquet are optional (the explain stage may not have run).
    """
    d = Path(assoc_dir)
    if not d.is_dir():
        raise InputError(
            "is not a directory.",
            path=d,
            fix="pass the association directory written by `plmsae associate`.",
        )
    run = read_json(_need(d / "run.json", "run.json"))
    summary = read_json(d / "summary.json") if (d / "summary.json").exists() else {}
    proteins = _read_parquet(d / "proteins.parquet", ["id"], "proteins.parquet")
    for col, default in (("split", ""), ("cluster", -1), ("length", 0), ("name", "")):
        if col not in proteins.columns:
            proteins[col] = default
    proteins["id"] = proteins["id"].astype(str)
    proteins["name"] = proteins["name"].fillna("").astype(str)
    concepts = _read_parquet(d / "concepts.parquet", ["concept", "category"], "concepts.parquet")
    if "name" not in concepts.columns:
        concepts["name"] = concepts["concept"]
    concepts["name"] = concepts["name"].fillna("").astype(str)

    features = _read_parquet(d / "features.parquet", ["source", "feature"], "features.parquet")
    features = features[features["source"] == "sae"].sort_values("feature").reset_index(drop=True)
    for col in ("density", "max_activation"):
        if col not in features.columns:
            features[col] = np.nan
    if "top_proteins" not in features.columns:
        features["top_proteins"] = [[] for _ in range(len(features))]

    settings = summary.get("settings", {}) if isinstance(summary, dict) else {}
    q_max = float(_first(settings, ("q_max",), Q_MAX))
    min_precision = float(_first(settings, ("min_precision", "precision_min"), PRECISION_MIN))
    residue_f1_min = float(_first(settings, ("residue_f1_min",), RESIDUE_F1_MIN))

    filters = [("source", "==", "sae"), ("q_value", "<", q_max)] if significant_only else None
    assoc = _read_parquet(
        d / "associations.parquet",
        ["source", "feature", "concept", "q_value"],
        "associations.parquet",
        filters=filters,
    )
    assoc = _best_rows(assoc[assoc["source"] == "sae"], concepts)
    res = None
    if (d / "residue_associations.parquet").exists():
        res = _read_parquet(
            d / "residue_associations.parquet",
            ["source", "feature", "concept"],
            "residue_associations.parquet",
        )
        res = res[res["source"] == "sae"]
        sort_col = "f1" if "f1" in res.columns else "concept"
        res = res.sort_values(["feature", sort_col], ascending=[True, sort_col == "concept"])
        res = res.drop_duplicates(["feature", "concept"]).merge(
            concepts[["concept", "name"]], on="concept", how="left"
        )
        res["name"] = res["name"].fillna(res["concept"])

    explanations: dict[int, dict] = {}
    if (d / "explanations.parquet").exists():
        ex = _read_parquet(
            d / "explanations.parquet",
            ["source", "feature", "label", "description"],
            "explanations.parquet",
        )
        for r in ex[ex["source"] == "sae"].to_dict("records"):
            explanations[int(r["feature"])] = r
    scores: dict[int, dict[str, dict]] = {}
    if (d / "scores.parquet").exists():
        sc = _read_parquet(
            d / "scores.parquet", ["source", "feature", "method", "score"], "scores.parquet"
        )
        for r in sc[sc["source"] == "sae"].to_dict("records"):
            scores.setdefault(int(r["feature"]), {})[str(r["method"])] = r

    atlas = Atlas(
        path=d,
        run=run,
        summary=summary,
        proteins=proteins,
        concepts=concepts,
        features=features,
        associations=assoc,
        residue_associations=res,
        explanations=explanations,
        scores=scores,
        q_max=q_max,
        min_precision=min_precision,
        residue_f1_min=residue_f1_min,
    )
    if activations:
        acts = _load_npz(d / "activations" / "sae.npz", "activations/sae.npz")
        if acts.shape[0] != len(proteins):
            raise InputError(
                f"activations/sae.npz has {acts.shape[0]} rows but proteins.parquet has "
                f"{len(proteins)} proteins.",
                path=d / "activations" / "sae.npz",
                fix="re-run `plmsae associate` into a fresh directory.",
            )
        atlas.activations = acts.tocsc()
        if (d / "annotations.npz").exists():
            atlas.annotations = _load_npz(d / "annotations.npz", "annotations.npz").tocsc()
            atlas.concept_index = {c: i for i, c in enumerate(concepts["concept"])}
    return atlas


def _first(d: dict, keys: Iterable[str], default):
    for k in keys:
        if isinstance(d.get(k), (int, float)):
            return d[k]
    return default


def _best_rows(assoc: "pd.DataFrame", concepts: "pd.DataFrame") -> "pd.DataFrame":
    """One row per (feature, concept): the threshold with the smallest q (then the best F1)."""
    assoc = assoc.copy()
    for col in (
        "precision",
        "recall",
        "f1",
        "n_both",
        "n_active",
        "n_concept",
        "threshold",
        "auroc",
    ):
        if col not in assoc.columns:
            assoc[col] = np.nan
    if "category" not in assoc.columns:
        assoc = assoc.merge(concepts[["concept", "category"]], on="concept", how="left")
    assoc["_f1"] = assoc["f1"].fillna(-1.0)
    assoc = assoc.sort_values(
        ["feature", "q_value", "_f1"], ascending=[True, True, False], kind="stable"
    )
    assoc = assoc.drop_duplicates(["feature", "concept"]).drop(columns="_f1")
    assoc = assoc.merge(concepts[["concept", "name"]], on="concept", how="left")
    assoc["name"] = assoc["name"].fillna("").astype(str)
    assoc["category_name"] = (
        assoc["category"].map(CATEGORY_NAMES).fillna(assoc["category"].astype(str))
    )
    return assoc.sort_values(["feature", "q_value"], kind="stable").reset_index(drop=True)


def explanation_of(atlas: Atlas, feature: int) -> dict:
    """``{label, description, is_llm, explainer, model}`` for a feature ('' when not explained)."""
    e = atlas.explanations.get(int(feature))
    if not e:
        return {"label": "", "description": "", "is_llm": None, "explainer": "", "model": ""}
    is_llm = e.get("is_llm")
    return {
        "label": str(e.get("label") or ""),
        "description": str(e.get("description") or ""),
        "is_llm": None if is_llm is None else bool(is_llm),
        "explainer": str(e.get("explainer") or ""),
        "model": str(e.get("model") or ""),
    }


# --------------------------------------------------------------------------------------------
# Links and formatting for templates
# --------------------------------------------------------------------------------------------


def concept_url(concept: str) -> str | None:
    """A plain link to the concept's public page (QuickGO, InterPro), or None."""
    if _GO.match(concept):
        return f"https://www.ebi.ac.uk/QuickGO/term/{concept}"
    if _PFAM.match(concept):
        return f"https://www.ebi.ac.uk/interpro/entry/pfam/{concept}/"
    if _INTERPRO.match(concept):
        return f"https://www.ebi.ac.uk/interpro/entry/InterPro/{concept}/"
    return None


def protein_url(pid: str) -> str | None:
    """UniProt entry page for a UniProt accession, None for other IDs."""
    return f"https://www.uniprot.org/uniprotkb/{pid}/entry" if _UNIPROT_ACC.match(pid) else None


def environment():
    """The jinja2 environment of the atlas: autoescape always on, templates from the package."""
    import jinja2

    from plmsae.atlas.plots import fmt

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["fmt"] = fmt
    env.filters["pct"] = _pct
    env.globals.update(
        concept_url=concept_url,
        protein_url=protein_url,
        page_name=page_name,
        category_names=CATEGORY_NAMES,
        source_names=SOURCE_NAMES,
    )
    return env


def _pct(x) -> str:
    """0.123 -> '12.3%'; tiny fractions keep two significant digits (0.00012 -> '0.012%')."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    x = 100 * float(x)
    return f"{x:.2g}%" if 0 < x < 0.1 else f"{x:.1f}%"


def page_name(feature: int) -> str:
    return f"{int(feature):05d}.html"


def script_json(obj: Any) -> str:
    """JSON safe to place inside a <script> element or a .js file: <, > and & are \\u-escaped, so
    data containing ``</script>`` or ``<!--`` cannot end the script."""
    text = json.dumps(
        obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=_jsonable
    )
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _num(x) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


# --------------------------------------------------------------------------------------------
# Per-residue tracks (SAE + activation store named in run.json)
# --------------------------------------------------------------------------------------------


def _run_path(run: dict, keys: Iterable[str], base: Path) -> Path | None:
    for k in keys:
        v = run.get(k)
        if isinstance(v, dict):
            v = v.get("path")
        if isinstance(v, str) and v:
            p = Path(v)
            if not p.is_absolute() and not p.exists():
                p = base / p
            return p
    return None


def run_sae_path(run: dict, base: Path) -> Path | None:
    return _run_path(run, ("sae", "sae_path", "sae_dir"), base)


def run_store_path(run: dict, base: Path) -> Path | None:
    return _run_path(run, ("store", "store_path", "store_dir"), base)


def read_sequences(fasta: Path | None, ids: set[str]) -> dict[str, str]:
    """Sequences of ``ids`` from a FASTA file (streamed; other records are skipped)."""
    if fasta is None or not Path(fasta).exists() or not ids:
        return {}
    from plmsae.data.fasta import iter_fasta

    out = {}
    for p in iter_fasta(fasta):
        if p.id in ids:
            out[p.id] = p.sequence
            if len(out) == len(ids):
                break
    return out


def residue_tracks(
    sae_path: Path,
    store_path: Path,
    needed: dict[str, set[int]],
    layer: int | None = None,
    batch_tokens: int = 8192,
    on_protein=None,
    device: str = "cpu",
) -> dict[tuple[int, str], np.ndarray]:
    """Per-residue activations of chosen features on chosen proteins.

    needed: protein id -> feature indices wanted for it. Each protein's residue activations are
    read from the store once and encoded once (proteins are batched to ~``batch_tokens`` rows, so
    the matrix products stay large). Returns ``{(feature, protein id): float16 [L]}``.
    """
    import torch

    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.checkpoint import load_sae

    store = ActivationStore(store_path)
    sae = load_sae(
        sae_path, model=store.meta.get("model"), layer=layer, d_in=store.d_model, device=device
    )
    sae.eval()
    if layer is None:
        layer = sae.cfg.layer
    if layer is not None and layer not in store.layers:
        raise InputError(
            f"the activation store has layers {store.layers}, not the SAE's layer {layer}.",
            path=store_path,
            fix="pass --store with the store the SAE was trained on.",
        )
    ids = [i for i in store.ids if i in needed]
    out: dict[tuple[int, str], np.ndarray] = {}
    pending: list[tuple[str, np.ndarray]] = []

    def flush():
        if not pending:
            return
        x = torch.from_numpy(
            np.concatenate([a for _, a in pending]).astype(np.float32, copy=False)
        ).to(device)
        with torch.no_grad():
            z = sae.encode(x)
        z = z.float().cpu().numpy()
        row = 0
        for pid, a in pending:
            feats = sorted(needed[pid])
            block = z[row : row + len(a)][:, feats]
            for k, f in enumerate(feats):
                out[(f, pid)] = block[:, k].astype(np.float16)
            row += len(a)
            if on_protein:
                on_protein()
        pending.clear()

    n_tok = 0
    for pid, arr in store.iter_residues(layer=layer, ids=ids):
        pending.append((pid, np.asarray(arr)))
        n_tok += len(arr)
        if n_tok >= batch_tokens:
            flush()
            n_tok = 0
    flush()
    return out


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def report(
    assoc_dir: Annotated[
        Path,
        typer.Argument(
            help="Association directory written by `plmsae associate` (and `plmsae explain`)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Site directory to write (replaced if it holds an earlier plmsae report)."
        ),
    ],
    max_features: Annotated[
        int | None,
        typer.Option(
            "--max-features",
            help="Write pages for at most N features: explained ones first, then "
            "the most strongly associated (the index table still lists every "
            "feature).",
        ),
    ] = None,
    associated_only: Annotated[
        bool,
        typer.Option(
            "--associated-only", help="Write pages only for features associated with a concept."
        ),
    ] = False,
    top_proteins: Annotated[
        int, typer.Option("--top-proteins", help="Top-activating proteins shown per feature page.")
    ] = 8,
    tracks: Annotated[
        bool,
        typer.Option(
            "--tracks/--no-tracks",
            help="Draw per-residue activation tracks (encodes the top proteins "
            "with the SAE; needs the SAE and store named in run.json).",
        ),
    ] = True,
    sae: Annotated[
        Path | None,
        typer.Option(
            "--sae",
            help="SAE checkpoint for tracks, when it moved since `associate` (default: run.json).",
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Activation store for tracks, when it moved (default: run.json)."
        ),
    ] = None,
    fasta: Annotated[
        Path | None,
        typer.Option(
            "--fasta",
            help="FASTA with the sequences drawn under the tracks (default: the store's input).",
        ),
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Title of the atlas.")] = None,
    device: Annotated[
        str, typer.Option("--device", help="torch device for the track encoding (cpu, cuda).")
    ] = "cpu",
) -> Path:
    """Write the feature atlas: a static HTML site that opens from disk (no server, no network)."""
    t_start = time.perf_counter()
    out = Path(out)
    _check_out(out)
    atlas = load_atlas(assoc_dir)
    env = environment()
    n_prot = len(atlas.proteins)
    ids = atlas.proteins["id"].tolist()

    # ---- per-feature summaries (table rows) --------------------------------------------------
    # plain Python records grouped by feature, built once: per-page pandas access is far too slow
    # for 20,000 pages
    assoc_by_feature = _group_records(atlas.associations)
    sig_by_feature = {
        f: [r for r in recs if _significant(atlas, r)] for f, recs in assoc_by_feature.items()
    }
    sig_by_feature = {f: v for f, v in sig_by_feature.items() if v}
    res_by_feature = {}
    if atlas.residue_associations is not None and len(atlas.residue_associations):
        res_by_feature = _group_records(atlas.residue_associations, limit=20)
    res_hits = {
        f: [r for r in recs if _residue_hit(atlas, r)] for f, recs in res_by_feature.items()
    }

    feats = atlas.features
    nnz = np.diff(atlas.activations.indptr)
    rows: list[dict] = []
    for r in feats.itertuples(index=False):
        f = int(r.feature)
        ex = explanation_of(atlas, f)
        g = sig_by_feature.get(f, [])
        hits = res_hits.get(f, [])
        top = (
            [[a["concept"], a["name"], a["category"], _num(a["q_value"])] for a in g[:3]]
            + [[a["concept"], a["name"], "residue", None, _num(a.get("f1"))] for a in hits]
        )[:3]
        tested = assoc_by_feature.get(f)
        sc = atlas.scores.get(f, {})
        n_active = int(nnz[f]) if f < len(nnz) else 0
        rows.append(
            {
                "feature": f,
                "label": ex["label"] or (top[0][1] if top else ""),
                "description": ex["description"],
                "is_llm": ex["is_llm"],
                "concepts": top,
                "n_associated": len(g) + len(hits),
                "best_q": _num(tested[0]["q_value"]) if tested else None,
                "density": _num(r.density),
                "max_activation": _num(r.max_activation),
                "n_active": n_active,
                "detection": _num(sc.get("detection", {}).get("score")),
                "simulation": _num(sc.get("simulation", {}).get("score")),
            }
        )

    # ---- which features get a page --------------------------------------------------------------
    def rank_key(row):
        # explained features first: a description in the table should lead to its page
        return (
            not row["description"],
            row["n_associated"] == 0,
            row["best_q"] if row["best_q"] is not None else 2.0,
            -(row["density"] or 0.0),
            row["feature"],
        )

    candidates = [
        r for r in rows if r["n_active"] > 0 and (r["n_associated"] > 0 or not associated_only)
    ]
    candidates.sort(key=rank_key)
    if max_features is not None:
        candidates = candidates[: max(0, max_features)]
    paged = sorted(r["feature"] for r in candidates)
    paged_set = set(paged)
    for r in rows:
        r["page"] = r["feature"] in paged_set

    # ---- top proteins and tracks --------------------------------------------------------------
    id_index = {pid: i for i, pid in enumerate(ids)}
    prot = {c: atlas.proteins[c].tolist() for c in ("id", "name", "length", "split")}
    listed = dict(zip(feats["feature"].astype(int), feats["top_proteins"]))
    top_by_feature = {f: _top_rows(atlas, f, listed.get(f), id_index, top_proteins) for f in paged}
    track_note, seq_note, track_data, sequences = None, None, {}, {}
    sae_cfg = _sae_cfg(atlas, sae)
    level = str(atlas.run.get("level") or sae_cfg.get("level") or "residue")
    needed: dict[str, set[int]] = {}
    for f, prow in top_by_feature.items():
        for i in prow:
            needed.setdefault(ids[i], set()).add(f)
    if not tracks:
        track_note = "Per-residue tracks were not drawn (report run with --no-tracks)."
    elif level != "residue":
        track_note = (
            "This SAE was trained on pooled protein embeddings (level "
            f"'{level}'), so it has no per-residue activations to draw."
        )
    elif needed:
        sae_path = Path(sae) if sae else run_sae_path(atlas.run, atlas.path)
        store_path = Path(store) if store else run_store_path(atlas.run, atlas.path)
        missing = [
            f"{what} ({p})"
            for what, p in (("SAE", sae_path), ("activation store", store_path))
            if p is None or not Path(p).exists()
        ]
        if missing:
            track_note = (
                "Per-residue tracks are not shown: cannot find the "
                + " and the ".join(missing)
                + " named in run.json; pass --sae/--store."
            )
        else:
            try:
                with progress() as bar:
                    task = bar.add_task("residue tracks", total=len(needed), rate="")
                    track_data = residue_tracks(
                        sae_path,
                        store_path,
                        needed,
                        layer=atlas.run.get("layer"),
                        on_protein=lambda: bar.advance(task),
                        device=device,
                    )
            except PlmsaeError as e:  # the atlas is still worth writing; say why tracks are missing
                track_note = f"Per-residue tracks are not shown: {e}"
                _warn(track_note)
            fasta_path = Path(fasta) if fasta else _store_fasta(store_path)
            sequences = read_sequences(fasta_path, set(needed)) if track_data else {}
            if track_data and not sequences:
                seq_note = (
                    f"Residue letters are not drawn: the FASTA {fasta_path} recorded in the "
                    "activation store is missing (pass --fasta)."
                )
                _warn(seq_note)

    # ---- write the site into a temporary directory, then swap it in ----------------------------
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (tmp / "features").mkdir()
        (tmp / "assets").mkdir()
        for name in ("style.css", "table.js"):
            shutil.copyfile(HERE / "static" / name, tmp / "assets" / name)
        table = {"n_proteins": n_prot, "q_max": atlas.q_max, "rows": rows}
        (tmp / "assets" / "atlas-data.js").write_text(
            "// plmsae feature atlas data (generated)\nwindow.PLMSAE_ATLAS = "
            + script_json(table)
            + ";\n",
            encoding="utf-8",
        )

        ctx = _site_context(atlas, sae_cfg, title, level)
        page_tpl = env.get_template("feature.html")
        t0 = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("feature pages", total=len(paged), rate="")
            row_of = {r["feature"]: r for r in rows}
            for k, f in enumerate(paged):
                html = page_tpl.render(
                    **ctx,
                    root="../",
                    row=row_of[f],
                    **_feature_context(
                        atlas,
                        f,
                        row_of[f],
                        top_by_feature[f],
                        track_data,
                        sequences,
                        track_note or seq_note,
                        assoc_by_feature.get(f, []),
                        res_by_feature.get(f, []),
                        prot,
                    ),
                    prev_page=paged[k - 1] if k > 0 else None,
                    next_page=paged[k + 1] if k + 1 < len(paged) else None,
                )
                (tmp / "features" / page_name(f)).write_text(html, encoding="utf-8")
                if k % 50 == 0 or k + 1 == len(paged):
                    dt = time.perf_counter() - t0
                    bar.update(task, completed=k + 1, rate=f"{(k + 1) / max(dt, 1e-9):.0f} pages/s")
        page_seconds = time.perf_counter() - t0

        static_top = sorted([r for r in rows if r["n_associated"] > 0 or r["label"]], key=rank_key)[
            :100
        ]
        index_html = env.get_template("index.html").render(
            **ctx,
            root="",
            n_features=len(rows),
            n_pages=len(paged),
            static_top=static_top,
            n_associated=sum(1 for r in rows if r["n_associated"] > 0),
            comparison=_comparison(atlas),
            explain_info=_explain_info(atlas),
        )
        (tmp / "index.html").write_text(index_html, encoding="utf-8")
        site = {
            "generator": "plmsae report",
            "plmsae_version": ctx["version"],
            "assoc_dir": str(Path(assoc_dir).resolve()),
            "n_features": len(rows),
            "n_pages": len(paged),
            "tracks": bool(track_data),
            "track_note": track_note or seq_note,
            "page_seconds": round(page_seconds, 3),
            "pages_per_second": round(len(paged) / page_seconds, 1)
            if page_seconds > 0 and paged
            else None,
            "seconds": round(time.perf_counter() - t_start, 3),
        }
        write_json(tmp / SITE_MARKER, site)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def _warn(msg: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print("[yellow]warning:[/] " + escape(msg), highlight=False)


def _check_out(out: Path) -> None:
    """Refuse to replace a directory that is not an earlier plmsae site (it could be anything)."""
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / SITE_MARKER).exists())
    ):
        raise InputError(
            "exists and is not a plmsae report, so it will not be replaced.",
            path=out,
            fix="choose a new or empty directory for --out.",
        )


def _swap_in(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _store_fasta(store_path: Path) -> Path | None:
    meta_p = Path(store_path) / "meta.json"
    if not meta_p.exists():
        return None
    inp = read_json(meta_p).get("input") or {}
    p = inp.get("path") if isinstance(inp, dict) else None
    return Path(p) if p else None


def _sae_cfg(atlas: Atlas, sae: Path | None) -> dict:
    """The SAE's cfg.json (read as JSON: the index needs metrics, not the weights)."""
    p = Path(sae) if sae else run_sae_path(atlas.run, atlas.path)
    if p is not None and (p / "cfg.json").exists():
        return read_json(p / "cfg.json")
    cfg = atlas.run.get("sae")
    return cfg if isinstance(cfg, dict) else {}


def _top_rows(atlas: Atlas, f: int, listed, id_index: dict[str, int], n: int) -> list[int]:
    """Row indices of the feature's top proteins: features.parquet's list, else the largest
    activations in the matrix."""
    out: list[int] = []
    if listed is not None and len(listed) >= n:
        for p in listed:
            i = id_index.get(str(p)) if not isinstance(p, (int, np.integer)) else int(p)
            if i is not None and 0 <= i < len(id_index) and i not in out:
                out.append(i)
    if not out:
        col = atlas.activations[:, f]
        order = np.argsort(-col.data, kind="stable")
        out = [int(col.indices[k]) for k in order if col.data[k] > 0]
    return out[:n]


def _site_context(atlas: Atlas, sae_cfg: dict, title: str | None, level: str) -> dict:
    from plmsae import __version__

    spec = atlas.run.get("model") or sae_cfg.get("model") or {}
    if isinstance(spec, str):
        spec = {"id": spec}
    model_name = str(
        spec.get("description") or spec.get("id") or spec.get("path") or "unknown model"
    )
    metrics = sae_cfg.get("metrics") or atlas.summary.get("sae_metrics") or {}
    layer = atlas.run.get("layer", sae_cfg.get("layer"))
    return {
        "title": title or "plmsae feature atlas",
        "model_name": model_name,
        "model_spec": spec,
        "layer": layer,
        "level": level,
        "pooling": atlas.run.get("pooling", sae_cfg.get("pooling", "")),
        "sae_cfg": sae_cfg,
        "metrics": _metric_rows(metrics),
        "version": __version__,
        "n_proteins": len(atlas.proteins),
        "q_max": atlas.q_max,
        "min_precision": atlas.min_precision,
        "residue_f1_min": atlas.residue_f1_min,
        "generated": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
    }


METRIC_LABELS = [
    (
        "fve",
        "fraction of variance explained",
        "share of the variance of the model's activations that the "
        "SAE reconstruction keeps (1 = perfect)",
    ),
    ("l0", "L0", "average number of features active per input"),
    ("dead_fraction", "dead features", "fraction of features never active on the evaluation data"),
    (
        "loss_recovered",
        "loss recovered",
        "how much of the model's masked-LM loss is kept when its "
        "activations are replaced by the reconstruction (1 = all)",
    ),
    ("kl", "KL divergence", "divergence of the model's output with the reconstruction spliced in"),
    ("mse", "MSE", "mean squared reconstruction error"),
    ("n_tokens", "evaluation inputs", "residues (or proteins) the metrics were computed on"),
]


def _metric_rows(metrics: dict) -> list[dict]:
    """Readable rows from cfg.json ``metrics``: flat, or nested by origin (``{"train": {...},
    "evaluate": {...}}``); held-out evaluation wins over training values, which are marked."""
    if not isinstance(metrics, dict):
        return []
    nested = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    sources = [("", metrics)]
    if nested:
        evals = [v for k, v in nested.items() if k.startswith("eval")]
        sources = [("", v) for v in evals] + [
            (" (training)", v) for k, v in nested.items() if not k.startswith("eval")
        ]
    out = []
    for key, name, help_ in METRIC_LABELS:
        for origin, d in sources:
            v = d.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                out.append({"key": key, "name": name + origin, "help": help_, "value": v})
                break
    return out


def _comparison(atlas: Atlas) -> dict:
    """Rows for the SAE vs neurons vs random table and bar chart, from summary.json."""
    from plmsae.atlas.plots import summary_svg

    sources = [s for s in ("sae", "neuron", "random") if isinstance(atlas.summary.get(s), dict)]
    cats: list[str] = []
    for s in sources:
        for c in atlas.summary[s].get("by_category") or {}:
            if c not in cats:
                cats.append(c)
    order = {c: i for i, c in enumerate(CATEGORY_NAMES)}
    cats.sort(key=lambda c: order.get(c, len(order)))
    table, chart = [], []
    totals = {s: atlas.summary[s] for s in sources}
    for c in cats:
        cells, pcts = {}, {}
        for s in sources:
            n_feat = totals[s].get("n_features") or 0
            v = (totals[s].get("by_category") or {}).get(c, 0)
            v = v.get("n_features_associated", v.get("n", 0)) if isinstance(v, dict) else v
            cells[s] = (int(v or 0), 100.0 * (v or 0) / n_feat if n_feat else 0.0)
            pcts[s] = cells[s][1]
        table.append({"category": c, "name": CATEGORY_NAMES.get(c, c), "cells": cells})
        chart.append((CATEGORY_NAMES.get(c, c), pcts))
    overall = {
        s: (int(totals[s].get("n_features_associated") or 0), int(totals[s].get("n_features") or 0))
        for s in sources
    }
    svg = summary_svg(chart, sources=sources, names=SOURCE_NAMES) if chart else None
    return {"sources": sources, "rows": table, "overall": overall, "svg": svg}


def _explain_info(atlas: Atlas) -> dict | None:
    ex = atlas.summary.get("explain") if isinstance(atlas.summary, dict) else None
    if not atlas.explanations and not ex:
        return None
    vals = list(atlas.explanations.values())
    n_llm = sum(1 for e in vals if e.get("is_llm"))
    explainers = sorted({str(e.get("explainer") or "") for e in vals} - {""})
    models = sorted({str(e.get("model") or "") for e in vals} - {""})
    return {
        "n": len(vals),
        "n_llm": n_llm,
        "explainers": explainers,
        "models": models,
        "summary": ex if isinstance(ex, dict) else {},
    }


def _group_records(df: "pd.DataFrame", limit: int | None = None) -> dict[int, list[dict]]:
    """Rows of a table as ``{feature: [row dict, ...]}`` in table order (the first ``limit`` per
    feature when given)."""
    out: dict[int, list[dict]] = {}
    for r in df.to_dict("records"):
        lst = out.setdefault(int(r["feature"]), [])
        if limit is None or len(lst) < limit:
            lst.append(r)
    return out


def _significant(atlas: Atlas, r: dict) -> bool:
    prec = r.get("precision")
    prec = 0.0 if prec is None or prec != prec else prec
    return bool(r["q_value"] < atlas.q_max and prec >= atlas.min_precision)


def _residue_hit(atlas: Atlas, r: dict) -> bool:
    f1 = r.get("f1")
    return f1 is not None and f1 == f1 and f1 >= atlas.residue_f1_min


def _feature_context(
    atlas: Atlas,
    f: int,
    row: dict,
    top_rows: list[int],
    track_data: dict,
    sequences: dict,
    track_note: str | None,
    tested: list[dict],
    res: list[dict],
    prot: dict[str, list],
) -> dict:
    from plmsae.atlas.plots import active_spans, format_spans, histogram_svg, track_svg

    n_prot = len(prot["id"])
    acts = atlas.activations
    lo, hi = acts.indptr[f], acts.indptr[f + 1]
    col_rows, col_vals = acts.indices[lo:hi], acts.data[lo:hi]
    pos = col_vals > 0
    n_active = int(pos.sum())
    hist = histogram_svg(col_vals[pos], n_prot - n_active, label=f"activation of feature {f}")
    act_of = dict(zip(col_rows.tolist(), col_vals.tolist()))

    shown = [track_data.get((f, prot["id"][i])) for i in top_rows]
    scale = max([float(np.max(t)) for t in shown if t is not None and t.size] + [0.0]) or None
    top = []
    for i, t in zip(top_rows, shown):
        pid = prot["id"][i]
        seq = sequences.get(pid)
        item = {**_protein(prot, i), "activation": act_of.get(i, 0.0), "track": None, "spans": ""}
        if t is not None:
            vals = t.astype(np.float32)
            spans = active_spans(vals)
            item["spans"] = format_spans(spans, seq)
            item["track"] = track_svg(
                vals,
                seq,
                scale_max=scale,
                spans=spans,
                title=f"activation of feature {f} along {pid}",
            )
        top.append(item)

    # the concepts below q_max (at most 40), topped up with the next best to at least 10 rows
    enr = [{**r, "significant": _significant(atlas, r)} for r in tested[:40]]
    n_show = max(10, sum(1 for r in enr if r["q_value"] < atlas.q_max))
    enr = enr[:n_show]
    best = next((r for r in enr if r["significant"]), None)
    inactive = _inactive_examples(atlas, f, set(col_rows[pos].tolist()), best, prot)
    return {
        "feature": f,
        "ex": explanation_of(atlas, f),
        "scores": atlas.scores.get(f, {}),
        "n_active": n_active,
        "histogram": hist,
        "top": top,
        "track_note": track_note,
        "n_explained": len(atlas.explanations),
        "enrichments": enr,
        "n_tested": len(tested),
        "inactive": inactive,
        "residue_assoc": [{**r, "significant": _residue_hit(atlas, r)} for r in res],
    }


def _protein(prot: dict[str, list], i: int) -> dict:
    n = prot["length"][i]
    return {
        "id": prot["id"][i],
        "name": prot["name"][i],
        "length": int(n) if n == n and n else 0,
        "split": prot["split"][i],
    }


def _inactive_examples(
    atlas: Atlas, f: int, active: set[int], best: dict | None, prot: dict[str, list], n: int = 6
) -> list[dict]:
    """Proteins on which the feature is silent: first ones that carry its best concept (the
    informative misses), then others picked at random (seeded by the feature, so stable)."""
    chosen: list[tuple[int, str]] = []
    concept = best["concept"] if best else None
    name = (best.get("name") or concept) if best else ""
    if concept is not None and atlas.annotations is not None:
        j = atlas.concept_index.get(concept)
        if j is not None:
            rows = atlas.annotations.indices[
                atlas.annotations.indptr[j] : atlas.annotations.indptr[j + 1]
            ]
            for i in rows:
                if int(i) not in active:
                    chosen.append((int(i), f"annotated “{name}” but silent"))
                    if len(chosen) >= n // 2:
                        break
    n_prot = len(prot["id"])
    taken = {i for i, _ in chosen}
    for i in np.random.default_rng(f).integers(0, n_prot, size=8 * n).tolist() if n_prot else []:
        if len(chosen) >= n:
            break
        if i not in active and i not in taken:
            chosen.append((i, ""))
            taken.add(i)
    return [{**_protein(prot, i), "why": why} for i, why in chosen]
