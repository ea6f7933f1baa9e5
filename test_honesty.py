"""No confident verdict from garbage (issue 23): each phase's format compliance in the record, doubts that say why a
verdict may not stand, a confidence that follows the evidence, and no more retries (nor a rerun) paid for replies a
model cannot format. Replies are shaped on SmolLM2-135M-Instruct's (no tags, no CONFIDENCE, "The answer is X")."""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
import parsing
from conftest import URL, FakeModel, completion, phases_of, solver_text, test_runtime

pytestmark = pytest.mark.usefixtures("endpoint_env")
DOCS = Path(__file__).resolve().parent / "docs" / "output.md"

SENTENCE_JUDGE = "Candidate A worked it out step by step and so did B.\nThe answer is 391."
CUT_OFF = "<reasoning>Let me add the numbers one by one and"  # finish_reason length: no answer
PROSE_SOLVER = "I added them up.\n\nSo it is 391."  # no tag, no label: read by the last-paragraph guess
NO_ANSWER_REBUTTAL = "<rebuttal>I stand by my answer.</rebuttal>"  # SmolLM2's rebuttals mostly gave no answer


def run_json(capsys, *argv: str) -> dict:
    """One question through main --json; its printed record."""
    assert moa.main(["-q", "What is 17 * 23?", *argv, "--json"], runtime=test_runtime()) == 0
    return json.loads(capsys.readouterr().out)


def fixed(text: str, finish_reason: str = "stop"):
    return lambda request, n: completion(text, finish_reason)


@respx.mock
@pytest.mark.parametrize("overrides, expected", [
    ({}, {"generate": [3, 0, 0], "critique": [3, 0, 0], "rebuttal": [3, 0, 0], "judge": [3, 0, 0]}),
    ({"generate": fixed(PROSE_SOLVER)}, {"generate": [3, 3, 0], "critique": [3, 0, 0], "rebuttal": [3, 0, 0],
                                         "judge": [3, 0, 0]}),
    ({"judge": fixed(SENTENCE_JUDGE)}, {"generate": [3, 0, 0], "critique": [3, 0, 0], "rebuttal": [3, 0, 0],
                                        "judge": [3, 3, 0]}),
    ({"rebuttal": lambda r, n: completion(NO_ANSWER_REBUTTAL if n == 0 else "<answer>391</answer>")},
     {"generate": [3, 0, 0], "critique": [3, 0, 0], "rebuttal": [4, 0, 1], "judge": [3, 0, 0]}),
    ({"rebuttal": lambda r, n: completion("Answer: 391")},
     {"generate": [3, 0, 0], "critique": [3, 0, 0], "rebuttal": [3, 3, 0], "judge": [3, 0, 0]}),
], ids=["the-contract", "solvers-in-prose", "judges-in-a-sentence", "one-rebuttal-retried", "rebuttal-label-only"])
def test_format_counts_each_phases_replies_last_tier_and_failed(overrides, expected, capsys, monkeypatch) -> None:
    """format holds, per phase that had calls, its 2xx replies, those read only by its last tier, and the unusable."""
    monkeypatch.setenv("NUM_WORKERS", "3")
    respx.post(URL).mock(side_effect=FakeModel(overrides=overrides))
    printed = run_json(capsys)
    assert {phase: [c["replies"], c["last_tier"], c["failed"]] for phase, c in printed["format"].items()} == expected


@pytest.mark.parametrize("reply, tier", [
    ("<analysis>Both agree.</analysis>\nFINAL ANSWER: 391\nCONFIDENCE: 90", "final-answer-line"),
    ("I checked both candidates.\n<answer>391</answer>", "xml"),
    ("I checked both candidates.\n<final_answer>391</final_answer>", "xml"),
    (SENTENCE_JUDGE, "sentence"),
], ids=["final-answer-line", "own-answer-tag", "own-final-answer-tag", "answer-sentence"])
def test_a_judges_vote_says_which_reading_found_it(reply: str, tier: str) -> None:
    """A vote's tier names the reading of parse_judgement that found it: the contract's line or which fallback."""
    vote = moa.vote_of(reply, LABELS, "judge-1")
    assert vote is not None and moa.normalize_answer(vote.answer) == "391" and vote.tier == tier


LABELS = {"A": moa.Position(0, "391", "", final_answer="391"), "B": moa.Position(1, "390", "", final_answer="390")}


