"""Hostile variants of the stops (items 10, 11 and 14 of issue 20): the stall rule, the question deadline,
the batch's same-error stop, and notes that are no warnings, under variants the first tests did not try.

The clock logic runs on a VirtualClock; what sockets and time do together runs through the real CLI as a
subprocess against bench/fake_endpoint.py on 127.0.0.1.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import (
    FAKE_KEY,
    URL,
    FakeModel,
    VirtualClock,
    answer_all_in_virtual_time,
    answer_in_virtual_time,
    completion,
    test_runtime,
)

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("endpoint_env")


def virtual_config(**changes) -> moa.Config:
    """3 solvers, 1 judge, no rebuttal, no files, no straggler cuts: 7 calls a debate."""
    config = moa.Config(URL, FAKE_KEY, num_workers=3, num_judges=1, enable_rebuttal=False, retry_base_delay=0.1,
                        straggler_factor=0, enable_file_logging=False)
    return replace(config, **changes)


def cli(tmp_path: Path, url: str, *argv: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """The real CLI against ``url``: (the finished process, seconds it took)."""
    environment = {**os.environ, "PROXY_URL": url, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"),
                   "MOA_ENV_FILE": os.devnull, "NUM_WORKERS": "2", "NUM_JUDGES": "1", "ENABLE_REBUTTAL": "false",
                   "STRAGGLER_FACTOR": "0", **env}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), *argv], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    return done, time.monotonic() - started


def questions(path: Path, *texts: str) -> Path:
    path.write_text("".join(f"{text}\n" for text in texts))
    return path


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


# --- item 10: the stall rule ---------------------------------------------------------------------


def test_a_slow_request_refused_after_others_were_accepted_is_no_stall() -> None:
    """A request sent at t=0 times out at t=10 while others were accepted at t=8: the endpoint was not
    silent for 10 s, so STALL_TIMEOUT=5 does not stop the run (it counts from the last 2xx)."""
    clock = Clock()
    endpoint = moa.Endpoint(virtual_config(stall_timeout=5), None, moa.Runtime(clock=clock))  # type: ignore[arg-type]
    clock.now = 8
    endpoint.accepted()
    clock.now = 10
    timed_out = moa.fault(moa.Fault.TIMEOUT, "no response within REQUEST_TIMEOUT=10s")
    assert endpoint.refused(timed_out, sent_at=0) is timed_out
    clock.now = 13.5
    assert isinstance(endpoint.refused(timed_out, sent_at=3), moa.EndpointStalled)


def test_one_refused_request_alone_is_no_stall() -> None:
    """A lone request that timed out after REQUEST_TIMEOUT=10, above STALL_TIMEOUT=5, is that request's
    failure, which its retry handles; a second refusal with nothing accepted is a stall."""
    clock = Clock()
    endpoint = moa.Endpoint(virtual_config(stall_timeout=5), None, moa.Runtime(clock=clock))  # type: ignore[arg-type]
    clock.now = 10
    timed_out = moa.fault(moa.Fault.TIMEOUT, "no response within REQUEST_TIMEOUT=10s")
    assert endpoint.refused(timed_out, sent_at=0) is timed_out and endpoint.stalled() is None
    clock.now = 21
    stalled = endpoint.refused(timed_out, sent_at=11)
    assert isinstance(stalled, moa.EndpointStalled) and "(2 requests: 2 no response)" in str(stalled)


def test_a_judge_that_hangs_once_is_retried_not_stopped_as_stalled(server, tmp_path) -> None:
    """The real CLI, REQUEST_TIMEOUT=1.5 above STALL_TIMEOUT=1: the judge's first request hangs while
    nothing else is in flight; it times out and its retry answers (before: exit 1, "accepted no request")."""
    endpoint = server("--fault", "hang", "--fault-phase", "judge", "--fault-once")
    done, _ = cli(tmp_path, endpoint.url, "-q", "Q?", "--json", REQUEST_TIMEOUT="1.5", STALL_TIMEOUT="1")
    assert done.returncode == moa.EXIT_OK, done.stderr
    assert json.loads(done.stdout)["final_answer"] == "391" and "STALL_TIMEOUT" not in done.stderr


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_long_retry_hint_does_not_hold_the_stall_stop(status: int) -> None:
    """Every reply is an error asking to wait 60 s: the question stops at STALL_TIMEOUT=10 s, not after
    the 60 s wait; no retry is sent past it."""
    clock = VirtualClock()
    result = await answer_in_virtual_time(
        virtual_config(stall_timeout=10, question_deadline=0), clock,
        lambda request: completion(None, status=status, headers={"Retry-After": "60"}))
    assert isinstance(result.exception, moa.EndpointStalled), result.error
    assert "stopped at STALL_TIMEOUT=10s" in (result.error or "")
    assert 10 <= result.elapsed_s < 11
    assert max(a.started_s for call in result.calls for a in call.attempts) < 10


def test_a_batch_told_to_retry_after_30s_stops_at_the_stall_timeout(server, tmp_path) -> None:
    """The real CLI, 503s (then 429s) with Retry-After 30 and STALL_TIMEOUT=1: exit 75 with one error line
    in a couple of seconds, not after the 30 s wait."""
    for fault in ("503", "429"):
        endpoint = server("--fault", fault, "--retry-after", "30")
        out = tmp_path / f"{fault}.jsonl"
        done, seconds = cli(tmp_path, endpoint.url, "-f", str(questions(tmp_path / "q.txt", "Q0", "Q1", "Q2")),
                            "-o", str(out), STALL_TIMEOUT="1")
        assert done.returncode == moa.EXIT_TRY_LATER, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"HTTP {fault}); stopped at STALL_TIMEOUT=1s" in errors[0]
        assert seconds < 10


# --- item 10: the deadline counts no time in our own request queue --------------------------------


async def test_questions_queued_behind_each_other_are_not_stopped_by_their_deadline() -> None:
    """4 questions share one request slot (a batch with --concurrency over what the endpoint holds), each
    call 10 s: a question alone takes 70 s, together each takes about 280 s of wall time. Time waiting
    for our own slot is not the endpoint failing the question: a 150 s deadline stops none of them."""
    clock = VirtualClock()
    model = FakeModel()

    async def ten_seconds(request: httpx.Request) -> httpx.Response:
        await clock.sleep(10)
        return model(request)

    config = virtual_config(max_concurrent_requests=1, question_deadline=150, min_judge_confidence=0)
    results = await answer_all_in_virtual_time(config, clock, ten_seconds, [f"Q{n}?" for n in range(4)])
    assert [r.status for r in results] == ["ok"] * 4, [r.error for r in results]
    assert max(r.elapsed_s for r in results) > 150


def test_a_batch_queued_on_one_request_slot_finishes_within_its_deadline(server, tmp_path) -> None:
    """The real CLI: 4 questions at once through MAX_CONCURRENT_REQUESTS=1, each call 0.15 s, so a question
    alone needs about 0.8 s and together about 3 s; --deadline 2 stops none (before: most failed at it)."""
    endpoint = server("--latency", "0.15")
    out = tmp_path / "out.jsonl"
    done, _ = cli(tmp_path, endpoint.url, "-f", str(questions(tmp_path / "q.txt", *(f"Q{i}" for i in range(4)))),
                  "-o", str(out), "--concurrency", "4", "--deadline", "2", MAX_CONCURRENT_REQUESTS="1")
    assert done.returncode == moa.EXIT_OK, done.stderr
    rows = lines_of(out)
    assert [r["status"] for r in rows] == ["ok"] * 4 and max(r["elapsed_s"] for r in rows) > 2


def test_a_question_queued_behind_its_own_hanging_call_still_ends_at_its_deadline(server, tmp_path) -> None:
    """The real CLI, MAX_CONCURRENT_REQUESTS=1 and an endpoint that never answers: one call holds the slot,
    the others wait for it; the question's own call is at the endpoint, so --deadline 1 ends it in about 1 s."""
    endpoint = server("--fault", "hang")
    done, seconds = cli(tmp_path, endpoint.url, "-q", "Q?", "--deadline", "1", MAX_CONCURRENT_REQUESTS="1")
    assert done.returncode == moa.EXIT_FAILED and "no verdict within QUESTION_DEADLINE=1s" in done.stderr
    assert len(endpoint.starts()) == 1 and seconds < 10


