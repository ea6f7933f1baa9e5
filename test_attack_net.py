"""Issue 20, attacked after the merge (retry hints, stragglers, shards, masking, --check, proxies):
each test is a variant a hostile user found broken, and fails on the merged code without its fix.

Time runs virtually (conftest); sockets, environment proxies and --check go through the real CLI
against small servers on 127.0.0.1.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx

import moa_pipeline as moa
from conftest import FAKE_KEY, URL, FakeModel, VirtualClock, answer_in_virtual_time, completion


def straggler_config(**changes: Any) -> moa.Config:
    config = moa.Config(URL, FAKE_KEY, retry_base_delay=0.1, enable_file_logging=False, straggler_factor=3.0,
                        min_judge_confidence=0, num_workers=5, num_judges=3)
    return replace(config, **changes)


# --- stragglers: the bar is set by calls that answered ---------------------------------------------


async def test_calls_that_failed_fast_do_not_set_the_straggler_bar() -> None:
    """Two solvers refused at once (HTTP 400), the other three take 5 s: the failures' 0 s at the endpoint
    are no answer's latency, so the three are not cut at 1 s and the question is answered."""
    clock, model = VirtualClock(), FakeModel()

    async def side_effect(request: httpx.Request) -> httpx.Response:
        phase, agent = request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]
        if phase == "generate" and agent in ("solver-1", "solver-2"):
            return completion(None, status=400)
        await clock.sleep(5.0 if phase == "generate" else 1.0)
        return model(request)

    result = await answer_in_virtual_time(straggler_config(), clock, side_effect)
    assert result.status == "ok", result.error
    assert not [c for c in result.calls if c.failure == "cut as a straggler"], result.notes
