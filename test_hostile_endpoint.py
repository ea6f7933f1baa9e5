"""Hostile variants at the endpoint (retry hints, stragglers, shards, masking, --check, proxies),
each one found broken after issue 20's first fixes and failing without its own.

Time runs virtually (conftest); sockets, environment proxies and --check go through the real CLI
against small servers on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, VirtualClock, answer_in_virtual_time, completion, test_runtime

HERE = Path(__file__).resolve().parent
NOW = 1_700_000_000.0


def straggler_config(**changes: Any) -> moa.Config:
    config = moa.Config(URL, FAKE_KEY, retry_base_delay=0.1, enable_file_logging=False, straggler_factor=3.0,
                        min_judge_confidence=0, num_workers=5, num_judges=3)
    return replace(config, **changes)


# --- retry hints: every hint is read, and a hint the delay cap cuts short earns no free retries ------


def waits_until_given_up(error: moa.APIError, config: moa.Config) -> list[float]:
    """Every wait RetriesUsed grants one call that keeps getting ``error``."""
    retries, rng, waits = moa.RetriesUsed(), random.Random(1), []
    while (wait := retries.next_wait(error, config, rng)) is not None:
        waits.append(wait)
    return waits


def test_a_hint_longer_than_retry_max_delay_earns_no_busy_retries() -> None:
    """RETRY_MAX_DELAY=1 under 429 Retry-After: 30: each retry comes 29 s before the server said, so it counts
    toward MAX_RETRIES (4 requests), not as one of BUSY_RETRIES free ones (24 requests, one a second);
    Retry-After: 1 is waited out in full, and its retries stay free."""
    config = moa.Config(URL, FAKE_KEY, max_retries=3, retry_base_delay=0.5, retry_max_delay=1.0)
    error = moa.status_error(429, httpx.Headers({"Retry-After": "30"}), b"", NOW)
    assert error.backpressure and waits_until_given_up(error, config) == [1.0, 1.0, 1.0]
    honoured = moa.status_error(429, httpx.Headers({"Retry-After": "1"}), b"", NOW)
    assert waits_until_given_up(honoured, config) == [1.0] * (moa.BUSY_RETRIES + 3)


def test_the_longest_of_repeated_hint_headers_wins() -> None:
    """Two Retry-After lines (the gateway's and its upstream's), which httpx joins as "5, 12": 12 s, not no hint."""
    headers = httpx.Headers([("Retry-After", "5"), ("Retry-After", "12"), ("retry-after-ms", "2000"),
                             ("retry-after-ms", "3000")])
    assert moa.retry_hint(headers, 429, NOW) == 12.0


@pytest.fixture
def five_hours_east(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The local time zone is UTC+5 for the test (a POSIX TZ string: no time zone database needed)."""
    monkeypatch.setenv("TZ", "XYZ-5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_an_http_date_without_a_zone_is_read_as_gmt(five_hours_east: None) -> None:
    """Retry-After as email.utils.formatdate writes it ("... -0000"): 30 s from now wherever the client runs,
    not 5 h in the past on a machine at UTC+5 (no hint at all)."""
    now = time.time()
    for value in (email.utils.formatdate(now + 30), email.utils.formatdate(now + 30, usegmt=True)):
        assert moa.retry_hint(httpx.Headers({"Retry-After": value}), 429, now) == pytest.approx(30, abs=1)


# --- stragglers: the bar is set by calls that answered ---------------------------------------------


async def test_calls_that_failed_fast_do_not_set_the_straggler_bar() -> None:
    """Two solvers refused at once (HTTP 400), the other three take 5 s: the failures' 0 s at the endpoint
    are no answer's latency, so the three are not cut at 1 s and the question is answered."""
    clock, model = VirtualClock(), FakeModel()

    async def side_effect(request: httpx.Request) -> httpx.Response:
        phase, agent = request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]
        if phase == "generate" and agent in ("solver-1", "solver-2"):
            return completion(None, status=400)
        await clock.sleep(5.0 if phase == "generate" else 1.0)
        return model(request)

    result = await answer_in_virtual_time(straggler_config(), clock, side_effect)
    assert result.status == "ok", result.error
    assert not [c for c in result.calls if c.failure == "cut as a straggler"], result.notes


