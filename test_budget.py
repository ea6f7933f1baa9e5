"""Token budgets (issue 20, items 7 and 8): an endpoint that bills beyond max_tokens, and the
order in which a short budget degrades the debate. respx, virtual time, small prompts."""
from __future__ import annotations

import ast
import asyncio
import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import (
    FAKE_KEY,
    URL,
    VirtualClock,
    answer_in_virtual_time,
    completion,
    judge_text,
    test_runtime,
)

QUESTION = "What is 17 * 23?"
# Small and quick: 3 solvers that never agree, 2 judges, up to 3 debate rounds.
CONFIG = moa.Config(URL, FAKE_KEY, num_workers=3, num_judges=2, rounds=3, max_tokens=400, judge_max_tokens=400,
                    retry_base_delay=0, straggler_factor=0, enable_file_logging=False)


class Billed:
    """A debate whose solvers never agree and whose judges say ``confidence``. Every reply bills its
    prompt as we estimate it and ``ratio`` x the request's max_tokens of completion when ``ratio`` is
    set (a reasoning model's hidden thinking) with texts as long as max_tokens allows, else a short
    completion of ``spoken`` tokens."""

    def __init__(self, confidence: int = 90, ratio: float | None = None, spoken: int = 30) -> None:
        self.confidence, self.ratio, self.spoken = confidence, ratio, spoken

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        phase, agent = request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]
        prompt = sum(moa.estimate_tokens(m["content"]) for m in body["messages"]) + 2 * moa.MESSAGE_OVERHEAD_TOKENS
        done = int(self.ratio * body["max_tokens"]) if self.ratio else self.spoken
        usage = {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
        said = "Sure" + "." * (3 * body["max_tokens"] - 100 if self.ratio else 0)  # 3 bytes a token, as we estimate
        if phase == "judge":
            return completion(judge_text("391", self.confidence), usage=usage)
        if phase == "critique":
            return completion(f"<critique>{said}</critique>", usage=usage)
        mine = str(389 + int(agent.split("-")[1][0]))  # solver-k answers 389 + k, in every round
        return completion(f"<reasoning>{said}</reasoning><rebuttal>{said}</rebuttal><answer>{mine}</answer>",
                          usage=usage)


async def run_questions(configs: list[moa.Config], model: Billed, shared: bool = False,
                        latency: float = 0.0) -> list[moa.RunRecord]:
    """One question for each config, one after another, through one client; each through a new
    Endpoint, or all through one when ``shared`` (as a batch's questions are). With ``latency``,
    each reply takes that long in virtual time, so a phase's requests are in flight together."""
    clock = VirtualClock()

    async def slow(request: httpx.Request) -> httpx.Response:
        await clock.sleep(latency)
        return model(request)

    driver = asyncio.create_task(clock.drive())
    try:
        with respx.mock:
            respx.post(URL).mock(side_effect=slow if latency else model)
            async with moa.open_client(configs[0]) as client:
                runtime = clock.runtime() if latency else test_runtime()
                endpoint = moa.Endpoint(configs[0], client, runtime)
                return [await moa.answer_question(config, QUESTION, endpoint if shared else
                                                  moa.Endpoint(config, client, runtime), runtime)
                        for config in configs]
    finally:
        driver.cancel()


def billed(result: moa.RunRecord) -> int:
    return sum(a.prompt_tokens + a.completion_tokens for c in result.calls for a in c.attempts)


def ran(result: moa.RunRecord, pass_number: int) -> tuple[int, int, int, int]:
    """(judges, critiques, rebuttals, debate rounds) that answered in one debate (1, or 2: the rerun)."""
    def ok(phase: str) -> int:
        return sum(c.ok for c in result.calls if c.phase == phase and c.pass_number == pass_number)
    steps = {c.debate_round for c in result.calls if c.phase == "revise" and c.pass_number == pass_number and c.ok}
    return ok("judge"), ok("critique"), ok("rebuttal"), 1 + len(steps)


def debate_of(result: moa.RunRecord) -> tuple[int, ...]:
    """What a budget bought, in the order the README gives it: round 1's judges, critiques and
    rebuttals, then the rerun, then round 1's later rounds, then the rerun's own."""
    first, second = ran(result, 1), ran(result, 2)
    return (*first[:3], int(result.rerun), first[3], second[3] if result.rerun else 0)


def full_price(config: moa.Config) -> int:
    return sum(row.total_tokens for row in moa.dry_run(config, QUESTION).phases)


# --- item 8: the order of degradation ----------------------------------------------------------


@pytest.mark.parametrize("confidence", [90, 40], ids=["no-rerun-needed", "rerun-needed"])
def test_more_budget_never_buys_less_debate_and_later_rounds_go_first(confidence: int) -> None:
    """Over a sweep of MAX_TOTAL_TOKENS: what ran never shrinks as the budget grows (ordered as
    judges, critiques, rebuttals, rerun, later rounds), and no later round runs while a judge,
    critique or rebuttal of its debate was cut."""
    lowest, highest = 3 * (moa.worst_case_costs(CONFIG, QUESTION).solver + CONFIG.max_tokens), full_price(CONFIG)
    budgets = range(lowest, highest * 2 // 3, (highest * 2 // 3 - lowest) // 50)
    runs = asyncio.run(run_questions([replace(CONFIG, max_total_tokens=b) for b in budgets], Billed(confidence)))
    for budget, result in zip(budgets, runs, strict=True):
        for pass_number in (1, 2):
            judges, critiques, rebuttals, rounds = ran(result, pass_number)
            valid = sum(c.ok for c in result.calls if c.phase == "generate" and c.pass_number == pass_number)
            if rounds > 1:
                assert (judges, critiques, rebuttals) == (2, valid, valid), f"MAX_TOTAL_TOKENS={budget}: {result.skipped}"
    bought = [debate_of(r) for r in runs]
    for budget, before, after in zip(budgets[1:], bought, bought[1:], strict=False):
        assert after >= before, f"MAX_TOTAL_TOKENS={budget} bought {after}, less than {before} below it"
    assert bought[-1] == (2, 3, 3, int(confidence < 60), 3, 3 if confidence < 60 else 0), "the top pays for all"
    assert bought[0][:3] < (2, 0, 0), "the bottom cannot pay for every judge"


# --- item 7: an endpoint that bills beyond max_tokens -----------------------------------------


@pytest.mark.parametrize("ratio", [3.0, 1.5])
def test_billing_beyond_max_tokens_exceeds_the_cap_by_at_most_the_first_replys_excess(ratio: float) -> None:
    """Every reply bills ratio x its max_tokens (hidden thinking), and a phase's requests are in flight
    together: over a sweep of MAX_TOTAL_TOKENS the total billed stays within the README's promise,
    the cap plus the first reply's excess over its max_tokens."""
    excess = int(ratio * CONFIG.max_tokens) - CONFIG.max_tokens  # the fake bills prompts as we estimate them
    budgets = [*range(1_500, 9_000, 150), 20_000, 40_000]
    runs = asyncio.run(run_questions([replace(CONFIG, max_total_tokens=b) for b in budgets], Billed(40, ratio),
                                     latency=1.0))
    for budget, result in zip(budgets, runs, strict=True):
        assert billed(result) <= budget + excess, f"MAX_TOTAL_TOKENS={budget}"
    assert f"{ratio:.2f}x max_tokens a reply" in runs[-1].notes[0], "the transcript says why plans shrank"
    assert any(r.status == "ok" and r.skipped for r in runs), "the sweep reaches budgets that bind"


def test_a_batch_learns_what_the_endpoint_bills_once() -> None:
    """Questions that share an endpoint (a batch) share what it bills: after the first question, each
    reserves for 3x replies from its first request, which goes with the others, and its cap holds exactly."""
    configs = [replace(CONFIG, max_total_tokens=b) for b in (9_000, *range(3_000, 9_000, 400))]
    first, *later = asyncio.run(run_questions(configs, Billed(90, ratio=3.0), shared=True, latency=1.0))
    assert billed(first) <= 9_000 + 2 * CONFIG.max_tokens
    assert [billed(result) <= config.max_total_tokens for result, config in zip(later, configs[1:], strict=True)] \
        == [True] * len(later)


async def generate_starts(config: moa.Config) -> tuple[moa.RunRecord, list[float]]:
    """A run whose replies each take 1 s of virtual time, and when each solver request started."""
    clock, started = VirtualClock(), []

    async def slow(request: httpx.Request) -> httpx.Response:
        if request.headers["X-MoA-Phase"] == "generate":
            started.append(clock.now)
        await clock.sleep(1.0)
        return Billed(90)(request)

    return await answer_in_virtual_time(config, clock, slow, QUESTION), started


async def test_until_the_first_bill_one_request_is_in_flight() -> None:
    """Under a token budget the first request goes alone; once it is billed the others go together.
    Without a token budget nothing waits."""
    result, started = await generate_starts(replace(CONFIG, max_total_tokens=20_000))
    assert result.status == "ok" and started == [0.0, 1.0, 1.0]
    result, started = await generate_starts(replace(CONFIG, max_calls=40))
    assert result.status == "ok" and started == [0.0, 0.0, 0.0]


# --- the one budget rule (issue 21, item 8) --------------------------------------------------------


def test_fits_counts_what_is_spent_and_what_is_kept_back() -> None:
    """fits: spent + kept back + asked stays within each limit that is set; an unset limit never binds."""
    budget = moa.Budget(max_calls=4, max_tokens=100)
    budget.calls, budget.tokens = 1, 40
    assert budget.fits(3, 60) and not budget.fits(4, 0) and not budget.fits(0, 61)
    with budget.kept_back(2, 50):
        assert budget.fits(1, 10) and not budget.fits(2, 0) and not budget.fits(1, 11)
    assert moa.Budget(max_tokens=10).fits(10**6, 10) and moa.Budget(max_calls=1).fits(1, 10**12)


def test_reserve_and_a_planned_rounds_check_answer_alike_under_a_floor() -> None:
    """Under the same floor, fits for a whole round and reserve for each of its attempts agree."""
    budget = moa.Budget(max_calls=6)
    with budget.kept_back(3, 0):
        assert budget.fits(3, 0) and budget.reserve(0) and budget.reserve(0) and budget.reserve(0)
        assert not budget.fits(1, 0) and not budget.reserve(0)
    assert budget.calls == 3 and budget.reserve(0)


def budget_reads() -> list[tuple[str, str]]:
    """(function, what) for each place of moa_pipeline that reads a budget's floors or compares what it spent."""
    tree = ast.parse((Path(__file__).resolve().parent / "moa_pipeline.py").read_text(encoding="utf-8"))
    budget_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Budget")
    in_budget = {id(n) for n in ast.walk(budget_class)}

    def of_a_budget(node: ast.Attribute) -> bool:
        owner = ast.unparse(node.value).split(".")[-1]
        return owner == "budget" or (owner == "self" and id(node) in in_budget)

    found = []
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and node.attr in ("floor_calls", "floor_tokens") \
                    and isinstance(node.ctx, ast.Load):
                found.append((function.name, node.attr))
            if isinstance(node, ast.Compare) and any(isinstance(a, ast.Attribute) and a.attr in ("calls", "tokens")
                                                     and of_a_budget(a) for a in ast.walk(node)):
                found.append((function.name, "compare " + ast.unparse(node)))
    return found


def test_floor_arithmetic_lives_only_in_budget_fits() -> None:
    """Only Budget.fits reads the floors (kept_back saves and restores them) or compares spending to a limit."""
    reads = budget_reads()
    assert {("fits", "floor_calls"), ("fits", "floor_tokens")} <= set(reads)
    strays = [(where, what) for where, what in reads if where not in ("fits", "kept_back")]
    assert not strays, strays
    assert {what for where, what in reads if where == "kept_back"} <= {"floor_calls", "floor_tokens"}
