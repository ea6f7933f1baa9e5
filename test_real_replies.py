"""Replies a real small model wrote (SmolLM2-135M-Instruct on llama.cpp, issue 23), read as a person would: a judge's
answer in a sentence, never its echo of the candidates; yes/no questions typed before numbers; our nonce never in
an answer. Issue 23 stays open; these are the parts of it that have landed."""
from __future__ import annotations

import json
import re

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, completion, test_runtime
from parsing import EXAMPLE_ANSWER, answer_key, as_number, detect_answer_type, parse_judgement, parse_rebuttal

pytestmark = pytest.mark.usefixtures("endpoint_env")


@pytest.mark.parametrize("reply, final", [
    ("The answer is: Paris.", "Paris."),
    ("This answer is: Paris", "Paris"),
    ("<response>\nThe correct answer is (C) Venus.\n</response>", "(C) Venus."),
    ("I worked through it.\nThe answer is 36.", "36."),
    ("FINAL ANSWER: 391\nThe answer is 390", "391"),
    ('<candidate label="A">\n<answer>\n36\n</answer>\n<reasoning>\n(none)\n</reasoning>\n</candidate>', None),
    ('<candidate label="B">\n<answer>\n12\n</answer>\n</candidate>\nThe answer is 36.', "36."),
    ("Distant planet Mars is largest.", None),
    ("The answer is indeed no.", "no."),
    ("The correct answer is indeed 341.", "341."),
    ("The original answer was incorrect. The correct answer is 2.", "2."),
    ("In summary, your decision was correct. Your final answer is Earth.", "Earth."),
    ("The correct answer is 2+3.\n\nFINAL ANSWER: 2+3", "2+3"),
    ("The capital of Japan is Tokyo.\n\nFINAL ANSWER: Tokyo\n\nThe answer is correct.\n\nThe judges will now "
     "evaluate the other candidates.", "Tokyo"),
    ("The answer is correct.\n\nThe final answer is correct.", None),
    ("The answer to this question is 2+3 = 5+2 + 1, which is also correct.", "2+3 = 5+2 + 1, which is also correct."),
    ("The correct answer is 5.\n\nYou are correct. I've corrected you. Please go to next question.", "5."),
    ("FINAL ANSWER: the correct answer itself (not a candidate label)\nCONFIDENCE: a whole number from 0 to 100", None),
    (f"<analysis>A is right: I checked it again.</analysis>\nFINAL ANSWER: {EXAMPLE_ANSWER}\nCONFIDENCE: 90", None),
], ids=["answer-is-colon", "this-answer-is", "correct-answer-in-tags", "answer-is-last-line", "final-line-first",
        "echo-of-a-candidate", "echo-then-own-sentence", "prose", "indeed", "correct-indeed", "after-a-sentence",
        "your-final-answer", "final-line-after-a-sentence", "verdict-on-an-answer-after-it", "verdicts-only",
        "answer-to-this-question", "answer-then-babble", "our-format-copied", "our-example-copied"])
def test_a_judges_answer_is_its_own(reply: str, final: str | None) -> None:
    """A judge that ignores the FINAL ANSWER line is read from its "The answer is X" line; an <answer> it echoed
    from a candidate block is the candidate's, not a vote."""
    assert parse_judgement(reply).final_answer == final


@pytest.mark.parametrize("question, answers, kind, keys", [
    ("Is 7 an even number? Answer yes or no.", ["No, 7 is not an even number.", "Yes, 7 is an even number.", "No."],
     "yes_no", ["no", "yes", "no"]),
    ("Is 91 prime?", ["No", "7 * 13 = 91, so no", "no, it is 7 * 13"], "yes_no", ["no", "7 13 = 91, so no", "no"]),
    ("Can you tell me what 2+2 is?", ["Yes, it is 4.", "4", "2 + 2 = 4"], "number", ["4", "4", "4"]),
    ("What is 17 * 23?", ["391", "391.0", "Yes 391"], "number", ["391", "391", "391"]),
], ids=["yes-no-with-a-number", "yes-no-question", "polite-request-is-not-yes-no", "arithmetic"])
def test_yes_no_questions_are_typed_before_numbers(question: str, answers: list[str], kind: str,
                                                    keys: list[str]) -> None:
    """'No, 7 is not an even number.' and 'Yes, 7 is an even number.' hold the same number: for a yes/no question
    they are compared as yes/no, not both as 7 (which printed 'Answer: 7', confidence 100)."""
    assert detect_answer_type(question, answers) == kind
    assert [answer_key(kind, a) for a in answers] == keys


