"""How much of a debate's prompts a prefix cache can serve: before and after the prefix-friendly layout (issue 25).

    python bench/prefix_cache.py                        # this checkout against main, ROUNDS=1 and 3
    python bench/prefix_cache.py --before 9385734       # against another commit
    python bench/prefix_cache.py --reasoning-chars 600  # shorter solver replies
    python bench/prefix_cache.py --reply-chars 1200     # longer critiques and rebuttals too

Each run is one fresh question through the real CLI (`python moa_pipeline.py -q ... --json`, default settings but
ROUNDS) against bench/fake_endpoint.py with --prefix-cache: an unbounded prefix cache, where a request's cached
share is its longest common prefix with any earlier request's prompt, messages serialised in order (vLLM's
automatic prefix caching, SGLang's RadixAttention, llama.cpp's slot reuse and OpenAI's prompt caching all reuse
the longest cached prefix). Solvers write a --reasoning-chars reasoning (2,400 by default, a real model's length;
critiques and rebuttals one sentence unless --reply-chars; every reply differs from its first words, as a model's),
half of their answers wrong (--wrong-rate 0.5) so that later rounds run. The old code is `git show REV:` of
moa_pipeline.py, parsing.py and prompts.py in a temporary folder; nothing in the checkout changes.

Prints, per code and ROUNDS, the cached share of prompt characters per phase (later rounds each on their own) and for
the whole debate, and the targets: generation >= 65%, a later round >= 50%.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE)]
from batch_memory import start_fake_endpoint  # noqa: E402

CODE_FILES = ("moa_pipeline.py", "parsing.py", "prompts.py")
QUESTION = "A train leaves at 9:40 and arrives at 13:05. It stops twice for 12 minutes each. How long is it moving?"
PHASE_ORDER = ("generate", "critique", "rebuttal", "revise", "judge", "synthesis")


def checkout(rev: str, folder: Path) -> Path:
    """The code files of ``rev`` in ``folder`` (git show: the worktree is never touched)."""
    for name in CODE_FILES:
        text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True).stdout
        (folder / name).write_bytes(text)
    return folder


def run_debate(code: Path, rounds: int, lengths: tuple[int, int], seed: int, workdir: Path) -> list[dict[str, Any]]:
    """One question through ``code``'s CLI; the fake's start events (phase, round, prompt and cached characters)."""
    log = workdir / f"requests-{code.name}-{rounds}.jsonl"
    process, url = start_fake_endpoint("--prefix-cache", "--reasoning-chars", str(lengths[0]), "--reply-chars",
                                       str(lengths[1]), "--wrong-rate", "0.5", "--seed", str(seed), "--log", str(log))
    env = {**os.environ, "PROXY_URL": url, "API_KEY": "bench-key-0123", "ROUNDS": str(rounds),
           "ENABLE_FILE_LOGGING": "false", "LOG_DIR": str(workdir / "logs"), "MOA_CONFIG_HOME": str(workdir / "home"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run([sys.executable, str(code / "moa_pipeline.py"), "-q", QUESTION, "--json"], env=env,
                              cwd=workdir, capture_output=True, text=True, timeout=300)
    finally:
        process.kill()
        process.wait()
    if done.returncode not in (0, 3):  # 3: answered with low confidence, still a whole debate
        raise RuntimeError(f"{code}: exit {done.returncode}: {done.stderr[-2000:]}")
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "start"]


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
    args = parser.parse_args()
    results: dict[tuple[str, int], dict[str, tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        (workdir / "before").mkdir()
        old = checkout(args.before, workdir / "before")
        for rounds in map(int, args.rounds.split(",")):
            for label, code in ((f"before ({args.before})", old), ("after", ROOT)):
                events = run_debate(code, rounds, (args.reasoning_chars, args.reply_chars), args.seed, workdir)
                results[(label, rounds)] = shares(events)
    if args.json:
        print(json.dumps({f"{label}, ROUNDS={rounds}": row for (label, rounds), row in results.items()}, indent=1))
    else:
        print(table(results))
        print("\ntargets: generate >= 65%, a later round (revise r2, r3) >= 50%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
