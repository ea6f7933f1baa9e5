"""The library surface (issue 24): typed keyword settings, the shared client (Debater), debate_sync, and what a
type checker sees in a user's script."""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, completion, phases_of, solver_text

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("endpoint_env")


# --- the typed surface ------------------------------------------------------------------------------


def test_settings_name_every_setting_once() -> None:
    """Settings (what a type checker sees) has one key per Config field, by the same name: no alias, none missing."""
    assert list(moa.Settings.__annotations__) == [f.name for f in dataclasses.fields(moa.Config)]


@pytest.mark.parametrize("function", [moa.debate, moa.debate_sync, moa.Debater, moa.Debater.debate,
                                      moa.Debater.debate_many],
                         ids=["debate", "debate_sync", "Debater", "Debater.debate", "Debater.debate_many"])
def test_the_signature_shows_each_setting_as_a_keyword_and_no_private_hook(function) -> None:
    """help() and inspect show every setting as a keyword-only parameter with its type; no underscored parameter."""
    parameters = inspect.signature(function).parameters
    assert not [name for name in parameters if name.startswith("_")]
    for field in dataclasses.fields(moa.Config):
        assert parameters[field.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[field.name].default is None and "None" in str(parameters[field.name].annotation)
    assert not [p for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]


@pytest.mark.parametrize("name, hint", [
    ("workers", "did you mean 'num_workers'?"),
    ("judges", "did you mean 'num_judges'?"),
    ("temprature", "did you mean 'temperature'?"),
    ("xyzzy", "settings are their lower-case names"),
], ids=["old-workers-alias", "old-judges-alias", "typo", "nothing-close"])
@respx.mock
def test_an_unknown_keyword_names_the_setting_it_resembles(name, hint) -> None:
    """One name per setting: the old aliases and typos are ConfigErrors that suggest the right name; nothing sent."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    with pytest.raises(moa.ConfigError, match=f"unknown setting '{name}'") as caught:
        moa.debate_sync("Q?", **{name: 3})
    assert hint in str(caught.value) and route.call_count == 0


@respx.mock
def test_a_path_is_taken_for_log_dir(tmp_path) -> None:
    """log_dir takes a pathlib.Path as well as a string."""
    respx.post(URL).mock(side_effect=FakeModel())
    result = moa.debate_sync("What is 17 * 23?", num_workers=2, num_judges=1, log_dir=tmp_path / "mine")
    assert result.transcript and Path(result.transcript).parent == tmp_path / "mine"


@respx.mock
def test_json_settings_take_python_lists_and_dicts() -> None:
    """stop, response_format and extra_body take a list or dict as well as JSON text; each reaches the body."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    result = moa.debate_sync("What is 17 * 23?", num_workers=2, num_judges=1, stop=["###"], seed=7, top_p=0.5,
                             extra_body={"top_k": 20, "user": "me"}, synthesize="on", response_format={"type": "text"})
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert result.status == "ok" and all(b["stop"] == ["###"] and b["top_k"] == 20 and b["seed"] == 7 for b in bodies)
    formats = {call.request.headers["X-MoA-Phase"]: json.loads(call.request.content).get("response_format")
               for call in route.calls}
    assert formats.pop("synthesis") == {"type": "text"} and set(formats.values()) == {None}, "the synthesis's only"
    with pytest.raises(TypeError, match="expected a string, got set"):
        moa.debate_sync("Q?", stop={"###"})


def user_script_errors(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user.py"
    script.write_text("import moa_pipeline\n\n\n" + body)
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir",
                           str(tmp_path / "cache"), str(script)], capture_output=True, text=True,
                          env={"MYPYPATH": str(HERE), "PATH": "/usr/bin:/bin"}, cwd=tmp_path, timeout=120)


