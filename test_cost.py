"""Usage and cost accounting, budgets, the JSONL trace, request tagging, dry run and replay."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, body_of, completion, judge_text, phases_of, solver_text, test_runtime

pytestmark = pytest.mark.usefixtures("endpoint_env")
GATEWAY_TOKEN = "gw-token-SECRET-abcdef123456"


def run_json(argv: list[str], capsys, runtime: moa.Runtime | None = None) -> tuple[int, dict]:
    code = moa.main([*argv, "--json"], runtime=runtime or test_runtime())
    return code, json.loads(capsys.readouterr().out)


def with_usage(response: httpx.Response, prompt: int, done: int) -> httpx.Response:
    body = json.loads(response.content)
    body["usage"] = {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
    return httpx.Response(response.status_code, json=body, headers={"cf-aig-cache-status": "MISS"})


class UsageModel(FakeModel):
    """Every reply reports 100 prompt and 10 completion tokens."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = super().__call__(request)
        return with_usage(response, 100, 10) if response.status_code == 200 else response


# --- usage and cost ------------------------------------------------------------------


@respx.mock
def test_usage_is_summed_from_usage_blocks(capsys, monkeypatch) -> None:
    """Reported usage is summed per phase and per run, and priced when prices are set."""
    monkeypatch.setenv("PRICE_INPUT_PER_MTOK", "2")
    monkeypatch.setenv("PRICE_OUTPUT_PER_MTOK", "10")
    respx.post(URL).mock(side_effect=UsageModel())
    code, result = run_json(["-q", "Q?"], capsys)
    assert result["usage"] == {"prompt_tokens": 1800, "completion_tokens": 180, "total_tokens": 1980,
                               "estimated": False, "cache_hits": 0, "cost_usd": pytest.approx(1800 * 2e-6 + 180 * 10e-6)}
    assert result["cost_usd"] == pytest.approx(0.0054)
    assert result["usage_by_phase"]["judge"]["total_tokens"] == 3 * 110
    transcript = Path(result["transcript"]).read_text()
    assert "=== Usage ===" in transcript and "total: 1800 prompt + 180 completion = 1980 tokens" in transcript
    assert "cache MISS" in transcript


class StreamingModel(FakeModel):
    """FakeModel's replies as server-sent events through a caching gateway."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = super().__call__(request)
        text = json.loads(response.content)["choices"][0]["message"]["content"]
        chunk = {"choices": [{"delta": {"content": text}, "finish_reason": "stop"}]}
        events = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, content=events.encode(), headers={"Content-Type": "text/event-stream",
                                                                   "cf-aig-cache-status": "HIT"})


@respx.mock
def test_cache_status_is_kept_for_streamed_replies(capsys, monkeypatch) -> None:
    """A gateway's cache status is recorded for a streamed reply as for a plain one."""
    monkeypatch.setenv("STREAM", "true")
    respx.post(URL).mock(side_effect=StreamingModel())
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and "cache HIT" in Path(result["transcript"]).read_text()


@respx.mock
def test_usage_is_estimated_and_marked_when_absent(capsys) -> None:
    """Without usage blocks, counts are estimated from the text and marked estimated; no price, no cost."""
    respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "Q?"], capsys)
    assert result["usage"]["estimated"] is True and result["usage"]["total_tokens"] > 0
    assert result["cost_usd"] is None and "cost_usd" not in result["usage"]


@respx.mock
def test_failed_attempts_without_a_body_cost_no_tokens(capsys) -> None:
    """A 500 bills nothing: only completed responses count."""
    sent = {"n": 0}

    def generate(request: httpx.Request, n: int) -> httpx.Response:
        sent["n"] += 1
        return httpx.Response(500) if sent["n"] == 1 else with_usage(completion(solver_text("391")), 100, 10)

    respx.post(URL).mock(side_effect=UsageModel(overrides={"generate": generate}))
    code, result = run_json(["-q", "Q?"], capsys)
    assert result["http_requests"] == 19 and result["usage"]["total_tokens"] == 18 * 110


