"""Issue 20, items 5, 6, 9, 13 and 19: the endpoint as configured: Slurm shards from the task id,
masking only credentials in PROXY_URL, user info refused, --check that tells the truth quickly,
and connection errors that name the proxy they went through."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, completion, test_runtime

HERE = Path(__file__).resolve().parent
BASE = URL.removesuffix("/chat/completions")


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def cli(tmp_path: Path, *argv: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """The real CLI as a subprocess: (its result, the clock time it ended)."""
    environment = {**os.environ, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"), "RETRY_BASE_DELAY": "0",
                   "NUM_WORKERS": "2", "NUM_JUDGES": "1", "ENABLE_REBUTTAL": "false", "MIN_JUDGE_CONFIDENCE": "0",
                   **env}
    done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), *argv], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return done, time.monotonic()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- item 5: a Slurm array's shard is its task id -------------------------------------------------

def slurm(task: int, ids: list[int]) -> dict[str, str]:
    """What Slurm sets in task ``task`` of an array submitted as --array=<ids>."""
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(min(ids)),
            "SLURM_ARRAY_TASK_MAX": str(max(ids)), "SLURM_ARRAY_TASK_COUNT": str(len(ids))}


@pytest.mark.parametrize("ids, shards", [
    (list(range(1, 9)), list(range(1, 9))),
    (list(range(0, 8)), [8, *range(1, 8)]),
    ([3, 5], [3, 5]),
    ([0, 6], [8, 6]),
], ids=["array-1-8", "array-0-7", "resubmitted-3,5", "resubmitted-0,6-of-0-7"])
def test_each_slurm_task_runs_the_shard_of_its_own_id(ids: list[int], shards: list[int]) -> None:
    """With --shard auto/8 a task's id is its shard (id 0 is shard 8): a resubmitted part reruns exactly its shards."""
    assert [moa.parse_shard("auto/8", slurm(task, ids)) for task in ids] == [moa.Shard(k, 8) for k in shards]


@pytest.mark.parametrize("flag, environment, says", [
    ("auto", slurm(3, [3, 5]), "--shard auto/8"),
    ("auto/8", slurm(9, list(range(1, 10))), "--array=1-8"),
    ("auto/8", slurm(3, list(range(0, 9))), "0 and 8"),
], ids=["no-count", "id-above-the-count", "ids-0-and-N-both"])
@respx.mock
def test_a_slurm_task_that_cannot_be_mapped_is_refused(flag: str, environment: dict[str, str], says: str,
                                                       endpoint_env, monkeypatch, tmp_path, capsys) -> None:
    """Plain auto under Slurm, an id above N, or ids 0 and N in one array: exit 2, one line saying what to submit."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "q.txt").write_text("Q1?\nQ2?\n")
    code = moa.main(["-f", str(tmp_path / "q.txt"), "-o", str(tmp_path / "out.jsonl"), "--shard", flag],
                    runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 2 and route.call_count == 0
    assert len(error_lines(err)) == 1 and says in err


# --- item 6: only credentials in PROXY_URL are secrets --------------------------------------------

AZURE = "https://res.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21"


@pytest.mark.parametrize("url, shown, secret", [
    (AZURE, AZURE, None),
    ("https://g.googleapis.com/v1beta/openai/chat/completions?key=AIzaFAKE0123456789&alt=json",
     "https://g.googleapis.com/v1beta/openai/chat/completions?key=***&alt=json", "AIzaFAKE0123456789"),
    ("https://acct.example/v1/chat/completions?sv=2022-11-02&sig=SASsig0123%2B45%3D&se=2030-01-01",
     "https://acct.example/v1/chat/completions?sv=2022-11-02&sig=***&se=2030-01-01", "SASsig0123+45="),
    ("https://s3.example/v1/chat/completions?X-Amz-Date=20250101T000000Z&X-Amz-Signature=deadbeef0123",
     "https://s3.example/v1/chat/completions?X-Amz-Date=20250101T000000Z&X-Amz-Signature=***", "deadbeef0123"),
    ("https://apim.example/v1/chat/completions?api-version=2024-10-21&subscription-key=0123abcd4567",
     "https://apim.example/v1/chat/completions?api-version=2024-10-21&subscription-key=***", "0123abcd4567"),
], ids=["azure-api-version", "google-key", "azure-sas-sig", "aws-signature", "apim-subscription-key"])
def test_credential_parameters_are_masked_and_harmless_ones_shown(url: str, shown: str, secret: str | None) -> None:
    """Where PROXY_URL is shown, credential parameters read *** and api-version and dates stay; only credentials
    are secrets."""
    config = moa.Config(proxy_url=url, api_key=FAKE_KEY)
    assert moa.display_url(url) == shown and config.shown()["PROXY_URL"] == shown and moa.masked_url(url) == shown
    assert "2024-10-21" not in config.secrets and "2030-01-01" not in config.secrets
    assert "20250101T000000Z" not in config.secrets
    if secret:
        assert secret in config.secrets and secret not in moa.redact(f"echo {secret}", config.secrets)


@respx.mock
def test_an_answer_equal_to_a_url_query_value_is_never_masked(monkeypatch, tmp_path, capsys) -> None:
    """Azure's ?api-version=2024-10-21 and an answer "2024-10-21": stdout, --json, transcript and batch line keep it."""
    monkeypatch.setenv("PROXY_URL", AZURE)
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    monkeypatch.setenv("RETRY_BASE_DELAY", "0")
    monkeypatch.setenv("STRAGGLER_FACTOR", "0")
    respx.post(AZURE).mock(side_effect=FakeModel(answer="2024-10-21"))
    assert moa.main(["-q", "When was the API version released?", "--json"], runtime=test_runtime()) == 0
    assert json.loads(capsys.readouterr().out)["final_answer"] == "2024-10-21"
    assert moa.main(["-q", "When?"], runtime=test_runtime()) == 0
    assert "Answer: 2024-10-21" in capsys.readouterr().out
    transcript = sorted((tmp_path / "logs").glob("*.txt"))[0].read_text()
    assert "<answer>2024-10-21</answer>" in transcript and "api-version=2024-10-21" in transcript
    (tmp_path / "q.txt").write_text("When?\n")
    assert moa.main(["-f", str(tmp_path / "q.txt"), "-o", str(tmp_path / "out.jsonl")], runtime=test_runtime()) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["final_answer"] == "2024-10-21"