# --- item 11: a resume gets past first questions that alone cannot be answered --------------------


@respx.mock
def test_a_resume_gets_past_first_questions_that_fail_alike_on_their_own(tmp_path, monkeypatch, capsys) -> None:
    """The first 3 questions are each too long for the model (the same 400, numbers aside): the batch stops.
    Its rerun does not stop at them again, since they failed before; it answers the rest (exit 3)."""
    model = FakeModel()

    def too_long(request: httpx.Request) -> httpx.Response:
        if b"LONG" in request.content:
            return httpx.Response(400, json={"error": {"message": f"maximum context is 4096; you asked {len(request.content)}"}})
        return model(request)

    respx.post(URL).mock(side_effect=too_long)
    source = questions(tmp_path / "q.txt", "LONG 1", "LONG 2", "LONG 3", "Q4", "Q5")
    argv = ["-f", str(source), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "1"]
    assert moa.main(argv, runtime=test_runtime()) == moa.EXIT_FAILED
    assert "the first 3 questions all failed with the same error" in capsys.readouterr().err
    assert moa.main(argv, runtime=test_runtime()) == moa.EXIT_SOME_FAILED
    assert sorted(r["status"] for r in lines_of(tmp_path / "o.jsonl")) == ["failed"] * 3 + ["ok"] * 2


