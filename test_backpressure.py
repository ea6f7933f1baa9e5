"""A busy endpoint (issue 15): the adaptive request limit, the shared cool-down that only
clustered 429s start, back-pressure retries that do not use up MAX_RETRIES, and degraded
questions reported as such by the real CLI against a real server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, FakeSleep, VirtualClock, answer_in_virtual_time, completion, test_runtime

HERE = Path(__file__).resolve().parent


# --- the adaptive limit, as a pure object --------------------------------------------------------


def test_a_burst_at_four_times_capacity_sets_the_limit_in_one_step() -> None:
    """32 sent at once to an endpoint that holds 8: whatever order the 429s come back in,
    the limit lands on 8, and then probes upward only after about 10 x limit successes."""
    limit = moa.AdaptiveLimit(32)
    for k in reversed(range(9, 33)):
        assert limit.overloaded(k) is True, "explained by concurrency"
    assert int(limit.limit) == 8
    for _ in range(79):
        limit.succeeded(8)
    assert int(limit.limit) == 8, "no probe before about 10 x limit successes"
    for _ in range(10):
        limit.succeeded(8)
    assert int(limit.limit) == 9
    limit.overloaded(40)
    assert int(limit.limit) == 9, "a late 429 from a bigger burst never moves the limit"


def test_a_scattered_429_leaves_the_limit_alone() -> None:
    """A 429 at a level where the endpoint has been saying yes is not a concurrency signal."""
    limit = moa.AdaptiveLimit(16)
    for _ in range(20):
        limit.succeeded(16)
    assert limit.overloaded(12) is False
    assert limit.overloaded(16) is False
    assert limit.limit == 16


def test_a_cut_made_before_any_success_is_undone_by_a_success_above_it() -> None:
    """A random 429 that comes back before anything else looks like overload; the first
    success sent with more in flight proves otherwise, and the limit returns."""
    limit = moa.AdaptiveLimit(16)
    assert limit.overloaded(5) is True
    assert int(limit.limit) == 4
    limit.succeeded(12)
    assert int(limit.limit) == 12
    limit.succeeded(16)
    assert int(limit.limit) == 16


def test_one_request_alone_is_never_too_many() -> None:
    limit = moa.AdaptiveLimit(8)
    for _ in range(5):
        assert limit.overloaded(1) is False
    assert limit.limit == 8


def simulate(capacity: int, ceiling: int, steps: int, scatter: float = 0.0) -> tuple[float, float]:
    """Each step sends one request with the limit's worth in flight; the endpoint rejects
    beyond ``capacity``, and a ``scatter`` share at random. Returns (mean limit, 429 share)."""
    rng = random.Random(3)
    limit = moa.AdaptiveLimit(ceiling)
    rejected, total_limit = 0, 0.0
    for _ in range(steps):
        k = int(limit.limit)
        total_limit += k
        if k > capacity or rng.random() < scatter:
            rejected += 1
            limit.overloaded(k)
        else:
            limit.succeeded(k)
    return total_limit / steps, rejected / steps


@pytest.mark.parametrize("capacity", [1, 3, 8, 20])
def test_the_limit_finds_a_fixed_capacity_and_holds_it(capacity: int) -> None:
    mean, rejected = simulate(capacity, 32, 5000)
    assert capacity - 0.5 <= mean <= capacity + 0.2
    assert rejected <= 0.02


def test_scattered_429s_do_not_wear_the_limit_down() -> None:
    """5% random 429s with ample capacity: the limit stays near MAX_CONCURRENT_REQUESTS
    (cutting on each would halve it every few seconds)."""
    mean, rejected = simulate(capacity=1000, ceiling=16, steps=5000, scatter=0.05)
    assert mean >= 15
    assert rejected < 0.07


def test_after_a_collapse_the_limit_grows_back_fast_to_what_the_endpoint_held() -> None:
    """A quota runs out: every level is refused and the limit falls to 1. When it resets, the
    limit climbs back to 8 at one per limit's worth of successes, not ten times slower."""
    limit = moa.AdaptiveLimit(16)
    for _ in range(40):
        limit.overloaded(9) if int(limit.limit) > 8 else limit.succeeded(int(limit.limit))
    assert int(limit.limit) == 8
    for k in range(8, 0, -1):
        limit.overloaded(k)
        limit.overloaded(k)
    assert limit.limit == 1
    successes = 0
    while int(limit.limit) < 8:
        limit.succeeded(int(limit.limit))
        successes += 1
    assert successes <= 40, "1 + 2 + ... + 7 = 28 successes at TCP's pace; 280 at the probing pace"
    for _ in range(20):
        limit.succeeded(8)
    assert int(limit.limit) == 8, "past what the endpoint held it probes slowly again"


