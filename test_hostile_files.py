"""Hostile files and file descriptors: the real CLI, as a subprocess, against bench/fake_endpoint.py.

Output paths that are the input in disguise, planted symbolic links, a really full filesystem,
SIGTERM, questions files built to crash a parser, and stdin or stdout closed or broken. Each
case ends with the documented exit code, at most one `error:` line and never a traceback, and
leaves no file outside the tool's own damaged.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import moa_pipeline as moa
from conftest import FakeServer

HERE = Path(__file__).resolve().parent
CLI = HERE / "moa_pipeline.py"
FAKE_KEY = "sk-hostile-SECRET-0123456789abcdef"
CALLS_PER_QUESTION = 3 + 3 + 3 + 2  # NUM_WORKERS=3: generate, critique, rebuttal; NUM_JUDGES=2


@pytest.fixture(scope="module")
def silent(tmp_path_factory):
    """One endpoint for the tests that must send nothing; each checks its log stays empty."""
    endpoint = FakeServer(tmp_path_factory.mktemp("silent"))
    yield endpoint
    endpoint.close()


SMALL = {"NUM_WORKERS": "2", "NUM_JUDGES": "1", "ENABLE_REBUTTAL": "false"}  # 3 calls a question


def environment(tmp_path: Path, url: str, **env: str) -> dict[str, str]:
    return {**os.environ, "PROXY_URL": url, "API_KEY": FAKE_KEY, "LOG_DIR": str(tmp_path / "logs"),
            "RETRY_BASE_DELAY": "0.01", "RETRY_MAX_DELAY": "0.2", "NUM_WORKERS": "3", "NUM_JUDGES": "2",
            "MIN_JUDGE_CONFIDENCE": "0", **env}


def cli(tmp_path: Path, url: str, *argv: str, timeout: float = 60, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        prefix: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    """Run the CLI in tmp_path (``prefix`` wraps it, e.g. in bash to close a descriptor first)."""
    return subprocess.run([*prefix, sys.executable, str(CLI), *argv], env=environment(tmp_path, url, **env),
                          cwd=tmp_path, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_clean_error(done: subprocess.CompletedProcess, code: int, words: str = "") -> None:
    """Exit ``code``, stderr exactly one `error:` line (holding ``words``), no traceback."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "Task exception was never retrieved" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert words in lines[0]


def output_rows(path: Path) -> list[dict]:
    """The output's lines, each of which must be a whole JSON line."""
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "a torn last line"
    return [json.loads(line) for line in raw.splitlines()]


def write_questions(path: Path, count: int, pad: int = 0) -> list[str]:
    ids = [f"q{n}" for n in range(count)]
    path.write_text("".join(json.dumps({"id": i, "question": f"Question {i}: what is 17 * 23? " + "pad " * pad}) + "\n"
                            for i in ids))
    return ids


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling a subprocess's files


