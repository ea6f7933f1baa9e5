"""The README is a contract: its tables must say what the code does.

Every expected set below is derived from the code at test time (SETTINGS, the
EXIT_* constants, RunRecord, batch_record, build_parser), so a code change
that forgets the README fails here, and so does a README row that goes stale.
The benchmark and accuracy figures live in bench/README.md, linked from the README.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import moa_pipeline as moa
import prompts

HERE = Path(__file__).resolve().parent  # conftest's autouse fixture chdirs to a tmp dir
README = HERE / "README.md"
BENCH_README = HERE / "bench" / "README.md"
ENV_EXAMPLE = HERE / ".env.example"
DOCS = HERE / "docs"  # reference pages the README links to, held to the code the same way
README_MAX_LINES = 400  # a quick start: reference material lives in docs/


# --- a small markdown table reader (pure functions) ----------------------------


def split_cells(line: str) -> list[str]:
    """The cells of one table row; a `|` inside backticks or escaped as `\\|` is text."""
    cells, cell, in_code, i = [], [], False, 0
    body = line.strip()
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body) and body[i + 1] == "|":
            cell.append("|")
            i += 2
            continue
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(char)
        i += 1
    cells.append("".join(cell).strip())
    # A row starts and ends with a pipe: drop the empty outer cells.
    if cells and cells[0] == "":
        cells = cells[1:]
    if cells and cells[-1] == "":
        cells = cells[:-1]
    return cells


def is_separator(line: str) -> bool:
    """Whether a line is a table's header separator, such as |---|:--:|."""
    cells = split_cells(line)
    return bool(cells) and all(re.fullmatch(r":?-{3,}:?", c) for c in cells)


def section(text: str, heading: str) -> str:
    """The body of a level-2 section (`## heading`) up to the next level-2 heading."""
    lines = text.splitlines()
    try:
        start = lines.index(f"## {heading}") + 1
    except ValueError:
        raise AssertionError(f"README has no section '## {heading}'") from None
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end])


def find_tables(text: str, header: list[str]) -> list[list[list[str]]]:
    """The body rows (as lists of cells) of every table whose header row is exactly `header`."""
    lines = text.splitlines()
    tables = []
    for i, line in enumerate(lines[:-1]):
        if line.lstrip().startswith("|") and split_cells(line) == header and is_separator(lines[i + 1]):
            rows = []
            for row in lines[i + 2:]:
                if not row.lstrip().startswith("|"):
                    break
                rows.append(split_cells(row))
            tables.append(rows)
    return tables


def find_table(text: str, header: list[str]) -> list[list[str]]:
    """The body rows of the one table whose header row is exactly `header`."""
    tables = find_tables(text, header)
    assert len(tables) == 1, f"expected one table headed {header}, found {len(tables)}"
    return tables[0]


def code_spans(cell: str) -> list[str]:
    """The backticked texts of a cell, in order: "`a`, `b` (x)" gives ["a", "b"]."""
    return re.findall(r"`([^`]+)`", cell)


def first_cell_names(rows: list[list[str]]) -> list[str]:
    """Every backticked name in the first cell of each row."""
    return [name for row in rows for name in code_spans(row[0])]


def without_code_blocks(text: str) -> str:
    """The text with its fenced (```) code blocks removed, so backticks pair up as code spans."""
    return re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def output_docs() -> str:
    return (DOCS / "output.md").read_text(encoding="utf-8")


def user_docs() -> str:
    """The README and every page of docs/: what a user reads."""
    return "\n".join([readme(), *(page.read_text(encoding="utf-8") for page in sorted(DOCS.glob("*.md")))])


# --- what the code says ----------------------------------------------------------


def exit_codes() -> dict[str, int]:
    """Every EXIT_* integer constant of moa_pipeline, by name."""
    return {name: value for name, value in vars(moa).items()
            if name.startswith("EXIT_") and isinstance(value, int) and not isinstance(value, bool)}


def setting_names() -> set[str]:
    return {s.env for s in moa.SETTINGS}


def is_default(setting: moa.Setting, text: str) -> bool:
    """Whether ``text`` (a README cell or a .env.example value) reads as the setting's default:
    empty for a required setting or one that defaults to unset, else text its parser reads as it."""
    if setting.default is dataclasses.MISSING or setting.default is None:
        return text == ""
    try:
        return bool(setting.parse(text) == setting.default)
    except ValueError:
        return False


