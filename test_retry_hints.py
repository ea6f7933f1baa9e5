"""Issue 20, items 1-3: retry hints that say "now" or disagree, straggler ages that count only
time at the endpoint, and when a straggler cut is worth an answer (behind a retrying gateway).

Retry waits and straggler ages run on virtual time (conftest); the storm test drives the real
CLI against bench/fake_endpoint.py on 127.0.0.1 with a tiny RETRY_BASE_DELAY.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

import moa_pipeline as moa
from conftest import (
    FAKE_KEY,
    URL,
    FakeModel,
    VirtualClock,
    answer_all_in_virtual_time,
    answer_in_virtual_time,
    completion,
)

HERE = Path(__file__).resolve().parent
NOW = 1_700_000_000.0
PAST_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"


# --- item 1: a hint that says "now" is no hint; the longest hint wins; backoff is the floor ------


@pytest.mark.parametrize("headers", [
    {"Retry-After": "0"}, {"Retry-After": "-5"}, {"Retry-After": PAST_DATE}, {"retry-after-ms": "0"},
    {"retry-after-ms": "-100"}, {"llm_provider-retry-after": "0"}, {"x-ratelimit-reset-requests": "0s"},
    {"Retry-After": "0", "x-ratelimit-reset-tokens": "0ms"},
], ids=["zero", "negative", "past-date", "ms-zero", "ms-negative", "litellm-zero", "reset-zero", "all-zero"])
def test_a_hint_that_says_now_is_no_hint(headers: dict) -> None:
    """Retry-After 0, a negative wait or a date in the past gives no hint at all (the call backs off)."""
    assert moa.retry_hint(httpx.Headers(headers), 429, NOW) is None


@pytest.mark.parametrize("headers, wait", [
    ({"Retry-After": "2", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
    ({"retry-after-ms": "500", "Retry-After": "3"}, 3.0),
    ({"Retry-After": "1", "llm_provider-retry-after": "7"}, 7.0),
    ({"Retry-After": "0", "x-ratelimit-reset-requests": "2s"}, 2.0),
], ids=["reset-beats-retry-after", "retry-after-beats-ms", "litellm-beats-retry-after", "zero-beside-a-real-one"])
def test_the_longest_of_several_hints_wins(headers: dict, wait: float) -> None:
    """A reply with several hints is waited out for the longest of them."""
    assert moa.retry_hint(httpx.Headers(headers), 429, NOW) == wait


def test_a_hint_never_makes_a_retry_sooner_than_backoff() -> None:
    """A tiny hint waits what backoff alone would (same random draw); a long one waits the hint; both capped."""
    config = moa.Config(URL, FAKE_KEY, retry_base_delay=1.0, retry_max_delay=20.0)
    for seed in range(20):
        for attempt in (1, 3, 6):
            backoff = moa.retry_delay(config, attempt, None, random.Random(seed))
            assert moa.retry_delay(config, attempt, 0.001, random.Random(seed)) == max(0.001, backoff)
            assert moa.retry_delay(config, attempt, 15.0, random.Random(seed)) == max(15.0, backoff)
            assert moa.retry_delay(config, attempt, 99.0, random.Random(seed)) == 20.0


def retries_until_none(error: moa.APIError, config: moa.Config) -> list[float]:
    """Every wait RetriesUsed grants one call that keeps getting ``error``."""
    retries, rng, waits = moa.RetriesUsed(), random.Random(1), []
    while (wait := retries.next_wait(error, config, rng)) is not None:
        waits.append(wait)
    return waits


def test_a_zero_hint_earns_no_busy_retries() -> None:
    """429 with Retry-After 0: only MAX_RETRIES retries (not BUSY_RETRIES more), each a real backoff;
    a 503 with Retry-After 0 is no back-pressure either."""
    config = moa.Config(URL, FAKE_KEY, max_retries=3, retry_base_delay=1.0)
    error = moa.status_error(429, httpx.Headers({"Retry-After": "0"}), b"", NOW)
    waits = retries_until_none(error, config)
    assert len(waits) == 3 and all(wait > 0 for wait in waits)
    assert not moa.status_error(503, httpx.Headers({"Retry-After": "0"}), b"", NOW).backpressure


def test_busy_waits_never_pass_busy_wait_limit() -> None:
    """Retry-After 59 every time: the busy retries' waits stop at BUSY_WAIT_LIMIT (295 s, not 354 s)."""
    config = moa.Config(URL, FAKE_KEY, max_retries=0, retry_base_delay=0.0, retry_max_delay=60.0)
    error = moa.status_error(429, httpx.Headers({"Retry-After": "59"}), b"", NOW)
    waits = retries_until_none(error, config)
    assert sum(waits) <= moa.BUSY_WAIT_LIMIT and waits == [59.0] * 5


