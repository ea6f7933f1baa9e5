"""Ranked judges (issue 22): reading a judge's RANKING line, and the Borda count with its bootstrap interval."""
from __future__ import annotations

import time

import pytest

from moa_pipeline import candidate_label
from parsing import parse_ranking

ABC = ("A", "B", "C")
ABCD = ("A", "B", "C", "D")
TWENTY_EIGHT = tuple(candidate_label(i) for i in range(28))  # A … Z, AA, AB

# --- parse_ranking: what a judge's reply ranks ------------------------------------------------------

RANKING_CASES = [
    # the line, as asked and as decorated
    pytest.param("<analysis>B handles empty input; A misses it; C is wrong.</analysis>\nRANKING: B > A > C\n"
                 "CONFIDENCE: 85", ABC, ("B", "A", "C"), True, "ranking-line", id="as-asked"),
    pytest.param("A is verbose, C is terse.\n**Ranking:** C > A > B\n**Confidence:** 70%", ABC, ("C", "A", "B"),
                 True, "ranking-line", id="bold-label"),
    pytest.param("**RANKING: C > B > A**\n**CONFIDENCE: 60**", ABC, ("C", "B", "A"), True, "ranking-line",
                 id="bold-around-line"),
    pytest.param("## RANKING - A > C > B\nCONFIDENCE: 0.9", ABC, ("A", "C", "B"), True, "ranking-line",
                 id="header-dash"),
    pytest.param("All three compile.\nFinal ranking: B, A, C.\nConfidence: 75", ABC, ("B", "A", "C"), True,
                 "ranking-line", id="final-ranking-commas"),
    pytest.param("Ranking (best first): C > A > B", ABC, ("C", "A", "B"), True, "ranking-line",
                 id="parenthesised-note"),
    pytest.param("RANKING: B >> A >> C", ABC, ("B", "A", "C"), True, "ranking-line", id="double-angle"),
    pytest.param("RANKING: B; then A; then C", ABC, ("B", "A", "C"), True, "ranking-line", id="semicolons-then"),
    pytest.param("RANKING: B -> A -> C", ABC, ("B", "A", "C"), True, "ranking-line", id="ascii-arrows"),
    pytest.param("RANKING: B → C → A", ABC, ("B", "C", "A"), True, "ranking-line", id="unicode-arrows"),
    pytest.param("A and B are equally good.\nRANKING: A = B > C", ABC, ("A", "B", "C"), True, "ranking-line",
                 id="tie-in-written-order"),
    # the entries
    pytest.param("RANKING: (B) > [A] > **C**", ABC, ("B", "A", "C"), True, "ranking-line", id="bracketed-entries"),
    pytest.param("RANKING: Candidate B > Candidate A > Candidate C.", ABC, ("B", "A", "C"), True, "ranking-line",
                 id="candidate-word"),
    pytest.param("ranking: candidate b > candidate c > candidate a\nconfidence: 80", ABC, ("B", "C", "A"), True,
                 "ranking-line", id="lower-case"),
    pytest.param("RANKING: b > a > c", ABC, ("B", "A", "C"), True, "ranking-line", id="lower-case-letters"),
    pytest.param("RANKING: B (most complete) > A (misses the empty list) > C: wrong", ABC, ("B", "A", "C"), True,
                 "ranking-line", id="comments-after-labels"),
    # a list below the label
    pytest.param("## RANKING -\n1. B\n2. A\n3. C\n\nCONFIDENCE: 70", ABC, ("B", "A", "C"), True, "ranking-line",
                 id="numbered-list"),
    pytest.param("RANKING:\n\n1. **B** - handles both empty lists\n\n2. **A** - correct but quadratic\n\n"
                 "3. **C** - drops the tail\n\nCONFIDENCE: 80", ABC, ("B", "A", "C"), True, "ranking-line",
                 id="numbered-list-with-comments"),
    pytest.param("### Ranking\n- Candidate C\n- Candidate A\n- Candidate B\nThat is my view.", ABC,
                 ("C", "A", "B"), True, "ranking-line", id="bulleted-list-under-header"),
    pytest.param("RANKING: best first\n1) A\n2) C\n3) B", ABC, ("A", "C", "B"), True, "ranking-line",
                 id="caption-then-list"),
    # partial, repeated and unknown entries
    pytest.param("RANKING: B", ABC, ("B",), False, "ranking-line", id="winner-only"),
    pytest.param("RANKING: B > A > B > C", ABC, ("B", "A", "C"), False, "ranking-line", id="duplicate-first-wins"),
    pytest.param("RANKING: B > E > A > C", ABC, ("B", "A", "C"), False, "ranking-line", id="unknown-label"),
    pytest.param("RANKING: B > none > A", ABC, ("B", "A"), False, "ranking-line", id="word-entry-and-partial"),
    pytest.param("RANKING: D > C > B > A", ABC, ("C", "B", "A"), False, "ranking-line", id="label-of-another-judge"),
    # two-letter labels
    pytest.param("RANKING: AB > A > AA > B", TWENTY_EIGHT, ("AB", "A", "AA", "B"), False, "ranking-line",
                 id="two-letter-labels"),
    pytest.param("RANKING: AB > C", ABC, ("C",), False, "ranking-line", id="ab-is-not-a-then-b"),
    pytest.param("RANKING: C > D > A > B", ABCD, ("C", "D", "A", "B"), True, "ranking-line", id="four-complete"),
    # which line
    pytest.param("I will end with a line like\nRANKING: B > A > C\nas asked.\n\nA is best on reflection.\n"
                 "RANKING: A > C > B\nCONFIDENCE: 65", ABC, ("A", "C", "B"), True, "ranking-line",
                 id="last-line-wins-over-echoed-example"),
    pytest.param("<think>RANKING: A > B > C, or maybe not</think>\nRANKING: C > B > A", ABC, ("C", "B", "A"), True,
                 "ranking-line", id="think-block-ignored"),
    # the next tier, and nothing
    pytest.param("RANKING: B > A > C\nOn second thought:\nRANKING: X > Y\nFINAL ANSWER: C", ABC, ("C",), False,
                 "final-answer-line", id="unknown-last-line-falls-through"),
    pytest.param("Candidate B is the best.\nFINAL ANSWER: B\nCONFIDENCE: 60", ABC, ("B",), False,
                 "final-answer-line", id="final-answer-only"),
    pytest.param("**Final Answer:** Candidate A.\nConfidence: 55", ABC, ("A",), False, "final-answer-line",
                 id="final-answer-candidate-word"),
    pytest.param("FINAL ANSWER: B > C > A", ABC, ("B", "C", "A"), True, "final-answer-line",
                 id="ranking-written-as-final-answer"),
    pytest.param("Ranking-based scoring is unfair here.\nFINAL ANSWER: A", ABC, ("A",), False, "final-answer-line",
                 id="ranking-in-prose-is-no-line"),
    pytest.param("I think B is slightly better, but A is also fine.", ABC, None, None, None, id="prose-only"),
    pytest.param("RANKING: a tie between B and C", ABC, None, None, None, id="sentence-on-the-line"),
    pytest.param("RANKING: B > A\n\nRanking:\n(I cannot decide)", ABC, None, None, None, id="empty-last-line"),
    pytest.param("FINAL ANSWER: 391", ABC, None, None, None, id="final-answer-names-no-label"),
    pytest.param("", ABC, None, None, None, id="empty-reply"),
]


