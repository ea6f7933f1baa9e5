"""The response cache on a rerun: a batch of questions through the real CLI against bench/fake_endpoint.py, three
times with CACHE=on and one cache file: fresh, the same again, then with only NUM_JUDGES changed (3 -> 5).

    python bench/response_cache.py [--questions 100] [--latency 0.2] [--concurrency 16]

Prints a markdown table: per run, the requests the endpoint saw (its --log), the cache hits the results report
(usage.cache_hits), the questions answered, and wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
from batch_memory import start_fake_endpoint  # noqa: E402

RUNS = [("first run, empty cache", {}), ("the same batch again", {}), ("again, NUM_JUDGES=5", {"NUM_JUDGES": "5"})]


def run_batch(workdir: Path, name: str, url: str, concurrency: int, settings: dict[str, str]) -> dict[str, float]:
    """One CLI batch into its own output: wall time, and what its result lines say."""
    environ = {**os.environ, "PROXY_URL": url, "API_KEY": "bench-key-0123", "CACHE": "on",
               "CACHE_PATH": str(workdir / "cache.sqlite3"), "ENABLE_FILE_LOGGING": "false", **settings}
    output = workdir / f"{name}.jsonl"
    started = time.monotonic()
    subprocess.run([sys.executable, str(HERE.parent / "moa_pipeline.py"), "-f", str(workdir / "questions.jsonl"),
                    "-o", str(output), "--concurrency", str(concurrency), "--logs", "none"],
                   env=environ, check=True, capture_output=True)
    wall = time.monotonic() - started
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    return {"wall": wall, "answered": sum(line["status"] == "ok" for line in lines),
            "hits": sum(line["usage"]["cache_hits"] for line in lines),
            "http_requests": sum(line["http_requests"] for line in lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp())
    (workdir / "questions.jsonl").write_text("".join(
        json.dumps({"id": f"q{n}", "question": f"What is {n} * 17?"}) + "\n" for n in range(args.questions)))
    log = workdir / "requests.jsonl"
    process, url = start_fake_endpoint("--latency", str(args.latency), "--log", str(log))
    print(f"{args.questions} questions, fake endpoint latency {args.latency}s, --concurrency {args.concurrency}\n")
    print("| run | requests sent | cache hits | http_requests (results) | answered | wall s |\n|---|---|---|---|---|---|")
    try:
        for n, (name, settings) in enumerate(RUNS, 1):
            log.write_text("")
            found = run_batch(workdir, f"run{n}", url, args.concurrency, settings)
            sent = sum(json.loads(line)["event"] == "start" for line in log.read_text().splitlines())
            print(f"| {n}. {name} | {sent} | {found['hits']:.0f} | {found['http_requests']:.0f} | "
                  f"{found['answered']:.0f}/{args.questions} | {found['wall']:.1f} |")
    finally:
        process.kill()


if __name__ == "__main__":
    main()
