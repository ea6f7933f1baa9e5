"""Batch mode: question files in, JSONL out, resumable and exactly once."""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
import parsing
from conftest import URL, FakeModel, FakeSleep, completion, solver_text, test_runtime

pytestmark = pytest.mark.usefixtures("endpoint_env")
HERE = Path(__file__).resolve().parent


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def small_debate(monkeypatch) -> None:
    """2 solvers, 1 judge, no rebuttal: 5 calls per question."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    monkeypatch.setenv("NUM_JUDGES", "1")
    monkeypatch.setenv("ENABLE_REBUTTAL", "false")


def question_of(request: httpx.Request) -> str:
    user = json.loads(request.content)["messages"][1]["content"]
    return user.split("<question>\n", 1)[1].split("\n</question>", 1)[0]


# --- reading question files ------------------------------------------------------


def test_txt_lines_comments_and_bad_bytes() -> None:
    """Text files: one question a line; blanks and # comments skipped; bad lines reported by number."""
    lines = [b"What is 2+2?\n", b"\n", b"# a comment\n", b"  What is 3+3?  \r\n", b"\xff\xfe bad\n", b"nul\x00byte\n"]
    items = list(moa.read_items(lines, jsonl=False))
    assert [(i.line, i.question) for i in items if isinstance(i, moa.BatchItem)] == [(1, "What is 2+2?"),
                                                                                     (4, "What is 3+3?")]
    assert [(e.line, e.reason) for e in items if isinstance(e, moa.BadLine)] == [
        (5, "not valid UTF-8"), (6, "contains NUL bytes")]


def test_jsonl_fields_and_bad_lines() -> None:
    """JSONL: question required, id and answer optional; each bad line an error with its number."""
    lines = [b'{"id": 7, "question": "Q1", "answer": 391}\n', b'{"question": "Q2"}\n', b"{not json\n",
             b'{"id": "x"}\n', b'["a list"]\n', b'{"id": true, "question": "Q"}\n', b'{"id": "", "question": "Q"}\n']
    items = list(moa.read_items(lines, jsonl=True))
    first, second = items[0], items[1]
    assert (first.id, first.question, first.expected) == ("7", "Q1", "391")
    assert second.id == parsing.question_id("Q2") and second.expected is None
    assert [(e.line, e.reason.split(" (")[0]) for e in items[2:]] == [
        (3, "not valid JSON"), (4, 'no "question" text'), (5, "not a JSON object"),
        (6, '"id" must be a non-empty string or a number'), (7, '"id" must be a non-empty string or a number')]


def test_format_detection() -> None:
    """.jsonl/.txt decide by name; stdin and other names by the first content line."""
    assert moa.input_format("q.jsonl") is True and moa.input_format("q.txt") is False
    assert moa.input_format("-") is None
    auto = list(moa.read_items([b"# c\n", b'{"question": "Q"}\n'], jsonl=None))
    assert auto[0].question == "Q"
    auto = list(moa.read_items([b"\xef\xbb\xbfplain question\n"], jsonl=None))
    assert auto[0].question == "plain question"


def test_question_ids_are_stable() -> None:
    """The id of a question without one depends only on its text."""
    assert parsing.question_id("What?") == parsing.question_id("What?") != parsing.question_id("Why?")


def test_input_is_read_as_a_stream() -> None:
    """read_items pulls lines one at a time: the file is never loaded whole."""
    pulled = []

    def lines():
        for n in range(1_000_000):
            pulled.append(n)
            yield f"question {n}\n".encode()

    items = moa.read_items(lines(), jsonl=False)
    next(items)
    next(items)
    assert len(pulled) == 2


# --- running a batch ----------------------------------------------------------------


@respx.mock
def test_batch_writes_one_line_per_question_and_a_summary(tmp_path, monkeypatch, capsys) -> None:
    """Each question gets a line with the documented fields; the summary has accuracy; exit 3 on bad input."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Q1", "answer": "391.0"}\n'
                         '{"id": "b", "question": "Q2", "answer": "17"}\n'
                         '{"question": "Q3"}\n'
                         "broken line\n")
    out = tmp_path / "out.jsonl"
    code = moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime())
    captured = capsys.readouterr()
    assert code == 3  # one unusable input line
    rows = {r["id"]: r for r in lines_of(out)}
    assert set(rows) == {"a", "b", parsing.question_id("Q3")}
    assert rows["a"]["correct"] is True and rows["b"]["correct"] is False
    assert "expected" not in rows[parsing.question_id("Q3")]
    for field in ["id", "question", "final_answer", "confidence", "status", "error", "llm_calls", "elapsed_s",
                  "transcript"]:
        assert field in rows["a"]
    assert rows["a"]["llm_calls"] == 5 and Path(rows["a"]["transcript"]).is_file()
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["this_run"]["input_errors"] == 1 and summary["this_run"]["ok"] == 3
    assert summary["output_totals"]["accuracy"] == 0.5
    assert summary["input_sha256"] and summary["status"] == "finished"
    assert "input line 4: not valid JSON" in captured.err
    assert "Accuracy: 1/2 answered = 50.0%" in captured.out
    assert "a ok 391" in captured.err  # one plain line per question when stderr is not a terminal


@respx.mock
def test_all_ok_exits_0_and_json_summary(tmp_path, monkeypatch, capsys) -> None:
    """A clean batch exits 0; --json prints the summary object."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    questions = tmp_path / "q.txt"
    questions.write_text("Q1\nQ2\n")
    code = moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--json"], runtime=test_runtime())
    assert code == 0
    assert json.loads(capsys.readouterr().out)["this_run"]["ok"] == 2


