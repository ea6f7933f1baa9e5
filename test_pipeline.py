"""Pipeline tests against a respx-mocked endpoint: no network, no real sleeping."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
import parsing
from conftest import (
    FAKE_KEY,
    URL,
    FakeModel,
    FakeSleep,
    body_of,
    completion,
    judge_text,
    phases_of,
    solver_text,
    test_runtime,
)

pytestmark = pytest.mark.usefixtures("endpoint_env")


def run_json(argv: list[str], capsys, runtime: moa.Runtime | None = None) -> tuple[int, dict]:
    code = moa.main([*argv, "--json"], runtime=runtime or test_runtime())
    out = capsys.readouterr().out
    return code, json.loads(out)


# --- the happy path -------------------------------------------------------------


@respx.mock
def test_full_run_makes_exactly_18_calls(capsys) -> None:
    """5 workers, 3 judges, rebuttal on: 5 + 5 + 5 + 3 calls, and a verdict."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "What is 17 * 23?"], capsys)
    assert code == 0
    assert phases_of(route).count("generate") == 5
    assert phases_of(route).count("critique") == 5
    assert phases_of(route).count("rebuttal") == 5
    assert phases_of(route).count("judge") == 3
    assert result["llm_calls"] == result["http_requests"] == 18
    assert result["final_answer"] == "391"
    assert (result["confidence"], result["judges_agreeing"], result["judges_valid"]) == (90, 3, 3)
    assert result["status"] == "ok" and result["error"] is None and result["rerun"] is False
    assert result["phases"]["critique"] == {"ok": 5, "failed": 0}
    assert Path(result["transcript"]).is_file()


@respx.mock
def test_no_rebuttal_makes_13_calls(capsys) -> None:
    """--no-rebuttal skips phase 3: 5 + 5 + 3 calls."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "What is 17 * 23?", "--no-rebuttal"], capsys)
    assert code == 0 and route.call_count == 13
    assert "rebuttal" not in phases_of(route)


@respx.mock
def test_request_shape(capsys) -> None:
    """Bearer key, MODEL_NAME, temperatures and token limits go in every request."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    run_json(["-q", "Q?", "--model", "llama-3-8b", "-w", "2", "-j", "1", "--no-rebuttal"], capsys)
    for call in route.calls:
        assert call.request.headers["Authorization"] == f"Bearer {FAKE_KEY}"
        body = body_of(call)
        assert body["model"] == "llama-3-8b"
        assert body["messages"][0]["role"] == "system" and body["messages"][1]["role"] == "user"
        phase = call.request.headers["X-MoA-Phase"]
        assert body["temperature"] == (0.2 if phase == "judge" else 1.0)
        assert body["max_tokens"] == 8192


@respx.mock
def test_human_output(capsys) -> None:
    """The human summary shows verdict, confidence, agreement, phases and transcript."""
    respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["-q", "What is 17 * 23?"], runtime=test_runtime()) == 0
    out = capsys.readouterr().out
    assert "Answer: 391" in out
    assert "Confidence: 90/100, 3/3 judges agree" in out
    assert "5/5 valid" in out and "5/5 critiques" in out and "3/3 verdicts" in out
    assert "Transcript: " in out and "logs" in out


@respx.mock
def test_question_from_stdin(capsys, monkeypatch) -> None:
    """-q - reads the question from standard input."""
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("What is 17 * 23?\n"))
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "-"], capsys)
    assert code == 0 and result["question"] == "What is 17 * 23?"
    assert "What is 17 * 23?" in body_of(route.calls[0])["messages"][1]["content"]


# --- graceful degradation ----------------------------------------------------------


@respx.mock
def test_failed_critique_leaves_answer_in_play(capsys, monkeypatch) -> None:
    """A critique that always comes back empty is noted; the debate goes on."""
    monkeypatch.setenv("MAX_RETRIES", "1")

    def critique(request: httpx.Request, n: int) -> httpx.Response:
        if request.headers["X-MoA-Agent"] == "solver-2->solver-1":
            return completion("")
        return completion("<critique>Looks right.</critique>")

    route = respx.post(URL).mock(side_effect=FakeModel(overrides={"critique": critique}))
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["final_answer"] == "391"
    assert result["phases"]["critique"] == {"ok": 4, "failed": 1}
    # The uncritiqued solver has nothing to rebut; the other four do.
    assert phases_of(route).count("rebuttal") == 4
    transcript = Path(result["transcript"]).read_text()
    assert "critique of solver-1 failed (the response content is empty); its answer stays in play" in transcript


@respx.mock
def test_too_few_valid_answers_fails_clearly(capsys, monkeypatch) -> None:
    """Fewer than MIN_VALID_ANSWERS answers ends the run with exit 1 and the reason (phase barriers on)."""
    monkeypatch.setenv("MAX_RETRIES", "1")
    monkeypatch.setenv("PHASE_BARRIERS", "true")
    model = FakeModel(overrides={"generate": lambda r, n: (
        completion(solver_text("7")) if r.headers["X-MoA-Agent"] == "solver-1" else httpx.Response(500))})
    route = respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 1 and result["status"] == "failed"
    assert "only 1/5 solvers gave a valid answer (MIN_VALID_ANSWERS=2)" in result["error"]
    assert "HTTP 500" in result["error"]
    assert result["final_answer"] is None
    assert set(phases_of(route)) == {"generate"}  # no later phase was attempted
    assert Path(result["transcript"]).is_file()