@pytest.mark.parametrize("phase, read, fallback", [
    (moa.Phase.GENERATE, lambda: parsing.parse_answer("<answer>391</answer>"), False),
    (moa.Phase.GENERATE, lambda: parsing.parse_answer("Answer: 391"), False),
    (moa.Phase.GENERATE, lambda: parsing.parse_answer(PROSE_SOLVER), True),
    (moa.Phase.CRITIQUE, lambda: parsing.parse_block("Looks right to me.", "critique"), True),
    (moa.Phase.REBUTTAL, lambda: parsing.parse_rebuttal("<answer>391</answer>"), False),
    (moa.Phase.REBUTTAL, lambda: parsing.parse_rebuttal("I stand by it.\nAnswer: 391"), True),
    (moa.Phase.JUDGE, lambda: moa.vote_of(SENTENCE_JUDGE, LABELS, "judge-1"), True),
    (moa.Phase.JUDGE, lambda: moa.ballot_of("RANKING: B > A\nCONFIDENCE: 80", LABELS, "judge-1"), False),
    (moa.Phase.JUDGE, lambda: moa.ballot_of("FINAL ANSWER: B", LABELS, "judge-1"), True),
    (moa.Phase.SYNTHESIS, lambda: parsing.parse_synthesis("The response."), False),
], ids=["solver-xml", "solver-label", "solver-paragraph", "critique-whole-reply", "rebuttal-xml", "rebuttal-label",
        "judge-sentence", "ranking-line", "ranking-winner-only", "synthesis"])
def test_each_phase_has_its_last_tier(phase, read, fallback) -> None:
    """A reply counts as read by its phase's last tier only when it missed the format that phase asked for."""
    assert moa.read_by_fallback(phase, read()) is fallback


@pytest.mark.parametrize("votes, asked, confidence, stated", [
    ([moa.Vote("391", None)] * 3, 3, 100, False),
    ([moa.Vote("391", None), moa.Vote("391", None), moa.Vote("390", None)], 3, 67, False),
    ([moa.Vote("391", None)], 3, 33, False),
    ([moa.Vote("391", 80), moa.Vote("391", None)], 3, 80, True),
    ([moa.Vote("391", None), moa.Vote("390", 90), moa.Vote("391", None)], 3, 67, False),
], ids=["three-silent-agree", "two-of-three", "one-answered-of-three", "one-stated", "stated-by-the-loser-only"])
def test_a_vote_without_confidence_counts_as_the_judges_agreement(votes, asked, confidence, stated) -> None:
    """No CONFIDENCE on the winning side: the confidence is the winners' share of the judges asked, not 0 nor 100."""
    verdict = moa.tally_votes(votes, asked=asked)
    assert verdict is not None and (verdict.confidence, verdict.confidence_stated) == (confidence, stated)


@pytest.mark.parametrize("answers, confidence", [
    (["391"] * 5, moa.UNCHECKED_CONFIDENCE), (["391", "391", "390", "392", "393"], 40),
], ids=["five-alike-capped", "two-of-five"])
def test_the_solvers_fallback_is_never_confident(answers, confidence) -> None:
    """When no judge checked it, the solvers' majority is at most UNCHECKED_CONFIDENCE, however many agree."""
    positions = [moa.Position(i, a, "", final_answer=a) for i, a in enumerate(answers)]
    verdict = moa.solver_verdict(positions)
    assert verdict is not None and verdict.confidence == confidence


@pytest.mark.parametrize("source, agreeing, stated, finals, doubts", [
    ("judges", 3, True, ["391", "391", "390"], []),
    ("solvers", 2, True, ["391", "391", "390"], ["no_judge_verdict"]),
    ("judges", 1, True, ["391", "391", "391"], ["judges_split"]),
    ("judges", 3, False, ["391", "391", "391"], ["judges_no_confidence"]),
    ("judges", 2, True, ["391", "390", "392", "393"], ["answers_disagree"]),
    ("judges", 2, True, ["391", "391", "390", "392"], ["answers_disagree"]),
    ("ranking", 2, True, ["a", "b", "c"], []),
], ids=["stands", "solvers-fallback", "judges-split", "no-confidence", "solvers-scattered", "half-is-no-majority",
        "full-answers-never-key-alike"])
def test_the_vote_says_what_casts_doubt_on_it(source, agreeing, stated, finals, doubts) -> None:
    """verdict_doubts names the vote's own weaknesses by their stable codes."""
    kind = "long" if source == "ranking" else "number"
    verdict = moa.Verdict("391", 90, agreeing, 3, source, {"391": agreeing}, kind, confidence_stated=stated)
    positions = [moa.Position(i, a, "", final_answer=a) for i, a in enumerate(finals)]
    assert moa.verdict_doubts(verdict, positions, moa.normalize_answer) == doubts


