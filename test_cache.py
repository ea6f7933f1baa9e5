"""The response cache (issue 25): a hit is free, marked and replays the debate; what a reply is keyed by; the modes
and CACHE_TTL; the cache failing soft (corrupt, locked, a link, a read-only folder) and two processes sharing it;
the `cache` command and the settings."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, completion, solver_text, test_runtime
from test_cost import CachingModel
from test_hostile_files import small_fs  # noqa: F401 (a fixture: a tmpfs, root only)

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("endpoint_env")
QUESTION = "What is 17 * 23?"
NOW = 1_700_000_000.0  # test_runtime's wall clock
CALLS = 18  # a default debate: 5 solvers, 5 critiques, 5 rebuttals, 3 judges


@pytest.fixture
def cache_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """CACHE=on, its file in tmp_path (its folder not made yet)."""
    monkeypatch.setenv("CACHE", "on")
    monkeypatch.setenv("CACHE_PATH", str(tmp_path / "cache" / "responses.sqlite3"))
    return tmp_path / "cache" / "responses.sqlite3"


def run(capsys: pytest.CaptureFixture[str], *argv: str, now: float = NOW) -> tuple[int, dict[str, Any], str]:
    """One CLI question (--json) on test_runtime's clocks: exit code, its JSON, stderr."""
    code = moa.main(["-q", QUESTION, "--json", *argv], runtime=test_runtime(now=now))
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def trace_attempts(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, Path(result["trace"]).read_text().splitlines())
            if line["type"] == "attempt"]


def entries(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT count(*) FROM responses").fetchone()[0]
    db.close()
    return count


# --- a hit ---------------------------------------------------------------------------------------------------


@respx.mock
def test_a_rerun_is_answered_from_the_cache_for_nothing(cache_file: Path, capsys) -> None:
    """The same question again: no request, every call a hit (marked in the transcript and trace), 0 tokens."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    _, first, _ = run(capsys)
    code, again, err = run(capsys)
    assert code == 0 and route.call_count == CALLS and "warning" not in err
    assert (first["http_requests"], first["usage"]["cache_hits"]) == (CALLS, 0)
    assert (again["http_requests"], again["llm_calls"], again["usage"]["cache_hits"]) == (0, CALLS, CALLS)
    assert again["usage"]["total_tokens"] == 0 and again["usage_by_phase"]["judge"]["cache_hits"] == 3
    assert again["final_answer"] == first["final_answer"] == "391"
    assert {a["cache"] for a in trace_attempts(first)} == {None}
    assert {a["cache"] for a in trace_attempts(again)} == {"hit"}
    transcript = Path(again["transcript"]).read_text()
    assert transcript.count(", from the response cache (stored 2023-11-14T") == CALLS


@respx.mock
def test_the_summaries_count_the_replies_the_cache_served(cache_file: Path, capsys, tmp_path: Path) -> None:
    """The human summary, the transcript and a batch's summary say how many replies came from the cache."""
    respx.post(URL).mock(side_effect=FakeModel())
    moa.main(["-q", QUESTION], runtime=test_runtime(now=NOW))
    assert "replies from the response cache" not in capsys.readouterr().out
    moa.main(["-q", QUESTION], runtime=test_runtime(now=NOW))
    printed = capsys.readouterr().out
    assert f"{CALLS} LLM calls, 0 HTTP requests ({CALLS} replies from the response cache), 0 tokens" in printed
    transcript = Path(printed.split("Transcript: ")[1].split()[0]).read_text()  # its totals line says so too
    assert f"{CALLS} LLM calls, 0 HTTP requests ({CALLS} replies from the response cache)\n" in transcript
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "a", "question": QUESTION}) + "\n")
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "out.jsonl")], runtime=test_runtime(now=NOW)) == 0
    assert f"0 HTTP requests ({CALLS} replies from the response cache)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert (summary["this_run"]["cache_hits"], summary["this_run"]["http_requests"]) == (CALLS, 0)


