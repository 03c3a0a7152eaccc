"""``plmsae associate``: which features track which biology (GO, families, locations, sites).

Steps (each output is reused by a re-run with the same settings):

1. split: proteins clustered with MMseqs2 (30 % identity, 80 % coverage) and whole clusters
   assigned to ``validation``/``test`` (``proteins.parquet``);
2. concepts: GO terms propagated to ancestors and split by namespace (GO:BP, GO:MF, GO:CC),
   families, locations, residue concepts (``concepts.parquet``, ``annotations.npz``);
3. activations: per-protein activations of the SAE features and of the two baselines (ReLU'd
   neurons, random directions of matched sparsity) in one streaming pass over the store, max
   over residues by default (``activations/{sae,neuron,random}.npz``, ``features.parquet``);
4. statistics for every feature x concept at once (:func:`plmsae.analysis.stats.score_features`):
   threshold (fraction of the feature's max) chosen by F1 on ``validation``, one-sided Fisher
   p-value, BH q-value (family: source x category), precision, recall, F1, odds ratio and AUROC on
   ``test`` (``associations.parquet``); residue concepts per residue, InterPLM-style
   (``residue_associations.parquet``);
5. ``summary.json``: per source, how many features have an association (q < 0.05 and precision
   >= 0.5 on test; residue concepts: F1 >= 0.5 on test), by category; and how many distinct
   concepts are found (:func:`concept_coverage`, also size-matched to the baselines).

Population of a protein-level category: every protein of the store with at least one annotation
in that category (namespace). Tested pairs: concept with >= ``min_concept`` proteins in the
population and covering at most ``max_concept_fraction`` of it (default 10 %: more general terms
are "associated" with almost any direction, random ones included), F1 > 0 on validation, >= ``min_both`` active proteins carrying it on test.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import typer

from plmsae._util import (
    InputError,
    atomic_path,
    progress,
    read_json,
    sha256_file,
    sha256_json,
    write_json,
)
from plmsae.analysis.assocdir import (
    ASSOC_COLUMNS,
    PRECISION_MIN,
    Q_MAX,
    RESIDUE_COLUMNS,
    RESIDUE_F1_MIN,
)

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.0, 0.15, 0.5, 0.6, 0.8)


def associate(
    sae: Annotated[Path, typer.Argument(help="SAE checkpoint directory (plmsae train --out).")],
    store: Annotated[Path, typer.Argument(help="Activation store (plmsae embed --out).")],
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations", help="GO TSV (ACC<TAB>GO:1;GO:2), GAF or UniProt TSV export."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output directory (ASSOC_DIR).")],
    ontology: Annotated[
        Path | None,
        typer.Option(
            "--ontology", help="GO OBO file (plain or .gz): propagate terms, split namespaces."
        ),
    ] = None,
    pool: Annotated[
        str, typer.Option(help="Per-protein pooling of residue-level activations: max or mean.")
    ] = "max",
    thresholds: Annotated[
        list[float] | None,
        typer.Option(
            "--threshold",
            help="Activation thresholds as fractions of each feature's max "
            "(repeatable; default 0 0.15 0.5 0.6 0.8).",
        ),
    ] = None,
    min_concept: Annotated[
        int,
        typer.Option(
            help="Test a concept only with at least this many proteins in its population."
        ),
    ] = 10,
    max_concept_fraction: Annotated[
        float,
        typer.Option(
            help="Test a concept only when it covers at most this fraction of its population. "
            "General terms (catalytic activity, 42% of Swiss-Prot-like sets) reach q < 0.05 and "
            "precision >= 0.5 for almost any direction, random ones included; at 0.1 an associated "
            "feature is enriched at least 5-fold. 1 tests every concept."
        ),
    ] = 0.1,
    min_both: Annotated[
        int,
        typer.Option(
            help="Test a pair only with at least this many active proteins carrying the concept "
            "on the test split."
        ),
    ] = 3,
    split_method: Annotated[
        str,
        typer.Option(
            help="mmseqs (homology clusters; random with a warning when mmseqs2 is missing) or "
            "random."
        ),
    ] = "mmseqs",
    min_seq_id: Annotated[float, typer.Option(help="MMseqs2 clustering identity.")] = 0.3,
    coverage: Annotated[
        float, typer.Option(help="MMseqs2 clustering coverage (-c, cov-mode 0).")
    ] = 0.8,
    split_fractions: Annotated[
        str, typer.Option(help="train,validation,test fractions of proteins (whole clusters).")
    ] = "0,0.5,0.5",
    fasta: Annotated[
        Path | None,
        typer.Option(
            help="Sequences for clustering (default: the FASTA the store was embedded from, or the "
            "Sequence column of a UniProt TSV)."
        ),
    ] = None,
    baselines: Annotated[
        bool, typer.Option(help="Also score the neuron and random-direction baselines.")
    ] = True,
    n_random: Annotated[
        int | None, typer.Option(help="Random directions (default: d_model, as many as neurons).")
    ] = None,
    layer: Annotated[
        int | None, typer.Option(help="Store layer (default: the SAE's layer).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits and random directions.")] = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an ASSOC_DIR written with other settings.")
    ] = False,
) -> Path:
    """Associate SAE features (and neuron / random baselines) with GO terms, families,
    locations and residue-level concepts; writes ASSOC_DIR (see docs/design.md)."""
    import torch

    from plmsae.analysis import activations as acts_mod
    from plmsae.analysis import baselines as base_mod
    from plmsae.analysis import splits as split_mod
    from plmsae.analysis import stats

    if pool not in ("max", "mean"):
        raise InputError(
            f"--pool {pool!r} is not max or mean.", fix="use --pool max or --pool mean."
        )
    thresholds = [float(t) for t in (thresholds or DEFAULT_THRESHOLDS)]
    if any(not 0.0 <= t < 1.0 for t in thresholds):
        raise InputError(
            f"thresholds {thresholds} must be fractions in [0, 1).",
            fix="e.g. --threshold 0 --threshold 0.5.",
        )
    fractions = _parse_fractions(split_fractions)
    out = Path(out)

    store_obj, store_path = _open_store(store)
    sae_obj, sae_path = _open_sae(sae, store_obj, layer)
    cfg = sae_obj.cfg
    layer = cfg.layer if layer is None else layer
    if layer is None and len(store_obj.layers) == 1:
        layer = store_obj.layers[0]
    if layer not in store_obj.layers:
        raise InputError(
            f"the store has layers {store_obj.layers}, not the SAE's layer {layer}.",
            path=store_path,
            fix="embed that layer, or pass --layer.",
        )
    level = cfg.level
    onto_obj, onto_path = _open_ontology(ontology)
    ann, ann_path = _open_annotations(annotations, onto_obj)

    ids = list(store_obj.ids)
    n_random = int(n_random if n_random is not None else store_obj.d_model)
    settings = {
        "pool": pool,
        "thresholds": thresholds,
        "min_concept": min_concept,
        "max_concept_fraction": max_concept_fraction,
        "min_both": min_both,
        "split_method": split_method,
        "min_seq_id": min_seq_id,
        "coverage": coverage,
        "split_fractions": fractions,
        "baselines": baselines,
        "n_random": n_random,
        "seed": seed,
        "layer": layer,
        "level": level,
        "select_split": "validation",
        "report_split": "test",
        "population": "per category: proteins of the store with >= 1 annotation in it",
        "associated": f"q < {Q_MAX} and precision >= {PRECISION_MIN} on test "
        f"(residue concepts: F1 >= {RESIDUE_F1_MIN} on test)",
        "q_value_family": "Benjamini-Hochberg per source x category",
        "odds_ratio": "Haldane-Anscombe +0.5 on every cell when a cell is 0",
        "random_directions": "unit Gaussian directions on centred inputs, bias matched to the "
        "SAE's median live-feature density on a calibration sample",
    }
    inputs = {
        "sae": str(sae_path.resolve()) if sae_path else None,
        "sae_sha256": _maybe_hash(sae_path / "sae.safetensors" if sae_path else None),
        "store": str(Path(store_path).resolve()) if store_path else None,
        "annotations": str(ann_path.resolve()) if ann_path else None,
        "annotations_sha256": _maybe_hash(ann_path),
        "ontology": str(Path(onto_path).resolve()) if onto_path else None,
        "ontology_sha256": _maybe_hash(onto_path),
    }
    run_hash = sha256_json({"settings": settings, "inputs": inputs, "ids": ids})
    _prepare_out(out, run_hash, overwrite)

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = round(now - clock, 3)
        clock = now

    # 1. splits -------------------------------------------------------------------------------
    proteins_path = out / "proteins.parquet"
    split_hash = sha256_json(
        {
            k: settings[k]
            for k in ("split_method", "min_seq_id", "coverage", "split_fractions", "seed")
        }
        | {"ids": ids}
    )
    state = _state(out)
    if proteins_path.exists() and state.get("proteins") == split_hash:
        proteins = pd.read_parquet(proteins_path)
        split_used = state.get("split_method_used", split_method)
    else:
        seqs = _sequences(ids, fasta, store_obj, ann) if split_method == "mmseqs" else None
        split, clusters, split_used = split_mod.make_splits(
            ids,
            seqs,
            method=split_method,
            min_seq_id=min_seq_id,
            coverage=coverage,
            fractions=fractions,
            seed=seed,
        )
        proteins = pd.DataFrame(
            {
                "id": ids,
                "split": split.astype(str),
                "cluster": clusters.astype(np.int64),
                "length": np.asarray(store_obj.lengths, dtype=np.int64),
                "name": [ann.protein_names.get(p, "") for p in ids],
            }
        )
        _write_parquet(proteins, proteins_path)
        _set_state(out, proteins=split_hash, split_method_used=split_used)
    split = proteins["split"].to_numpy()

    lap("split_s")
    # 2. concepts -----------------------------------------------------------------------------
    concepts, ann_matrix = _concept_table(ann, ids)
    if ann_matrix.nnz == 0:
        raise InputError(
            f"none of the {len(ids)} proteins of the store has an annotation here "
            f"(store IDs look like {ids[:2]}).",
            path=ann_path or annotations,
            fix="use annotations keyed by the same accessions as the FASTA that was "
            "embedded (UniProt sp|P12345|NAME headers become P12345).",
        )
    _write_parquet(concepts, out / "concepts.parquet")
    with atomic_path(out / "annotations.npz") as tmp:
        sp.save_npz(tmp, ann_matrix.astype(bool), compressed=True)

    lap("concepts_s")
    # 3. activations --------------------------------------------------------------------------
    # TopK SAEs hand over (values, indices): pooling then touches only the k codes per residue
    sae_encode = getattr(sae_obj, "encode_sparse", None) or sae_obj.encode
    encoders = {"sae": (sae_encode, int(cfg.d_sae))}
    if baselines:
        encoders["neuron"] = (base_mod.NeuronBaseline(store_obj.d_model).encode, store_obj.d_model)
        sample = acts_mod.calibration_sample(store_obj, ids, level=level, layer=layer, seed=seed)
        with torch.no_grad():
            density = base_mod.median_live_density(sae_obj.encode(sample))
        rand = base_mod.RandomDirections(store_obj.d_model, n_random, seed=seed).calibrate(
            sample, density
        )
        encoders["random"] = (rand.encode, n_random)
        settings["random_target_density"] = density
    act_hash = sha256_json(
        {
            "inputs": inputs,
            "pool": pool,
            "layer": layer,
            "level": level,
            "n_random": n_random,
            "seed": seed,
            "baselines": baselines,
            "ids": ids,
        }
    )
    act_dir = out / "activations"
    state = _state(out)
    if state.get("activations") == act_hash and all(
        (act_dir / f"{s}.npz").exists() for s in encoders
    ):
        pooled = {s: sp.load_npz(act_dir / f"{s}.npz").tocsr() for s in encoders}
        peaks = {s: np.asarray(v) for s, v in state["peaks"].items()}
    else:
        with progress() as bar:
            task = bar.add_task("activations", total=len(ids), rate="")
            pooled, peaks = acts_mod.protein_activations(
                store_obj,
                encoders,
                ids,
                level=level,
                pool=pool,
                layer=layer,
                progress_cb=lambda done: bar.update(task, completed=done),
            )
        for s, m in pooled.items():
            with atomic_path(act_dir / f"{s}.npz") as tmp:
                sp.save_npz(tmp, m.astype(np.float32), compressed=True)
        _set_state(out, activations=act_hash, peaks={s: v.tolist() for s, v in peaks.items()})
    feats = []
    for s, m in pooled.items():
        feats.append(
            pd.DataFrame(
                {
                    "source": s,
                    "feature": np.arange(m.shape[1]),
                    "density": np.diff(m.tocsc().indptr) / max(1, m.shape[0]),
                    "max_activation": m.max(axis=0).toarray().ravel()
                    if m.nnz
                    else np.zeros(m.shape[1]),
                    "top_proteins": acts_mod.top_rows(m, ids),
                }
            )
        )
    _write_parquet(pd.concat(feats, ignore_index=True), out / "features.parquet")

    lap("activations_s")
    # 4. statistics ---------------------------------------------------------------------------
    protein_cols = (concepts["category"] != "residue").to_numpy()
    concept_ids = concepts["concept"].to_numpy()
    categories = concepts["category"].to_numpy()
    tables = []
    with progress() as bar:
        for s, m in pooled.items():
            task = bar.add_task(f"statistics {s}", total=m.shape[1], rate="")
            res = stats.score_features(
                m,
                ann_matrix[:, protein_cols],
                categories[protein_cols],
                split,
                thresholds=thresholds,
                min_concept=min_concept,
                max_concept_fraction=max_concept_fraction,
                min_both=min_both,
                progress_cb=lambda cat, done, total, task=task: bar.update(task, completed=done),
            )
            cidx = np.flatnonzero(protein_cols)[res["concept"]]
            df = pd.DataFrame({k: res[k] for k in res if k not in ("concept", "f1_select")})
            df.insert(0, "source", s)
            df.insert(2, "concept", concept_ids[cidx])
            df.insert(3, "category", categories[cidx])
            df["f1_validation"] = res["f1_select"]
            df["split"] = "test"
            tables.append(df[ASSOC_COLUMNS])
    assoc = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=ASSOC_COLUMNS)
    _write_parquet(assoc, out / "associations.parquet")

    lap("statistics_s")
    residue_table = _residue_stage(
        store_obj, encoders, ann, ids, split, peaks, thresholds, min_concept, level, layer
    )
    _write_parquet(residue_table, out / "residue_associations.parquet")

    lap("residue_s")
    # 5. summary ------------------------------------------------------------------------------
    summary = _summary(pooled, assoc, residue_table, concepts, split)
    summary["settings"] = settings | {
        "split_method_used": split_used,
        "n_proteins": len(ids),
        "n_validation": int((split == "validation").sum()),
        "n_test": int((split == "test").sum()),
    }
    write_json(out / "summary.json", summary)
    from plmsae import __version__

    write_json(
        out / "run.json",
        {
            **inputs,
            "model": store_obj.meta.get("model"),
            "layer": layer,
            "level": level,
            "pooling": pool if level == "residue" else "mean",  # protein level: the store's mean
            "thresholds": thresholds,
            "split": {
                "method": split_used,
                "min_seq_id": min_seq_id,
                "coverage": coverage,
                "fractions": fractions,
                "seed": seed,
            },
            "settings": settings,
            "settings_sha256": run_hash,
            "timings": timings,
            "plmsae_version": __version__,
        },
    )
    return out


# --- helpers -----------------------------------------------------------------------------------


def _parse_fractions(text: str) -> list[float]:
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        vals = []
    if len(vals) != 3 or any(v < 0 for v in vals) or sum(vals) <= 0:
        raise InputError(
            f"--split-fractions {text!r} is not three non-negative numbers.",
            fix="give train,validation,test, e.g. 0,0.5,0.5.",
        )
    if vals[1] <= 0 or vals[2] <= 0:
        raise InputError(
            f"--split-fractions {text!r} leaves validation or test empty.",
            fix="both validation and test need a positive fraction.",
        )
    return vals


def _maybe_hash(path) -> str | None:
    return sha256_file(path) if path is not None and Path(path).is_file() else None


def _open_store(store):
    from plmsae.embedding.store import ActivationStore

    if isinstance(store, ActivationStore):
        return store, getattr(store, "path", None)
    return ActivationStore(store), Path(store)


def _open_sae(sae, store_obj, layer):
    from plmsae.sae.base import SAE
    from plmsae.sae.checkpoint import load_sae

    if isinstance(sae, SAE):
        return sae.eval(), None
    obj = load_sae(sae, d_in=store_obj.d_model, layer=layer, model=store_obj.meta.get("model"))
    return obj.eval(), Path(sae)


def _open_ontology(ontology):
    from plmsae.data.ontology import Ontology

    if ontology is None or isinstance(ontology, Ontology):
        return ontology, getattr(ontology, "path", None) if ontology is not None else None
    return Ontology.load(ontology), Path(ontology)


def _open_annotations(annotations, ontology):
    from plmsae.data.annotations import Annotations, read_annotations

    if isinstance(annotations, Annotations):
        return annotations, None
    return read_annotations(annotations, ontology), Path(annotations)


def _prepare_out(out: Path, run_hash: str, overwrite: bool) -> None:
    run = out / "run.json"
    if run.exists():
        old = read_json(run).get("settings_sha256")
        if old != run_hash:
            if not overwrite:
                raise InputError(
                    "this directory holds an association run with other inputs or settings.",
                    path=out,
                    fix="choose another --out, or pass --overwrite to replace it.",
                )
            for name in ("activations", ".state.json"):
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _state(out: Path) -> dict:
    p = out / ".state.json"
    return read_json(p) if p.exists() else {}


def _set_state(out: Path, **kv) -> None:
    write_json(out / ".state.json", _state(out) | kv)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _sequences(ids, fasta, store_obj, ann) -> list[str] | None:
    """Sequences for clustering, in ``ids`` order, or None (then the split is random)."""
    from plmsae.data.fasta import read_fasta

    path = fasta
    if path is None:
        cand = (store_obj.meta.get("input") or {}).get("path")
        if cand and Path(cand).is_file():
            path = Path(cand)
    seqs: dict[str, str] = {}
    if path is not None:
        seqs = {p.id: p.sequence for p in read_fasta(path)}
    elif ann.sequences:
        seqs = dict(ann.sequences)
    else:
        return None
    missing = [p for p in ids if p not in seqs]
    if missing:
        raise InputError(
            f"{len(missing)} proteins of the store have no sequence here (first: {missing[0]}).",
            path=path,
            fix="pass --fasta with the sequences the store was embedded from.",
        )
    return [seqs[p] for p in ids]


def _concept_table(ann, ids) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """concepts.parquet rows (category order GO:BP, GO:MF, GO:CC, GO, family, location, then
    others, residue last; concepts sorted within) and the protein x concept 0/1 matrix."""
    index = {p: i for i, p in enumerate(ids)}
    order = ["GO:BP", "GO:MF", "GO:CC", "GO", "family", "location"]
    cats = sorted(ann.protein_concepts, key=lambda c: (order.index(c) if c in order else 99, c))
    if "GO" in cats and len(cats) and not any(c.startswith("GO:") for c in cats):
        log.warning(
            "GO terms were read without an ontology: not propagated to ancestors and not "
            "split by namespace. Pass --ontology for the standard analysis."
        )
    rows, cols, names, cat_of, concept_ids = [], [], [], [], []
    for cat in cats:
        by_protein = ann.protein_concepts[cat]
        terms = sorted({t for p, ts in by_protein.items() if p in index for t in ts})
        t_index = {t: len(concept_ids) + i for i, t in enumerate(terms)}
        for p, ts in by_protein.items():
            i = index.get(p)
            if i is None:
                continue
            for t in ts:
                rows.append(i)
                cols.append(t_index[t])
        concept_ids.extend(terms)
        cat_of.extend([cat] * len(terms))
    for c in sorted(ann.residue_concepts):
        prots = [p for p in ann.residue_concepts[c] if p in index]
        if not prots:
            continue
        for p in prots:
            rows.append(index[p])
            cols.append(len(concept_ids))
        concept_ids.append(c)
        cat_of.append("residue")
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(ids), len(concept_ids))
    )
    m.sum_duplicates()
    m.data[:] = 1
    names = [ann.concept_names.get(c, c) for c in concept_ids]
    df = pd.DataFrame(
        {
            "concept": concept_ids,
            "category": cat_of,
            "name": names,
            "n_proteins": np.asarray(m.sum(axis=0)).ravel().astype(np.int64),
        }
    )
    return df, m


def _residue_stage(
    store_obj, encoders, ann, ids, split, peaks, thresholds, min_concept, level, layer
) -> pd.DataFrame:
    """InterPLM-style residue scores (empty table for protein-level SAEs or without residue
    concepts)."""
    import torch

    from plmsae.analysis import activations as acts_mod
    from plmsae.analysis import residue

    if level != "residue" or not ann.residue_concepts:
        if ann.residue_concepts and level != "residue":
            log.warning("residue-level concepts are skipped: the SAE is protein-level.")
        return pd.DataFrame(columns=RESIDUE_COLUMNS)
    idset = set(ids)
    split_of = dict(zip(ids, split))
    concepts = sorted(
        c for c, by in ann.residue_concepts.items() if sum(p in idset for p in by) >= min_concept
    )
    if not concepts:
        return pd.DataFrame(columns=RESIDUE_COLUMNS)
    types = sorted({residue.concept_type(c) for c in concepts})
    ctype = np.array([types.index(residue.concept_type(c)) for c in concepts])
    single = np.array(
        [
            all(e - s == 1 for by in [ann.residue_concepts[c]] for iv in by.values() for s, e in iv)
            for c in concepts
        ]
    )
    lengths = dict(zip(store_obj.ids, store_obj.lengths.tolist()))
    cutoffs = {name: np.asarray(thresholds)[:, None] * peaks[name][None, :] for name in encoders}
    totals: dict[str, dict] = {}
    for part in ("validation", "test"):
        # one pass over the store per split; every encoder sees each batch
        prots = [
            p
            for p in ids
            if split_of[p] == part and any(p in ann.residue_concepts[c] for c in concepts)
        ]
        acc: dict[str, dict] = {}
        n_pos = np.zeros(len(concepts), dtype=np.int64)
        n_inst = np.zeros(len(concepts), dtype=np.int64)
        batch: list[tuple[str, np.ndarray]] = []

        def flush(batch):
            lay, inst = residue.layout(
                [b[0] for b in batch],
                [len(b[1]) for b in batch],
                ann.residue_concepts,
                concepts,
                types,
            )
            x = torch.from_numpy(np.concatenate([b[1] for b in batch]))
            for name, (enc, width) in encoders.items():
                with torch.no_grad():
                    z = acts_mod.dense_codes(enc(x), width)
                c = residue.residue_counts(z, lay, inst, cutoffs[name], len(concepts))
                acc[name] = c if name not in acc else {k: acc[name][k] + c[k] for k in c}
            n_pos[:] += np.asarray(lay.token_concept.sum(axis=0)).ravel()
            n_inst[:] += np.bincount(inst, minlength=len(concepts))

        total = 0
        for pid, x in store_obj.iter_residues(layer=layer, ids=prots):
            batch.append((pid, np.asarray(x, dtype=np.float32)))
            total += lengths[pid]
            if total >= 4096:
                flush(batch)
                batch, total = [], 0
        if batch:
            flush(batch)
        totals[part] = {"counts": acc, "n_pos": n_pos, "n_inst": n_inst}
    tables = []
    sel, rep = totals["validation"], totals["test"]
    for name in encoders:
        if name not in sel["counts"] or name not in rep["counts"]:
            continue
        res = residue.residue_scores(
            sel["counts"][name],
            rep["counts"][name],
            n_pos_sel=sel["n_pos"],
            n_pos_rep=rep["n_pos"],
            n_inst_sel=sel["n_inst"],
            n_inst_rep=rep["n_inst"],
            concept_types=ctype,
            single_residue=single,
            thresholds=thresholds,
        )
        df = pd.DataFrame({k: v for k, v in res.items() if k not in ("concept", "f1_select")})
        df.insert(0, "source", name)
        df.insert(2, "concept", np.array(concepts, dtype=object)[res["concept"]])
        df.insert(3, "category", "residue")
        df["f1_validation"] = res["f1_select"]
        df["split"] = "test"
        tables.append(df[RESIDUE_COLUMNS])
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=RESIDUE_COLUMNS)


def _summary(
    pooled, assoc: pd.DataFrame, residue_table: pd.DataFrame, concepts: pd.DataFrame, split
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sig = assoc[(assoc["q_value"] < Q_MAX) & (assoc["precision"] >= PRECISION_MIN)]
    res_hit = (
        residue_table[residue_table["f1"] >= RESIDUE_F1_MIN]
        if len(residue_table)
        else residue_table
    )
    cats = [c for c in dict.fromkeys(concepts["category"]) if c != "residue"]
    for s, m in pooled.items():
        n = int(m.shape[1])
        s_all = assoc[assoc["source"] == s]
        s_sig = sig[sig["source"] == s]
        by_cat = {}
        for c in cats:
            t = s_all[s_all["category"] == c]
            g = s_sig[s_sig["category"] == c]
            by_cat[c] = {
                "n_features_associated": int(g["feature"].nunique()),
                "fraction_associated": g["feature"].nunique() / n if n else 0.0,
                "n_concepts": int((concepts["category"] == c).sum()),
                "n_concepts_tested": int(t["concept"].nunique()),
                "n_concepts_matched": int(g["concept"].nunique()),
                "n_pairs_tested": int(len(t)),
                "n_pairs_associated": int(len(g)),
            }
        assoc_feats = set(s_sig["feature"].tolist())
        if len(residue_table):
            r_all = residue_table[residue_table["source"] == s]
            r = res_hit[res_hit["source"] == s]
            by_cat["residue"] = {
                "n_features_associated": int(r["feature"].nunique()),
                "fraction_associated": r["feature"].nunique() / n if n else 0.0,
                "n_concepts": int((concepts["category"] == "residue").sum()),
                "n_concepts_tested": int(r_all["concept"].nunique()),
                "n_concepts_matched": int(r["concept"].nunique()),
                "n_pairs_tested": int(len(r_all)),
                "n_pairs_associated": int(len(r)),
                "criterion": f"F1 >= {RESIDUE_F1_MIN} on test (InterPLM)",
            }
            assoc_feats |= set(r["feature"].tolist())
        out[s] = {
            "n_features": n,
            "n_features_associated": len(assoc_feats),
            "fraction_associated": len(assoc_feats) / n if n else 0.0,
            "by_category": by_cat,
        }
    coverage = concept_coverage(assoc, {s: int(m.shape[1]) for s, m in pooled.items()})
    for s in out:
        out[s]["concepts"] = coverage[s]
    return out


def concept_coverage(
    assoc: pd.DataFrame, n_features: dict[str, int], *, draws: int = 20, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Which concepts each source finds, counted per concept rather than per feature.

    ``assoc``: rows of ``associations.parquet`` (columns source, feature, concept, q_value,
    precision, f1). ``n_features``: source -> number of features. Per source:
    ``n_concepts_associated`` (distinct concepts with a feature at q < 0.05 and precision >= 0.5),
    ``n_concepts_f1_05`` (concepts some feature recovers at F1 >= 0.5 on test). A source with
    more features than the smallest one (an SAE against its 320-neuron baselines) is also
    counted on ``draws`` seeded random subsets of that many features, features without any
    association included: ``n_concepts_associated_matched`` (median) and ``matched_n_features``.
    Without this, a 4,096-feature dictionary finds more concepts just by having more features.
    """
    sig = assoc[(assoc["q_value"] < Q_MAX) & (assoc["precision"] >= PRECISION_MIN)]
    n_match = min(n_features.values()) if n_features else 0
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for source, n in n_features.items():
        rows = assoc[assoc["source"] == source]
        hits = sig[sig["source"] == source]
        block: dict[str, Any] = {
            "n_concepts_associated": int(hits["concept"].nunique()),
            "n_concepts_f1_05": int(rows.loc[rows["f1"] >= 0.5, "concept"].nunique()),
        }
        if n > n_match > 0:
            pairs = hits[["feature", "concept"]].drop_duplicates()
            counts = [
                pairs.loc[
                    pairs["feature"].isin(rng.choice(n, n_match, replace=False)), "concept"
                ].nunique()
                for _ in range(draws)
            ]
            block["n_concepts_associated_matched"] = float(np.median(counts))
            block["matched_n_features"] = n_match
        out[source] = block
    return out
