"""Parser tests: tables of realistic model outputs, plus inputs that must not break it."""
from __future__ import annotations

import time

import pytest

from parsing import (
    ReportedUsage,
    charge,
    extract_tag,
    normalize_answer,
    parse_answer,
    parse_block,
    parse_judgement,
    parse_rebuttal,
    reported_usage,
    strip_think,
)

# --- solver answers, all three tiers ----------------------------------------

ANSWER_CASES = [
    pytest.param("<reasoning>17*23 = 391</reasoning>\n<answer>391</answer>", "391", "xml", id="clean-tags"),
    pytest.param("<REASONING>ok</REASONING><Answer >391</ANSWER>", "391", "xml", id="tag-case-and-space"),
    pytest.param('<answer id="final" type=number>391</answer>', "391", "xml", id="tag-attributes"),
    pytest.param("Sure! Here you go.\n<reasoning>17*20=340, 17*3=51</reasoning>\n<answer>391</answer>\nHope it helps!",
                 "391", "xml", id="chatter-around"),
    pytest.param("<reasoning>long work</reasoning>\n<answer>391", "391", "xml", id="unclosed-last-tag"),
    pytest.param("```xml\n<reasoning>x</reasoning>\n<answer>391</answer>\n```", "391", "xml", id="fenced-xml"),
    pytest.param("<answer>\n```\n391\n```\n</answer>", "391", "xml", id="fence-inside-tag"),
    pytest.param("I must use <answer></answer> tags. First try <answer>390</answer>, no wait: <answer>391</answer>",
                 "391", "xml", id="last-complete-tag-wins"),
    pytest.param("The question says to reply in <answer> tags.\nSo:\n<answer>391</answer>", "391", "xml",
                 id="tag-echoed-from-question"),
    pytest.param("<think>maybe <answer>390</answer>?</think>\n<answer>391</answer>", "391", "xml",
                 id="think-block-stripped"),
    pytest.param("Okay so 17*23...</think>\n<answer>391</answer>", "391", "xml", id="lone-think-close"),
    pytest.param("17 * 23: 17*20 = 340, plus 51.\n\n## Answer\n391", "391", "markdown", id="markdown-header"),
    pytest.param("Work: 340 + 51.\n**Answer:** 391", "391", "markdown", id="bold-label"),
    pytest.param("Work: 340 + 51.\n**Final Answer**\n391", "391", "markdown", id="bold-label-own-line"),
    pytest.param("Work.\nAnswer: 391\nConfidence: high", "391", "markdown", id="plain-label-stops-at-next"),
    pytest.param("Work.\nThe final answer is: 391", "391", "markdown", id="final-answer-is"),
    pytest.param("### Final answer:\n**391**", "391", "markdown", id="header-with-colon"),
    pytest.param("Step 1: 17*20 = 340\nStep 2: 17*3 = 51\n\n391", "391", "paragraph", id="paragraph-fallback"),
    pytest.param("Just 391", "Just 391", "paragraph", id="single-paragraph"),
]


@pytest.mark.parametrize("text, answer, tier", ANSWER_CASES)
def test_parse_answer(text: str, answer: str, tier: str) -> None:
    """Each tier finds the answer in outputs small models really produce."""
    parsed = parse_answer(text)
    assert (normalize_answer(parsed.answer), parsed.tier) == (normalize_answer(answer), tier)


def test_reasoning_is_kept_with_the_answer() -> None:
    """The reasoning travels with the answer so critics can see the working."""
    parsed = parse_answer("<reasoning>17*20=340</reasoning><answer>391</answer>")
    assert parsed.reasoning == "17*20=340"


@pytest.mark.parametrize("text", ["", "   \n\n  ", "<think>only thinking, cut off", "<think>a</think>  "],
                         ids=["empty", "whitespace", "unclosed-think", "think-only"])
def test_nothing_usable(text: str) -> None:
    """Output with nothing in it gives tier 'empty' (the caller retries)."""
    assert parse_answer(text).tier == "empty"
    assert parse_answer(text).answer == ""


