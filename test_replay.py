"""A replay restores what its run had before --from, sends each solver's calls to its own model,
prices only what it will run, and leaves a trace as replayable as any; the library's argument errors."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
import parsing
from conftest import FAKE_KEY, URL, FakeModel, body_of, completion, judge_text, solver_text, test_runtime

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("endpoint_env")
QUESTION = "What is 17 * 23?"
MODELS = ("alpha", "beta")  # --model alpha,beta: slots 1, 3, 5 run alpha, slots 2 and 4 beta


def slot_model(agent: str) -> str:
    return MODELS[(int(agent.rsplit("-", 1)[1]) - 1) % len(MODELS)]


def user_prompt(request: httpx.Request) -> str:
    return json.loads(request.content)["messages"][1]["content"]


class Tagged(FakeModel):
    """solver-1 answers 390 and holds it, so debate rounds run; every critique, rebuttal and
    revision carries ``tag`` and the agent it is about, so a prompt shows which run wrote what."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def __call__(self, request: httpx.Request) -> httpx.Response:
        phase, agent = request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]
        if phase == "generate":
            return completion(solver_text("390" if agent == "solver-1" else "391"))
        if phase == "critique":
            return completion(f"<critique>{self.tag} critique of {agent.split('->')[1]}</critique>")
        if phase in ("rebuttal", "revise"):
            label = "Your answer:" if phase == "rebuttal" else "Your current answer:"  # after the block of all (issue 25)
            mine = user_prompt(request).split(f"{label}\n<answer>\n", 1)[1].split("\n</answer>", 1)[0]
            what = "rebuttal" if phase == "rebuttal" else f"round {request.headers['X-MoA-Round']}"
            return completion(f"<rebuttal>{self.tag} {what} of {agent}</rebuttal><answer>{mine}</answer>")
        return completion(judge_text("391", 90))


def run_json(argv: list[str], capsys) -> tuple[int, dict]:
    code = moa.main([*argv, "--json"], runtime=test_runtime())
    return code, json.loads(capsys.readouterr().out)


def traced(capsys, *argv: str, tag: str = "first") -> Path:
    """A run with --model alpha,beta and two debate rounds, answered by Tagged(tag): its trace."""
    respx.post(URL).mock(side_effect=Tagged(tag))
    code, out = run_json(["-q", QUESTION, "--model", ",".join(MODELS), "--rounds", "2", *argv], capsys)
    assert code == 0 and out["rounds"] == 2
    return Path(out["trace"])


def replay(capsys, trace: Path, start: str, tag: str, *argv: str) -> tuple[dict, respx.Route]:
    route = respx.post(URL).mock(side_effect=Tagged(tag))
    route.calls.clear()  # the same route as the traced run's: only this replay's calls count
    code, out = run_json(["--replay", str(trace), "--from", start, "--model", ",".join(MODELS),
                          "--rounds", "2", *argv], capsys)
    assert code == 0, out
    return out, route


# --- item 4: a replay is a replay -----------------------------------------------------------------


@pytest.mark.parametrize("start", ["critique", "rebuttal", "round2"])
@respx.mock
def test_a_replay_sends_each_solvers_calls_to_its_own_model(start, capsys) -> None:
    """--model alpha,beta: each replayed rebuttal and revision goes to its solver's model, each
    critique to its critic slot's, and --json names every answer's model."""
    trace = traced(capsys)
    out, route = replay(capsys, trace, start, "second")
    sent = [(c.request.headers["X-MoA-Phase"], c.request.headers["X-MoA-Agent"], body_of(c)["model"])
            for c in route.calls]
    own = [(agent, model) for phase, agent, model in sent if phase in ("rebuttal", "revise")]
    assert own and all(model == slot_model(agent) for agent, model in own)
    critics = [(agent, model) for phase, agent, model in sent if phase == "critique"]
    assert all(model == slot_model(agent.split("->")[0]) for agent, model in critics)
    assert {a["agent"]: a["model"] for a in out["answers"]} == {f"solver-{i}": slot_model(f"solver-{i}")
                                                                for i in range(1, 6)}