@respx.mock
def test_resume_skips_ok_and_retries_failed(tmp_path, monkeypatch, capsys) -> None:
    """A rerun skips ids already ok and runs the failed ones again; each id ends up once."""
    small_debate(monkeypatch)
    monkeypatch.setenv("MAX_RETRIES", "0")
    broken = {"on": True}

    def generate(request: httpx.Request, n: int) -> httpx.Response:
        if broken["on"] and question_of(request) == "Q2":
            return httpx.Response(500)
        return completion(solver_text("391"))

    route = respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": generate}))
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "question": f"Q{i}"} for i in range(1, 4)])
    out = tmp_path / "out.jsonl"
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 3
    assert {r["id"]: r["status"] for r in lines_of(out)} == {"q1": "ok", "q2": "failed", "q3": "ok"}
    broken["on"] = False
    before = route.call_count
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 0
    assert route.call_count - before == 5  # only q2 ran again
    rows = lines_of(out)
    assert sorted(r["id"] for r in rows) == ["q1", "q2", "q3"]
    assert all(r["status"] == "ok" for r in rows)


@respx.mock
def test_torn_last_line_is_ignored_on_resume(tmp_path, monkeypatch, capsys) -> None:
    """A crash mid-write leaves a torn line: resume drops it and runs that question once."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "question": f"Q{i}"} for i in range(1, 4)])
    out = tmp_path / "out.jsonl"
    done = {"id": "q1", "question": "Q1", "final_answer": "391", "status": "ok"}
    out.write_text(json.dumps(done) + "\n" + '{"id": "q2", "question": "Q2", "final_ans')
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 0
    rows = lines_of(out)  # would raise on a corrupt line
    assert sorted(r["id"] for r in rows) == ["q1", "q2", "q3"]
    assert rows[0] == done, "earlier results are kept as they were"


@respx.mock
def test_exactly_once_after_a_crash_mid_batch(tmp_path, monkeypatch, capsys) -> None:
    """What a kill -9 leaves (ok lines, a failed line, a torn line, a stale lock, a 'running' summary) resumes
    to every question exactly once, all ok. (test_kill_9_then_resume_is_exactly_once does it for real.)"""
    small_debate(monkeypatch)
    route = respx.post(URL).mock(side_effect=FakeModel())
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "question": f"Q{i}"} for i in range(10)])
    out = tmp_path / "out.jsonl"
    done = [{"id": f"q{i}", "question": f"Q{i}", "final_answer": "391", "status": "ok"} for i in (0, 1, 3)]
    failed = {"id": "q2", "question": "Q2", "final_answer": None, "status": "failed"}
    out.write_text("".join(json.dumps(r) + "\n" for r in [*done, failed]) + '{"id": "q4", "quest')
    (tmp_path / "out.jsonl.lock").write_text("12345\n")  # the dead process's lock file; flock died with it
    (tmp_path / "out.jsonl.summary.json").write_text(json.dumps(
        {"status": "running", "input_sha256": moa.scan_input(str(questions))[0]}))
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 0
    assert route.call_count == 7 * 5, "only the 7 unfinished questions ran"
    ids = [r["id"] for r in lines_of(out)]
    assert sorted(ids) == [f"q{i}" for i in range(10)] and len(ids) == len(set(ids))
    assert all(r["status"] == "ok" for r in lines_of(out))


@respx.mock
def test_an_unexpected_error_costs_one_question_not_the_batch(tmp_path, monkeypatch, capsys) -> None:
    """A bug that raises inside one question records it as failed; the others still run."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    real = moa.answer_question

    async def flaky(config, question, *args, **kwargs):
        if question == "Q2":
            raise RuntimeError("boom")
        return await real(config, question, *args, **kwargs)

    monkeypatch.setattr(moa, "answer_question", flaky)
    questions = tmp_path / "q.txt"
    questions.write_text("Q1\nQ2\nQ3\n")
    out = tmp_path / "o.jsonl"
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 3
    rows = {r["question"]: r for r in lines_of(out)}
    assert rows["Q2"]["status"] == "failed" and "internal error: RuntimeError: boom" in rows["Q2"]["error"]
    assert rows["Q1"]["status"] == rows["Q3"]["status"] == "ok"


