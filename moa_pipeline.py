"""moa_pipeline: one better answer from a debate among several LLM calls.

The question goes through one OpenAI-compatible chat-completions endpoint:

    generate (N blind solvers) -> critique (each answer by another slot)
    -> rebuttal (each solver defends or revises)
    -> later rounds while they disagree (ROUNDS: each reads the others and may revise)
    -> judges (vote)

and the whole debate runs a second "pass" (the rerun; a "round" is always a debate round),
hotter and wider, when the judges' winning confidence is below MIN_JUDGE_CONFIDENCE.

Run it as ``python moa_pipeline.py -q "What is 17 * 23?"`` (``-q -``: from stdin; ``--json``), as a batch
(``-f questions.jsonl -o results.jsonl``), or from Python: ``await moa_pipeline.debate("...", num_workers=3)``.

Settings come from flags, then the environment, then --env-file, ./.env and the per-user file (``moa-pipeline init``
writes it, ``moa-pipeline config`` shows where each value came from), then defaults (docs/settings.md).
Results go to stdout, logs to stderr.

Contents (each is a "# --- N. ..." banner below; where a thing is decided):

     1. constants and every exit code ... every tunable and every exit code
     2. the error tree ... every exception, and the exit code it carries (exit_code_for)
     3. configuration, secrets and values from outside ... settings and their layers (read_env_file), masking
        secrets (redact); the pure readers of values from outside (settings, URLs, JSON, Retry-After) are parsing.py's
     4. seams ... clock, sleep, randomness (Runtime), and where output leaves, secrets masked: every file write
        (write_all), stdout (emit), stderr (say)
     5. one HTTP attempt, and the endpoint it goes to ... the request, the size cap, Content-Type dispatch, the
        one content check, the adaptive request cap, the shared cool-down, the breaker (Endpoint.failing)
     6. the retry policy ... status_policy and FAULTS (the one table: retry? stop the run? outage? back-pressure?),
        backoff, the loop (ask)
     7. usage, costs and budgets ... worst_case_costs (the one cost model), what the endpoint bills (Billing), the
        budget and its planner, the rerun's price
     8. the debate's state ... positions, votes, verdicts, the run's record (RunRecord)
     9. phases ... generate, critique, rebut, judge; chains and straggler cuts
    10. voting ... the tally, its tie rule, and what the vote hides
    11. one question ... a debate, its later rounds, the rerun rule, answer_question; the library (debate, Debater)
    12. files ... the file policy (create_new, open_existing, open_folder: every file opened, no link followed),
        transcripts, traces, atomic writes, the lock
    13. dry run and replay ... dry_run, load_replay (traces are checked here; a line: parsing.trace_attempt),
        and --check (check_endpoint)
    14. batch ... questions files and earlier outputs (their lines: parsing.read_items, result_record), resume, the
        batch loop and its stops; --eval (strategies scored, the report; its statistics: parsing.py)
    15. CLI ... flags, logging (RedactingFilter), the human summary; the config and init commands
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import contextvars
import copy
import difflib
import enum
import errno
import fcntl
import functools
import hashlib
import importlib.util
import inspect
import io
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import ssl
import stat
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from pathlib import Path
from string import Template
from typing import Any, BinaryIO, Generic, Literal, NoReturn, NotRequired, TypedDict, TypeVar, Unpack, cast
from urllib.parse import unquote, unquote_plus, urlsplit

try:
    import httpx
except ImportError as missing:  # only without the requirements: say what to do, not a traceback
    if __name__ == "__main__":
        sys.exit(f"error: the Python package {missing.name!r} is not installed: run  pip install -r requirements.txt")
    raise

import prompts
from parsing import (
    SECRET_MASK,
    BadLine,
    BatchItem,
    ParsedAnswer,
    ParsedRanking,
    ReportedUsage,
    ShapeGuess,
    Shard,
    TerminalEcho,
    TraceAttempt,
    _api_key,
    _boolean,
    _duration,
    _effort,
    _extra_body,
    _file_prefix,
    _folder,
    _integer,
    _json_object,
    _number,
    _one_of,
    _optional,
    _stop,
    _text,
    answer_key,
    answer_left_open,
    body_credentials,
    chat_completions_url,
    choice_letters,
    cost_source,
    credential_parameter,
    detect_answer_type,
    display_url,
    eval_verdict,
    finish_reason_of,
    input_format,
    is_loopback,
    load_json,
    markdown_report,
    masked_url,
    message_text,
    normalize_answer,
    parse_answer,
    parse_block,
    parse_full_answer,
    parse_full_rebuttal,
    parse_judgement,
    parse_ranking,
    parse_rebuttal,
    parse_synthesis,
    present_answer,
    printable,
    question_shape,
    read_items,
    read_shard,
    reported_usage,
    result_record,
    result_totals,
    retry_hint,
    safe_name,
    said_cost,
    served,
    shown_id,
    small_number,
    strategy_score,
    terminal_lines,
    trace_attempt,
    traced_list,
    traced_number,
    valid_text,
)

# --- 1. constants and every exit code ------------------------------------------------------------

log = logging.getLogger("moa")
# In a batch, the id of the question a task works on, for its log lines (asyncio copies it into the tasks it starts).
QUESTION_ID: contextvars.ContextVar[str] = contextvars.ContextVar("moa_question_id", default="")
T = TypeVar("T")
EXIT_OK = 0
EXIT_FAILED = 1  # the run failed; a batch could not go on (key rejected, disk full)
EXIT_USAGE = 2  # bad flag, setting or input: nothing was sent
EXIT_SOME_FAILED = 3  # a batch finished, but some questions failed or some input lines were unusable
EXIT_TRY_LATER = 75  # EX_TEMPFAIL: batch output locked, or the breaker saw an outage; cron's next run resumes
EXIT_INTERRUPTED = 130  # Ctrl-C, SIGTERM, or SIGHUP (a closed terminal)
__version__ = "0.6.0"
# The library's API; every other name is the module's own, and may change in any release.
__all__ = ["debate", "debate_sync", "Debater", "Settings", "Result", "Usage", "PhaseCounts", "FormatCounts",
           "SolverAnswers", "Dissent", "RankedCandidate", "Config", "ConfigError", "RunFailed", "main", "console",
           "__version__"]
MIN_PYTHON = (3, 11)  # asyncio.timeout, TaskGroup, ExceptionGroup
DEFAULT_ENV_FILE = ".env"
ENV_FILE_VARIABLE = "MOA_ENV_FILE"  # names the env file without --env-file, so a crontab line needs no `cd`
ENV_FILE_LIMIT = 1024 * 1024
# The per-user home: its folder in XDG's config and state folders, its settings file, the variable naming that folder.
APP_FOLDER = "moa-pipeline"
USER_SETTINGS_FILE = "config.env"
CONFIG_HOME_VARIABLE = "MOA_CONFIG_HOME"
HOME_COMMANDS = {"config": "print each setting's value (secrets masked) and where it came from",
                 "init": "write a commented per-user settings file (never over an existing one)",
                 "cache": "show the response cache's file, size, entries and hits (`cache clear` empties it)"}
MAX_WORKERS = 64
MAX_JUDGES = 25
MAX_TEMPERATURE = 2.0
# The rerun rule: one more debate, hotter and wider, never more than one.
RERUN_TEMPERATURE_STEP = 0.2
RERUN_EXTRA_WORKERS = 2
# A verdict no judge checked (the solvers' majority when no judge's reply could be read, or an early exit on answers
# read only by the paragraph guess) is at most this confident: agreement among guesses is not evidence, and 50 is
# below the default MIN_JUDGE_CONFIDENCE, so the rerun rule still fires where a rerun can help (docs/output.md).
UNCHECKED_CONFIDENCE = 50
# Once this many of a phase's replies in a run could not be read, and they outnumber the readable ones (the model
# mostly cannot write that phase's format), its unreadable replies are no longer retried: each retry costs a request
# and more likely than not reads no better (format_given_up).
FORMAT_GIVE_UP_REPLIES = 3
# How much of a server's error body we quote to the user, and how much of it we read at all.
SERVER_MESSAGE_LIMIT = 300
ERROR_BODY_LIMIT = 64 * 1024
# Connections the pool may open beyond MAX_CONCURRENT_REQUESTS: AdaptiveLimit keeps requests below the pool's limit,
# so none waits inside httpcore's pool, where a cancel can leak a slot (httpcore issue 1093).
POOL_HEADROOM = 4
# The batch circuit breaker's window and trip count (the rule and its why: Endpoint.failing).
BREAKER_WINDOW = 10
BREAKER_TRIP_FAILURES = 5
# When 429s cluster, the endpoint rations by time and every request waits together (the rule: Endpoint.busy).
BUSY_CLUSTER_WINDOW = 10
BUSY_CLUSTER_SIZE = 5
BUSY_CLUSTER_SECONDS = 10.0
# Back-pressure retries a call may make beyond MAX_RETRIES, and their total wait (the rule: RetriesUsed).
BUSY_RETRIES = 20
BUSY_WAIT_LIMIT = 300.0
QUOTA_USED_UP = b"insufficient_quota"  # in a 429's body: OpenAI's code for a used-up quota or credit
STALL_WARNING_SHARE = 0.2  # of STALL_TIMEOUT with nothing accepted: one warning (see Endpoint.refused)
SAME_ERROR_QUESTIONS = 3  # first questions that, failing alike, stop a batch (see same_error_everywhere)
SCHEMA_VERSION = 2  # of --json, batch lines and the trace (docs/output.md): raised when a field changes meaning
# Answer shapes (ANSWER_SHAPE): short is a verdict the judges vote on, full a whole response they rank.
SHAPES = ("short", "full")
SYNTHESIS_AGENT = "synthesizer"
SYNTHESIS_CANDIDATES = 3  # the top-ranked candidates the synthesis reads in full
# Of each critique, rebuttal and judge's analysis the synthesis reads this much: their point, not their every word,
# so its prompt (and the budget it keeps back) does not grow with every judge's essay.
SYNTHESIS_NOTE_CHARS = 2000
# Ranked judges' bootstrap interval (rank_candidates): 1000 resamples put the 2.5% and 97.5% points 25 values in
# from each end, steady to about 0.01 for the 2-25 judges a run has; the fixed seed makes the same ballots always
# report the same interval, so a rerun, a replay and a test agree. BOOTSTRAP_TAIL: each side of the 95% interval.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 22
BOOTSTRAP_TAIL = 0.025


class Phase(enum.StrEnum):
    """The phases of a debate, in order. A StrEnum: traces, transcripts and --json show the value."""

    GENERATE = "generate"
    CRITIQUE = "critique"
    REBUTTAL = "rebuttal"
    REVISE = "revise"  # debate rounds 2 on
    JUDGE = "judge"
    SYNTHESIS = "synthesis"  # one call after the judges writes the response (full answers; SYNTHESIZE)


PHASES = tuple(Phase)
MAX_ROUNDS = 10  # ROUNDS' cap (debate rounds: the module docstring)
REASON_CHARS = 400  # of each other solver's latest reason, a reviser reads this much (short_reason)
PHASE_TITLES = {Phase.GENERATE: "Phase 1 - Blind generation", Phase.CRITIQUE: "Phase 2 - Cross-critique",
                Phase.REBUTTAL: "Phase 3 - Rebuttal", Phase.REVISE: "Later rounds - Revision",
                Phase.JUDGE: "Phase 4 - Judges", Phase.SYNTHESIS: "Phase 5 - Synthesis"}
PHASE_NOUNS = {Phase.GENERATE: "valid", Phase.CRITIQUE: "critiques", Phase.REBUTTAL: "rebuttals",
               Phase.REVISE: "revisions", Phase.JUDGE: "verdicts", Phase.SYNTHESIS: "responses"}
MAX_GATEWAY_RETRIES = 1000  # a larger "attempted retries" header is not a count
MAX_NAME_TRIES = 100_000  # stem_1 … stem_99999: a question rerun nightly for centuries still finds a name
STRAGGLER_MIN_SECONDS = 1.0  # no straggler cut before: it saves little, and may lose a good answer to a hiccup
STRAGGLER_CUT = "cut as a straggler"  # a cut call's failure
SHARED_STRAGGLER_SCALE = 2.0  # the straggler bar while other questions share the endpoint (see StragglerWatch)
MIN_MASKED_SECRET = 8  # see Config.secrets
MESSAGE_OVERHEAD_TOKENS = 8  # added by chat formatting per message and by our nonce suffix
# --replay --from START: the last phase kept from the trace (see ReplayStart).
REPLAY_STARTS = {Phase.CRITIQUE: Phase.GENERATE, Phase.REBUTTAL: Phase.CRITIQUE,
                 **{f"round{k}": Phase.REBUTTAL for k in range(2, MAX_ROUNDS + 1)}, "judges": Phase.REBUTTAL,
                 Phase.SYNTHESIS: Phase.JUDGE}
# Longer than these, a line of a trace or of an earlier output, or a summary file, is not one we wrote (replies
# are capped far below them; a summary is a few hundred bytes).
MAX_TRACE_LINE_BYTES = 256 * 1024 * 1024
MAX_OUTPUT_LINE_BYTES = 64 * 1024 * 1024
SUMMARY_READ_LIMIT = 1024 * 1024
DEFAULT_CONCURRENCY = 4
STOP_GRACE_SECONDS = 10.0  # after Ctrl-C / SIGTERM, in-flight questions get this long to finish
# What an empty transcript (its run was killed) is filled with when the batch resumes.
UNFINISHED_TRANSCRIPT = ("MoA pipeline transcript\nThis run stopped before it wrote its transcript (its process was "
                         "killed, or the disk was full); {where}.\n")
# Bytes of a trace's first line beyond its question (the run id, the settings): more is not a run line of ours.
RUN_HEAD_BYTES = 64 * 1024
# --check: the chat request's max_tokens; how long its probes (GET /models, /props) wait at most, and how much
# of a models list they read (OpenRouter's, some 300 models, is under 1 MB).
CHECK_MAX_TOKENS = 8
CHECK_PROBE_SECONDS = 10.0
MODELS_LIST_LIMIT = 8 * 1024 * 1024


# --- 2. the error tree ---------------------------------------------------------------------------
#
#   MoAError                 base; exit code 1
#   ├── ConfigError          bad flag, setting or input; exit code 2, no request sent
#   ├── APIError             one HTTP attempt failed: status, server message, and what it means
#   │   └── EndpointStalled  nothing accepted for STALL_TIMEOUT: the run stops (a batch: exit 75)
#   ├── RunFailed            the debate could not reach a verdict
#   │   ├── EndpointUnreachable   no phase-1 attempt got any HTTP response
#   │   └── DeadlinePassed   no verdict within QUESTION_DEADLINE
#   └── BatchLocked          another run holds the batch output; exit code 75

class MoAError(Exception):
    exit_code = EXIT_FAILED


class ConfigError(MoAError):
    exit_code = EXIT_USAGE


class APIError(MoAError):
    """A failed attempt; ``policy``, a row of the one table (see Policy), says what it means. ``reply``: an
    unusable 2xx reply (empty, refused), billed all the same. ``unanswered``: no reply came, but the request
    may have reached the endpoint (a timeout, a dropped connection): it may be billed, unseen."""

    def __init__(self, message: str, policy: Policy, *, status: int | None = None, retry_after: float | None = None,
                 reply: Completion | None = None, unanswered: bool = False) -> None:
        super().__init__(message)
        self.status, self.policy = status, policy
        self.retryable, self.stops_run = policy.retry, policy.stops_run
        self.outage, self.backpressure = policy.outage, policy.backpressure
        self.retry_after, self.reply, self.unanswered = retry_after, reply, unanswered
        self.finish_reason = reply.finish_reason if reply else None

    def __reduce__(self) -> tuple[Any, ...]:  # a pickle (a process pool) rebuilds it from its message and row
        return self.__class__, (str(self), self.policy), self.__dict__


class EndpointStalled(APIError):
    """No request accepted (no 2xx) for STALL_TIMEOUT: the run stops (see Endpoint.refused)."""


class RunFailed(MoAError):
    """The run produced no verdict. From debate(), ``result`` holds what it did (status "failed");
    ``cause`` is the error the last failed call ended with, if one did."""

    def __init__(self, message: str, result: Result | None = None, cause: APIError | None = None) -> None:
        super().__init__(message)
        self.result, self.cause = result, cause


class EndpointUnreachable(RunFailed):
    """Every phase-1 attempt failed without an HTTP response."""


class DeadlinePassed(RunFailed):
    """The question ran past QUESTION_DEADLINE before a verdict."""


def deadline_passed(config: Config) -> DeadlinePassed:
    return DeadlinePassed(f"no verdict within QUESTION_DEADLINE={config.question_deadline:g}s: the question was "
                          "stopped; for an endpoint that is merely slow, raise it (--deadline SECONDS, 0: none)")


class BatchLocked(MoAError):
    """Another run holds the batch output's lock: try again later."""

    exit_code = EXIT_TRY_LATER


def exit_code_for(error: BaseException) -> int:
    """The one map from an error to an exit code: ours carry theirs, an interrupt is 130, anything else 1."""
    if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
        return EXIT_INTERRUPTED
    return error.exit_code if isinstance(error, MoAError) else EXIT_FAILED


def internal_error(err: BaseException) -> str:
    """The one line for a bug: its type and message; the traceback goes to the debug log (-v)."""
    log.debug("internal error", exc_info=err)
    return f"internal error: {err.__class__.__name__}: {err} (rerun with -v for the traceback)"


# --- 3. configuration, secrets and values from outside -------------------------------------------

def query_credentials(query: str) -> list[str]:
    """The values of a query's credential parameters, as written, decoded, and as httpx sends them
    (``"`` and non-ASCII percent-encoded: a server echoing its request URL, and httpx's log, show that);
    a piece without "=" (``?sk-abc``) is a credential too: it names nothing, so it can only be a bare key."""
    found: list[str] = []
    for piece in query.split("&"):
        name, equals, value = piece.partition("=")
        secret = value if equals else name
        if secret and (not equals or credential_parameter(name)):
            found += [secret, unquote(secret), unquote_plus(secret), httpx.URL("http://h/?" + secret).query.decode()]
    return found


def tunable(default: T, parse: Callable[[str], Any], *, secret: bool = False, holds_secrets: bool = False) -> T:
    """A Config field that is a setting: its one default, and the parser of its text (flag, environment, .env)."""
    return field(default=default, repr=not (secret or holds_secrets), metadata={"parse": parse, "secret": secret})


@dataclass(frozen=True)
class Config:
    """Every setting of a run, parsed and checked once in main(); each field's default is the setting's."""

    proxy_url: str = field(repr=False, metadata={"parse": chat_completions_url})  # may hold ?key= (Config.secrets)
    api_key: str = field(repr=False, metadata={"parse": _api_key, "secret": True})
    model_name: str = tunable("default", _text)  # one name, or a comma-separated list for the solver slots
    judge_model: str | None = tunable(None, _optional(_text))  # default: the first of MODEL_NAME
    solver_styles: bool = tunable(True, _boolean)
    shuffle_judges: bool = tunable(True, _boolean)
    num_workers: int = tunable(5, _integer(1, MAX_WORKERS))
    min_valid_answers: int = tunable(2, _integer(1, MAX_WORKERS))
    max_retries: int = tunable(4, _integer(0, 20))
    retry_base_delay: float = tunable(1.0, _number(0, 600))
    retry_max_delay: float = tunable(60.0, _number(0, 3600))
    request_timeout: float = tunable(200.0, _number(0.001, 3600))
    temperature: float = tunable(1.0, _number(0, MAX_TEMPERATURE))
    max_tokens: int = tunable(8192, _integer(1, 1_000_000))
    judge_temperature: float = tunable(0.2, _number(0, MAX_TEMPERATURE))
    judge_max_tokens: int = tunable(8192, _integer(1, 1_000_000))
    num_judges: int = tunable(3, _integer(1, MAX_JUDGES))
    rounds: int = tunable(1, _integer(1, MAX_ROUNDS))  # debate rounds while the solvers disagree (1: no later round)
    min_judge_confidence: int = tunable(60, _integer(0, 100))
    enable_rebuttal: bool = tunable(True, _boolean)
    enable_file_logging: bool = tunable(True, _boolean)
    log_dir: str = tunable("logs", _folder)
    log_filename_prefix: str = tunable("moa_run", _file_prefix)
    max_concurrent_requests: int = tunable(16, _integer(1, 256))
    max_calls: int = tunable(0, _integer(0, 1_000_000))  # per question, 0 = unlimited
    max_total_tokens: int = tunable(0, _integer(0, 10**12))  # per question, 0 = unlimited
    price_input_per_mtok: float | None = tunable(None, _optional(_number(0, 1_000_000)))
    price_output_per_mtok: float | None = tunable(None, _optional(_number(0, 1_000_000)))
    price_cached_input_per_mtok: float | None = tunable(None, _optional(_number(0, 1_000_000)))  # unset: the input's
    enable_jsonl_trace: bool | None = tunable(None, _optional(_boolean))  # None: follow ENABLE_FILE_LOGGING
    gateway_token: str | None = tunable(None, _optional(_api_key), secret=True)
    max_question_chars: int = tunable(100_000, _integer(1, 10_000_000))
    max_response_bytes: int = tunable(4_000_000, _integer(1024, 1_000_000_000))  # a 100k-token reply is under 1 MB
    stream: bool = tunable(False, _boolean)
    straggler_factor: float = tunable(3.0, _number(0, 100))  # 0 = never cut
    early_exit: bool = tunable(False, _boolean)
    phase_barriers: bool = tunable(False, _boolean)
    question_deadline: float = tunable(1800.0, _number(0, 7 * 24 * 3600))  # seconds a question may take, 0 = no limit
    stall_timeout: float = tunable(300.0, _number(0, 7 * 24 * 3600))  # seconds with nothing accepted: stop, 0 = never
    answer_shape: str = tunable("auto", _one_of("auto", *SHAPES))  # auto: parsing.question_shape decides
    synthesize: str = tunable("auto", _one_of("auto", "on", "off"))  # auto: for full answers only
    synthesis_model: str | None = tunable(None, _optional(_text))  # default: the judges' first model
    # Request options (request_options): each in every request body when set, absent when unset.
    system_prompt: str | None = tunable(None, _optional(_text))  # the user's own, before our rules (try_attempt)
    seed: int | None = tunable(None, _optional(_integer(-2**63, 2**63 - 1)))  # int64, as OpenAI and vLLM take
    top_p: float | None = tunable(None, _optional(_number(0, 1)))
    stop: str | None = tunable(None, _optional(_stop))  # a JSON list
    response_format: str | None = tunable(None, _optional(_json_object))  # a JSON object; the synthesis's only
    reasoning_effort: str | None = tunable(None, _optional(_effort))
    extra_body: str | None = tunable(None, _optional(_extra_body), holds_secrets=True)  # merged last, null removes
    # The response cache (ResponseCache): on reads and writes, read serves hits and stores nothing, refresh the reverse.
    cache: str = tunable("off", _one_of("off", "on", "read", "refresh"))
    cache_path: str | None = tunable(None, _optional(_folder))  # None: in XDG's cache folder
    cache_ttl: float = tunable(30 * 86400.0, _duration(3650 * 86400.0))  # how long an entry is served (0: for ever)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.model_name.split(",") if m.strip()) or ("default",)

    @property
    def judge_models(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in (self.judge_model or "").split(",") if m.strip()) or self.models[:1]

    def shape_of(self, question: str) -> ShapeGuess:
        """The answer shape of ``question``: ANSWER_SHAPE, or with auto, what the question asks for."""
        return (question_shape(question) if self.answer_shape == "auto"
                else ShapeGuess(self.answer_shape, f"ANSWER_SHAPE={self.answer_shape}"))

    def synthesizes(self, shape: str) -> bool:
        """Whether a synthesis writes the response: SYNTHESIZE=on, or auto and a full answer."""
        return self.synthesize == "on" or (self.synthesize == "auto" and shape == "full")

    def slot_model(self, slot: int, judge: bool = False) -> str:
        """Solver slots (and judges) take their models round-robin: slot i uses model i mod n."""
        models = self.judge_models if judge else self.models
        return models[slot % len(models)]

    @property
    def jsonl_trace(self) -> bool:
        return self.enable_file_logging if self.enable_jsonl_trace is None else self.enable_jsonl_trace

    @functools.cached_property
    def secrets(self) -> tuple[str, ...]:
        """What redact masks: the key, the gateway token and the credentials in PROXY_URL (user info, ``?key=...``;
        see parsing.CREDENTIAL_PARAMETER) and EXTRA_BODY (body_credentials), never any other query value (an answer
        "2024-10-21" stays itself under ``?api-version=2024-10-21``); each in every form an output may show it in."""
        parts = urlsplit(self.proxy_url)
        in_url = [parts.username or "", parts.password or "", *query_credentials(parts.query),
                  *body_credentials(self.extra_body)]
        # One shorter than MIN_MASKED_SECRET ("local", "k") is a no-auth placeholder: masked, text would read "***host".
        values = [t for s in (self.api_key, self.gateway_token or "", *in_url) if len(s) >= MIN_MASKED_SECRET
                  for t in (s, s.lower(), normalize_answer(s)) if len(t) >= MIN_MASKED_SECRET]
        forms = {form for s in values
                 for form in (s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1], repr(s)[1:-1])}
        # Longest first: a secret that holds another would otherwise keep the rest of itself in view.
        return tuple(sorted(forms, key=len, reverse=True))

    def shown(self) -> dict[str, Any]:
        """Settings as the transcript shows them: secrets masked, URL cleaned."""
        values = {s.env: SECRET_MASK if s.secret and getattr(self, s.field) is not None else getattr(self, s.field)
                  for s in SETTINGS}
        return values | {"PROXY_URL": display_url(self.proxy_url)}


@dataclass(frozen=True)
class Setting:
    """One tunable as the outside names it: a Config field, its parser, and its default (MISSING: required)."""

    env: str
    field: str
    parse: Callable[[str], Any]
    secret: bool
    default: Any

    def shown(self, value: Any) -> str:
        """A value as an error shows it: a secret masked (and EXTRA_BODY, whose credential fields body_credentials
        cannot find in text it cannot read), a URL's credentials too (a URL of any type: bytes too)."""
        if self.secret or self.env == "EXTRA_BODY":
            return SECRET_MASK
        if self.env != "PROXY_URL":
            return repr(value)[:200]
        return repr(masked_url(value)) if isinstance(value, str) else masked_url(repr(value))


# Config's fields, in their order (the transcript's, and load_config's: PROXY_URL is checked first).
SETTINGS = tuple(Setting(f.name.upper(), f.name, f.metadata["parse"], f.metadata.get("secret", False), f.default)
                 for f in fields(Config))
