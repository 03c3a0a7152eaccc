"""Sequence windows around the strongest residues of a residue-level feature, for LLM prompts.

Needs what the association run was computed from (``run.json``: the SAE checkpoint, the
activation store and, through the store's ``meta.json``, the input FASTA). When any of it is
missing the prompts go without windows and ``summary.json`` says why.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HALF_WIDTH = 10  # residues shown on each side of the strongest one


def window(sequence: str, codes: np.ndarray, half: int = HALF_WIDTH) -> str:
    """``"K123: ...ACD[K]LMN..."``: the strongest residue (1-based), bracketed in its window.

    codes: the feature's activation per residue [L]; row j = residue j of ``sequence``."""
    i = int(np.argmax(codes))
    a, b = max(0, i - half), min(len(sequence), i + half + 1)
    left = ("..." if a > 0 else "") + sequence[a:i]
    right = sequence[i + 1 : b] + ("..." if b < len(sequence) else "")
    return f"{sequence[i]}{i + 1}: {left}[{sequence[i]}]{right}"


class ResidueWindows:
    """Windows for (source, feature, protein) triples of one association run, or a ``note``
    saying why there are none. Sources: ``sae`` (codes of the SAE) and ``neuron`` (the raw
    residue activations); other sources get none."""

    def __init__(self, run: dict, protein_ids: set[str]):
        self.note = ""
        self._lock = threading.Lock()
        self.sequences: dict[str, str] = {}
        try:
            from plmsae.data.fasta import iter_fasta
            from plmsae.embedding.store import ActivationStore
            from plmsae.sae.checkpoint import (
                load_sae,
            )

            store_path, sae_path = run.get("store"), run.get("sae")
            if not store_path or not Path(store_path).is_dir():
                raise FileNotFoundError(f"activation store {store_path!r} not found")
            self.store = ActivationStore(store_path)
            self.layer = run.get("layer")
            self.sae = load_sae(sae_path) if sae_path and Path(sae_path).is_dir() else None
            fasta = Path(self.store.meta["input"]["path"])
            if not fasta.exists():
                raise FileNotFoundError(f"input FASTA {fasta} not found")
            for p in iter_fasta(fasta):
                if p.id in protein_ids:
                    self.sequences[p.id] = p.sequence
        except Exception as e:  # optional prompt content: never fail the run over it
            self.note = f"sequence windows not shown ({type(e).__name__}: {e})"
            log.warning("%s", self.note)

    def get(self, source: str, feature: int, protein: str) -> str:
        """The window of ``protein`` for one feature ("" when there is none or it is inactive)."""
        if self.note or protein not in self.sequences or source not in ("sae", "neuron"):
            return ""
        with self._lock:  # the store's shard handles are shared
            x = self.store.residues(protein, self.layer)
        if source == "neuron":
            codes = x[:, feature]
        elif self.sae is None:
            return ""
        else:
            import torch

            with torch.inference_mode():
                codes = self.sae.encode(torch.from_numpy(x))[:, feature].numpy()
        if not np.any(codes > 0):
            return ""
        return window(self.sequences[protein], codes)