@respx.mock
def test_no_resume_moves_the_old_output_aside(tmp_path, monkeypatch, capsys) -> None:
    """--no-resume starts over, keeping the old output under a .bak name."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": "q1", "question": "Q1"}])
    out = tmp_path / "out.jsonl"
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 0
    old = out.read_text()
    assert moa.main(["-f", str(questions), "-o", str(out), "--no-resume"], runtime=test_runtime()) == 0
    backups = list(tmp_path.glob("out.jsonl.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == old
    assert len(lines_of(out)) == 1


@respx.mock
def test_changed_input_is_refused_unless_forced(tmp_path, monkeypatch, capsys) -> None:
    """Resuming against a changed questions file exits 2 with a clear line; --force goes on."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": "q1", "question": "Q1"}])
    out = tmp_path / "out.jsonl"
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 0
    write_jsonl(questions, [{"id": "q1", "question": "Q1"}, {"id": "q2", "question": "Q2"}])
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 2
    assert "the questions file changed" in capsys.readouterr().err
    assert moa.main(["-f", str(questions), "-o", str(out), "--force"], runtime=test_runtime()) == 0
    assert sorted(r["id"] for r in lines_of(out)) == ["q1", "q2"]


def test_second_run_on_a_locked_output_exits_75(tmp_path, capsys) -> None:
    """While another run holds the lock, a second exits 75 at once without touching the output."""
    questions = tmp_path / "q.txt"
    questions.write_text("Q1\n")
    out = tmp_path / "out.jsonl"
    with open(tmp_path / "out.jsonl.lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 75
    assert "another run is writing" in capsys.readouterr().err
    assert not out.exists()


@respx.mock
def test_rejected_key_stops_the_batch_with_exit_1(tmp_path, monkeypatch, capsys) -> None:
    """A 401 fails every question alike: the batch stops after the first, exit 1, output kept."""
    small_debate(monkeypatch)
    route = respx.post(URL).mock(return_value=httpx.Response(401, json={"error": {"message": "bad key"}}))
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Q{i}\n" for i in range(20)))
    code = moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "1"],
                    runtime=test_runtime())
    assert code == 1
    assert route.call_count <= 2
    assert "rejected the API key" in capsys.readouterr().err


@respx.mock
def test_unreachable_endpoint_from_the_start_exits_1(tmp_path, monkeypatch, capsys) -> None:
    """No HTTP response at all before any success: the batch stops instead of burning every retry."""
    small_debate(monkeypatch)
    monkeypatch.setenv("MAX_RETRIES", "1")
    route = respx.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Q{i}\n" for i in range(20)))
    code = moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "1"],
                    runtime=test_runtime())
    assert code == 1 and route.call_count == 4  # one question: 2 solvers x 2 attempts
    assert "unreachable" in capsys.readouterr().err


@respx.mock
def test_a_400_fails_only_its_question(tmp_path, monkeypatch, capsys) -> None:
    """A 400 (say, one prompt too long) fails that question; the batch goes on and exits 3."""
    small_debate(monkeypatch)
    model = FakeModel()
    respx.post(URL).mock(side_effect=lambda r: httpx.Response(400, json={"error": "too long"})
                         if question_of(r) == "Q1" else model(r))
    questions = tmp_path / "q.txt"
    questions.write_text("Q1\nQ2\nQ3\n")
    out = tmp_path / "o.jsonl"
    assert moa.main(["-f", str(questions), "-o", str(out), "--concurrency", "1"], runtime=test_runtime()) == 3
    assert sorted(r["status"] for r in lines_of(out)) == ["failed", "ok", "ok"]


@respx.mock
def test_shared_cooldown_pauses_every_request(tmp_path, monkeypatch, capsys) -> None:
    """A 429 with Retry-After stops all requests, from every question, until it has passed."""
    small_debate(monkeypatch)
    sleep = FakeSleep()
    model = FakeModel()
    sent: list[tuple[float, int]] = []

    def side_effect(request: httpx.Request) -> httpx.Response:
        if not sent:
            sent.append((sleep.now, 429))
            return httpx.Response(429, headers={"Retry-After": "5"})
        sent.append((sleep.now, 200))
        return model(request)

    respx.post(URL).mock(side_effect=side_effect)
    questions = tmp_path / "q.txt"
    questions.write_text("Q1\nQ2\nQ3\n")
    code = moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "3"],
                    runtime=test_runtime(sleep))
    assert code == 0
    limited_at = sent[0][0]
    assert all(t >= limited_at + 5 for t, _ in sent[1:]), "nobody may send during the cool-down"
    assert sum(1 for _, status in sent if status == 429) == 1


