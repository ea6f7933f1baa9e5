"""moa_pipeline: one better answer from a debate among several LLM calls.

The question goes through one OpenAI-compatible chat-completions endpoint:

    generate (N blind solvers) -> critique (each answer by another slot)
    -> rebuttal (each solver defends or revises) -> judges (vote)

and the whole debate runs once more, hotter and wider, when the judges' winning
confidence is below MIN_JUDGE_CONFIDENCE.

Run it:

    python moa_pipeline.py -q "What is 17 * 23?"
    echo "What is 17 * 23?" | python moa_pipeline.py -q - --json
    python moa_pipeline.py -q "..." -w 3 -j 1 --no-rebuttal -v

Settings come from flags, then the environment, then .env, then defaults
(see .env.example and README.md). Results go to stdout, logs to stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from dotenv import dotenv_values

import prompts
from parsing import ParsedAnswer, normalize_answer, parse_answer, parse_block, parse_judgement, parse_rebuttal

log = logging.getLogger("moa")
T = TypeVar("T")

# --- constants ---------------------------------------------------------------

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_ENV_FILE = ".env"
MAX_WORKERS = 64
MAX_JUDGES = 25
MAX_TEMPERATURE = 2.0
# The rerun rule: one more debate, hotter and wider, never more than one.
RERUN_TEMPERATURE_STEP = 0.2
RERUN_EXTRA_WORKERS = 2
# Status codes worth another attempt: timeouts, conflicts, rate limits, 5xx.
RETRYABLE_STATUS = frozenset({408, 409, 429})
# How much of a server's error body we quote to the user.
SERVER_MESSAGE_LIMIT = 300
# Connections the pool may open beyond MAX_CONCURRENT_REQUESTS. Our semaphore
# keeps in-flight requests below the pool's limit, so no request ever waits
# inside httpcore's pool, where a cancel can leak a slot (httpcore issue 1093).
POOL_HEADROOM = 4
PHASES = ("generate", "critique", "rebuttal", "judge")
PHASE_TITLES = {
    "generate": "Phase 1 - Blind generation",
    "critique": "Phase 2 - Cross-critique",
    "rebuttal": "Phase 3 - Rebuttal",
    "judge": "Phase 4 - Judges",
}
PHASE_NOUNS = {"generate": "valid", "critique": "critiques", "rebuttal": "rebuttals", "judge": "verdicts"}
SECRET_MASK = "***"

# --- configuration -----------------------------------------------------------


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value
    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number from {low:g} to {high:g}") from None
        if not low <= value <= high:  # also rejects nan
            raise ValueError(f"expected a number from {low:g} to {high:g}")
        return value
    return parse


def _boolean(raw: str) -> bool:
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _text(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("expected a non-empty value")
    return value


def _api_key(raw: str) -> str:
    # httpx quotes an illegal header value in its exception text, so a key
    # that cannot be sent must be refused here, without echoing it.
    value = raw.strip()
    if not value:
        raise ValueError("expected a non-empty key (any value works for servers without auth)")
    if not all(33 <= ord(ch) < 127 for ch in value):
        raise ValueError("contains spaces or characters that cannot be sent in an HTTP header")
    return value


def chat_completions_url(raw: str) -> str:
    """A full chat-completions URL from either that URL or a base URL (…/v1)."""
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL such as https://host/v1")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def display_url(url: str) -> str:
    """The URL without user info or query, which can carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Setting:
    """One tunable: its .env name, default, parser and Config field."""

    env: str
    default: str | None  # None: required
    parse: Callable[[str], Any]
    secret: bool = False

    @property
    def field(self) -> str:
        return self.env.lower()