async def test_a_waiter_cancelled_as_a_slot_frees_leaks_nothing() -> None:
    """The slot frees while a cancelled waiter is still queued: the cancel stays a cancel."""
    limit = moa.AdaptiveLimit(1)
    await limit.acquire()
    waiting = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    limit.release()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limit.in_flight == 0 and not limit.waiters
    assert await limit.acquire() == 1


# --- the shared cool-down, on a fake clock -------------------------------------------------------


def busy_endpoint() -> tuple[moa.Endpoint, FakeSleep]:
    sleep = FakeSleep()
    return moa.Endpoint(moa.Config(URL, "k", max_concurrent_requests=16), None, test_runtime(sleep)), sleep  # type: ignore[arg-type]


def too_many(retry_after: float = 3.0) -> moa.APIError:
    return moa.APIError("HTTP 429: slow down", moa.BUSY, status=429, retry_after=retry_after)


def warmed(endpoint: moa.Endpoint, level: int = 16) -> None:
    """The endpoint has been taking ``level`` at once."""
    for _ in range(moa.AdaptiveLimit.SAMPLES):
        endpoint.slots.succeeded(level)
        endpoint.responded(False)


def test_scattered_429s_never_pause_everyone() -> None:
    endpoint, _ = busy_endpoint()
    warmed(endpoint)
    for _ in range(moa.BUSY_CLUSTER_SIZE - 1):
        endpoint.busy(too_many(), 16)
        endpoint.responded(False)
    assert endpoint.cooldown_until == 0


def test_clustered_429s_pause_everyone_for_the_retry_after() -> None:
    endpoint, sleep = busy_endpoint()
    warmed(endpoint)
    for _ in range(moa.BUSY_CLUSTER_SIZE):
        endpoint.busy(too_many(3.0), 16)
    assert endpoint.cooldown_until == pytest.approx(sleep.now + 3.0)


def test_429s_spread_over_time_are_not_a_cluster() -> None:
    endpoint, sleep = busy_endpoint()
    warmed(endpoint)
    for _ in range(moa.BUSY_CLUSTER_SIZE):
        endpoint.busy(too_many(), 16)
        sleep.now += moa.BUSY_CLUSTER_SECONDS / (moa.BUSY_CLUSTER_SIZE - 1) + 0.1
    assert endpoint.cooldown_until == 0


def test_429s_the_limit_explains_are_not_a_cluster() -> None:
    """The first burst at 4x capacity: 24 429s at once, all explained by sending too many."""
    endpoint, _ = busy_endpoint()
    for k in range(9, 33):
        endpoint.busy(too_many(), k)
    assert endpoint.cooldown_until == 0
    assert int(endpoint.slots.limit) == 8


# --- back-pressure retries, through the real retry loop ------------------------------------------


def single_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model: FakeModel,
               sleep: FakeSleep, **settings: str) -> dict:
    monkeypatch.setenv("NUM_WORKERS", "3")
    monkeypatch.setenv("NUM_JUDGES", "1")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    respx.post(URL).mock(side_effect=model)
    code = moa.main(["-q", "What is 17 * 23?", "--json"], runtime=test_runtime(sleep))
    assert code == 0
    return json.loads(capsys.readouterr().out)


def rejecting(times: int, retry_after: str = "2"):
    """solver-1's first ``times`` requests get a 429; everything else is answered."""
    def answer(request, n):
        if request.headers["X-MoA-Agent"].endswith("solver-1") and answer.rejected < times:
            answer.rejected += 1
            return completion(None, status=429, headers={"Retry-After": retry_after})
        return FakeModel().default("generate")
    answer.rejected = 0
    return answer


@respx.mock
def test_back_pressure_does_not_use_up_max_retries(endpoint_env, monkeypatch, capsys) -> None:
    """MAX_RETRIES=0, three 429s in a row: the call still succeeds, after its own three waits."""
    sleep = FakeSleep()
    out = single_run(monkeypatch, capsys, FakeModel(overrides={"generate": rejecting(3)}), sleep, MAX_RETRIES="0")
    assert out["phases"]["generate"] == {"ok": 3, "failed": 0}
    assert sleep.delays.count(2.0) == 3


@respx.mock
def test_a_scattered_429_costs_only_its_own_call_a_wait(endpoint_env, monkeypatch, capsys) -> None:
    """One 429 with Retry-After 30: that call waits 30 s, and no other request waits at all."""
    sleep = FakeSleep()
    single_run(monkeypatch, capsys, FakeModel(overrides={"generate": rejecting(1, "30")}), sleep)
    assert sleep.delays.count(30.0) == 1
    assert [d for d in sleep.delays if d != 30.0 and d > 0.5] == []


