"""Every pure reading of text: model replies (a streamed one too, as the terminal shows it: TerminalEcho), values
from outside (settings, URLs, headers), the lines of a questions file (read_items), of an earlier results file
(result_record) and of a trace (trace_attempt); and the --eval report's reading of result lines (its rows, statistics,
conclusion and Markdown table; a cost with whose figure it is: said_cost). Strings in, small result objects out.

Model output is found in three tiers, each tried in turn, and the result
records which tier matched so the transcript can say so:

1. XML tags (``<answer>…</answer>``), tolerant of case, attributes, whitespace,
   code fences and a missing closing tag at the very end; the last complete
   occurrence wins, because models often echo the format before using it.
2. Markdown headers and labels (``## Answer``, ``**Answer:**``, ``Answer:``).
3. Paragraphs: the last non-empty paragraph is the answer, the rest reasoning.

Nothing here does I/O or logs, and no reader of a model reply raises on any input (the
readers of values from outside, near the end, raise ValueError for a bad value; a bad questions-file line is a
BadLine, never raised). Every regex is either
anchored to a single line or has bounded repetition, so the cost stays linear
in the length of the text (see ``test_parsing.py`` for the megabyte tests).

    >>> parse_answer("<reasoning>17*23</reasoning><answer>391</answer>").answer
    '391'
"""
from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

# Tag names of the output contract; prompts.py asks for exactly these.
CONTRACT_TAGS = ("question", "reasoning", "answer", "critique", "rebuttal", "analysis", "candidate", "think")

# Longest attribute run accepted inside an opening tag. Bounding it keeps a
# text full of unclosed "<answer " fragments from costing O(n^2).
_MAX_TAG_ATTRS = 200


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer with the reasoning that led to it and the tier that found it."""

    answer: str
    reasoning: str
    tier: str  # "xml", "markdown", "paragraph" or "empty"


class ParsedBlock(NamedTuple):
    """A free-text block such as a critique, and the tier that found it."""

    text: str
    tier: str


class ParsedRebuttal(NamedTuple):
    """A rebuttal's text and its explicit answer, whose tier is the rebuttal's."""

    text: str
    answer: ParsedAnswer

    @property
    def tier(self) -> str:
        return self.answer.tier


@dataclass(frozen=True)
class ParsedJudgement:
    """A judge's FINAL ANSWER and CONFIDENCE (either may be missing), and the tier its answer came from."""

    final_answer: str | None
    confidence: int | None
    analysis: str
    tier: str = "final-answer-line"  # "final-answer-line", "xml" (its own <answer>) or "sentence" ("The answer is X")


# --- think blocks -----------------------------------------------------------

