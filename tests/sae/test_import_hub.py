"""``hf://`` sources against a local stand-in of the hub endpoint (``HF_ENDPOINT``): a file is
downloaded once into the Hugging Face cache and read from it offline (``HF_HUB_OFFLINE=1``), an
uncached file offline, a missing file and a missing repository are clear errors, and an
all-layer Biohub repository is read one layer at a time. Each import runs in a fresh process,
as the hub client reads these variables when it is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from peers import biohub_repository, interplm_checkpoint, interplm_forward

from plmsae.sae.checkpoint import load_sae, read_sae_config

SRC = Path(__file__).resolve().parents[2] / "src"
RUN = textwrap.dedent("""
    import json, sys
    from plmsae._util import InputError
    from plmsae.sae.imports import import_sae
    for fmt, source, options in json.loads(sys.argv[1]):
        try:
            print(json.dumps(import_sae(fmt, source, **options).to_dict()))
        except InputError as e:
            print(json.dumps("InputError: " + str(e)))
""")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The files of two hub repositories, as published."""
    d = tmp_path_factory.mktemp("published")
    state = interplm_checkpoint(d / "interplm" / "layer_2" / "ae_normalized.pt", "relu")
    biohub_repository(d / "biohub", layers=[1, 2], k=6)
    repos = {
        "Elana/InterPLM-tiny": {
            "layer_2/ae_normalized.pt": (
                d / "interplm" / "layer_2" / "ae_normalized.pt"
            ).read_bytes()
        },
        "biohub/ESMC-tiny-sae-k6-codebook96": {
            p.name: p.read_bytes() for p in sorted((d / "biohub").iterdir())
        },
    }
    return repos, state


def _imports(hub, tmp_path, jobs, offline=False):
    """Run ``import_sae(fmt, source, **options)`` for each job in one fresh process with the hub
    stand-in as ``HF_ENDPOINT``; the result dicts, or the InputError messages."""
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "PLMSAE_NO_PROGRESS": "1",
    }
    hub.requests.clear()
    r = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.strip().splitlines()[-len(jobs) :]]


@pytest.mark.slow
def test_hub_files_are_cached_read_offline_and_errors_are_clear(
    published, tmp_path, tiny_esm_dir, tiny_esmc_dir
):
    repos, state = published
    src = "hf://Elana/InterPLM-tiny/layer_2/ae_normalized.pt"
    opts = {"model": str(tiny_esm_dir), "layer": 2}
    biohub = {"model": str(tiny_esmc_dir), "layer": 2, "hook_point": "hidden_states"}
    with FakeHub(repos) as hub:
        ok, no_file, no_repo, layer2 = _imports(
            hub,
            tmp_path,
            [
                ("interplm", src, {"out": str(tmp_path / "a"), **opts}),
                (
                    "interplm",
                    "hf://Elana/InterPLM-tiny/layer_9/ae.pt",
                    {"out": str(tmp_path / "d"), **opts},
                ),
                ("interplm", "hf://Elana/Nothing-here/ae.pt", {"out": str(tmp_path / "e"), **opts}),
                (
                    "esmc-biohub",
                    "hf://biohub/ESMC-tiny-sae-k6-codebook96",
                    {"out": str(tmp_path / "s"), **biohub},
                ),
            ],
        )
        online = list(hub.requests)
        # offline: the downloaded file comes from the cache without a single request; a file
        # that was never downloaded is a clear error
        cached, uncached = _imports(
            hub,
            tmp_path,
            [
                ("interplm", src, {"out": str(tmp_path / "b"), **opts}),
                (
                    "interplm",
                    src.replace("layer_2", "layer_3"),
                    {"out": str(tmp_path / "c"), **opts},
                ),
            ],
            offline=True,
        )
        assert hub.requests == []
    assert ok["arch"] == "relu" and ok["source"] == src and cached["arch"] == "relu"
    assert any(p.endswith("/layer_2/ae_normalized.pt") for _, p in online)
    assert "layer_9/ae.pt is not a file of Elana/InterPLM-tiny" in no_file
    assert "repository Elana/Nothing-here does not exist" in no_repo
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in uncached
    # the all-layer Biohub repository: config.json and layer 2 only were fetched
    assert layer2["layer"] == 2 and layer2["k"] == 6
    biohub_files = {p.rsplit("/", 1)[-1] for _, p in online if "/biohub/" in p}
    assert biohub_files == {"config.json", "layer_2.safetensors"}
    x = torch.randn(64, 32)
    codes, _ = interplm_forward(state, "relu", x)
    torch.testing.assert_close(load_sae(tmp_path / "b").encode(x), codes, atol=1e-5, rtol=0)
    files = read_sae_config(tmp_path / "b").training["imported"]["files"]
    assert list(files) == ["ae_normalized.pt"]
