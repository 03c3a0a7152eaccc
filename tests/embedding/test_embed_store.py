"""ActivationStore: random access, streaming, shuffled batches for training, damage detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from plmsae._util import InputError
from plmsae.embedding.store import FORMAT_VERSION, ActivationStore


def _all_rows(store, layer, level="residue"):
    if level == "protein":
        return store.pooled_matrix(layer)
    return np.concatenate([a for _, a in store.iter_residues(layer)])


def _sorted_rows(a):
    a = np.asarray(a)
    return a[np.lexsort(a.T[::-1])]


def test_accessors(tiny_store):
    s = ActivationStore(tiny_store)
    assert s.ids == ["P00001", "P00002", "P00003", "P00004", "P00005"]
    assert len(s) == 5 and s.d_model == 32 and s.layers == [0, 1, 3]
    assert s.lengths.tolist() == [335, 191, 110, 58, 26] and s.n_tokens == 720
    assert s.residues("P00004", 1).shape == (58, 32)
    pooled = s.pooled_matrix(3)
    assert pooled.shape == (5, 32) and pooled.dtype == np.float32
    for i, pid in enumerate(s.ids):
        np.testing.assert_array_equal(pooled[i], s.pooled(pid, 3))
    streamed = dict(s.iter_residues(0))
    assert list(streamed) == s.ids
    for pid in s.ids:
        np.testing.assert_array_equal(streamed[pid], s.residues(pid, 0))
    some = list(s.iter_residues(1, ids=["P00005", "P00002"]))
    assert [pid for pid, _ in some] == ["P00002", "P00005"]  # store order
    assert "5 proteins" in repr(s) and "local ESM model" in repr(s)


def test_layer_and_id_errors(tiny_store):
    s = ActivationStore(tiny_store)
    with pytest.raises(InputError, match=r"layers \[0, 1, 3\]; say which"):
        s.residues("P00001")
    with pytest.raises(InputError, match="layer 2 is not in the store"):
        s.pooled("P00001", 2)
    with pytest.raises(KeyError, match="NOPE"):
        s.residues("NOPE", 1)


def test_single_layer_store_needs_no_layer(tmp_path, tiny_fasta, tiny_lm, embed_lm):
    s = ActivationStore(embed_lm(tiny_fasta, tmp_path / "one", model=tiny_lm))
    assert s.layers == [3]
    assert s.residues("P00003").shape == (110, 32) and s.pooled("P00003").shape == (32,)


@pytest.mark.parametrize("level", ["residue", "protein"])
def test_one_epoch_yields_every_row_once(tiny_store, level):
    s = ActivationStore(tiny_store)
    batches = list(s.batches(64, level=level, layer=1, epochs=1, buffer_rows=100))
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.float32 for b in batches)
    assert all(len(b) == 64 for b in batches[:-1])
    got = torch.cat(batches).numpy()
    np.testing.assert_array_equal(_sorted_rows(got), _sorted_rows(_all_rows(s, 1, level)))


def test_batches_are_shuffled_and_deterministic(tiny_store):
    s = ActivationStore(tiny_store)
    a = torch.cat(list(s.batches(50, layer=3, epochs=2, seed=1)))
    b = torch.cat(list(s.batches(50, layer=3, epochs=2, seed=1)))
    c = torch.cat(list(s.batches(50, layer=3, epochs=2, seed=2)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    ordered = torch.from_numpy(_all_rows(s, 3))
    assert not torch.equal(a[:720], ordered)  # shuffled
    assert not torch.equal(a[:720], a[720:])  # each epoch shuffled differently
    unshuffled = torch.cat(list(s.batches(100, layer=3, epochs=1, shuffle=False)))
    torch.testing.assert_close(unshuffled, ordered, rtol=0, atol=0)


def test_endless_by_default(tiny_store):
    it = ActivationStore(tiny_store).batches(100, layer=0)
    n = sum(len(next(it)) for _ in range(30))
    assert n > 2 * 720


def test_target_layer_pairs_same_rows(tiny_store):
    s = ActivationStore(tiny_store)
    x_all, y_all = _all_rows(s, 1), _all_rows(s, 3)  # layer-0 rows repeat per amino acid
    lookup = {row.tobytes(): i for i, row in enumerate(x_all)}
    n = 0
    for x, y in s.batches(70, layer=1, target_layer=3, epochs=1, seed=3):
        assert x.shape == y.shape
        idx = [lookup[r.tobytes()] for r in x.numpy()]
        np.testing.assert_array_equal(y.numpy(), y_all[idx])
        n += len(x)
    assert n == s.n_tokens
    px, py = next(s.batches(4, level="protein", layer=1, target_layer=3, epochs=1, shuffle=False))
    np.testing.assert_array_equal(py.numpy(), s.pooled_matrix(3)[:4])


@pytest.mark.parametrize("world_size", [2, 5])
def test_ranks_read_disjoint_rows_and_equal_batch_counts(tiny_store, world_size):
    """2 ranks: disjoint shards (store has 3); 5 ranks: more ranks than shards -> rows split."""
    s = ActivationStore(tiny_store)
    per_rank = [
        list(s.batches(16, layer=1, epochs=1, seed=4, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    counts = {len(b) for b in per_rank}
    assert len(counts) == 1 and counts.pop() > 0
    assert all(len(x) == 16 for b in per_rank for x in b)
    rows = [{r.tobytes() for x in b for r in x.numpy()} for b in per_rank]
    for i in range(world_size):
        for j in range(i + 1, world_size):
            assert not rows[i] & rows[j]
    everything = {r.tobytes() for r in _all_rows(s, 1)}
    assert set().union(*rows) <= everything


def test_incomplete_and_damaged_stores(tiny_store, tmp_path):
    with pytest.raises(InputError, match="not an activation store"):
        ActivationStore(tmp_path)
    meta_path = tiny_store / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(InputError, match="incomplete.*re-run `plmsae embed`"):
        ActivationStore(tiny_store)
    meta_path.write_text(json.dumps(meta))
    (tiny_store / "shards" / "00002.safetensors").unlink()
    with pytest.raises(InputError, match=r"shard shards/00002.safetensors is missing.*re-run"):
        ActivationStore(tiny_store)
    header_damaged = tiny_store / "shards" / "00001.safetensors"
    data = bytearray(header_damaged.read_bytes())
    data[10:20] = b"\xff" * 10
    header_damaged.write_bytes(bytes(data))
    (tiny_store / "shards" / "00002.safetensors").write_bytes(b"")
    meta["shards"][2]["bytes"] = 0
    meta_path.write_text(json.dumps(meta))
    s = ActivationStore(tiny_store)
    with pytest.raises(InputError, match=r"shards/00001.safetensors.*re-run `plmsae embed`"):
        s.residues("P00002", 1)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, None])
def test_unknown_format_version_is_refused(tiny_store, version):
    meta_path = tiny_store / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["format_version"] == FORMAT_VERSION == 1
    if version is None:
        del meta["format_version"]
    else:
        meta["format_version"] = version
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError) as e:
        ActivationStore(tiny_store)
    message = str(e.value)
    assert message.startswith(f"{tiny_store}: activation store format version {version!r}")
    assert "it reads version 1" in message and f"plmsae {meta['plmsae_version']}" in message
    assert "Fix: open it with the plmsae version that wrote it, or re-embed" in message


def test_streaming_reads_leave_no_shard_mapped(tiny_store):
    """Whole-shard reads (training batches, analysis passes) copy the shard and let the file go:
    a mapping kept per shard made the association's memory grow with the store."""
    store = ActivationStore(tiny_store)
    layer = store.layers[0]
    kept = [x for _, x in store.iter_residues(layer=layer)]
    next(iter(store.batches(4, layer=layer, seed=0)))
    shards = {str(p.resolve()) for p in (tiny_store / "shards").glob("*.safetensors")}
    with open("/proc/self/maps") as fh:
        mapped = {line.split()[-1] for line in fh if len(line.split()) >= 6}
    assert kept and shards and not shards & mapped