# Settings whose text is JSON: the library takes a list or dict for them and passes json.dumps of it.
JSON_SETTINGS = frozenset({"STOP", "RESPONSE_FORMAT", "EXTRA_BODY"})
# Accepted when PROXY_URL / API_KEY are unset everywhere, as the OpenAI SDK names them.
FALLBACK_NAMES = {"PROXY_URL": "OPENAI_BASE_URL", "API_KEY": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class SettingsFile:
    """A settings file that was read: its label in errors and `config` (--env-file x, .env, ~/…), and its values."""

    label: str
    values: Mapping[str, str | None]


def command_name() -> str:
    """The command as the user ran it, for --help and hints: a clone's ``python moa_pipeline.py`` (or ``-m``), else
    the console script's, which a library caller's script gets too (its own name is no command to give)."""
    if not sys.argv or os.path.basename(sys.argv[0]) != "moa_pipeline.py":
        return "moa-pipeline"
    run_as_module = ("-m", "moa_pipeline") in itertools.pairwise(sys.orig_argv)
    return "python -m moa_pipeline" if run_as_module else "python moa_pipeline.py"


def xdg_folder(environ: Mapping[str, str], variable: str, fallback: str = "") -> Path:
    """An XDG base folder: $variable when absolute (the spec ignores a relative one), else ~/fallback; "HOME" is the
    home folder: HOME="" is none, as for a shell's ~ (expanduser makes it "/"). XDG on macOS too, as git and gh do."""
    value, home = environ.get(variable, ""), environ["HOME"] if "HOME" in environ else os.path.expanduser("~")
    return Path(value) if os.path.isabs(value) else Path(home) / fallback


def user_settings_file(environ: Mapping[str, str]) -> Path:
    """The per-user settings file, below ./.env: in $MOA_CONFIG_HOME, else in XDG's config folder (xdg_folder)."""
    folder = environ.get(CONFIG_HOME_VARIABLE, "").strip()
    return (Path(folder) if folder else xdg_folder(environ, "XDG_CONFIG_HOME", ".config") / APP_FOLDER) \
        / USER_SETTINGS_FILE


def shown_path(path: Path, environ: Mapping[str, str]) -> str:
    """A path as messages show it: ~/… inside the home folder."""
    with contextlib.suppress(ValueError):
        return "~/" + str(path.relative_to(xdg_folder(environ, "HOME")))
    return str(path)


def source_checkout() -> bool:
    """Whether this runs from a clone or an editable install: pyproject.toml beside it, as in no installed copy."""
    return (Path(__file__).resolve().parent / "pyproject.toml").is_file()


def default_log_dir(environ: Mapping[str, str]) -> str:
    """LOG_DIR when nothing sets it: ./logs from a source checkout, as always; an installed tool never writes into
    the folder it runs in, so there $XDG_STATE_HOME/moa-pipeline/logs (~/.local/state when unset or relative)."""
    return (Config.log_dir if source_checkout()
            else str(xdg_folder(environ, "XDG_STATE_HOME", ".local/state") / APP_FOLDER / "logs"))


def setting_source(setting: Setting, flags: Mapping[str, str], environ: Mapping[str, str],
                   files: Sequence[SettingsFile]) -> tuple[str, str, str] | None:
    """(the name it was set by, raw value, where) by precedence, flag > environment > each file in turn (read_env_file's
    order), else by its FALLBACK_NAMES name when it is unset everywhere (an error then names the variable the user
    set); None: its default applies. An empty value in the environment or a file is unset (``PROXY_URL=`` as
    .env.example ships it): the next source applies."""
    if flags.get(setting.env) is not None:
        return setting.env, flags[setting.env], "flag"
    sources = [("environment", environ), *((file.label, file.values) for file in files)]
    return next(((name, str(values[name]), label) for name in (setting.env, FALLBACK_NAMES.get(setting.env)) if name
                 for label, values in sources if (values.get(name) or "").strip()), None)


def load_config(flags: Mapping[str, str], environ: Mapping[str, str],
                dotenv: Mapping[str, str | None] | Sequence[SettingsFile], warn: bool = True) -> Config:
    """Build the Config from flags, environment and the settings files (read_env_file; a plain mapping is a
    ./.env's values); ConfigError if anything is off."""
    files = [SettingsFile(DEFAULT_ENV_FILE, dotenv)] if isinstance(dotenv, Mapping) else dotenv
    values: dict[str, Any] = {"log_dir": default_log_dir(environ)}
    for setting in SETTINGS:
        if (found := setting_source(setting, flags, environ, files)) is None and setting.default is MISSING:
            raise ConfigError(f"{setting.env} is not set: {where_to_set(environ)}")
        if found is None:
            continue  # Config's default
        name, raw, source = found
        try:
            values[setting.field] = setting.parse(raw)
        except ValueError as err:
            raise ConfigError(f"{name}={setting.shown(raw)} ({source}) is not valid: {err}") from None
    known = {s.env for s in SETTINGS} | set(FALLBACK_NAMES.values())
    for file in files:
        for name in sorted(set(file.values) - known):  # a line without "=" may be a pasted key: never shown
            log.warning("unknown setting %s in %s is ignored (`%s config` lists the names)", name if file.values[name]
                        is not None else "(a line without '=')", file.label, command_name())
    config = Config(**values)
    if config.min_valid_answers > config.num_workers:
        raise ConfigError(f"MIN_VALID_ANSWERS={config.min_valid_answers} is more than NUM_WORKERS="
                          f"{config.num_workers}: lower it or add workers")
    if 0 < config.max_calls < config.min_valid_answers:
        raise ConfigError(f"MAX_CALLS={config.max_calls} cannot pay for MIN_VALID_ANSWERS="
                          f"{config.min_valid_answers} solver calls: raise it, or 0 for no limit")
    # RESPONSE_FORMAT shapes the synthesis's reply alone (request_options): refused where no question gets one.
    if config.response_format and (config.synthesize == "off" or config.synthesize == "auto"
                                   and config.answer_shape == "short"):
        raise ConfigError(f"RESPONSE_FORMAT shapes the synthesis's reply, and with SYNTHESIZE={config.synthesize}"
                          f" and ANSWER_SHAPE={config.answer_shape} there is none: set SYNTHESIZE=on, or unset it")
    if warn and config.response_format and config.synthesize == "auto" and config.answer_shape == "auto":
        log.warning("RESPONSE_FORMAT applies to questions answered in full (SYNTHESIZE=auto); a short answer is the "
                    "judges' vote as it stands: set SYNTHESIZE=on for a synthesis on every question")
    host = urlsplit(config.proxy_url).hostname or ""
    if warn and config.proxy_url.startswith("http://") and not is_loopback(host):
        log.warning("PROXY_URL is plain http:// to %s: the API key crosses the network unencrypted", host)
    return config


def where_to_set(environ: Mapping[str, str]) -> str:
    """Where a required setting goes, naming files the user has (never .env.example: an installed tool has none)."""
    user = user_settings_file(environ)
    made = "" if os.path.lexists(user) else f" (`{command_name()} init` writes it)"
    return f"set it in {shown_path(user, environ)}{made}, in ./.env or in the environment"


def read_env_file(path: str | None, environ: Mapping[str, str] | None = None) -> list[SettingsFile]:
    """The settings files there are, highest precedence first: --env-file, else $MOA_ENV_FILE (either must exist),
    then ./.env, then the per-user file (user_settings_file). A file named twice (--env-file .env) is read once.
    Nothing is written into os.environ: the precedence stays explicit in load_config, tests need no clean-up."""
    environ = os.environ if environ is None else environ
    named = environ.get(ENV_FILE_VARIABLE, "").strip() if path is None else path
    label = f"--env-file {path}" if path is not None else f"{ENV_FILE_VARIABLE} {named}"
    if named and (not os.path.exists(named) or os.path.isdir(named)):
        raise ConfigError(f"{label}: {'a folder, not a file' if os.path.isdir(named) else 'no such file'}")
    user = user_settings_file(environ)
    # ./.env is read when it is a file (a folder or FIFO there is not ours); a named or per-user file whatever it is
    here = DEFAULT_ENV_FILE if os.path.isfile(DEFAULT_ENV_FILE) else ""
    candidates = ((named, label, True), (here, DEFAULT_ENV_FILE, False), (str(user), shown_path(user, environ), False))
    files: dict[str, SettingsFile] = {}  # by real path
    for name, shown, given in candidates:
        if name and os.path.lexists(name) and os.path.realpath(name) not in files:
            files[os.path.realpath(name)] = SettingsFile(shown, read_settings_file(name, shown, given))
    return list(files.values())


def read_settings_file(name: str, label: str, given: bool) -> dict[str, str | None]:
    """A settings file's values; ConfigError naming it (``label``) for anything but UTF-8 text of at most
    ENV_FILE_LIMIT bytes. A file the user named (``given``) may be a pipe (--env-file <(...)); ./.env or the
    per-user file must be a regular file (open_existing: a FIFO there is refused, never waited on)."""
    try:
        with open(name, "rb") if given else os.fdopen(open_existing(Path(name), follow=True), "rb") as handle:
            data = handle.read(ENV_FILE_LIMIT + 1)  # /dev/zero must not fill memory
        if len(data) > ENV_FILE_LIMIT:
            raise ConfigError(f"{label}: larger than {ENV_FILE_LIMIT} bytes, not a settings file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else "not UTF-8 text"
        raise ConfigError(f"{label}: cannot read it ({why})") from None
    if not text.strip():
        return {}
    try:  # imported only when there are settings to read: importing it costs every start 3 ms
        from dotenv import dotenv_values
    except ImportError:
        raise ConfigError("the Python package 'dotenv' is not installed: run  pip install python-dotenv") from None
    return dict(dotenv_values(stream=io.StringIO(text)))


def redact(text: str, secrets: Sequence[str]) -> str:
    """Mask ``secrets`` (Config.secrets) in text or JSON: called where output leaves (say, emit, write_all,
    RedactingFilter, the library's RunRecord.masked), and before text is cut short (server_message,
    model_lines), since a key cut in two no longer matches itself."""
    for secret in secrets:
        text = text.replace(secret, SECRET_MASK)
    return text


def masked_value(value: Any, secrets: Sequence[str]) -> Any:
    """``redact`` on every string inside a JSON-shaped value: the library's exit (RunRecord.masked), whose
    values a caller reads as they are, never through one of our writers."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: masked_value(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked_value(item, secrets) for item in value]
    return value


# --- 4. seams ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Runtime:
    """What the pipeline needs from the outside world that tests replace."""

    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    # Every byte the tool writes to a file goes through here (see write_all): a test can fill the disk at any write.
    write: Callable[[int, bytes], int] = os.write
    secrets: Sequence[str] = field(default=(), repr=False)  # Config.secrets, masked in every file; never shown
    # Where a streamed response shows as it is written (the CLI's parsing.TerminalEcho); None: nowhere. Called with None
    # as each attempt's stream starts, then with each piece of text.
    echo: Callable[[str | None], None] | None = None


def write_all(runtime: Runtime, fd: int, data: bytes) -> None:
    """The file exit: every byte, secrets masked (a short write continues); OSError (ENOSPC, EIO …) propagates."""
    if runtime.secrets:  # surrogateescape: any bytes make the round trip unchanged
        data = redact(data.decode("utf-8", "surrogateescape"), runtime.secrets).encode("utf-8", "surrogateescape")
    view = memoryview(data)
    while view:
        view = view[runtime.write(fd, bytes(view)):]


def describe_os_error(err: OSError) -> str:
    return err.strerror or str(err) or err.__class__.__name__


def say(text: str, secrets: Sequence[str]) -> None:
    """The stderr exit for lines of our own (logs go through RedactingFilter): secrets masked. With stderr
    closed, print(file=None) would write to stdout and break --json; a full or broken stderr must not raise."""
    if sys.stderr is None:
        return
    with contextlib.suppress(OSError, ValueError):
        print(redact(text, secrets), file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Send the rest of stdout to /dev/null, so the flush at exit cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def emit(text: str, secrets: Sequence[str]) -> bool:
    """The stdout exit: a result, secrets masked; False when it could not be delivered (a full disk). A reader that
    went away (``| head``) is not an error, and stdout closed at start (``>&-``) means nobody wants it."""
    if sys.stdout is None:
        return True
    try:
        print(redact(text, secrets), flush=True)
    except BrokenPipeError:
        _silence_stdout()
    except (OSError, ValueError) as err:
        _silence_stdout()
        why = (describe_os_error(err) if isinstance(err, OSError) else "stdout is closed" if
               not isinstance(err, UnicodeEncodeError) else f"its encoding, {err.encoding}, cannot show all of it: "
               "set PYTHONIOENCODING=utf-8")
        say(f"error: could not write the result to stdout ({why}); the transcript and files are complete", ())
        return False
    return True


# --- 5. one HTTP attempt, and the endpoint it goes to --------------------------------------------

@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    status: int
    usage: dict[str, int] | None
    cache_status: str | None = None  # a gateway's cf-aig-cache-status (HIT / MISS)
    gateway_retries: int = 0  # requests a gateway retried on its own before this reply (LiteLLM reports them)
    cached_tokens: int = 0  # prompt tokens the endpoint served from its prefix cache (parsing.reported_usage)
    endpoint_cost_usd: float | None = None  # what a gateway says it charged for this reply


class AdaptiveLimit:
    """How many requests may be in flight: at most MAX_CONCURRENT_REQUESTS, less once the endpoint showed it
    holds fewer. Rejections are the signal: chat endpoints reject at their limit, or queue with latencies that
    vary tenfold with the answer's length, so latency-based limits (Vegas, gradient) cannot see it.

    - A 429 (or 503 with Retry-After) sent with k in flight drops the limit to k - 1 at once, but only where the
      endpoint is congested (CONGESTED_SHARE of the last SAMPLES sent with k or more were rejected): one step, not
      TCP's halving and its dozen rounds of 429s. Elsewhere it is scattered (random shedding, a neighbour's
      burst): the limit stays, and only that request waits (see Endpoint.busy).
    - A success with more in flight than the limit proves a cut went too far: the limit returns to that level.
    - Otherwise it probes up by one per PROBE_SUCCESSES x limit successes, and each probe that fails at the
      level of the last doubles the wait for the next (up to MAX_PATIENCE): a 429 now and then, not a stream.
    - After a collapse (a quota ran out), it grows back at TCP's pace up to the highest level accepted before.
    """

    PROBE_SUCCESSES = 10
    MAX_PATIENCE = 8
    SAMPLES = 32
    CONGESTED_SHARE = 0.25

    def __init__(self, ceiling: int) -> None:
        self.ceiling, self.limit, self.in_flight = ceiling, float(ceiling), 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Of each recent response: how many requests were in flight when it was sent (it included), was it accepted?
        self.samples: collections.deque[tuple[int, bool]] = collections.deque(maxlen=self.SAMPLES)
        self.cut_at, self.patience = 0, 1  # the level of the last cut, and how many times longer probes wait after it
        self.accepted: collections.deque[int] = collections.deque(maxlen=self.SAMPLES)  # levels of recent successes
        self.recover_to = 0  # grow fast up to here: the endpoint accepted this level before a collapse

    async def acquire(self) -> int:
        """Wait for a slot; returns the number in flight including this one."""
        if self.in_flight < int(self.limit) and not self.waiters:
            self.in_flight += 1
            return self.in_flight
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted and cancelled at once: hand the slot on
            elif waiter in self.waiters:  # _wake may already have dropped it
                self.waiters.remove(waiter)
            raise
        return self.in_flight

    def release(self) -> None:
        """Synchronous on purpose: it runs in ``finally`` of cancelled tasks."""
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self.waiters and self.in_flight < int(self.limit):
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def congested(self, in_flight: int) -> bool:
        """Whether the endpoint rejects much of what is sent with ``in_flight`` or more in flight."""
        at_or_above = [accepted for level, accepted in self.samples if level >= in_flight]
        return bool(at_or_above) and at_or_above.count(False) >= self.CONGESTED_SHARE * len(at_or_above)

    def succeeded(self, in_flight_at_send: int) -> None:
        self.samples.append((in_flight_at_send, True))
        self.accepted.append(in_flight_at_send)
        if in_flight_at_send > self.limit and not self.congested(in_flight_at_send):
            self.limit = float(min(self.ceiling, in_flight_at_send))
        elif self.limit < self.recover_to:
            self.limit = min(float(self.recover_to), self.limit + 1 / self.limit)
        elif self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + 1 / (self.PROBE_SUCCESSES * self.patience * self.limit))
        self._wake()

    def overloaded(self, in_flight_at_send: int) -> bool:
        """A back-pressure answer to a request sent with ``in_flight_at_send`` in flight. True when the limit explains
        it: it was cut now, or the request went out above what the limit already is. False for a scattered one."""
        self.samples.append((in_flight_at_send, False))
        if in_flight_at_send > self.limit:
            return True
        if in_flight_at_send < 2 or not self.congested(in_flight_at_send):
            return False  # one request alone cannot be too many
        self.patience = min(self.MAX_PATIENCE, self.patience * 2) if in_flight_at_send == self.cut_at else 1
        self.cut_at = in_flight_at_send
        self.limit = max(1.0, min(self.limit, in_flight_at_send - 1))
        held = max(self.accepted, default=0)
        self.recover_to = held if self.limit < held - 1 else 0
        return True


def server_message(body: bytes, content_type: str, secrets: Sequence[str] = ()) -> str:
    """The server's own error text, short, and never a whole HTML page; masked before it is cut (see redact)."""
    text = body.decode("utf-8", errors="replace").strip()
    if "html" in content_type.lower() or text[:1] == "<":
        return "an HTML error page"
    data = None
    with contextlib.suppress(ValueError):
        data = load_json(text)
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail") or json.dumps(error)
        text = str(error)
    return printable(redact(text, secrets), SERVER_MESSAGE_LIMIT) or "no message"  # one line, whatever it sent


def checked_completion(text: str | None, finish_reason: str | None, refusal: Any, status: int,
                       usage: ReportedUsage, headers: httpx.Headers) -> Completion:
    """The one content check, for plain JSON and streamed replies; each fault carries the reply: it was billed."""
    retried = small_number(headers.get("x-litellm-attempted-retries")) or 0  # by a gateway, upstream, where it says
    reply = Completion("", finish_reason, status, usage.counts, cache_status=headers.get("cf-aig-cache-status"),
                       gateway_retries=retried if retried <= MAX_GATEWAY_RETRIES else 0,
                       cached_tokens=usage.cached_tokens, endpoint_cost_usd=usage.charged(headers))
    if isinstance(refusal, str) and refusal.strip():
        raise fault(Fault.REFUSED, f"refused ({' '.join(refusal.split())[:SERVER_MESSAGE_LIMIT]})", status=status,
                    reply=reply)
    if finish_reason == "content_filter":
        raise fault(Fault.REFUSED, "refused (content filter)", status=status, reply=reply)
    if not text or not text.strip():
        raise fault(Fault.EMPTY, "the response content is empty", status=status, reply=reply)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape in the JSON
        raise fault(Fault.EMPTY, "the response content is not valid Unicode", status=status, reply=reply) from None
    return replace(reply, text=text)


def read_completion(status: int, headers: httpx.Headers, body: bytes) -> Completion:
    """A Completion from a plain JSON 2xx body; a fault (see FAULTS) for any bad body."""
    try:
        data = load_json(body.decode("utf-8"))
    except ValueError as err:  # UnicodeDecodeError is one
        why = "not UTF-8" if isinstance(err, UnicodeDecodeError) else err
        raise fault(Fault.NOT_A_COMPLETION, f"the response body is not valid JSON ({why})", status=status) from None
    if not isinstance(data, dict):
        raise fault(Fault.NOT_A_COMPLETION, "the response body is not a completion object", status=status)
    if error := data.get("error"):
        said = error.get("message", error) if isinstance(error, dict) else error
        raise fault(Fault.ERROR_IN_REPLY, f"the endpoint returned an error: {str(said)[:SERVER_MESSAGE_LIMIT]}",
                    status=status)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise fault(Fault.NOT_A_COMPLETION, "the response has no choices", status=status)
    choice = choices[0]
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    return checked_completion(message_text(message.get("content")), finish_reason_of(choice.get("finish_reason")),
                              message.get("refusal"), status, reported_usage(data), headers)


def too_large(limit: int) -> APIError:
    return fault(Fault.TOO_LARGE, f"too large: the reply is longer than MAX_RESPONSE_BYTES={limit} bytes")


# What a Content-Encoding is inflated with (wbits): one we cannot decode is a fault.
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def body_chunks(response: httpx.Response, limit: int, *, cut: bool = False) -> AsyncIterator[bytes]:
    """The decoded body, at most ``limit`` bytes: past it, APIError "too large", or with ``cut`` its first
    ``limit`` bytes. We ask for ``identity``; a body compressed anyway is inflated here step by bounded step:
    httpx inflates each network chunk whole, so a 1 MB gzip of zeros would be 1 GB before any size check."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    identity = encoding in ("", "identity")
    if not identity and encoding not in ENCODINGS:
        raise fault(Fault.UNKNOWN_ENCODING, f"the reply uses Content-Encoding {encoding[:40]!r}, which we cannot "
                    "decode", status=response.status_code)
    decoder = None if identity else zlib.decompressobj(ENCODINGS[encoding])
    size = 0
    try:
        async for data in response.aiter_raw():
            while data:
                chunk = data if decoder is None else decoder.decompress(data, limit + 1)
                data = b"" if decoder is None else decoder.unconsumed_tail
                size += len(chunk)
                if size > limit and not cut:
                    raise too_large(limit)
                yield chunk[:max(0, limit - size + len(chunk))]
                if size > limit:
                    return
    except zlib.error:
        raise fault(Fault.CORRUPT_ENCODING, f"the reply's {encoding} body is corrupt",
                    status=response.status_code) from None


async def read_body(response: httpx.Response, limit: int, *, cut: bool = False) -> bytes:
    """The (decoded) body, as body_chunks says; a declared Content-Length past the limit fails before reading."""
    declared = response.headers.get("content-length", "")
    if not cut and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    return b"".join([chunk async for chunk in body_chunks(response, limit, cut=cut)])


async def sse_lines(response: httpx.Response, limit: int) -> AsyncIterator[str]:
    """Lines of an event stream; APIError "too large" once the stream passes ``limit`` bytes."""
    pending = b""
    async for chunk in body_chunks(response, limit):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", errors="replace")


# Set around the one call whose stream the user watches (the synthesis, see Runtime.echo).
ECHO: contextvars.ContextVar[Callable[[str | None], None] | None] = contextvars.ContextVar("moa_echo", default=None)


@dataclass
class StreamedReply:
    """What the events of one stream added up to."""

    parts: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    finish: str | None = None
    usage: ReportedUsage = ReportedUsage()
    done: bool = False

    def add(self, chunk: Any, status: int) -> None:
        """One ``data:`` event's JSON."""
        if not isinstance(chunk, dict):
            raise fault(Fault.BAD_EVENT, "the stream sent an event that is not a JSON object", status=status)
        if chunk.get("error"):
            raise fault(Fault.ERROR_IN_REPLY, "the endpoint returned an error mid-stream: "
                        f"{str(chunk['error'])[:SERVER_MESSAGE_LIMIT]}", status=status)
        self.usage = self.usage.then(reported_usage(chunk))
        choices = chunk.get("choices")
        for choice in [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []:
            delta = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str):
                self.parts.append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                self.refusal.append(delta["refusal"])
            self.finish = finish_reason_of(choice.get("finish_reason")) or self.finish


async def read_stream(response: httpx.Response, limit: int) -> Completion:
    """Assemble ``data:`` events; a stream cut (no ``[DONE]``, no finish_reason) ends "truncated", read as "length"."""
    reply, echo, status = StreamedReply(), ECHO.get() or (lambda _: None), response.status_code
    echo(None)
    try:
        async for line in sse_lines(response, limit):
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                reply.done = True
                break
            try:
                chunk = load_json(payload)
            except ValueError:
                raise fault(Fault.BAD_EVENT, "the stream sent an event that is not JSON", status=status) from None
            shown = len(reply.parts)
            reply.add(chunk, status)
            for part in reply.parts[shown:]:
                echo(part)
    except httpx.TransportError as err:  # cut mid-stream: keep what came, as truncated
        log.debug("stream cut: %s", _short(err))
    finish = reply.finish if reply.done or reply.finish is not None else "truncated"
    return checked_completion("".join(reply.parts), finish, "".join(reply.refusal), status, reply.usage,
                              response.headers)


@dataclass
class InFlight:
    """How long one call's requests have been at the endpoint (sent, not yet answered): the age the straggler rule
    goes by. Time in our request queue, in the shared cool-down and in retry waits is the endpoint's answer to load,
    not the call's slowness, and is not in it. ``wake`` runs each time a request goes out."""

    clock: Callable[[], float]
    wake: Callable[[], None] = lambda: None
    ended: float = 0.0  # seconds of the call's requests that have ended
    since: float | None = None  # when the request now at the endpoint went out
    sent: int = 0  # requests that went out (a reply from the response cache sends none)

    def age(self) -> float:
        return self.ended + (self.clock() - self.since if self.since is not None else 0.0)

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        self.since, self.sent = self.clock(), self.sent + 1
        self.wake()
        try:
            yield
        finally:
            self.ended, self.since = self.age(), None


@dataclass
class QueueTime(InFlight):
    """The spans (timed as InFlight's) in which every call a question has going waits for a request slot of ours: in a
    batch, other questions hold the slots (--concurrency over what the endpoint takes), which is not the endpoint
    failing this question, so QUESTION_DEADLINE counts them no more than the straggler age does (Debate.time_left)."""

    calls: int = 0  # calls going (in ask)
    queued: int = 0  # those of them waiting for a slot
    deadline: asyncio.Timeout | None = None  # the timeout that stops the question (see run_question)
    left: float | None = None  # its seconds left on the loop's clock, held while a span goes

    @contextlib.contextmanager
    def counting(self, queued: bool = False) -> Iterator[None]:
        """A call going (queued: one of them waiting for a slot) inside."""
        self.change(1, queued)
        try:
            yield
        finally:
            self.change(-1, queued)

    def change(self, delta: int, queued: bool) -> None:
        self.queued, self.calls = (self.queued + delta, self.calls) if queued else (self.queued, self.calls + delta)
        waiting, loop = 0 < self.calls <= self.queued, asyncio.get_running_loop()
        deadline = self.deadline if self.deadline is not None and not self.deadline.expired() else None
        if waiting and self.since is None:
            self.since = self.clock()
            if deadline is not None and (when := deadline.when()) is not None:
                self.left = when - loop.time()
                deadline.reschedule(None)
        elif not waiting and self.since is not None:
            self.ended, self.since = self.age(), None
            if deadline is not None and self.left is not None:
                deadline.reschedule(loop.time() + self.left)
            self.left = None


# The timer of the call the current task sends for, set by its straggler watch (see StragglerWatch.guard).
CALL_IN_FLIGHT: contextvars.ContextVar[InFlight | None] = contextvars.ContextVar("moa_call_in_flight", default=None)


class Endpoint:
    """The one chat-completions endpoint, shared by every call of every question: one connection pool, a cap on
    requests in flight, a shared cool-down, and the evidence the batch circuit breaker reads."""

    def __init__(self, config: Config, client: httpx.AsyncClient, runtime: Runtime) -> None:
        self.config, self.client, self.runtime = config, client, runtime
        self.slots = AdaptiveLimit(config.max_concurrent_requests)
        self.billing = Billing()  # what it bills beyond our reservations, learned from its replies
        # Until this clock time nobody sends: set only when 429s cluster (see busy).
        self.cooldown_until = 0.0
        # (clock time, back-pressure the limit does not explain?) of the last BUSY_CLUSTER_WINDOW responses.
        self.recent_responses: collections.deque[tuple[float, bool]] = collections.deque(maxlen=BUSY_CLUSTER_WINDOW)
        # Of each of the last BREAKER_WINDOW calls that ended: did it fail as an outage after all its retries?
        self.recent_calls: collections.deque[bool] = collections.deque(maxlen=BREAKER_WINDOW)
        self.questions = 0  # questions answering through it now (a batch runs several)
        # The stall rule (see refused): when the first request refused since the last 2xx went out, and the refusals.
        self.refused_since: float | None = None
        self.refusals: collections.Counter[str] = collections.Counter()
        self.accepted_at, self.stall_warned = -math.inf, False  # when the last 2xx came; whether the warning was given
        self.shared_budget: Budget | None = None  # a Debater's, over all its debates (see Budget.shared)
        self.cache = ResponseCache(config.cache_path, config.cache, config.cache_ttl)  # opened on first use

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.cache.close()

    def call_ended(self, failure: APIError | None) -> None:
        """Feed the breaker one finished call: None for a success, else its last error. Back-pressure is never
        evidence: a busy endpoint is not a broken one (a quota used up stops the run instead)."""
        if failure is not None and failure.backpressure:
            return
        self.recent_calls.append(failure is not None and failure.outage)

    def failing(self) -> bool:
        """The circuit breaker: BREAKER_TRIP_FAILURES of the last BREAKER_WINDOW calls failed with an outage after
        every retry. Whole calls count: a flaky endpoint whose calls succeed on retry, or a busy one, never trips it."""
        return len(self.recent_calls) == BREAKER_WINDOW and sum(self.recent_calls) >= BREAKER_TRIP_FAILURES

    def responded(self, unexplained_backpressure: bool) -> None:
        self.recent_responses.append((self.runtime.clock(), unexplained_backpressure))

    def busy(self, err: APIError, in_flight_at_send: int) -> None:
        """Back-pressure on one request: its own call waits its Retry-After (see ask). Everyone waits only when
        BUSY_CLUSTER_SIZE of the last BUSY_CLUSTER_WINDOW responses, within BUSY_CLUSTER_SECONDS, were ones the
        limit does not explain: the endpoint rations by time (a quota per minute). One the limit explains is fixed
        by the lower limit; pausing everyone for a scattered one made a 5% rate of them halve a batch's speed."""
        self.responded(unexplained_backpressure=not self.slots.overloaded(in_flight_at_send))
        now = self.runtime.clock()
        clustered = sum(1 for at, unexplained in self.recent_responses
                        if unexplained and now - at <= BUSY_CLUSTER_SECONDS) >= BUSY_CLUSTER_SIZE
        if clustered and err.retry_after is not None:
            until = now + min(err.retry_after, self.config.retry_max_delay)
            if until > self.cooldown_until:
                log.info("the endpoint keeps asking to wait (HTTP %s): pausing all requests for %.1fs",
                         err.status, until - now)
                self.cooldown_until = until

    def refused(self, error: APIError, sent_at: float) -> APIError:
        """Count a request not accepted (no 2xx: an error status, 429s included, or no response), sent at
        ``sent_at``; one sent before the last 2xx came counts from that 2xx: a slow request refused after
        others were accepted is no sign of a stall. The error, or EndpointStalled (see stalled)."""
        self.refusals["no response" if error.status is None else f"HTTP {error.status}"] += 1
        since = max(sent_at, self.accepted_at)
        self.refused_since = since if self.refused_since is None else min(self.refused_since, since)
        return self.stalled(error.status) or error

    def stalled(self, status: int | None = None) -> EndpointStalled | None:
        """EndpointStalled, which stops the run (a batch: exit 75), once nothing was accepted for STALL_TIMEOUT
        since the first refused request went out, and more than one was refused (one alone, a reply slower than
        REQUEST_TIMEOUT, is that request's failure, which its retry handles): an endpoint answering only 429 for
        minutes is not merely busy. At STALL_WARNING_SHARE of it one warning, so the wait is not silent."""
        limit, total = self.config.stall_timeout, self.refusals.total()
        waited = self.runtime.clock() - self.refused_since if self.refused_since is not None else -math.inf
        if not limit or total < 2 or waited < STALL_WARNING_SHARE * limit:
            return None
        counts = ", ".join(f"{n} {what}" for what, n in self.refusals.most_common())
        seen = f"the endpoint accepted no request for {waited:.1f}s ({total} requests: {counts})"
        if waited >= limit:
            return EndpointStalled(f"{seen}; stopped at STALL_TIMEOUT={limit:g}s: try again later",
                                   FAULTS[Fault.STALLED], status=status)
        if not self.stall_warned:
            self.stall_warned = True
            token = QUESTION_ID.set("")  # about the endpoint, not the question whose call noticed
            log.warning("%s; still trying until STALL_TIMEOUT=%gs", seen, limit)
            QUESTION_ID.reset(token)
        return None

    def stall_left(self) -> float:
        """Seconds until the stall rule stops the run: no retry waits past it (see ask)."""
        if self.refused_since is None or not self.config.stall_timeout:
            return math.inf
        return self.refused_since + self.config.stall_timeout - self.runtime.clock()

    def accepted(self) -> None:
        """A 2xx: the stall rule starts over."""
        self.refused_since, self.stall_warned, self.accepted_at = None, False, self.runtime.clock()
        self.refusals.clear()

    async def complete(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                       headers: Mapping[str, str], model: str | None = None, queue: QueueTime | None = None,
                       options: Mapping[str, Any] | None = None) -> Completion:
        """One HTTP attempt; raises APIError, never an httpx exception. ``queue``: its question's (see QueueTime);
        ``options``: its question's request_options, merged last, a None removing that field."""
        body: dict[str, Any] = {"model": model or self.config.models[0], "messages": messages,
                                "temperature": temperature, "max_tokens": max_tokens}
        if self.config.stream:
            # Proxies close idle non-streaming requests (Cloudflare: 524 after 100 s); a stream keeps it busy.
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        body = {key: value for key, value in (body | dict(options or {})).items() if value is not None}
        with queue.counting(queued=True) if queue else contextlib.nullcontext():
            in_flight = await self.slots.acquire()
        try:
            while (cooldown_left := self.cooldown_until - self.runtime.clock()) > 0:
                await self.runtime.sleep(cooldown_left)
            sent_at = self.runtime.clock()
            # httpx's read timeout restarts with every chunk: a byte at a time never times out. Bound it all.
            with (CALL_IN_FLIGHT.get() or InFlight(self.runtime.clock)).sending():
                async with asyncio.timeout(self.config.request_timeout):
                    async with self.client.stream("POST", self.config.proxy_url, json=body,
                                                  headers=dict(headers)) as response:
                        return await self._read(response, in_flight, sent_at)
        except (httpx.HTTPError, TimeoutError, APIError) as err:
            error = err if isinstance(err, APIError) else self.refused(exception_error(err, self.config), sent_at)
            # A server may echo a key back (the client's, or a call's EXTRA_BODY credential): masked as it enters,
            own = [s for s in body_credentials(json.dumps(options or {})) if len(s) >= MIN_MASKED_SECRET]
            error.args = (redact(str(error), [*self.config.secrets, *own]),)  # as its words reach a library caller
            raise error from None
        finally:
            self.slots.release()

    async def _read(self, response: httpx.Response, in_flight: int, sent_at: float) -> Completion:
        """The response of one attempt, whatever its shape, within MAX_RESPONSE_BYTES."""
        status = response.status_code
        if not 200 <= status < 300:
            try:
                body = await read_body(response, ERROR_BODY_LIMIT, cut=True)
            except APIError:  # an undecodable error body: the status still says what happened
                body = b""
            via = environment_proxy(self.config.proxy_url) if status == 407 or status >= 500 else None
            error = status_error(status, response.headers, body, self.runtime.wall_clock(), via, self.config.secrets)
            if error.backpressure:
                self.busy(error, in_flight)
            else:
                self.responded(False)
            raise self.refused(error, sent_at)
        self.slots.succeeded(in_flight)
        self.responded(False)
        self.accepted()
        # By what the server sent, not what we asked: several proxies ignore ``stream: true`` and answer plain JSON.
        if response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream":
            return await read_stream(response, self.config.max_response_bytes)
        return read_completion(status, response.headers, await read_body(response, self.config.max_response_bytes))


def _short(err: BaseException) -> str:
    return (str(err) or err.__class__.__name__).splitlines()[0][:SERVER_MESSAGE_LIMIT]


def tls_verification(url: str, environ: Mapping[str, str]) -> ssl.SSLContext | bool:
    """What httpx verifies TLS with. The CA bundle costs every start 40 ms, and a plain-http endpoint (llama.cpp,
    Ollama on the LAN) never uses it: then a context with no CA (fails closed), unless a proxy (maybe https) is set."""
    proxied = any(environ.get(name) or environ.get(name.upper()) for name in ("http_proxy", "https_proxy", "all_proxy"))
    if urlsplit(url).scheme.lower() == "http" and not proxied:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


def environment_proxy(url: str) -> str | None:
    """The proxy httpx sends a request for ``url`` through, as "URL (VARIABLE)" without its credentials, or None:
    by httpx's own rules (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY), so an error blames the hop that failed."""
    from httpx._utils import URLPattern, get_environment_proxies  # private, but the very rules it routes by
    mounts = sorted(((URLPattern(key), key, proxy) for key, proxy in get_environment_proxies().items()),
                    key=lambda mount: mount[0])
    key, proxy = next(((key, proxy) for pattern, key, proxy in mounts if pattern.matches(httpx.URL(url))), ("", None))
    return f"{masked_url(proxy)} ({proxy_variable(key, proxy)})" if proxy else None


def proxy_variable(key: str, proxy: str) -> str:
    """The variable httpx took ``proxy`` from for its mount ``key`` ("http://", "https://", "all://")."""
    base = key.partition(":")[0] + "_proxy"
    names = [n for n in (base, base.upper()) if os.environ.get(n) and proxy.endswith(os.environ[n].strip())]
    return names[0] if names else "the environment"


def check_proxy_environment() -> None:
    """ConfigError (nothing sent) for a proxy variable httpx cannot use: it would raise a traceback when the client
    is made (an unknown scheme, SOCKS without socksio, an unreadable NO_PROXY entry) or connects (a bad port)."""
    from httpx._utils import URLPattern, get_environment_proxies
    for key, proxy in get_environment_proxies().items():
        try:
            URLPattern(key)
            url = httpx.Proxy(proxy).url if proxy else None
        except (ValueError, httpx.InvalidURL):
            if not proxy:
                raise ConfigError(f"NO_PROXY holds {key.partition('://')[2].lstrip('*')!r}, which httpx cannot read: "
                                  "list host names, IP addresses or .domains, comma-separated") from None
            url = None
        if not proxy:  # a NO_PROXY entry httpx can read
            continue
        if url is None or not url.host or not 0 < (url.port or 80) < 65536:
            problem = "expected http://, https:// or socks5:// and a host, with a port from 1 to 65535"
        elif url.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
            problem = "a SOCKS proxy needs the Python package socksio: run  pip install 'httpx[socks]'"
        else:
            continue
        raise ConfigError(f"{proxy_variable(key, proxy)}={masked_url(proxy)!r} is not a proxy httpx can use: "
                          f"{problem}; or unset it")


def open_client(config: Config) -> httpx.AsyncClient:
    """The run's one HTTP client; every timeout explicit (httpx's default is 5 s)."""
    # identity: see body_chunks; an LLM reply is a few KB, compression saves little.
    headers = {"Authorization": f"Bearer {config.api_key}", "Accept-Encoding": "identity"}
    if config.gateway_token:  # an authenticated Cloudflare AI Gateway
        headers["cf-aig-authorization"] = f"Bearer {config.gateway_token}"
    pool = config.max_concurrent_requests + POOL_HEADROOM
    return httpx.AsyncClient(timeout=httpx.Timeout(config.request_timeout), headers=headers,
                             limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                             verify=tls_verification(config.proxy_url, os.environ))


# --- 6. the retry policy -------------------------------------------------------------------------

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
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False  # the endpoint sent no usage; counts are estimates
    cached_tokens: int = 0  # of prompt_tokens, those the endpoint served from its prefix cache
    endpoint_cost_usd: float | None = None  # what the endpoint says it charged (Completion)
    cache_status: str | None = None
    gateway_retries: int = 0
    reserved: int = 0  # tokens it held of the budget until its bill came
    unreadable: bool = False  # a reply came, and the phase's parser read no answer in it (or it was cut off)
    cache_hit: bool = False  # the reply came from our response cache: nothing was sent or billed (ResponseCache.reply)
    stored_at: float = 0.0  # then: when the cache stored it (wall clock), as the transcript says


@dataclass
class AgentCall:
    """One logical call (one agent in one phase), with all its attempts."""

    pass_number: int
    phase: Phase
    agent: str
    system: str
    user: str
    attempts: list[Attempt] = field(default_factory=list)
    ok: bool = False
    failure: str | None = None
    tier: str | None = None
    model: str = ""
    debate_round: int = 1  # the debate round (ROUNDS) the call belongs to; ``pass_number`` is 2 in the rerun
    fallback: bool = False  # accepted, but read only by its phase's last parsing tier (read_by_fallback)
    error: APIError | None = field(default=None, repr=False)  # what its last attempt failed with, once it failed


def retry_delay(config: Config, attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Full-jitter exponential backoff for retry ``attempt`` of a call, or the server's wait
    when it is longer (a hint never makes a retry come sooner than backoff); both capped."""
    ceiling = min(config.retry_max_delay, config.retry_base_delay * 2 ** min(attempt - 1, 64))
    return min(max(retry_after or 0.0, rng.uniform(0, ceiling)), config.retry_max_delay)


@dataclass(frozen=True)
class Policy:
    """What one failed attempt means for the call, the run and the batch: a row of the one table."""

    retry: bool  # another attempt may succeed (with a fresh nonce: see try_attempt)
    stops_run: bool = False  # no call of this run can succeed: stop it (key, URL or model wrong)
    outage: bool = False  # the endpoint looks down: counts against the batch breaker if retries run out
    backpressure: bool = False  # the endpoint asked us to slow down: the request cap adapts; never an outage


RETRY, FAIL, STOP = Policy(retry=True), Policy(retry=False), Policy(retry=False, stops_run=True)
OUTAGE, BUSY = Policy(retry=True, outage=True), Policy(retry=True, backpressure=True)


def status_policy(status: int, retry_after: float | None, should_retry: str | None = None,
                  quota_used_up: bool = False) -> Policy:
    """The one table, for an HTTP status (FAULTS holds the rest; the README's table says the same)."""
    if status in (401, 403, 404, 407) or 300 <= status < 400 or (status == 429 and quota_used_up):
        policy = STOP  # key, URL or model wrong, moved (not followed: the key would go along), a proxy wants
        # credentials, or the quota used up: every call fails alike, and no wait fixes it within a run
    elif status == 429 or (status == 503 and retry_after is not None):
        policy = BUSY  # busy, not down: retried after its wait (RetriesUsed; Endpoint.busy, AdaptiveLimit)
    elif status in (408, 409) or status >= 500:
        policy = OUTAGE  # retried; a call whose retries run out on them is evidence of an outage
    else:
        policy = FAIL  # 400 (a prompt too long), 413, 422: this request's own fault; other calls may succeed
    if should_retry in ("true", "false"):  # the server knows better than its status code
        policy = replace(policy, retry=should_retry == "true")
    return policy


# Every way an attempt fails besides its HTTP status; what each means is its row in FAULTS.
Fault = Enum("Fault", "REFUSED EMPTY NOT_A_COMPLETION ERROR_IN_REPLY BAD_EVENT UNPARSEABLE TOO_LARGE UNKNOWN_ENCODING "
             "CORRUPT_ENCODING TIMEOUT NO_CONNECTION UNREADABLE STALLED CUT_AT_LIMIT")

# The other half of the one table: each fault, what it means, and why.
FAULTS: dict[Fault, Policy] = {
    Fault.REFUSED: FAIL,  # a refusal, a content filter: the same prompt is refused again; the run goes on
    Fault.EMPTY: RETRY,  # empty content, or not valid Unicode: a fresh attempt is a fresh sample
    Fault.NOT_A_COMPLETION: RETRY,  # not JSON, not UTF-8, no choices: a glitch in this one reply
    Fault.ERROR_IN_REPLY: RETRY,  # an error object in a 2xx or mid-stream: the upstream failed this once
    Fault.BAD_EVENT: RETRY,  # a stream event that is not a JSON object: a glitch in this one stream
    Fault.UNPARSEABLE: RETRY,  # the parser finds no answer, or it was cut off: another sample may do
    Fault.TOO_LARGE: RETRY,  # past MAX_RESPONSE_BYTES: a runaway sample; the next is another
    Fault.UNKNOWN_ENCODING: FAIL,  # a Content-Encoding we cannot decode comes again: a retry cannot change it
    Fault.CORRUPT_ENCODING: RETRY,  # gzip or deflate that does not inflate: damaged on its way
    Fault.TIMEOUT: OUTAGE,  # no response within REQUEST_TIMEOUT: the endpoint may be down
    Fault.NO_CONNECTION: OUTAGE,  # none, or dropped: the endpoint, or the proxy before it, may be down
    Fault.UNREADABLE: RETRY,  # a response httpx cannot read (a redirect loop): this reply's fault
    Fault.STALLED: STOP,  # nothing accepted for STALL_TIMEOUT: later, not now (see Endpoint.stalled)
    Fault.CUT_AT_LIMIT: FAIL,  # a synthesis stopped at MAX_TOKENS: asked again it stops there again; the run goes on
}


def fault(kind: Fault, message: str, *, status: int | None = None, reply: Completion | None = None,
          unanswered: bool = False) -> APIError:
    """The APIError of a fault: what it means is its row in FAULTS, decided there and nowhere else."""
    return APIError(message, FAULTS[kind], status=status, reply=reply, unanswered=unanswered)


def exception_error(err: Exception, config: Config) -> APIError:
    """The error of an attempt that got no usable HTTP response."""
    if isinstance(err, (httpx.TimeoutException, TimeoutError)):
        return fault(Fault.TIMEOUT, f"no response within REQUEST_TIMEOUT={config.request_timeout:g}s",
                     unanswered=not isinstance(err, httpx.ConnectTimeout))
    if isinstance(err, httpx.TransportError):
        where = display_url(config.proxy_url)
        if proxy := environment_proxy(config.proxy_url):  # the proxy, not the endpoint, may be what failed
            if isinstance(err, httpx.ProxyError) and str(err).startswith("407"):  # its answer to our CONNECT
                return proxy_credentials_error(proxy)
            return fault(Fault.NO_CONNECTION, f"connection error to {where} through the proxy {proxy}: {_short(err)}: "
                         f"check that proxy, or add {urlsplit(config.proxy_url).hostname} to NO_PROXY to bypass it")
        return fault(Fault.NO_CONNECTION, f"connection error to {where}: {_short(err)}",
                     unanswered=not isinstance(err, (httpx.ConnectError, httpx.ProxyError)))
    return fault(Fault.UNREADABLE, f"the reply could not be read ({err.__class__.__name__}: {_short(err)})")


def proxy_credentials_error(proxy: str | None) -> APIError:
    """A proxy's 407, to a forwarded request or to a CONNECT: every request will get it, so the run stops."""
    return APIError(f"the proxy {proxy or 'from the environment'} asks for credentials (HTTP 407): put them in its "
                    "URL, http://user:password@host:port", status_policy(407, None), status=407)


def status_error(status: int, headers: httpx.Headers, body: bytes, now: float, via: str | None = None,
                 secrets: Sequence[str] = ()) -> APIError:
    """The APIError for a non-2xx response; ``via``: the environment proxy, named in a 407 or 5xx it may have sent."""
    if status == 407:
        return proxy_credentials_error(via)
    message = server_message(body, headers.get("content-type", ""), secrets)
    retry_after = retry_hint(headers, status, now)
    quota_used_up = status == 429 and QUOTA_USED_UP in body[:ERROR_BODY_LIMIT]
    policy = status_policy(status, retry_after, headers.get("x-should-retry", "").strip().lower() or None,
                           quota_used_up)
    if status in (401, 403):
        text = f"the endpoint rejected the API key (HTTP {status}): {message}"
    elif quota_used_up:
        text = f"the account's quota is used up (HTTP 429 insufficient_quota): add credit or use another key: {message}"
    elif 300 <= status < 400:
        text = (f"HTTP {status}: the endpoint redirects to {masked_url(headers.get('location', '')) or '(nowhere)'}: "
                "set PROXY_URL to the URL it moved to (a redirect is not followed: the API key would go along)")
    else:
        text = f"HTTP {status}: {message}" + (f" (through the proxy {via})" if via and status >= 500 else "")
    return APIError(text, policy, status=status, retry_after=retry_after)


def record_reply(attempt: Attempt, completion: Completion, prompt_estimate: int) -> None:
    """What a 2xx reply said and its tokens (the endpoint's usage, or an estimate): an unusable one is billed too."""
    attempt.status, attempt.finish_reason = completion.status, completion.finish_reason
    attempt.response_text, attempt.cache_status = completion.text, completion.cache_status
    attempt.gateway_retries, attempt.endpoint_cost_usd = completion.gateway_retries, completion.endpoint_cost_usd
    if usage := completion.usage:  # both counts, checked where the reply was read (reported_usage)
        attempt.prompt_tokens, attempt.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    else:
        attempt.prompt_tokens, attempt.completion_tokens = prompt_estimate, estimate_tokens(completion.text)
        attempt.usage_estimated = True
    attempt.cached_tokens = min(completion.cached_tokens, attempt.prompt_tokens)  # of an estimate too


def request_options(config: Config, phase: Phase) -> dict[str, Any]:
    """What a call of ``phase`` sends beyond model, messages, temperature and max_tokens: the options set (the
    synthesis alone takes RESPONSE_FORMAT: its reply is the response the user reads, every other one our format
    reads), then EXTRA_BODY's fields, overriding them and ours; a None there removes that field (Endpoint.complete)."""
    options = {"seed": config.seed, "top_p": config.top_p, "reasoning_effort": config.reasoning_effort}
    as_json = {"stop": config.stop, "response_format": config.response_format if phase == Phase.SYNTHESIS else None}
    options |= {name: json.loads(text) for name, text in as_json.items() if text}
    extra: dict[str, Any] = json.loads(config.extra_body or "{}")
    return {name: value for name, value in options.items() if value is not None} | extra


def request_headers(state: Debate, phase: Phase, agent: str, attempt: int, debate_round: int = 1) -> dict[str, str]:
    """Tags that let a gateway's own logs be joined with the transcript."""
    metadata = json.dumps({"run_id": state.run_id, "phase": phase, "agent": agent, "attempt": attempt})
    return {"X-MoA-Run-Id": state.run_id, "X-MoA-Phase": phase, "X-MoA-Agent": agent, "X-MoA-Round": str(debate_round),
            "cf-aig-metadata": metadata} | ({"cf-aig-skip-cache": "true"} if attempt > 1 else {})


@dataclass(frozen=True)
class Sending(Generic[T]):
    """What every attempt of one call sends, and how its reply is read."""

    temperature: float
    max_tokens: int
    prompt_estimate: int
    parse: Callable[[str], T | None]


async def attempt_once(state: Debate, call: AgentCall, attempt: Attempt, messages: list[dict[str, str]],
                       sending: Sending[T]) -> T:
    """One HTTP attempt (or a response cache hit: nothing sent or billed, see finish_attempt) and its parse; APIError
    when it yields nothing usable."""
    cache, now = state.endpoint.cache, state.runtime.wall_clock()
    key = "" if cache.off else response_key(state.config, call, attempt, messages, sending)  # a hash of the prompt
    completion, stored_at = await cache.reply(key, attempt.nonce, now, lambda: state.endpoint.complete(
        messages, temperature=sending.temperature, max_tokens=sending.max_tokens, model=attempt.model,
        headers=request_headers(state, call.phase, call.agent, attempt.number, call.debate_round), queue=state.queue,
        options=request_options(state.config, call.phase)))  # the question's: a batch line may set its own
    attempt.cache_hit, attempt.stored_at = stored_at is not None, stored_at or 0.0
    record_reply(attempt, completion, sending.prompt_estimate)
    # The nonce is ours: a reply that echoes it, or its hex alone ("The answer is: f4de95…"), must not answer with it.
    text = completion.text.replace(prompts.render(prompts.NONCE_SUFFIX, nonce=attempt.nonce).strip(), "")
    value = sending.parse(text.replace(attempt.nonce, ""))
    cut = completion.finish_reason in ("length", "truncated")
    if value is not None and cut and (getattr(value, "tier", None) in ("paragraph", "sentence")  # each has a tier
                                      or answer_left_open(completion.text) or call.phase == Phase.SYNTHESIS):
        value = None  # a guess from cut text ("The answer is 4" cut mid-sentence), an open <answer>, half a response
    # Cut at MAX_TOKENS, a synthesis (or a greedy reply: asked again, it stops at the same place) is not asked again.
    if value is None and completion.finish_reason == "length" and (call.phase == Phase.SYNTHESIS
                                                                   or not sending.temperature):
        raise fault(Fault.CUT_AT_LIMIT, f"the {call.phase} stopped at MAX_TOKENS={sending.max_tokens}",
                    status=completion.status)
    if value is None:
        why = f" (cut off: finish_reason={completion.finish_reason})" if cut else ""
        attempt.unreadable = True  # the model's own failure, unlike an empty or broken reply (format_given_up)
        raise fault(Fault.UNPARSEABLE, f"no usable {call.phase} output{why}", status=completion.status)
    return value


def finish_attempt(state: Debate, call: AgentCall, attempt: Attempt, messages: list[dict[str, str]],
                   sending: Sending[T], unanswered: bool = False) -> None:
    """Latency, budget settlement and the trace line, as soon as an attempt ends. An ``unanswered`` request
    (cut as a straggler, timed out) may be billed with no bill to show: its reservation stays spent."""
    attempt.latency_s = state.runtime.clock() - state.started - attempt.started_s
    budget = state.budget
    if not unanswered:  # settled to what was billed; a cache hit sent no request: its call is given back too
        budget.settle(attempt.prompt_tokens + attempt.completion_tokens - attempt.reserved, -attempt.cache_hit)
    if budget.billing.learn(sending.prompt_estimate, sending.max_tokens, attempt.prompt_tokens,
                            attempt.completion_tokens) and budget.max_tokens:
        state.note(f"the endpoint billed {attempt.prompt_tokens}+{attempt.completion_tokens} tokens for a reply of "
                   f"max_tokens={sending.max_tokens}: MAX_TOTAL_TOKENS now reserves {budget.billing.prompt:.2f}x our "
                   f"prompt estimate and {budget.billing.completion:.2f}x max_tokens a reply")
    log.debug("%s %s attempt %d: %s, %.2fs, %d+%d tokens: %s", call.phase, call.agent, attempt.number,
              f"HTTP {attempt.status}" if attempt.status else "no HTTP response", attempt.latency_s,
              attempt.prompt_tokens, attempt.completion_tokens, attempt.outcome)
    if state.trace is not None:
        state.trace.attempt(state, call, attempt, messages, sending.temperature, sending.max_tokens)


@dataclass
class RetriesUsed:
    """One call's retries so far. Back-pressure that says when to come back (a Retry-After: "later", not
    "broken") draws on BUSY_RETRIES, every other retryable failure on MAX_RETRIES. BUSY_WAIT_LIMIT is a hard
    cap: a busy retry whose wait would pass it falls back to MAX_RETRIES, and so does one whose hint
    RETRY_MAX_DELAY cuts short (it comes before the server said: 20 of those would storm the endpoint)."""

    failures: int = 0
    busy: int = 0
    busy_waited: float = 0.0

    def next_wait(self, error: APIError, config: Config, rng: random.Random) -> float | None:
        """Seconds until the next attempt, or None when the call has no retry left for this error."""
        if not error.retryable:
            return None
        wait = retry_delay(config, self.failures + self.busy + 1, error.retry_after, rng)
        if (error.backpressure and error.retry_after is not None and error.retry_after <= config.retry_max_delay
                and self.busy < BUSY_RETRIES and self.busy_waited + wait <= BUSY_WAIT_LIMIT):
            self.busy, self.busy_waited = self.busy + 1, self.busy_waited + wait
            return wait
        if self.failures < config.max_retries:
            self.failures += 1
            return wait
        return None


async def try_attempt(state: Debate, call: AgentCall, number: int, sending: Sending[T],
                      retries: RetriesUsed, reserved: int) -> T | APIError:
    """One attempt of a call, recorded in the call and the trace whatever happens."""
    attempt = Attempt(number, f"{state.runtime.rng.getrandbits(64):016x}", state.runtime.clock() - state.started,
                      model=call.model, reserved=reserved)
    call.attempts.append(attempt)
    # A fresh nonce each attempt: five solvers through a caching gateway would otherwise get one cached answer, and a
    # retry the same cached failure back. It ends the last message (a prefix cache loses nothing), a judge's rules
    # (after the candidates it cost a small model its verdicts; judges share little past their rules: prompts.py).
    nonce = call.system and prompts.render(prompts.NONCE_SUFFIX, nonce=attempt.nonce)
    rules, nonce = (call.system + nonce, "") if call.phase == Phase.JUDGE else (call.system, nonce)
    # SYSTEM_PROMPT first, our rules after it in the same message: a model with one system slot reads both, and the
    # format it must write comes last. No rules: --eval's plain question (Strategy "single"), as a chat UI sends it.
    system = "\n\n".join(text for text in (state.config.system_prompt, rules) if text)
    messages = [{"role": "system", "content": system}] * bool(system) + [{"role": "user", "content": call.user + nonce}]
    try:
        value = await attempt_once(state, call, attempt, messages, sending)
    except APIError as error:
        if error.reply is not None:
            record_reply(attempt, error.reply, sending.prompt_estimate)
        attempt.status = error.status if error.status is not None else attempt.status
        attempt.outcome = call.failure = str(error)
        attempt.retry_in_s = None if format_given_up(state, call) else \
            retries.next_wait(error, state.config, state.runtime.rng)
        finish_attempt(state, call, attempt, messages, sending, error.unanswered)
        return error
    except asyncio.CancelledError:
        attempt.outcome, call.failure = "cancelled", call.failure or "cancelled"
        finish_attempt(state, call, attempt, messages, sending, unanswered=True)
        raise
    attempt.outcome = "ok"
    call.ok, call.failure, call.tier = True, None, getattr(value, "tier", None)
    call.fallback = bool(call.system) and read_by_fallback(call.phase, value)  # the plain question asks no format
    finish_attempt(state, call, attempt, messages, sending)
    return value


async def budgeted_attempt(state: Debate, call: AgentCall, number: int, sending: Sending[T],
                           retries: RetriesUsed) -> T | APIError | None:
    """One attempt if the budget pays for its worst case as the endpoint bills, else None (noted). Until the endpoint
    has billed once, attempts under a token budget go one at a time (Billing.first_bill): no straggling (InFlight)."""
    billing = state.budget.billing
    async with billing.first_bill(state.budget.limits_tokens):
        reserved = billing.prompt_tokens(sending.prompt_estimate) + billing.completion_tokens(sending.max_tokens)
        if state.budget.reserve(reserved) or (quorum_short(state, call) and state.budget.release_synthesis(reserved)):
            return await try_attempt(state, call, number, sending, retries, reserved)
    call.failure = "no budget left" if number == 1 else f"{call.failure}; no budget left to retry"
    state.skip(f"{call.phase} {call.agent}" if number == 1 else f"retry of {call.phase} {call.agent}")
    return None


def quorum_short(state: Debate, call: AgentCall) -> bool:
    """Whether ``call`` is a solver pass 1 still needs for MIN_VALID_ANSWERS (the synthesis's reserve yields to it;
    not to the rerun's, which without its quorum leaves pass 1's verdict standing)."""
    answered = sum(c.ok for c in state.calls if c.phase == Phase.GENERATE and c.pass_number == 1)
    return call.phase == Phase.GENERATE and call.pass_number == 1 and answered < state.config.min_valid_answers


async def ask(state: Debate, phase: Phase, agent: str, system: str, user: str, *,
              temperature: float, max_tokens: int, parse: Callable[[str], T | None],
              model: str | None = None, debate_round: int = 1) -> T | None:
    """One agent call with retries; the parsed value, or None once it failed (retries or budget ran out, or no retry
    helps). Raises APIError only when its Policy stops the run, unless drop_model drops the model instead."""
    model = model or state.config.models[0]
    call = AgentCall(state.pass_number, phase, agent, system, user, model=model, debate_round=debate_round)
    state.calls.append(call)
    if model in state.dropped_models:
        call.failure = f"model {model} was dropped earlier in this run"
        return None
    sending = Sending(temperature, max_tokens, prompt_tokens_estimate(system, user, state.config), parse)
    error: APIError | None = None
    retries = RetriesUsed()
    with state.queue.counting():  # while the call is going, its question's deadline runs (see QueueTime)
        for number in itertools.count(1):
            if state.time_left() <= 0:  # the question's deadline, on the runtime's clock (see run_question)
                raise deadline_passed(state.config)
            if number > 1 and (stalled := state.endpoint.stalled()):  # the retry would go out after STALL_TIMEOUT
                raise stalled
            if number > 1 and format_given_up(state, call):  # given up while this retry waited (see format_given_up)
                call.attempts[-1].retry_in_s = None
                break
            result = await budgeted_attempt(state, call, number, sending, retries)
            if result is None:
                return None
            if not isinstance(result, APIError):
                state.endpoint.call_ended(None)
                return result
            error = result
            if error.stops_run and not drop_model(state, model, error):
                raise error
            wait = call.attempts[-1].retry_in_s
            if wait is None:
                break
            log.info("%s %s attempt %d failed (%s); retrying in %.1fs", phase, agent, number, error, wait)
            await state.runtime.sleep(max(min(wait, state.time_left(), state.endpoint.stall_left()), 0.0))
    state.endpoint.call_ended(error)
    call.error = error
    log.warning("%s %s failed after %d attempt(s): %s", phase, agent, len(call.attempts), call.failure)
    return None


# Each phase's parser tiers that read the format it asked for; an accepted reply read by any other (its last tier, the
# guess from prose) counts in RunRecord.format's ``last_tier``: the model did not write the format. Solvers and
# critiques: "paragraph" (the last paragraph, the whole reply); rebuttals and revisions: "markdown" (an "Answer:" label
# without the tags); judges: every reading after the FINAL ANSWER line (an <answer> of its own, "The answer is X"),
# and a ranking judge that named only a winner. The synthesis's parser has no tiers.
CONTRACT_TIERS = {Phase.GENERATE: {"xml", "markdown"}, Phase.CRITIQUE: {"xml", "markdown"},
                  Phase.REBUTTAL: {"xml"}, Phase.REVISE: {"xml"}, Phase.JUDGE: {"final-answer-line", "ranking-line"}}


def read_by_fallback(phase: Phase, value: object) -> bool:
    """Whether an accepted reply of ``phase``, parsed as ``value``, was read only by a tier outside its contract."""
    tier = getattr(value, "read_by", None) or getattr(value, "tier", None)
    return phase in CONTRACT_TIERS and tier is not None and tier not in CONTRACT_TIERS[phase]


# What stands when a phase's replies cannot be read, for the note that says its failures are no longer retried.
# The solvers and the synthesis are not given up on: without a solver's answer there is no quorum, and the
# synthesis is one call.
FORMAT_FALLBACKS = {Phase.CRITIQUE: "an answer whose critique fails stays in play uncritiqued",
                    Phase.REBUTTAL: "a solver whose rebuttal fails keeps its first answer",
                    Phase.REVISE: "a solver whose revision fails keeps its answer",
                    Phase.JUDGE: "with no judge's verdict, the solvers' majority stands"}


def unusable_reply(attempt: Attempt) -> bool:
    """A 2xx reply that gave nothing usable: not in the phase's format, empty, refused or cut off (RunRecord.format's
    ``failed``). A transport error or an error status is no reply: retrying those may help."""
    return attempt.status is not None and 200 <= attempt.status < 300 and attempt.outcome not in (
        "ok", "pending", "cancelled")


def format_given_up(state: Debate, call: AgentCall) -> bool:
    """Whether ``call``'s last unreadable reply is final: FORMAT_GIVE_UP_REPLIES of its phase's replies in this run
    (both passes) could not be read, more than could, so a retry more likely than not pays for another reply the
    model cannot format (SmolLM2-135M: 13% of its rebuttals had an answer, and each failure was asked 4 times more).
    Once given up, a phase stays so for the run, noted the first time with what stands instead. Any other failure
    (no reply, an empty or broken one: a glitch a cache or a gateway may repeat once) is retried as before."""
    if call.phase not in FORMAT_FALLBACKS or not call.attempts or not call.attempts[-1].unreadable:
        return False
    if call.phase in state.gave_up:
        return True
    attempts = [a for c in state.calls if c.phase == call.phase for a in c.attempts]
    readable, unreadable = sum(a.outcome == "ok" for a in attempts), sum(a.unreadable for a in attempts)
    if unreadable < FORMAT_GIVE_UP_REPLIES or unreadable <= readable:
        return False
    state.gave_up.add(call.phase)
    state.note(f"{unreadable} of {readable + unreadable} {call.phase} replies could not be read: this run retries no "
               f"more unreadable {call.phase} replies; {FORMAT_FALLBACKS[call.phase]}")
    return True


def drop_model(state: Debate, model: str, error: APIError) -> bool:
    """With several models, one the endpoint says is not there (404) is dropped for the rest of the run instead of
    failing it. False when it is the only model its calls could use, or the error is about the key or the URL.
    A SYNTHESIS_MODEL of its own counts: another model answered, so its 404 is about it (the synthesis fails soft)."""
    config = state.config
    if error.status != 404 or len({*config.models, *config.judge_models, config.synthesis_model or ""} - {""}) < 2:
        return False
    if model not in state.dropped_models:
        state.dropped_models.add(model)
        state.note(f"model {model} failed ({error}); its slots are dropped for the rest of the run")
    return any(m not in state.dropped_models for m in (*config.models, *config.judge_models))


def note_lost(state: Debate, what: str, phase: Phase, agent: str, consequence: str) -> None:
    """Why ``agent``'s latest call in ``phase`` gave nothing, noted: a warning unless a straggler cut (_mark_cut)."""
    calls = (c for c in reversed(state.calls)
             if c.phase == phase and c.agent == agent and c.pass_number == state.pass_number)
    failure = next((call.failure or "no usable output" for call in calls), "not sent")
    state.note(f"{what} failed ({failure}); {consequence}", problem=failure != STRAGGLER_CUT)


# --- 7. usage, costs and budgets -----------------------------------------------------------------

def estimate_tokens(text: str) -> int:
    """A deliberately high token estimate, so budgets hold: one per 3 bytes of UTF-8 (English runs 4, CJK 3)."""
    return -(-len(text.encode("utf-8", errors="replace")) // 3)


def prompt_tokens_estimate(system: str, user: str, config: Config | None = None) -> int:
    """A call's prompt; with ``config`` as sent: SYSTEM_PROMPT too, which try_attempt puts before ``system``."""
    own = estimate_tokens(config.system_prompt or "") if config else 0
    return own + estimate_tokens(system) + estimate_tokens(user) + 2 * MESSAGE_OVERHEAD_TOKENS


class Billing:
    """What the endpoint bills beyond what we reserve, learned from its replies, for every question it serves: the
    largest ratios seen of billed to estimated prompt tokens and to max_tokens (a reasoning model bills thinking)."""

    def __init__(self) -> None:
        self.prompt = self.completion = 1.0
        self.billed, self.first = False, asyncio.Lock()  # billed: whether any reply has been billed yet

    def prompt_tokens(self, estimate: int) -> int:
        return math.ceil(estimate * self.prompt)

    def completion_tokens(self, max_tokens: int) -> int:
        return math.ceil(max_tokens * self.completion)

    def learn(self, prompt_estimate: int, max_tokens: int, prompt: int, completion: int) -> bool:
        """Take in one attempt's bill; whether it raised a ratio."""
        if prompt + completion <= 0:
            return False
        before, self.billed = (self.prompt, self.completion), True
        self.prompt = max(self.prompt, prompt / max(prompt_estimate, 1))
        self.completion = max(self.completion, completion / max(max_tokens, 1))
        return (self.prompt, self.completion) != before

    @contextlib.asynccontextmanager
    async def first_bill(self, limited: bool) -> AsyncIterator[None]:
        """Until a reply has been billed, attempts under a token budget go one at a time: the others
        wait for that bill and reserve by it, so replies sent together cannot all overshoot unseen."""
        if limited and not self.billed:
            async with self.first:
                if not self.billed:  # else billed while we waited: go along with the others
                    yield
                    return
        yield


class Budget:
    """Per-question limits on HTTP requests and tokens (0 = unlimited). Every attempt reserves one call and its worst
    case as billed, settled to the reported tokens after. ``floor_*`` is kept back for later phases (kept_back).
    ``shared``: a Debater's budget over all its debates, which every reservation and settlement also goes to."""

    def __init__(self, max_calls: int = 0, max_tokens: int = 0, billing: Billing | None = None,
                 shared: Budget | None = None) -> None:
        self.max_calls, self.max_tokens, self.shared = max_calls, max_tokens, shared
        self.billing = billing if billing is not None else Billing()
        self.calls = self.tokens = self.floor_calls = self.floor_tokens = 0
        # (calls, tokens) kept for the synthesis from the start, under every other phase: it is dropped last.
        self.synthesis = (0, 0)

    @property
    def limited(self) -> bool:
        return bool(self.max_calls or self.max_tokens) or bool(self.shared and self.shared.limited)

    @property
    def limits_tokens(self) -> bool:  # its own or the shared one: attempts then wait for the first bill (first_bill)
        return self.max_tokens > 0 or bool(self.shared and self.shared.max_tokens)

    def fits(self, calls: int, tokens: int) -> bool:
        """The one budget rule: ``calls`` and ``tokens`` fit in what is left above the floors kept back."""
        held_calls, held_tokens = self.synthesis
        return ((not self.max_calls or self.calls + self.floor_calls + held_calls + calls <= self.max_calls) and
                (not self.max_tokens or self.tokens + self.floor_tokens + held_tokens + tokens <= self.max_tokens)
                and (self.shared is None or self.shared.fits(calls, tokens)))

    def release_synthesis(self, tokens: int) -> bool:
        """Give the synthesis's reserve up for one call of ``tokens`` it alone keeps out (the solvers' quorum: the
        endpoint billed more than the reserve was priced at); the synthesis then runs only if the end has room."""
        held, self.synthesis = self.synthesis, (0, 0)
        if held != (0, 0) and self.reserve(tokens):
            return True
        self.synthesis = held
        return False

    def reserve(self, tokens: int) -> bool:
        """Take one call and ``tokens`` if they fit."""
        if not self.fits(1, tokens):
            return False
        self.settle(tokens, calls=1)
        return True

    def settle(self, tokens: int, calls: int = 0) -> None:
        """Count ``tokens`` and ``calls`` more (fewer, when negative: a reservation settled to what was billed)."""
        self.tokens, self.calls = self.tokens + tokens, self.calls + calls
        if self.shared:
            self.shared.settle(tokens, calls)

    @contextlib.contextmanager
    def kept_back(self, calls: int, tokens: int) -> Iterator[None]:
        """Inside, ``calls`` and ``tokens`` are kept back for a later phase; restored whatever happens."""
        before = self.floor_calls, self.floor_tokens
        self.floor_calls, self.floor_tokens = calls, tokens
        try:
            yield
        finally:
            self.floor_calls, self.floor_tokens = before


@dataclass(frozen=True)
class DebatePlan:
    critiques: int
    rebuttals: int
    judges: int
    judges_tokens: int = 0  # the judges' worst case, kept back while the phases before them spend
    cut: bool = False  # the budget cut a critique, rebuttal or judge of this debate: no later round runs


def plan_debate(budget: Budget, valid: int, judges: int, rebuttals: bool, critique_cost: int, rebuttal_cost: int,
                judge_cost: Callable[[int, int], int], critiques_paid: bool = True) -> DebatePlan:
    """The largest (judges, critiques, rebuttals) the budget pays for: rebuttals go first, then critiques, then
    judges. ``judge_cost(c, r)``: one judge's worst case after reading c critiques and r rebuttals."""
    for j in range(judges, -1, -1):
        for c in range(valid, -1, -1):
            for r in range(c if rebuttals else 0, -1, -1):
                tokens = c * critique_cost + r * rebuttal_cost + j * judge_cost(c, r)
                if budget.fits(j + (c if critiques_paid else 0) + r, tokens):
                    return DebatePlan(c, r, j)
    return DebatePlan(0, 0, 0)


class Usage(TypedDict):
    """RunRecord.usage, and each phase's in usage_by_phase: tokens as billed (``estimated`` when a reply gave none)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int  # of prompt_tokens, those the endpoint served from its prefix cache
    estimated: bool
    cache_hits: int  # replies the response cache served: their tokens are in no count above, at no cost
    cost_usd: NotRequired[float]  # when the endpoint said what it charged for every reply, or a price is set
    endpoint_cost_usd: NotRequired[float]  # the sum of what the endpoint said it charged, where it said so
    cost_source: NotRequired[Literal["endpoint", "prices", "mixed"]]  # whose figures cost_usd adds up


def usage_totals(calls: Iterable[AgentCall], config: Config) -> Usage:
    """Token totals over the given calls; ``estimated`` when any count was estimated. The cost of a reply is what
    the endpoint said it charged, where it said so, else its tokens at PRICE_*_PER_MTOK (none without a price)."""
    attempts = [attempt for call in calls for attempt in call.attempts]
    prompt, completion = sum(a.prompt_tokens for a in attempts), sum(a.completion_tokens for a in attempts)
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                  cached_tokens=sum(a.cached_tokens for a in attempts),
                  estimated=any(a.usage_estimated for a in attempts), cache_hits=sum(a.cache_hit for a in attempts))
    charged = [a.endpoint_cost_usd for a in attempts if a.endpoint_cost_usd is not None]
    unsaid = [a for a in attempts if a.endpoint_cost_usd is None and a.prompt_tokens + a.completion_tokens]  # billed
    ours = cost_usd(sum(a.prompt_tokens for a in unsaid), sum(a.completion_tokens for a in unsaid), config,
                    sum(a.cached_tokens for a in unsaid))
    if charged:
        usage["endpoint_cost_usd"] = round(sum(charged), 6)
    # Every reply from the response cache: nothing was billed, $0 whatever the prices, and no one's figure.
    if (not unsaid and (charged or usage["cache_hits"])) or ours is not None:
        usage["cost_usd"] = round(sum(charged) + (ours or 0), 6)
    if "cost_usd" in usage and (charged or unsaid):
        usage["cost_source"] = "prices" if not charged else "endpoint" if not unsaid else "mixed"
    return usage


def cost_usd(prompt_tokens: int, completion_tokens: int, config: Config, cached_tokens: int = 0) -> float | None:
    """Cost at PRICE_*_PER_MTOK (cached prompt tokens at PRICE_CACHED_INPUT_PER_MTOK); None when neither the input
    nor the output price is set: the cached price alone would price most tokens at 0 (a dry run's $0.0000)."""
    cached_price, price = config.price_cached_input_per_mtok, config.price_input_per_mtok
    if price is None and config.price_output_per_mtok is None:
        return None
    cached_price = price if cached_price is None else cached_price
    return round(((prompt_tokens - cached_tokens) * (price or 0) + cached_tokens * (cached_price or 0)
                  + completion_tokens * (config.price_output_per_mtok or 0)) / 1e6, 6)


@dataclass(frozen=True)
class CallCosts:
    """Worst-case prompt tokens of a call of each phase, and the completion caps (an unwritten text: MAX_TOKENS)."""

    solver: int
    critic: int
    rebuttal: int
    judge_base: int  # a judge's prompt with the answers, before critiques and rebuttals
    text: int  # MAX_TOKENS: the longest text of a solver, critic or rebutter that a prompt embeds
    judge_completion: int
    completion: int  # what one reply of a solver, critic, rebutter or reviser may bill
    revise: int = 0  # a later round's prompt: its own answer, reason and critique, and every other answer

    def judge(self, critiques: int, rebuttals: int) -> int:
        """One judge's prompt once it also reads ``critiques`` critiques and ``rebuttals`` rebuttals."""
        return self.judge_base + (critiques + rebuttals) * self.text

    def billed(self, billing: Billing) -> CallCosts:
        """These costs as an endpoint bills them that bills beyond our estimates and caps (Billing)."""
        prompt, done = billing.prompt_tokens, billing.completion_tokens
        return CallCosts(prompt(self.solver), prompt(self.critic), prompt(self.rebuttal), prompt(self.judge_base),
                         prompt(self.text), done(self.judge_completion), done(self.completion), prompt(self.revise))


NO_COSTS = CallCosts(0, 0, 0, 0, 0, 0, 0)  # what planning assumes when no budget is set
# A short reason (REASON_CHARS characters) in tokens, at estimate_tokens' 3 bytes a token and 4 bytes a character.
REASON_TOKENS = -(-REASON_CHARS * 4 // 3)


def worst_case_costs(config: Config, question: str, positions: list[Position] | None = None,
                     workers: int = 0, billing: Billing | None = None) -> CallCosts:
    """The one cost model (the planner, the rerun check, the budget check and --dry-run): worst-case tokens of a
    call of each phase, for ``positions``' answers or, before they exist, ``workers`` answers of MAX_TOKENS."""
    cap = config.max_tokens
    unwritten = 0 if positions is not None else cap
    shown = positions if positions is not None else [Position(0, "", "")] * workers
    slots = len(prompts.SOLVER_STYLES) if config.solver_styles else 1
    shape = config.shape_of(question).shape
    costs = CallCosts(
        solver=max(prompt_tokens_estimate(*solver_prompts(question, s, config.solver_styles, shape), config)
                   for s in range(slots)),
        critic=max((prompt_tokens_estimate(*critic_prompts(question, p, shape), config) for p in shown), default=0)
        + unwritten,
        # A rebuttal also embeds its critique, written or not: counted at the cap either way.
        rebuttal=max((prompt_tokens_estimate(*rebuttal_prompts(question, p, shape), config) for p in shown), default=0)
        + unwritten + cap,
        judge_base=prompt_tokens_estimate(*judge_prompts(question, shown, "ranking" if shape == "full" else "answer"),
                                          config)
        + len(shown) * unwritten,
        text=cap, judge_completion=config.judge_max_tokens, completion=cap,
        revise=revise_cost(config, question, shown, unwritten))
    return costs.billed(billing) if billing is not None else costs


def revise_cost(config: Config, question: str, shown: list[Position], unwritten: int) -> int:
    """A later round's worst prompt: its own answer and critique, every answer and short reason (its own too), the
    unwritten ones at the cap. 0 with ROUNDS=1: rendering n x n answers for nothing would be waste."""
    if config.rounds == 1:
        return 0
    shape = config.shape_of(question).shape
    everyone = [(o.final_answer, short_reason(o)) for o in shown]
    rendered = max((prompt_tokens_estimate(*revise_prompts(question, p, everyone, shape), config) for p in shown),
                   default=0)
    return rendered + 2 * unwritten + len(shown) * (unwritten + (REASON_TOKENS if unwritten else 0))


@dataclass(frozen=True)
class PhaseCost:
    """One phase of one pass at its worst: every call at its token caps, no retry."""

    pass_label: str  # "1" or "rerun"
    phase: Phase
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None  # None when no price is set


def pass_worst_case(config: Config, question: str, workers: int, pass_label: str = "1",
                     later_rounds: bool = True, billing: Billing | None = None) -> list[PhaseCost]:
    """A whole debate before any answer exists, phase by phase; its later rounds only if ``later_rounds``."""
    costs = worst_case_costs(config, question, workers=workers, billing=billing)
    rebuttals = workers if config.enable_rebuttal else 0
    revisions, done = (config.rounds - 1) * workers if later_rounds else 0, costs.completion
    return phase_costs(config, pass_label, [  # a phase without calls is left out
        (Phase.GENERATE, workers, costs.solver, done), (Phase.CRITIQUE, workers, costs.critic, done),
        (Phase.REBUTTAL, rebuttals, costs.rebuttal, done), (Phase.REVISE, revisions, costs.revise, done),
        (Phase.JUDGE, config.num_judges, costs.judge(workers, rebuttals), costs.judge_completion)])


def phase_costs(config: Config, pass_label: str, per_call: list[tuple[Phase, int, int, int]]) -> list[PhaseCost]:
    """A row for each (phase, calls, prompt tokens a call, completion tokens a call) that makes calls."""
    return [PhaseCost(pass_label, phase, calls, calls * prompt, calls * completion, calls * (prompt + completion),
                      cost_usd(calls * prompt, calls * completion, config))
            for phase, calls, prompt, completion in per_call if calls]


def plan_phases(state: Debate, question: str, positions: list[Position], done: Phase,
                earlier: DebatePlan | None = None) -> DebatePlan:
    """What the budget pays for after ``done`` (plan_debate), unwritten texts at their worst. Planned again after the
    critiques, keeping ``earlier``'s judges: rebuttals get what critiques left before any later round (round_price)."""
    config = state.config
    # Without a budget everything fits: rendering every later prompt just to price it would be waste.
    costs = (worst_case_costs(config, question, positions, billing=state.budget.billing)
             if state.budget.limited else NO_COSTS)

    def judge_cost(c: int, r: int) -> int:  # a judge's, once c critiques (if still unwritten) and r rebuttals are
        return costs.judge(c if done == Phase.GENERATE else 0, r) + costs.judge_completion

    to_critique = done == Phase.GENERATE  # else the critiques are written, and paid for
    plan = plan_debate(state.budget, len(positions) if to_critique else sum(p.critique is not None for p in positions),
                       earlier.judges if earlier else config.num_judges,
                       config.enable_rebuttal and done != Phase.REBUTTAL,
                       costs.critic + costs.completion if to_critique else 0, costs.rebuttal + costs.completion,
                       judge_cost, critiques_paid=to_critique)
    # What it leaves out: critiques and judges when first planned, rebuttals once the critiques are in.
    wanted = sum(p.critique is not None for p in positions) + (len(positions) - earlier.critiques if earlier else 0)
    left_out = {Phase.CRITIQUE: len(positions) - plan.critiques if to_critique else 0,
                Phase.REBUTTAL: wanted - plan.rebuttals if done == Phase.CRITIQUE and config.enable_rebuttal else 0,
                Phase.JUDGE: config.num_judges - plan.judges if earlier is None else 0}
    cuts = [f"{count} {phase}(s)" for phase, count in left_out.items() if count > 0]
    for cut in cuts:
        state.skip(cut)
    return replace(plan, judges_tokens=plan.judges * judge_cost(plan.critiques, plan.rebuttals),
                   cut=bool(cuts) or (earlier is not None and earlier.cut))


def round_price(state: Debate, question: str, positions: list[Position],
                plan: DebatePlan) -> tuple[tuple[int, int], tuple[int, int]]:
    """(calls, tokens) of one more debate round, and of what it must leave untouched: the judges' share (each
    latest reason read at its cap: a revision replaces it) and a possible rerun's. Without a budget, (0, 0)s."""
    budget = state.budget
    if not budget.limited:
        return (0, 0), (0, 0)
    costs = worst_case_costs(state.config, question, positions, billing=budget.billing)
    calls, tokens = rerun_price(state, question)
    judges = plan.judges * (costs.judge(0, len(positions)) + costs.judge_completion)
    return (len(positions), len(positions) * (costs.revise + costs.completion)), (calls + plan.judges, tokens + judges)


def rerun_price(state: Debate, question: str) -> tuple[int, int]:
    """(calls, tokens) of a worst-case rerun without its later rounds while one may still come, else (0, 0).
    Later rounds leave it even when the budget could not pay for the rerun: else more budget buys fewer rounds."""
    config, budget = state.config, state.budget
    if not budget.limited or state.pass_number != 1 or state.replaying or config.min_judge_confidence == 0:
        return 0, 0
    phases = pass_worst_case(config, question, rerun_settings(config)[0], later_rounds=False, billing=budget.billing)
    return sum(p.calls for p in phases), sum(p.total_tokens for p in phases)


def synthesis_price(config: Config, question: str, shape: str, workers: int, billing: Billing | None = None) -> int:
    """The synthesis's worst case in tokens: the top candidates at MAX_TOKENS, each critique, reply and judge's
    analysis at SYNTHESIS_NOTE_CHARS (synthesis_prompts cuts them there) or, when shorter, at the cap its writer had
    (as worst_case_costs counts unwritten texts), and a response of MAX_TOKENS."""
    shown, note = min(SYNTHESIS_CANDIDATES, workers), -(-SYNTHESIS_NOTE_CHARS * 4 // 3)
    reply, analysis = min(note, config.max_tokens), min(note, config.judge_max_tokens)
    unseen = [tuple(f"unseen-{i}" for i in range(workers))] * config.num_judges  # each judge's labels line, longest
    blank = synthesis_prompts(question, [Position(0, "", "")] * shown, [], [""] * config.num_judges,
                              None if shape == "full" else "", unseen)
    prompt = (prompt_tokens_estimate(*blank, config) + shown * (config.max_tokens + 2 * reply)
              + config.num_judges * analysis + note)
    billing = billing or Billing()
    return billing.prompt_tokens(prompt) + billing.completion_tokens(config.max_tokens)


def rerun_settings(config: Config) -> tuple[int, float]:
    """(workers, temperature) of the rerun: RERUN_EXTRA_WORKERS more, RERUN_TEMPERATURE_STEP hotter."""
    return (min(config.num_workers + RERUN_EXTRA_WORKERS, MAX_WORKERS),
            min(config.temperature + RERUN_TEMPERATURE_STEP, MAX_TEMPERATURE))


# --- 8. the debate's state -----------------------------------------------------------------------

@dataclass
class Position:
    """One solver's line through the debate."""

    slot: int
    answer: str
    reasoning: str
    critique: str | None = None
    rebuttal: str | None = None
    final_answer: str = ""
    model: str = ""
    revision: str | None = None  # its reply in the latest revision round (ROUNDS > 1)
    by_round: list[str] = field(default_factory=list)  # its answer after each round, once round 1 is over

    @property
    def agent(self) -> str:
        return f"solver-{self.slot + 1}"

    @property
    def latest_reason(self) -> str:
        return self.revision or self.rebuttal or self.reasoning


@dataclass(frozen=True)
class Vote:
    answer: str  # a candidate's answer when the judge named its label
    confidence: int | None
    tier: str = "final-answer-line"  # which reading of parse_judgement found it (ParsedJudgement.tier)
    analysis: str = ""  # what the judge wrote to get there: a synthesis reads it
    judge: str = ""  # "judge-2": whose labels the analysis uses (labels_seen)


@dataclass(frozen=True)
class Ballot:
    """One judge's ranking of the candidates, best first, by candidate id (its labels already mapped back)."""

    judge: str  # "judge-2"
    order: tuple[str, ...]  # candidate ids (agents, "solver-3"), best first, as parse_ranking left them
    confidence: int | None
    analysis: str = ""
    read_by: str = "ranking-line"  # parse_ranking's tier; "winner-only" when a FINAL ANSWER line named its winner

    @property
    def tier(self) -> str:
        """What the transcript's judge header says it was read as: each judge saw the candidates rotated, so its
        "RANKING: A > B > C" is another order of solvers for each, and the Ranking section cannot be checked without."""
        return "RANKING, read as " + " > ".join(self.order)


@dataclass(frozen=True)
class Standing:
    """A candidate's place after the Borda count: its score in [0, 1], its bootstrap 95% interval, its first places."""

    agent: str
    label: str
    score: float
    low: float
    high: float
    first_places: int


@dataclass(frozen=True)
class Verdict:
    """The outcome of one pass (the first debate, or the rerun), or of a replay: the judges' or solvers' vote."""

    answer: str
    confidence: int
    agreeing: int
    valid: int
    source: str  # "judges", or "solvers" when no judge gave a FINAL ANSWER
    tally: dict[str, int]  # votes by normalised answer; for a ranking, first places by agent
    kind: str = "short"  # the answer type the question wants (parsing.ANSWER_TYPES)
    standings: tuple[Standing, ...] = ()  # full answers: the Borda count, best first (rank_candidates)
    analyses: tuple[str, ...] = ()  # each judge's analysis, for the synthesis
    # Per ranking analysis, the agents that judge saw as A, B, ... (rotated per judge): the synthesis shows the
    # candidates under labels of its own, so "C misses the empty case" must say which candidate C was.
    judge_labels: tuple[tuple[str, ...], ...] = ()
    confidence_stated: bool = True  # False: no judge on the winning side wrote a CONFIDENCE (tally_votes)


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
    pass_number: int = 1
    budget: Budget = field(default_factory=Budget)
    trace: TraceWriter | None = None
    skipped: list[str] = field(default_factory=list)  # what the budget cut, in order
    positions: dict[int, list[Position]] = field(default_factory=dict)  # valid answers by pass
    dropped_models: set[str] = field(default_factory=set)
    watches: dict[tuple[int, Phase, int], StragglerWatch] = field(default_factory=dict)
    replaying: bool = False  # a replay: no rerun follows, so the budget keeps nothing back for one
    verdicts: list[Verdict] = field(default_factory=list)  # pass 1's, and the rerun's
    reported: int | None = None  # which of them is reported (1: pass 1's)
    rerun: bool = False
    shape: str = "short"  # the answer shape (SHAPES), decided once as the run starts (Config.shape_of)
    synthesis: str | None = None  # the response the synthesis wrote (Phase.SYNTHESIS)
    gave_up: set[Phase] = field(default_factory=set)  # phases whose unreadable replies are not retried (issue 23)
    queue: QueueTime = field(init=False)

    def __post_init__(self) -> None:
        self.queue = QueueTime(self.runtime.clock)

    def skip(self, what: str) -> None:
        self.skipped.append(f"pass {self.pass_number}: {what}")
        self.note(f"budget: skipped {what}", problem=False)

    def note(self, text: str, *, problem: bool = True) -> None:
        """A transcript note, and a warning on stderr; only info (a batch hides it) when it is a feature
        doing its job (an early exit, a budget's cut): a warning a question buried the real ones."""
        self.notes.append(f"pass {self.pass_number}: {text}")
        log.log(logging.WARNING if problem else logging.INFO, text)

    def time_left(self) -> float:
        """Seconds until QUESTION_DEADLINE on the runtime's clock (inf without one), our own queue's not counted."""
        seconds = self.config.question_deadline
        return seconds - (self.runtime.clock() - self.started - self.queue.age()) if seconds else math.inf


class PhaseCounts(TypedDict):
    """RunRecord.phases: the calls of a phase that ended with a usable reply, and those that did not."""

    ok: int
    failed: int


class FormatCounts(TypedDict):
    """RunRecord.format (format_counts)."""

    replies: int
    last_tier: int
    failed: int


class SolverAnswers(TypedDict):
    """One solver in RunRecord.answers (answer_changes)."""

    agent: str
    model: str
    answer: str
    final_answer: str
    changed: bool
    by_round: list[str]


class Dissent(TypedDict):
    """One answer other than the verdict in RunRecord.dissent (minority_report), and how many held it."""

    answer: str
    judges: int
    solvers: int


class RankedCandidate(TypedDict):
    """A full answer's candidate in RunRecord.ranking: its Standing, and the model that wrote it."""

    agent: str
    label: str
    score: float
    low: float
    high: float
    first_places: int
    model: str


def format_counts(calls: Iterable[AgentCall]) -> dict[str, FormatCounts]:
    """RunRecord.format: per phase that had calls, the 2xx replies read, the accepted ones read only by the last
    tier, and the unusable ones (unusable_reply)."""
    counts: dict[str, FormatCounts] = {}
    for call in calls:
        entry = counts.setdefault(call.phase, {"replies": 0, "last_tier": 0, "failed": 0})
        for attempt in call.attempts:
            failed = unusable_reply(attempt)
            entry["replies"] += failed or attempt.outcome == "ok"
            entry["failed"] += failed
            entry["last_tier"] += attempt.outcome == "ok" and call.fallback
    return {str(phase): counts[phase] for phase in PHASES if phase in counts}


# A record field that no JSON output carries: the transcript, the trace, the summary and batch stops read it too.
NOT_IN_JSON = {"in_json": False}


@dataclass(frozen=True)
class RunRecord:
    """One run, finished or stopped, built once by run_record: --json is ``to_dict()``, a batch line
    and the trace's verdict line add to it, debate() returns it (as Result), human_summary reads it.
    A field added here is in all of them; docs/output.md lists them."""

    question: str
    answer_shape: str | None  # "short" or "full" (SHAPES); None when the run never started
    response: str | None  # what the user gets, whole: the full response, or the short answer itself
    final_answer: str | None  # the short answer (None for a full one)
    solution: str | None  # the worked solution behind final_answer (worked_solution, or the synthesis)
    ranking: list[RankedCandidate]  # full answers: each candidate's Borda standing, best first
    synthesized: bool  # the response (or the solution) was written by the synthesis
    confidence: int | None
    judges_agreeing: int  # 0 when the verdict did not come from the judges
    judges_valid: int
    verdict_source: str | None
    answer_type: str | None
    unanimous: bool
    rerun: bool
    rounds: int  # debate rounds run in the reported debate (0 when no solver answered)
    phases: dict[str, PhaseCounts]
    format: dict[str, FormatCounts]  # per phase that had calls: replies, last_tier, failed (format_counts)
    answers: list[SolverAnswers]
    dissent: list[Dissent]
    converged_after_critique: bool
    judges_split: bool
    doubts: list[str]  # why the verdict may not stand on its own (DOUBTS' codes); [] when nothing casts doubt
    llm_calls: int
    http_requests: int
    usage: Usage
    usage_by_phase: dict[str, Usage]
    cost_usd: float | None
    budget_limited: bool
    degraded: bool  # fewer calls than planned made the answer: one failed, was cut, or a budget skipped it
    skipped: list[str]
    elapsed_s: float
    transcript: str | None
    trace: str | None
    status: str
    error: str | None
    write_error: str | None = field(default=None, metadata=NOT_IN_JSON)  # a transcript or trace write failed
    verdicts: tuple[Verdict, ...] = field(default=(), repr=False, metadata=NOT_IN_JSON)  # pass 1's, the rerun's
    reported_pass: int | None = field(default=None, repr=False, metadata=NOT_IN_JSON)
    notes: tuple[str, ...] = field(default=(), repr=False, metadata=NOT_IN_JSON)
    calls: tuple[AgentCall, ...] = field(default=(), repr=False, compare=False, metadata=NOT_IN_JSON)  # finished calls
    exit_code: int = field(default=EXIT_OK, repr=False, metadata=NOT_IN_JSON)
    exception: MoAError | None = field(default=None, repr=False, compare=False, metadata=NOT_IN_JSON)

    @property
    def verdict(self) -> Verdict | None:
        return self.verdicts[self.reported_pass - 1] if self.reported_pass else None

    def json_fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("in_json", True)}

    def to_dict(self) -> dict[str, Any]:
        """The --json object, a fresh copy: schema_version, then every field meant for JSON."""
        return {"schema_version": SCHEMA_VERSION} | copy.deepcopy(self.json_fields())

    def ended(self, err: BaseException, error: str | None = None) -> RunRecord:
        """This record, stopped by ``err``: failed, with its exit code and ``error``; by default the message
        of an error of ours, "interrupted" for a cancel or Ctrl-C, and a bug's one line for anything else."""
        code = exit_code_for(err)
        error = error or (str(err) if isinstance(err, MoAError) else "interrupted" if code == EXIT_INTERRUPTED
                          else internal_error(err))
        return replace(self, status="failed", error=error, exit_code=code,
                       exception=err if isinstance(err, MoAError) else None)

    def masked(self, secrets: Sequence[str]) -> RunRecord:
        """The record debate() returns: secrets masked in every JSON field, write_error and the notes. The calls,
        the verdicts' tallies and the exception stay behind (the transcript and trace hold them): they quote the
        endpoint's every word, and a caller reads them as they are, through no exit of ours."""
        shown = masked_value(self.json_fields() | {"write_error": self.write_error, "notes": list(self.notes)}, secrets)
        return replace(self, **shown | {"notes": tuple(shown["notes"])}, verdicts=(), reported_pass=None, calls=(),
                       exception=None)

    def __hash__(self) -> int:  # frozen, but its JSON fields are dicts and lists: hash what --json shows
        return hash(json.dumps(self.json_fields(), sort_keys=True, default=str))


@dataclass
class Handover:
    """Where answer_question leaves the run's record, so a caller whose await is cancelled still has it."""

    record: RunRecord


# --- 9. phases -----------------------------------------------------------------------------------
#
# Each phase is one function; the prompt builders beside them are shared with
# the budget planner, which prices a phase before it runs.

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


def _valid_answer(text: str, shape: str = "short") -> ParsedAnswer | None:
    """A solver's answer in the shape's contract; a full response is taken whole (parse_full_answer)."""
    parsed = parse_full_answer(text) if shape == "full" else parse_answer(text)
    return parsed if parsed.answer.strip() else None


def _quoted(text: str | None) -> str:
    return prompts.quote_untrusted(text or prompts.NOT_AVAILABLE)


def for_shape(short: Template, full: Template, shape: str) -> str:
    """A system prompt in the answer shape's contract: a short verdict, or the whole response (SHAPES)."""
    return prompts.render(full if shape == "full" else short)


def solver_prompts(question: str, slot: int = 0, styles: bool = False, shape: str = "short") -> tuple[str, str]:
    """A solver's prompts; with SOLVER_STYLES each slot gets its own reasoning stance, after the rules (prompts.py)."""
    stances = prompts.SOLVER_STYLES_FULL if shape == "full" else prompts.SOLVER_STYLES
    stance = prompts.render(prompts.SOLVER_STYLE, style=stances[slot % len(stances)]) if styles else ""
    return (for_shape(prompts.SOLVER_SYSTEM, prompts.SOLVER_SYSTEM_FULL, shape) + stance,
            prompts.render(prompts.SOLVER_USER, question=prompts.quote_untrusted(question)))


def critic_prompts(question: str, position: Position, shape: str = "short") -> tuple[str, str]:
    return (for_shape(prompts.CRITIC_SYSTEM, prompts.CRITIC_SYSTEM_FULL, shape),
            prompts.render(prompts.CRITIC_USER, question=prompts.quote_untrusted(question),
                           reasoning=_quoted(position.reasoning), answer=prompts.quote_untrusted(position.answer)))


def rebuttal_prompts(question: str, position: Position, shape: str = "short") -> tuple[str, str]:
    return (for_shape(prompts.REBUTTAL_SYSTEM, prompts.REBUTTAL_SYSTEM_FULL, shape),
            prompts.render(prompts.REBUTTAL_USER, question=prompts.quote_untrusted(question),
                           reasoning=_quoted(position.reasoning), answer=prompts.quote_untrusted(position.answer),
                           critique=prompts.quote_untrusted(position.critique or "")))


def short_reason(position: Position) -> str:
    """Its latest reason on one line, at most REASON_CHARS characters: what the others read."""
    text = " ".join(position.latest_reason.split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"


def revise_prompts(question: str, position: Position, everyone: list[tuple[str, str]],
                   shape: str = "short") -> tuple[str, str]:
    """A later round: every solver's (answer, short reason), its own among them, then its own answer and critique."""
    blocks = [prompts.render(prompts.REVISE_OTHER, answer=prompts.quote_untrusted(answer),
                             reason=prompts.quote_untrusted(reason)) for answer, reason in everyone]
    return (for_shape(prompts.REVISE_SYSTEM, prompts.REVISE_SYSTEM_FULL, shape),
            prompts.render(prompts.REVISE_USER, question=prompts.quote_untrusted(question),
                           answer=prompts.quote_untrusted(position.final_answer), critique=_quoted(position.critique),
                           everyone="\n".join(blocks) or prompts.NOT_AVAILABLE))


# What a judge is asked for: the answer itself, a candidate's label (long free text), or a ranking (full answers).
JUDGE_SYSTEMS = {"answer": prompts.JUDGE_SYSTEM, "label": prompts.JUDGE_SYSTEM_BY_LABEL,
                 "ranking": prompts.JUDGE_SYSTEM_RANKING}


def judge_prompts(question: str, positions: list[Position], ballot: str = "answer") -> tuple[str, str]:
    blocks = [prompts.render(prompts.JUDGE_CANDIDATE, label=candidate_label(i),
                             answer=prompts.quote_untrusted(p.final_answer), reasoning=_quoted(p.reasoning),
                             critique=_quoted(p.critique), rebuttal=_quoted(p.revision or p.rebuttal))
              for i, p in enumerate(positions)]
    return prompts.render(JUDGE_SYSTEMS[ballot]), prompts.render(
        prompts.JUDGE_USER, question=prompts.quote_untrusted(question), candidates="\n\n".join(blocks))


@dataclass
class RunningCall:
    """One call a straggler watch is timing."""

    task: asyncio.Task[Any] | None
    timer: InFlight
    scale: float  # 1, or SHARED_STRAGGLER_SCALE when other questions shared the endpoint as it started
    cut: bool = False  # cancelled by the watch (not by Ctrl-C)


def median(values: list[float]) -> float:
    """The median of a non-empty list (the statistics module costs every start 4 ms to import)."""
    ordered, middle = sorted(values), len(values) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


class StragglerWatch:
    """Cuts the slow tail of one phase of one debate round of one pass.

    Once ``quorum`` calls have answered, a call at the endpoint (InFlight) longer than STRAGGLER_FACTOR times their
    median is cancelled and noted; its slot degrades like any failed call.

    A cut buys latency, which is what someone waits for when the question runs alone. A call that starts while
    other questions share the endpoint gets SHARED_STRAGGLER_SCALE times the bar: they keep it busy, so the
    batch gains little, and a call a gateway retried costs an answer for nothing."""

    def __init__(self, state: Debate, phase: Phase, quorum: int) -> None:
        self.debate, self.phase, self.quorum, self.factor = state, phase, quorum, state.config.straggler_factor
        self.running: dict[str, RunningCall] = {}  # by agent
        self.finished: list[float] = []  # each answered call's seconds at the endpoint
        self.changed = asyncio.Event()  # a call started, ended, or sent a request
        self.watchdog: asyncio.Task[None] | None = None

    async def guard(self, agent: str, work: Awaitable[T]) -> T | None:
        """Run one call of the phase; None if it was cut as a straggler."""
        task = asyncio.current_task()
        entry = RunningCall(task, InFlight(self.debate.runtime.clock, self.changed.set),
                            SHARED_STRAGGLER_SCALE if self.debate.endpoint.questions > 1 else 1.0)
        self.running[agent] = entry
        token = CALL_IN_FLIGHT.set(entry.timer)  # the endpoint marks this call's requests on it
        self.changed.set()
        if self.factor > 0 and (self.watchdog is None or self.watchdog.done()):
            self.watchdog = asyncio.create_task(self._watch())
        try:
            result = await work
        except asyncio.CancelledError:
            if entry.cut and task is not None and task.cancelling() <= 1:
                task.uncancel()  # our cut, not Ctrl-C: the call just failed
                self._mark_cut(agent, entry)
                return None
            raise
        finally:
            CALL_IN_FLIGHT.reset(token)
            self.running.pop(agent, None)
            self.changed.set()
        if result is not None and entry.timer.sent:  # no answer's latency: a failure's (quick 500s), a cache hit's 0 s
            self.finished.append(entry.timer.age())
        return result

    def _mark_cut(self, agent: str, entry: RunningCall) -> None:
        typical = median(self.finished)
        if call := next((c for c in reversed(self.debate.calls) if c.agent == agent and c.phase == self.phase
                         and c.pass_number == self.debate.pass_number), None):
            call.failure = STRAGGLER_CUT
        shared = f" x {entry.scale:g}, as other questions share the endpoint" if entry.scale != 1 else ""
        self.debate.note(f"{self.phase} {agent} cut as a straggler after {entry.timer.age():.2f}s at the endpoint "
                         f"(STRAGGLER_FACTOR={self.factor:g} x median {typical:.2f}s of {len(self.finished)} "
                         f"answered{shared})", problem=False)  # the tool's choice, counted in ``degraded``

    async def _watch(self) -> None:
        """Cut overdue calls, then wait for the next deadline (none while no call ages) or a change (``changed``)."""
        while self.running:
            self.changed.clear()
            seconds = self._cut_overdue() if len(self.finished) >= self.quorum else None
            waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self.changed.wait())}
            if seconds is not None:
                waits.add(asyncio.ensure_future(self.debate.runtime.sleep(max(seconds, 0.001))))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()

    def _cut_overdue(self) -> float | None:
        """Cut each call past the limit; seconds until the next one could be (None: none is aging)."""
        typical = median(self.finished)
        left: list[float] = []
        for entry in self.running.values():
            if entry.cut or entry.task is None:
                continue
            limit = max(entry.scale * self.factor * typical, STRAGGLER_MIN_SECONDS)
            if (remaining := limit - entry.timer.age()) <= 0:
                entry.cut = True
                entry.task.cancel()
            elif entry.timer.since is not None:
                left.append(remaining)
        return min(left, default=None)

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()


def watch_for(state: Debate, phase: Phase, calls: int, debate_round: int = 1) -> StragglerWatch:
    """The straggler watch of ``phase`` in the current pass (one per pass, phase and debate round)."""
    return state.watches.setdefault((state.pass_number, phase, debate_round),
                                    StragglerWatch(state, phase, min(state.config.min_valid_answers, calls)))


async def solve_one(state: Debate, question: str, slot: int, workers: int, temperature: float,
                    plain: bool = False) -> Position | None:
    """One solver's blind answer, or None. ``plain`` (--eval's "single"): the question alone, no system prompt and
    no contract, so the reply is read as prose (parse_answer's last tier)."""
    config = state.config
    system, user = ("", question) if plain else solver_prompts(question, slot, config.solver_styles, state.shape)
    agent, model = f"solver-{slot + 1}", config.slot_model(slot)
    parsed = await watch_for(state, Phase.GENERATE, workers).guard(agent, ask(
        state, Phase.GENERATE, agent, system, user, temperature=temperature,
        max_tokens=config.max_tokens, parse=functools.partial(_valid_answer, shape=state.shape), model=model))
    return None if parsed is None else Position(slot, parsed.answer, parsed.reasoning, final_answer=parsed.answer,
                                                model=model)


async def review_one(state: Debate, question: str, position: Position, workers: int, temperature: float) -> None:
    """One answer critiqued by the next slot round the ring; a failure leaves it uncritiqued."""
    critic_at = critic_slot(position.slot, workers, state.config.slot_model)
    agent = f"solver-{critic_at + 1}->{position.agent}"
    system, user = critic_prompts(question, position, state.shape)
    found = await watch_for(state, Phase.CRITIQUE, workers).guard(agent, ask(
        state, Phase.CRITIQUE, agent, system, user, temperature=temperature, max_tokens=state.config.max_tokens,
        parse=functools.partial(parse_block, tag=Phase.CRITIQUE), model=state.config.slot_model(critic_at)))
    if found is None:
        note_lost(state, f"critique of {position.agent}", Phase.CRITIQUE, agent, "its answer stays in play uncritiqued")
        return
    position.critique = found.text


async def reply_one(state: Debate, question: str, position: Position, workers: int, temperature: float,
                    everyone: list[tuple[str, str]] | None = None, debate_round: int = 1) -> None:
    """One solver defends or revises: to its critique (the rebuttal), or in a later ``debate_round`` after reading
    ``everyone``'s answers, its own among them. A failure keeps its answer."""
    phase, agent = Phase.REBUTTAL if everyone is None else Phase.REVISE, position.agent
    prompt = (rebuttal_prompts(question, position, state.shape) if everyone is None
              else revise_prompts(question, position, everyone, state.shape))
    found = await watch_for(state, phase, workers, debate_round).guard(agent, ask(
        state, phase, agent, *prompt, temperature=temperature, max_tokens=state.config.max_tokens,
        parse=parse_full_rebuttal if state.shape == "full" else parse_rebuttal, model=position.model or None,
        debate_round=debate_round))
    if found is None:
        what = f"rebuttal of {agent}" if everyone is None else f"round {debate_round} revision of {agent}"
        note_lost(state, what, phase, agent, "its first answer stands" if everyone is None else "its answer stands")
    elif everyone is None:
        position.rebuttal, position.final_answer = found.text, found.answer.answer
    else:
        position.revision, position.final_answer = found.text, found.answer.answer


async def revise(state: Debate, question: str, positions: list[Position], debate_round: int,
                 temperature: float) -> None:
    """Debate round ``debate_round``: every solver at once, each reading all answers as the round began (one block,
    the same for all: prompts.py's layout)."""
    shown = [(p.final_answer, short_reason(p)) for p in positions]
    await run_all(reply_one(state, question, p, len(positions), temperature, shown, debate_round) for p in positions)
    for position in positions:
        position.by_round.append(position.final_answer)


async def generate(state: Debate, question: str, workers: int, temperature: float,
                   plain: bool = False) -> list[Position]:
    """Phase 1: blind generation. The valid answers, in slot order (``plain``: see solve_one)."""
    results = await run_all(solve_one(state, question, slot, workers, temperature, plain) for slot in range(workers))
    return [p for p in results if p is not None]


def critic_slot(slot: int, workers: int, models: Callable[[int], str] = lambda _: "") -> int:
    """Who critiques solver ``slot``: the next slot round the ring with another model, or the next slot when all
    share one. A fixed ring: the pairing is known before any answer arrives, so a critique starts the moment its
    answer is in (see run_chains). With 5 slots over 2 models (a b a b a), slot 2 critiques slot 1's and slot 5's."""
    for offset in range(1, workers):
        other = (slot + offset) % workers
        if models(other) != models(slot):
            return other
    return (slot + 1) % workers


async def run_chains(state: Debate, question: str, workers: int, temperature: float) -> list[Position]:
    """Phases 1-3 without barriers: each solver's critique starts as soon as its answer is valid, and its rebuttal
    as soon as the critique lands. The round is as slow as its slowest chain, not each phase's slowest call summed."""
    solved, failed = list[Position](), 0

    async def chain(slot: int) -> Position | None:
        nonlocal failed
        position = await solve_one(state, question, slot, workers, temperature)
        if position is None:
            failed += 1
            if workers - failed < state.config.min_valid_answers:
                require_enough(state, solved, workers)  # the quorum is out of reach: stop every chain now
            return None
        solved.append(position)
        await review_one(state, question, position, workers, temperature)
        if state.config.enable_rebuttal and position.critique is not None:
            await reply_one(state, question, position, workers, temperature)
        return position

    results = await run_all(chain(slot) for slot in range(workers))
    return [p for p in results if p is not None]


def candidate_label(index: int) -> str:
    """Neutral labels A, B, … Z, AA, AB …"""
    label, index = "", index + 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(ord("A") + rest) + label
    return label


def judge_order(positions: list[Position], index: int, shuffle: bool) -> list[Position]:
    """The order judge ``index`` sees the candidates in: rotated by its index, so a judge's position bias does not
    favour the same answer for every judge. Labels are neutral letters (no slot numbers, no model names)."""
    shift = index % len(positions) if shuffle and positions else 0
    return positions[shift:] + positions[:shift]


async def judge(state: Debate, question: str, positions: list[Position], judges: int, ballot: str,
                read: Callable[[str, Mapping[str, Position], str], T | None]) -> list[T]:
    """Phase 4: ``judges`` judges, each reading the candidates under its own labels, give what ``ballot`` asks
    for (JUDGE_SYSTEMS), which ``read`` turns into a Vote or a Ballot; a reply it cannot read is retried."""
    config = state.config

    async def one(index: int) -> T | None:
        agent = f"judge-{index + 1}"
        order = judge_order(positions, index, config.shuffle_judges)
        labels = {candidate_label(i): p for i, p in enumerate(order)}  # this judge's labels
        system, user = judge_prompts(question, order, ballot)
        return await watch_for(state, Phase.JUDGE, judges).guard(agent, ask(
            state, Phase.JUDGE, agent, system, user, temperature=config.judge_temperature,
            max_tokens=config.judge_max_tokens, parse=lambda text: read(text, labels, agent),
            model=config.slot_model(index, judge=True)))

    votes = await run_all(one(i) for i in range(judges))
    return [v for v in votes if v is not None]


def vote_of(text: str, labels: Mapping[str, Position], judge: str, by_label: bool = False) -> Vote | None:
    """A judge's FINAL ANSWER and CONFIDENCE; naming a candidate's label votes for its answer. ``by_label``
    (free text, whose wording never matches): it must name a candidate."""
    found = parse_judgement(text)
    if not found.final_answer:
        return None
    answers = {label: p.final_answer for label, p in labels.items()}
    words = found.final_answer.strip().strip(".*_`()[]").split()  # "Candidate B", or "B" when judging by label
    named = (len(words) == 2 and words[0].lower() == "candidate") or (by_label and len(words) == 1)
    answer = answers.get(words[-1].upper().strip(".)"), found.final_answer) if named else found.final_answer
    if by_label and answer not in answers.values():
        return None
    return Vote(answer, found.confidence, found.tier, analysis=found.analysis, judge=judge)


def ballot_of(text: str, labels: Mapping[str, Position], judge: str) -> Ballot | None:
    """A judge's RANKING, its labels turned back into the agents behind them (parse_ranking's rules)."""
    found: ParsedRanking | None = parse_ranking(text, tuple(labels))
    if found is None:
        return None
    read_by = found.tier if found.tier == "ranking-line" else "winner-only"  # a FINAL ANSWER line: not the contract
    return Ballot(judge, tuple(labels[label].agent for label in found.order), found.confidence, found.analysis,
                  read_by)


def synthesis_prompts(question: str, ranked: Sequence[Position], standings: Sequence[Standing],
                      analyses: Sequence[str], verdict: str | None = None,
                      judge_labels: Sequence[Sequence[str]] = ()) -> tuple[str, str]:
    """The synthesis's prompts: the candidates best first (with their scores when ranked), each one's critique and
    latest reply and each judge's analysis cut to SYNTHESIS_NOTE_CHARS; ``verdict``: a short answer to explain."""
    def note(text: str | None) -> str:
        text = text or prompts.NOT_AVAILABLE
        return prompts.quote_untrusted(text if len(text) <= SYNTHESIS_NOTE_CHARS else text[:SYNTHESIS_NOTE_CHARS] + "…")

    blocks = [prompts.render(prompts.SYNTHESIS_CANDIDATE, label=candidate_label(i), rank=str(i + 1),
                             score=f"{standings[i].score:.2f}" if i < len(standings) else "-",
                             answer=prompts.quote_untrusted(p.final_answer), critique=note(p.critique),
                             rebuttal=note(p.revision or p.rebuttal)) for i, p in enumerate(ranked)]
    ours = {p.agent: candidate_label(i) for i, p in enumerate(ranked)}
    notes = [labels_line(i + 1, judge_labels[i] if i < len(judge_labels) else (), ours)
             + prompts.render(prompts.SYNTHESIS_ANALYSIS, judge=str(i + 1), analysis=note(a))
             for i, a in enumerate(analyses)]
    system = prompts.render(prompts.SYNTHESIS_SYSTEM if verdict is None else prompts.SYNTHESIS_SYSTEM_SHORT)
    return system, prompts.render(
        prompts.SYNTHESIS_USER, question=prompts.quote_untrusted(question), candidates="\n\n".join(blocks),
        verdict="" if verdict is None else f"The verdict, final: {prompts.quote_untrusted(verdict)}",
        analyses="\n\n".join(notes) or prompts.NOT_AVAILABLE)


def labels_line(judge: int, seen: Sequence[str], ours: Mapping[str, str]) -> str:
    """The line before a judge's analysis that maps its labels to the synthesis's, when they differ: each judge saw
    the candidates rotated (judge_order), the synthesis sees them best first."""
    theirs = [(candidate_label(i), ours.get(agent)) for i, agent in enumerate(seen)]
    if all(label == mine for label, mine in theirs):
        return ""
    said = ", ".join(f"its {label} is {'candidate ' + mine if mine else 'one not shown here'}"
                     for label, mine in theirs)
    return f"Judge {judge} saw other labels: {said}.\n"


async def synthesize(state: Debate, question: str, key: Callable[[str], str]) -> None:
    """Phase 5: one call writes the response from the reported pass's best candidates, their critiques and replies,
    and the judges' analyses. It fails soft: the top-ranked candidate (or the worked solution) stands, degraded."""
    config, verdict = state.config, state.verdicts[(state.reported or 1) - 1]
    positions = state.positions.get(state.reported or 1, [])
    short = verdict.answer if state.shape == "short" else None
    # What it reads: the top SYNTHESIS_CANDIDATES of the ranking (unranked: the first ones); for a short answer, the
    # solvers who ended on the verdict (their derivations), in slot order.
    standings, by_agent = list(verdict.standings[:SYNTHESIS_CANDIDATES]), {p.agent: p for p in positions}
    agreeing = [p for p in positions if state.shape == "full" or key(p.final_answer) == key(verdict.answer)]
    ranked = [by_agent[s.agent] for s in standings] if standings else (agreeing or positions)[:SYNTHESIS_CANDIDATES]
    system, user = synthesis_prompts(question, ranked, standings, verdict.analyses, short, verdict.judge_labels)
    system += prompts.SYNTHESIS_JSON if config.response_format else ""  # OpenAI's json_object needs "JSON" said
    state.budget.synthesis = (0, 0)  # what was kept for it is its own now
    if not ranked or not state.budget.fits(1, prompt_tokens_estimate(system, user, config) + config.max_tokens):
        state.skip(Phase.SYNTHESIS)
        return
    state.pass_number = state.reported or 1  # the last phase: it, and the notes after it, are the written-up pass's
    echo = ECHO.set(state.runtime.echo if short is None else None)  # a response, not a solution, is shown as written
    try:
        state.synthesis = await watch_for(state, Phase.SYNTHESIS, 1).guard(SYNTHESIS_AGENT, ask(
            state, Phase.SYNTHESIS, SYNTHESIS_AGENT, system, user, temperature=config.judge_temperature,
            max_tokens=config.max_tokens, parse=parse_synthesis,
            model=config.synthesis_model or config.judge_models[0]))
        if state.synthesis is None:
            note_lost(state, "the synthesis", Phase.SYNTHESIS, SYNTHESIS_AGENT, synthesis_fallback(state.shape))
    except DeadlinePassed:  # a retry found the deadline passed (see ask) before asyncio.timeout fired: as a rerun's
        state.note(f"the synthesis was stopped at QUESTION_DEADLINE={config.question_deadline:g}s; "
                   f"{synthesis_fallback(state.shape)}")
    except MoAError as err:  # a key rejected, the endpoint stalled: the verdict is in hand, as a failed rerun's is
        state.note(f"the synthesis failed ({err}); {synthesis_fallback(state.shape)}")
    finally:
        ECHO.reset(echo)


def synthesis_fallback(shape: str) -> str:
    """What stands, as a note says, when the synthesis writes nothing."""
    return "the top-ranked candidate stands" if shape == "full" else "the solvers' own derivation stands"


def require_enough(state: Debate, positions: list[Position], workers: int, quorum: int | None = None) -> None:
    """RunFailed (or EndpointUnreachable) when fewer than MIN_VALID_ANSWERS (or ``quorum``) solvers answered, with
    the last failed call's error as its cause (see same_error_everywhere)."""
    quorum = state.config.min_valid_answers if quorum is None else quorum
    if len(positions) >= quorum:
        return
    last = next((c for c in reversed(state.calls) if c.failure), None)
    reason = f"; last error: {last.failure}" if last else ""
    this_pass = [c for c in state.calls if c.pass_number == state.pass_number and c.phase == Phase.GENERATE]
    no_response = all(a.status is None for c in this_pass for a in c.attempts)
    error = EndpointUnreachable if no_response and not positions else RunFailed
    raise error(f"only {len(positions)}/{workers} solvers gave a valid answer "
                f"(MIN_VALID_ANSWERS={quorum}){reason}", cause=last.error if last else None)


# --- 10. voting ----------------------------------------------------------------------------------

def tally_votes(votes: list[Vote], source: str = "judges", key: Callable[[str], str] = normalize_answer,
                asked: int = 0) -> Verdict | None:
    """Majority of normalised answers; a tie goes to the side with the higher confidence. The verdict's
    confidence is the winning side's best, and its answer that voter's own wording.

    When no voter on the winning side wrote a CONFIDENCE, the confidence is their share of the ``asked`` voters (of
    those who answered, if more): a missing number is neither certainty (100) nor doubt (0, which fired the rerun on
    every question of a model that never writes one, issue 23): the votes themselves are the evidence, and a judge that
    failed counts against it."""
    groups: dict[str, list[Vote]] = {}
    for vote in votes:
        if name := key(vote.answer):
            groups.setdefault(name, []).append(vote)
    if not groups:
        return None
    winners = max(groups.values(), key=lambda g: (len(g), max((v.confidence or 0) for v in g)))  # the first of equals
    best = max(winners, key=lambda v: v.confidence or 0)
    tally = {name: len(group) for name, group in groups.items()}
    valid = sum(tally.values())
    stated = [v.confidence for v in winners if v.confidence is not None]
    confidence = max(stated) if stated else round(100 * len(winners) / max(asked, valid))
    return Verdict(best.answer.strip(), confidence, len(winners), valid, source, tally, confidence_stated=bool(stated))


def solver_verdict(positions: list[Position], key: Callable[[str], str] = normalize_answer) -> Verdict:
    """The fallback when no judge answered: the solvers' majority; its confidence, the share that agree (%), at most
    UNCHECKED_CONFIDENCE: five answers that key alike are no verdict when no judge could check them (issue 23)."""
    verdict = tally_votes([Vote(p.final_answer, None) for p in positions], source="solvers", key=key)
    if verdict is None:  # cannot happen: valid positions have non-empty answers
        raise RunFailed("no answer could be counted")
    return replace(verdict, confidence=min(round(100 * verdict.agreeing / verdict.valid), UNCHECKED_CONFIDENCE))


# Why a verdict may not stand on its own: RunRecord.doubts' codes, each with the plain words the human summary says
# (docs/output.md lists them; test_honesty holds the two to each other).
DOUBTS = {"no_judge_verdict": "no judge gave a verdict that could be read: the solvers' answer stands, unchecked",
          "judges_split": "the judges split: no answer has a majority of them",
          "judges_no_confidence": "no judge on the winning side gave a CONFIDENCE: the confidence is their agreement",
          "answers_disagree": "the solvers' final answers disagree: no answer has a majority of them",
          **{f"{phase}_format_failed": f"most replies of the {phase} phase did not follow its format"
             for phase in PHASES},
          **{f"{phase}_retries_stopped": f"the {phase} phase's replies could not be read, so they were not retried"
             for phase in FORMAT_FALLBACKS}}


# Per-phase doubts, grouped into one clause each in the human summary: (code suffix, the clause for the phases).
PHASE_DOUBTS = (("_format_failed", "most {} replies did not follow the format"),
                ("_retries_stopped", "unreadable {} replies were not retried"))


def plain_doubts(codes: Sequence[str]) -> str:
    """The doubts as one plain line: the vote's in DOUBTS' words, the phases' grouped ("most generate and judge
    replies did not follow the format")."""
    said = [DOUBTS[code] for code in codes if not code.endswith(tuple(suffix for suffix, _ in PHASE_DOUBTS))]
    for suffix, clause in PHASE_DOUBTS:
        if phases := [code.removesuffix(suffix) for code in codes if code.endswith(suffix)]:
            said.append(clause.format(" and ".join([", ".join(phases[:-1]), phases[-1]] if len(phases) > 1
                                                   else phases)))
    return "; ".join(said)


def verdict_doubts(verdict: Verdict, positions: list[Position], key: Callable[[str], str]) -> list[str]:
    """The doubts the vote itself shows: no judge's verdict, judges split or silent on confidence, solvers that
    disagree (short answers: full responses never key alike)."""
    held = collections.Counter(key(p.final_answer) for p in positions)
    found = {"no_judge_verdict": verdict.source == "solvers", "judges_split": judges_split(verdict),
             "judges_no_confidence": verdict.source == "judges" and not verdict.confidence_stated,
             "answers_disagree": verdict.kind != "long" and len(positions) > 1
             and 2 * max(held.values()) <= len(positions)}
    return [code for code, doubted in found.items() if doubted]


def format_failed(counts: FormatCounts) -> bool:
    """Most of a phase's replies were unusable or read only by its last tier (RunRecord.format's counts)."""
    return 2 * (counts["last_tier"] + counts["failed"]) > counts["replies"] > 0


def run_doubts(verdict: Verdict | None, positions: list[Position], key: Callable[[str], str],
               formats: Mapping[str, FormatCounts], gave_up: Collection[Phase]) -> list[str]:
    """RunRecord.doubts, in DOUBTS' order: the vote's, each phase whose format mostly failed, each given up on."""
    found = set(verdict_doubts(verdict, positions, key) if verdict else [])
    found |= {f"{phase}_format_failed" for phase, counts in formats.items() if format_failed(counts)}
    found |= {f"{phase}_retries_stopped" for phase in gave_up}
    return [code for code in DOUBTS if code in found]


def worked_solution(verdict: Verdict, positions: list[Position], key: Callable[[str], str]) -> str | None:
    """How the verdict was reached: the fullest derivation by a solver whose first answer was the verdict; else
    the latest reason of one that came round to it (its rebuttal or revision); None when no solver held it."""
    winner = key(verdict.answer)
    derived = [p.reasoning.strip() for p in positions if key(p.answer) == winner and p.reasoning.strip()]
    came_round = [p.latest_reason.strip() for p in positions if key(p.final_answer) == winner]
    return max(derived, key=len, default=None) or next((reason for reason in came_round if reason), None)


def minority_report(verdict: Verdict, positions: list[Position],
                    key: Callable[[str], str] = normalize_answer) -> list[Dissent]:
    """Every answer other than the verdict that judges or solvers held, with how many held it."""
    winner = key(verdict.answer)
    held: dict[str, Dissent] = {}
    if verdict.source == "judges":
        for name, count in verdict.tally.items():
            if name != winner:
                held.setdefault(name, {"answer": name, "judges": 0, "solvers": 0})["judges"] = count
    for position in positions:
        name = key(position.final_answer)
        if name and name != winner:
            held.setdefault(name, {"answer": position.final_answer.strip(), "judges": 0, "solvers": 0})["solvers"] += 1
    return sorted(held.values(), key=lambda e: (-(e["judges"] + e["solvers"]), e["answer"]))


def answer_changes(positions: list[Position], key: Callable[[str], str] = normalize_answer) -> list[SolverAnswers]:
    """For each solver: its first answer, its final one, and whether its rebuttal or a later round changed it."""
    return [{"agent": p.agent, "model": p.model, "answer": p.answer, "final_answer": p.final_answer,
             "changed": key(p.answer) != key(p.final_answer), "by_round": p.by_round or [p.final_answer]}
            for p in positions]


def converged_after_critique(positions: list[Position], key: Callable[[str], str] = normalize_answer) -> bool:
    """Most solvers switched, and to one answer: shared errors often look like consensus."""
    targets = [key(p.final_answer) for p in positions if key(p.answer) != key(p.final_answer)]
    return 2 * len(targets) > len(positions) and len(set(targets)) == 1


def answers_match(question: str, *answers: str) -> bool:
    """Whether the answers are all the same, compared as the question's answer type."""
    key = typed_key(detect_answer_type(question, list(answers)), question)
    return len({key(answer) for answer in answers}) <= 1


def judges_split(verdict: Verdict) -> bool:
    """No answer has a majority of the judges who answered."""
    return verdict.source == "judges" and 2 * verdict.agreeing <= verdict.valid


def typed_key(kind: str, question: str) -> Callable[[str], str]:
    """How answers to ``question`` are keyed for comparison: its choice letters, and a sentence read as its answer."""
    return functools.partial(answer_key, kind, letters=choice_letters(question), question=question)


def unanimous_verdict(positions: list[Position], workers: int, question: str = "",
                      shape: str = "short") -> Verdict | None:
    """Early exit: every valid answer normalises alike (for the question's answer type). Confidence is
    the share of all solver slots that agree, so 5/5 is 100 and 3/5 (two failed) is 60. Full responses are
    compared whole ("long"): three that share a number are not one response, and the one kept is not its number."""
    kind = "long" if shape == "full" else detect_answer_type(question, [p.answer for p in positions])
    letters = choice_letters(question)
    keys = {answer_key(kind, p.answer, letters, question) for p in positions}
    if len(keys) != 1:  # none, or some disagree
        return None
    return Verdict(present_answer(kind, positions[0].answer, letters), round(100 * len(positions) / workers),
                   len(positions), len(positions), "unanimous", {keys.pop(): len(positions)}, kind)


# Ranked judges (full answers): Borda count and its bootstrap interval.

def ballot_points(order: Sequence[str], candidates: Sequence[str]) -> dict[str, float]:
    """Borda points one ballot gives each of the n candidates: its i-th named candidate n-1-i; the candidates it
    leaves out share the points left equally (each their mean), so every ballot gives n(n-1)/2 in all and a judge
    that names only its favourite weighs as much as one that ranks them all. Entries that are not candidates are
    ignored, a repeated one counts at its first place; a ballot naming no candidate gives nothing ({})."""
    known = set(candidates)
    named = [agent for agent in dict.fromkeys(order) if agent in known]
    if not named:
        return {}
    left_out_share = (len(candidates) - len(named) - 1) / 2
    points = {agent: float(len(candidates) - 1 - place) for place, agent in enumerate(named)}
    return {agent: points.get(agent, left_out_share) for agent in candidates}


def _percentile_interval(values: list[float]) -> tuple[float, float]:
    """The percentile bootstrap's 95% interval: sorted[int(0.025 R)] and sorted[ceil(0.975 R) - 1] of R values
    (for R = 1000 the 26th and the 975th), as many values left out below as above."""
    ordered = sorted(values)
    return ordered[int(BOOTSTRAP_TAIL * len(ordered))], ordered[math.ceil((1 - BOOTSTRAP_TAIL) * len(ordered)) - 1]


def rank_candidates(ballots: Sequence[Ballot], candidates: Sequence[str], labels: Mapping[str, str],
                    rng: random.Random, resamples: int = BOOTSTRAP_RESAMPLES) -> list[Standing]:
    """Every candidate's Borda standing (its score, below), best first; [] when no ballot names a candidate (the caller
    falls back). Its interval is the percentile bootstrap over judges drawn with ``rng``: a seeded rng always reports
    the same one, and one ballot (or resamples 0) gives low == high == score. A tie goes to more first places, then
    to the higher mean CONFIDENCE (None as 0) of the ballots that put it first, then to the order of ``candidates``."""
    counted = [(ballot, points) for ballot in ballots if (points := ballot_points(ballot.order, candidates))]
    if not counted:
        return []
    rows = [list(points.values()) for _, points in counted]
    totals = [sum(column) for column in zip(*rows, strict=True)]  # exact: every point is a multiple of 1/2
    # Each candidate's total on each resample of the ballots (drawn with replacement, as many as there are): the
    # spread of the score over which judges happened to sit.
    draws = [[sum(column) for column in zip(*rng.choices(rows, k=len(rows)), strict=True)] for _ in range(resamples)]
    spreads = [list(draw) for draw in zip(*draws, strict=True)] if resamples > 0 else [[total] for total in totals]
    firsts: dict[str, list[int]] = {agent: [] for agent in candidates}  # the confidences (None as 0) of its firsts
    for ballot, _ in counted:  # each names a candidate (ballot_points), the first of which it ranked first
        firsts[next(agent for agent in ballot.order if agent in firsts)].append(ballot.confidence or 0)
    def score(points: float) -> float:  # mean points as a share of the most a ballot gives (n-1); 1.0 for a lone one
        return 1.0 if len(candidates) == 1 else round(points / (len(rows) * (len(candidates) - 1)), 3)
    ranked: list[tuple[tuple[float, int, float, int], Standing]] = []
    for slot, (agent, total, spread) in enumerate(zip(candidates, totals, spreads, strict=True)):
        low, high = _percentile_interval(spread)
        confidences = firsts[agent]
        place = (-total, -len(confidences), -sum(confidences) / max(1, len(confidences)), slot)
        ranked.append((place, Standing(agent, labels.get(agent, ""), score(total), score(low), score(high),
                                       len(confidences))))
    return [standing for _, standing in sorted(ranked)]


def ranking_agreement(ballots: Sequence[Ballot], winners: Collection[str]) -> int:
    """How many ballots put first the winner or a candidate that wrote the very same response (``winners``): the
    judges' agreement on it. Not its Borda score: A > B > C, B > A > C and C > A > B score A 0.67, yet no two judges
    agree on the best, which is what the rerun rule must see. Twins count as one: labels rotate per judge, so
    identical responses would split the first places of judges who agree."""
    return sum(bool(b.order) and b.order[0] in winners for b in ballots)


# --- 11. one question ----------------------------------------------------------------------------

async def deliberate(state: Debate, question: str, positions: list[Position], workers: int, temperature: float,
                     done: Phase = Phase.GENERATE, later_rounds: bool = True) -> Verdict:
    """Every phase after ``done`` (and the later debate rounds, unless told not to), cut to what the budget pays for
    (plan_phases, planned again once the critiques are written), then the tally."""
    plan = plan_phases(state, question, positions, done)
    # Retries of critiques and rebuttals may not eat into the judges' share.
    if done == Phase.GENERATE:
        with state.budget.kept_back(plan.judges, plan.judges_tokens):
            await run_all(review_one(state, question, p, workers, temperature) for p in positions[:plan.critiques])
        log_phase(state, Phase.CRITIQUE)
        plan = plan_phases(state, question, positions, Phase.CRITIQUE, plan)
    if done in (Phase.GENERATE, Phase.CRITIQUE) and state.config.enable_rebuttal:
        critiqued = [p for p in positions if p.critique is not None]
        with state.budget.kept_back(plan.judges, plan.judges_tokens):
            await run_all(reply_one(state, question, p, workers, temperature) for p in critiqued[:plan.rebuttals])
        log_phase(state, Phase.REBUTTAL)
    if later_rounds:
        await run_later_rounds(state, question, positions, temperature, plan)
    if state.shape == "full":
        return await rank(state, question, positions, plan.judges)
    kind, letters = detect_answer_type(question, [p.final_answer for p in positions]), choice_letters(question)
    read = functools.partial(vote_of, by_label=kind == "long")  # free text: votes on strings cannot agree, labels can
    votes = await judge(state, question, positions, plan.judges, "label" if kind == "long" else "answer", read)
    log_phase(state, Phase.JUDGE)
    key = typed_key(kind, question)  # the vote reads answers as the comparison does
    verdict = tally_votes(votes, key=key, asked=plan.judges)
    if verdict is None:
        state.note(f"no judge gave a FINAL ANSWER (nor an answer that could be read); the verdict is the solvers' "
                   f"majority, its confidence at most {UNCHECKED_CONFIDENCE}")
        verdict = solver_verdict(positions, key=key)
    return replace(verdict, answer=present_answer(kind, verdict.answer, letters), kind=kind,
                   analyses=tuple(v.analysis for v in votes), judge_labels=labels_seen(state, positions, votes))


async def rank(state: Debate, question: str, positions: list[Position], judges: int) -> Verdict:
    """Full answers: the judges rank the candidates, a Borda count orders them (rank_candidates), and the winner's
    confidence is the judges' agreement on it. With no usable ranking, the solvers' own order stands."""
    ballots = await judge(state, question, positions, judges, "ranking", ballot_of)
    log_phase(state, Phase.JUDGE)
    labels = {p.agent: candidate_label(i) for i, p in enumerate(positions)}
    standings = rank_candidates(ballots, list(labels), labels, random.Random(BOOTSTRAP_SEED))
    if not standings:
        why = "no judge gave a usable RANKING" if judges else "no judge was asked (the budget skipped them)"
        state.note(f"{why}; the response is {positions[0].agent}'s, unranked")
        return Verdict(positions[0].final_answer.strip(), 0, 0, 0, "solvers", {}, "long")
    winner = next(p for p in positions if p.agent == standings[0].agent)
    twins = {p.agent for p in positions if normalize_answer(p.final_answer) == normalize_answer(winner.final_answer)}
    agreeing = ranking_agreement(ballots, twins)
    return Verdict(winner.final_answer.strip(), round(100 * agreeing / len(ballots)), agreeing, len(ballots),
                   "ranking", {s.agent: s.first_places for s in standings}, "long", tuple(standings),
                   tuple(b.analysis for b in ballots), labels_seen(state, positions, ballots))


def labels_seen(state: Debate, positions: list[Position], said: Sequence[Vote | Ballot]) -> tuple[tuple[str, ...], ...]:
    """Per judge that said something, the agents it saw under A, B, ... (judge_order): its analysis's labels."""
    return tuple(tuple(p.agent for p in judge_order(positions, int(v.judge.rpartition("-")[2]) - 1,
                                                    state.config.shuffle_judges)) for v in said)


async def run_later_rounds(state: Debate, question: str, positions: list[Position], temperature: float,
                           plan: DebatePlan) -> None:
    """Debate rounds 2..ROUNDS after round 1's rebuttals, until every answer agrees (answers_match). The rounds are
    the first thing a budget drops: none runs once ``plan`` cut anything, and one runs only if all its calls fit
    beside what the judges and a possible rerun keep back (round_price)."""
    config = state.config
    for position in positions:
        if not position.by_round:  # a replay from a later round brings its earlier rounds
            position.by_round.append(position.final_answer)
    rounds_done = max((len(p.by_round) for p in positions), default=1)
    for debate_round in range(rounds_done + 1, config.rounds + 1):
        if answers_match(question, *(p.final_answer for p in positions)):
            return
        revisions, kept = round_price(state, question, positions, plan)
        with state.budget.kept_back(*kept):  # for every attempt of the round, retries included
            if plan.cut or not state.budget.fits(*revisions):
                state.skip(f"debate rounds {debate_round}-{config.rounds}" if debate_round < config.rounds
                           else f"debate round {debate_round}")
                return
            await revise(state, question, positions, debate_round, temperature)
        log_phase(state, Phase.REVISE, debate_round)


def log_phase(state: Debate, phase: Phase, debate_round: int = 1) -> None:
    """One stderr line when a phase of this pass and debate round is done: "critique 5/5 ok 3.2s"."""
    calls = [c for c in state.calls
             if c.phase == phase and c.pass_number == state.pass_number and c.debate_round == debate_round]
    attempts = [a for c in calls for a in c.attempts]
    if not calls:
        return
    span = (max(a.started_s + a.latency_s for a in attempts) - min(a.started_s for a in attempts)) if attempts else 0.0
    where = f" (round {debate_round})" * (debate_round > 1) + " (rerun)" * (state.pass_number > 1)
    log.info("%s %d/%d ok %.1fs%s", phase, sum(c.ok for c in calls), len(calls), span, where)


async def debate_once(state: Debate, question: str, workers: int, temperature: float) -> Verdict:
    """The four phases once. RunFailed when too few solvers answer. Phases wait for each other when
    asked to, and when a decision needs every answer first: the budget planner and early exit."""
    config = state.config
    barriers = config.phase_barriers or state.budget.limited or config.early_exit
    try:
        positions = await (generate if barriers else run_chains)(state, question, workers, temperature)
        for phase in (Phase.GENERATE,) if barriers else (Phase.GENERATE, Phase.CRITIQUE, Phase.REBUTTAL):
            log_phase(state, phase)
        require_enough(state, positions, workers)
        state.positions[state.pass_number] = positions
        verdict = unanimous_verdict(positions, workers, question, state.shape) if config.early_exit else None
        if verdict is not None:
            state.note(f"early exit: all {len(positions)} answers agree; critique, rebuttal and judges skipped",
                       problem=False)
            # At most UNCHECKED_CONFIDENCE when most solver replies of this pass were read only by the paragraph
            # guess: answers that key alike are then guesses that agree, and no judge checked them.
            solvers = format_counts(c for c in state.calls if c.pass_number == state.pass_number).get(Phase.GENERATE)
            if solvers is None or not format_failed(solvers) or verdict.confidence <= UNCHECKED_CONFIDENCE:
                return verdict
            state.note(f"most solver replies did not follow the format: the early exit's confidence is at most "
                       f"{UNCHECKED_CONFIDENCE}, not {verdict.confidence}")
            return replace(verdict, confidence=UNCHECKED_CONFIDENCE)
        return await deliberate(state, question, positions, workers, temperature,
                                done=Phase.GENERATE if barriers else Phase.REBUTTAL)
    finally:
        for watch in state.watches.values():
            watch.close()


async def rerun(state: Debate, question: str) -> None:
    """The one confidence-triggered rerun, if the budget pays and it can help: not when most of pass 1's judge replies
    were unreadable or read only by a fallback (no FINAL ANSWER line: format_failed), or so few were readable that their
    phase was given up on (format_given_up). Their low confidence says the judges cannot write the verdict's format, not
    that the question is hard; a rerun asks them the same way, and pays a whole debate for another such verdict."""
    config, first = state.config, state.verdicts[0]
    judges = format_counts(c for c in state.calls if c.pass_number == 1).get(Phase.JUDGE)
    if judges and (format_failed(judges) or Phase.JUDGE in state.gave_up):
        state.note(f"no rerun: of the judges' {judges['replies']} replies, {judges['failed']} could not be read and "
                   f"{judges['last_tier']} had no FINAL ANSWER line, and a rerun would ask them the same way; pass 1's "
                   "verdict stands")
        return
    workers, temperature = rerun_settings(config)
    if not state.budget.fits(*rerun_price(state, question)):
        state.skip("rerun")
        return
    log.info("confidence %d < MIN_JUDGE_CONFIDENCE=%d: rerunning once with %d workers at temperature %.1f",
             first.confidence, config.min_judge_confidence, workers, temperature)
    state.rerun, state.pass_number = True, 2  # its calls, notes and straggler watches are pass 2's
    try:
        second = await debate_once(state, question, workers, temperature)
    except MoAError as err:
        state.note(f"the rerun was stopped at QUESTION_DEADLINE={config.question_deadline:g}s; pass 1's verdict stands"
                   if isinstance(err, DeadlinePassed) else f"the rerun failed ({err}); keeping pass 1's verdict")
        return
    finally:
        state.pass_number = 1
    state.verdicts.append(second)
    # The more confident verdict; on a tie the rerun, which heard more solvers.
    state.reported = 2 if second.confidence >= first.confidence else 1


@dataclass(frozen=True)
class Strategy:
    """A way to answer that --eval compares (STRATEGIES): the debate, or a baseline of ``samples`` solver calls
    and their majority. ``contract``: our solver prompt, else the plain question alone; ``greedy``: temperature 0,
    one call's best (a 135M model scored 12/15 greedy against 8/15 for five hot samples, issue 23)."""

    name: str
    samples: int = 0  # 0: the debate
    contract: bool = True
    greedy: bool = False

    @classmethod
    def parse(cls, text: str) -> Strategy:
        name = text.strip().lower()
        if name in ("single", "single-contract", "debate"):
            return cls(name, int(name != "debate"), contract=name != "single", greedy=name != "debate")
        if (k := re.fullmatch(r"vote@(\d{1,2})", name)) and 1 <= int(k[1]) <= MAX_WORKERS:
            return cls(f"vote@{int(k[1])}", int(k[1]))
        raise ConfigError(f"--strategies: {text!r} is not a strategy: expected single, single-contract, vote@K "
                          f"(K from 1 to {MAX_WORKERS}) or debate")


async def sample(state: Debate, question: str, strategy: Strategy) -> Verdict:
    """A baseline: ``strategy.samples`` solver calls (or the plain question, once), their majority as the verdict and
    its share as the confidence. No critique, no judges, no rerun: what one or k calls give on their own."""
    temperature = 0.0 if strategy.greedy else state.config.temperature
    positions = await generate(state, question, strategy.samples, temperature, plain=not strategy.contract)
    require_enough(state, positions, strategy.samples, quorum=1)
    state.positions[1] = positions
    kind, letters = detect_answer_type(question, [p.final_answer for p in positions]), choice_letters(question)
    verdict = solver_verdict(positions, typed_key(kind, question))
    # "vote": no judge was asked, by design, so the doubt "no_judge_verdict" (a debate's judges failing) is not its
    return replace(verdict, answer=present_answer(kind, verdict.answer, letters), kind=kind, source="vote")


def check_question(config: Config, question: str) -> None:
    """ConfigError for a question the run must not send: too long, or dearer than MAX_TOTAL_TOKENS pays for."""
    if len(question) > config.max_question_chars:
        raise ConfigError(f"the question is {len(question)} characters, more than MAX_QUESTION_CHARS="
                          f"{config.max_question_chars}: shorten it or raise the limit")
    need = config.min_valid_answers * (worst_case_costs(config, question).solver + config.max_tokens)
    if not Budget(max_tokens=config.max_total_tokens).fits(0, need):
        raise ConfigError(f"MAX_TOTAL_TOKENS={config.max_total_tokens} cannot pay for MIN_VALID_ANSWERS="
                          f"{config.min_valid_answers} solver calls (about {need} tokens with MAX_TOKENS="
                          f"{config.max_tokens}): raise it, lower MAX_TOKENS, or 0 for no limit")


def hold_synthesis(state: Debate, question: str, quorum: int) -> bool:
    """Keep the synthesis's worst case back from the start (Budget.synthesis), so every other phase is cut before
    it is; False (skipped) when not even ``quorum`` solvers (MIN_VALID_ANSWERS; 0 in a replay) would fit beside it."""
    budget, config = state.budget, state.config
    if not budget.limited:
        return True
    held = synthesis_price(config, question, state.shape, config.num_workers, budget.billing)
    solvers = quorum * (worst_case_costs(config, question, billing=budget.billing).solver + config.max_tokens)
    if not budget.fits(quorum + 1, solvers + held):
        state.skip(Phase.SYNTHESIS)
        return False
    budget.synthesis = (1, held)
    return True


async def run_question(state: Debate, question: str, replay: Replay | None, strategy: Strategy | None = None) -> None:
    """The debate, or the replay, stopped at QUESTION_DEADLINE two ways: asyncio.timeout cancels it wherever it
    waits, on the loop's clock; and each attempt and retry wait checks the runtime's clock (see ask), which tests
    move. In the rerun, it leaves pass 1's verdict standing, as a failed rerun does."""
    config = state.config
    baseline = strategy if strategy is not None and strategy.samples > 0 else None
    synthesis = not baseline and config.synthesizes(state.shape) and hold_synthesis(
        state, question, 0 if replay else config.min_valid_answers)
    deadline = state.queue.deadline = asyncio.timeout(config.question_deadline or None)
    try:
        async with deadline:
            first = await (run_replay(state, replay) if replay else sample(state, question, baseline) if baseline
                           else debate_once(state, question, config.num_workers, config.temperature))
            state.verdicts.append(first)
            state.reported = 1
            if replay is None and not baseline and first.confidence < config.min_judge_confidence:
                await rerun(state, question)
            if synthesis:
                await synthesize(state, question, typed_key(state.verdicts[(state.reported or 1) - 1].kind, question))
                log_phase(state, Phase.SYNTHESIS)
    except TimeoutError:
        if not deadline.expired():
            raise
        if state.reported is None:
            raise deadline_passed(state.config) from None
        fallback = synthesis_fallback(state.shape)
        late = ("the synthesis", fallback) if any(c.phase == Phase.SYNTHESIS for c in state.calls) \
            else ("the rerun", "pass 1's verdict stands" + (f", and no synthesis ran: {fallback}" if synthesis else ""))
        state.note(f"{late[0]} was stopped at QUESTION_DEADLINE={config.question_deadline:g}s; {late[1]}")


async def answer_question(config: Config, question: str, endpoint: Endpoint, runtime: Runtime,
                          handover: Handover | None = None, replay: Replay | None = None,
                          place: LogPlace | None = None, strategy: Strategy | None = None) -> RunRecord:
    """Run the debate on one question, write its transcript and trace, and return its record; never raises MoAError
    (a failure is in the record). Cancelled, it still writes the files, and ``handover`` (if given) has the record."""
    shape = replay.shape if replay else config.shape_of(question)
    state = Debate(config, endpoint, runtime, os.urandom(6).hex(), runtime.clock(), shape=shape.shape,
                   budget=Budget(config.max_calls, config.max_total_tokens, endpoint.billing, endpoint.shared_budget))
    log.info("answer shape: %s (%s)", shape.shape, shape.reason)
    transcript_path, state.trace, file_error = open_run_files(config, runtime, place)
    if state.trace:
        state.trace.start(state, question, replay)
    endpoint.questions += 1
    stopped: BaseException | None = None
    try:
        check_question(config, question)
        await run_question(state, question, replay, strategy)
    except (MoAError, asyncio.CancelledError) as err:
        stopped = err
        if isinstance(err, asyncio.CancelledError):
            raise
    finally:
        endpoint.questions -= 1
        record = run_record(config, question, state, runtime.clock() - state.started)
        if stopped is not None:
            record = record.ended(stopped)
        record = save_run_files(state, record, replay, transcript_path, place, file_error)
        if handover is not None:
            handover.record = record
    return record


def run_record(config: Config, question: str, state: Debate | None = None, elapsed_s: float = 0.0) -> RunRecord:
    """The record of ``debate`` (None: a run that never started); the one place its fields are worked out.
    It copies what it takes: the debate's lists stay the debate's."""
    verdicts, reported = (tuple(state.verdicts), state.reported) if state else ((), None)
    verdict = verdicts[reported - 1] if reported else None
    positions = state.positions.get(reported or 1, []) if state else []
    calls, skipped = (tuple(state.calls), list(state.skipped)) if state else ((), [])
    key = typed_key(verdict.kind, question) if verdict else normalize_answer  # as the vote compared
    judged = verdict if verdict and verdict.source in ("judges", "ranking") else None
    usage, formats = usage_totals(calls, config), format_counts(calls)
    shape, synthesis = (state.shape, state.synthesis) if state else ("short", None)
    models = {p.agent: p.model for p in positions}
    return RunRecord(
        question=question, answer_shape=shape if state else None,
        response=(synthesis if shape == "full" and synthesis else verdict.answer) if verdict else None,
        final_answer=verdict.answer if verdict and shape == "short" else None,
        solution=(synthesis or worked_solution(verdict, positions, key)) if verdict and shape == "short" else None,
        ranking=[cast(RankedCandidate, asdict(s) | {"model": models.get(s.agent, "")}) for s in verdict.standings]
        if verdict else [],
        synthesized=bool(verdict and synthesis),
        confidence=verdict.confidence if verdict else None, judges_agreeing=judged.agreeing if judged else 0,
        judges_valid=judged.valid if judged else 0, verdict_source=verdict.source if verdict else None,
        answer_type=verdict.kind if verdict else None, unanimous=verdict is not None and verdict.source == "unanimous",
        rerun=bool(state and state.rerun), rounds=max((len(p.by_round) or 1 for p in positions), default=0),
        phases={phase: {"ok": sum(c.ok for c in calls if c.phase == phase),
                        "failed": sum(not c.ok for c in calls if c.phase == phase)} for phase in PHASES},
        format=formats, doubts=run_doubts(verdict, positions, key, formats, state.gave_up if state else ()),
        answers=copy.deepcopy(answer_changes(positions, key)),  # by_round: its own lists
        dissent=minority_report(verdict, positions, key) if verdict and shape == "short" else [],
        converged_after_critique=converged_after_critique(positions, key),
        judges_split=judges_split(verdict) if verdict else False, llm_calls=len(calls),
        http_requests=sum(not a.cache_hit for c in calls for a in c.attempts), usage=usage,
        usage_by_phase={phase: usage_totals((c for c in calls if c.phase == phase), config) for phase in PHASES},
        cost_usd=usage.get("cost_usd"), budget_limited=bool(skipped),
        degraded=bool(skipped) or any(not call.ok for call in calls), skipped=skipped, elapsed_s=round(elapsed_s, 3),
        transcript=None, trace=str(state.trace.path) if state and state.trace else None,
        status="ok" if verdict else "failed", error=None, verdicts=verdicts, reported_pass=reported,
        notes=tuple(state.notes) if state else (), calls=calls)


# The library's name for a run's record (see debate()).
Result = RunRecord


class Settings(TypedDict, total=False):
    """The keywords of debate(), debate_sync() and Debater: each setting's lower-case name (None: as set elsewhere).
    A type checker reads this, so a misspelt name or a wrong type fails before the run (docs/library.md)."""

    proxy_url: str | None  # the chat-completions URL, or a base URL (…/v1)
    api_key: str | None  # sent as a Bearer token
    model_name: str | None  # one model, or a comma-separated list for the solver slots
    judge_model: str | None  # default: the first of model_name
    solver_styles: bool | None  # a reasoning stance per solver slot
    shuffle_judges: bool | None  # each judge sees the candidates in a rotated order
    num_workers: int | None  # solvers per round, 1-64
    min_valid_answers: int | None  # phase-1 answers needed to go on
    max_retries: int | None  # retries per call after the first attempt
    retry_base_delay: float | None  # backoff base, seconds
    retry_max_delay: float | None  # cap on any wait, Retry-After included
    request_timeout: float | None  # seconds per request
    temperature: float | None  # solvers, critics, rebuttals
    max_tokens: int | None  # per solver, critic and rebuttal reply
    judge_temperature: float | None
    judge_max_tokens: int | None
    num_judges: int | None  # 1-25
    rounds: int | None  # debate rounds while the solvers disagree, 1-10
    min_judge_confidence: int | None  # below it, one rerun
    enable_rebuttal: bool | None
    enable_file_logging: bool | None  # a transcript per run
    log_dir: str | os.PathLike[str] | None
    log_filename_prefix: str | None
    max_concurrent_requests: int | None  # requests in flight (a Debater's: for all its debates)
    max_calls: int | None  # HTTP requests per question, 0 = no limit
    max_total_tokens: int | None  # tokens per question, 0 = no limit
    price_input_per_mtok: float | None  # USD per million prompt tokens
    price_output_per_mtok: float | None  # USD per million completion tokens
    price_cached_input_per_mtok: float | None  # USD per million prompt tokens served from a prefix cache
    enable_jsonl_trace: bool | None  # None: as enable_file_logging
    gateway_token: str | None  # Cloudflare AI Gateway's cf-aig-authorization
    max_question_chars: int | None
    max_response_bytes: int | None
    stream: bool | None
    straggler_factor: float | None  # cut a call this many times slower than its phase's median, 0 = never
    early_exit: bool | None  # skip the debate when every phase-1 answer agrees
    phase_barriers: bool | None
    question_deadline: float | None  # seconds a question may take, 0 = no limit
    stall_timeout: float | None  # seconds with no request accepted: stop, 0 = never
    answer_shape: Literal["auto", "short", "full"] | None
    synthesize: Literal["auto", "on", "off"] | None
    synthesis_model: str | None  # default: the first judge model
    system_prompt: str | None  # the user's own, before our rules in every phase
    seed: int | None
    top_p: float | None
    stop: str | list[str] | None  # one stop sequence, or up to 4
    response_format: str | dict[str, Any] | None  # the synthesis's reply only (README, Settings)
    reasoning_effort: str | None
    extra_body: str | dict[str, Any] | None  # merged into every request body; a None value there removes our field
    cache: str | None  # the response cache: off, on, read or refresh (docs/cache.md)
    cache_path: str | os.PathLike[str] | None  # its SQLite file
    cache_ttl: str | float | None  # how long an entry is served: seconds, or "30d", "12h"


# What a keyword takes, by the type of its Config field: the Python types, and their name.
KEYWORD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "True or False"), "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"), "str": ((str, os.PathLike), "a string")}
# Settings a Debater's connection is made of: each of its debates shares them, so a call cannot change them. The
# response cache is the client's too: one file, opened once in one mode (a call's own mode would need a second one).
CLIENT_SETTINGS = ("proxy_url", "api_key", "gateway_token", "max_concurrent_requests", "request_timeout",
                   "max_response_bytes", "stream", "stall_timeout", "cache", "cache_path", "cache_ttl")


def library_config(config: Config | None, overrides: Mapping[str, Any]) -> Config:
    """The Config of a library call: ``config`` (else the environment and settings files), keyword settings on top
    (None: leave it), each checked by library_value: a Config built by hand gets the CLI's limits too."""
    if not log.handlers:  # a library logs nowhere until its caller sets logging up
        log.addHandler(logging.NullHandler())
    if config is not None and not isinstance(config, Config):
        raise TypeError(f"config: expected a moa_pipeline.Config or None, got {type(config).__name__}")
    by_field = {s.field: s for s in SETTINGS}
    for name in overrides.keys() - by_field.keys():
        close = difflib.get_close_matches(name, list(by_field), n=1)
        raise ConfigError(f"unknown setting {name!r}: " + (f"did you mean {close[0]!r}? " if close else "")
                          + "settings are their lower-case names, such as num_workers or max_tokens (README, Settings)")
    flags = {by_field[name].env: library_value(name, value, by_field[name])
             for name, value in overrides.items() if value is not None}
    if config is None:
        return load_config(flags, os.environ, read_env_file(None, os.environ))
    given = {s.env: library_value(f"config.{s.field}", getattr(config, s.field), s) for s in SETTINGS}
    return load_config(given | flags, {}, {}, warn=False)


def setting_text(value: Any) -> str:
    """A Python value as the settings parsers read it (None: unset)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(os.fspath(value) if isinstance(value, os.PathLike) else value)


def library_value(label: str, value: Any, setting: Setting) -> str:
    """A keyword's value (or a Config field's) as its setting's text: TypeError for a wrong type (text is read as in
    .env), ConfigError for a value its parser refuses; each names ``label``, shown as Setting.shown does."""
    kind = str(Config.__dataclass_fields__[setting.field].type).split(" | ")[0]  # "int", "float | None"
    types, expected, shown = *KEYWORD_TYPES[kind], setting.shown(value)
    if setting.env in JSON_SETTINGS and isinstance(value, (list, dict)):  # read as the JSON text it would be in .env
        value = json.dumps(value)
    if value is not None and not isinstance(value, str) and (
            not isinstance(value, types) or isinstance(value, bool) != (kind == "bool")):
        raise TypeError(f"{label}={shown}: expected {expected}, got {type(value).__name__}")
    try:
        setting.parse(setting_text(value))
    except ValueError as err:
        raise ConfigError(f"{label}={shown} is not valid for {setting.env}: {err}") from None
    return setting_text(value)


def whole_number(label: str, value: Any, least: int) -> int:
    """A count a library caller gave (not a setting): TypeError unless an int, ConfigError below ``least``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{label}={value!r}: expected a whole number, got {type(value).__name__}")
    if value < least:
        raise ConfigError(f"{label}={value}: expected a whole number, {least} or more" + " (0: no limit)" * (not least))
    return value