@respx.mock
def test_a_question_the_cache_served_says_nothing_of_whose_a_batch_cost_is(cache_file: Path, capsys, monkeypatch,
                                                                           tmp_path: Path) -> None:
    """Prices set, every reply sent charged by the endpoint: a question served whole from the cache costs $0 and
    adds no figure, so the batch's cost (and --eval's) is the endpoint's own, not "mixed" with your prices."""
    monkeypatch.setenv("PRICE_INPUT_PER_MTOK", "2")
    respx.post(URL).mock(side_effect=CachingModel(0.001, tuple(moa.PHASES)))
    moa.main(["-q", QUESTION], runtime=test_runtime(now=NOW))
    capsys.readouterr()
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "a", "question": QUESTION}) + "\n"
                         + json.dumps({"id": "b", "question": "What is 19 * 21?"}) + "\n")
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "out.jsonl")], runtime=test_runtime(now=NOW)) == 0
    assert "$0.0180 (the endpoint's own)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())["this_run"]
    assert (summary["cache_hits"], summary["cost_usd"], summary["cost_source"]) == (CALLS, 0.018, "endpoint")
    lines = {str(n): json.loads(line) for n, line in enumerate((tmp_path / "out.jsonl").read_text().splitlines())}
    assert moa.strategy_score("debate", lines)["cost_source"] == "endpoint"


@pytest.mark.parametrize("prices", [{}, {"PRICE_INPUT_PER_MTOK": "2"}], ids=["no-prices", "prices-set"])
@respx.mock
def test_a_run_the_cache_answered_whole_cost_nothing(prices: dict[str, str], cache_file: Path, capsys,
                                                     monkeypatch) -> None:
    """Every reply from the cache: $0, said as nothing billed (not "at your prices"), prices set or not; so --eval's
    cost a question counts it as $0 beside a question the gateway charged, not as a question without a cost."""
    for name, value in prices.items():
        monkeypatch.setenv(name, value)
    respx.post(URL).mock(side_effect=CachingModel(0.001, tuple(moa.PHASES)))
    _, first, _ = run(capsys)
    moa.main(["-q", QUESTION], runtime=test_runtime(now=NOW))
    assert f"({CALLS} replies from the response cache), 0 tokens, $0.0000 (nothing billed)" in capsys.readouterr().out
    _, again, _ = run(capsys)
    assert (again["cost_usd"], again["usage"].get("cost_source"), first["cost_usd"]) == (0, None, 0.018)
    row = moa.strategy_score("debate", {"a": first, "b": again})
    assert (row["cost_usd_per_question"], row["cost_source"]) == (0.009, "endpoint")


@respx.mock
def test_a_hit_spends_no_budget() -> None:
    """A Debater's shared budget counts the first debate's 18 calls; the cached second one adds no call, no token."""
    route = respx.post(URL).mock(side_effect=FakeModel())

    async def twice() -> list[tuple[int, int]]:
        spent = []
        async with moa.Debater(cache="on", cache_path="c.sqlite3", total_max_calls=100) as client:
            for _ in range(2):
                await client.debate(QUESTION)
                spent.append((client.budget.calls, client.budget.tokens))
        return spent

    first, second = asyncio.run(twice())
    assert route.call_count == CALLS and first[0] == CALLS and second == first


@respx.mock
def test_five_sampled_solvers_never_share_one_cached_answer(cache_file: Path, capsys, monkeypatch) -> None:
    """With SOLVER_STYLES off the solvers' prompts are the same; each still gets its own stored answer back."""
    monkeypatch.setenv("SOLVER_STYLES", "false")
    answers = {f"solver-{n}": str(390 + n) for n in range(1, 6)}
    model = FakeModel(overrides={"generate": lambda request, _: completion(
        solver_text(answers[request.headers["X-MoA-Agent"]]))})
    route = respx.post(URL).mock(side_effect=model)
    _, first, _ = run(capsys)
    _, again, _ = run(capsys)
    assert route.call_count == CALLS and again["http_requests"] == 0
    assert {a["agent"]: a["answer"] for a in again["answers"]} == answers == {
        a["agent"]: a["answer"] for a in first["answers"]}