def test_mypy_strict_fails_a_user_script_with_a_misspelt_or_mistyped_setting(tmp_path) -> None:
    """The README's recipe (MYPYPATH at the clone): a misspelt keyword and a wrong type fail mypy --strict."""
    bad = user_script_errors(tmp_path, 'async def main() -> None:\n'
                                       '    await moa_pipeline.debate("Q?", num_wrokers=3)\n'
                                       '    moa_pipeline.debate_sync("Q?", temperature="hot")\n'
                                       '    async with moa_pipeline.Debater(answer_shape="long") as client:\n'
                                       '        await client.debate("Q?", judges=2)\n')
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'Unexpected keyword argument "num_wrokers"' in bad.stdout and 'did you mean "num_workers"' in bad.stdout
    assert 'Argument "temperature" to "debate_sync" has incompatible type "str"' in bad.stdout
    assert 'Argument "answer_shape" to "Debater"' in bad.stdout and '"judges"' in bad.stdout
    good = user_script_errors(tmp_path, 'async def main() -> int | None:\n'
                                        '    async with moa_pipeline.Debater(num_workers=3) as client:\n'
                                        '        result = await client.debate("Q?", num_judges=1, rounds=2)\n'
                                        '    usage: moa_pipeline.Usage = result.usage\n'
                                        '    return result.confidence if usage["total_tokens"] else None\n')
    assert good.returncode == 0, good.stdout + good.stderr


def test_the_installed_module_is_type_checked_with_the_documented_override(tmp_path) -> None:
    """Installed into site-packages, mypy skips the module (no py.typed) until the override the README and
    docs/library.md show; then a misspelt setting fails."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True, timeout=120)
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    for module in ("moa_pipeline.py", "parsing.py", "prompts.py"):
        shutil.copy(HERE / module, site / module)
    script = tmp_path / "user.py"
    script.write_text('import moa_pipeline\n\nmoa_pipeline.debate_sync("Q?", num_wrokers=3)\n')

    def mypy(*config: str) -> str:
        (tmp_path / "mypy.ini").write_text("\n".join(["[mypy]", "strict = True", *config]) + "\n")
        return subprocess.run([sys.executable, "-m", "mypy", "--python-executable", str(tmp_path / "venv/bin/python"),
                               "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(script)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120).stdout

    assert "missing library stubs or py.typed marker" in mypy()
    override = re.search(r"module = \[(.*)\]\n\s*(follow_untyped_imports = true)", (HERE / "docs/library.md").read_text())
    assert override is not None, "docs/library.md shows the override"
    assert f"module = [{override.group(1)}]\nfollow_untyped_imports = true" in (HERE / "README.md").read_text(), \
        "the README shows the same override"
    assert 'Unexpected keyword argument "num_wrokers"' in mypy(
        "[mypy-" + ",".join(json.loads(f"[{override.group(1)}]")) + "]", override.group(2).replace(" ", ""))


# --- debate_sync ------------------------------------------------------------------------------------


@respx.mock
def test_debate_sync_answers_outside_an_event_loop() -> None:
    """A script with no event loop gets the Result as debate() would give it."""
    respx.post(URL).mock(side_effect=FakeModel())
    result = moa.debate_sync("What is 17 * 23?", num_workers=2, num_judges=1)
    assert result.status == "ok" and result.final_answer == "391"


@respx.mock
async def test_debate_sync_refuses_inside_a_running_loop_and_leaves_nothing_behind() -> None:
    """Inside a running loop (a notebook): RuntimeError saying to await debate(); no coroutine left unawaited."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match=r"inside a running event loop .*await moa_pipeline.debate"):
            moa.debate_sync("What is 17 * 23?")
    assert route.call_count == 0


# --- the shared client ------------------------------------------------------------------------------


class InFlight:
    """A respx side effect that answers like FakeModel a few loop turns later, counting requests in flight at once."""

    def __init__(self) -> None:
        self.model, self.now, self.most = FakeModel(), 0, 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            for _ in range(5):  # the event loop's turns, no real time: the other debates send meanwhile
                await asyncio.sleep(0)
            return self.model(request)
        finally:
            self.now -= 1