def library_question(config: Config, question: Any) -> str:
    """A library caller's question as the run takes it; TypeError or ConfigError (nothing sent) for one it cannot."""
    if not isinstance(question, str):
        raise TypeError(f"question: expected a str, got {type(question).__name__}"
                        + (" (decode it first)" if isinstance(question, (bytes, bytearray)) else ""))
    if not question.strip():
        raise ConfigError("the question is empty")
    text = valid_text(question)
    check_question(config, text)  # before any file is made: ConfigError means nothing happened
    return text


def client_endpoint(config: Config, runtime: Runtime) -> Endpoint:
    """The Endpoint debates share; ConfigError for an HTTP client the environment breaks. The caller closes it."""
    check_proxy_environment()
    try:
        return Endpoint(config, open_client(config), runtime)
    except (httpx.InvalidURL, OSError, ValueError) as err:  # no text: a proxy URL may hold a password
        raise ConfigError(f"cannot set up the HTTP client ({err.__class__.__name__}): check HTTP_PROXY, "
                          "HTTPS_PROXY, ALL_PROXY and SSL_CERT_FILE") from None


async def debated(config: Config, question: str, endpoint: Endpoint, runtime: Runtime,
                  record: Handover | None = None, replay: Replay | None = None) -> Result:
    """One question's record, secrets masked; ConfigError, or RunFailed (or its kind) when there is no verdict."""
    run = await answer_question(config, question, endpoint, runtime, record, replay)
    result = run.masked(config.secrets)
    if isinstance(run.exception, ConfigError):
        raise run.exception
    if run.status != "ok":  # the run's own kind, message masked
        kind = type(run.exception) if isinstance(run.exception, RunFailed) else RunFailed
        cause = run.exception if isinstance(run.exception, APIError) else getattr(run.exception, "cause", None)
        raise kind(result.error or "the run produced no verdict", result, cause) from run.exception
    return result


