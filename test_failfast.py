"""Failing fast and loud (issue 20, items 10, 11 and 14): a deadline on every question, a batch
that stops when the endpoint accepts nothing or when its first questions all fail alike, and
notes that are a feature working, not a warning.

The clock logic runs on a VirtualClock; what sockets and time do together runs through the real
CLI as a subprocess against bench/fake_endpoint.py on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
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
from conftest import FAKE_KEY, URL, FakeModel, FakeSleep, VirtualClock, answer_in_virtual_time, debate_at, test_runtime

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("endpoint_env")


def virtual_config(**changes) -> moa.Config:
    """3 solvers, 1 judge, no files, no backoff: 10 calls a debate."""
    return moa.Config(URL, FAKE_KEY, num_workers=3, num_judges=1, retry_base_delay=0, straggler_factor=0,
                      enable_file_logging=False, **changes)


def cli(tmp_path: Path, url: str, *argv: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """The real CLI against ``url``: (the finished process, seconds it took)."""
    environment = {**os.environ, "PROXY_URL": url, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"),
                   "MOA_ENV_FILE": os.devnull, "NUM_WORKERS": "2", "NUM_JUDGES": "1", "ENABLE_REBUTTAL": "false",
                   **env}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), *argv], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return done, time.monotonic() - started


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def numbered_questions(path: Path, count: int) -> Path:
    path.write_text("".join(f"Q{i}\n" for i in range(count)))
    return path


# --- item 10: a deadline on every question ------------------------------------------------------


async def test_a_question_past_its_deadline_stops_with_one_error() -> None:
    """An endpoint that takes 20 s a reply: the first request due after QUESTION_DEADLINE is not sent,
    and the question stops, failed, saying why (on the runtime's clock, which tests move)."""
    clock = VirtualClock()

    async def slow(request: httpx.Request) -> httpx.Response:
        await clock.sleep(20)
        return FakeModel()(request)

    result = await answer_in_virtual_time(virtual_config(question_deadline=50), clock, slow)
    assert result.status == "failed" and isinstance(result.exception, moa.DeadlinePassed)
    assert "QUESTION_DEADLINE=50s" in (result.error or "") and "--deadline" in (result.error or "")
    assert 50 <= result.elapsed_s <= 50 + 20
    assert max(a.started_s for call in result.calls for a in call.attempts) < 50


async def test_a_retry_wait_never_outlasts_the_deadline() -> None:
    """Retries of a failing endpoint wait at most until QUESTION_DEADLINE, then the question stops there."""
    clock = VirtualClock()

    async def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "down"}})

    config = replace(virtual_config(question_deadline=50), retry_base_delay=40, retry_max_delay=40, max_retries=20)
    result = await answer_in_virtual_time(config, clock, failing)
    assert isinstance(result.exception, moa.DeadlinePassed) and result.elapsed_s == pytest.approx(50)


def test_a_no_op_test_sleep_does_not_fire_the_deadline() -> None:
    """A runtime whose sleep returns at once (as tests inject to skip backoff) keeps the default deadline
    from firing early: only time that passes on its clock counts, and a few retries are seconds of it."""
    fake, model, failed = FakeSleep(), FakeModel(), []

    def flaky(request: httpx.Request) -> httpx.Response:
        if len(failed) < 3:
            failed.append(request)
            return httpx.Response(500, json={"error": {"message": "busy"}})
        return model(request)

    config = moa.Config(URL, FAKE_KEY, enable_file_logging=False, straggler_factor=0)
    with respx.mock:
        respx.post(URL).mock(side_effect=flaky)
        result = asyncio.run(debate_at(test_runtime(fake), "Q?", config=config))
    assert result.status == "ok" and config.question_deadline == 1800 and fake.delays


