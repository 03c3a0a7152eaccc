"""ESM-C, ProtT5, Ankh and ProtBERT behind the adapter interface: a tiny randomly initialised
model of each family saved to disk gives a store whose per-residue vectors equal the publisher's
own forward (residue alignment checked, long proteins stitched from windows), states its layer
numbering and residue alignment in meta.json, and trains an SAE end to end that is refused on
another model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_families import CONTEXT, SAVERS, direct_hidden_states

from plmsae._util import InputError
from plmsae.embedding.forward import windows
from plmsae.embedding.model import load_model
from plmsae.embedding.store import ActivationStore

FAMILIES = list(SAVERS)
#: the first protein is longer than every tiny model's window; the last has U Z O B
PROTEINS = {
    "LONG1": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKS",
    "SHORT": "MALWMRLLPLLALLALWGPDPAAAFVNQHL",
    "RARE1": "MKVLAAGIVGLLLAGCSSXKEEBZUO",
}
LAYERS = [0, 2, 3]


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    """(family, model directory, loaded model) for each family."""
    family = request.param
    d = tmp_path_factory.mktemp(family)
    torch.manual_seed(0)
    SAVERS[family](d)
    return family, d, load_model(str(d))


@pytest.fixture(scope="module")
def family_store(family_model, tmp_path_factory):
    from plmsae.embedding.embedder import EmbedConfig, Embedder

    family, _, lm = family_model
    d = tmp_path_factory.mktemp(f"{family}_store")
    fasta = d / "p.fasta"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in PROTEINS.items()))
    cfg = EmbedConfig(fasta, d / "store", layers=LAYERS, shard_size=100)
    return Embedder(cfg, lm=lm).run().store


def test_spec_states_family_numbering_and_alignment(family_model, family_store):
    family, d, lm = family_model
    spec = lm.spec
    assert (spec.family, spec.n_layers, spec.d_model) == (family, 3, 32)
    assert spec.max_tokens == CONTEXT
    n_special = 1 if family in ("prot_t5", "ankh") else 2
    assert spec.max_residues == CONTEXT - n_special
    assert f"local {lm.adapter.name} model {d.resolve()}" == spec.description
    meta = json.loads((family_store / "meta.json").read_text())["model"]
    assert meta["family"] == family
    assert meta["layer_numbering"].startswith("0 = embedding output, i = output of block i")
    assert "residue j is token j" in meta["residue_alignment"]
    assert ("+ 1" in meta["residue_alignment"]) == (n_special == 2)


def test_store_equals_publishers_forward(family_model, family_store):
    family, d, lm = family_model
    store = ActivationStore(family_store)
    window = lm.spec.max_residues
    for pid, seq in PROTEINS.items():
        direct = [
            (w, *direct_hidden_states(family, d, seq[w[0] : w[1]]))
            for w in windows(len(seq), window)
        ]
        for layer in LAYERS:
            want = np.concatenate(
                [
                    hs[layer][0, first + ks - s : first + ke - s].numpy()
                    for (s, _, ks, ke), hs, first in direct
                ]
            )
            np.testing.assert_allclose(store.residues(pid, layer), want, atol=1e-4, rtol=0)
    assert len(windows(len(PROTEINS["LONG1"]), window)) > 1  # the windows were exercised


def test_misaligning_tokenizer_is_refused(family_model):
    family, _, lm = family_model
    real = lm.adapter.tokenize
    lm.adapter.tokenize = lambda residues: real(residues) + [lm.adapter.pad_id]
    try:
        with pytest.raises(InputError, match="one token per residue"):
            lm.adapter.token_ids("MKV")
    finally:
        lm.adapter.tokenize = real


def test_trains_an_sae_that_is_refused_on_another_model(
    family_model, family_store, tmp_path, tiny_esm_dir
):
    from plmsae.sae.checkpoint import load_sae
    from plmsae.sae.train import train

    family, _, lm = family_model
    res = train(family_store, out=tmp_path / "sae", latents=32, k=4, layer=2, batch_size=64)
    cfg = res.sae.cfg
    assert cfg.model["family"] == family and cfg.layer == 2
    assert cfg.hook_point == lm.adapter.hook_point(2, 3)
    assert cfg.hook_point.endswith(".1")  # block 2 = index 1 in every family's module list
    sae = load_sae(res.out, model=lm.spec, layer=2, d_in=32)
    x = torch.from_numpy(ActivationStore(family_store).residues("SHORT", 2))
    assert sae(x).shape == x.shape
    esm2 = load_model(str(tiny_esm_dir))  # same width (32), another family
    with pytest.raises(InputError, match="trained on"):
        load_sae(res.out, model=esm2.spec)


def test_esmc_equals_evolutionaryscale_esm(tmp_path):
    """transformers' EsmcModel (what the ESM-C adapter runs) against EvolutionaryScale's own
    ``esm`` ESMC on the same random weights: plmsae layer i = esm's hidden_states[i - 1] (the
    output of block i), the last layer = esm's normed ``embeddings``; same tokens."""
    from tiny_families import esm_package, esmc_weights_from_esm
    from transformers import EsmcConfig, EsmcModel

    from plmsae.data.fasta import Protein
    from plmsae.embedding.forward import compute_activations

    found = esm_package()
    if found is None:
        pytest.skip(
            "EvolutionaryScale's esm is not importable (PLMSAE_ESM=1 bash scripts/setup.sh)"
        )
    esmc, tokenization = found
    torch.manual_seed(0)
    ref = esmc.ESMC(
        d_model=64,
        n_heads=4,
        n_layers=3,
        tokenizer=tokenization.get_esmc_model_tokenizers(),
        use_flash_attn=False,
    ).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    inter = ref.state_dict()["transformer.blocks.0.ffn.3.weight"].shape[1]
    cfg = EsmcConfig(
        hidden_size=64, intermediate_size=inter, num_hidden_layers=3, num_attention_heads=4
    )
    hf = EsmcModel(cfg).eval()
    hf.load_state_dict(esmc_weights_from_esm(ref.state_dict(), 3), strict=True)
    hf.save_pretrained(tmp_path)
    from transformers import EsmcTokenizer

    EsmcTokenizer().save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    seq = PROTEINS["SHORT"] + "UZOB"
    got = compute_activations(lm, [Protein("p", seq, "")], [1, 2, 3], 4096, "float32")
    with torch.no_grad():
        out = ref(sequence_tokens=ref._tokenize([seq]))
    assert lm.adapter.token_ids(seq) == ref._tokenize([seq])[0].tolist()
    for layer, want in ((1, out.hidden_states[0]), (2, out.hidden_states[1]), (3, out.embeddings)):
        torch.testing.assert_close(got[f"residues.{layer}"], want[0, 1:-1], atol=1e-5, rtol=0)