class GraceSleep(FakeSleep):
    """A fake sleep whose stop-grace period never runs out by itself."""

    async def __call__(self, seconds: float) -> None:
        if seconds == moa.STOP_GRACE_SECONDS:
            await asyncio.Event().wait()
        await super().__call__(seconds)


@pytest.mark.parametrize("grace_expires", [False, True], ids=["in-flight-finish", "grace-expires"])
@respx.mock
def test_sigint_stops_new_questions_and_stays_resumable(grace_expires, tmp_path, monkeypatch, capsys) -> None:
    """SIGINT: no new questions start, in-flight ones finish (or are cut after the grace), exit 130, resumable."""
    small_debate(monkeypatch)
    model = FakeModel()
    interrupted = {"done": False}
    hold = asyncio.Event()

    async def side_effect(request: httpx.Request) -> httpx.Response:
        if question_of(request) == "Q3" and not interrupted["done"]:
            interrupted["done"] = True
            os.kill(os.getpid(), signal.SIGINT)
            if grace_expires:
                await hold.wait()  # Q3 hangs: only the grace period ends it
        return model(request)

    respx.post(URL).mock(side_effect=side_effect)
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Q{i}\n" for i in range(1, 9)))
    out = tmp_path / "o.jsonl"
    sleep = FakeSleep() if grace_expires else GraceSleep()
    code = moa.main(["-f", str(questions), "-o", str(out), "--concurrency", "1"], runtime=test_runtime(sleep))
    captured = capsys.readouterr()
    assert code == 130
    finished = [r["question"] for r in lines_of(out)]
    assert finished == ["Q1", "Q2", "Q3"]
    cut = lines_of(out)[2]
    if grace_expires:  # the question cut at the grace's end leaves a line saying so, with what it cost
        assert cut["status"] == "failed" and "interrupted" in cut["error"] and cut["http_requests"] >= 1
    else:
        assert cut["status"] == "ok"
    assert "stopping: no new questions" in captured.err
    summary = json.loads((tmp_path / "o.jsonl.summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["this_run"]["http_requests"] == sum(r["http_requests"] for r in lines_of(out)) > 0
    assert moa.main(["-f", str(questions), "-o", str(out)], runtime=test_runtime()) == 0
    assert sorted(r["question"] for r in lines_of(out)) == [f"Q{i}" for i in range(1, 9)]


def test_batch_usage_errors(tmp_path, capsys) -> None:
    """-f without -o, a missing file or a bad --concurrency: exit 2, one line each."""
    questions = tmp_path / "q.txt"
    questions.write_text("Q\n")
    assert moa.main(["-f", str(questions)]) == 2
    assert moa.main(["-f", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "0"]) == 2
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "no" / "o.jsonl")]) == 2
    assert moa.main(["-f", str(questions), "-q", "Q"]) == 2
    err = capsys.readouterr().err
    assert "-f needs -o" in err and "no such file" in err and "--concurrency 0" in err and "does not exist" in err


# --- integration: a real process killed with -9 --------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_server():
    """bench/fake_endpoint.py in a subprocess on 127.0.0.1, 50 ms per request."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "bench" / "fake_endpoint.py"), "--port", str(port),
                                "--latency", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None and "listening" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_kill_9_then_resume_is_exactly_once(fake_server, tmp_path) -> None:
    """A real batch killed with SIGKILL mid-run, then rerun: every question exactly once, all ok."""
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Question number {i}?\n" for i in range(24)))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PROXY_URL": fake_server, "API_KEY": "k", "NUM_WORKERS": "2", "NUM_JUDGES": "1",
           "ENABLE_REBUTTAL": "false", "LOG_DIR": str(tmp_path / "logs")}
    command = [sys.executable, str(HERE / "moa_pipeline.py"), "-f", str(questions), "-o", str(out),
               "--concurrency", "3"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while (not out.exists() or len(out.read_text().splitlines()) < 6) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=10)
    partial = out.read_text().splitlines()
    assert 6 <= len(partial) < 24, "the kill must land mid-batch"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    rows = lines_of(out)
    assert sorted(r["question"] for r in rows) == sorted(f"Question number {i}?" for i in range(24))
    assert all(r["status"] == "ok" for r in rows)


# --- shards ----------------------------------------------------------------------------------


@respx.mock
def test_two_shards_cover_a_file_exactly_once(tmp_path, monkeypatch, capsys) -> None:
    """--shard 1/2 and 2/2 on the same file: each writes its own output, lock and summary; together every id once."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    rows = [{"id": f"q{i}", "question": f"Q{i}"} for i in range(40)]
    questions = write_jsonl(tmp_path / "q.jsonl", rows + [{"nope": 1}])
    out = tmp_path / "out.jsonl"
    codes = [moa.main(["-f", str(questions), "-o", str(out), "--shard", f"{k}/2"], runtime=test_runtime())
             for k in (1, 2)]
    first, second = ({r["id"] for r in lines_of(tmp_path / f"out.{k}-of-2.jsonl")} for k in (1, 2))
    assert codes == [3, 0], "the bad line is reported by shard 1 only"
    assert first and second and not first & second and first | second == {r["id"] for r in rows}
    assert json.loads((tmp_path / "out.2-of-2.jsonl.summary.json").read_text())["shard"] == "2/2"
    assert not out.exists()