@respx.mock
def test_a_retry_is_replayed_as_it_went_and_an_error_is_never_stored(cache_file: Path, capsys) -> None:
    """solver-1 got a 500, then a reply cut off before its answer, then its answer: a rerun sends only the request
    that failed (errors are not stored), and replays the cut reply and the answer as attempts 2 and 3."""
    replies = [httpx.Response(500, json={"error": {"message": "overloaded"}}),
               completion("<reasoning>17 * 23 is", finish_reason="length"), completion(solver_text("391"))]

    def solver(request: httpx.Request, n: int) -> httpx.Response:
        return replies.pop(0) if request.headers["X-MoA-Agent"] == "solver-1" and replies else completion(
            solver_text("391"))

    route = respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": solver}))
    _, first, _ = run(capsys)
    replies[:] = [httpx.Response(500, json={"error": {"message": "overloaded"}})]
    _, again, _ = run(capsys)
    assert first["http_requests"] == CALLS + 2 and again["http_requests"] == 1 and route.call_count == CALLS + 3
    solver_1 = [a for a in trace_attempts(again) if (a["phase"], a["agent"]) == ("generate", "solver-1")]
    assert [(a["attempt"], a["status"], a["cache"]) for a in solver_1] == [(1, 500, None), (2, 200, "hit"),
                                                                            (3, 200, "hit")]
    assert entries(cache_file) == CALLS + 1


# --- the key -------------------------------------------------------------------------------------------------


def key_of(config: moa.Config | None = None, agent: str = "solver-1", number: int = 1, nonce: str = "aaaa1111bbbb2222",
           model: str = "m", temperature: float = 1.0, max_tokens: int = 100, pass_number: int = 1) -> str:
    """response_key of one attempt whose prompt carries its nonce, as try_attempt sends it."""
    config = config or moa.Config(URL, FAKE_KEY)
    call = moa.AgentCall(pass_number, moa.Phase.GENERATE, agent, "rules", "question", model=model)
    nonce_text = moa.prompts.render(moa.prompts.NONCE_SUFFIX, nonce=nonce)  # the user message's end (issue 25)
    messages = [{"role": "system", "content": "rules"}, {"role": "user", "content": "question" + nonce_text}]
    return moa.response_key(config, call, moa.Attempt(number, nonce, 0.0, model=model), messages,
                            moa.Sending(temperature, max_tokens, 10, lambda text: text))


@pytest.mark.parametrize("change, same", [
    ({"nonce": "cccc3333dddd4444"}, True),
    ({"config": moa.Config(URL, "sk-another-key-0987654321")}, True),
    ({"agent": "solver-2"}, False),
    ({"pass_number": 2}, False),
    ({"number": 2}, False),
    ({"model": "other"}, False),
    ({"temperature": 0.7}, False),
    ({"max_tokens": 200}, False),
    ({"config": moa.Config(URL, FAKE_KEY, top_p=0.9)}, False),
    ({"config": moa.Config(URL, FAKE_KEY, extra_body='{"provider": {"order": ["groq"]}}')}, False),
    ({"config": moa.Config("https://other.test/v1/chat/completions", FAKE_KEY)}, False),
    ({"temperature": 0.0, "agent": "solver-2"}, False),  # against the sampled base: its temperature differs
], ids=["nonce", "api-key", "sampled-slot", "pass", "attempt", "model", "temperature", "max-tokens", "option",
        "extra-body", "endpoint-url", "greedy"])
def test_the_key_holds_what_decides_a_reply(change: dict[str, Any], same: bool) -> None:
    """The nonce and the API key never change the key; the slot of a sampled call, the attempt, the model, its
    sampling, any option and the endpoint do."""
    assert (key_of(**change) == key_of()) is same


def test_greedy_calls_of_different_slots_share_a_key_but_not_an_attempt() -> None:
    """At temperature 0 the same prompt is the same reply, whoever sends it; a retry is still its own entry."""
    assert key_of(temperature=0.0, agent="judge-1") == key_of(temperature=0.0, agent="judge-2")
    assert key_of(temperature=0.0, number=2) != key_of(temperature=0.0)


@respx.mock
def test_no_credential_is_in_the_cache_file(cache_file: Path, capsys, monkeypatch) -> None:
    """The API key, a ?key= in the URL and an EXTRA_BODY credential appear in no byte of the file or its WAL."""
    monkeypatch.setenv("PROXY_URL", URL + "?key=sk-url-SECRET-99887766")
    monkeypatch.setenv("EXTRA_BODY", '{"api_key": "sk-body-SECRET-55443322"}')
    respx.post(url__startswith=URL).mock(side_effect=FakeModel())
    code, _, _ = run(capsys)
    data = b"".join(p.read_bytes() for p in cache_file.parent.iterdir())
    assert code == 0 and entries(cache_file) == CALLS
    assert not [s for s in (FAKE_KEY, "sk-url-SECRET-99887766", "sk-body-SECRET-55443322") if s.encode() in data]