SETTINGS: tuple[Setting, ...] = (
    Setting("PROXY_URL", None, chat_completions_url),
    Setting("API_KEY", None, _api_key, secret=True),
    Setting("MODEL_NAME", "default", _text),
    Setting("NUM_WORKERS", "5", _integer(1, MAX_WORKERS)),
    Setting("MIN_VALID_ANSWERS", "2", _integer(1, MAX_WORKERS)),
    Setting("MAX_RETRIES", "4", _integer(0, 20)),
    Setting("RETRY_BASE_DELAY", "1.0", _number(0, 600)),
    Setting("RETRY_MAX_DELAY", "60.0", _number(0, 3600)),
    Setting("REQUEST_TIMEOUT", "200.0", _number(0.001, 3600)),
    Setting("TEMPERATURE", "1.0", _number(0, MAX_TEMPERATURE)),
    Setting("MAX_TOKENS", "8192", _integer(1, 1_000_000)),
    Setting("JUDGE_TEMPERATURE", "0.2", _number(0, MAX_TEMPERATURE)),
    Setting("JUDGE_MAX_TOKENS", "8192", _integer(1, 1_000_000)),
    Setting("NUM_JUDGES", "3", _integer(1, MAX_JUDGES)),
    Setting("MIN_JUDGE_CONFIDENCE", "60", _integer(0, 100)),
    Setting("ENABLE_REBUTTAL", "true", _boolean),
    Setting("ENABLE_FILE_LOGGING", "true", _boolean),
    Setting("LOG_DIR", "logs", _text),
    Setting("LOG_FILENAME_PREFIX", "moa_run", _text),
    Setting("MAX_CONCURRENT_REQUESTS", "16", _integer(1, 256)),
)
# Accepted when PROXY_URL / API_KEY are unset everywhere, as the OpenAI SDK names them.
FALLBACK_NAMES = {"PROXY_URL": "OPENAI_BASE_URL", "API_KEY": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class Config:
    """Every setting of a run, parsed and checked once in main()."""

    proxy_url: str
    api_key: str = field(repr=False)
    model_name: str = "default"
    num_workers: int = 5
    min_valid_answers: int = 2
    max_retries: int = 4
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    request_timeout: float = 200.0
    temperature: float = 1.0
    max_tokens: int = 8192
    judge_temperature: float = 0.2
    judge_max_tokens: int = 8192
    num_judges: int = 3
    min_judge_confidence: int = 60
    enable_rebuttal: bool = True
    enable_file_logging: bool = True
    log_dir: str = "logs"
    log_filename_prefix: str = "moa_run"
    max_concurrent_requests: int = 16

    def shown(self) -> dict[str, Any]:
        """Settings as the transcript shows them: secrets masked, URL cleaned."""
        values = {s.env: getattr(self, s.field) for s in SETTINGS}
        values["API_KEY"] = SECRET_MASK
        values["PROXY_URL"] = display_url(self.proxy_url)
        return values


def _pick(name: str, flags: Mapping[str, str], environ: Mapping[str, str],
          dotenv: Mapping[str, str | None]) -> tuple[str, str] | None:
    """(raw value, where it came from) by precedence: flag > environment > .env."""
    if flags.get(name) is not None:
        return flags[name], "flag"
    if environ.get(name) is not None:
        return environ[name], "environment"
    if dotenv.get(name) is not None:
        return str(dotenv[name]), ".env"
    return None


def load_config(flags: Mapping[str, str], environ: Mapping[str, str],
                dotenv: Mapping[str, str | None]) -> Config:
    """Build the Config from flags, environment and .env; ConfigError if anything is off."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        found = _pick(setting.env, flags, environ, dotenv)
        if found is None and setting.env in FALLBACK_NAMES:
            found = _pick(FALLBACK_NAMES[setting.env], {}, environ, dotenv)
        if found is None:
            if setting.default is None:
                raise ConfigError(f"{setting.env} is not set: put it in .env (see .env.example) or the environment")
            found = (setting.default, "default")
        raw, source = found
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as err:
            shown = SECRET_MASK if setting.secret else repr(raw)
            raise ConfigError(f"{setting.env}={shown} ({source}) is not valid: {err}") from None
    config = Config(**values)
    if config.min_valid_answers > config.num_workers:
        raise ConfigError(f"MIN_VALID_ANSWERS={config.min_valid_answers} is more than NUM_WORKERS="
                          f"{config.num_workers}: lower it or add workers")
    return config


def read_env_file(path: str | None) -> dict[str, str | None]:
    """Values of the .env file; a file named with --env-file must exist.

    We read it with dotenv_values instead of load_dotenv so nothing is written
    into os.environ: the precedence (environment over .env) stays explicit in
    load_config, and tests need no global clean-up.
    """
    if path is None:
        return dict(dotenv_values(DEFAULT_ENV_FILE)) if os.path.isfile(DEFAULT_ENV_FILE) else {}
    if not os.path.isfile(path):
        raise ConfigError(f"--env-file {path}: no such file")
    try:
        return dict(dotenv_values(path))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--env-file {path}: cannot read it ({err.__class__.__name__})") from None


# --- errors ------------------------------------------------------------------
#
#   MoAError                 base; exit code 1
#   ├── ConfigError          bad flag, setting or input; exit code 2, no request sent
#   ├── APIError             one HTTP attempt failed; carries status and server message
#   └── RunFailed            the debate could not reach a verdict


class MoAError(Exception):
    exit_code = EXIT_FAILED


class ConfigError(MoAError):
    exit_code = EXIT_USAGE


class APIError(MoAError):
    """A failed attempt. ``retryable`` decides whether the call tries again."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True,
                 retry_after: float | None = None, response_text: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.response_text = response_text


class RunFailed(MoAError):
    pass


# --- seams: time and randomness ----------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """What the pipeline needs from the outside world that tests replace."""

    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)


# --- the HTTP call with its retry loop ---------------------------------------


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    status: int
    usage: dict[str, Any] | None


@dataclass
class Attempt:
    """One HTTP attempt of an agent call, as the transcript shows it."""

    number: int
    nonce: str
    started_s: float
    latency_s: float = 0.0
    status: int | None = None
    outcome: str = "pending"  # "ok", or why it failed
    finish_reason: str | None = None
    response_text: str = ""
    retry_in_s: float | None = None


