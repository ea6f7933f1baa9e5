"""How much of a debate's prompts a prefix cache can serve: before and after the prefix-friendly layout (issue 25).

    python bench/prefix_cache.py                        # this checkout against main, ROUNDS=1 and 3
    python bench/prefix_cache.py --before 9385734       # against another commit
    python bench/prefix_cache.py --reasoning-chars 600  # shorter solver replies
    python bench/prefix_cache.py --reply-chars 1200     # longer critiques and rebuttals too

Each run is one fresh question through the real CLI (`python moa_pipeline.py -q ... --json`, default settings but
ROUNDS, and MIN_JUDGE_CONFIDENCE=0: one pass, no confidence rerun, whose second debate would blur the comparison) against bench/fake_endpoint.py with --prefix-cache: an unbounded prefix cache, where a request's cached
share is its longest common prefix with any earlier request's prompt, messages serialised in order (vLLM's
automatic prefix caching, SGLang's RadixAttention, llama.cpp's slot reuse and OpenAI's prompt caching all reuse
the longest cached prefix). Solvers write a --reasoning-chars reasoning (2,400 by default, a real model's length;
critiques and rebuttals one sentence unless --reply-chars; every reply differs from its first words, as a model's),
half of their answers wrong (--wrong-rate 0.5) so that later rounds run. The old code is `git show REV:` of
moa_pipeline.py, parsing.py and prompts.py in a temporary folder; nothing in the checkout changes.

Prints, per code and ROUNDS, the cached share of prompt characters per phase (later rounds each on their own) and for
the whole debate, and the targets: generation >= 65%, a later round >= 50%.

    python bench/prefix_cache.py --real http://127.0.0.1:8088 --rounds 1   # a llama.cpp server already running

--real sends the same debate (REAL_SETTINGS: 5 solvers, 2 judges, MAX_TOKENS=128) to a llama.cpp server through a
small logging proxy and counts the server's own figures instead: each reply's `timings.cache_n` (prompt tokens
reused from a slot's cache) against `timings.prompt_n` (tokens computed). llama.cpp keeps one prompt per slot, so
this is far below the unbounded model's share. Each run gets its own SYSTEM_PROMPT ("Run <n>."), which opens every
prompt: no run reuses what an earlier run left in the slots. It also prints the run's format counts (--json's
"format": replies read, read only by the last tier, failed per phase), which say whether replies still parse.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE)]
from batch_memory import start_fake_endpoint  # noqa: E402

CODE_FILES = ("moa_pipeline.py", "parsing.py", "prompts.py")
REAL_QUESTION = "What is 17 * 23?"
QUESTION = "A train leaves at 9:40 and arrives at 13:05. It stops twice for 12 minutes each. How long is it moving?"
PHASE_ORDER = ("generate", "critique", "rebuttal", "revise", "judge", "synthesis")
REAL_SETTINGS = {"NUM_WORKERS": "5", "NUM_JUDGES": "2", "MAX_TOKENS": "128", "JUDGE_MAX_TOKENS": "128",
                 "TEMPERATURE": "0.3", "STRAGGLER_FACTOR": "0", "REQUEST_TIMEOUT": "900", "STALL_TIMEOUT": "0",
                 "QUESTION_DEADLINE": "0", "MIN_JUDGE_CONFIDENCE": "0"}  # one pass: no confidence rerun


def checkout(rev: str, folder: Path) -> Path:
    """The code files of ``rev`` in ``folder`` (git show: the worktree is never touched)."""
    for name in CODE_FILES:
        text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True).stdout
        (folder / name).write_bytes(text)
    return folder


def logging_proxy(upstream: str, events: list[dict[str, Any]]) -> ThreadingHTTPServer:
    """A proxy on a free port that passes each request to ``upstream`` and notes its reply's llama.cpp timings."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = urllib.request.Request(upstream.rstrip("/") + self.path, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=900) as reply:  # noqa: S310 (our own server)
                    status, data = reply.status, reply.read()
            except urllib.error.HTTPError as error:  # passed on as it came: the pipeline decides what it means
                status, data = error.code, error.read()
            try:
                timings = json.loads(data).get("timings") or {}
            except (ValueError, AttributeError):
                timings = {}
            events.append({"phase": self.headers.get("X-MoA-Phase"), "round": self.headers.get("X-MoA-Round", "1"),
                           "cached_chars": timings.get("cache_n", 0),
                           "prompt_chars": timings.get("cache_n", 0) + timings.get("prompt_n", 0)})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy


def run_cli(code: Path, question: str, url: str, rounds: int, settings: dict[str, str], workdir: Path,
            timeout: float) -> subprocess.CompletedProcess[str]:
    """One question (--json) through ``code``'s CLI at ``url``, its files in ``workdir``."""
    env = {**os.environ, **settings, "PROXY_URL": url, "API_KEY": "bench-key-0123", "ROUNDS": str(rounds),
           "ENABLE_FILE_LOGGING": "false", "LOG_DIR": str(workdir / "logs"), "MOA_CONFIG_HOME": str(workdir / "home"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, str(code / "moa_pipeline.py"), "-q", question, "--json"], env=env,
                          cwd=workdir, capture_output=True, text=True, timeout=timeout)