def test_estimate_is_high_for_english_and_cjk() -> None:
    """The estimate (bytes / 3) is above the usual 4 characters a token and 1 CJK character a token."""
    assert moa.estimate_tokens("a" * 400) >= 100
    assert moa.estimate_tokens("漢" * 100) >= 100


# --- budgets -------------------------------------------------------------------------------


def test_planner_degrades_rebuttals_then_critiques_then_judges() -> None:
    """With less and less money: first rebuttals go, then critiques, then judges."""
    def plan(calls: int) -> tuple[int, int, int]:
        found = moa.plan_debate(moa.Budget(max_calls=calls), 5, 3, True, 1, 1, lambda c, r: 1)
        return found.critiques, found.rebuttals, found.judges

    assert plan(13) == (5, 5, 3)
    assert plan(12) == (5, 4, 3)
    assert plan(8) == (5, 0, 3)
    assert plan(5) == (2, 0, 3)
    assert plan(3) == (0, 0, 3)
    assert plan(2) == (0, 0, 2)
    assert plan(1) == (0, 0, 1)


def test_planner_counts_judge_tokens_that_grow_with_the_debate() -> None:
    """A judge must read every critique and rebuttal: its worst case grows with them."""
    budget = moa.Budget(max_tokens=1000)
    found = moa.plan_debate(budget, 5, 1, True, 50, 50, lambda c, r: 100 + 100 * (c + r))
    cost = 50 * found.critiques + 50 * found.rebuttals + 100 + 100 * (found.critiques + found.rebuttals)
    assert cost <= 1000 and found.judges == 1 and (found.critiques, found.rebuttals) == (5, 1)
    tighter = moa.plan_debate(moa.Budget(max_tokens=999), 5, 1, True, 50, 50, lambda c, r: 100 + 100 * (c + r))
    assert (tighter.critiques, tighter.rebuttals) == (5, 0)


def test_budget_reserve_respects_the_floor() -> None:
    """A reservation may not dip into what later phases keep back."""
    budget = moa.Budget(max_calls=4)
    budget.floor_calls = 3
    assert budget.reserve(0) is True
    assert budget.reserve(0) is False
    budget.floor_calls = 0
    assert budget.reserve(0) and budget.reserve(0) and budget.reserve(0)
    assert budget.reserve(0) is False and budget.calls == 4