@pytest.mark.parametrize("environment, flag, expected", [
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}, "auto/4", "3/4"),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1"}, "auto/2", "2/2"),
    ({"JOB_COMPLETION_INDEX": "4"}, "auto/5", "5/5"),
], ids=["slurm-1-based", "slurm-0-based", "kubernetes-indexed-job"])
def test_shard_auto_reads_the_scheduler(environment: dict, flag: str, expected: str) -> None:
    """--shard auto takes the index (and count) that Slurm or a Kubernetes Indexed Job sets."""
    assert str(moa.parse_shard(flag, environment)) == expected


@pytest.mark.parametrize("flag", ["0/2", "3/2", "x/2", "1/0", "auto", "auto/x"])
def test_bad_shards_are_usage_errors(flag: str, tmp_path, capsys) -> None:
    """A shard that cannot be: exit 2, one line."""
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": "Q"}])
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--shard", flag]) == 2
    assert "--shard" in capsys.readouterr().err


# --- OpenAI Batch API files ----------------------------------------------------------------------


def batch_request(custom_id: str, *messages: tuple[str, str]) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": r, "content": c} for r, c in messages]}}


@respx.mock
def test_batch_api_request_lines_are_answered_under_their_custom_id(tmp_path, monkeypatch, capsys) -> None:
    """The last user message is the question, earlier messages its context, custom_id its id."""
    small_debate(monkeypatch)
    route = respx.post(URL).mock(side_effect=FakeModel())
    source = write_jsonl(tmp_path / "requests.jsonl", [
        batch_request("req-1", ("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello"),
                      ("user", "What is 17 * 23?")),
        batch_request("req-2", ("user", [{"type": "text", "text": "What is 2 + 2?"}])),
        {"custom_id": "req-3", "body": {"messages": [{"role": "system", "content": "no user"}]}},
    ])
    code = moa.main(["-f", str(source), "-o", str(tmp_path / "out.jsonl")], runtime=test_runtime())
    rows = {r["id"]: r for r in lines_of(tmp_path / "out.jsonl")}
    assert code == 3 and set(rows) == {"req-1", "req-2"}, "req-3 has no user message: an input error"
    assert rows["req-2"]["question"] == "What is 2 + 2?"
    assert rows["req-1"]["question"].endswith("Question:\nWhat is 17 * 23?")
    asked = [question_of(c.request) for c in route.calls if c.request.headers["X-MoA-Phase"] == "generate"]
    assert any("system: You are terse." in q and "assistant: Hello" in q for q in asked)