def run_real(code: Path, rounds: int, upstream: str, workdir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One question through ``code``'s CLI against a llama.cpp server: its cache_n events and the run's format."""
    events: list[dict[str, Any]] = []
    proxy = logging_proxy(upstream, events)
    settings = {**REAL_SETTINGS, "SYSTEM_PROMPT": f"Run {time.time_ns()}."}
    try:
        done = run_cli(code, REAL_QUESTION, f"http://127.0.0.1:{proxy.server_address[1]}/v1", rounds, settings,
                       workdir, timeout=3000)
    finally:
        proxy.shutdown()
    if not done.stdout.strip():
        raise RuntimeError(f"{code}: exit {done.returncode}: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return [{**e, "phase": e["phase"] or "?"} for e in events], {"format": result.get("format"),
                                                                   "status": result.get("status"),
                                                                   "final_answer": result.get("final_answer")}


def run_debate(code: Path, rounds: int, lengths: tuple[int, int], seed: int, workdir: Path) -> list[dict[str, Any]]:
    """One question through ``code``'s CLI; the fake's start events (phase, round, prompt and cached characters)."""
    log = workdir / f"requests-{code.name}-{rounds}.jsonl"
    log.unlink(missing_ok=True)  # the fake appends: one run's requests only
    process, url = start_fake_endpoint("--prefix-cache", "--reasoning-chars", str(lengths[0]), "--reply-chars",
                                       str(lengths[1]), "--wrong-rate", "0.5", "--seed", str(seed), "--log", str(log))
    try:
        done = run_cli(code, QUESTION, url, rounds, {"MIN_JUDGE_CONFIDENCE": "0"}, workdir, timeout=300)
    finally:
        process.kill()
        process.wait()
    if done.returncode not in (0, 3):  # 3: answered with low confidence, still a whole debate
        raise RuntimeError(f"{code}: exit {done.returncode}: {done.stderr[-2000:]}")
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "start"]


def debate_with_rounds(code: Path, rounds: int, lengths: tuple[int, int], seed: int,
                       workdir: Path) -> list[dict[str, Any]]:
    """run_debate, again with the next seed (up to 10 tries) while the run is not the one to measure: one pass of 5
    solvers (a judge that found no majority can still call a rerun, a second debate) and, with ROUNDS > 1, a later
    round (the solvers may happen to agree before it). The fake draws each answer in the order requests arrive, so a
    seed alone does not fix either."""
    for tried in range(10):
        events = run_debate(code, rounds, lengths, seed + tried, workdir)
        one_pass = sum(e["phase"] == "generate" for e in events) == 5
        if one_pass and (rounds == 1 or any(e["phase"] == "revise" for e in events)):
            return events
    return events


def shares(events: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """Cached share and prompt characters per phase (a later round as "revise rN") and for the whole debate."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for event in events:
        phase = event["phase"] + (f" r{event['round']}" if event["phase"] == "revise" else "")
        for key in (phase, "whole debate"):
            totals[key][0] += event["cached_chars"]
            totals[key][1] += event["prompt_chars"]
    return {key: (cached / chars if chars else 0.0, chars) for key, (cached, chars) in totals.items()}


def ordered(keys: set[str]) -> list[str]:
    return sorted(keys, key=lambda k: (k == "whole debate", PHASE_ORDER.index(k.split()[0]) if k != "whole debate"
                                       else 0, k))


def table(results: dict[tuple[str, int], dict[str, tuple[float, int]]]) -> str:
    """Markdown: one row per phase, one column per (code, ROUNDS): the cached share (prompt characters)."""
    keys = ordered({key for row in results.values() for key in row})
    head = "| phase | " + " | ".join(f"{code}, ROUNDS={rounds}" for code, rounds in results) + " |"
    lines = [head, "|---" * (len(results) + 1) + "|"]
    for key in keys:
        cells = [f"{row[key][0]:.0%} ({row[key][1]:,})" if key in row else "" for row in results.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="the commit to compare with (default: main)")
    parser.add_argument("--rounds", default="1,3", help="ROUNDS settings to run, comma-separated")
    parser.add_argument("--reasoning-chars", type=int, default=2400, help="each solver's reasoning")
    parser.add_argument("--reply-chars", type=int, default=1200, help="each critique and rebuttal (0: one sentence)")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--json", action="store_true", help="print the shares as JSON instead of a table")
    parser.add_argument("--real", metavar="URL", help="a llama.cpp server (http://host:port): count its cache_n")
    args = parser.parse_args()
    results: dict[tuple[str, int], dict[str, tuple[float, int]]] = {}
    formats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        (workdir / "before").mkdir()
        old = checkout(args.before, workdir / "before")
        for rounds in map(int, args.rounds.split(",")):
            for label, code in ((f"before ({args.before})", old), ("after", ROOT)):
                if args.real:
                    events, formats[f"{label}, ROUNDS={rounds}"] = run_real(code, rounds, args.real, workdir)
                else:
                    events = debate_with_rounds(code, rounds, (args.reasoning_chars, args.reply_chars), args.seed,
                                                workdir)
                results[(label, rounds)] = shares(events)
    if args.json:
        print(json.dumps({f"{label}, ROUNDS={rounds}": row for (label, rounds), row in results.items()}, indent=1))
    else:
        print(table(results))
        print("\n(prompt tokens: cache_n + prompt_n)" if args.real else
              "\ntargets: generate >= 65%, a later round (revise r2, r3) >= 50%")
        for name, seen in formats.items():
            print(f"{name}: {json.dumps(seen)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
