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
                               "cached_tokens": 0, "estimated": False, "cost_source": "prices", "cache_hits": 0,
                               "cost_usd": pytest.approx(1800 * 2e-6 + 180 * 10e-6)}
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
        assert body["messages"][0 if record["phase"] == "judge" else -1]["content"].endswith(f"\n\n#{record['nonce']}")
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


# --- cached tokens and the endpoint's own charge (issue 25) -------------------------------------------------------

FORMS = [  # (usage object, top-level extras, headers, cached tokens, endpoint's charge) as each endpoint sends them
    pytest.param({"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 768}},
                 {}, {}, 768, None, id="openai"),
    pytest.param({"prompt_tokens": 1000, "completion_tokens": 10, "cache_read_input_tokens": 900,
                  "cache_creation_input_tokens": 0}, {}, {}, 900, None, id="anthropic-style-gateway"),
    pytest.param({"prompt_tokens": 1000, "completion_tokens": 10, "prompt_cache_hit_tokens": 640,
                  "prompt_cache_miss_tokens": 360}, {}, {}, 640, None, id="deepseek"),
    pytest.param({"prompt_tokens": 1000, "completion_tokens": 10}, {"timings": {"cache_n": 988, "prompt_n": 12}}, {},
                 988, None, id="llama-cpp"),
    pytest.param({"prompt_tokens": 1000, "completion_tokens": 10, "cost": 0.0021}, {}, {}, 0, 0.0021,
                 id="openrouter-cost"),
    pytest.param({"prompt_tokens": 1000, "completion_tokens": 10}, {}, {"x-litellm-response-cost": "0.0017"}, 0,
                 0.0017, id="litellm-header"),
]


def sse(usage: dict, top: dict) -> bytes:
    """A stream as OpenAI-compatible servers send it with include_usage: text, finish, then usage (and timings)."""
    events = [{"choices": [{"index": 0, "delta": {"content": solver_text("391")}}], "usage": None},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
              {"choices": [], "usage": usage, **top}]
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"


@pytest.mark.parametrize("usage, top, headers, cached, charged", FORMS)
async def test_each_reported_form_reaches_the_completion(usage, top, headers, cached, charged) -> None:
    """A plain reply and a streamed one both carry the cached prompt tokens and the charge the endpoint reported."""
    plain = completion(solver_text("391"))
    body = json.loads(plain.content) | {"usage": usage, **top}
    read = moa.read_completion(200, httpx.Headers(headers), json.dumps(body).encode())
    streamed = await moa.read_stream(httpx.Response(200, stream=httpx.ByteStream(sse(usage, top)), headers=headers),
                                     1 << 20)
    for reply in (read, streamed):
        assert (reply.usage, reply.cached_tokens, reply.endpoint_cost_usd) == (
            {"prompt_tokens": 1000, "completion_tokens": 10}, cached, charged)


def test_a_reply_without_counts_has_its_cached_tokens_clamped_to_the_estimate() -> None:
    """No usage counts (so the prompt is estimated), and a cached count larger than the estimate: clamped to it."""
    attempt = moa.Attempt(1, "n", 0.0)
    moa.record_reply(attempt, moa.Completion("<answer>391</answer>", "stop", 200, None, cached_tokens=5000), 120)
    assert (attempt.prompt_tokens, attempt.cached_tokens, attempt.usage_estimated) == (120, 120, True)


def priced(**prices: float) -> moa.Config:
    return moa.Config(proxy_url=URL, api_key=FAKE_KEY, **{f"price_{k}_per_mtok": v for k, v in prices.items()})


@pytest.mark.parametrize("config, expected", [
    pytest.param(priced(), None, id="no-price-no-cost"),
    pytest.param(priced(input=2, output=10), (1_000_000 * 2 + 100_000 * 10) / 1e6, id="cached-at-the-input-price"),
    pytest.param(priced(input=2, output=10, cached_input=0.5), (400_000 * 2 + 600_000 * 0.5 + 100_000 * 10) / 1e6,
                 id="cached-at-its-own-price"),
    pytest.param(priced(input=2, cached_input=0), 400_000 * 2 / 1e6, id="cached-free-output-unset"),
    pytest.param(priced(cached_input=0.5), None, id="only-the-cached-price-set-prices-nothing"),
])
def test_cached_prompt_tokens_are_priced_at_the_cached_price(config: moa.Config, expected: float | None) -> None:
    """1M prompt tokens (600k of them cached) and 100k completion tokens, at each set of prices."""
    assert moa.cost_usd(1_000_000, 100_000, config, cached_tokens=600_000) == expected


def attempts(*charges: float | None, tokens: int = 110) -> list[moa.AgentCall]:
    """One call whose attempts each billed ``tokens`` (100 prompt, 40 of them cached) and had this charge said."""
    made = [moa.Attempt(n, "n", 0.0, status=200, prompt_tokens=100, completion_tokens=tokens - 100,
                        cached_tokens=40, endpoint_cost_usd=c) for n, c in enumerate(charges, 1)]
    return [moa.AgentCall(1, moa.Phase.JUDGE, "judge-1", "s", "u", attempts=made)]


OURS = (60 * 2 + 40 * 1 + 10 * 10) / 1e6  # one attempt at PRICE_INPUT 2, PRICE_CACHED_INPUT 1, PRICE_OUTPUT 10


@pytest.mark.parametrize("calls, config, cost, source, said", [
    pytest.param(attempts(0.003, 0.002), priced(input=2, cached_input=1, output=10), 0.005, "endpoint", 0.005,
                 id="all-said-endpoint-preferred"),
    pytest.param(attempts(0.003, 0.002), priced(), 0.005, "endpoint", 0.005, id="all-said-no-price-needed"),
    pytest.param(attempts(0.003, None), priced(input=2, cached_input=1, output=10), 0.003 + OURS, "mixed", 0.003,
                 id="some-said-ours-elsewhere"),
    pytest.param(attempts(0.003, None), priced(), None, None, 0.003, id="some-said-no-price-no-cost"),
    pytest.param(attempts(None, None), priced(input=2, cached_input=1, output=10), 2 * OURS, "prices", None,
                 id="none-said-at-your-prices"),
    pytest.param(attempts(None, None), priced(), None, None, None, id="none-said-no-price-no-cost"),
    pytest.param(attempts(0.003, None, tokens=0) + attempts(None, tokens=0), priced(input=2), 0.003, "endpoint",
                 0.003, id="an-unanswered-attempt-bills-nothing-to-price"),
])
def test_cost_prefers_what_the_endpoint_said(calls, config, cost, source, said) -> None:
    """cost_usd: the endpoint's charge for each reply that said one, ours for the rest; cost_source says whose."""
    usage = moa.usage_totals(calls, config)
    assert (usage.get("cost_usd"), usage.get("cost_source"), usage.get("endpoint_cost_usd")) == (
        pytest.approx(cost) if cost is not None else None, source, said)
    assert usage["cached_tokens"] == 40 * sum(len(c.attempts) for c in calls)


class CachingModel(FakeModel):
    """Every reply reports 1000 prompt tokens, 600 of them cached (OpenAI's form), and 10 completion tokens;
    ``charge``: what the endpoint says it charged, in the phases named (OpenRouter's usage.cost)."""

    def __init__(self, charge: float | None = None, phases: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.charge, self.phases = charge, phases

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(super().__call__(request).content)
        body["usage"] = {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
                         "prompt_tokens_details": {"cached_tokens": 600}}
        if request.headers["X-MoA-Phase"] in self.phases:
            body["usage"]["cost"] = self.charge
        return httpx.Response(200, json=body)


@pytest.mark.parametrize("model, prices, cost, source, endpoint", [
    pytest.param(CachingModel(), {"INPUT": "2", "CACHED_INPUT": "0.5", "OUTPUT": "10"},
                 18 * (400 * 2 + 600 * 0.5 + 10 * 10) / 1e6, "prices", None, id="at-your-prices"),
    pytest.param(CachingModel(), {"INPUT": "2", "OUTPUT": "10"}, 18 * (1000 * 2 + 10 * 10) / 1e6, "prices", None,
                 id="cached-price-unset-is-the-input-price"),
    pytest.param(CachingModel(0.001, tuple(moa.PHASES)), {"INPUT": "2"}, 0.018, "endpoint", 0.018,
                 id="the-endpoint-said-for-every-reply"),
    pytest.param(CachingModel(0.001, ("judge",)), {"INPUT": "2", "OUTPUT": "10"},
                 0.003 + 15 * (1000 * 2 + 10 * 10) / 1e6, "mixed", 0.003, id="the-endpoint-said-for-the-judges"),
])
@respx.mock
def test_a_run_counts_cached_tokens_and_says_whose_cost(model, prices, cost, source, endpoint, capsys,
                                                        monkeypatch) -> None:
    """End to end: --json usage has the cached tokens and the cost with its source, the trace each attempt's."""
    for name, value in prices.items():
        monkeypatch.setenv(f"PRICE_{name}_PER_MTOK", value)
    respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["usage"]["cached_tokens"] == 18 * 600
    assert result["usage_by_phase"]["judge"]["cached_tokens"] == 3 * 600
    assert (result["cost_usd"], result["usage"]["cost_source"], result["usage"].get("endpoint_cost_usd")) == (
        pytest.approx(cost), source, pytest.approx(endpoint) if endpoint else None)
    traced = [json.loads(line) for line in Path(result["trace"]).read_text().splitlines()]
    usages = [r["usage"] for r in traced if r["type"] == "attempt"]
    assert {(u["cached_tokens"], u["endpoint_cost_usd"]) for u in usages if u} >= {(600, model.charge)}
    transcript = Path(result["transcript"]).read_text()
    assert f"total: 18000 prompt (10800 cached) + 180 completion = 18180 tokens, ${cost:.6f} (" in transcript


@respx.mock
def test_the_summaries_say_whose_figure_a_cost_is(capsys, monkeypatch, tmp_path) -> None:
    """The human summary, the batch summary and the eval table say a cost is the endpoint's own or ours."""
    respx.post(URL).mock(side_effect=CachingModel(0.001, tuple(moa.PHASES)))
    assert moa.main(["-q", "Q?"], runtime=test_runtime()) == 0
    assert "18180 tokens (10800 prompt tokens cached), $0.0180 (the endpoint's own)," in capsys.readouterr().out
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Q?"}\n{"id": "b", "question": "Q?"}\n')
    monkeypatch.setenv("PRICE_INPUT_PER_MTOK", "1")
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "out.jsonl")], runtime=test_runtime()) == 0
    printed = capsys.readouterr().out
    assert "36360 tokens (21600 prompt tokens cached), $0.0360 (the endpoint's own)," in printed
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())["this_run"]
    assert (summary["cached_tokens"], summary["cost_usd"], summary["cost_source"]) == (21600, 0.036, "endpoint")
    ours = {"status": "ok", "correct": True, "usage": {"total_tokens": 10, "cost_source": "prices"}, "cost_usd": 0.002}
    row = moa.strategy_score("debate", {"a": ours, "b": ours | {"usage": {"cost_source": "endpoint"}}})
    assert row["cost_source"] == "mixed" and row["cost_usd_per_question"] == 0.002
    report = {"gold": "g", "questions": 2, "strategies": [row], "conclusion": ""}
    assert "| $0.0020 (the endpoint's own where it said, else at your prices) |" in moa.markdown_report(report, "m")


