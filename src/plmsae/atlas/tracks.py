"""Per-residue activation tracks for the atlas: the SAE run over the activation store.

The feature pages draw, for each top protein, the feature's activation along the sequence. The
association directory holds only per-protein activations, so the report encodes the stored
per-residue activations of the top proteins with the SAE (both named in run.json, or given as
``--sae``/``--store``) and reads their sequences from the FASTA the store was embedded from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plmsae._util import InputError, PlmsaeError, progress, read_json
from plmsae.embedding.store import META

log = logging.getLogger(__name__)

#: ``(feature, protein id) -> float16 [L]``: one feature's activation along one protein
TrackData = dict[tuple[int, str], np.ndarray]


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
    """The SAE checkpoint named in an ASSOC_DIR's run.json (relative paths against ``base``)."""
    return _run_path(run, ("sae", "sae_path", "sae_dir"), base)


def run_store_path(run: dict, base: Path) -> Path | None:
    """The activation store named in an ASSOC_DIR's run.json (relative paths against ``base``)."""
    return _run_path(run, ("store", "store_path", "store_dir"), base)


def store_fasta(store_path: Path) -> Path | None:
    """The FASTA file a store was embedded from (its meta.json ``input``), None when unknown."""
    meta_p = Path(store_path) / META
    if not meta_p.exists():
        return None
    inp = read_json(meta_p).get("input") or {}
    p = inp.get("path") if isinstance(inp, dict) else None
    return Path(p) if p else None


def read_proteins(fasta: Path | None, ids: set[str]) -> dict[str, Any]:
    """The records of ``ids`` in a FASTA file (:class:`plmsae.data.fasta.Protein`: sequence,
    description, name, organism); streamed, other records skipped; {} when the file is missing
    or unreadable (a moved FASTA only costs the letters and names, so it is logged)."""
    if fasta is None or not Path(fasta).exists() or not ids:
        return {}
    from plmsae.data.fasta import iter_fasta

    out = {}
    try:
        for p in iter_fasta(fasta):
            if p.id in ids:
                out[p.id] = p
                if len(out) == len(ids):
                    break
    except PlmsaeError as e:
        log.warning("cannot read sequences and protein names from %s: %s", fasta, e)
    return out


def read_sequences(fasta: Path | None, ids: set[str]) -> dict[str, str]:
    """Sequences of ``ids`` from a FASTA file (see :func:`read_proteins`)."""
    return {pid: p.sequence for pid, p in read_proteins(fasta, ids).items()}


#: built-in amino-acid identity concepts (``seq:aa:Q``): where they are is the sequence itself
_AA_CONCEPT = "seq:aa:"


def concept_intervals(
    concept: str, pid: str, sequence: str | None, residue_concepts: dict[str, dict[str, list]]
) -> list[tuple[int, int]]:
    """Instances of a residue concept on one protein, 0-based half-open: UniProt features from
    the annotation file (``residue_concepts``), amino-acid identity from the sequence; [] for
    what is not known here."""
    if concept.startswith(_AA_CONCEPT) and sequence:
        aa = concept[len(_AA_CONCEPT) :]
        return [(i, i + 1) for i, c in enumerate(sequence) if c == aa]
    return [(int(a), int(b)) for a, b in residue_concepts.get(concept, {}).get(pid, [])]


def annotation_residue_concepts(run: dict, base: Path) -> dict[str, dict[str, list]]:
    """Residue concepts (UniProt features) of the annotation file named in run.json, {} when it
    has none (GO files) or is missing."""
    path = _run_path(run, ("annotations",), base)
    if path is None or not path.exists():
        return {}
    from plmsae.data.annotations import read_annotations, sniff_format

    try:
        if sniff_format(path) != "uniprot_tsv":
            return {}
        return read_annotations(path).residue_concepts
    except PlmsaeError as e:
        log.warning("residue features of %s are not drawn: %s", path, e)
        return {}