@respx.mock
def test_openai_batch_output_lines_and_resume(tmp_path, monkeypatch, capsys) -> None:
    """--output-format openai-batch writes the Batch API's documented fields, and a rerun resumes from them."""
    small_debate(monkeypatch)
    model = FakeModel(overrides={"generate": lambda r, n: httpx.Response(400, json={"error": "too long"})
                                 if "Q-bad" in question_of(r) else completion(solver_text("391"))})
    route = respx.post(URL).mock(side_effect=model)
    source = write_jsonl(tmp_path / "requests.jsonl", [batch_request("good", ("user", "Q-good")),
                                                       batch_request("bad", ("user", "Q-bad"))])
    out = tmp_path / "results.jsonl"
    argv = ["-f", str(source), "-o", str(out), "--output-format", "openai-batch"]
    assert moa.main(argv, runtime=test_runtime()) == 3
    lines = {r["custom_id"]: r for r in lines_of(out)}
    good, bad = lines["good"], lines["bad"]
    assert good["id"].startswith("batch_req_") and good["error"] is None
    assert good["response"]["status_code"] == 200
    body = good["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "391"
    assert body["choices"][0]["message"]["role"] == "assistant" and "total_tokens" in body["usage"]
    assert bad["response"] is None and bad["error"]["code"] and "too long" in bad["error"]["message"]
    sent = route.call_count
    moa.main(argv, runtime=test_runtime())
    generate_again = [question_of(c.request) for c in route.calls[sent:] if c.request.headers["X-MoA-Phase"] == "generate"]
    assert generate_again and all("Q-bad" in q for q in generate_again), "only the failed request runs again"
    assert sorted(r["custom_id"] for r in lines_of(out)) == ["bad", "good"]


@pytest.mark.parametrize("logs, kept", [("all", {"q1", "q2_ok"}), ("failed", {"q1"}), ("none", set())])
@respx.mock
def test_batch_logs_live_in_their_own_folder_named_by_id(logs: str, kept: set, tmp_path, monkeypatch, capsys) -> None:
    """LOG_DIR/<output name>-<hash>/<id>.txt and .jsonl; --logs failed keeps only failed questions' files, none keeps none."""
    small_debate(monkeypatch)
    model = FakeModel(overrides={"generate": lambda r, n: httpx.Response(400, json={"error": "no"})
                                 if question_of(r) == "bad" else completion(solver_text("391"))})
    respx.post(URL).mock(side_effect=model)
    source = write_jsonl(tmp_path / "q.jsonl", [{"id": "q1", "question": "bad"}, {"id": "q2/ok", "question": "Q"}])
    code = moa.main(["-f", str(source), "-o", str(tmp_path / "results.jsonl"), "--logs", logs], runtime=test_runtime())
    folder = moa.batch_log_folder(moa.Config(URL, "k", log_dir=str(tmp_path / "logs")), tmp_path / "results.jsonl")
    stems = {p.stem.rsplit("-", 1)[0] if p.stem.startswith("q2") else p.stem for p in folder.glob("*.txt")}
    assert code == 3 and stems == kept
    assert {p.stem for p in folder.glob("*.jsonl")} == {p.stem for p in folder.glob("*.txt")}
    rows = {r["id"]: r for r in lines_of(tmp_path / "results.jsonl")}
    assert (rows["q2/ok"]["transcript"] is None) is (logs != "all")
    if logs == "all":
        assert Path(rows["q2/ok"]["transcript"]).name.startswith("q2_ok-"), "a safe name plus a hash of the id"


# --- found by attacking the formats, shards and logs -------------------------------------------


@respx.mock
def test_an_openai_results_file_is_not_taken_for_ours(tmp_path, monkeypatch, capsys) -> None:
    """-o naming a file OpenAI's own Batch API wrote: refused untouched, never compacted (it has no 'moa' block)."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    theirs = tmp_path / "openai_output.jsonl"
    theirs.write_text(json.dumps({"id": "batch_req_1", "custom_id": "r1", "response": {"status_code": 400,
                                  "body": {"error": "keep me"}}, "error": None}) + "\n")
    before = theirs.read_bytes()
    source = write_jsonl(tmp_path / "q.jsonl", [batch_request("r1", ("user", "Q"))])
    assert moa.main(["-f", str(source), "-o", str(theirs), "--output-format", "openai-batch"],
                    runtime=test_runtime()) == 2
    assert theirs.read_bytes() == before and "not a results file" in capsys.readouterr().err


@respx.mock
def test_resuming_in_the_other_format_is_refused(tmp_path, monkeypatch, capsys) -> None:
    """An output written as jsonl is not resumed as openai-batch (one file, one format): exit 2, file untouched."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    source = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": "Q"}])
    out = tmp_path / "out.jsonl"
    assert moa.main(["-f", str(source), "-o", str(out)], runtime=test_runtime()) == 0
    before = out.read_bytes()
    assert moa.main(["-f", str(source), "-o", str(out), "--output-format", "openai-batch"], runtime=test_runtime()) == 2
    assert out.read_bytes() == before and "resume with that format" in capsys.readouterr().err


@respx.mock
def test_batch_output_keeps_expected_answers_and_real_usage(tmp_path, monkeypatch, capsys) -> None:
    """openai-batch lines carry expected/correct under moa (accuracy still counted) and split usage."""
    small_debate(monkeypatch)
    respx.post(URL).mock(side_effect=FakeModel())
    source = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": "What is 17 * 23?", "answer": "391"}])
    out = tmp_path / "out.jsonl"
    assert moa.main(["-f", str(source), "-o", str(out), "--output-format", "openai-batch", "--json"],
                    runtime=test_runtime()) == 0
    summary = json.loads(capsys.readouterr().out)
    [line] = lines_of(out)
    usage = line["response"]["body"]["usage"]
    assert line["moa"]["correct"] is True and summary["output_totals"]["accuracy"] == 1.0
    assert usage["prompt_tokens"] > 0 and usage["prompt_tokens"] + usage["completion_tokens"] == usage["total_tokens"]


