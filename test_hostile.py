"""The hostile user: every value from outside is checked at the edge, and the endpoint's
misbehaviour costs one attempt or one call, never the run or the batch.

Unit tests drive the CLI in-process against respx; what sockets do is driven through the
real CLI as a subprocess against bench/fake_endpoint.py on 127.0.0.1 (see test_faults.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, completion, phases_of, solver_text, test_runtime

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("endpoint_env")


def run_json(argv: list[str], capsys, runtime: moa.Runtime | None = None) -> tuple[int, dict, str]:
    code = moa.main([*argv, "--json"], runtime=runtime or test_runtime())
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def cli(tmp_path: Path, *argv: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"),
                   "RETRY_BASE_DELAY": "0.01", "RETRY_MAX_DELAY": "0.2", "NUM_WORKERS": "3", "NUM_JUDGES": "2",
                   "MIN_JUDGE_CONFIDENCE": "0", **env}
    for name in [k for k, v in environment.items() if v is None]:
        del environment[name]
    return subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), *argv], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- the circuit breaker judges whole calls, and only outages ------------------------------


def ended(endpoint: moa.Endpoint, *errors: moa.APIError | None) -> None:
    for error in errors:
        endpoint.call_ended(error)


def outage() -> moa.APIError:
    return moa.fault(moa.Fault.NO_CONNECTION, "connection error")


@pytest.mark.parametrize("below, trips", [(1, False), (0, True)], ids=["one-short-stays-closed", "at-the-threshold-trips"])
def test_breaker_boundary(below: int, trips: bool) -> None:
    """Of the last BREAKER_WINDOW calls, BREAKER_TRIP_FAILURES outage failures trip it; one fewer does not."""
    assert moa.BREAKER_TRIP_FAILURES == moa.BREAKER_WINDOW // 2, "the documented rule: at least half"
    endpoint = moa.Endpoint(moa.Config(URL, FAKE_KEY), httpx.AsyncClient(), moa.Runtime())
    outages = moa.BREAKER_TRIP_FAILURES - below
    ended(endpoint, *[outage()] * outages, *[None] * (moa.BREAKER_WINDOW - outages))
    assert endpoint.failing() is trips


def test_breaker_needs_a_full_window() -> None:
    """Outage failures short of a full window are not yet a sustained outage."""
    endpoint = moa.Endpoint(moa.Config(URL, FAKE_KEY), httpx.AsyncClient(), moa.Runtime())
    ended(endpoint, *[outage()] * (moa.BREAKER_WINDOW - 1))
    assert not endpoint.failing()
    ended(endpoint, outage())
    assert endpoint.failing()


def test_breaker_ignores_back_pressure_and_counts_bad_bodies_as_healthy() -> None:
    """429s are not evidence at all; a call that failed on bad content reached a live endpoint."""
    endpoint = moa.Endpoint(moa.Config(URL, FAKE_KEY), httpx.AsyncClient(), moa.Runtime())
    busy = moa.APIError("HTTP 429: slow down", moa.BUSY, status=429)
    bad_body = moa.fault(moa.Fault.EMPTY, "the response content is empty", status=200)
    ended(endpoint, *[busy] * 50)
    assert len(endpoint.recent_calls) == 0
    ended(endpoint, *[outage()] * (moa.BREAKER_TRIP_FAILURES - 1), *[bad_body] * 6)
    assert not endpoint.failing()


@pytest.mark.parametrize("status, headers, retry, stops, outage, backpressure", [
    (400, {}, False, False, False, False), (401, {}, False, True, False, False), (403, {}, False, True, False, False),
    (404, {}, False, True, False, False), (408, {}, True, False, True, False), (409, {}, True, False, True, False),
    (413, {}, False, False, False, False), (422, {}, False, False, False, False), (429, {}, True, False, False, True),
    (500, {}, True, False, True, False), (502, {}, True, False, True, False), (503, {}, True, False, True, False),
    (503, {"retry-after": "2"}, True, False, False, True), (500, {"x-should-retry": "false"}, False, False, True, False),
    (400, {"x-should-retry": "true"}, True, False, False, False),
])
def test_status_table(status: int, headers: dict, retry: bool, stops: bool, outage: bool, backpressure: bool) -> None:
    """One table decides retry, stop-the-run, outage and back-pressure for every status."""
    error = moa.status_error(status, httpx.Headers(headers), b'{"error": {"message": "m"}}', 0.0)
    assert (error.retryable, error.stops_run, error.outage, error.backpressure) == (retry, stops, outage, backpressure)


@respx.mock
def test_sustained_outage_trips_the_breaker_and_flaky_calls_do_not(tmp_path, monkeypatch, capsys) -> None:
    """Calls that succeed on retry never stop a batch; calls that fail after every retry do (exit 75)."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    monkeypatch.setenv("NUM_JUDGES", "1")
    monkeypatch.setenv("ENABLE_REBUTTAL", "false")
    monkeypatch.setenv("MAX_RETRIES", "1")
    model, seen = FakeModel(), set()

    def flaky(request: httpx.Request) -> httpx.Response:  # every call's first attempt fails
        call = (request.headers["X-MoA-Run-Id"], request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"])
        if call not in seen:
            seen.add(call)
            return httpx.Response(500, json={"error": "transient"})
        return model(request)

    route = respx.post(URL).mock(side_effect=flaky)
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Q{i}\n" for i in range(30)))
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "a.jsonl")], runtime=test_runtime()) == 0
    route.side_effect = lambda request: httpx.Response(500, json={"error": "down"})
    code = moa.main(["-f", str(questions), "-o", str(tmp_path / "b.jsonl")], runtime=test_runtime())
    assert code == moa.EXIT_TRY_LATER and "the endpoint is failing" in capsys.readouterr().err
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) < 15