@respx.mock
@pytest.mark.parametrize("echoed", [r"#[0-9a-f]{16}\Z", r"(?<=#)[0-9a-f]{16}\Z"], ids=["nonce-line", "hex-only"])
def test_our_nonce_never_lands_in_an_answer(monkeypatch, capsys, echoed: str) -> None:
    """A model that echoes the "#<hex>" nonce our prompt ends with, or only its hex: the answer is read without it."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")

    def echo_nonce(request: httpx.Request, n: int) -> httpx.Response:
        nonce = re.search(echoed, json.loads(request.content)["messages"][-1]["content"]).group(0)
        return completion(f"<reasoning>17 * 23</reasoning>\n<answer>391 {nonce}</answer>")

    respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": echo_nonce}))
    assert moa.main(["-q", "What is 17 * 23?", "--json"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["final_answer"] == "391" and all(a["answer"] == "391" for a in printed["answers"])


@respx.mock
@pytest.mark.parametrize("phase, cut", [
    ("generate", "<reasoning>12 * 3 = 36</reasoning>\n<answer>12 * 3 is indeed"),
    ("rebuttal", "<rebuttal>I checked.</rebuttal>\n<answer>The answer is"),
    ("judge", "<analysis>A is right.</analysis>\n<answer>The final answer is 3"),
    ("rebuttal", "I checked the critique again.\nThe answer is 2+3 is indeed 2+3. It is a valid answer, and it is"),
    ("judge", "Candidate A multiplies correctly.\nThe answer is 3"),  # "3" of "36": a sentence cut is no vote
], ids=["solver", "rebuttal", "judge", "rebuttal-sentence", "judge-sentence"])
def test_a_cut_off_answer_is_never_an_answer(monkeypatch, capsys, phase: str, cut: str) -> None:
    """finish_reason length with the last <answer> left open: half an answer, so the call is asked again, and the
    whole answer of the next attempt counts."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")
    monkeypatch.setenv("NUM_WORKERS", "1")
    monkeypatch.setenv("MIN_VALID_ANSWERS", "1")
    monkeypatch.setenv("NUM_JUDGES", "1")
    model = FakeModel(answer="36")
    model.overrides[phase] = lambda r, n: completion(cut, finish_reason="length") if n == 0 else model.default(phase)
    route = respx.post(URL).mock(side_effect=model)
    assert moa.main(["-q", "What is 12 * 3?", "--json"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["final_answer"] == "36" and len(route.calls) == 5  # 4 calls, one of them asked twice


@pytest.mark.parametrize("answer, number", [
    ("2 + 3 = 5", "5"), ("17 * 23 = 340 + 51 = 391.", "391"), ("12 * 3 = 36 rolls", "36"), ("x = 3, y = 4", None),
    ("391", "391"), ("The answer is 391.", "391"),
], ids=["sum", "chain", "with-unit", "two-unknowns", "bare", "sentence"])
def test_a_worked_line_gives_its_result(answer: str, number: str | None) -> None:
    """"2 + 3 = 5" is 5 (it held two numbers, so it compared as text); "x = 3, y = 4" stays unread."""
    assert as_number(answer) == number


@pytest.mark.parametrize("answers, kind", [
    (["Tokyo", "Tokyo.", "The capital of Japan is Tokyo, a city of millions and the seat of the government of Japan."],
     "short"),
    (["The capital of Japan is Tokyo, a city of millions and the seat of the government of Japan.",
      "Tokyo has been the capital since 1868, when the emperor moved there from Kyoto, long before the war.", "Tokyo"],
     "long")], ids=["one-long-reply", "most-long"])
def test_one_long_reply_does_not_make_the_question_long(answers: list[str], kind: str) -> None:
    """A question is free text ("long", judges pick a label) only when most replies are long, not when one is."""
    assert detect_answer_type("What is the capital of Japan?", answers) == kind


@pytest.mark.parametrize("reply, answer", [
    ("This response has no error and is correct. The answer is 5.", "5."),
    ('Here is another response:\n"The answer is two+3."\n\nSo the answer is two+3.', "two+3."),
    ("Your answer is indeed 5.", "5."),
    ("You're right, the correct calculation is indeed 5 + 3 = 8, but the answer is 5.", None),
    ("The criticism was harsh, and you can't beat anything.\nYour answer:\n<answer>\n2+3 ", None),
    ("<reasoning>\nThe answer is wrong.\n</reasoning>\n\nYour answer:\n<answer>\nYes, 7 is an even number.\n</answer>"
     "\n\nThe reviewer's critique:\n<criterion>\nYour answer is incorrect.\n</criterion>", None),
    ("<question>\nThe capital of the UK is London.\n</question>\n<answer>London</answer>\n\nThe response:\n"
     "<answer>I have nothing to report.</answer>", "I have nothing to report."),
    (f"This time, I'll just answer: \n<answer>{EXAMPLE_ANSWER}</answer>", None),
    ("My answer remains 36. The critique did not change it.", "36."),
    ("I keep my answer: no.", "no."),
    ("The answer is not 2+3 = 4.", None),
], ids=["answer-after-a-sentence", "so-the-answer-is", "your-answer-is-indeed", "answer-mid-sentence",
        "our-answer-block-copied", "our-blocks-copied", "question-block-copied", "our-example-copied",
        "answer-remains", "keep-my-answer", "a-denial"])
def test_a_rebuttal_says_its_answer_in_a_sentence(reply: str, answer: str | None) -> None:
    """A rebuttal without an <answer> tag that says its answer in a sentence is read (87% of SmolLM2's rebuttals had
    no tag); what it copied from our prompt (the question, "Your answer:" and its block, the example) is not its
    answer, and neither is a denial ("The answer is not 4")."""
    parsed = parse_rebuttal(reply)
    assert (parsed.answer.answer if parsed else None) == answer


@pytest.mark.parametrize("reply, confidence", [
    ("FINAL ANSWER: 36 (confidence: 90%)", 90), ("The answer is 36. I am 80% sure.", 80),
    ("FINAL ANSWER: B\nMy confidence is 0.7", 70), ("FINAL ANSWER: B\nI am sure.", None),
    ("FINAL ANSWER: 5\nCONFIDENCE: 85\nI am 40% sure.", 85),
], ids=["after-the-answer", "percent-sure", "confidence-is", "no-number", "the-line-wins"])
def test_a_judges_confidence_said_in_words(reply: str, confidence: int | None) -> None:
    """Without a CONFIDENCE line, a confidence said in a sentence is read (no SmolLM2 judge wrote the line, so every
    vote counted as no confidence); the answer keeps no "(confidence: 90%)" tail."""
    found = parse_judgement(reply)
    assert found.confidence == confidence and "confidence" not in (found.final_answer or "").lower()
