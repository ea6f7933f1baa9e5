"""One record of a run: every JSON output, Result and the summary are views of RunRecord (issue 21, item 1)."""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, test_runtime

pytestmark = pytest.mark.usefixtures("endpoint_env")

# Keys a view adds to the --json object; anything else it carries must be a --json key too.
BATCH_ONLY = {"id", "expected", "correct"}
TRACE_ONLY = {"type", "run_id", "reported_pass", "verdicts", "notes"}


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def small_config(**changes) -> moa.Config:
    return dataclasses.replace(moa.Config(URL, FAKE_KEY, retry_base_delay=0), num_workers=2, num_judges=1,
                               **changes)


def recorded_run(monkeypatch) -> tuple[moa.Debate, moa.RunRecord]:
    """One real debate through answer_question, with the Debate and the record run_record built from it."""
    seen: list[tuple[moa.Debate, moa.RunRecord]] = []
    build = moa.run_record

    def spy(config, question, debate=None, elapsed_s=0.0):
        seen.append((debate, build(config, question, debate, elapsed_s)))
        return seen[-1][1]

    monkeypatch.setattr(moa, "run_record", spy)
    config = small_config()

    async def go() -> moa.RunRecord:
        async with moa.open_client(config) as client:
            runtime = test_runtime()
            return await moa.answer_question(config, "What is 17 * 23?", moa.Endpoint(config, client, runtime),
                                             runtime)

    with respx.mock:
        respx.post(URL).mock(side_effect=FakeModel())
        record = asyncio.run(go())
    assert record.status == "ok" and seen
    return seen[-1]


def test_every_json_output_carries_the_json_object_and_schema_version(tmp_path, monkeypatch, capsys) -> None:
    """--json, a batch line, a Batch API line's "moa" and the trace's verdict line hold the same keys, plus their own."""
    monkeypatch.setenv("NUM_WORKERS", "2")
    monkeypatch.setenv("NUM_JUDGES", "1")
    with respx.mock:
        respx.post(URL).mock(side_effect=FakeModel())
        assert moa.main(["-q", "What is 17 * 23?", "--json"], runtime=test_runtime()) == 0
        printed = json.loads(capsys.readouterr().out)
        questions = tmp_path / "q.jsonl"
        questions.write_text(json.dumps({"id": "a", "question": "What is 17 * 23?", "answer": "391"}) + "\n")
        assert moa.main(["-f", str(questions), "-o", str(tmp_path / "out.jsonl")], runtime=test_runtime()) == 0
        assert moa.main(["-f", str(questions), "-o", str(tmp_path / "api.jsonl"), "--output-format", "openai-batch"],
                        runtime=test_runtime()) == 0
    keys = set(printed)
    assert printed["schema_version"] == moa.SCHEMA_VERSION == 2
    [line] = lines_of(tmp_path / "out.jsonl")
    assert set(line) == keys | BATCH_ONLY and line["schema_version"] == 2 and line["correct"] is True
    [api] = lines_of(tmp_path / "api.jsonl")
    assert set(api["moa"]) == keys | BATCH_ONLY
    trace = lines_of(Path(printed["trace"]))
    assert trace[0]["type"] == "run" and trace[0]["schema_version"] == 2
    assert trace[-1]["type"] == "verdict" and set(trace[-1]) == keys | TRACE_ONLY
    assert trace[-1]["rounds"] == printed["rounds"] == 1 and trace[-1]["verdicts"][0]["answer"] == "391"


def test_result_has_every_json_field_as_an_attribute(monkeypatch) -> None:
    """debate()'s Result is the record: each --json key but schema_version is an attribute of the same value."""
    with respx.mock:
        respx.post(URL).mock(side_effect=FakeModel())
        result = asyncio.run(moa.debate("What is 17 * 23?", config=small_config(enable_file_logging=False)))
    shown = result.to_dict()
    assert shown.pop("schema_version") == 2 and shown["degraded"] is False
    assert {key: getattr(result, key) for key in shown} == shown