@respx.mock
def test_unreachable_quorum_stops_the_chains(capsys, monkeypatch) -> None:
    """Without barriers, once MIN_VALID_ANSWERS is out of reach the round fails at once: no judge is asked."""
    monkeypatch.setenv("MAX_RETRIES", "0")
    model = FakeModel(overrides={"generate": lambda r, n: (
        completion(solver_text("7")) if r.headers["X-MoA-Agent"] == "solver-1" else httpx.Response(500))})
    route = respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 1 and "MIN_VALID_ANSWERS=2" in result["error"]
    assert "judge" not in phases_of(route)


@respx.mock
def test_no_judge_answer_falls_back_to_solver_majority(capsys, monkeypatch) -> None:
    """When no judge yields a FINAL ANSWER, the solvers' majority is the verdict, and it says so."""
    monkeypatch.setenv("MAX_RETRIES", "0")
    monkeypatch.setenv("MIN_JUDGE_CONFIDENCE", "0")
    answers = iter(["391", "391", "391", "390", "392"])
    model = FakeModel(overrides={
        "generate": lambda r, n: completion(solver_text(next(answers))),
        "rebuttal": lambda r, n: completion("<rebuttal>I stand.</rebuttal>"),  # no answer: keeps first
        "judge": lambda r, n: completion("I cannot decide."),
    })
    respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0
    assert result["final_answer"] == "391" and result["verdict_source"] == "solvers"
    assert result["confidence"] == 50  # 3 of 5 solvers agree, capped: no judge checked it (UNCHECKED_CONFIDENCE)
    assert "no_judge_verdict" in result["doubts"]
    assert "no judge gave a FINAL ANSWER" in Path(result["transcript"]).read_text()


@respx.mock
def test_judge_naming_a_candidate_votes_for_its_answer(capsys, monkeypatch) -> None:
    """'FINAL ANSWER: Candidate B' counts as candidate B's answer (the second solver's), never as the text."""
    monkeypatch.setenv("SHUFFLE_JUDGES", "false")
    by_slot = {"solver-1": "391", "solver-2": "390", "solver-3": "392", "solver-4": "393", "solver-5": "394"}
    model = FakeModel(overrides={
        "generate": lambda r, n: completion(solver_text(by_slot[r.headers["X-MoA-Agent"]])),
        "rebuttal": lambda r, n: completion("<rebuttal>I stand.</rebuttal>"),  # no answer: keeps its own
        "judge": lambda r, n: completion(judge_text("Candidate B", 80)),
    })
    respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["final_answer"] == "390" and result["judges_agreeing"] == 3


# --- retries -------------------------------------------------------------------------


@respx.mock
def test_retry_uses_a_fresh_nonce_and_skips_the_cache(capsys) -> None:
    """Each attempt's user prompt ends with a different nonce; retries ask the gateway to skip its cache."""
    failures = {"n": 0}

    def generate(request: httpx.Request, n: int) -> httpx.Response:
        if request.headers["X-MoA-Agent"] == "solver-1" and failures["n"] < 2:
            failures["n"] += 1
            return completion("")  # what a cached empty response looks like
        return completion(solver_text("391"))

    sleep = FakeSleep()
    route = respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": generate}))
    code, result = run_json(["-q", "Q?"], capsys, test_runtime(sleep))
    assert code == 0
    solver1 = [c for c in route.calls
               if c.request.headers["X-MoA-Agent"] == "solver-1" and c.request.headers["X-MoA-Phase"] == "generate"]
    assert len(solver1) == 3
    users = [body_of(c)["messages"][-1]["content"] for c in solver1]
    assert len(set(users)) == 3, "every attempt's request body must differ"
    assert [c.request.headers.get("cf-aig-skip-cache") for c in solver1] == [None, "true", "true"]
    assert len(sleep.delays) == 2
    assert result["http_requests"] == 20 and result["llm_calls"] == 18


@pytest.mark.parametrize("reply, why", [
    pytest.param(lambda: httpx.Response(200, content=b"not json{"), "not valid JSON", id="bad-json"),
    pytest.param(lambda: httpx.Response(200, json={"error": {"message": "overloaded"}}), "overloaded",
                 id="error-object"),
    pytest.param(lambda: httpx.Response(200, json={"choices": []}), "no choices", id="no-choices"),
    pytest.param(lambda: completion("   "), "empty", id="empty-content"),
    pytest.param(lambda: completion("<reasoning>17*20=340 and then", finish_reason="length"), "cut off",
                 id="cut-off-by-length"),
    pytest.param(lambda: httpx.Response(200, content=b'{"choices":[{"message":{"content":"\\ud800"}}]}'),
                 "not valid Unicode", id="lone-surrogate"),
    pytest.param(lambda: httpx.Response(200, content=b"\xff\xfe{}"), "not valid JSON", id="invalid-utf8"),
    pytest.param(lambda: httpx.Response(503, text="busy"), "HTTP 503", id="503"),
    pytest.param(lambda: httpx.Response(408), "HTTP 408", id="408"),
    pytest.param(lambda: httpx.Response(409), "HTTP 409", id="409"),
    pytest.param(lambda: httpx.ConnectError("refused"), "connection error", id="connect-error"),
    pytest.param(lambda: httpx.ReadTimeout("slow"), "no response within REQUEST_TIMEOUT", id="timeout"),
])
@respx.mock
def test_retryable_failures_are_retried(reply, why: str, capsys) -> None:
    """Bad bodies, empty or cut-off content, 408/409/5xx, timeouts and connection errors are retried."""
    first = {"done": False}

    def generate(request: httpx.Request, n: int) -> httpx.Response:
        if request.headers["X-MoA-Agent"] == "solver-1" and not first["done"]:
            first["done"] = True
            outcome = reply()
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return completion(solver_text("391"))

    respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": generate}))
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["http_requests"] == 19
    transcript = Path(result["transcript"]).read_text()
    assert why in transcript