# --- modes and CACHE_TTL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, sent, hits, stored", [
    ("on", 0, CALLS, CALLS),
    ("read", 0, CALLS, CALLS),
    ("refresh", CALLS, 0, CALLS),
    ("off", CALLS, 0, CALLS),
], ids=["on", "read", "refresh", "off"])
@respx.mock
def test_the_second_run_in_each_mode(cache_file: Path, capsys, monkeypatch, mode: str, sent: int, hits: int,
                                     stored: int) -> None:
    """After a run with CACHE=on: on and read serve every call; refresh and off send every call again."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    run(capsys)
    monkeypatch.setenv("CACHE", mode)
    _, again, _ = run(capsys, now=NOW + 60)
    assert (route.call_count - CALLS, again["usage"]["cache_hits"], entries(cache_file)) == (sent, hits, stored)


@respx.mock
def test_refresh_stores_every_reply_anew(cache_file: Path, capsys, monkeypatch) -> None:
    """CACHE=refresh reads nothing and writes each new reply over the old one: a later run is served the new ones."""
    route = respx.post(URL).mock(side_effect=FakeModel(answer="390"))
    run(capsys)
    route.mock(side_effect=FakeModel(answer="391"))
    monkeypatch.setenv("CACHE", "refresh")
    run(capsys)
    monkeypatch.setenv("CACHE", "on")
    _, served, _ = run(capsys)
    assert served["http_requests"] == 0 and served["final_answer"] == "391"


@respx.mock
def test_read_writes_nothing(cache_file: Path, capsys, monkeypatch) -> None:
    """CACHE=read without a file: every call is sent, no file is made, one warning says there is no cache."""
    monkeypatch.setenv("CACHE", "read")
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result, err = run(capsys)
    assert code == 0 and route.call_count == CALLS and not cache_file.parent.exists()
    assert err.count("response cache") == 1 and "No such file" in err


@pytest.mark.parametrize("later, sent", [(30 * 86400 - 1, 0), (30 * 86400 + 1, CALLS)],
                         ids=["within-ttl", "past-ttl"])
@respx.mock
def test_an_entry_older_than_cache_ttl_is_not_served(cache_file: Path, capsys, later: float, sent: int) -> None:
    """On the runtime's wall clock: within CACHE_TTL (30 days) a hit, past it the call is sent and stored anew."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    run(capsys)
    _, again, _ = run(capsys, now=NOW + later)
    assert route.call_count - CALLS == sent and again["usage"]["cache_hits"] == CALLS - sent
    assert entries(cache_file) == CALLS


# --- failing soft ----------------------------------------------------------------------------------------------


def garbage(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"this is not a database\x00\xff" * 100)


def link_elsewhere(path: Path) -> None:
    path.parent.mkdir()
    (path.parent / "precious.txt").write_text("keep me")
    path.symlink_to(path.parent / "precious.txt")


def a_folder(path: Path) -> None:
    path.mkdir(parents=True)


@pytest.mark.parametrize("spoil, words", [
    (garbage, "file is not a database"),
    (link_elsewhere, "it is a symbolic link"),
    (a_folder, "Is a directory"),
], ids=["corrupt", "symlink", "a-folder"])
@respx.mock
def test_an_unusable_cache_file_is_one_warning_and_the_run_answers(cache_file: Path, capsys, spoil,
                                                                   words: str) -> None:
    """Garbage bytes, a link (never followed: its target is untouched) or a folder at CACHE_PATH: one warning,
    every call sent, the verdict as always, exit 0."""
    spoil(cache_file)
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result, err = run(capsys)
    assert code == 0 and result["final_answer"] == "391" and route.call_count == CALLS
    assert err.count("warning:") == 1 and err.count("response cache") == 1 and words in err, err
    if cache_file.is_symlink():
        assert (cache_file.parent / "precious.txt").read_text() == "keep me"


