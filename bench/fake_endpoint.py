"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for benchmarks and fault tests.

    python bench/fake_endpoint.py --port 8099 --latency 1.0
    python bench/fake_endpoint.py --port 0 --latency 0.5 --spread 0.5 --straggler-prob 0.05 \\
        --straggler-factor 10 --max-concurrency 8 --log requests.jsonl

It prints "listening on http://127.0.0.1:PORT/v1" on stdout once it accepts connections.
Replies follow the pipeline's output contract (solver, critic, rebuttal, revision, judge and synthesis
formats), chosen by the X-MoA-Phase header or, for other clients, by the system prompt (the full-answer
prompts too). A judge whose system prompt asks for a "RANKING:" line (full answers) ranks the labels
of the candidates in its prompt, in the order shown; a "synthesis" call gets a plain response.

With --answers it is an oracle (see oracle_reply): short items ({question, answer}) as before, and
open-ended items from bench/eval_open.jsonl ({question, oracle: {right, wrong}}) whose solvers write
whole responses, right except at --wrong-rate; its ranking judges put the candidates they can check
right above the wrong ones, erring at --judge-noise; its synthesis writes a right response when a
candidate shown to it is right. It proves the harness, not a model.

Latency per request: LATENCY seconds, times a lognormal factor exp(N(0, SPREAD)) when SPREAD > 0,
times STRAGGLER_FACTOR with probability STRAGGLER_PROB. Beyond MAX_CONCURRENCY requests in
flight it answers 429 with Retry-After. With --gateway-retry-rate it plays a retrying gateway
(LiteLLM in front of a rate-limited upstream): that share of requests takes 3-4x as long, as a
request the gateway retried upstream does, and its reply says `x-litellm-attempted-retries: 2`.
Each request's start and end go to --log as JSONL so a benchmark can compute the ideal time.

With --prefix-cache it models an unbounded prefix cache (vLLM's automatic prefix caching, SGLang's RadixAttention,
llama.cpp's slot reuse, OpenAI's prompt caching): a request's cached share is its longest common prefix with any
earlier request's prompt (messages serialised in order, as a chat template does), reported as OpenAI does
(usage.prompt_tokens_details.cached_tokens, 4 characters a token) and logged (prompt_chars, cached_chars).
--reasoning-chars N makes each solver's reasoning N characters long, as a real model's is (bench/prefix_cache.py).