@respx.mock
def test_a_replay_from_a_later_round_keeps_the_critiques_and_rebuttals(capsys) -> None:
    """--from round2: the revisions read the trace's critiques and rebuttals, and so do the judges."""
    trace = traced(capsys)
    out, route = replay(capsys, trace, "round2", "second")
    revisions = [user_prompt(c.request) for c in route.calls if c.request.headers["X-MoA-Phase"] == "revise"]
    assert len(revisions) == 5
    for prompt in revisions:
        agent = prompt.split("first critique of ", 1)[1].split("\n", 1)[0]
        assert f"first rebuttal of {agent}" in prompt, "its reason is its rebuttal from the trace"
        assert "<critique>\n(none)" not in prompt
    judged = [user_prompt(c.request) for c in route.calls if c.request.headers["X-MoA-Phase"] == "judge"]
    assert all(prompt.count("first critique of solver-") == 5 for prompt in judged)
    assert all(prompt.count("second round 2 of solver-") == 5 for prompt in judged)
    solver_1 = next(a for a in out["answers"] if a["agent"] == "solver-1")
    assert solver_1["by_round"] == ["390", "390"] and out["rounds"] == 2


@respx.mock
def test_a_replays_trace_is_replayable_without_its_source(capsys) -> None:
    """A replay's trace carries the restored attempts, marked restored: a replay of it, with the
    first trace gone, sees the solvers' first answers and the replay's own critiques."""
    first = traced(capsys)
    out, _ = replay(capsys, first, "critique", "second")
    second = Path(out["trace"])
    first.unlink()
    records = [json.loads(line) for line in second.read_text().splitlines()]
    attempts = [r for r in records if r["type"] == "attempt"]
    restored = [r for r in attempts if r.get("restored")]
    assert {r["phase"] for r in restored} == {"generate"} and len(restored) == 5
    assert all(r["run_id"] == records[0]["run_id"] and r["pass"] == 1 for r in restored)
    assert not any(r.get("restored") for r in attempts if r["phase"] != "generate")
    again, route = replay(capsys, second, "judges", "third")
    assert [c.request.headers["X-MoA-Phase"] for c in route.calls] == ["judge"] * 3
    judged = user_prompt(route.calls[0].request)
    assert judged.count("second critique of solver-") == 5 and judged.count("second round 2 of solver-") == 5
    assert {a["model"] for a in again["answers"]} == set(MODELS)
    third, _ = replay(capsys, Path(again["trace"]), "round2", "fourth")
    assert third["final_answer"] == "391", "a replay of a replay of a replay still finds every answer"


@respx.mock
def test_a_replay_keeps_no_budget_back_for_a_rerun_it_never_runs(capsys) -> None:
    """--max-calls 36 pays for rounds 2 and 3 and the judges (13 calls): a replay spends none of it
    on the rerun a fresh run would keep 24 calls for."""
    trace = traced(capsys)
    out, route = replay(capsys, trace, "round2", "second", "--rounds", "3", "--max-calls", "36")
    assert [c.request.headers["X-MoA-Round"] for c in route.calls if c.request.headers["X-MoA-Phase"] == "revise"] \
        == ["2"] * 5 + ["3"] * 5
    assert out["skipped"] == [] and out["rounds"] == 3


@respx.mock
def test_a_replay_dry_run_prices_only_what_the_replay_runs(capsys) -> None:
    """--replay --dry-run: the phases from START on, over the trace's answers, no rerun, nothing sent."""
    trace = traced(capsys, "-w", "3")
    route = respx.post(URL).mock(side_effect=FakeModel())
    route.calls.clear()
    code, judges = run_json(["--replay", str(trace), "--from", "judges", "--dry-run"], capsys)
    assert code == 0 and [(r["pass"], r["phase"], r["calls"]) for r in judges["phases"]] == [("1", "judge", 3)]
    assert judges["calls_pass_1"] == judges["calls_with_rerun"] == 3
    code, critique = run_json(["--replay", str(trace), "--from", "critique", "--dry-run", "--rounds", "3"], capsys)
    assert code == 0 and [(r["phase"], r["calls"]) for r in critique["phases"]] == [
        ("critique", 3), ("rebuttal", 3), ("revise", 6), ("judge", 3)], "the trace's 3 answers, not NUM_WORKERS=5"
    assert critique["calls_with_rerun"] == 15
    code, fresh = run_json(["-q", QUESTION, "--dry-run", "--rounds", "3"], capsys)
    assert judges["worst_case_tokens"] < critique["worst_case_tokens"] < fresh["worst_case_tokens"]
    assert route.call_count == 0
    moa.main(["--replay", str(trace), "--from", "round2", "--dry-run", "--rounds", "3"])
    shown = capsys.readouterr().out
    assert "revise" in shown and "a replay runs no rerun" in shown
    assert "generate" not in shown and "critique" not in shown


