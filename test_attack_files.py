"""Issue 20 attacked again (items 4, 7, 8, 12, 15, 16, 18): hostile traces, what an endpoint bills
for replies we cannot use, what killed batches leave, and library arguments that hold secrets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, test_runtime

pytestmark = pytest.mark.usefixtures("endpoint_env")
QUESTION = "What is 17 * 23?"


def traced_run(capsys) -> Path:
    """A plain run's trace (three solvers, one judge, answered by FakeModel)."""
    respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["-q", QUESTION, "-w", "3", "-j", "1", "--json"], runtime=test_runtime()) == 0
    return Path(json.loads(capsys.readouterr().out)["trace"])


# --- item 4: hostile traces -------------------------------------------------------------------------


@respx.mock
def test_a_trace_whose_question_is_not_valid_unicode_replays(capsys, tmp_path) -> None:
    """A trace question holding a lone surrogate (JSON "\\ud800") is sent with it replaced, not an internal error."""
    lines = traced_run(capsys).read_text().splitlines()
    run = json.loads(lines[0])
    run["question"] = QUESTION + " \ud800"
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text("\n".join([json.dumps(run), *lines[1:]]) + "\n")
    route = respx.post(URL).mock(side_effect=FakeModel())
    route.calls.clear()
    assert moa.main(["--replay", str(hostile), "--from", "judges", "-j", "1"], runtime=test_runtime()) == 0
    sent = json.loads(route.calls[0].request.content)["messages"][1]["content"]
    assert route.call_count == 1 and f"{QUESTION} ?" in sent


@respx.mock
def test_two_traces_joined_into_one_file_are_refused(capsys, tmp_path) -> None:
    """`cat a.jsonl b.jsonl > c.jsonl`: two runs' answers would be mixed under one question; exit 2, one line."""
    first, second = traced_run(capsys), traced_run(capsys)
    joined = tmp_path / "joined.jsonl"
    joined.write_text(first.read_text() + second.read_text())
    route = respx.post(URL).mock(side_effect=FakeModel())
    route.calls.clear()
    assert moa.main(["--replay", str(joined), "--from", "judges", "-j", "1"], runtime=test_runtime()) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "starts a second run" in err and route.call_count == 0