@respx.mock
def test_a_404_stops_the_batch(tmp_path, capsys) -> None:
    """A 404 (URL or model wrong) would fail every question alike: the batch stops with exit 1."""
    route = respx.post(URL).mock(return_value=httpx.Response(404, json={"error": {"message": "no such model"}}))
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Q{i}\n" for i in range(20)))
    code = moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "1"],
                    runtime=test_runtime())
    assert code == moa.EXIT_FAILED
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1 and route.call_count <= 5
    assert "no such model" in capsys.readouterr().err


def test_flaky_and_saturated_endpoints_finish_the_batch(server, tmp_path) -> None:
    """30% of requests answer 500, or the endpoint takes 16 at once (429 + Retry-After: 1) against a cap of 64:
    every question is answered, exit 0: neither is an outage. (Both stopped the batch with 75 before.)"""
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Question {i}?\n" for i in range(40)))
    endpoint = server("--fault", "500", "--fault-rate", "0.3", "--seed", "1")
    done = cli(tmp_path, "-f", str(questions), "-o", str(tmp_path / "flaky.jsonl"), PROXY_URL=endpoint.url,
               NUM_WORKERS=None, NUM_JUDGES=None, RETRY_BASE_DELAY="0.05", RETRY_MAX_DELAY="0.5")
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "flaky.jsonl").read_text().splitlines()) == 40
    endpoint = server("--max-concurrency", "16", "--retry-after", "1", "--latency", "0.1")
    few = tmp_path / "few.txt"
    few.write_text("".join(f"Question {i}?\n" for i in range(16)))
    done = cli(tmp_path, "-f", str(few), "-o", str(tmp_path / "busy.jsonl"), "--concurrency", "64",
               PROXY_URL=endpoint.url, MAX_CONCURRENT_REQUESTS="64", NUM_WORKERS=None, NUM_JUDGES=None,
               RETRY_BASE_DELAY=None, RETRY_MAX_DELAY=None, timeout=90)
    assert done.returncode == 0, done.stderr
    assert any(e["status"] == 429 for e in endpoint.events("end")), "the endpoint did push back"
    assert len((tmp_path / "busy.jsonl").read_text().splitlines()) == 16


# --- one call's 400 fails that call only ----------------------------------------------------


@pytest.mark.parametrize("phase, note", [("critique", "its answer stays in play uncritiqued"),
                                         ("rebuttal", "its first answer stands"),
                                         ("judge", "the verdict is the solvers' majority")])