@respx.mock
def test_a_replay_dry_run_prices_the_restored_answers_as_they_are(capsys, monkeypatch) -> None:
    """An answer longer than today's MAX_TOKENS is priced at its length in every judge's prompt."""
    long = "4" * 30_000  # 10,000 tokens by the estimate
    model = FakeModel(answer=long)
    respx.post(URL).mock(side_effect=model)
    code, out = run_json(["-q", QUESTION, "-w", "2"], capsys)
    assert code == 0
    monkeypatch.setenv("MAX_TOKENS", "100")
    code, small = run_json(["--replay", out["trace"], "--from", "judges", "--dry-run"], capsys)
    judge = next(r for r in small["phases"] if r["phase"] == "judge")
    assert code == 0 and judge["prompt_tokens"] >= 3 * 2 * 10_000, "3 judges, each reading 2 such answers"


def test_the_cli_replays_with_every_model_against_a_real_server(server, tmp_path) -> None:
    """Through the real CLI and a server on 127.0.0.1: the replay's rebuttals go to each solver's
    model, and the replay's own trace replays in a new process."""
    endpoint = server("--log-requests")
    env = {**os.environ, "PROXY_URL": endpoint.url, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"),
           "NUM_WORKERS": "4", "NUM_JUDGES": "1", "MODEL_NAME": "alpha,beta", "STRAGGLER_FACTOR": "0"}

    def cli(*argv: str) -> dict:
        done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), *argv, "--json"], env=env,
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    first = cli("-q", QUESTION)
    second = cli("--replay", first["trace"], "--from", "rebuttal")
    Path(first["trace"]).unlink()
    third = cli("--replay", second["trace"], "--from", "judges")
    assert third["status"] == "ok" and [a["model"] for a in third["answers"]] == ["alpha", "beta"] * 2
    replayed = [e for e in endpoint.starts() if e["run"] != endpoint.starts()[0]["run"] and e["phase"] == "rebuttal"]
    assert len(replayed) == 4
    assert all(json.loads(e["body"])["model"] == slot_model(e["agent"]) for e in replayed)


# --- item 18: the library's argument errors -------------------------------------------------------


@pytest.mark.parametrize("arguments, error, words", [
    ({"question": b"What is 17 * 23?"}, TypeError, "question: expected a str, got bytes"),
    ({"config": {"num_workers": 3}}, TypeError, "config: expected a moa_pipeline.Config or None, got dict"),
    ({"num_workers": 3.0}, TypeError, "num_workers=3.0: expected a whole number, got float"),
    ({"num_judges": True}, TypeError, "num_judges=True: expected a whole number, got bool"),
    ({"rounds": [2]}, TypeError, "rounds=[2]: expected a whole number, got list"),
    ({"temperature": {"t": 1}}, TypeError, "temperature={'t': 1}: expected a number, got dict"),
    ({"stream": 1}, TypeError, "stream=1: expected True or False, got int"),
    ({"model_name": ["a", "b"]}, TypeError, "model_name=['a', 'b']: expected a string, got list"),
    ({"num_workers": 0}, moa.ConfigError, "num_workers=0 is not valid for NUM_WORKERS: expected a whole number from 1 to 64"),
    ({"temperature": 2.5}, moa.ConfigError, "temperature=2.5 is not valid for TEMPERATURE: expected a number from 0 to 2"),
    ({"max_tokens": "many"}, moa.ConfigError, "max_tokens='many' is not valid for MAX_TOKENS"),
], ids=["bytes-question", "dict-config", "float-workers", "bool-judges", "list-rounds", "dict-temperature",
        "int-stream", "list-model", "zero-workers", "hot-temperature", "word-max-tokens"])
