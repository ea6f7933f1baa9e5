"""The response cache against a hostile user (issue 25, H6): a cached reply that echoes its old nonce."""
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
from conftest import URL, completion, test_runtime
from test_full_answers import full_model

pytestmark = pytest.mark.usefixtures("endpoint_env")


def echo_nonce(request: httpx.Request, n: int) -> httpx.Response:
    """A model that echoes the "[request …]" its prompt carries, as small models do (issue 23)."""
    nonce = re.search(r"\[request [^\]]+\]", json.dumps(json.loads(request.content)["messages"])).group(0)
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
    assert runs[1]["response"] == runs[0]["response"] and "[request" not in runs[1]["response"]