@dataclass
class AgentCall:
    """One logical call (one agent in one phase), with all its attempts."""

    round: int
    phase: str
    agent: str
    system: str
    user: str
    attempts: list[Attempt] = field(default_factory=list)
    ok: bool = False
    failure: str | None = None
    tier: str | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def retry_delay(config: Config, attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Full-jitter exponential backoff, or the server's Retry-After; both capped."""
    if retry_after is not None:
        return min(retry_after, config.retry_max_delay)
    ceiling = min(config.retry_max_delay, config.retry_base_delay * 2 ** (attempt - 1))
    return rng.uniform(0, ceiling)


def server_message(response: httpx.Response) -> str:
    """The server's own error text, short, and never a whole HTML page."""
    body = response.content.decode("utf-8", errors="replace").strip()
    if "html" in response.headers.get("content-type", "").lower() or body[:1] == "<":
        return "an HTML error page"
    try:
        data = json.loads(body)
    except ValueError:
        return body[:SERVER_MESSAGE_LIMIT] or "no message"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail") or json.dumps(error)
        return str(error)[:SERVER_MESSAGE_LIMIT]
    return body[:SERVER_MESSAGE_LIMIT]


def status_error(response: httpx.Response, now: float) -> APIError:
    """The APIError for a non-2xx response, retryable or not."""
    status = response.status_code
    message = server_message(response)
    retryable = status in RETRYABLE_STATUS or status >= 500
    if status in (401, 403):
        text = f"the endpoint rejected the API key (HTTP {status}): {message}"
    else:
        text = f"HTTP {status}: {message}"
    retry_after = parse_retry_after(response.headers.get("retry-after"), now)
    return APIError(text, status=status, retryable=retryable, retry_after=retry_after)


def _message_text(content: Any) -> str | None:
    # Some servers send content as a list of typed parts.
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return content if isinstance(content, str) else None


def read_completion(response: httpx.Response) -> Completion:
    """A Completion from a 2xx response; APIError (retryable) for any bad body."""
    status = response.status_code
    try:
        data = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise APIError("the response body is not valid JSON", status=status) from None
    if not isinstance(data, dict):
        raise APIError("the response body is not a completion object", status=status)
    if data.get("error"):
        error = data["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise APIError(f"the endpoint returned an error: {str(message)[:SERVER_MESSAGE_LIMIT]}", status=status)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise APIError("the response has no choices", status=status)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    text = _message_text(message.get("content"))
    if not text or not text.strip():
        raise APIError("the response content is empty", status=status)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape in the JSON
        raise APIError("the response content is not valid Unicode", status=status) from None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    return Completion(text, choice.get("finish_reason"), status, usage)


class Endpoint:
    """The one chat-completions endpoint: a shared client and a request cap."""

    def __init__(self, config: Config, client: httpx.AsyncClient, runtime: Runtime) -> None:
        self.config = config
        self.client = client
        self.runtime = runtime
        self.slots = asyncio.Semaphore(config.max_concurrent_requests)
        self.requests_sent = 0

    async def complete(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                       headers: Mapping[str, str]) -> Completion:
        """One HTTP attempt; raises APIError, never an httpx exception."""
        body = {"model": self.config.model_name, "messages": messages,
                "temperature": temperature, "max_tokens": max_tokens}
        async with self.slots:
            self.requests_sent += 1
            try:
                response = await self.client.post(self.config.proxy_url, json=body, headers=dict(headers))
            except httpx.TimeoutException:
                raise APIError(f"no response within REQUEST_TIMEOUT={self.config.request_timeout:g}s") from None
            except httpx.TransportError as err:
                where = display_url(self.config.proxy_url)
                raise APIError(f"connection error to {where}: {_short(err)}") from None
        try:
            if not 200 <= response.status_code < 300:
                raise status_error(response, self.runtime.wall_clock())
            return read_completion(response)
        except APIError as err:
            # A server may echo the key back in its error text.
            err.args = (redact(str(err), self.config),)
            raise


def _short(err: BaseException) -> str:
    return (str(err) or err.__class__.__name__).splitlines()[0][:SERVER_MESSAGE_LIMIT]


def open_client(config: Config) -> httpx.AsyncClient:
    """The run's one HTTP client; every timeout explicit (httpx's default is 5 s)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(config.request_timeout),
        limits=httpx.Limits(max_connections=config.max_concurrent_requests + POOL_HEADROOM,
                            max_keepalive_connections=config.max_concurrent_requests + POOL_HEADROOM),
        headers={"Authorization": f"Bearer {config.api_key}"},
    )


# --- the debate's state and records ------------------------------------------


@dataclass
class Position:
    """One solver's line through the debate."""

    slot: int
    answer: str
    reasoning: str
    critique: str | None = None
    critic: str | None = None
    rebuttal: str | None = None
    final_answer: str = ""

    @property
    def agent(self) -> str:
        return f"solver-{self.slot + 1}"


@dataclass(frozen=True)
class Vote:
    answer: str
    confidence: int | None
    voter: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of one debate round."""

    answer: str
    confidence: int
    agreeing: int
    valid: int
    source: str  # "judges", or "solvers" when no judge gave a FINAL ANSWER
    tally: dict[str, int]


@dataclass
class Debate:
    """Run state shared by the phases: where to send calls and what happened."""

    config: Config
    endpoint: Endpoint
    runtime: Runtime
    run_id: str
    started: float
    calls: list[AgentCall] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    round: int = 1

    def note(self, text: str) -> None:
        self.notes.append(f"round {self.round}: {text}")
        log.warning(text)

    def new_nonce(self) -> str:
        return f"{self.runtime.rng.getrandbits(64):016x}"


def build_messages(system: str, user: str, nonce: str) -> list[dict[str, str]]:
    """Chat messages for one attempt.

    Every attempt carries a fresh nonce: five solvers sending identical
    requests through a caching gateway would otherwise get one cached answer
    five times, and a retry would get the same cached failure back.
    """
    suffix = prompts.render(prompts.NONCE_SUFFIX, nonce=nonce)
    return [{"role": "system", "content": system + suffix}, {"role": "user", "content": user}]


async def ask(debate: Debate, phase: str, agent: str, system: str, user: str, *,
              temperature: float, max_tokens: int, parse: Callable[[str], T | None]) -> T | None:
    """One agent call with retries; the parsed value, or None once retries run out.

    Raises APIError only for errors no retry can fix (bad key, bad request).
    """
    config, runtime = debate.config, debate.runtime
    call = AgentCall(debate.round, phase, agent, system, user)
    debate.calls.append(call)
    for number in range(1, config.max_retries + 2):
        attempt = Attempt(number, debate.new_nonce(), runtime.clock() - debate.started)
        call.attempts.append(attempt)
        headers = {"X-MoA-Run-Id": debate.run_id, "X-MoA-Phase": phase, "X-MoA-Agent": agent}
        if number > 1:
            headers["cf-aig-skip-cache"] = "true"
        try:
            completion = await debate.endpoint.complete(
                build_messages(system, user, attempt.nonce),
                temperature=temperature, max_tokens=max_tokens, headers=headers)
            attempt.status, attempt.finish_reason = completion.status, completion.finish_reason
            attempt.response_text = completion.text
            value = parse(completion.text)
            cut = completion.finish_reason == "length"
            if value is not None and cut and tier_of(value) == "paragraph":
                value = None  # a guess from cut-off text would be half a sentence
            if value is None:
                why = " (cut off: finish_reason=length)" if cut else ""
                raise APIError(f"no usable {phase} output{why}", status=completion.status)
        except APIError as err:
            attempt.latency_s = runtime.clock() - debate.started - attempt.started_s
            attempt.status = err.status if err.status is not None else attempt.status
            attempt.outcome = str(err)
            call.failure = str(err)
            if not err.retryable:
                raise
            if number > config.max_retries:
                break
            attempt.retry_in_s = retry_delay(config, number, err.retry_after, runtime.rng)
            log.info("%s %s attempt %d failed (%s); retrying in %.1fs", phase, agent, number, err,
                     attempt.retry_in_s)
            await runtime.sleep(attempt.retry_in_s)
            continue
        attempt.latency_s = runtime.clock() - debate.started - attempt.started_s
        attempt.outcome = "ok"
        call.ok, call.failure = True, None
        call.tier = tier_of(value)
        return value
    log.warning("%s %s failed after %d attempt(s): %s", phase, agent, len(call.attempts), call.failure)
    return None


def tier_of(value: object) -> str | None:
    """Which parser tier produced a parsed value: its ``tier``, or a tuple's last item."""
    if isinstance(value, tuple):
        return value[-1] if isinstance(value[-1], str) else None
    return getattr(value, "tier", None)


async def run_all(coroutines: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; the first error that no retry fixes cancels the rest."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]  # type: ignore[arg-type]
    except BaseExceptionGroup as errors:
        first = next((e for e in errors.exceptions if isinstance(e, MoAError)), errors.exceptions[0])
        raise first from None
    return [task.result() for task in tasks]


# --- phases ------------------------------------------------------------------


def _valid_answer(text: str) -> ParsedAnswer | None:
    parsed = parse_answer(text)
    return parsed if parsed.answer.strip() else None


async def generate(debate: Debate, question: str, workers: int, temperature: float) -> list[Position]:
    """Phase 1: blind generation. The valid answers, in slot order."""
    config = debate.config
    quoted = prompts.quote_untrusted(question)
    system = prompts.render(prompts.SOLVER_SYSTEM)
    user = prompts.render(prompts.SOLVER_USER, question=quoted)

    async def solve(slot: int) -> Position | None:
        parsed = await ask(debate, "generate", f"solver-{slot + 1}", system, user,
                           temperature=temperature, max_tokens=config.max_tokens, parse=_valid_answer)
        if parsed is None:
            return None
        return Position(slot, parsed.answer, parsed.reasoning, final_answer=parsed.answer)

    results = await run_all(solve(slot) for slot in range(workers))
    return [p for p in results if p is not None]


def critic_slot(slot: int, workers: int) -> int:
    """Who critiques solver ``slot``: the next slot round the ring.

    A fixed ring means nobody critiques itself (with two or more workers),
    every critic does exactly one critique so the phase is as fast as one
    call, and the pairing is known before any answer arrives.
    """
    return (slot + 1) % workers


async def critique(debate: Debate, question: str, positions: list[Position], workers: int,
                   temperature: float) -> None:
    """Phase 2: each valid answer critiqued by another slot; a failure leaves it in play."""
    quoted = prompts.quote_untrusted(question)
    system = prompts.render(prompts.CRITIC_SYSTEM)

    async def review(position: Position) -> None:
        critic = f"solver-{critic_slot(position.slot, workers) + 1}"
        user = prompts.render(prompts.CRITIC_USER, question=quoted,
                              reasoning=prompts.quote_untrusted(position.reasoning or prompts.NOT_AVAILABLE),
                              answer=prompts.quote_untrusted(position.answer))
        found = await ask(debate, "critique", f"{critic}->{position.agent}", system, user,
                          temperature=temperature, max_tokens=debate.config.max_tokens,
                          parse=lambda text: parse_block(text, "critique"))
        if found is None:
            debate.note(f"critique of {position.agent} failed; its answer stays in play uncritiqued")
            return
        position.critique, position.critic = found[0], critic

    await run_all(review(p) for p in positions)


async def rebut(debate: Debate, question: str, positions: list[Position], temperature: float) -> None:
    """Phase 3: each critiqued solver defends or revises; a failure keeps its answer."""
    quoted = prompts.quote_untrusted(question)
    system = prompts.render(prompts.REBUTTAL_SYSTEM)

    async def reply(position: Position) -> None:
        user = prompts.render(prompts.REBUTTAL_USER, question=quoted,
                              reasoning=prompts.quote_untrusted(position.reasoning or prompts.NOT_AVAILABLE),
                              answer=prompts.quote_untrusted(position.answer),
                              critique=prompts.quote_untrusted(position.critique or ""))
        found = await ask(debate, "rebuttal", position.agent, system, user, temperature=temperature,
                          max_tokens=debate.config.max_tokens, parse=_rebuttal_with_tier)
        if found is None:
            debate.note(f"rebuttal of {position.agent} failed; its first answer stands")
            return
        position.rebuttal, position.final_answer = found[0], found[1].answer

    await run_all(reply(p) for p in positions if p.critique is not None)


def _rebuttal_with_tier(text: str) -> tuple[str, ParsedAnswer, str] | None:
    found = parse_rebuttal(text)
    return None if found is None else (found[0], found[1], found[1].tier)


def candidate_label(index: int) -> str:
    """Neutral labels A, B, … Z, AA, AB …"""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


def resolve_label(answer: str, labels: Mapping[str, str]) -> str:
    """A judge that names a candidate ("Candidate B") votes for that candidate's answer."""
    words = answer.strip().strip(".*_`").split()
    if len(words) == 2 and words[0].lower() == "candidate" and words[1].upper() in labels:
        return labels[words[1].upper()]
    return answer


async def judge(debate: Debate, question: str, positions: list[Position]) -> list[Vote]:
    """Phase 4: NUM_JUDGES judges each give a FINAL ANSWER and a CONFIDENCE."""
    config = debate.config
    labels = {candidate_label(i): p.final_answer for i, p in enumerate(positions)}
    blocks = [prompts.render(
        prompts.JUDGE_CANDIDATE, label=candidate_label(i),
        answer=prompts.quote_untrusted(p.final_answer),
        reasoning=prompts.quote_untrusted(p.reasoning or prompts.NOT_AVAILABLE),
        critique=prompts.quote_untrusted(p.critique or prompts.NOT_AVAILABLE),
        rebuttal=prompts.quote_untrusted(p.rebuttal or prompts.NOT_AVAILABLE),
    ) for i, p in enumerate(positions)]
    system = prompts.render(prompts.JUDGE_SYSTEM)
    user = prompts.render(prompts.JUDGE_USER, question=prompts.quote_untrusted(question),
                          candidates="\n\n".join(blocks))

    def usable(text: str) -> tuple[str, int | None, str] | None:
        found = parse_judgement(text)
        if not found.final_answer:
            return None
        return resolve_label(found.final_answer, labels), found.confidence, "final-answer-line"

    async def one(index: int) -> Vote | None:
        agent = f"judge-{index + 1}"
        found = await ask(debate, "judge", agent, system, user, temperature=config.judge_temperature,
                          max_tokens=config.judge_max_tokens, parse=usable)
        return None if found is None else Vote(found[0], found[1], agent)

    votes = await run_all(one(i) for i in range(config.num_judges))
    return [v for v in votes if v is not None]


# --- voting ------------------------------------------------------------------


def tally_votes(votes: list[Vote], source: str = "judges") -> Verdict | None:
    """Majority of normalised answers; a tie goes to the side with the higher confidence.

    The verdict's confidence is the winning side's best confidence; the
    answer shown is that voter's own wording.
    """
    groups: dict[str, list[Vote]] = {}
    for vote in votes:
        key = normalize_answer(vote.answer)
        if key:
            groups.setdefault(key, []).append(vote)
    if not groups:
        return None

    def strength(item: tuple[str, list[Vote]]) -> tuple[int, int]:
        return len(item[1]), max((v.confidence or 0) for v in item[1])

    _, winners = max(groups.items(), key=strength)  # max keeps the first of equals
    best = max(winners, key=lambda v: v.confidence or 0)
    counted = sum(len(g) for g in groups.values())
    return Verdict(best.answer.strip(), best.confidence or 0, len(winners), counted, source,
                   {k: len(g) for k, g in groups.items()})


def solver_verdict(positions: list[Position]) -> Verdict | None:
    """The fallback when no judge answered: the solvers' own majority.

    Its confidence is the share of solvers that agree, as a percentage.
    """
    verdict = tally_votes([Vote(p.final_answer, None, p.agent) for p in positions], source="solvers")
    if verdict is None:
        return None
    return replace(verdict, confidence=round(100 * verdict.agreeing / verdict.valid))


# --- one debate, and the rerun -----------------------------------------------


async def debate_once(debate: Debate, question: str, workers: int, temperature: float) -> Verdict:
    """The four phases once. RunFailed when too few solvers answer."""
    config = debate.config
    positions = await generate(debate, question, workers, temperature)
    log.info("round %d generate: %d/%d valid answers", debate.round, len(positions), workers)
    if len(positions) < config.min_valid_answers:
        last = next((c.failure for c in reversed(debate.calls) if c.failure), None)
        reason = f"; last error: {last}" if last else ""
        raise RunFailed(f"only {len(positions)}/{workers} solvers gave a valid answer "
                        f"(MIN_VALID_ANSWERS={config.min_valid_answers}){reason}")
    await critique(debate, question, positions, workers, temperature)
    if config.enable_rebuttal:
        await rebut(debate, question, positions, temperature)
    votes = await judge(debate, question, positions)
    verdict = tally_votes(votes)
    if verdict is None:
        debate.note("no judge gave a FINAL ANSWER; the verdict is the solvers' majority")
        verdict = solver_verdict(positions)
    if verdict is None:  # cannot happen: valid positions have non-empty answers
        raise RunFailed("no answer could be counted")
    return verdict


def rerun_settings(config: Config) -> tuple[int, float]:
    """(workers, temperature) of the rerun: RERUN_EXTRA_WORKERS more, RERUN_TEMPERATURE_STEP hotter."""
    return (min(config.num_workers + RERUN_EXTRA_WORKERS, MAX_WORKERS),
            min(config.temperature + RERUN_TEMPERATURE_STEP, MAX_TEMPERATURE))


@dataclass
class RunResult:
    """Everything a run produced: the verdict (if any) and what it cost."""

    question: str
    verdict: Verdict | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    rerun: bool = False
    error: str | None = None
    exit_code: int = EXIT_OK
    elapsed_s: float = 0.0
    transcript: str | None = None
    calls: list[AgentCall] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ok" if self.verdict is not None and self.error is None else "failed"


async def run_rounds(debate: Debate, question: str, result: RunResult) -> None:
    """Round 1, and round 2 when round 1's confidence is low; keeps the more confident."""
    config = debate.config
    first = await debate_once(debate, question, config.num_workers, config.temperature)
    result.verdict = first
    result.verdicts.append(first)
    if first.confidence >= config.min_judge_confidence:
        return
    workers, temperature = rerun_settings(config)
    log.info("confidence %d < MIN_JUDGE_CONFIDENCE=%d: rerunning once with %d workers at temperature %.1f",
             first.confidence, config.min_judge_confidence, workers, temperature)
    result.rerun = True
    debate.round = 2
    try:
        second = await debate_once(debate, question, workers, temperature)
    except MoAError as err:
        debate.note(f"the rerun failed ({err}); keeping round 1's verdict")
        return
    result.verdicts.append(second)
    # The more confident verdict; on a tie the rerun, which heard more solvers.
    result.verdict = second if second.confidence >= first.confidence else first


async def answer_question(config: Config, question: str, endpoint: Endpoint, runtime: Runtime,
                          result: RunResult | None = None) -> RunResult:
    """Run the debate on one question and write its transcript. Never raises
    MoAError: failures are recorded in the result. On cancellation the
    transcript is still written and ``result`` (if given) holds what was done."""
    result = result if result is not None else RunResult(question)
    debate = Debate(config, endpoint, runtime, uuid.uuid4().hex[:12], runtime.clock(), calls=result.calls)
    try:
        await run_rounds(debate, question, result)
    except MoAError as err:
        result.error, result.exit_code = str(err), err.exit_code
    except asyncio.CancelledError:
        result.error, result.exit_code = "interrupted", EXIT_INTERRUPTED
        raise
    finally:
        result.elapsed_s = runtime.clock() - debate.started
        if config.enable_file_logging:
            result.transcript = write_transcript(config, debate, question, result)
    return result


# --- transcripts -------------------------------------------------------------


def phase_counts(calls: Iterable[AgentCall]) -> dict[str, dict[str, int]]:
    """ok / failed agent calls per phase, over every round."""
    counts = {phase: {"ok": 0, "failed": 0} for phase in PHASES}
    for call in calls:
        counts[call.phase]["ok" if call.ok else "failed"] += 1
    return counts


def _render_call(call: AgentCall) -> list[str]:
    status = "ok" if call.ok else f"FAILED: {call.failure}"
    tier = f", parsed from {call.tier}" if call.tier else ""
    lines = [f"--- {call.agent}: {status} ({len(call.attempts)} attempt(s){tier}) ---",
             "[system prompt; each attempt appends its nonce]", call.system, "[user prompt]", call.user]
    for attempt in call.attempts:
        http = f"HTTP {attempt.status}" if attempt.status else "no HTTP response"
        finish = f", finish_reason={attempt.finish_reason}" if attempt.finish_reason else ""
        lines.append(f"[attempt {attempt.number}] nonce {attempt.nonce}, at {attempt.started_s:.2f}s, "
                     f"{attempt.latency_s:.2f}s, {http}{finish}: {attempt.outcome}")
        if attempt.retry_in_s is not None:
            lines.append(f"  retrying in {attempt.retry_in_s:.2f}s")
        if attempt.response_text:
            lines += ["[response]", attempt.response_text]
    return lines + [""]


def render_transcript(config: Config, debate: Debate, question: str, result: RunResult) -> str:
    """The transcript text: config, every call grouped by round and phase, tally, verdict."""
    lines = ["MoA pipeline transcript", f"run id: {debate.run_id}",
             f"written: {datetime.now().isoformat(timespec='seconds')}", "", "=== Question ===", question, "",
             "=== Configuration ==="]
    lines += [f"{name}={value}" for name, value in config.shown().items()]
    for round_number in sorted({c.round for c in debate.calls}):
        for phase in PHASES:
            calls = [c for c in debate.calls if c.round == round_number and c.phase == phase]
            if calls:
                lines += ["", f"=== Round {round_number} · {PHASE_TITLES[phase]} ===", ""]
                for call in calls:
                    lines += _render_call(call)
    if debate.notes:
        lines += ["=== Notes ==="] + debate.notes + [""]
    lines.append("=== Tally ===")
    for index, verdict in enumerate(result.verdicts, 1):
        lines.append(f"round {index} ({verdict.source}): " + ", ".join(f"{k!r}: {n}" for k, n in verdict.tally.items())
                     + f" -> {verdict.answer!r}, confidence {verdict.confidence}, {verdict.agreeing}/{verdict.valid}")
    lines += ["", "=== Verdict ==="]
    if result.verdict is not None:
        lines += [f"answer: {result.verdict.answer}", f"confidence: {result.verdict.confidence}",
                  f"agreement: {result.verdict.agreeing}/{result.verdict.valid} ({result.verdict.source})",
                  f"rerun: {'yes' if result.rerun else 'no'}"]
    if result.error:
        lines.append(f"error: {result.error}")
    lines.append(f"elapsed: {result.elapsed_s:.2f}s, {len(debate.calls)} LLM calls, "
                 f"{sum(len(c.attempts) for c in debate.calls)} HTTP requests")
    return redact("\n".join(lines) + "\n", config)


def redact(text: str, config: Config) -> str:
    """Mask the API key wherever it might have been echoed."""
    return text.replace(config.api_key, SECRET_MASK) if config.api_key else text


def create_private_file(directory: Path, stem: str, suffix: str) -> tuple[Path, int]:
    """A new file, mode 0600, named stem+suffix or stem_N+suffix: never overwrites."""
    for n in range(1000):
        path = directory / (f"{stem}{suffix}" if n == 0 else f"{stem}_{n}{suffix}")
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
    raise OSError(f"no free transcript name for {stem} in {directory}")


def write_transcript(config: Config, debate: Debate, question: str, result: RunResult) -> str | None:
    """Write the transcript; on a disk or permission error, warn and go on without one."""
    directory = Path(config.log_dir)
    stem = f"{config.log_filename_prefix}_{datetime.now().strftime('%Y%m%d_%H%M%S')}"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path, fd = create_private_file(directory, stem, ".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(render_transcript(config, debate, question, result))
    except OSError as err:
        log.warning("could not write the transcript in %s (%s); the run goes on without it",
                    directory, err.strerror or err)
        return None
    return str(path)


# --- CLI -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moa_pipeline.py",
        description="Answer a question with a debate among LLM calls: generate, critique, rebut, judge.",
        epilog="examples:\n"
               '  python moa_pipeline.py -q "What is 17 * 23?"\n'
               '  echo "What is 17 * 23?" | python moa_pipeline.py -q - --json\n'
               "settings: flags > environment > .env > defaults; see .env.example.\n"
               "exit codes: 0 verdict, 1 run failed, 2 usage or configuration error, 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--question", required=True, help='the question, or "-" to read it from stdin')
    parser.add_argument("-w", "--workers", metavar="N", help="solvers per round (NUM_WORKERS)")
    parser.add_argument("-j", "--judges", metavar="N", help="judges (NUM_JUDGES)")
    parser.add_argument("--no-rebuttal", action="store_true", help="skip the rebuttal phase (ENABLE_REBUTTAL=false)")
    parser.add_argument("--model", metavar="NAME", help="model name sent to the endpoint (MODEL_NAME)")
    parser.add_argument("--env-file", metavar="PATH", help="read settings from PATH instead of ./.env")
    parser.add_argument("--json", dest="json_output", action="store_true",
                        help="print one JSON object on stdout instead of the human summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def flag_settings(args: argparse.Namespace) -> dict[str, str]:
    """The settings given as flags, by their .env names."""
    flags = {"NUM_WORKERS": args.workers, "NUM_JUDGES": args.judges, "MODEL_NAME": args.model}
    if args.no_rebuttal:
        flags["ENABLE_REBUTTAL"] = "false"
    return {name: value for name, value in flags.items() if value is not None}


def read_question(value: str, stdin: Any) -> str:
    text = stdin.read() if value == "-" else value
    if not text.strip():
        raise ConfigError("the question is empty: pass it with -q \"...\" or pipe it with -q -")
    return text.strip()


class RedactingFilter(logging.Filter):
    """Masks secrets in every log record, whatever logged it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, SECRET_MASK)
            record.msg, record.args = message, None
        return True


def setup_logging(verbose: bool) -> logging.Handler:
    """Logs on the current stderr; httpx and httpcore only with -v (they log every request)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for name, level in (("moa", logging.INFO), ("httpx", logging.WARNING), ("httpcore", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.DEBUG if verbose else level)
    return handler


def result_json(result: RunResult) -> dict[str, Any]:
    """The --json object."""
    verdict, calls = result.verdict, result.calls
    return {
        "question": result.question,
        "final_answer": verdict.answer if verdict else None,
        "confidence": verdict.confidence if verdict else None,
        "judges_agreeing": verdict.agreeing if verdict and verdict.source == "judges" else 0,
        "judges_valid": verdict.valid if verdict and verdict.source == "judges" else 0,
        "verdict_source": verdict.source if verdict else None,
        "rerun": result.rerun,
        "phases": phase_counts(calls),
        "llm_calls": len(calls),
        "http_requests": sum(len(c.attempts) for c in calls),
        "elapsed_s": round(result.elapsed_s, 3),
        "transcript": result.transcript,
        "status": result.status,
        "error": result.error,
    }


def human_summary(result: RunResult) -> str:
    """The human summary printed on stdout (the error itself goes to stderr)."""
    lines = []
    verdict, calls = result.verdict, result.calls
    if verdict is not None:
        who = "judges" if verdict.source == "judges" else "solvers (no judge answered)"
        lines += [f"Answer: {verdict.answer}",
                  f"Confidence: {verdict.confidence}/100, {verdict.agreeing}/{verdict.valid} {who} agree"
                  + (", after a rerun" if result.rerun else "")]
    if verdict is None:
        lines.append("No verdict: the run failed.")
    counts = phase_counts(calls)
    for phase in PHASES:
        done = counts[phase]["ok"] + counts[phase]["failed"]
        if done:
            lines.append(f"  {PHASE_TITLES[phase]:<28} {counts[phase]['ok']}/{done} {PHASE_NOUNS[phase]}")
    lines.append(f"{len(calls)} LLM calls, {sum(len(c.attempts) for c in calls)} HTTP requests, "
                 f"{result.elapsed_s:.1f}s")
    lines.append(f"Transcript: {result.transcript or 'not written'}")
    return "\n".join(lines)


async def run_cli(config: Config, question: str, runtime: Runtime, result: RunResult) -> RunResult:
    async with open_client(config) as client:
        return await answer_question(config, question, Endpoint(config, client, runtime), runtime, result)


def main(argv: list[str] | None = None, *, runtime: Runtime | None = None) -> int:
    """The command line: parse, configure, run, map errors to exit codes."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already printed
        return int(stop.code or 0)
    handler = setup_logging(args.verbose)
    try:
        config = load_config(flag_settings(args), os.environ, read_env_file(args.env_file))
        question = read_question(args.question, sys.stdin)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    handler.addFilter(RedactingFilter([config.api_key]))
    result = RunResult(question)
    try:
        asyncio.run(run_cli(config, question, runtime or Runtime(), result))
    except KeyboardInterrupt:
        result.error, result.exit_code = "interrupted", EXIT_INTERRUPTED
    if args.json_output:
        print(redact(json.dumps(result_json(result), ensure_ascii=False), config))
    else:
        print(redact(human_summary(result), config))
    if result.error:
        where = f"; transcript: {result.transcript}" if result.exit_code == EXIT_INTERRUPTED and result.transcript else ""
        print(f"error: {redact(result.error, config)}{where}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