Only the standard library: the server must not share code or dependencies with the client it
measures.
"""
from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import json
import math
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

MAX_BODY = 50 * 1024 * 1024
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 408: "Request Timeout",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass
class Options:
    latency: float = 0.0
    spread: float = 0.0
    straggler_prob: float = 0.0
    straggler_factor: float = 10.0
    gateway_retry_rate: float = 0.0  # share of requests a retrying gateway slows 3-4x (see latency_of)
    max_concurrency: int = 0  # 0 = unlimited
    retry_after: float = 1.0
    answer: str = "391"
    wrong_answer: str = "390"
    wrong_rate: float = 0.0
    confidence: int = 90
    seed: int | None = None
    keyed: bool = False  # latency drawn from a hash of (seed, question, phase, agent): paired comparisons
    log_requests: bool = False  # also log each request's body and headers (for replaying them)
    answers: str | None = None  # JSONL of {question, answer} or open items: answer those questions (see oracle_reply)
    judge_noise: float = 0.2  # an oracle ranking judge's chance to swap two adjacent candidates
    fault: str = ""  # see FAULTS
    fault_rate: float = 1.0
    fail_after: int = 0  # 0 = never; else every request after this many answers 500
    fault_phase: str = ""  # only requests of this phase get the fault ("" = every phase)
    fault_once: bool = False  # only a call's first request may get the fault: its retry succeeds
    log: str | None = None
    prefix_cache: bool = False  # model a prefix cache: see cached_prefix
    reasoning_chars: int = 0  # pad each solver's <reasoning> to this many characters (0: the short default)
    reply_chars: int = 0  # pad each critique and rebuttal the same way


# Faults applied to a FAULT_RATE share of requests (for the reliability tests).
FAULTS = ("401", "429", "429date", "429bare", "500", "500noretry", "503", "html502", "badjson", "nochoices", "errorobject", "empty", "length",
          "thinkonly", "hang", "reset", "trickle", "invalidutf8", "surrogate", "refusal", "cache-empty",
          "400context", "huge", "deepjson", "sse")
HUGE_REPLY_BYTES = 30 * 1024 * 1024


@dataclass(frozen=True)
class AnswerKey:
    """What the oracle knows of one question: a right response and wrong ones. ``short``: a short answer
    (right when a candidate's answer is exactly it); else an open item (right when a candidate's text
    holds the right response, compared with fences and spacing ignored)."""

    right: str
    wrong: tuple[str, ...]
    short: bool


@dataclass
class State:
    options: Options
    rng: random.Random
    in_flight: int = 0
    served: int = 0
    log_file: TextIO | None = None
    cache: dict[bytes, bytes] = field(default_factory=dict)
    agents_seen: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)  # question -> expected answer, from --answers
    keys: dict[str, AnswerKey] = field(default_factory=dict)  # question -> how the oracle answers it (both kinds)
    calls_seen: set[str] = field(default_factory=set)  # calls (run, phase, agent) already asked once
    replies: int = 0  # replies written by reply_text
    prompts_seen: list[str] = field(default_factory=list)  # with --prefix-cache: every prompt so far, serialised


# --- replies in the pipeline's output contract --------------------------------


def phase_of(headers: dict[str, str], body: dict[str, Any]) -> str:
    if "x-moa-phase" in headers:
        return headers["x-moa-phase"]
    messages = body.get("messages") or [{}]
    system = str(messages[0].get("content", ""))
    if "impartial judge" in system or RANKING_MARK in system:
        return "judge"
    if system.startswith(("You write the final response", "You write the worked solution")):  # SYNTHESIS_SYSTEM*
        return "synthesis"
    if "sceptical reviewer" in system:
        return "critique"
    if "several solvers debating" in system or "several assistants answering" in system:
        return "revise"  # before the rebuttal's test: a reviser's prompt also says "a reviewer critiqued it"
    if "reviewer critiqued your answer" in system or "a reviewer critiqued it" in system:
        return "rebuttal"
    return "generate"


def wrong_variant(answer: str) -> str:
    """A plausible wrong answer of the same type."""
    if answer.lower() in ("yes", "no"):
        return "no" if answer.lower() == "yes" else "yes"
    if len(answer) == 1 and answer.isalpha():
        return "ABCD"[("ABCD".index(answer.upper()) + 1) % 4]
    try:
        return str(int(answer) + 1)
    except ValueError:
        return answer + " (not)"


# A ranking judge's system prompt asks for this line (full answers); the voting judges' prompts never name it.
RANKING_MARK = "RANKING:"
# A candidate's opening tag in a judge's prompt; its label is one or two capitals (A .. Z, AA ..).
CANDIDATE_LABEL = re.compile(r'<candidate label="([A-Z]{1,2})">')
# The pipeline's nonce (prompts.NONCE_SUFFIX) ending a user prompt; fixed length, so it cannot backtrack.
NONCE_AT_END = re.compile(r"\n\n#[0-9a-f]{16}\Z")
SYNTHESIS_TEXT = "17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = {answer}."


def messages_of(body: dict[str, Any]) -> tuple[str, str]:
    """The request's system prompt (its first message) and user prompt (its last)."""
    messages = body.get("messages") or [{}]
    return str(messages[0].get("content", "")), str(messages[-1].get("content", ""))


def question_of(user: str) -> str:
    return user.split("<question>\n", 1)[-1].split("\n</question>", 1)[0]