@respx.mock
def test_a_cache_locked_past_its_busy_timeout_is_one_warning(cache_file: Path, capsys, monkeypatch) -> None:
    """Another process holds the file's write lock for the whole run: one warning when a store times out, the run
    answers (the busy timeout is lowered, so the test does not wait)."""
    monkeypatch.setattr(moa.ResponseCache, "BUSY_SECONDS", 0.01)
    cache_file.parent.mkdir()
    holder = sqlite3.connect(cache_file, isolation_level=None)
    holder.executescript(moa.ResponseCache.SCHEMA)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        route = respx.post(URL).mock(side_effect=FakeModel())
        code, result, err = run(capsys)
    finally:
        holder.close()
    assert code == 0 and result["final_answer"] == "391" and route.call_count == CALLS
    assert err.count("warning:") == 1 and "database is locked" in err


@respx.mock
def test_a_read_only_cache_folder_is_one_warning(cache_file: Path, capsys, request, monkeypatch) -> None:
    """The cache's folder cannot be written (a read-only mount for root, chmod otherwise): one warning, answers."""
    if os.geteuid() == 0:
        folder = request.getfixturevalue("small_fs")("1m")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        folder = cache_file.parent
        folder.mkdir(mode=0o500)
    monkeypatch.setenv("CACHE_PATH", str(folder / "responses.sqlite3"))
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result, err = run(capsys)
    assert code == 0 and result["final_answer"] == "391" and route.call_count == CALLS
    assert err.count("warning:") == 1 and "response cache" in err


def test_the_cache_file_and_its_folders_are_private(tmp_path: Path) -> None:
    """Made 0600 in folders made 0700, like every file the tool writes."""
    cache = moa.ResponseCache(str(tmp_path / "a" / "b" / "responses.sqlite3"), "on", 60.0)
    cache.run(NOW, lambda: None)
    cache.db.close()
    modes = [oct(p.stat().st_mode & 0o777) for p in (tmp_path / "a", tmp_path / "a" / "b", Path(cache.path))]
    assert modes == ["0o700", "0o700", "0o600"]


WRITER = """
import asyncio, sys
sys.path.insert(0, {root!r})
import moa_pipeline as moa

async def write(tag):
    cache = moa.ResponseCache({path!r}, "on", 0.0)
    reply = moa.Completion("<answer>391</answer>", "stop", 200, {{"prompt_tokens": 5, "completion_tokens": 7}})

    async def send():
        return reply

    for n in range(200):
        assert (await cache.reply(f"{{tag}}-{{n}}", "n", 1.0, send))[1] is None, "a new key was served"
        assert (await cache.reply(f"{{tag}}-{{n}}", "n", 2.0, send))[1] == 1.0, "a stored reply was not served"
    await cache.close()

asyncio.run(write(sys.argv[1]))
"""


def test_two_processes_write_one_cache_file_at_once(tmp_path: Path) -> None:
    """Two processes storing and reading 200 replies each in one file at the same time: WAL and the busy timeout
    keep every write, no warning, and the stats count them all (each key a miss, then a hit)."""
    path = tmp_path / "shared" / "responses.sqlite3"
    script = WRITER.format(root=str(HERE), path=str(path))
    writers = [subprocess.Popen([sys.executable, "-c", script, tag], stderr=subprocess.PIPE, text=True)
               for tag in ("a", "b")]
    errors = [writer.communicate(timeout=120)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0] and errors == ["", ""], errors
    cache = moa.ResponseCache(str(path), "read", 0.0)
    cache.db = cache.connect(NOW)
    found = cache.stats(NOW)
    cache.db.close()
    assert (found["entries"], found["stores"], found["hits"], found["misses"]) == (400, 400, 400, 400)


async def test_a_cache_hit_sets_no_straggler_bar() -> None:
    """A call answered without a request (a hit) adds no latency to the straggler median: 0 s would set the bar
    at STRAGGLER_MIN_SECONDS and cut every call the cache could not answer."""
    config = moa.Config(URL, FAKE_KEY, straggler_factor=3.0)
    async with httpx.AsyncClient() as client:
        runtime = test_runtime()
        state = moa.Debate(config, moa.Endpoint(config, client, runtime), runtime, "run", 0.0)
        watch = moa.StragglerWatch(state, moa.Phase.JUDGE, 1)

        async def answer(sends: bool) -> str:
            if sends:
                with moa.CALL_IN_FLIGHT.get().sending():  # type: ignore[union-attr]
                    pass
            return "verdict"

        assert await watch.guard("judge-1", answer(sends=False)) == "verdict" and watch.finished == []
        assert await watch.guard("judge-2", answer(sends=True)) == "verdict" and len(watch.finished) == 1
        watch.close()