def ignore_hangup() -> None:
    """What nohup does before it starts a command."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def terminate_when(argv: list[str], env: dict[str, str], cwd: Path, ready, what: str,
                   number: signal.Signals = signal.SIGTERM, nohup: bool = False) -> tuple[int, str, str]:
    """Start the CLI (as under nohup if asked), send ``number`` (SIGTERM) once ``ready()`` holds;
    (exit code, stdout, stderr)."""
    process = subprocess.Popen([sys.executable, str(CLI), *argv], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ignore_hangup if nohup else None)
    try:
        wait_for(ready, what)
        process.send_signal(number)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    return process.returncode, out, err


def batch_folder(tmp_path: Path, output: str = "out.jsonl") -> Path:
    """The log folder of a batch writing tmp_path/output with LOG_DIR=tmp_path/logs."""
    return moa.batch_log_folder(moa.Config("http://127.0.0.1/v1", "k", log_dir=str(tmp_path / "logs")), tmp_path / output)


def transcripts(log_dir: Path) -> list[Path]:
    return sorted(p for p in log_dir.glob("*.txt") if not p.is_symlink())


# --- 1. an output that is the questions file in disguise -------------------------------------------

QUESTIONS = b'{"id": "a", "question": "What is 17 * 23?"}\n{"id": "b", "question": "Is 7 prime?"}\n# last, no newline'


def _same_path(tmp: Path) -> tuple[str, str, Path]:
    return str(tmp / "q.jsonl"), str(tmp / "q.jsonl"), tmp / "q.jsonl"


def _dot_slash(tmp: Path) -> tuple[str, str, Path]:
    return "./q.jsonl", "q.jsonl", tmp / "q.jsonl"


def _symlink(tmp: Path) -> tuple[str, str, Path]:
    (tmp / "out.jsonl").symlink_to(tmp / "q.jsonl")
    return "q.jsonl", "out.jsonl", tmp / "q.jsonl"


def _hard_link(tmp: Path) -> tuple[str, str, Path]:
    os.link(tmp / "q.jsonl", tmp / "out.jsonl")
    return "q.jsonl", "out.jsonl", tmp / "q.jsonl"


def _symlinked_folder(tmp: Path) -> tuple[str, str, Path]:
    (tmp / "alias").symlink_to(tmp, target_is_directory=True)
    return "q.jsonl", "alias/q.jsonl", tmp / "q.jsonl"


def _as_summary(tmp: Path) -> tuple[str, str, Path]:
    (tmp / "q.jsonl").rename(tmp / "out.jsonl.summary.json")
    return "out.jsonl.summary.json", "out.jsonl", tmp / "out.jsonl.summary.json"


def _as_lock(tmp: Path) -> tuple[str, str, Path]:
    (tmp / "q.jsonl").rename(tmp / "out.jsonl.lock")
    return "out.jsonl.lock", "out.jsonl", tmp / "out.jsonl.lock"


@pytest.mark.parametrize("spelling", [_same_path, _dot_slash, _symlink, _hard_link, _symlinked_folder, _as_summary,
                                      _as_lock],
                         ids=["same-path", "dot-slash", "symlink", "hard-link", "symlinked-folder",
                              "input-is-summary", "input-is-lock"])
def test_output_that_is_the_input_is_refused(spelling, silent, tmp_path) -> None:
    """An output that is the questions file under any spelling: exit 2, one error line, the questions byte-for-byte intact."""
    (tmp_path / "q.jsonl").write_bytes(QUESTIONS)
    questions, output, source = spelling(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = cli(tmp_path, silent.url, "-f", questions, "-o", output)
    assert_one_clean_error(done, 2)
    assert source.read_bytes() == QUESTIONS
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no lock, summary or output was created"
    assert silent.starts() == []


# --- 2. planted symbolic links are never followed ----------------------------------------------------

VICTIM_TEXT = b"precious: nobody may write here\n"


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the output folder and LOG_DIR, and a name beside it that must never come to exist."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = folder / "victim.txt"
    path.write_bytes(VICTIM_TEXT)
    return path


def assert_victim_untouched(victim: Path) -> None:
    assert victim.read_bytes() == VICTIM_TEXT
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"], "nothing created through a dangling link"


@pytest.mark.parametrize("suffix, dangling", [("", False), (".lock", False), (".lock", True)],
                         ids=["output-itself", "lock", "lock-dangling"])
def test_symlink_at_the_output_or_its_lock_is_refused(suffix: str, dangling: bool, victim, silent, tmp_path) -> None:
    """A symlink at <output> or <output>.lock (even a dangling one): exit 2, one error line, the target untouched."""
    (tmp_path / "q.txt").write_text("Q1?\nQ2?\n")
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "out.jsonl"
    target = victim.parent / "would-be-created" if dangling else victim
    Path(str(output) + suffix).symlink_to(target)
    done = cli(tmp_path, silent.url, "-f", "q.txt", "-o", str(output))
    assert_one_clean_error(done, 2, "symbolic link")
    assert_victim_untouched(victim)
    assert silent.starts() == []


@pytest.mark.parametrize("suffix", [".summary.json.tmp", ".tmp", ".summary.json"])
def test_symlink_at_a_sidecar_name_is_not_followed(suffix: str, victim, server, tmp_path) -> None:
    """Symlinks at <output>.tmp-style names: the batch runs (exit 0), the target is untouched, the summary is a real file."""
    endpoint = server()
    (tmp_path / "q.txt").write_text("Q1?\nQ2?\n")
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "out.jsonl"
    Path(str(output) + suffix).symlink_to(victim)
    done = cli(tmp_path, endpoint.url, "-f", "q.txt", "-o", str(output))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert_victim_untouched(victim)
    summary = Path(str(output) + ".summary.json")
    assert summary.is_file() and not summary.is_symlink()
    assert json.loads(summary.read_text())["status"] == "finished"
    assert not output.is_symlink() and [r["status"] for r in output_rows(output)] == ["ok", "ok"]


def test_symlinks_at_transcript_names_are_not_followed(victim, server, tmp_path) -> None:
    """LOG_DIR full of symlinks at every transcript and trace name of the coming seconds: none is followed."""
    endpoint = server()
    logs = tmp_path / "logs"
    logs.mkdir()
    now = datetime.now()
    for second in range(-1, 8):
        stamp = (now + timedelta(seconds=second)).strftime("%Y%m%d_%H%M%S")
        for n in ("", "_1", "_2"):
            (logs / f"moa_run_{stamp}{n}.txt").symlink_to(victim)
            (logs / f"moa_run_{stamp}{n}.jsonl").symlink_to(victim.parent / "would-be-created")
    done = cli(tmp_path, endpoint.url, "-q", "What is 17 * 23?", "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "could not write" not in done.stderr
    assert_victim_untouched(victim)
    result = json.loads(done.stdout)
    transcript, trace = Path(result["transcript"]), Path(result["trace"])
    assert transcript.is_file() and not transcript.is_symlink() and trace.is_file() and not trace.is_symlink()
    assert "=== Verdict ===" in transcript.read_text()
    assert json.loads(trace.read_text().splitlines()[-1])["type"] == "verdict"


def test_traces_only_batch_gives_every_question_a_trace(server, tmp_path) -> None:
    """ENABLE_FILE_LOGGING=false with ENABLE_JSONL_TRACE=true: a batch finishes, one trace per question and no .txt."""
    endpoint = server()
    (tmp_path / "q.txt").write_text("".join(f"Q{n}?\n" for n in range(6)))
    done = cli(tmp_path, endpoint.url, "-f", "q.txt", "-o", "out.jsonl", "--concurrency", "6",
               ENABLE_FILE_LOGGING="false", ENABLE_JSONL_TRACE="true")
    assert "Traceback" not in done.stderr
    assert done.returncode == 0 and error_lines(done.stderr) == [], done.stderr
    assert len(list(batch_folder(tmp_path).glob("*.jsonl"))) == 6, "LOG_DIR/<output name>-<hash>/<id>.jsonl"
    assert list((tmp_path / "logs").rglob("*.txt")) == []


# --- 3. a really full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path, request):
    """mount(size) -> a fresh tmpfs of that size under tmp_path, unmounted at the end (root on Linux only)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mounted: list[Path] = []

    def unmount() -> None:
        for point in mounted:
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)

    request.addfinalizer(unmount)

    def mount(size: str) -> Path:
        point = tmp_path / f"small{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    return mount