@pytest.mark.parametrize("header", ["7", "DATE"], ids=["seconds", "http-date"])
@respx.mock
def test_retry_after_is_honoured(header: str, capsys) -> None:
    """A 429 with Retry-After (seconds or HTTP date) waits that long, then succeeds."""
    now = 1_700_000_000.0
    if header == "DATE":
        header = format_datetime(datetime.fromtimestamp(now + 7, tz=UTC), usegmt=True)
    sent = {"n": 0}

    def generate(request: httpx.Request, n: int) -> httpx.Response:
        if request.headers["X-MoA-Agent"] == "solver-1" and sent["n"] == 0:
            sent["n"] += 1
            return httpx.Response(429, headers={"Retry-After": header}, json={"error": "slow down"})
        return completion(solver_text("391"))

    sleep = FakeSleep()
    respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": generate}))
    code, _ = run_json(["-q", "Q?"], capsys, test_runtime(sleep, now=now))
    assert code == 0
    assert sleep.delays == [pytest.approx(7.0)]


def test_retry_after_is_capped() -> None:
    """A Retry-After beyond RETRY_MAX_DELAY waits RETRY_MAX_DELAY."""
    config = moa.Config(URL, FAKE_KEY, retry_max_delay=30.0)
    assert moa.retry_delay(config, 1, 3600.0, __import__("random").Random(1)) == 30.0


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    """Without Retry-After the delay is uniform in [0, min(cap, base * 2^(n-1))]."""
    import random
    config = moa.Config(URL, FAKE_KEY, retry_base_delay=1.0, retry_max_delay=5.0)
    rng = random.Random(3)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = [moa.retry_delay(config, attempt, None, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # really spread over the range


@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0), ("0", None), ("-5", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("soon", None), (None, None),
])
def test_parse_retry_after(value, seconds) -> None:
    """Retry-After in seconds or as an HTTP date; one that says "now" (0, negative, a past date) and junk are no hint."""
    assert parsing.parse_retry_after(value, 1_700_000_000.0) == seconds


@respx.mock
def test_retries_run_out(capsys, monkeypatch) -> None:
    """A call that keeps failing makes MAX_RETRIES + 1 attempts, then counts as failed."""
    monkeypatch.setenv("MAX_RETRIES", "2")
    model = FakeModel(overrides={"generate": lambda r, n: (
        httpx.Response(502, html="<html><body>Bad gateway</body></html>")
        if r.headers["X-MoA-Agent"] == "solver-1" else completion(solver_text("391")))})
    route = respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0
    assert phases_of(route).count("generate") == 4 + 3
    assert result["phases"]["generate"] == {"ok": 4, "failed": 1}
    transcript = Path(result["transcript"]).read_text()
    assert "HTTP 502: an HTML error page" in transcript and "<body>" not in transcript


@pytest.mark.parametrize("status, words", [
    (401, "rejected the API key"), (403, "rejected the API key"), (400, "HTTP 400"), (404, "HTTP 404"),
])
@respx.mock
def test_fatal_status_fails_fast(status: int, words: str, capsys) -> None:
    """400/401/403/404 on every call fail the run with the server's message: no retries, one request per worker."""
    route = respx.post(URL).mock(return_value=httpx.Response(status, json={"error": {"message": "nope: server says"}}))
    sleep = FakeSleep()
    code, result = run_json(["-q", "Q?"], capsys, test_runtime(sleep))
    assert code == 1 and result["status"] == "failed"
    assert words in result["error"] and "nope: server says" in result["error"]
    assert 1 <= route.call_count <= 5 and sleep.delays == []


# --- voting and the rerun ----------------------------------------------------------


def test_tie_goes_to_higher_confidence() -> None:
    """Two sides of one vote each: the side with the more confident judge wins."""
    votes = [moa.Vote("390", 70), moa.Vote("391", 95)]
    verdict = moa.tally_votes(votes)
    assert verdict is not None
    assert (verdict.answer, verdict.confidence, verdict.agreeing, verdict.valid) == ("391", 95, 1, 2)


def test_majority_beats_confidence_and_reports_best_of_winners() -> None:
    """Two votes beat one, however confident; the confidence is the winning side's best."""
    votes = [moa.Vote("**391**", 60), moa.Vote("999", 100), moa.Vote("391.0", 80)]
    verdict = moa.tally_votes(votes)
    assert verdict is not None
    assert (verdict.answer, verdict.confidence, verdict.agreeing, verdict.valid) == ("391.0", 80, 2, 3)


def test_tally_of_nothing_is_none() -> None:
    """No countable votes gives no verdict (never an empty one)."""
    assert moa.tally_votes([moa.Vote("  ", 90)]) is None