@respx.mock
def test_max_calls_8_gives_a_verdict_within_8_requests(capsys) -> None:
    """5 workers, 3 judges, --max-calls 8: solvers and judges run, critiques and rebuttals are skipped and said."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "Q?", "--max-calls", "8"], capsys)
    assert code == 0 and result["final_answer"] == "391"
    assert route.call_count == 8 and phases_of(route).count("judge") == 3
    assert result["budget_limited"] is True
    assert result["skipped"] == ["pass 1: 5 critique(s)", "pass 1: 5 rebuttal(s)"]


@pytest.mark.parametrize("max_calls", [6, 7, 9, 12, 15, 20, 30, 41])
@respx.mock
def test_budget_is_never_exceeded_under_retries_and_rerun(max_calls: int, capsys, monkeypatch) -> None:
    """Whatever the limit, with failing attempts and a low-confidence rerun, requests never exceed MAX_CALLS."""
    monkeypatch.setenv("MAX_RETRIES", "3")

    def flaky(request: httpx.Request, n: int, text: str) -> httpx.Response:
        return httpx.Response(503) if n % 3 == 0 else completion(text)

    model = FakeModel(confidence=20, overrides={
        "generate": lambda r, n: flaky(r, n, solver_text("391")),
        "critique": lambda r, n: flaky(r, n, "<critique>fine</critique>"),
        "judge": lambda r, n: flaky(r, n, judge_text("391", 20)),
    })
    route = respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?", "--max-calls", str(max_calls)], capsys)
    assert route.call_count <= max_calls
    assert result["status"] == "ok", result["error"]
    assert result["budget_limited"] is True


@respx.mock
def test_token_budget_is_never_exceeded(capsys, monkeypatch) -> None:
    """Reported usage stays within MAX_TOTAL_TOKENS; reservations are settled to actual usage."""
    monkeypatch.setenv("MAX_TOKENS", "200")
    monkeypatch.setenv("JUDGE_MAX_TOKENS", "200")
    respx.post(URL).mock(side_effect=UsageModel())
    code, result = run_json(["-q", "Q?", "--max-tokens", "3000"], capsys)
    assert code == 0 and result["usage"]["total_tokens"] <= 3000
    assert result["budget_limited"] is True


def longest_position(cap: int) -> moa.Position:
    """A solver line whose every completion (answer, critique, rebuttal) is MAX_TOKENS=cap long by our estimate."""
    text = 3 * cap  # estimate_tokens counts one token per 3 bytes
    return moa.Position(0, answer="a" * 30, reasoning="r" * (text - 30), critique="c" * text,
                        rebuttal="b" * (text - 30), final_answer="a" * 30)


def test_worst_case_costs_bound_the_longest_prompts() -> None:
    """The worst case priced before any answer exists is at least the prompt of the longest possible replies."""
    config = moa.Config(URL, FAKE_KEY, max_tokens=60, num_workers=5)
    question, longest = "What is 17 * 23?", longest_position(60)
    costs = moa.worst_case_costs(config, question, workers=5)
    prompt = moa.prompt_tokens_estimate
    assert prompt(*moa.critic_prompts(question, longest)) <= costs.critic
    assert prompt(*moa.rebuttal_prompts(question, longest)) <= costs.rebuttal
    assert prompt(*moa.judge_prompts(question, [longest] * 5)) <= costs.judge(5, 5)
    assert max(prompt(*moa.solver_prompts(question, slot, True)) for slot in range(5)) <= costs.solver


def test_rerun_check_prices_the_rerun_as_dry_run_does() -> None:
    """A budget of exactly the dry run's rerun tokens pays for the rerun; one token less does not."""
    config = moa.Config(URL, FAKE_KEY, max_tokens=60)
    question = "What is 17 * 23?"
    tokens = sum(row.total_tokens for row in moa.dry_run(config, question).phases if row.pass_label == "rerun")

    def affordable(max_tokens: int) -> bool:
        debate = SimpleNamespace(config=config, budget=moa.Budget(max_tokens=max_tokens), pass_number=1, replaying=False)
        return debate.budget.fits(*moa.rerun_price(debate, question))  # type: ignore[arg-type]

    assert affordable(tokens) and not affordable(tokens - 1)


@respx.mock
def test_rerun_is_skipped_first_when_budget_is_short(capsys) -> None:
    """A low-confidence verdict whose rerun the budget cannot pay for is kept, and the skip is said."""
    route = respx.post(URL).mock(side_effect=FakeModel(confidence=20))
    code, result = run_json(["-q", "Q?", "--max-calls", "25"], capsys)
    assert code == 0 and route.call_count == 18 and result["rerun"] is False
    assert result["skipped"] == ["pass 1: rerun"]


@respx.mock
def test_no_budget_for_any_judge_falls_back_to_solvers(capsys, monkeypatch) -> None:
    """A budget that pays for the solvers only: the verdict is the solvers' majority."""
    monkeypatch.setenv("MIN_JUDGE_CONFIDENCE", "0")
    route = respx.post(URL).mock(side_effect=FakeModel())
    code, result = run_json(["-q", "Q?", "--max-calls", "5"], capsys)
    assert code == 0 and route.call_count == 5
    assert result["verdict_source"] == "solvers" and result["final_answer"] == "391"
    assert "pass 1: 3 judge(s)" in result["skipped"]


@pytest.mark.parametrize("argv, words", [
    (["--max-calls", "1"], "MAX_CALLS=1 cannot pay for MIN_VALID_ANSWERS=2"),
    (["--max-tokens", "5000"], "MAX_TOTAL_TOKENS=5000 cannot pay for MIN_VALID_ANSWERS=2"),
])
@respx.mock
def test_budget_too_small_for_the_solvers_is_exit_2(argv, words, capsys) -> None:
    """A budget that cannot pay for MIN_VALID_ANSWERS solvers is a configuration error before any call."""
    route = respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["-q", "Q?", *argv]) == 2
    assert words in capsys.readouterr().err and route.call_count == 0