# <think>...</think> and its close: bounded tag shape, no nested quantifiers.
_THINK_OPEN = re.compile(r"<\s{0,5}think\s{0,5}>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"<\s{0,5}/\s{0,5}think\s{0,5}>", re.IGNORECASE)


def strip_think(text: str) -> str:
    """Remove reasoning-model <think> blocks.

    A lone ``</think>`` (the chat template opened the block) drops everything
    before it; an unclosed ``<think>`` drops everything after it, since what
    follows is thinking cut off, not an answer.
    """
    out: list[str] = []
    pos = 0
    first_close = _THINK_CLOSE.search(text)
    first_open = _THINK_OPEN.search(text)
    if first_close and (first_open is None or first_close.start() < first_open.start()):
        pos = first_close.end()
    while True:
        opening = _THINK_OPEN.search(text, pos)
        if opening is None:
            out.append(text[pos:])
            break
        out.append(text[pos:opening.start()])
        closing = _THINK_CLOSE.search(text, opening.end())
        if closing is None:
            break
        pos = closing.end()
    return "".join(out)


# --- tier 1: XML tags -------------------------------------------------------

@cache  # a handful of tag names; compiled once each
def _tag_patterns(tag: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    # Opening: "<answer>", "< Answer id='1' >"; the attribute run is bounded.
    opening = re.compile(rf"<\s{{0,5}}{tag}\b[^<>]{{0,{_MAX_TAG_ATTRS}}}>", re.IGNORECASE)
    # Closing: "</answer>", "</ ANSWER >".
    closing = re.compile(rf"<\s{{0,5}}/\s{{0,5}}{tag}\s{{0,5}}>", re.IGNORECASE)
    return opening, closing


# A code-fence line such as ``` or ```xml, at the start or end of a block.
_FENCE_LINE = re.compile(r"^\s{0,10}```[\w+-]{0,20}\s*$")


def _strip_fences(block: str) -> str:
    lines = block.strip().split("\n")
    while lines and _FENCE_LINE.match(lines[0]):
        lines.pop(0)
    while lines and _FENCE_LINE.match(lines[-1]):
        lines.pop()
    return "\n".join(lines).strip()


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last match of ``pattern`` in ``text`` (a scan, not a backwards search: linear time)."""
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - the loop keeps the last one
        pass
    return found


def extract_tag(text: str, tag: str) -> str | None:
    """Content of the last complete ``<tag>…</tag>``, else of a final unclosed
    ``<tag>`` running to the end of the text, else None."""
    opening, closing = _tag_patterns(tag)
    last_close = _last_match(closing, text)
    last_open = _last_match(opening, text)
    if last_open is None:
        return None
    if last_close is not None and last_close.start() > last_open.start():
        # Complete pair: the last opening tag before the last closing tag.
        start = None
        for match in opening.finditer(text, 0, last_close.start()):
            start = match
        assert start is not None  # last_open itself precedes last_close
        return _strip_fences(text[start.end():last_close.start()])
    # The last opening tag was never closed: the model stopped before it.
    return _strip_fences(text[last_open.end():])


# --- tier 2: markdown headers and labels ------------------------------------

# After decoration is removed: "Label: rest" with a short alphabetic label.
# The label is bounded and the colon required, so a line costs O(its length).
_LABEL_COLON = re.compile(r"([A-Za-z][A-Za-z ]{0,30}?)[ \t]{0,4}[*_]{0,3}[ \t]{0,4}[:：][ \t]{0,4}(.*)$")
# A markdown header prefix: "## ", "> ### ".
_HEADER_PREFIX = re.compile(r"^[> \t]{0,8}#{1,6}[ \t]+")
# Label words that carry no meaning of their own ("The final answer is:").
_LABEL_FILLER = re.compile(r"^(?:so |thus |therefore |hence )?(?:the |my |our )?|(?: is| would be)$")
# Labels that start a new section, and so end the one being read.
_SECTION_LABELS = frozenset({
    "answer", "final answer", "reasoning", "explanation", "critique", "rebuttal", "analysis",
    "confidence", "justification", "verification", "note", "notes", "summary", "solution",
})


def _normalise_label(label: str) -> str:
    return _LABEL_FILLER.sub("", label.strip().lower()).strip()


def _label_of(line: str) -> tuple[str, str, bool] | None:
    """(label, rest of the line, is_header) for a header or label line."""
    stripped = line.strip()
    if not stripped or len(stripped) > 4000:
        return None
    header = _HEADER_PREFIX.match(stripped)
    if header:
        title = stripped[header.end():].strip().strip("*_").strip()
        match = _LABEL_COLON.match(title)
        if match:
            return _normalise_label(match.group(1)), match.group(2).strip().strip("*_").strip(), True
        return _normalise_label(title.rstrip(":")), "", True
    core = stripped.lstrip("> \t")
    if core[:2] in ("- ", "* "):
        core = core[2:].lstrip()
    bold = core.startswith(("**", "__"))
    core = core.lstrip("*_ \t")
    match = _LABEL_COLON.match(core)
    if match:
        return _normalise_label(match.group(1)), match.group(2).strip().strip("*_").strip(), False
    title = core.strip("*_ \t:")
    if bold and core.rstrip().endswith(("**", "__")) and re.fullmatch(r"[A-Za-z ]{1,30}", title):
        return _normalise_label(title), "", False
    return None


def extract_section(text: str, names: tuple[str, ...]) -> tuple[str, str] | None:
    """(content, text before it) of the last section whose label is one of
    ``names`` (lower case), running to the next header or section label."""
    lines = text.split("\n")
    found: tuple[int, str] | None = None
    for index, line in enumerate(lines):
        label = _label_of(line)
        if label and label[0] in names:
            found = (index, label[1])
    if found is None:
        return None
    index, rest = found
    body = [rest] if rest else []
    for line in lines[index + 1:]:
        label = _label_of(line)
        if label and (label[2] or (label[0] in _SECTION_LABELS and any(b.strip() for b in body))):
            break
        body.append(line)
    content = _strip_fences("\n".join(body))
    if not content:
        return None
    return content, "\n".join(lines[:index]).strip()


# --- tier 3: paragraphs -----------------------------------------------------

def _split_paragraphs(text: str) -> tuple[str, str]:
    paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    if not paragraphs:
        return "", ""
    return paragraphs[-1], "\n\n".join(paragraphs[:-1])


# --- answers, critiques, rebuttals ------------------------------------------

_ANSWER_LABELS = ("answer", "final answer", "the answer", "final")


def answer_left_open(text: str) -> bool:
    """Whether the reply's last <answer> (or <final_answer>) tag was never closed: in a reply cut at max_tokens,
    what follows it is half an answer ("12 * 3 is indeed"), not one (issue 23)."""
    lowered = strip_think(text or "").lower()
    return lowered.rfind("<answer") > lowered.rfind("</answer") or \
        lowered.rfind("<final_answer") > lowered.rfind("</final_answer")


def parse_answer(text: str) -> ParsedAnswer:
    """Find a solver's answer and reasoning; tier "empty" means nothing usable. What the reply copied from our
    prompts (a <question> block, "Your answer:" and the block after it) is not its answer. A solver's prompt shows no
    other solver: an <other_solver> block in its reply is its own writing, read as it stands."""
    body = _without_prompt_echo(strip_think(text or ""), ("question",))
    answer = extract_tag(body, "answer")
    if answer and not is_placeholder(answer):  # "<answer>your answer only</answer>" copied from our prompt is none
        reasoning = extract_tag(body, "reasoning") or ""
        return ParsedAnswer(answer, reasoning, "xml")
    section = extract_section(body, _ANSWER_LABELS)
    if section:
        return ParsedAnswer(section[0], section[1], "markdown")
    reasoning, remainder = _take_reasoning(body)
    if remainder is None:
        return ParsedAnswer("", reasoning, "empty")
    last, rest = _untagged_answer(remainder)
    if last:
        return ParsedAnswer(last, "\n\n".join(p for p in (reasoning, rest) if p), "paragraph")
    return ParsedAnswer("", reasoning, "empty")


# Tier 3's answer line at the top: one short line ("12*3 = 36", "Yes.") that prose follows.
_ANSWER_FIRST_CHARS = 60


def _untagged_answer(text: str) -> tuple[str, str]:
    """(answer, the rest) of a reply without tags or labels: the last "The answer is X" sentence's value; else a
    short first line that a long paragraph of prose follows ("12*3 = 36\n\nThis is a multiplicative identity…"),
    as small models answer first and ramble after (issue 23); else the last paragraph."""
    said = _answer_sentence(text) if "answer" in text.lower() else None
    if said:
        return said, text.strip()
    last, rest = _split_paragraphs(text)
    if last.endswith(":") and rest:  # "Here's the answer:" announces what it never wrote: the paragraph before is it
        last, rest = _split_paragraphs(rest)
    first = rest.split("\n\n", 1)[0].strip() if rest else ""
    if first and "\n" not in first and len(first) <= _ANSWER_FIRST_CHARS and not first.endswith(":") \
            and len(last) > SHORT_ANSWER_CHARS:
        return first, text.strip()
    return last, rest


def _take_reasoning(body: str) -> tuple[str, str | None]:
    """(reasoning, the text outside it) for tier 3; None outside when a
    <reasoning> block was opened and never closed: the output was cut off
    mid-reasoning, and its last paragraph is not an answer."""
    opening, closing = _tag_patterns("reasoning")
    start = opening.search(body)
    if start is None:
        return "", body
    end = closing.search(body, start.end())
    if end is None:
        return _strip_fences(body[start.end():]), None
    return _strip_fences(body[start.end():end.start()]), body[:start.start()] + body[end.end():]


def parse_block(text: str, tag: str) -> ParsedBlock | None:
    """(content, tier) of a single free-text block such as a critique.

    Tier 3 takes the whole text: for a critique every paragraph matters.
    """
    body = strip_think(text or "")
    content = extract_tag(body, tag)
    if content:
        return ParsedBlock(content, "xml")
    section = extract_section(body, (tag,))
    if section:
        return ParsedBlock(section[0], "markdown")
    stripped = body.strip()
    return ParsedBlock(stripped, "paragraph") if stripped else None


def parse_rebuttal(text: str) -> ParsedRebuttal | None:
    """(rebuttal text, final answer) of a rebuttal, or None if it has no answer.

    Only an explicit answer counts: a tag, a label, or a sentence that says it ("The answer is 36", "My answer
    remains no"); guessing the last paragraph of a defence would put an argument where the answer belongs. A
    sentence is read from prose, the last tier, so its tier is "paragraph": a reply cut at max_tokens read that way
    is asked again, as every "paragraph" reading is. What the reply copied from our prompt (the question, "Your
    answer:" and its <answer> block, the critique) is not its answer: SmolLM2-135M echoed them, and wrote 87% of its
    rebuttals without a tag (issue 23).
    """
    body = _without_prompt_echo(strip_think(text or ""))
    parsed = parse_answer(body)
    if parsed.tier not in ("xml", "markdown"):
        sentence = _answer_sentence(body)
        if sentence is None:
            return None
        parsed = ParsedAnswer(sentence, body.strip(), "paragraph")
    rebuttal = extract_tag(body, "rebuttal")
    if rebuttal is None:
        section = extract_section(body, ("rebuttal",))
        rebuttal = section[0] if section else parsed.reasoning
    return ParsedRebuttal(rebuttal, parsed)


# The labels our rebuttal and revision prompts put before a block (prompts.REBUTTAL_USER, REVISE_USER): a reply
# that writes one of them is copying the prompt, and the block after it is ours, not the reply's.
_PROMPT_LABELS = ("your answer:", "your current answer:", "your reasoning:", "your reason:", "the reviewer's critique:",
                  "the critique you received:", "the other solvers' current answers:")
# Blocks only our prompts hold: a reply never needs to write them.
_ECHO_BLOCKS = ("question", "critique", "other_solver", "candidate")


def _without_prompt_echo(text: str, blocks: tuple[str, ...] = _ECHO_BLOCKS) -> str:
    """The reply without what it copied from our prompt: <question>, <critique> and <other_solver> blocks, and a
    block right after one of our labels ("Your answer:\n<answer>\n5\n</answer>"). A copied block left open hides
    the rest of the reply. One pass over the lines."""
    kept: list[str] = []
    closing: str | None = None  # the closing tag that ends the copied block being skipped
    after_label = False
    for line in text.split("\n"):
        head = line.strip().lower()
        if closing is None:
            opened = next((t for t in blocks if head.startswith(f"<{t}")), None)
            if opened is None and after_label and head.startswith("<"):
                opened = head[1:].split(">", 1)[0].split(" ", 1)[0]
            if opened is None:
                after_label = head in _PROMPT_LABELS or (after_label and not head)
                if not after_label:
                    kept.append(line)
                continue
            closing, after_label = f"</{opened}", False
        if closing in head:
            closing = None
    return "\n".join(kept)


# --- judges -----------------------------------------------------------------

# "FINAL ANSWER: x" on one line, with markdown decoration around the label.
_FINAL_LINE = re.compile(
    r"^[ \t>#*_`-]{0,12}final[ \t]{1,4}answer[ \t*_`]{0,6}[:：=-][ \t*_`]{0,6}(?P<value>.*)$",
    re.IGNORECASE,
)
# "CONFIDENCE: 85", "85%", "85/100", "0.85", with decoration.
_CONFIDENCE_LINE = re.compile(
    r"^[ \t>#*_`-]{0,12}confidence(?:[ \t]{1,4}(?:level|score))?[ \t*_`]{0,6}[:：=-][ \t*_`]{0,6}"
    r"(?P<number>\d{1,3}(?:\.\d{1,6})?)[ \t]{0,3}(?P<unit>%|/[ \t]{0,3}100|/[ \t]{0,3}1(?!\d))?",
    re.IGNORECASE,
)


def parse_confidence(number: str, unit: str | None = None) -> int | None:
    """Confidence on a 0-100 scale; "0.85" and "0.85/1" mean 85."""
    try:
        value = float(number)
    except ValueError:
        return None
    unit = (unit or "").replace(" ", "")
    if unit == "/1" or ("." in number and value <= 1.0 and unit != "%" and unit != "/100"):
        value *= 100
    return max(0, min(100, round(value)))


def _clean_value(value: str) -> str:
    return value.strip().strip("*_`").strip()


def parse_judgement(text: str) -> ParsedJudgement:
    """The last FINAL ANSWER and CONFIDENCE lines of a judge's output.

    A FINAL ANSWER label with nothing after it takes the next non-empty line; one that repeats our prompt's
    placeholder is no answer. Falls back, for judges that ignore the line format, to an <answer> tag outside the
    candidate blocks it echoed, then to a last "The answer is X" sentence. Without a CONFIDENCE line, "confidence:
    80%" or "I am 90% sure" in a sentence is read (SmolLM2-135M wrote no CONFIDENCE line in 503 replies, issue 23).
    """
    body = strip_think(text or "")
    final, confidence = _final_lines(body.split("\n"))
    tier = "final-answer-line"
    if final is None:  # the judge's own words: an <answer> it echoed from a candidate block is not its vote
        own = "\n".join(_own_lines(body))
        tagged = extract_tag(own, "final_answer") or extract_tag(own, "answer")
        final, tier = (tagged, "xml") if tagged else (_answer_sentence(own), "sentence")
    if confidence is None:
        confidence = _confidence_in_words(body)
    analysis = extract_tag(body, "analysis") or body.strip()
    return ParsedJudgement(final or None, confidence, analysis, tier if final else "final-answer-line")


def _final_lines(lines: list[str]) -> tuple[str | None, int | None]:
    """The values of the last FINAL ANSWER line (not a placeholder of our prompt) and the last CONFIDENCE line."""
    final: str | None = None
    confidence: int | None = None
    for index, line in enumerate(lines):
        if len(line) > 4000:
            continue
        match = _FINAL_LINE.match(line)
        if match:
            value = _clean_value(match.group("value"))
            if not value:
                value = next((_clean_value(n) for n in lines[index + 1:index + 4] if n.strip()), "")
            value = _clean_value(_TRAILING_CONFIDENCE.sub("", value))
            if value and not is_placeholder(value):
                final = value
        conf = _CONFIDENCE_LINE.match(line)
        if conf:
            confidence = parse_confidence(conf.group("number"), conf.group("unit"))
    return final, confidence


# A confidence written after the answer on its line: "36 (confidence: 90%)", "B, confidence 80". Bounded runs,
# one word fixed: linear.
_TRAILING_CONFIDENCE = re.compile(r"[ \t]{0,3}[(\[,;–-]?[ \t]{0,3}\bconfidence\b[^\n]{0,200}$", re.IGNORECASE)


# The answer of our prompts' format examples (prompts.EXAMPLE_REBUTTAL, EXAMPLE_JUDGEMENT): a made-up word, so a
# reply that copies an example back is told apart from an answer.
EXAMPLE_ANSWER = "Zorblax"


# What our prompts put where an answer goes ("FINAL ANSWER: the answer"): a model that copies the format line
# back has given none. prompts.py writes its examples from these. Compared lower case, edge punctuation stripped.
PLACEHOLDERS = frozenset({
    "the answer", "your answer", "the correct answer", "your final answer", "the correct answer itself",
    "the correct answer itself (not a candidate label)", "", "a whole number from 0 to 100",
    "your final answer only, revised or not", "the label of the best candidate (for example: final answer: b)",
    "your answer only", "your response to the critique", "why you hold or change your answer",
    "(your final answer)", "your final answer only: a number, a word, a letter or one short sentence",
    EXAMPLE_ANSWER,
})


def _placeholder_key(value: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]{1,100}", value.lower()))  # words only: one bounded class


_PLACEHOLDER_KEYS = frozenset(map(_placeholder_key, PLACEHOLDERS))


def is_placeholder(value: str) -> bool:
    """Whether an answer only repeats a placeholder of our prompts ("the answer", "<your answer>") or is
    punctuation alone."""
    return len(value) <= 200 and _placeholder_key(value) in _PLACEHOLDER_KEYS


# A confidence said in a sentence: "confidence: 80%", "Confidence level is 85", "my confidence is 0.9", "I am 90%
# sure", "with 90% confidence". Fixed words, every run bounded, no nesting: linear in the line.
_CONFIDENCE_WORDS = re.compile(
    r"\bconfidence(?:[ \t]{1,4}(?:level|score))?(?:[ \t]{1,4}(?:is|of))?[ \t*_`]{0,4}[:：=]?[ \t*_`]{0,4}"
    r"(?P<number>\d{1,3}(?:\.\d{1,6})?)[ \t]{0,3}(?P<unit>%|/[ \t]{0,3}100)?"
    r"|(?P<percent>\d{1,3})[ \t]{0,3}%[ \t]{1,4}(?:sure|certain|confident|confidence)\b",
    re.IGNORECASE,
)


def _confidence_in_words(text: str) -> int | None:
    """The last confidence a judge said in a sentence, on a 0-100 scale, or None."""
    found = None
    for line in text.split("\n"):
        if len(line) <= 4000:
            found = _last_match(_CONFIDENCE_WORDS, line) or found
    if found is None:
        return None
    if found.group("percent"):
        return parse_confidence(found.group("percent"), "%")
    return parse_confidence(found.group("number"), found.group("unit"))


# "The answer is: Paris.", "This answer is 391", "The correct answer is (C) Venus.", "My final answer would be B",
# "So the answer is 5", "My answer remains 36", "I keep my answer: no": a judge or a rebuttal that ignored the format
# line but said its answer in a sentence (SmolLM2-135M, issue 23). It may open the line (after "So", "Therefore") or
# follow a sentence on it ("The original answer was wrong. The correct answer is 2."); an adverb before the value
# ("The answer is indeed no.") is not the answer. Every run bounded, the value the line's rest: linear in the line.
_ANSWER_IS_LINE = re.compile(
    r"(?:^[ \t>#*_`\"-]{0,12}|(?<=[.!?])[ \t]{1,4})"
    r"(?:(?:so|thus|therefore|hence|finally|overall|in[ \t]{1,3}conclusion)[ \t,]{1,4})?(?:"
    r"(?:(?:the|this|my|our|your)[ \t]{1,4})?(?:(?:final|correct|right|best|original)[ \t]{1,4})?answer[ \t]{1,4}"
    r"(?:to[ \t]{1,4}(?:this|the|your)[ \t]{1,4}(?:[a-z]{1,15}[ \t]{1,4})?question[ \t]{1,4})?"
    r"(?:is(?:[ \t]{1,4}still)?|would[ \t]{1,4}be|remains|stays|should[ \t]{1,4}be|will[ \t]{1,4}remain)"
    r"|i[ \t]{1,4}(?:keep|maintain|stand[ \t]{1,4}by)[ \t]{1,4}my[ \t]{1,4}(?:(?:original|final)[ \t]{1,4})?answer"
    r"(?:[ \t]{1,4}of)?)"
    r"[ \t*_`]{0,6}:?[ \t*_`]{0,6}"
    r"(?:(?:indeed|actually|clearly|simply|definitely|probably|still)[ \t]{1,4})?(?P<value>[^ \t].{0,300})$",
    re.IGNORECASE,
)
# The first sentence end inside a value ("5. I checked it twice."): a stop followed by a capital; "3.5" stays whole.
_VALUE_SENTENCE_END = re.compile(r"[.!?](?=[ \t]{1,4}[A-Z])")
# What follows "the answer is" when it judges an answer instead of giving one: "The answer is correct.", "The
# answer is not 6", "The answer is as follows:". First words only, lower case.
_VERDICT_WORDS = frozenset({
    "correct", "incorrect", "wrong", "right", "accurate", "inaccurate", "valid", "invalid", "not", "also",
    "same", "the same", "as", "below", "above", "given", "provided", "shown", "clear", "obvious", "simple",
    "that", "this", "because", "based", "unclear", "unknown", "in", "to", "none",
})


def _answer_sentence(text: str) -> str | None:
    """The value of the last "The answer is X" sentence that gives an answer, or None."""
    for line in reversed(text.split("\n")):
        match = _ANSWER_IS_LINE.search(line) if len(line) <= 4000 else None
        value = _clean_value(match.group("value")) if match else ""
        cut = _VALUE_SENTENCE_END.search(value)
        value = _clean_value(value[:cut.end()] if cut else value)
        first = value.lower().strip(_EDGE_PUNCT).split(" ", 1)[0].strip(_EDGE_PUNCT)  # "correct, and I…" judges
        if value and first not in _VERDICT_WORDS and not is_placeholder(value):
            return value
    return None


@dataclass(frozen=True)
class ParsedRanking:
    """A judge's ranking of the candidates, best first, and its CONFIDENCE (the rules: parse_ranking)."""

    order: tuple[str, ...]  # labels named, best first, each once, upper case
    confidence: int | None
    analysis: str
    complete: bool  # every label named exactly once and nothing else
    tier: str  # "ranking-line" or "final-answer-line" (a judge that named only a winner)


# Longer than this, a line is not one a judge wrote to be read (parse_judgement skips the same lines).
_MAX_RANKING_LINE = 4000
# How far below a bare "RANKING:" line its numbered list may run (64 candidates, with blank lines between).
_MAX_LIST_LINES = 150
# "RANKING: B > A", "**Final ranking:**", "## RANKING -", "Ranking (best first):", "## Ranking" (a list follows),
# with the markdown decoration _FINAL_LINE allows, and as a JSON key ('"ranking": ["B", "A"]', '{"ranking": ...').
# A "-" separator needs a space after it, so "Ranking-based
# scoring" is prose. Anchored, every run bounded, the value one line's rest: linear in the line.
_RANKING_LINE = re.compile(
    r"^[ \t>#*_`\"{-]{0,12}(?:(?:final|my|overall)[ \t]{1,4})?rankings?(?:[ \t]{1,4}\([^()\n]{0,40}\))?"
    r"[ \t*_`\"]{0,6}(?:(?:[:：=]|-(?=[ \t]|$))[ \t*_`]{0,6}(?P<value>.*))?$",
    re.IGNORECASE,
)
# Between ranked entries: ">", ">>", "→", ",", ";", "=" (a tie, read in written order), their full-width twins
# ("B＞A", "B，A", "B、A": a Chinese or Japanese judge's punctuation), the word "then", and an
# inline enumerator (" 2. " in "1. B 2. A 3. C"). Alternatives of bounded length: no backtracking.
_RANK_SEPARATOR = re.compile(r"[>＞]{1,3}|→|[,;=，；、]|\bthen\b|[ \t]\d{1,2}[.)][ \t]", re.IGNORECASE)
# Emphasis and quotes around or inside an entry ("**B**", "`A`", "'C'"): dropped before reading it.
_ENTRY_DECORATION = re.compile(r"[*_`\"'“”]")
# An ordinal before or after the label ("B first", "first B", "2nd: A"), or the "and" of "B and then A": dropped
# before reading it, or "Final ranking: B first, then A, then C" named A first. Not "last" or "worst": "C last"
# read alone would put C first. Anchored at one end, fixed words: no backtracking.
_ENTRY_FILLER = re.compile(r"^(?:first|second|third|fourth|fifth|sixth|and|\d{1,2}(?:st|nd|rd|th))\b[ \t:]{0,3}"
                           r"|[ \t]{1,3}(?:first|second|third|fourth|fifth|sixth|best|and)$", re.IGNORECASE)
# A label's possessive ("B's answer", "Candidate B’s response"): read as "B: answer", or the entry named nothing and
# the next label took the judge's first place. Upper-case label, anchored, runs bounded.
_POSSESSIVE = re.compile(r"^((?i:candidate|response|answer|option|solution)[ \t]{1,3})?([A-Z]{1,2})['’]s\b")
# "A and C", "A & C" as the last entry ("RANKING: B, A and C"): two labels, in written order. Each side one word, so
# prose ("a tie between B and C") is not split. Anchored, runs bounded.
_AND_PAIR = re.compile(r"^[ \t]{0,8}(\S{1,30})[ \t]{1,4}(?:and|&)[ \t]{1,4}(\S{1,30})[ \t]{0,8}$", re.IGNORECASE)
# An entry that is a label alone: "B", "(B)", "[B].", "b", "Candidate B", "candidate b", "2) Response A". The
# label is one or two letters between non-letters, so "AB" is never read as A, B. Anchored both ends, runs bounded.
_EXACT_ENTRY = re.compile(
    r"^(?:\d{1,3}[.)][ \t]{0,3})?(?:(?:candidate|response|answer|option|solution)[ \t]{0,3})?"
    r"[(\[]?[ \t]{0,2}(?P<label>[a-z]{1,2})[ \t]{0,2}[)\]]?[.:]?$",
    re.IGNORECASE,
)
# An upper-case label with a comment after punctuation or a verb: "B (most complete)", "Candidate A: correct",
# "C - misses a case", "B is best". Upper case and the punctuation or verb keep prose ("I think", "A good one")
# from reading as a label. Anchored, runs bounded.
_LEADING_ENTRY = re.compile(
    r"^(?:\d{1,3}[.)][ \t]{0,3})?(?i:(?:candidate|response|answer|option|solution)[ \t]{0,3})?"
    r"[(\[]?(?P<label>[A-Z]{1,2})[)\]]?(?:[ \t]{0,3}[(.:\-–—]|[ \t]{1,3}(?:is|was|comes|ranks)\b)"
)
# A numbered or bulleted list item below a bare "RANKING:" line: "1. B", "2) **A** - ...", "- C". Anchored.
_LIST_ITEM = re.compile(r"^[ \t]{0,8}(?:\d{1,3}[.)]|[-*•])[ \t]{1,4}(?P<entry>.*)$")


def _entry_label(entry: str) -> str | None:
    """The label one ranked entry names, upper case, or None when it names none."""
    entry = _POSSESSIVE.sub(r"\1\2:", _ENTRY_DECORATION.sub("", entry.replace("'s", "’s")).strip())
    entry = _ENTRY_FILLER.sub("", entry).strip()
    match = _EXACT_ENTRY.match(entry) or _LEADING_ENTRY.match(entry)
    return match.group("label").upper() if match else None


def _read_entries(entries: list[str], labels: frozenset[str]) -> tuple[tuple[str, ...], bool]:
    """The labels named, each at its first place, and whether nothing else was named (no repeat, no stranger)."""
    order: list[str] = []
    clean = True
    pairs = [_AND_PAIR.match(entry) for entry in entries]
    entries = [part for entry, pair in zip(entries, pairs, strict=True)
               for part in (pair.groups() if pair else (entry,))]
    for entry in filter(str.strip, entries):
        label = _entry_label(entry)
        if label in labels and label not in order:
            order.append(label)
        else:
            clean = False
    return tuple(order), clean


def _list_below(lines: list[str]) -> list[str]:
    """The entries of the list that starts on the first non-blank line, up to its first other line (an indented
    line inside the list continues an item)."""
    entries: list[str] = []
    for line in lines[:_MAX_LIST_LINES]:
        item = _LIST_ITEM.match(line) if len(line) <= _MAX_RANKING_LINE else None
        if item:
            entries.append(item.group("entry"))
        elif line.strip() and not (entries and line[:1].isspace()):
            break
    return entries


def _ranking_line(lines: list[str], labels: frozenset[str]) -> tuple[tuple[str, ...], bool]:
    """The order on the last ranking line, or else in the list below it; () when there is none or it names none."""
    found = [i for i, line in enumerate(lines) if len(line) <= _MAX_RANKING_LINE and _RANKING_LINE.match(line)]
    if not found:
        return (), False
    match = _RANKING_LINE.match(lines[found[-1]])
    value = ((match and match.group("value")) or "").strip()
    if value[:1] == "[" and value[1:].lstrip()[:1] in ('"', "'") and "]" in value:  # '["B", "A"], "conf...'
        value = value[1:value.index("]")]
    order, clean = _read_entries(_RANK_SEPARATOR.split(value), labels)
    return (order, clean) if order else _read_entries(_list_below(lines[found[-1] + 1:]), labels)


def parse_ranking(text: str, labels: Collection[str]) -> ParsedRanking | None:
    """A judge's ranking of the candidates labelled `labels` (1-2 upper-case letters), best first.

    - Tier "ranking-line": the LAST line labelled RANKING ("RANKING: B > A > C", "**Ranking:**", "## RANKING -",
      "Final ranking:"), read alone: an earlier one may be the prompt's example, echoed. Entries are separated by
      ">", ">>", "→", ",", ";", "=", "then" or an enumerator ("1. B 2. A"); a tie "A = B" counts in written
      order. An entry is a label, in any case, with decoration ("(B)", "[B]", "**B**", "B.", "Candidate b"), or
      an upper-case label followed by punctuation or "is/was/comes/ranks" and a comment ("B (most complete)",
      "A: correct", "B is best"). When the line names no label, a numbered or bulleted list starting below it
      ("1. B" / "2. A"; indented lines continue an item; any other line ends it) is the ranking. A line over
      4000 characters is not read (nor does parse_judgement read one).
    - An entry naming no label of this judge (E when only A-C exist, "none", words) is ignored; a label named
      again counts at its first place only. A ranking that names no label falls through to the next tier.
    - Tier "final-answer-line": a FINAL ANSWER line (as parse_judgement reads it) naming a label gives that
      winner alone, a partial ballot (a ranking written there is read like a ranking line).
    - Nothing usable: None, and the pipeline retries the judge. CONFIDENCE and the analysis are parse_judgement's.
    `complete` says every label was named exactly once and nothing else was.
    """
    wanted = frozenset(label.upper() for label in labels)
    judgement = parse_judgement(text)
    order, clean = _ranking_line(_own_lines(strip_think(text or "")), wanted)
    tier = "ranking-line"
    if not order and judgement.final_answer and len(judgement.final_answer) <= _MAX_RANKING_LINE:
        order, clean = _read_entries(_RANK_SEPARATOR.split(judgement.final_answer), wanted)
        tier = "final-answer-line"
    if not order:
        return None
    complete = clean and len(order) == len(wanted)
    return ParsedRanking(order, judgement.confidence, judgement.analysis, complete, tier)


def _own_lines(text: str) -> list[str]:
    """A judge's lines without those it echoed from a <candidate> block or quoted with ">": a candidate may end
    with "RANKING: C > A > B", which is its words, not the judge's ballot. A block left open hides the rest."""
    lines, echoed = [], False
    for line in text.split("\n"):
        head = line.lstrip()[:12].lower()
        echoed = echoed or head.startswith("<candidate")
        if not echoed and not head.startswith(">"):
            lines.append(line)
        echoed = echoed and "</candidate>" not in line.lower()
    return lines


# --- normalisation for voting -----------------------------------------------

# \boxed{...} with up to one level of nested braces, as LaTeX answers use.
_BOXED = re.compile(r"\\boxed\s{0,3}\{((?:[^{}]|\{[^{}]{0,200}\}){0,500})\}")
_TEXT_CMD = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s{0,3}\{([^{}]{0,500})\}")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_EMPHASIS = re.compile(r"[*_`]+")
# One tag around the whole answer, "<response>…</response>": a bounded name, its own closing tag, a bounded body.
_WRAPPING_TAG = re.compile(r"^<([a-z_]{1,20})>(.{0,2000})</\1>$", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n.,;:!?\"'()[]{}"


def canonical_number(text: str) -> str | None:
    """"391", "391.0", "391.", "+391" all become "391"; None if not a number."""
    candidate = text.strip().rstrip(".")
    number = r"[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?"
    if not candidate or len(candidate) > 60 or not re.fullmatch(number, candidate, re.I):
        return None
    try:
        value = Decimal(candidate)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return format(value.to_integral_value(), "f")
    return format(value.normalize(), "f")


def normalize_answer(answer: str) -> str:
    """The form answers are compared in when votes are counted."""
    text = strip_think(answer or "")
    wrapped = _WRAPPING_TAG.match(text.strip()) if len(text) <= 2000 else None
    if wrapped:  # "<response>Paris</response>": a tag of the model's own around the whole answer (SmolLM2, issue 23)
        text = wrapped.group(2)
    boxed = _BOXED.search(text)
    if boxed:
        text = boxed.group(1)
    text = _TEXT_CMD.sub(r"\1", text)
    text = text.replace("$", "").replace("\\,", "").replace("\\!", "")
    text = _EMPHASIS.sub("", text)
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _SPACES.sub(" ", text).strip(_EDGE_PUNCT).lower()
    number = canonical_number(text)
    return number if number is not None else text


# --- question-type aware normalisation ----------------------------------------------
#
# Votes on exact strings only agree when answers are short and canonical. The
# type of answer a question wants drives how answers are compared and how the
# verdict is printed.

ANSWER_TYPES = ("number", "yes_no", "choice", "short", "long")
SHORT_ANSWER_CHARS = 80  # longer answers are free text: judges choose among them by label

YES_WORDS = frozenset({"yes", "y", "true", "correct", "right", "affirmative"})
NO_WORDS = frozenset({"no", "n", "false", "incorrect", "wrong", "negative"})
# An option line in a question: "(A) ...", "A) ...", "A. ...", "A: ..." at the start of a line or after spaces.
_OPTION = re.compile(r"(?:^|\n|\s)\(?([A-Ha-h])[).:]\s{1,4}\S")
# A letter answer: "B", "(B)", "b)", "B.", "Option B", "answer: (B) 63".
_LETTER = re.compile(r"^(?:the\s{1,3})?(?:option|choice|answer)?\s{0,3}:?\s{0,3}\(?([A-Ha-h])\)?(?:[.):]|\s|$)", re.I)
_NUMBER = re.compile(r"[-+]?\d[\d,]{0,30}(?:\.\d{1,30})?(?:e[-+]?\d{1,4})?", re.I)


# A yes/no question: it opens with an auxiliary verb ("Is 7 even?", "Does water boil …?"), not a polite request
# ("Can you tell me what 2+2 is?"), or it says "yes or no". Anchored or a fixed phrase, runs bounded: linear.
_YES_NO_QUESTION = re.compile(r"^\s{0,20}(?:is|are|was|were|do|does|did|has|have|had|should"
                              r"|(?:can|could|will|would)(?![ \t]{1,3}you\b))\b|\byes[ \t]{1,3}or[ \t]{1,3}no\b",
                              re.IGNORECASE)


def choice_letters(question: str) -> frozenset[str]:
    """Letters the question offers as options (at least two), upper case."""
    letters = {m.group(1).upper() for m in _OPTION.finditer(question[:20_000])}
    return frozenset(letters) if len(letters) >= 2 else frozenset()


def as_letter(answer: str, letters: frozenset[str]) -> str | None:
    match = _LETTER.match(normalize_answer(answer).strip() or "")
    if match and match.group(1).upper() in letters:
        return match.group(1).upper()
    return None


def as_yes_no(answer: str, question: str = "") -> str | None:
    """"yes" or "no" by the answer's first word; with the question, also a first sentence that restates it
    ("9 is not a prime number." is no, "10 is indeed an even number." is yes)."""
    words = normalize_answer(answer).split()
    first = words[0].strip(".,!") if words else ""
    if first in YES_WORDS or first in NO_WORDS:
        return "yes" if first in YES_WORDS else "no"
    return _restated_yes_no(question, " ".join(words[:60])) if question and words else None


# Words of a yes/no question that a restating answer need not repeat: the verb that opens it, articles, the format.
_YES_NO_FILLER = frozenset({"is", "are", "was", "were", "do", "does", "did", "has", "have", "had", "can", "could",
                            "will", "would", "should", "a", "an", "the", "answer", "yes", "or", "no", "in", "of", "to"})
# A negation in a restating sentence: "is not", "isn't", "never". Fixed words: linear.
_NEGATION = re.compile(r"\b(?:not|never|no[ \t]{1,3}longer)\b|n't\b")


def _restated_yes_no(question: str, answer: str) -> str | None:
    """yes/no from the answer's first sentence when it holds every content word of the question's first sentence:
    "no" with a negation in it, else "yes"; None when it restates something else ("10 is a special case of 11")."""
    asked = _QUESTION_WORD.findall(_SENTENCE_STOP.split(question[:500].lower())[0])
    sentence = _SENTENCE_STOP.split(answer)[0]
    said = set(_QUESTION_WORD.findall(sentence))
    content = [w for w in asked if w not in _YES_NO_FILLER]
    if not content or not set(content) <= said:
        return None
    return "no" if _NEGATION.search(sentence) else "yes"


# A worked line: arithmetic (digits, operators, brackets) up to its first "=": "2 + 3 = 5", "17 * 23 = 340 + 51 = 391",
# not "x = 3, y = 4". One bounded character class, anchored: linear.
_WORKED_LINE = re.compile(r"^[\d\s+\-*/×÷^().,]{1,200}=")


# A sentence's closing result: "…, which is 5", "12 * 3 is 36", "a spider has 8 legs", "the answer is 100 centimeters".
# The verb, then the number and at most three words to the end. Fixed words and bounded runs; search tries each
# start once with bounded work: linear.
_CLOSING_NUMBER = re.compile(
    r"(?:\bis|=|\bequals|\bequal[ \t]{1,3}to|\bmakes|\bgives|\bare|\bhas|\bhave|\b(?:will|would)[ \t]{1,3}be)[ \t]{1,3}"
    r"(?:(?:about|exactly|just|only|approximately|roughly)[ \t]{1,3})?(?P<number>[-+]?\d[\d,]{0,30}(?:\.\d{1,30})?)"
    r"(?:[ \t]{1,3}[a-z]{1,20}){0,3}$")
# Small numbers in words, for replies that spell them ("A spider has eight legs."): one lookup per word.
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000"}
# "one hundred", "a thousand": the word before hundred/thousand is its multiplier of one, not a second number.
_ONE_HUNDRED = re.compile(r"\b(?:one|a)[ \t]{1,3}(?=hundred\b|thousand\b)")


def _spelled_number(text: str) -> str:
    """The text with its spelled-out numbers in digits ("has eight legs" -> "has 8 legs", "six legs, but 8" ->
    "6 legs, but 8")."""
    if not any(w in text for w in ("zero", "one", "two", "thr", "fo", "fi", "six", "sev", "eig", "nin", "ten",
                                   "ele", "twe", "hundred", "thousand")):
        return text  # the common case, without splitting
    words = _ONE_HUNDRED.sub("", text).split(" ")
    return " ".join(_NUMBER_WORDS.get(w.strip(_EDGE_PUNCT), w) for w in words)


def as_number(answer: str) -> str | None:
    """The answer's number, to 6 significant digits: 391, 391.0 and "391 apples" agree;
    0.3333333 and 0.333333 agree; 0.33 does not. A worked line gives its result: "2 + 3 = 5" is 5; so does a
    sentence's closing one ("12 * 3 is 36.") and a number in words ("A spider has eight legs.")."""
    text = normalize_answer(_answer_part(answer))
    sentences = _SENTENCE_STOP.split(text[:2000])[:_SENTENCES_READ]
    if len(sentences) == 1:
        return _sentence_number(text)
    # A denial ("The answer is not 2+3 = 4.") says no number; two different numbers are a hedge, not an answer.
    said = list(dict.fromkeys(filter(None, (_sentence_number(s) for s in sentences if not _NEGATION.search(s)))))
    return said[0] if len(said) == 1 else None


# Sentences of an answer ("A spider has 8 legs. Each leg has…"): a stop and a space ("3.5" stays whole).
_SENTENCE_STOP = re.compile(r"(?<=[.!?])[ \t\n]{1,20}")
# An answer read sentence by sentence reads its first few: the answer leads, rambling follows; a second number
# among them ("A spider has six legs, but … 8 legs", "1 meter = 100 cm. … approximately 2.17") is a hedge.
_SENTENCES_READ = 5


def _sentence_number(sentence: str) -> str | None:
    """The number one sentence gives: its only number in a short sentence, a worked line's result, or a closing
    result ("…, which is 5"); None otherwise."""
    text = _spelled_number(sentence.strip(_EDGE_PUNCT))
    if _WORKED_LINE.match(text):  # what the last "=" gives (issue 23)
        text = text.rsplit("=", 1)[-1].strip()
    found = _NUMBER.findall(text)
    if len(found) != 1 or len(text) > SHORT_ANSWER_CHARS:
        # Two equations ("x = 3, y = 4") have no one result.
        closing = _CLOSING_NUMBER.search(text) if len(text) <= 300 and text.count("=") < 2 else None
        found = [closing.group("number")] if closing else []
    if len(found) != 1:
        return None
    try:
        value = float(found[0].replace(",", ""))
    except ValueError:
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _answer_part(answer: str) -> str:
    """What follows "The answer is" in a one-line answer ("The answer is B." -> "B."), else the answer."""
    if len(answer) > 300 or "answer" not in answer.lower():
        return answer
    return _answer_sentence(answer) or answer


# A capital, a name, a word said in a sentence: "The capital of Japan is Tokyo.", "Tokyo is the capital of Japan.".
# The sentence splits at its first "is"/"are"/"was"/"were"; fixed words between spaces: linear.
_COPULA = re.compile(r"[ \t](?:is|are|was|were)[ \t]")
# Words a sentence restating the question may add around the answer's subject.
_RESTATING_WORDS = frozenset({"the", "a", "an", "of", "it", "its", "this", "that", "answer", "correct", "in", "to",
                              "so", "and", "what", "which", "is", "are", "called", "known", "as", "city"})
_QUESTION_WORD = re.compile(r"[a-z0-9]{1,40}")


def sentence_answer(question: str, answer: str) -> str | None:
    """The answer a sentence gives to the question, or None when it is no such sentence.

    "The capital of Japan is Tokyo." -> "tokyo": one side of the "is" restates the question (its words are the
    question's, one new word at most), the other side, to its first comma, is the answer. Normalised as keys are.
    """
    sentences = _SENTENCE_STOP.split(normalize_answer(_answer_part(answer))[:2000])[:_SENTENCES_READ]
    asked = set(_QUESTION_WORD.findall(question[:2000].lower()))
    return next(filter(None, (_said_in(s.strip(_EDGE_PUNCT), asked) for s in sentences)), None)


def _said_in(text: str, asked: set[str]) -> str | None:
    """sentence_answer for one sentence."""
    split = _COPULA.search(text) if len(text) <= 200 else None
    if split is None:
        return None
    left, right = text[:split.start()].strip(), text[split.end():].split(",")[0].strip(_EDGE_PUNCT)
    left_words, right_words = _QUESTION_WORD.findall(left), _QUESTION_WORD.findall(right)
    if _restates(left_words, asked) and 0 < len(right_words) <= 4:
        return right
    if _restates(right_words, asked) and 0 < len(left_words) <= 3 and not set(left_words) & asked:
        return left
    return None


def _restates(words: list[str], asked: set[str]) -> bool:
    """Whether words restate the question: some of its content words, at most one word it does not hold."""
    content = [w for w in words if w not in _RESTATING_WORDS]
    # A number alone restates nothing: "3 is 5, not 7." does not answer "What is 2+3?" with 5.
    return any(w in asked and not w.isdigit() for w in content) and sum(w not in asked for w in content) <= 1


# An option line in a question, with its text: "B) Mercury", "(C) Mars", "D. Earth". Anchored per line, runs bounded.
_OPTION_TEXT = re.compile(r"^[ \t]{0,8}\(?([A-Ha-h])[).:][ \t]{1,4}([^\n]{1,100})$", re.MULTILINE)


def option_letter(question: str, answer: str, letters: frozenset[str]) -> str | None:
    """The option an answer names by its text ("Mercury", "The closest planet is Mercury." -> "B"): exactly one
    option's text appears in it as whole words, or None."""
    text = f" {normalize_answer(answer)} " if len(answer) <= 300 else ""
    options = {m.group(1).upper(): normalize_answer(m.group(2)) for m in _OPTION_TEXT.finditer(question[:20_000])}
    named = [letter for letter, option in options.items()
             if letter in letters and option and re.search(rf"(?<![a-z0-9]){re.escape(option)}(?![a-z0-9])", text)]
    return named[0] if len(named) == 1 else None


def detect_answer_type(question: str, answers: list[str]) -> str:
    """What kind of answer the question wants, judged from the question and most candidates."""
    answers = [a for a in answers if a and a.strip()]
    if not answers:
        return "short"
    majority = len(answers) / 2
    letters = choice_letters(question)
    if letters and sum((as_letter(a, letters) or option_letter(question, a, letters)) is not None
                       for a in answers) > majority:
        return "choice"
    # A yes/no question is typed yes/no first: "No, 7 is not an even number." holds a number too (issue 23).
    order = ("yes_no", "number") if _YES_NO_QUESTION.search(question[:20_000]) else ("number", "yes_no")
    readers: dict[str, Callable[[str], str | None]] = {"number": as_number,
                                                       "yes_no": lambda a: as_yes_no(a, question)}
    for kind in order:
        if sum(readers[kind](a) is not None for a in answers) > majority:
            return kind
    # Most answers long, not one: a single rambling reply must not turn a short question into free text (issue 23).
    return "long" if sum(len(a) > SHORT_ANSWER_CHARS for a in answers) > majority else "short"


def answer_key(kind: str, answer: str, letters: frozenset[str] = frozenset(), question: str = "") -> str:
    """The form answers are compared in for a question of type ``kind``. With the question, an answer said in a
    sentence is read as its answer ("The capital of Japan is Tokyo." is Tokyo, "Mercury" is option B)."""
    if kind == "choice":
        letter = as_letter(_answer_part(answer), letters) or (option_letter(question, answer, letters)
                                                              if question else None)
        return letter if letter else normalize_answer(answer)
    if kind == "number":
        return as_number(answer) or normalize_answer(answer)
    if kind == "yes_no":
        return as_yes_no(_answer_part(answer), question) or normalize_answer(answer)
    if kind == "short" and question:
        return sentence_answer(question, answer) or normalize_answer(_answer_part(answer))
    return normalize_answer(answer)


def present_answer(kind: str, answer: str, letters: frozenset[str] = frozenset()) -> str:
    """The verdict as printed: a bare number, yes/no, the letter; free text verbatim."""
    if kind in ("choice", "number", "yes_no"):
        key = answer_key(kind, answer, letters)
        if key and (kind != "choice" or key in letters):
            return key
    return answer.strip()


# --- answer shapes ------------------------------------------------------------
#
# The shape is the kind of response the user gets: "short" (today's contract: a number, a
# word, a letter, one sentence, voted on) or "full" (a whole response: code, prose, a list,
# ranked and synthesized). question_shape guesses it from the question alone, before any
# model runs, and says why in a few words. When unsure it says short, today's contract.

@dataclass(frozen=True)
class ShapeGuess:
    """The answer shape a question wants, and a few words saying why (for the log line)."""

    shape: str   # "short" or "full"
    reason: str  # "it asks to write something", "a multiple-choice question"


# Only this much of a long question is read: its head (where the request usually is) and its
# tail (where "Fix the bug." follows a pasted file). A 100k-character paste costs no more.
_SHAPE_HEAD, _SHAPE_TAIL = 6000, 2000
# Sentences looked at: the first few and the last few. A request sits at the start ("Summarize
# the following article: ...") or at the end ("... Fix the bug."); a pasted body in between may
# hold any sentence ("'Tell me about your day,' she said.") and is not read.
_SHAPE_FIRST, _SHAPE_LAST = 8, 4
# Options at a line start ("(A) 4", "B) 5", "c. 6") or parenthesised inline ("(A) 4 (B) 5"):
# stricter than _OPTION, so "def f(a: int, b: int)" is not a multiple-choice question.
# Each alternative is a fixed-width prefix plus one character: no backtracking.
_SHAPE_OPTION = re.compile(r"(?:^|\n)[ \t]{0,8}\(?([A-Ha-h])[).][ \t]{1,4}\S|\(([A-H])\)[ \t]{1,4}\S")
# Sentence ends: .!? followed by a space, or a line break ("3.5" and "e.g.," stay whole).
_SENTENCE_END = re.compile(r"(?<=[.!?])[ \t]+|\n")
# A word, lower case, in any alphabet ("erkläre", "écris"); bounded so a 10k-letter "word" costs one bounded
# match. The two alternatives are disjoint (a letter or digit, an apostrophe): one way to match each character.
_SHAPE_WORD = re.compile(r"[^\W_](?:[^\W_]|['’]){0,30}")
# An arithmetic expression: digits, an operator, digits ("17 * 23", "2^10", "3x + 5 = 20").
_ARITHMETIC = re.compile(r"\d[ \t]{0,3}[-+*/×x^=][ \t]{0,3}\(?[ \t]{0,3}\d")
# "as a fraction", "in binary", "in lowest terms": a conversion whose result is a value.
_CONVERSION = re.compile(
    r"\b(?:as[ \t]{1,3}an?[ \t]{1,3}(?:fraction|decimal|percentage|percent|integer|power|mixed number)"
    r"|in[ \t]{1,3}(?:binary|hex|hexadecimal|octal|roman numerals|scientific notation|base[ \t]{1,3}\d{1,2}"
    r"|lowest terms|simplest form))\b", re.IGNORECASE)

# Verbs that open an open-ended request when they are a sentence's first word (after "please").
_OPEN_VERBS = frozenset({
    "write", "rewrite", "explain", "draft", "summarize", "summarise", "code", "implement", "compare",
    "contrast", "list", "describe", "create", "design", "outline", "translate", "suggest", "propose",
    "review", "refactor", "debug", "fix", "compose", "generate", "build", "develop", "plan", "brainstorm",
    "discuss", "analyze", "analyse", "critique", "edit", "improve", "optimize", "optimise", "paraphrase",
    "recommend", "provide", "prepare", "produce", "teach", "document", "elaborate", "prove", "show",
    "make", "give", "tell", "help", "walk", "reply", "respond", "proofread", "polish", "expand",
})
# Words ahead of the request that change nothing: "please", "can you", "I'd like you to".
_POLITE_OPENERS = (
    ("please",), ("kindly",), ("can", "you"), ("could", "you"), ("would", "you"), ("will", "you"),
    ("can", "u"), ("i", "need", "you", "to"), ("i", "want", "you", "to"), ("i'd", "like", "you", "to"),
    ("i", "would", "like", "you", "to"), ("go", "ahead", "and"), ("now",), ("also",), ("just",), ("then",),
    ("and",), ("so",), ("hi",), ("hey",), ("hello",), ("ok",), ("okay",), ("briefly",), ("quickly",),
    ("do", "you", "know"), ("i", "wonder"), ("i", "want", "to", "know"), ("i'd", "like", "to", "know"),
    ("i", "need", "to", "know"), ("i", "would", "like", "to", "know"), ("in", "short"),
    ("bitte",), ("por", "favor"), ("per", "favore"), ("pouvez", "vous"), ("peux", "tu"), ("kannst", "du"),
    ("können", "sie"), ("könnten", "sie"), ("puedes",), ("podrías",), ("puoi",), ("potresti",), ("você", "pode"),
)
# The same requests in French, German, Spanish, Italian and Portuguese: a sentence's first word read as its
# English twin, so "Écris une fonction", "Erkläre, wie ...", "¿Por qué ...?" are what "Write", "Explain", "Why" are.
_FOREIGN_WORDS = {
    **dict.fromkeys(("écris", "écrivez", "rédige", "rédigez", "schreibe", "schreib", "escribe", "escriba",
                     "scrivi", "escreva", "escreve", "écrire", "escribir", "scrivere", "escrever"), "write"),
    **dict.fromkeys(("explique", "expliquez", "erkläre", "erklär", "explica", "spiega", "spieghi", "expliquer",
                     "explicar", "spiegare"), "explain"),
    **dict.fromkeys(("résume", "résumez", "fasse", "resume", "resuma", "resumir", "riassumi", "résumer"),
                    "summarize"),
    **dict.fromkeys(("décris", "décrivez", "beschreibe", "descrivi", "descreva", "décrire", "describir"), "describe"),
    **dict.fromkeys(("traduis", "traduisez", "übersetze", "traduce", "traduci", "traduza", "traduire", "traducir"),
                    "translate"),
    **dict.fromkeys(("compare", "comparez", "vergleiche", "compara", "confronta"), "compare"),
    **dict.fromkeys(("pourquoi", "warum", "wieso", "weshalb", "perché", "perche"), "why"),
    **dict.fromkeys(("comment", "wie", "cómo"), "how"),
}
# "Wie viel ist 7 mal 8?", "Wie alt ...": a German how-quantity question (see _HOW_QUANTITY).
_HOW_QUANTITY_DE = frozenset({"viel", "viele", "alt", "lange", "weit", "groß", "hoch", "oft", "schnell", "spät"})
# A Chinese or Japanese request, written without spaces: write, explain, summarize, translate, describe,
# compare, list, implement, why, how, near the sentence's start ("用Python写一个快速排序函数",
# "天空为什么是蓝色的"). The lazy gap is bounded (12) and the alternation is of fixed strings: at most
# 12 x 20 steps.
_CJK_REQUEST = re.compile(r"^[^\n]{0,12}?(?:写|寫|解释|解釋|总结|概括|翻译|描述|比较|列出|实现|"
                          r"为什么|為什麼|如何|怎么|怎样|書いて|説明|要約|翻訳|なぜ|どうやって)")
# After "explain", "show", "justify": the solver's own working, not a subject to write about.
_REASONING_WORDS = frozenset({"reasoning", "answer", "work", "working", "steps", "step", "solution", "logic",
                              "thinking", "thought", "process", "calculation", "method"})
# After "why"/"how" in "Explain why." or "Show how you got it": still the solver's working.
_WORKING_FILLER = frozenset({"you", "it", "that", "this", "so", "got", "get", "arrived", "at", "is", "the",
                             "answer", "briefly", "not", "or", "why", "came", "to", "reached", "did", "do",
                             "does"})
# "List the prime factors of 84": a list of numbers is a short answer, compared as one.
_NUMBER_NOUNS = frozenset({"factors", "divisors", "primes", "roots", "solutions", "zeros", "zeroes", "multiples",
                           "digits", "integers", "numbers", "coefficients", "eigenvalues"})
# "Give me the answer", "tell me the capital": a single value asked for politely.
_VALUE_NOUNS = frozenset({"answer", "result", "value", "number", "sum", "product", "total", "name", "date",
                          "year", "capital", "population", "height", "distance", "area", "temperature"})
_HOW_QUANTITY = frozenset({"many", "much", "long", "old", "far", "big", "tall", "large", "small", "high", "fast",
                           "often", "deep", "heavy", "wide", "hot", "cold", "late", "early", "soon"})
_HOW_SPELLING = frozenset({"say", "spell", "pronounce", "abbreviate"})
_YES_NO_OPENERS = frozenset({"is", "are", "was", "were", "does", "do", "did", "can", "could", "will", "would",
                             "should", "has", "have", "had", "must", "may", "might", "shall", "isn't", "aren't",
                             "doesn't", "don't", "didn't", "can't", "won't"})
_WH_OPENERS = frozenset({"which", "who", "whom", "whose", "when", "where"})
# "What are the differences between ...", "What is the best way to ...": an explanation, not a fact.
_WHAT_OPEN_NOUNS = frozenset({"difference", "differences", "pros", "cons", "advantages", "disadvantages",
                              "benefits", "drawbacks", "tradeoffs", "trade-offs", "steps", "best", "ways",
                              "causes", "effects", "reasons", "implications", "consequences", "similarities"})
# Asking for a fix when code is pasted: "what's wrong with it", "it throws an error".
_CODE_TROUBLE = re.compile(r"\b(?:fix|bug|buggy|wrong|error|fails|failing|broken|crash\w{0,3}|review|refactor"
                           r"|debug|improve|optimi[sz]e|clean[ \t]{1,3}up|doesn'?t[ \t]{1,3}work"
                           r"|not[ \t]{1,3}working)\b", re.IGNORECASE)
# Verbs that open a short request: a value is asked for ("Name the largest ocean.", "Solve for x").
_SHORT_VERBS = frozenset({"name", "calculate", "compute", "solve", "find", "evaluate", "simplify", "determine",
                          "estimate", "round", "factor", "factorise", "factorize", "count", "identify", "choose",
                          "pick", "select", "convert", "differentiate", "integrate", "guess", "spell"})
# Open verbs whose reason reads better in its own words than "it asks to <verb> something".
_VERB_REASONS = {"give": "it asks for something", "tell": "it asks to be told about something",
                 "help": "it asks for help", "walk": "it asks for a walk-through",
                 "show": "it asks to be shown something", "reply": "it asks for a reply",
                 "respond": "it asks for a reply"}
# "Write one word", "give the answer as a number", "write down the answer only": the verb's object (after these
# fillers) is one of these nouns, ending the sentence or followed by a format word: the format of a short answer.
# Only verbs that put an answer down ("draft a letter", "describe the result" are requests).
_FORMAT_VERBS = frozenset({"write", "give", "provide", "put", "state", "print", "output", "return"})
_FORMAT_FILLERS = frozenset({"down", "only", "just", "the", "your", "final", "a", "one", "single"})
_FORMAT_NOUNS = frozenset({"answer", "number", "word", "letter", "digit", "integer", "result"})
_FORMAT_NEXT = frozenset({"only", "as", "in", "with"})
# A leading clause ends at the first of these: "Given a list of ints, write ...", "Answer in one word: ...".
_CLAUSE_END = re.compile(r"[,:;]")
# "Why is the sky blue? Answer in one word.", "Reply with one sentence: how do birds fly?", "Explain it in one
# sentence.": the user asks for today's short contract whatever the request. A sentence starting with answer/
# reply/respond that names one word or sentence, or any sentence ending with "in one word". The lazy gap is
# bounded ({0,40}) and each other piece is a literal or a bounded class: no backtracking beyond 40 steps.
_ONE_WORD_FORMAT = re.compile(
    r"^[ \t]{0,8}(?:please[ \t]{1,3})?(?:answer|reply|respond)\b.{0,40}?\b(?:one|a[ \t]{1,3}single|1)[ \t-]{1,3}"
    r"(?:word|sentence)\b|\b(?:in|with)[ \t]{1,3}(?:just[ \t]{1,3}|only[ \t]{1,3})?(?:one|a[ \t]{1,3}single|1)"
    r"[ \t]{1,3}(?:word|sentence)[ \t]{0,3}[.!?]?[ \t]{0,3}$", re.IGNORECASE)


def question_shape(question: str) -> ShapeGuess:
    """Which shape of answer the question wants: "full" for open-ended requests, else "short".

    Reads the question's first and last sentences outside code blocks (see _SHAPE_FIRST).
    An open-ended request anywhere there wins; a multiple-choice question whose first
    request is not open-ended is short; with nothing to go on, short (today's contract).
    """
    text = question or ""
    if len(text) > _SHAPE_HEAD + _SHAPE_TAIL:
        text = text[:_SHAPE_HEAD] + "\n" + text[-_SHAPE_TAIL:]
    pieces = text.split("```")  # even pieces are prose, odd ones code (split is linear; no lazy regex)
    prose = "\n".join(pieces[0::2])
    sentences = [s for s in _SENTENCE_END.split(prose) if s.strip()]
    if len(sentences) > _SHAPE_FIRST + _SHAPE_LAST:
        sentences = sentences[:_SHAPE_FIRST] + sentences[-_SHAPE_LAST:]
    guesses = [g for g in map(_sentence_shape, sentences) if g is not None]
    if _is_multiple_choice(prose) and (not guesses or guesses[0].shape == "short"):
        return ShapeGuess("short", "a multiple-choice question")
    if any(_ONE_WORD_FORMAT.search(s[:400]) for s in sentences):
        return ShapeGuess("short", "it asks for one word or one sentence")
    full = next((g for g in guesses if g.shape == "full"), None)
    if full is not None:
        return full
    if len(pieces) > 2 and _CODE_TROUBLE.search(prose):
        return ShapeGuess("full", "it asks to fix or review code")
    return guesses[0] if guesses else ShapeGuess("short", "no open-ended request")


def _is_multiple_choice(text: str) -> bool:
    letters = {(m.group(1) or m.group(2)).upper() for m in _SHAPE_OPTION.finditer(text)}
    return {"A", "B"} <= letters


def _sentence_shape(sentence: str) -> ShapeGuess | None:
    """The shape one sentence asks for, or None when it says nothing about it ("Here is my code:")."""
    head = sentence[:400].replace("’", "'")
    words = _SHAPE_WORD.findall(head.lower())
    guess = _words_shape(_strip_openers(words), head)
    clause = _CLAUSE_END.search(head)
    if guess is None and clause is not None:  # "Given a list of ints, write ..."; "Answer in one word: ..."
        tail = head[clause.end():]
        guess = _words_shape(_strip_openers(_SHAPE_WORD.findall(tail.lower())), tail)
    if guess is None:  # "Read the essay and then summarize it."
        joined = next((i for i, w in enumerate(words[:-1]) if w in ("and", "then") and words[i + 1] in _OPEN_VERBS),
                      None)
        guess = None if joined is None else _request_shape(words[joined + 1], words[joined + 2:], head)
    return guess


def _strip_openers(words: list[str]) -> list[str]:
    """The words after polite and question openers: "hi, could you please", "do you know"."""
    for _ in range(6):  # a bounded number of openers in a row
        opener = next((o for o in _POLITE_OPENERS if tuple(words[:len(o)]) == o), None)
        if opener is None:
            break
        words = words[len(opener):]
    return words


def _words_shape(words: list[str], sentence: str) -> ShapeGuess | None:
    """The shape a sentence's words ask for, by their first word (openers already stripped)."""
    first, rest = (words[0], words[1:]) if words else ("", [])
    if first == "por" and rest[:1] in (["qué"], ["que"]):  # "¿Por qué el cielo es azul?"
        first, rest = "why", rest[1:]
    first = _FOREIGN_WORDS.get(first, first)
    if first == "how" and rest[:1] and rest[0] in _HOW_QUANTITY_DE:
        return ShapeGuess("short", "a how-much question")
    if first in _OPEN_VERBS:
        return _request_shape(first, rest, sentence)
    if first == "why":
        return None if _is_working(rest) else ShapeGuess("full", "it asks why")
    if first == "how":
        return _how_shape(rest)
    if first in ("what", "what's", "whats"):
        return _what_shape(rest, sentence)
    if first in _WH_OPENERS:
        return ShapeGuess("short", f"a {first} question")
    if first in _YES_NO_OPENERS and {"better", "worse", "preferable"} & set(rest[:4]):
        return ShapeGuess("full", "it asks which is better")  # "Is it better to rent or buy? Explain."
    if first in _YES_NO_OPENERS:
        return ShapeGuess("short", "a yes/no question")
    if first in _WHAT_OPEN_NOUNS - {"best", "steps"}:
        return ShapeGuess("full", "it asks for an explanation")  # "Pros and cons of remote work?"
    if first in _SHORT_VERBS:
        return _value_shape(sentence) or ShapeGuess("short", "it asks for a value")
    if first in ("i", "i'd") and rest[:1] in (["need"], ["want"], ["like"], ["would"]):
        return ShapeGuess("full", "it asks for something")  # "I need a script that renames files"
    if _CJK_REQUEST.match(sentence) and not _ARITHMETIC.search(sentence):
        return ShapeGuess("full", "it asks for a response (written without spaces)")
    return _value_shape(sentence)


def _request_shape(verb: str, rest: list[str], sentence: str) -> ShapeGuess | None:
    """An open verb's sentence: open-ended, unless it asks for the working, a value or a format."""
    if verb in ("explain", "show", "justify", "describe", "walk") and _is_working(rest):
        return None  # "Explain your reasoning.", "Show your work."
    if verb in ("reply", "respond") and rest[:1] in (["with"], ["in"], ["using"], ["only"]):
        return None  # "Respond with only the number: ..." is a format, not a request
    if verb in _FORMAT_VERBS and _asks_format(rest):
        return None  # "Write one word.", "Give the answer as a number: how many ...": the question decides
    if verb in ("give", "tell", "show") and rest[:1] in (["me"], ["us"]):
        rest = rest[1:]
        if rest[:1] and rest[0] in _WH_OPENERS | {"what", "whether", "if", "how", "why"}:
            return _words_shape(rest, sentence)  # "Tell me who wrote Hamlet": the question inside decides
        noun = next((w for w in rest[:3] if w not in ("the", "a", "an", "your")), "")
        if noun in _VALUE_NOUNS:
            return ShapeGuess("short", "it asks for a single value")  # "Give me the answer to 17*23"
    if verb in ("list", "name", "give") and _NUMBER_NOUNS & set(rest[:8]):
        return ShapeGuess("short", "it asks for a list of numbers")  # compared as one answer: "2, 2, 3, 7"
    if _CONVERSION.search(sentence):
        return ShapeGuess("short", "it asks for a conversion")  # "Write 0.75 as a fraction."
    return ShapeGuess("full", _VERB_REASONS.get(verb, f"it asks to {verb} something"))


def _asks_format(rest: list[str]) -> bool:
    """Whether an open verb's words name a short answer's format ("one word", "the answer only"), not a response
    ("a word count program", "the answer to this email")."""
    at = next((i for i, w in enumerate(rest[:6]) if w not in _FORMAT_FILLERS), None)
    if at is None or rest[at] not in _FORMAT_NOUNS or (rest[at] == "letter" and "a" in rest[:at]):
        return False  # "write a letter" asks for one; "write only the letter" names a choice
    return at + 1 == len(rest) or rest[at + 1] in _FORMAT_NEXT


def _is_working(rest: list[str]) -> bool:
    """Whether the words after "explain", "why" or "how" name the solver's own working."""
    head = rest[:6]
    if not head or all(w in _WORKING_FILLER for w in head):
        return True  # "Explain.", "Why?", "Explain why.", "Show how you got it."
    return head[0] in ("your", "the", "each", "every", "all", "step", "briefly", "in") and \
        any(w in _REASONING_WORDS for w in head[:4])


def _how_shape(rest: list[str]) -> ShapeGuess | None:
    if rest[:1] and rest[0] in _HOW_QUANTITY:
        return ShapeGuess("short", f"a how-{rest[0]} question")
    if _HOW_SPELLING & set(rest[:4]):
        return ShapeGuess("short", "it asks how to say a word")  # "How do you say 'cat' in French?"
    if _is_working(rest):
        return None  # "How?", "How did you get it?"
    return ShapeGuess("full", "it asks how something is done or works")


def _what_shape(rest: list[str], sentence: str) -> ShapeGuess:
    head = rest[:6]
    pairs = set(zip(head, head[1:], strict=False))
    if _WHAT_OPEN_NOUNS & set(head) or pairs & {("best", "way"), ("best", "ways"), ("best", "practices"),
                                                ("are", "some"),
                                                ("should", "i"), ("happens", "when"), ("happens", "if")}:
        return ShapeGuess("full", "it asks for an explanation")  # "What are the pros and cons of ...?"
    return _value_shape(sentence) or ShapeGuess("short", "a what-is question")


def _value_shape(sentence: str) -> ShapeGuess | None:
    if _ARITHMETIC.search(sentence):
        return ShapeGuess("short", "arithmetic")
    if _CONVERSION.search(sentence):
        return ShapeGuess("short", "it asks for a conversion")
    return None


# --- the synthesis reply ------------------------------------------------------

# A leading label: "Final response:", "**Answer:** 391", "## Final Response", "Solution:". Anchored
# at the text's start, every run bounded: linear in the first line. The content after it stays.
_SYNTHESIS_LABEL = re.compile(
    r"^[ \t>#*_]{0,8}(?:the[ \t]{1,3}|my[ \t]{1,3})?"
    r"(?:final[ \t]{1,3}|synthesi[sz]ed[ \t]{1,3}|revised[ \t]{1,3}|improved[ \t]{1,3}|worked[ \t]{1,3})?"
    r"(?:response|answer|solution)[ \t*_]{0,4}(?:[:：][ \t*_]{0,4}|$)",
    re.IGNORECASE | re.MULTILINE)  # MULTILINE: "$" is the end of the first line ("## Final Response\n...")
# A whole first line that only announces the response: "The final response to the request is:",
# "Here's a rewritten response with the requested changes:". It says here/final/revised..., then
# names the response, and ends in a colon ("The answer depends on two things:" stays: it is the
# response). Three bounded runs, anchored, on the first 300 characters: a few 10^4 steps at most.
_SYNTHESIS_PREAMBLE = re.compile(
    r"^[^\n]{0,40}\b(?:here|final|rewritten|revised|synthesi[sz]ed|improved|combined|updated)\b"
    r"[^\n]{0,40}\b(?:response|answer|solution)\b[^\n]{0,60}[:：][ \t*_]{0,4}(?:\n|$)", re.IGNORECASE)
# Our own input blocks in the reply, opened or closed: the model echoed or continued the prompt
# instead of writing a response ("...391. A is right.\n</rebuttal>"). Any <answer> in such an echo
# belongs to a copied (or invented) candidate, not to a synthesis. Bounded runs, no nesting.
_PROMPT_ECHO = re.compile(r"<\s{0,5}/?\s{0,5}(?:question|candidate|critique|rebuttal|analysis)\b", re.IGNORECASE)
# Fence languages that wrap a reply rather than being code: the fence goes, the text stays.
_WRAPPER_FENCES = frozenset({"markdown", "md", "text", "txt", "plaintext", "xml"})


def parse_synthesis(text: str) -> str | None:
    """The response a synthesis call wrote, or None when it wrote nothing usable.

    Think blocks go; an <answer> block (models add one anyway) gives its content; leading
    "Final response:" labels and announcing lines go, and so do prose paragraphs repeated back to
    back. A fence around code is kept (it is the response); a fence marked markdown/text/xml only
    wrapped the reply and goes. A reply that
    echoes the prompt's blocks (<question>, <candidate>, ...) outside code is None: small models
    do this (SmolLM2-135M in 22 of 22 trials), and the top-ranked candidate is then the better answer.
    """
    body = strip_think(text or "")
    if _PROMPT_ECHO.search("".join(body.split("```")[0::2])):
        return None
    span = _answer_span(body)
    if span is not None:
        body = body[span[0]:span[1]]
    body = _drop_repeats(body.strip())  # first, so a looping preamble is one line to strip
    for _ in range(4):  # a label may follow a preamble: "Here is the final answer:\nAnswer: 391"
        lead = _SYNTHESIS_PREAMBLE.match(body[:300]) or _SYNTHESIS_LABEL.match(body[:200])
        if lead is None:
            break
        body = body[lead.end():].strip()
    return restore_tags(_unwrap_fence(body)) or None


def _drop_repeats(body: str) -> str:
    """Collapse a paragraph repeated back to back ("The final answer is 391." five times), as
    small models loop; prose only, since code may repeat a block on purpose."""
    if "```" in body:
        return body
    # Paragraphs split on blank lines; one character class between two newlines: linear.
    paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", body) if p.strip()]
    kept = [p for i, p in enumerate(paragraphs) if i == 0 or p != paragraphs[i - 1]]
    return "\n\n".join(kept) if len(kept) < len(paragraphs) else body


def _last_tag_span(text: str, tag: str) -> tuple[int, int] | None:
    """Where the content of the last complete <tag>…</tag> lies (else of a final unclosed <tag>).

    The span extract_tag reads, without its fence stripping: a synthesized code answer keeps its fence.
    """
    opening, closing = _tag_patterns(tag)
    last_open = _last_match(opening, text)
    if last_open is None:
        return None
    last_close = _last_match(closing, text)
    if last_close is None or last_close.start() < last_open.start():
        return last_open.end(), len(text)
    start = _last_match(opening, text[:last_close.start()])
    assert start is not None  # last_open itself precedes last_close
    return start.end(), last_close.start()


# One of our tags as prompts.quote_untrusted defuses it ("&lt;answer>", "&lt;/ question>"): a fixed prefix, bounded
# spaces and a fixed alternation, so it cannot backtrack badly.
_DEFUSED_TAG = re.compile(r"&lt;(\s{0,5}/?\s{0,5}(?:" + "|".join(CONTRACT_TAGS) + r"|final_answer|other_solver)\b)",
                          re.IGNORECASE)


def restore_tags(response: str) -> str:
    """A full response with our tags as written: a reviser or the synthesis copies a candidate's code as its prompt
    showed it, "<answer>" defused to "&lt;answer>" (prompts.quote_untrusted); the user's XML must not stay escaped."""
    return _DEFUSED_TAG.sub(r"<\1", response)


def _answer_span(text: str) -> tuple[int, int] | None:
    """_last_tag_span of <answer> among the tags outside ``` fences: a tag inside code (an XML quiz's <answer>
    element, an HTML form's) is the response's own, not ours. Fenced text is blanked, so the span indexes ``text``."""
    pieces = text.split("```")  # even pieces are prose, odd ones code (split is linear)
    return _last_tag_span("```".join(p if i % 2 == 0 else " " * len(p) for i, p in enumerate(pieces)), "answer")


def _unwrap_fence(body: str) -> str:
    """Drop one fence pair around the whole reply when it is a wrapper (```markdown), not code."""
    lines = body.split("\n")
    if len(lines) < 3 or not lines[-1].strip() == "```" or not _FENCE_LINE.match(lines[0]):
        return body
    language = lines[0].strip()[3:].strip().lower()
    return "\n".join(lines[1:-1]).strip() if language in _WRAPPER_FENCES else body


def parse_full_rebuttal(text: str) -> ParsedRebuttal | None:
    """A full-shape rebuttal or revision: its <answer> block whole (code fences kept) and its <rebuttal>; None
    without an <answer> block. As for short rebuttals, no guess: a defence must not replace the response."""
    parsed = parse_full_answer(text)
    if parsed.tier != "xml":
        return None
    return ParsedRebuttal(extract_tag(strip_think(text or ""), "rebuttal") or parsed.reasoning, parsed)


def parse_full_answer(text: str) -> ParsedAnswer:
    """A full-shape solver's whole response and its reasoning.

    The <answer> block when there is one (its code fences kept); else the whole reply outside a
    <reasoning> block, tier "paragraph". parse_answer's last-paragraph tier would keep only the
    closing remark under a code block: SmolLM2-135M used no tags in 18 of 18 trials (issue 22).
    """
    body = strip_think(text or "")
    span = _answer_span(body)
    if span is not None and body[span[0]:span[1]].strip():
        return ParsedAnswer(restore_tags(body[span[0]:span[1]].strip()), extract_tag(body, "reasoning") or "", "xml")
    reasoning, remainder = _take_reasoning(body)
    if remainder is None or not remainder.strip():
        return ParsedAnswer("", reasoning, "empty")
    return ParsedAnswer(restore_tags(remainder.strip()), reasoning, "paragraph")


# --- a reply's JSON: content, usage, finish reason ----------------------------

MAX_REPORTED_TOKENS = 10**9  # a usage count above this is not a count: the attempt's tokens are estimated instead


def message_text(content: Any) -> str | None:
    """A reply message's content as text: some servers send a list of typed parts."""
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return content if isinstance(content, str) else None


@dataclass(frozen=True)
class ReportedUsage:
    """What a reply (or a stream's events so far) says it used: both token counts or none, how many of the prompt
    tokens the endpoint served from its prefix cache (at most the prompt), and what a gateway charged, in USD."""

    counts: dict[str, int] | None = None  # prompt_tokens and completion_tokens, both trusted, or None
    cached_tokens: int = 0
    cost_usd: float | None = None  # OpenRouter's usage.cost

    def then(self, later: ReportedUsage) -> ReportedUsage:
        """The usage of a stream once a later event came: what the later one says wins, the rest stays."""
        return _reported(later.counts or self.counts, later.cached_tokens or self.cached_tokens,
                         self.cost_usd if later.cost_usd is None else later.cost_usd)

    def charged(self, headers: Mapping[str, str]) -> float | None:
        """What the endpoint says it charged: the body's usage.cost (the biller's own figure) before LiteLLM's
        ``x-litellm-response-cost`` header (a proxy's figure from its own price table); None when neither says."""
        return self.cost_usd if self.cost_usd is not None else charge(headers.get("x-litellm-response-cost"))


def _count(value: Any) -> int | None:
    """A reported token count: a whole number within reason (no bool, no float, no string), else None."""
    return value if type(value) is int and 0 <= value <= MAX_REPORTED_TOKENS else None


def charge(value: Any) -> float | None:
    """A charge in USD, from a JSON number or a header's text: finite and not negative, else None."""
    if isinstance(value, str):  # a plain decimal, as str(float) writes it ("0.00042", "4.2e-05"): bounded, linear
        value = float(value) if re.fullmatch(r"\s{0,8}[0-9]{1,20}(?:\.[0-9]{1,20})?(?:[eE][-+]?[0-9]{1,3})?\s{0,8}",
                                             value) else None
    # Compared, not converted, first: JSON's integers have no bound and float() of a 400-digit one raises.
    return float(value) if type(value) in (int, float) and 0 <= value <= sys.float_info.max else None


def _reported(counts: dict[str, int] | None, cached: int, cost: float | None) -> ReportedUsage:
    return ReportedUsage(counts, min(cached, counts["prompt_tokens"]) if counts else cached, cost)


def reported_usage(data: Any) -> ReportedUsage:
    """The usage in a reply body or a stream event: its ``usage`` (the counts, OpenRouter's ``cost``, with a key of
    your own (``is_byok``) plus ``cost_details.upstream_inference_cost``, or None without it) and the
    cached prompt tokens in whichever form the endpoint reports them (the largest, when it gives several: they
    count the same tokens): OpenAI's usage.prompt_tokens_details.cached_tokens, an Anthropic-style gateway's
    usage.cache_read_input_tokens, DeepSeek's usage.prompt_cache_hit_tokens, llama.cpp's top-level timings.cache_n.
    A malformed part is left out, never raised."""
    def part(parent: Any, key: str) -> dict[str, Any]:
        return parent[key] if isinstance(parent, dict) and isinstance(parent.get(key), dict) else {}

    usage, timings = part(data, "usage"), part(data, "timings")
    counts = {key: _count(usage.get(key)) for key in ("prompt_tokens", "completion_tokens")}
    cached = [_count(n) for n in (part(usage, "prompt_tokens_details").get("cached_tokens"),
                                  usage.get("cache_read_input_tokens"), usage.get("prompt_cache_hit_tokens"),
                                  timings.get("cache_n"))]
    cost, upstream = (None if isinstance(n, str) else charge(n)  # a body's charge is a JSON number
                      for n in (usage.get("cost"), part(usage, "cost_details").get("upstream_inference_cost")))
    if usage.get("is_byok") is True:  # usage.cost is then OpenRouter's fee alone: the provider billed the key the rest
        cost = None if cost is None or upstream is None else cost + upstream
    trusted = {key: n for key, n in counts.items() if n is not None}
    return _reported(trusted if len(trusted) == 2 else None, max((n for n in cached if n is not None), default=0),
                     cost)


def finish_reason_of(value: Any) -> str | None:
    """A reply's finish_reason: a string, cut short, or None."""
    return value[:64] if isinstance(value, str) and value else None


# --- values from outside: settings, URLs, headers -----------------------------
#
# Unlike the readers above, these raise ValueError for a bad value, saying what they expected: that is
# how load_config (and a caller of load_json) learns that a value is bad, and why.

SECRET_MASK = "***"  # what a secret is shown as


def load_json(text: str | bytes) -> Any:
    """json.loads for text from outside: ValueError for anything it cannot read, nesting too deep included."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


Number = TypeVar("Number", int, float)


def _in_range(convert: Callable[[str], Number], low: float, high: float, expected: str) -> Callable[[str], Number]:
    """A setting's parser: ``convert``, then a range check; ValueError saying what is expected."""
    def parse(raw: str) -> Number:
        try:
            value = convert(raw.strip())
        except ValueError:
            raise ValueError(expected) from None
        if not low <= value <= high:  # also rejects nan
            raise ValueError(expected)
        return value
    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    return _in_range(int, low, high, f"expected a whole number from {low} to {high}")


def _number(low: float, high: float) -> Callable[[str], float]:
    return _in_range(float, low, high, f"expected a number from {low:g} to {high:g}")


def _seconds(text: str) -> float:
    """Seconds from a plain number ("3600") or a duration (parse_duration: "30d", "12h", "1h30m")."""
    seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    if seconds is None:
        raise ValueError(text)
    return seconds


def _duration(high: float) -> Callable[[str], float]:
    """A length of time (CACHE_TTL), at most ``high`` seconds."""
    return _in_range(_seconds, 0, high, f"expected a duration such as 30d, 12h, 90m or 3600 (seconds), at most "
                     f"{high / 86400:g}d")


def _boolean(raw: str) -> bool:
    word = raw.strip().lower()
    if word not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError("expected true or false")
    return word in ("1", "true", "yes", "on")


def _one_of(*words: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        word = raw.strip().lower()
        if word not in words:
            raise ValueError("expected " + ", ".join(words[:-1]) + " or " + words[-1])
        return word
    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An optional setting: empty means unset (None)."""
    return lambda raw: None if not raw.strip() else parse(raw)


def _text(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("expected a non-empty value")
    return value


def _api_key(raw: str) -> str:
    # httpx quotes an illegal header value in its exception text: a key it cannot send is refused here, unechoed.
    value = raw.strip()
    if not value:
        raise ValueError("expected a non-empty key (any value works for servers without auth)")
    if not all(33 <= ord(ch) < 127 for ch in value):
        raise ValueError("contains spaces or characters that cannot be sent in an HTTP header")
    return value


def chat_completions_url(raw: str) -> str:
    """A full chat-completions URL from either that URL or a base URL (…/v1)."""
    value = raw.strip()
    try:
        parts = urlsplit(value)
        if parts.port == 0:  # .port itself raises ValueError for a port above 65535 or not a number
            raise ValueError
    except ValueError:
        raise ValueError("expected an http:// or https:// URL with a port from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL such as https://host/v1")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("the URL contains spaces or control characters")
    if "@" in parts.netloc:  # httpx would send it as Basic auth in place of the Bearer API_KEY
        raise ValueError("it holds user info (user:password@), which would replace the API key: remove it and "
                         "put the key in API_KEY, which is sent as a Bearer token")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


# A query parameter carries a credential when its name, in lower case without separators, holds one
# of these: key (Google's key, api_key, subscription-key), token (access_token, X-Amz-Security-Token),
# sig (Azure SAS sig, X-Amz-Signature), auth, secret, pass(word), pwd, credential; or is "code" (OAuth).
# Such values are masked wherever they could show; every other value (api-version) is data, never masked.
# Literal words and one anchored one: no repetition, nothing to backtrack.
CREDENTIAL_PARAMETER = re.compile(r"key|token|sig|auth|secret|pass|pwd|credential|^code$")


def credential_parameter(name: str) -> bool:
    # Separators dropped (one character, no repetition): "api_key", "api-key" and "apiKey" read alike.
    return bool(CREDENTIAL_PARAMETER.search(re.sub(r"[^a-z0-9]", "", unquote(name).lower())))


def traced_number(value: Any, high: float) -> float:
    """A count (``high`` > 1: an int) or a share (``high`` 1.0: a score) as the verdict line holds it, in [0, high];
    ValueError for anything else: NaN (which --json would write as invalid JSON), text, a bool, a count out of range."""
    kinds = (int, float) if high == 1.0 else (int,)
    if type(value) is bool or not isinstance(value, kinds) or not 0 <= value <= high:
        raise ValueError(f"not a number in [0, {high:g}]: {value!r}")
    return float(value)


def traced_list(value: Any) -> list[Any]:
    """A list as the verdict line holds it (its analyses, a judge's labels); TypeError for anything else."""
    if not isinstance(value, list):  # a string would pass as a list of one-letter analyses
        raise TypeError("not a list")
    return value


def body_credentials(text: str | None) -> list[str]:
    """EXTRA_BODY's credentials, as PROXY_URL's ``?key=``: the text of each top-level field named as one (LiteLLM's
    client-side ``api_key``, Bedrock's ``aws_secret_access_key``); all of text that is no JSON object, whose fields
    cannot be told apart (`config` shows EXTRA_BODY as written, a broken one with a trailing comma too)."""
    try:
        body = load_json(text or "{}")
    except ValueError:
        return [text or ""]
    return [value for name, value in body.items() if credential_parameter(name) and isinstance(value, str)] \
        if isinstance(body, dict) else [text or ""]


def masked_query(query: str) -> str:
    """The query with the value of each credential parameter, and each piece without "=", as ***."""
    return "&".join(SECRET_MASK if not eq else name + eq + (SECRET_MASK if credential_parameter(name) else value)
                    for name, eq, value in (piece.partition("=") for piece in query.split("&") if query))


def masked_url(raw: str) -> str:
    """A URL-like value safe to echo, even when it does not parse: everything up to the last "@" after the scheme
    (user info, whatever it holds), a fragment, and in the query each credential parameter's value are masked."""
    text = raw.strip()
    scheme = text.find("//")
    start = scheme + 2 if scheme >= 0 else 0
    at = text.rfind("@")
    if at >= start:
        text = text[:start] + SECRET_MASK + text[at:]
        start += len(SECRET_MASK) + 1
    text, fragment, _ = text.partition("#")
    query_at = text.find("?", start)
    if query_at >= 0:
        text = text[:query_at + 1] + masked_query(text[query_at + 1:])
    return (text + ("#" + SECRET_MASK if fragment else ""))[:200]


def _folder(raw: str) -> str:
    """A folder path: any name a file system takes (no NUL byte), but ~/…, which no shell expanded (a settings file,
    a quoted variable): it would make a folder named ~ wherever the tool runs."""
    if "\x00" in raw or raw.strip().startswith("~"):
        raise ValueError("a path cannot contain a NUL byte" if "\x00" in raw else "~ is not expanded here: write the "
                         "full path, or ${HOME}/… (a settings file expands ${HOME})")
    return _text(raw)


def _file_prefix(raw: str) -> str:
    """LOG_FILENAME_PREFIX: a plain file-name part, so transcripts stay inside LOG_DIR."""
    value = raw.strip()
    # One letter or digit, then at most 63 of a class without "/": bounded, so linear.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        raise ValueError("expected 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                         "(no '/' or '..': transcripts stay inside LOG_DIR)")
    return value


# Request options (SEED ... EXTRA_BODY): a JSON setting's most characters (a body field, not a document), the stop
# sequences a request may carry (OpenAI's limit), and the body keys EXTRA_BODY may not set: the pipeline owns the
# conversation and how the reply is read, and each slot's model is MODEL_NAME's (a transcript says who answered).
JSON_SETTING_CHARS = 16_384
# Levels of nesting a JSON setting may have: a JSON schema nests a few dozen; one read near Python's recursion limit at
# start-up would fail each request, read again (request_options) and written (httpx) from deeper in the stack.
JSON_SETTING_DEPTH = 64
MAX_STOP_SEQUENCES = 4
OWNED_BODY_KEYS = ("messages", "model", "n", "stream", "stream_options")
# What our replies are read by: a stop sequence inside one of these would cut every reply at its own format.
CONTRACT_MARKERS = (*(f"<{s}{tag}>" for tag in CONTRACT_TAGS for s in ("", "/")), "FINAL ANSWER: ", "CONFIDENCE: ",
                    "RANKING: ")


def _json_setting(raw: str) -> Any:
    """A JSON setting's value: ValueError for text longer than JSON_SETTING_CHARS or not JSON."""
    if len(raw) > JSON_SETTING_CHARS:
        raise ValueError(f"longer than {JSON_SETTING_CHARS} characters")
    try:
        value = load_json(raw)
    except ValueError as err:
        raise ValueError(f"not valid JSON ({getattr(err, 'msg', err)})") from None
    level = [value]
    for _ in range(JSON_SETTING_DEPTH):  # level by level, not recursively: the depth is what is in doubt
        level = [item for node in level if isinstance(node, (dict, list))
                 for item in (node.values() if isinstance(node, dict) else node)]
    if any(isinstance(node, (dict, list)) for node in level):
        raise ValueError(f"nested deeper than {JSON_SETTING_DEPTH} levels")
    return value


def canonical_json(value: Any) -> str:
    """A JSON setting as Config keeps it: one text for one value, so a Config stays hashable and comparable. NaN and
    Infinity (1e999) are refused (ValueError): Python reads them, but no request holding one can be sent as JSON."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _json_object(raw: str) -> str:
    value = _json_setting(raw.strip())
    if not isinstance(value, dict):
        raise ValueError('expected a JSON object, such as {"type": "json_object"}')
    return canonical_json(value)


def _extra_body(raw: str) -> str:
    """EXTRA_BODY: a JSON object merged into every request body last; the keys we own are refused (OWNED_BODY_KEYS)."""
    text = _json_object(raw)
    if owned := [key for key in OWNED_BODY_KEYS if key in json.loads(text)]:
        raise ValueError(f"it sets {', '.join(owned)}, which the pipeline sets itself (models: MODEL_NAME, "
                         "JUDGE_MODEL, SYNTHESIS_MODEL; streaming: STREAM)")
    return text


def _stop(raw: str) -> str:
    """STOP: one sequence, or a JSON list of them; kept as a JSON list. Text that is not JSON ("[INST]", Llama 2's
    turn marker) is one sequence as written. A sequence our format holds (CONTRACT_MARKERS), or only whitespace,
    would cut every reply before its answer: refused, not warned about, since no debate could succeed with it."""
    text = raw.strip()
    value: Any = text
    with contextlib.suppress(ValueError):
        value = _json_setting(text)
    sequences = value if isinstance(value, list) else [value if isinstance(value, str) else text]
    if not 0 < len(sequences) <= MAX_STOP_SEQUENCES or not all(isinstance(s, str) and s for s in sequences):
        raise ValueError(f"expected one sequence or a JSON list of 1 to {MAX_STOP_SEQUENCES} non-empty strings")
    for sequence in sequences:
        inside = next((marker.strip() for marker in CONTRACT_MARKERS if sequence in marker), None)
        if inside or not sequence.strip():
            where = f"it is part of {inside}" if inside else "only whitespace ends a reply at its first line break"
            raise ValueError(f"{sequence!r} would cut replies off before their answer ({where}): use a sequence "
                             'the model writes only when it is done, such as "<|im_end|>"')
    return canonical_json(sequences)


def _effort(raw: str) -> str:
    """REASONING_EFFORT: any lower-case word, sent as is: the levels known today (minimal, low, medium, high) and
    any an endpoint adds later (none, xhigh) work without a release of ours; the endpoint refuses one it lacks."""
    word = raw.strip().lower()
    if not re.fullmatch(r"[a-z]{1,20}", word):  # one bounded class: linear
        raise ValueError("expected a word such as low, medium or high")
    return word


def is_loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    return False


def display_url(url: str) -> str:
    """A parsed URL as errors, --check and transcripts show it: no user info, credential values masked."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, masked_query(parts.query), ""))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None for none, or "now" (0, past)."""
    if not value:
        return None
    try:
        seconds: float | None = float(value)
    except ValueError:
        import email.utils  # only for an HTTP-date Retry-After: importing it costs every start 10 ms
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
            if when.tzinfo is None:  # "-0000", as formatdate() writes: an HTTP date is GMT
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            seconds = None
    return seconds if seconds is not None and 0 < seconds < math.inf else None


# OpenAI-style reset durations: "1s", "6m0s", "250ms", "1h2m3.5s": one number and its unit (and days, "30d", for
# CACHE_TTL). Bounded digit runs (no reset has 20 digits): each start tries at most 41 characters, so findall stays
# linear in a long header.
_DURATION_PART = re.compile(r"(\d{1,20}(?:\.\d{1,20})?)(ms|d|h|m|s)")


def parse_duration(value: str) -> float | None:
    """Seconds from a duration such as "6m0s" or "250ms"; None if it is not one."""
    text = value.strip().lower()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    return sum(float(number) * scale[unit] for number, unit in parts)


class HeaderLines(Protocol):
    """A response's headers as retry_hint reads them (httpx.Headers is one): every line of a header, in order."""

    def get_list(self, key: str) -> list[str]: ...


def retry_hint(headers: HeaderLines, status: int, now: float) -> float | None:
    """How long the server or a gateway asks us to wait: the longest hint of every header line (a gateway may add
    its own): ``retry-after-ms`` (OpenAI), ``retry-after``, ``llm_provider-retry-after`` (LiteLLM's upstream's),
    on a 429 ``x-ratelimit-reset-*`` (OpenAI, Groq). None for none, or one that says "now" (0, negative, past)."""
    waits = [parse_retry_after(value, now) for name in ("retry-after", "llm_provider-retry-after")
             for value in headers.get_list(name)]
    for value in headers.get_list("retry-after-ms"):
        with contextlib.suppress(ValueError):
            waits.append(float(value) / 1000)
    if status == 429:
        waits += [parse_duration(value) for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
                  for value in headers.get_list(name)]
    return max((wait for wait in waits if wait is not None and 0 < wait < math.inf), default=None)


def small_number(value: str | None) -> int | None:
    """A scheduler's index or count: ASCII digits only (isdigit() takes '²'), and not absurdly long."""
    # At most nine ASCII digits, the whole value: bounded, so linear.
    text = (value or "").strip()
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else None


def shown_id(value: str, limit: int = 200) -> str:
    """A question id on one line, told apart from every other: a character that does not
    print is escaped (\\n, \\u200b), never dropped, so no id can pass for another."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in value)
    if len(text) <= limit:
        return text
    return text[:limit - 10] + "…" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:9]


def safe_name(text: str, limit: int = 100) -> str:
    """An id as a file name: [A-Za-z0-9._-] kept, the rest '_', and then a hash keeps two ids from colliding."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:limit].lstrip(".") or "_"
    if name != text:
        name += "-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return name


def printable(value: Any, limit: int = 200) -> str:
    """A value for a one-line log: control characters dropped, whitespace runs made one space, cut at ``limit``."""
    text = "".join(ch for ch in str(value) if ch.isprintable() or ch.isspace())
    return " ".join(text.split())[:limit]


def terminal_lines(text: str) -> list[str]:
    """Model text as lines a terminal shows as they are: control characters (an escape sequence) are dropped, so
    the text can neither move the cursor nor forge a line of its own."""
    return ["".join(ch for ch in line.expandtabs(4) if ch.isprintable()) for line in text.splitlines()]


class TerminalEcho:
    """A streamed response as the terminal shows it while it is written, a whole line at a time to ``show`` (the
    CLI's stdout, which masks secrets: a secret is never split across two writes), stripped of control characters
    (terminal_lines). A <think> block the stream opens with is not shown: a reasoning model's thinking is no part
    of the response. Called with None as each attempt's stream starts, then with each piece of text."""

    def __init__(self, show: Callable[[str], object]) -> None:
        self.show, self.pending, self.shown, self.thinking = show, "", "", False

    def __call__(self, text: str | None) -> None:
        if text is None:  # an attempt's stream starts: a retry writes the response again, from its start
            if self.finish():
                self.show("[that response was not usable (cut off, or not a response); it is written again]")
            self.shown, self.thinking = "", False
            return
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.line(line)

    def line(self, line: str) -> None:
        if self.thinking or (not self.shown.strip() and line.strip().lower().startswith("<think>")):
            self.thinking = "</think>" not in line.lower()  # what parse_synthesis's strip_think drops
            line = "" if self.thinking else line[line.lower().rindex("</think>") + len("</think>"):]
        if not (self.shown or line.strip()):  # blank lines before the response (after its thinking): not shown
            return
        self.show("".join(terminal_lines(restore_tags(line))))  # the user's XML as the response has it
        self.shown += line + "\n"

    def finish(self) -> str:
        """What the stream showed, its last line written out."""
        if self.pending:
            self.line(self.pending)
            self.pending = ""
        return self.shown


def valid_text(text: str) -> str:
    """Text that can be sent as UTF-8: bytes that were not (lone surrogates from argv) become U+FFFD, not a crash."""
    try:  # valid text comes back as it is
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "replace").decode("utf-8")


# --- questions files: the lines of -f and --eval, as a stream ------------------

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class BatchItem:
    line: int
    id: str
    question: str
    expected: str | None
    settings: tuple[tuple[str, Any], ...] = ()  # (Config field, value) of this question alone: BATCH_BODY_SETTINGS


@dataclass(frozen=True)
class BadLine:
    """One unusable line of a questions file: reported and counted; the batch goes on, and exits 3."""

    line: int
    reason: str


# Each setting's parser by its .env name (moa_pipeline's SETTING_PARSERS): a Batch API line's body is read with them.
SettingParsers = Mapping[str, Callable[[str], Any]]
# An OpenAI Batch API line's body fields that set its question's settings. Its model is that question's MODEL_NAME,
# so its judges' and synthesis's too unless JUDGE_MODEL or SYNTHESIS_MODEL name others; max_completion_tokens,
# OpenAI's newer name, comes after max_tokens and wins. Other body fields (response_format, tools, n) are not read:
# RESPONSE_FORMAT and EXTRA_BODY set such fields for every question.
BATCH_BODY_SETTINGS = {"model": "MODEL_NAME", "temperature": "TEMPERATURE", "max_tokens": "MAX_TOKENS",
                       "max_completion_tokens": "MAX_TOKENS", "seed": "SEED", "top_p": "TOP_P", "stop": "STOP",
                       "reasoning_effort": "REASONING_EFFORT"}


def question_id(question: str) -> str:
    """A stable id for a question without one: a hash of its text."""
    return "q-" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]


def item_from_json(text: str, number: int, parsers: SettingParsers | None = None) -> BatchItem | BadLine:
    """A JSONL questions-file line: ours ({question, id, answer}) or an OpenAI Batch API request line."""
    try:
        data = load_json(text)
    except ValueError as err:
        return BadLine(number, f"not valid JSON ({getattr(err, 'msg', err)})")
    if not isinstance(data, dict):
        return BadLine(number, "not a JSON object")
    if "custom_id" in data:
        return _item_from_batch_request(data, number, parsers)
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        return BadLine(number, 'no "question" text')
    given = data.get("id")
    if given is not None and not _usable_id(given):
        return BadLine(number, '"id" must be a non-empty string or a number '
                               '(text: valid Unicode, at most 512 characters)')
    expected = data.get("answer")
    if not (expected is None or isinstance(expected, (int, float)) and math.isfinite(expected)
            or isinstance(expected, str) and expected.strip()):
        # str() of a list or object (or blank text) matches no reply: the question would be scored wrong every time
        return BadLine(number, '"answer" must be text, a number or true/false (one answer: a list cannot be scored)')
    question = valid_text(question).strip()  # a lone surrogate (\\ud83d) becomes U+FFFD, as on the command line
    return BatchItem(number, str(given) if given is not None else question_id(question), question,
                     None if expected is None else str(expected))


def _item_from_batch_request(data: dict[str, Any], number: int, parsers: SettingParsers | None) -> BatchItem | BadLine:
    """An OpenAI Batch API request line: ``custom_id`` is the id, the last user message the question, and earlier
    messages (system prompt, prior turns) its context, quoted before it; what else its body sets is read by the
    settings' ``parsers`` (_body_settings)."""
    custom_id, body = data.get("custom_id"), data.get("body")
    if not isinstance(custom_id, str) or not _usable_id(custom_id):
        return BadLine(number, '"custom_id" must be a non-empty string')
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return BadLine(number, 'no "body.messages" list')
    texts = [_content_text(m.get("content")) for m in messages]
    if None in texts:
        return BadLine(number, "a message holds parts other than text (an image, audio): a debate reads text only")
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    question = (texts[users[-1]] if users else None) or ""
    if not question.strip():
        return BadLine(number, "no user message with text in body.messages")
    context = [f"{_role(m)}: {text}" for m, text in zip(messages, texts[:users[-1]], strict=False)
               if text and text.strip()]
    if context:
        question = ("Context (the conversation so far):\n" + "\n\n".join(context)
                    + "\n\nQuestion:\n" + question.strip())
    settings = _body_settings(body or {}, number, parsers) if parsers else ()  # a dict: its messages were read
    return settings if isinstance(settings, BadLine) else BatchItem(number, custom_id, valid_text(question).strip(),
                                                                    None, settings)


def _body_settings(body: Mapping[str, Any], number: int,
                   parsers: SettingParsers) -> tuple[tuple[str, Any], ...] | BadLine:
    """The settings a Batch API line's body gives its question, (Config field, value), each read by its setting's
    parser, as from .env; a value that parser refuses is that line's input error, as a bad setting is the run's."""
    found: dict[str, Any] = {}
    for key, env in BATCH_BODY_SETTINGS.items():
        if (value := body.get(key)) is None:
            continue
        try:
            if key == "model" and not isinstance(value, str):  # json.dumps would make a name of a list
                raise ValueError("expected a string")
            # Keyed by the setting's Config field: its name in lower case, as moa_pipeline's SETTINGS has it.
            found[env.lower()] = parsers[env](value if isinstance(value, str) else json.dumps(value))
        except ValueError as err:
            return BadLine(number, f"body.{key}={printable(json.dumps(value))} is not valid for {env}: {err}")
    return tuple(found.items())


def _content_text(content: Any) -> str | None:
    """A message's text: a string, or its text parts joined ("" for none); None when it holds anything else."""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type", "text") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    return "" if content is None else content if isinstance(content, str) else None


def _role(message: dict[str, Any]) -> str:
    """A role as the context shows it: a plain word, so a crafted role cannot forge a section."""
    role = message.get("role")
    return role if isinstance(role, str) and re.fullmatch(r"[A-Za-z_]{1,20}", role) else "message"


def _usable_id(value: Any) -> bool:
    """An id that round-trips through the output: a short valid string, or a finite number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isfinite(value) and len(str(value)) <= 512
    return isinstance(value, str) and 0 < len(value) <= 512 and valid_text(value) == value


def input_format(name: str) -> bool | None:
    """True for JSONL, False for text, None to decide from the first line (stdin "-", other names)."""
    suffix = Path(name).suffix.lower()
    return True if suffix in JSONL_SUFFIXES else False if suffix == ".txt" else None


def read_items(lines: Iterable[bytes | None], jsonl: bool | None, max_chars: int = 10**9, secrets: Sequence[str] = (),
               parsers: SettingParsers | None = None) -> Iterator[BatchItem | BadLine]:
    """Items of a questions file, read as a stream: memory does not grow with the file.
    ``lines`` come from bounded_lines: None is a line too long to hold. An id holding a secret is refused: it
    would name files, and its line, masked where it is written, would never match it on resume."""
    for number, raw in enumerate(lines, 1):
        if raw is None:
            yield BadLine(number, f"the line is too long for MAX_QUESTION_CHARS={max_chars}")
            continue
        raw = raw.removeprefix(b"\xef\xbb\xbf" if number == 1 else b"")
        if jsonl is None and (head := raw.strip()) and not head.startswith(b"#"):  # the first line that counts
            jsonl = head.startswith(b"{")
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            yield BadLine(number, "not valid UTF-8")
            continue
        if not text or text.startswith("#"):  # blank, or a comment
            continue
        item = (BadLine(number, "contains NUL bytes") if "\x00" in text else item_from_json(text, number, parsers)
                if jsonl else BatchItem(number, question_id(text), text, None))
        if isinstance(item, BatchItem) and len(item.question) > max_chars:
            item = BadLine(number, f"the question is {len(item.question)} characters, more than "
                                   f"MAX_QUESTION_CHARS={max_chars}")
        if isinstance(item, BatchItem) and any(secret in item.id for secret in secrets):
            item = BadLine(number, '"id" holds the API key or a token, which must not name files: use another id')
        yield item


# --- --shard K/N or auto/N: which share of a questions file a run answers ------

MAX_SHARDS = 10_000


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): the questions whose id hashes to it."""

    index: int
    count: int

    def holds(self, item_id: str) -> bool:
        """A stable split: the same id lands in the same shard on every machine and every run."""
        return int(hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:16], 16) % self.count == self.index - 1

    def output(self, path: Path) -> Path:
        """results.jsonl -> results.2-of-4.jsonl: each shard its own output, lock and summary."""
        return path.with_name(f"{path.stem}.{self.index}-of-{self.count}{path.suffix}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def read_shard(value: str, environ: Mapping[str, str]) -> Shard:
    """``K/N`` (1 <= K <= N), or ``auto/N``: K from the scheduler, a Kubernetes Indexed Job's
    JOB_COMPLETION_INDEX (0-based) or a Slurm array's SLURM_ARRAY_TASK_ID (see _slurm_shard)."""
    text = value.strip().lower()
    if text.startswith("auto"):
        return _shard_from_scheduler(text, environ)
    found = re.fullmatch(r"([0-9]{1,5})/([0-9]{1,5})", text)
    if not (found and 1 <= int(found[1]) <= int(found[2]) <= MAX_SHARDS):
        raise ValueError(f"--shard {value!r}: expected K/N with 1 <= K <= N <= {MAX_SHARDS}, or auto/N")
    return Shard(int(found[1]), int(found[2]))


def _shard_from_scheduler(text: str, environ: Mapping[str, str]) -> Shard:
    count = small_number(text.partition("/")[2])
    if text != "auto" and (not text.startswith("auto/") or count is None or not 1 <= count <= MAX_SHARDS):
        raise ValueError(f"--shard {text}: expected auto/N with N a whole number from 1 to {MAX_SHARDS}")
    if "JOB_COMPLETION_INDEX" not in environ and "SLURM_ARRAY_TASK_ID" not in environ:
        raise ValueError("--shard auto: no scheduler index found (JOB_COMPLETION_INDEX of a Kubernetes Indexed "
                          "Job, or SLURM_ARRAY_TASK_ID of a Slurm job array); use --shard K/N")
    if count is None:  # after a resubmission (--array=3,5) the array's own count and range describe the rest
        raise ValueError("--shard auto: the scheduler does not say how many shards there are: give the count, "
                          "as in --shard auto/8 for --array=1-8 or a Job of 8 completions")
    shards = {name: _slurm_shard(environ, count) if name.startswith("SLURM") else _job_shard(environ, count)
              for name in ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID") if name in environ}
    if len(set(shards.values())) > 1:  # a variable leaked from another job: which one is ours cannot be told
        raise ValueError(f"--shard auto/{count}: " + " but ".join(f"{name} says shard {shard}" for name, shard
                          in shards.items()) + ": unset the one that is not this job's, or use --shard K/N")
    return next(iter(shards.values()))


def _job_shard(environ: Mapping[str, str], count: int) -> Shard:
    """A Kubernetes Indexed Job's shard: its 0-based JOB_COMPLETION_INDEX, plus one."""
    index = small_number(environ["JOB_COMPLETION_INDEX"])
    if index is None or index >= count:
        raise ValueError(f"--shard auto/{count}: JOB_COMPLETION_INDEX is not an index from 0 to {count - 1}")
    return Shard(index + 1, count)


def _slurm_shard(environ: Mapping[str, str], count: int) -> Shard:
    """Shard K of ``count`` is the task with id K, and id 0 is shard N: --array=1-8 and --array=0-7 both
    cover shards 1..8 once, and a resubmitted subset (--array=3,5) reruns exactly those shards. Only the
    task id decides: _MIN, _MAX and _COUNT describe the array as (re)submitted, not the whole job."""
    task = small_number(environ["SLURM_ARRAY_TASK_ID"])
    highest = small_number(environ.get("SLURM_ARRAY_TASK_MAX")) or 0
    if task is None or max(task, highest) > count:
        raise ValueError(f"--shard auto/{count}: a Slurm task id must be a shard, 0 to {count} (this one is "
                          f"{printable(environ['SLURM_ARRAY_TASK_ID'], 20)!r}, the array's highest {highest}): "
                          f"submit --array=1-{count} (or 0-{count - 1}), or a part of it")
    if small_number(environ.get("SLURM_ARRAY_TASK_MIN")) == 0 and highest == count:
        raise ValueError(f"--shard auto/{count}: task ids 0 and {count} of the Slurm array are both shard "
                          f"{count}: submit --array=1-{count} or 0-{count - 1}")
    return Shard(task or count, count)


# --- results files: an earlier output's lines (resume, the summary's totals, --eval's report) ----

def result_record(raw: bytes) -> dict[str, Any] | None:
    """The record a results line holds, if it is a whole one of ours: a jsonl line (id, status ok or failed), or an
    --output-format openai-batch line read as one (its id, status and scoring, "output_format" said); None else."""
    if not raw.endswith(b"\n"):
        return None  # torn: the process died mid-write
    try:
        record = load_json(raw)
    except ValueError:
        return None
    if isinstance(record, dict) and "custom_id" in record and isinstance(record.get("moa"), dict):
        # One of our --output-format openai-batch lines (a line from OpenAI itself has no "moa").
        response, extra = record.get("response"), record["moa"]
        done = isinstance(response, dict) and response.get("status_code") == 200 and not record.get("error")
        return {"id": str(record["custom_id"]), "status": "ok" if done else "failed", "output_format": "openai-batch",
                **{key: extra[key] for key in ("expected", "correct") if key in extra}}
    ours = isinstance(record, dict) and "id" in record and record.get("status") in ("ok", "failed")
    return record if ours else None


def result_totals(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over a results file's records (result_record's); accuracy over answered questions with one expected."""
    totals: dict[str, Any] = dict.fromkeys(("questions", "ok", "failed", "with_expected", "correct",
                                            "failed_with_expected"), 0)
    for record in records:
        totals["questions"] += 1
        answered = record.get("status") == "ok"
        totals["ok" if answered else "failed"] += 1
        if "expected" in record and not (answered and record.get("correct", False) is None):  # None: a full answer
            totals["with_expected" if answered else "failed_with_expected"] += 1
            totals["correct"] += answered and bool(record.get("correct"))
    totals["accuracy"] = round(totals["correct"] / totals["with_expected"], 4) if totals["with_expected"] else None
    return totals


# --- traces: a run's JSONL lines, read back by --replay ---------------------------------------

# What an agent is called in a trace: solver-N, solver-M->solver-N (a critique), judge-N; read by fullmatch, each
# number at most three digits: nothing to backtrack over.
_TRACE_AGENT = re.compile(r"(?:solver-(\d{1,3})->)?(solver|judge)-(\d{1,3})|synthesizer")


@dataclass(frozen=True)
class TraceAttempt:
    """One attempt line of a trace, checked: what a replay needs of it."""

    pass_number: int
    phase: str  # one of moa_pipeline's phases (a Phase compares equal to its value)
    slot: int  # the solver slot the attempt is about (the critiqued one for a critique), from 0
    ok: bool
    response_text: str
    debate_round: int = 1  # the debate round
    model: str = ""  # the model it went to ("" in a trace that does not say)
    record: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the line as read


def trace_attempt(record: Mapping[str, Any], phases: Collection[str], slots: int, rounds: int) -> TraceAttempt | None:
    """A trace's attempt line, checked against the ``phases``, solver ``slots`` and debate ``rounds`` there can be;
    None for a judge's or the synthesizer's (about no solver's line); ValueError saying what is wrong with it."""
    if "pass" not in record:  # it still replays, and its restored lines say "pass"
        record = {("pass" if key == "round" else key): value for key, value in record.items()}  # an older trace
    agent, pass_number, phase = record.get("agent"), record.get("pass"), record.get("phase")
    text, outcome, model = record.get("response_text", ""), record.get("outcome"), record.get("model")
    found = _TRACE_AGENT.fullmatch(agent) if isinstance(agent, str) else None
    if (found is None or type(pass_number) is not int or phase not in phases or not isinstance(outcome, str)
            or not isinstance(text, str | None) or not isinstance(model, str | None)):
        raise ValueError("is not an attempt record of this tool "
                         "(agent, pass, phase, outcome, model or response_text missing or malformed)")
    if found.group(2) != "solver":  # a judge's or the synthesizer's: about no solver's line
        return None
    slot, debate_round = int(found.group(3)) - 1, record.get("debate_round", 1)
    if not 0 <= slot < slots or (phase == "critique") != (found.group(1) is not None):  # a critique names its critic
        raise ValueError(f"names an agent this tool never uses ({str(agent)[:40]!r})")
    if type(debate_round) is not int or not 1 <= debate_round <= rounds:
        raise ValueError(f"has a debate_round that is not 1-{rounds}")
    return TraceAttempt(pass_number, str(phase), slot, outcome == "ok", valid_text(text or ""), debate_round,
                        valid_text(model or ""), record)


# --- --eval's report: strategies compared over their result lines ---------------------------

SIGNIFICANCE = 0.05  # McNemar p below it: "beats"; at or above it, the sample cannot tell the two apart
WILSON_Z = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion: unlike p +- 1.96 se it stays inside [0, 1] and holds up at
    the small samples and extreme accuracies an eval has (Brown, Cai and DasGupta 2001)."""
    if not trials:
        return 0.0, 1.0
    z2, share = WILSON_Z ** 2, successes / trials
    centre = (share + z2 / (2 * trials)) / (1 + z2 / trials)
    half = WILSON_Z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(wins: int, losses: int) -> float:
    """The exact two-sided McNemar p-value: if two strategies were equally good, each question only one of them got
    right would be a fair coin's toss; this is the chance of a split at least as uneven as wins : losses."""
    tosses = wins + losses
    tail = sum(math.comb(tosses, k) for k in range(min(wins, losses) + 1)) / (1 << tosses)
    return min(1.0, 2 * tail)


def paired(base: Mapping[str, dict[str, Any]], other: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``other`` against ``base`` on the questions both answered: wins (only other right), losses, McNemar p."""
    both = [(base[i]["correct"], other[i]["correct"]) for i in base.keys() & other.keys()
            if isinstance(base[i].get("correct"), bool) and isinstance(other[i].get("correct"), bool)]
    wins, losses = sum(b and not a for a, b in both), sum(a and not b for a, b in both)
    return {"wins": wins, "losses": losses, "p_value": round(mcnemar_p(wins, losses), 4)}


def _mean(values: Iterable[float | int | None]) -> float | None:
    counted = [v for v in values if v is not None]
    return round(sum(counted) / len(counted), 3) if counted else None


def eval_verdict(rows: list[dict[str, Any]], lines: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, Any]:
    """The report's verdict over its ``rows`` (strategy_score's) and each strategy's result ``lines`` by id: the most
    accurate ("best"), the best per call, and the closing line that says so."""
    ranked = sorted((r for r in rows if r["accuracy"] is not None),
                    key=lambda r: (-r["accuracy"], r["calls_per_question"] or 0))
    best = ranked[0] if ranked else None
    # The cheapest strategy the questions cannot tell apart from the most accurate: more calls bought nothing shown.
    thrifty = min((r for r in ranked if r is best or paired(lines[best["name"]], lines[r["name"]])["p_value"]
                   >= SIGNIFICANCE), key=lambda r: r["calls_per_question"] or 0, default=None) if best else None
    return {"best": best and best["name"], "best_per_call": thrifty and thrifty["name"],
            "conclusion": eval_conclusion(rows, best, thrifty)}


def eval_conclusion(rows: list[dict[str, Any]], best: dict[str, Any] | None, thrifty: dict[str, Any] | None) -> str:
    """One plain line: the most accurate strategy, the best per call, and whether the debate beats one call."""
    if best is None or thrifty is None:
        return "No strategy has answered a question with a gold answer yet."
    # Edge data is no finding: 0% crowns nothing, a tie is said, an accuracy over few answered (the rest failed) says so
    most = max(r["answered"] for r in rows)
    tied = [f"{r['name']} ({_accuracy_said(r, most)})" if r["answered"] < most or r["failed"] else r["name"]
            for r in rows if r is not best and r["accuracy"] == best["accuracy"]]
    said = ["No strategy got a question right."] if not best["accuracy"] else [
        f"Most accurate: {best['name']} ({_accuracy_said(best, most)}"
        f"{', tied with ' + ', '.join(tied) if tied else ''})."]
    if thrifty is not best and best["accuracy"]:
        said.append(f"Best per call: {thrifty['name']} ({_accuracy_said(thrifty, most)} at "
                    f"{thrifty['calls_per_question']:g} calls/question); the extra calls bought no accuracy these "
                    f"questions can show (McNemar p >= {SIGNIFICANCE}).")
    debate_row = next((r for r in rows if r["name"] == "debate" and r["vs_single"] and r["answered"]), None)
    if debate_row:
        duel = debate_row["vs_single"]
        verdict = ("beats" if duel["wins"] > duel["losses"] else "is worse than") if duel["p_value"] < SIGNIFICANCE \
            else "does not beat, at this sample size,"
        said.append(f"The debate {verdict} a single call (wins {duel['wins']}, losses {duel['losses']}, McNemar "
                    f"p = {duel['p_value']:.3g}, on the {duel['wins'] + duel['losses']} questions only one got right).")
    elif all(r["name"] != "single" for r in rows) and any(r["name"] == "debate" and r["answered"] for r in rows):
        said.append("The debate was not compared with a single call: add single to --strategies.")
    return " ".join(said)


def _accuracy_said(row: dict[str, Any], most: int) -> str:
    """The accuracy, and over how few questions when fewer than another strategy's (failures, or a stopped eval)."""
    fewer = f" of the {row['answered']} it answered" if row["failed"] or row["answered"] < most else ""
    return f"{100 * row['accuracy']:.1f}%{fewer}" + (f"; {row['failed']} failed" if row["failed"] else "")


def served(cache_hits: int | None) -> str:
    """How many replies the response cache served, as the summaries say it after the requests sent; "" for none."""
    return f" ({cache_hits} replies from the response cache)" if cache_hits else ""


def said_cost(cost: float | None, source: str | None, digits: int = 4) -> str:
    """A cost and whose figure it is (Usage.cost_source), as every summary shows it; "" for none."""
    whose = {"endpoint": "the endpoint's own", "mixed": "the endpoint's own where it said, else at your prices"}
    unsaid = "at your prices" if cost or source else "nothing billed"  # $0 from no one: the response cache's replies
    return "" if cost is None else f"${cost:.{digits}f} ({whose.get(source or '', unsaid)})"


def cost_source(sources: Iterable[str | None]) -> str | None:
    """Whose figures a sum of costs adds up: the one source of them all, else "mixed"; None for none."""
    found = set(filter(None, sources))
    return found.pop() if len(found) == 1 else "mixed" if found else None


def strategy_score(name: str, lines: Mapping[str, dict[str, Any]],
                   single: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One strategy's row of the report, from its batch lines: accuracy over the questions it answered (a failure
    is counted as failed, never as wrong), with its Wilson interval, and what a question cost."""
    rows = list(lines.values())
    scored = [r["correct"] for r in rows if r.get("status") == "ok" and isinstance(r.get("correct"), bool)]
    low, high = wilson_interval(sum(scored), len(scored))
    judged = [r["phases"].get("judge", {}) for r in rows if isinstance(r.get("phases"), dict)]
    judge_calls = sum(j.get("ok", 0) + j.get("failed", 0) for j in judged)
    formats: dict[str, Counter[str]] = {}  # RunRecord.format's counts per phase, summed over the questions
    for row in rows:
        for phase, counts in (row.get("format") or {}).items():
            formats.setdefault(phase, Counter()).update(counts)
    return {"name": name, "questions": len(rows), "answered": len(scored),
            "failed": sum(r.get("status") != "ok" for r in rows), "correct": sum(scored),
            "accuracy": round(sum(scored) / len(scored), 4) if scored else None,
            "ci_low": round(low, 4) if scored else None, "ci_high": round(high, 4) if scored else None,
            "calls_per_question": _mean(r.get("llm_calls") for r in rows),
            "requests_per_question": _mean(r.get("http_requests") for r in rows),
            "tokens_per_question": _mean((r.get("usage") or {}).get("total_tokens") for r in rows),
            "cost_usd_per_question": _mean(r.get("cost_usd") for r in rows),
            "cost_source": cost_source((r.get("usage") or {}).get("cost_source", "prices")  # older lines: only prices
                                       for r in rows if r.get("cost_usd")),  # a $0 line (cached) adds no figure
            "wall_s_per_question": _mean(r.get("elapsed_s") for r in rows),
            "judge_verdict_share": round(sum(j.get("ok", 0) for j in judged) / judge_calls, 3) if judge_calls else None,
            "format": formats, "doubtful": sum(bool(r.get("doubts")) for r in rows),
            "vs_single": paired(single, lines) if single is not None and name != "single" else None}


def _shown(value: float | None, form: str = "{:.1f}") -> str:
    return "-" if value is None else form.format(value)


def markdown_report(report: dict[str, Any], model: str) -> str:
    """The report as Markdown: report.md, and what a person reads on stdout."""
    lines = [f"# Eval of {report['gold']}: {report['questions']} questions, model {model}", "",
             "| strategy | accuracy [95% CI] | answered | failed | calls/q | requests/q | tokens/q | cost/q | wall/q "
             "| judges with a verdict | doubtful | vs single: wins-losses, p | format: last tier / failed |",
             "|" + "---|" * 13]
    for row in report["strategies"]:
        duel = row["vs_single"]
        accuracy = (f"{100 * row['accuracy']:.1f}% [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
                    if row["accuracy"] is not None else "-")
        lines.append(f"| {row['name']} | {accuracy} | {row['answered']} | {row['failed']} | "
                     f"{_shown(row['calls_per_question'])} | {_shown(row['requests_per_question'])} | "
                     f"{_shown(row['tokens_per_question'], '{:.0f}')} | "
                     f"{said_cost(row['cost_usd_per_question'], row['cost_source']) or '-'} | "
                     f"{_shown(row['wall_s_per_question'], '{:.1f}s')} | "
                     f"{_shown(row['judge_verdict_share'], '{:.0%}')} | {row['doubtful']} | "
                     + (f"{duel['wins']}-{duel['losses']}, p = {duel['p_value']:.3g} | " if duel else "- | ")
                     + (", ".join(f"{phase} {c['last_tier'] / c['replies']:.0%} / {c['failed'] / c['replies']:.0%}"
                                  for phase, c in row["format"].items() if c["replies"]) or "-") + " |")
    return "\n".join([*lines, "", report["conclusion"], ""])
