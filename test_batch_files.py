"""A batch's files (issue 20, items 12, 15, 16): every path it writes is checked before the first request,
what killed runs leave is swept under the lock, and each output has a log folder of its own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, completion, solver_text, test_runtime
from test_hostile_files import (
    CLI,
    SMALL,
    assert_one_clean_error,
    batch_folder,
    cli,
    environment,
    output_rows,
    small_fs,  # noqa: F401 (a fixture: a tmpfs, root only)
    wait_for,
    write_questions,
)


def config(tmp_path: Path) -> moa.Config:
    """Settings whose LOG_DIR is tmp_path/logs."""
    return moa.Config(URL, "k", log_dir=str(tmp_path / "logs"))


# --- 12. every path checked before the first request ----------------------------------------------


@pytest.mark.parametrize("setup, env, words", [
    (lambda tmp: (tmp / "afile").write_text("x"), {"LOG_DIR": "afile/logs"}, "afile/logs/out-"),
    (lambda tmp: (tmp / "out.jsonl.summary.json").mkdir(), {}, "out.jsonl.summary.json"),
], ids=["log-dir-under-a-file", "summary-is-a-folder"])
def test_an_unusable_path_stops_the_batch_before_any_request(setup, env: dict, words: str, server, tmp_path) -> None:
    """A log folder or sidecar the batch cannot write: exit 2 and one line naming it, before any request."""
    endpoint = server()
    setup(tmp_path)
    write_questions(tmp_path / "q.jsonl", 6)
    done = cli(tmp_path, endpoint.url, "-f", "q.jsonl", "-o", "out.jsonl", **SMALL, **env)
    assert_one_clean_error(done, 2, words)
    assert "nothing was sent" in done.stderr
    assert endpoint.starts() == []


def test_a_log_folder_on_a_read_only_mount_stops_the_batch_before_any_request(small_fs, server,  # noqa: F811
                                                                              tmp_path) -> None:
    """The batch's log folder exists but cannot be written (root passes chmod, not a read-only mount): exit 2."""
    endpoint = server()
    disk = small_fs("1m")
    folder = moa.batch_log_folder(moa.Config(URL, "k", log_dir=str(disk)), tmp_path / "out.jsonl")
    folder.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    write_questions(tmp_path / "q.jsonl", 2)
    done = cli(tmp_path, endpoint.url, "-f", "q.jsonl", "-o", "out.jsonl", LOG_DIR=str(disk), **SMALL)
    assert_one_clean_error(done, 2, f"{folder} (it is read-only)")
    assert endpoint.starts() == []


def test_a_missing_log_dir_and_its_parents_are_made_0700_in_a_batch(server, tmp_path) -> None:
    """LOG_DIR=deep/a/b missing: a batch makes deep, a, b and its own folder, each 0700, as a single run does."""
    endpoint = server()
    write_questions(tmp_path / "q.jsonl", 1)
    done = cli(tmp_path, endpoint.url, "-f", "q.jsonl", "-o", "out.jsonl", LOG_DIR="deep/a/b", **SMALL)
    assert done.returncode == 0, done.stderr
    folder = moa.batch_log_folder(moa.Config(URL, "k", log_dir=str(tmp_path / "deep/a/b")), tmp_path / "out.jsonl")
    made = [tmp_path / "deep", tmp_path / "deep/a", tmp_path / "deep/a/b", folder]
    assert [oct(path.stat().st_mode & 0o777) for path in made] == ["0o700"] * 4
    assert len(list(folder.glob("*.txt"))) == 1


def test_single_run_makes_missing_parents_0700(tmp_path) -> None:
    """open_run_files (one question) makes every missing folder of LOG_DIR 0700, not only the last."""
    transcript, trace, error = moa.open_run_files(config(tmp_path / "x/y"), test_runtime())
    assert error is None and transcript is not None and trace is not None
    os.close(trace.fd)
    assert [oct((tmp_path / p).stat().st_mode & 0o777) for p in ("x", "x/y", "x/y/logs")] == ["0o700"] * 3


