"""The response cache against a hostile user (issue 25, H6): CACHE_PATH naming a file the batch writes; a cached
reply that echoes its old nonce."""
from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, completion, test_runtime
from test_full_answers import full_model

pytestmark = pytest.mark.usefixtures("endpoint_env")
QUESTIONS = "What is 17 * 23?\nWhat is 2 + 2?\n"


@respx.mock
@pytest.mark.parametrize("mode, cache_name", [
    ("on", "out.jsonl"),
    ("refresh", "out.jsonl"),
    ("on", "out.jsonl.summary.json"),
    ("on", "sub/../out.jsonl"),
], ids=["output", "output-refresh", "summary", "output-other-spelling"])
def test_cache_path_naming_the_batch_output_is_refused(tmp_path: Path, monkeypatch, capsys, mode: str,
                                                      cache_name: str) -> None:
    """CACHE_PATH = -o (new, so empty when SQLite opened it): SQLite wrote its pages over the result lines, which were
    lost at exit 0. Now a usage error (exit 2) naming CACHE_PATH, before anything is sent or written."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "qs.txt").write_text(QUESTIONS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CACHE", mode)
    monkeypatch.setenv("CACHE_PATH", str(tmp_path / cache_name))
    route = respx.post(URL).mock(side_effect=FakeModel())
    code = moa.main(["-f", "qs.txt", "-o", "out.jsonl", "--json"], runtime=test_runtime())
    err = capsys.readouterr().err
    assert code == 2 and "CACHE_PATH" in err and route.call_count == 0
    assert not (tmp_path / "out.jsonl").exists()


@respx.mock
@pytest.mark.parametrize("cache_name", ["gold.eval/single.jsonl", "gold.eval/debate.jsonl", "gold.eval/report.md"],
                         ids=["first-strategy", "another-strategy", "report"])
def test_cache_path_naming_an_eval_file_is_refused(tmp_path: Path, monkeypatch, capsys, cache_name: str) -> None:
    """--eval writes a batch per strategy into its folder: CACHE_PATH naming one of them is refused the same way."""
    (tmp_path / "gold.jsonl").write_text('{"question": "What is 17 * 23?", "answer": "391"}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CACHE", "on")
    monkeypatch.setenv("CACHE_PATH", cache_name)
    route = respx.post(URL).mock(side_effect=FakeModel())
    code = moa.main(["--eval", "gold.jsonl", "--strategies", "single,debate", "--json"], runtime=test_runtime())
    assert code == 2 and "CACHE_PATH" in capsys.readouterr().err and route.call_count == 0


@respx.mock
def test_cache_path_off_beside_the_output_is_no_error(tmp_path: Path, monkeypatch, capsys) -> None:
    """CACHE=off leaves CACHE_PATH unused: naming the output with it is no error, and the results are whole."""
    (tmp_path / "qs.txt").write_text(QUESTIONS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CACHE_PATH", str(tmp_path / "out.jsonl"))
    respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["-f", "qs.txt", "-o", "out.jsonl", "--json"], runtime=test_runtime()) == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def echo_nonce(request: httpx.Request, n: int) -> httpx.Response:
    """A model that echoes the "#<hex>" nonce its prompt carries, as small models do (issues 23, 25)."""
    nonce = re.search(r"#[0-9a-f]{16}", json.dumps(json.loads(request.content)["messages"])).group(0)
    return completion(f"Caches keep the past,\nreplies that were paid for once,\nserved again for free. {nonce}")


@respx.mock
@pytest.mark.parametrize("mode", ["on", "read"], ids=["on", "read"])
def test_a_cached_reply_echoing_its_nonce_is_read_without_it(three, tmp_path: Path, monkeypatch, capsys,
                                                             mode: str) -> None:
    """A hit's text holds the nonce of the attempt that was sent, not this one's: the rerun's response (a synthesis
    served from the cache) ended '[request 2217bead…]', which the first run had stripped."""
    monkeypatch.setenv("CACHE_PATH", str(tmp_path / "c.sqlite3"))
    respx.post(URL).mock(side_effect=full_model(synthesis=echo_nonce))
    runs = []
    for seed, step in enumerate(("on", mode)):  # each run its own nonces, as real runs draw them
        monkeypatch.setenv("CACHE", step)
        runtime = dataclasses.replace(test_runtime(), rng=random.Random(seed))
        assert moa.main(["-q", "Merge two sorted lists.", "--answer", "full", "--json"], runtime=runtime) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[1]["http_requests"] == 0 and runs[1]["usage"]["cache_hits"] == runs[0]["llm_calls"]
    assert runs[1]["response"] == runs[0]["response"] and not re.search(r"#[0-9a-f]{16}", runs[1]["response"])


@pytest.mark.parametrize("content, code", [(None, 0), (b"not a database", 1)], ids=["no-file-yet", "corrupt"])
def test_the_cache_command_masks_a_key_in_cache_path(tmp_path: Path, monkeypatch, capsys, content: bytes | None,
                                                      code: int) -> None:
    """A CACHE_PATH holding the API key (a folder named after it): a run's warning masks it, `cache` printed it."""
    folder = tmp_path / f"keys-{FAKE_KEY}"
    folder.mkdir()
    if content is not None:
        (folder / "c.sqlite3").write_bytes(content)
    monkeypatch.setenv("CACHE_PATH", str(folder / "c.sqlite3"))
    assert moa.main(["cache", "--json"]) == code
    out, err = capsys.readouterr()
    assert "c.sqlite3" in out + err and FAKE_KEY not in out + err