async def solver_1_told_to_wait(retry_after: str, straggler_factor: float) -> tuple[moa.RunRecord, list]:
    """Virtual time, 1 s per call, 3 solvers: solver-1's first request gets a 429 with ``retry_after``.
    Returns the result and (phase, agent, virtual time) of every request."""
    clock = VirtualClock()
    config = moa.Config(URL, "k", num_workers=3, num_judges=1, retry_base_delay=0, enable_file_logging=False,
                        straggler_factor=straggler_factor, min_judge_confidence=0)
    model, sent = FakeModel(), []

    async def side_effect(request: httpx.Request) -> httpx.Response:
        phase, agent = request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]
        sent.append((phase, agent, clock.now))
        if (phase, agent) == ("generate", "solver-1") and [s[:2] for s in sent].count((phase, agent)) == 1:
            return completion(None, status=429, headers={"Retry-After": retry_after})
        await clock.sleep(1.0)
        return model(request)

    return await answer_in_virtual_time(config, clock, side_effect), sent


async def test_other_calls_go_on_while_one_waits_out_its_retry_after() -> None:
    """Retry-After 30: the other chains answer, are critiqued and rebut at once; only solver-1's chain waits."""
    result, sent = await solver_1_told_to_wait("30", straggler_factor=0)
    assert result.status == "ok"
    rebuttals = [(agent, at) for phase, agent, at in sent if phase == "rebuttal"]
    assert sorted(at for agent, at in rebuttals if agent != "solver-1") == [2.0, 2.0]
    assert [at for agent, at in rebuttals if agent == "solver-1"] == [32.0]


async def test_a_call_waiting_out_its_retry_after_is_not_cut_as_a_straggler() -> None:
    """STRAGGLER_FACTOR=3 and Retry-After 10: the wait is the endpoint's, not the call's, so
    solver-1 answers after 11 s and is not cut."""
    result, _ = await solver_1_told_to_wait("10", straggler_factor=3)
    solver_1 = next(c for c in result.calls if (c.phase, c.agent) == ("generate", "solver-1"))
    assert solver_1.ok and len(solver_1.attempts) == 2
    assert not any("straggler" in note for note in result.notes)


def quota_answer(request):
    body = {"error": {"message": "You exceeded your current quota, please check your plan.",
                      "type": "insufficient_quota", "code": "insufficient_quota"}}
    return httpx.Response(429, json=body, headers={"Retry-After": "1"})


