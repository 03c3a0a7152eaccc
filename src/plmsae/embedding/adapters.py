"""One small interface per protein language-model family: tokens, hidden states, hook names.

An adapter turns a sequence into token IDs, runs padded batches and returns per-token hidden
states of chosen layers, says where residue 0 sits among the tokens, and names the module whose
output is a layer. :mod:`plmsae.embedding.forward` drops the special tokens, stitches long
proteins from windows and writes the store; it needs nothing else from a model. Each adapter
states its layer numbering and residue alignment; they are recorded in the store's ``meta.json``
(``model``) and in every SAE trained or imported for it.

=========  ============================  =====================================  ===============
family     transformers classes          tokens of one protein                  residue j at
=========  ============================  =====================================  ===============
esm2       EsmModel / EsmForMaskedLM     <cls> residues <eos>                   token j + 1
esmc       EsmcModel                     <cls> residues <eos>                   token j + 1
prot_t5    T5EncoderModel                residues (U Z O B as X) </s>           token j
ankh       T5EncoderModel                residues </s>                          token j
protbert   BertModel                     [CLS] residues (U Z O B as X) [SEP]    token j + 1
=========  ============================  =====================================  ===============

Layer numbering is the same everywhere: layer 0 is the embedding output, layer ``i`` the output
of block ``i``, which is ``hidden_states[i]`` as ``transformers`` returns them; the last layer of
ESM-2, ESM-C and the T5 encoders has their final layer norm applied (ProtBERT has none). For
ESM-C this is also the numbering of Biohub's SAEs (their layer ``N`` is the input of 0-based
block ``N``, the last one after the final norm).

Blocks above the highest requested layer are not run (:meth:`ModelAdapter.truncated`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

from plmsae._util import InputError

#: layer numbering shared by every family (the families' own final-norm detail is appended)
LAYERS = "0 = embedding output, i = output of block i (hidden_states[i] of transformers)"
#: residue alignment of the ESM families
CLS_EOS = "<cls> residues <eos>: residue j is token j + 1; <cls> and <eos> dropped"
#: ProtTrans' advice for ProtT5 and ProtBERT: rare and ambiguous residues are read as X
PROTTRANS_RARE = str.maketrans("UZOB", "XXXX")


class ModelAdapter:
    """What plmsae needs from one family of protein language models (see the module table).

    ``model`` is the loaded ``transformers`` module in eval mode, ``tokenizer`` its tokenizer.
    Subclasses set the class attributes and, where they differ, the methods."""

    family: ClassVar[str] = ""
    name: ClassVar[str] = ""  # readable family name for descriptions
    layer_numbering: ClassVar[str] = LAYERS
    residue_alignment: ClassVar[str] = ""
    n_prefix: ClassVar[int] = 1  # special tokens before residue 0
    n_suffix: ClassVar[int] = 1  # special tokens after the last residue
    #: task-model names of the modules whose outputs are the layers: the embeddings, block i
    #: (0-based, ``{}``) and the final norm when the last layer is its output
    modules: ClassVar[tuple[str, str, str | None]] = ("", "", None)
    base: ClassVar[str | None] = None  # attribute of a task model that holds the bare encoder
    #: (attribute of the bare encoder holding the blocks, "" = itself; the blocks' ModuleList;
    #: the final norm after them or None)
    stack: ClassVar[tuple[str, str, str | None]] = ("", "", None)

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer

    # ---------------------------------------------------------------- tokens
    def residues(self, sequence: str) -> str:
        """The residue letters as the model reads them (ProtTrans: U Z O B as X)."""
        return sequence

    def token_ids(self, sequence: str) -> list[int]:
        """Token IDs of one protein, special tokens included; exactly one token per residue
        (checked: a tokenizer that splits or merges residues would misalign every vector)."""
        ids = self.tokenize(self.residues(sequence))
        if len(ids) != len(sequence) + self.n_prefix + self.n_suffix:
            raise InputError(
                f"the {self.name} tokenizer made {len(ids)} tokens of a {len(sequence)}-residue "
                f"protein; plmsae needs one token per residue plus "
                f"{self.n_prefix + self.n_suffix} special tokens.",
                record=sequence[:30],
                fix="use the tokenizer files published with the model.",
            )
        return ids

    def tokenize(self, residues: str) -> list[int]:
        """Token IDs as the publisher's code makes them (default: one word per residue)."""
        enc = self.tokenizer(list(residues), is_split_into_words=True, add_special_tokens=True)
        return list(enc["input_ids"])

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    # ---------------------------------------------------------------- the network
    @property
    def encoder(self) -> Any:
        """The bare encoder (no task head): ``model.<base>`` of a task model, else ``model``."""
        return getattr(self.model, self.base, self.model) if self.base else self.model

    def _blocks_owner(self) -> tuple[Any, str, str | None]:
        """(module holding the blocks, name of the ModuleList, name of the final norm or None)."""
        owner, blocks, norm = self.stack
        return (getattr(self.encoder, owner) if owner else self.encoder), blocks, norm

    @contextlib.contextmanager
    def truncated(self, top_layer: int) -> Iterator[Any]:
        """Run only blocks ``1..top_layer`` (and not the final norm, which belongs to the last
        block's output) while inside the block; yields the encoder."""
        import torch.nn as nn

        owner, blocks_name, norm_name = self._blocks_owner()
        blocks = getattr(owner, blocks_name)
        if top_layer >= len(blocks):
            yield self.encoder
            return
        norm = getattr(owner, norm_name) if norm_name else None
        setattr(owner, blocks_name, nn.ModuleList(list(blocks)[:top_layer]))
        if norm_name:
            setattr(owner, norm_name, nn.Identity())
        try:
            yield self.encoder
        finally:
            setattr(owner, blocks_name, blocks)
            if norm_name:
                setattr(owner, norm_name, norm)

    def forward_layers(self, batch_ids: list[list[int]], layers: list[int]) -> dict:
        """One padded forward pass of token-ID lists; ``{layer: float32 tensor [B, T, d]}``
        (hidden_states numbering). Blocks above ``max(layers)`` are not run."""
        import torch

        width = max(len(t) for t in batch_ids)
        ids = torch.full((len(batch_ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for i, t in enumerate(batch_ids):
            ids[i, : len(t)] = torch.tensor(t)
            mask[i, : len(t)] = 1
        device = next(self.model.parameters()).device
        top = max(layers)
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        with torch.inference_mode(), self.truncated(top) as enc:
            if layers == [top]:  # truncated to `top` blocks: the last hidden state is that layer
                return {top: enc(**inputs).last_hidden_state.float()}
            out = enc(**inputs, output_hidden_states=True)
            return {layer: out.hidden_states[layer].float() for layer in layers}

    # ---------------------------------------------------------------- descriptions
    @classmethod
    def hook_point(cls, layer: int, n_layers: int | None) -> str:
        """Name of the module whose output is ``hidden_states[layer]`` (task-model naming)."""
        embeddings, block, norm = cls.modules
        if layer == 0:
            return embeddings
        if norm is not None and n_layers is not None and layer == n_layers:
            return norm
        return block.format(layer - 1)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """``family``, ``layer_numbering`` and ``residue_alignment`` (recorded in specs)."""
        return {
            "family": cls.family,
            "layer_numbering": cls.layer_numbering,
            "residue_alignment": cls.residue_alignment,
        }


class _ClsEos(ModelAdapter):
    """ESM tokenisers: one vocabulary entry per residue letter between <cls> and <eos>."""

    residue_alignment = CLS_EOS

    def tokenize(self, residues: str) -> list[int]:
        tok = self.tokenizer
        vocab = tok.get_vocab()
        body = [vocab.get(c, tok.unk_token_id) for c in residues]
        return [tok.cls_token_id, *body, tok.eos_token_id]


class Esm2Adapter(_ClsEos):
    family = "esm2"
    name = "ESM-2"
    layer_numbering = LAYERS + "; the last layer after emb_layer_norm_after"
    modules = ("esm.embeddings", "esm.encoder.layer.{}", "esm.encoder.emb_layer_norm_after")
    base = "esm"
    stack = ("encoder", "layer", "emb_layer_norm_after")


class EsmcAdapter(_ClsEos):
    family = "esmc"
    name = "ESM-C"
    layer_numbering = (
        LAYERS + "; the last layer after the final LayerNorm (Biohub's SAE layer numbering)"
    )
    modules = ("esmc.embed_tokens", "esmc.layers.{}", "esmc.norm")
    base = "esmc"
    stack = ("", "layers", "norm")


class _T5Adapter(ModelAdapter):
    layer_numbering = LAYERS + "; the last layer after the encoder's final_layer_norm"
    n_prefix = 0
    modules = ("encoder.embed_tokens", "encoder.block.{}", "encoder.final_layer_norm")
    stack = ("encoder", "block", "final_layer_norm")


class ProtT5Adapter(_T5Adapter):
    family = "prot_t5"
    name = "ProtT5"
    residue_alignment = (
        "residues as space-separated words (U, Z, O, B read as X, as ProtTrans advises) then "
        "</s>: residue j is token j; </s> dropped"
    )

    def residues(self, sequence: str) -> str:
        return sequence.translate(PROTTRANS_RARE)


class AnkhAdapter(_T5Adapter):
    family = "ankh"
    name = "Ankh"
    residue_alignment = (
        "residues as a list of characters (is_split_into_words, as Ankh's examples) then </s>: "
        "residue j is token j; </s> dropped"
    )


class ProtBertAdapter(ModelAdapter):
    family = "protbert"
    name = "ProtBERT"
    layer_numbering = LAYERS + "; no final norm"
    modules = ("bert.embeddings", "bert.encoder.layer.{}", None)
    residue_alignment = (
        "[CLS] residues as space-separated words (U, Z, O, B read as X, as ProtTrans advises) "
        "[SEP]: residue j is token j + 1; [CLS] and [SEP] dropped"
    )

    base = "bert"
    stack = ("encoder", "layer", None)

    def residues(self, sequence: str) -> str:
        return sequence.translate(PROTTRANS_RARE)

    def tokenize(self, residues: str) -> list[int]:
        return list(self.tokenizer(" ".join(residues), add_special_tokens=True)["input_ids"])


ADAPTERS: dict[str, type[ModelAdapter]] = {
    a.family: a for a in (Esm2Adapter, EsmcAdapter, ProtT5Adapter, AnkhAdapter, ProtBertAdapter)
}
#: config.json ``model_type`` -> family (T5 encoders are told apart by their vocabulary)
MODEL_TYPES = {"esm": "esm2", "esmc": "esmc", "t5": "t5", "bert": "protbert"}
DEFAULT_FAMILY = "esm2"


def family_of(model_type: str | None, path: Any = None) -> str:
    """The family of a ``config.json`` ``model_type`` (``"t5"`` is resolved by
    :func:`t5_family` once the tokenizer is loaded)."""
    try:
        return MODEL_TYPES[str(model_type)]
    except KeyError:
        raise InputError(
            f"model type {model_type!r} is not a supported protein language model.",
            path=path,
            fix="use ESM-2 (esm), ESM-C (esmc), ProtT5 or Ankh (t5) or ProtBERT (bert) "
            "checkpoints in transformers format.",
        ) from None


def t5_family(tokenizer: Any) -> str:
    """``prot_t5`` when the vocabulary holds SentencePiece word pieces (``▁A``: ProtT5), else
    ``ankh`` (one plain character per residue)."""
    return "prot_t5" if "▁A" in tokenizer.get_vocab() else "ankh"


def adapter_class(family: str | None) -> type[ModelAdapter]:
    """The adapter of ``family`` (None: ESM-2, what every spec without a family was)."""
    try:
        return ADAPTERS[family or DEFAULT_FAMILY]
    except KeyError:
        raise InputError(
            f"unknown model family {family!r}.", fix=f"use one of {', '.join(ADAPTERS)}."
        ) from None


def hook_point(family: str | None, layer: int | None, n_layers: int | None) -> str | None:
    """Name of the module whose output is ``hidden_states[layer]`` in a model of ``family``."""
    if layer is None:
        return None
    return adapter_class(family).hook_point(layer, n_layers)