# --- 16. each output its own log folder -------------------------------------------------------------


@respx.mock
def test_two_outputs_named_alike_keep_their_logs_apart(endpoint_env, tmp_path, monkeypatch) -> None:
    """a/results.jsonl and b/results.jsonl: each q0 gets q0.txt in a folder of its own, and a resume through
    another spelling of the same output finds that folder again."""
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    respx.post(URL).mock(side_effect=FakeModel())
    source = tmp_path / "q.jsonl"
    source.write_text(json.dumps({"id": "q0", "question": "Q"}) + "\n")
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        assert moa.main(["-f", str(source), "-o", str(tmp_path / side / "results.jsonl")], runtime=test_runtime()) == 0
    folders = sorted(p for p in (tmp_path / "logs").iterdir())
    assert len(folders) == 2 and all(sorted(p.name for p in f.iterdir()) == ["q0.jsonl", "q0.txt"] for f in folders)
    assert moa.main(["-f", str(source), "-o", "a/../a/results.jsonl", "--no-resume"], runtime=test_runtime()) == 0
    assert sorted((tmp_path / "logs").iterdir()) == folders, "the same output, the same folder"
    assert moa.batch_log_folder(config(tmp_path), Path("a/results.1-of-2.jsonl")).name.startswith("results.1-of-2-")


# --- 15. sweeping what killed runs left ------------------------------------------------------------


def test_stale_temporaries_are_only_our_own(tmp_path) -> None:
    """The sweep's rule beside the output: mkstemp copies of this output or its summary, as regular files."""
    ours = [".out.jsonl.a1b2c3d_.tmp", ".out.jsonl.summary.json.zzzzzzzz.tmp"]
    theirs = [".out.jsonl.notes.tmp", ".other.jsonl.a1b2c3d4.tmp", ".out.jsonl.1-of-2.jsonl.a1b2c3d4.tmp",
              "out.jsonl.a1b2c3d4.tmp", ".out.jsonl.A1B2C3D4.tmp", ".out.jsonl.a1b2c3d4.tmp.bak"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    (tmp_path / ".out.jsonl.folder00.tmp").mkdir()
    (tmp_path / ".out.jsonl.linkedxx.tmp").symlink_to(tmp_path / "out.jsonl.a1b2c3d4.tmp")
    assert sorted(p.name for p in moa.stale_temporaries(tmp_path / "out.jsonl")) == sorted(ours)


def test_only_empty_transcripts_of_our_own_get_the_note(tmp_path) -> None:
    """An empty .txt is filled with a note naming its trace; a written one, a link, a hard link and other
    names are left exactly as they were."""
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "q0.txt").write_bytes(b"")
    (folder / "q0.jsonl").write_text('{"type": "run"}\n')
    (folder / "q1.txt").write_bytes(b"")
    (folder / "q2.txt").write_text("a finished transcript\n")
    (folder / "q3.jsonl").write_bytes(b"")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"")
    (folder / "q4.txt").symlink_to(victim)
    os.link(victim, folder / "q5.txt")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        moa.note_unfinished_transcripts(fd, test_runtime())
    finally:
        os.close(fd)
    assert "stopped before it wrote its transcript" in (folder / "q0.txt").read_text()
    assert "q0.jsonl" in (folder / "q0.txt").read_text() and "no trace" in (folder / "q1.txt").read_text()
    assert (folder / "q2.txt").read_text() == "a finished transcript\n" and (folder / "q3.jsonl").read_bytes() == b""
    assert victim.read_bytes() == b"" and (folder / "q4.txt").is_symlink()


