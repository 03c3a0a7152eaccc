"""A local stand-in of the Hugging Face hub endpoint for ``HF_ENDPOINT``: serves the files of
in-memory model repositories as ``/{owner}/{repo}/resolve/{revision}/{path}`` (HEAD and GET,
with the ``X-Repo-Commit`` / ``ETag`` headers ``huggingface_hub`` reads, and its error codes for a
missing repository or file), and logs every request."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    """``with FakeHub({"owner/repo": {"path": b"bytes"}}) as hub: hub.url, hub.requests``."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append((h.command, path))
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(h, 404, "EntryNotFound", "unknown route")
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        if repo not in self.repos:
            return self._error(h, 404, "RepoNotFound", "Repository not found")
        if parts[3] not in ("main", self.commit(repo)):
            return self._error(h, 404, "RevisionNotFound", "Invalid rev id")
        data = self.repos[repo].get(filename)
        if data is None:
            return self._error(h, 404, "EntryNotFound", "Entry not found")
        h.send_response(200)
        h.send_header("X-Repo-Commit", self.commit(repo))
        h.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        if body:
            h.wfile.write(data)

    @staticmethod
    def _error(h: BaseHTTPRequestHandler, code: int, error_code: str, message: str) -> None:
        payload = ('{"error": "' + message + '"}').encode()
        h.send_response(code)
        h.send_header("X-Error-Code", error_code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)
