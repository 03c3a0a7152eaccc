"""``plmsae report``: the feature atlas, a static HTML site written from an association directory.

``report(ASSOC_DIR, out=SITE)`` writes::

    SITE/index.html             run, SAE metrics, SAE vs neurons vs random, searchable feature table
    SITE/features/00042.html    one page per feature: description, scores, enrichments, histogram,
                                top proteins with per-residue tracks, inactive examples
    SITE/assets/                style.css, table.js, atlas-data.js (the table data as a JS variable,
                                because fetch() of a local JSON file is refused under file://)
    SITE/site.json              what was written from what

The pieces: :mod:`plmsae.atlas.model` reads the association directory, :mod:`plmsae.atlas.tracks`
computes per-residue tracks, :mod:`plmsae.atlas.site` renders pages and swaps the finished site
into place. :class:`Reporter` runs them as named steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plmsae._util import progress, read_json, write_json
from plmsae.atlas import featuremap, site
from plmsae.atlas.model import KINDS, Atlas, group_records, load_atlas
from plmsae.atlas.neighbours import families
from plmsae.atlas.structure import PageStructures, structure_source
from plmsae.atlas.tracks import (
    Tracks,
    annotation_residue_concepts,
    compute_tracks,
    read_proteins,
    run_sae_path,
    run_store_path,
    store_fasta,
)
from plmsae.config import StageConfig, argument, option, stage_function


@dataclass
class ReportConfig(StageConfig):
    """Write the feature atlas: a static HTML site that opens from disk (no server, no network)."""

    assoc_dir: Path = argument(
        help="Association directory written by `plmsae associate` (and `plmsae explain`)."
    )
    out: Path = option(
        help="Site directory to write (replaced if it holds an earlier plmsae report)."
    )
    max_features: int | None = option(
        None,
        help="Write pages for at most N features: explained ones first, then the most strongly "
        "associated (the index table still lists every feature).",
    )
    associated_only: bool = option(
        False, help="Write pages only for features associated with a concept."
    )
    top_proteins: int = option(8, help="Top-activating proteins shown per feature page.")
    tracks: bool = option(
        True,
        help="Draw per-residue activation tracks (encodes the top proteins with the SAE; needs "
        "the SAE and store named in run.json).",
    )
    sae: Path | None = option(
        None, help="SAE checkpoint for tracks, when it moved since `associate` (default: run.json)."
    )
    store: Path | None = option(
        None, help="Activation store for tracks, when it moved (default: run.json)."
    )
    fasta: Path | None = option(
        None, help="FASTA with the sequences drawn under the tracks (default: the store's input)."
    )
    structures: Path | None = option(
        None,
        help="Folder of PDB/mmCIF files named by accession (P69441.pdb, AF-P69441-F1-model_v4.cif"
        ".gz ...): feature pages paint the activation on the top proteins' structures.",
    )
    fetch_structures: bool = option(
        False,
        help="Download AlphaFold DB models of the top proteins missing from --structures (once, "
        "into --structure-cache); offline, the atlas is written without them and says why.",
    )
    structure_cache: Path | None = option(
        None, help="Cache of downloaded AlphaFold DB models (default: the user cache folder)."
    )
    feature_map: str = option(
        "auto",
        help="Feature map (map.html, a 2-D UMAP of the features): decoder (the SAE's decoder "
        "directions), activations (each feature's activation profile over the proteins), none, "
        "or auto (decoder when the SAE checkpoint is found, else none).",
    )
    title: str | None = option(None, help="Title of the atlas.")
    device: str = option("cpu", help="torch device for the track encoding (cpu, cuda).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_features is not None and self.max_features < 0:
            self.reject("max_features", "is negative.", "pass --max-features 0 or more.")
        if self.top_proteins < 0:
            self.reject("top_proteins", "is negative.", "pass --top-proteins 0 or more.")
        if self.feature_map not in featuremap.SOURCES:
            self.reject(
                "feature_map",
                f"is {self.feature_map!r}.",
                "pass " + ", ".join(featuremap.SOURCES[:-1]) + " or none.",
            )


@dataclass
class ReportResult:
    """What :func:`report` wrote: the index page, the number of feature pages and of features
    listed in the index table, whether tracks were drawn (and if not, why)."""

    index: Path
    n_pages: int
    n_features: int
    tracks: bool
    track_note: str | None


def _num(x: Any) -> float | None:
    """A finite float, or None (for JSON)."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def evidence_key(row: dict) -> tuple:
    """Order of features by evidence (the index's default order, and which pages
    ``--max-features`` keeps): associated and described, associated, described, neither; within
    each, specific features before sequence-chemistry, dense and dead ones, then the best q-value,
    the best simulation score, the feature number."""
    assoc, described = row["n_associated"] > 0, bool(row["description"])
    tier = 0 if assoc and described else 1 if assoc else 2 if described else 3
    kind = KINDS.index(row["kind"]) if row["kind"] in KINDS else len(KINDS)
    return (
        tier,
        kind,
        row["best_q"] if row["best_q"] is not None else 2.0,
        -(row["simulation"] if row["simulation"] is not None else -2.0),
        row["feature"],
    )