@respx.mock
def test_low_confidence_reruns_once_with_more_workers(capsys) -> None:
    """Confidence below MIN_JUDGE_CONFIDENCE reruns once, hotter and with 2 more workers; never twice."""
    route = respx.post(URL).mock(side_effect=FakeModel(confidence=30))
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["rerun"] is True
    generate = [c for c in route.calls if c.request.headers["X-MoA-Phase"] == "generate"]
    assert len(generate) == 5 + 7
    assert [body_of(c)["temperature"] for c in generate[5:]] == [pytest.approx(1.2)] * 7
    assert result["llm_calls"] == 18 + (7 + 7 + 7 + 3)
    assert result["confidence"] == 30


@respx.mock
def test_rerun_reports_the_more_confident_verdict(capsys) -> None:
    """The rerun's verdict replaces the first only when it is more confident."""
    def judge(request: httpx.Request, n: int) -> httpx.Response:
        # Round one (3 judges) says 390 at 40; round two says 391 at 85.
        return completion(judge_text("390", 40) if n < 3 else judge_text("391", 85))

    respx.post(URL).mock(side_effect=FakeModel(overrides={"judge": judge}))
    code, result = run_json(["-q", "Q?"], capsys)
    assert (result["final_answer"], result["confidence"], result["rerun"]) == ("391", 85, True)
    transcript = Path(result["transcript"]).read_text()
    assert "Pass 2 · Phase 4 - Judges" in transcript


@pytest.mark.parametrize("second, reported", [(50, "391"), (49, "390"), (51, "391")],
                         ids=["tie-goes-to-the-rerun", "less-confident-rerun-loses", "more-confident-rerun-wins"])
@respx.mock
def test_rerun_tie_rule(second: int, reported: str, capsys) -> None:
    """Equal confidence: the rerun's verdict is reported (it heard more solvers); lower: round one's."""
    def judge(request: httpx.Request, n: int) -> httpx.Response:
        return completion(judge_text("390", 50) if n < 3 else judge_text("391", second))

    respx.post(URL).mock(side_effect=FakeModel(overrides={"judge": judge}))
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["rerun"] is True and result["final_answer"] == reported


@respx.mock
def test_failed_rerun_keeps_first_verdict(capsys) -> None:
    """If the rerun cannot reach a verdict, round one's verdict is still reported."""
    def generate(request: httpx.Request, n: int) -> httpx.Response:
        return completion(solver_text("391")) if n < 5 else httpx.Response(500)

    respx.post(URL).mock(side_effect=FakeModel(confidence=30, overrides={"generate": generate}))
    code, result = run_json(["-q", "Q?"], capsys, test_runtime())
    assert code == 0 and result["final_answer"] == "391" and result["rerun"] is True
    assert "the rerun failed" in Path(result["transcript"]).read_text()


# --- configuration -------------------------------------------------------------------


def test_precedence_flag_over_env_over_dotenv_over_default() -> None:
    """Flag beats environment beats .env beats the default."""
    dotenv = {"PROXY_URL": "http://a.test/v1", "API_KEY": "k", "NUM_WORKERS": "3", "NUM_JUDGES": "4",
              "MAX_RETRIES": "7"}
    environ = {"NUM_WORKERS": "6", "NUM_JUDGES": "5"}
    config = moa.load_config({"NUM_WORKERS": "8"}, environ, dotenv)
    assert config.num_workers == 8      # flag
    assert config.num_judges == 5       # environment
    assert config.max_retries == 7      # .env
    assert config.temperature == 1.0    # default


def test_openai_names_are_fallbacks() -> None:
    """OPENAI_BASE_URL / OPENAI_API_KEY are used only when PROXY_URL / API_KEY are unset."""
    config = moa.load_config({}, {"OPENAI_BASE_URL": "https://api.openai.test/v1", "OPENAI_API_KEY": "k1"}, {})
    assert (config.proxy_url, config.api_key) == ("https://api.openai.test/v1/chat/completions", "k1")
    config = moa.load_config({}, {"OPENAI_BASE_URL": "https://o.test/v1"}, {"PROXY_URL": "http://p.test", "API_KEY": "k"})
    assert config.proxy_url == "http://p.test/chat/completions"


@pytest.mark.parametrize("raw, url", [
    ("http://localhost:8080/v1", "http://localhost:8080/v1/chat/completions"),
    ("http://localhost:8080/v1/", "http://localhost:8080/v1/chat/completions"),
    ("https://gw.test/v1/acct/gw/openai/chat/completions", "https://gw.test/v1/acct/gw/openai/chat/completions"),
    (" http://h.test ", "http://h.test/chat/completions"),
])
def test_proxy_url_forms(raw: str, url: str) -> None:
    """PROXY_URL may be the full chat-completions URL or a base URL."""
    assert moa.chat_completions_url(raw) == url


@pytest.mark.parametrize("env, words", [
    ({"NUM_WORKERS": "abc"}, "NUM_WORKERS='abc' (environment) is not valid: expected a whole number from 1 to 64"),
    ({"NUM_WORKERS": "-1"}, "NUM_WORKERS='-1'"),
    ({"TEMPERATURE": "hot"}, "TEMPERATURE='hot'"),
    ({"REQUEST_TIMEOUT": "0"}, "REQUEST_TIMEOUT='0'"),
    ({"MIN_JUDGE_CONFIDENCE": "101"}, "MIN_JUDGE_CONFIDENCE='101'"),
    ({"ENABLE_REBUTTAL": "maybe"}, "expected true or false"),
    ({"MIN_VALID_ANSWERS": "6"}, "MIN_VALID_ANSWERS=6 is more than NUM_WORKERS=5"),
    ({"PROXY_URL": "ftp://x.test"}, "PROXY_URL='ftp://x.test' (environment) is not valid: expected an http"),
    ({"PROXY_URL": "localhost:8080"}, "PROXY_URL='localhost:8080'"),
    ({"PROXY_URL": None}, "PROXY_URL is not set"),
    ({"API_KEY": None}, "API_KEY is not set"),
    ({"API_KEY": "two words"}, "API_KEY=*** (environment) is not valid"),
])
@respx.mock
def test_bad_configuration_exits_2_without_a_request(env, words, capsys, monkeypatch) -> None:
    """Each bad value gives one line naming the variable, its value and what is allowed; exit 2; no request."""
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    route = respx.post(url__regex=".*").mock(side_effect=FakeModel())
    assert moa.main(["-q", "Q?"], runtime=test_runtime()) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and err.startswith("error: ")
    assert "Traceback" not in err and "two words" not in err
    assert route.call_count == 0