async def debate(question: str, *, config: Config | None = None, **settings: Unpack[Settings]) -> Result:
    """Answer one question by a debate (many questions: a Debater). Settings come from the environment and the
    settings files, as for the CLI, unless ``config`` is given; keywords set them by their lower-case names
    (``num_workers=3``; see Settings). Writes the transcript and trace as the settings say; never prints, exits or
    installs signal handlers. Raises TypeError (an argument of the wrong type), ConfigError (a bad setting or
    question: nothing was sent) or RunFailed (no verdict; its ``result`` says why)."""
    async with Debater(config=config, **settings) as client:  # one of its own: the limit is this question's alone
        return await client.debate(question)


def debate_sync(question: str, *, config: Config | None = None, **settings: Unpack[Settings]) -> Result:
    """debate() for a script or a REPL that runs no event loop; RuntimeError inside one (a notebook, a coroutine),
    where ``await debate(...)`` is the way: a second loop cannot run in the thread of the first."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(debate(question, config=config, **settings))
    raise RuntimeError("debate_sync() cannot run inside a running event loop (a notebook, an async function): "
                       "use `await moa_pipeline.debate(...)` there")


class Debater:
    """One client for many debates, as one AsyncOpenAI client is for many requests, opened with ``async with``: its
    debates share one connection pool, one adaptive request limit (MAX_CONCURRENT_REQUESTS in flight across all of
    them), one cool-down, one circuit breaker and, with ``total_max_calls`` or ``total_max_tokens``, one budget
    (each question's MAX_CALLS and MAX_TOTAL_TOKENS still hold). Settings as for debate(); a call's keywords apply
    to that call, except CLIENT_SETTINGS (the connection's). docs/library.md shows it in use."""

    def __init__(self, *, config: Config | None = None, total_max_calls: int = 0, total_max_tokens: int = 0,
                 **settings: Unpack[Settings]) -> None:
        self.config = library_config(config, settings)
        self.budget = Budget(whole_number("total_max_calls", total_max_calls, 0),  # the shared one: what every
                             whole_number("total_max_tokens", total_max_tokens, 0))  # debate spent (Budget.shared)
        self.runtime = Runtime(secrets=self.config.secrets)
        self.endpoint: Endpoint | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where it was opened: its connections belong to that loop

    async def __aenter__(self) -> Debater:
        if self.endpoint is not None:
            raise RuntimeError("this Debater is already open: use one `async with` per client")
        self.endpoint = client_endpoint(self.config, self.runtime)
        self.endpoint.shared_budget, self.loop = self.budget, asyncio.get_running_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.endpoint is not None:
            await self.endpoint.aclose()
            self.endpoint = None

    def _config_for(self, settings: Mapping[str, Any]) -> Config:
        """The config of one call: the client's, with the call's keyword settings on top."""
        if fixed := [name for name in CLIENT_SETTINGS if settings.get(name) is not None]:
            raise ConfigError(f"{fixed[0]}: the client's connection setting, shared by all its debates: set it "
                              "when making the Debater")
        return library_config(self.config, settings)

    async def debate(self, question: str, **settings: Unpack[Settings]) -> Result:
        """One question through the shared client; raises as debate() does."""
        config = self._config_for(settings)
        return await self._run(config, library_question(config, question))

    async def debate_many(self, questions: Iterable[str], *, concurrency: int = DEFAULT_CONCURRENCY,
                          **settings: Unpack[Settings]) -> list[Result]:
        """Every question, ``concurrency`` at once, results in order; one without a verdict is its failed Result, a
        bad setting or question raises before anything is sent. As in a batch, no more start once the breaker trips or
        a refusal every question would meet came (a wrong key, URL or model, a spent quota)."""
        if isinstance(questions, str):
            raise TypeError("debate_many() takes a list of questions, not one str: for one question, use debate()")
        config, room = self._config_for(settings), asyncio.Semaphore(whole_number("concurrency", concurrency, 1))
        texts, endpoint = [library_question(config, question) for question in questions], self.endpoint
        stop: list[str] = []  # why no more questions start (a batch's rule: BatchRun.stop_if_hopeless)
        if endpoint is not None:
            endpoint.recent_calls.clear()  # else a breaker tripped by an earlier call refuses every question

        async def one(text: str) -> Result:
            async with room:
                if endpoint is not None and endpoint.failing():
                    stop.append(f"the endpoint is failing ({sum(endpoint.recent_calls)} of the last {BREAKER_WINDOW} "
                                "calls failed after every retry)")
                if stop:
                    return run_record(config, text).ended(RunFailed(f"not started: {stop[0]}")).masked(config.secrets)
                try:
                    return await self._run(config, text)
                except RunFailed as failed:
                    if failed.result is None:  # debated always gives one
                        raise
                    if isinstance(failed.__cause__, APIError) and failed.__cause__.stops_run:  # key, URL, model, quota
                        stop.append(str(failed.__cause__))
                    return failed.result
        tasks = [asyncio.ensure_future(one(text)) for text in texts]
        try:
            return list(await asyncio.gather(*tasks))
        finally:  # one raised (a bug): the rest stop too, before the client closes under them
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, config: Config, question: str) -> Result:
        if self.endpoint is None:
            raise RuntimeError("open the Debater first: `async with moa_pipeline.Debater(...) as client:`")
        if asyncio.get_running_loop() is not self.loop:
            raise RuntimeError("this Debater was opened in another event loop: open one in the loop that uses it")
        return await debated(config, question, self.endpoint, replace(self.runtime, secrets=config.secrets))


def settings_signature(function: Callable[..., Any]) -> None:
    """help() and inspect show each of Settings as a keyword-only parameter, where Python would show **settings."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    named = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=getattr(kind, "__forward_arg__", kind))  # as written: "int | None"
             for name, kind in Settings.__annotations__.items()]
    function.__signature__ = signature.replace(parameters=kept + named)  # type: ignore[attr-defined]


for _function in (debate, debate_sync, Debater.__init__, Debater.debate, Debater.debate_many):
    settings_signature(_function)


def save_run_files(state: Debate, record: RunRecord, replay: Replay | None,
                   transcript_path: Path | None, place: LogPlace | None, file_error: str | None) -> RunRecord:
    """Close the trace and fill the reserved transcript: the record, with its transcript's path or why a write broke."""
    record = replace(record, transcript=str(transcript_path) if transcript_path else None)
    if state.trace:
        state.trace.finish(state, record)
    if transcript_path is not None:
        text = render_transcript(state, record, replay).encode("utf-8", errors="replace")
        try:
            fd = open_existing(transcript_path, os.O_WRONLY | os.O_TRUNC, folder_fd=place.folder_fd if place else None)
            with os.fdopen(fd, "wb") as handle:
                write_all(state.runtime, handle.fileno(), text)
        except OSError as err:
            record = replace(record, transcript=None)
            file_error = f"could not write the transcript {transcript_path} ({describe_os_error(err)})"
    return replace(record, write_error=(state.trace.error if state.trace else None) or file_error)


# --- 12. files -----------------------------------------------------------------------------------
#
# The file policy: every file the tool opens goes through create_new, open_existing or open_folder, so what it
# refuses is decided here. A file is made new (O_EXCL, mode 0600) or opened as an existing regular file, never
# through a link planted at its name (O_NOFOLLOW). A batch's files are made in its log folder, pinned by descriptor.

class NotPlainFile(OSError):
    """An existing file the policy refuses: not a regular file (a FIFO, a device), or a hard-linked one."""


class LinkRefused(OSError):
    """A symbolic link at a name the policy opens without following one."""


def _open(path: Path, flags: int, folder_fd: int | None) -> int:
    try:
        return os.open(path.name if folder_fd is not None else path, flags, 0o600, dir_fd=folder_fd)
    except OSError as err:
        # O_NOFOLLOW refuses a link with ELOOP, or with O_DIRECTORY ENOTDIR
        if (flags & os.O_NOFOLLOW and err.errno in (errno.ELOOP, errno.ENOTDIR)
                and what_is_at(path, folder_fd) == "link"):
            raise LinkRefused(errno.ELOOP, "it is a symbolic link", str(path)) from None
        raise


def what_is_at(path: Path, folder_fd: int | None = None) -> Literal["nothing", "link", "file", "other"]:
    """What the name holds, a link not followed ("file": a regular file); OSError if it cannot be looked at."""
    try:
        mode = os.lstat(path.name if folder_fd is not None else path, dir_fd=folder_fd).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "nothing"
    return "link" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "other"


def create_new(path: Path, folder_fd: int | None = None) -> int:
    """A new file, mode 0600, open for writing; FileExistsError when anything is at the name, a link too."""
    return _open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, folder_fd)