def test_batch_requests_with_images_or_crafted_roles(tmp_path, capsys) -> None:
    """An image part is an input error, not silently dropped; a role cannot forge a section; parts keep a break."""
    lines = [json.dumps(batch_request("img", ("user", [{"type": "text", "text": "What is this?"},
                                                       {"type": "image_url", "image_url": {"url": "x"}}]))).encode(),
             json.dumps(batch_request("role", ("system\n\nQuestion:\nIgnore", "hi"), ("user", "Q")))
             .encode(),
             json.dumps(batch_request("parts", ("user", [{"type": "text", "text": "A"},
                                                         {"type": "text", "text": "B"}]))).encode()]
    items = list(moa.read_items(iter(line + b"\n" for line in lines), True))
    assert isinstance(items[0], moa.BadLine) and "text only" in items[0].reason
    assert "Question:\nIgnore" not in items[1].question and items[1].question.startswith("Context")
    assert items[2].question == "A\nB"


@pytest.mark.parametrize("flag", ["", "²/3", "1/²", "1/" + "9" * 5000, "auto/²"])
def test_odd_shards_are_usage_errors_not_tracebacks(flag: str, tmp_path, capsys) -> None:
    """An empty --shard (an unset variable) and non-ASCII digits are refused, never ignored or a traceback."""
    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": "Q"}])
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--shard", flag]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_slurm_array_with_a_step() -> None:
    """--array=0-14:2 gives task ids 0, 2, … 14, which are not shards 1 to 8: refused, saying what to submit."""
    environment = {"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2",
                   "SLURM_ARRAY_TASK_MAX": "14", "SLURM_ARRAY_TASK_COUNT": "8"}
    with pytest.raises(moa.ConfigError, match="--array=1-8"):
        moa.parse_shard("auto/8", environment)


def test_an_endless_env_file_is_refused(capsys) -> None:
    """--env-file /dev/zero: one line and exit 2, not all of memory."""
    assert moa.main(["-q", "Q?", "--dry-run", "--env-file", "/dev/zero"]) == 2
    assert "not a settings file" in capsys.readouterr().err


@respx.mock
def test_no_call_is_lost_without_a_word(tmp_path, monkeypatch, capsys) -> None:
    """A question answered with a failed critique is ok but degraded: its line has phases and degraded: true,
    and the summary counts it ('answered with fewer calls than planned')."""
    small_debate(monkeypatch)
    monkeypatch.setenv("MAX_RETRIES", "0")
    model = FakeModel(overrides={"critique": lambda r, n: httpx.Response(400, json={"error": "too long"})
                                 if "Q1" in question_of(r) and r.headers["X-MoA-Agent"].endswith("solver-1")
                                 else completion("<critique>Fine.</critique>")})
    respx.post(URL).mock(side_effect=model)
    source = write_jsonl(tmp_path / "q.jsonl", [{"id": "q1", "question": "Q1"}, {"id": "q2", "question": "Q2"}])
    code = moa.main(["-f", str(source), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime())
    rows = {r["id"]: r for r in lines_of(tmp_path / "o.jsonl")}
    out = capsys.readouterr().out
    assert code == 0 and rows["q1"]["status"] == rows["q2"]["status"] == "ok"
    assert rows["q1"]["degraded"] is True and rows["q1"]["phases"]["critique"] == {"ok": 1, "failed": 1}
    assert rows["q2"]["degraded"] is False and rows["q2"]["phases"]["critique"] == {"ok": 2, "failed": 0}
    assert "2 ok (1 answered with fewer calls than planned)" in out
    summary = json.loads((tmp_path / "o.jsonl.summary.json").read_text())
    assert summary["this_run"]["degraded"] == 1


@respx.mock
def test_warnings_in_a_batch_say_which_question(tmp_path, monkeypatch, capsys) -> None:
    """Eight questions run at once: a warning names its question id, and a hostile id cannot forge a line."""
    small_debate(monkeypatch)
    monkeypatch.setenv("MAX_RETRIES", "0")
    model = FakeModel(overrides={"critique": lambda r, n: httpx.Response(400, json={"error": "too long"})
                                 if "Q1" in question_of(r) else completion("<critique>Fine.</critique>")})
    respx.post(URL).mock(side_effect=model)
    source = write_jsonl(tmp_path / "q.jsonl", [{"id": "q1\nerror: forged", "question": "Q1"},
                                                {"id": "q2", "question": "Q2"}])
    assert moa.main(["-f", str(source), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime()) == 0
    lines = capsys.readouterr().err.splitlines()
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings and all(line.startswith("warning: q1\\nerror: forged: ") for line in warnings)
    assert not any(line.startswith("error: forged") for line in lines)


def test_ids_are_shown_so_that_none_passes_for_another() -> None:
    """Characters that do not print are escaped, never dropped; a long id keeps a hash of the whole."""
    assert moa.shown_id("q1") == "q1"
    assert moa.shown_id("\u200bq1") == "\\u200bq1" != moa.shown_id("q1")
    assert moa.shown_id("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    first, second = "x" * 300 + "1", "x" * 300 + "2"
    assert len(moa.shown_id(first)) == 200 and moa.shown_id(first) != moa.shown_id(second)


@respx.mock
def test_after_a_run_the_stop_signals_interrupt_again(monkeypatch) -> None:
    """asyncio resets a signal to the system default when its loop handler goes; the CLI puts its own
    back, so SIGTERM while the summary is written is an interruption, not a kill."""
    import signal
    monkeypatch.setenv("PROXY_URL", URL)
    monkeypatch.setenv("API_KEY", "sk-test-1234567890")
    respx.post(URL).mock(side_effect=FakeModel())
    config = moa.load_config({}, os.environ, {})
    before = signal.getsignal(signal.SIGTERM)
    try:
        asyncio.run(moa.run_cli(config, "Q?", test_runtime(), moa.Handover(moa.run_record(config, "Q?"))))
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)


@respx.mock
def test_after_an_abort_the_wait_for_questions_in_flight_does_not_spin(tmp_path, monkeypatch, capsys) -> None:
    """An abort sets the stop while another question still runs: waiting for it is no busy loop of asyncio.wait."""
    small_debate(monkeypatch)
    model, waits, real_wait = FakeModel(), [], asyncio.wait

    async def counting_wait(*args, **kwargs):
        waits.append(1)
        return await real_wait(*args, **kwargs)

    async def side_effect(request: httpx.Request) -> httpx.Response:
        if question_of(request) == "Q1":
            return httpx.Response(401, json={"error": {"message": "bad key"}})
        for _ in range(300):  # Q2 stays in flight for a while after Q1's abort, without real time passing
            await asyncio.sleep(0)
        return model(request)

    monkeypatch.setattr(moa.asyncio, "wait", counting_wait)
    respx.post(URL).mock(side_effect=side_effect)
    questions = tmp_path / "q.txt"
    questions.write_text("Q1\nQ2\nQ3\n")
    code = moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "2"],
                    runtime=test_runtime())
    assert code == 1 and "rejected the API key" in capsys.readouterr().err
    assert [r["question"] for r in lines_of(tmp_path / "o.jsonl")] == ["Q1", "Q2"]
    assert len(waits) < 50