@respx.mock
def test_flag_validation_names_the_flag(capsys) -> None:
    """-w 1 with MIN_VALID_ANSWERS=2 is refused before any request."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["-q", "Q?", "-w", "1"]) == 2
    assert "MIN_VALID_ANSWERS=2 is more than NUM_WORKERS=1" in capsys.readouterr().err
    assert route.call_count == 0


@respx.mock
def test_env_file_is_read_and_missing_one_is_an_error(capsys, tmp_path, monkeypatch) -> None:
    """--env-file supplies settings under the environment; a missing file is exit 2."""
    monkeypatch.delenv("PROXY_URL")
    (tmp_path / "custom.env").write_text(f"PROXY_URL={URL}\nNUM_WORKERS=2\nNUM_JUDGES=1\nENABLE_REBUTTAL=false\n")
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, _ = run_json(["-q", "Q?", "--env-file", str(tmp_path / "custom.env")], capsys)
    assert code == 0 and route.call_count == 2 + 2 + 1
    assert moa.main(["-q", "Q?", "--env-file", str(tmp_path / "nope.env")]) == 2
    assert "--env-file" in capsys.readouterr().err


@respx.mock
def test_dotenv_in_working_directory_is_read(capsys, tmp_path, monkeypatch) -> None:
    """./.env is read by default and sits under the environment."""
    (tmp_path / ".env").write_text("NUM_WORKERS=2\nNUM_JUDGES=1\nMAX_RETRIES=9\n")
    monkeypatch.setenv("NUM_JUDGES", "2")
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, _ = run_json(["-q", "Q?", "--no-rebuttal"], capsys)
    assert code == 0 and route.call_count == 2 + 2 + 2


def test_empty_question_is_a_usage_error(capsys) -> None:
    """An empty or whitespace question is refused with exit 2."""
    assert moa.main(["-q", "   "]) == 2
    assert "the question is empty" in capsys.readouterr().err


def test_usage_error_and_help_exit_codes(capsys) -> None:
    """A missing -q is a usage error (2); --help exits 0 and goes to stdout."""
    assert moa.main([]) == 2
    assert moa.main(["--help"]) == 0
    assert "--no-rebuttal" in capsys.readouterr().out


# --- transcripts and secrets ---------------------------------------------------------


@respx.mock
def test_transcript_contents_and_mode(capsys) -> None:
    """The transcript holds config (key masked), every prompt and response, retries, tally and verdict; mode 0600."""
    model = FakeModel(overrides={"judge": lambda r, n: (
        httpx.Response(500) if n == 0 else completion(judge_text("391", 88)))})
    respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "What is 17 * 23?"], capsys)
    path = Path(result["transcript"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for needle in ["=== Question ===", "What is 17 * 23?", "API_KEY=***", "NUM_WORKERS=5",
                   "Phase 1 - Blind generation", "Phase 2 - Cross-critique", "Phase 3 - Rebuttal",
                   "Phase 4 - Judges", "<answer>391</answer>", "HTTP 500", "retrying in",
                   "=== Tally ===", "=== Verdict ===", "answer: 391", "You are an impartial judge"]:
        assert needle in text, needle
    assert path.name.startswith("moa_run_") and path.suffix == ".txt"


def test_two_transcripts_in_one_second_never_collide(tmp_path) -> None:
    """The same name twice gets a _1 suffix instead of overwriting."""
    first, fd1 = moa.create_private_file(tmp_path, "moa_run_20260101_000000", ".txt")
    second, fd2 = moa.create_private_file(tmp_path, "moa_run_20260101_000000", ".txt")
    os.close(fd1)
    os.close(fd2)
    assert first.name == "moa_run_20260101_000000.txt"
    assert second.name == "moa_run_20260101_000000_1.txt"


@respx.mock
def test_unwritable_log_dir_still_prints_the_verdict(capsys, monkeypatch, tmp_path) -> None:
    """A LOG_DIR that cannot be created warns and the run goes on without a transcript."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("LOG_DIR", str(blocker / "logs"))
    respx.post(URL).mock(side_effect=FakeModel())
    code = moa.main(["-q", "Q?", "--json"], runtime=test_runtime())
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert code == 0 and result["final_answer"] == "391" and result["transcript"] is None
    assert "could not write the transcript" in captured.err


