"""Speed benchmark: how close the pipeline gets to the limit the endpoint's latency sets.

    python bench/run_bench.py                # every scenario, about 10 minutes on 2 cores
    python bench/run_bench.py --quick        # fewer runs per scenario, about 3 minutes
    python bench/run_bench.py --only overhead,batch
    python bench/run_bench.py --only overload,scattered,startup  # a busy endpoint, and start-up
    python bench/run_bench.py --only gateway --seed 1  # behind a retrying gateway, about 2 minutes
    python bench/run_bench.py --only outage429   # an endpoint answering only 429: when the batch stops
    python bench/run_bench.py --only synthesis   # full answers with the synthesis: span against the critical path
    python bench/run_bench.py --seed 123456  # the latency draw of an earlier run, again

Runs the debate in this process against bench/fake_endpoint.py (its own process
on 127.0.0.1), so wall and CPU figures exclude interpreter start-up. "Ideal" is
the critical path of the latencies the server actually drew, read from its
request log: for chains, the slowest solver chain (answer + critique +
rebuttal) plus the slowest judge; for barriers, the sum of each phase's slowest
call; then the synthesis, when there is one, after the slowest judge. Prints a
table and writes bench/results.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
from batch_memory import start_fake_endpoint  # noqa: E402

import moa_pipeline as moa  # noqa: E402

QUESTION = "What is 17 * 23?"
SYNTHESIS_QUESTION = "Write a Python function that merges two sorted lists."
CHAIN_GAIN_TARGET = 0.15


class Server:
    """The fake endpoint in a subprocess, with its request log."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.log = workdir / f"server_{time.monotonic_ns()}.jsonl"
        self.process, self.url = start_fake_endpoint(*args, "--log", str(self.log))

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def requests(self) -> list[dict[str, Any]]:
        """Every request: run, phase, agent, latency, status."""
        starts, rows = {}, []
        for line in self.log.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "start":
                starts[event["n"]] = event
            elif event["n"] in starts:
                start = starts.pop(event["n"])
                rows.append({**start, "latency": event["t"] - start["t"], "status": event["status"]})
        return rows


def ideal_time(requests: list[dict[str, Any]], barriers: bool) -> float:
    """The critical path of one debate's drawn latencies (successful requests only). The synthesis reads
    every judge, so it starts after the slowest and adds its own latency (all its requests': a retry
    after an unusable reply follows the first in sequence)."""
    ok = [r for r in requests if r["status"] == 200]
    by_phase: dict[str, list[float]] = defaultdict(list)
    chain: dict[str, float] = defaultdict(float)
    revisions: dict[int, list[float]] = defaultdict(list)  # debate rounds 2 on: each waits for the whole round before
    for r in ok:
        by_phase[r["phase"]].append(r["latency"])
        if r["phase"] == "revise":
            revisions[r.get("round", 2)].append(r["latency"])
        elif r["phase"] not in ("judge", "synthesis"):
            slot = r["agent"].split("->")[-1]  # a critique belongs to the chain of the answer it reviews
            chain[slot] += r["latency"]
    judges = (max(by_phase["judge"], default=0.0) + sum(max(round_) for round_ in revisions.values())
              + sum(by_phase["synthesis"]))
    if barriers:
        return sum(max(by_phase[p], default=0.0) for p in ("generate", "critique", "rebuttal")) + judges
    return max(chain.values(), default=0.0) + judges


def config_for(url: str, **changes: Any) -> moa.Config:
    base = moa.Config(url + "/chat/completions", "bench-key", retry_base_delay=0.05, retry_max_delay=2.0,
                      enable_file_logging=False, request_timeout=60.0)
    return replace(base, **changes)


async def one_debate(config: moa.Config, question: str = QUESTION,
                     client: httpx.AsyncClient | None = None) -> tuple[float, moa.RunRecord]:
    if client is None:
        async with moa.open_client(config) as own:
            return await one_debate(config, question, own)
    runtime = moa.Runtime()
    started = time.perf_counter()
    result = await moa.answer_question(config, question, moa.Endpoint(config, client, runtime), runtime)
    return time.perf_counter() - started, result