# --- hostile usage bodies (issue 25, attack on the cost code) ------------------------------------------------------

class HostileUsageModel(FakeModel):
    """Every reply's usage object carries ``extra`` beside 1000 prompt and 10 completion tokens, the body written
    as raw JSON text so that numbers no Python float holds (a 400-digit integer) reach the reader as sent."""

    def __init__(self, extra: str) -> None:
        super().__init__()
        self.extra = extra

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(super().__call__(request).content)
        body["usage"] = {"prompt_tokens": 1000, "completion_tokens": 10}
        text = json.dumps(body).replace('"completion_tokens": 10}', f'"completion_tokens": 10, {self.extra}}}')
        return httpx.Response(200, content=text.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("extra, cost, source", [
    pytest.param('"cost": 1' + "0" * 400, 18 * 2000 / 1e6, "prices", id="cost-a-400-digit-integer"),
    pytest.param('"cost": 1e400', 18 * 2000 / 1e6, "prices", id="cost-overflowing-to-infinity"),
    pytest.param('"cost": 0.0005', 18 * 0.0005, "endpoint", id="cost-a-plain-number"),
    pytest.param('"cost": 0, "is_byok": true, "cost_details": {"upstream_inference_cost": 0.0005}', 18 * 0.0005,
                 "endpoint", id="openrouter-byok-free-fee-the-own-key-billed"),
])
@respx.mock
def test_a_hostile_charge_is_ignored_not_fatal(extra, cost, source, capsys, monkeypatch) -> None:
    """A charge no float holds is junk: the run answers and prices that reply itself; BYOK's is fee plus upstream."""
    monkeypatch.setenv("PRICE_INPUT_PER_MTOK", "2")
    respx.post(URL).mock(side_effect=HostileUsageModel(extra))
    code, result = run_json(["-q", "Q?"], capsys)
    assert (code, result["final_answer"]) == (0, "391")
    assert (result["cost_usd"], result["usage"]["cost_source"]) == (pytest.approx(cost), source)


@pytest.mark.parametrize("header, retries", [
    pytest.param("2", 2, id="a-count"),
    pytest.param(" 3 ", 3, id="spaces"),
    pytest.param("1001", 0, id="above-the-cap"),
    pytest.param("\u00b2".encode(), 0, id="superscript-two-isdigit-but-not-a-number"),
    pytest.param("9" * 5000, 0, id="past-pythons-int-digit-limit"),
    pytest.param("-1", 0, id="negative"),
])
def test_a_gateways_retry_count_header_is_read_or_left_out(header: str | bytes, retries: int) -> None:
    """x-litellm-attempted-retries beside a billed reply: a small count is kept, anything else is 0, never a crash."""
    reply = moa.read_completion(200, httpx.Headers({"x-litellm-attempted-retries": header}), completion(
        solver_text("391"), usage={"prompt_tokens": 10, "completion_tokens": 2}).content)
    assert (reply.gateway_retries, reply.usage) == (retries, {"prompt_tokens": 10, "completion_tokens": 2})


class PartlyChargedModel(CachingModel):
    """Says what it charged (usage.cost, $0.001) for every reply except the judges' of the question ``unsaid``."""

    def __init__(self, unsaid: str) -> None:
        super().__init__(0.001, tuple(moa.PHASES))
        self.unsaid = unsaid

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = super().__call__(request)
        if request.headers["X-MoA-Phase"] == "judge" and self.unsaid in request.content.decode():
            body = json.loads(response.content)
            del body["usage"]["cost"]
            return httpx.Response(200, json=body)
        return response


@pytest.mark.parametrize("unsaid, cost, source, uncosted", [
    pytest.param("no such question", 0.036, "endpoint", 0, id="every-reply-said-the-sum-is-whole"),
    pytest.param("Second question", None, None, 1, id="one-question-unpriced-no-partial-sum"),
])
@respx.mock
def test_a_batch_cost_is_a_sum_over_every_billed_question_or_none(unsaid, cost, source, uncosted, capsys,
                                                                   tmp_path) -> None:
    """No prices set: a question whose judges' charge went unsaid has no cost, so the batch has no total either
    (a sum of the others, shown as the endpoint's own figure, would understate), and says how many lack one."""
    respx.post(URL).mock(side_effect=PartlyChargedModel(unsaid))
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "First question?"}\n{"id": "b", "question": "Second question?"}\n')
    assert moa.main(["-f", str(questions), "-o", str(tmp_path / "out.jsonl")], runtime=test_runtime()) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())["this_run"]
    assert (summary["cost_usd"], summary["cost_source"], summary["uncosted"]) == (cost, source, uncosted)
    assert ("$0.0" in printed) == (cost is not None)


