"""Tiny randomly initialised models of each supported family, saved as their publishers save
them (``save_pretrained``: config.json, model.safetensors, tokenizer files), with the reference
per-residue forward each publisher's own examples use.

The tokenizers are built here because the real ones cannot be downloaded in CI: ProtT5 as a
T5 (Unigram/SentencePiece-style) tokenizer whose pieces are ``▁A`` ... (what ProtT5's
``spiece.model`` holds), Ankh as one plain character per token, ProtBERT as a BERT WordPiece
vocabulary of residue letters, ESM-C with transformers' own ``EsmcTokenizer``.
"""

from __future__ import annotations

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
    """A full T5 (encoder + decoder, as ProtT5's non-"-enc" repos) and a SentencePiece-style
    tokenizer with ``▁X`` pieces."""
    from transformers import T5ForConditionalGeneration, T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + a, -1.0) for a in AA25]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=CONTEXT)
    T5ForConditionalGeneration(_t5_config()).eval().save_pretrained(d)
    tok.save_pretrained(d)


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


def direct_hidden_states(family: str, d: Path, sequence: str) -> tuple[tuple, int]:
    """The publisher's own per-residue recipe on one protein, with no plmsae code: tokenise as
    their examples do, run the encoder with ``output_hidden_states=True``. Returns the hidden
    states and the token index of residue 0."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(d))
    if family == "prot_t5":  # ProtTrans README: rare residues to X, residues space-separated
        enc = tok(" ".join(re.sub(r"[UZOB]", "X", sequence)), return_tensors="pt")
        model, first = transformers.T5EncoderModel.from_pretrained(str(d)), 0
    elif family == "ankh":  # Ankh README: a list of characters, is_split_into_words=True
        enc = tok([list(sequence)], is_split_into_words=True, return_tensors="pt")
        model, first = transformers.T5EncoderModel.from_pretrained(str(d)), 0
    elif family == "protbert":
        enc = tok(" ".join(re.sub(r"[UZOB]", "X", sequence)), return_tensors="pt")
        model, first = transformers.BertModel.from_pretrained(str(d), add_pooling_layer=False), 1
    else:
        enc = tok(sequence, return_tensors="pt")
        model, first = transformers.EsmcModel.from_pretrained(str(d)), 1
    with torch.no_grad():
        out = model.eval()(**enc, output_hidden_states=True)
    assert enc["input_ids"].shape[1] == len(sequence) + first + 1  # one token per residue
    return out.hidden_states, first