def test_strip_think_variants() -> None:
    """Complete blocks go, a lone close drops what precedes it, an unclosed open what follows."""
    assert strip_think("a<think>x</think>b<THINK>y</THINK>c") == "abc"
    assert strip_think("pre</think>post") == "post"
    assert strip_think("a<think>never closed") == "a"


def test_extract_tag_missing() -> None:
    """No opening tag means None, so the next tier runs."""
    assert extract_tag("no tags here", "answer") is None


# --- critiques and rebuttals ------------------------------------------------

@pytest.mark.parametrize("text, expected, tier", [
    pytest.param("<critique>Step 2 drops a carry.</critique>", "Step 2 drops a carry.", "xml", id="tag"),
    pytest.param("## Critique\nStep 2 drops a carry.", "Step 2 drops a carry.", "markdown", id="header"),
    pytest.param("Step 2 drops a carry.\n\nOtherwise fine.", "Step 2 drops a carry.\n\nOtherwise fine.",
                 "paragraph", id="whole-text"),
])
def test_parse_critique(text: str, expected: str, tier: str) -> None:
    """A critique is found by tag, header, or else the whole text."""
    assert parse_block(text, "critique") == (expected, tier)


def test_parse_critique_empty() -> None:
    """An empty critique is a failure, not an empty critique."""
    assert parse_block("  ", "critique") is None


@pytest.mark.parametrize("text, answer", [
    pytest.param("<rebuttal>The critic misread it.</rebuttal>\n<answer>391</answer>", "391", id="tags"),
    pytest.param("The critic is right.\n**Answer:** 392", "392", id="label"),
])
def test_parse_rebuttal(text: str, answer: str) -> None:
    """A rebuttal needs an explicit answer: tag or label."""
    found = parse_rebuttal(text)
    assert found is not None and found[1].answer == answer


def test_rebuttal_without_answer_is_unusable() -> None:
    """A defence with no stated answer is retried, not guessed from its last paragraph."""
    assert parse_rebuttal("I still think my reasoning holds.\n\nThe critic is wrong.") is None


# --- judges -------------------------------------------------------------------

JUDGE_CASES = [
    pytest.param("<analysis>A is right</analysis>\nFINAL ANSWER: 391\nCONFIDENCE: 85", "391", 85, id="plain"),
    pytest.param("**FINAL ANSWER:** 391\n**CONFIDENCE:** 85%", "391", 85, id="bold-percent"),
    pytest.param("**FINAL ANSWER: 391**\n**Confidence: 85/100**", "391", 85, id="bold-around-line"),
    pytest.param("final answer: 391\nconfidence: 0.85", "391", 85, id="lower-decimal"),
    pytest.param("Final Answer:\n\n391\nConfidence: 1.0", "391", 100, id="value-on-next-line"),
    pytest.param("FINAL ANSWER: 391\nCONFIDENCE: 150", "391", 100, id="clamped-high"),
    pytest.param("FINAL ANSWER: 391\nCONFIDENCE: 0.5/1", "391", 50, id="fraction-of-one"),
    pytest.param("End with FINAL ANSWER: x and CONFIDENCE: n.\n...\nFINAL ANSWER: 391\nCONFIDENCE: 70", "391", 70,
                 id="last-line-wins"),
    pytest.param("## Final answer: 391\n- Confidence: 90", "391", 90, id="markdown-decorated"),
    pytest.param("<think>FINAL ANSWER: 1</think>\nFINAL ANSWER: 391\nCONFIDENCE: 60", "391", 60, id="think-ignored"),
    pytest.param("FINAL ANSWER: 391", "391", None, id="no-confidence"),
    pytest.param("I pick <answer>391</answer>", "391", None, id="answer-tag-fallback"),
]


@pytest.mark.parametrize("text, answer, confidence", JUDGE_CASES)
def test_parse_judgement(text: str, answer: str, confidence: int | None) -> None:
    """FINAL ANSWER / CONFIDENCE lines in the forms judges write them."""
    found = parse_judgement(text)
    assert (found.final_answer, found.confidence) == (answer, confidence)


def test_judgement_without_answer() -> None:
    """No FINAL ANSWER line and no answer tag: final_answer is None."""
    assert parse_judgement("I think candidate A is probably right.").final_answer is None


