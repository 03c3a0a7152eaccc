"""Fixtures for the explain stage: a synthetic association directory written exactly as
docs/design.md specifies (so these tests do not depend on the associate stage), and a local
HTTP server that speaks the Anthropic Messages API and the OpenAI chat-completions API."""

from __future__ import annotations

import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import fisher_exact

CONCEPTS = [  # (concept, category, name, prevalence)
    ("GO:0005524", "GO:MF", "ATP binding", 0.25),
    ("GO:0003677", "GO:MF", "DNA binding", 0.15),
    ("GO:0004672", "GO:MF", "protein kinase activity", 0.12),
    ("GO:0016491", "GO:MF", "oxidoreductase activity", 0.15),
    ("GO:0006412", "GO:BP", "translation", 0.12),
    ("GO:0006810", "GO:BP", "transport", 0.2),
    ("GO:0006355", "GO:BP", "regulation of DNA-templated transcription", 0.15),
    ("GO:0005886", "GO:CC", "plasma membrane", 0.2),
    ("GO:0005634", "GO:CC", "nucleus", 0.2),
    ("GO:0005737", "GO:CC", "cytoplasm", 0.7),          # generic: hidden in prompts
    ("family:Protein kinase superfamily", "family", "Protein kinase superfamily", 0.1),
    ("family:Universal ribosomal protein uL2 family", "family", "Universal ribosomal protein uL2 family", 0.1),
    ("location:Mitochondrion", "location", "Mitochondrion", 0.12),
    ("Transmembrane", "residue", "Transmembrane", 0.15),
]
N_PLANTED = 10   # SAE features 0..9 fire on concept f (f < 10); 10..13 fire at random


def bh(p: np.ndarray) -> np.ndarray:
    n = len(p)
    order = np.argsort(p)
    q = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1)
    return out


