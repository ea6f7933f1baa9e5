"""Scheduling: chains without phase barriers, straggler cuts, early exit, a healthy pool after cuts.

Time is virtual (conftest.VirtualClock): each mocked call "takes" the seconds
its agent is given, and nothing really waits.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, VirtualClock, answer_in_virtual_time, completion, solver_text

HERE = Path(__file__).resolve().parent


def base_config(**changes) -> moa.Config:
    config = moa.Config(URL, FAKE_KEY, retry_base_delay=0, enable_file_logging=False, straggler_factor=0,
                        min_judge_confidence=0)
    return replace(config, **changes)


async def debate_with_latencies(config: moa.Config, latency, answers=None) -> tuple[moa.RunRecord, list, VirtualClock]:
    """Run one question; ``latency(phase, agent)`` gives each call's virtual seconds.
    Returns the result, (phase, agent, start, end) of every request, and the clock."""
    clock = VirtualClock()
    model = FakeModel()
    timeline: list[tuple[str, str, float, float]] = []

    async def side_effect(request: httpx.Request) -> httpx.Response:
        phase, agent = request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]
        started = clock.now
        await clock.sleep(latency(phase, agent))
        timeline.append((phase, agent, started, clock.now))
        if answers and phase == "generate":
            return completion(solver_text(answers[agent]))
        return model(request)

    result = await answer_in_virtual_time(config, clock, side_effect)
    return result, timeline, clock


def started(timeline, phase: str, agent: str) -> float:
    return next(s for p, a, s, _ in timeline if p == phase and a == agent)


def slow_solver_2(phase: str, agent: str) -> float:
    return 5.0 if (phase, agent) == ("generate", "solver-2") else 1.0


async def test_critique_starts_as_soon_as_its_answer_is_in() -> None:
    """Without barriers, solver-1's critique starts at t=1 while solver-2 is still answering (until t=5)."""
    result, timeline, clock = await debate_with_latencies(base_config(), slow_solver_2)
    assert result.status == "ok"
    assert started(timeline, "critique", "solver-2->solver-1") == 1.0
    assert started(timeline, "rebuttal", "solver-1") == 2.0
    assert started(timeline, "critique", "solver-3->solver-2") == 5.0
    # Judges wait for every chain: solver-2's ends at 5 + 1 + 1.
    assert min(s for p, _, s, _ in timeline if p == "judge") == 7.0
    assert clock.now == 8.0


async def test_phase_barriers_wait_for_the_slowest_call() -> None:
    """With PHASE_BARRIERS every critique waits for the slowest answer: 5 + 1 + 1 + 1 = 8 as well, but critiques start at 5."""
    result, timeline, clock = await debate_with_latencies(base_config(phase_barriers=True), slow_solver_2)
    assert result.status == "ok"
    assert started(timeline, "critique", "solver-2->solver-1") == 5.0
    assert clock.now == 8.0


async def test_chains_beat_barriers_when_slowness_moves_between_phases() -> None:
    """A different slow call in each phase costs barriers the sum of the maxima; chains only the slowest chain."""
    slow = {("generate", "solver-1"), ("critique", "solver-3->solver-2"), ("rebuttal", "solver-3")}

    def latency(phase: str, agent: str) -> float:
        return 4.0 if (phase, agent) in slow else 1.0

    _, _, chains = await debate_with_latencies(base_config(), latency)
    _, _, barriers = await debate_with_latencies(base_config(phase_barriers=True), latency)
    assert (chains.now, barriers.now) == (7.0, 13.0)


async def test_straggler_is_cut_after_factor_times_median() -> None:
    """5 solvers, one 100x slower: once 2 are in, it is cut at 3 x the median (t=3) and the debate goes on."""
    def latency(phase: str, agent: str) -> float:
        return 100.0 if (phase, agent) == ("generate", "solver-5") else 1.0

    result, timeline, clock = await debate_with_latencies(base_config(straggler_factor=3.0), latency)
    assert result.status == "ok" and result.verdict.answer == "391"
    cut = next(c for c in result.calls if c.agent == "solver-5")
    assert cut.failure == "cut as a straggler" and cut.attempts[0].outcome == "cancelled"
    assert clock.now == 3.0 + 1.0  # the other chains end at 3 too; the judges run from 3 to 4
    assert any("generate solver-5 cut as a straggler after 3.00s" in note for note in result.notes)


async def test_no_cut_before_the_quorum() -> None:
    """While fewer than MIN_VALID_ANSWERS calls have finished, nobody is cut, however slow."""
    def latency(phase: str, agent: str) -> float:
        return 100.0 if phase == "generate" and agent != "solver-1" else 1.0

    config = base_config(straggler_factor=3.0, min_valid_answers=2, num_workers=3)
    result, timeline, clock = await debate_with_latencies(config, latency)
    assert result.status == "ok"
    assert not any(c.failure == "cut as a straggler" for c in result.calls)