def test_a_400_on_a_later_phase_fails_only_that_call(phase: str, note: str, server, tmp_path) -> None:
    """llama.cpp's 'exceeds the available context size' on a critique, rebuttal or judge: a verdict, exit 0."""
    endpoint = server("--fault", "400context", "--fault-phase", phase)
    done = cli(tmp_path, "-q", "What is 17 * 23?", "--json", PROXY_URL=endpoint.url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["final_answer"] == "391" and result["phases"][phase]["ok"] == 0
    retried = [e for e in endpoint.starts() if e["phase"] == phase]
    assert len(retried) == result["phases"][phase]["failed"], "a 400 is not retried"
    text = Path(result["transcript"]).read_text()
    assert "exceeds the available context size" in text and note in text


def test_a_400_on_every_solver_fails_the_run_with_the_reason(server, tmp_path) -> None:
    """When the quorum is out of reach the run fails, exit 1, and says why in one line."""
    endpoint = server("--fault", "400context", "--fault-phase", "generate")
    done = cli(tmp_path, "-q", "Q?", "--json", PROXY_URL=endpoint.url)
    assert done.returncode == 1 and "exceeds the available context size" in json.loads(done.stdout)["error"]
    assert len(error_lines(done.stderr)) == 1 and "Traceback" not in done.stderr


# --- replies: size cap, hostile JSON, what the server sends instead of what we asked ---------


@respx.mock
def test_a_reply_over_max_response_bytes_is_a_failed_attempt(monkeypatch, capsys) -> None:
    """A reply past MAX_RESPONSE_BYTES fails that attempt as 'too large' (retried); nothing past the cap is kept."""
    monkeypatch.setenv("MAX_RESPONSE_BYTES", "20000")
    model = FakeModel(overrides={"generate": lambda r, n: completion(solver_text("391") + "x" * 50_000)
                                 if r.headers["X-MoA-Agent"] == "solver-1" and n < 2 else completion(solver_text("391"))})
    respx.post(URL).mock(side_effect=model)
    code, result, _ = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["final_answer"] == "391"
    text = Path(result["transcript"]).read_text()
    assert "too large" in text and "x" * 20_000 not in text


def test_huge_replies_do_not_reach_memory_or_logs(server, tmp_path) -> None:
    """Every solver's first reply is 30 MB from a real socket: one failed attempt each, then a verdict, small logs."""
    endpoint = server("--fault", "huge", "--fault-once", "--fault-phase", "generate")
    done = cli(tmp_path, "-q", "What is 17 * 23?", "--json", PROXY_URL=endpoint.url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["final_answer"] == "391" and result["http_requests"] == result["llm_calls"] + 3
    logs = sum(p.stat().st_size for p in (tmp_path / "logs").iterdir())
    assert logs < 2_000_000
    assert "too large" in next((tmp_path / "logs").glob("*.txt")).read_text()


@respx.mock
def test_deeply_nested_reply_is_one_failed_attempt(capsys) -> None:
    """A body nested 100,000 deep is 'not valid JSON (nested too deeply)' for one attempt, not a crash."""
    deep = httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"})
    model = FakeModel(overrides={"generate": lambda r, n: deep if n == 0 else completion(solver_text("391"))})
    respx.post(URL).mock(side_effect=model)
    code, result, _ = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["http_requests"] == result["llm_calls"] + 1
    assert "nested too deeply" in Path(result["transcript"]).read_text()


def test_deeply_nested_replies_from_a_real_server(server, tmp_path) -> None:
    """The same over a socket: retried, verdict, exit 0."""
    endpoint = server("--fault", "deepjson", "--fault-once")
    done = cli(tmp_path, "-q", "What is 17 * 23?", "--json", PROXY_URL=endpoint.url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["final_answer"] == "391" and result["http_requests"] == 2 * result["llm_calls"]
    assert "nested too deeply" in Path(result["transcript"]).read_text()


@pytest.mark.parametrize("stream_flag, fault", [(True, ""), (False, "sse")],
                         ids=["stream-asked-json-answered", "json-asked-stream-answered"])
def test_the_reply_is_read_by_its_content_type(stream_flag: bool, fault: str, server, tmp_path) -> None:
    """STREAM=true against a proxy that answers plain JSON, and the reverse, both work first time."""
    endpoint = server(*(("--fault", fault) if fault else ()))
    done = cli(tmp_path, "-q", "What is 17 * 23?", "--json", PROXY_URL=endpoint.url, STREAM=str(stream_flag).lower())
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["final_answer"] == "391" and result["http_requests"] == result["llm_calls"]


def sse(*events: dict) -> httpx.Response:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


@pytest.mark.parametrize("events", [
    [{"choices": [{"delta": {"refusal": "I can't help with that."}}]}],
    [{"choices": [{"delta": {"content": "Sorry."}, "finish_reason": "content_filter"}]}],
    [{"choices": [{"delta": {}, "finish_reason": "content_filter"}]}],
], ids=["delta-refusal", "content-filter-with-text", "content-filter-empty"])
@respx.mock
def test_streamed_refusals_are_not_retried(events: list[dict], monkeypatch, capsys) -> None:
    """A streamed refusal fails its call once, as 'refused', exactly like a plain one."""
    monkeypatch.setenv("STREAM", "true")
    model = FakeModel(overrides={"generate": lambda r, n: sse(*events) if r.headers["X-MoA-Agent"] == "solver-1"
                                 else completion(solver_text("391"))})
    route = respx.post(URL).mock(side_effect=model)
    code, result, _ = run_json(["-q", "Q?"], capsys)
    assert code == 0 and phases_of(route).count("generate") == 5
    assert "refused" in Path(result["transcript"]).read_text()


@pytest.mark.parametrize("body", [
    b'data: {"choices": "nope"}\n\ndata: [DONE]\n\n', b'data: [1, 2]\n\ndata: [DONE]\n\n',
    b'data: {"choices": [5, {"delta": "x"}]}\n\ndata: [DONE]\n\n',
    b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n",
], ids=["choices-not-a-list", "event-not-an-object", "odd-choices", "deep-event"])
@respx.mock
def test_malformed_stream_events_are_failed_attempts(body: bytes, monkeypatch, capsys) -> None:
    """Events of the wrong shape fail the attempt (retried), never the run."""
    monkeypatch.setenv("STREAM", "true")
    bad = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    model = FakeModel(overrides={"generate": lambda r, n: bad if n == 0 else completion(solver_text("391"))})
    respx.post(URL).mock(side_effect=model)
    code, result, err = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["http_requests"] == result["llm_calls"] + 1 and "internal error" not in err


@pytest.mark.parametrize("usage", [{"prompt_tokens": True, "completion_tokens": 3}, {"prompt_tokens": -5,
                                   "completion_tokens": 3}, {"prompt_tokens": 10**30, "completion_tokens": 1},
                                   "lots"], ids=["bool", "negative", "absurd", "not-an-object"])
@respx.mock
def test_odd_usage_is_estimated_not_trusted(usage, capsys) -> None:
    """Usage counts that are not plausible counts are replaced by estimates, marked as such."""
    def with_usage(response: httpx.Response) -> httpx.Response:
        body = json.loads(response.content)
        body["usage"] = usage
        return httpx.Response(200, json=body)

    model = FakeModel()
    respx.post(URL).mock(side_effect=lambda r: with_usage(model(r)))
    code, result, _ = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["usage"]["estimated"] is True and result["usage"]["total_tokens"] < 10**6


# --- traces given to --replay ---------------------------------------------------------------


def a_trace(tmp_path: Path, capsys) -> Path:
    respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["-q", "Q?", "--json"], runtime=test_runtime()) == 0
    capsys.readouterr()
    return next((tmp_path / "logs").glob("*.jsonl"))


@pytest.mark.parametrize("damage", [
    lambda lines: lines[:1] + [b"[" * 100_000 + b"]" * 100_000] + lines[1:],
    lambda lines: [b'{"type": "run", "question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
    lambda lines: lines + [json.dumps({"type": "attempt", "pass": 1, "phase": "generate", "agent": "solver-9999999",
                                       "outcome": "ok", "response_text": "<answer>1</answer>"}).encode()],
    lambda lines: lines + [json.dumps({"type": "attempt", "pass": "1", "phase": "generate"}).encode()],
    lambda lines: lines + [json.dumps({"type": "attempt", "pass": 1, "phase": "generate", "agent": ["x"],
                                       "outcome": "ok"}).encode()],
    lambda lines: [json.dumps({"type": "run", "question": 5}).encode()],
    lambda lines: lines[:1] + [b"{not json"] + lines[1:],
], ids=["deep-line", "deep-question", "huge-slot", "round-not-int", "agent-not-text", "question-not-text",
        "garbage-in-the-middle"])
@respx.mock
def test_a_hostile_trace_is_one_usage_error(damage, tmp_path, capsys) -> None:
    """--replay of a damaged or hostile trace: exit 2, one error line, no traceback, no request."""
    trace = a_trace(tmp_path, capsys)
    lines = trace.read_bytes().splitlines()
    trace.write_bytes(b"\n".join(damage(lines)) + b"\n")
    sent = len(respx.calls)
    code = moa.main(["--replay", str(trace), "--from", "judges"], runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1 and "--replay" in err and "Traceback" not in err
    assert len(respx.calls) == sent


@respx.mock
def test_a_torn_last_trace_line_is_still_replayable(tmp_path, capsys) -> None:
    """A killed run leaves a torn last line: the replay uses the rest."""
    trace = a_trace(tmp_path, capsys)
    trace.write_bytes(trace.read_bytes() + b'{"type": "attempt", "ro')
    respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["--replay", str(trace), "--from", "judges"], runtime=test_runtime()) == 0


# --- settings, flags and stdin ----------------------------------------------------------------


SECRET_IN_URL = "pw-SECRET-0123456789"
SECRET_QUERY = "qk-SECRET-9876543210"


@pytest.mark.parametrize("url", [
    f"ftp://user:{SECRET_IN_URL}@host/v1?key={SECRET_QUERY}",
    f"user:{SECRET_IN_URL}@host:8080/v1?key={SECRET_QUERY}",
    f"http://user:{SECRET_IN_URL}@host:99999/v1?key={SECRET_QUERY}",
    f"http://user:{SECRET_IN_URL}@host:port/v1?api_key={SECRET_QUERY}",
    f"https://host/v1 ?key={SECRET_QUERY}",
    f"http://[::1/v1?key={SECRET_QUERY}",
], ids=["wrong-scheme", "no-scheme", "port-out-of-range", "port-not-a-number", "space", "bad-ipv6"])
def test_a_bad_proxy_url_never_shows_its_secrets(url: str, monkeypatch, capsys) -> None:
    """A PROXY_URL that cannot be used: exit 2, one line naming PROXY_URL, user info and query masked."""
    monkeypatch.setenv("PROXY_URL", url)
    assert moa.main(["-q", "Q?"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "PROXY_URL" in err and "internal error" not in err
    assert SECRET_IN_URL not in err and SECRET_QUERY not in err


@respx.mock
def test_secrets_in_a_working_proxy_url_are_masked_everywhere(monkeypatch, tmp_path, capsys) -> None:
    """A key in PROXY_URL's query (key=, sig=) is masked in every output, even when a server echoes it.
    (User info is refused: see test_endpoint_config.py.)"""
    monkeypatch.setenv("PROXY_URL", f"https://proxy.test/v1?key={SECRET_QUERY}&sig={SECRET_IN_URL}")
    respx.post(url__startswith="https://proxy.test/v1/chat/completions").mock(
        side_effect=lambda r: httpx.Response(500, json={"error": f"bad key {SECRET_QUERY}"}))
    code = moa.main(["-q", "Q?", "--json", "-vv"], runtime=test_runtime())
    captured = capsys.readouterr()
    texts = [captured.out, captured.err] + [p.read_text() for p in (tmp_path / "logs").iterdir()]
    assert code == 1 and len(texts) == 4
    for text in texts:
        assert SECRET_IN_URL not in text and SECRET_QUERY not in text


@respx.mock
def test_an_empty_proxy_url_falls_back_to_openai_base_url(monkeypatch, tmp_path, capsys) -> None:
    """PROXY_URL= (as .env.example ships it) is unset: OPENAI_BASE_URL and OPENAI_API_KEY apply."""
    monkeypatch.delenv("PROXY_URL")
    monkeypatch.delenv("API_KEY")
    (tmp_path / ".env").write_text("PROXY_URL=\nAPI_KEY=\nNUM_WORKERS=\n")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.test/v1")
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result, _ = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["final_answer"] == "391"
    assert phases_of(route).count("generate") == 5, "an empty NUM_WORKERS= is the default"


@pytest.mark.parametrize("prefix", ["../x", "/tmp/x", "a/b", "..", ".hidden", "x" * 65, "a\nb"])
def test_log_filename_prefix_cannot_leave_log_dir(prefix: str, monkeypatch, capsys) -> None:
    """LOG_FILENAME_PREFIX with a path in it is refused before any request: exit 2."""
    monkeypatch.setenv("LOG_FILENAME_PREFIX", prefix)
    assert moa.main(["-q", "Q?"]) == 2
    assert "LOG_FILENAME_PREFIX" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"\xff\xfe\x00bad", b"NUM_WORKERS=abc\n"], ids=["not-utf8", "bad-value"])
def test_a_bad_env_file_is_one_line(content: bytes, tmp_path, capsys) -> None:
    """A .env in the working folder that is not text, or holds a bad value: exit 2, one line."""
    (tmp_path / ".env").write_bytes(content)
    assert moa.main(["-q", "Q?"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err


def test_closed_stdin_is_a_usage_error(monkeypatch, capsys) -> None:
    """-q - and -f - with no stdin at all: exit 2, one line."""
    monkeypatch.setattr(sys, "stdin", None)
    assert moa.main(["-q", "-"]) == 2
    assert moa.main(["-f", "-", "-o", "out.jsonl"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 2 and "stdin is closed" in err


def test_real_cli_with_stdin_closed(tmp_path) -> None:
    """The real process started with fd 0 closed: exit 2, one error line, no traceback."""
    done = subprocess.run(["bash", "-c", f'exec 0<&-; exec "{sys.executable}" "{HERE / "moa_pipeline.py"}" -q -'],
                          env={**os.environ, "PROXY_URL": "http://127.0.0.1:9/v1", "API_KEY": FAKE_KEY},
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and len(error_lines(done.stderr)) == 1 and "Traceback" not in done.stderr


# --- transcripts say what failed and why, once -------------------------------------------------


@respx.mock
def test_failure_lines_say_why_once(monkeypatch, capsys) -> None:
    """No 'FAILED: None' and no 'HTTP 500: HTTP 500': each failure line names its reason once."""
    monkeypatch.setenv("MAX_RETRIES", "1")
    model = FakeModel(overrides={"critique": lambda r, n: httpx.Response(500, json={"error": "critic down"})
                                 if r.headers["X-MoA-Agent"].endswith("solver-1") else
                                 completion("<critique>Fine.</critique>")})
    respx.post(URL).mock(side_effect=model)
    code, result, _ = run_json(["-q", "Q?"], capsys)
    text = Path(result["transcript"]).read_text()
    assert code == 0 and "FAILED: None" not in text and "HTTP 500: HTTP 500" not in text
    assert "critique of solver-1 failed (HTTP 500: critic down)" in text
    assert "FAILED: HTTP 500: critic down" in text


# --- several models: nobody is critiqued by its own model ---------------------------------------


@pytest.mark.parametrize("models, workers", [("a,b", 5), ("a,b", 4), ("a,b,c", 5), ("a,b", 3)])
@respx.mock
def test_every_critique_comes_from_another_model(models: str, workers: int, monkeypatch, capsys) -> None:
    """With several models, each critique request uses a model other than its solver's."""
    monkeypatch.setenv("MODEL_NAME", models)
    monkeypatch.setenv("NUM_WORKERS", str(workers))
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, _, _ = run_json(["-q", "Q?"], capsys)
    slot_model = {f"solver-{i + 1}": models.split(",")[i % len(models.split(","))] for i in range(workers)}
    critiques = [c for c in route.calls if c.request.headers["X-MoA-Phase"] == "critique"]
    assert code == 0 and len(critiques) == workers
    for call in critiques:
        solver = call.request.headers["X-MoA-Agent"].split("->")[1]
        assert json.loads(call.request.content)["model"] != slot_model[solver]


# --- more edges: chunked replies, a 400 is not a missing model, stray trace files ---------------


class Chunks(httpx.AsyncByteStream):
    """A chunked body with no Content-Length; counts how much of it was read."""

    def __init__(self, chunk: bytes, count: int) -> None:
        self.chunk, self.count, self.sent = chunk, count, 0

    async def __aiter__(self):
        for _ in range(self.count):
            self.sent += 1
            yield self.chunk


@respx.mock
def test_a_chunked_reply_is_cut_at_the_cap_without_reading_the_rest(monkeypatch, capsys) -> None:
    """No Content-Length to go by: reading stops once MAX_RESPONSE_BYTES is passed, and the attempt fails."""
    monkeypatch.setenv("MAX_RESPONSE_BYTES", "10000")
    endless = Chunks(b"x" * 1000, 1000)
    model = FakeModel(overrides={"generate": lambda r, n: httpx.Response(200, stream=endless)
                                 if r.headers["X-MoA-Agent"] == "solver-1" and n == 0 else completion(solver_text("391"))})
    respx.post(URL).mock(side_effect=model)
    code, result, _ = run_json(["-q", "Q?"], capsys)
    assert code == 0 and endless.sent <= 11, "stopped reading just past the cap"
    assert "too large" in Path(result["transcript"]).read_text()


@respx.mock
def test_a_400_does_not_drop_a_model(monkeypatch, capsys) -> None:
    """With two models, a 400 on one of model b's critiques fails that call only: b still rebuts and judges."""
    monkeypatch.setenv("MODEL_NAME", "a,b")
    monkeypatch.setenv("JUDGE_MODEL", "b")
    model = FakeModel(overrides={"critique": lambda r, n: httpx.Response(400, json={"error": "context too small"})
                                 if json.loads(r.content)["model"] == "b" and n == 0
                                 else completion("<critique>Fine.</critique>")})
    route = respx.post(URL).mock(side_effect=model)
    code, result, _ = run_json(["-q", "Q?"], capsys)
    used = [(c.request.headers["X-MoA-Phase"], json.loads(c.request.content)["model"]) for c in route.calls]
    assert code == 0 and result["phases"]["critique"]["failed"] == 1
    assert ("rebuttal", "b") in used and ("judge", "b") in used
    assert "dropped" not in Path(result["transcript"]).read_text()


@respx.mock
def test_an_empty_environment_value_is_unset(monkeypatch, capsys) -> None:
    """PROXY_URL= exported empty in the environment falls back to OPENAI_BASE_URL, as in .env."""
    monkeypatch.setenv("PROXY_URL", "")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.test/v1")
    respx.post(URL).mock(side_effect=FakeModel())
    code, result, _ = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["final_answer"] == "391"


@respx.mock
def test_a_stray_trace_file_does_not_cost_the_run_its_files(tmp_path, capsys) -> None:
    """A .jsonl already at this second's name (no .txt): the run takes the next stem for both, and leaves it alone."""
    runtime = test_runtime()
    stem = f"moa_run_{moa.datetime.fromtimestamp(runtime.wall_clock()).strftime('%Y%m%d_%H%M%S')}"
    (tmp_path / "logs").mkdir()
    stray = tmp_path / "logs" / f"{stem}.jsonl"
    stray.write_text("not ours\n")
    respx.post(URL).mock(side_effect=FakeModel())
    code, result, err = run_json(["-q", "Q?"], capsys, runtime)
    assert code == 0 and stray.read_text() == "not ours\n"
    assert result["transcript"].endswith(f"{stem}_1.txt") and result["trace"].endswith(f"{stem}_1.jsonl")
    assert "could not write" not in err


# --- found by attacking the finished change --------------------------------------------------


def questions_file(tmp_path: Path, count: int = 2) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Q{i}?"}) + "\n" for i in range(count)))
    return path


@respx.mock
def test_output_at_a_file_that_is_not_ours_is_refused(tmp_path, capsys) -> None:
    """-o naming someone's notes (or another questions file): exit 2 and the file untouched, never compacted away."""
    notes = tmp_path / "notes.txt"
    notes.write_text("important notes\nline 2\n")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x", "question": "Q?"}) + "\n")
    route = respx.post(URL).mock(side_effect=FakeModel())
    for target in (notes, other):
        before = target.read_bytes()
        assert moa.main(["-f", str(questions_file(tmp_path)), "-o", str(target)], runtime=test_runtime()) == 2
        assert target.read_bytes() == before
    assert "not a results file" in capsys.readouterr().err and route.call_count == 0


def test_stdin_redirected_from_the_output_is_refused(tmp_path) -> None:
    """-f - < out.jsonl -o out.jsonl: the questions on stdin are the output file: exit 2, file untouched."""
    target = questions_file(tmp_path)
    before = target.read_bytes()
    with open(target, "rb") as stdin:
        done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), "-f", "-", "-o", str(target)],
                              stdin=stdin, capture_output=True, text=True, timeout=30, cwd=tmp_path,
                              env={**os.environ, "PROXY_URL": "http://127.0.0.1:9/v1", "API_KEY": FAKE_KEY})
    assert done.returncode == 2 and "questions file on stdin" in done.stderr and target.read_bytes() == before


def test_a_hard_link_at_the_lock_is_refused(tmp_path, capsys) -> None:
    """A hard link planted at <output>.lock is never truncated: exit 2, its other name keeps its bytes."""
    precious = tmp_path / "precious.txt"
    precious.write_text("my precious data\n")
    os.link(precious, tmp_path / "o.jsonl.lock")
    assert moa.main(["-f", str(questions_file(tmp_path)), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert precious.read_text() == "my precious data\n" and "lock file" in capsys.readouterr().err


@respx.mock
def test_no_resume_moves_an_orphan_summary_aside(tmp_path, capsys) -> None:
    """--no-resume with a summary but no output keeps the old summary (moved aside), never overwrites it."""
    respx.post(URL).mock(side_effect=FakeModel())
    (tmp_path / "o.jsonl.summary.json").write_text('{"status": "old"}')
    code = moa.main(["-f", str(questions_file(tmp_path)), "-o", str(tmp_path / "o.jsonl"), "--no-resume"],
                    runtime=test_runtime())
    assert code == 0
    kept = list(tmp_path.glob("o.jsonl.*.bak.summary.json"))
    assert len(kept) == 1 and kept[0].read_text() == '{"status": "old"}'


@respx.mock
def test_an_echoed_key_is_masked_in_batch_output_and_progress(tmp_path, monkeypatch, capsys) -> None:
    """A model that echoes the key and gateway token: masked in result lines, progress lines and the summary."""
    token = "gw-lowertoken-xyz987654"
    monkeypatch.setenv("GATEWAY_TOKEN", token)
    echo = f"key {FAKE_KEY} and {token}"
    respx.post(URL).mock(side_effect=FakeModel(answer=echo))
    code = moa.main(["-f", str(questions_file(tmp_path)), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime())
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, (tmp_path / "o.jsonl").read_text(),
             (tmp_path / "o.jsonl.summary.json").read_text()]
    assert code == 0 and "***" in texts[2]
    for text in texts:
        assert FAKE_KEY not in text and token not in text


@respx.mock
def test_a_key_with_quotes_and_backslashes_is_masked_in_json(monkeypatch, tmp_path, capsys) -> None:
    """A key holding '"' or '\\' is still masked in --json and the trace, where JSON escapes it."""
    key = 'sk-SEC"RET\\KEY123456'
    monkeypatch.setenv("API_KEY", key)
    respx.post(URL).mock(side_effect=FakeModel(answer=f"the key is {key}"))
    code = moa.main(["-q", "Q?", "--json"], runtime=test_runtime())
    out = capsys.readouterr().out
    escaped = json.dumps(key)[1:-1]
    texts = [out] + [p.read_text() for p in (tmp_path / "logs").iterdir()]
    assert code == 0 and len(texts) == 3
    for text in texts:
        assert key not in text and escaped not in text and "SEC" not in text


@pytest.mark.parametrize("url, secret", [
    ("https://proxy.test/v1?key=QUERYSECRET+abc/def==", "QUERYSECRET+abc/def=="),
    ("https://proxy.test/v1?key=QUERYSECRET%2Babcdef", "QUERYSECRET%2Babcdef"),
    ("https://proxy.test/v1?QUERYNOVALUESECRET123", "QUERYNOVALUESECRET123"),
    ("https://proxy.test/v1?api-version=2024-10-21&sig=SASSIGNATURE123%3D", "SASSIGNATURE123"),
], ids=["plus-and-slash", "percent-encoded", "no-equals", "azure-sas-sig"])
@respx.mock
def test_url_credentials_never_reach_verbose_logs(url: str, secret: str, monkeypatch, tmp_path, capsys) -> None:
    """However a credential sits in PROXY_URL, -v (httpx's own request log included) never shows it."""
    monkeypatch.setenv("PROXY_URL", url)
    respx.post(url__startswith="https://proxy.test/v1/chat/completions").mock(side_effect=FakeModel())
    code = moa.main(["-q", "Q?", "-vv", "--json"], runtime=test_runtime())
    captured = capsys.readouterr()
    texts = [captured.out, captured.err] + [p.read_text() for p in (tmp_path / "logs").iterdir()]
    assert code == 0
    for text in texts:
        assert secret not in text


@pytest.mark.parametrize("url, secret", [
    ("https://user:PASSWORDSECRET#x@host/v1", "PASSWORDSECRET"),
    ("https://user:PASS/WORDSECRET@host/v1", "WORDSECRET"),
    ("https://user:PASS?WORDSECRET@host/v1", "WORDSECRET"),
    ("https://user:pw@host:0/v1?key=ZEROPORTSECRET", "ZEROPORTSECRET"),
])
def test_odd_passwords_are_masked_in_the_error(url: str, secret: str, monkeypatch, capsys) -> None:
    """A password holding '#', '/' or '?' is still masked when PROXY_URL is refused (port 0 included)."""
    monkeypatch.setenv("PROXY_URL", url)
    code = moa.main(["-q", "Q?", "--dry-run"])
    err = capsys.readouterr().err
    if code == 2:
        assert secret not in err
    else:  # a URL that parses: never echoed at all
        assert code == 0 and secret not in err


def test_display_url_keeps_ipv6_brackets_and_ports() -> None:
    """The URL shown in errors keeps an IPv6 host's brackets and its port, drops user info, masks a query key."""
    assert (moa.display_url("http://u:p@[::1]:8080/v1/chat/completions?key=k")
            == "http://[::1]:8080/v1/chat/completions?key=***")


@pytest.mark.parametrize("encoding, body, retries", [("gzip", b"not gzip at all", 1), ("br", b"whatever", 0)],
                         ids=["corrupt-gzip", "unknown-encoding"])
@respx.mock
def test_an_undecodable_body_is_one_failed_attempt(encoding: str, body: bytes, retries: int, capsys) -> None:
    """A body that cannot be decoded fails its attempt, retried only when corrupt (an unknown encoding stays
    unknown); the run gets its verdict."""
    bad = httpx.Response(200, stream=httpx.ByteStream(body), headers={"content-encoding": encoding})
    model = FakeModel(overrides={"generate": lambda r, n: bad if n == 0 else completion(solver_text("391"))})
    respx.post(URL).mock(side_effect=model)
    code, result, err = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["http_requests"] == result["llm_calls"] + retries and "internal error" not in err


@respx.mock
def test_a_gzip_bomb_is_cut_at_the_cap(monkeypatch, capsys) -> None:
    """A small gzip that inflates to 50 MB is decoded only up to MAX_RESPONSE_BYTES, then fails as too large."""
    import gzip

    monkeypatch.setenv("MAX_RESPONSE_BYTES", "100000")
    bomb = gzip.compress(b"0" * 50_000_000)
    model = FakeModel(overrides={"generate": lambda r, n: httpx.Response(200, stream=httpx.ByteStream(bomb), headers={
        "content-encoding": "gzip", "content-type": "application/json"}) if n == 0 else completion(solver_text("391"))})
    route = respx.post(URL).mock(side_effect=model)
    code, result, _ = run_json(["-q", "Q?"], capsys)
    assert code == 0 and "too large" in Path(result["transcript"]).read_text()
    assert route.calls[0].request.headers["accept-encoding"] == "identity"


def test_replay_of_a_fifo_or_device_is_refused(tmp_path, capsys) -> None:
    """--replay of a FIFO or /dev/zero: exit 2 at once, never a hang."""
    fifo = tmp_path / "trace.jsonl"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        assert moa.main(["--replay", path, "--from", "judges"]) == 2
    assert capsys.readouterr().err.count("not a regular file") == 2


@respx.mock
def test_a_fifo_at_the_summary_is_not_read(tmp_path, capsys) -> None:
    """A FIFO planted at <output>.summary.json neither hangs the batch nor is written through."""
    respx.post(URL).mock(side_effect=FakeModel())
    summary = tmp_path / "o.jsonl.summary.json"
    os.mkfifo(summary)
    code = moa.main(["-f", str(questions_file(tmp_path)), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime())
    assert code == 0 and summary.is_file() and json.loads(summary.read_text())["status"] == "finished"


@respx.mock
def test_lone_surrogates_in_questions_files(tmp_path, capsys) -> None:
    """A lone-surrogate id is an input error (it could never count as done); in a question it is replaced."""
    respx.post(URL).mock(side_effect=FakeModel())
    source = tmp_path / "q.jsonl"
    source.write_text('{"id": "\\ud800", "question": "Q1?"}\n{"id": "n1", "question": "Q2 \\ud83d?"}\n')
    code = moa.main(["-f", str(source), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime())
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert code == 3 and [(r["id"], r["status"]) for r in lines] == [("n1", "ok")]
    assert lines[0]["question"].startswith("Q2 ") and lines[0]["question"].encode("utf-8")


@respx.mock
def test_numbers_are_ids(tmp_path, capsys) -> None:
    """An id may be any finite number, as the README says, float included."""
    respx.post(URL).mock(side_effect=FakeModel())
    source = tmp_path / "q.jsonl"
    source.write_text('{"id": 1.5, "question": "Q1?"}\n{"id": -3, "question": "Q2?"}\n')
    assert moa.main(["-f", str(source), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime()) == 0
    assert sorted(json.loads(x)["id"] for x in (tmp_path / "o.jsonl").read_text().splitlines()) == ["-3", "1.5"]


def test_stdout_on_a_full_disk_is_one_line(tmp_path) -> None:
    """A result that cannot be written to stdout (/dev/full): exit 1 and one error line, no traceback."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), "-q", "Q?", "--dry-run"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=30, cwd=tmp_path,
                              env={**os.environ, "PROXY_URL": "http://127.0.0.1:9/v1", "API_KEY": FAKE_KEY})
    assert done.returncode == 1 and len(error_lines(done.stderr)) == 1 and "Traceback" not in done.stderr


def test_sigterm_before_any_question_is_exit_130(monkeypatch, capsys) -> None:
    """SIGTERM while the question is still being read from stdin: exit 130 and one line, never a traceback."""
    class Stdin:
        def __init__(self) -> None:
            self.buffer = self

        def read(self, size: int = -1) -> bytes:
            os.kill(os.getpid(), __import__("signal").SIGTERM)
            for _ in range(1000):  # the handler raises at the next bytecode
                pass
            return b"Q?"

    monkeypatch.setattr(sys, "stdin", Stdin())
    assert moa.main(["-q", "-"]) == 130
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "interrupted" in err


@respx.mock
def test_closed_stderr_changes_nothing_else(tmp_path) -> None:
    """With stderr closed, a batch still runs to exit 0, and --json stdout stays one JSON object on failure."""
    url = "http://127.0.0.1:9/v1"  # nothing listens: the single question fails fast
    environment = {**os.environ, "PROXY_URL": url, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"),
                   "MAX_RETRIES": "0"}
    done = subprocess.run(["bash", "-c", f'exec 2>&-; exec "{sys.executable}" "{HERE / "moa_pipeline.py"}" -q Q --json'],
                          env=environment, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "failed"


def test_batch_flags_without_a_batch_are_refused(capsys) -> None:
    """-o, --concurrency, --no-resume or --force with -q: exit 2, they would be silently ignored."""
    assert moa.main(["-q", "Q?", "-o", "out.jsonl"]) == 2
    assert moa.main(["-q", "Q?", "--concurrency", "0", "--dry-run"]) == 2
    assert "batch options, for -f only" in capsys.readouterr().err


def test_env_file_from_a_pipe(tmp_path, capsys) -> None:
    """--env-file <(…) (a pipe) works; a folder is named as a folder."""
    read, write = os.pipe()
    os.write(write, f"PROXY_URL=http://127.0.0.1:9/v1\nAPI_KEY={FAKE_KEY}\n".encode())
    os.close(write)
    assert moa.main(["-q", "Q?", "--dry-run", "--env-file", f"/dev/fd/{read}"]) == 0
    os.close(read)
    assert moa.main(["-q", "Q?", "--dry-run", "--env-file", str(tmp_path)]) == 2
    assert "a folder" in capsys.readouterr().err


def test_log_dir_with_a_nul_byte_is_a_setting_error() -> None:
    """LOG_DIR holding a NUL (possible from .env) is refused as a setting, not an internal error later."""
    with pytest.raises(moa.ConfigError, match="LOG_DIR"):
        moa.load_config({}, {"PROXY_URL": URL, "API_KEY": FAKE_KEY}, {"LOG_DIR": "lo\x00gs"})


@respx.mock
def test_progress_lines_stay_one_line_each(tmp_path, capsys) -> None:
    """An answer with newlines and escape codes prints as one line per question in a cron log."""
    respx.post(URL).mock(side_effect=FakeModel(answer="forged\nq9 ok 391 0.0s\x1b[2J"))
    code = moa.main(["-f", str(questions_file(tmp_path, 1)), "-o", str(tmp_path / "o.jsonl")],
                    runtime=test_runtime())
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("q0 ")]
    assert code == 0 and len(lines) == 1 and "\x1b" not in lines[0]


@respx.mock
def test_a_failed_write_stops_the_batch_through_the_seam(tmp_path, capsys) -> None:
    """The first failed write (the 4th result line here): no new question starts, one error line, exit 1,
    every line already written whole; a rerun with room finishes the rest."""
    import errno

    respx.post(URL).mock(side_effect=FakeModel())
    output = tmp_path / "o.jsonl"
    lines_written = {"n": 0}

    def write(fd: int, data: bytes) -> int:
        if os.path.realpath(f"/proc/self/fd/{fd}") == str(output):
            lines_written["n"] += 1
            if lines_written["n"] >= 4:
                os.write(fd, data[:10])  # half a line reaches the disk, then it is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    source = questions_file(tmp_path, 12)
    code = moa.main(["-f", str(source), "-o", str(output), "--concurrency", "1"],
                    runtime=dataclasses.replace(test_runtime(), write=write))
    err = capsys.readouterr().err
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert code == moa.EXIT_FAILED and len(error_lines(err)) == 1 and "No space left on device" in err
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows) and output.read_bytes().endswith(b"\n")
    assert "Task exception" not in err
    assert moa.main(["-f", str(source), "-o", str(output)], runtime=test_runtime()) == 0
    assert sorted(json.loads(line)["id"] for line in output.read_text().splitlines()) == sorted(f"q{i}" for i in range(12))


# --- retry hints that gateways and APIs send besides Retry-After --------------------------------


@pytest.mark.parametrize("headers, wait", [
    ({"llm_provider-retry-after": "3"}, 3.0), ({"retry-after-ms": "1500"}, 1.5),
    ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "250ms"}, 360.0),
    ({"retry-after": "2", "retry-after-ms": "1200"}, 2.0), ({"x-ratelimit-reset-tokens": "soon"}, None),
], ids=["litellm-renamed", "milliseconds", "openai-reset-durations", "longest-wins", "nonsense-ignored"])
def test_retry_hints_beyond_retry_after(headers: dict, wait: float | None) -> None:
    """A 429's wait is read from whichever hint the server or gateway sends."""
    assert moa.retry_hint(httpx.Headers(headers), 429, 0.0) == wait


@respx.mock
def test_a_renamed_retry_hint_is_honoured(monkeypatch, capsys) -> None:
    """LiteLLM's llm_provider-retry-after: the call waits that long (capped), and every request pauses with it."""
    monkeypatch.setenv("RETRY_MAX_DELAY", "30")
    limited = httpx.Response(429, json={"error": "rate limited"}, headers={"llm_provider-retry-after": "7"})
    model = FakeModel(overrides={"generate": lambda r, n: limited if n == 0 else completion(solver_text("391"))})
    respx.post(URL).mock(side_effect=model)
    sleep = __import__("conftest").FakeSleep()
    code, result, _ = run_json(["-q", "Q?"], capsys, test_runtime(sleep))
    assert code == 0 and 7.0 in sleep.delays


@respx.mock
def test_gateway_side_retries_are_counted(capsys) -> None:
    """A LiteLLM reply saying it retried upstream twice: the transcript and the trace count those requests."""
    model = FakeModel()

    def through_litellm(request: httpx.Request) -> httpx.Response:
        response = model(request)
        response.headers["x-litellm-attempted-retries"] = "2"
        return response

    respx.post(URL).mock(side_effect=through_litellm)
    code, result, _ = run_json(["-q", "Q?"], capsys)
    trace = [json.loads(line) for line in Path(result["trace"]).read_text().splitlines()]
    attempts = [r for r in trace if r["type"] == "attempt"]
    assert code == 0 and attempts and all(r["gateway_retries"] == 2 for r in attempts)
    assert "the gateway retried 2 time(s) upstream" in Path(result["transcript"]).read_text()


@respx.mock
def test_gateway_retries_of_an_unusable_reply_are_counted(capsys) -> None:
    """An empty reply the gateway retried upstream twice: its failed attempt still counts those requests."""
    def empty_once(request: httpx.Request, n: int) -> httpx.Response:
        response = completion("" if n == 0 else solver_text("391"))
        response.headers["x-litellm-attempted-retries"] = "2" if n == 0 else "0"
        return response

    respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": empty_once}))
    code, result, _ = run_json(["-q", "Q?"], capsys)
    trace = [json.loads(line) for line in Path(result["trace"]).read_text().splitlines()]
    failed = [r for r in trace if r["type"] == "attempt" and r["outcome"] != "ok"]
    assert code == 0 and failed and all(r["gateway_retries"] == 2 for r in failed)