async def test_a_deadline_in_the_rerun_keeps_round_one_verdict() -> None:
    """Round 1's verdict (confidence 40) calls for a rerun, which hangs: the deadline stops the rerun
    and pass 1's verdict stands, as when a rerun fails; the notes say so."""
    clock = VirtualClock()
    model, judged = FakeModel(confidence=40), []

    async def rerun_hangs(request: httpx.Request) -> httpx.Response:
        if judged:
            await clock.sleep(20)
        judged.extend(["judge"] if request.headers["X-MoA-Phase"] == "judge" else [])
        return model(request)

    result = await answer_in_virtual_time(virtual_config(question_deadline=50), clock, rerun_hangs)
    assert result.status == "ok" and result.rerun and result.error is None
    assert result.verdict is not None and (result.verdict.answer, result.verdict.confidence) == ("391", 40)
    assert any("QUESTION_DEADLINE=50s; pass 1's verdict stands" in note for note in result.notes)
    assert 50 <= result.elapsed_s <= 50 + 20


async def test_the_library_gets_the_deadline_too() -> None:
    """debate() stops at QUESTION_DEADLINE and raises RunFailed saying so."""
    clock = VirtualClock()
    driver = asyncio.create_task(clock.drive())

    async def slow(request: httpx.Request) -> httpx.Response:
        await clock.sleep(20)
        return FakeModel()(request)

    try:
        with respx.mock, pytest.raises(moa.RunFailed, match="QUESTION_DEADLINE=30s"):
            respx.post(URL).mock(side_effect=slow)
            await debate_at(clock.runtime(), "Q?", config=virtual_config(), question_deadline=30)
    finally:
        driver.cancel()
    assert 30 <= clock.now <= 30 + 20


def test_the_deadline_flag_and_its_checks(capsys) -> None:
    """--deadline sets QUESTION_DEADLINE; a value that is not a number of seconds is exit 2, one line."""
    args = moa.build_parser().parse_args(["-q", "Q?", "--deadline", "90"])
    assert moa.flag_settings(args)["QUESTION_DEADLINE"] == "90"
    assert moa.main(["-q", "Q?", "--deadline", "soon"]) == moa.EXIT_USAGE
    assert "QUESTION_DEADLINE='soon' (flag) is not valid" in capsys.readouterr().err


def test_a_hanging_endpoint_ends_at_the_deadline(server, tmp_path) -> None:
    """The real CLI against a server that never answers: --deadline 1 ends the question after about a
    second (REQUEST_TIMEOUT is 200 s), exit 1, one error line, the transcript written."""
    endpoint = server("--fault", "hang")
    done, seconds = cli(tmp_path, endpoint.url, "-q", "What is 17 * 23?", "--deadline", "1", "--json")
    assert done.returncode == moa.EXIT_FAILED, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "QUESTION_DEADLINE=1s" in errors[0]
    result = json.loads(done.stdout)
    assert result["status"] == "failed" and Path(result["transcript"]).is_file()
    assert seconds < 10


# --- item 10: the stall rule: nothing accepted for STALL_TIMEOUT --------------------------------


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def too_many() -> moa.APIError:
    return moa.APIError("HTTP 429: slow down", moa.BUSY, status=429, retry_after=1.0)


def test_the_stall_rule_warns_once_then_stops_and_starts_over_on_a_2xx(caplog) -> None:
    """Refusals from t=0: a warning at a fifth of STALL_TIMEOUT (once), EndpointStalled at it, saying
    what the endpoint answered; a 2xx starts the count over."""
    clock = Clock()
    endpoint = moa.Endpoint(virtual_config(stall_timeout=300), None, moa.Runtime(clock=clock))  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="moa")
    for now in (0, 30, 59):
        clock.now = now
        assert not isinstance(endpoint.refused(too_many(), sent_at=now), moa.EndpointStalled)
    assert not caplog.records
    for now in (60, 120, 299):
        clock.now = now
        assert not isinstance(endpoint.refused(too_many(), sent_at=now), moa.EndpointStalled)
    [warning] = caplog.records
    assert "accepted no request for 60.0s (4 requests: 4 HTTP 429); still trying" in warning.getMessage()
    clock.now = 300
    stalled = endpoint.refused(moa.fault(moa.Fault.TIMEOUT, "no response within REQUEST_TIMEOUT=200s"), sent_at=100)
    assert isinstance(stalled, moa.EndpointStalled) and stalled.stops_run and not stalled.retryable
    assert str(stalled) == ("the endpoint accepted no request for 300.0s (7 requests: 6 HTTP 429, 1 no response); "
                            "stopped at STALL_TIMEOUT=300s: try again later")
    endpoint.accepted()
    clock.now = 1000
    assert not isinstance(endpoint.refused(too_many(), sent_at=999), moa.EndpointStalled)