async def many_debates(config: moa.Config, runs: int, parallel: int,
                       distinct: bool = False) -> list[tuple[float, moa.RunRecord]]:
    """``runs`` debates, ``parallel`` at a time (the server has no limit in these scenarios).
    ``distinct`` gives each run its own question (with a keyed server: its own latencies).

    The debates share one client, opened before any clock starts: building a client
    loads the CA bundle (tens of ms of CPU), which would otherwise stall the event
    loop under the other debates' calls and be counted in their wall time.
    """
    gate = asyncio.Semaphore(parallel)
    wide = replace(config, max_concurrent_requests=config.max_concurrent_requests * parallel)
    async with moa.open_client(wide) as client:
        async def guarded(n: int) -> tuple[float, moa.RunRecord]:
            async with gate:
                return await one_debate(config, f"Run {n}: {QUESTION}" if distinct else QUESTION, client)

        return await asyncio.gather(*(guarded(n) for n in range(runs)))


def simulate_debate(rng: random.Random, spread: float, workers: int = 5, judges: int = 3) -> tuple[float, float]:
    """One debate's critical path under lognormal latency (median 1): (chains, barriers)."""
    draw = [[math.exp(rng.gauss(0, spread)) for _ in range(workers)] for _ in range(3)]
    judge = max(math.exp(rng.gauss(0, spread)) for _ in range(judges))
    chains = max(sum(draw[p][i] for p in range(3)) for i in range(workers)) + judge
    return chains, sum(max(phase) for phase in draw) + judge


def chain_gain_odds(spread: float, runs: int, target: float, draws: int = 2000) -> tuple[float, float]:
    """What the design itself allows, by simulation of its critical paths: the typical
    gain of chains over barriers when each is the median of ``runs`` debates, and the
    share of such ``runs``-debate draws whose gain reaches ``target``."""
    rng = random.Random(1)
    gains = []
    for _ in range(draws):
        pairs = [simulate_debate(rng, spread) for _ in range(runs)]
        gains.append(1 - statistics.median(c for c, _ in pairs) / statistics.median(b for _, b in pairs))
    return statistics.median(gains), sum(g >= target for g in gains) / draws


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, wall: float, ideal: float | None, requests: int, rejected: int, cpu: float | None,
        target: str, met: bool, **extra: Any) -> dict[str, Any]:
    return {"scenario": name, "wall_s": round(wall, 3), "ideal_s": None if ideal is None else round(ideal, 3),
            "ratio": None if not ideal else round(wall / ideal, 3), "http_requests": requests, "429s": rejected,
            "cpu_ms_per_request": None if cpu is None else round(cpu, 3), "target": target, "met": met, **extra}


# --- scenarios ------------------------------------------------------------------------------


async def overhead(workdir: Path, runs: int) -> dict[str, Any]:
    """Constant 1 s latency, 5 workers, 3 judges, rebuttal: wall <= 1.04 x 4 L."""
    server = Server(workdir, "--latency", "1.0")
    try:
        cpu_before = time.process_time()
        results = [await one_debate(config_for(server.url)) for _ in range(runs)]
        cpu = (time.process_time() - cpu_before) * 1000
    finally:
        server.close()
    wall = statistics.median(w for w, _ in results)
    requests = sum(r.http_requests for _, r in results)
    return row("1 overhead (L=1s)", wall, 4.0, requests, 0, cpu / requests, "<= 1.04 x 4L", wall <= 1.04 * 4.0)


