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