# --- normalisation for voting -------------------------------------------------

@pytest.mark.parametrize("raw, normal", [
    pytest.param("391", "391", id="plain"),
    pytest.param("391.0", "391", id="trailing-zero"),
    pytest.param("**391**", "391", id="bold"),
    pytest.param("391.", "391", id="sentence-dot"),
    pytest.param(" 391 ", "391", id="spaces"),
    pytest.param("\\boxed{391}", "391", id="boxed"),
    pytest.param("$391$", "391", id="dollars"),
    pytest.param("$\\boxed{\\text{Paris}}$", "paris", id="boxed-text"),
    pytest.param("1,234,567", "1234567", id="thousands"),
    pytest.param("0.50", "0.5", id="decimal"),
    pytest.param("+7", "7", id="plus-sign"),
    pytest.param("1e3", "1000", id="exponent"),
    pytest.param("Yes.", "yes", id="case-and-dot"),
    pytest.param("`Paris`", "paris", id="code"),
    pytest.param("(1, 2)", "1, 2", id="tuple-not-thousands"),
    pytest.param("", "", id="empty"),
])
def test_normalize_answer(raw: str, normal: str) -> None:
    """Answers that mean the same normalise to the same key."""
    assert normalize_answer(raw) == normal


def test_numeric_equality_across_forms() -> None:
    """391, 391.0, **391** and 391. vote together."""
    assert len({normalize_answer(a) for a in ["391", "391.0", "**391**", "391.", "\\boxed{391}"]}) == 1


# --- inputs that must not break it --------------------------------------------

HOSTILE = [
    pytest.param("<answer>" * 200_000, id="many-unclosed-open-tags"),
    pytest.param("</answer>" * 200_000, id="many-close-tags"),
    pytest.param("<answer " * 150_000, id="unterminated-open-tags"),
    pytest.param("<think>" * 150_000, id="many-think-opens"),
    pytest.param("**Answer" * 150_000, id="many-partial-labels"),
    pytest.param("FINAL ANSWER:" * 100_000, id="final-answer-repeated-one-line"),
    pytest.param(("x" * 999 + "\n") * 1000, id="megabyte-lines"),
    pytest.param("\\boxed{" * 150_000, id="unclosed-boxed"),
    pytest.param("1," * 400_000, id="comma-runs"),
    pytest.param("\x00\xff\ufffd\ud800 junk \x1b[31m" * 50_000, id="binary-junk"),
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_never_raises_and_stays_linear(text: str) -> None:
    """Every parser returns on a megabyte of adversarial text, without raising.

    The time bound is loose (seconds, for slow CI machines); a quadratic
    regex would take minutes on these inputs.
    """
    started = time.process_time()
    parse_answer(text)
    parse_block(text, "critique")
    parse_rebuttal(text)
    parse_judgement(text)
    normalize_answer(text)
    assert time.process_time() - started < 10


# --- properties (hypothesis) ----------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Fragments that tempt the parser: our tags (open, closed, cut), labels, think blocks, fences.
FRAGMENTS = st.sampled_from([
    "<answer>", "</answer>", "<answer ", "<reasoning>", "</reasoning>", "<think>", "</think>", "<critique>",
    "</rebuttal>", "## Answer", "**Answer:**", "Answer:", "FINAL ANSWER:", "CONFIDENCE: 85%", "```", "```xml",
    "\\boxed{", "}", "391", "1,234", "\n", "\n\n", " ", "*", "$", "<", ">", "\x00", "\ud800", "é",
])
TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=20)), max_size=60).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_parser_never_raises(text: str) -> None:
    """Any mix of tags, labels, junk and stray surrogates parses without raising, into strings."""
    parsed = parse_answer(text)
    assert isinstance(parsed.answer, str) and parsed.tier in ("xml", "markdown", "paragraph", "empty")
    judgement = parse_judgement(text)
    assert judgement.confidence is None or 0 <= judgement.confidence <= 100
    parse_block(text, "critique")
    parse_rebuttal(text)
    assert isinstance(normalize_answer(text), str)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(FRAGMENTS, min_size=1, max_size=8))