@respx.mock
def test_file_logging_off_writes_nothing(capsys, monkeypatch, tmp_path) -> None:
    """ENABLE_FILE_LOGGING=false writes no transcript."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")
    respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["transcript"] is None
    assert not (tmp_path / "logs").exists()


@respx.mock
def test_api_key_never_appears_anywhere(capsys, monkeypatch, tmp_path) -> None:
    """The key is in no transcript, stdout, stderr (verbose) or error text, even when the server echoes it."""
    monkeypatch.setenv("API_KEY", f"  {FAKE_KEY}\n")  # stray whitespace is stripped, not refused
    echo = {"error": {"message": f"bad key {FAKE_KEY}"}}
    respx.post(URL).mock(side_effect=FakeModel(overrides={"judge": lambda r, n: httpx.Response(401, json=echo)}))
    code = moa.main(["-q", "Q?", "-vv"], runtime=test_runtime())
    captured = capsys.readouterr()
    assert code == 1
    files = [p.read_text() for p in (tmp_path / "logs").iterdir()]
    for text in [captured.out, captured.err, *files]:
        assert FAKE_KEY not in text
    assert "rejected the API key" in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rejected the API key" in errors[0], "the error is said once"
    assert "No verdict" in captured.out
    assert files, "a transcript is written even for a failed run"


@respx.mock
def test_a_short_placeholder_key_does_not_mangle_output(capsys, monkeypatch) -> None:
    """API_KEY=local (a placeholder for servers without auth) is not masked inside ordinary words."""
    monkeypatch.setenv("API_KEY", "k")
    respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "What is 17 * 23? Think."], capsys)
    assert result["question"] == "What is 17 * 23? Think." and result["status"] == "ok"


def test_redaction_covers_log_records() -> None:
    """The log filter masks a real key in any record, whatever logged it."""
    import logging
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "sent %s", (f"Bearer {FAKE_KEY}",), None)
    assert moa.RedactingFilter([FAKE_KEY]).filter(record)
    assert record.getMessage() == "sent Bearer ***"


# --- cancellation ----------------------------------------------------------------------


async def test_cancelled_run_still_writes_its_transcript(tmp_path) -> None:
    """Cancelling mid-debate (what Ctrl-C does) flushes the transcript of what was done."""
    config = moa.Config(URL, FAKE_KEY, log_dir=str(tmp_path / "logs"), retry_base_delay=0, straggler_factor=0)
    release = asyncio.Event()
    judging = asyncio.Event()
    model = FakeModel()

    async def side_effect(request: httpx.Request) -> httpx.Response:
        if request.headers["X-MoA-Phase"] == "judge":
            judging.set()
            await release.wait()  # never set: the judge hangs until cancelled
        return model(request)

    with respx.mock:
        respx.post(URL).mock(side_effect=side_effect)
        async with moa.open_client(config) as client:
            runtime = test_runtime()
            task = asyncio.create_task(moa.answer_question(config, "Q?", moa.Endpoint(config, client, runtime), runtime))
            await asyncio.wait_for(judging.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    [transcript] = list((tmp_path / "logs").glob("*.txt"))
    text = transcript.read_text()
    assert "Phase 3 - Rebuttal" in text and "<answer>391</answer>" in text


def test_ctrl_c_exits_130(capsys, monkeypatch) -> None:
    """KeyboardInterrupt during the run exits 130 with one clear line, and --json still prints its object."""
    async def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(moa, "run_cli", interrupted)
    assert moa.main(["-q", "Q?", "--json"]) == 130
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "failed"
    assert captured.err.strip() == "error: interrupted"


@respx.mock
def test_disk_full_while_writing_the_transcript_still_prints_the_verdict(capsys, monkeypatch) -> None:
    """ENOSPC on the transcript: a warning, and the verdict on stdout all the same."""
    import errno

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    respx.post(URL).mock(side_effect=FakeModel())
    code = moa.main(["-q", "Q?", "--json"], runtime=dataclasses.replace(test_runtime(), write=full))
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["final_answer"] == "391"
    assert "No space left on device" in captured.err and "verdict is still reported" in captured.err


def test_env_example_documents_every_setting() -> None:
    """.env.example names every setting, so it stays in step with the code."""
    example = (Path(__file__).parent / ".env.example").read_text()
    for setting in moa.SETTINGS:
        assert f"\n{setting.env}=" in example, setting.env


# --- several models, solver styles, judge order (issue 7, first part) -------------------------


@respx.mock
def test_models_round_robin_over_solver_slots_and_judges(capsys, monkeypatch) -> None:
    """MODEL_NAME=a,b: solver slots alternate a, b; critics use their own slot's model; JUDGE_MODEL for judges."""
    monkeypatch.setenv("MODEL_NAME", "model-a, model-b")
    monkeypatch.setenv("JUDGE_MODEL", "judge-x")
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "Q?"], capsys)
    used = {(c.request.headers["X-MoA-Phase"], c.request.headers["X-MoA-Agent"]): body_of(c)["model"]
            for c in route.calls}
    assert [used[("generate", f"solver-{i}")] for i in range(1, 6)] == ["model-a", "model-b"] * 2 + ["model-a"]
    assert used[("critique", "solver-2->solver-1")] == "model-b"
    assert used[("rebuttal", "solver-2")] == "model-b"
    assert {used[("judge", f"judge-{i}")] for i in range(1, 4)} == {"judge-x"}
    assert [a["model"] for a in result["answers"]] == ["model-a", "model-b", "model-a", "model-b", "model-a"]
    assert "solver-2 [model-b]" in Path(result["transcript"]).read_text()