def open_existing(path: Path, flags: int = os.O_RDONLY, *, folder_fd: int | None = None, follow: bool = False,
                  own: bool = False) -> int:
    """An existing regular file (with O_CREAT in ``flags``, made 0600 if missing): NotPlainFile for a FIFO
    or a device, and with ``own`` for a hard link to a file elsewhere. A link at the name is refused unless
    ``follow`` (a path the user gave). Non-blocking, so a FIFO cannot hang us; O_TRUNC only once it passed."""
    fd = _open(path, flags & ~os.O_TRUNC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW), folder_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or (own and info.st_nlink != 1):
        os.close(fd)
        raise NotPlainFile(errno.EINVAL, "not a plain file of its own" if own else "not a regular file", str(path))
    if flags & os.O_TRUNC:
        os.ftruncate(fd, 0)
    return fd


def open_folder(path: Path, *, follow: bool = False) -> int:
    """A folder, opened to make files in it (or to fsync it); a link at the name is refused unless ``follow``."""
    return _open(path, os.O_RDONLY | os.O_DIRECTORY | (0 if follow else os.O_NOFOLLOW), None)


def read_file(path: Path, *, follow: bool = False, folder_fd: int | None = None) -> BinaryIO:
    """A regular file open for reading (see open_existing)."""
    return os.fdopen(open_existing(path, follow=follow, folder_fd=folder_fd), "rb")