async def test_factor_zero_never_cuts() -> None:
    """STRAGGLER_FACTOR=0 waits for the slowest call."""
    def latency(phase: str, agent: str) -> float:
        return 50.0 if (phase, agent) == ("generate", "solver-5") else 1.0

    result, _, clock = await debate_with_latencies(base_config(straggler_factor=0), latency)
    assert result.status == "ok" and clock.now == 53.0


async def test_early_exit_on_unanimity() -> None:
    """EARLY_EXIT: when every answer agrees, only the 5 solver calls are made; the verdict says unanimous."""
    result, timeline, _ = await debate_with_latencies(base_config(early_exit=True), lambda p, a: 1.0)
    assert [p for p, *_ in timeline] == ["generate"] * 5
    assert (result.verdict.source, result.verdict.confidence, result.verdict.answer) == ("unanimous", 100, "391")


async def test_no_early_exit_without_unanimity() -> None:
    """One dissenting solver means the full debate runs."""
    answers = {f"solver-{i}": "391" for i in range(1, 6)} | {"solver-4": "390"}
    result, timeline, _ = await debate_with_latencies(base_config(early_exit=True), lambda p, a: 1.0, answers)
    assert result.verdict.source == "judges" and len(timeline) == 18


def test_unanimous_confidence_counts_failed_slots() -> None:
    """3 agreeing answers of 5 slots gives confidence 60, low enough to trigger the rerun."""
    positions = [moa.Position(i, "391", "") for i in range(3)]
    verdict = moa.unanimous_verdict(positions, 5)
    assert verdict is not None and verdict.confidence == 60
    assert moa.unanimous_verdict(positions + [moa.Position(3, "390", "")], 5) is None


# --- cancelled requests must leave the connection pool healthy (httpcore issue 1093) -----------


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    sys.path.insert(0, str(HERE / "bench"))
    from batch_memory import start_fake_endpoint
    return start_fake_endpoint(*args)


async def test_pool_stays_healthy_after_a_storm_of_cancelled_requests() -> None:
    """Hundreds of requests cancelled mid-flight, then requests to a healthy server all succeed at once."""
    hanging, hang_url = start_server("--fault", "hang")
    healthy, ok_url = start_server("--latency", "0")
    try:
        config = base_config(max_concurrent_requests=4, request_timeout=5.0, proxy_url=hang_url + "/chat/completions")
        async with moa.open_client(config) as client:
            endpoint = moa.Endpoint(config, client, moa.Runtime())
            messages = [{"role": "user", "content": "hi"}]
            for _ in range(10):  # ten storms of 30 cancelled requests each
                tasks = [asyncio.create_task(endpoint.complete(messages, temperature=0, max_tokens=5, headers={}))
                         for _ in range(30)]
                await asyncio.sleep(0.05)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            healthy_endpoint = moa.Endpoint(replace(config, proxy_url=ok_url + "/chat/completions"), client,
                                            moa.Runtime())
            started_at = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*[
                healthy_endpoint.complete(messages, temperature=0, max_tokens=5, headers={}) for _ in range(20)]), 10)
            assert all(r.text for r in results)
            assert time.monotonic() - started_at < 5, "no request waited for a leaked pool slot"
    finally:
        for process in (hanging, healthy):
            process.kill()
            process.wait()
            process.stdout.close()


# --- the adaptive request limit ------------------------------------------------------------------


async def test_limit_holds_requests_and_survives_cancelled_waiters() -> None:
    """Beyond the limit requests wait; a cancelled waiter leaks no slot."""
    limit = moa.AdaptiveLimit(2)
    assert await limit.acquire() == 1 and await limit.acquire() == 2
    waiting = [asyncio.create_task(limit.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)
    waiting[0].cancel()
    limit.release()
    await asyncio.sleep(0)
    assert waiting[1].done() and not waiting[2].done()
    limit.release()
    limit.release()
    await asyncio.sleep(0)
    assert waiting[2].done() and limit.in_flight == 1


# --- the accuracy harness's statistics (bench/eval.py) ---------------------------------------------


def test_calibration_and_separation_statistics() -> None:
    """ECE is 0 for perfect calibration; AUROC is 1 when every right answer is more confident than every wrong one."""
    sys.path.insert(0, str(HERE / "bench"))
    import importlib
    harness = importlib.import_module("eval")
    perfect = [harness.Outcome(True, 1, 1, 95), harness.Outcome(False, 1, 1, 5)]
    assert harness.expected_calibration_error(perfect) == pytest.approx(0.05)
    assert harness.auroc(perfect) == 1.0
    overconfident = [harness.Outcome(False, 1, 1, 90)] * 3 + [harness.Outcome(True, 1, 1, 90)]
    assert harness.expected_calibration_error(overconfident) == pytest.approx(0.65)
    assert harness.auroc(overconfident) == 0.5
