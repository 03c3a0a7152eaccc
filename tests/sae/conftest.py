import pytest
from _synth import structured

from plmsae.sae.data import TensorStore


@pytest.fixture()
def synth_store():
    return TensorStore(
        structured(),
        meta={"model": {"id": "test/model", "revision": "r1", "d_model": 32, "n_layers": 3}},
        layer=2,
    )


@pytest.fixture(scope="session")
def tiny_store(tiny_esm_dir, tmp_path_factory):
    """An activation store on disk: 6 random proteins (30-90 residues) through the tiny ESM-2,
    layers 2 and 3."""
    import random

    from plmsae.embedding.embedder import embed

    rnd = random.Random(0)
    d = tmp_path_factory.mktemp("tiny_store")
    fasta = d / "tiny.fasta"
    fasta.write_text(
        "".join(
            f">P{i:05d}\n"
            + "".join(rnd.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rnd.randint(30, 90)))
            + "\n"
            for i in range(6)
        )
    )
    embed(fasta, out=d / "store", model=str(tiny_esm_dir), layers=[2, 3])
    return d / "store"


@pytest.fixture(scope="session")
def tiny_esmc_dir(tmp_path_factory):
    """A randomly initialised 3-layer ESM-C (hidden 32) saved as biohub/ESMC-* are."""
    import torch
    from tiny_families import save_esmc

    d = tmp_path_factory.mktemp("tiny_esmc")
    torch.manual_seed(0)
    save_esmc(d)
    return d
