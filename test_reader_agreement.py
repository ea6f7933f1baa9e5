"""Our answer comparison against a person's reading of real replies (issue 23).

bench/real_replies.jsonl holds replies SmolLM2-135M-Instruct wrote (llama.cpp, one call to the plain question or our
solver prompt at temperature 0 and 1, and solver, rebuttal and judge replies from debates), each labelled by hand:
`reader` says whether a person reading the reply would say it gives the expected answer (babble, a hedge between
answers or a cut-off reply is false). Our comparison is the path the batch `correct` field and the eval take: the
reply read as a solver answer (parsing.parse_answer), then moa_pipeline.answers_match against the expected answer.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import moa_pipeline as moa
from parsing import as_number, as_yes_no, detect_answer_type, parse_answer

REPLIES = Path(__file__).parent / "bench" / "real_replies.jsonl"
AGREEMENT = 0.95  # the target: ours agrees with the reader on at least 95% of the replies


def labelled_rows() -> list[dict[str, object]]:
    return [json.loads(line) for line in REPLIES.read_text(encoding="utf-8").splitlines() if line.strip()]


def ours(question: str, reply: str, expected: str) -> bool:
    """Whether our comparison counts the reply as giving the expected answer."""
    return moa.answers_match(question, parse_answer(reply).answer, expected)


def test_the_labelled_set_is_real_and_large_enough() -> None:
    """At least 150 labelled replies, each with its question, expected answer, reply, reading and a note."""
    rows = labelled_rows()
    assert len(rows) >= 150
    assert all(set(row) == {"question", "expected", "reply", "reader", "note"} for row in rows)
    assert all(isinstance(row["reader"], bool) and row["reply"] for row in rows)
    assert {True, False} <= {row["reader"] for row in rows}


def test_ours_agrees_with_the_reader() -> None:
    """Our comparison agrees with the person's reading on at least 95% of the real replies; a failure lists each
    reply where they differ."""
    rows = labelled_rows()
    disagreements = [f"reader={row['reader']} ours={not row['reader']} q={row['question']!r} reply={row['reply']!r:.200}"
                     for row in rows
                     if ours(str(row["question"]), str(row["reply"]), str(row["expected"])) != row["reader"]]
    agreement = 1 - len(disagreements) / len(rows)
    print(f"agreement {agreement:.1%} on {len(rows)} replies", *disagreements, sep="\n")
    assert agreement >= AGREEMENT, "\n".join(disagreements)


JAPAN = "What is the capital of Japan?"
PLANETS = "Which planet is closest to the sun?\nA) Venus\nB) Mercury\nC) Mars\nD) Earth"
SKY = "What color is the sky on a clear day?\nA) Green\nB) Blue\nC) Red"
SEVEN = "Is 7 an even number? Answer yes or no."


@pytest.mark.parametrize("question, reply, expected, match", [
    (JAPAN, "The capital of Japan is Tokyo.", "Tokyo", True),
    ("What is the capital of Germany?", "The capital of Germany is Berlin. Berlin is located in East Germany "
     "(Germonia), a state created by Germany's Adolf Hitler's occupation of the former German Democratic Republic "
     "(GDR) in 1949.", "Berlin", True),
    ("What is the capital of Germany?", "I'll provide you with the answer. In German, the capital of Germany is "
     "Berlin.", "Berlin", True),
    ("What is the capital of Italy?", "In Italy, the capital city is Rome, but the Italian capital is actually Rome, "
     "Italy.", "Rome", True),
    ("What is the capital of Spain?", "El Salvador, officially known as The Republic of El Salvador.", "Madrid",
     False),
    ("What is the capital of France?", "<response>Paris</response>", "Paris", True),
    ("What is 2+3?", "2 + 3 = 5", "5", True),
    ("What is 15 + 27?", "15 + 27 = 32.", "42", False),
    ("What is 12*3?", "12*3 = 36\n\nThis is a multiplicative identity, where multiplication is defined as division "
     "by the multiplicative identity 12.", "36", True),
    ("What is 100 divided by 4?", "100 divided by 4 equals 25.", "25", True),
    ("What is 15 + 27?", "To solve this problem, I will break it down step by step, I will consider the whole range "
     "of possible answers that can be in a number, and the result of 15 + 27 will be 42.", "42", True),
    ("How many legs does a spider have?", "A spider has 8 legs.", "8", True),
    ("How many centimeters are in one meter?", "One meter is equal to 100 centimeters.", "100", True),
    ("How many grams are in a kilogram?", "A kilogram is a unit of mass that is equal to approximately 1000 grams. "
     "So, to convert kilograms to grams, you multiply the number of kilograms by the density of 1 kilogram "
     "(approximately 2.875 grams).", "1000", True),
    ("How many days are in a week?", "The number of days in a week is based on the 7 days of a week.", "7", True),
    ("How many centimeters are in one meter?", "To find out how many centimeters there are in one meter, you need to "
     "multiply the conversion factor by 2.17 (where the conversion factor is 1 meter = 100 centimeters). This is "
     "based on the metric system, and one meter is equivalent to 100 centimeters.\n\nIn this case, the conversion "
     "factor is 1 meter = 100 centimeters. So, 1 meter = 100 centimeters. Multiplying this by 2.17 gives you 2.17. "
     "Therefore, one meter is approximately 2.17 centimeters.", "100", False),
    ("How many legs does a spider have?", "The answer to this classic question is: 8.\n\nSpider spiders have eight "
     "legs, which is a characteristic of their biology and anatomy.", "8", True),
    (SEVEN, "No, 7 is not an even number.", "no", True),
    (SEVEN, "Yes, 7 is an even number.", "no", False),
    (SEVEN, "The answer to this question is no, 7 is not an even number.", "no", True),
    (SEVEN, "7 is indeed an even number.", "no", False),
    ("Is 10 an even number? Answer yes or no.", "10 is indeed an even number.", "yes", True),
    ("Is 10 an even number? Answer yes or no.", "10 is indeed a special case of the number 11. The number 10 can be "
     "represented as 11 when considering the properties of numbers.", "yes", False),
    ("Is 9 a prime number? Answer yes or no.", "9 is not a prime number.", "no", True),
    ("Is the sun a star? Answer yes or no.", "The answer is yes.\n\nThe answer is no.", "yes", False),
    (PLANETS, "The closest planet to the sun is Mercury.", "B", True),
    (PLANETS, "A: The planet closest to the sun is Mars.", "B", False),
    (SKY, "The sky on a clear day is indeed a vibrant and breathtakingly blue color.", "B", True),
    ("Which is the largest ocean?\nA) Atlantic\nB) Indian\nC) Pacific\nD) Arctic",
     "A) Atlantic\n\nThe answer is A) Atlantic.", "C", False),
], ids=["capital-sentence", "capital-then-babble", "capital-second-sentence", "capital-said-twice",
        "wrong-capital", "own-wrapping-tag", "worked-sum", "worked-wrong-sum", "worked-line-then-babble",
        "equals-in-words", "will-be", "legs-sentence", "equal-to-in-words", "approximately-then-babble",
        "one-number-in-a-longer-sentence", "hedge-100-then-2.17", "answer-to-this-question-is", "no-with-reason",
        "yes-to-an-odd-number", "answer-to-this-question-is-no", "restated-yes-wrong", "restated-yes",
        "restates-something-else", "restated-no", "hedge-yes-then-no", "option-by-name", "option-by-wrong-name",
        "option-colour-in-prose", "wrong-letter-said-twice"])
def test_a_real_reply_compares_as_a_reader_reads_it(question: str, reply: str, expected: str, match: bool) -> None:
    """Each pattern our comparison misread on SmolLM2's replies, read now as a person reads it (each reply is in
    bench/real_replies.jsonl)."""
    assert ours(question, reply, expected) is match


@pytest.mark.parametrize("reply, number", [
    ("A spider has eight legs.", "8"), ("12 * 3 is 36.", "36"), ("2+3 is the sum of 2 and 3, which is 5.", "5"),
    ("The answer is 36.", "36"), ("one hundred centimeters", "100"), ("x = 3, y = 4", None),
    ("A spider has six legs. A spider has 8 legs.", None),
], ids=["in-words", "closing-is", "which-is", "answer-is", "one-hundred", "two-equations", "two-sentences-differ"])
def test_a_number_said_in_a_sentence(reply: str, number: str | None) -> None:
    """The number a sentence gives: spelled, closing a sentence, after "The answer is"; none when two disagree."""
    assert as_number(reply) == number


@pytest.mark.parametrize("reply, said", [
    ("9 is not a prime number.", "no"), ("10 is indeed an even number.", "yes"), ("No.", "no"),
    ("The sun, a celestial body, is indeed a star.", "yes"), ("10 is indeed a special case of the number 11.", None),
], ids=["restated-no", "restated-yes", "plain-no", "restated-with-aside", "other-claim"])
def test_a_yes_no_said_by_restating(reply: str, said: str | None) -> None:
    """A reply to a yes/no question that restates it answers it: with a negation no, else yes."""
    question = {"9": "Is 9 a prime number?", "10": "Is 10 an even number?"}.get(reply.split()[0], "Is the sun a star?")
    assert as_yes_no(reply, question) == said


@pytest.mark.parametrize("question, replies, kind", [
    (PLANETS, ["Mercury", "B"], "choice"), (SEVEN, ["7 is not an even number.", "no"], "yes_no"),
    ("How many legs does a spider have?", ["A spider has eight legs.", "8"], "number"),
], ids=["option-text", "restated", "spelled"])
def test_sentence_answers_type_the_question(question: str, replies: list[str], kind: str) -> None:
    """An answer said in a sentence counts toward its question's type, as it does toward the match."""
    assert detect_answer_type(question, replies) == kind