@respx.mock
def test_a_quota_used_up_stops_the_run_at_once(endpoint_env, monkeypatch, capsys) -> None:
    """OpenAI's insufficient_quota is a 429 no wait fixes: no retry, one clear line, exit 1."""
    monkeypatch.setenv("NUM_WORKERS", "3")
    route = respx.post(URL).mock(side_effect=quota_answer)
    code = moa.main(["-q", "Q?"], runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 1 and route.call_count <= 3
    assert "quota is used up" in err and "add credit" in err and "Traceback" not in err


@respx.mock
def test_a_quota_used_up_stops_a_batch(endpoint_env, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("NUM_WORKERS", "3")
    route = respx.post(URL).mock(side_effect=quota_answer)
    source = tmp_path / "q.txt"
    source.write_text("".join(f"Question {n}?\n" for n in range(20)))
    code = moa.main(["-f", str(source), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime())
    assert code == 1 and route.call_count <= 3 * 8, "the batch stops; it does not try 20 questions"
    assert "quota is used up" in capsys.readouterr().err


@respx.mock
def test_a_429_without_retry_after_counts_against_max_retries(endpoint_env, monkeypatch, capsys) -> None:
    """A 429 that does not say when to come back is no promise: MAX_RETRIES=0 means one attempt."""
    model = FakeModel(overrides={"generate": lambda r, n: completion(None, status=429)
                                 if r.headers["X-MoA-Agent"].endswith("solver-1") else FakeModel().default("generate")})
    out = single_run(monkeypatch, capsys, model, FakeSleep(), MAX_RETRIES="0")
    assert out["phases"]["generate"] == {"ok": 2, "failed": 1}
    assert out["http_requests"] == out["llm_calls"], "no retry at all"


@respx.mock
def test_back_pressure_waits_are_bounded_per_call(endpoint_env, monkeypatch, capsys) -> None:
    """Retry-After 60 (RETRY_MAX_DELAY): after BUSY_WAIT_LIMIT (300 s) of such waits the call falls back
    to MAX_RETRIES (0 here): 1 attempt and 5 retries. (A longer hint, cut short by the cap, earns none.)"""
    answer = rejecting(10_000, "60")
    out = single_run(monkeypatch, capsys, FakeModel(overrides={"generate": answer}), FakeSleep(), MAX_RETRIES="0")
    assert out["phases"]["generate"] == {"ok": 2, "failed": 1}
    assert answer.rejected == 1 + moa.BUSY_WAIT_LIMIT / 60


@respx.mock
def test_back_pressure_retries_end(endpoint_env, monkeypatch, capsys) -> None:
    """An endpoint that never stops saying 429 to one call: BUSY_RETRIES, then MAX_RETRIES more, then
    the call fails and says why; the run goes on with the others."""
    answer = rejecting(10_000, "1")
    out = single_run(monkeypatch, capsys, FakeModel(overrides={"generate": answer}), FakeSleep(), MAX_RETRIES="1")
    assert out["phases"]["generate"] == {"ok": 2, "failed": 1}
    assert answer.rejected == moa.BUSY_RETRIES + 1 + 1, "20 back-pressure retries, 1 retry, the first attempt"


# --- the real CLI against a real server ----------------------------------------------------------


def cli_batch(tmp_path: Path, url: str, questions: int, **env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    source = tmp_path / "q.txt"
    source.write_text("".join(f"Question {n}: what is {n} * 3?\n" for n in range(questions)))
    output = tmp_path / "out.jsonl"
    settings = {"PROXY_URL": url, "API_KEY": "sk-test", "LOG_DIR": str(tmp_path / "logs"), "NUM_WORKERS": "3",
                "NUM_JUDGES": "2", "RETRY_BASE_DELAY": "0.01", "RETRY_MAX_DELAY": "0.2", **env}
    done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), "-f", str(source), "-o", str(output)],
                          env={**os.environ, **settings}, cwd=tmp_path, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    return done, [json.loads(line) for line in output.read_text().splitlines()]


def test_a_degraded_question_is_reported_as_degraded(tmp_path, server) -> None:
    """Every critique refused with a 400: each question is still answered (exit 0), and its line,
    the summary file and the closing line all say it was answered with fewer calls than planned."""
    endpoint = server("--fault", "400context", "--fault-phase", "critique")
    done, lines = cli_batch(tmp_path, endpoint.url, 3)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert all(line["status"] == "ok" and line["degraded"] is True for line in lines)
    assert all(line["phases"]["critique"]["failed"] == 3 for line in lines)
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["this_run"]["degraded"] == 3
    assert "3 answered with fewer calls than planned" in done.stdout + done.stderr


def test_no_call_is_lost_silently_at_the_endpoints_limit(tmp_path, server) -> None:
    """An endpoint that takes 2 at once, a client cap of 8: every call the endpoint never
    answered with a 200 is counted as failed in some output line."""
    endpoint = server("--latency", "0.02", "--max-concurrency", "2", "--retry-after", "0.05")
    done, lines = cli_batch(tmp_path, endpoint.url, 6, MAX_CONCURRENT_REQUESTS="8")
    assert done.returncode == 0, done.stderr
    answered: dict[tuple, bool] = {}
    starts = {e["n"]: e for e in endpoint.starts()}
    for end in endpoint.events("end"):
        start = starts[end["n"]]
        key = (start["run"], start["phase"], start["agent"])
        answered[key] = answered.get(key, False) or end["status"] == 200
    never = sum(1 for ok in answered.values() if not ok)
    reported = sum(p["failed"] for line in lines for p in line["phases"].values())
    assert reported >= never
    assert any(end["status"] == 429 for end in endpoint.events("end")), "the endpoint was at its limit"


# --- start-up: no CA bundle for a plain-http endpoint --------------------------------------------


def test_a_plain_http_endpoint_loads_no_ca_bundle_and_fails_closed() -> None:
    """Loading the bundle costs 40 ms of every start; the empty context refuses any certificate."""
    import ssl
    context = moa.tls_verification("http://127.0.0.1:8080/v1/chat/completions", {})
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0


@pytest.mark.parametrize("url, environ", [
    ("https://api.openai.com/v1/chat/completions", {}),
    ("HTTPS://gateway.ai.cloudflare.com/v1/x/y/openai/chat/completions", {}),
    ("http://10.0.0.5:8000/v1/chat/completions", {"HTTPS_PROXY": "https://proxy.corp:3128"}),
    ("http://10.0.0.5:8000/v1/chat/completions", {"http_proxy": "https://proxy.corp:3128"}),
    ("http://10.0.0.5:8000/v1/chat/completions", {"ALL_PROXY": "socks5://proxy.corp:1080"}),
])
def test_tls_is_verified_as_usual_wherever_it_may_be_used(url: str, environ: dict) -> None:
    assert moa.tls_verification(url, environ) is True