@pytest.mark.parametrize("prices, shown", [
    pytest.param({"CACHED_INPUT": "0.5"}, "(set PRICE_INPUT_PER_MTOK / PRICE_OUTPUT_PER_MTOK for a cost)",
                 id="only-the-cached-price-no-cost"),
    pytest.param({"INPUT": "1", "CACHED_INPUT": "0.5"}, " (at your prices)", id="with-the-input-price-a-cost"),
])
def test_a_cached_price_alone_is_no_price(prices, shown, capsys, monkeypatch) -> None:
    """The dry run assumes nothing cached: PRICE_CACHED_INPUT_PER_MTOK alone must not show a $0.0000 worst case."""
    for name, value in prices.items():
        monkeypatch.setenv(f"PRICE_{name}_PER_MTOK", value)
    assert moa.main(["-q", "Q?", "--dry-run"]) == 0
    worst = capsys.readouterr().out.splitlines()[-1]
    assert worst.startswith("Worst case: ") and worst.endswith(shown) and "$0.0000" not in worst


def billed(text: str, n: int, cost: float | None, status: int = 200) -> httpx.Response:
    """A reply of ``text`` billing 1000+7n prompt tokens (600 cached, OpenAI's form), 20+n completion, and ``cost``."""
    body = json.loads(completion(text).content)
    body["usage"] = {"prompt_tokens": 1000 + 7 * n, "completion_tokens": 20 + n,
                     "prompt_tokens_details": {"cached_tokens": 600}} | ({"cost": cost} if cost is not None else {})
    return httpx.Response(status, json=body)


