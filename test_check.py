"""--check against a real local server that imitates llama.cpp: /v1/chat/completions, /v1/models, /props."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def llama_like(status: int = 200, n_ctx: int = 1024) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/props":
                self.reply(200, {"default_generation_settings": {"n_ctx": n_ctx}, "total_slots": 5})
            elif self.path == "/v1/models":
                self.reply(200, {"object": "list", "data": [{"id": "gemma-3-270m", "object": "model"}]})
            else:
                self.reply(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if status != 200:
                self.reply(status, {"error": {"message": "Invalid API Key", "type": "authentication_error"}})
                return
            self.reply(200, {"object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check(server: ThreadingHTTPServer, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PROXY_URL": f"http://127.0.0.1:{server.server_address[1]}/v1",
                   "API_KEY": "sk-check-0123456789", "LOG_DIR": str(tmp_path / "logs"), **env}
    return subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), "--check"], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def serve():
    started: list[ThreadingHTTPServer] = []

    def start(**kwargs: int) -> ThreadingHTTPServer:
        started.append(llama_like(**kwargs))
        return started[-1]

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_check_reports_reach_model_and_slot_context(serve, tmp_path) -> None:
    """--check: the chat call works, the listed models are named, and a MAX_TOKENS too big for a slot is flagged."""
    done = check(serve(), tmp_path, MODEL_NAME="gemma-3-270m")
    assert done.returncode == 0, done.stderr
    assert "answered a chat request" in done.stdout and "gemma-3-270m" in done.stdout
    assert "1024 tokens of context per slot" in done.stdout
    assert "warning: MAX_TOKENS=8192 cannot fit a slot of 1024 tokens" in done.stdout
    fits = check(serve(n_ctx=131072), tmp_path, MODEL_NAME="gemma-3-270m", MAX_TOKENS="512", JUDGE_MAX_TOKENS="512")
    assert fits.returncode == 0 and "warning" not in fits.stdout


def test_check_names_a_missing_model_and_a_rejected_key(serve, tmp_path) -> None:
    """A model the server does not list is a warning; a rejected key fails the check (exit 1) in one line."""
    listed = check(serve(), tmp_path, MODEL_NAME="llama3:8b")
    assert listed.returncode == 0 and "does not list llama3:8b" in listed.stdout
    refused = check(serve(status=401), tmp_path)
    assert refused.returncode == 1 and "rejected the API key" in refused.stdout
    assert "sk-check-0123456789" not in refused.stdout + refused.stderr


def endless_models() -> ThreadingHTTPServer:
    """A server whose /v1/models never ends (and claims 2 GB), whose chat works."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2000000000")
            self.end_headers()
            try:
                for _ in range(200_000):  # bounded: about 200 MB at most, if nobody hangs up
                    self.wfile.write(b"[" * 1024)
            except OSError:
                pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            data = json.dumps({"choices": [{"message": {"content": "OK"}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_check_reads_only_a_bounded_models_list(tmp_path) -> None:
    """A /models reply without end is cut at a small cap: --check still reports, in bounded memory and time."""
    server = endless_models()
    try:
        done = check(server, tmp_path, REQUEST_TIMEOUT="5")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0 and "answered a chat request" in done.stdout and "Traceback" not in done.stderr
    assert "no models list could be read (GET /models: over 8 MB, not read)" in done.stdout
