"""Peak memory of a batch over a very large questions file.

    python bench/batch_memory.py                 # 100,000 questions, stop after 2,000
    python bench/batch_memory.py --questions 20000 --answered 500

Generates a JSONL file of QUESTIONS questions, runs the real CLI on it against
bench/fake_endpoint.py with zero latency, sends SIGTERM once ANSWERED results
are in the output (the CLI then stops cleanly), and reports the CLI's peak RSS
from the kernel's accounting of the child process. The input is read as a
stream, so the peak should not depend on QUESTIONS. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_fake_endpoint(*args: str) -> tuple[subprocess.Popen, str]:
    """bench/fake_endpoint.py on a free port; returns the process and its base URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "fake_endpoint.py"), "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening" not in line:
        process.kill()
        raise RuntimeError("the fake endpoint did not start")
    return process, f"http://127.0.0.1:{port}/v1"


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def measure(questions: int, answered: int, workdir: Path) -> dict:
    source = workdir / "questions.jsonl"
    with open(source, "w") as handle:
        for n in range(questions):
            handle.write(json.dumps({"id": f"q{n}", "question": f"What is {n} * 3? " + "pad " * 20,
                                     "answer": str(3 * n)}) + "\n")
    output = workdir / "out.jsonl"
    server, url = start_fake_endpoint("--latency", "0")
    env = {**os.environ, "PROXY_URL": url, "API_KEY": "bench-key", "ENABLE_FILE_LOGGING": "false",
           "NUM_WORKERS": "5", "NUM_JUDGES": "3"}
    started = time.monotonic()
    try:
        cli = subprocess.Popen([sys.executable, str(ROOT / "moa_pipeline.py"), "-f", str(source), "-o", str(output),
                                "--concurrency", "8"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while count_lines(output) < answered and cli.poll() is None:
            time.sleep(0.2)
        cli.send_signal(signal.SIGTERM)
        code = cli.wait(timeout=120)
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
    # ru_maxrss of waited-for children, in KiB on Linux; the CLI is the only child that ran Python
    # at batch scale (the fake server is tiny, and the larger of the two is reported).
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"questions_in_file": questions, "answered": count_lines(output), "exit_code": code,
            "input_mb": round(source.stat().st_size / 1e6, 1), "peak_rss_mb": round(peak_kib / 1024, 1),
            "wall_s": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=100_000)
    parser.add_argument("--answered", type=int, default=2_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(measure(args.questions, args.answered, Path(workdir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