@respx.mock
def test_a_wrong_argument_names_itself_and_what_it_takes(arguments, error, words, tmp_path) -> None:
    """A value of the wrong Python type is a TypeError, one out of range a ConfigError; each names
    the argument and what it accepts (never "(flag)"), before any file is made or request sent."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    question = arguments.pop("question", QUESTION)
    with pytest.raises(error) as caught:
        asyncio.run(moa.debate(question, **arguments))
    assert str(caught.value).startswith(words)
    assert type(caught.value) is error and "(flag)" not in str(caught.value)
    assert route.call_count == 0 and not (tmp_path / "logs").exists()


@respx.mock
def test_a_config_built_by_hand_names_its_bad_field_and_hides_secrets() -> None:
    """A bad Config field is named as config.<field>; a key of the wrong type is not echoed."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    with pytest.raises(moa.ConfigError, match=r"^config.num_workers=0 is not valid for NUM_WORKERS: expected"):
        asyncio.run(moa.debate(QUESTION, config=moa.Config(URL, FAKE_KEY, num_workers=0)))
    with pytest.raises(TypeError) as caught:
        asyncio.run(moa.debate(QUESTION, api_key=12345678901234))
    assert str(caught.value) == "api_key=***: expected a string, got int"
    assert route.call_count == 0
    result = asyncio.run(moa.debate(QUESTION, num_workers="3", num_judges=1, temperature=1, stream=False))
    sent = [c.request.headers["X-MoA-Phase"] for c in route.calls]
    assert result.status == "ok" and (sent.count("generate"), sent.count("judge")) == (3, 1), \
        "text, an int for a number and a bool are all still taken"


def attempt_line(**changes: object) -> dict:
    """An attempt line as the trace writes it, with ``changes`` (None: the key left out)."""
    line = {"type": "attempt", "pass": 1, "debate_round": 1, "phase": "generate", "agent": "solver-2",
            "model": "m", "outcome": "ok", "response_text": "<answer>391</answer>"}
    return {k: v for k, v in (line | changes).items() if v is not None}


@pytest.mark.parametrize("line, problem", [
    (attempt_line(agent="solver-65"), "names an agent this tool never uses"),
    (attempt_line(agent="solver-1->solver-2"), "names an agent this tool never uses"),  # a critic, not a critique
    (attempt_line(phase="critique"), "names an agent this tool never uses"),  # a critique names its critic
    (attempt_line(debate_round=0), "has a debate_round that is not 1-10"),
    (attempt_line(debate_round=True), "has a debate_round that is not 1-10"),
    (attempt_line(phase="vote"), "is not an attempt record of this tool"),
    (attempt_line(outcome=None), "is not an attempt record of this tool"),
    (attempt_line(agent="solver-2 "), "is not an attempt record of this tool"),
], ids=["slot-out-of-range", "critic-outside-critique", "critique-without-critic", "round-0", "round-bool",
        "unknown-phase", "no-outcome", "agent-with-space"])
def test_a_malformed_attempt_line_says_what_is_wrong(line: dict, problem: str) -> None:
    """parsing.trace_attempt refuses a line no run of this tool writes, saying which part is wrong."""
    with pytest.raises(ValueError, match=problem):
        parsing.trace_attempt(line, moa.PHASES, moa.MAX_WORKERS, moa.MAX_ROUNDS)


@pytest.mark.parametrize("line, slot, ok", [
    (attempt_line(), 1, True),
    (attempt_line(agent="solver-3->solver-1", phase="critique", outcome="HTTP 500: busy"), 0, False),
    ({k: v for k, v in attempt_line(round=2).items() if k != "pass"}, 1, True),  # an older trace's "round"
], ids=["solver", "critique-of-solver-1", "older-trace"])
def test_a_solver_attempt_line_is_read(line: dict, slot: int, ok: bool) -> None:
    """A solver's attempt line gives its slot (the critiqued one for a critique) and whether it succeeded."""
    attempt = parsing.trace_attempt(line, moa.PHASES, moa.MAX_WORKERS, moa.MAX_ROUNDS)
    assert attempt is not None and (attempt.slot, attempt.ok) == (slot, ok)


@pytest.mark.parametrize("agent", ["judge-1", "synthesizer"])
def test_a_judge_attempt_line_is_about_no_solver(agent: str) -> None:
    """Judges' and the synthesizer's attempts are read as None: a replay rebuilds solvers' lines only."""
    assert parsing.trace_attempt(attempt_line(agent=agent, phase="judge"), moa.PHASES, moa.MAX_WORKERS, 10) is None