def fill(folder: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on folder's filesystem."""
    stat = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"x" * (stat.f_bavail * stat.f_frsize - leave))
    return filler


@pytest.mark.parametrize("where, size, leave, pad", [("output", "256k", 32 * 1024, 375), ("logs", "2m", 80 * 1024, 0)],
                         ids=["output-on-full-disk", "logs-on-full-disk"])
def test_disk_full_stops_cleanly_and_resumes(where: str, size: str, leave: int, pad: int, small_fs, server,
                                             tmp_path) -> None:
    """Disk full under the output or LOG_DIR: exit 1, one error line, whole ok lines, no new questions; then a resume."""
    endpoint = server()
    disk = small_fs(size)
    ids = write_questions(tmp_path / "q.jsonl", 30, pad)
    output = disk / "out.jsonl" if where == "output" else tmp_path / "out.jsonl"
    env = {"LOG_DIR": str(disk / "logs")} if where == "logs" else {}
    if where == "logs":
        (disk / "logs").mkdir()
    filler = fill(disk, leave)
    argv = ("-f", "q.jsonl", "-o", str(output), "--concurrency", "2")

    done = cli(tmp_path, endpoint.url, *argv, **env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Task exception was never retrieved" not in done.stderr
    [error] = error_lines(done.stderr)
    assert "No space left on device" in error
    rows = output_rows(output)
    assert all(r["status"] == "ok" for r in rows)
    started = endpoint.runs()
    assert len(started) <= len(rows) + 2, "at most the two questions in flight ran beyond the saved lines"
    assert len(started) < len(ids) and len(endpoint.starts()) < len(ids) * CALLS_PER_QUESTION

    filler.unlink()
    done = cli(tmp_path, endpoint.url, *argv, **env)
    assert done.returncode == 0, done.stderr
    assert error_lines(done.stderr) == [] and "Traceback" not in done.stderr
    rows = output_rows(output)
    assert sorted(r["id"] for r in rows) == sorted(ids) and all(r["status"] == "ok" for r in rows)


# --- 4, 5. SIGTERM --------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_on_one_question(number: signal.Signals, server, tmp_path) -> None:
    """SIGTERM (or SIGHUP: the terminal closed) with a request in flight: exit 130, 'interrupted' in the JSON
    and one stderr line, transcript and trace kept."""
    endpoint = server("--latency", "1.0")
    code, out, err = terminate_when(["-q", "Q?", "--json"], environment(tmp_path, endpoint.url), tmp_path,
                                    lambda: endpoint.starts(), "a request in flight", number)
    assert code == 130, err
    assert json.loads(out)["error"] == "interrupted"
    assert "Traceback" not in err and "error: interrupted" in err
    [transcript] = transcripts(tmp_path / "logs")
    text = transcript.read_text()
    assert text and "=== Verdict ===" in text
    trace = transcript.with_suffix(".jsonl").read_text().splitlines()
    assert json.loads(trace[-1])["type"] == "verdict"


def test_sigterm_during_a_batch_then_resume(server, tmp_path) -> None:
    """SIGTERM mid-batch: exit 130, summary 'interrupted' counting exactly the output's requests; a rerun finishes, each id once."""
    slow = server("--latency", "0.1")
    ids = write_questions(tmp_path / "q.jsonl", 10)
    output = tmp_path / "out.jsonl"
    argv = ["-f", "q.jsonl", "-o", "out.jsonl", "--concurrency", "2"]
    code, out, err = terminate_when(argv, environment(tmp_path, slow.url), tmp_path,
                                    lambda: output.exists() and output.read_bytes().count(b"\n") >= 1,
                                    "a first output line")
    assert code == 130, err
    assert "Traceback" not in err and "Task exception was never retrieved" not in err
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["status"] == "interrupted"
    rows = output_rows(output)
    assert summary["this_run"]["http_requests"] > 0
    assert summary["this_run"]["http_requests"] == sum(r["http_requests"] for r in rows)
    assert len(slow.runs()) < len(ids), "no new question started after the signal"
    answered = {r["id"] for r in rows if r["status"] == "ok"}

    fast = server()
    done = cli(tmp_path, fast.url, *argv)
    assert done.returncode == 0, done.stderr
    rows = output_rows(output)
    assert sorted(r["id"] for r in rows) == sorted(ids) and all(r["status"] == "ok" for r in rows)
    assert len(fast.runs()) == len(ids) - len(answered), "answered questions are not asked again"


# --- 6. hostile questions files ----------------------------------------------------------------------


def test_parser_bombs_in_the_questions_file_are_input_errors(server, tmp_path) -> None:
    """100,000-deep nesting, a 5,000-digit id, NUL and invalid UTF-8 lines: input errors by line number (exit 3), the rest answered once."""
    endpoint = server()
    lines = [
        json.dumps({"id": "a", "question": "What is 17 * 23?"}).encode(),
        b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        json.dumps({"id": "b", "question": "Is 7 prime?"}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"id": "c", "question": "What is 2 + 2?"}).encode(),
        b'{"id": ' + b"9" * 5000 + b', "question": "Q?"}',
        b'{"id": "nul", "question": "a\x00b"}',
        b'{"id": "utf", "question": "\xff\xfe?"}',
    ]
    (tmp_path / "q.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    argv = ("-f", "q.jsonl", "-o", "out.jsonl")

    done = cli(tmp_path, endpoint.url, *argv)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    for number in (2, 4, 6, 7, 8):
        assert f"input line {number}:" in done.stderr
    rows = output_rows(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == ["a", "b", "c"] and all(r["status"] == "ok" for r in rows)
    asked = len(endpoint.starts())
    assert len(endpoint.runs()) == 3

    done = cli(tmp_path, endpoint.url, *argv)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "input line 2:" in done.stderr and "input line 4:" in done.stderr
    assert len(endpoint.starts()) == asked, "the resume asks nothing again"
    assert sorted(r["id"] for r in output_rows(tmp_path / "out.jsonl")) == ["a", "b", "c"]


def test_over_long_question_is_an_input_error_never_a_request(server, tmp_path) -> None:
    """A question over MAX_QUESTION_CHARS: an input error (exit 3), no output line, no request, not on resume either."""
    endpoint = server()
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "short", "question": "What is 17 * 23?"}) + "\n"
                                      + json.dumps({"id": "long", "question": "x" * 80 + "?"}) + "\n")
    argv = ("-f", "q.jsonl", "-o", "out.jsonl")
    for run in (1, 2):
        done = cli(tmp_path, endpoint.url, *argv, MAX_QUESTION_CHARS="50")
        assert done.returncode == 3, done.stderr
        assert "Traceback" not in done.stderr
        assert "input line 2:" in done.stderr and "MAX_QUESTION_CHARS=50" in done.stderr
        rows = output_rows(tmp_path / "out.jsonl")
        assert [(r["id"], r["status"]) for r in rows] == [("short", "ok")]
        assert len(endpoint.runs()) == 1, f"run {run}: only the short question was ever asked"
        assert len(endpoint.starts()) == CALLS_PER_QUESTION