def test_a_megabyte_of_adversarial_repetition_stays_fast(pattern: list[str]) -> None:
    """Any short pattern of partial markers repeated to 1 MB parses in well under the bound (linear time)."""
    unit = "".join(pattern) or "<"
    text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    started = time.process_time()
    parse_answer(text)
    parse_judgement(text)
    normalize_answer(text)
    assert time.process_time() - started < 10


# --- question-type aware verdicts (issue 7) ------------------------------------------------------

from parsing import answer_key, choice_letters, detect_answer_type, present_answer  # noqa: E402

MC = "Which number is divisible by 7?\n(A) 50\n(B) 63\n(C) 80\n(D) 92"


@pytest.mark.parametrize("question, answers, kind", [
    pytest.param(MC, ["B", "(B)", "C"], "choice", id="multiple-choice"),
    pytest.param("What is 17 * 23?", ["391", "391.0", "**391**"], "number", id="number"),
    pytest.param("Is 91 a prime number?", ["No.", "no", "Yes"], "yes_no", id="yes-no"),
    pytest.param("What is the capital of France?", ["Paris", "paris."], "short", id="short-phrase"),
    pytest.param("Explain why the sky is blue.", ["Because " + "scattering " * 20], "long", id="long-text"),
    pytest.param("A) is this a list? B) no", ["42"], "number", id="letters-in-question-but-numeric-answers"),
])
def test_detect_answer_type(question: str, answers: list[str], kind: str) -> None:
    """The type comes from the question and what most candidates look like."""
    assert detect_answer_type(question, answers) == kind


@pytest.mark.parametrize("kind, question, a, b, same", [
    pytest.param("number", "", "391", "391.0", True, id="integer-forms"),
    pytest.param("number", "", "391 apples", "$391$", True, id="units-and-latex"),
    pytest.param("number", "", "0.3333333", "0.333333", True, id="decimal-tolerance"),
    pytest.param("number", "", "0.33", "0.333333", False, id="too-far-apart"),
    pytest.param("yes_no", "", "Yes.", "True", True, id="yes-synonyms"),
    pytest.param("yes_no", "", "No, it is divisible by 7", "false", True, id="no-with-reason"),
    pytest.param("choice", MC, "(B)", "b)", True, id="letter-forms"),
    pytest.param("choice", MC, "B. 63", "Option B", True, id="letter-with-text"),
    pytest.param("choice", MC, "B", "C", False, id="different-letters"),
])
def test_typed_keys(kind: str, question: str, a: str, b: str, same: bool) -> None:
    """Answers of the same meaning share a key for their question's type."""
    letters = choice_letters(question)
    assert (answer_key(kind, a, letters) == answer_key(kind, b, letters)) is same


@pytest.mark.parametrize("kind, question, answer, shown", [
    ("number", "", "**391.0**", "391"), ("yes_no", "", "Yes, because 91 = 7 * 13", "yes"),
    ("choice", MC, "(b) 63", "B"), ("long", "", "  Rayleigh scattering.  ", "Rayleigh scattering."),
])
def test_present_answer(kind: str, question: str, answer: str, shown: str) -> None:
    """Verdicts print as a bare number, yes/no, the letter, or the text itself."""
    assert present_answer(kind, answer, choice_letters(question)) == shown


# --- a reply's usage: cached prompt tokens and a gateway's charge (issue 25) -----------------------------------

def reply(usage: object, **top: object) -> dict:
    """A chat completion body as an endpoint sends it, with this usage object and top-level extras."""
    return {"id": "chatcmpl-9x", "object": "chat.completion", "model": "m", "usage": usage, **top,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "<answer>391</answer>"},
                         "finish_reason": "stop"}]}


LLAMA_TIMINGS = {"prompt_n": 12, "prompt_ms": 35.1, "prompt_per_token_ms": 2.9, "prompt_per_second": 341.9,
                 "predicted_n": 78, "predicted_ms": 1201.4, "cache_n": 1012}