# --- the JSONL trace and request tags ------------------------------------------------------


@respx.mock
def test_trace_round_trips_every_attempt(capsys, monkeypatch) -> None:
    """The trace has a run object, one object per HTTP attempt with the exact messages sent, and a verdict."""
    monkeypatch.setenv("GATEWAY_TOKEN", GATEWAY_TOKEN)
    model = FakeModel(overrides={"judge": lambda r, n: httpx.Response(500) if n == 0 else
                                 completion(judge_text("391", 90))})
    route = respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "What is 17 * 23?"], capsys)
    trace = Path(result["trace"])
    assert trace.with_suffix(".txt") == Path(result["transcript"])
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records[0]["type"] == "run" and records[0]["question"] == "What is 17 * 23?"
    assert records[-1]["type"] == "verdict" and records[-1]["final_answer"] == "391"
    attempts = [r for r in records if r["type"] == "attempt"]
    assert len(attempts) == route.call_count == result["http_requests"] == 19
    def key(headers) -> tuple:
        return headers["X-MoA-Phase"], headers["X-MoA-Agent"], json.loads(headers["cf-aig-metadata"])["attempt"]

    sent = {key(c.request.headers): body_of(c) for c in route.calls}
    assert len(sent) == 19
    for record in attempts:
        body = sent[(record["phase"], record["agent"], record["attempt"])]
        assert record["request"]["messages"] == body["messages"]
        assert record["nonce"] in body["messages"][0]["content"]
        assert record["request"]["temperature"] == body["temperature"]
    failed = [r for r in attempts if r["status"] == 500]
    assert len(failed) == 1 and failed[0]["error"] and failed[0]["retry_in_s"] is not None


@respx.mock
def test_no_secret_in_any_file_or_output(capsys, monkeypatch, tmp_path) -> None:
    """Neither the API key nor the gateway token is in the transcript, trace, stdout or stderr."""
    monkeypatch.setenv("GATEWAY_TOKEN", GATEWAY_TOKEN)
    respx.post(URL).mock(side_effect=FakeModel())
    code = moa.main(["-q", "Q?", "-vv", "--json"], runtime=test_runtime())
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["final_answer"] == "391"
    texts = [captured.out, captured.err] + [p.read_text() for p in (tmp_path / "logs").iterdir()]
    assert len(texts) == 4
    for text in texts:
        assert FAKE_KEY not in text and GATEWAY_TOKEN not in text
    assert "GATEWAY_TOKEN=***" in texts[2] + texts[3]


@respx.mock
def test_trace_can_be_turned_off_and_on_alone(capsys, monkeypatch, tmp_path) -> None:
    """ENABLE_JSONL_TRACE=false writes only the .txt; with file logging off and the trace on, only the .jsonl."""
    respx.post(URL).mock(side_effect=FakeModel())
    monkeypatch.setenv("ENABLE_JSONL_TRACE", "false")
    code, result = run_json(["-q", "Q?"], capsys)
    assert result["trace"] is None and result["transcript"]
    monkeypatch.setenv("ENABLE_JSONL_TRACE", "true")
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")
    code, result = run_json(["-q", "Q?"], capsys)
    assert result["transcript"] is None and Path(result["trace"]).is_file()
    assert sorted(p.suffix for p in (tmp_path / "logs").iterdir()) == [".jsonl", ".txt"]


@respx.mock
def test_every_request_is_tagged(capsys, monkeypatch) -> None:
    """Run id, phase and agent headers, cf-aig-metadata (five entries at most) and the gateway token on every request."""
    monkeypatch.setenv("GATEWAY_TOKEN", GATEWAY_TOKEN)
    route = respx.post(URL).mock(side_effect=FakeModel())
    run_json(["-q", "Q?"], capsys)
    run_ids = set()
    for call in route.calls:
        headers = call.request.headers
        run_ids.add(headers["X-MoA-Run-Id"])
        metadata = json.loads(headers["cf-aig-metadata"])
        assert len(metadata) <= 5
        assert metadata == {"run_id": headers["X-MoA-Run-Id"], "phase": headers["X-MoA-Phase"],
                            "agent": headers["X-MoA-Agent"], "attempt": 1}
        assert headers["cf-aig-authorization"] == f"Bearer {GATEWAY_TOKEN}"
    assert len(run_ids) == 1