def answer_blocks(text: str) -> list[str]:
    """The contents of the <answer> blocks in a prompt, in order."""
    return [block.split("\n</answer>", 1)[0] for block in text.split("<answer>\n")[1:]]


def candidates_shown(user: str) -> list[tuple[str, str]]:
    """(label, the candidate's answer) for each candidate in a judge's prompt, in the order shown."""
    parts = CANDIDATE_LABEL.split(user)  # text, label, block, label, block ...
    return [(label, (answer_blocks(block) or [block])[0]) for label, block in zip(parts[1::2], parts[2::2], strict=True)]


def ranking_text(order: list[str], confidence: int) -> str:
    return (f"<analysis>I checked each candidate against the question.</analysis>\n"
            f"RANKING: {' > '.join(order)}\nCONFIDENCE: {confidence}")


def normalized(text: str) -> str:
    """How the oracle compares responses: fence lines dropped (the pipeline strips a candidate's
    fences), whitespace runs as one space, lower case."""
    kept = [line for line in text.splitlines() if not line.strip().startswith("```")]
    return " ".join(" ".join(kept).split()).lower()


def is_right(key: AnswerKey, answer: str) -> bool:
    if key.short:
        return answer.strip().lower() == key.right.lower()
    return normalized(key.right) in normalized(answer)


def oracle_ranking(key: AnswerKey, state: State, user: str) -> str:
    """The candidates it can check right first, then the wrong ones, each group in the order shown;
    with probability --judge-noise the judge errs: two adjacent candidates swap places."""
    shown = candidates_shown(user)
    right = [label for label, answer in shown if is_right(key, answer)]
    order = right + [label for label, _ in shown if label not in right]
    if len(order) > 1 and state.rng.random() < state.options.judge_noise:
        slip = state.rng.randrange(len(order) - 1)
        order[slip], order[slip + 1] = order[slip + 1], order[slip]
    return ranking_text(order, 90 if right else 40)


def oracle_synthesis(key: AnswerKey, user: str) -> str:
    """It "combines": a right response when any candidate shown to it is right, else the first one again."""
    shown = answer_blocks(user)
    if any(is_right(key, answer) for answer in shown):
        return f"Checked against every candidate, step by step.\n\n{key.right}" if key.short else key.right
    return shown[0] if shown else key.wrong[0]


def kept_reply(phase: str, user: str) -> str | None:
    """Rebuttals keep their answer; a later round's revision joins the majority of all answers shown
    (mine on a tie). The same for short answers and whole responses."""
    if phase == "rebuttal":
        mine = user.split("Your answer:\n<answer>\n", 1)[-1].split("\n</answer>", 1)[0]
        return f"<rebuttal>I checked again.</rebuttal>\n<answer>{mine}</answer>"
    if phase == "revise":
        mine = user.split("Your current answer:\n<answer>\n", 1)[-1].split("\n</answer>", 1)[0]
        shown = [block.split("\n</answer>", 1)[0] for block in user.split("<other_solver>\n<answer>\n")[1:]]
        shown = shown or [mine]  # every solver's answer, mine among them (prompts.REVISE_USER)
        top = max(shown, key=lambda a: (shown.count(a), a == mine))
        return f"<rebuttal>Weighed the others.</rebuttal>\n<answer>{top}</answer>"
    return None