@respx.mock
def test_one_record_adds_up_in_every_view(capsys, monkeypatch) -> None:
    """Retries that billed (an empty solver reply), a rerun, charges said by some phases only: the phases add
    up to the total, the trace's attempts add up to it too, and the cost is the endpoint's plus ours (mixed)."""
    for name, value in {"INPUT": "1.3", "CACHED_INPUT": "0.13", "OUTPUT": "7.7"}.items():
        monkeypatch.setenv(f"PRICE_{name}_PER_MTOK", value)
    model = FakeModel(confidence=20, overrides={
        "generate": lambda r, n: billed("" if n % 4 == 0 else solver_text("391"), n, 0.00123 * (n % 2)
                                        if n % 4 else None),
        "critique": lambda r, n: billed("<critique>I recomputed it; the answer holds.</critique>", n, None),
        "judge": lambda r, n: billed(judge_text("391", 20), n, 0.000417),
    })
    respx.post(URL).mock(side_effect=model)
    code, result = run_json(["-q", "Q?"], capsys)
    assert code == 0 and result["rerun"] is True and result["http_requests"] > result["llm_calls"]
    total, phases = result["usage"], [u for u in result["usage_by_phase"].values()]
    attempts = [json.loads(line) for line in Path(result["trace"]).read_text().splitlines()]
    attempts = [a["usage"] for a in attempts if a["type"] == "attempt"]
    for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
        assert total[key] == sum(u[key] for u in phases) == sum(a[key] for a in attempts) > 0, key
    said = [a["endpoint_cost_usd"] for a in attempts if a["endpoint_cost_usd"] is not None]
    assert total["endpoint_cost_usd"] == pytest.approx(sum(said)) == pytest.approx(
        sum(u.get("endpoint_cost_usd", 0) for u in phases))
    assert total["cost_source"] == "mixed" and result["cost_usd"] == total["cost_usd"]
    assert total["cost_usd"] == pytest.approx(sum(u.get("cost_usd", 0) for u in phases), abs=1e-6 * len(phases))