@respx.mock
@pytest.mark.parametrize("readable, most_requests", [
    (lambda n: False, 5 + moa.FORMAT_GIVE_UP_REPLIES - 1),
    (lambda n: n == 0, 5 + moa.FORMAT_GIVE_UP_REPLIES),
], ids=["none-readable", "one-readable-then-none"])
def test_rebuttals_a_model_cannot_format_are_not_retried(readable, most_requests, capsys, monkeypatch) -> None:
    """Once 3 rebuttals could not be read, more than could, no unreadable rebuttal is retried (25 requests before: 5 x
    (1 + MAX_RETRIES)); each solver keeps its first answer, and the record says so."""
    route = respx.post(URL).mock(side_effect=FakeModel(overrides={"rebuttal": lambda r, n: completion(
        "<answer>391</answer>" if readable(n) else NO_ANSWER_REBUTTAL)}))
    printed = run_json(capsys)
    assert phases_of(route).count("rebuttal") <= most_requests
    assert printed["final_answer"] == "391" and "rebuttal_retries_stopped" in printed["doubts"]


@respx.mock
def test_a_phase_that_mostly_reads_is_still_retried(capsys, monkeypatch) -> None:
    """A phase whose unreadable replies do not outnumber its readable ones is not given up on: they are retried."""
    route = respx.post(URL).mock(side_effect=FakeModel(overrides={
        "rebuttal": lambda r, n: completion("<answer>391</answer>" if n % 2 == 0 else NO_ANSWER_REBUTTAL)}))
    printed = run_json(capsys)
    assert phases_of(route).count("rebuttal") > 5 and printed["phases"]["rebuttal"] == {"ok": 5, "failed": 0}
    assert "rebuttal_retries_stopped" not in printed["doubts"]


@respx.mock
@pytest.mark.parametrize("judge, judge_requests, reran", [
    (fixed("I cannot decide between them."), 3, False),
    (fixed(CUT_OFF, "length"), 3, False),
    (lambda r, n: httpx.Response(500, json={"error": {"message": "upstream down"}}), 3 * 5 * 2, True),
], ids=["prose-without-an-answer", "cut-off", "server-errors-are-no-replies"])
def test_no_rerun_when_the_judges_could_not_format(judge, judge_requests, reran, capsys, monkeypatch) -> None:
    """Judges that replied but could not be read are not retried, nor asked again by a rerun (which cannot help):
    the solvers' majority stands at most UNCHECKED_CONFIDENCE, said plainly. Judges that got no reply (500s) are
    retried and the rerun runs, as before."""
    monkeypatch.setenv("MAX_RETRIES", "4")
    answers = iter(["391", "391", "390", "392", "393"] + ["391"] * 7)
    route = respx.post(URL).mock(side_effect=FakeModel(overrides={
        "generate": lambda r, n: completion(solver_text(next(answers))), "judge": judge}))
    printed = run_json(capsys)
    assert phases_of(route).count("judge") == judge_requests and printed["rerun"] is reran
    assert printed["verdict_source"] == "solvers" and printed["confidence"] <= moa.UNCHECKED_CONFIDENCE
    assert "no_judge_verdict" in printed["doubts"] and ("judge_retries_stopped" in printed["doubts"]) is not reran


@respx.mock
def test_an_early_exit_on_guessed_answers_is_not_confident(capsys, monkeypatch) -> None:
    """Five answers read only by the paragraph guess agree: the early exit stands, at most UNCHECKED_CONFIDENCE."""
    monkeypatch.setenv("EARLY_EXIT", "true")
    monkeypatch.setenv("MIN_JUDGE_CONFIDENCE", "0")
    respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": fixed(PROSE_SOLVER)}))
    printed = run_json(capsys)
    assert printed["unanimous"] and printed["confidence"] == moa.UNCHECKED_CONFIDENCE
    assert printed["doubts"] == ["generate_format_failed"]


@pytest.mark.parametrize("codes, line", [
    ([], ""),
    (["judges_split"], "the judges split: no answer has a majority of them"),
    (["generate_format_failed", "rebuttal_format_failed", "judge_format_failed", "rebuttal_retries_stopped"],
     "most generate, rebuttal and judge replies did not follow the format; unreadable rebuttal replies were not retried"),
    (["answers_disagree", "revise_format_failed", "judge_format_failed"],
     "the solvers' final answers disagree: no answer has a majority of them; most revise and judge replies did not "
     "follow the format"),
], ids=["none", "one", "phases-grouped", "vote-then-phases"])
def test_doubts_read_as_one_plain_line(codes: list[str], line: str) -> None:
    """The vote's doubts in their own words, then the phases' grouped in one clause each."""
    assert moa.plain_doubts(codes) == line