def residue_tracks(
    sae_path: Path,
    store_path: Path,
    needed: dict[str, set[int]],
    layer: int | None = None,
    batch_tokens: int = 8192,
    on_protein: Callable[[], Any] | None = None,
    device: str = "cpu",
) -> TrackData:
    """Per-residue activations of chosen features on chosen proteins.

    needed: protein id -> feature indices wanted for it. Each protein's residue activations are
    read from the store once and encoded once (proteins are batched to ~``batch_tokens`` rows, so
    the matrix products stay large). Returns ``{(feature, protein id): float16 [L]}``.
    """
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
    out: TrackData = {}
    pending: list[tuple[str, np.ndarray]] = []
    n_tok = 0
    for pid, arr in store.iter_residues(layer=layer, ids=[i for i in store.ids if i in needed]):
        pending.append((pid, np.asarray(arr)))
        n_tok += len(arr)
        if n_tok >= batch_tokens:
            _encode(sae, pending, needed, out, device, on_protein)
            pending, n_tok = [], 0
    _encode(sae, pending, needed, out, device, on_protein)
    return out


def _encode(
    sae: Any,
    pending: list[tuple[str, np.ndarray]],
    needed: dict[str, set[int]],
    out: TrackData,
    device: str,
    on_protein: Callable[[], Any] | None,
) -> None:
    """Encode a batch of proteins' residues at once and keep the wanted features' columns."""
    if not pending:
        return
    import torch

    x = torch.from_numpy(np.concatenate([a for _, a in pending]).astype(np.float32, copy=False))
    with torch.no_grad():
        z = sae.encode(x.to(device)).float().cpu().numpy()
    row = 0
    for pid, a in pending:
        feats = sorted(needed[pid])
        block = z[row : row + len(a)][:, feats]
        for k, f in enumerate(feats):
            out[(f, pid)] = block[:, k].astype(np.float16)
        row += len(a)
        if on_protein:
            on_protein()


@dataclass
class Tracks:
    """The tracks drawn on the feature pages.

    data: ``{(feature, protein id): float16 [L]}``; sequences: protein id -> sequence (drawn
    under the tracks); note: why tracks or residue letters are missing (None when all is drawn).
    """

    data: TrackData = field(default_factory=dict)
    sequences: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def compute_tracks(
    needed: dict[str, set[int]],
    *,
    level: str,
    sae: Path | None,
    store: Path | None,
    fasta: Path | None = None,
    layer: int | None = None,
    device: str = "cpu",
    sequences: dict[str, str] | None = None,
) -> Tracks:
    """Tracks of the wanted (protein, features): ``needed`` maps protein id -> features.

    ``sae``/``store`` are the SAE checkpoint and activation store (None when unknown), ``fasta``
    the sequences (default: the store's input), unless ``sequences`` are given. Tracks that cannot be drawn (a protein-level SAE,
    a missing or unusable SAE or store) leave a note saying why; the atlas is still worth writing.
    """
    if level != "residue":
        return Tracks(
            note="This SAE was trained on pooled protein embeddings (level "
            f"'{level}'), so it has no per-residue activations to draw."
        )
    if not needed:
        return Tracks()
    missing = [
        f"{what} ({p})"
        for what, p in (("SAE", sae), ("activation store", store))
        if p is None or not Path(p).exists()
    ]
    if missing or sae is None or store is None:
        return Tracks(
            note="Per-residue tracks are not shown: cannot find the "
            + " and the ".join(missing)
            + " named in run.json; pass --sae/--store."
        )
    try:
        data = _with_progress(sae, store, needed, layer, device)
    except PlmsaeError as e:
        note = f"Per-residue tracks are not shown: {e}"
        log.warning(note)
        return Tracks(note=note)
    fasta_path = Path(fasta) if fasta else store_fasta(store)
    if sequences is None:
        sequences = read_sequences(fasta_path, set(needed)) if data else {}
    else:
        sequences = {pid: sequences[pid] for pid in needed if pid in sequences}
    if data and not sequences:
        note = (
            f"Residue letters are not drawn: the FASTA {fasta_path} recorded in the "
            "activation store is missing (pass --fasta)."
        )
        log.warning(note)
        return Tracks(data=data, note=note)
    return Tracks(data=data, sequences=sequences)


def _with_progress(
    sae: Path, store: Path, needed: dict[str, set[int]], layer: int | None, device: str
) -> TrackData:
    with progress() as bar:
        task = bar.add_task("residue tracks", total=len(needed), rate="")
        return residue_tracks(
            sae, store, needed, layer=layer, on_protein=lambda: bar.advance(task), device=device
        )