def test_one_question_against_429_retry_after_0_does_not_storm(tmp_path: Path, server) -> None:
    """The real CLI against a server answering only 429 Retry-After: 0: a call makes at most MAX_RETRIES + 1
    requests (not 25), and each retry waits its recorded backoff (more than 0) before the next request."""
    endpoint = server("--fault", "429", "--retry-after", "0")
    environment = {**os.environ, "PROXY_URL": endpoint.url, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"),
                   "RETRY_BASE_DELAY": "0.01", "MAX_RETRIES": "4", "NUM_WORKERS": "3", "MOA_ENV_FILE": os.devnull}
    done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), "-q", "What is 17 * 23?"], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == moa.EXIT_FAILED and "Traceback" not in done.stderr
    sent: dict[str, list[float]] = defaultdict(list)
    for start in endpoint.starts():
        sent[start["agent"]].append(start["t"])
    counts = sorted(len(times) for times in sent.values())  # the last is cancelled once the quorum is out of reach
    assert len(counts) == 3 and counts[-1] == 5 and counts[0] >= 2 and sum(counts) <= 15, counts
    (trace,) = (tmp_path / "logs").glob("*.jsonl")
    waits: dict[str, list[float]] = defaultdict(list)
    for record in map(json.loads, trace.read_text().splitlines()):
        if record["type"] == "attempt" and record["retry_in_s"] is not None:
            waits[record["agent"]].append(record["retry_in_s"])
    for agent, times in sent.items():
        assert all(wait > 0 for wait in waits[agent])
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap >= wait for gap, wait in zip(gaps, waits[agent], strict=False)) and len(gaps) <= len(waits[agent])


# --- item 2: a call ages only while its request is at the endpoint -------------------------------


def capacity_endpoint(clock: VirtualClock, capacity: int, latency: Callable[[httpx.Request], float]):
    """A mocked endpoint that holds ``capacity`` requests at once (429, Retry-After 1, beyond) and
    answers each after ``latency(request)`` virtual seconds. Returns the side effect and its counts."""
    model, state = FakeModel(), {"in_flight": 0, "peak": 0, "rejected": 0}

    async def side_effect(request: httpx.Request) -> httpx.Response:
        if state["in_flight"] >= capacity:
            state["rejected"] += 1
            return completion(None, status=429, headers={"Retry-After": "1"})
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        try:
            await clock.sleep(latency(request))
        finally:
            state["in_flight"] -= 1
        return model(request)

    return side_effect, state


def slow(agent: str, seconds: float, question: str = "") -> Callable[[httpx.Request], float]:
    """Every call takes 1 s, except ``agent``'s phase-1 call (of ``question``, if given): ``seconds``."""
    def latency(request: httpx.Request) -> float:
        mine = (request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]) == ("generate", agent)
        return seconds if mine and question.encode() in request.content else 1.0
    return latency


def straggler_config(**changes: Any) -> moa.Config:
    config = moa.Config(URL, FAKE_KEY, retry_base_delay=0.1, enable_file_logging=False, straggler_factor=3.0,
                        min_judge_confidence=0, num_workers=5, num_judges=3)
    return replace(config, **changes)


