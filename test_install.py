"""Installed like a tool: the package builds offline, and its console script answers from any folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import moa_pipeline as moa

HERE = Path(__file__).resolve().parent


def source_copy(tmp_path: Path) -> Path:
    """What a pip install of the project reads: the three modules and the packaging files."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("moa_pipeline.py", "parsing.py", "prompts.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(HERE / name, source / name)
    return source


@pytest.fixture(scope="module")
def pipx_venv(tmp_path_factory) -> Path:
    """A fresh venv as pipx makes one, the project pip-installed into it offline (--no-index, --no-deps); its
    dependencies are this interpreter's site-packages, seen through a .pth file, as nothing may be downloaded."""
    root = tmp_path_factory.mktemp("pipx")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("".join(f"{p}\n" for p in sys.path if p.endswith("-packages")))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "--no-build-isolation", "--no-index", str(source_copy(root))],
                   check=True, capture_output=True, timeout=180)
    return root / "venv"


def test_console_script_runs_from_any_folder_with_its_env_file(pipx_venv, tmp_path) -> None:
    """moa-pipeline --version, and a dry run from an unrelated folder whose settings come from $MOA_ENV_FILE;
    --help names the command as it was run (the console script, or python -m moa_pipeline)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env_file = tmp_path / "settings.env"
    env_file.write_text("PROXY_URL=http://127.0.0.1:9/v1\nAPI_KEY=sk-install-test-0123456789\nNUM_WORKERS=4\n")
    environment = {key: value for key, value in os.environ.items() if key not in ("PROXY_URL", "API_KEY")}
    environment.update(MOA_ENV_FILE=str(env_file))
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=elsewhere, env=environment, capture_output=True, text=True, timeout=60)
    script, python = str(pipx_venv / "bin" / "moa-pipeline"), str(pipx_venv / "bin" / "python")
    version = run(script, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"moa-pipeline {moa.__version__}"
    done = run(script, "-q", "What is 17 * 23?", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["calls_pass_1"] == 4 + 4 + 4 + 3, "NUM_WORKERS came from $MOA_ENV_FILE"
    shown = run(script, "--help").stdout
    assert "\n  moa-pipeline -q " in shown and "python moa_pipeline.py" not in shown  # as it was run
    module = run(python, "-m", "moa_pipeline", "--version")
    assert module.returncode == 0 and moa.__version__ in module.stdout
    assert run(python, "-m", "moa_pipeline", "--help").stdout.startswith("usage: python -m moa_pipeline ")


def test_env_file_variable_must_name_a_file(monkeypatch, capsys) -> None:
    """$MOA_ENV_FILE naming a missing file is a usage error that names the variable; --env-file wins over it."""
    monkeypatch.setenv("MOA_ENV_FILE", "/nonexistent/moa.env")
    assert moa.main(["-q", "Q?", "--dry-run"]) == 2
    assert "MOA_ENV_FILE /nonexistent/moa.env: no such file" in capsys.readouterr().err


def test_an_older_python_gets_one_line(monkeypatch, capsys) -> None:
    """Below Python 3.11: one line saying which Python is needed, exit 2, nothing run."""
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    assert moa.main(["-q", "Q?"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs Python 3.11" in err


def test_help_from_a_clone_names_python_and_the_file(monkeypatch) -> None:
    """Run from a clone, --help's examples say `python moa_pipeline.py`, the command the user typed (issue 24)."""
    monkeypatch.setattr(sys, "argv", ["./moa_pipeline.py", "--help"])
    shown = moa.build_parser().format_help()
    assert "\n  python moa_pipeline.py -q " in shown and shown.startswith("usage: python moa_pipeline.py ")


def test_installed_tool_answers_from_an_empty_folder_with_only_a_user_file(pipx_venv, server, tmp_path) -> None:
    """The Done-when of issue 24: installed as pipx would, run from an empty folder whose HOME holds only the
    per-user file `init` wrote (PROXY_URL: a fake endpoint on 127.0.0.1), it answers, the folder stays empty, and
    the transcript and trace land in the XDG state folder, which the first run names."""
    endpoint = server("--latency", "0")
    empty, home = tmp_path / "empty", tmp_path / "home"
    empty.mkdir()
    environment = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(home)}
    script = str(pipx_venv / "bin" / "moa-pipeline")
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *argv], cwd=empty, env=environment, capture_output=True, text=True, timeout=60)
    made = run("init")
    user = home / ".config" / "moa-pipeline" / "config.env"
    assert made.returncode == 0 and made.stdout.startswith("wrote ~/.config/moa-pipeline/config.env: "), made.stderr
    user.write_text(user.read_text().replace("\nPROXY_URL=\n", f"\nPROXY_URL={endpoint.url}\n")
                    .replace("\nAPI_KEY=\n", "\nAPI_KEY=sk-local-0123456789\n").replace("# NUM_WORKERS=5", "NUM_WORKERS=3"))
    shown = run("config")
    assert shown.returncode == 0 and "NUM_WORKERS                3" in shown.stdout
    assert "\nAPI_KEY                    ***" in shown.stdout and "sk-local" not in shown.stdout
    done = run("-q", "What is 17 * 23?", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["final_answer"] == "391" and list(empty.iterdir()) == []
    logs = home / ".local" / "state" / "moa-pipeline" / "logs"
    assert f"warning: transcripts and traces go to {logs}, a folder made now" in done.stderr
    assert [p.suffix for p in sorted(logs.iterdir())] == [".jsonl", ".txt"]