# --- dry run and replay -------------------------------------------------------------------


@respx.mock
def test_dry_run_sends_nothing_and_prices_the_worst_case(capsys, monkeypatch) -> None:
    """--dry-run prints calls per phase and worst-case tokens and cost, and makes no request."""
    monkeypatch.setenv("PRICE_INPUT_PER_MTOK", "1")
    monkeypatch.setenv("PRICE_OUTPUT_PER_MTOK", "1")
    route = respx.post(url__regex=".*").mock(side_effect=FakeModel())
    code, plan = run_json(["-q", "Q?", "--dry-run"], capsys)
    assert code == 0 and route.call_count == 0
    first = {r["phase"]: r["calls"] for r in plan["phases"] if r["pass"] == "1"}
    assert first == {"generate": 5, "critique": 5, "rebuttal": 5, "judge": 3}
    assert plan["calls_pass_1"] == 18 and plan["calls_with_rerun"] == 18 + 24
    assert plan["worst_case_calls"] == 42 * 5
    assert plan["worst_case_cost_usd"] == pytest.approx(plan["worst_case_tokens"] / 1e6)
    assert moa.main(["-q", "Q?", "--dry-run", "--max-calls", "8"]) == 0
    assert "at most 8 HTTP requests" in capsys.readouterr().out


def traced_run(capsys) -> Path:
    code, result = run_json(["-q", "What is 17 * 23?"], capsys)
    assert code == 0
    return Path(result["trace"])


@respx.mock
def test_replay_from_judges_makes_only_judge_calls(capsys) -> None:
    """--replay TRACE --from judges rebuilds the debate and sends NUM_JUDGES requests, no more."""
    respx.post(URL).mock(side_effect=FakeModel())
    trace = traced_run(capsys)
    route = respx.post(URL).mock(side_effect=FakeModel(answer="391"))
    route.calls.clear()
    code, result = run_json(["--replay", str(trace), "--from", "judges"], capsys)
    assert code == 0 and route.call_count == 3 and set(phases_of(route)) == {"judge"}
    assert result["question"] == "What is 17 * 23?" and result["final_answer"] == "391"
    judge_prompt = body_of(route.calls[0])["messages"][1]["content"]
    assert "The critique agrees." in judge_prompt, "the rebuttals come from the trace"
    assert "replay of" in Path(result["transcript"]).read_text()


@respx.mock
def test_replay_from_critique_reruns_critique_rebuttal_and_judges(capsys) -> None:
    """--from critique keeps the solvers' answers and runs 5 + 5 + 3 calls."""
    respx.post(URL).mock(side_effect=FakeModel())
    trace = traced_run(capsys)
    route = respx.post(URL).mock(side_effect=FakeModel())
    route.calls.clear()
    code, result = run_json(["--replay", str(trace), "--from", "critique"], capsys)
    assert code == 0 and route.call_count == 13 and "generate" not in phases_of(route)


@pytest.mark.parametrize("argv, words", [
    (["--replay", "nope.jsonl", "--from", "judges"], "cannot open it"),
    (["--replay", "TRACE"], "--replay needs --from"),
    (["-q", "Q?", "--from", "judges"], "--from goes with --replay"),
    (["--replay", "NOT_A_TRACE", "--from", "judges"], "not a moa_pipeline trace"),
])
def test_replay_usage_errors(argv, words, capsys, tmp_path) -> None:
    """Bad replay input: one line, exit 2."""
    (tmp_path / "TRACE").write_text('{"type": "run", "question": "Q"}\n')
    (tmp_path / "NOT_A_TRACE").write_text('{"id": "x"}\n')
    assert moa.main(argv) == 2
    assert words in capsys.readouterr().err