# --- item 9: user info in PROXY_URL is refused -----------------------------------------------------

@pytest.mark.parametrize("url", ["https://user:pw-SECRET-0123456789@proxy.test/v1",
                                 "https://sk-SECRET-as-user-0123@proxy.test/v1"], ids=["user-and-password", "user"])
@respx.mock
def test_user_info_in_proxy_url_is_refused_and_only_bearer_is_sent(url: str, endpoint_env, monkeypatch,
                                                                   capsys) -> None:
    """httpx would send user info as Basic auth in place of API_KEY: refused (exit 2, nothing sent, nothing shown);
    without it the request carries the Bearer key."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    monkeypatch.setenv("PROXY_URL", url)
    code = moa.main(["-q", "Q?"], runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 2 and route.call_count == 0
    assert len(error_lines(err)) == 1 and "API_KEY" in err and "Bearer" in err and "SECRET" not in err
    monkeypatch.setenv("PROXY_URL", BASE)
    assert moa.main(["-q", "Q?"], runtime=test_runtime()) == 0
    assert {call.request.headers["authorization"] for call in route.calls} == {f"Bearer {FAKE_KEY}"}


# --- item 13: --check -----------------------------------------------------------------------------

def models_list(*names: str) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [{"id": name, "object": "model"} for name in names]})


def mock_check(chat: httpx.Response, models: httpx.Response, props: httpx.Response | None = None) -> respx.Route:
    respx.get(f"{BASE}/models").mock(return_value=models)
    respx.get(BASE.removesuffix("/v1") + "/props").mock(return_value=props or httpx.Response(404))
    return respx.post(URL).mock(return_value=chat)


@respx.mock
def test_check_counts_a_reasoning_models_cut_empty_reply_as_working(endpoint_env, capsys) -> None:
    """A reply with no text cut at the probe's tokens (finish_reason length) proves endpoint, key and model: ok."""
    mock_check(completion("", "length"), models_list("o3-mini"))
    code = moa.main(["--check", "--model", "o3-mini"], runtime=test_runtime())
    out = capsys.readouterr().out
    assert code == 0 and "answered a chat request" in out and "note: the reply was cut" in out


