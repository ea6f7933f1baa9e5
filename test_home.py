"""The tool's home (issue 24): settings in layers with their sources, `config`, `init`, the per-user and state
folders (XDG), where logs go, and hints that name the command as it was run."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, test_runtime

WORKERS = next(s for s in moa.SETTINGS if s.env == "NUM_WORKERS")
LAYERS = ("flag", "environment", "--env-file", ".env", "user file")


def user_file(text: str) -> Path:
    """The per-user file (conftest points MOA_CONFIG_HOME into tmp), written with ``text``."""
    path = moa.user_settings_file(os.environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_json(capsys, *argv: str) -> tuple[int, dict]:
    code = moa.main(["config", "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("top", range(len(LAYERS) + 1), ids=[*LAYERS, "default"])
def test_each_layer_beats_the_next(top: int, tmp_path, monkeypatch) -> None:
    """NUM_WORKERS set in the layer ``top`` and every one below it (each a different value): ``top`` wins, and is
    named as the source (flag > environment > --env-file > ./.env > the per-user file > default)."""
    present = LAYERS[top:]
    flags = {"NUM_WORKERS": "1"} if "flag" in present else {}
    environ = dict(os.environ) | ({"NUM_WORKERS": "2"} if "environment" in present else {})
    (tmp_path / "named.env").write_text("NUM_WORKERS=3\n" if "--env-file" in present else "")
    if ".env" in present:
        (tmp_path / ".env").write_text("NUM_WORKERS=4\n")
    user_file("NUM_WORKERS=6\n" if "user file" in present else "")
    files = moa.read_env_file(str(tmp_path / "named.env"), environ)
    config = moa.load_config(flags | {"PROXY_URL": URL, "API_KEY": FAKE_KEY, "MIN_VALID_ANSWERS": "1"}, environ, files)
    found = moa.setting_source(WORKERS, flags, environ, files)
    expected = {0: 1, 1: 2, 2: 3, 3: 4, 4: 6, 5: 5}[top]
    sources = ["flag", "environment", f"--env-file {tmp_path / 'named.env'}", ".env",
               str(moa.user_settings_file(environ)), None]
    assert config.num_workers == expected
    assert (found and found[2]) == sources[top]


@pytest.mark.parametrize("file, source", [
    ("named", "--env-file {named}"), ("variable", "MOA_ENV_FILE {named}"), ("dotenv", ".env"), ("user", "{user}"),
], ids=["--env-file", "MOA_ENV_FILE", ".env", "user file"])
def test_a_bad_value_names_its_file(file: str, source: str, tmp_path, monkeypatch, capsys) -> None:
    """A bad value is one line naming the file it came from, whichever layer that is; exit 2."""
    named, line = tmp_path / "named.env", f"PROXY_URL={URL}\nAPI_KEY=k\nNUM_WORKERS=lots\n"
    path = {"named": named, "variable": named, "dotenv": tmp_path / ".env"}.get(file)
    user = user_file(line) if path is None else moa.user_settings_file(os.environ)
    if path is not None:
        path.write_text(line)
    if file == "variable":
        monkeypatch.setenv("MOA_ENV_FILE", str(named))
    argv = ["--env-file", str(named)] if file == "named" else []
    assert moa.main(["-q", "Q?", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"error: NUM_WORKERS='lots' ({source.format(named=named, user=user)}) is not valid: " \
                  "expected a whole number from 1 to 64\n"


@pytest.mark.parametrize("make, why", [
    (lambda p: p.mkdir(), "not a regular file"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.write_bytes(b"API_KEY=\xff\xfe\n"), "not UTF-8 text"),
    (lambda p: p.write_bytes(b"#" * (moa.ENV_FILE_LIMIT + 1)), "larger than"),
    (lambda p: p.symlink_to(p.parent / "gone.env"), "No such file or directory"),
], ids=["folder", "fifo", "not-utf8", "too-big", "dangling-link"])
def test_an_unreadable_user_file_is_one_line(make, why: str, monkeypatch, capsys) -> None:
    """A folder, FIFO (never waited on), non-UTF-8, oversized file or dangling link at the per-user file's name:
    one error line naming it, exit 2, for a run and for `config` alike (which lists the settings before it)."""
    monkeypatch.setenv("PROXY_URL", URL)
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    path = moa.user_settings_file(os.environ)
    path.parent.mkdir(parents=True)
    make(path)
    for argv in (["-q", "Q?", "--dry-run"], ["config"]):
        assert moa.main(argv) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: {path}") and why in captured.err and captured.err.count("\n") == 1
        assert (captured.out == "") == (argv[0] == "-q")


@pytest.mark.parametrize("broken", ["user", "dotenv", "named"], ids=["user-file-a-folder", "dotenv-not-utf8",
                                                                    "env-file-missing"])
def test_config_json_is_json_when_a_file_cannot_be_read(broken: str, tmp_path, monkeypatch, capsys) -> None:
    """`config --json` prints its object (the error in "error") even when a settings file cannot be read; exit 2."""
    monkeypatch.chdir(tmp_path)
    if broken == "user":
        moa.user_settings_file(os.environ).mkdir(parents=True)
    if broken == "dotenv":
        (tmp_path / ".env").write_bytes(b"API_KEY=\xff\n")
    code, shown = config_json(capsys, *(["--env-file", "gone.env"] if broken == "named" else []))
    assert code == 2 and shown["error"] and [row["name"] for row in shown["settings"]] == [s.env for s in moa.SETTINGS]


@pytest.mark.parametrize("line, folder", [
    ("LOG_DIR=~/moa-logs", None),
    ("LOG_DIR=${HOME}/moa-logs", "{home}/moa-logs"),
], ids=["tilde-refused", "home-variable-expanded"])
def test_log_dir_in_the_user_file_never_lands_in_the_working_folder(line: str, folder: str | None, tmp_path,
                                                                    monkeypatch, capsys) -> None:
    """LOG_DIR=~/… in a file (no shell expands it) is refused, not a folder named ~ made where the tool runs."""
    monkeypatch.delenv("LOG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    user_file(f"PROXY_URL={URL}\nAPI_KEY={FAKE_KEY}\n{line}\n")
    code, shown = config_json(capsys)
    log_dir = {row["name"]: row["value"] for row in shown["settings"]}["LOG_DIR"]
    if folder is None:
        assert code == 2 and "LOG_DIR='~/moa-logs'" in shown["error"] and "${HOME}" in shown["error"]
    else:
        assert code == 0 and log_dir == folder.format(home=tmp_path)


@pytest.mark.parametrize("line", ["sk-proj-PASTEDKEY1234567890", "a1b2c3d4e5f60718293a4b5c6d7e8f90"],
                         ids=["openai-key-alone", "hex-token-alone"])
def test_a_key_pasted_alone_on_a_line_is_not_echoed(line: str, monkeypatch, capsys) -> None:
    """A line with no "=" (a key pasted alone) is warned about without being shown; the run goes on."""
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    user_file(f"PROXY_URL={URL}\n{line}\n")
    assert moa.main(["-q", "Q?", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert line[:8] not in err and "a line without '='" in err


def test_an_unknown_name_in_the_user_file_warns(monkeypatch, capsys) -> None:
    """A misspelt name in the per-user file is named in a warning with the file, as in .env; the run goes on."""
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    path = user_file(f"PROXY_URL={URL}\nNUM_WORKRS=9\n")
    assert moa.main(["-q", "Q?", "--dry-run"]) == 0
    assert f"unknown setting NUM_WORKRS in {path} is ignored" in capsys.readouterr().err


SECRET_URL = "https://user:hunter2-password@proxy.test/v1?api-version=2024-10-21&key=url-secret-key-0123"


@pytest.mark.parametrize("json_output", [False, True], ids=["table", "json"])
def test_config_masks_every_secret(json_output: bool, monkeypatch, capsys) -> None:
    """`config` shows each secret as *** (API_KEY, GATEWAY_TOKEN, PROXY_URL's user info and credential parameters),
    in the table and in JSON; other values as they are, with their sources."""
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    user_file(f"PROXY_URL={SECRET_URL}\nGATEWAY_TOKEN=gw-secret-token-98765\n")
    assert moa.main(["config", *(["--json"] if json_output else [])]) == 2  # user info in PROXY_URL is refused
    out = capsys.readouterr().out
    for secret in (FAKE_KEY, "hunter2", "url-secret-key", "gw-secret-token"):
        assert secret not in out
    assert "api-version=2024-10-21&key=***" in out and "***@proxy.test" in out
    if json_output:
        rows = {row["name"]: row for row in json.loads(out)["settings"]}
        assert rows["API_KEY"] == {"name": "API_KEY", "value": "***", "source": "environment"}
        assert rows["GATEWAY_TOKEN"]["value"] == "***"


@pytest.mark.parametrize("bad, json_output, pad", [
    ("", False, 0), ("", True, 0), ("lots", False, 0), ("lots", True, 0), ("", True, 169),
], ids=["valid-table", "valid-json", "bad-workers-table", "bad-workers-json", "key-cut-at-200-characters"])
def test_config_masks_secrets_in_every_value_whatever_else_is_wrong(bad: str, json_output: bool, pad: int,
                                                                     capsys) -> None:
    """The key, the gateway token and a URL credential are masked inside other values (EXTRA_BODY) too, and
    still when another setting is bad or the value is cut short: the masking does not wait for either."""
    user_file(f"PROXY_URL={URL}?key=url-secret-key-0123\nAPI_KEY={FAKE_KEY}\nGATEWAY_TOKEN=gw-secret-token-98765\n"
              f'EXTRA_BODY={{"pad": "{"x" * pad}", "user": "{FAKE_KEY}", "t": "gw-secret-token-98765", '
              f'"q": "url-secret-key-0123"}}\nNUM_WORKERS={bad}\n')
    assert moa.main(["config", *(["--json"] if json_output else [])]) == (2 if bad else 0)
    out = capsys.readouterr().out
    assert not [secret for secret in (FAKE_KEY[:8], "gw-secret-token", "url-secret-key") if secret in out]


@pytest.mark.parametrize("name, value", [
    ("PROXY_URL", "https://proxy.test/v1\x1b[2J\nNUM_WORKERS 64  environment"),
    ("MODEL_NAME", "gpt-4o\x1b[2J\nNUM_WORKERS 64  environment"),
], ids=["proxy-url", "model-name"])
def test_config_shows_each_setting_on_one_line(name: str, value: str, monkeypatch, capsys) -> None:
    """A value with a line break or a terminal escape cannot forge a line of `config`'s table or clear the screen."""
    monkeypatch.setenv(name, value)
    moa.main(["config"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and len(out.splitlines()) == 2 + len(moa.SETTINGS)


def test_config_lists_every_setting_its_source_and_the_files(tmp_path, monkeypatch, capsys) -> None:
    """`config --json`: every setting once, in Config's order; the files read, highest first; exit 0 when they
    can run; a fallback name is said (OPENAI_API_KEY)."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    (tmp_path / ".env").write_text("NUM_JUDGES=2\n")
    user = user_file(f"PROXY_URL={URL}\nNUM_JUDGES=1\n")
    code, shown = config_json(capsys)
    assert code == 0 and shown["error"] is None
    assert shown["files"] == [".env", str(user)] and shown["user_file"] == str(user)
    rows = {row["name"]: row for row in shown["settings"]}
    assert list(rows) == [s.env for s in moa.SETTINGS]
    assert rows["NUM_JUDGES"] == {"name": "NUM_JUDGES", "value": "2", "source": ".env"}
    assert rows["PROXY_URL"]["source"] == str(user)
    assert rows["API_KEY"]["source"] == "environment (OPENAI_API_KEY)"
    assert rows["ROUNDS"] == {"name": "ROUNDS", "value": "1", "source": "default"}


def test_config_without_the_required_settings_lists_them_and_exits_2(capsys, monkeypatch) -> None:
    """Nothing set: every setting is still listed (PROXY_URL: not set), then the error a run would print, exit 2."""
    monkeypatch.setattr(sys, "argv", ["moa-pipeline"])
    assert moa.main(["config"]) == 2
    captured = capsys.readouterr()
    assert "files read, highest first: none" in captured.out
    assert "(none: `moa-pipeline init` writes one)" in captured.out
    assert [line.split()[0] for line in captured.out.splitlines()[2:]] == [s.env for s in moa.SETTINGS]
    assert "PROXY_URL                  (not set: required)  default" in captured.out
    assert captured.err == f"error: PROXY_URL is not set: set it in {moa.user_settings_file(os.environ)} " \
                           "(`moa-pipeline init` writes it), in ./.env or in the environment\n"


def test_init_writes_a_private_commented_file_that_reads_as_the_defaults(tmp_path, monkeypatch, capsys) -> None:
    """`init`: the file is 0600 in a folder made 0700; with PROXY_URL and API_KEY filled in it loads as Config's
    defaults (every other line commented out), and it names every setting."""
    monkeypatch.setenv(moa.CONFIG_HOME_VARIABLE, str(tmp_path / "made" / "here"))
    monkeypatch.delenv("LOG_DIR")
    assert moa.main(["init"]) == 0
    path = tmp_path / "made" / "here" / "config.env"
    assert capsys.readouterr().out.startswith(f"wrote {path}: set PROXY_URL and API_KEY in it")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {stat.S_IMODE(p.stat().st_mode) for p in (path.parent, path.parent.parent)} == {0o700}
    text = path.read_text()
    assert all(f"\n{s.env}=" in text or f"\n# {s.env}=" in text for s in moa.SETTINGS)
    path.write_text(text.replace("\nPROXY_URL=\n", f"\nPROXY_URL={URL}\n").replace("\nAPI_KEY=\n", "\nAPI_KEY=k\n"))
    assert moa.load_config({}, os.environ, moa.read_env_file(None, os.environ)) == moa.Config(URL, "k")


def linked_to_a_file(path: Path) -> None:
    (path.parent.parent / "target.env").write_text("API_KEY=theirs\n")
    path.symlink_to(path.parent.parent / "target.env")


@pytest.mark.parametrize("make", [
    lambda p: p.write_text("API_KEY=mine\n"),
    lambda p: p.symlink_to(p.parent / "elsewhere.env"),
    linked_to_a_file,
], ids=["a-file", "a-dangling-link", "a-link"])
def test_init_never_overwrites_and_follows_no_link(make, capsys) -> None:
    """Something already at the file's name: one error line saying where, exit 2; the file, or a link's target,
    untouched (a dangling link's target is never made)."""
    path = moa.user_settings_file(os.environ)
    path.parent.mkdir(parents=True)
    make(path)
    before = path.read_text() if path.exists() else None
    assert moa.main(["init"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and err.count("\n") == 1
    assert (path.read_text() if path.exists() else None) == before
    assert not (path.parent / "elsewhere.env").exists()


def test_init_without_a_home_folder_writes_nothing_here(tmp_path, monkeypatch, capsys) -> None:
    """No HOME and no passwd entry (expanduser gives "~"): init refuses, rather than make a folder named ~ here."""
    monkeypatch.delenv(moa.CONFIG_HOME_VARIABLE)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)
    assert moa.main(["init"]) == 2
    assert "set HOME" in capsys.readouterr().err and not (tmp_path / "~").exists()


@pytest.mark.parametrize("home, config_home", [("", ""), ("/home/ada", "my-settings")],
                         ids=["empty-home", "relative-config-home"])
def test_init_says_which_path_is_not_a_full_one(tmp_path, monkeypatch, capsys, home, config_home) -> None:
    """init refuses a relative per-user path saying so: a relative MOA_CONFIG_HOME is no missing home folder."""
    monkeypatch.setenv("HOME", home)
    monkeypatch.setenv(moa.CONFIG_HOME_VARIABLE, config_home)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert moa.main(["init"]) == 2
    err = capsys.readouterr().err
    assert "no full path" in err and f"{moa.CONFIG_HOME_VARIABLE} to a full path" in err and not any(tmp_path.iterdir())


@pytest.mark.parametrize("home", ["", "relative/home"], ids=["empty", "relative"])
def test_an_empty_or_relative_home_is_no_home_folder(home: str, monkeypatch) -> None:
    """HOME="" is no home folder, as a shell's ~ reads it (not "/", where init as root wrote /.config): not absolute."""
    monkeypatch.setenv("HOME", home)
    assert not moa.user_settings_file({"HOME": home}).is_absolute()


def test_init_writes_nothing_through_a_linked_folder(tmp_path, monkeypatch, capsys) -> None:
    """A link at the settings folder's name is refused too: nothing is written where it points."""
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    monkeypatch.setenv(moa.CONFIG_HOME_VARIABLE, str(tmp_path / "linked"))
    assert moa.main(["init"]) == 2
    assert "symbolic link" in capsys.readouterr().err and list((tmp_path / "real").iterdir()) == []


HOME = "/home/ada"


@pytest.mark.parametrize("environ, expected", [
    ({}, f"{HOME}/.config/moa-pipeline/config.env"),
    ({"XDG_CONFIG_HOME": ""}, f"{HOME}/.config/moa-pipeline/config.env"),
    ({"XDG_CONFIG_HOME": "relative/cfg"}, f"{HOME}/.config/moa-pipeline/config.env"),
    ({"XDG_CONFIG_HOME": "/etc/xdg-ada"}, "/etc/xdg-ada/moa-pipeline/config.env"),
    ({"XDG_CONFIG_HOME": "/etc/xdg-ada", "MOA_CONFIG_HOME": "/srv/moa"}, "/srv/moa/config.env"),
    ({"MOA_CONFIG_HOME": " "}, f"{HOME}/.config/moa-pipeline/config.env"),
], ids=["unset", "empty", "relative", "absolute", "moa-config-home", "moa-config-home-blank"])
def test_the_user_file_follows_xdg(environ: dict, expected: str) -> None:
    """The per-user file: $MOA_CONFIG_HOME/config.env, else $XDG_CONFIG_HOME/moa-pipeline (an absolute path; unset,
    empty or relative: ~/.config, as the XDG spec says)."""
    assert moa.user_settings_file({"HOME": HOME, **environ}) == Path(expected)


@pytest.mark.parametrize("checkout, environ, expected", [
    (True, {"XDG_STATE_HOME": "/var/state"}, "logs"),
    (False, {}, f"{HOME}/.local/state/moa-pipeline/logs"),
    (False, {"XDG_STATE_HOME": "rel"}, f"{HOME}/.local/state/moa-pipeline/logs"),
    (False, {"XDG_STATE_HOME": "/var/state"}, "/var/state/moa-pipeline/logs"),
], ids=["clone", "installed-unset", "installed-relative", "installed-absolute"])
def test_the_default_log_folder(checkout: bool, environ: dict, expected: str, monkeypatch) -> None:
    """LOG_DIR unset: ./logs from a source checkout, as always; installed, the XDG state folder."""
    monkeypatch.setattr(moa, "source_checkout", lambda: checkout)
    assert moa.default_log_dir({"HOME": HOME, **environ}) == expected
    assert moa.load_config({"PROXY_URL": URL, "API_KEY": "k"}, {"HOME": HOME, **environ}, {}).log_dir == expected


def test_this_checkout_is_a_source_checkout() -> None:
    """Tests run from the clone, whose pyproject.toml sits beside the module."""
    assert moa.source_checkout()


@respx.mock
def test_an_installed_run_logs_to_the_state_folder_and_says_so_once(tmp_path, monkeypatch, capsys) -> None:
    """Installed, LOG_DIR unset: the transcript goes to $XDG_STATE_HOME/moa-pipeline/logs; the first run, which
    makes that folder, says so in one line; the next one does not; the working folder stays empty."""
    monkeypatch.setattr(moa, "source_checkout", lambda: False)
    monkeypatch.delenv("LOG_DIR")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    user_file(f"PROXY_URL={URL}\nAPI_KEY={FAKE_KEY}\nRETRY_BASE_DELAY=0\nSTRAGGLER_FACTOR=0\n")
    respx.post(URL).mock(side_effect=FakeModel())
    logs = tmp_path / "state" / "moa-pipeline" / "logs"
    notice = f"warning: transcripts and traces go to {logs}, a folder made now (LOG_DIR sets another)\n"
    for run in range(2):
        assert moa.main(["-q", "What is 17 * 23?"], runtime=test_runtime()) == 0
        err = capsys.readouterr().err
        assert err.count(notice) == (1 if run == 0 else 0)
    assert len(list(logs.glob("*.txt"))) == 2 and list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("argv, orig_argv, expected", [
    (["/home/ada/.local/bin/moa-pipeline"], ["python3", "/home/ada/.local/bin/moa-pipeline"], "moa-pipeline"),
    (["moa_pipeline.py"], ["python", "moa_pipeline.py"], "python moa_pipeline.py"),
    (["/src/moa_pipeline.py"], ["python3", "-m", "moa_pipeline"], "python -m moa_pipeline"),
    (["myscript.py"], ["python", "myscript.py"], "moa-pipeline"),
    ([], [], "moa-pipeline"),
], ids=["console-script", "clone", "python-m", "a-library-caller", "no-argv"])
def test_hints_name_the_command_as_run(argv: list, orig_argv: list, expected: str, monkeypatch) -> None:
    """Hints and --help name the command the user ran; a library caller's script is never named as the tool."""
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert moa.command_name() == expected
    assert f"`{expected} init` writes it" in moa.where_to_set({"HOME": HOME, "MOA_CONFIG_HOME": "/nonexistent"})


@pytest.mark.parametrize("argv, expected", [
    (["config", "-q", "Q?"], "error: unrecognized arguments: -q Q? (see --help)\n"),
    (["init", "--json"], "error: unrecognized arguments: --json (see --help)\n"),
    (["-q", "config", "--dry-run"], ""),
], ids=["config-takes-no-question", "init-takes-no-flags", "a-question-named-config"])
def test_a_command_is_only_the_first_word(argv: list, expected: str, monkeypatch, capsys) -> None:
    """`config` and `init` are commands only as the first word: `-q config` is a question like any other."""
    monkeypatch.setenv("PROXY_URL", URL)
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    assert moa.main(argv) == (0 if not expected else 2)
    assert capsys.readouterr().err == expected


def test_help_lists_the_commands(monkeypatch) -> None:
    """--help names `config` and `init` and the settings' layers."""
    monkeypatch.setattr(sys, "argv", ["moa-pipeline"])
    shown = moa.build_parser().format_help()
    assert "\n  moa-pipeline config [--json]" in shown and "\n  moa-pipeline init " in shown
    assert "> ./.env > the per-user" in shown
