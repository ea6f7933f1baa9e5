"""Each setting is written once (issue 21, item 7), and so are the dependency ranges.

A setting's default, parser and secrecy live on its Config field; SETTINGS, load_config,
the README's table and .env.example are read from it. requirements.txt (the
two-command set-up from a clone) holds the same ranges as pyproject.toml (pip install .[test]).
"""
from __future__ import annotations

import ast
import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

import moa_pipeline as moa

HERE = Path(__file__).resolve().parent  # conftest's autouse fixture chdirs to a tmp dir
URL = "http://127.0.0.1:1/v1/chat/completions"


def module_tree() -> ast.Module:
    return ast.parse((HERE / "moa_pipeline.py").read_text(encoding="utf-8"))


def test_settings_are_read_from_configs_fields() -> None:
    """SETTINGS is Config's fields, in order, each default the very object the field holds."""
    config_fields = dataclasses.fields(moa.Config)
    assert [s.field for s in moa.SETTINGS] == [f.name for f in config_fields]
    for setting, config_field in zip(moa.SETTINGS, config_fields, strict=True):
        assert setting.default is config_field.default, setting.env
        assert setting.parse is config_field.metadata["parse"], setting.env


def test_no_setting_default_is_written_outside_its_config_field() -> None:
    """The module builds SETTINGS from Config without a literal: no second table of defaults to keep in step."""
    tree = module_tree()
    [settings] = [node for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
                  and any(isinstance(t, ast.Name) and t.id == "SETTINGS"
                          for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
    assert settings.value is not None
    literals = [n.value for n in ast.walk(settings.value) if isinstance(n, ast.Constant)]
    assert set(literals) <= {"parse", "secret", False}, literals  # metadata keys, and "not a secret"
    [config] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Config"]
    defaults = [node.value for node in config.body if isinstance(node, ast.AnnAssign)]
    assert defaults and all(isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                            and v.func.id in ("tunable", "field") for v in defaults), \
        "each Config field is a tunable(default, parser), or a required field(metadata=...)"


@pytest.mark.parametrize("setting", [s for s in moa.SETTINGS if s.default is not dataclasses.MISSING],
                         ids=lambda s: s.env)
def test_each_default_is_a_value_its_parser_accepts(setting: moa.Setting) -> None:
    """A default written as text (as in .env) reads back as itself: no default lies outside its setting's range."""
    assert setting.parse(moa.setting_text(setting.default)) == setting.default


def test_load_config_with_only_the_required_settings_is_config_with_its_defaults() -> None:
    """The CLI's defaults and a Config built directly by the library or a test are the same values."""
    loaded = moa.load_config({"PROXY_URL": URL, "API_KEY": "k"}, {}, {})
    assert loaded == moa.Config(proxy_url=URL, api_key="k")
    assert [type(getattr(loaded, s.field)) for s in moa.SETTINGS] == \
           [type(getattr(moa.Config(URL, "k"), s.field)) for s in moa.SETTINGS]


def test_a_required_setting_has_no_default() -> None:
    """PROXY_URL and API_KEY have no default: load_config names the one that is missing."""
    assert [s.env for s in moa.SETTINGS if s.default is dataclasses.MISSING] == ["PROXY_URL", "API_KEY"]
    with pytest.raises(moa.ConfigError, match="API_KEY is not set"):
        moa.load_config({"PROXY_URL": URL}, {}, {})


def requirement_lines(name: str) -> list[str]:
    """The requirements of a requirements file, comments and spaces removed."""
    lines = (line.split("#")[0].replace(" ", "") for line in (HERE / name).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def test_requirements_files_hold_pyprojects_ranges() -> None:
    """requirements.txt is pyproject's dependencies then its [test] extra, range for range; requirements-dev.txt
    only pins CI's lint and type-check tools (exact versions: a new release must not fail a build unasked),
    which are no dependency of the package or of its tests."""
    project = tomllib.loads((HERE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    ranges = [r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    assert requirement_lines("requirements.txt") == ranges
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9_.]*", line) for line in requirement_lines(
        "requirements-dev.txt"))
