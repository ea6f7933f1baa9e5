"""A batch's files (issue 20, items 12, 15, 16): every path it writes is checked before the first request,
what killed runs leave is swept under the lock, and each output has a log folder of its own."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, test_runtime
from test_hostile_files import (
    assert_one_clean_error,
    cli,
    small_fs,  # noqa: F401 (a fixture: a tmpfs, root only)
    write_questions,
)

SMALL = {"NUM_WORKERS": "2", "NUM_JUDGES": "1", "ENABLE_REBUTTAL": "false"}  # 3 calls per question


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
    trace.close()
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
