"""Installed like a tool: the package builds offline, and its console script answers from any folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import moa_pipeline as moa

HERE = Path(__file__).resolve().parent


def install(tmp_path: Path) -> Path:
    """pip install the project (offline, no dependencies: they are this venv's) into a folder; its bin/."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("moa_pipeline.py", "parsing.py", "prompts.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(HERE / name, source / name)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=120)
    return target


def test_console_script_runs_from_any_folder_with_its_env_file(tmp_path) -> None:
    """moa-pipeline --version, and a dry run from an unrelated folder whose settings come from $MOA_ENV_FILE."""
    target = install(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env_file = tmp_path / "settings.env"
    env_file.write_text("PROXY_URL=http://127.0.0.1:9/v1\nAPI_KEY=sk-install-test-0123456789\nNUM_WORKERS=4\n")
    environment = {key: value for key, value in os.environ.items() if key not in ("PROXY_URL", "API_KEY")}
    environment.update(PYTHONPATH=str(target), MOA_ENV_FILE=str(env_file))
    script = target / "bin" / "moa-pipeline"
    version = subprocess.run([str(script), "--version"], cwd=elsewhere, env=environment, capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"moa-pipeline {moa.__version__}"
    done = subprocess.run([str(script), "-q", "What is 17 * 23?", "--dry-run", "--json"], cwd=elsewhere,
                          env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["calls_pass_1"] == 4 + 4 + 4 + 3, "NUM_WORKERS came from $MOA_ENV_FILE"
    shown = subprocess.run([str(script), "--help"], cwd=elsewhere, env=environment, capture_output=True, text=True,
                           timeout=60)
    assert "\n  moa-pipeline -q " in shown.stdout and "python moa_pipeline.py" not in shown.stdout  # as it was run
    module = subprocess.run([sys.executable, "-m", "moa_pipeline", "--version"], cwd=elsewhere, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and moa.__version__ in module.stdout


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
