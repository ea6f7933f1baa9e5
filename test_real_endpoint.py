"""The CLI against a live model: skipped unless MOA_REAL_ENDPOINT names a chat-completions base URL.

    MOA_REAL_ENDPOINT=http://127.0.0.1:8088/v1 python -m pytest -q test_real_endpoint.py

bench/real_model.py starts such a server (llama.cpp's, SmolLM2-135M-Instruct). respx proves the logic; this
proves that a real server's replies (slow, cut off, off-format) still go end to end: exit 0, an answer, a transcript.
What the model answers is not checked: a 135M model is often wrong, and accuracy is bench/'s business.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REAL_ENDPOINT

HERE = Path(__file__).resolve().parent

# A small debate a shared CPU server finishes in minutes: the settings the README gives small models (greedy,
# no straggler cuts on one server) with two solvers, one judge and no rebuttal, so the test checks the pipe.
SMALL_DEBATE = {
    "API_KEY": "local", "TEMPERATURE": "0", "STRAGGLER_FACTOR": "0", "MAX_TOKENS": "128", "JUDGE_MAX_TOKENS": "256",
    "NUM_WORKERS": "2", "NUM_JUDGES": "1", "MIN_VALID_ANSWERS": "1", "ENABLE_REBUTTAL": "false", "MAX_RETRIES": "1",
    "REQUEST_TIMEOUT": "900", "STALL_TIMEOUT": "0", "QUESTION_DEADLINE": "0",
}
RUN_TIMEOUT_S = 1500  # a busy shared server queues each call for minutes; the test waits rather than fails


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """moa_pipeline.py as a user runs it, against $MOA_REAL_ENDPOINT, logging into tmp_path/logs."""
    env = {**os.environ, **SMALL_DEBATE, "PROXY_URL": os.environ[REAL_ENDPOINT], "LOG_DIR": str(tmp_path / "logs")}
    return subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), *args], env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


@pytest.mark.real_endpoint
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
@pytest.mark.parametrize("question", ["What is 2 + 3?"], ids=["small-sum"])
def test_a_question_runs_end_to_end_against_a_live_model(tmp_path: Path, question: str) -> None:
    """A short question through the real CLI and a real server exits 0, prints an Answer line and writes its transcript."""
    done = run_cli(tmp_path, "-q", question)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    answers = [line for line in done.stdout.splitlines() if line.startswith("Answer: ") and line[8:].strip()]
    assert answers, f"no Answer line on stdout:\n{done.stdout}"
    transcripts = sorted((tmp_path / "logs").glob("*.txt"))
    assert transcripts and question in transcripts[0].read_text(encoding="utf-8"), "no transcript of the run"