OLD = {"status": "ok", "correct": True, "usage": {"total_tokens": 10}, "cost_usd": 0.002}  # before cost_source


@pytest.mark.parametrize("rows, source", [
    pytest.param([OLD, OLD], "prices", id="old-lines-were-at-your-prices"),
    pytest.param([OLD, OLD | {"usage": {"cost_source": "endpoint"}}], "mixed", id="resumed-across-versions"),
    pytest.param([OLD | {"cost_usd": None}, OLD | {"usage": {"cost_source": "endpoint"}}], "endpoint",
                 id="a-line-without-a-cost-says-nothing"),
])
def test_an_older_results_line_with_a_cost_was_at_your_prices(rows, source) -> None:
    """A line written before cost_source existed had only your prices for a cost: --eval says so, not the others'."""
    row = moa.strategy_score("debate", {str(n): r for n, r in enumerate(rows)})
    assert row["cost_source"] == source


@pytest.mark.parametrize("model, cached", [
    pytest.param(CachingModel(), 18 * 600, id="openai-form-cached"),
    pytest.param(UsageModel(), 0, id="nothing-cached"),
])
@respx.mock
def test_an_openai_batch_line_says_its_cached_tokens(model, cached, tmp_path) -> None:
    """--output-format openai-batch: the body's usage has prompt_tokens_details.cached_tokens as OpenAI's does, the
    same count as the moa record's, so a reader that prices the body alone does not price cached tokens in full."""
    respx.post(URL).mock(side_effect=model)
    (tmp_path / "q.jsonl").write_text('{"id": "a", "question": "What is 17 * 23?"}\n')
    out = tmp_path / "out.jsonl"
    assert moa.main(["-f", str(tmp_path / "q.jsonl"), "-o", str(out), "--output-format", "openai-batch"],
                    runtime=test_runtime()) == 0
    line = json.loads(out.read_text())
    usage = line["response"]["body"]["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": cached} and line["moa"]["usage"]["cached_tokens"] == cached
