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

import pytest
from synthetic_assoc import CONCEPTS, N_PLANTED, bh, write_assoc_dir  # noqa: F401


@pytest.fixture()
def explain_app():
    """A typer app with the ``explain`` command as the CLI builds it (and a second command, so
    that ``explain`` stays a subcommand)."""
    import typer

    from plmsae.cli.build import build_command
    from plmsae.cli.explain import show_explain
    from plmsae.interpret.explain import ExplainConfig, explain

    app = typer.Typer()
    app.command("explain")(build_command(ExplainConfig, explain.run, show_explain))

    @app.command("other")
    def other() -> None:
        pass

    return app


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
                    fake.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "auth": self.headers.get("x-api-key")
                            or self.headers.get("authorization"),
                        }
                    )
                    fault = fake.faults.pop(0) if fake.faults else None
                if isinstance(fault, int):
                    data = json.dumps(
                        {"type": "error", "error": {"type": "fake", "message": f"fake {fault}"}}
                    ).encode()
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
                text = (
                    "I believe this feature is about kinases."
                    if fault == "malformed"
                    else fake.reply(body["messages"])
                )
                if self.path.endswith("/messages"):
                    resp = {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [{"type": "text", "text": text}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": 1000, "output_tokens": 50},
                    }
                elif self.path.endswith("/chat/completions"):
                    resp = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 1000,
                            "completion_tokens": 50,
                            "total_tokens": 1050,
                        },
                    }
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
            preds = {
                blocks[i]: (8 if key in blocks[i + 1] else 0) for i in range(0, len(blocks), 2)
            }
            return json.dumps(preds)
        # explanation: the top enrichment result, else the first annotation of the strongest example
        m = re.search(r"\n- (.+?) \[", first) or re.search(
            r"Protein 1 \(activation [^)]*\): [^\n]*\n  [^:]+: ([^;(\n]+)", first
        )
        name = m.group(1).strip() if m else "nothing"
        return (
            "```json\n"
            + json.dumps({"label": name[:40], "description": f"Proteins carrying {name}."})
            + "\n```"
        )

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake_llm():
    f = FakeLLM()
    yield f
    f.close()