# --- 7. stdin closed or empty -----------------------------------------------------------------------

CLOSE_STDIN = ("bash", "-c", 'exec 0<&-; exec "$@"', "bash")


@pytest.mark.parametrize("argv, closed, words", [
    (("-q", "-"), True, "stdin is closed"),
    (("-f", "-", "-o", "out.jsonl"), True, "stdin is closed"),
    (("-q", "-"), False, "empty"),
], ids=["question-stdin-closed", "batch-stdin-closed", "question-stdin-empty"])
def test_stdin_closed_or_empty(argv, closed: bool, words: str, silent, tmp_path) -> None:
    """-q - or -f - with fd 0 closed (or -q - with empty stdin): exit 2, one error line, no request, nothing written."""
    done = cli(tmp_path, silent.url, *argv, prefix=CLOSE_STDIN if closed else ())
    assert_one_clean_error(done, 2, words)
    assert silent.starts() == []
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "logs").exists()


# --- 8. stdout closed or a broken pipe --------------------------------------------------------------

QUESTION_ARGV = ("-q", "What is 17 * 23?", "--json")
BATCH_ARGV = ("-f", "q.txt", "-o", "out.jsonl")


@pytest.mark.parametrize("argv", [QUESTION_ARGV, BATCH_ARGV], ids=["question", "batch"])
def test_stdout_closed(argv, server, tmp_path) -> None:
    """fd 1 closed: the run still completes (exit 0), its files are written, no traceback."""
    endpoint = server()
    (tmp_path / "q.txt").write_text("Q1?\nQ2?\n")
    done = cli(tmp_path, endpoint.url, *argv, stdout=None, prefix=("bash", "-c", 'exec 1>&-; exec "$@"', "bash"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert error_lines(done.stderr) == []
    if argv is BATCH_ARGV:
        assert [r["status"] for r in output_rows(tmp_path / "out.jsonl")] == ["ok", "ok"]
    else:
        assert len(transcripts(tmp_path / "logs")) == 1


@pytest.mark.parametrize("argv", [QUESTION_ARGV, QUESTION_ARGV[:2], BATCH_ARGV], ids=["question-json", "question", "batch"])
def test_stdout_broken_pipe(argv, server, tmp_path) -> None:
    """stdout a pipe nobody reads any more: no traceback, and the run's files are still complete."""
    endpoint = server()
    (tmp_path / "q.txt").write_text("Q1?\nQ2?\n")
    reader, writer = os.pipe()
    os.close(reader)  # every write to stdout now fails with EPIPE
    try:
        done = cli(tmp_path, endpoint.url, *argv, stdout=writer)
    finally:
        os.close(writer)
    if argv is BATCH_ARGV:
        assert [r["status"] for r in output_rows(tmp_path / "out.jsonl")] == ["ok", "ok"]
    else:
        assert "=== Verdict ===" in transcripts(tmp_path / "logs")[0].read_text()
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def test_a_symlink_at_the_batchs_log_folder_is_refused(victim, silent, tmp_path) -> None:
    """LOG_DIR/<output name>-<hash> is the tool's own folder: a link planted there is exit 2, nothing sent or written."""
    (tmp_path / "q.txt").write_text("Q1?\nQ2?\n")
    (tmp_path / "logs").mkdir()
    batch_folder(tmp_path).symlink_to(victim.parent, target_is_directory=True)
    done = cli(tmp_path, silent.url, "-f", "q.txt", "-o", "out.jsonl")
    assert_one_clean_error(done, 2, "symbolic link")
    assert_victim_untouched(victim)
    assert silent.starts() == []


@pytest.mark.parametrize("ignored", [False, True], ids=["terminal-closed", "under-nohup"])
def test_sighup_stops_a_batch_gracefully_unless_nohup_ignores_it(ignored: bool, server, tmp_path) -> None:
    """A closed terminal stops the batch like Ctrl-C (exit 130, resumable, no traceback); under nohup,
    which ignores SIGHUP, the batch runs to the end."""
    slow = server("--latency", "0.05")
    ids = write_questions(tmp_path / "q.jsonl", 8)
    output = tmp_path / "out.jsonl"
    code, out, err = terminate_when(["-f", "q.jsonl", "-o", "out.jsonl", "--concurrency", "2"],
                                    environment(tmp_path, slow.url), tmp_path,
                                    lambda: output.exists() and output.read_bytes().count(b"\n") >= 1,
                                    "a first output line", signal.SIGHUP, nohup=ignored)
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    if ignored:
        assert code == 0 and summary["status"] == "finished" and len(output_rows(output)) == len(ids)
    else:
        assert code == 130 and summary["status"] == "interrupted" and len(output_rows(output)) < len(ids)


def test_a_link_planted_at_the_log_folder_after_the_batch_started_leads_nowhere(victim, server, tmp_path) -> None:
    """The batch pins its log folder when it starts: swap the folder for a link to elsewhere while the
    batch waits for its questions, and every transcript still lands in the folder it made."""
    endpoint = server()
    logs, folder = tmp_path / "logs", batch_folder(tmp_path)
    process = subprocess.Popen([sys.executable, str(CLI), "-f", "-", "-o", "out.jsonl"],
                               env=environment(tmp_path, endpoint.url), cwd=tmp_path, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(folder.is_dir, "the batch's log folder")
        folder.rename(logs / "moved")
        folder.symlink_to(victim.parent, target_is_directory=True)
        out, err = process.communicate("Q1?\nQ2?\n", timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    assert_victim_untouched(victim)
    assert len(list((logs / "moved").glob("*.txt"))) == 2 and len(list((logs / "moved").glob("*.jsonl"))) == 2


def test_a_closing_terminals_double_hangup_keeps_the_grace_period(server, tmp_path) -> None:
    """A terminal that closes sends SIGHUP twice (the kernel, then the shell): that is one stop, not
    "stop now", so the questions in flight still finish and none is cut."""
    slow = server("--latency", "0.3")
    write_questions(tmp_path / "q.jsonl", 8)
    output = tmp_path / "out.jsonl"
    process = subprocess.Popen([sys.executable, str(CLI), "-f", "q.jsonl", "-o", "out.jsonl", "--concurrency", "2"],
                               env=environment(tmp_path, slow.url), cwd=tmp_path, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: output.exists() and output.read_bytes().count(b"\n") >= 1, "a first output line")
        process.send_signal(signal.SIGHUP)
        assert process.stderr is not None
        line = process.stderr.readline()
        while line and "stopping:" not in line:  # until the batch has taken the first one
            line = process.stderr.readline()
        assert line, "the batch said it was stopping"
        process.send_signal(signal.SIGHUP)  # sent apart, so the kernel cannot merge the two
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    rows = output_rows(output)
    assert rows and all(r["status"] == "ok" for r in rows), "nothing in flight was cut"