@respx.mock
def test_a_set_up_that_stays_broken_still_stops_every_rerun(tmp_path, capsys) -> None:
    """Every request 400 "No connected db.": each rerun tries the 3 questions that failed before, then
    stops after 3 new ones fail alike, instead of running all 12 to failure."""
    respx.post(URL).mock(return_value=httpx.Response(400, json={"error": "No connected db."}))
    argv = ["-f", str(questions(tmp_path / "q.txt", *(f"Q{i}" for i in range(12)))), "-o", str(tmp_path / "o.jsonl"),
            "--concurrency", "1"]
    assert moa.main(argv, runtime=test_runtime()) == moa.EXIT_FAILED
    assert moa.main(argv, runtime=test_runtime()) == moa.EXIT_FAILED
    assert len(lines_of(tmp_path / "o.jsonl")) == 6
    assert capsys.readouterr().err.count("error: the first 3 questions all failed with the same error") == 2


# --- item 14: a straggler cut is the tool's choice, not a warning ---------------------------------


async def test_a_straggler_cut_and_what_it_costs_are_no_warning(caplog) -> None:
    """A critique 20x slower than the others is cut: the transcript's notes say so (the cut, and the answer
    left uncritiqued) and the answer is degraded, but neither is a warning line (one a cut in a batch)."""
    clock = VirtualClock()
    model = FakeModel()

    async def one_slow_critic(request: httpx.Request) -> httpx.Response:
        slow = (request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]) == ("critique", "solver-2->solver-1")
        await clock.sleep(20 if slow else 1)
        return model(request)

    caplog.set_level(logging.INFO, logger="moa")
    result = await answer_in_virtual_time(virtual_config(straggler_factor=3, min_judge_confidence=0), clock,
                                          one_slow_critic)
    assert result.status == "ok" and result.degraded
    assert any("critique solver-2->solver-1 cut as a straggler" in note for note in result.notes)
    assert any("critique of solver-1 failed (cut as a straggler)" in note for note in result.notes)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_summary_says_whose_verdict_stands_after_a_rerun() -> None:
    """A rerun that was stopped (a deadline) or less confident leaves pass 1's verdict: the human
    summary says so, and says "after a rerun" only when the rerun's verdict is the one reported."""
    config = moa.Config(URL, FAKE_KEY)
    first = moa.Verdict("391", 40, 1, 1, "judges", {"391": 1})
    second = moa.Verdict("391", 80, 2, 2, "judges", {"391": 2})
    kept = replace(moa.run_record(config, "Q?"), verdicts=(first, second), reported_pass=1, rerun=True)
    assert "a rerun ran, and pass 1's verdict stands" in moa.human_summary(kept)
    replaced = replace(kept, reported_pass=2)
    assert "80/100, 2/2 judges agree, after a rerun" in moa.human_summary(replaced)