REPORTED_USAGE_CASES = [
    pytest.param(reply({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 0}}),
                 (2006, 300), 1920, None, id="openai-prompt-tokens-details"),
    pytest.param(reply({"prompt_tokens": 2100, "completion_tokens": 120, "total_tokens": 2220,
                        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048}),
                 (2100, 120), 2048, None, id="anthropic-style-cache-read"),
    pytest.param(reply({"prompt_tokens": 2100, "completion_tokens": 120, "total_tokens": 2220,
                        "cache_read_input_tokens": 2048, "prompt_tokens_details": {"cached_tokens": 2048}}),
                 (2100, 120), 2048, None, id="litellm-both-forms-counted-once"),
    pytest.param(reply({"prompt_tokens": 1500, "completion_tokens": 200, "total_tokens": 1700,
                        "prompt_cache_hit_tokens": 1408, "prompt_cache_miss_tokens": 92}),
                 (1500, 200), 1408, None, id="deepseek-cache-hit"),
    pytest.param(reply({"completion_tokens": 78, "prompt_tokens": 1024, "total_tokens": 1102},
                       timings=LLAMA_TIMINGS, system_fingerprint="b4719-1d3e2a"),
                 (1024, 78), 1012, None, id="llama-cpp-timings-cache-n"),
    pytest.param(reply({"prompt_tokens": 194, "completion_tokens": 2, "total_tokens": 196, "cost": 0.00014,
                        "is_byok": False, "prompt_tokens_details": {"cached_tokens": 0},
                        "cost_details": {"upstream_inference_cost": None}}),
                 (194, 2), 0, 0.00014, id="openrouter-cost"),
    pytest.param(reply({"prompt_tokens": 10427, "completion_tokens": 264, "total_tokens": 10691, "cost": 0.0033789,
                        "is_byok": False, "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                        "cost_details": {"upstream_inference_cost": 0.0033789,
                                         "upstream_inference_prompt_cost": 0.0031281,
                                         "upstream_inference_completions_cost": 0.0002508}}),
                 (10427, 264), 0, 0.0033789, id="openrouter-credits-upstream-cost-is-the-same-charge"),
    pytest.param(reply({"prompt_tokens": 194, "completion_tokens": 2, "total_tokens": 196, "cost": 0.95,
                        "is_byok": True, "cost_details": {"upstream_inference_cost": 19}}),
                 (194, 2), 0, 19.95, id="openrouter-byok-fee-plus-what-the-own-key-was-billed"),
    pytest.param(reply({"prompt_tokens": 194, "completion_tokens": 2, "total_tokens": 196, "cost": 0,
                        "is_byok": True, "cost_details": {"upstream_inference_cost": None}}),
                 (194, 2), 0, None, id="openrouter-byok-upstream-unsaid-is-no-charge"),
    pytest.param(reply({"prompt_tokens": 194, "completion_tokens": 2, "total_tokens": 196, "cost": 0}),
                 (194, 2), 0, 0.0, id="openrouter-free-model-costs-zero"),
    pytest.param(reply({"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}),
                 (40, 9), 0, None, id="vllm-says-nothing-cached"),
    pytest.param(reply({"prompt_tokens": 100, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 512}}),
                 (100, 9), 100, None, id="more-cached-than-prompt-is-clamped"),
    pytest.param(reply({"prompt_tokens": 100, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": True},
                        "cache_read_input_tokens": -5, "prompt_cache_hit_tokens": 64.0},
                       timings={"cache_n": "80"}),
                 (100, 9), 0, None, id="junk-counts-bool-negative-float-string-ignored"),
    pytest.param(reply({"prompt_tokens": 100, "completion_tokens": 9, "prompt_tokens_details": None,
                        "cost": "0.01"}, timings=[1012]),
                 (100, 9), 0, None, id="malformed-parts-ignored-cost-as-text-ignored"),
    pytest.param(reply({"prompt_tokens": 100, "completion_tokens": 9, "cost": -0.002}), (100, 9), 0, None,
                 id="negative-cost-ignored"),
    pytest.param(reply({"prompt_tokens": 100, "completion_tokens": 9, "cost": True}), (100, 9), 0, None,
                 id="bool-cost-ignored"),
    pytest.param(reply({"prompt_tokens": 100, "completion_tokens": 9, "cost": float("nan")}), (100, 9), 0, None,
                 id="nan-cost-ignored"),
    pytest.param(reply({"prompt_tokens": 100, "completion_tokens": 9, "cost": 10 ** 400}), (100, 9), 0, None,
                 id="cost-no-float-holds-ignored"),
    pytest.param(reply({"completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 64}}), None, 64, None,
                 id="no-prompt-count-cached-kept-unclamped"),
    pytest.param(reply(None), None, 0, None, id="usage-null"),
    pytest.param([1, 2], None, 0, None, id="not-an-object"),
]


@pytest.mark.parametrize("body, counts, cached, cost", REPORTED_USAGE_CASES)
def test_reported_usage_reads_every_form(body: object, counts: tuple[int, int] | None, cached: int,
                                         cost: float | None) -> None:
    """Each endpoint's way of reporting cached prompt tokens and its charge is read; junk is left out."""
    found = reported_usage(body)
    assert (found.counts and (found.counts["prompt_tokens"], found.counts["completion_tokens"])) == counts
    assert (found.cached_tokens, found.cost_usd) == (cached, cost)


@pytest.mark.parametrize("events, counts, cached, cost", [
    pytest.param([{"choices": [{"delta": {"content": "39"}}], "usage": None},
                  {"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": None},
                  {"choices": [], "usage": {"prompt_tokens": 2006, "completion_tokens": 3,
                                            "prompt_tokens_details": {"cached_tokens": 1920}}}],
                 (2006, 3), 1920, None, id="openai-include-usage-last-chunk"),
    pytest.param([{"choices": [{"delta": {"content": "391"}}]},
                  {"choices": [{"delta": {}, "finish_reason": "stop"}], "timings": LLAMA_TIMINGS},
                  {"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 78}}],
                 (1000, 78), 1000, None, id="llama-cpp-timings-then-usage-clamped-after"),
    pytest.param([{"choices": [], "usage": {"prompt_tokens": 194, "completion_tokens": 2, "cost": 0.00014}},
                  {"choices": [], "usage": {"prompt_tokens": 194, "completion_tokens": 2}}],
                 (194, 2), 0, 0.00014, id="a-later-event-without-cost-keeps-it"),
])
def test_a_streams_usage_adds_up_its_events(events: list[dict], counts: tuple[int, int], cached: int,
                                            cost: float | None) -> None:
    """A stream's usage is what its events said, the later winning, cached tokens clamped once the counts come."""
    found = ReportedUsage()
    for event in events:
        found = found.then(reported_usage(event))
    assert found.counts == {"prompt_tokens": counts[0], "completion_tokens": counts[1]}
    assert (found.cached_tokens, found.cost_usd) == (cached, cost)


@pytest.mark.parametrize("header, body_cost, charged", [
    pytest.param("0.00042", None, 0.00042, id="litellm-decimal"),
    pytest.param("4.2e-05", None, 4.2e-05, id="litellm-scientific-as-str-float-writes"),
    pytest.param(" 0.0 ", None, 0.0, id="zero-with-spaces"),
    pytest.param("0.00042", 0.0003, 0.0003, id="body-cost-first"),
    pytest.param(None, None, None, id="neither"),
    pytest.param("None", None, None, id="litellm-none"),
    pytest.param("-0.1", None, None, id="negative"),
    pytest.param("nan", None, None, id="nan"),
    pytest.param("inf", None, None, id="inf"),
    pytest.param("1e999", None, None, id="overflows-to-inf"),
    pytest.param("1_000", None, None, id="underscores"),
    pytest.param("0x10", None, None, id="hex"),
    pytest.param("9" * 5000, None, None, id="very-long"),
])
def test_the_charge_a_gateway_reports(header: str | None, body_cost: float | None, charged: float | None) -> None:
    """x-litellm-response-cost counts when it is a plain finite number >= 0; the body's usage.cost comes first."""
    headers = {} if header is None else {"x-litellm-response-cost": header}
    assert ReportedUsage(cost_usd=body_cost).charged(headers) == charged
    if body_cost is None:
        assert charge(header) == charged