def config(**overrides) -> moa.Config:
    return moa.Config(proxy_url="http://127.0.0.1:1/v1/chat/completions", api_key="k", **overrides)


PRICED = {"price_input_per_mtok": 1.0, "price_output_per_mtok": 1.0}


# --- the reader itself ---------------------------------------------------------------


def test_table_reader_reads_cells_names_and_stops_at_the_table_end():
    """The reader splits rows into cells, keeps backticked pipes, and ends the table at the first non-row."""
    text = "## A\n\n| Name | Meaning |\n|---|---|\n| `x`, `y` | one \\| two |\n| `a|b` | c |\n\n| Name | Meaning |\nnot a table\n## B\n"
    rows = find_table(section(text, "A"), ["Name", "Meaning"])
    assert rows == [["`x`, `y`", "one | two"], ["`a|b`", "c"]]
    assert first_cell_names(rows) == ["x", "y", "a|b"]
    assert find_tables(text, ["Other"]) == []


# --- 1. settings ----------------------------------------------------------------------


def settings_rows() -> list[list[str]]:
    return find_table(section(readme(), "Settings"), ["Variable", "Default", "Meaning"])


def test_settings_table_lists_exactly_the_settings():
    """The Settings table names every setting in SETTINGS, and nothing else."""
    names = first_cell_names(settings_rows())
    assert len(names) == len(set(names)), f"listed twice: {sorted(n for n in names if names.count(n) > 1)}"
    assert set(names) == setting_names(), (
        f"missing from README: {sorted(setting_names() - set(names))}; "
        f"not settings: {sorted(set(names) - setting_names())}")


def test_settings_table_defaults_match_the_code():
    """Each Default cell is the setting's default: `x` read by its parser, (required), other (...) for unset."""
    settings = {s.env: s for s in moa.SETTINGS}
    wrong = []
    for row in settings_rows():
        name, cell = code_spans(row[0])[0], row[1]
        if name not in settings:
            continue  # reported by test_settings_table_lists_exactly_the_settings
        setting = settings[name]
        if cell == "(required)":
            ok = setting.default is dataclasses.MISSING
        elif cell.startswith("("):
            ok = setting.default is None
        else:
            ok = len(code_spans(cell)) == 1 and cell == f"`{code_spans(cell)[0]}`" and is_default(setting, cell[1:-1])
        if not ok:
            wrong.append(f"{name}: README {cell!r}, code {setting.default!r}")
    assert not wrong, "; ".join(wrong)


