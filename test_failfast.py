"""Failing fast and loud (issue 20, items 10, 11 and 14): a deadline on every question, a batch
that stops when the endpoint accepts nothing or when its first questions all fail alike, and
notes that are a feature working, not a warning.

The clock logic runs on a VirtualClock; what sockets and time do together runs through the real
CLI as a subprocess against bench/fake_endpoint.py on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, VirtualClock, answer_in_virtual_time, test_runtime

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("endpoint_env")


def virtual_config(**changes) -> moa.Config:
    """3 solvers, 1 judge, no files, no backoff: 10 calls a debate."""
    return moa.Config(URL, FAKE_KEY, num_workers=3, num_judges=1, retry_base_delay=0, straggler_factor=0,
                      enable_file_logging=False, **changes)


def cli(tmp_path: Path, url: str, *argv: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    """The real CLI against ``url``: (the finished process, seconds it took)."""
    environment = {**os.environ, "PROXY_URL": url, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"),
                   "MOA_ENV_FILE": os.devnull, "NUM_WORKERS": "2", "NUM_JUDGES": "1", "ENABLE_REBUTTAL": "false",
                   **env}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), *argv], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return done, time.monotonic() - started


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def numbered_questions(path: Path, count: int) -> Path:
    path.write_text("".join(f"Q{i}\n" for i in range(count)))
    return path


# --- item 14: a feature working is not a warning ------------------------------------------------


@pytest.mark.parametrize("flags", [["--early-exit"], ["--max-calls", "5"]], ids=["early-exit", "budget"])
@respx.mock
def test_an_early_exit_or_a_budget_cut_is_no_warning_in_a_batch(flags, tmp_path, monkeypatch, capsys) -> None:
    """An early exit (and a budget's planned cut) is the feature doing its job: no warning line a
    question in a batch; the transcript's notes still say what happened."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    monkeypatch.setenv("NUM_JUDGES", "1")
    respx.post(URL).mock(side_effect=FakeModel())
    out = tmp_path / "o.jsonl"
    code = moa.main(["-f", str(numbered_questions(tmp_path / "q.txt", 5)), "-o", str(out), *flags],
                    runtime=test_runtime())
    assert code == moa.EXIT_OK
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    notes = Path(lines_of(out)[0]["transcript"]).read_text().split("=== Notes ===", 1)[1]
    assert ("early exit" if flags == ["--early-exit"] else "budget: skipped") in notes