def test_stall_timeout_zero_never_stops() -> None:
    """STALL_TIMEOUT=0 turns the rule off."""
    clock = Clock()
    endpoint = moa.Endpoint(virtual_config(stall_timeout=0), None, moa.Runtime(clock=clock))  # type: ignore[arg-type]
    clock.now = 10**6
    assert not isinstance(endpoint.refused(too_many(), sent_at=0), moa.EndpointStalled)


async def test_a_question_against_only_429s_stops_at_the_stall_timeout() -> None:
    """Every reply 429 with Retry-After 30: each call would retry for 420 s; at STALL_TIMEOUT the
    question stops, failed with what the endpoint answered."""
    clock = VirtualClock()
    result = await answer_in_virtual_time(
        virtual_config(stall_timeout=300, question_deadline=0), clock,
        lambda request: httpx.Response(429, headers={"Retry-After": "30"}, json={"error": "slow down"}))
    assert isinstance(result.exception, moa.EndpointStalled)
    assert "accepted no request for" in (result.error or "") and "HTTP 429)" in (result.error or "")
    assert 300 <= result.elapsed_s < 340


def test_a_batch_against_only_429s_stops_with_one_line_and_exit_75(server, tmp_path) -> None:
    """The real CLI, 10 questions, an endpoint answering only 429 (Retry-After 0.2 s), STALL_TIMEOUT=2:
    one warning, then one error line saying what it saw, no new question, exit 75, resumable."""
    endpoint = server("--fault", "429", "--retry-after", "0.2")
    out = tmp_path / "out.jsonl"
    done, seconds = cli(tmp_path, endpoint.url, "-f", str(numbered_questions(tmp_path / "q.txt", 10)), "-o", str(out),
                        "--concurrency", "2", STALL_TIMEOUT="2")
    assert done.returncode == moa.EXIT_TRY_LATER, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(errors) == 1 and "the endpoint accepted no request for" in errors[0]
    assert "HTTP 429); stopped at STALL_TIMEOUT=2s" in errors[0] and errors[0].endswith("try again later; no new question started (a rerun resumes)")
    assert len(warnings) == 1 and warnings[0].startswith("warning: the endpoint accepted no request for")
    assert "still trying until STALL_TIMEOUT=2s" in warnings[0]
    rows = lines_of(out)
    assert len(rows) <= 2 and all(r["status"] == "failed" for r in rows)
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["status"] == "circuit_open" and summary["error"] == errors[0].removeprefix("error: ")
    assert seconds < 15


# --- item 11: the same error on every question stops the batch ----------------------------------


