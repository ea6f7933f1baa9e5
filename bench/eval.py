"""Accuracy harness: the debate against honest baselines, side by side, on questions with known answers.

    python bench/eval.py                                   # bench/eval_set.jsonl, the endpoint in .env
    python bench/eval.py --questions my.jsonl --limit 20 --configs single,vote,debate
    python bench/eval.py --json-out eval_results.json
    python bench/eval.py --questions bench/eval_open.jsonl --configs select-vote,select-rank,synthesis

Configurations (``--configs``, comma-separated):
  single           one solver call
  vote             self-consistency: majority of k samples, k = the debate's calls for that question
                   (the honest baseline: published studies find plain voting matches or beats debate
                   at equal calls)
  debate           the full debate with the settings in effect
  early-exit       the debate with EARLY_EXIT on
  no-styles        the debate with SOLVER_STYLES off
  no-shuffle       the debate with SHUFFLE_JUDGES off
  no-rebuttal      the debate without phase 3
  rounds-1, rounds-2, rounds-3
                   the debate with ROUNDS 1, 2 or 3 (later rounds run only while the solvers disagree)
  vote-rounds-1, vote-rounds-2, vote-rounds-3
                   the vote at the calls rounds-1, -2 or -3 made for each question
  select-vote, select-rank, synthesis
                   open-ended items (bench/eval_open.jsonl: a property to check, not one answer): ONE
                   debate per item with ANSWER_SHAPE=full and SYNTHESIZE=on, scored three ways: the
                   candidate with the most judges' first places, the Borda winner, and the synthesis.
                   The selections did not need the synthesis call: their calls and tokens leave it out.

An item with an "answer" goes to the first kinds, one with a "check" to the open-ended ones
(bench/open_check.py: code run against asserts in a subprocess, or a list that must name items).
For each: accuracy, calls and tokens per question. For the debate configurations also: how often
a rebuttal turned a wrong answer right vs a right answer wrong, and calibration of the final
confidence: expected calibration error over 10 bins (ECE) and AUROC (how well confidence
separates right from wrong; 0.5 = not at all). Settings come from .env and the environment as for
moa_pipeline.py (transcripts are off here).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from open_check import check_response  # noqa: E402

import moa_pipeline as moa  # noqa: E402
from parsing import detect_answer_type  # noqa: E402

# Three ways to answer an open-ended item, all read off one debate (see open_debate).
OPEN_CONFIGS = ("select-vote", "select-rank", "synthesis")
OPEN_CHANGES = {"answer_shape": "full", "synthesize": "on"}  # what --answer full --synthesize on set
CONFIGS = ("single", "vote", "debate", "early-exit", "no-styles", "no-shuffle", "no-rebuttal",
           "rounds-1", "rounds-2", "rounds-3", "vote-rounds-1", "vote-rounds-2", "vote-rounds-3", *OPEN_CONFIGS)
DEBATE_CHANGES = {"debate": {}, "early-exit": {"early_exit": True}, "no-styles": {"solver_styles": False},
                  "no-shuffle": {"shuffle_judges": False}, "no-rebuttal": {"enable_rebuttal": False},
                  "rounds-1": {"rounds": 1}, "rounds-2": {"rounds": 2}, "rounds-3": {"rounds": 3}}
# Each vote baseline spends, question by question, the calls of the debate it stands beside.
VOTE_BESIDE = {"vote": "debate", "vote-rounds-1": "rounds-1", "vote-rounds-2": "rounds-2", "vote-rounds-3": "rounds-3"}


@dataclass
class Outcome:
    correct: bool
    calls: int
    tokens: int
    confidence: int | None = None
    wrong_to_right: int = 0
    right_to_wrong: int = 0


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        n = len(self.outcomes) or 1
        scored = [o for o in self.outcomes if o.confidence is not None]
        return {"questions": len(self.outcomes),
                "accuracy": round(sum(o.correct for o in self.outcomes) / n, 3),
                "calls_per_question": round(sum(o.calls for o in self.outcomes) / n, 2),
                "tokens_per_question": round(sum(o.tokens for o in self.outcomes) / n),
                "wrong_to_right": sum(o.wrong_to_right for o in self.outcomes),
                "right_to_wrong": sum(o.right_to_wrong for o in self.outcomes),
                "ece": expected_calibration_error(scored) if scored else None,
                "auroc": auroc(scored) if scored else None}


def expected_calibration_error(outcomes: list[Outcome], bins: int = 10) -> float:
    """Sum over 10 confidence bins of |accuracy - mean confidence| weighted by the bin's share."""
    total, error = len(outcomes), 0.0
    for b in range(bins):
        inside = [o for o in outcomes if min(int((o.confidence or 0) / 100 * bins), bins - 1) == b]
        if inside:
            accuracy = sum(o.correct for o in inside) / len(inside)
            confidence = sum((o.confidence or 0) / 100 for o in inside) / len(inside)
            error += len(inside) / total * abs(accuracy - confidence)
    return round(error, 3)


