"""Hostile runs (items 4, 7, 8, 12, 15, 16, 18 of issue 20): hostile traces, what an endpoint bills
for replies we cannot use, what killed batches leave, and library arguments that hold secrets."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, VirtualClock, answer_in_virtual_time, completion, debate_at, test_runtime
from test_hostile_files import (
    CLI,
    SMALL,
    assert_one_clean_error,
    batch_folder,
    cli,
    environment,
    small_fs,  # noqa: F401 (a fixture: a tmpfs, root only)
    wait_for,
    write_questions,
)

pytestmark = pytest.mark.usefixtures("endpoint_env")
QUESTION = "What is 17 * 23?"


def traced_run(capsys) -> Path:
    """A plain run's trace (three solvers, one judge, answered by FakeModel)."""
    respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["-q", QUESTION, "-w", "3", "-j", "1", "--json"], runtime=test_runtime()) == 0
    return Path(json.loads(capsys.readouterr().out)["trace"])


# --- item 4: hostile traces -------------------------------------------------------------------------


@respx.mock
def test_a_trace_whose_question_is_not_valid_unicode_replays(capsys, tmp_path) -> None:
    """A trace question holding a lone surrogate (JSON "\\ud800") is sent with it replaced, not an internal error."""
    lines = traced_run(capsys).read_text().splitlines()
    run = json.loads(lines[0])
    run["question"] = QUESTION + " \ud800"
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text("\n".join([json.dumps(run), *lines[1:]]) + "\n")
    route = respx.post(URL).mock(side_effect=FakeModel())
    route.calls.clear()
    assert moa.main(["--replay", str(hostile), "--from", "judges", "-j", "1"], runtime=test_runtime()) == 0
    sent = json.loads(route.calls[0].request.content)["messages"][1]["content"]
    assert route.call_count == 1 and f"{QUESTION} ?" in sent


@respx.mock
def test_two_traces_joined_into_one_file_are_refused(capsys, tmp_path) -> None:
    """`cat a.jsonl b.jsonl > c.jsonl`: two runs' answers would be mixed under one question; exit 2, one line."""
    first, second = traced_run(capsys), traced_run(capsys)
    joined = tmp_path / "joined.jsonl"
    joined.write_text(first.read_text() + second.read_text())
    route = respx.post(URL).mock(side_effect=FakeModel())
    route.calls.clear()
    assert moa.main(["--replay", str(joined), "--from", "judges", "-j", "1"], runtime=test_runtime()) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "starts a second run" in err and route.call_count == 0


# --- item 7: what the endpoint bills for a reply we cannot use -----------------------------------


class Thinker(FakeModel):
    """A reasoning model: each reply bills 50 prompt tokens and its whole max_tokens of completion;
    solver-3 (every attempt) and one in two critiques think past the cap and say nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.billed = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body, agent = json.loads(request.content), request.headers["X-MoA-Agent"]
        usage = {"prompt_tokens": 50, "completion_tokens": body["max_tokens"], "total_tokens": 50 + body["max_tokens"]}
        self.billed += 50 + body["max_tokens"]
        reply = super().__call__(request)
        if agent == "solver-3" or (agent.endswith("->solver-1")):
            return completion("", "length", usage=usage)
        return completion(json.loads(reply.content)["choices"][0]["message"]["content"], usage=usage)


@pytest.mark.parametrize("budget", [3_000, 4_000, 6_000])
@respx.mock
def test_replies_without_usable_content_count_against_the_token_cap(budget: int) -> None:
    """An empty reply cut at max_tokens (a reasoning model thinking) is billed: it counts against
    MAX_TOTAL_TOKENS and in the run's usage, so retrying it cannot run the bill past the cap."""
    model = Thinker()
    respx.post(URL).mock(side_effect=model)
    config = moa.Config(URL, "k", num_workers=3, num_judges=1, max_tokens=400, judge_max_tokens=400,
                        retry_base_delay=0, straggler_factor=0, enable_file_logging=False, max_total_tokens=budget)
    result = asyncio.run(debate_at(test_runtime(), QUESTION, config=config))
    assert model.billed <= budget and result.to_dict()["usage"]["total_tokens"] == model.billed


# --- item 15: what a killed batch leaves ------------------------------------------------------------


def test_logs_failed_without_traces_drops_what_a_killed_run_left_once_the_question_succeeds(server, tmp_path) -> None:
    """--logs failed with ENABLE_JSONL_TRACE=false: kill -9 leaves empty transcripts (no trace says whose); the
    resume that answers those questions leaves no file of theirs behind, and keeps a file that is not a run's."""
    slow, fast = server("--latency", "2"), server()
    write_questions(tmp_path / "q.jsonl", 3)
    folder, env = batch_folder(tmp_path), {**SMALL, "ENABLE_JSONL_TRACE": "false"}
    argv = ["-f", "q.jsonl", "-o", "out.jsonl", "--concurrency", "2", "--logs", "failed"]
    process = subprocess.Popen([sys.executable, str(CLI), *argv], env=environment(tmp_path, slow.url, **env),
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(list(folder.glob("*.txt"))) == 2 and len(slow.starts()) >= 2, "two runs under way")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert sorted(p.stat().st_size for p in folder.iterdir()) == [0, 0]
    (folder / "q0_1.txt").write_text("someone's notes\n")
    done = cli(tmp_path, fast.url, *argv, **env)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in folder.iterdir()] == ["q0_1.txt"]