# --- environment proxies httpx cannot use: refused up front, named, never a traceback -------------

def cli(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """The real CLI as a subprocess, with no proxy variable but those given."""
    environment = {name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")}
    environment |= {"API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"), "MOA_ENV_FILE": os.devnull,
                    "RETRY_BASE_DELAY": "0", "NUM_WORKERS": "2", "NUM_JUDGES": "1", **env}
    return subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), *argv], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SOCKS_MISSING = importlib.util.find_spec("socksio") is None


@pytest.mark.parametrize("mode, variable, value, says", [
    ("-q", "ALL_PROXY", "socks5://bob:proxy-SECRET-0123@127.0.0.1:1080", "socksio"),
    ("--check", "http_proxy", "ftp://bob:proxy-SECRET-0123@127.0.0.1:21", "http://, https:// or socks5://"),
    ("--check", "HTTP_PROXY", "http://bob:proxy-SECRET-0123@127.0.0.1:99999", "port"),
    ("-q", "NO_PROXY", "localhost,[::1]", "[::1]"),
], ids=["socks-without-socksio", "unknown-scheme", "port-out-of-range", "unreadable-no-proxy"])
def test_a_proxy_variable_httpx_cannot_use_is_refused_in_one_line(mode: str, variable: str, value: str, says: str,
                                                                  tmp_path: Path) -> None:
    """A proxy variable httpx would crash on (a traceback, or "internal error" with the proxy's password) is
    refused before anything is sent: exit 2, one error line naming the variable, its credentials masked."""
    if says == "socksio" and not SOCKS_MISSING:
        pytest.skip("socksio is installed here: a SOCKS proxy is usable")
    argv = ["-q", "What is 2 + 2?"] if mode == "-q" else ["--check"]
    extra = {"HTTP_PROXY": "http://127.0.0.1:3128"} if variable == "NO_PROXY" else {}
    done = cli(tmp_path, *argv, PROXY_URL=f"http://127.0.0.1:{closed_port()}/v1", **{variable: value}, **extra)
    output = done.stdout + done.stderr
    assert done.returncode == moa.EXIT_USAGE, output
    assert "Traceback" not in output and "internal error" not in output and "proxy-SECRET" not in output
    (line,) = [line for line in output.splitlines() if line.strip()]
    assert line.startswith("error: ") and variable in line and says in line, line


def test_the_library_refuses_a_proxy_variable_httpx_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """debate() raises ConfigError naming the variable and its bad port, not an ExceptionGroup from a connect."""
    monkeypatch.setenv("HTTPS_PROXY", "http://10.0.0.1:99999")
    with pytest.raises(moa.ConfigError, match="HTTPS_PROXY='http://10.0.0.1:99999' .*port"):
        asyncio.run(moa.debate("What is 2 + 2?", config=moa.Config(URL, FAKE_KEY)))


# --- --check: it checks what a run would send, refuses flags it ignores, and says where a redirect goes ---

BASE = URL.removesuffix("/chat/completions")


def mock_check(chat: httpx.Response) -> respx.Route:
    respx.get(f"{BASE}/models").mock(return_value=httpx.Response(200, json={"data": [{"id": "default"}]}))
    respx.get(BASE.removesuffix("/v1") + "/props").mock(return_value=httpx.Response(404))
    return respx.post(URL).mock(return_value=chat)


@respx.mock
def test_check_streams_when_the_runs_would(endpoint_env, capsys) -> None:
    """--check --stream (or STREAM=true) sends its request as a run would, streamed, so a proxy that breaks
    server-sent events fails the check instead of the first run."""
    events = ('data: {"choices":[{"delta":{"content":"OK"},"finish_reason":null}]}\n\n'
              'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
    route = mock_check(httpx.Response(200, content=events.encode(), headers={"content-type": "text/event-stream"}))
    assert moa.main(["--check", "--stream"], runtime=test_runtime()) == 0
    assert json.loads(route.calls[0].request.content)["stream"] is True
    assert "answered a chat request" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--early-exit"], ["--phase-barriers"], ["--no-rebuttal"], ["--rounds", "2"],
                                   ["--max-calls", "9"], ["--max-tokens", "900"], ["--deadline", "1"]])