def auroc(outcomes: list[Outcome]) -> float | None:
    """P(a right answer has higher confidence than a wrong one), ties counting half."""
    right = [o.confidence or 0 for o in outcomes if o.correct]
    wrong = [o.confidence or 0 for o in outcomes if not o.correct]
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return round(wins / (len(right) * len(wrong)), 3)


def tokens_of(calls: list[moa.AgentCall], config: moa.Config) -> int:
    return moa.usage_totals(calls, config)["total_tokens"]


async def sample(config: moa.Config, endpoint: moa.Endpoint, question: str, expected: str, k: int) -> Outcome:
    """k independent solver samples and their (type-aware) majority; k = 1 is the single call."""
    runtime = endpoint.runtime
    debate = moa.Debate(config, endpoint, runtime, uuid.uuid4().hex[:12], runtime.clock())
    try:
        positions = await moa.generate(debate, question, k, config.temperature)
    except moa.MoAError:
        positions = []
    kind = detect_answer_type(question, [p.answer for p in positions])
    verdict = moa.solver_verdict(positions, key=moa.typed_key(kind, question)) if positions else None
    correct = verdict is not None and moa.answers_match(question, verdict.answer, expected)
    return Outcome(correct, len(debate.calls), tokens_of(debate.calls, config))


async def debate(config: moa.Config, endpoint: moa.Endpoint, question: str, expected: str) -> Outcome:
    result = await moa.answer_question(config, question, endpoint, endpoint.runtime)
    correct = result.verdict is not None and moa.answers_match(question, result.verdict.answer, expected)
    changes = [(moa.answers_match(question, p["answer"], expected), moa.answers_match(question, p["final_answer"], expected))
               for p in result.answers]
    return Outcome(correct, len(result.calls), tokens_of(result.calls, config),
                   result.verdict.confidence if result.verdict else 0,
                   sum(not a and b for a, b in changes), sum(a and not b for a, b in changes))


async def run_config(name: str, base: moa.Config, items: list[dict], parallel: int,
                     debate_calls: dict[str, dict[str, int]]) -> Tally:
    tally = Tally()
    gate = asyncio.Semaphore(parallel)
    config = replace(base, **DEBATE_CHANGES.get(name, {}))
    if name == "single" or name in VOTE_BESIDE:
        config = replace(config, solver_styles=False, min_valid_answers=1)
    async with moa.open_client(config) as client:
        endpoint = moa.Endpoint(config, client, moa.Runtime())

        async def one(item: dict) -> None:
            async with gate:
                if name == "single":
                    outcome = await sample(config, endpoint, item["question"], item["answer"], 1)
                elif name in VOTE_BESIDE:
                    k = debate_calls.get(VOTE_BESIDE[name], {}).get(item["id"], 18)  # as many calls as that debate made
                    outcome = await sample(replace(config, num_workers=min(k, moa.MAX_WORKERS)), endpoint,
                                           item["question"], item["answer"], min(k, moa.MAX_WORKERS))
                else:
                    outcome = await debate(config, endpoint, item["question"], item["answer"])
                    debate_calls.setdefault(name, {})[item["id"]] = outcome.calls
                tally.outcomes.append(outcome)

        await asyncio.gather(*(one(item) for item in items))
    return tally


# --- open-ended items: select by vote, select by ranking, or synthesize -----------------------------


def candidate_text(answers: list[dict[str, Any]], agent: str) -> str | None:
    """The agent's candidate as the judges saw it: its final answer."""
    return next((a["final_answer"] for a in answers if a["agent"] == agent), None)


def open_responses(ranking: list[dict[str, Any]], answers: list[dict[str, Any]],
                   response: str | None) -> dict[str, str | None]:
    """What each open configuration answers from one debate's record. select-vote: the candidate with
    the most first places (max keeps the first of equals, so the Borda order breaks ties); select-rank:
    the Borda winner; synthesis: the response the user got. No ranking: no selection (None, wrong)."""
    voted = max(ranking, key=lambda standing: standing["first_places"]) if ranking else None
    return {"select-vote": candidate_text(answers, voted["agent"]) if voted else None,
            "select-rank": candidate_text(answers, ranking[0]["agent"]) if ranking else None,
            "synthesis": response}