def oracle_reply(phase: str, state: State, body: dict[str, Any], agent: str | None = None) -> str | None:
    """With --answers: solvers are right except at --wrong-rate, rebuttals keep their answer, and
    voting judges side with the majority of the candidates in their prompt (confidence = its share).
    Ranking judges and the synthesis check what they are shown (oracle_ranking, oracle_synthesis)."""
    system, user = messages_of(body)
    key = state.keys.get(question_of(user))
    if key is None:
        return None
    if phase == "judge" and RANKING_MARK in system:
        return oracle_ranking(key, state, user)
    if phase == "synthesis":
        return oracle_synthesis(key, user)
    if phase in ("rebuttal", "revise"):
        return kept_reply(phase, user)
    if phase == "generate":
        wrong = solver_draw(state, body, agent) < state.options.wrong_rate
        if key.short:
            return f"<reasoning>worked</reasoning>\n<answer>{key.wrong[0] if wrong else key.right}</answer>"
        return f"<reasoning>worked</reasoning>\n<answer>\n{state.rng.choice(key.wrong) if wrong else key.right}\n</answer>"
    if phase == "judge" and key.short:
        candidates = [c.split("\n</answer>", 1)[0] for c in user.split("<answer>\n")[1:]]
        top = max(set(candidates), key=candidates.count) if candidates else key.right
        share = round(100 * candidates.count(top) / max(1, len(candidates)))
        return f"<analysis>Most candidates agree.</analysis>\nFINAL ANSWER: {top}\nCONFIDENCE: {share}"
    if phase == "critique" and not key.short:
        return "<critique>I checked the whole response against the request.</critique>"
    if phase == "judge":  # a voting judge over whole responses votes by label: the first it checks right
        shown = candidates_shown(user)
        best = next((label for label, answer in shown if is_right(key, answer)), shown[0][0] if shown else "A")
        return f"<analysis>I checked each candidate.</analysis>\nFINAL ANSWER: {best}\nCONFIDENCE: 90"
    return None