async def spans_against_critical_paths(server: Server, config: moa.Config, question: str,
                                       runs: int) -> tuple[list[tuple[float, moa.RunRecord]], float, float]:
    """``runs`` debates one after another, each its own question: (the results, the median ratio of a run's span to
    its own critical path, that run's wall time). Closes ``server``."""
    try:
        results = [await one_debate(config, f"Run {n}: {question}") for n in range(runs)]
        by_run = defaultdict(list)
        for r in server.requests():
            by_run[r["run"]].append(r)
    finally:
        server.close()
    # The runs are sequential, so the log's runs come in the order of the results.
    ideals = [ideal_time(requests, False) for requests in by_run.values()]
    ratios = sorted((wall / ideal, wall) for (wall, _), ideal in zip(results, ideals, strict=True))
    ratio, wall = ratios[len(ratios) // 2]
    return results, ratio, wall


async def rounds(workdir: Path, runs: int, seed: int) -> dict[str, Any]:
    """ROUNDS=3 against solvers that disagree (half their answers wrong, at random), lognormal
    latency: each run's span against its own critical path, the longest chain of round 1, then
    each later round's slowest revision, then the slowest judge. Median over ``runs``."""
    server = Server(workdir, "--latency", "0.5", "--spread", "0.3", "--wrong-rate", "0.5", "--seed", str(seed))
    results, ratio, wall = await spans_against_critical_paths(
        server, config_for(server.url, rounds=3, min_judge_confidence=0), QUESTION, runs)
    rounds_run = [r.rounds for _, r in results]
    return row("10 rounds: ROUNDS=3, solvers disagree", wall, wall / ratio, sum(r.http_requests for _, r in results), 0,
               None, "<= 1.03 x critical path", ratio <= 1.03, rounds_ratio=round(ratio, 3), rounds_run=rounds_run)


async def synthesis(workdir: Path, runs: int, seed: int) -> dict[str, Any]:
    """ANSWER_SHAPE=full and SYNTHESIZE=on, lognormal latency: each run's span against its own critical
    path, the longest chain, then the slowest judge, then the synthesis (one more call in sequence).
    Median over ``runs``. The judges rank (RANKING: lines); the synthesis replies with plain text."""
    server = Server(workdir, "--latency", "0.5", "--spread", "0.3", "--seed", str(seed))
    config = config_for(server.url, answer_shape="full", synthesize="on", min_judge_confidence=0)
    results, ratio, wall = await spans_against_critical_paths(server, config, SYNTHESIS_QUESTION, runs)
    synthesized = sum(bool(getattr(record, "synthesized", False)) for _, record in results)
    return row("13 synthesis: critical path", wall, wall / ratio, sum(r.http_requests for _, r in results), 0,
               None, "<= 1.03 x critical path", ratio <= 1.03 and synthesized == runs,
               synthesis_ratio=round(ratio, 3), synthesized=f"{synthesized}/{runs}")


async def barriers(workdir: Path, runs: int, seed: int) -> list[dict[str, Any]]:
    """Lognormal latency (spread 0.5): chains vs phase barriers, median over ``runs`` each.

    Paired: each run has its own question, and the server draws every call's latency
    from (seed, question, phase, agent), so both modes meet exactly the same latencies.
    Which latencies those are still depends on the seed, and the gain with them: the
    row shows this draw's ideal gain and the odds of the design as well as the gain.
    """
    out = {}
    for name, flag in (("chains", False), ("barriers", True)):
        server = Server(workdir, "--latency", "0.3", "--spread", "0.5", "--seed", str(seed), "--keyed")
        try:
            results = await many_debates(config_for(server.url, phase_barriers=flag), runs, 6, distinct=True)
            by_run = defaultdict(list)
            for r in server.requests():
                by_run[r["run"]].append(r)
            ideals = [ideal_time(rs, flag) for rs in by_run.values()]
        finally:
            server.close()
        out[name] = (statistics.median(w for w, _ in results), statistics.median(ideals),
                     sum(r.http_requests for _, r in results))
    chains, walls = out["chains"], out["barriers"]
    gain = 1 - chains[0] / walls[0]
    typical, odds = chain_gain_odds(0.5, runs, CHAIN_GAIN_TARGET)
    return [row("2 no barriers: chains", chains[0], chains[1], chains[2], 0, None,
                ">= 15% below barriers", gain >= CHAIN_GAIN_TARGET, gain=round(gain, 3),
                ideal_gain=round(1 - chains[1] / walls[1], 3), design_typical_gain=round(typical, 3),
                design_odds=round(odds, 2)),
            row("2 no barriers: --phase-barriers", walls[0], walls[1], walls[2], 0, None, "baseline", True)]


async def stragglers(workdir: Path, runs: int, seed: int) -> list[dict[str, Any]]:
    """5% of calls 10x slower: p95 wall with STRAGGLER_FACTOR=3 <= 0.6 x with it off."""
    p95 = {}
    for factor in (3.0, 0.0):
        server = Server(workdir, "--latency", "0.5", "--straggler-prob", "0.05", "--straggler-factor", "10",
                        "--seed", str(seed))
        try:
            results = await many_debates(config_for(server.url, straggler_factor=factor), runs, 10)
        finally:
            server.close()
        p95[factor] = (percentile([w for w, _ in results], 0.95), sum(r.http_requests for _, r in results),
                       sum(1 for _, r in results if r.status != "ok"))
    ratio = p95[3.0][0] / p95[0.0][0]
    return [row("3 stragglers: factor 3 (p95)", p95[3.0][0], None, p95[3.0][1], 0, None,
                "<= 0.6 x factor off", ratio <= 0.6, p95_ratio=round(ratio, 3), failed_runs=p95[3.0][2]),
            row("3 stragglers: factor 0 (p95)", p95[0.0][0], None, p95[0.0][1], 0, None, "baseline", True)]


async def early_exit(workdir: Path, runs: int) -> dict[str, Any]:
    """A unanimous endpoint: calls per question with EARLY_EXIT on vs off."""
    server = Server(workdir, "--latency", "0.05")
    try:
        on = await many_debates(config_for(server.url, early_exit=True), runs, 5)
        off = await many_debates(config_for(server.url), runs, 5)
    finally:
        server.close()
    calls_on = sum(r.http_requests for _, r in on) / runs
    calls_off = sum(r.http_requests for _, r in off) / runs
    return row("4 early exit (unanimous)", statistics.median(w for w, _ in on), None, int(calls_on * runs), 0, None,
               "calls saved reported", all(r.verdict and r.verdict.source == "unanimous" for _, r in on),
               calls_per_question_on=calls_on, calls_per_question_off=calls_off,
               calls_saved=round(1 - calls_on / calls_off, 3))


@dataclass
class BatchOutcome:
    """One batch through ``moa.run_batch`` against a fake endpoint, and what both sides saw."""

    wall: float
    cpu_ms: float
    summary: dict[str, Any]
    lines: list[dict[str, Any]]  # the output file's result lines
    requests: list[dict[str, Any]]  # the server's log

    @property
    def rejected(self) -> int:
        return sum(1 for r in self.requests if r["status"] == 429)

    def unanswered_calls(self) -> int:
        """Calls (run, phase, agent) the endpoint never answered 200, from its own log."""
        calls: dict[tuple[str, str, str], bool] = {}
        for r in self.requests:
            key = (r["run"], r["phase"], r["agent"])
            calls[key] = calls.get(key, False) or r["status"] == 200
        return sum(1 for answered in calls.values() if not answered)

    def reported_failed_calls(self) -> int:
        """The sum of ``phases.*.failed`` over the output lines: what the batch admits to."""
        return sum(p.get("failed", 0) for line in self.lines for p in (line.get("phases") or {}).values())


async def run_one_batch(workdir: Path, server_args: list[str], questions: int, concurrency: int,
                        **changes: Any) -> BatchOutcome:
    """``questions`` questions, ``concurrency`` at a time, against a fresh fake endpoint."""
    server = Server(workdir, *server_args)
    workdir = Path(tempfile.mkdtemp(dir=workdir))  # a fresh output each time, so nothing resumes
    source = workdir / "questions.txt"
    source.write_text("".join(f"Question {n}: what is {n} * 3?\n" for n in range(questions)))
    output = workdir / "out.jsonl"
    config = replace(moa.Config(server.url + "/chat/completions", "bench-key", log_dir=str(workdir / "logs")),
                     **changes)
    options = moa.BatchOptions(str(source), output, concurrency=concurrency)
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # the per-question lines
    try:
        cpu_before, started = time.process_time(), time.perf_counter()
        summary = await moa.run_batch(config, options, moa.Runtime(), sys.stdin)
        wall, cpu = time.perf_counter() - started, (time.process_time() - cpu_before) * 1000
    finally:
        sys.stderr.close()
        sys.stderr = stderr
        requests = server.requests()
        server.close()
    lines = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    return BatchOutcome(wall, cpu, summary, lines, requests)


async def batch(workdir: Path, questions: int, cap: int) -> dict[str, Any]:
    """``questions`` questions; the endpoint takes 8 at once (429 beyond), latency 100 ms."""
    run = await run_one_batch(workdir, ["--latency", "0.1", "--max-concurrency", "8", "--retry-after", "0.2",
                                        "--log-requests"], questions, 8, max_concurrent_requests=cap,
                              retry_base_delay=0.05, retry_max_delay=2.0, request_timeout=60.0)
    wall, cpu, summary, requests = run.wall, run.cpu_ms, run.summary, run.requests
    rejected = sum(1 for r in requests if r["status"] == 429)
    served = len(requests) - rejected
    ideal = served * 0.1 / 8
    failed = summary["this_run"]["failed"]
    if cap == 8:
        met = wall <= 1.15 * ideal and rejected <= 0.02 * len(requests) and failed == 0
        target = "<= 1.15 x ideal, 429s <= 2%"
    else:
        met = failed == 0 and rejected <= 0.10 * len(requests)
        target = "no failures, 429s <= 10%"
    result = row(f"5 batch {questions}q, MAX_CONCURRENT_REQUESTS={cap}", wall, ideal, len(requests), rejected,
                 cpu / len(requests), target, met, failed_questions=failed)
    result["_sent"] = [(r["body"], r["headers"]) for r in requests]  # for the bare-httpx replay
    return result


async def bare_httpx(workdir: Path, sent: list[tuple[str, dict[str, str]]]) -> float:
    """CPU ms per request of a bare httpx loop replaying exactly the requests our batch sent
    (bodies and headers, as the server logged them), 8 at a time, to the same kind of server.
    It posts each body as ``json=`` and decodes each reply, as any client of this API must."""
    server = Server(workdir, "--latency", "0.1")
    gate = asyncio.Semaphore(8)
    requests = [(json.loads(body), {k: v for k, v in headers.items() if k.lower() != "content-type"})
                for body, headers in sent]
    try:
        # The clock starts before the client is built, as it does for our batch: both pay for one client.
        cpu_before = time.process_time()
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": "Bearer bench-key"}) as client:
            async def send(body: dict[str, Any], headers: dict[str, str]) -> None:
                async with gate:
                    response = await client.post(server.url + "/chat/completions", json=body, headers=headers)
                    response.json()

            await asyncio.gather(*(send(body, headers) for body, headers in requests))
        return (time.process_time() - cpu_before) * 1000 / len(sent)
    finally:
        server.close()


async def batch_and_client_cost(workdir: Path, repeats: int) -> list[dict[str, Any]]:
    """Targets 5 (cap 8) and 6 (client CPU), from ``repeats`` interleaved pairs: our batch,
    then a bare loop replaying its requests, and again.

    CPU time on this kind of 2-core VM moves by 15-30% between back-to-back runs of the
    same code (no hardware counters to count instructions instead), so one pair
    decides nothing: each side's median is compared. Target 5 is read off the
    batch run with the median wall time, a real single run.
    """
    runs, bare = [], []
    for _ in range(repeats):
        result = await batch(workdir, 40, 8)
        sent = result.pop("_sent")
        runs.append(result)
        bare.append(await bare_httpx(workdir, sent))
    median_run = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    median_run["walls_s"] = [r["wall_s"] for r in runs]
    ours, theirs = statistics.median(r["cpu_ms_per_request"] for r in runs), statistics.median(bare)
    cost = row("6 client CPU vs bare httpx (same requests)", 0, None, len(sent), 0, theirs,
               "ours <= 1.5 x bare (medians)", ours <= 1.5 * theirs, ours_cpu_ms=round(ours, 3),
               cpu_ratio=round(ours / theirs, 3), ours_samples=[r["cpu_ms_per_request"] for r in runs],
               bare_samples=[round(b, 3) for b in bare])
    return [median_run, cost]


async def overload(workdir: Path, questions: int = 40) -> dict[str, Any]:
    """The cap at 4x the endpoint's capacity (32 against 8), Retry-After 1 s, latency 100 ms,
    default retry settings: span against the ideal (successful calls x latency / 8), the
    share of 429s, and whether every call the endpoint never answered shows as failed."""
    run = await run_one_batch(workdir, ["--latency", "0.1", "--max-concurrency", "8", "--retry-after", "1"],
                              questions, 8, max_concurrent_requests=32)
    served = len(run.requests) - run.rejected
    ideal = served * 0.1 / 8
    lost = run.unanswered_calls() - run.reported_failed_calls()
    share = run.rejected / len(run.requests)
    return row(f"7 overload: cap 4x capacity, Retry-After 1, {questions}q", run.wall, ideal, len(run.requests),
               run.rejected, run.cpu_ms / len(run.requests), "<= 1.2 x ideal, 429s <= 5%, none lost silently",
               run.wall <= 1.2 * ideal and share <= 0.05 and lost <= 0, rejected_share=round(share, 3),
               unanswered_calls=run.unanswered_calls(), reported_failed=run.reported_failed_calls(),
               degraded=run.summary["this_run"].get("degraded"), failed_questions=run.summary["this_run"]["failed"])


async def scattered(workdir: Path, questions: int = 24) -> list[dict[str, Any]]:
    """5% of requests answered 429 with Retry-After 1 s at random, the endpoint's capacity
    ample, latency 1 s, --concurrency 8, default settings: span against the same batch
    without the 429s. A scattered 429 should cost its own call's wait, not everyone's."""
    spans = {}
    for name, faults in (("with", ["--fault", "429", "--fault-rate", "0.05", "--retry-after", "1"]), ("without", [])):
        spans[name] = await run_one_batch(workdir, ["--latency", "1.0", *faults], questions, 8)
    ratio = spans["with"].wall / spans["without"].wall
    lost = spans["with"].unanswered_calls() - spans["with"].reported_failed_calls()
    return [row(f"8 scattered 429s (5%), {questions}q, L=1s", spans["with"].wall, None,
                len(spans["with"].requests), spans["with"].rejected, None, "<= 1.3 x without, none lost silently",
                ratio <= 1.3 and lost <= 0, scattered_ratio=round(ratio, 3)),
            row(f"8 no 429s, {questions}q, L=1s", spans["without"].wall, None, len(spans["without"].requests), 0,
                None, "baseline", True)]


async def gateway(workdir: Path, seed: int, questions: int = 20) -> list[dict[str, Any]]:
    """Behind a retrying gateway: 30% of requests take 3-4x as long (as LiteLLM's upstream retries
    make them), latency 0.4 s, ``questions`` questions at --concurrency 4, default settings: degraded
    answers (target: at most 10%), requests and span, against the same batch with STRAGGLER_FACTOR=0
    (never cut). Then a long tail (5% of requests 10x as slow), where cutting should still pay:
    span <= 0.8 x never cut. The server is keyed: every call meets the same latency in each run."""
    shapes = {"gateway retries 30% 3-4x": ["--gateway-retry-rate", "0.3"],
              "long tail 5% 10x": ["--straggler-prob", "0.05", "--straggler-factor", "10"]}
    rows = []
    for shape, args in shapes.items():
        runs = {factor: await run_one_batch(workdir, ["--latency", "0.4", *args, "--keyed", "--seed", str(seed)],
                                            questions, 4, straggler_factor=factor) for factor in (3.0, 0.0)}
        for factor, run in runs.items():
            degraded = run.summary["this_run"].get("degraded", 0)
            target, met = "baseline", True
            if factor and shape.startswith("gateway"):
                target, met = "degraded <= 10%", degraded <= 0.10 * questions
            elif factor:
                target, met = "span <= 0.8 x never cut", run.wall <= 0.8 * runs[0.0].wall
            rows.append(row(f"11 {shape}, {questions}q, STRAGGLER_FACTOR={factor:g}", run.wall, None,
                            len(run.requests), run.rejected, None, target, met, degraded=degraded,
                            failed_calls=run.reported_failed_calls(), failed_questions=run.summary["this_run"]["failed"]))
    return rows


async def outage429(workdir: Path, questions: int = 20, stall: float = 20.0) -> list[dict[str, Any]]:
    """An endpoint that answers every request 429, with Retry-After 1 and with no hint at all: a batch of
    ``questions`` at --concurrency 4 and the default settings, except STALL_TIMEOUT scaled from 300 s
    down to ``stall`` (and the batch with it, so that it outlasts the stall) to keep both runs under a
    minute. Reports requests sent and the time to stop: within STALL_TIMEOUT plus the longest wait
    before a call's next request, with exit 75."""
    rows = []
    for hint, fault in (("Retry-After 1", ["--fault", "429", "--retry-after", "1"]), ("no Retry-After", ["--fault", "429bare"])):
        run = await run_one_batch(workdir, fault, questions, 4, stall_timeout=stall)
        status = run.summary["status"]
        rows.append(row(f"12 outage: only 429, {hint}, {questions}q, STALL_TIMEOUT={stall:g}", run.wall, stall,
                        len(run.requests), run.rejected, None, "stops (exit 75) by STALL_TIMEOUT + 10 s",
                        status == "circuit_open" and run.wall <= stall + 10, stop_status=status,
                        lines_written=len(run.lines), questions_started=len({r["run"] for r in run.requests})))
    return rows


BARE_SCRIPT = """
import httpx, sys
httpx.post(sys.argv[1] + "/chat/completions", headers={"Authorization": "Bearer bench-key"},
           json={"model": "m", "messages": [{"role": "user", "content": "What is 17 * 23?"}]}, timeout=60)
"""


def first_request_after(command: list[str], server: Server, env: dict[str, str]) -> float:
    """Seconds from starting ``command`` to the first request the server logs (both
    processes read the same CLOCK_MONOTONIC)."""
    before = server.log.read_text().count('"event": "start"') if server.log.exists() else 0
    started = time.monotonic()
    subprocess.run(command, env=env, cwd=str(HERE.parent), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    starts = [json.loads(line) for line in server.log.read_text().splitlines() if '"event": "start"' in line]
    return starts[before]["t"] - started


def startup(workdir: Path, runs: int) -> list[dict[str, Any]]:
    """Process start to the first request the server sees: ours, started three ways, against
    a bare script that imports httpx and posts once. Medians of ``runs``, interleaved."""
    server = Server(workdir, "--latency", "0")
    # As on a user's machine: bytecode is cached (this sandbox sets PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {**env, "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "bench-key", "NUM_WORKERS": "1", "MIN_VALID_ANSWERS": "1",
           "NUM_JUDGES": "1", "ENABLE_FILE_LOGGING": "false", "MOA_ENV_FILE": os.devnull}
    script = workdir / "bare_httpx.py"
    script.write_text(BARE_SCRIPT)
    moa_script = str(HERE.parent / "moa_pipeline.py")
    commands = {"bare httpx script": [sys.executable, str(script), server.url],
                "python moa_pipeline.py -q": [sys.executable, moa_script, "-q", QUESTION],
                "python -m moa_pipeline -q": [sys.executable, "-m", "moa_pipeline", "-q", QUESTION]}
    # Compile once, as any second run finds it (python -m reads __pycache__; the script path never does).
    subprocess.run([sys.executable, "-c", "import moa_pipeline"], cwd=str(HERE.parent), env=env, check=True)
    times: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(runs):
            for name, command in commands.items():
                times[name].append(first_request_after(command, server, env))
    finally:
        server.close()
    bare = statistics.median(times["bare httpx script"])
    # A script run as `python file.py` is compiled on every start (Python caches bytecode
    # only for imported modules): reported, while the target is on the cached path.
    targets = {"bare httpx script": "baseline", "python moa_pipeline.py -q": "reported (compiled every start)",
               "python -m moa_pipeline -q": "<= bare + 0.05 s"}
    return [row(f"9 start-up: {name}", statistics.median(values), bare, 1, 0, None, targets[name],
                statistics.median(values) <= bare + 0.05 or not targets[name].startswith("<="),
                excess_s=round(statistics.median(values) - bare, 3), samples=[round(v, 3) for v in values])
            for name, values in times.items()]


# --- the run ---------------------------------------------------------------------------------------


async def run(only: set[str], quick: bool, workdir: Path, seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "overhead" in only:
        rows.append(await overhead(workdir, 1 if quick else 3))
    if "barriers" in only:
        rows += await barriers(workdir, 12 if quick else 30, seed)
    if "rounds" in only:
        rows.append(await rounds(workdir, 3 if quick else 7, seed))
    if "synthesis" in only:
        rows.append(await synthesis(workdir, 3 if quick else 7, seed))
    if "stragglers" in only:
        rows += await stragglers(workdir, 20 if quick else 50, seed)
    if "early" in only:
        rows.append(await early_exit(workdir, 5))
    if "batch" in only:
        rows += await batch_and_client_cost(workdir, 2 if quick else 5)
        rows.append(await batch(workdir, 40, 32))
        rows[-1].pop("_sent")
    if "overload" in only:
        rows.append(await overload(workdir))
    if "scattered" in only:
        rows += await scattered(workdir)
    if "startup" in only:
        rows += startup(workdir, 5)
    if "gateway" in only:
        rows += await gateway(workdir, seed)
    if "outage429" in only:
        rows += await outage429(workdir)
    if "memory" in only:
        # In a fresh process: a child forked from this (by now large) process would count
        # this process's pages in its peak RSS until it execs, and that is all RUSAGE_CHILDREN sees.
        probe = subprocess.run([sys.executable, str(HERE / "batch_memory.py"), "--questions",
                                str(20_000 if quick else 100_000), "--answered", "2000"],
                               capture_output=True, text=True, check=True)
        memory = json.loads(probe.stdout)
        rows.append({"scenario": f"6 batch memory, {memory['questions_in_file']} questions", "wall_s": memory["wall_s"],
                     "peak_rss_mb": memory["peak_rss_mb"], "target": "<= 100 MB",
                     "met": memory["peak_rss_mb"] <= 100, "answered": memory["answered"]})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = f"| {'scenario':<44} | wall s | ideal s | ratio | requests | 429s | CPU ms/req | peak RSS MB | target | met |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        def cell(key: str, r: dict[str, Any] = r) -> str:
            value = r.get(key)
            return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        extra = ", ".join(f"{k}={r[k]}" for k in ("gain", "ideal_gain", "design_typical_gain", "design_odds",
                                                  "p95_ratio", "calls_saved", "cpu_ratio",
                                                  "rejected_share", "unanswered_calls", "reported_failed",
                                                  "scattered_ratio", "excess_s", "rounds_ratio",
                                                  "rounds_run", "synthesis_ratio", "synthesized", "degraded", "failed_calls", "stop_status",
                                                  "questions_started") if k in r)
        lines.append(f"| {r['scenario']:<44} | {cell('wall_s')} | {cell('ideal_s')} | {cell('ratio')} | "
                     f"{cell('http_requests')} | {cell('429s')} | {cell('cpu_ms_per_request')} | {cell('peak_rss_mb')} | "
                     f"{r['target']}{' (' + extra + ')' if extra else ''} | {'yes' if r['met'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs per scenario")
    parser.add_argument("--only", default="overhead,barriers,rounds,synthesis,stragglers,early,batch,overload,scattered,"
                                          "startup,gateway,outage429,memory")
    parser.add_argument("--json-out", default=str(HERE / "results.json"))
    parser.add_argument("--seed", type=int, help="the latency draw (default: a new one each run; printed, to repeat it)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    moa.setup_logging(False)
    logging.getLogger("moa").setLevel(logging.ERROR)  # cut stragglers and 429s are expected here
    with tempfile.TemporaryDirectory() as workdir:
        rows = asyncio.run(run(set(args.only.split(",")), args.quick, Path(workdir), seed))
    print(table(rows))
    print(f"\nseed {seed} (repeat this draw with --seed {seed})")
    Path(args.json_out).write_text(json.dumps({"rows": rows, "quick": args.quick, "seed": seed}, indent=2) + "\n")
    print(f"\nwritten to {args.json_out}")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