@respx.mock
def test_check_refuses_debate_flags_it_would_ignore(flags: list[str], endpoint_env, capsys) -> None:
    """--check with a flag that shapes or budgets a debate it does not run: exit 2, one line naming it, nothing sent."""
    route = mock_check(completion("OK"))
    assert moa.main(["--check", *flags], runtime=test_runtime()) == moa.EXIT_USAGE and route.call_count == 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and flags[0] in errors[0] and "--check" in errors[0]


@respx.mock
def test_check_says_where_a_redirect_goes_and_what_to_set(endpoint_env, capsys) -> None:
    """A 301 (plain http moved to https, say): one error line naming the new URL, credentials masked, and
    PROXY_URL as the fix; not "HTTP 301: an HTML error page"."""
    moved = "https://api.example/v1/chat/completions?key=sk-moved-SECRET-0123&api-version=2024-10-21"
    mock_check(httpx.Response(301, headers={"Location": moved, "Content-Type": "text/html"},
                              content=b"<html><body>Moved Permanently</body></html>"))
    assert moa.main(["--check"], runtime=test_runtime()) == moa.EXIT_FAILED
    (line,) = capsys.readouterr().out.splitlines()
    assert "redirects to https://api.example/v1/chat/completions?key=***&api-version=2024-10-21" in line
    assert "PROXY_URL" in line and "SECRET" not in line


@respx.mock
def test_a_redirecting_endpoint_stops_the_run(endpoint_env, capsys) -> None:
    """Every request to a URL that redirects gets the same redirect: the run stops after the first answers,
    as for a 404, with the new URL in its one error line (and a batch stops too: stops_the_batch)."""
    route = respx.post(URL).mock(return_value=httpx.Response(308, headers={"Location": "/v2/chat/completions"}))
    assert moa.main(["-q", "What is 2 + 2?", "--json"], runtime=test_runtime()) == moa.EXIT_FAILED
    assert route.call_count <= 5 and moa.status_policy(308, None).stops_run
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "redirects to /v2/chat/completions" in errors[0], errors


@respx.mock
def test_check_never_calls_a_models_list_it_could_not_read_empty(endpoint_env, capsys) -> None:
    """A models list over 8 MB (or a 500, or no JSON) is one that could not be read, not "lists no models"."""
    mock_check(completion("OK"))
    respx.get(f"{BASE}/models").mock(return_value=httpx.Response(500, json={"error": {"message": "boom"}}))
    assert moa.main(["--check"], runtime=test_runtime()) == 0
    out = capsys.readouterr().out
    assert "note: no models list could be read (GET /models: HTTP 500)" in out and "lists no models" not in out


# --- a proxy that answers for the endpoint is named; one that wants credentials stops the run -------