@respx.mock
def test_a_model_not_found_is_dropped_not_fatal(capsys, monkeypatch) -> None:
    """With two models, a 404 for one drops its slots for the run; the other model carries the debate."""
    monkeypatch.setenv("MODEL_NAME", "good,missing")
    model = FakeModel()

    def side_effect(request: httpx.Request) -> httpx.Response:
        if body_of_request(request)["model"] == "missing":
            return httpx.Response(404, json={"error": {"message": "model 'missing' not found"}})
        return model(request)

    route = respx.post(URL).mock(side_effect=side_effect)
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["final_answer"] == "391"
    missing_calls = [c for c in route.calls if body_of(c)["model"] == "missing"]
    assert 1 <= len(missing_calls) <= 2, "dropped after its first 404s, never retried"
    assert "model missing failed" in Path(result["transcript"]).read_text()


def body_of_request(request: httpx.Request) -> dict:
    return json.loads(request.content)


@respx.mock
def test_solver_styles_on_and_off(capsys, monkeypatch) -> None:
    """SOLVER_STYLES gives each slot a different stance, at the end of its rules (before the question, for small
    models: prompts.py's Layout); off, every solver gets the same prompts."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    run_json(["-q", "Q?", "--no-rebuttal"], capsys)
    sent = [body_of(c)["messages"] for c in route.calls if c.request.headers["X-MoA-Phase"] == "generate"]
    systems = [m[0]["content"] for m in sent]
    assert len(set(systems)) == 5 and all("</answer>\nYour approach:" in system for system in systems)
    assert all(m[-1]["content"].startswith("<question>\nQ?\n</question>\n\n") for m in sent)  # then the nonce
    route.calls.clear()
    monkeypatch.setenv("SOLVER_STYLES", "off")
    run_json(["-q", "Q?", "--no-rebuttal"], capsys)
    systems = [body_of(c)["messages"][0]["content"] for c in route.calls
               if c.request.headers["X-MoA-Phase"] == "generate"]
    assert len(set(systems)) == 1 and "Your approach:" not in systems[0]


@respx.mock
def test_judges_see_different_orders_and_labels_map_back(capsys) -> None:
    """Each judge sees the candidates rotated; 'Candidate A' means a different candidate to each judge."""
    answers = iter(["391", "390", "392", "393", "394"])
    model = FakeModel(overrides={
        "generate": lambda r, n: completion(solver_text(next(answers))),
        "rebuttal": lambda r, n: completion("<rebuttal>I stand.</rebuttal>"),
        "judge": lambda r, n: completion(judge_text("Candidate A", 80)),
    })
    route = respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?"], capsys)
    prompts_seen = [body_of(c)["messages"][1]["content"] for c in route.calls
                    if c.request.headers["X-MoA-Phase"] == "judge"]
    assert len(set(prompts_seen)) == 3, "every judge sees its own order"
    # Judge 1 sees solver-1 first, judge 2 solver-2 first, judge 3 solver-3 first: three different votes.
    assert result["verdict_source"] == "judges" and result["judges_agreeing"] == 1
    tally = json.loads(Path(result["trace"]).read_text().splitlines()[-1])["verdicts"][0]["tally"]
    assert tally == {"391": 1, "390": 1, "392": 1}


def test_judge_order_off_keeps_slot_order() -> None:
    """SHUFFLE_JUDGES=false: every judge sees slot order."""
    positions = [moa.Position(i, str(i), "") for i in range(4)]
    assert moa.judge_order(positions, 2, False) == positions
    assert [p.slot for p in moa.judge_order(positions, 2, True)] == [2, 3, 0, 1]


# --- what the vote hides (issue 7) ----------------------------------------------------------


@respx.mock
def test_dissent_split_and_convergence_are_reported(capsys, monkeypatch) -> None:
    """The minority answers with their holders, a split vote, and solvers that all switched after critique."""
    monkeypatch.setenv("MIN_JUDGE_CONFIDENCE", "0")
    first = iter(["390", "390", "390", "390", "391"])
    judges = iter([judge_text("391", 70), judge_text("390", 60), judge_text("392", 50)])
    model = FakeModel(overrides={
        "generate": lambda r, n: completion(solver_text(next(first))),
        "rebuttal": lambda r, n: completion("<rebuttal>The critic is right.</rebuttal><answer>391</answer>"),
        "judge": lambda r, n: completion(next(judges)),
    })
    respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?", "--phase-barriers"], capsys)
    assert result["final_answer"] == "391"
    assert result["dissent"] == [{"answer": "390", "judges": 1, "solvers": 0},
                                 {"answer": "392", "judges": 1, "solvers": 0}]
    assert result["judges_split"] is True
    assert result["converged_after_critique"] is True
    assert [a["changed"] for a in result["answers"]] == [True, True, True, True, False]


def test_human_output_says_what_the_vote_hides() -> None:
    """The summary names each minority answer with its holders, a split, and convergence."""
    positions = [moa.Position(i, "390", "", final_answer="391") for i in range(4)]
    positions.append(moa.Position(4, "392", "", final_answer="392"))
    verdict = moa.Verdict("391", 70, 1, 3, "judges", {"391": 1, "390": 1, "392": 1})
    key = moa.typed_key(verdict.kind, "Q?")
    record = dataclasses.replace(moa.run_record(moa.Config(URL, FAKE_KEY), "Q?"), judges_split=True,
                                 dissent=moa.minority_report(verdict, positions, key), converged_after_critique=True,
                                 answers=moa.answer_changes(positions, key))
    lines = moa.said_by_the_minority(record)
    assert lines == ["Also held: 392 (1 judge, 1 solver)", "Also held: 390 (1 judge)",
                     "Judges split: no answer has a majority of the judges.",
                     "Converged after critique: 4 of 5 solvers switched to one answer; shared errors can look "
                     "like consensus."]


def test_no_convergence_flag_when_few_switch() -> None:
    """One solver of five changing its mind is not convergence."""
    positions = [moa.Position(i, "391", "", final_answer="391") for i in range(4)]
    positions.append(moa.Position(4, "390", "", final_answer="391"))
    assert moa.converged_after_critique(positions) is False
    verdict = moa.Verdict("391", 90, 3, 3, "judges", {"391": 3})
    assert moa.judges_split(verdict) is False and moa.minority_report(verdict, positions) == []


@respx.mock
def test_number_verdict_is_printed_bare_and_votes_numerically(capsys, monkeypatch) -> None:
    """'391.0', '391 apples' and '**391**' vote together; the verdict prints as 391."""
    judges = iter([judge_text("391.0", 70), judge_text("391 apples", 80), judge_text("390", 90)])
    respx.post(URL).mock(side_effect=FakeModel(overrides={"judge": lambda r, n: completion(next(judges))}))
    code, result = run_json(["-q", "What is 17 * 23?"], capsys)
    assert (result["final_answer"], result["judges_agreeing"], result["answer_type"]) == ("391", 2, "number")


@respx.mock
def test_multiple_choice_verdict_is_the_letter(capsys) -> None:
    """(B), 'b)' and 'B. 63' are one vote; the verdict is B."""
    question = "Which is divisible by 7?\n(A) 50\n(B) 63\n(C) 80"
    judges = iter([judge_text("(B)", 70), judge_text("b) 63", 80), judge_text("C", 90)])
    model = FakeModel(answer="B", overrides={"judge": lambda r, n: completion(next(judges))})
    respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", question], capsys)
    assert (result["final_answer"], result["answer_type"]) == ("B", "choice")


@respx.mock
def test_free_text_verdict_is_chosen_by_label_and_printed_verbatim(capsys, monkeypatch) -> None:
    """Long short-shape answers never match as strings: judges pick a label, and that candidate's text is the
    verdict (a full answer is ranked instead: test_full_answers.py)."""
    monkeypatch.setenv("SHUFFLE_JUDGES", "false")
    monkeypatch.setenv("MIN_JUDGE_CONFIDENCE", "0")
    texts = [f"Essay {i}: " + "because of Rayleigh scattering of sunlight by the air, " * 3 for i in range(5)]
    answers = iter(texts)
    judges = iter([judge_text("B", 80), judge_text("Candidate B", 70), judge_text("A", 60)])
    model = FakeModel(overrides={
        "generate": lambda r, n: completion(solver_text(next(answers))),
        "rebuttal": lambda r, n: completion("<rebuttal>I stand.</rebuttal>"),
        "judge": lambda r, n: completion(next(judges)),
    })
    route = respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Explain why the sky is blue.", "--answer", "short"], capsys)
    assert result["answer_type"] == "long" and result["final_answer"] == texts[1].strip()
    assert result["judges_agreeing"] == 2
    judge_system = next(body_of(c)["messages"][0]["content"] for c in route.calls
                        if c.request.headers["X-MoA-Phase"] == "judge")
    assert "the label of the best candidate" in judge_system


def test_batch_correctness_is_type_aware() -> None:
    """An expected '391' matches a verdict '391.0'; 'B' matches '(B)' for a multiple-choice question."""
    assert moa.answers_match("What is 17*23?", "391.0", "391")
    assert moa.answers_match("Pick one\n(A) 1\n(B) 2", "(B)", "B")
    assert not moa.answers_match("Is 91 prime?", "yes", "no")


@respx.mock
def test_dissent_never_lists_the_verdict_itself(capsys) -> None:
    """Regression: with a typed vote (letters), the minority report compares answers the way the vote did."""
    question = "Which is divisible by 7?\n(A) 50\n(B) 63\n(C) 80"
    answers = iter(["B", "(b)", "B.", "A", "A"])
    model = FakeModel(overrides={
        "generate": lambda r, n: completion(solver_text(next(answers))),
        "rebuttal": lambda r, n: completion("<rebuttal>I stand.</rebuttal>"),
        "judge": lambda r, n: completion(judge_text("B", 90)),
    })
    respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", question], capsys)
    assert result["final_answer"] == "B"
    assert result["dissent"] == [{"answer": "A", "judges": 0, "solvers": 2}]
    assert not any(a["changed"] for a in result["answers"])


@pytest.mark.parametrize("flags, phase_lines, attempt_lines, httpx_lines", [
    ([], True, False, False), (["-v"], True, True, False), (["-vv"], True, True, True),
], ids=["default", "-v", "-vv"])
@respx.mock
def test_what_stderr_says_at_each_verbosity(flags, phase_lines, attempt_lines, httpx_lines, capsys) -> None:
    """A line per phase by default; -v adds a line per attempt; -vv adds httpx's own request log."""
    respx.post(URL).mock(side_effect=FakeModel())
    code = moa.main(["-q", "Q?", *flags], runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 0
    assert all(f"{phase} {n}/{n} ok" in err for phase, n in
               (("generate", 5), ("critique", 5), ("rebuttal", 5), ("judge", 3))) is phase_lines
    assert ("generate solver-1 attempt 1: HTTP 200" in err) is attempt_lines
    assert ("HTTP Request: POST" in err) is httpx_lines
