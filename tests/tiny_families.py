"""Tiny randomly initialised models of each supported family, saved as their publishers save
them (``save_pretrained``: config.json, model.safetensors, tokenizer files), with the reference
per-residue forward each publisher's own examples use.

The tokenizers are built here because the real ones cannot be downloaded in CI: ProtT5 as a
SentencePiece ``spiece.model`` whose pieces are ``▁A`` ... (what ProtT5's holds), Ankh as one
plain character per token, ProtBERT as a BERT WordPiece vocabulary of residue letters, ESM-C
with transformers' own ``EsmcTokenizer``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch

AA25 = list("LAGVSERTIDPKQNFYMHWCXBUZO")
#: context of every tiny model in tokens (special tokens included), so long proteins use windows
CONTEXT = 64


def _t5_config():
    from transformers import T5Config

    return T5Config(
        vocab_size=32,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=3,
        num_heads=4,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def save_prot_t5(d: Path) -> None:
    """A full T5 (encoder + decoder, as ProtT5's non-"-enc" repos) and its tokenizer as ProtT5
    ships it: a SentencePiece ``spiece.model`` whose pieces are ``▁A`` ... (a word model over the
    residue letters), read by transformers through sentencepiece; no tokenizer.json."""
    import io
    import json

    import sentencepiece as spm
    from transformers import T5ForConditionalGeneration

    lines = [" ".join(AA25[(i * 7 + j) % 25] for j in range(40)) for i in range(100)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=28,
        model_type="word",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    (d / "spiece.model").write_bytes(model.getvalue())
    tokenizer_config = {
        "tokenizer_class": "T5Tokenizer",
        "extra_ids": 0,
        "model_max_length": CONTEXT,
        "do_lower_case": False,
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    T5ForConditionalGeneration(_t5_config()).eval().save_pretrained(d)


def save_ankh(d: Path) -> None:
    """A T5 encoder and a character-level tokenizer (one residue = one token, then </s>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{a: i + 3 for i, a in enumerate(AA25)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=CONTEXT,
    )
    T5EncoderModel(_t5_config()).eval().save_pretrained(d)
    tok.save_pretrained(d)


def save_protbert(d: Path) -> None:
    """``BertForMaskedLM`` (ProtBERT's class) and its residue-letter vocabulary."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *AA25]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizer(vocab_file=str(d / "vocab.txt"), do_lower_case=False)
    cfg = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=CONTEXT,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertForMaskedLM(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)


def save_esmc(d: Path) -> None:
    """``EsmcForMaskedLM`` (as biohub/ESMC-* are published) and ``EsmcTokenizer``."""
    from transformers import EsmcConfig, EsmcForMaskedLM, EsmcTokenizer

    cfg = EsmcConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=CONTEXT,
    )
    model = EsmcForMaskedLM(cfg).eval()
    with torch.no_grad():  # _init_weights is disabled for ESM-C: give every weight a value
        for p in model.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    model.save_pretrained(d)
    EsmcTokenizer().save_pretrained(d)


SAVERS = {"esmc": save_esmc, "prot_t5": save_prot_t5, "ankh": save_ankh, "protbert": save_protbert}


@functools.lru_cache(maxsize=8)
def _reference(family: str, d: Path):
    """(tokenizer, encoder) loaded with plain transformers, as the publishers' examples do."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    if family in ("prot_t5", "ankh"):
        model = transformers.T5EncoderModel.from_pretrained(str(d))
    elif family == "protbert":
        model = transformers.BertModel.from_pretrained(str(d), add_pooling_layer=False)
    else:
        model = transformers.EsmcModel.from_pretrained(str(d))
    return tok, model.eval()


def direct_hidden_states(family: str, d: Path, sequence: str) -> tuple[tuple, int]:
    """The publisher's own per-residue recipe on one protein, with no plmsae code: tokenise as
    their examples do, run the encoder with ``output_hidden_states=True``. Returns the hidden
    states and the token index of residue 0."""
    tok, model = _reference(family, d)
    if family == "prot_t5":  # ProtTrans README: rare residues to X, residues space-separated
        enc, first = tok(" ".join(re.sub(r"[UZOB]", "X", sequence)), return_tensors="pt"), 0
    elif family == "ankh":  # Ankh README: a list of characters, is_split_into_words=True
        enc, first = tok([list(sequence)], is_split_into_words=True, return_tensors="pt"), 0
    elif family == "protbert":
        enc, first = tok(" ".join(re.sub(r"[UZOB]", "X", sequence)), return_tensors="pt"), 1
    else:
        enc, first = tok(sequence, return_tensors="pt"), 1
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    assert enc["input_ids"].shape[1] == len(sequence) + first + 1  # one token per residue
    return out.hidden_states, first


def esm_package():
    """EvolutionaryScale's ``esm`` package, when importable (it cannot be pip-installed next to
    transformers 5: it pins transformers < 4.48.2; ``PLMSAE_ESM=1 bash scripts/setup.sh`` puts
    it, without its pins, in .esm-ref/, or set PLMSAE_ESM_PATH); else None."""
    import importlib
    import os
    import sys

    here = Path(__file__).resolve().parents[1]
    for cand in (os.environ.get("PLMSAE_ESM_PATH"), str(here / ".esm-ref")):
        if cand and Path(cand).is_dir() and cand not in sys.path:
            sys.path.append(cand)
    try:
        return importlib.import_module("esm.models.esmc"), importlib.import_module(
            "esm.tokenization"
        )
    except ImportError:
        return None


def esmc_weights_from_esm(sd: dict, n_layers: int) -> dict:
    """An ``esm`` package ESMC state dict in transformers' ``EsmcModel`` names: the fused QKV
    projection split into q, k, v and the SwiGLU input projection into gate and up."""
    new = {"embed_tokens.weight": sd["embed.weight"], "norm.weight": sd["transformer.norm.weight"]}
    for i in range(n_layers):
        b, o = f"transformer.blocks.{i}.", f"layers.{i}."
        q, k, v = sd[b + "attn.layernorm_qkv.1.weight"].chunk(3, 0)
        gate, up = sd[b + "ffn.1.weight"].chunk(2, 0)
        pairs = {
            "input_layernorm.weight": sd[b + "attn.layernorm_qkv.0.weight"],
            "input_layernorm.bias": sd[b + "attn.layernorm_qkv.0.bias"],
            "self_attn.q_proj.weight": q,
            "self_attn.k_proj.weight": k,
            "self_attn.v_proj.weight": v,
            "self_attn.o_proj.weight": sd[b + "attn.out_proj.weight"],
            "self_attn.q_norm.weight": sd[b + "attn.q_ln.weight"],
            "self_attn.k_norm.weight": sd[b + "attn.k_ln.weight"],
            "post_attention_layernorm.weight": sd[b + "ffn.0.weight"],
            "post_attention_layernorm.bias": sd[b + "ffn.0.bias"],
            "mlp.gate_proj.weight": gate,
            "mlp.up_proj.weight": up,
            "mlp.down_proj.weight": sd[b + "ffn.3.weight"],
        }
        new.update({o + k_: v_ for k_, v_ in pairs.items()})
    return new