class RefusingProxy(ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 that answers ``status`` to everything it is asked (forwarded or CONNECT)."""

    def __init__(self, status: int) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self) -> None:
                proxy.requests.append(self.command)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b"<html><body>proxy says no</body></html>"
                self.send_response(status)
                if status == 407:
                    self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = do_CONNECT = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def __enter__(self) -> RefusingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_that_wants_credentials_stops_the_run_and_is_named(scheme: str, tmp_path: Path) -> None:
    """HTTP_PROXY/HTTPS_PROXY answering 407: one error line naming the proxy and its variable and saying it
    wants credentials, and the run stops after the first answers (not 5 calls x 5 retries of the same 407)."""
    with RefusingProxy(407) as proxy:
        variable = f"{scheme.upper()}_PROXY"
        done = cli(tmp_path, "-q", "What is 2 + 2?", PROXY_URL=f"{scheme}://127.0.0.1:{closed_port()}/v1",
                   MAX_RETRIES="4", **{variable: f"http://127.0.0.1:{proxy.server_address[1]}"})
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == moa.EXIT_FAILED and len(errors) == 1, done.stderr
    assert f"127.0.0.1:{proxy.server_address[1]} ({variable})" in errors[0] and "credentials" in errors[0]
    assert len(proxy.requests) <= 2, proxy.requests  # NUM_WORKERS=2: one request each at most


def test_a_5xx_that_came_through_a_proxy_names_the_proxy(tmp_path: Path) -> None:
    """A plain-http endpoint through HTTP_PROXY, whose 502 may be the proxy's own: the error says which proxy
    it went through, so the endpoint is not the only suspect."""
    with RefusingProxy(502) as proxy:
        done = cli(tmp_path, "-q", "What is 2 + 2?", PROXY_URL=f"http://127.0.0.1:{closed_port()}/v1",
                   MAX_RETRIES="0", HTTP_PROXY=f"http://127.0.0.1:{proxy.server_address[1]}")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == moa.EXIT_FAILED and len(errors) == 1, done.stderr
    assert "HTTP 502" in errors[0] and f"through the proxy http://127.0.0.1:{proxy.server_address[1]} (HTTP_PROXY)" \
        in errors[0], errors[0]


# --- a value from OPENAI_BASE_URL or OPENAI_API_KEY is refused under its own name --------------------


@pytest.mark.parametrize("variable, value", [
    ("OPENAI_BASE_URL", "https://bob:pw-SECRET-0123@api.example/v1"),
    ("OPENAI_API_KEY", "sk-with a space-SECRET"),
], ids=["base-url-with-user-info", "key-with-a-space"])
def test_an_error_names_the_fallback_variable_the_user_set(variable: str, value: str, monkeypatch, capsys) -> None:
    """With PROXY_URL and API_KEY unset, a bad OPENAI_BASE_URL (user info) or OPENAI_API_KEY is named as such:
    the user never set PROXY_URL, and would look for it in vain."""
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv(variable, value)
    assert moa.main(["-q", "What is 2 + 2?"], runtime=test_runtime()) == moa.EXIT_USAGE
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {variable}=") and "SECRET" not in line, line


# --- shards: two schedulers that disagree are refused, not one silently preferred -------------------


def test_a_kubernetes_index_and_a_slurm_task_that_disagree_are_refused() -> None:
    """JOB_COMPLETION_INDEX=0 (shard 1) beside SLURM_ARRAY_TASK_ID=5 (shard 5), one leaked from another job:
    --shard auto/8 cannot tell which is this job's, so it refuses, naming both; when they agree it runs."""
    with pytest.raises(moa.ConfigError, match="JOB_COMPLETION_INDEX says shard 1/8 but SLURM_ARRAY_TASK_ID says "
                                              "shard 5/8"):
        moa.parse_shard("auto/8", {"JOB_COMPLETION_INDEX": "0", "SLURM_ARRAY_TASK_ID": "5"})
    assert moa.parse_shard("auto/8", {"JOB_COMPLETION_INDEX": "4", "SLURM_ARRAY_TASK_ID": "5"}) == moa.Shard(5, 8)


# --- masking: a credential is masked in the form httpx sends it, and a longer one is never half-masked ----


@respx.mock
def test_a_query_credential_is_masked_as_httpx_sends_it(monkeypatch, capsys) -> None:
    """?key=ключ"SECRET"… goes out percent-encoded; a server echoing its request URL, and httpx's -vv log, show
    it in that form: masked there too (as written and decoded it already was)."""
    url = URL + '?key=ключ"SECRET"0123&api-version=2024-10-21'
    sent = str(httpx.URL(url))
    assert "%D0%BA" in sent and "SECRET" in sent

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": f"no route for POST {request.url}"}})

    respx.post(url__startswith=URL).mock(side_effect=echo)
    monkeypatch.setenv("PROXY_URL", url)
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    assert moa.main(["-q", "What is 2 + 2?", "-vv"], runtime=test_runtime()) == moa.EXIT_FAILED
    captured = capsys.readouterr()
    assert "SECRET" not in captured.out + captured.err and "%D0%BA" not in captured.out + captured.err
    assert "key=***&api-version=2024-10-21" in captured.err


def test_a_secret_that_contains_another_is_masked_whole() -> None:
    """GATEWAY_TOKEN extends API_KEY: masking the shorter first left the longer's tail ("***-gw-TAIL") in view."""
    config = moa.Config(URL, "sk-SECRET-0123456789", gateway_token="sk-SECRET-0123456789-gw-TAIL")
    assert moa.redact("echo: sk-SECRET-0123456789-gw-TAIL", config.secrets) == "echo: ***"