@respx.mock
async def test_debates_through_one_client_share_its_request_limit_pool_and_breaker(monkeypatch) -> None:
    """Twenty concurrent debates through one Debater keep MAX_CONCURRENT_REQUESTS in flight in all, over one HTTP
    client and one Endpoint (its limit, cool-down and breaker); the client is closed on leaving."""
    server = InFlight()
    respx.post(URL).mock(side_effect=server)
    clients, endpoints = [], set()
    open_client, answer_question = moa.open_client, moa.answer_question
    monkeypatch.setattr(moa, "open_client", lambda config: clients.append(open_client(config)) or clients[-1])

    async def spy(config, question, endpoint, *args, **kwargs):
        endpoints.add(id(endpoint))
        return await answer_question(config, question, endpoint, *args, **kwargs)

    monkeypatch.setattr(moa, "answer_question", spy)
    async with moa.Debater(max_concurrent_requests=3, num_workers=3, num_judges=1) as client:
        results = await asyncio.gather(*(client.debate(f"What is 17 * 23? ({n})") for n in range(20)))
    assert [r.status for r in results] == ["ok"] * 20
    assert server.most == 3, "never more than the one shared limit in flight"
    assert len(clients) == 1 and len(endpoints) == 1 and clients[0].is_closed


@respx.mock
async def test_one_debate_alone_keeps_its_own_limit() -> None:
    """Without a Debater, each debate() has its own client and limit, as documented (the reason Debater exists)."""
    server = InFlight()
    respx.post(URL).mock(side_effect=server)
    await asyncio.gather(*(moa.debate("What is 17 * 23?", max_concurrent_requests=3, num_workers=3, num_judges=1)
                           for _ in range(4)))
    assert server.most > 3


@respx.mock
async def test_a_call_sets_its_own_settings_but_not_the_connections() -> None:
    """Per-call keywords apply to that call only; a connection setting is the client's: ConfigError, nothing sent."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    async with moa.Debater(num_workers=2, num_judges=1) as client:
        await client.debate("What is 17 * 23?", num_judges=3)
        assert phases_of(route).count("judge") == 3
        await client.debate("What is 17 * 23?")
        assert phases_of(route).count("judge") == 4, "the next call is back to the client's setting"
        sent = route.call_count
        for name, value in (("max_concurrent_requests", 2), ("api_key", "other"), ("proxy_url", "http://x/v1")):
            with pytest.raises(moa.ConfigError, match=f"^{name}: the client's connection setting"):
                await client.debate("Q?", **{name: value})
    assert route.call_count == sent


@respx.mock
async def test_a_shared_budget_holds_over_all_debates() -> None:
    """total_max_calls caps the requests of every debate through the client together; once spent, a question gets
    no verdict (no budget left), and the client says what was spent."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    async with moa.Debater(num_workers=2, num_judges=1, early_exit=True, total_max_calls=5) as client:
        first = await client.debate("What is 17 * 23?")
        results = await client.debate_many(["What is 17 * 23?", "What is 2 + 2?"])
    assert first.status == "ok" and first.llm_calls == 2, "early exit: two solvers agree"
    assert [r.status for r in results].count("ok") == 1 and route.call_count == 5 == client.budget.calls
    failed = next(r for r in results if r.status != "ok")
    assert "no budget left" in (failed.error or "") + " ".join(failed.skipped)


