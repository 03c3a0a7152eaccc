"""Which association proteins the SAE was trained on.

``plmsae train`` records in the SAE's cfg.json (``training.proteins``) the training store's path,
its number of proteins and a sha256 over its protein IDs (:func:`plmsae.sae.train.proteins_record`).
The association stage re-reads that store's protein IDs when it is reachable (and the hash still
matches), and reports how many of its own proteins the SAE saw during training, overall and per
split. Proteins it saw are not "held out", whatever split they are in; "unknown" when the
training store cannot be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from plmsae._util import sha256_json


def training_ids(sae_cfg: Any) -> tuple[list[str] | None, str, str | None]:
    """(training protein IDs or None, why not, the training store path) from an SAE config."""
    from plmsae._util import InputError
    from plmsae.embedding.store import ActivationStore

    rec = (getattr(sae_cfg, "training", None) or {}).get("proteins") or {}
    store = rec.get("store") or getattr(sae_cfg, "store", None)
    if not store:
        return None, "the SAE records no training store (trained from memory)", None
    if not Path(store).is_dir():
        return None, f"the training store {store} is not reachable", str(store)
    try:
        ids = list(ActivationStore(store).ids)
    except InputError as e:
        return None, f"the training store {store} cannot be read ({e})", str(store)
    if rec.get("ids_sha256") and sha256_json(ids) != rec["ids_sha256"]:
        return None, f"the store at {store} changed since training (protein IDs differ)", str(store)
    return ids, "", str(store)


def training_overlap(sae_cfg: Any, ids: list[str], split: np.ndarray) -> dict[str, Any]:
    """``training_overlap`` of run.json and summary.json: how many of ``ids`` (the association
    proteins, with their ``split``) the SAE was trained on."""
    rec = (getattr(sae_cfg, "training", None) or {}).get("proteins") or {}
    train, why, store = training_ids(sae_cfg)
    out: dict[str, Any] = {
        "training_store": store,
        "n_training_proteins": rec.get("n_proteins", None if train is None else len(train)),
        "n_proteins": len(ids),
    }
    if train is None:
        return out | {"status": "unknown", "reason": why}
    seen = np.isin(np.asarray(ids, dtype=object), np.asarray(train, dtype=object))
    split = np.asarray(split)
    n_seen = int(seen.sum())
    return out | {
        "status": "known",
        "n_seen_in_training": n_seen,
        "fraction_seen_in_training": n_seen / len(ids) if ids else 0.0,
        "by_split": {str(s): int(seen[split == s].sum()) for s in dict.fromkeys(split.tolist())},
        "held_out": n_seen == 0,
    }


def overlap_sentence(overlap: dict[str, Any]) -> str:
    """One line for people: whether the association proteins were held out from training."""
    if overlap.get("status") != "known":
        return f"SAE training proteins: unknown ({overlap.get('reason', 'not recorded')})."
    n, k = overlap["n_proteins"], overlap["n_seen_in_training"]
    if k == 0:
        return f"None of the {n:,} association proteins was used to train the SAE (held out)."
    return (
        f"The SAE was trained on {k:,} of the {n:,} association proteins "
        f"({k / n:.0%}): they are not held out from training."
    )
