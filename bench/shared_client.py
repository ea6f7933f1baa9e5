"""Fifty concurrent debates against an endpoint that takes 8 requests at once (429 beyond): one shared Debater
against fifty separate debate() calls, each with its own client and request limit.

    python bench/shared_client.py [--questions 50] [--latency 0.05]

Prints, per way of running them: answered questions, requests sent, how many got a 429, and wall time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from batch_memory import start_fake_endpoint  # noqa: E402

import moa_pipeline as moa  # noqa: E402

SETTINGS: dict[str, Any] = {"api_key": "bench-key-0123", "num_workers": 3, "num_judges": 1,
                            "enable_file_logging": False, "retry_base_delay": 0.2}


async def shared(url: str, questions: list[str], limit: int) -> list[Any]:
    async with moa.Debater(proxy_url=url, max_concurrent_requests=limit, **SETTINGS) as client:
        return list(await asyncio.gather(*(client.debate(q) for q in questions), return_exceptions=True))


async def separate(url: str, questions: list[str]) -> list[Any]:
    return list(await asyncio.gather(*(moa.debate(q, proxy_url=url, **SETTINGS) for q in questions),
                                     return_exceptions=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    questions = [f"What is 17 * 23? ({n})" for n in range(args.questions)]
    log = Path(tempfile.mkdtemp()) / "requests.jsonl"
    process, url = start_fake_endpoint("--max-concurrency", "8", "--latency", str(args.latency), "--log", str(log))
    print("| run | answered | requests | 429s | wall s |\n|---|---|---|---|---|")
    try:
        runs = [(f"one Debater, MAX_CONCURRENT_REQUESTS={n}", lambda n=n: shared(url, questions, n)) for n in (8, 16, 64)]
        for name, run in [*runs, ("separate debate() calls, 16 each", lambda: separate(url, questions))]:
            log.write_text("")
            started = time.monotonic()
            results = asyncio.run(run())
            wall = time.monotonic() - started
            ends = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "end"]
            answered = sum(getattr(r, "status", None) == "ok" for r in results)
            print(f"| {name} | {answered}/{len(questions)} | {len(ends)} | {sum(e['status'] == 429 for e in ends)} "
                  f"| {wall:.1f} |")
    finally:
        process.kill()


if __name__ == "__main__":
    main()