@respx.mock
async def test_debate_many_keeps_the_order_and_returns_failures_as_results() -> None:
    """debate_many gives one Result per question in order; one without a verdict is its failed Result."""
    def reply(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["messages"][-1]["content"]
        if "doomed" in text:
            return httpx.Response(400, json={"error": {"message": "bad request"}})
        return FakeModel()(request)

    respx.post(URL).mock(side_effect=reply)
    async with moa.Debater(num_workers=2, num_judges=1, max_retries=0) as client:
        results = await client.debate_many(["What is 17 * 23?", "doomed: what is 1/0?", "Is 391 = 17 * 23?"],
                                           concurrency=2)
    assert [r.question[:6] for r in results] == ["What i", "doomed", "Is 391"]
    assert [r.status for r in results] == ["ok", "failed", "ok"] and results[1].error


@pytest.mark.parametrize("questions, error", [
    (["What is 17 * 23?", ""], moa.ConfigError),
    (["What is 17 * 23?", b"bytes"], TypeError),
], ids=["empty", "bytes"])
@respx.mock
async def test_debate_many_checks_every_question_before_sending_any(questions, error) -> None:
    """A bad question anywhere in the list raises before the first request."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    async with moa.Debater() as client:
        with pytest.raises(error):
            await client.debate_many(questions)
    assert route.call_count == 0


async def test_a_client_must_be_open_and_opened_once() -> None:
    """Used outside `async with`, or entered twice, a Debater says how it is meant to be used."""
    client = moa.Debater()
    with pytest.raises(RuntimeError, match="open the Debater first"):
        await client.debate("Q?")
    async with client:
        with pytest.raises(RuntimeError, match="already open"):
            await client.__aenter__()
    with pytest.raises(moa.ConfigError, match="total_max_calls=-1"):
        moa.Debater(total_max_calls=-1)


@respx.mock
async def test_a_shared_client_reads_what_the_endpoint_bills_once() -> None:
    """Usage is counted per question, and the shared budget adds them all up."""
    respx.post(URL).mock(side_effect=lambda request: completion(
        solver_text("391"), usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}))
    async with moa.Debater(num_workers=2, num_judges=1, early_exit=True, total_max_tokens=10**6) as client:
        results = await client.debate_many(["What is 17 * 23?"] * 3)
    assert [r.usage["total_tokens"] for r in results] == [30, 30, 30] and client.budget.tokens == 90


# --- a hostile caller (issue 24's attack on the library surface) -----------------------------------


@pytest.mark.parametrize("questions", ["What is 17 * 23?", "391"], ids=["sentence", "one-word"])
@respx.mock
async def test_debate_many_refuses_one_string_for_a_list(questions) -> None:
    """A str is an iterable of str: debate_many("...") would debate each character; TypeError, nothing sent."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    async with moa.Debater() as client:
        with pytest.raises(TypeError, match=r"debate_many\(\) takes a list of questions"):
            await client.debate_many(questions)
    assert route.call_count == 0


@pytest.mark.parametrize("shown", [repr, lambda client: repr(client.config), lambda client: repr(client.runtime),
                                   lambda client: repr(vars(client)), lambda client: str(vars(client))],
                         ids=["client", "config", "runtime", "vars", "str-vars"])
def test_no_repr_of_a_client_shows_the_key(shown) -> None:
    """What a debugger, a log line or an error tracker's captured locals print of a Debater never holds the key."""
    client = moa.Debater(gateway_token="cf-gateway-SECRET-0987654321")
    assert FAKE_KEY not in shown(client) and "cf-gateway-SECRET-0987654321" not in shown(client)


@respx.mock
async def test_debate_many_leaves_no_debate_running_when_one_raises() -> None:
    """A question that raises (a bug, not a failed run) takes its siblings down with it: none is left running
    against the client that `async with` then closes, and none sends afterwards."""
    def reply(request: httpx.Request) -> httpx.Response:
        if "doomed" in json.loads(request.content)["messages"][-1]["content"]:
            raise RuntimeError("a bug in a transport")
        return FakeModel()(request)

    route = respx.post(URL).mock(side_effect=reply)
    async with moa.Debater(num_workers=2, num_judges=1, enable_file_logging=False) as client:
        with pytest.raises(RuntimeError, match="a bug in a transport"):
            await client.debate_many(["doomed: what is 1/0?", "What is 17 * 23?", "What is 2 + 2?"], concurrency=3)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        sent = route.call_count
    for _ in range(20):
        await asyncio.sleep(0)
    assert route.call_count == sent


@respx.mock
async def test_a_shared_token_budget_holds_when_the_endpoint_bills_more_than_we_estimate() -> None:
    """total_max_tokens alone, ten questions at once, an endpoint billing 10x our prompt estimate: as with a
    question's own MAX_TOTAL_TOKENS, attempts wait for the first bill, so the client never spends past its total."""
    async def reply(request: httpx.Request) -> httpx.Response:
        for _ in range(5):  # a few loop turns: every question has reserved before the first bill comes
            await asyncio.sleep(0)
        return completion(solver_text("391"), usage={"prompt_tokens": 3000, "completion_tokens": 50,
                                                     "total_tokens": 3050})

    respx.post(URL).mock(side_effect=reply)
    async with moa.Debater(num_workers=2, num_judges=1, early_exit=True, max_tokens=200, total_max_tokens=8000,
                           enable_file_logging=False) as client:
        results = await client.debate_many([f"What is {n} * 17?" for n in range(10)], concurrency=10)
    assert client.budget.tokens == sum(r.usage["total_tokens"] for r in results) <= 8000


@respx.mock
async def test_debate_many_stops_starting_questions_once_the_shared_breaker_trips() -> None:
    """An endpoint that is down (500s): once the shared breaker trips, debate_many starts no more questions (their
    Results say why), as a batch does; the next debate_many gives the endpoint a fresh chance."""
    route = respx.post(URL).mock(return_value=httpx.Response(500, json={"error": {"message": "down"}}))
    async with moa.Debater(num_workers=2, num_judges=1, max_retries=0, enable_file_logging=False) as client:
        results = await client.debate_many([f"What is {n} * 17?" for n in range(20)], concurrency=1)
        assert route.call_count == moa.BREAKER_WINDOW, "five questions of two failed calls each trip it"
        assert [r.status for r in results] == ["failed"] * 20
        assert all("not started: the endpoint is failing" in (r.error or "") for r in results[5:])
        assert "not started" not in (results[4].error or "") and results[5].question == "What is 5 * 17?"
        await client.debate_many(["What is 2 + 2?"])
        assert route.call_count == moa.BREAKER_WINDOW + 2


@pytest.mark.parametrize("status, body, said", [
    (401, {"error": {"message": "invalid api key"}}, "not started: the endpoint rejected the API key (HTTP 401)"),
    (404, {"error": {"message": "The model `gpt-9` does not exist"}}, "not started: "),
    (429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}, "not started: "),
], ids=["wrong-key", "wrong-model", "quota-used-up"])
@respx.mock
async def test_debate_many_stops_starting_questions_when_every_one_would_fail_alike(status, body, said) -> None:
    """A rejected key, a wrong URL or model, a quota used up stop the question that met them (stops_run); debate_many
    then starts no more (each says why), as a batch aborts, rather than sending every question to the same refusal."""
    route = respx.post(URL).mock(return_value=httpx.Response(status, json=body))
    async with moa.Debater(num_workers=2, num_judges=1, enable_file_logging=False) as client:
        results = await client.debate_many([f"What is {n} * 17?" for n in range(6)], concurrency=1)
    assert route.call_count <= 2, "the first question's solvers only"
    assert [r.status for r in results] == ["failed"] * 6 and "not started" not in (results[0].error or "")
    assert all((r.error or "").startswith(said) for r in results[1:])