def test_kill_9_then_resume_sweeps_what_the_killed_run_left(server, tmp_path) -> None:
    """kill -9 mid-batch leaves empty transcripts (and, mid-compaction, hidden copies of the output): the resume
    fills each empty transcript with a note naming its trace, removes our copies, and touches nothing else."""
    slow, fast = server("--latency", "2"), server()
    write_questions(tmp_path / "q.jsonl", 3)
    folder = batch_folder(tmp_path)
    argv = [sys.executable, str(CLI), "-f", "q.jsonl", "-o", "out.jsonl", "--concurrency", "2"]
    process = subprocess.Popen(argv, env=environment(tmp_path, slow.url, **SMALL), cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(list(folder.glob("*.txt"))) == 2 and len(slow.starts()) >= 2, "two runs under way")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    killed = sorted(p for p in folder.glob("*.txt") if p.stat().st_size == 0)
    assert len(killed) == 2
    (tmp_path / ".out.jsonl.k1ll3d_x.tmp").write_bytes(b"x" * 100_000)  # what a kill mid-compaction leaves
    (tmp_path / ".out.jsonl.notes.tmp").write_text("someone's")
    done = cli(tmp_path, fast.url, "-f", "q.jsonl", "-o", "out.jsonl", **SMALL)
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in output_rows(tmp_path / "out.jsonl")] == ["ok"] * 3
    for path in killed:
        note = path.read_text()
        assert "stopped before it wrote its transcript" in note and path.with_suffix(".jsonl").name in note
    assert all(p.stat().st_size > 0 for p in folder.glob("*.txt"))
    assert not (tmp_path / ".out.jsonl.k1ll3d_x.tmp").exists() and (tmp_path / ".out.jsonl.notes.tmp").exists()


@pytest.mark.parametrize("trace", ["true", "false"], ids=["with-traces", "transcripts-only"])
@respx.mock
def test_logs_failed_drops_earlier_runs_of_a_question_once_it_succeeds(trace: str, endpoint_env, tmp_path,
                                                                       monkeypatch) -> None:
    """--logs failed: a question that failed, then succeeds on resume, keeps no files from either run; the id
    a_1, whose files sit at the name a's second run would take, keeps its own."""
    for name, value in {**SMALL, "ENABLE_JSONL_TRACE": trace}.items():
        monkeypatch.setenv(name, value)
    failing = {"A?", "A1?"}

    def generate(request: httpx.Request, n: int) -> httpx.Response:
        asked = json.loads(request.content)["messages"][1]["content"]
        if any(f"<question>\n{q}\n" in asked for q in failing):
            return httpx.Response(400, json={"error": "no"})
        return completion(solver_text("391"))

    respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": generate}))
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in [{"id": "a", "question": "A?"},
                                                                  {"id": "a_1", "question": "A1?"}]))
    argv = ["-f", str(source), "-o", str(tmp_path / "out.jsonl"), "--logs", "failed", "--concurrency", "1"]
    assert moa.main(argv, runtime=test_runtime()) == 3
    folder = batch_folder(tmp_path)
    assert {p.stem for p in folder.iterdir()} == {"a", "a_1"}
    failing.discard("A?")
    assert moa.main(argv, runtime=test_runtime()) == 3
    assert {p.stem for p in folder.iterdir()} == {"a_1", "a_1_1"}, "a's files gone, a_1's two failed runs kept"


def test_a_questions_file_that_is_a_pipe_is_read_once(server, tmp_path) -> None:
    """-f <(...) or a FIFO: read as it comes, like stdin (no first pass to count or hash it), every question answered."""
    endpoint = server()
    write_questions(tmp_path / "q.jsonl", 2)
    with (tmp_path / "q.jsonl").open("rb") as questions:  # through cat: the CLI's stdin is a pipe
        done = cli(tmp_path, endpoint.url, "-f", "/dev/stdin", "-o", "out.jsonl", **SMALL, stdin=questions,
                   prefix=("bash", "-c", 'cat | exec "$@"', "bash"))
    assert done.returncode == 0, done.stderr
    assert sorted(row["id"] for row in output_rows(tmp_path / "out.jsonl")) == ["q0", "q1"]
