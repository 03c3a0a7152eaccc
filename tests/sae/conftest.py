import pytest
import torch

from plmsae.sae.data import TensorStore

from _synth import structured


@pytest.fixture()
def synth_store():
    return TensorStore(structured(), meta={"model": {"id": "test/model", "revision": "r1",
                                                     "d_model": 32, "n_layers": 3}}, layer=2)