@pytest.mark.parametrize("keywords, error", [
    ({"concurrency": 2.5}, TypeError),
    ({"concurrency": True}, TypeError),
    ({"concurrency": "4"}, TypeError),
    ({"concurrency": 0}, moa.ConfigError),
], ids=["float", "bool", "text", "zero"])
@respx.mock
async def test_debate_many_checks_concurrency_as_settings_are_checked(keywords, error) -> None:
    """A value of the wrong Python type is a TypeError and one out of range a ConfigError, as for every setting."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    async with moa.Debater() as client:
        with pytest.raises(error, match="concurrency="):
            await client.debate_many(["What is 17 * 23?"], **keywords)
    assert route.call_count == 0


@pytest.mark.parametrize("keywords, error", [
    ({"total_max_calls": 2.5}, TypeError),
    ({"total_max_tokens": "100"}, TypeError),
    ({"total_max_calls": -1}, moa.ConfigError),
], ids=["float", "text", "negative"])
def test_a_clients_totals_are_checked_as_settings_are(keywords, error) -> None:
    """total_max_calls and total_max_tokens: TypeError for a wrong type, ConfigError for a negative number."""
    with pytest.raises(error, match=next(iter(keywords))):
        moa.Debater(**keywords)


@respx.mock
def test_debate_sync_runs_in_a_worker_thread_while_the_main_thread_runs_a_loop() -> None:
    """A thread with no loop of its own (asyncio.to_thread from an async app) may use debate_sync."""
    respx.post(URL).mock(side_effect=FakeModel())

    async def main() -> moa.Result:
        return await asyncio.to_thread(moa.debate_sync, "What is 17 * 23?", num_workers=2, num_judges=1)

    assert asyncio.run(main()).final_answer == "391"


CTRL_C_SCRIPT = """
import asyncio, signal, httpx, respx, moa_pipeline as moa
clients = []
open_client = moa.open_client
moa.open_client = lambda config: clients.append(open_client(config)) or clients[-1]

