"""Pooling of sparse codes and the baselines' construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plmsae.analysis import activations, baselines


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_pool_sparse_and_dense_agree_with_per_protein_reduction(pool):
    g = torch.Generator().manual_seed(0)
    T, F, k = 60, 12, 3
    pre = torch.randn(T, F, generator=g)
    vals, idx = pre.topk(k, dim=-1)
    vals = vals.relu()
    dense = activations.dense_codes((vals, idx), F)
    assert (dense > 0).sum(dim=1).max() <= k
    lengths = torch.tensor([5, 30, 25])
    ref = torch.stack(
        [
            getattr(s, "amax" if pool == "max" else "mean")(0)
            for s in torch.split(dense, lengths.tolist())
        ]
    )
    for codes in ((vals, idx), dense):
        pooled, peak = activations._pool(codes, F, lengths, pool)
        torch.testing.assert_close(pooled, ref)
        torch.testing.assert_close(peak, dense.amax(0))


def test_random_directions_match_target_density():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 16, generator=g) * 3 + 1
    rand = baselines.RandomDirections(16, 40, seed=2).calibrate(x, 0.02)
    dens = (rand.encode(x) > 0).float().mean(0)
    np.testing.assert_allclose(dens.numpy(), 0.02, atol=0.002)
    torch.testing.assert_close(rand.weight.norm(dim=0), torch.ones(40))
    z = torch.zeros(100, 5)
    z[:10, 0] = 1.0
    z[:30, 1] = 1.0  # features 2-4 dead: left out of the median
    for rows in (7, 1024):  # in pieces of 7 rows and at once
        assert baselines.median_live_density(lambda x: x, z, rows=rows) == pytest.approx(0.2)
    np.testing.assert_allclose(np.linalg.norm(rand.directions, axis=1), 1.0, rtol=1e-5)


def test_neuron_baselines_signed_relu_minmax():
    """issue 12 item 3: neurons are signed by default (ReLU(x) then ReLU(-x), 2 x d features);
    the positive half only and the PNAS min-max variant are options."""
    x = torch.tensor([[-1.0, 2.0, 0.0, 3.0]])
    signed = baselines.NeuronBaseline(4)
    assert signed.kind == "signed" and signed.n_features == 8
    assert signed.encode(x).tolist() == [[0.0, 2.0, 0.0, 3.0, 1.0, 0.0, 0.0, 0.0]]
    assert signed.feature_name(1) == "+x1" and signed.feature_name(4) == "-x0"
    # decoder directions: +e_i for the first half, -e_i for the second
    assert signed.directions.shape == (8, 4) and signed.directions[4, 0] == -1.0
    relu = baselines.NeuronBaseline(4, "relu")
    assert relu.n_features == 4 and relu.encode(x).tolist() == [[0.0, 2.0, 0.0, 3.0]]
    sample = torch.tensor([[-2.0, 0.0, 1.0, -1.0], [0.0, 4.0, 3.0, 1.0]])
    minmax = baselines.NeuronBaseline(4, "minmax").calibrate(sample)
    # x - min: thresholds as fractions of the max are thresholds on the min-max scaled neuron
    assert minmax.encode(sample).tolist() == [[0.0, 0.0, 0.0, 0.0], [2.0, 4.0, 2.0, 2.0]]
    assert minmax.encode(x).tolist() == [[1.0, 2.0, 0.0, 4.0]]
    with pytest.raises(ValueError, match="signed"):
        baselines.NeuronBaseline(4, "abs")