@respx.mock
def test_the_summary_says_the_doubt_in_one_plain_line(capsys, monkeypatch) -> None:
    """The human summary prints one Doubtful: line in plain words; a clean run prints none."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")
    respx.post(URL).mock(side_effect=FakeModel(overrides={"judge": fixed("I cannot decide.")}))
    assert moa.main(["-q", "What is 17 * 23?"], runtime=test_runtime()) == 0
    doubtful = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Doubtful:")]
    assert doubtful == [f"Doubtful: {moa.DOUBTS['no_judge_verdict']}; most judge replies did not follow the format; "
                        "unreadable judge replies were not retried."]
    respx.post(URL).mock(side_effect=FakeModel())
    assert moa.main(["-q", "What is 17 * 23?"], runtime=test_runtime()) == 0
    assert "Doubtful:" not in capsys.readouterr().out


@respx.mock
def test_a_batch_counts_its_questions_with_doubts(tmp_path, capsys, monkeypatch) -> None:
    """Each batch line carries doubts and format; the summary counts the questions with doubts."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")
    (tmp_path / "q.jsonl").write_text('{"id": "clean", "question": "What is 17 * 23?"}\n'
                                      '{"id": "unjudged", "question": "What is 17 * 24?"}\n')
    judge = lambda r, n: completion(  # noqa: E731
        "I cannot decide." if "17 * 24" in r.content.decode() else "FINAL ANSWER: 391\nCONFIDENCE: 90")
    respx.post(URL).mock(side_effect=FakeModel(overrides={"judge": judge}))
    out = tmp_path / "o.jsonl"
    assert moa.main(["-f", str(tmp_path / "q.jsonl"), "-o", str(out), "--concurrency", "1"],
                    runtime=test_runtime()) == 0
    lines = {line["id"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert lines["clean"]["doubts"] == [] and "no_judge_verdict" in lines["unjudged"]["doubts"]
    assert lines["clean"]["format"]["judge"] == {"replies": 3, "last_tier": 0, "failed": 0}
    summary = json.loads((tmp_path / "o.jsonl.summary.json").read_text())
    assert summary["this_run"]["doubtful"] == 1 and "1 with doubts" in capsys.readouterr().out


def doubt_table() -> list[str]:
    """Every code the docs' Doubt table names, in its order."""
    text = DOCS.read_text(encoding="utf-8")
    rows = text.split("| Doubt | Meaning |\n|---|---|\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [code for row in rows for code in re.findall(r"`([a-z_]+)`", row.split(" | ")[0])]


def test_the_doubt_table_lists_exactly_the_codes_in_their_order() -> None:
    """docs/output.md's Doubt table names every code of DOUBTS, once, in DOUBTS' order, and nothing else."""
    assert doubt_table() == list(moa.DOUBTS)


@respx.mock
def test_no_rerun_when_most_judge_replies_could_not_be_read(capsys, monkeypatch) -> None:
    """One judge of three votes, the rest cannot be read: its phase is given up on, and its low confidence (1 of 3
    asked) buys no rerun, which would ask the same judges the same way."""
    route = respx.post(URL).mock(side_effect=FakeModel(overrides={
        "judge": lambda r, n: completion("FINAL ANSWER: 391" if n == 0 else "I cannot decide between them.")}))
    printed = run_json(capsys)
    assert printed["verdict_source"] == "judges" and printed["confidence"] == 33 and printed["rerun"] is False
    assert "judge_retries_stopped" in printed["doubts"] and "judges_no_confidence" in printed["doubts"]
    assert phases_of(route).count("judge") <= 2 + moa.FORMAT_GIVE_UP_REPLIES


@respx.mock
def test_no_rerun_when_the_judges_answer_only_in_sentences(capsys, monkeypatch) -> None:
    """Judges that split in "The answer is X" sentences, none with a FINAL ANSWER line or CONFIDENCE: 1 of 3 asked is
    33, below MIN_JUDGE_CONFIDENCE, yet no rerun: it would ask the same judges the same way (SmolLM2: every run paid one)."""
    route = respx.post(URL).mock(side_effect=FakeModel(overrides={
        "judge": lambda r, n: completion(f"I compared them.\nThe answer is {390 + n}.")}))
    printed = run_json(capsys)
    assert printed["confidence"] == 33 and printed["rerun"] is False and phases_of(route).count("judge") == 3
    assert {"judges_split", "judges_no_confidence", "judge_format_failed"} <= set(printed["doubts"])