sent = []

async def interrupted(request):
    sent.append(request)
    if len(sent) == 1:
        signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C, once, while the requests are in flight
    await asyncio.Event().wait()

with respx.mock:
    respx.post("%(url)s").mock(side_effect=interrupted)
    try:
        moa.debate_sync("What is 17 * 23?", proxy_url="%(url)s", api_key="%(key)s", num_workers=2, log_dir="runs")
    except KeyboardInterrupt:
        print("KeyboardInterrupt", clients[0].is_closed)
"""


def test_ctrl_c_in_debate_sync_closes_the_client_and_writes_the_trace(tmp_path) -> None:
    """Ctrl-C while debate_sync waits on the endpoint: KeyboardInterrupt reaches the script, as Python's own
    functions raise it, after the run was cancelled: the connections closed, the trace's verdict says "interrupted"."""
    done = subprocess.run([sys.executable, "-c", CTRL_C_SCRIPT % {"url": URL, "key": FAKE_KEY}], capture_output=True,
                          text=True, cwd=tmp_path, env={"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.stdout == "KeyboardInterrupt True\n", done.stderr
    trace, = (tmp_path / "runs").glob("*.jsonl")
    verdict = json.loads(trace.read_text().splitlines()[-1])
    assert verdict["type"] == "verdict" and verdict["error"] == "interrupted"


def held_until(gate: asyncio.Event):
    """A respx side effect answering like FakeModel, holding each request whose question says "slow" until ``gate``."""
    async def reply(request: httpx.Request) -> httpx.Response:
        if "slow" in json.loads(request.content)["messages"][-1]["content"]:
            await gate.wait()
        return FakeModel()(request)
    return reply


@respx.mock
async def test_a_cancelled_debate_leaves_the_client_and_the_others_working() -> None:
    """Cancelling one client.debate() task frees its request slots; the other debates and later ones answer."""
    gate = asyncio.Event()
    respx.post(URL).mock(side_effect=held_until(gate))
    async with moa.Debater(num_workers=2, num_judges=1, max_concurrent_requests=2) as client:
        slow = asyncio.create_task(client.debate("slow: what is 17 * 23?"))
        others = [asyncio.create_task(client.debate(f"What is {n} * 17?")) for n in range(3)]
        for _ in range(10):
            await asyncio.sleep(0)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert [r.status for r in await asyncio.gather(*others)] == ["ok"] * 3
        assert client.endpoint is not None and client.endpoint.slots.in_flight == 0 == client.endpoint.questions
        assert (await client.debate("What is 2 + 2?")).status == "ok"


@respx.mock
async def test_a_client_closes_on_an_error_inside_its_block_and_opens_again() -> None:
    """An exception inside `async with` closes the connections; the same Debater may be opened again afterwards
    (a new pool, limit and breaker; its budget runs on over both)."""
    respx.post(URL).mock(side_effect=FakeModel())
    client = moa.Debater(num_workers=2, num_judges=1, early_exit=True, total_max_calls=100)
    with pytest.raises(ValueError):
        async with client:
            assert client.endpoint is not None
            pool = client.endpoint.client
            await client.debate("What is 17 * 23?")
            raise ValueError("the caller's own bug")
    assert pool.is_closed and client.endpoint is None
    async with client:
        assert (await client.debate("What is 17 * 23?")).status == "ok"
    assert client.budget.calls == 4


@respx.mock
async def test_a_cancelled_debate_many_stops_every_question_and_leaves_the_client_working() -> None:
    """Cancelling a debate_many task cancels each of its questions (none left running, every slot freed); the client
    answers the next call."""
    gate = asyncio.Event()
    respx.post(URL).mock(side_effect=held_until(gate))
    async with moa.Debater(num_workers=2, num_judges=1, max_concurrent_requests=3) as client:
        many = asyncio.create_task(client.debate_many([f"slow: what is {n} * 17?" for n in range(5)], concurrency=2))
        for _ in range(10):
            await asyncio.sleep(0)
        many.cancel()
        with pytest.raises(asyncio.CancelledError):
            await many
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert client.endpoint is not None and client.endpoint.slots.in_flight == 0 == client.endpoint.questions
        assert (await client.debate("What is 17 * 23?")).status == "ok"


@pytest.mark.parametrize("shown", [
    str, repr, lambda err: repr(err.cause), lambda err: repr(err.__cause__),
    lambda err: json.dumps(err.result.to_dict()), lambda err: repr(err.result),
], ids=["str", "repr", "cause", "__cause__", "result-json", "result-repr"])
@respx.mock
async def test_a_key_the_endpoint_echoes_never_reaches_a_client_caller(shown) -> None:
    """A 401 whose body echoes the key, for a question that holds it too: every view of the RunFailed that
    client.debate raises, and of its Result, has the key masked."""
    respx.post(URL).mock(return_value=httpx.Response(401, json={"error": {"message": f"bad key {FAKE_KEY}"}}))
    async with moa.Debater(num_workers=2, num_judges=1) as client:
        with pytest.raises(moa.RunFailed) as caught:
            await client.debate(f"What is 17 * 23? (my key is {FAKE_KEY})")
    assert FAKE_KEY not in shown(caught.value) and "***" in str(caught.value)


def test_a_client_shows_only_its_two_ways_to_debate() -> None:
    """help(Debater) lists debate and debate_many; its helpers are private: a public run(config, question) took a
    Config whose connection settings (another proxy_url, api_key) the shared client silently ignored."""
    assert [name for name in vars(moa.Debater) if not name.startswith("_")] == ["debate", "debate_many"]


@respx.mock
def test_a_client_says_so_when_used_from_another_event_loop() -> None:
    """Opened in one loop (a session fixture, an earlier asyncio.run), used in another: a RuntimeError that says
    so, not httpcore's "Event loop is closed" from deep inside; nothing sent."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    client = moa.Debater(num_workers=2, num_judges=1)
    asyncio.run(client.__aenter__())
    with pytest.raises(RuntimeError, match="opened in another event loop"):
        asyncio.run(client.debate("What is 17 * 23?"))
    asyncio.run(client.__aexit__(None, None, None))
    assert route.call_count == 0


# --- a real server ----------------------------------------------------------------------------------


async def test_fifty_debates_through_one_client_stay_within_an_endpoints_limit(server) -> None:
    """Fifty concurrent client.debate() calls against a real server that takes 8 at once (429 beyond): with
    MAX_CONCURRENT_REQUESTS=8 never more than 8 requests are in flight, no request gets a 429, all answer."""
    endpoint = server("--max-concurrency", "8", "--latency", "0.01")
    async with moa.Debater(proxy_url=endpoint.url, api_key=FAKE_KEY, max_concurrent_requests=8, num_workers=3,
                           num_judges=1, enable_file_logging=False) as client:
        results = await asyncio.gather(*(client.debate(f"What is 17 * 23? ({n})") for n in range(50)))
    assert [r.status for r in results] == ["ok"] * 50
    events = sorted([(e["t"], 1) for e in endpoint.starts()] + [(e["t"], -1) for e in endpoint.events("end")])
    running = [sum(step for _, step in events[:n + 1]) for n in range(len(events))]
    assert max(running) <= 8 and not [e for e in endpoint.events("end") if e["status"] == 429]
    assert len(endpoint.runs()) == 50


@pytest.mark.parametrize("ask", [
    lambda client, secret: client.debate("What is 17 * 23?", extra_body={"api_key": secret}),
    lambda client, secret: client.debate_many(["What is 17 * 23?"], extra_body={"aws_secret_access_key": secret}),
], ids=["debate", "debate_many"])
@respx.mock
async def test_a_credential_in_a_calls_own_extra_body_is_masked_in_its_files(tmp_path, ask) -> None:
    """A call's own EXTRA_BODY credential is masked in its transcript and trace, as the client's own would be."""
    secret = "sk-litellm-PERCALL-5566778899"
    route = respx.post(URL).mock(side_effect=FakeModel())
    async with moa.Debater(num_workers=2, num_judges=1) as client:
        await ask(client, secret)
    files = [path.read_text() for path in (tmp_path / "logs").iterdir()]
    assert secret in route.calls.last.request.content.decode(), "sent as given"
    assert len(files) == 2 and all(secret not in text and "***" in text for text in files)


@pytest.mark.parametrize("shown", [lambda err: repr(err.__cause__), lambda err: str(err.__cause__)],
                         ids=["__cause__-repr", "__cause__-str"])
@respx.mock
async def test_a_calls_own_extra_body_credential_the_endpoint_echoes_never_reaches_the_caller(shown) -> None:
    """A 401 echoing a call's own EXTRA_BODY credential: the RunFailed's chained error has it masked too."""
    secret = "sk-litellm-PERCALL-5566778899"
    respx.post(URL).mock(return_value=httpx.Response(401, json={"error": {"message": f"bad key {secret}"}}))
    async with moa.Debater(num_workers=2, num_judges=1) as client:
        with pytest.raises(moa.RunFailed) as caught:
            await client.debate("What is 17 * 23?", extra_body={"api_key": secret})
    assert secret not in shown(caught.value) and "***" in str(caught.value)


@pytest.mark.parametrize("status, body", [
    (401, {"error": {"message": "invalid api key"}}),
    (404, {"error": {"message": "The model `gpt-9` does not exist"}}),
    (429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}),
], ids=["wrong-key", "wrong-model", "quota-used-up"])
@respx.mock
async def test_a_run_stopped_by_a_refusal_names_it_as_its_cause(status, body) -> None:
    """RunFailed.cause is the error the last failed call ended with (docs/library.md), a refusal that stops the run too."""
    respx.post(URL).mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(moa.RunFailed) as caught:
        await moa.debate("What is 17 * 23?", num_workers=2, num_judges=1)
    assert isinstance(caught.value.cause, moa.APIError) and caught.value.cause.status == status


@pytest.mark.parametrize("settings, secret", [
    ({"proxy_url": "https://gw.example/v1?key=sk-proxy-QUERY-55667788"}, "sk-proxy-QUERY-55667788"),
    ({"extra_body": {"api_key": "sk-litellm-BODY-11223344"}}, "sk-litellm-BODY-11223344"),
    ({"extra_body": {"aws_secret_access_key": "wJalrXUtnFEMI-K7MDENG"}}, "wJalrXUtnFEMI-K7MDENG"),
], ids=["proxy-url-query", "extra-body-api-key", "extra-body-aws-secret"])
async def test_no_repr_of_a_client_shows_a_credential_masked_like_the_key(settings, secret) -> None:
    """A PROXY_URL query credential and an EXTRA_BODY credential are masked like the key: no repr shows them."""
    client = moa.Debater(**settings)
    shown = [repr(client.config), repr(vars(client)), str(vars(client))]
    async with client:
        shown += [repr(vars(client)), repr(vars(client.endpoint))]
    assert client.config.secrets and not [text for text in shown if secret in text]


@pytest.mark.parametrize("per_call, sent, gone", [
    ({"extra_body": {"user": "team-b"}}, {"user": "team-b"}, "provider"),
    ({"seed": 7}, {"seed": 7, "provider": {"order": ["groq"]}}, "user"),
], ids=["extra-body-replaced", "other-setting-keeps-it"])
@respx.mock
async def test_a_calls_extra_body_replaces_the_clients_whole(per_call, sent, gone) -> None:
    """A call's extra_body is sent instead of the client's (docs/library.md), not merged; other keywords leave it."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    async with moa.Debater(num_workers=2, num_judges=1, extra_body={"provider": {"order": ["groq"]}}) as client:
        await client.debate("What is 17 * 23?", **per_call)
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert all(body.items() >= sent.items() and gone not in body for body in bodies)