def response_key(config: Config, call: AgentCall, attempt: Attempt, messages: list[dict[str, str]],
                 sending: Sending[Any]) -> str:
    """The response cache's key: a hash of all that decides a reply (URL, model, messages less the nonce, temperature,
    max_tokens, options sent) and the attempt's number (a retry never gets the reply it retries); a sampled call's slot
    too, so five solvers never share one answer. Secrets are masked first: no credential is hashed into it."""
    request = {"url": display_url(config.proxy_url), "model": attempt.model, "temperature": sending.temperature,
               "messages": [m | {"content": m["content"].replace(attempt.nonce, "")} for m in messages],
               "max_tokens": sending.max_tokens, "options": request_options(config, call.phase),
               "attempt": attempt.number, "slot": [call.pass_number, call.phase, call.debate_round, call.agent]
               if sending.temperature else None}  # greedy: the same prompt is the same reply, whoever sends it
    return hashlib.sha256(redact(json.dumps(request, sort_keys=True), config.secrets).encode()).hexdigest()


class ResponseCache:
    """The response cache (CACHE): 2xx replies by response_key, in a SQLite file (0600, through no link) that a client's
    questions and other processes share: WAL and a busy timeout. One connection per process, used from worker threads
    under a lock. Any sqlite3 or OS error (corrupt, locked, disk full) turns it off with one warning: no run fails."""

    BUSY_SECONDS = 5.0  # how long a statement waits while another process writes (a seam: tests lower it)
    # WAL with synchronous=NORMAL: a commit is not fsynced (a crash may lose the last replies, never the file).
    SCHEMA = ("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE IF NOT EXISTS responses (key TEXT "
              "PRIMARY KEY, stored REAL NOT NULL, reply TEXT NOT NULL); CREATE TABLE IF NOT EXISTS stats (name TEXT "
              "PRIMARY KEY, count INTEGER NOT NULL);")
    FRESH = "? = 0 OR stored >= ?"  # with (CACHE_TTL, now - CACHE_TTL): not expired

    def __init__(self, path: str | None, mode: str, ttl: float) -> None:
        self.path = Path(path or xdg_folder(os.environ, "XDG_CACHE_HOME", ".cache") / APP_FOLDER / "responses.sqlite3")
        self.mode, self.ttl, self.off = mode, ttl, mode == "off"
        self.db: Any = None  # the sqlite3 connection, opened on first use
        self.lock = threading.Lock()

    @staticmethod
    def file(config: Config) -> Path | None:
        """Where CACHE keeps its file, None when off: a batch checks it names none of its own (check_batch_paths)."""
        return None if config.cache == "off" else ResponseCache(config.cache_path, config.cache, config.cache_ttl).path

    async def reply(self, key: str, nonce: str, now: float,
                    send: Callable[[], Awaitable[Completion]]) -> tuple[Completion, float | None]:
        """The unexpired reply stored under ``key`` and when (CACHE=on, read), else ``send``'s, stored (on, refresh);
        a reply echoing the ``nonce`` it was sent with is served with this attempt's, to be stripped as it was then."""
        reads, writes = self.mode in ("on", "read"), self.mode in ("on", "refresh")
        if reads and (hit := await asyncio.to_thread(self.run, now, self.lookup, key, nonce, now)):
            return hit
        reply = await send()
        if writes:
            await asyncio.to_thread(self.run, now, self.store, key, reply, nonce, now)
        return reply, None

    async def close(self) -> None:
        if self.db is not None:
            await asyncio.to_thread(self.run, 0.0, self.closed)

    def closed(self) -> None:  # under the lock: a lookup whose task was cancelled, still in its thread, finds it off
        self.off = True
        self.db.close()

    def run(self, now: float, work: Callable[..., T], *args: Any) -> T | None:
        """``work`` on the connection (opened at ``now`` on first use); on any error, None and the cache off."""
        import sqlite3
        with self.lock:
            if self.off:
                return None
            try:
                if self.db is None:
                    self.connect(now)
                return work(*args)
            except (sqlite3.Error, OSError, ValueError, LookupError, TypeError) as err:
                self.off, db, self.db = True, self.db, None
                if db is not None:
                    db.close()
                QUESTION_ID.set("")  # about the client's cache, not the question that noticed (this context is a copy)
                why = describe_os_error(err) if isinstance(err, OSError) else err
                log.warning("the response cache %s cannot be used (%s): the run goes on without it (remove a damaged "
                            "file, or set CACHE=off)", self.path, why)
                return None

    def connect(self, now: float) -> Any:
        """``db``, its file made (CACHE=read: found) by the file policy, checked, set up; set first: run() closes it."""
        import sqlite3  # only with a cache: importing it costs every start 8 ms
        if writes := self.mode != "read":
            make_private_folders(self.path.parent)
        fd = open_existing(self.path, os.O_RDWR | os.O_CREAT if writes else os.O_RDONLY, own=True)  # 0600, no link
        checked = os.fstat(fd)
        os.close(fd)  # before SQLite opens it: closing any descriptor of a file drops all this process's locks on it
        db = self.db = sqlite3.connect(self.path, timeout=self.BUSY_SECONDS, check_same_thread=False)
        db.execute("PRAGMA schema_version")  # opens the file: one that is no database fails here
        if not os.path.samestat(checked, os.stat(self.path, follow_symlinks=False)):  # a link put there since
            raise LinkRefused(errno.ELOOP, "its name was replaced while it was opened", str(self.path))
        # Then set up. Of two processes making a new file at once SQLite refuses one ("locked"): it tries again.
        for wait in (0.01, 0.1, 1.0, 0.0) if writes else ():
            with contextlib.suppress(sqlite3.OperationalError) if wait else contextlib.nullcontext():
                db.executescript(self.SCHEMA)
                with db:
                    db.execute(f"DELETE FROM responses WHERE NOT ({self.FRESH})", (self.ttl, now - self.ttl))
                break
            time.sleep(wait)
        return db

    def lookup(self, key: str, nonce: str, now: float) -> tuple[Completion, float] | None:
        row = self.db.execute(f"SELECT reply, stored FROM responses WHERE key = ? AND ({self.FRESH})",
                              (key, self.ttl, now - self.ttl)).fetchone()
        self.count("hits" if row else "misses")
        reply = json.loads(row[0]) if row else None  # its echo of the nonce it was sent with made this attempt's
        return None if reply is None else (Completion(reply["text"].replace(reply.get("nonce") or nonce, nonce),
                                                      reply["finish_reason"], reply["status"],
                                                      {"prompt_tokens": 0, "completion_tokens": 0}), row[1])

    def store(self, key: str, reply: Completion, nonce: str, now: float) -> None:
        with self.db:  # the reply with its usage as billed, and the nonce its prompt had
            self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                            (key, now, json.dumps(asdict(reply) | {"nonce": nonce})))
        self.count("stores")

    def count(self, name: str) -> None:
        if self.mode != "read":  # CACHE=read writes nothing, its counts neither
            with self.db:
                self.db.execute("INSERT INTO stats VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET count = count + 1",
                                (name,))

    def stats(self, now: float) -> dict[str, Any]:
        """What `cache` shows: the file, its bytes (and its WAL's), entries and those expired, lifetime counts."""
        entries, fresh = self.db.execute(f"SELECT count(*), count(CASE WHEN {self.FRESH} THEN 1 END) FROM responses",
                                         (self.ttl, now - self.ttl)).fetchone()
        counts = dict(self.db.execute("SELECT name, count FROM stats").fetchall())
        size = sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if os.path.isfile(p))
        return {"path": str(self.path), "size_bytes": size, "entries": entries, "expired": entries - fresh,
                **{name: counts.get(name, 0) for name in ("hits", "misses", "stores")}}


def _render_call(call: AgentCall) -> list[str]:
    status = "ok" if call.ok else f"FAILED: {call.failure or 'no usable output'}"
    tier = f", parsed from {call.tier}" if call.tier else ""
    model = f" [{call.model}]" if call.model else ""
    lines = [f"--- {call.agent}{model}: {status} ({len(call.attempts)} attempt(s){tier}) ---",
             "[system prompt]", call.system, "[user prompt; each attempt adds its nonce]", call.user]
    for attempt in call.attempts:
        http = f"HTTP {attempt.status}" if attempt.status else "no HTTP response"
        http = "failed" if attempt.outcome.startswith(http) else http  # "HTTP 500: overloaded" says it once
        finish = f", finish_reason={attempt.finish_reason}" if attempt.finish_reason else ""
        tokens = (f", {attempt.prompt_tokens}+{attempt.completion_tokens} tokens"
                  f"{' (estimated)' if attempt.usage_estimated else ''}" if attempt.prompt_tokens else "")
        cache = f", cache {attempt.cache_status}" if attempt.cache_status else ""
        cache += f", the gateway retried {attempt.gateway_retries} time(s) upstream" if attempt.gateway_retries else ""
        stored = datetime.fromtimestamp(attempt.stored_at).isoformat(timespec="seconds")
        cache += f", from the response cache (stored {stored})" if attempt.cache_hit else ""
        lines.append(f"[attempt {attempt.number}] nonce {attempt.nonce}, at {attempt.started_s:.2f}s, "
                     f"{attempt.latency_s:.2f}s, {http}{finish}{tokens}{cache}: {attempt.outcome}")
        if attempt.retry_in_s is not None:
            lines.append(f"  retrying in {attempt.retry_in_s:.2f}s")
        if attempt.response_text:
            lines += ["[response]", attempt.response_text]
    return lines + [""]


def render_transcript(state: Debate, result: RunRecord, replay: Replay | None = None) -> str:
    """The transcript text: config, every call grouped by pass, phase and debate round, usage, tally, verdict."""
    lines = ["MoA pipeline transcript", f"run id: {state.run_id}",
             f"written: {datetime.now().isoformat(timespec='seconds')}"]
    if result.trace:
        lines.append(f"trace: {result.trace}")
    if replay is not None:
        lines.append(f"replay of {replay.source} (run {replay.run_id}): the phases before {replay.start} come from "
                     f"that trace; {replay.start} and later were run again with the current prompts and settings")
    lines += ["", "=== Question ===", result.question, "", "=== Configuration ==="]
    lines += [f"{name}={value}" for name, value in state.config.shown().items()]
    groups: dict[tuple[int, int, int], list[AgentCall]] = {}
    for call in result.calls:
        groups.setdefault((call.pass_number, PHASES.index(call.phase), call.debate_round), []).append(call)
    for (pass_number, phase, debate_round), calls in sorted(groups.items()):
        title = (f"Debate round {debate_round} - Revision" if PHASES[phase] == Phase.REVISE
                 else PHASE_TITLES[PHASES[phase]])
        lines += ["", f"=== Pass {pass_number} · {title} ===", ""] + [line for c in calls for line in _render_call(c)]
    if result.notes:
        lines += ["=== Notes ===", *result.notes, ""]
    lines += ["=== Usage ==="] + [  # tokens (and cost) per phase, and in all
        f"{phase}: {t['prompt_tokens']} prompt{f' ({n} cached)' if (n := t['cached_tokens']) else ''} + "
        f"{t['completion_tokens']} completion = {t['total_tokens']} tokens" + (" (estimated)" if t["estimated"] else "")
        + (f", {said_cost(t['cost_usd'], t.get('cost_source'), 6)}" if "cost_usd" in t else "")
        for phase, t in {**result.usage_by_phase, "total": result.usage}.items()
        if t["total_tokens"] or phase == "total"]
    if result.skipped:
        lines += ["budget limited; skipped: " + "; ".join(result.skipped)]
    lines += ["", "=== Tally ==="]
    for index, verdict in enumerate(result.verdicts, 1):
        lines.append(f"pass {index} ({verdict.source}): " + ", ".join(f"{k!r}: {n}" for k, n in verdict.tally.items())
                     + f" -> {verdict.answer!r}, confidence {verdict.confidence}, {verdict.agreeing}/{verdict.valid}")
    lines += verdict_sections(result)
    if result.error:
        lines.append(f"error: {result.error}")
    lines.append(f"elapsed: {result.elapsed_s:.2f}s, {result.llm_calls} LLM calls, "
                 f"{result.http_requests} HTTP requests{served(result.usage['cache_hits'])}")
    return "\n".join(lines) + "\n"


def verdict_sections(result: RunRecord) -> list[str]:
    """The transcript's ranking (full answers) and verdict sections."""
    lines = []
    if result.ranking:
        lines += ["", "=== Ranking (Borda score over the judges, 95% bootstrap interval) ==="]
        lines += [f"{n}. {s['label']} {s['agent']} [{s['model']}]: {s['score']:.3f} [{s['low']:.3f}, {s['high']:.3f}], "
                  f"first for {s['first_places']} judge(s)" for n, s in enumerate(result.ranking, 1)]
    lines += ["", "=== Verdict ==="]
    if (reported := result.verdict) is None:
        return lines
    if result.answer_shape == "full":
        lines += ["shape: full", f"synthesized: {'yes' if result.synthesized else 'no'}", "response:",
                  result.response or ""]
    else:
        lines += [f"answer: {reported.answer}", f"solution: {result.solution or '(none)'}"]
    return lines + [f"confidence: {reported.confidence}", f"agreement: {reported.agreeing}/{reported.valid} "
                    f"({reported.source})", f"rerun: {'yes' if result.rerun else 'no'}"]


def create_private_file(directory: Path, stem: str, suffix: str, twin: str | None = None,
                        folder_fd: int | None = None) -> tuple[Path, int]:
    """A new file stem+suffix or stem_N+suffix (create_new); with ``twin``, that suffix must be free there too."""
    for n in range(MAX_NAME_TRIES):
        path = directory / (f"{stem}{suffix}" if n == 0 else f"{stem}_{n}{suffix}")
        if twin is not None and what_is_at(path.with_suffix(twin), folder_fd) != "nothing":
            continue
        with contextlib.suppress(FileExistsError):
            return path, create_new(path, folder_fd)
    raise OSError(errno.EEXIST, f"no free transcript name for {stem} in {directory}")


def make_private_folders(folder: Path) -> None:
    """mkdir -p where every folder made is 0700 (Path.mkdir(parents=True) would make the parents 0755)."""
    for part in reversed([p for p in (folder, *folder.parents) if not os.path.lexists(p)]):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another run
            os.mkdir(part, 0o700)


def make_log_folders(config: Config, folder: Path) -> None:
    """make_private_folders for LOG_DIR or a folder in it; the run that makes LOG_DIR's default folder says where
    it is, once (an installed tool's is out of sight: see default_log_dir)."""
    new = not os.path.lexists(config.log_dir)
    make_private_folders(folder)
    if new and config.log_dir == default_log_dir(os.environ):
        log.warning("transcripts and traces go to %s, a folder made now (LOG_DIR sets another)",
                    os.path.abspath(config.log_dir))


def unlink_in(path: Path, folder_fd: int | None) -> None:
    os.unlink(path.name if folder_fd is not None else path, dir_fd=folder_fd)


@dataclass(frozen=True)
class LogPlace:
    """Where a run's transcript and trace go: a folder and a file-name stem; in a batch, the folder open too."""

    directory: Path
    stem: str
    folder_fd: int | None = None


def open_run_files(config: Config, runtime: Runtime,
                   place: LogPlace | None = None) -> tuple[Path | None, TraceWriter | None, str | None]:
    """At a run's start, reserve the transcript's name (made empty, filled at the end) and open its JSONL trace twin
    (appended attempt by attempt, so a killed run leaves one). On an OSError, no files and the third value says why."""
    if not (config.enable_file_logging or config.jsonl_trace):
        return None, None, None
    if place is None:  # one question from the command line: LOG_DIR/<prefix>_<time>
        stamp = datetime.fromtimestamp(runtime.wall_clock()).strftime("%Y%m%d_%H%M%S")
        place = LogPlace(Path(config.log_dir), f"{config.log_filename_prefix}_{stamp}")
    folder, transcript = place.folder_fd, config.enable_file_logging
    try:
        if folder is None:
            make_log_folders(config, place.directory)
        path, fd = create_private_file(place.directory, place.stem, ".txt" if transcript else ".jsonl",
                                       twin=".jsonl" if transcript and config.jsonl_trace else None, folder_fd=folder)
        if not transcript:
            return None, TraceWriter(path, fd, runtime), None
        os.close(fd)
        try:
            trace_path = path.with_suffix(".jsonl")
            trace = TraceWriter(trace_path, create_new(trace_path, folder), runtime) if config.jsonl_trace else None
        except OSError:
            unlink_in(path, folder)
            raise
        return path, trace, None
    except OSError as err:
        return None, None, f"could not write the transcript in {place.directory} ({describe_os_error(err)})"