@pytest.mark.parametrize("text, labels, order, complete, tier", RANKING_CASES)
def test_parse_ranking(text: str, labels: tuple[str, ...], order: tuple[str, ...] | None, complete: bool | None,
                       tier: str | None) -> None:
    """A judge's ranking is read from its last RANKING line, a list below it, or its FINAL ANSWER line."""
    parsed = parse_ranking(text, labels)
    found = (parsed.order, parsed.complete, parsed.tier) if parsed else (None, None, None)
    assert found == (order, complete, tier)


def test_ranking_keeps_the_judges_confidence_and_analysis() -> None:
    """CONFIDENCE and the <analysis> tag are read as parse_judgement reads them."""
    parsed = parse_ranking("<analysis>B covers both edge cases.</analysis>\nRANKING: B > A\nCONFIDENCE: 0.9", "AB")
    assert parsed is not None and (parsed.confidence, parsed.analysis) == (90, "B covers both edge cases.")


def test_ranking_without_analysis_tag_keeps_the_whole_reply() -> None:
    """With no <analysis> tag the analysis is the whole reply, and a missing CONFIDENCE is None."""
    parsed = parse_ranking("A is right.\nRANKING: A > B", ["a", "b"])
    assert parsed is not None and (parsed.confidence, parsed.analysis) == (None, "A is right.\nRANKING: A > B")


MEGABYTE = 1_000_000
HOSTILE_RANKINGS = [
    pytest.param("RANKING: " + "(B " * (MEGABYTE // 3), None, id="one-line-of-open-brackets"),
    pytest.param("RANKING: " + "A > " * (MEGABYTE // 4), None, id="one-line-of-entries"),
    pytest.param("**Ranking" * (MEGABYTE // 9), None, id="partial-labels-one-line"),
    pytest.param("Ranking: Candidate Candidate > \n" * (MEGABYTE // 32), None, id="many-ranking-lines"),
    pytest.param("1. " * (MEGABYTE // 3) + "\nRANKING: B > A", ("B", "A"), id="junk-then-a-ranking"),
    pytest.param("RANKING:\n" + "1. B\n" * (MEGABYTE // 5), ("B",), id="endless-list"),
]


@pytest.mark.parametrize("text, order", HOSTILE_RANKINGS)
def test_a_megabyte_of_hostile_ranking_parses_fast(text: str, order: tuple[str, ...] | None) -> None:
    """A 1 MB reply built to trip the regexes parses in well under a second, without raising."""
    started = time.process_time()
    parsed = parse_ranking(text, ABC)
    assert time.process_time() - started < 1.0
    assert (parsed.order if parsed else None) == order


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

RANKING_FRAGMENTS = st.sampled_from([
    "RANKING:", "**Ranking:**", "## RANKING -", "Final ranking:", "FINAL ANSWER:", "CONFIDENCE: 80", "A", "B", "C",
    "AB", "E", "b", "(B)", "[A]", "**C**", "Candidate ", " > ", ">>", ", ", "; ", " then ", " = ", "→", "1. ", "- ",
    "<think>", "</think>", "<analysis>", "\n", "\n\n", " ", "none", "\x00", "\ud800",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(RANKING_FRAGMENTS, st.text(max_size=12)), max_size=50).map("".join))
def test_parse_ranking_never_raises_and_names_only_labels(text: str) -> None:
    """Any mix of ranking lines, labels, lists and junk parses without raising, into known labels, each once."""
    parsed = parse_ranking(text, ABC)
    if parsed is not None:
        assert parsed.order and set(parsed.order) <= set(ABC) and len(set(parsed.order)) == len(parsed.order)
        assert not parsed.complete or sorted(parsed.order) == sorted(ABC)
        assert parsed.tier in ("ranking-line", "final-answer-line")
