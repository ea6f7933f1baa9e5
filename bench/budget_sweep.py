"""What MAX_TOTAL_TOKENS buys and what it lets through (issue 20, items 7 and 8), against a mocked
endpoint in virtual time: a few seconds, no network.

    python bench/budget_sweep.py

Order: 5 solvers that never agree, 3 judges, ROUNDS=3, MAX_TOKENS=1000, replies of 150 tokens,
MAX_TOTAL_TOKENS swept from 8,000 to 160,000 in steps of 1,000, judges confident (no rerun needed)
and not (rerun needed). Counts budgets where a later round ran although a critique, rebuttal or judge
was cut, and steps where more budget bought less (ordered judges, critiques, rebuttals, rerun, rounds).

Billing: every reply bills 3 x its max_tokens of completion (a reasoning model's hidden thinking),
texts as long as max_tokens allows, each reply 1 s of virtual time, so a phase's requests are in
flight together; MAX_TOTAL_TOKENS swept from 6,000 to 80,000 in steps of 500. Reports the largest
overshoot, and the run at 40,000.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import moa_pipeline as moa  # noqa: E402
from test_budget import CONFIG, Billed, billed, debate_of, ran, run_questions  # noqa: E402

WIDE = replace(CONFIG, num_workers=5, num_judges=3, max_tokens=1000, judge_max_tokens=1000)


def order(confidence: int) -> tuple[int, int, int]:
    """(budgets swept, budgets where a round ran after a cut, steps where more bought less)."""
    budgets = range(8_000, 160_001, 1_000)
    runs = asyncio.run(run_questions([replace(WIDE, max_total_tokens=b) for b in budgets], Billed(confidence, spoken=150)))
    out_of_order = 0
    for result in runs:
        for pass_number in (1, 2):
            judges, critiques, rebuttals, rounds = ran(result, pass_number)
            valid = sum(c.ok for c in result.calls if c.phase == "generate" and c.pass_number == pass_number)
            out_of_order += rounds > 1 and (judges, critiques, rebuttals) != (3, valid, valid)
    bought = [debate_of(r) for r in runs]
    less = sum(after < before for before, after in zip(bought, bought[1:], strict=False))
    return len(runs), out_of_order, less


def billing() -> tuple[int, int, int, int]:
    """(budgets swept, largest overshoot, its budget, tokens billed at MAX_TOTAL_TOKENS=40,000)."""
    budgets = [*range(6_000, 80_001, 500)]
    runs = asyncio.run(run_questions([replace(WIDE, max_total_tokens=b) for b in budgets], Billed(40, 3.0),
                                     latency=1.0))
    over, where = max((billed(r) - b, b) for r, b in zip(runs, budgets, strict=True))
    return len(runs), over, where, billed(runs[budgets.index(40_000)])


def main() -> None:
    logging.getLogger("moa").setLevel(logging.ERROR)
    for confidence in (90, 40):
        swept, out_of_order, less = order(confidence)
        print(f"order, judges' confidence {confidence}: {swept} budgets; a later round after a cut: "
              f"{out_of_order}; more budget bought less: {less} step(s)")
    swept, over, where, at_40k = billing()
    print(f"billing 3x max_tokens: {swept} budgets; largest overshoot {over} tokens (MAX_TOTAL_TOKENS={where}, "
          f"{over / where:.1%}); at 40,000: {at_40k} billed; README bound: 2 x MAX_TOKENS = "
          f"{2 * WIDE.max_tokens}")
    print(f"moa_pipeline {moa.__version__}")


if __name__ == "__main__":
    main()
