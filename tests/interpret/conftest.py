"""Fixtures for the explain stage: a synthetic association directory written exactly as
docs/design.md specifies (so these tests do not depend on the associate stage), and a local
HTTP server that speaks the Anthropic Messages API and the OpenAI chat-completions API."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
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


LLAMA_CONTEXT_ERROR = "Context size has been exceeded."  # llama.cpp's message for a full KV cache


class FakeLLM:
    """Anthropic (/v1/messages) and OpenAI (/v1/chat/completions) on 127.0.0.1.

    A plausible model: the explanation names the top enrichment result (else the first
    annotation of the strongest example); the simulation predicts 8 for proteins carrying that
    annotation, else 0. It honours Anthropic tool use and an assistant "{" prefill.

    ``faults`` is a list consumed one per request: None (normal), an int HTTP status (with
    retry-after: 0), "malformed" (prose without JSON), "placeholder" (the prompt's placeholder
    echoed), "length" (the reply cut at max_tokens, finish_reason "length"), "context"
    (llama.cpp's HTTP 500 for a full context), "slow" (answers after 1 s) or "hang" (after 30 s).
    ``max_parallel``: more requests than this at once get the context error (a llama.cpp server
    whose slots share one context); ``delay`` (s) keeps every request busy that long.
    ``refuse_response_format``: HTTP 400 for a request that carries one (an old server).
    ``on_request(n)`` is called with the number of requests so far (from the server thread).
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.faults: list = []
        self.lock = threading.Lock()
        self.max_parallel: int | None = None
        self.delay = 0.0
        self.in_flight = 0
        self.peak = 0
        self.refuse_response_format = False
        self.on_request = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                auth = self.headers.get("x-api-key") or self.headers.get("authorization")
                with fake.lock:
                    fake.requests.append({"path": self.path, "body": body, "auth": auth})
                    n = len(fake.requests)
                    fault = fake.faults.pop(0) if fake.faults else None
                    fake.in_flight += 1
                    fake.peak = max(fake.peak, fake.in_flight)
                    crowded = fake.max_parallel is not None and fake.in_flight > fake.max_parallel
                self.in_flight = True
                try:
                    if fake.on_request is not None:
                        fake.on_request(n)
                    if fake.delay:
                        time.sleep(fake.delay)
                    if crowded or fault == "context":
                        return self.send_json(500, error(LLAMA_CONTEXT_ERROR))
                    if fake.refuse_response_format and "response_format" in body:
                        return self.send_json(400, error("response_format is not supported"))
                    if isinstance(fault, int):
                        return self.send_json(fault, error(f"fake {fault}"))
                    if fault in ("slow", "hang"):  # longer than the client's timeout in the tests
                        time.sleep(1.0 if fault == "slow" else 30.0)
                    self.answer(body, fault)
                finally:
                    self.release()

            def release(self):
                """Leave the in-flight count once, before the reply goes out: a client that
                has its reply may send the next request before this thread runs again."""
                if self.in_flight:
                    self.in_flight = False
                    with fake.lock:
                        fake.in_flight -= 1

            def answer(self, body: dict, fault):
                text = fake.reply(body["messages"])
                if fault == "malformed":
                    text = "I believe this feature is about kinases."
                elif fault == "placeholder":
                    text = '{"label": "...", "description": "..."}'
                finish = "stop"
                if fault == "length":
                    text, finish = text[: len(text) // 2], "length"
                if self.path.endswith("/messages"):
                    return self.send_json(200, anthropic_reply(body, text, finish))
                if self.path.endswith("/chat/completions"):
                    return self.send_json(200, openai_reply(body, text, finish))
                self.send_json(404, error("no such path"))

            def send_json(self, code: int, obj: dict):
                data = json.dumps(obj).encode()
                self.release()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                if code != 200:
                    self.send_header("retry-after", "0")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # the client gave up (a timeout)
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
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

    def bodies(self, path_end: str = "") -> list[dict]:
        return [q["body"] for q in self.requests if q["path"].endswith(path_end)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def error(message: str) -> dict:
    return {"type": "error", "error": {"type": "fake", "message": message}}


def _json_part(text: str) -> str:
    m = re.search(r"\{.*\}", text, re.S)
    return m.group(0) if m else text


def anthropic_reply(body: dict, text: str, finish: str) -> dict:
    """A Messages API reply: a tool call when a tool is forced, a continuation after a prefill."""
    content: list[dict]
    stop = "max_tokens" if finish == "length" else "end_turn"
    if body.get("tool_choice", {}).get("type") == "tool" and finish != "length":
        try:
            args = json.loads(_json_part(text))
        except json.JSONDecodeError:
            args = {"answer": text}
        name = body["tool_choice"]["name"]
        content = [{"type": "tool_use", "id": "toolu_fake", "name": name, "input": args}]
        stop = "tool_use"
    else:
        last = body["messages"][-1]
        if last["role"] == "assistant" and text.lstrip().startswith("```"):
            text = _json_part(text)
        if last["role"] == "assistant" and text.startswith(last["content"]):
            text = text[len(last["content"]) :]
        content = [{"type": "text", "text": text}]
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 1000, "output_tokens": 50},
    }


def openai_reply(body: dict, text: str, finish: str) -> dict:
    """A chat completion; bare JSON (no code fence) when a response_format asks for JSON."""
    if "response_format" in body and finish != "length":
        text = _json_part(text)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050},
    }


@pytest.fixture()
def fake_llm():
    f = FakeLLM()
    yield f
    f.close()