async def answer_together(config: moa.Config, clock: VirtualClock, side_effect: Any,
                          questions: int) -> list[moa.RunRecord]:
    """``questions`` questions at once through one endpoint, as a batch runs them (virtual time)."""
    return await answer_all_in_virtual_time(config, clock, side_effect, [f"Question {n}?" for n in range(questions)])


def cuts(result: moa.RunRecord) -> list[str]:
    return [f"{c.phase} {c.agent}" for c in result.calls if c.failure == "cut as a straggler"]


@pytest.mark.parametrize("factor", [3.0, 1.5], ids=["default-factor", "factor-1.5-so-the-shared-bar-is-3x"])
async def test_no_call_is_cut_for_waiting_in_our_queue(factor: float) -> None:
    """4 questions through an endpoint that holds 2 (429 beyond), every call 1 s: calls wait for a
    request slot, in Retry-After waits and in the cool-down, but none is cut and no answer is degraded."""
    clock = VirtualClock()
    side_effect, state = capacity_endpoint(clock, 2, lambda request: 1.0)
    results = await answer_together(straggler_config(straggler_factor=factor), clock, side_effect, 4)
    assert all(r.status == "ok" and cuts(r) == [] and not r.degraded for r in results), [r.notes for r in results]
    assert state["peak"] == 2 and state["rejected"] > 0 and clock.now >= 4 * 18 / 2


async def test_a_genuinely_slow_call_is_still_cut() -> None:
    """Capacity 2, our cap 2, solver-5 20x slower: it waits 2 s for a slot, then is cut after 3 s at the
    endpoint (3 x the median), not 3 s after it was issued."""
    clock = VirtualClock()
    side_effect, _ = capacity_endpoint(clock, 2, slow("solver-5", 20.0))
    result = await answer_in_virtual_time(straggler_config(max_concurrent_requests=2), clock, side_effect)
    assert result.status == "ok" and cuts(result) == ["generate solver-5"]
    (solver_5,) = [c for c in result.calls if (c.phase, c.agent) == ("generate", "solver-5")]
    assert solver_5.attempts[-1].latency_s == pytest.approx(5.0), "2 s queued, then 3 s at the endpoint"
    assert any("generate solver-5 cut as a straggler after 3.00s at the endpoint" in n for n in result.notes)


# --- item 3: a cut is worth an answer only where its time is what someone waits for --------------


async def test_a_gateway_retried_call_is_not_cut_while_other_questions_share_the_endpoint() -> None:
    """4 questions at once, one call of each 3.5x slower (a gateway's retries): nothing is cut, since
    with other questions running the bar is SHARED_STRAGGLER_SCALE x STRAGGLER_FACTOR x the median."""
    clock = VirtualClock()
    side_effect, _ = capacity_endpoint(clock, 100, slow("solver-5", 3.5))
    results = await answer_together(straggler_config(), clock, side_effect, 4)
    assert all(r.status == "ok" and cuts(r) == [] and not r.degraded for r in results), [r.notes for r in results]


async def test_a_question_alone_still_cuts_at_straggler_factor() -> None:
    """The same 3.5x call in a question running alone (a single -q, the library): cut at 3 x the median."""
    clock = VirtualClock()
    side_effect, _ = capacity_endpoint(clock, 100, slow("solver-5", 3.5))
    result = await answer_in_virtual_time(straggler_config(), clock, side_effect)
    assert cuts(result) == ["generate solver-5"] and result.degraded


async def test_a_far_slower_call_is_cut_even_while_questions_share_the_endpoint() -> None:
    """4 questions at once, one call of one question 20x slower: cut after 2 x 3 x the median, and the
    note says why the bar was higher."""
    clock = VirtualClock()
    side_effect, _ = capacity_endpoint(clock, 100, slow("solver-5", 20.0, question="Question 2?"))
    results = await answer_together(straggler_config(), clock, side_effect, 4)
    assert [cuts(r) for r in results] == [[], [], ["generate solver-5"], []]
    assert any("after 6.00s at the endpoint" in n and "x 2, as other questions share the endpoint" in n
               for n in results[2].notes), results[2].notes