# --- item 18: library arguments -------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda url: moa.debate(QUESTION, proxy_url=url),
    lambda url: moa.debate(QUESTION, config=moa.Config(url, "k")),
], ids=["keyword", "config"])
@pytest.mark.parametrize("url", [b"https://gw.test/v1?key=AIzaSECRET0123456789",
                                 ["https://gw.test/v1?key=AIzaSECRET0123456789"]], ids=["bytes", "list"])
def test_a_proxy_url_of_the_wrong_type_is_named_without_its_key(call, url, tmp_path) -> None:
    """proxy_url=b"...?key=SECRET" (or a list): a TypeError naming proxy_url, the key masked; nothing made or sent."""
    with pytest.raises(TypeError, match="proxy_url") as raised:
        asyncio.run(call(url))
    assert "AIzaSECRET" not in str(raised.value) and "key=***" in str(raised.value)
    assert not (tmp_path / "logs").exists()


# --- item 12: every path a batch writes -------------------------------------------------------------


def test_an_output_under_a_file_is_called_what_it_is(tmp_path, capsys) -> None:
    """-o notes.txt/out.jsonl where notes.txt is a file: exit 2, one line saying it is not a folder (it exists)."""
    (tmp_path / "q.txt").write_text("Q\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    assert moa.main(["-f", str(tmp_path / "q.txt"), "-o", str(tmp_path / "notes.txt" / "out.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "notes.txt is not a folder" in err and "does not exist" not in err


def test_an_output_on_a_read_only_mount_says_what_to_fix(small_fs, server, tmp_path) -> None:  # noqa: F811
    """-o on a read-only mount (the lock cannot be made): exit 2, one line, no "remove it" (there is nothing to
    remove), nothing sent."""
    endpoint, disk = server(), small_fs("1m")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    write_questions(tmp_path / "q.jsonl", 2)
    done = cli(tmp_path, endpoint.url, "-f", "q.jsonl", "-o", str(disk / "out.jsonl"), **SMALL)
    assert_one_clean_error(done, 2, "Read-only file system")
    assert "remove it" not in done.stderr and "nothing was sent" in done.stderr and endpoint.starts() == []


class BillsOnArrival:
    """An endpoint that bills each request's prompt and max_tokens as it arrives, whether or not anyone waits for
    the reply (as a hosted API does for a request the client gave up on); solver-3 answers after 100 s."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock, self.billed = clock, 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body, agent = json.loads(request.content), request.headers["X-MoA-Agent"]
        prompt = sum(moa.estimate_tokens(m["content"]) for m in body["messages"]) + 2 * moa.MESSAGE_OVERHEAD_TOKENS
        self.billed += prompt + body["max_tokens"]
        await self.clock.sleep(100.0 if agent == "solver-3" else 1.0)
        reply = FakeModel()(request)
        said = json.loads(reply.content)["choices"][0]["message"]["content"]
        return completion(said, usage={"prompt_tokens": prompt, "completion_tokens": body["max_tokens"]})


async def test_a_request_cut_as_a_straggler_stays_paid_for() -> None:
    """A straggler cut frees no budget: the endpoint may bill the request it was sent, so over a sweep of
    MAX_TOTAL_TOKENS what the endpoint billed never passes the cap."""
    for budget in range(2_500, 4_001, 250):
        clock = VirtualClock()
        endpoint = BillsOnArrival(clock)
        config = moa.Config(URL, "k", num_workers=3, num_judges=1, max_tokens=300, judge_max_tokens=300,
                            retry_base_delay=0, enable_file_logging=False, max_total_tokens=budget)
        result = await answer_in_virtual_time(config, clock, endpoint, QUESTION)
        assert result.status == "ok" and any("straggler" in (c.failure or "") for c in result.calls)
        assert endpoint.billed <= budget, f"MAX_TOTAL_TOKENS={budget}"


def test_an_output_of_dash_is_refused_not_made_a_file(tmp_path, capsys, monkeypatch) -> None:
    """-o - is no stdout for a batch (its output is resumed from): exit 2, one line, no file named '-'."""
    monkeypatch.setenv("PROXY_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("API_KEY", "sk-test-12345678")
    questions = tmp_path / "q.txt"
    questions.write_text("What is 2+2?\n")
    assert moa.main(["-f", str(questions), "-o", "-"]) == moa.EXIT_USAGE
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not stdout" in errors[0] and not (tmp_path / "-").exists()