# --- the cache command and the settings --------------------------------------------------------------------------


@respx.mock
def test_the_cache_command_shows_and_clears_the_cache(cache_file: Path, capsys) -> None:
    """`cache --json`: path, bytes, entries, expired, lifetime counts; `cache clear` removes the entries (the
    counts stay); the text form says the same."""
    respx.post(URL).mock(side_effect=FakeModel())
    run(capsys)
    run(capsys)
    assert moa.main(["cache", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["path"] == str(cache_file) and shown["size_bytes"] > 0
    # test_runtime's clock stored them in 2023: 30 days on, the real clock sees them expired
    assert {k: shown[k] for k in ("entries", "expired", "hits", "misses", "stores")} == {
        "entries": CALLS, "expired": CALLS, "hits": CALLS, "misses": CALLS, "stores": CALLS}
    assert moa.main(["cache", "clear"]) == 0
    text = capsys.readouterr().out
    assert "entries: 0," in text and "removed: 18" in text and f"hits: {CALLS}," in text
    assert entries(cache_file) == 0


@pytest.mark.parametrize("spoil, code, words", [
    (None, 0, "entries: 0,"),
    (garbage, 1, "cannot be read (file is not a database)"),
], ids=["no-cache-yet", "corrupt"])
def test_the_cache_command_on_no_cache_or_a_broken_one(cache_file: Path, capsys, spoil, code: int,
                                                       words: str) -> None:
    """No file yet: all zeros, none made, exit 0; garbage there: one error line, exit 1."""
    if spoil:
        spoil(cache_file)
    assert moa.main(["cache"]) == code
    out, err = capsys.readouterr()
    assert words in out + err and (spoil or not cache_file.exists())


def test_the_default_cache_file_is_in_xdg_cache_home(monkeypatch, tmp_path: Path) -> None:
    """No CACHE_PATH: $XDG_CACHE_HOME/moa-pipeline/responses.sqlite3, else ~/.cache/moa-pipeline/…"""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert moa.ResponseCache(None, "on", 1.0).path == tmp_path / "xdg" / "moa-pipeline" / "responses.sqlite3"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert moa.ResponseCache(None, "on", 1.0).path == tmp_path / ".cache" / "moa-pipeline" / "responses.sqlite3"


@pytest.mark.parametrize("name, value, words", [
    ("CACHE", "yes", "CACHE='yes' (environment) is not valid: expected off, on, read or refresh"),
    ("CACHE_TTL", "a week", "CACHE_TTL='a week' (environment) is not valid: expected a duration such as 30d"),
    ("CACHE_TTL", "3651d", "at most 3650d"),
    ("CACHE_PATH", "~/cache.db", "~ is not expanded here"),
], ids=["mode", "ttl-words", "ttl-too-long", "path-with-tilde"])
def test_a_bad_cache_setting_exits_2_naming_it(monkeypatch, capsys, name: str, value: str, words: str) -> None:
    """A bad cache setting is one error line naming it, exit 2, nothing sent."""
    monkeypatch.setenv(name, value)
    assert moa.main(["-q", QUESTION]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [
    ("30d", 30 * 86400.0), ("12h", 43200.0), ("90m", 5400.0), ("1h30m", 5400.0), ("3600", 3600.0), ("0", 0.0),
    (" 1.5D ", 129600.0),
], ids=["days", "hours", "minutes", "hours-minutes", "seconds", "forever", "spaced-upper"])
def test_cache_ttl_reads_a_duration(text: str, seconds: float) -> None:
    """CACHE_TTL is seconds, or a duration with d, h, m, s (0: for ever)."""
    assert moa.load_config({"CACHE_TTL": text}, {"PROXY_URL": URL, "API_KEY": FAKE_KEY}, {}).cache_ttl == seconds


def test_the_cache_is_the_clients_setting() -> None:
    """A Debater's cache is its client's: a call that sets cache, cache_path or cache_ttl is refused, nothing sent."""
    client = moa.Debater(cache="on", cache_path="c.sqlite3")
    for name, value in (("cache", "refresh"), ("cache_path", "other.sqlite3"), ("cache_ttl", 60)):
        with pytest.raises(moa.ConfigError, match=f"{name}: the client's connection setting"):
            client._config_for({name: value})
