"""Ranked judges (issue 22): reading a judge's RANKING line, and the Borda count with its bootstrap interval."""
from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import moa_pipeline as moa
from parsing import parse_ranking

ABC = ("A", "B", "C")
ABCD = ("A", "B", "C", "D")
TWENTY_EIGHT = tuple(moa.candidate_label(i) for i in range(28))  # A … Z, AA, AB

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
    pytest.param('B is the most complete.\n```json\n{"ranking": ["B", "A", "C"], "confidence": 75}\n```', ABC,
                 ("B", "A", "C"), True, "ranking-line", id="json-object-in-fence"),
    pytest.param('{\n  "analysis": "C is wrong",\n  "ranking": ["C", "B", "A"],\n  "confidence": 60\n}', ABC,
                 ("C", "B", "A"), True, "ranking-line", id="json-pretty-printed"),
    pytest.param("RANKING: [B] > [A] > [C]", ABC, ("B", "A", "C"), True, "ranking-line", id="bracketed-labels"),
    pytest.param("分析：B 最完整。\nRANKING: B＞A＞C\nCONFIDENCE: 80", ABC, ("B", "A", "C"), True, "ranking-line",
                 id="full-width-angles"),
    pytest.param("RANKING：C、A、B\nCONFIDENCE：70", ABC, ("C", "A", "B"), True, "ranking-line",
                 id="ideographic-commas"),
    pytest.param("RANKING: A，C，B", ABC, ("A", "C", "B"), True, "ranking-line", id="full-width-commas"),
    pytest.param("Final ranking: B first, then A, then C", ABC, ("B", "A", "C"), True, "ranking-line",
                 id="first-then-then"),
    pytest.param("RANKING: first C, second A, third B", ABC, ("C", "A", "B"), True, "ranking-line",
                 id="ordinal-words-before"),
    pytest.param("RANKING: 1st B, 2nd C, 3rd A", ABC, ("B", "C", "A"), True, "ranking-line", id="ordinal-numbers"),
    pytest.param("RANKING: B, A and C", ABC, ("B", "A", "C"), True, "ranking-line", id="and-before-the-last"),
    pytest.param("RANKING: C, B & A", ABC, ("C", "B", "A"), True, "ranking-line", id="ampersand-before-the-last"),
    pytest.param("RANKING: B and A are tied, C last", ABC, None, None, None, id="tie-in-prose-is-not-read"),
    pytest.param("RANKING: B's answer > A > C", ABC, ("B", "A", "C"), True, "ranking-line", id="possessive"),
    pytest.param("RANKING: Candidate C’s response > Candidate A > B", ABC, ("C", "A", "B"), True, "ranking-line",
                 id="candidate-possessive-curly"),
    # the entries
    pytest.param("RANKING: (B) > [A] > **C**", ABC, ("B", "A", "C"), True, "ranking-line", id="bracketed-entries"),
    pytest.param("RANKING: Candidate B > Candidate A > Candidate C.", ABC, ("B", "A", "C"), True, "ranking-line",
                 id="candidate-word"),
    pytest.param("ranking: candidate b > candidate c > candidate a\nconfidence: 80", ABC, ("B", "C", "A"), True,
                 "ranking-line", id="lower-case"),
    pytest.param("RANKING: b > a > c", ABC, ("B", "A", "C"), True, "ranking-line", id="lower-case-letters"),
    pytest.param("RANKING: B (most complete) > A (misses the empty list) > C: wrong", ABC, ("B", "A", "C"), True,
                 "ranking-line", id="comments-after-labels"),
    pytest.param("RANKING: B is best, then A, then C comes last", ABC, ("B", "A", "C"), True, "ranking-line",
                 id="prose-entries"),
    pytest.param("RANKING: [B, A, C]", ABC, ("B", "A", "C"), True, "ranking-line", id="bracketed-list"),
    pytest.param("RANKING: 1. B 2. A 3. C", ABC, ("B", "A", "C"), True, "ranking-line", id="inline-enumeration"),
    pytest.param("RANKING: 1) C, 2) B, 3) A", ABC, ("C", "B", "A"), True, "ranking-line",
                 id="inline-enumeration-commas"),
    pytest.param("RANKING: A good answer would be B", ABC, None, None, None, id="article-a-is-no-label"),
    pytest.param("RANKING: B > A > C\r\nCONFIDENCE: 80\r\n", ABC, ("B", "A", "C"), True, "ranking-line",
                 id="crlf"),
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
    pytest.param("RANKING:\n1. B\n   Handles both empty lists.\n2. A\n   Correct, but quadratic.\n3. C\n\nCONFIDENCE: 75",
                 ABC, ("B", "A", "C"), True, "ranking-line", id="list-with-indented-notes"),
    pytest.param("RANKING:\n1. B\nThat is all.\n2. A", ABC, ("B",), False, "ranking-line",
                 id="list-ends-at-prose"),
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
    parsed = parse_ranking("<analysis>B covers both edge cases.</analysis>\nRANKING: B > A\nCONFIDENCE: 0.9", ("A", "B"))
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
    pytest.param(("RANKING: " + "(B " * 1300 + "\n") * (MEGABYTE // 3910), ("B",), id="lines-just-under-the-cap"),
    pytest.param("RANKING:\n1. C\n" + "   (b " * (MEGABYTE // 6), ("C",), id="endless-indented-note"),
    pytest.param("## RANKING -\n" + ("- Candidate " * 330 + "\n") * (MEGABYTE // 3960), None,
                 id="list-of-long-junk-items"),
]


@pytest.mark.parametrize("text, order", HOSTILE_RANKINGS)
def test_a_megabyte_of_hostile_ranking_parses_fast(text: str, order: tuple[str, ...] | None) -> None:
    """A 1 MB reply built to trip the regexes parses in well under a second, without raising."""
    started = time.process_time()
    parsed = parse_ranking(text, ABC)
    assert time.process_time() - started < 1.0
    assert (parsed.order if parsed else None) == order


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


# --- the Borda count ----------------------------------------------------------------------------

THREE = ("solver-1", "solver-2", "solver-3")
FOUR = ("solver-1", "solver-2", "solver-3", "solver-4")
LABELS = {"solver-1": "A", "solver-2": "B", "solver-3": "C", "solver-4": "D"}


@pytest.mark.parametrize("order, candidates, points", [
    pytest.param(("solver-2", "solver-1", "solver-3"), THREE, {"solver-1": 1, "solver-2": 2, "solver-3": 0},
                 id="full"),
    pytest.param(("solver-2",), THREE, {"solver-1": 0.5, "solver-2": 2, "solver-3": 0.5}, id="favourite-only"),
    pytest.param(("solver-3", "solver-1"), FOUR, {"solver-1": 2, "solver-2": 0.5, "solver-3": 3, "solver-4": 0.5},
                 id="two-of-four"),
    pytest.param(("solver-2", "solver-2", "solver-1"), THREE, {"solver-1": 1, "solver-2": 2, "solver-3": 0},
                 id="duplicate-counts-first-place"),
    pytest.param(("judge-1", "solver-3", "solver-9"), THREE, {"solver-1": 0.5, "solver-2": 0.5, "solver-3": 2},
                 id="unknown-entries-ignored"),
    pytest.param(("solver-9", "judge-2"), THREE, {}, id="names-no-candidate"),
    pytest.param((), THREE, {}, id="empty"),
    pytest.param(("solver-1",), ("solver-1",), {"solver-1": 0}, id="single-candidate"),
])
def test_ballot_points(order: tuple[str, ...], candidates: tuple[str, ...], points: dict[str, float]) -> None:
    """The i-th named candidate gets n-1-i points, the rest share what is left, and every ballot gives n(n-1)/2."""
    given = moa.ballot_points(order, candidates)
    assert given == points
    assert not given or sum(given.values()) == len(candidates) * (len(candidates) - 1) / 2


def ballots(*orders: tuple[tuple[str, ...], int | None]) -> list[moa.Ballot]:
    return [moa.Ballot(f"judge-{i + 1}", tuple(f"solver-{n}" for n in order), confidence)
            for i, (order, confidence) in enumerate(orders)]


# Four ballots that tie all three at 4 points: solver-1 is first twice, solver-2 and solver-3 once each.
def three_way_tie(confidence_2: int | None, confidence_3: int | None, confidence_1: int = 80) -> list[moa.Ballot]:
    return ballots(((1, 2, 3), confidence_1), ((1, 3, 2), confidence_1), ((2, 3, 1), confidence_2),
                   ((3, 2, 1), confidence_3))


@pytest.mark.parametrize("given, candidates, standings", [
    pytest.param(ballots(((2, 1, 3), 90), ((2, 3, 1), 80), ((1, 2, 3), 70)), THREE,
                 [("solver-2", 0.833, 2), ("solver-1", 0.5, 1), ("solver-3", 0.167, 0)], id="plain"),
    pytest.param(ballots(((2, 1, 3), 90), ((2, 1, 3), 90), ((1, 3, 2), 50), ((3, 1, 2), 50)), THREE,
                 [("solver-1", 0.625, 1), ("solver-2", 0.5, 2), ("solver-3", 0.375, 1)],
                 id="borda-beats-first-places"),
    pytest.param(three_way_tie(90, 90, confidence_1=10), THREE,
                 [("solver-1", 0.5, 2), ("solver-2", 0.5, 1), ("solver-3", 0.5, 1)], id="tie-more-first-places"),
    pytest.param(three_way_tie(40, 90), THREE,
                 [("solver-1", 0.5, 2), ("solver-3", 0.5, 1), ("solver-2", 0.5, 1)], id="tie-then-confidence"),
    pytest.param(three_way_tie(None, 10), THREE,
                 [("solver-1", 0.5, 2), ("solver-3", 0.5, 1), ("solver-2", 0.5, 1)], id="tie-none-confidence-is-0"),
    pytest.param(three_way_tie(60, 60), ("solver-3", "solver-2", "solver-1"),
                 [("solver-1", 0.5, 2), ("solver-3", 0.5, 1), ("solver-2", 0.5, 1)], id="tie-then-slot-order"),
    pytest.param(ballots(((1, 2, 3), 80), ((2,), 60)), THREE,
                 [("solver-2", 0.75, 1), ("solver-1", 0.625, 1), ("solver-3", 0.125, 0)], id="partial-ballot"),
    pytest.param(ballots(((9, 8), 99), ((3, 1, 2), 50), ((), 99)), THREE,
                 [("solver-3", 1.0, 1), ("solver-1", 0.5, 0), ("solver-2", 0.0, 0)], id="invalid-ballots-ignored"),
    pytest.param(ballots(((2, 2, 9, 1), 70)), THREE,
                 [("solver-2", 1.0, 1), ("solver-1", 0.5, 0), ("solver-3", 0.0, 0)], id="duplicate-and-unknown"),
    pytest.param(ballots(((1,), None)), ("solver-1",), [("solver-1", 1.0, 1)], id="single-candidate"),
    pytest.param(ballots(((9, 8), 99), ((7,), 80)), THREE, [], id="all-invalid"),
    pytest.param([], THREE, [], id="no-ballots"),
])
def test_rank_candidates(given: list[moa.Ballot], candidates: tuple[str, ...],
                         standings: list[tuple[str, float, int]]) -> None:
    """Borda score orders the candidates; ties go to more first places, then confidence, then slot order."""
    ranked = moa.rank_candidates(given, candidates, LABELS, random.Random(moa.BOOTSTRAP_SEED))
    assert [(s.agent, s.score, s.first_places) for s in ranked] == standings
    assert all(s.label == LABELS[s.agent] for s in ranked)


def test_a_candidate_without_a_label_gets_an_empty_one() -> None:
    """labels maps agents to the labels the transcript shows; an agent missing from it is labelled ""."""
    ranked = moa.rank_candidates(ballots(((2, 1), 80)), ("solver-1", "solver-2"), {"solver-2": "B"}, random.Random(1))
    assert [(s.agent, s.label) for s in ranked] == [("solver-2", "B"), ("solver-1", "")]


@pytest.mark.parametrize("firsts, winners, agreeing", [
    pytest.param([], {"solver-1"}, 0, id="no-ballot"),
    pytest.param([1, 1, 2], {"solver-1"}, 2, id="two-of-three"),
    pytest.param([1, 2, 3], {"solver-1"}, 1, id="three-way-split"),
    pytest.param([2, 3, 2, 3], {"solver-2", "solver-3"}, 4, id="twins-count-as-one"),
    pytest.param([2, 2], {"solver-1"}, 0, id="borda-winner-nobody-put-first"),
    pytest.param([None, 1], {"solver-1"}, 1, id="an-empty-ballot-agrees-with-nothing"),
])
def test_ranking_agreement(firsts: list[int | None], winners: set[str], agreeing: int) -> None:
    """The judges' agreement on a full answer counts the ballots that put the winner (or a candidate with the very
    same response) first; not its Borda score (a three-way split scores the winner 0.67)."""
    ballots = [moa.Ballot(f"judge-{i}", () if first is None else (f"solver-{first}",), None)
               for i, first in enumerate(firsts)]
    assert moa.ranking_agreement(ballots, winners) == agreeing


# --- the bootstrap interval -----------------------------------------------------------------------

# Five judges over three candidates; each judge's own score (points / 2) per candidate, in slot order:
#   judge-1 1, .5, 0   judge-2 1, 0, .5   judge-3 .5, 1, 0   judge-4 (solver-1 only) 1, .25, .25   judge-5 0, .5, 1
FIVE = ballots(((1, 2, 3), 80), ((1, 3, 2), 70), ((2, 1, 3), 90), ((1,), 60), ((3, 2, 1), None))


def test_seeded_bootstrap_interval() -> None:
    """random.Random(22) over five fixed ballots reports these intervals, each inside its judges' own range."""
    ranked = moa.rank_candidates(FIVE, THREE, LABELS, random.Random(22))
    assert [(s.agent, s.score, s.low, s.high) for s in ranked] == [
        ("solver-1", 0.7, 0.3, 1.0), ("solver-2", 0.45, 0.2, 0.75), ("solver-3", 0.35, 0.05, 0.75)]
    per_judge = [moa.ballot_points(b.order, THREE) for b in FIVE]
    for standing in ranked:
        own = [points[standing.agent] / 2 for points in per_judge]
        assert min(own) <= standing.low <= standing.score <= standing.high <= max(own)


def test_same_seed_same_interval() -> None:
    """The pipeline's fixed seed makes the same ballots always report the same interval."""
    first = moa.rank_candidates(FIVE, THREE, LABELS, random.Random(moa.BOOTSTRAP_SEED))
    assert moa.rank_candidates(FIVE, THREE, LABELS, random.Random(moa.BOOTSTRAP_SEED)) == first


def test_one_ballot_gives_a_degenerate_interval() -> None:
    """With one judge there is nothing to resample: low == high == score."""
    ranked = moa.rank_candidates(FIVE[:1], THREE, LABELS, random.Random(3))
    assert [(s.low, s.score, s.high) for s in ranked] == [(1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0)]


def test_unanimous_ballots_give_the_winner_one() -> None:
    """Every judge ranks alike: the winner scores 1.0 in [1.0, 1.0], and no interval has width."""
    ranked = moa.rank_candidates(ballots(*[((3, 1, 2), 50)] * 7), THREE, LABELS, random.Random(5))
    assert (ranked[0].agent, ranked[0].score, ranked[0].low, ranked[0].high) == ("solver-3", 1.0, 1.0, 1.0)
    assert all(s.low == s.score == s.high for s in ranked)


def test_percentile_definition() -> None:
    """The 95% interval of R values is sorted[int(0.025 R)] to sorted[ceil(0.975 R) - 1]: 25 left out each side."""
    assert moa._percentile_interval([float(v) for v in reversed(range(1000))]) == (25.0, 974.0)
    assert moa._percentile_interval([0.4]) == (0.4, 0.4)


def test_full_size_ranking_is_fast() -> None:
    """25 judges ranking 64 candidates, 1000 resamples: well under a second."""
    rng = random.Random(7)
    candidates = tuple(f"solver-{i}" for i in range(64))
    many = [moa.Ballot(f"judge-{j}", tuple(rng.sample(candidates, 64)), 50) for j in range(moa.MAX_JUDGES)]
    started = time.process_time()
    ranked = moa.rank_candidates(many, candidates, {}, random.Random(moa.BOOTSTRAP_SEED))
    assert time.process_time() - started < 1.0
    assert len(ranked) == 64 and all(s.low <= s.score <= s.high for s in ranked)