def test_settings_table_names_no_constant_that_is_not_a_setting():
    """Every bare UPPER_CASE name in the settings table is a setting (or its OPENAI_* fallback)."""
    allowed = setting_names() | set(moa.FALLBACK_NAMES.values()) | {moa.ENV_FILE_VARIABLE}
    named = {span for row in settings_rows() for cell in row for span in code_spans(cell)
             if re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", span)}
    assert named <= allowed, f"not settings: {sorted(named - allowed)}"


def test_env_example_sets_every_setting_to_its_default():
    """.env.example has one NAME= line per setting, each with the code's default, and no unknown name."""
    assigned = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            assigned[match.group(1)] = match.group(2)
    assert set(assigned) == setting_names(), (
        f"missing from .env.example: {sorted(setting_names() - set(assigned))}; "
        f"not settings: {sorted(set(assigned) - setting_names())}")
    wrong = {s.env: (assigned[s.env], s.default) for s in moa.SETTINGS if not is_default(s, assigned[s.env])}
    assert not wrong, f".env.example value vs default: {wrong}"


def test_readme_names_settings_bare_and_code_constants_qualified():
    """A backticked bare UPPER_CASE name in the README or docs/ is a setting; a code constant is written module.NAME."""
    allowed = setting_names() | set(moa.FALLBACK_NAMES.values()) | {moa.ENV_FILE_VARIABLE}
    modules = {"moa_pipeline": moa, "prompts": prompts}
    wrong = []
    for span in set(code_spans(without_code_blocks(user_docs()))):
        match = re.fullmatch(r"(?:(\w+)\.)?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(=.*)?", span)
        if not match:
            continue
        module, name = match.group(1), match.group(2)
        if module is None and name not in allowed:
            wrong.append(f"`{span}` is not a setting" + (f" (write `moa_pipeline.{name}`)" if hasattr(moa, name) else ""))
        elif module is not None and not hasattr(modules.get(module), name):
            wrong.append(f"`{span}` does not exist")
    assert not wrong, "; ".join(sorted(wrong))


# --- 2. exit codes --------------------------------------------------------------------


def readme_exit_codes() -> set[int]:
    """The codes of the one exit-code table (single question and batch); each row names one code, once."""
    rows = find_table(readme(), ["Exit code", "Meaning"])  # exactly one such table in the whole README
    codes = [int(row[0]) for row in rows]
    assert len(codes) == len(set(codes)), f"listed twice: {sorted(c for c in codes if codes.count(c) > 1)}"
    return set(codes)


def test_every_exit_constant_is_in_the_exit_code_table():
    """Every EXIT_* constant has a row in the README's exit-code table."""
    missing = {name: code for name, code in exit_codes().items() if code not in readme_exit_codes()}
    assert not missing, f"exit codes missing from the README: {missing}"


def test_exit_code_table_lists_only_exit_constants():
    """Every code in the README's exit-code table is an EXIT_* constant."""
    extra = readme_exit_codes() - set(exit_codes().values())
    assert not extra, f"README exit codes with no EXIT_* constant: {sorted(extra)}"


def test_failure_table_exits_are_exit_constants():
    """Every number in the Troubleshooting fault table's Exit column is an EXIT_* constant."""
    rows = find_table((DOCS / "troubleshooting.md").read_text(encoding="utf-8"), ["Fault", "What the tool does", "Exit"])
    numbers = {int(n) for row in rows for n in re.findall(r"\d+", row[2])}
    assert numbers <= set(exit_codes().values()), f"not exit codes: {sorted(numbers - set(exit_codes().values()))}"


def test_help_epilog_lists_every_exit_code():
    """The --help epilog's "exit codes:" list names exactly the EXIT_* codes."""
    epilog = moa.build_parser().epilog or ""
    assert "exit codes:" in epilog
    listed = {int(n) for n in re.findall(r"(?:^|,)\s*(\d+)\s+[a-z]", epilog.split("exit codes:", 1)[1])}
    assert listed == set(exit_codes().values()), (
        f"missing from --help: {sorted(set(exit_codes().values()) - listed)}; "
        f"not exit codes: {sorted(listed - set(exit_codes().values()))}")


# --- 3. --json fields -----------------------------------------------------------------


def test_json_field_table_lists_exactly_result_json_keys():
    """The --json Field table names every key of a run record's to_dict(), and nothing else."""
    rows = find_table(output_docs(), ["Field", "Meaning"])
    names = first_cell_names(rows)
    keys = set(moa.run_record(config(), "Q?").to_dict())
    keys |= set(moa.run_record(config(**PRICED), "Q?").to_dict())
    assert len(names) == len(set(names)), f"listed twice: {sorted(n for n in names if names.count(n) > 1)}"
    assert set(names) == keys, (f"missing from README: {sorted(keys - set(names))}; "
                                f"not in to_dict(): {sorted(set(names) - keys)}")


# --- 4. batch output lines ------------------------------------------------------------


def test_batch_line_table_lists_exactly_batch_record_keys():
    """The Batch-line field table names every key a batch line adds to the --json object, and nothing else."""
    rows = find_table(output_docs(), ["Batch-line field", "Meaning"])
    names = first_cell_names(rows)
    item = moa.BatchItem(1, "q1", "Q?", "391")
    keys = set(moa.batch_record(item, moa.run_record(config(), "Q?"))) - set(moa.run_record(config(), "Q?").to_dict())
    assert len(names) == len(set(names)), f"listed twice: {sorted(n for n in names if names.count(n) > 1)}"
    assert set(names) == keys, (f"missing from README: {sorted(keys - set(names))}; "
                                f"not in batch_record: {sorted(set(names) - keys)}")


# --- flags ------------------------------------------------------------------------------


def test_flags_table_lists_exactly_the_parser_options():
    """The Flags table names every command-line option of build_parser (except -h), and nothing else."""
    parser = moa.build_parser()
    options = {opt for action in parser._actions for opt in action.option_strings} - {"-h", "--help"}
    rows = find_table(section(readme(), "Flags"), ["Flag", "Meaning"])
    named = {token for span in first_cell_names(rows) for token in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", span)}
    assert named == options, (f"missing from README: {sorted(options - named)}; "
                              f"not options: {sorted(named - options)}")


def test_flags_section_says_which_options_are_alternatives():
    """For each required group of alternatives (-q / -f / --replay), the Flags section says exactly one is required."""
    parser = moa.build_parser()
    text = section(readme(), "Flags")
    rows = find_table(text, ["Flag", "Meaning"])
    sentences = re.split(r"(?<=[.:])\s+", " ".join(text.split()))
    for group in (g for g in parser._mutually_exclusive_groups if g.required):
        firsts = [action.option_strings[0] for action in group._group_actions]
        assert any("exactly one of" in s.lower() and all(f"`{f}`" in s for f in firsts) for s in sentences), (
            f"no sentence says exactly one of {firsts} is required")
        for row in rows:
            if set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", row[0])) & set(firsts):
                assert "(required)" not in row[1], f"{row[0]} is one of {firsts}, not required on its own"


# --- the benchmark page -------------------------------------------------------------------


def test_readme_is_a_quick_start_that_links_its_reference_pages():
    """The README stays under README_MAX_LINES lines, and links every page of docs/, which links back."""
    assert len(readme().splitlines()) < README_MAX_LINES
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds the reference pages"
    for page in pages:
        assert f"](docs/{page.name})" in readme(), f"README.md does not link docs/{page.name}"
        assert "](../README.md" in page.read_text(encoding="utf-8"), f"docs/{page.name} does not link the README"


def test_readme_links_the_benchmark_page():
    """Performance and accuracy figures moved to bench/README.md: it exists and the README links it."""
    assert BENCH_README.is_file(), "bench/README.md is missing"
    assert "](bench/README.md)" in readme(), "README.md does not link bench/README.md"


# --- the "Use from Python" example runs as written ------------------------------------------------


def test_the_use_from_python_example_runs(monkeypatch, capsys) -> None:
    """The README's library example, against the mocked endpoint: it runs and prints what it says."""
    import respx

    from conftest import FAKE_KEY, URL, FakeModel
    section = README.read_text().split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the section has a python example"
    monkeypatch.setenv("PROXY_URL", URL)
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    monkeypatch.setenv("RETRY_BASE_DELAY", "0")
    with respx.mock:
        route = respx.post(URL).mock(side_effect=FakeModel())
        exec(compile(code.group(1), "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("391 90 ") and len(printed) == 4
    assert all(" -> 391 " in line for line in printed[1:])
    assert route.call_count > 4


# --- the shard merge check works on both output formats -------------------------------------------


def merge_check_code() -> str:
    found = re.search(r"python - <<'CHECK'\n(.*?)\nCHECK\n", user_docs(), re.S)
    assert found is not None, "docs/batch.md has the merge check"
    return found.group(1)


def run_merge_check(tmp_path: Path, questions: list[dict], results: list[dict]) -> int:
    import json
    import subprocess
    import sys
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return subprocess.run([sys.executable, "-c", merge_check_code()], cwd=tmp_path, capture_output=True).returncode


def test_the_merge_check_reads_our_lines_and_batch_api_lines(tmp_path: Path) -> None:
    """The README's merge check passes on complete outputs of either --output-format and fails on a missing id."""
    ours = [{"id": 7, "question": "a"}, {"id": "b", "question": "b"}]
    assert run_merge_check(tmp_path, ours, [{"id": "7", "status": "ok"}, {"id": "b", "status": "ok"}]) == 0
    assert run_merge_check(tmp_path, ours, [{"id": "7", "status": "ok"}]) == 1
    requests = [{"custom_id": c, "body": {"messages": [{"role": "user", "content": c}]}} for c in ("r1", "r2")]
    lines = [{"id": f"batch_req_{c}", "custom_id": c, "response": None, "error": None, "moa": {}} for c in ("r1", "r2")]
    assert run_merge_check(tmp_path, requests, lines) == 0
    assert run_merge_check(tmp_path, requests, lines[:1] * 2) == 1