@pytest.mark.parametrize("models, says", [
    (models_list(*(f"org/model-{n:05d}-with-a-long-descriptive-name" for n in range(3000)), "gpt-4o"),
     "ok: the endpoint lists"),
    (httpx.Response(200, content=b'{"data": [' + b'{"id": "m"},' * (8 * 2**20 // 12) + b"{}]}"),
     "(GET /models: over 8 MB, not read)"),
], ids=["200-kb", "over-8-mb"])
@respx.mock
def test_check_reads_a_large_models_list_or_says_it_is_too_large(models: httpx.Response, says: str,
                                                                 endpoint_env, capsys) -> None:
    """A models list of 200 KB is read (the model found); one over 8 MB is said to be too large, not empty."""
    mock_check(completion("OK"), models)
    assert moa.main(["--check", "--model", "gpt-4o"], runtime=test_runtime()) == 0
    out = capsys.readouterr().out
    assert says in out and "does not list" not in out


@respx.mock
def test_a_failed_check_prints_its_error_once_and_no_ok_line(endpoint_env, capsys) -> None:
    """A rejected key: the error once, and no "ok" from the models list or /props beside it."""
    mock_check(httpx.Response(401, json={"error": {"message": "Invalid API Key"}}), models_list("default", "gpt"),
               httpx.Response(200, json={"default_generation_settings": {"n_ctx": 131072}}))
    code = moa.main(["--check"], runtime=test_runtime())
    captured = capsys.readouterr()
    assert code == 1 and captured.out.splitlines() == error_lines(captured.out)
    assert (captured.out + captured.err).count("rejected the API key") == 1


@pytest.mark.parametrize("flags", [["--json"], ["-o", "out.jsonl"], ["--shard", "1/2"], ["--logs", "none"],
                                   ["--dry-run"], ["--concurrency", "2"], ["--from", "judges"], ["--no-resume"]])
@respx.mock
def test_check_refuses_flags_it_would_ignore(flags: list[str], endpoint_env, capsys) -> None:
    """--check with a batch, output or single-question flag: exit 2, one line naming the flag, nothing sent."""
    route = mock_check(completion("OK"), models_list("default"))
    code = moa.main(["--check", *flags], runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 2 and route.call_count == 0
    assert len(error_lines(err)) == 1 and flags[0] in err and "--check" in err


class SilentProbes(ThreadingHTTPServer):
    """Answers the chat request; accepts GET /models and /props and never answers them (until closed)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.gets: list[float] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.gets.append(time.monotonic())
                server.release.wait(30)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                data = json.dumps({"choices": [{"message": {"content": "OK"}, "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


def test_check_ends_promptly_when_models_and_props_never_answer(tmp_path) -> None:
    """Silent optional probes are asked at once and given one short timeout together, not 2 x REQUEST_TIMEOUT."""
    server = SilentProbes()
    try:
        done, ended = cli(tmp_path, "--check", PROXY_URL=f"http://127.0.0.1:{server.server_address[1]}/v1",
                          REQUEST_TIMEOUT="1")
    finally:
        server.close()
    assert done.returncode == 0 and "answered a chat request" in done.stdout
    assert "(GET /models: no answer within 1s)" in done.stdout
    assert len(server.gets) == 2 and server.gets[1] - server.gets[0] < 0.5, "both probes at once"
    assert ended - server.gets[0] < 1.7, "one probe timeout, not two in a row"


# --- item 19: a proxy from the environment is named ------------------------------------------------

def test_a_bad_http_proxy_is_named_in_connection_errors(server, tmp_path) -> None:
    """HTTP_PROXY pointing at a closed port: every connection error names the proxy (without its password) and
    NO_PROXY; with NO_PROXY naming the endpoint's host, the run goes straight to it."""
    endpoint, port = server(), closed_port()
    proxy = f"http://bob:proxy-SECRET-0123@127.0.0.1:{port}"
    done, _ = cli(tmp_path, "-q", "Q?", PROXY_URL=endpoint.url, HTTP_PROXY=proxy, MAX_RETRIES="0")
    errors = error_lines(done.stderr)
    assert done.returncode == 1 and len(errors) == 1 and endpoint.starts() == []
    assert f"through the proxy http://***@127.0.0.1:{port} (HTTP_PROXY)" in errors[0] and "NO_PROXY" in errors[0]
    assert "proxy-SECRET" not in done.stderr + done.stdout
    bypassed, _ = cli(tmp_path, "-q", "Q?", PROXY_URL=endpoint.url, HTTP_PROXY=proxy, NO_PROXY="127.0.0.1")
    assert bypassed.returncode == 0 and endpoint.starts()


@pytest.mark.parametrize("environment, url, named", [
    ({"ALL_PROXY": "socks5://10.0.0.1:1080"}, "https://api.example/v1", "socks5://10.0.0.1:1080 (ALL_PROXY)"),
    ({"https_proxy": "10.0.0.2:3128", "HTTP_PROXY": "http://10.0.0.3:3128"}, "https://api.example/v1",
     "http://10.0.0.2:3128 (https_proxy)"),
    ({"HTTPS_PROXY": "http://10.0.0.2:3128"}, "http://api.example/v1", None),
    ({"HTTP_PROXY": "http://10.0.0.3:3128", "NO_PROXY": "example"}, "http://api.example/v1", None),
], ids=["all-proxy", "https-lower-case", "other-scheme", "no-proxy"])
def test_the_proxy_named_is_the_one_httpx_uses(environment: dict[str, str], url: str, named: str | None,
                                               monkeypatch) -> None:
    """The proxy an error names follows httpx's own rules: scheme, ALL_PROXY, lower case first, NO_PROXY."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert moa.environment_proxy(url) == named