def test_the_library_result_carries_no_unmasked_internals() -> None:
    """debate() returns the JSON fields, write_error and masked notes: the calls and verdicts, which quote the
    endpoint's every word (a key it echoed), stay in the transcript and trace; the result hashes and compares."""
    key = "sk-QZXWsecretKEY1234567890"
    config = dataclasses.replace(small_config(enable_file_logging=False), api_key=key)
    with respx.mock:
        respx.post(URL).mock(side_effect=FakeModel(answer=f"391 {key}"))
        result = asyncio.run(moa.debate("What is 17 * 23?", config=config))
    assert "QZXW" not in repr(dataclasses.asdict(result)) and result.calls == () and result.verdict is None
    assert hash(result) == hash(dataclasses.replace(result)) and result == dataclasses.replace(result)


def test_a_run_failed_survives_a_pickle() -> None:
    """RunFailed from debate(), with the APIError it carries, crosses a process pool: pickled and rebuilt whole."""
    import pickle
    error = moa.APIError("HTTP 401: no", moa.status_policy(401, None), status=401)
    rebuilt = pickle.loads(pickle.dumps(moa.RunFailed("no verdict", cause=error)))
    assert str(rebuilt.cause) == "HTTP 401: no" and rebuilt.cause.stops_run and rebuilt.cause.status == 401


def test_a_field_added_to_the_record_shows_in_every_view(tmp_path) -> None:
    """A new record field reaches --json, a batch line, a Batch API line and the trace with no other change."""
    wider = dataclasses.make_dataclass("Wider", [("added", int, dataclasses.field(default=7))],
                                       bases=(moa.RunRecord,), frozen=True)
    config = small_config()
    base = moa.run_record(config, "Q?")
    record = wider(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    line = moa.batch_record(moa.BatchItem(1, "q1", "Q?", None), record)
    assert record.to_dict()["added"] == line["added"] == 7
    assert moa.openai_batch_line(line, config, 0.0)["moa"]["added"] == 7
    path = tmp_path / "t.jsonl"
    writer = moa.TraceWriter(path, os_open(path), test_runtime())
    writer.finish(moa.Debate(config, None, test_runtime(), "r", 0.0), record)  # type: ignore[arg-type]
    assert lines_of(path)[-1]["added"] == 7


def os_open(path: Path) -> int:
    import os
    return os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)


def containers(value, seen: dict[int, object]) -> dict[int, object]:
    """Every list, dict and set inside ``value`` (and inside its Positions), by id."""
    if isinstance(value, (list, dict, set, tuple)):
        if isinstance(value, (list, dict, set)):
            seen[id(value)] = value
        for item in (value.values() if isinstance(value, dict) else value):
            containers(item, seen)
    elif isinstance(value, moa.Position):
        containers(value.by_round, seen)
    return seen


def test_no_list_is_shared_between_a_debate_and_its_record(monkeypatch) -> None:
    """The debate hands over copies: no list or dict of the Debate, at any depth, is one the record holds."""
    debate, record = recorded_run(monkeypatch)
    held = containers([getattr(record, f.name) for f in dataclasses.fields(record)], {})
    mutable = containers([v for v in vars(debate).values() if isinstance(v, (list, dict, set))], {})
    assert mutable and not set(mutable) & set(held)
    notes, calls = record.notes, record.calls
    debate.notes.append("later")
    debate.calls.clear()
    assert record.notes == notes and record.calls == calls and record.calls


def test_result_is_built_without_json() -> None:
    """Result.of is gone: building the record, masking it and debate()'s result handling neither encode nor parse JSON."""
    assert not hasattr(moa.Result, "of") and moa.Result is moa.RunRecord
    for function in (moa.run_record, moa.RunRecord.masked, moa.RunRecord.to_dict, moa.RunRecord.json_fields,
                     moa.debate):
        source = inspect.getsource(function)
        assert "json." not in source and "load_json" not in source and "safe_json" not in source, function