class Reporter:
    """Writes an atlas in named steps: :meth:`load`, :meth:`describe_proteins`,
    :meth:`summarise`, :meth:`choose_pages`, :meth:`find_top_proteins`, :meth:`compute_tracks`,
    :meth:`write`; :meth:`run` does all.

    ``atlas``: an :class:`Atlas` already loaded (with activations) from ``cfg.assoc_dir``.
    """

    def __init__(self, cfg: ReportConfig, atlas: Atlas | None = None):
        self.cfg = cfg
        self._atlas = atlas
        self.tested: dict[int, list[dict]] = {}  # feature -> association rows, best first
        self.residue: dict[int, list[dict]] = {}  # feature -> residue association rows
        self.rows: list[dict] = []
        self.paged: list[int] = []
        self.top_by_feature: dict[int, list[int]] = {}
        self.tracks = Tracks()
        self.sae_cfg: dict = {}
        self.level = "residue"
        self.sequences: dict[str, str] = {}
        self.fasta_note: str | None = None
        self.structures: PageStructures | None = None
        self.fmap: featuremap.FeatureMap | None = None
        self.neighbours: dict[str, dict[int, list[tuple[int, float]]]] = {}

    def run(self) -> ReportResult:
        t_start = time.perf_counter()
        site.check_out(self.cfg.out)
        self.load()
        self.describe_proteins()
        self.summarise()
        self.choose_pages()
        self.build_map()
        self.find_neighbours()
        self.find_top_proteins()
        self.compute_tracks()
        self.find_structures()
        return self.write(t_start)

    @property
    def atlas(self) -> Atlas:
        if self._atlas is None:
            raise RuntimeError("call load() first")
        return self._atlas

    def load(self) -> None:
        """Read the association directory and the SAE's cfg.json (its metrics and level)."""
        if self._atlas is None:
            self._atlas = load_atlas(self.cfg.assoc_dir)
        self.sae_cfg = self._sae_cfg()
        self.level = str(self.atlas.run.get("level") or self.sae_cfg.get("level") or "residue")

    def describe_proteins(self) -> None:
        """Names, organisms and sequences of the atlas proteins from the FASTA (``--fasta``, else
        the store's input): UniProt headers name them; names already in proteins.parquet win."""
        a = self.atlas
        store = self.cfg.store or run_store_path(a.run, a.path)
        fasta = self.cfg.fasta or (store_fasta(store) if store is not None else None)
        records = read_proteins(fasta, set(a.proteins["id"]))
        if not records:
            return
        self.sequences = {pid: p.sequence for pid, p in records.items()}
        named = [
            (records[i].name, records[i].organism) if i in records else ("", "")
            for i in a.proteins["id"]
        ]
        names = [n for n, _ in named]
        a.proteins["name"] = [old or new for old, new in zip(a.proteins["name"], names)]
        a.proteins["organism"] = [
            old or new for old, new in zip(a.proteins["organism"], (o for _, o in named))
        ]

    def _sae_cfg(self) -> dict:
        """The SAE's cfg.json (read as JSON: the index needs metrics, not the weights)."""
        from plmsae.sae.checkpoint import CFG_FILE

        a = self.atlas
        p = self.cfg.sae or run_sae_path(a.run, a.path)
        if p is not None and (p / CFG_FILE).exists():
            return read_json(p / CFG_FILE)
        cfg = a.run.get("sae")
        return cfg if isinstance(cfg, dict) else {}

    def summarise(self) -> None:
        """One row per feature for the index table (label, top concepts, density, scores)."""
        a = self.atlas
        self.tested = group_records(a.associations)
        self.residue = group_records(a.residue_associations, limit=20)
        nnz = np.diff(self._activations().indptr)
        label_of = {
            pid: f"{name} ({org})" if name and org else name or pid
            for pid, name, org in zip(a.proteins["id"], a.proteins["name"], a.proteins["organism"])
        }
        self.rows = []
        for r in a.features.itertuples(index=False):
            f = int(r.feature)
            row = self._row(f, r, int(nnz[f]) if f < len(nnz) else 0)
            listed = r.top_proteins if r.top_proteins is not None else []
            row["proteins"] = [label_of.get(str(p), str(p)) for p in list(listed)[:3]]
            self.rows.append(row)
        for k, row in enumerate(sorted(self.rows, key=evidence_key)):
            row["evidence"] = k

    def _activations(self) -> Any:
        if self.atlas.activations is None:
            raise ValueError("the report needs the atlas loaded with activations")
        return self.atlas.activations

    def _row(self, f: int, r: Any, n_active: int) -> dict:
        a = self.atlas
        ex = a.explanation(f)
        sig = [x for x in self.tested.get(f, []) if a.is_significant(x)]
        hits = [x for x in self.residue.get(f, []) if a.is_residue_hit(x)]
        top = (
            [[x["concept"], x["name"], x["category"], _num(x["q_value"])] for x in sig[:3]]
            + [[x["concept"], x["name"], "residue", None, _num(x.get("f1"))] for x in hits]
        )[:3]
        tested = self.tested.get(f)
        sc = a.scores.get(f, {})
        return {
            "feature": f,
            "label": ex["label"] or (top[0][1] if top else "") or str(r.plain_label),
            "description": ex["description"],
            "kind": str(r.kind),
            "plain_label": str(r.plain_label),
            "is_llm": ex["is_llm"],
            "concepts": top,
            "n_associated": len(sig) + len(hits),
            "best_q": _num(tested[0]["q_value"]) if tested else None,
            "density": _num(r.density),
            "max_activation": _num(r.max_activation),
            "n_active": n_active,
            "detection": _num(sc.get("detection", {}).get("score")),
            "simulation": _num(sc.get("simulation", {}).get("score")),
        }

    def choose_pages(self) -> None:
        """Which active features get a page (``--associated-only``, ``--max-features``)."""
        candidates = [
            r
            for r in self.rows
            if r["n_active"] > 0 and (r["n_associated"] > 0 or not self.cfg.associated_only)
        ]
        candidates.sort(key=evidence_key)
        if self.cfg.max_features is not None:
            candidates = candidates[: self.cfg.max_features]
        self.paged = sorted(r["feature"] for r in candidates)
        paged = set(self.paged)
        for r in self.rows:
            r["page"] = r["feature"] in paged

    def find_top_proteins(self) -> None:
        """Row indices of each paged feature's top proteins: features.parquet's list, else the
        largest activations in the matrix."""
        a = self.atlas
        id_index = {pid: i for i, pid in enumerate(a.proteins["id"].tolist())}
        listed = dict(zip(a.features["feature"].astype(int), a.features["top_proteins"]))
        self.top_by_feature = {
            f: self._top_rows(f, listed.get(f), id_index, self.cfg.top_proteins) for f in self.paged
        }

    def _top_rows(self, f: int, listed: Any, id_index: dict[str, int], n: int) -> list[int]:
        out: list[int] = []
        if listed is not None and len(listed) >= n:
            for p in listed:
                i = id_index.get(str(p)) if not isinstance(p, (int, np.integer)) else int(p)
                if i is not None and 0 <= i < len(id_index) and i not in out:
                    out.append(i)
        if not out:
            col = self._activations()[:, f]
            order = np.argsort(-col.data, kind="stable")
            out = [int(col.indices[k]) for k in order if col.data[k] > 0]
        return out[:n]

    def compute_tracks(self) -> None:
        """Per-residue tracks of the top proteins (see :func:`plmsae.atlas.tracks.compute_tracks`)."""
        cfg, a = self.cfg, self.atlas
        if not cfg.tracks:
            self.tracks = Tracks(
                note="Per-residue tracks were not drawn (report run with --no-tracks)."
            )
            return
        ids = a.proteins["id"].tolist()
        needed: dict[str, set[int]] = {}
        for f, rows in self.top_by_feature.items():
            for i in rows:
                needed.setdefault(ids[i], set()).add(f)
        self.tracks = compute_tracks(
            needed,
            level=self.level,
            sae=cfg.sae or run_sae_path(a.run, a.path),
            store=cfg.store or run_store_path(a.run, a.path),
            fasta=cfg.fasta,
            layer=a.run.get("layer"),
            device=cfg.device,
            sequences=self.sequences or None,
        )

    def build_map(self) -> None:
        """The feature map's layout (``--feature-map``)."""
        a = self.atlas
        self.fmap = featuremap.build_map(
            self.cfg.feature_map,
            self.cfg.sae or run_sae_path(a.run, a.path),
            self._activations(),
            len(self.rows),
        )

    def find_neighbours(self) -> None:
        """Each paged feature's nearest features by co-activation and, when the SAE checkpoint
        is found, by decoder cosine."""
        from plmsae.atlas.neighbours import coactivation_neighbours, decoder_neighbours
        from plmsae.sae.checkpoint import is_checkpoint
        from plmsae.sae.match import decoder_directions

        a = self.atlas
        self.neighbours = {"coactivation": coactivation_neighbours(self._activations(), self.paged)}
        sae = self.cfg.sae or run_sae_path(a.run, a.path)
        if sae is not None and is_checkpoint(sae):
            self.neighbours["decoder"] = decoder_neighbours(decoder_directions(sae), self.paged)

    def neighbour_lists(self, f: int) -> list[dict]:
        """The feature page's neighbour lists: ``{measure, members: [{feature, value, label,
        page}]}``."""
        row_of = {r["feature"]: r for r in self.rows}
        out = []
        for measure in ("decoder", "coactivation"):
            items = [
                {
                    "feature": g,
                    "value": v,
                    "label": row_of.get(g, {}).get("label", ""),
                    "page": bool(row_of.get(g, {}).get("page")),
                }
                for g, v in self.neighbours.get(measure, {}).get(f, [])
            ]
            if items:
                out.append({"measure": measure, "members": items})
        return out

    def find_structures(self) -> None:
        """Structures of the top proteins that have tracks (``--structures``,
        ``--fetch-structures``), aligned to their sequences."""
        cfg = self.cfg
        if cfg.structures is None and not cfg.fetch_structures:
            return
        source = structure_source(cfg.structures, cfg.fetch_structures, cfg.structure_cache)
        self.structures = PageStructures(source)
        ids = self.atlas.proteins["id"].tolist()
        wanted = [
            ids[i]
            for f, rows in self.top_by_feature.items()
            for i in rows
            if (f, ids[i]) in self.tracks.data
        ]
        self.structures.prepare(self.tracks.sequences, wanted)

    def structure_view(self, f: int) -> dict | None:
        """The structure view of feature ``f``'s page (its top proteins with a structure)."""
        if self.structures is None:
            return None
        ids = self.atlas.proteins["id"].tolist()
        items = [
            (ids[i], f"{k}. {ids[i]}", self.tracks.data.get((f, ids[i])))
            for k, i in enumerate(self.top_by_feature.get(f, []), start=1)
        ]
        return self.structures.view(items, "../")

    def write(self, t_start: float | None = None) -> ReportResult:
        """Write the site into a temporary directory, then swap it in place of ``cfg.out``."""
        t_start = time.perf_counter() if t_start is None else t_start
        a, out = self.atlas, self.cfg.out
        env = site.environment()
        ctx = site.site_context(a, self.sae_cfg, self.cfg.title, self.level)
        with site.building(out) as tmp:
            table = {"n_proteins": len(a.proteins), "q_max": a.q_max, "rows": self.rows}
            site.write_table_data(tmp, table)
            page_seconds = self.write_pages(tmp, env, ctx)
            if self.structures is not None:
                self.structures.write(tmp, tmp / site.ASSETS)
            map_info = (
                featuremap.write_map(tmp, env, ctx, self.fmap, self.rows)
                if self.fmap is not None
                else None
            )
            listed = [r for r in self.rows if r["n_associated"] > 0 or r["label"]]
            index = site.index_context(
                a, self.rows, len(self.paged), sorted(listed, key=evidence_key)[:100]
            )
            html = env.get_template("index.html").render(
                **ctx, **index, has_map=bool(map_info), families=families(self.rows)[:60]
            )
            (tmp / site.INDEX).write_text(html, encoding="utf-8")
            info = self._site_json(ctx, page_seconds, t_start)
            write_json(tmp / site.SITE_MARKER, {**info, "feature_map": map_info})
        return ReportResult(
            index=out / site.INDEX,
            n_pages=len(self.paged),
            n_features=len(self.rows),
            tracks=bool(self.tracks.data),
            track_note=self.tracks.note,
        )

    def write_pages(self, tmp: Path, env: Any, ctx: dict) -> float:
        """One page per paged feature under ``tmp/features``; returns the seconds it took."""
        a = self.atlas
        drawn = {str(r["concept"]) for rows in self.residue.values() for r in rows[:3]}
        intervals = (
            annotation_residue_concepts(a.run, a.path)
            if self.tracks.data and any(not c.startswith("seq:") for c in drawn)
            else {}
        )
        pages = site.FeaturePages(
            a, self.tracks, self.tested, self.residue, intervals, set(self.paged)
        )
        template = env.get_template("feature.html")
        row_of = {r["feature"]: r for r in self.rows}
        paged = self.paged
        t0 = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("feature pages", total=len(paged), rate="")
            for k, f in enumerate(paged):
                html = template.render(
                    **ctx,
                    root="../",
                    row=row_of[f],
                    **pages.context(f, self.top_by_feature[f]),
                    prev_page=paged[k - 1] if k > 0 else None,
                    next_page=paged[k + 1] if k + 1 < len(paged) else None,
                    structure=self.structure_view(f),
                    neighbours=self.neighbour_lists(f),
                    structure_note=self.structures.note if self.structures is not None else None,
                )
                (tmp / site.FEATURES / site.page_name(f)).write_text(html, encoding="utf-8")
                if k % 50 == 0 or k + 1 == len(paged):
                    dt = time.perf_counter() - t0
                    bar.update(task, completed=k + 1, rate=f"{(k + 1) / max(dt, 1e-9):.0f} pages/s")
        return time.perf_counter() - t0

    def _site_json(self, ctx: dict, page_seconds: float, t_start: float) -> dict:
        n_pages = len(self.paged)
        return {
            "generator": "plmsae report",
            "plmsae_version": ctx["version"],
            "assoc_dir": str(Path(self.cfg.assoc_dir).resolve()),
            "n_features": len(self.rows),
            "n_pages": n_pages,
            "tracks": bool(self.tracks.data),
            "track_note": self.tracks.note,
            "structures": self.structures.summary() if self.structures is not None else None,
            "page_seconds": round(page_seconds, 3),
            "pages_per_second": round(n_pages / page_seconds, 1)
            if page_seconds > 0 and n_pages
            else None,
            "seconds": round(time.perf_counter() - t_start, 3),
        }


@stage_function(ReportConfig)
def report(cfg: ReportConfig) -> ReportResult:
    """Write the feature atlas of an association directory as a static HTML site.

    Returns a :class:`ReportResult` (the index page, pages written, features listed)."""
    return Reporter(cfg).run()