def write_assoc_dir(out: Path, n_proteins: int = 300, seed: int = 0, with_test_split: bool = True) -> Path:
    """A small ASSOC_DIR following docs/design.md (stage 4) exactly."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "activations").mkdir(exist_ok=True)
    n = n_proteins
    cluster = np.sort(rng.integers(0, n // 3, n))
    cl_split = rng.choice(["train", "validation", "test"], size=n // 3, p=[0.6, 0.1, 0.3])
    split = cl_split[cluster] if with_test_split else np.where(cl_split[cluster] == "test", "train", cl_split[cluster])
    member = np.column_stack([rng.random(n) < prev for *_, prev in CONCEPTS])
    proteins = pd.DataFrame({"id": [f"Q{i:05d}" for i in range(n)], "split": split,
                             "cluster": [f"c{c}" for c in cluster],
                             "length": rng.integers(50, 600, n),
                             "name": [f"Uncharacterized protein {i}" if i % 7 == 0 else f"Protein {i}"
                                      for i in range(n)]})
    proteins.to_parquet(out / "proteins.parquet", index=False)
    concepts = pd.DataFrame({"concept": [c for c, *_ in CONCEPTS], "category": [c for _, c, *_ in CONCEPTS],
                             "name": [nm for _, _, nm, _ in CONCEPTS], "n_proteins": member.sum(0)})
    concepts.to_parquet(out / "concepts.parquet", index=False)
    sp.save_npz(out / "annotations.npz", sp.csr_matrix(member))

    # SAE: sparse, features 0..N_PLANTED-1 follow one concept each (with noise)
    n_sae = N_PLANTED + 4
    sae = np.zeros((n, n_sae), np.float32)
    for f in range(n_sae):
        fires = (member[:, f] & (rng.random(n) < 0.9)) if f < N_PLANTED else rng.random(n) < 0.15
        fires |= rng.random(n) < 0.03
        sae[fires, f] = rng.lognormal(0.5, 0.4, fires.sum())
    # neurons: dense, weakly tied to concepts, negative values included
    n_neuron = 8
    neuron = (rng.normal(0, 1, (n, n_neuron)) + 0.4 * member[:, :n_neuron]).astype(np.float32)
    random_ = np.where(rng.random((n, 6)) < 0.2, rng.random((n, 6)), 0).astype(np.float32)
    acts = {"sae": sae, "neuron": neuron, "random": random_}
    rows, feats = [], []
    for src, x in acts.items():
        sp.save_npz(out / "activations" / f"{src}.npz", sp.csr_matrix(x))
        for f in range(x.shape[1]):
            active = x[:, f] > 0
            feats.append({"source": src, "feature": f, "density": float(active.mean()),
                          "max_activation": float(x[:, f].max()),
                          "top_proteins": proteins["id"].to_numpy()[np.argsort(-x[:, f])[:5]].tolist()})
            train = split == "train"
            for j, (cid, cat, _, _) in enumerate(CONCEPTS):
                a, c = active[train], member[train, j]
                both = int((a & c).sum())
                table = [[both, int((a & ~c).sum())], [int((~a & c).sum()), int((~a & ~c).sum())]]
                odds, p = fisher_exact(table, alternative="greater")
                prec = both / max(a.sum(), 1)
                rec = both / max(c.sum(), 1)
                rows.append({"source": src, "feature": f, "concept": cid, "category": cat, "threshold": 0.0,
                             "n_active": int(a.sum()), "n_concept": int(c.sum()), "n_both": both,
                             "n_population": int(train.sum()), "p_value": p, "q_value": p,
                             "precision": prec, "recall": rec,
                             "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                             "odds_ratio": odds, "auroc": 0.5, "split": "train"})
    assoc = pd.DataFrame(rows)
    assoc["q_value"] = bh(assoc["p_value"].to_numpy())
    assoc.to_parquet(out / "associations.parquet", index=False)
    pd.DataFrame(feats).to_parquet(out / "features.parquet", index=False)
    summary = {}
    for src in acts:
        a = assoc[(assoc.source == src) & (assoc.q_value < 0.05) & (assoc.precision >= 0.5)]
        summary[src] = {"n_features": int(acts[src].shape[1]), "n_features_associated": int(a.feature.nunique()),
                        "by_category": a.groupby("category").feature.nunique().to_dict()}
    summary["settings"] = {"synthetic": True}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "run.json").write_text(json.dumps({
        "sae": "synthetic", "store": "synthetic", "layer": 4, "level": "protein", "pooling": "mean",
        "model": {"id": "synthetic", "description": "synthetic test model"}}, indent=2))
    return out


@pytest.fixture(scope="session")
def _assoc_template(tmp_path_factory) -> Path:
    return write_assoc_dir(tmp_path_factory.mktemp("assoc_template") / "assoc")


@pytest.fixture()
def assoc_dir(_assoc_template, tmp_path) -> Path:
    """A fresh copy of the synthetic association directory (the explain stage writes into it)."""
    return Path(shutil.copytree(_assoc_template, tmp_path / "assoc"))


# ------------------------------------------------------------------ fake LLM server

class FakeLLM:
    """Anthropic (/v1/messages) and OpenAI (/v1/chat/completions) on 127.0.0.1.

    A plausible model: the explanation names the top enrichment result (else the first
    annotation of the strongest example);
    the simulation predicts 8 for proteins carrying that annotation, else 0. ``faults`` is a
    list consumed one per request: None (normal), an int HTTP status (with retry-after: 0), or
    "malformed" (a 200 reply whose text is not the asked-for JSON) or "slow" (answers after 1 s).
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.faults: list = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "body": body,
                                          "auth": self.headers.get("x-api-key") or self.headers.get("authorization")})
                    fault = fake.faults.pop(0) if fake.faults else None
                if isinstance(fault, int):
                    data = json.dumps({"type": "error", "error": {"type": "fake", "message": f"fake {fault}"}}).encode()
                    self.send_response(fault)
                    self.send_header("content-type", "application/json")
                    self.send_header("retry-after", "0")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if fault == "slow":  # longer than the client's timeout in the tests
                    import time

                    time.sleep(1.0)
                text = "I believe this feature is about kinases." if fault == "malformed" else fake.reply(body["messages"])
                if self.path.endswith("/messages"):
                    resp = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                            "stop_sequence": None, "usage": {"input_tokens": 1000, "output_tokens": 50}}
                elif self.path.endswith("/chat/completions"):
                    resp = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
                            "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(resp).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def reply(messages: list[dict]) -> str:
        first = messages[0]["content"]
        if "Predict the feature's activation" in first:
            desc = re.search(r'description:\n"(.*)"', first).group(1)
            key = re.search(r"carrying (.*?)\.$", desc).group(1) if "carrying" in desc else "\x00"
            blocks = re.split(r"\nProtein (\d+): ", first)[1:]
            preds = {blocks[i]: (8 if key in blocks[i + 1] else 0) for i in range(0, len(blocks), 2)}
            return json.dumps(preds)
        # explanation: the top enrichment result, else the first annotation of the strongest example
        m = (re.search(r"\n- (.+?) \[", first)
             or re.search(r"Protein 1 \(activation [^)]*\): [^\n]*\n  [^:]+: ([^;(\n]+)", first))
        name = m.group(1).strip() if m else "nothing"
        return "```json\n" + json.dumps({"label": name[:40], "description": f"Proteins carrying {name}."}) + "\n```"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake_llm():
    f = FakeLLM()
    yield f
    f.close()