@respx.mock
def test_the_same_400_on_the_first_three_questions_stops_the_batch(tmp_path, monkeypatch, capsys) -> None:
    """A wrong key behind LiteLLM answers every request "HTTP 400: No connected db." (with a request id
    that differs each time): three questions fail alike, none succeeded, so the batch stops, exit 1,
    saying what to check, instead of failing all 20."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    sent = []

    def no_db(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(400, json={"error": {"message": f"No connected db. (request req_{len(sent)}x9)"}})

    respx.post(URL).mock(side_effect=no_db)
    out = tmp_path / "o.jsonl"
    code = moa.main(["-f", str(numbered_questions(tmp_path / "q.txt", 20)), "-o", str(out), "--concurrency", "1"],
                    runtime=test_runtime())
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == moa.EXIT_FAILED
    assert len(lines_of(out)) == 3 and len(sent) <= 6
    assert len(errors) == 1 and "the first 3 questions all failed with the same error" in errors[0]
    assert "No connected db." in errors[0] and "API_KEY" in errors[0] and "MODEL_NAME" in errors[0]


@respx.mock
def test_refused_questions_do_not_stop_the_batch(tmp_path, monkeypatch, capsys) -> None:
    """The model refuses the first questions (a refusal comes in a 200: the set-up works, and what it
    refuses is each question's own): the batch goes on to the questions it answers, exit 3."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    model = FakeModel()

    def refuse_first_three(request: httpx.Request) -> httpx.Response:
        if any(f"Q{n}\n" in request.content.decode("unicode_escape") for n in range(3)):
            return httpx.Response(200, json={"choices": [{"index": 0, "finish_reason": "content_filter",
                                                          "message": {"role": "assistant", "content": None}}]})
        return model(request)

    respx.post(URL).mock(side_effect=refuse_first_three)
    out = tmp_path / "o.jsonl"
    code = moa.main(["-f", str(numbered_questions(tmp_path / "q.txt", 6)), "-o", str(out), "--concurrency", "1"],
                    runtime=test_runtime())
    assert code == moa.EXIT_SOME_FAILED, capsys.readouterr().err
    assert [row["status"] for row in lines_of(out)] == ["failed"] * 3 + ["ok"] * 3


@pytest.mark.parametrize("first_three", [("bad", "bad", "ok"), ("bad", "other", "bad")],
                         ids=["one-succeeded", "different-errors"])
@respx.mock
def test_first_questions_that_differ_do_not_stop_the_batch(first_three, tmp_path, monkeypatch, capsys) -> None:
    """One success among the first three, or two different errors: each question's own fault; the batch goes on."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    model, outcome = FakeModel(), dict(zip(("Q0", "Q1", "Q2"), first_three, strict=True))

    def by_question(request: httpx.Request) -> httpx.Response:
        user = json.loads(request.content)["messages"][1]["content"]
        kind = next((v for k, v in outcome.items() if f"\n{k}\n" in user), "ok")
        if kind == "ok":
            return model(request)
        return httpx.Response(400, json={"error": "prompt too long" if kind == "bad" else "unsupported language"})

    respx.post(URL).mock(side_effect=by_question)
    out = tmp_path / "o.jsonl"
    code = moa.main(["-f", str(numbered_questions(tmp_path / "q.txt", 6)), "-o", str(out), "--concurrency", "1"],
                    runtime=test_runtime())
    assert code == moa.EXIT_SOME_FAILED and len(lines_of(out)) == 6


@respx.mock
def test_accuracy_counts_answered_questions_and_says_how_many_failed(tmp_path, monkeypatch, capsys) -> None:
    """Two of three questions with expected answers fail: accuracy is over the one answered, and the
    summary says two failed and were not counted (not "Accuracy: 1/3")."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    model = FakeModel()
    respx.post(URL).mock(side_effect=lambda r: model(r) if "\nQ0\n" in json.loads(r.content)["messages"][1]["content"]
                         else httpx.Response(400, json={"error": "too long"}))
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Q{i}", "answer": "391"}) + "\n"
                              for i in range(3)))
    assert moa.main(["-f", str(source), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime()) == 3
    assert "Accuracy: 1/1 answered = 100.0% (2 failed, not counted)" in capsys.readouterr().out
    totals = json.loads((tmp_path / "o.jsonl.summary.json").read_text())["output_totals"]
    assert (totals["with_expected"], totals["correct"], totals["failed_with_expected"], totals["accuracy"]) == (1, 1, 2, 1.0)


# --- item 14: a feature working is not a warning ------------------------------------------------


@pytest.mark.parametrize("flags", [["--early-exit"], ["--max-calls", "5"]], ids=["early-exit", "budget"])
@respx.mock
def test_an_early_exit_or_a_budget_cut_is_no_warning_in_a_batch(flags, tmp_path, monkeypatch, capsys) -> None:
    """An early exit (and a budget's planned cut) is the feature doing its job: no warning line a
    question in a batch; the transcript's notes still say what happened."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    monkeypatch.setenv("NUM_JUDGES", "1")
    respx.post(URL).mock(side_effect=FakeModel())
    out = tmp_path / "o.jsonl"
    code = moa.main(["-f", str(numbered_questions(tmp_path / "q.txt", 5)), "-o", str(out), *flags],
                    runtime=test_runtime())
    assert code == moa.EXIT_OK
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    notes = Path(lines_of(out)[0]["transcript"]).read_text().split("=== Notes ===", 1)[1]
    assert ("early exit" if flags == ["--early-exit"] else "budget: skipped") in notes
