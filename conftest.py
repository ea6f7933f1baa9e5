"""Shared test fixtures: a hermetic environment and a scripted fake model."""
from __future__ import annotations

import asyncio
import dataclasses
import heapq
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import moa_pipeline as moa

URL = "https://proxy.test/v1/chat/completions"
FAKE_KEY = "sk-test-SECRET-1234567890abcdef"
REAL_ENDPOINT = "MOA_REAL_ENDPOINT"  # a chat-completions base URL, e.g. http://127.0.0.1:8088/v1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked real_endpoint talk to a live model: skipped unless MOA_REAL_ENDPOINT names one, so the
    suite stays offline by default and the same tests run against a real server when one is given."""
    if os.environ.get(REAL_ENDPOINT):
        return
    skip = pytest.mark.skip(reason=f"needs a live model: set {REAL_ENDPOINT} (see bench/real_model.py)")
    for item in items:
        if item.get_closest_marker("real_endpoint"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """No test reads the developer's .env or environment, or writes into logs/."""
    names = [s.env for s in moa.SETTINGS] + list(moa.FALLBACK_NAMES.values()) + [moa.ENV_FILE_VARIABLE]
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    # nor the developer's per-user settings file (moa_pipeline.user_settings_file) or state folder
    monkeypatch.setenv(moa.CONFIG_HOME_VARIABLE, str(tmp_path / "config-home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yield
    # main() points our loggers at this test's captured stderr, which closes now.
    for name in ("moa", "httpx", "httpcore"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


@pytest.fixture
def endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The minimum settings for a run against the mocked endpoint, with no backoff."""
    monkeypatch.setenv("PROXY_URL", URL)
    monkeypatch.setenv("API_KEY", FAKE_KEY)
    monkeypatch.setenv("RETRY_BASE_DELAY", "0")
    # Virtual time stands still during a mocked call, so the straggler watch
    # would see every call as slow; the straggler tests turn it on themselves.
    monkeypatch.setenv("STRAGGLER_FACTOR", "0")


@pytest.fixture
def three(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three solvers and three judges, no transcripts: the full-answer tests' small debate."""
    monkeypatch.setenv("NUM_WORKERS", "3")
    monkeypatch.setenv("NUM_JUDGES", "3")
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")


def completion(content: str | None, finish_reason: str = "stop", usage: dict | None = None,
               status: int = 200, headers: dict | None = None) -> httpx.Response:
    """An OpenAI-shaped chat completion response."""
    body: dict[str, Any] = {
        "id": "cmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return httpx.Response(status, json=body, headers=headers)


def solver_text(answer: str) -> str:
    return f"<reasoning>I worked it out carefully.</reasoning>\n<answer>{answer}</answer>"


def judge_text(answer: str, confidence: int) -> str:
    return f"<analysis>Checked every candidate.</analysis>\nFINAL ANSWER: {answer}\nCONFIDENCE: {confidence}"


@dataclass
class FakeModel:
    """Answers by phase (the X-MoA-Phase header). A phase's script is either a
    fixed text, or a callable (request, n-th call of that phase) -> Response."""

    answer: str = "391"
    confidence: int = 90
    overrides: dict[str, Callable[[httpx.Request, int], httpx.Response]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    def default(self, phase: str) -> httpx.Response:
        if phase == "generate":
            return completion(solver_text(self.answer))
        if phase == "critique":
            return completion("<critique>I recomputed it; the answer holds.</critique>")
        if phase == "rebuttal":
            return completion(f"<rebuttal>The critique agrees.</rebuttal><answer>{self.answer}</answer>")
        return completion(judge_text(self.answer, self.confidence))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        phase = request.headers.get("X-MoA-Phase", "?")
        n = self.seen.get(phase, 0)
        self.seen[phase] = n + 1
        if phase in self.overrides:
            return self.overrides[phase](request, n)
        return self.default(phase)


def body_of(call) -> dict[str, Any]:
    return json.loads(call.request.content)


def phases_of(route) -> list[str]:
    return [c.request.headers["X-MoA-Phase"] for c in route.calls]


class FakeSleep:
    """Records requested sleeps instead of sleeping, and moves a virtual clock
    forward by each one, so code that waits "until" a time sees it arrive."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 1000.0

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)  # still a checkpoint, as a real sleep is

    def clock(self) -> float:
        return self.now


def test_runtime(sleep: FakeSleep | None = None, now: float = 1_700_000_000.0) -> moa.Runtime:
    sleep = sleep or FakeSleep()
    return moa.Runtime(sleep=sleep, clock=sleep.clock, wall_clock=lambda: now, rng=random.Random(7))


test_runtime.__test__ = False  # a helper, not a test


async def debate_at(runtime: moa.Runtime, question: str, **keywords: Any) -> moa.Result:
    """debate(), on a test's clock and sleep: a Debater's runtime is the library's seam (no private keyword)."""
    client = moa.Debater(**keywords)
    client.runtime = dataclasses.replace(runtime, secrets=client.config.secrets)
    async with client:
        return await client.debate(question)


class VirtualClock:
    """Discrete-event time for scheduling tests: ``sleep`` waits until virtual
    time reaches its deadline; ``drive`` lets every task settle, then jumps time
    to the earliest sleeper. Latencies become exact and no test waits."""

    SETTLE_STEPS = 30

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._seq, future))
        await future

    async def drive(self) -> None:
        while True:
            for _ in range(self.SETTLE_STEPS):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].cancelled():
                heapq.heappop(self._sleepers)
            if self._sleepers:
                when, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, when)
                future.set_result(None)

    def runtime(self) -> moa.Runtime:
        return moa.Runtime(sleep=self.sleep, clock=self.clock, wall_clock=lambda: 1_700_000_000.0,
                           rng=random.Random(7))


async def answer_in_virtual_time(config: moa.Config, clock: VirtualClock,
                                 side_effect: Callable[[httpx.Request], Any], question: str = "Q?") -> moa.RunRecord:
    """One question against a mocked endpoint whose ``side_effect`` may sleep on ``clock``."""
    return (await answer_all_in_virtual_time(config, clock, side_effect, [question]))[0]


async def answer_all_in_virtual_time(config: moa.Config, clock: VirtualClock,
                                     side_effect: Callable[[httpx.Request], Any],
                                     questions: list[str]) -> list[moa.RunRecord]:
    """Questions at once through one endpoint, as a batch runs them, in virtual time."""
    driver = asyncio.create_task(clock.drive())
    try:
        with respx.mock:
            respx.post(URL).mock(side_effect=side_effect)
            async with moa.open_client(config) as client:
                runtime = clock.runtime()
                endpoint = moa.Endpoint(config, client, runtime)
                return list(await asyncio.gather(*(moa.answer_question(config, question, endpoint, runtime)
                                                   for question in questions)))
    finally:
        driver.cancel()


# --- a real server on 127.0.0.1 ------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
from batch_memory import start_fake_endpoint  # noqa: E402


class FakeServer:
    """bench/fake_endpoint.py as a process on a free port, with its request log."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.log = log_dir / f"server_{time.monotonic_ns()}.jsonl"
        self.process, self.url = start_fake_endpoint(*args, "--log", str(self.log))

    def events(self, kind: str = "start") -> list[dict]:
        """The logged request starts (or ends, with their status)."""
        if not self.log.exists():
            return []
        return [e for e in map(json.loads, self.log.read_text().splitlines()) if e["event"] == kind]

    def starts(self) -> list[dict]:
        return self.events("start")

    def runs(self) -> set[str]:
        """The questions that sent at least one request (one run id per question)."""
        return {e["run"] for e in self.starts()}

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()


@pytest.fixture
def server(tmp_path_factory):
    """Start fake endpoints with the given flags; every one is killed at the end. Their logs live
    outside tmp_path, which some tests list."""
    started: list[FakeServer] = []
    log_dir = tmp_path_factory.mktemp("server")

    def start(*args: str) -> FakeServer:
        started.append(FakeServer(log_dir, *args))
        return started[-1]

    yield start
    for one in started:
        one.close()