def test_a_cancelled_run_hands_over_what_was_done(monkeypatch) -> None:
    """Cancelled mid-run, answer_question still leaves the record of the calls made in the handover."""
    config = small_config(enable_file_logging=False)
    handover = moa.Handover(moa.run_record(config, "Q?"))

    async def go() -> None:
        async with moa.open_client(config) as client:
            runtime = test_runtime()
            task = asyncio.create_task(moa.answer_question(config, "Q?", moa.Endpoint(config, client, runtime),
                                                           runtime, handover))
            await asyncio.wait_for(both_asked.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    stall, both_asked, asked = asyncio.Event(), asyncio.Event(), []

    async def hang(request):
        asked.append(request)
        if len(asked) == 2:
            both_asked.set()
        await stall.wait()

    with respx.mock:
        respx.post(URL).mock(side_effect=hang)
        asyncio.run(go())
    assert handover.record.error == "interrupted" and handover.record.exit_code == moa.EXIT_INTERRUPTED
    assert handover.record.status == "failed" and handover.record.llm_calls == 2


def test_a_batch_line_written_before_schema_version_1_is_resumed(tmp_path, monkeypatch, capsys) -> None:
    """An output line in 4598ccd's format (tokens, no schema_version) counts as done: its id is not asked again."""
    old = {"id": "a", "question": "What is 17*23?", "final_answer": "391", "confidence": 90, "status": "ok",
           "error": None, "llm_calls": 18, "http_requests": 18, "phases": {}, "rounds": 1, "degraded": False,
           "tokens": 4753, "tokens_estimated": False, "budget_limited": False, "elapsed_s": 1.5,
           "transcript": None, "expected": "391", "correct": True}
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(old) + "\n")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "a", "question": "What is 17*23?", "answer": "391"}) + "\n"
                         + json.dumps({"id": "b", "question": "What is 391?"}) + "\n")
    monkeypatch.setenv("NUM_WORKERS", "2")
    monkeypatch.setenv("NUM_JUDGES", "1")
    with respx.mock:
        route = respx.post(URL).mock(side_effect=FakeModel())
        assert moa.main(["-f", str(questions), "-o", str(out), "--json"], runtime=test_runtime()) == 0
    asked = {json.loads(c.request.content)["messages"][1]["content"] for c in route.calls}
    assert not [text for text in asked if "17*23" in text], "the old line's question ran again"
    lines = lines_of(out)
    assert [line["id"] for line in lines] == ["a", "b"] and lines[0] == old and lines[1]["schema_version"] == 2
    summary = json.loads(capsys.readouterr().out)
    assert summary["output_totals"]["correct"] == 1 and summary["output_totals"]["questions"] == 2


def test_the_library_sections_use_nothing_from_the_cli_section() -> None:
    """Sections 1-11 (up to debate()) name no top-level function or class of section 15 (exit_code_for stays in 3)."""
    import ast
    source = Path(moa.__file__).read_text(encoding="utf-8")
    banners = [n for n, line in enumerate(source.splitlines(), 1) if line.startswith("# --- ")]
    library_end, cli_start = banners[11], banners[14]  # the lines of the banners of sections 12 and 15
    tree = ast.parse(source)
    cli = {node.name for node in tree.body if node.lineno > cli_start
           and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    used = {node.id for top in tree.body if top.lineno < library_end for node in ast.walk(top)
            if isinstance(node, ast.Name)}
    assert cli and not used & cli, sorted(used & cli)


def test_the_library_raises_the_runs_own_failure_with_its_cause() -> None:
    """debate() raises what stopped the run (EndpointUnreachable here), with the last call's error as its cause."""
    config = dataclasses.replace(small_config(enable_file_logging=False), max_retries=0)
    with respx.mock:
        respx.post(URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(moa.EndpointUnreachable) as failed:
            asyncio.run(moa.debate("What is 17 * 23?", config=config))
    assert isinstance(failed.value.cause, moa.APIError) and failed.value.result.status == "failed"


def test_every_json_the_tool_writes_says_its_schema_version(tmp_path, monkeypatch, capsys) -> None:
    """--dry-run --json and the batch summary carry schema_version, as --json, batch lines and traces do."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")
    assert moa.main(["-q", "What is 17 * 23?", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema_version"] == moa.SCHEMA_VERSION
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "What is 17 * 23?"}\n')
    with respx.mock:
        respx.post(URL).mock(side_effect=FakeModel())
        assert moa.main(["-f", str(questions), "-o", str(tmp_path / "o.jsonl")], runtime=test_runtime()) == 0
    assert json.loads((tmp_path / "o.jsonl.summary.json").read_text())["schema_version"] == moa.SCHEMA_VERSION


def test_a_bad_from_names_its_choices_as_the_user_types_them(capsys) -> None:
    """--from with a bad value lists the values a user can type, not the Phase enum's reprs."""
    with pytest.raises(SystemExit):
        moa.build_parser().parse_args(["--replay", "t.jsonl", "--from", "round0"])
    err = capsys.readouterr().err
    assert "'critique'" in err and "<Phase" not in err
