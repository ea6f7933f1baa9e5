"""Issue 21, items 3 and 4: every fault's retry decision sits in the one table, and secrets are masked where
output leaves (stdout, stderr, files), not at each call site."""
from __future__ import annotations

import ast
import inspect
import json
import logging
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, test_runtime

SOURCE = (Path(__file__).parent / "moa_pipeline.py").read_text()
TREE = ast.parse(SOURCE)


def calls_to(name: str) -> list[tuple[str, ast.Call]]:
    """(enclosing function, call) for each call of ``name`` in moa_pipeline.py."""
    found: list[tuple[str, ast.Call]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and isinstance(node, ast.ClassDef):
                inner = f"{node.name}.{child.name}"
            if isinstance(child, ast.Call) and getattr(child.func, "id", getattr(child.func, "attr", None)) == name:
                found.append((where, child))
            visit(child, inner)

    visit(TREE, "<module>")
    return found


# --- item 3: one table ------------------------------------------------------------------------

def test_every_fault_kind_has_a_row_with_its_why() -> None:
    """Each Fault has exactly one row in FAULTS, and each row says why on its own line."""
    assert set(moa.FAULTS) == set(moa.Fault)
    rows = [line for line in inspect.getsource(moa).splitlines() if line.lstrip().startswith("Fault.")]
    assert len(rows) == len(moa.Fault) and all("  # " in row for row in rows)


def test_every_fault_kind_is_raised_somewhere() -> None:
    """No row is dead: each kind is named in the code outside its table."""
    outside = SOURCE.replace(SOURCE[SOURCE.index("FAULTS: dict"):SOURCE.index("def fault(")], "")
    assert [kind.name for kind in moa.Fault if f"Fault.{kind.name}" not in outside] == []


def test_no_api_error_is_built_without_a_decision() -> None:
    """Every APIError and EndpointStalled gets its Policy from the table: no default retry decision to rely on."""
    with pytest.raises(TypeError):
        moa.APIError("x")  # type: ignore[call-arg]
    built = calls_to("APIError") + calls_to("EndpointStalled")
    assert {where for where, _ in built} == {"fault", "proxy_credentials_error", "status_error", "Endpoint.stalled"}
    for _, call in built:
        policy = ast.unparse(call.args[1])
        assert policy in ("FAULTS[kind]", "FAULTS[Fault.STALLED]", "policy", "status_policy(407, None)"), policy


@pytest.mark.parametrize("kind, retried", [
    (moa.Fault.UNKNOWN_ENCODING, False), (moa.Fault.REFUSED, False), (moa.Fault.STALLED, False),
    (moa.Fault.EMPTY, True), (moa.Fault.NOT_A_COMPLETION, True), (moa.Fault.UNPARSEABLE, True),
    (moa.Fault.CORRUPT_ENCODING, True), (moa.Fault.TOO_LARGE, True), (moa.Fault.TIMEOUT, True),
])
def test_a_fault_is_retried_as_its_row_says(kind: moa.Fault, retried: bool) -> None:
    """A retry that cannot change the outcome (an unknown encoding, a refusal) is not made; a fresh sample is."""
    assert moa.fault(kind, "x").retryable is retried and moa.FAULTS[kind].retry is retried


# --- item 4: secrets masked where output leaves ------------------------------------------------

# Where redact may run: the exits, and two places that are no exit of ours, each with its reason.
EXITS = {"say", "emit", "write_all", "RedactingFilter.filter",
         "masked_value",  # the library's exit (RunRecord.masked): what debate() returns and raises
         "Endpoint.complete",  # the server's words as they enter: they reach a library caller's exceptions and logs
         "BatchRun.one",  # compares a question with what its trace holds, masked as written
         "response_key",  # the response cache's key: no credential (an EXTRA_BODY api_key) is hashed into it
         "server_message", "model_lines", "setting_row"}  # text cut short: masked before the cut (a cut key matches nothing)


def test_redact_runs_only_where_output_leaves() -> None:
    """No call site masks by hand: redact is called in the exits only, and the old helpers are gone."""
    assert {where for where, _ in calls_to("redact")} == EXITS
    assert not hasattr(moa, "redact_value") and not hasattr(moa, "safe_json")
    assert "maskable(" not in inspect.getsource(moa.RedactingFilter), "the filter reuses redact"


def test_a_secret_is_masked_in_a_file_also_inside_json() -> None:
    """write_all masks a key as text reads it and as JSON escapes it (a quote, a backslash)."""
    key = 'sk-SEC"RET\\KEY123456'
    config = moa.Config("http://127.0.0.1:9/v1", key)
    written: list[bytes] = []
    runtime = moa.Runtime(write=lambda fd, data: written.append(data) or len(data), secrets=config.secrets)
    moa.write_all(runtime, 1, (f"{key} " + json.dumps({"k": key})).encode())
    assert written == [b'*** {"k": "***"}']


@respx.mock
def test_an_echoed_key_never_leaves_the_process(monkeypatch, tmp_path, capsys) -> None:
    """A server echoing the key (with a quote and a backslash) in answers and in error bodies: masked on stdout,
    stderr (-v), transcript, trace, batch output and summary, for one question and for a batch."""
    key = 'sk-QZX"RET\\KEY-QZXW-123456'
    monkeypatch.setenv("PROXY_URL", URL)
    monkeypatch.setenv("API_KEY", key)
    monkeypatch.setenv("RETRY_BASE_DELAY", "0")
    monkeypatch.setenv("STRAGGLER_FACTOR", "0")
    error = httpx.Response(400, json={"error": {"message": f"bad request from {key}"}})
    respx.post(URL).mock(side_effect=FakeModel(answer=f"391 {key}", overrides={"critique": lambda r, n: error}))
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Q?"}\n')
    codes = [moa.main(["-q", "Q?", "-v", *flag], runtime=test_runtime()) for flag in ([], ["--json"])]
    codes.append(moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl"), "-v"], runtime=test_runtime()))
    captured = capsys.readouterr()
    files = [p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p != questions]
    assert codes == [0, 0, 0] and len(files) >= 8 and "***" in captured.out
    for text in [captured.out, captured.err, *files]:
        assert "QZX" not in text, text


@respx.mock
def test_a_key_echoed_past_the_cut_of_an_error_shows_no_part_of_itself(monkeypatch, capsys) -> None:
    """A 401 whose long body ends with the key: the message is cut to one line, but no piece of the key survives."""
    key = "sk-QZXWsecretKEY1234567890"
    monkeypatch.setenv("PROXY_URL", URL)
    monkeypatch.setenv("API_KEY", key)
    body = {"error": {"message": "x" * 265 + f" Authorization: Bearer {key}"}}
    respx.post(URL).mock(return_value=httpx.Response(401, json=body))
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")
    code = moa.main(["-q", "Q?", "--json"], runtime=test_runtime())
    captured = capsys.readouterr()
    assert code == 1 and "QZXW" not in captured.out + captured.err and "sk-" not in captured.out + captured.err


def test_a_key_as_a_tally_shows_it_is_masked_too() -> None:
    """The votes' form of an answer (lower-cased, markdown stripped) of a key is masked like the key itself."""
    config = moa.Config(URL, "gsk_SECRETkey_ABCDEFxyz")
    shown = moa.redact(f"tally: {moa.normalize_answer('gsk_SECRETkey_ABCDEFxyz')!r}: 3", config.secrets)
    assert "secretkey" not in shown.lower() and moa.SECRET_MASK in shown


def test_a_question_id_holding_the_key_is_refused_not_written(monkeypatch, tmp_path, capsys) -> None:
    """A batch id that holds the key would name files and, masked in its line, never match on resume: refused."""
    key = "sk-QZXWsecretKEY1234567890"
    monkeypatch.setenv("PROXY_URL", URL)
    monkeypatch.setenv("API_KEY", key)
    questions = tmp_path / "q.jsonl"
    questions.write_text(f'{{"id": "{key}", "question": "Q?"}}\n')
    with respx.mock:
        route = respx.post(URL).mock(side_effect=FakeModel())
        code = moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime())
    captured = capsys.readouterr()
    names = [str(p) for p in tmp_path.rglob("*")]
    assert code == 3 and not route.called and "QZXW" not in captured.err + "".join(names)
    assert '"id" holds the API key' in captured.err


def test_the_log_prefix_of_a_question_is_masked_too() -> None:
    """The question id a log line starts with is masked as its message is: the formatter adds what the filter saw."""
    key = "sk-QZXWsecretKEY1234567890"
    record = logging.LogRecord("moa", logging.INFO, __file__, 1, "generate 2/2 ok", None, None)
    token = moa.QUESTION_ID.set(f"id-{key}")
    try:
        assert moa.RedactingFilter((key,)).filter(record)
        shown = moa.PlainFormatter("%(message)s").format(record)
    finally:
        moa.QUESTION_ID.reset(token)
    assert shown == "id-***: generate 2/2 ok"


def test_a_result_stdout_cannot_encode_is_named_as_such(monkeypatch, capsys) -> None:
    """An ASCII stdout (PYTHONIOENCODING=ascii) and the answer café: the error says so and what to set, not "closed"."""
    import io
    monkeypatch.setattr(moa.sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    monkeypatch.setattr(moa, "_silence_stdout", lambda: None)
    assert moa.emit("café", ()) is False
    assert "its encoding, ascii, cannot show all of it: set PYTHONIOENCODING=utf-8" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-q", "x", "--logs", "bad"], ["-q", "x", "--bogus"], []], ids=["choice", "unknown", "none"])
def test_a_usage_error_is_one_error_line(argv: list[str], capsys) -> None:
    """A bad flag is one `error:` line on stderr and exit 2, as every other error is; the usage is in --help."""
    assert moa.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "usage:" not in err
