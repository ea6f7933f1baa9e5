"""One file policy: every file the tool makes or reopens goes through create_new, open_existing or open_folder
(and what_is_at looks at a name), so what is refused is decided in one place. Plus the typed values that replaced
strings: --from as a ReplayStart, BatchStats counted without setattr."""
from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

import moa_pipeline as moa

HERE = Path(__file__).resolve().parent
POLICY = {"_open", "what_is_at", "create_new", "open_existing", "open_folder"}
# Names that decide what a file may be; outside POLICY they would be a second, local policy.
FILE_CHECKS = {"O_NOFOLLOW", "O_EXCL", "S_ISREG", "S_ISLNK", "st_nlink", "ELOOP", "is_symlink", "islink", "lstat"}
# Opened outside the policy on purpose, each with its reason.
ALLOWED = {
    ("_silence_stdout", "os.open"): "/dev/null, a device, to discard what stdout still holds at exit",
    ("read_settings_file", "open"): "the user's own settings file, which may be a pipe (--env-file <(...))",
    ("scan_input", "open"): "the user's questions file, read as the user named it",
    ("open_questions", "open"): "the user's questions file, read as the user named it",
    ("connect", "ELOOP"): "ResponseCache: SQLite opens its file itself; the name must still be the file the policy "
                          "opened (a link swapped in is refused)",
}


def _uses(source: str) -> set[tuple[str, str]]:
    """(enclosing top-level function or class method, name) for each file check and each open call."""
    found = set()
    for top in ast.parse(source).body:
        parts = [top] if not isinstance(top, ast.ClassDef) else top.body
        for part in parts:
            where = part.name if isinstance(part, ast.FunctionDef) else "<module level>"
            for node in ast.walk(part):
                if isinstance(node, ast.Attribute) and node.attr in FILE_CHECKS:
                    found.add((where, node.attr))
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open" \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
                    found.add((where, "os.open"))
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                    found.add((where, "open"))
    return found


def test_file_checks_and_opens_live_only_in_the_policy() -> None:
    """os.open, O_NOFOLLOW, S_ISREG, st_nlink, ELOOP, is_symlink … appear only in the policy's functions."""
    outside = {use for use in _uses((HERE / "moa_pipeline.py").read_text()) if use[0] not in POLICY}
    assert outside <= set(ALLOWED), sorted(outside - set(ALLOWED))


def test_the_check_finds_a_local_policy() -> None:
    """The AST check sees a hand-made O_NOFOLLOW open in an ordinary function."""
    assert ("f", "os.open") in _uses("def f(p):\n    return os.open(p, os.O_NOFOLLOW)\n")
    assert ("<module level>", "O_NOFOLLOW") in _uses("FLAGS = os.O_CREAT | os.O_NOFOLLOW\n")


def test_create_new_is_private_and_never_through_a_link(tmp_path: Path) -> None:
    """A new file is mode 0600; a link at the name (even dangling) is FileExistsError, its target never made."""
    fd = moa.create_new(tmp_path / "new.txt")
    os.close(fd)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o600
    (tmp_path / "planted").symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):
        moa.create_new(tmp_path / "planted")
    assert not (tmp_path / "target").exists()


def test_open_existing_refuses_a_link_unless_told_to_follow(tmp_path: Path) -> None:
    """A link is LinkRefused, saying so; with follow (a path the user gave) its target is opened."""
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(moa.LinkRefused, match="symbolic link"):
        moa.open_existing(tmp_path / "link")
    os.close(moa.open_existing(tmp_path / "link", follow=True))


def test_open_existing_refuses_a_fifo_without_hanging(tmp_path: Path) -> None:
    """A FIFO is NotPlainFile at once (opened non-blocking), for reading and for writing."""
    os.mkfifo(tmp_path / "fifo")
    for flags in (os.O_RDONLY, os.O_RDWR | os.O_CREAT):
        with pytest.raises(moa.NotPlainFile, match="not a"):
            moa.open_existing(tmp_path / "fifo", flags)


def test_open_existing_own_refuses_a_hard_link(tmp_path: Path) -> None:
    """With own, a file hard-linked elsewhere is NotPlainFile and left as it was; a missing one is made 0600."""
    (tmp_path / "precious").write_text("data")
    os.link(tmp_path / "precious", tmp_path / "o.lock")
    with pytest.raises(moa.NotPlainFile):
        moa.open_existing(tmp_path / "o.lock", os.O_RDWR | os.O_CREAT | os.O_TRUNC, own=True)
    assert (tmp_path / "precious").read_text() == "data"
    os.close(moa.open_existing(tmp_path / "new.lock", os.O_RDWR | os.O_CREAT, own=True))
    assert stat.S_IMODE((tmp_path / "new.lock").stat().st_mode) == 0o600


def test_open_folder_refuses_a_link_to_a_folder(tmp_path: Path) -> None:
    """A link at a folder's name is LinkRefused (O_DIRECTORY makes it ENOTDIR, not ELOOP)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(moa.LinkRefused):
        moa.open_folder(tmp_path / "alias")
    os.close(moa.open_folder(tmp_path / "real"))


def test_what_is_at_names_what_a_name_holds(tmp_path: Path) -> None:
    """Nothing, a link (not followed), a regular file, anything else."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    kinds = [moa.what_is_at(tmp_path / name) for name in ("missing", "link", "file", ".")]
    assert kinds == ["nothing", "link", "file", "other"]


@pytest.mark.parametrize("text", list(moa.REPLAY_STARTS))
def test_from_is_parsed_once_into_a_replay_start(text: str) -> None:
    """Every --from value parses to a ReplayStart that shows as given and knows the last phase it keeps."""
    start = moa.ReplayStart.parse(text)
    assert str(start) == text and start.kept == moa.REPLAY_STARTS[text]
    assert start.debate_round == (int(text[5:]) if text.startswith("round") else 0)


def test_no_string_slicing_of_from_and_no_setattr_by_status() -> None:
    """--from is never sliced again (start[5:]) and no count is set by a status string (setattr)."""
    source = (HERE / "moa_pipeline.py").read_text()
    assert "start[5:]" not in source and "setattr(" not in source


def test_batch_stats_count_each_status_in_its_field() -> None:
    """ok, failed, degraded and unsaved lines each land in their own count."""
    stats = moa.BatchStats()
    line = {"llm_calls": 1, "http_requests": 1, "usage": {"total_tokens": 0, "estimated": False}, "cost_usd": None}
    for record, saved in [({"status": "ok", "degraded": True}, True), ({"status": "failed"}, True),
                          ({"status": "ok"}, False)]:
        stats.add(record | line, saved)
    assert (stats.ok, stats.failed, stats.degraded, stats.unsaved, stats.llm_calls) == (1, 1, 1, 1, 3)