def solver_draw(state: State, body: dict[str, Any], agent: str | None) -> float:
    """The uniform that makes a solver wrong. With --keyed, fixed by (seed, system prompt, question, agent), so an
    --eval's accuracies do not depend on the order requests arrive in; else the next draw of the seeded stream."""
    if not state.options.keyed:
        return state.rng.random()
    system, user = messages_of(body)
    key = f"{state.options.seed}|{drawn_prompt(system, user)}|{question_of(user)}|{agent}"
    return (int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") + 0.5) / 2**64


def drawn_prompt(system: str, user: str) -> str:
    """What a --keyed draw hashes: the system prompt as it read before issue 25 moved the nonce to the end of the
    user prompt (so each seed's draws stay as they were): rules, "\nYour approach: ...", "\n\n"."""
    if not NONCE_AT_END.search(user):  # a plain question, or the old layout (its nonce in the system prompt)
        return system.rsplit("[request", 1)[0]
    return system + "\n\n"


def serialised(body: dict[str, Any]) -> str:
    """The prompt as a chat template lays it out: every message in order, its role first."""
    return "".join(f"<|{m.get('role')}|>\n{m.get('content', '')}\n" for m in body.get("messages") or [])


def cached_prefix(state: State, prompt: str) -> int:
    """Characters of ``prompt`` an unbounded prefix cache holds: its longest common prefix with any earlier prompt."""
    longest = max((common_prefix(prompt, seen) for seen in state.prompts_seen), default=0)
    state.prompts_seen.append(prompt)
    return longest


def common_prefix(first: str, second: str) -> int:
    """Length of the common prefix, by bisection over slice comparisons (C speed, not a loop per character)."""
    low, high = 0, min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if first[:middle] == second[:middle] else (low, middle - 1)
    return low


def plain_reply(phase: str, state: State, body: dict[str, Any]) -> str:
    """The reply without an answer key: a ranking judge ranks the labels in the order shown."""
    system, user = messages_of(body)
    if phase == "judge" and RANKING_MARK in system:
        return ranking_text([label for label, _ in candidates_shown(user)], state.options.confidence)
    return reply_text(phase, state)


def reply_text(phase: str, state: State) -> str:
    options = state.options
    if phase == "synthesis":  # before the draw below: a seed's draws for the other phases stay as they were
        return SYNTHESIS_TEXT.format(answer=options.answer)
    answer = options.wrong_answer if state.rng.random() < options.wrong_rate else options.answer
    # --reasoning-chars plays a real model, which never writes one text twice: each reply opens with its own number,
    # or a prefix cache would find five critiques alike where real ones differ from their first words.
    state.replies += 1
    mine = f"(reply {state.replies}) " if options.reasoning_chars or options.reply_chars else ""
    if phase == "critique":
        return f"<critique>{mine}{padded('I recomputed every step; the arithmetic holds.', options.reply_chars)}</critique>"
    if phase in ("rebuttal", "revise"):
        text = padded("The critique confirms my work.", options.reply_chars)
        return f"<rebuttal>{mine}{text}</rebuttal>\n<answer>{answer}</answer>"
    if phase == "judge":
        return (f"<analysis>{mine}Candidates agree after checking.</analysis>\nFINAL ANSWER: {options.answer}\n"
                f"CONFIDENCE: {options.confidence}")
    text = padded("17 * 23 = 17 * 20 + 17 * 3 = 340 + 51.", options.reasoning_chars)
    return f"<reasoning>{mine}{text}</reasoning>\n<answer>{answer}</answer>"


def padded(text: str, chars: int) -> str:
    """``text`` with more checking after it, up to ``chars`` characters (as it is when that is fewer)."""
    step = " Checking again: 17 * 20 = 340, since 17 * 2 = 34; 17 * 3 = 51; and 340 + 51 = 391."
    while len(text) + len(step) <= chars:
        text += step
    return text


def completion_body(text: str | None, finish_reason: str = "stop", prompt_chars: int = 0,
                    cached_chars: int | None = None) -> bytes:
    completion_tokens = max(1, len(text or "") // 4)
    prompt_tokens = max(1, prompt_chars // 4)
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if cached_chars is not None:  # --prefix-cache: as OpenAI reports it
        usage["prompt_tokens_details"] = {"cached_tokens": cached_chars // 4}
    return json.dumps({
        "id": "fake-1", "object": "chat.completion", "created": int(time.time()), "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": usage,
    }).encode()


# --- HTTP -----------------------------------------------------------------------


def response_bytes(status: int, body: bytes, headers: dict[str, str] | None = None,
                   content_type: str = "application/json") -> bytes:
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY:
        return None
    body = await reader.readexactly(length) if length else b""
    return headers, body


def keyed_uniforms(options: Options, headers: dict[str, str], body: dict[str, Any]) -> tuple[float, ...]:
    """Four uniforms in (0, 1) fixed by (seed, question, phase, agent): the same call
    gets the same latency in every run, whatever order requests arrive in."""
    messages = body.get("messages") or [{}, {}]
    user = str(messages[-1].get("content", ""))
    question = user.split("<question>\n", 1)[-1].split("\n</question>", 1)[0]
    key = f"{options.seed}|{question}|{headers.get('x-moa-phase')}|{headers.get('x-moa-agent')}"
    if headers.get("x-moa-round", "1") != "1":  # later debate rounds; round 1 keeps the draws of earlier seeds
        key += f"|{headers['x-moa-round']}"
    digest = hashlib.sha256(key.encode()).digest()
    return tuple((int.from_bytes(digest[i:i + 8], "big") + 0.5) / 2**64 for i in range(0, 32, 8))


def latency_of(state: State, headers: dict[str, str], body: dict[str, Any]) -> tuple[float, bool]:
    """Seconds this request takes, and whether the (simulated) gateway retried it upstream."""
    options = state.options
    if options.keyed:
        spread_u, straggler_u, gateway_u, slowdown_u = keyed_uniforms(options, headers, body)
    else:  # the gateway's draws only in that mode, so a seed's earlier draws stay as they were
        spread_u, straggler_u = state.rng.random(), state.rng.random()
        gateway_u, slowdown_u = (state.rng.random(), state.rng.random()) if options.gateway_retry_rate else (1.0, 0.0)
    seconds = options.latency
    if options.spread > 0:
        seconds *= math.exp(options.spread * statistics.NormalDist().inv_cdf(spread_u))
    if options.straggler_prob > 0 and straggler_u < options.straggler_prob:
        seconds *= options.straggler_factor
    retried = gateway_u < options.gateway_retry_rate
    return seconds * (3 + slowdown_u if retried else 1), retried


def log_event(state: State, **event: Any) -> None:
    if state.log_file is not None:
        state.log_file.write(json.dumps(event) + "\n")
        state.log_file.flush()


async def fault_reply(fault: str, state: State, writer: asyncio.StreamWriter, raw_body: bytes,
                      headers: dict[str, str]) -> bytes | None:
    """The bytes of a faulty reply, or None when the fault handled the connection itself."""
    if fault == "401":
        return response_bytes(401, b'{"error":{"message":"invalid api key"}}')
    if fault in ("429", "429date"):
        wait = state.options.retry_after
        value = (f"{wait:g}" if fault == "429" else
                 email.utils.formatdate(time.time() + max(wait, 1.0), usegmt=True))
        return response_bytes(429, b'{"error":{"message":"rate limited"}}', {"Retry-After": value})
    if fault == "429bare":  # no Retry-After, nor any other hint of when to come back
        return response_bytes(429, b'{"error":{"message":"rate limited"}}')
    if fault == "500noretry":
        return response_bytes(500, b'{"error":{"message":"do not retry"}}', {"x-should-retry": "false"})
    if fault in ("500", "503"):
        return response_bytes(int(fault), b'{"error":{"message":"overloaded"}}',
                              {"Retry-After": f"{state.options.retry_after:g}"} if fault == "503" else None)
    if fault == "html502":
        return response_bytes(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
    if fault == "badjson":
        return response_bytes(200, b"{not json")
    if fault == "nochoices":
        return response_bytes(200, b'{"id":"x","choices":[]}')
    if fault == "errorobject":
        return response_bytes(200, b'{"error":{"message":"upstream model crashed"}}')
    if fault == "empty":
        return response_bytes(200, completion_body(""))
    if fault == "length":
        return response_bytes(200, completion_body("<reasoning>17 * 23 = 17 * 20 +", "length"))
    if fault == "thinkonly":
        return response_bytes(200, completion_body("<think>Let me think about 17 * 23 for a while"))
    if fault == "invalidutf8":
        return response_bytes(200, b'{"choices":[{"message":{"content":"\xff\xfe"}}]}')
    if fault == "surrogate":
        return response_bytes(200, b'{"choices":[{"message":{"content":"\\ud800 <answer>1</answer>"}}]}')
    if fault == "refusal":
        return response_bytes(200, completion_body("I can't help with that.", "content_filter"))
    if fault == "cache-empty":
        # A caching proxy in front of a model whose first answer to each agent
        # was empty: identical bodies get the identical cached reply.
        if raw_body not in state.cache:
            agent = headers.get("x-moa-agent", "") + headers.get("x-moa-phase", "")
            first = agent not in state.agents_seen
            state.agents_seen.add(agent)
            body = json.loads(raw_body)
            text = "" if first else plain_reply(phase_of(headers, body), state, body)
            state.cache[raw_body] = response_bytes(200, completion_body(text))
        return state.cache[raw_body]
    if fault == "400context":  # llama.cpp when a slot's context is too small for the prompt
        return response_bytes(400, b'{"error":{"code":400,"message":"the request exceeds the available context '
                                   b'size, try increasing it","type":"exceed_context_size_error"}}')
    if fault == "huge":
        return response_bytes(200, completion_body("<answer>391</answer>" + "x" * HUGE_REPLY_BYTES))
    if fault == "deepjson":
        return response_bytes(200, b"[" * 100_000 + b"]" * 100_000)
    if fault == "hang":
        await asyncio.sleep(3600)
        return None
    if fault == "reset":
        transport = writer.transport
        transport.abort()  # RST instead of a reply
        return None
    return None


async def serve_one(state: State, headers: dict[str, str], raw_body: bytes,
                    writer: asyncio.StreamWriter, cached_chars: int | None = None) -> bytes | None:
    options = state.options
    try:
        body = json.loads(raw_body or b"{}")
    except ValueError:
        return response_bytes(400, b'{"error":{"message":"request body is not JSON"}}')
    if options.fail_after and state.served > options.fail_after:
        return response_bytes(500, b'{"error":{"message":"the endpoint is down"}}')
    if options.max_concurrency and state.in_flight > options.max_concurrency:
        return response_bytes(429, b'{"error":{"message":"rate limited"}}',
                              {"Retry-After": f"{options.retry_after:g}"})
    in_phase = not options.fault_phase or headers.get("x-moa-phase") == options.fault_phase
    call = "|".join(headers.get(h, "") for h in ("x-moa-run-id", "x-moa-phase", "x-moa-agent", "x-moa-round"))
    first = call not in state.calls_seen
    state.calls_seen.add(call)
    if (options.fault and options.fault != "sse" and in_phase and (first or not options.fault_once)
            and state.rng.random() < options.fault_rate):
        reply = await fault_reply(options.fault, state, writer, raw_body, headers)
        if reply is not None or options.fault in ("hang", "reset"):
            return reply
    seconds, retried = latency_of(state, headers, body)
    await asyncio.sleep(seconds)
    gateway = {"x-litellm-attempted-retries": "2"} if retried else None
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    phase = phase_of(headers, body)
    text = oracle_reply(phase, state, body, headers.get("x-moa-agent")) if state.keys else None
    text = text if text is not None else plain_reply(phase, state, body)
    if options.fault == "trickle":
        payload = response_bytes(200, completion_body(text, prompt_chars=prompt_chars))
        for byte in payload:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
        return b""
    if options.fault == "sse":  # a stream, whether or not the client asked for one
        return response_bytes(200, sse_body(text), gateway, content_type="text/event-stream")
    return response_bytes(200, completion_body(text, prompt_chars=prompt_chars, cached_chars=cached_chars), gateway)


def sse_body(text: str) -> bytes:
    """The reply as server-sent events: three content deltas, a finish, usage, [DONE]."""
    third = max(1, len(text) // 3)
    pieces = [text[:third], text[third:2 * third], text[2 * third:]]
    events = [{"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]} for piece in pieces]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": len(text) // 4}})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


async def handle(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request = await read_request(reader)
            if request is None:
                break
            headers, raw_body = request
            state.in_flight += 1
            state.served += 1
            number = state.served
            started = time.monotonic()
            cache = prefix_cache_event(state, raw_body)
            log_event(state, event="start", **cache, n=number, t=started, run=headers.get("x-moa-run-id"),
                      phase=headers.get("x-moa-phase"), agent=headers.get("x-moa-agent"),
                      round=int(headers.get("x-moa-round", "1") or 1),
                      body_sha=hashlib.sha256(raw_body).hexdigest()[:16],
                      **({"body": raw_body.decode("utf-8", "replace"),
                          "headers": {k: v for k, v in headers.items() if k.startswith(("x-", "cf-"))}}
                         if state.options.log_requests else {}))
            try:
                reply = await serve_one(state, headers, raw_body, writer, cache.get("cached_chars"))
            finally:
                state.in_flight -= 1
            status = int(reply[9:12]) if reply else None
            log_event(state, event="end", n=number, t=time.monotonic(), status=status)
            if reply is None:
                break
            if reply:
                writer.write(reply)
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def prefix_cache_event(state: State, raw_body: bytes) -> dict[str, int]:
    """With --prefix-cache, the request's prompt and cached characters, counted as it arrives; else nothing."""
    if not state.options.prefix_cache:
        return {}
    try:
        prompt = serialised(json.loads(raw_body or b"{}"))
    except (ValueError, AttributeError):
        return {}
    return {"prompt_chars": len(prompt), "cached_chars": cached_prefix(state, prompt)}


def load_answers(state: State, path: str) -> None:
    """Short items ({question, answer}) and open items ({question, oracle: {right, wrong}}) alike."""
    with open(path, encoding="utf-8") as lines:
        items = [json.loads(line) for line in lines if line.strip()]
    for item in items:
        if "answer" in item:
            state.known[item["question"]] = answer = str(item["answer"])
            state.keys[item["question"]] = AnswerKey(answer, (wrong_variant(answer),), True)
        else:
            oracle = item["oracle"]
            state.keys[item["question"]] = AnswerKey(oracle["right"], tuple(oracle["wrong"]), False)


async def serve(options: Options, port: int, ready: asyncio.Event | None = None,
                announce: bool = True) -> None:
    state = State(options, random.Random(options.seed))
    if options.answers:
        load_answers(state, options.answers)
    if options.log:
        state.log_file = open(options.log, "a", encoding="utf-8")
    server = await asyncio.start_server(lambda r, w: handle(state, r, w), "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if announce:
        print(f"listening on http://127.0.0.1:{bound}/v1", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def parse_args(argv: list[str] | None = None) -> tuple[Options, int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="base seconds per request")
    parser.add_argument("--spread", type=float, default=0.0, help="lognormal sigma of the latency factor")
    parser.add_argument("--straggler-prob", type=float, default=0.0)
    parser.add_argument("--straggler-factor", type=float, default=10.0)
    parser.add_argument("--gateway-retry-rate", type=float, default=0.0,
                        help="share of requests a retrying gateway slows 3-4x (with x-litellm-attempted-retries)")
    parser.add_argument("--max-concurrency", type=int, default=0, help="429 beyond this many in flight (0: no limit)")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on 429/503")
    parser.add_argument("--answer", default="391")
    parser.add_argument("--wrong-answer", default="390")
    parser.add_argument("--wrong-rate", type=float, default=0.0, help="share of solver answers that are wrong")
    parser.add_argument("--confidence", type=int, default=90, help="judges' CONFIDENCE")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--answers", help="JSONL of {question, answer} or open items (bench/eval_open.jsonl): "
                                          "answer those, right or wrong (--wrong-rate)")
    parser.add_argument("--judge-noise", type=float, default=0.2,
                        help="with --answers: a ranking judge's chance to swap two adjacent candidates")
    parser.add_argument("--log-requests", action="store_true", help="put each request's body and headers in --log")
    parser.add_argument("--keyed", action="store_true",
                        help="draw each latency from a hash of (seed, question, phase, agent), for paired runs")
    parser.add_argument("--fault", default="", choices=("",) + FAULTS)
    parser.add_argument("--fault-rate", type=float, default=1.0, help="share of requests that get the fault")
    parser.add_argument("--fault-phase", default="", help="only this phase's requests get the fault")
    parser.add_argument("--fault-once", action="store_true", help="only a call's first request may get the fault")
    parser.add_argument("--fail-after", type=int, default=0, help="answer 500 to every request after this many")
    parser.add_argument("--log", help="append each request's start and end here as JSONL")
    parser.add_argument("--prefix-cache", action="store_true",
                        help="model an unbounded prefix cache: report and log each request's cached prefix")
    parser.add_argument("--reasoning-chars", type=int, default=0,
                        help="pad each solver's reasoning to this many characters (a real model's length)")
    parser.add_argument("--reply-chars", type=int, default=0, help="pad each critique and rebuttal the same way")
    args = parser.parse_args(argv)
    port = args.port
    values = {k: v for k, v in vars(args).items() if k != "port"}
    return Options(**values), port


def main(argv: list[str] | None = None) -> int:
    options, port = parse_args(argv)
    try:
        asyncio.run(serve(options, port))
    except KeyboardInterrupt:
        pass
    except OSError as err:
        print(f"error: cannot listen on 127.0.0.1:{port}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