async def open_debate(config: moa.Config, endpoint: moa.Endpoint, item: dict[str, Any]) -> dict[str, Outcome]:
    """One full-shape debate with the synthesis, scored the three ways. The selections' calls and tokens
    leave out the synthesis calls, which they did not need."""
    record = await moa.answer_question(config, item["question"], endpoint, endpoint.runtime)
    responses = open_responses(record.ranking, record.answers, record.response)
    # Each check runs code in a subprocess: in threads, so the other debates' calls go on meanwhile.
    passed = await asyncio.gather(*(asyncio.to_thread(check_response, item, text) for text in responses.values()))
    selecting = [call for call in record.calls if call.phase != "synthesis"]
    outcomes = {}
    for (name, _), correct in zip(responses.items(), passed, strict=True):
        calls = list(record.calls) if name == "synthesis" else selecting
        outcomes[name] = Outcome(correct, len(calls), tokens_of(calls, config), record.confidence)
    return outcomes


async def run_open(base: moa.Config, items: list[dict[str, Any]], parallel: int) -> dict[str, Tally]:
    """Every open configuration over ``items``, from one debate per item."""
    config = replace(base, **OPEN_CHANGES)
    tallies = {name: Tally() for name in OPEN_CONFIGS}
    gate = asyncio.Semaphore(parallel)
    async with moa.open_client(config) as client:
        endpoint = moa.Endpoint(config, client, moa.Runtime())

        async def one(item: dict[str, Any]) -> None:
            async with gate:
                for name, outcome in (await open_debate(config, endpoint, item)).items():
                    tallies[name].outcomes.append(outcome)

        await asyncio.gather(*(one(item) for item in items))
    return tallies


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = "| config | accuracy | calls/q | tokens/q | wrong->right | right->wrong | ECE | AUROC |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        debate_like = name != "single" and name not in VOTE_BESIDE and name not in OPEN_CONFIGS
        extra = (f"{r['wrong_to_right']} | {r['right_to_wrong']} | {r['ece']} | {r['auroc']}" if debate_like
                 else f" |  | {r['ece']} | {r['auroc']}" if name in OPEN_CONFIGS else " |  |  | ")
        lines.append(f"| {name} | {r['accuracy']:.3f} | {r['calls_per_question']} | {r['tokens_per_question']} | {extra} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", default=str(HERE / "eval_set.jsonl"))
    parser.add_argument("--configs", default="", help="default: every configuration the questions' items fit")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--parallel", type=int, default=4, help="questions in flight per configuration")
    parser.add_argument("--env-file", default=None)
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        print(f"error: unknown configuration(s) {', '.join(sorted(unknown))}; choose from {', '.join(CONFIGS)}",
              file=sys.stderr)
        return 2
    try:
        base = moa.load_config({}, os.environ, moa.read_env_file(args.env_file))
        items = [json.loads(line) for line in Path(args.questions).read_text().splitlines() if line.strip()]
    except (moa.ConfigError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    items = items[: args.limit] if args.limit else items
    open_items = [item for item in items if "check" in item]  # the open configurations' items, and only theirs
    items = [item for item in items if "check" not in item]
    if not names:
        names = [n for n in CONFIGS if (n in OPEN_CONFIGS and open_items) or (n not in OPEN_CONFIGS and items)]
    wanted_open = [n for n in names if n in OPEN_CONFIGS]
    if (wanted_open and not open_items) or (len(wanted_open) < len(names) and not items):
        print("error: the open configurations need items with a check (bench/eval_open.jsonl), the others items "
              "with an answer (bench/eval_set.jsonl)", file=sys.stderr)
        return 2
    base = replace(base, enable_file_logging=False, enable_jsonl_trace=False)
    moa.setup_logging(False)
    import logging
    logging.getLogger("moa").setLevel(logging.ERROR)
    # A vote needs the call counts of the debate it stands beside: that debate runs first.
    names = [n for n in names if n not in VOTE_BESIDE] + [n for n in names if n in VOTE_BESIDE]
    rows: dict[str, dict[str, Any]] = {}
    debate_calls: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    opened = asyncio.run(run_open(base, open_items, args.parallel)) if wanted_open else {}
    for name in names:
        tally = opened[name] if name in opened else asyncio.run(run_config(name, base, items, args.parallel,
                                                                               debate_calls))
        rows[name] = tally.summary()
        print(f"{name}: accuracy {rows[name]['accuracy']:.3f} over {rows[name]['questions']} questions", file=sys.stderr)
    print(table(rows))
    print(f"\n{len(items) + len(open_items)} questions, {time.monotonic() - started:.0f}s")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