@dataclass
class TraceWriter:
    """The transcript's JSONL twin: a run object, one per HTTP attempt (first, in a replay, those it kept, marked
    restored), a verdict. Everything a model saw and said can be rebuilt from it alone (README, "JSONL trace");
    headers, and with them the keys, are never written. After a failed write it writes nothing more (``error``)."""

    path: Path
    fd: int | None
    runtime: Runtime
    error: str | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self.fd is None or self.error:
            return
        try:  # ensure_ascii: a lone surrogate from argv still makes valid JSON
            write_all(self.runtime, self.fd, (json.dumps(record) + "\n").encode())
        except OSError as err:
            self.error = f"could not write the trace {self.path} ({describe_os_error(err)})"

    def start(self, state: Debate, question: str, replay: Replay | None) -> None:
        self.write({"type": "run", "schema_version": SCHEMA_VERSION, "run_id": state.run_id, "question": question,
                    "answer_shape": state.shape, "config": state.config.shown(),
                    "started": datetime.fromtimestamp(state.runtime.wall_clock()).isoformat(timespec="seconds"),
                    "replay": None if replay is None else {"trace": str(replay.source), "from": str(replay.start),
                                                           "run_id": replay.run_id}})
        # What the replay keeps, as attempts of this run marked restored: its trace replays without its source.
        for kept in replay.restored if replay else ():
            self.write({**kept.record, "run_id": state.run_id, "pass": state.pass_number, "restored": True})

    def attempt(self, state: Debate, call: AgentCall, attempt: Attempt, messages: list[dict[str, str]],
                temperature: float, max_tokens: int) -> None:
        self.write({
            "type": "attempt", "run_id": state.run_id, "pass": call.pass_number, "debate_round": call.debate_round,
            "phase": call.phase, "agent": call.agent, "attempt": attempt.number, "nonce": attempt.nonce,
            "model": attempt.model, "request": {key: value for key, value in ({  # as Endpoint.complete sends it
                "model": attempt.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
                | request_options(state.config, call.phase)).items() if value is not None},
            "status": attempt.status, "finish_reason": attempt.finish_reason, "response_text": attempt.response_text,
            "usage": {"prompt_tokens": attempt.prompt_tokens, "completion_tokens": attempt.completion_tokens,
                      "cached_tokens": attempt.cached_tokens, "estimated": attempt.usage_estimated,
                      "endpoint_cost_usd": attempt.endpoint_cost_usd},
            "cache_status": attempt.cache_status, "gateway_retries": attempt.gateway_retries,
            "cache": "hit" if attempt.cache_hit else None,  # our response cache's; cache_status is a gateway's
            "started_s": round(attempt.started_s, 4), "latency_s": round(attempt.latency_s, 4),
            "outcome": attempt.outcome, "error": None if attempt.outcome == "ok" else attempt.outcome,
            "retry_in_s": attempt.retry_in_s})

    def finish(self, state: Debate, record: RunRecord) -> None:
        """The verdict line: the run's record (--json's fields), with each verdict, which one is reported, and
        the notes. Each verdict is under "verdicts": "rounds" is --json's count of debate rounds."""
        self.write({"type": "verdict", "run_id": state.run_id, **record.to_dict(),
                    "reported_pass": record.reported_pass,
                    "verdicts": [{"pass": i} | asdict(v) for i, v in enumerate(record.verdicts, 1)],
                    "notes": list(record.notes)})
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _sidecar(output: Path, suffix: str) -> Path:
    return output.with_name(output.name + suffix)


def acquire_lock(output: Path) -> int:
    """Hold an exclusive flock on <output>.lock for this process's life; BatchLocked if taken.
    A link, a hard link or a device at the lock's name is refused, never truncated through."""
    path = _sidecar(output, ".lock")
    try:
        fd = open_existing(path, os.O_RDWR | os.O_CREAT, own=True)
    except NotPlainFile:
        raise ConfigError(f"the lock file {path} is not a plain file of its own (a hard link or a device): "
                          "remove it or choose another output; nothing was changed") from None
    except OSError as err:
        fix = ("fix the permissions (or the read-only mount), or choose another -o" if err.errno in (
            errno.EACCES, errno.EPERM, errno.EROFS) else "remove it or choose another output")
        raise ConfigError(f"cannot open the lock file {path} ({describe_os_error(err)}): {fix}; "
                          "nothing was sent") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BatchLocked(f"another run is writing {output} (it holds {path}); this run exits so the "
                          "next scheduled one can resume") from None
    with contextlib.suppress(OSError):  # the pid is for people looking at the file; the flock is what counts
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def replace_atomically(path: Path, fill: Callable[[int], None]) -> None:
    """Replace ``path`` whole, mode 0600: readers see the old file or the new one, never half. A temporary file
    beside it (mkstemp) is filled, fsynced and renamed over ``path`` (a link there is replaced, not its target)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb"):  # closes it
            fill(fd)
            os.fsync(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    folder = open_folder(path.parent, follow=True)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def stale_temporaries(output: Path) -> list[Path]:
    """What replace_atomically leaves beside a batch output when killed mid-write (as big as the output): mkstemp's
    ``.<name>.XXXXXXXX.tmp`` of the output or its summary, as regular files; a link or another name is never ours."""
    ours = re.compile(rf"\.{re.escape(output.name)}(?:\.summary\.json)?\.[a-z0-9_]{{8}}\.tmp")
    with os.scandir(output.parent) as entries:
        return [Path(e.path) for e in entries if ours.fullmatch(e.name) and e.is_file(follow_symlinks=False)]


def note_unfinished_transcripts(folder_fd: int, runtime: Runtime) -> None:
    """Fill each empty transcript in a batch's log folder (its run was killed) with a note naming its trace."""
    with os.scandir(folder_fd) as entries:
        empty = [e.name for e in entries if e.name.endswith(".txt") and e.is_file(follow_symlinks=False)
                 and e.stat(follow_symlinks=False).st_size == 0]
    for name in empty:
        trace = Path(name[:-len(".txt")] + ".jsonl")
        where = ("no trace" if what_is_at(trace, folder_fd) == "nothing"
                 else f"its trace, {trace}, holds what it sent and received")
        with contextlib.suppress(OSError), os.fdopen(open_existing(Path(name), os.O_WRONLY, folder_fd=folder_fd,
                                                                   own=True), "wb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:  # still the empty file that was listed
                write_all(runtime, handle.fileno(), UNFINISHED_TRANSCRIPT.format(where=where).encode())


def bounded_lines(handle: Any, limit: int) -> Iterator[bytes | None]:
    """The lines of a binary file, each at most ``limit`` bytes; None for a longer one, skipped, never held."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):  # the rest of the long line, in bounded pieces
            line = handle.readline(limit + 1)
        yield None


class ResultWriter:
    """Appends one JSON line per finished question, fsynced; a failed write is rolled back to the last whole line."""

    def __init__(self, output: Path, runtime: Runtime) -> None:
        self.path, self.runtime = output, runtime
        self.fd = open_existing(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", errors="replace")
        end = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            write_all(self.runtime, self.fd, data)
            os.fsync(self.fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, end)
            raise

    def close(self) -> None:
        os.close(self.fd)


# --- 13. dry run and replay ----------------------------------------------------------------------

@dataclass(frozen=True)
class CheckReport:
    """What --check found: one line per finding, and whether a real call worked."""

    lines: list[str]
    ok: bool


@dataclass(frozen=True)
class Probe:
    """What an optional GET of --check read: a JSON document, or why there is none."""

    document: Any = None
    problem: str = ""


async def get_json(client: httpx.AsyncClient, url: str, timeout: float, limit: int) -> Probe:
    """A JSON document of at most ``limit`` bytes within ``timeout`` seconds, or why there is none."""
    try:
        async with asyncio.timeout(timeout), client.stream("GET", url) as response:
            if response.status_code != 200:
                return Probe(problem=f"HTTP {response.status_code}")
            body = await read_body(response, limit + 1, cut=True)
            if len(body) > limit:
                return Probe(problem=f"over {limit / 2**20:g} MB, not read")
            return Probe(load_json(body))
    except TimeoutError:
        return Probe(problem=f"no answer within {timeout:g}s")
    except ValueError:
        return Probe(problem="not JSON")
    except (httpx.HTTPError, APIError) as err:
        return Probe(problem=_short(err))


async def check_endpoint(config: Config, runtime: Runtime) -> CheckReport:
    """--check: one tiny chat request and, at the same time, the models list and llama.cpp's slot context, if any.
    After a failed chat request only the probes' warnings are kept: an "ok" beside the error would contradict it."""
    base = config.proxy_url.split("?")[0].removesuffix("/chat/completions")
    models_url, props_url = base + "/models", base.removesuffix("/v1") + "/props"  # llama.cpp's slot settings
    wait = min(config.request_timeout, CHECK_PROBE_SECONDS)
    async with open_client(config) as client:
        chat, models, props = await asyncio.gather(
            check_chat(config, client, runtime), get_json(client, models_url, wait, MODELS_LIST_LIMIT),
            get_json(client, props_url, wait, ERROR_BODY_LIMIT))
    found = model_lines(config, models) + context_lines(config, props.document)
    return CheckReport(chat.lines + [line for line in found if chat.ok or line.startswith("warning:")], chat.ok)


async def check_chat(config: Config, client: httpx.AsyncClient, runtime: Runtime) -> CheckReport:
    """--check's chat request. An empty reply cut at its few tokens (finish_reason length) is how a
    reasoning model answers, thinking: the endpoint, the key and the model work."""
    endpoint = Endpoint(replace(config, max_retries=0), client, runtime)  # streamed if runs are: STREAM
    started, note = runtime.clock(), list[str]()
    try:
        # With the options every solver sends: a provider may need EXTRA_BODY to route at all, and an endpoint
        # that refuses one (a reasoning_effort its model lacks) is found here, before a batch.
        await endpoint.complete([{"role": "user", "content": "Reply with the word OK."}], temperature=0,
                                max_tokens=CHECK_MAX_TOKENS, headers={"X-MoA-Phase": "check"},
                                options=request_options(config, Phase.GENERATE))
    except APIError as err:
        if err.finish_reason != "length":
            return CheckReport([f"error: {display_url(config.proxy_url)}: {err}"], False)
        note = [f"note: the reply was cut at the check's {CHECK_MAX_TOKENS} tokens before any text, as a reasoning "
                "model's is while it thinks: that works; keep MAX_TOKENS well above its thinking"]
    return CheckReport([f"ok: {display_url(config.proxy_url)} answered a chat request in "
                        f"{runtime.clock() - started:.2f}s", *note], True)


def model_lines(config: Config, models: Probe) -> list[str]:
    data = models.document.get("data") if isinstance(models.document, dict) else None
    names = ({printable(redact(m["id"], config.secrets), 80) for m in data  # masked before the cut
              if isinstance(m, dict) and isinstance(m.get("id"), str)}
             if isinstance(data, list) else set())
    if not names:
        found = f"no models list could be read (GET /models: {models.problem})" if models.problem else \
            "the endpoint lists no models (GET /models)"
        return [f"note: {found}; the model names are not checked"]
    wanted = (*config.models, *config.judge_models, *([config.synthesis_model] if config.synthesis_model else []))
    missing = [m for m in wanted if m not in names and m != "default"]
    if missing:
        return [f"warning: the endpoint does not list {', '.join(sorted(set(missing)))}; it lists "
                f"{', '.join(sorted(names)[:5])}"]
    return [f"ok: the endpoint lists {', '.join(sorted(names)[:5])}"
            + ("" if config.models == ("default",) else " (every model set here is among them)")]


def context_lines(config: Config, props: Any) -> list[str]:
    """What llama.cpp's /props says of a slot's context (n_ctx of its default generation settings)."""
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or not 0 < n_ctx <= 10**9:
        return []
    need = prompt_tokens_estimate(*judge_prompts("?", [Position(0, "", "")] * config.num_workers), config) + (
        config.num_workers * 2 * config.max_tokens + config.judge_max_tokens)
    solver = prompt_tokens_estimate(*solver_prompts("?"), config) + config.max_tokens
    lines = [f"ok: llama.cpp reports {n_ctx} tokens of context per slot"]
    if solver > n_ctx or need > n_ctx:
        lines.append(f"warning: MAX_TOKENS={config.max_tokens} cannot fit a slot of {n_ctx} tokens: a solver needs "
                     f"about {solver}, a judge reading {config.num_workers} answers about {need}; lower MAX_TOKENS "
                     f"and JUDGE_MAX_TOKENS, or start the server with more context per slot (-c / --parallel)")
    return lines


def replay_worst_case(config: Config, replay: Replay) -> list[PhaseCost]:
    """A replay at its worst, by worst_case_costs over the restored answers: the phases from its
    start on, each text it writes at MAX_TOKENS, and no rerun (a replay runs none)."""
    positions, done = list(replay.positions), replay.start.kept
    costs = worst_case_costs(config, replay.question, positions)
    critiques = len(positions) if done == Phase.GENERATE else 0
    rebuttals = (0 if done in (Phase.REBUTTAL, Phase.JUDGE) or not config.enable_rebuttal
                 else critiques or sum(p.critique is not None for p in positions))
    held = max((len(p.by_round) for p in positions), default=0) or 1
    rounds = 0 if replay.start.phase in ("judges", Phase.SYNTHESIS) else max(config.rounds - held, 0)
    # A round's prompt embeds restored texts as they are, or texts the replay writes, at the cap.
    revise = max(costs.revise, worst_case_costs(config, replay.question, workers=len(positions)).revise)
    # A judge reads each candidate's newest rebuttal or revision: one the replay writes, at the cap.
    rewritten = rebuttals or (len(positions) if rounds else 0)
    return phase_costs(config, "1", [
        (Phase.CRITIQUE, critiques, costs.critic, costs.text), (Phase.REBUTTAL, rebuttals, costs.rebuttal, costs.text),
        (Phase.REVISE, rounds * len(positions), revise, costs.text),
        (Phase.JUDGE, 0 if replay.verdict else config.num_judges, costs.judge(critiques, rewritten),
         costs.judge_completion)])


@dataclass(frozen=True)
class DryRun:
    """What --dry-run reports: the phases, and the worst case with every retry, capped by the budget."""

    phases: list[PhaseCost]
    calls_pass_1: int
    calls_with_rerun: int
    worst_case_calls: int
    worst_case_tokens: int
    worst_case_cost_usd: float | None
    budget_capped: bool

    def to_dict(self, config: Config) -> dict[str, Any]:
        shown = {"schema_version": SCHEMA_VERSION} | {k: v for k, v in asdict(self).items() if k != "budget_capped"}
        shown["phases"] = [{"pass": row.pop("pass_label"), **row} for row in shown["phases"]]  # pass: a keyword
        return shown | {"budget": {"max_calls": config.max_calls or None,
                                   "max_total_tokens": config.max_total_tokens or None}}


def dry_run(config: Config, question: str, replay: Replay | None = None) -> DryRun:
    """Worst case, without a request (worst_case_costs): every answer, critique and rebuttal as long as
    MAX_TOKENS allows (later prompts embed them), every retry taken, and the rerun (of a replay: what it
    runs, see replay_worst_case); then the budget's caps."""
    phases = (replay_worst_case(config, replay) if replay is not None
              else pass_worst_case(config, question, config.num_workers)
              + pass_worst_case(config, question, rerun_settings(config)[0], "rerun"))
    shape = replay.shape.shape if replay else config.shape_of(question).shape
    if config.synthesizes(shape):  # once, after the pass whose verdict is reported: counted with pass 1
        tokens = synthesis_price(config, question, shape, replay.workers if replay else config.num_workers)
        phases += phase_costs(config, "1", [(Phase.SYNTHESIS, 1, tokens - config.max_tokens, config.max_tokens)])
    attempts = config.max_retries + 1
    calls = min(sum(p.calls for p in phases) * attempts, config.max_calls or sys.maxsize)
    tokens = sum(p.total_tokens for p in phases) * attempts
    cost = cost_usd(sum(p.prompt_tokens for p in phases) * attempts,
                    sum(p.completion_tokens for p in phases) * attempts, config)
    if config.max_total_tokens and tokens > config.max_total_tokens:
        tokens = config.max_total_tokens
        if cost is not None:  # every capped token at the dearer price
            dearest = max(config.price_input_per_mtok or 0, config.price_output_per_mtok or 0)
            cost = min(cost, round(config.max_total_tokens * dearest / 1e6, 6))
    return DryRun(phases, sum(p.calls for p in phases if p.pass_label == "1"), sum(p.calls for p in phases),
                  calls, tokens, cost, bool(config.max_calls or config.max_total_tokens))


def human_dry_run(plan: DryRun) -> str:
    cost_column = "   cost (USD, at your prices)" if plan.worst_case_cost_usd is not None else ""
    lines = ["Dry run: no request was sent.",
             f"{'pass':<6} {'phase':<9} {'calls':>5} {'worst-case tokens':>18}{cost_column}"]
    lines += [f"{row.pass_label:<6} {row.phase:<9} {row.calls:>5} {row.total_tokens:>18}"
              + (f"   {row.cost_usd:.4f}" if row.cost_usd is not None else "") for row in plan.phases]
    reruns = (f"{plan.calls_pass_1} without a rerun, {plan.calls_with_rerun} with it"
              if plan.calls_with_rerun > plan.calls_pass_1 else f"{plan.calls_pass_1} (a replay runs no rerun)")
    lines.append(f"Calls: {reruns}; at most {plan.worst_case_calls} HTTP requests with every retry (and up to "
                 f"{BUSY_RETRIES} unbilled retries a call of 429s that say when to come back)")
    cost = plan.worst_case_cost_usd
    lines.append(f"Worst case: {plan.worst_case_tokens} tokens"
                 + (f", {said_cost(cost, 'prices')}" if cost is not None else " (set PRICE_INPUT_PER_MTOK / "
                    "PRICE_OUTPUT_PER_MTOK for a cost)") + (" (capped by the budget)" if plan.budget_capped else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class ReplayStart:
    """--from START, parsed once where it enters: the first phase run again (critique, rebuttal, revise or
    judges) and, for roundK, K: debate rounds 1..K-1 are kept. Shown as it was given."""

    phase: str  # a Phase, or "judges" (no phase runs again before them), or "synthesis" (the judges' verdict kept)
    debate_round: int = 0

    @classmethod
    def parse(cls, text: str) -> ReplayStart:
        """One of REPLAY_STARTS (argparse's choices)."""
        return cls(Phase.REVISE, int(text[5:])) if text.startswith("round") else cls(text)

    @property
    def kept(self) -> Phase:
        """The last phase kept from the trace."""
        return REPLAY_STARTS[str(self)]

    def keeps(self, attempt: TraceAttempt) -> bool:
        """Whether the replay keeps this attempt: every phase before it, and with --from roundK
        the debate rounds before K (with --from judges, all of them)."""
        if self.phase in (Phase.CRITIQUE, Phase.REBUTTAL):
            return PHASES.index(attempt.phase) < PHASES.index(self.phase)
        return (attempt.phase != Phase.REVISE or self.phase in ("judges", Phase.SYNTHESIS)
                or attempt.debate_round < self.debate_round)

    def __str__(self) -> str:
        return f"round{self.debate_round}" if self.phase == Phase.REVISE else self.phase


@dataclass(frozen=True)
class Replay:
    """A run rebuilt from its JSONL trace, to re-run only the later phases."""

    source: Path
    start: ReplayStart
    run_id: str
    question: str
    workers: int
    positions: tuple[Position, ...]
    restored: tuple[TraceAttempt, ...] = ()  # the attempts it keeps, copied into its own trace
    shape: ShapeGuess = ShapeGuess("short", "the trace's")  # the run's answer shape: its answers were written in it
    verdict: Verdict | None = None  # with --from synthesis: the judges' verdict the trace reported


def _trace_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line of a trace. A torn last line (a killed
    run) is skipped; any other unreadable line is a ConfigError naming it."""
    try:
        handle = read_file(path, follow=True)
    except NotPlainFile:
        raise ConfigError(f"--replay {path}: not a regular file (a trace is a .jsonl file in LOG_DIR)") from None
    except OSError as err:
        raise ConfigError(f"--replay {path}: cannot open it ({describe_os_error(err)})") from None
    with handle:
        for number, raw in enumerate(bounded_lines(handle, MAX_TRACE_LINE_BYTES), 1):
            if raw is None:
                raise ConfigError(f"--replay {path}: line {number} is longer than any trace line we write")
            try:
                record = load_json(raw)
            except ValueError as err:
                if raw.endswith(b"\n") or "nested too deeply" in str(err):
                    raise ConfigError(f"--replay {path}: line {number} is not valid JSON ({err})") from None
                continue  # a torn last line from a killed run
            if isinstance(record, dict):
                yield number, record


def _rebuild_positions(kept: list[TraceAttempt], start: ReplayStart, shape: str) -> dict[int, Position]:
    """Each solver's line as the kept attempts leave it: its answer and model, the critique and rebuttal
    it got, and once round 1 is over, its answer after each debate round before ``start``, in order."""
    positions: dict[int, Position] = {}
    ok, read_reply = [a for a in kept if a.ok], parse_full_rebuttal if shape == "full" else parse_rebuttal
    for record in (a for a in ok if a.phase == Phase.GENERATE):
        if (parsed := _valid_answer(record.response_text, shape)) is not None:
            positions[record.slot] = Position(record.slot, parsed.answer, parsed.reasoning,
                                              final_answer=parsed.answer, model=record.model)
    for record in (a for a in ok if a.slot in positions):
        position = positions[record.slot]
        if record.phase == Phase.CRITIQUE and (found := parse_block(record.response_text, "critique")):
            position.critique = found[0]
        elif record.phase == Phase.REBUTTAL and (rebuttal := read_reply(record.response_text)):
            position.rebuttal, position.final_answer = rebuttal[0], rebuttal[1].answer
    if start.phase in (Phase.CRITIQUE, Phase.REBUTTAL):
        return positions
    revisions = [a for a in ok if a.phase == Phase.REVISE and a.debate_round > 1]
    for debate_round in range(1, max((a.debate_round for a in revisions), default=1) + 1):  # round 1: none revised
        for record in (a for a in revisions if a.debate_round == debate_round and a.slot in positions):
            if revised := read_reply(record.response_text):
                positions[record.slot].revision, positions[record.slot].final_answer = revised[0], revised[1].answer
        for position in positions.values():
            position.by_round.append(position.final_answer)
    return positions


def load_replay(path: Path, start: ReplayStart) -> Replay:
    """Read and check a trace: the question, and the pass whose verdict was reported; a bad one is a ConfigError."""
    run, verdict_line, attempts = dict[str, Any](), dict[str, Any](), list[TraceAttempt]()
    for number, record in _trace_records(path):
        if record.get("type") == "run":
            if run:  # two traces joined: their answers would be mixed under one question
                raise ConfigError(f"--replay {path}: line {number} starts a second run; replay one run's trace")
            run = record
        elif record.get("type") == "attempt":
            try:  # None: a judge's or the synthesizer's attempt, about no solver's line
                attempts += filter(None, [trace_attempt(record, PHASES, MAX_WORKERS, MAX_ROUNDS)])
            except ValueError as err:
                raise ConfigError(f"--replay {path}: line {number} {err}") from None
        elif record.get("type") == "verdict":
            verdict_line = record
    question = run.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"--replay {path}: not a moa_pipeline trace (no run record with a question)")
    reported = verdict_line.get("reported_pass", verdict_line.get("reported_round"))  # the latter: an older trace
    chosen = reported if type(reported) is int else 1
    in_pass = [a for a in attempts if a.pass_number == chosen]
    kept = [a for a in in_pass if start.keeps(a)]
    shape: str = run["answer_shape"] if run.get("answer_shape") in SHAPES else "short"  # older traces: short
    positions = _rebuild_positions(kept, start, shape)
    if not positions:
        raise ConfigError(f"--replay {path}: the trace holds no valid solver answer to start from")
    held = max((a.debate_round for a in in_pass), default=1)
    if start.debate_round - 1 > held:
        raise ConfigError(f"--replay {path}: the trace holds {held} debate round{'s' if held > 1 else ''}, so "
                          f"--from {start} has nothing to keep: use --from round{held + 1} or earlier")
    workers = max(a.slot for a in in_pass if a.phase == Phase.GENERATE) + 1
    verdict = traced_verdict(verdict_line, chosen, path, positions.values()) if start.phase == Phase.SYNTHESIS else None
    return Replay(path, start, str(run.get("run_id"))[:64], valid_text(question), workers,
                  tuple(positions[k] for k in sorted(positions)), tuple(kept), ShapeGuess(shape, "the trace's"),
                  verdict)


def traced_verdict(line: Mapping[str, Any], chosen: int, path: Path, positions: Iterable[Position]) -> Verdict:
    """Pass ``chosen``'s verdict from a trace's verdict line, checked (--from synthesis writes it up again)."""
    verdicts = line.get("verdicts")
    found: Any = next((v for v in verdicts if isinstance(v, dict) and v.get("pass") == chosen), None) \
        if isinstance(verdicts, list) else None
    share, count = functools.partial(traced_number, high=1.0), functools.partial(traced_number, high=MAX_WORKERS)
    try:
        standings = tuple(Standing(valid_text(s["agent"]), valid_text(s["label"]), share(s["score"]), share(s["low"]),
                                   share(s["high"]), int(count(s["first_places"]))) for s in found["standings"])
        verdict = Verdict(valid_text(found["answer"]), int(traced_number(found["confidence"], 100)),
                          int(count(found["agreeing"])), int(count(found["valid"])), valid_text(found["source"]),
                          {valid_text(k): int(count(n)) for k, n in found["tally"].items()}, valid_text(found["kind"]),
                          standings, tuple(valid_text(a) for a in traced_list(found["analyses"])),
                          tuple(tuple(valid_text(agent) for agent in traced_list(seen))
                                for seen in traced_list(found.get("judge_labels", []))))  # older traces: none
    except (TypeError, KeyError, ValueError, AttributeError, OverflowError):
        verdict = None
    agents = [s.agent for s in verdict.standings] if verdict else []
    if verdict is None or len(set(agents)) < len(agents) or not set(agents) <= {p.agent for p in positions}:
        raise ConfigError(f"--replay {path}: --from synthesis needs the verdict line this tool writes when its judges "
                          "are done, and the trace has none (or one that is not ours): use --from judges")
    return verdict


async def run_replay(state: Debate, replay: Replay) -> Verdict:
    """The phases from ``replay.start`` on, over the rebuilt positions; no rerun (it would need new solvers).
    Each solver keeps the model that wrote its answer (a trace that does not say: its slot's model today)."""
    positions = [replace(p, by_round=list(p.by_round), model=p.model or state.config.slot_model(p.slot))
                 for p in replay.positions]
    state.positions[1], state.replaying = positions, True
    require_enough(state, positions, replay.workers)
    if replay.verdict is not None:  # --from synthesis: the judges' verdict stands as the trace reported it
        return replay.verdict
    return await deliberate(state, replay.question, positions, replay.workers, state.config.temperature,
                            done=replay.start.kept, later_rounds=replay.start.phase != "judges")


# --- 14. batch -----------------------------------------------------------------------------------
#
# A questions file in, one JSONL line per question out, fsynced as each question finishes. Exactly once
# across crashes: a rerun compacts the output to its complete "ok" lines (failed ones run again, a torn
# last line goes) and skips those ids. An flock beside the output keeps two cron runs apart.

def stdin_bytes(stdin: Any) -> Any:
    """The binary stdin, or ConfigError when there is none (closed, or started with 0<&-)."""
    if stdin is None or getattr(stdin, "closed", False):
        raise ConfigError("stdin is closed: pipe the input in, or pass it as an argument")
    return stdin.buffer if hasattr(stdin, "buffer") else stdin


@contextlib.contextmanager
def signals_handled(signals: list[signal.Signals], handler: Callable[[int], object]) -> Iterator[None]:
    """``handler(signal)`` on the running loop for the block. After it, the stop signals raise KeyboardInterrupt
    again (main's), instead of the system default asyncio leaves, which would kill the process mid-summary."""
    loop = asyncio.get_running_loop()
    for number in signals:
        loop.add_signal_handler(number, handler, number)
    try:
        yield
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        with contextlib.suppress(ValueError):  # not the main thread
            for number in stop_signals():
                signal.signal(number, signal.default_int_handler)


def stop_signals() -> list[signal.Signals]:
    """The signals that stop a run as Ctrl-C does: SIGTERM, and SIGHUP (the terminal closed)
    unless it is ignored, as under nohup, whose user asked for the run to outlive the terminal."""
    hangup = [signal.SIGHUP] if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN else []
    return [signal.SIGTERM, *hangup]


@dataclass(frozen=True)
class BatchOptions:
    """The batch flags, checked in main()."""

    questions_file: str  # a path, or "-" for stdin
    output: Path
    concurrency: int = DEFAULT_CONCURRENCY
    resume: bool = True
    force: bool = False
    shard: Shard | None = None
    output_format: str = "jsonl"  # or "openai-batch"
    logs: str = "all"  # transcripts and traces: all, failed (only failed questions keep theirs) or none
    strategy: Strategy | None = None  # --eval: how each question is answered (None: the debate)

    @property
    def streamed(self) -> bool:
        """Read once, as it comes: stdin, or a pipe (-f <(...), a FIFO), which a first pass would drain. Then
        the batch has no total and no input hash to check a resume against."""
        return self.questions_file == "-" or not os.path.isfile(self.questions_file)


def parse_shard(value: str, environ: Mapping[str, str]) -> Shard:
    """--shard's Shard (parsing.read_shard); ConfigError saying what is expected."""
    try:
        return read_shard(value, environ)
    except ValueError as err:
        raise ConfigError(str(err)) from None


# Each setting's parser by its .env name: what a Batch API line's body settings are read with (parsing.read_items).
SETTING_PARSERS = {s.env: s.parse for s in SETTINGS}


def openai_batch_line(record: dict[str, Any], config: Config, now: float) -> dict[str, Any]:
    """A Batch API output line for one of our lines: a chat completion whose content is the response (a full
    answer, or the short verdict), or an error; our whole line rides along under "moa"."""
    custom_id = str(record["id"])
    line: dict[str, Any] = {"id": "batch_req_" + hashlib.sha256(custom_id.encode("utf-8")).hexdigest()[:24],
                            "custom_id": custom_id, "response": None, "error": None}
    if record["status"] == "ok":
        # Unique per line, as OpenAI's is per request: a question answered again (a rerun, a new batch) is a new one.
        request_id = "req_" + hashlib.sha256(f"{custom_id}\n{now!r}".encode()).hexdigest()[:24]
        line["response"] = {"status_code": 200, "request_id": request_id, "body": {
            "id": "chatcmpl-moa-" + line["id"][10:], "object": "chat.completion", "created": int(now),
            "model": (config.synthesis_model or config.judge_models[0]) if record.get("synthesized")
            else config.judge_models[0],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": record["response"]},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {key: record["usage"][key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
            | {"prompt_tokens_details": {"cached_tokens": record["usage"].get("cached_tokens", 0)}}}}  # as OpenAI says
    else:
        line["error"] = {"code": "debate_failed", "message": record["error"]}
    return line | {"moa": record}


def input_line_limit(config: Config) -> int:
    """The longest questions-file line that can hold an acceptable question: a
    character is at most 12 bytes in JSON (a \\u escaped surrogate pair), plus room for the rest."""
    return 12 * config.max_question_chars + 64 * 1024


def scan_input(path: str, limit: int = 1 << 20) -> tuple[str, int]:
    """(SHA-256, number of question lines) of a questions file, in one streaming pass."""
    digest, count, at_line_start = hashlib.sha256(), 0, True
    with open(path, "rb") as handle:
        while raw := handle.readline(limit):  # bounded: a huge line is read in pieces
            digest.update(raw)
            if at_line_start:
                head = raw.strip()
                count += bool(head) and not head.startswith(b"#")
            at_line_start = raw.endswith(b"\n")
    return digest.hexdigest(), count


def output_records(output: Path) -> Iterator[tuple[bytes | None, dict[str, Any] | None]]:
    """Each line of an earlier output (None: too long to be one of ours) with the record it holds, if any."""
    if what_is_at(output) == "nothing":
        return
    with read_file(output) as handle:
        for raw in bounded_lines(handle, MAX_OUTPUT_LINE_BYTES):
            yield raw, result_record(raw) if raw is not None else None


def compact_output(output: Path, runtime: Runtime, line_format: str) -> tuple[set[str], set[str], int]:
    """Keep the complete "ok" lines of an earlier output, once per id; returns (ids done, ids with a failed line,
    lines dropped). A whole line that is not one of our records means -o names someone's notes: ConfigError."""
    if what_is_at(output) == "nothing":
        return set(), set(), 0
    done, failed, dropped = set[str](), set[str](), 0

    def fill(fd: int) -> None:
        nonlocal dropped
        for number, (raw, record) in enumerate(output_records(output), 1):
            if raw is None or (record is None and raw.endswith(b"\n")):
                raise ConfigError(f"--output {output} is not a results file of this tool (line {number} is not "
                                  "one of its lines); nothing was changed: choose another output")
            # "output_format": set on our openai-batch lines as they are read; a jsonl line's "format" is RunRecord's
            if record is not None and record.get("output_format", "jsonl") != line_format:
                raise ConfigError(f"--output {output} holds --output-format {record.get('output_format', 'jsonl')} "
                                  f"lines (line {number}); resume with that format, or choose another output")
            if record is None or record.get("status") != "ok" or str(record.get("id")) in done:
                dropped += 1
                if record is not None and record.get("status") == "failed":
                    failed.add(str(record["id"]))
                continue
            done.add(str(record["id"]))
            write_all(runtime, fd, raw)

    replace_atomically(output, fill)
    return done, failed - done, dropped


def move_aside(output: Path, now: float) -> Path | None:
    """--no-resume: rename the old output (and its summary) out of the way; never delete, never move a link."""
    old = [path for path in (output, _sidecar(output, ".summary.json")) if what_is_at(path) == "file"]
    if not old:
        return None
    stamp = datetime.fromtimestamp(now).strftime("%Y%m%d_%H%M%S")
    for n in itertools.count():
        target = output.with_name(f"{output.name}.{stamp}{f'_{n}' if n else ''}.bak")
        if not (os.path.lexists(target) or os.path.lexists(_sidecar(target, ".summary.json"))):
            break
    for path in old:  # the output, and <output>.summary.json to <target>.summary.json
        os.replace(path, _sidecar(target, path.name[len(output.name):]))
    return target


def batch_record(item: BatchItem, record: RunRecord) -> dict[str, Any]:
    """The output line for one question: its id, the --json object, and any expected answer with whether
    the verdict matches it. Lines before schema_version 1 said "tokens" and "tokens_estimated" for
    usage's total_tokens and estimated: resume reads only id, status, expected and correct, so it reads them too."""
    line = {"id": item.id} | record.to_dict()
    if item.expected is not None:  # a whole response is not checked against it: correct is null
        line["expected"] = item.expected
        line["correct"] = None if record.answer_shape == "full" else record.final_answer is not None and \
            answers_match(item.question, record.final_answer, item.expected)
    return line


@dataclass
class BatchStats:
    """What one batch run did: the counts are the summary's this_run, in its order (batch_summary)."""

    ok: int = 0
    failed: int = 0
    skipped_done: int = 0
    input_errors: int = 0
    unsaved: int = 0  # finished, but its line could not be written: it runs again on resume
    degraded: int = 0  # ok, but answered with fewer calls than planned
    doubtful: int = 0  # ok, but with doubts (RunRecord.doubts)
    llm_calls: int = 0
    http_requests: int = 0
    tokens: int | None = None
    cached_tokens: int = 0
    cache_hits: int = 0  # replies the response cache served (Usage.cache_hits)
    cost_usd: float | None = None
    cost_source: str | None = None  # whose figures cost_usd adds up (Usage.cost_source)
    uncosted: int = 0  # questions that billed tokens with no cost: then the run has none (a sum would understate)
    interrupted: bool = False
    breaker: str | None = None
    aborted: str | None = None
    first_errors: list[str | None] = field(default_factory=list)  # see same_error_everywhere

    def add(self, record: dict[str, Any], saved: bool = True) -> None:
        """Count one question's line, and what it cost whether or not it was saved."""
        if not saved:
            self.unsaved += 1
        elif record["status"] == "ok":
            self.ok += 1
            self.degraded += bool(record.get("degraded"))
            self.doubtful += bool(record.get("doubts"))
        else:
            self.failed += 1
        self.llm_calls += record["llm_calls"]
        self.http_requests += record["http_requests"]
        if record["usage"]["total_tokens"]:
            self.tokens = (self.tokens or 0) + record["usage"]["total_tokens"]
        self.cached_tokens += record["usage"].get("cached_tokens", 0)
        self.cache_hits += record["usage"].get("cache_hits", 0)
        self.uncosted += record["cost_usd"] is None and record["usage"]["total_tokens"] > 0
        if record["cost_usd"] is not None and not self.uncosted:
            self.cost_usd = round((self.cost_usd or 0) + record["cost_usd"], 6)
            # A $0 question (served whole by the response cache) adds no figure: it says nothing of whose the sum is.
            source = record["usage"].get("cost_source") if record["cost_usd"] else None
            self.cost_source = cost_source([self.cost_source, source])
        self.cost_usd, self.cost_source = (None, None) if self.uncosted else (self.cost_usd, self.cost_source)


def output_totals(output: Path) -> dict[str, Any]:
    """Counts over the whole output file (earlier runs too): parsing.result_totals of its records."""
    return result_totals(record for _, record in output_records(output) if record is not None)


class Progress:
    """A live tqdm bar on a terminal; one plain line per question otherwise (cron)."""

    def __init__(self, total: int | None, stream: Any, secrets: Sequence[str]) -> None:
        self.secrets = secrets
        self.bar: Any = None  # none when stderr is no terminal, or closed (None)
        if stream is not None and not stream.closed and stream.isatty():
            from tqdm import tqdm  # here: tqdm costs every start 13 ms, and only a batch on a terminal draws a bar

            self.bar = tqdm(total=total, file=stream, unit="q", dynamic_ncols=True)

    def finished(self, record: dict[str, Any], stats: BatchStats) -> None:
        if self.bar is not None:
            self.bar.set_postfix(ok=stats.ok, failed=stats.failed, refresh=False)
            self.bar.update(1)
            return
        answer = record["response"] if record["status"] == "ok" else record["error"]
        # One line per question, whatever the answer holds: a model's newline or escape must not forge cron log lines.
        say(f"{shown_id(record['id'])} {record['status']} {printable(answer)} {record['elapsed_s']:.1f}s", self.secrets)

    def skipped(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def same_error_everywhere(result: RunRecord, stats: BatchStats, failed_before: bool = False) -> str | None:
    """Why the batch stops when the first SAME_ERROR_QUESTIONS questions to finish all failed with one
    lasting error, none succeeding: a wrong key behind a gateway ("HTTP 400: No connected db."), a
    mistyped model. One 400 can be its question's fault (a prompt too long), two alike chance; three,
    with none answered, is the set-up, and stopping costs three questions where going on costs all.
    A question that ``failed_before`` (in an earlier run) and fails again is not weighed: that may be
    its own fault, and a resume must get past the first questions when they alone cannot be answered.
    A lasting error: the one a failed question ended on if no retry was made for it and it is no outage (a 400, a
    422), each word holding a digit (a count, an id) made "#" so two questions' compare. A refusal came in a 2xx:
    the key, the URL and the model work, and what was refused is the question's own."""
    if len(stats.first_errors) >= SAME_ERROR_QUESTIONS or (failed_before and result.status != "ok"):
        return None
    cause = result.exception.cause if isinstance(result.exception, RunFailed) else None
    lasting = cause and not (cause.retryable or cause.outage or cause.backpressure or 200 <= (cause.status or 0) < 300)
    stats.first_errors.append(re.sub(r"\S*\d\S*", "#", str(cause)) if lasting else None)
    alike = set(stats.first_errors)
    if len(stats.first_errors) < SAME_ERROR_QUESTIONS or len(alike) > 1 or None in alike:
        return None
    return (f"the first {SAME_ERROR_QUESTIONS} questions all failed with the same error, and none succeeded: "
            f"{printable(result.error)}; every question would: check the key (API_KEY), the model "
            "name (MODEL_NAME) and PROXY_URL, or run --check, then rerun to resume")


def drop_run_files(result: RunRecord, question: str, place: LogPlace) -> None:
    """--logs failed, once a question is ok: its run's files go, and those its earlier runs left at the names
    before it (stem, stem_1, … up to the first free one) that hold this question (as written: masked)."""
    for name in filter(None, (result.transcript, result.trace)):
        with contextlib.suppress(OSError):
            unlink_in(Path(name), place.folder_fd)
    for n in range(MAX_NAME_TRIES):
        base = place.stem if n == 0 else f"{place.stem}_{n}"
        present = [path for path in (place.directory / f"{base}.txt", place.directory / f"{base}.jsonl")
                   if what_is_at(path, place.folder_fd) != "nothing"]
        if not present:
            return
        if holds_question(place, base, question):
            for path in present:
                with contextlib.suppress(OSError):
                    unlink_in(path, place.folder_fd)


def holds_question(place: LogPlace, base: str, question: str) -> bool:
    """Whether the run files named ``base`` are a run of ``question``: its trace's run line, else its transcript's
    question block says so, or a killed run left it unfilled (in the batch's folder, at this id's name)."""
    limit = 12 * len(question) + RUN_HEAD_BYTES  # a character escaped as a surrogate pair takes 12
    try:
        with read_file(place.directory / f"{base}.jsonl", folder_fd=place.folder_fd) as trace:
            head = trace.readline(limit)
    except FileNotFoundError:
        head = b""
    except OSError:
        return False
    if head:
        with contextlib.suppress(ValueError):
            record = load_json(head)
            return isinstance(record, dict) and record.get("type") == "run" and record.get("question") == question
        return False
    block = f"\n=== Question ===\n{question}\n\n=== Configuration ===\n".encode("utf-8", errors="replace")
    unfinished = UNFINISHED_TRANSCRIPT.partition("{where}")[0].encode()
    with (contextlib.suppress(OSError),
          read_file(place.directory / f"{base}.txt", folder_fd=place.folder_fd) as transcript):
        text = transcript.read(limit)
        return block in text or text.startswith(unfinished) or not text
    return False


class BatchRun:
    """One batch run: reads items, keeps --concurrency questions in flight, writes results."""

    def __init__(self, config: Config, options: BatchOptions, runtime: Runtime, start: BatchStart,
                 progress: Progress, folder_fd: int | None = None) -> None:
        if options.logs == "none":
            config = replace(config, enable_file_logging=False, enable_jsonl_trace=False)
        self.config, self.options, self.runtime = config, options, runtime
        self.log_folder, self.folder_fd = batch_log_folder(config, options.output), folder_fd
        self.done, self.failed_before, self.progress = start.done, start.failed, progress
        # signalled: Ctrl-C, SIGTERM or SIGHUP, after which the questions in flight get a grace period
        self.stats, self.stop, self.signalled = BatchStats(), asyncio.Event(), asyncio.Event()
        self.tasks, self.seen = set[asyncio.Task[None]](), set[str]()

    def on_signal(self, number: int = signal.SIGINT) -> None:
        if self.stats.interrupted:  # a second Ctrl-C: stop now
            if number != signal.SIGHUP:  # a closing terminal sends it twice (kernel, then shell): no hurry
                for task in self.tasks:
                    task.cancel()
            return
        self.stats.interrupted = True
        self.stop.set()
        self.signalled.set()
        say(f"\nstopping: no new questions; {len(self.tasks)} in flight get {STOP_GRACE_SECONDS:g}s to finish "
            "(Ctrl-C again to stop now)", ())

    def config_of(self, item: BatchItem) -> Config:
        """The settings ``item`` runs with: the batch's, and its own (a Batch API line's model, temperature ...)."""
        return replace(self.config, **dict(item.settings)) if item.settings else self.config

    async def one(self, item: BatchItem, endpoint: Endpoint, writer: ResultWriter) -> None:
        """One question: run it, save its line, and decide whether its outcome stops the batch. Nothing escapes but a
        cancellation: an exception left in a task would surface only as "Task exception was never retrieved"."""
        run = Handover(run_record(self.config_of(item), item.question))
        QUESTION_ID.set(shown_id(item.id))
        place = LogPlace(self.log_folder, safe_name(item.id), self.folder_fd)
        try:
            await answer_question(self.config_of(item), item.question, endpoint, self.runtime, run, place=place,
                                  strategy=self.options.strategy)
        except asyncio.CancelledError as err:
            # What it cost is still counted, and the line says so; resume runs it again.
            self.save(item, run.record.ended(err, "interrupted before it finished; it runs again on resume"), writer)
            raise
        except Exception as err:  # a bug must cost one question, not the batch or the result
            run.record = run.record.ended(err)
        if self.options.logs == "failed" and run.record.status == "ok":
            drop_run_files(run.record, redact(item.question, self.config.secrets), place)
            run.record = replace(run.record, transcript=None, trace=None)
        self.save(item, run.record, writer)
        self.stop_if_hopeless(run.record, item.id in self.failed_before)

    def stop_if_hopeless(self, result: RunRecord, failed_before: bool = False) -> None:
        """Stop when a question's end says the rest would fail alike: a stalled endpoint opens the breaker
        (exit 75: later it may answer). A rejected key, a wrong URL or model, a quota used up, or an endpoint
        that never answered before any question succeeded aborts (exit 1); a 400 can be one question's fault,
        so it aborts only as same_error_everywhere says."""
        error = result.exception
        if isinstance(error, EndpointStalled):
            self.stats.breaker = self.stats.breaker or f"{error}; no new question started (a rerun resumes)"
            self.stop.set()
            return
        unreachable = isinstance(error, EndpointUnreachable) and not self.stats.ok
        why = (str(error) if isinstance(error, APIError) and error.stops_run
               else f"the endpoint is unreachable: {error}" if unreachable
               else same_error_everywhere(result, self.stats, failed_before))
        if why and not self.stats.aborted:
            self.stats.aborted = why
            self.stop.set()

    def save(self, item: BatchItem, result: RunRecord, writer: ResultWriter) -> None:
        """Write the question's line and count it; a failed write stops the batch."""
        record = batch_record(item, result)
        line = (openai_batch_line(record, self.config_of(item), self.runtime.wall_clock())
                if self.options.output_format == "openai-batch" else record)
        try:
            writer.write(line)
        except OSError as err:
            self.stats.add(record, saved=False)
            self.stop_writing(f"could not write {writer.path} ({describe_os_error(err)})")
            return
        self.stats.add(record)
        if result.write_error:
            self.stop_writing(result.write_error)
        with contextlib.suppress(OSError, ValueError):  # stderr gone (closed, a broken pipe): the output line counts
            self.progress.finished(record, self.stats)

    def stop_writing(self, why: str) -> None:
        """A failed write: start no new question (the first reason stands); what is written stays intact."""
        self.stats.aborted = self.stats.aborted or (f"{why}: stopped starting questions; every line already in "
                                                    "the output is intact; free space (or fix the folder), "
                                                    "then rerun to resume")
        self.stop.set()

    def admit(self, item: BatchItem | BadLine) -> BatchItem | None:
        """The item if it should run now; input errors and done ids are counted and passed over."""
        shard = self.options.shard
        if isinstance(item, BadLine):
            if shard is None or shard.index == 1:  # one shard reports a bad line, not all of them
                self.stats.input_errors += 1
                say(f"input line {item.line}: {item.reason}; skipped", self.config.secrets)
            return None
        if shard is not None and not shard.holds(item.id):
            return None
        if item.id in self.seen:
            self.stats.input_errors += 1
            say(f"input line {item.line}: id {shown_id(item.id)!r} appears again; skipped", self.config.secrets)
            return None
        self.seen.add(item.id)
        if item.id in self.done:
            self.stats.skipped_done += 1
            self.progress.skipped()
            return None
        return item

    async def run(self, items: Iterable[BatchItem | BadLine], endpoint: Endpoint, writer: ResultWriter) -> None:
        for entry in items:
            if endpoint.failing() and not self.stats.aborted:
                self.stats.breaker = (f"the endpoint is failing ({sum(endpoint.recent_calls)} of the last "
                                      f"{BREAKER_WINDOW} calls failed after every retry): stopped starting questions; "
                                      "rerun to resume")
                self.stop.set()
            if self.stop.is_set():
                break
            if (item := self.admit(entry)) is None:
                continue
            await self.until(self.stop.wait(), room=self.options.concurrency - 1)
            if self.stop.is_set():
                break
            task = asyncio.create_task(self.one(item, endpoint, writer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        await self.drain()

    async def until(self, waiter: Awaitable[Any], room: int = 0) -> None:
        """Until at most ``room`` questions are in flight or ``waiter`` is done (then it is cancelled)."""
        done = asyncio.ensure_future(waiter)
        while len(self.tasks) > room and not done.done():
            await asyncio.wait(self.tasks | {done}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()

    async def drain(self) -> None:
        """Wait for in-flight questions; once a signal came (before or during the wait), one grace period at most.
        Only a signal ends the wait early: an abort's stop is already set, and waiting on it would spin."""
        await self.until(self.signalled.wait())
        if self.tasks:
            await self.until(self.runtime.sleep(STOP_GRACE_SECONDS))
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)


def open_questions(name: str, stdin: Any) -> Any:
    if name == "-":
        return stdin_bytes(stdin)
    try:
        return open(name, "rb")
    except OSError as err:
        raise ConfigError(f"--questions-file {name}: cannot open it ({err.strerror})") from None


def check_input_unchanged(summary_path: Path, input_sha: str | None, force: bool) -> None:
    """Refuse to resume against a different questions file, unless --force."""
    if input_sha is None or force:
        return
    try:
        with read_file(summary_path) as handle:
            previous = load_json(handle.read(SUMMARY_READ_LIMIT)).get("input_sha256")
    except (OSError, ValueError, AttributeError):
        return  # no summary, or not one we wrote (a FIFO, a link): nothing to compare
    if previous and previous != input_sha:
        raise ConfigError(f"the questions file changed since the run that wrote {summary_path.name} "
                          "(SHA-256 differs): resume with --force, or start over with --no-resume")


@dataclass(frozen=True)
class BatchStart:
    """What is known before the first question runs: the input's hash and size, the ids already done."""

    input_sha: str | None
    total: int | None
    done: set[str]
    failed: set[str] = field(default_factory=set)  # ids an earlier run failed (see same_error_everywhere)


def batch_log_folder(config: Config, output: Path) -> Path:
    """LOG_DIR/<output stem>-<hash of the output's resolved path>: two outputs named alike in two folders never
    share a folder, and a resume (from any working folder, through any link) finds its own."""
    where = hashlib.sha256(os.fsencode(output.resolve())).hexdigest()[:8]
    return Path(config.log_dir) / f"{safe_name(output.stem)}-{where}"


def unusable_path(err: OSError, what: str, fix: str) -> MoAError:
    """A path the batch must write, unusable before its first request: ConfigError, but a full disk stays exit 1."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return MoAError(f"cannot write {what} ({describe_os_error(err)}); nothing was sent: free space, then rerun")
    return ConfigError(f"cannot write {what} ({describe_os_error(err)}); nothing was sent: {fix}, then rerun")


def open_log_folder(config: Config, options: BatchOptions) -> int | None:
    """The batch's log folder, made if need be and opened once, so a link planted at its name later cannot redirect
    its files; a link already there is refused (LOG_DIR itself may be one). None when no file is written."""
    if options.logs == "none" or not (config.enable_file_logging or config.jsonl_trace):
        return None
    folder = batch_log_folder(config, options.output)
    try:
        make_log_folders(config, folder)
        fd = open_folder(folder)
    except LinkRefused:
        raise ConfigError(f"the batch's log folder {folder} is a symbolic link; transcripts go only into a "
                          "folder this tool made: remove the link, or set LOG_DIR elsewhere") from None
    except OSError as err:
        raise unusable_path(err, f"the batch's log folder {folder}", f"set LOG_DIR (now {config.log_dir}) to a "
                            "folder this user can write, or use --logs none") from None
    if not os.access(folder, os.W_OK | os.X_OK):  # there, but read-only (for root: a read-only mount)
        os.close(fd)
        raise unusable_path(PermissionError(errno.EACCES, "it is read-only"), f"the batch's log folder {folder}",
                            f"make it writable, set LOG_DIR (now {config.log_dir}) elsewhere, or use --logs none")
    return fd


def write_summary(path: Path, summary: dict[str, Any], runtime: Runtime) -> None:
    data = json.dumps(summary, indent=2).encode()
    replace_atomically(path, lambda fd: write_all(runtime, fd, data))


async def run_questions(stdin: Any, batch: BatchRun, writer: ResultWriter) -> None:
    """The batch loop, with Ctrl-C, SIGTERM and SIGHUP turned into a graceful stop for its duration."""
    config, options = batch.config, batch.options
    stream = open_questions(options.questions_file, stdin)
    try:
        with signals_handled([signal.SIGINT, *stop_signals()], batch.on_signal):
            async with contextlib.aclosing(Endpoint(config, open_client(config), batch.runtime)) as endpoint:
                lines = bounded_lines(stream, input_line_limit(config))
                items = read_items(lines, input_format(options.questions_file), config.max_question_chars,
                                   config.secrets, SETTING_PARSERS)
                await batch.run(items, endpoint, writer)
    finally:
        batch.progress.close()
        if options.questions_file != "-":
            stream.close()


def sweep_leftovers(output: Path, folder_fd: int | None, runtime: Runtime) -> None:
    """What our killed runs left, swept under the lock. Housekeeping: a failed sweep never stops the batch."""
    with contextlib.suppress(OSError):
        for path in stale_temporaries(output):
            with contextlib.suppress(OSError):
                os.unlink(path)
                log.info("removed %s, a temporary copy a killed run left", path)
        if folder_fd is not None:
            note_unfinished_transcripts(folder_fd, runtime)


def start_batch(config: Config, options: BatchOptions, runtime: Runtime,
                folder_fd: int | None) -> tuple[BatchStart, dict[str, Any], ResultWriter]:
    """Under the lock, before the first request, in this order: leftovers swept, the input hashed, the earlier output
    compacted (or moved aside), summary and output opened. A path that cannot be written stops the batch, named."""
    sweep_leftovers(options.output, folder_fd, runtime)  # first: stale copies of the output may fill the disk
    try:
        input_sha, total = ((None, None) if options.streamed
                            else scan_input(options.questions_file, input_line_limit(config)))
    except OSError as err:
        raise ConfigError(f"--questions-file {options.questions_file}: cannot read it "
                          f"({describe_os_error(err)})") from None
    try:
        if options.resume:
            check_input_unchanged(_sidecar(options.output, ".summary.json"), input_sha, options.force)
        elif moved := move_aside(options.output, runtime.wall_clock()):
            log.warning("--no-resume: the old output was moved to %s", moved)
        done, failed, dropped = compact_output(options.output, runtime, options.output_format)
        if done or dropped:
            log.info("resuming: %d questions already done; %d failed or torn lines will run again", len(done), dropped)
        start = BatchStart(input_sha, total, done, failed)
        started = datetime.fromtimestamp(runtime.wall_clock()).isoformat(timespec="seconds")
        summary: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "status": "running",
                                   "input": options.questions_file, "input_sha256": start.input_sha,
                                   "output": str(options.output),
                                   "shard": str(options.shard) if options.shard else None, "started": started}
        write_summary(_sidecar(options.output, ".summary.json"), summary, runtime)
        return start, summary, ResultWriter(options.output, runtime)
    except OSError as err:
        path = err.filename2 or err.filename or options.output  # os.replace's target is the file we meant
        raise unusable_path(err, str(path), "fix it, or choose another -o") from None


async def run_batch(config: Config, options: BatchOptions, runtime: Runtime, stdin: Any) -> dict[str, Any]:
    """Run a whole batch under the output's lock; returns the summary (also written to <output>.summary.json)."""
    summary_path = _sidecar(options.output, ".summary.json")
    lock = acquire_lock(options.output)
    folder_fd = None
    try:
        folder_fd = open_log_folder(config, options)
        start, summary, writer = start_batch(config, options, runtime, folder_fd)
        started = runtime.clock()
        total = start.total if options.shard is None else None  # a shard's share is known only as it is read
        batch = BatchRun(config, options, runtime, start, Progress(total, sys.stderr, config.secrets), folder_fd)
        try:
            await run_questions(stdin, batch, writer)
        finally:
            writer.close()
        summary.update(batch_summary(batch.stats, options.output, runtime.clock() - started))
        try:
            write_summary(summary_path, summary, runtime)
        except OSError as err:  # the results are safe in the output; only the summary file is missing
            if not batch.stats.aborted:
                batch.stats.aborted = (f"could not write the summary {summary_path} ({describe_os_error(err)}); "
                                       "the output is intact")
                summary.update(status="aborted", error=batch.stats.aborted)
        return summary
    finally:
        if folder_fd is not None:
            os.close(folder_fd)
        os.close(lock)


def batch_summary(stats: BatchStats, output: Path, wall_s: float) -> dict[str, Any]:
    status = ("aborted" if stats.aborted else "interrupted" if stats.interrupted
              else "circuit_open" if stats.breaker else "finished")
    ending = ("interrupted", "breaker", "aborted", "first_errors")  # how the run ended, not what it counted
    this_run = {k: v for k, v in asdict(stats).items() if k not in ending} | {"wall_s": round(wall_s, 3)}
    return {"status": status, "error": stats.aborted or stats.breaker, "this_run": this_run,
            "output_totals": output_totals(output), "finished": datetime.now().isoformat(timespec="seconds")}


def human_batch_summary(summary: dict[str, Any]) -> str:
    run, totals = summary["this_run"], summary["output_totals"]
    said = [f"{run['degraded']} answered with fewer calls than planned"] if run.get("degraded") else []
    said += [f"{run['doubtful']} with doubts (each line's doubts)"] if run.get("doubtful") else []
    fewer = f" ({'; '.join(said)})" if said else ""
    lines = [f"Batch {summary['status']}: {run['ok']} ok{fewer}, {run['failed']} failed, "
             f"{run['input_errors']} input errors, {run['skipped_done']} already done"
             + (f", {run['unsaved']} not saved" if run.get("unsaved") else ""),
             f"{run['llm_calls']} LLM calls, {run['http_requests']} HTTP requests{served(run.get('cache_hits'))}"
             + (f", {run['tokens']} tokens" if run["tokens"] is not None else "")
             + (f" ({run['cached_tokens']} prompt tokens cached)" if run.get("cached_tokens") else "")
             + (f", {cost}" if (cost := said_cost(run.get("cost_usd"), run.get("cost_source"))) else "")
             + f", {run['wall_s']:.1f}s",
             f"Output: {summary['output']} ({totals['ok']} ok, {totals['failed']} failed in all)"]
    left_out = f" ({totals['failed_with_expected']} failed, not counted)" if totals["failed_with_expected"] else ""
    if totals["accuracy"] is not None:
        lines.append(f"Accuracy: {totals['correct']}/{totals['with_expected']} answered = "
                     f"{100 * totals['accuracy']:.1f}%{left_out}")
    elif left_out:
        lines.append(f"Accuracy: no question with an expected answer was answered{left_out}")
    if summary.get("error"):
        lines.append(f"Stopped early: {summary['error']}")
    return "\n".join(lines)


def check_batch_paths(questions_file: str, output: Path, cache: Path | None = None) -> None:
    """ConfigError when the batch would write through a link, or over its own input or ``cache``: compared by device
    and inode, so a symlink, a hard link or a ``./`` spelling of the questions file is caught like its name."""
    try:
        kind = what_is_at(output)
        source = os.fstat(sys.stdin.fileno()) if questions_file == "-" else os.stat(questions_file)
    except (OSError, ValueError, AttributeError) as err:
        if questions_file == "-" and not isinstance(err, PermissionError):
            return  # no stdin file to compare: a terminal or a closed stream
        why = describe_os_error(err) if isinstance(err, OSError) else err
        raise ConfigError(f"--output {output}: cannot look at it ({why})") from None
    if kind == "link":
        raise ConfigError(f"--output {output} is a symbolic link: give the real path "
                          "(nothing is written through links)")
    if kind == "other":
        raise ConfigError(f"--output {output} is not a regular file")
    for path in (output, _sidecar(output, ".lock"), _sidecar(output, ".summary.json")):
        if cache and os.path.realpath(cache) == os.path.realpath(path):  # a new output: SQLite would write over it
            raise ConfigError(f"CACHE_PATH={cache} is the batch's {path}: the cache would destroy it; choose another")
        with contextlib.suppress(OSError):  # a path not there (or not to be looked at) is not the input
            if os.path.samestat(source, os.stat(path)):
                what = "the questions file " + ("on stdin" if questions_file == "-" else questions_file)
                raise ConfigError(f"--output {output}: {path} is {what} itself; writing "
                                  "there would destroy the questions: choose another output")


def batch_exit_code(summary: dict[str, Any]) -> int:
    """A breaker's stop is 75, "try again later": the next cron run resumes."""
    stopped = {"aborted": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED, "circuit_open": EXIT_TRY_LATER}
    run = summary["this_run"]
    return stopped.get(summary["status"], EXIT_SOME_FAILED if run["failed"] or run["input_errors"] else EXIT_OK)


# --eval: each strategy is one batch of the gold questions into FOLDER/<strategy>.jsonl, resumable, lockable,
# shardable and budgeted like any batch; the report is read back from those files, so a rerun resumes and a
# report made after the last shard covers every shard's questions.

DEFAULT_STRATEGIES = "single,single-contract,vote@5,debate"


@dataclass(frozen=True)
class EvalOptions:
    """--eval's flags, checked in main(): the folder the strategies' outputs go to, the batch flags."""

    folder: Path
    strategies: tuple[Strategy, ...]
    batch: BatchOptions  # its questions file is the gold file; its output the first strategy's (see output_for)
    gold_ids: frozenset[str]  # the questions that carry an answer: the report scores these

    def output_for(self, strategy: Strategy) -> Path:
        path = self.folder / f"{strategy.name}.jsonl"
        return self.batch.shard.output(path) if self.batch.shard else path

    def lines_of(self, strategy: Strategy) -> dict[str, dict[str, Any]]:
        """The complete lines for ``strategy``, by id: of every shard of this run's split, or of the unsharded file.
        Only this layout's files: an unsharded --no-resume rerun must not be overridden by an older split's lines."""
        unsharded, shard = self.folder / f"{strategy.name}.jsonl", self.batch.shard
        paths = [Shard(k, shard.count).output(unsharded) for k in range(1, shard.count + 1)] if shard else [unsharded]
        lines: dict[str, dict[str, Any]] = {}
        for path in paths:
            try:  # another shard's file a link or unreadable: this shard's report still stands, without it
                lines |= {r["id"]: r for _, r in output_records(path) if r is not None and "id" in r}
            except OSError as err:
                say(f"warning: eval: the report leaves out {path} ({describe_os_error(err)})", ())
        return lines


def eval_report(options: EvalOptions, gold_ids: Collection[str]) -> dict[str, Any]:
    """The report over the gold questions answered so far: a row per strategy, each paired with single, the most
    accurate, the best per call, and the closing line."""
    lines = {s.name: {i: r for i, r in options.lines_of(s).items() if i in gold_ids} for s in options.strategies}
    rows = [strategy_score(name, by_id, lines.get("single")) for name, by_id in lines.items()]
    return {"schema_version": SCHEMA_VERSION, "gold": options.batch.questions_file, "folder": str(options.folder),
            "questions": len(gold_ids), "strategies": rows, **eval_verdict(rows, lines)}


def gold_ids(config: Config, gold: str) -> frozenset[str]:
    """The ids of the gold file's questions that carry an answer; ConfigError, before anything is sent, for none."""
    try:
        with read_file(Path(gold), follow=True) as handle:
            items = read_items(bounded_lines(handle, input_line_limit(config)), input_format(gold),
                               config.max_question_chars, config.secrets, SETTING_PARSERS)
            ids = {item.id for item in items if isinstance(item, BatchItem) and item.expected is not None}
    except OSError as err:
        raise ConfigError(f"--eval {gold}: cannot read it ({describe_os_error(err)})") from None
    if not ids:
        raise ConfigError(f"--eval {gold}: no question in it has an answer to score against: give JSONL lines "
                          'with "id", "question" and "answer"')
    return frozenset(ids)


async def run_eval(config: Config, options: EvalOptions, runtime: Runtime) -> tuple[dict[str, Any], int, str | None]:
    """Each strategy's batch in turn, then the report (also FOLDER/report.md): (report, exit code, error). A batch
    that stops (interrupted, aborted, the breaker) stops the eval there, with that batch's exit code; the report
    covers what is done, and rerunning the command resumes."""
    code, error = EXIT_OK, None
    for number, strategy in enumerate(options.strategies, 1):
        output = options.output_for(strategy)
        say(f"eval: {strategy.name} ({number}/{len(options.strategies)}) -> {output}", config.secrets)
        summary = await run_batch(config, replace(options.batch, output=output, strategy=strategy), runtime, None)
        code = max(code, batch_exit_code(summary))
        if summary["status"] != "finished":
            code, error = batch_exit_code(summary), f"{strategy.name}: {summary['error'] or summary['status']}"
            break
    report = eval_report(options, options.gold_ids)
    try:
        text = markdown_report(report, config.model_name).encode()
        replace_atomically(options.folder / "report.md", lambda fd: write_all(runtime, fd, text))
    except OSError as err:
        error = error or f"could not write {options.folder}/report.md ({describe_os_error(err)}); results intact"
        code = max(code, EXIT_SOME_FAILED)
    return report, code, error


# --- 15. CLI -------------------------------------------------------------------------------------

HELP_EPILOG = ("examples:\n"
               '  %(prog)s -q "What is 17 * 23?"               # a verdict and its solution\n'
               '  %(prog)s -q "Write a function that merges two sorted lists" --stream\n'
               "                                         # a whole response: ranked, synthesized, streamed\n"
               '  echo "What is 17 * 23?" | %(prog)s -q - --json\n'
               "  %(prog)s -f questions.jsonl -o results.jsonl --concurrency 4\n"
               '  %(prog)s -q "..." --max-calls 8 --dry-run\n'
               "  %(prog)s --replay logs/moa_run_20260101_120000.jsonl --from judges\n"
               "commands (the first word):\n"
               "  %(prog)s config [--json]   each setting's value and where it came from\n"
               "  %(prog)s init              write a commented per-user settings file\n"
               "  %(prog)s cache [clear]     the response cache's size, entries and hits; clear empties it\n"
               "settings: flags > environment > --env-file or $MOA_ENV_FILE > ./.env > the per-user\n"
               "  file (%(prog)s config names it) > defaults.\n"
               "exit codes: 0 verdict (batch: all ok), 1 run failed (batch: could not go on),\n"
               "  2 usage or configuration error, 3 batch finished with failed questions or bad\n"
               "  input lines, 75 try later (batch output locked by another run, or the endpoint\n"
               "  is down or accepts nothing: the breaker stopped the batch), 130 interrupted "
               "(Ctrl-C, SIGTERM, SIGHUP).")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is our one line, ``error: ...``, exit 2; the whole usage is in --help."""

    def error(self, message: str) -> NoReturn:
        say(f"error: {message} (see --help)", ())
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=command_name(), epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Answer a question with a debate among LLM calls: generate, critique, rebut, judge (vote or rank), "
                    "and for a whole response, synthesize.")
    add_source_flags(parser)
    batch = parser.add_argument_group("batch mode (with -f)")
    batch.add_argument("-o", "--output", metavar="PATH", help="JSONL results, one line per question (required with -f)")
    batch.add_argument("--concurrency", metavar="N", type=int,
                       help=f"questions in flight at once (default {DEFAULT_CONCURRENCY})")
    batch.add_argument("--no-resume", action="store_true",
                       help="start over: move the old output aside instead of skipping its finished questions")
    batch.add_argument("--force", action="store_true", help="resume even though the questions file changed")
    batch.add_argument("--output-format", choices=("jsonl", "openai-batch"),
                       help="jsonl (default): this tool's lines; openai-batch: OpenAI Batch API output lines")
    batch.add_argument("--logs", choices=("all", "failed", "none"),
                       help="transcripts and traces of: every question (all, the default), failed ones, none")
    batch.add_argument("--shard", metavar="K/N",
                       help="run only shard K of N (by a hash of each id), into OUTPUT.K-of-N.jsonl; "
                            "auto/N takes K from a Slurm array task id or a Kubernetes Indexed Job index")
    batch.add_argument("--strategies", metavar="LIST",
                       help=f"with --eval: single, single-contract, vote@K, debate (default {DEFAULT_STRATEGIES})")
    add_debate_flags(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the calls and worst-case tokens and cost per phase; send nothing")
    parser.add_argument("--json", dest="json_output", action="store_true",
                        help="print one JSON object on stdout instead of the human summary")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: a line per attempt and tracebacks of internal errors; -vv: also httpx's own log")
    parser.add_argument("--version", action="version", version=f"moa-pipeline {__version__}")
    return parser


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Where the question comes from: exactly one of -q, -f, --replay."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-q", "--question", help='the question, or "-" to read it from stdin')
    source.add_argument("-f", "--questions-file", metavar="PATH",
                        help='batch mode: a .txt (one question per line) or .jsonl file of questions; "-" for stdin')
    source.add_argument("--check", action="store_true",
                        help="send one tiny request and report reachability, the key, the model and the context")
    source.add_argument("--eval", metavar="GOLD",
                        help="score strategies (--strategies) on a JSONL file of questions with answers; results "
                             "and report.md go to -o FOLDER (default: GOLD.eval); rerun to resume")
    source.add_argument("--replay", metavar="TRACE",
                        help="rebuild a run from its .jsonl trace and run only the phases from --from on")
    parser.add_argument("--from", dest="replay_from", choices=tuple(map(str, REPLAY_STARTS)), metavar="START",
                        help="with --replay: what to run again: critique, rebuttal, round2..round10 (debate "
                             "rounds from that one on), judges, or synthesis (the judges' verdict kept)")


def add_debate_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that set a setting for this run (flag > environment > .env > default); each one's dest is the
    setting's .env name, which is how flag_settings finds them."""
    def value(flags: str, setting: str, text: str, metavar: str = "N") -> None:  # flags: space-separated
        parser.add_argument(*flags.split(), dest=setting, metavar=metavar, help=text)
    def switch(flag: str, setting: str, const: str, text: str) -> None:  # its help ends "(SETTING=const)"
        parser.add_argument(flag, dest=setting, action="store_const", const=const, help=f"{text} ({setting}={const})")

    value("-w --workers", "NUM_WORKERS", "solvers per round (NUM_WORKERS)")
    value("-j --judges", "NUM_JUDGES", "judges (NUM_JUDGES)")
    value("--rounds", "ROUNDS", "debate rounds while the solvers disagree, 1-10 (ROUNDS; 1: no revision round)")
    switch("--no-rebuttal", "ENABLE_REBUTTAL", "false", "skip the rebuttal phase")
    switch("--early-exit", "EARLY_EXIT", "true", "stop after phase 1 when every answer agrees")
    switch("--phase-barriers", "PHASE_BARRIERS", "true", "each phase waits for the whole previous one")
    value("--model", "MODEL_NAME", "model name sent to the endpoint (MODEL_NAME)", "NAME")
    parser.add_argument("--env-file", metavar="PATH", help=f"read settings from PATH (default: ${ENV_FILE_VARIABLE}), "
                        "above ./.env and the per-user file")
    value("--max-calls", "MAX_CALLS", "HTTP requests per question, retries included (MAX_CALLS; 0: no limit)")
    value("--max-tokens", "MAX_TOTAL_TOKENS", "tokens per question (MAX_TOTAL_TOKENS; 0: no limit)")
    value("--deadline", "QUESTION_DEADLINE", "stop a question after this long (QUESTION_DEADLINE; 0: none)", "SECONDS")
    parser.add_argument("--answer", dest="ANSWER_SHAPE", choices=("auto", *SHAPES),
                        help="short: a verdict with its worked solution; full: a whole response (code, prose), "
                             "ranked by the judges; auto (default): as the question asks (ANSWER_SHAPE)")
    parser.add_argument("--synthesize", dest="SYNTHESIZE", choices=("auto", "on", "off"),
                        help="one last call writes the response from the top-ranked candidates; auto (default): "
                             "for full answers only (SYNTHESIZE)")
    parser.add_argument("--stream", dest="STREAM", action="store_const", const="true",
                        help="stream every response (STREAM=true), for proxies that cut long idle requests")


def flag_settings(args: argparse.Namespace) -> dict[str, str]:
    """The settings given as flags, by their .env names (see add_debate_flags)."""
    return {name: value for name, value in vars(args).items() if name.isupper() and value is not None}


def read_question(value: str, max_chars: int) -> str:
    """The question from ``-q``: the text itself, or stdin for ``-``. Stdin is read only as far as
    MAX_QUESTION_CHARS could reach (a UTF-8 character is at most 4 bytes)."""
    if value == "-":
        limit = 4 * max_chars + 4
        try:
            raw = stdin_bytes(sys.stdin).read(limit + 1)
        except OSError as err:
            raise ConfigError(f"cannot read the question from stdin ({err.strerror or err})") from None
        if len(raw) > limit:
            raise ConfigError(f"the question on stdin is more than MAX_QUESTION_CHARS={max_chars} characters: "
                              "shorten it or raise the limit")
        value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = valid_text(value)
    if not text.strip():
        raise ConfigError("the question is empty: pass it with -q \"...\" or pipe it with -q -")
    return text.strip()


class RedactingFilter(logging.Filter):
    """The logs' exit: masks secrets in every record, whatever logged it (httpx too, which we pass no secrets to).
    Logging reaches it only as a filter on the handler: the one place secrets sit in global state."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (masked := redact(message, self.secrets)) != message:
            record.msg, record.args = masked, None
        record.question_id = redact(QUESTION_ID.get(), self.secrets)  # the line's prefix (PlainFormatter)
        return True


class PlainFormatter(logging.Formatter):
    """Progress lines as they are ("critique 5/5 ok 3.2s"); anything else says its level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        question = getattr(record, "question_id", "")  # set, masked, by RedactingFilter
        text = f"{question}: {text}" if question else text
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


def setup_logging(verbosity: int) -> logging.Handler:
    """Logs on the current stderr: phase lines and warnings; -v adds attempts and bugs' tracebacks, -vv httpx's."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PlainFormatter("%(message)s"))
    ours, http = logging.DEBUG if verbosity >= 1 else logging.INFO, logging.DEBUG if verbosity >= 2 else logging.WARNING
    for name, level in {"moa": ours, "httpx": http, "httpcore": http}.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(level)
    return handler


def said_by_the_minority(record: RunRecord) -> list[str]:
    """The human lines for dissent, a split vote and convergence after critique."""
    lines = []
    for entry in record.dissent:
        held = ", ".join(f"{n} {who}{'s' if n != 1 else ''}" for who, n in
                         (("judge", entry["judges"]), ("solver", entry["solvers"])) if n)
        lines.append(f"Also held: {printable(entry['answer'])} ({held})")  # one line each, however it was written
    if record.judges_split:
        lines.append("Judges split: no answer has a majority of the judges.")
    if record.converged_after_critique:
        switched = sum(c["changed"] for c in record.answers)
        lines.append(f"Converged after critique: {switched} of {len(record.answers)} solvers switched to one "
                     "answer; shared errors can look like consensus.")
    return lines


def ranking_lines(record: RunRecord, verdict: Verdict, rerun: str) -> list[str]:
    """A full answer's lines under the response: how far the judges agree on it, the ranking, who wrote it."""
    if not record.ranking:
        judges = record.phases.get(Phase.JUDGE, PhaseCounts(ok=0, failed=0))
        judged = judges["ok"] + judges["failed"]
        why = ("every solver wrote the same response (early exit)" if verdict.source == "unanimous"
               else "no judge gave a usable ranking" if judged else "no judge ran (the budget skipped them)")
        return [f"Confidence: {verdict.confidence}/100, unranked: {why}{rerun}",
                "Synthesized from the candidates" if record.synthesized else "Not synthesized: the first candidate"]
    ranks = "; ".join(f"{s['label']} {s['agent']} {s['score']:.2f} [{s['low']:.2f}, {s['high']:.2f}]"
                      for s in record.ranking)
    return [f"Confidence: {verdict.confidence}/100, {verdict.agreeing}/{verdict.valid} judges ranked it first{rerun}",
            f"Ranking (Borda score, 95% interval): {ranks}",
            "Synthesized from the top-ranked candidates" if record.synthesized
            else f"Not synthesized: the top-ranked candidate ({record.ranking[0]['agent']})"]


def stdout_is_terminal() -> bool:
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return sys.stdout.isatty()
    return False


def human_summary(record: RunRecord, streamed: str = "") -> str:
    """The human summary for stdout (the error goes to stderr); a full response whole, unless ``streamed`` showed it."""
    lines, verdict = list[str](), record.verdict
    rerun = ("" if not record.rerun else ", after a rerun" if record.reported_pass == 2  # whose verdict this is
             else "; a rerun ran, and pass 1's verdict stands")
    if verdict is not None and record.answer_shape == "full":
        # What the stream showed is the response, maybe under a label or in tags that parse_synthesis drops.
        shown = (parse_synthesis(streamed) or "").strip() == (record.response or "").strip() != ""
        # A stream cut at MAX_TOKENS (not retried) stays on the screen: say so, or the response reads as its end.
        unusable = [] if shown or not streamed.strip() else ["", "[that response was not usable; what stands:]"]
        lines += [*unusable, *([] if shown else terminal_lines(record.response or "")), "",
                  *ranking_lines(record, verdict, rerun)]
    elif verdict is not None:
        who = {"judges": "judges", "unanimous": "solvers (unanimous: early exit)"}.get(
            verdict.source, "solvers (no judge's verdict)")
        first, *rest = terminal_lines(verdict.answer) or [""]
        solution = ["  " + line for line in terminal_lines(record.solution or "")]
        lines += [f"Answer: {first}", *rest, *(["Solution:", *solution] if solution else []),
                  f"Confidence: {verdict.confidence}/100, {verdict.agreeing}/{verdict.valid} {who} agree{rerun}",
                  *said_by_the_minority(record)]
    else:
        lines.append("No verdict: the run failed.")
    if record.doubts:  # one plain line: what a reader must know before trusting the answer (RunRecord.doubts)
        lines.append(f"Doubtful: {plain_doubts(record.doubts)}.")
    for phase, counts in record.phases.items():
        if done := counts["ok"] + counts["failed"]:
            lines.append(f"  {PHASE_TITLES[Phase(phase)]:<28} {counts['ok']}/{done} {PHASE_NOUNS[Phase(phase)]}")
    usage = record.usage
    tokens = (f"{usage['total_tokens']} tokens{' (estimated)' if usage['estimated'] else ''}"
              + (f" ({usage['cached_tokens']} prompt tokens cached)" if usage["cached_tokens"] else ""))
    cost = f", {said_cost(usage['cost_usd'], usage.get('cost_source'))}" if "cost_usd" in usage else ""
    lines.append(f"{record.llm_calls} LLM calls, {record.http_requests} HTTP requests"
                 f"{served(usage['cache_hits'])}, {tokens}{cost}, "
                 f"{record.elapsed_s:.1f}s")
    if record.skipped:
        lines.append("Budget limited, skipped: " + "; ".join(record.skipped))
    lines.append(f"Transcript: {record.transcript or 'not written'}")
    return "\n".join(lines)


async def run_cli(config: Config, question: str, runtime: Runtime, run: Handover,
                  replay: Replay | None = None) -> None:
    """One question from the command line; SIGTERM cancels it as Ctrl-C does, and its files keep what was done."""
    task = asyncio.current_task()
    with signals_handled(stop_signals(), lambda _: task.cancel() if task else None):
        try:
            async with contextlib.aclosing(client_endpoint(config, runtime)) as endpoint:
                await debated(config, question, endpoint, runtime, run, replay)
        except MoAError as err:  # the run records its own; one raised before it started is recorded here
            if run.record.error is None:
                run.record = run.record.ended(err)


def batch_options(args: argparse.Namespace, questions_file: str, output_name: str | None,
                  flag: str = "--questions-file", cache: Path | None = None) -> BatchOptions:
    """The batch flags for ``questions_file`` (given as ``flag``) into ``output_name``; ConfigError for bad ones."""
    if not output_name or output_name == "-":  # not stdout: the output is resumed from, so it is a file
        raise ConfigError("-f needs -o PATH: the JSONL file the results go to (and resume from; not stdout)")
    concurrency = DEFAULT_CONCURRENCY if args.concurrency is None else args.concurrency
    if not 1 <= concurrency <= 256:
        raise ConfigError(f"--concurrency {concurrency} is not valid: expected a whole number from 1 to 256")
    if questions_file == "-":
        stdin_bytes(sys.stdin)
    elif not os.path.exists(questions_file) or os.path.isdir(questions_file):
        why = "a folder, not a file" if os.path.isdir(questions_file) else "no such file"
        raise ConfigError(f"{flag} {questions_file}: {why}")
    elif not os.access(questions_file, os.R_OK):
        raise ConfigError(f"{flag} {questions_file}: cannot read it (permission denied)")
    shard = parse_shard(args.shard, os.environ) if args.shard is not None else None
    if Path(output_name).name in ("", ".", ".."):
        raise ConfigError(f"--output {output_name}: expected a file name, not a folder")
    output = shard.output(Path(output_name)) if shard else Path(output_name)
    if not output.parent.is_dir():
        why = "is not a folder" if os.path.lexists(output.parent) else "does not exist"
        raise ConfigError(f"--output {output}: {output.parent} {why}: create the folder, or choose another -o")
    check_batch_paths(questions_file, output, cache)
    return BatchOptions(questions_file, output, concurrency, not args.no_resume, args.force, shard,
                        args.output_format or "jsonl", args.logs or "all")


def eval_options(args: argparse.Namespace, config: Config) -> EvalOptions:
    """--eval's plan: the strategies, and FOLDER made (a link or a file there is refused); nothing sent yet."""
    if config.answer_shape == "full":  # a whole response is never compared with a gold answer: nothing to score
        raise ConfigError("--eval scores short answers against gold ones; ANSWER_SHAPE=full (--answer full) would pay "
                          "for every call and score nothing: use --answer short or auto")
    if args.eval == "-" or args.dry_run or args.replay_from or args.output_format == "openai-batch":
        raise ConfigError("--eval needs a file (each strategy reads it again), and reads its own result lines back for "
                          "the report: stdin, --dry-run, --from and --output-format openai-batch do not go with --eval")
    names = [name for name in (args.strategies or DEFAULT_STRATEGIES).split(",") if name.strip()]
    strategies = tuple(dict.fromkeys(Strategy.parse(name) for name in names))
    if not strategies:
        raise ConfigError(f"--strategies {args.strategies!r}: name at least one, e.g. {DEFAULT_STRATEGIES}")
    # A vote cut short by the budget is a smaller vote reported under its name; the debate's budget is its setting.
    for short in (s for s in strategies if config.max_calls and s.samples > config.max_calls):
        raise ConfigError(f"--strategies: {short.name} needs {short.samples} calls a question, more than MAX_CALLS="
                          f"{config.max_calls}: raise the budget or choose a smaller K")
    folder = Path(args.output) if args.output else Path(args.eval).with_suffix(".eval")
    if what_is_at(folder) not in ("nothing", "other") or (folder.exists() and not folder.is_dir()):
        raise ConfigError(f"-o {folder}: not a folder (a file or a symbolic link is there): --eval writes a folder "
                          "of results; give another -o")
    ids = gold_ids(config, args.eval)
    try:
        make_private_folders(folder)
    except OSError as err:
        raise unusable_path(err, f"the eval folder {folder}", "choose another -o") from None
    cache = ResponseCache.file(config)
    batch = batch_options(args, args.eval, str(folder / f"{strategies[0].name}.jsonl"), "--eval", cache)
    options = EvalOptions(folder, strategies, batch, ids)
    for path in [*map(options.output_for, strategies[1:]), folder / "report.md"]:  # never the gold, nor a link
        check_batch_paths(args.eval, path, cache)
    return options


def main_batch(config: Config, options: BatchOptions | EvalOptions, runtime: Runtime, json_output: bool) -> int:
    """A batch, or an eval (its batches, then the report), to the end; its summary or report on stdout."""
    try:
        if isinstance(options, EvalOptions):
            # Gold answers are short verdicts: an auto shape would make "Name a fruit." a whole response, unscored.
            short = replace(config, answer_shape="short") if config.answer_shape == "auto" else config
            report, code, error = asyncio.run(run_eval(short, options, runtime))
            text = json.dumps(report) if json_output else markdown_report(report, config.model_name)
            return deliver(text, error, code, config.secrets)
        summary = asyncio.run(run_batch(config, options, runtime, sys.stdin))
    except Exception as err:  # a bug too: one line; the output stays resumable
        output = options.folder if isinstance(options, EvalOptions) else options.output
        why = (str(err) if isinstance(err, MoAError) else internal_error(err) if not isinstance(err, OSError)
               else f"batch output {output}: {describe_os_error(err)}; nothing already written was lost")
        say(f"error: {why}", config.secrets)
        return exit_code_for(err)
    text = json.dumps(summary, ensure_ascii=False) if json_output else human_batch_summary(summary)
    return deliver(text, summary["error"], batch_exit_code(summary), config.secrets)


def deliver(text: str, error: str | None, code: int, secrets: Sequence[str]) -> int:
    """The result on stdout, its error line on stderr; a result nobody could read (stdout gone) fails the run."""
    delivered = emit(text, secrets)
    if error:
        say(f"error: {error}", secrets)
    return code if delivered or code else EXIT_FAILED


def console() -> None:
    """The `moa-pipeline` console script (and `python -m moa_pipeline`)."""
    sys.exit(main())


def main(argv: list[str] | None = None, *, runtime: Runtime | None = None) -> int:
    """The command line. SIGTERM (and SIGHUP, see stop_signals) is Ctrl-C from the first line on: a stop while reading
    stdin or compacting a big output is one line and exit 130, never a traceback (running questions stop gracefully)."""
    if sys.version_info < MIN_PYTHON:
        say(f"error: moa-pipeline needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; this is "
            f"{'.'.join(map(str, sys.version_info[:3]))}: install it with a newer python (see README, Set-up)", ())
        return EXIT_USAGE
    try:
        previous = {number: signal.signal(number, signal.default_int_handler) for number in stop_signals()}
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        return run_command(argv, runtime)
    except KeyboardInterrupt as err:
        say("error: interrupted; nothing already written was lost (a batch resumes on the next run)", ())
        return exit_code_for(err)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass(frozen=True)
class SingleRequest:
    """One question to answer (or to price, with --dry-run), and the trace it replays, if any."""

    question: str
    replay: Replay | None


# Flags (and their argparse names) that only a batch uses; --check also uses none of CHECK_IGNORES:
# it sends one request, so what shapes or budgets a debate does nothing there.
BATCH_ONLY_FLAGS = {"-o": "output", "--concurrency": "concurrency", "--shard": "shard",
                    "--output-format": "output_format", "--logs": "logs", "--no-resume": "no_resume",
                    "--force": "force"}
CHECK_IGNORES = BATCH_ONLY_FLAGS | {
    "--json": "json_output", "--dry-run": "dry_run", "--from": "replay_from", "--rounds": "ROUNDS",
    "--no-rebuttal": "ENABLE_REBUTTAL", "--early-exit": "EARLY_EXIT", "--phase-barriers": "PHASE_BARRIERS",
    "--max-calls": "MAX_CALLS", "--max-tokens": "MAX_TOTAL_TOKENS", "--deadline": "QUESTION_DEADLINE"}


def given_flags(args: argparse.Namespace, flags: Mapping[str, str]) -> list[str]:
    """Those of ``flags`` (flag: its argparse name) on the command line: unset ones are None or False."""
    return [flag for flag, name in flags.items()
            if getattr(args, name) is not None and getattr(args, name) is not False]


def plan_request(args: argparse.Namespace, config: Config) -> BatchOptions | EvalOptions | SingleRequest | None:
    """What the flags ask for: a batch, an eval, one question (checked), or None for --check; ConfigError for bad
    input or a flag it would ignore."""
    if args.strategies is not None and args.eval is None:
        raise ConfigError("--strategies goes with --eval GOLD")
    if args.eval is not None:
        return eval_options(args, config)
    if args.check:
        if ignored := given_flags(args, CHECK_IGNORES):
            raise ConfigError(f"{', '.join(ignored)}: not used by --check, which prints its findings as lines")
        return None
    if args.questions_file is not None:
        if args.dry_run or args.replay_from:
            raise ConfigError("--dry-run and --from work on one question (-q or --replay), not with -f")
        return batch_options(args, args.questions_file, args.output, cache=ResponseCache.file(config))
    if given := given_flags(args, BATCH_ONLY_FLAGS):
        raise ConfigError(f"{', '.join(given)}: batch options, for -f only")
    replay: Replay | None = None
    if args.replay is not None:
        if args.replay_from is None:
            raise ConfigError("--replay needs --from critique|rebuttal|round2..round10|judges|synthesis: the first "
                              "phase to run again")
        replay = load_replay(Path(args.replay), ReplayStart.parse(args.replay_from))
        if args.ANSWER_SHAPE not in (None, replay.shape.shape):
            raise ConfigError(f"--answer {args.ANSWER_SHAPE}: this trace's answers were written as "
                              f"{replay.shape.shape} answers, and a replay keeps them: run the question again with -q")
        if replay.verdict is not None and not config.synthesizes(replay.shape.shape):
            raise ConfigError(f"--from synthesis: SYNTHESIZE={config.synthesize} writes no synthesis for this "
                              f"{replay.shape.shape} answer, so there is nothing to run again: add --synthesize on")
        if (first := replay.start.debate_round) > config.rounds:
            raise ConfigError(f"--from {replay.start} runs debate rounds {first} to ROUNDS, but "
                              f"ROUNDS={config.rounds}: add --rounds {first} or more")
    elif args.replay_from is not None:
        raise ConfigError("--from goes with --replay TRACE")
    question = valid_text(replay.question) if replay else read_question(args.question, config.max_question_chars)
    check_question(config, question)
    return SingleRequest(question, replay)


def main_single(config: Config, request: SingleRequest, runtime: Runtime, json_output: bool) -> int:
    """Answer one question and report it: the result on stdout, the error line on stderr."""
    run = Handover(run_record(config, request.question))
    watched = config.stream and not json_output and stdout_is_terminal()  # the user sees the response written
    echo = TerminalEcho(functools.partial(emit, secrets=config.secrets)) if watched else None
    try:
        asyncio.run(run_cli(config, request.question, replace(runtime, echo=echo), run, request.replay))
    except (KeyboardInterrupt, asyncio.CancelledError, Exception) as err:  # Ctrl-C, SIGTERM (see run_cli), a bug
        run.record = run.record.ended(err)  # what was done is kept
    result = run.record
    if result.write_error:
        log.warning("%s; the verdict is still reported", result.write_error)
    shown = (json.dumps(result.to_dict(), ensure_ascii=False) if json_output
             else human_summary(result, echo.finish() if echo else ""))
    where = f"; transcript: {result.transcript}" if result.exit_code == EXIT_INTERRUPTED and result.transcript else ""
    return deliver(shown, result.error and result.error + where, result.exit_code, config.secrets)


def run_command(argv: list[str] | None, runtime: Runtime | None) -> int:
    """Parse, configure, run; every error becomes one line and its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in HOME_COMMANDS:  # a question comes only through -q, -f, --eval or --replay
        return run_home_command(argv[0], argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already printed
        return int(stop.code or 0)
    handler = setup_logging(args.verbose)
    try:
        config = load_config(flag_settings(args), os.environ, read_env_file(args.env_file, os.environ))
        request = plan_request(args, config)
        if not args.dry_run:  # the one run that makes no HTTP client
            check_proxy_environment()
    except ConfigError as err:
        say(f"error: {err}", ())
        return exit_code_for(err)
    handler.addFilter(RedactingFilter(config.secrets))
    runtime = replace(runtime or Runtime(), secrets=config.secrets)
    if request is None:  # --check: exit 0 when a chat request worked
        found = asyncio.run(check_endpoint(config, runtime))
        emit("\n".join(found.lines), config.secrets)
        return EXIT_OK if found.ok else EXIT_FAILED
    if isinstance(request, (BatchOptions, EvalOptions)):
        if not args.verbose:
            log.setLevel(logging.WARNING)  # per-phase progress lines would drown the batch's own
        return main_batch(config, request, runtime, args.json_output)
    if args.dry_run:
        plan = dry_run(config, request.question, request.replay)
        return deliver(json.dumps(plan.to_dict(config)) if args.json_output else human_dry_run(plan), None, EXIT_OK,
                      config.secrets)
    return main_single(config, request, runtime, args.json_output)


def run_home_command(command: str, argv: list[str]) -> int:
    """`config` or `init` (HOME_COMMANDS); every error is one line, exit 2."""
    parser = OneLineParser(prog=f"{command_name()} {command}", description=HOME_COMMANDS[command] + ".")
    if command in ("config", "cache"):
        parser.add_argument("--env-file", metavar="PATH", help=f"as for a run (default: ${ENV_FILE_VARIABLE})")
        parser.add_argument("--json", dest="json_output", action="store_true", help="one JSON object on stdout")
    if command == "cache":
        parser.add_argument("action", nargs="?", choices=("clear",), help="clear: remove every entry")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already printed
        return int(stop.code or 0)
    setup_logging(0)
    try:
        if command == "cache":
            return show_cache(args.env_file, args.json_output, args.action == "clear")
        return show_settings(args.env_file, args.json_output) if command == "config" else write_user_file(os.environ)
    except ConfigError as err:
        say(f"error: {err}", ())
        return exit_code_for(err)


def setting_row(setting: Setting, environ: Mapping[str, str], files: Sequence[SettingsFile],
                secrets: Sequence[str]) -> dict[str, str]:
    """One setting as `config` shows it: its value, secrets masked before it is cut short, and where it came from."""
    found = setting_source(setting, {}, environ, files)
    if found is None:
        value = ("(not set: required)" if setting.default is MISSING else default_log_dir(environ)
                 if setting.env == "LOG_DIR" else setting_text(setting.default))
        return {"name": setting.env, "value": value, "source": "default"}
    name, raw, source = found
    value = SECRET_MASK if setting.secret else printable(masked_url(raw) if setting.env == "PROXY_URL"
                                                         else redact(raw, secrets))
    return {"name": setting.env, "value": value, "source": source + (f" ({name})" if name != setting.env else "")}


def show_settings(env_file: str | None, json_output: bool) -> int:
    """`config`: every setting, its value and its source, and the files read. Exit 2, with the error a run would
    print, when these settings cannot run (one unset, a bad value, an unreadable file), so a script can check them."""
    files: list[SettingsFile] = []
    error: str | None = None
    try:  # an unreadable file is the listing's error: --json still prints its object
        files = read_env_file(env_file, os.environ)
        load_config({}, os.environ, files, warn=False)
    except ConfigError as err:
        error = str(err)
    # From the values as written: secrets inside other values (EXTRA_BODY) stay masked when another setting is bad.
    raw = {s.env: found[1].strip() for s in SETTINGS if (found := setting_source(s, {}, os.environ, files))}
    secrets = Config(raw.get("PROXY_URL", ""), raw.get("API_KEY", ""), gateway_token=raw.get("GATEWAY_TOKEN"),
                     extra_body=raw.get("EXTRA_BODY")).secrets
    rows = [setting_row(setting, os.environ, files, secrets) for setting in SETTINGS]
    user = shown_path(user_settings_file(os.environ), os.environ)
    if json_output:
        text = json.dumps({"files": [f.label for f in files], "user_file": user, "settings": rows, "error": error},
                          ensure_ascii=False)
    else:
        width = max((len(row["value"]) for row in rows if len(row["value"]) <= 40), default=0)
        text = "\n".join([f"files read, highest first: {', '.join(f.label for f in files) or 'none'}",
                          f"per-user file: {user}" + ("" if any(f.label == user for f in files) else
                                                      f" (none: `{command_name()} init` writes one)"),
                          *(f"{r['name']:<26} {r['value'] or '(unset)':<{width}}  {r['source']}" for r in rows)])
    return deliver(text, error, EXIT_USAGE if error else EXIT_OK, secrets)


def show_cache(env_file: str | None, json_output: bool, clear: bool) -> int:
    """`cache`: the response cache's file, bytes, entries (and how many expired), lifetime hits, misses and stores;
    `cache clear` removes every entry (the counts stay). A file it cannot read: an error line, exit 1."""
    import sqlite3
    # `cache` sends nothing: stand-ins for the endpoint's two, below every file (a key set anywhere is still masked).
    stand_ins = SettingsFile("(stand-ins)", {"PROXY_URL": "http://127.0.0.1", "API_KEY": "-"})
    config = load_config({}, os.environ, [*read_env_file(env_file), stand_ins])
    cache = ResponseCache(config.cache_path, "read", config.cache_ttl)
    found: dict[str, Any] = {"path": str(cache.path)} | dict.fromkeys(("size_bytes", "entries", "expired", "hits",
                                                                       "misses", "stores"), 0)
    try:
        with contextlib.closing(cache.connect(time.time())):
            removed = cache.db.execute("DELETE FROM responses").rowcount if clear else 0
            cache.db.commit()
            found = cache.stats(time.time()) | ({"removed": removed} if clear else {})
    except FileNotFoundError:
        found |= {"removed": 0} if clear else {}  # no cache yet: nothing in it
    except (sqlite3.Error, OSError) as err:
        why = describe_os_error(err) if isinstance(err, OSError) else err
        return deliver("", f"the response cache {cache.path} cannot be read ({why}): remove it", EXIT_FAILED,
                       config.secrets)
    text = ", ".join(f"{name.replace('_', ' ')}: {value}" for name, value in found.items())
    return deliver(json.dumps(found) if json_output else text, None, EXIT_OK, config.secrets)


def user_file_text(environ: Mapping[str, str]) -> str:
    """What `init` writes: the two required settings, empty (unset) to fill in, then every other one commented out
    at its default, so the file says what each would be and a line to change is one "# " away."""
    command = command_name()
    head = [f"# moa-pipeline's settings for this user, written by `{command} init`. An empty value is unset.",
            "# Precedence: flags > environment > --env-file or $MOA_ENV_FILE > ./.env > this file > defaults;",
            f"# `{command} config` shows each setting's value and where it came from.",
            "# Required: the endpoint, a base URL such as http://127.0.0.1:8080/v1 or https://api.openai.com/v1,",
            "# and its key (any value, such as local, for a server without auth).", "PROXY_URL=", "API_KEY=", "",
            "# Every other setting at its default (the README's Settings table says what each does):"]
    defaults = {s.env: default_log_dir(environ) if s.env == "LOG_DIR" else setting_text(s.default) for s in SETTINGS}
    return "\n".join(head + [f"# {s.env}={defaults[s.env]}" for s in SETTINGS if s.default is not MISSING]) + "\n"


def write_user_file(environ: Mapping[str, str]) -> int:
    """`init`: the per-user file, made new (0600, in folders made 0700) through the file policy, following no link; an
    existing one is never overwritten (exit 2: nothing written; a provisioning script checks `config` instead)."""
    path = user_settings_file(environ)
    shown = shown_path(path, environ)
    if not path.is_absolute():  # no HOME (or passwd entry), or a relative MOA_CONFIG_HOME: a folder made here
        raise ConfigError(f"no full path to write {path} at: set HOME, or {CONFIG_HOME_VARIABLE} to a full path")
    try:
        make_private_folders(path.parent)
        folder = open_folder(path.parent)
        try:
            fd = create_new(path, folder)
        finally:
            os.close(folder)
    except FileExistsError:
        why = (f"already exists, and init never overwrites it: edit it (`{command_name()} config` shows what it sets)"
               if what_is_at(path) == "file" else "is a link or a folder, and init writes no file through it")
        raise ConfigError(f"{shown} {why}") from None
    except OSError as err:
        raise ConfigError(f"cannot write {shown} ({describe_os_error(err)}): set {CONFIG_HOME_VARIABLE} to a "
                          "folder of your own") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(user_file_text(environ))
    emit(f"wrote {shown}: set PROXY_URL and API_KEY in it, then ask:  {command_name()} -q \"What is 17 * 23?\"", ())
    return EXIT_OK


if __name__ == "__main__":
    console()