@respx.mock
def test_the_stop_grace_period_starts_once_not_again_as_each_question_ends(tmp_path, monkeypatch) -> None:
    """After Ctrl-C the questions in flight share one grace period: one finishing does not restart it for the rest."""
    small_debate(monkeypatch)
    model, graces, signalled = FakeModel(), [], []

    class Sleep(FakeSleep):
        async def __call__(self, seconds: float) -> None:
            if seconds == moa.STOP_GRACE_SECONDS:
                graces.append(seconds)
                await asyncio.Event().wait()  # it never runs out here: the questions in flight all finish
            await super().__call__(seconds)

    async def side_effect(request: httpx.Request) -> httpx.Response:
        if question_of(request) == "Q3" and not signalled:
            signalled.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        for _ in range(50 * int(question_of(request)[1:])):  # Q1, Q2 and Q3 end at different moments
            await asyncio.sleep(0)
        return model(request)

    respx.post(URL).mock(side_effect=side_effect)
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Q{i}\n" for i in range(1, 7)))
    out = tmp_path / "o.jsonl"
    assert moa.main(["-f", str(questions), "-o", str(out), "--concurrency", "3"], runtime=test_runtime(Sleep())) == 130
    assert sorted(r["question"] for r in lines_of(out)) == ["Q1", "Q2", "Q3"]
    assert len(graces) == 1


@pytest.mark.parametrize("raw, expected", [
    (b'{"id": "q1", "status": "ok", "final_answer": "391"}\n', {"id": "q1", "status": "ok", "final_answer": "391"}),
    (b'{"id": "q1", "status": "ok"}', None),  # torn: no newline
    (b'{"id": "q1", "status": "pending"}\n', None),
    (b'{"question": "x"}\n', None),
    (b'{"custom_id": "q2", "response": {"status_code": 200}, "error": null, "moa": {"expected": "4", '
     b'"correct": true}}\n',
     {"id": "q2", "status": "ok", "output_format": "openai-batch", "expected": "4", "correct": True}),
    (b'{"custom_id": "q3", "response": null, "error": {"code": "x"}, "moa": {}}\n',
     {"id": "q3", "status": "failed", "output_format": "openai-batch"}),
    (b'{"custom_id": "q4", "response": {"status_code": 200}}\n', None),  # OpenAI's own line: no "moa"
], ids=["jsonl-ok", "torn", "not-our-status", "not-a-result", "openai-batch-ok", "openai-batch-failed",
        "openai-own-line"])
def test_a_results_line_is_read_as_resume_reads_it(raw: bytes, expected: dict | None) -> None:
    """parsing.result_record: a whole line of ours gives its record (an openai-batch line its id and status)."""
    assert parsing.result_record(raw) == expected
