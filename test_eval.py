"""--eval (issue 23): strategies scored on questions with known answers, with a Wilson interval per strategy and an
exact McNemar test against one call; the real CLI against the oracle endpoint, and a resume after SIGTERM."""
from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
import parsing
from conftest import URL, completion, test_runtime
from test_hostile_files import assert_one_clean_error, cli, environment, terminate_when
from test_readme import find_table, first_cell_names

HERE = Path(__file__).resolve().parent
EVAL_DOCS = HERE / "docs" / "eval.md"


# --- the statistics, against hand-computed tables -------------------------------------------------------------------

@pytest.mark.parametrize("wins, losses, p", [
    (0, 0, 1.0),  # nothing to tell apart
    (5, 1, 2 * (1 + 6) / 64),  # n=6: P(X<=1) = (C(6,0)+C(6,1))/2^6
    (1, 5, 2 * (1 + 6) / 64),  # symmetric
    (10, 2, 2 * (1 + 12 + 66) / 4096),  # n=12: P(X<=2) = 79/4096
    (3, 3, 1.0),  # an even split, capped at 1
    (7, 0, 2 / 128),  # n=7: P(X=0) = 1/128
], ids=["none", "5-1", "1-5", "10-2", "even", "7-0"])
def test_mcnemar_p_is_the_exact_two_sided_binomial(wins: int, losses: int, p: float) -> None:
    """The exact McNemar p-value: twice the binomial(n, 1/2) tail at the smaller count, at most 1."""
    assert parsing.mcnemar_p(wins, losses) == pytest.approx(p, abs=1e-12)


def test_mcnemar_p_holds_for_a_large_eval() -> None:
    """Thousands of discordant questions: no float overflow, and a near-even split is not significant."""
    assert 0.1 < parsing.mcnemar_p(3000, 2900) < 0.3
    assert parsing.mcnemar_p(3000, 2000) < 1e-40


@pytest.mark.parametrize("successes, trials, low, high", [
    (7, 10, 0.3968, 0.8922),  # Wilson's textbook example
    (0, 5, 0.0, 0.4345),
    (5, 5, 0.5655, 1.0),
    (48, 64, 0.6318, 0.8399),  # p=.75: centre .7358, half-width .1040
    (0, 0, 0.0, 1.0),  # nothing answered: nothing known
], ids=["7-of-10", "none-right", "all-right", "48-of-64", "empty"])
def test_wilson_interval_matches_hand_computed_values(successes: int, trials: int, low: float, high: float) -> None:
    """The 95% Wilson score interval, inside [0, 1] even at 0 and at every question right."""
    got = parsing.wilson_interval(successes, trials)
    assert got == pytest.approx((low, high), abs=1e-4)


def line(correct: bool | None, status: str = "ok", **extra) -> dict:
    """A batch line as the report reads it."""
    return {"status": status, "correct": correct, "llm_calls": 1, "http_requests": 1, "elapsed_s": 1.0,
            "usage": {"total_tokens": 10}, "cost_usd": None, "phases": {}, **extra}


def test_a_failure_is_counted_apart_never_as_wrong() -> None:
    """Accuracy is over the answered questions; a failed one is in `failed`, not in the denominator."""
    row = moa.strategy_score("single", {"a": line(True), "b": line(False), "c": line(None, "failed")})
    assert (row["answered"], row["failed"], row["correct"], row["accuracy"]) == (2, 1, 1, 0.5)


def test_paired_counts_only_questions_both_answered() -> None:
    """Wins and losses are over questions both strategies answered; one only one of them answered is not a win."""
    base = {"a": line(True), "b": line(False), "c": line(False), "d": line(None, "failed")}
    other = {"a": line(False), "b": line(True), "c": line(True), "d": line(True)}
    assert parsing.paired(base, other) == {"wins": 2, "losses": 1, "p_value": 1.0}


def test_judge_verdicts_and_format_shares_are_summed_over_questions() -> None:
    """The share of judge calls with a verdict, and per phase the shares of last-tier and failed replies."""
    lines = {"a": line(True, phases={"judge": {"ok": 1, "failed": 2}},
                       format={"judge": {"replies": 4, "last_tier": 1, "failed": 2}}),
             "b": line(True, phases={"judge": {"ok": 3, "failed": 0}},
                       format={"judge": {"replies": 4, "last_tier": 1, "failed": 0}})}
    row = moa.strategy_score("debate", lines)
    assert row["judge_verdict_share"] == pytest.approx(4 / 6, abs=1e-3)
    assert row["format"] == {"judge": {"replies": 8, "last_tier": 2, "failed": 2}}
    report = {"gold": "g", "questions": 2, "strategies": [row], "conclusion": "."}
    assert "| judge 25% / 25% |" in moa.markdown_report(report, "m")  # the table's last column: shares of replies


@pytest.mark.parametrize("text, name, samples, contract, greedy", [
    ("single", "single", 1, False, True),
    ("single-contract", "single-contract", 1, True, True),
    (" Vote@05 ", "vote@5", 5, True, False),
    ("debate", "debate", 0, True, False),
], ids=["single", "single-contract", "vote-at-5", "debate"])
def test_strategies_are_named_as_the_docs_say(text: str, name: str, samples: int, contract: bool,
                                              greedy: bool) -> None:
    """The four kinds of strategy, and what each sends."""
    assert moa.Strategy.parse(text) == moa.Strategy(name, samples, contract, greedy)


@pytest.mark.parametrize("text", ["vote@0", "vote@65", "vote", "majority", "vote@1e3", ""])
def test_an_unknown_strategy_is_a_usage_error(text: str) -> None:
    """A strategy that is not one of ours is refused, naming the valid ones."""
    with pytest.raises(moa.ConfigError, match="single, single-contract, vote@K"):
        moa.Strategy.parse(text)


# --- what each baseline sends -------------------------------------------------------------------------------------

def run_strategy(name: str, question: str = "What is 2 + 3?") -> moa.RunRecord:
    """One question answered by strategy ``name`` (no files, retries without real waits)."""
    config = moa.Config(URL, "k", enable_file_logging=False, temperature=0.7, max_retries=1)
    runtime = test_runtime()

    async def go() -> moa.RunRecord:
        async with httpx.AsyncClient() as client:
            return await moa.answer_question(config, question, moa.Endpoint(config, client, runtime), runtime,
                                             strategy=moa.Strategy.parse(name))
    return asyncio.run(go())


@respx.mock
def test_single_sends_the_plain_question_greedy_and_reads_prose() -> None:
    """`single`: one request with the user's words alone (no system prompt, no nonce), temperature 0; a prose
    reply is read for its answer."""
    route = respx.post(URL).mock(return_value=completion("Adding them gives five.\n\nThe answer is 5."))
    record = run_strategy("single")
    body = json.loads(route.calls[0].request.content)
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"] == "What is 2 + 3?"
    assert body["temperature"] == 0
    assert (record.status, record.llm_calls, record.rerun) == ("ok", 1, False)
    # it asked for no format, so prose is no miss of one: no format doubt, and no last-tier reading counted
    assert record.format["generate"]["last_tier"] == 0 and record.doubts == []
    assert moa.answers_match("What is 2 + 3?", record.final_answer, "5")  # as the batch's `correct` compares


@respx.mock
def test_vote_sends_k_solver_calls_at_the_debates_temperature_and_takes_the_majority() -> None:
    """`vote@3`: three solver-prompt calls at TEMPERATURE, no critique or judge; the majority is the answer."""
    replies = iter(["<answer>5</answer>", "<answer>6</answer>", "<answer>5</answer>"])
    route = respx.post(URL).mock(side_effect=lambda _: completion(next(replies)))
    record = run_strategy("vote@3")
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert len(bodies) == 3 and all(b["temperature"] == 0.7 for b in bodies)
    assert all(b["messages"][0]["role"] == "system" and "<answer>" in b["messages"][0]["content"] for b in bodies)
    # the share that agree, at most UNCHECKED_CONFIDENCE: no judge checked it; no doubt that judges failed to
    assert (record.final_answer, record.confidence, record.verdict_source) == ("5", 50, "vote")
    assert record.doubts == []
    assert record.phases["critique"] == {"ok": 0, "failed": 0} and record.phases["judge"] == {"ok": 0, "failed": 0}


@respx.mock
def test_a_greedy_reply_cut_at_max_tokens_is_not_asked_again() -> None:
    """Temperature 0 gives the same cut-off reply every time: one request, a failure that says why, no retries."""
    route = respx.post(URL).mock(return_value=completion("Let me think about 2 and 3, which", finish_reason="length"))
    record = run_strategy("single")
    assert len(route.calls) == 1 and record.status == "failed" and "stopped at MAX_TOKENS" in record.error


@respx.mock
def test_a_baseline_with_no_answer_fails_and_says_why() -> None:
    """Every sample unusable: the question fails (a failure, never silently wrong), naming the last error."""
    respx.post(URL).mock(return_value=completion(""))
    record = run_strategy("single-contract")
    assert record.status == "failed" and "0/1 solvers" in record.error


# --- the docs' tables -------------------------------------------------------------------------------------------

def test_eval_field_tables_list_exactly_the_reports_keys(tmp_path: Path) -> None:
    """docs/eval.md's Eval-field and Strategy-field tables name every key of the --json report, and nothing else."""
    text = EVAL_DOCS.read_text(encoding="utf-8")
    options = moa.EvalOptions(tmp_path, (moa.Strategy.parse("single"), moa.Strategy.parse("debate")),
                              moa.BatchOptions("g.jsonl", tmp_path / "single.jsonl"), frozenset({"a"}))
    (tmp_path / "single.jsonl").write_text(json.dumps({"id": "a", **line(True)}) + "\n")
    report = moa.eval_report(options, options.gold_ids)
    top = first_cell_names(find_table(text, ["Eval field", "Meaning"]))
    rows = first_cell_names(find_table(text, ["Strategy field", "Meaning"]))
    assert set(top) == set(report)
    assert set(rows) == set(report["strategies"][0])
    kinds = first_cell_names(find_table(text, ["Strategy", "What it sends for each question"]))
    assert {moa.Strategy.parse(k.replace("K", "3")).name.rstrip("3") for k in kinds} == {
        "single", "single-contract", "vote@", "debate"}


# --- the real CLI against the oracle ------------------------------------------------------------------------------

GOLD = HERE / "bench" / "eval_set.jsonl"
WRONG_RATE = 0.25
# With solvers wrong at WRONG_RATE, alike (the oracle's one wrong answer), one call is right at 1 - w; a majority of
# three at (1-w)^3 + 3(1-w)^2 w; the debate's judges side with the candidates' majority, and rebuttals keep answers.
EXPECTED = {"single": 1 - WRONG_RATE, "single-contract": 1 - WRONG_RATE,
            "vote@3": (1 - WRONG_RATE) ** 3 + 3 * (1 - WRONG_RATE) ** 2 * WRONG_RATE}
EXPECTED["debate"] = EXPECTED["vote@3"]
SMALL_DEBATE = {"NUM_WORKERS": "3", "NUM_JUDGES": "2"}
# --keyed: whether a solver is wrong is a hash of (seed, prompt, question, agent), so each accuracy is one fixed draw
# from its binomial whatever order requests arrive in: the test passes or fails the same on every run.


def test_eval_against_the_oracle_reports_the_expected_accuracies(server, tmp_path: Path) -> None:
    """The real CLI, four strategies on the 64-question eval set: each expected accuracy lies within its
    strategy's 95% interval, nothing fails, the calls are as each strategy spends them, report.md is written."""
    endpoint = server("--answers", str(GOLD), "--wrong-rate", str(WRONG_RATE), "--seed", "2", "--keyed")
    done = cli(tmp_path, endpoint.url, "--eval", str(GOLD), "-o", "run", "--strategies", ",".join(EXPECTED),
               "--json", "--concurrency", "1", timeout=120, **SMALL_DEBATE)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {row["name"]: row for row in report["strategies"]}
    assert list(rows) == list(EXPECTED) and report["questions"] == 64
    for name, expected in EXPECTED.items():
        row = rows[name]
        assert (row["answered"], row["failed"]) == (64, 0), name
        assert row["ci_low"] <= expected <= row["ci_high"], (name, row["accuracy"], expected)
    assert [rows[n]["calls_per_question"] for n in ("single", "single-contract", "vote@3")] == [1, 1, 3]
    assert rows["debate"]["calls_per_question"] >= 11 and rows["debate"]["judge_verdict_share"] == 1.0
    assert rows["single"]["vs_single"] is None and set(rows["debate"]["vs_single"]) == {"wins", "losses", "p_value"}
    assert report["best"] in rows and report["conclusion"].startswith("Most accurate:")
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert markdown.splitlines()[0].startswith("# Eval of") and report["conclusion"] in markdown
    assert sorted(p.name for p in (tmp_path / "run").glob("*.jsonl")) == sorted(f"{n}.jsonl" for n in EXPECTED)


def write_gold(path: Path, count: int) -> None:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(count)))


def test_a_resume_after_sigterm_repeats_no_call(server, tmp_path: Path) -> None:
    """SIGTERM mid-eval: exit 130, the questions in flight finish; the same command again resumes, and the two runs
    together send exactly the requests one uninterrupted run sends: no call is made twice."""
    write_gold(tmp_path / "gold.jsonl", 8)
    endpoint = server("--answers", str(tmp_path / "gold.jsonl"), "--latency", "0.1")
    argv = ["--eval", "gold.jsonl", "--strategies", "single,vote@2,debate", "--concurrency", "2"]
    env = environment(tmp_path, endpoint.url, **SMALL_DEBATE, ENABLE_REBUTTAL="false")
    results = tmp_path / "gold.eval" / "vote@2.jsonl"
    code, _, stderr = terminate_when(argv, env, tmp_path, lambda: results.exists() and results.read_text().count(
        "\n") >= 2, "two vote@2 lines")
    assert code == 130, stderr
    assert "Traceback" not in stderr
    first = len(endpoint.starts())
    done = cli(tmp_path, endpoint.url, "--eval", "gold.jsonl", "--strategies", "single,vote@2,debate", "--json",
               **SMALL_DEBATE, ENABLE_REBUTTAL="false")
    assert done.returncode == 0, done.stderr
    per_question = 1 + 2 + (3 + 3 + 2)  # single; vote@2; the debate: 3 solvers, 3 critiques, 2 judges
    assert first < 8 * per_question
    assert len(endpoint.starts()) == 8 * per_question
    sent = [(e["run"], e["phase"], e["agent"]) for e in endpoint.starts()]
    assert len(sent) == len(set(sent))
    assert all(row["answered"] == 8 for row in json.loads(done.stdout)["strategies"])


@pytest.mark.parametrize("argv, words", [
    (["--eval", "-"], "--eval needs a file"),
    (["--eval", "gold.jsonl", "--strategies", "vote@99"], "'vote@99' is not a strategy"),
    (["--eval", "gold.jsonl", "--strategies", ","], "name at least one"),
    (["--eval", "plain.txt"], "no question in it has an answer"),
    (["--eval", "missing.jsonl"], "cannot read it"),
    (["--eval", "gold.jsonl", "-o", "afile"], "not a folder"),
    (["--eval", "gold.jsonl", "--dry-run"], "do not go with --eval"),
    (["--eval", "gold.jsonl", "--output-format", "openai-batch"], "do not go with --eval"),
    (["-q", "Hi?", "--strategies", "single"], "--strategies goes with --eval"),
    (["--eval", "gold.jsonl", "-o", "."], "eval/single.jsonl"),
    (["--eval", "report.md", "-o", "./"], "report.md is the questions file report.md itself"),
    (["--eval", "gold.jsonl", "--answer", "full"], "ANSWER_SHAPE=full"),
    (["--eval", "gold.jsonl", "--strategies", "single,vote@5", "--max-calls", "3"], "vote@5 needs 5"),
], ids=["stdin", "bad-strategy", "no-strategy", "no-answers", "missing", "output-is-a-file", "dry-run",
        "openai-batch", "strategies-without-eval", "gold-inside-the-folder", "gold-is-the-report", "full-answers",
        "vote-over-max-calls"])
def test_bad_eval_input_is_one_line_and_exit_2_with_nothing_sent(argv: list[str], words: str, server,
                                                                  tmp_path: Path) -> None:
    """Every mistake in an --eval command line: one `error:` line, exit 2, no request sent."""
    endpoint = server()
    write_gold(tmp_path / "gold.jsonl", 2)
    (tmp_path / "plain.txt").write_text("What is 1 + 1?\n")
    (tmp_path / "afile").write_text("mine\n")
    if argv[-1] == ".":  # the gold file is where the first strategy's results would go
        (tmp_path / "eval").mkdir()
        write_gold(tmp_path / "eval" / "single.jsonl", 2)
        argv = ["--eval", "eval/single.jsonl", "-o", "eval"]
    write_gold(tmp_path / "report.md", 2)  # a gold file by another name: the report must not be written over it
    gold_text = (tmp_path / "report.md").read_text()
    done = cli(tmp_path, endpoint.url, *argv)
    assert_one_clean_error(done, 2, words)
    assert endpoint.starts() == []
    assert (tmp_path / "afile").read_text() == "mine\n" and (tmp_path / "report.md").read_text() == gold_text


def test_a_symlinked_folder_is_refused(server, tmp_path: Path) -> None:
    """-o naming a symbolic link (to a folder elsewhere): refused, nothing written through it."""
    endpoint = server()
    write_gold(tmp_path / "gold.jsonl", 2)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    done = cli(tmp_path, endpoint.url, "--eval", "gold.jsonl", "-o", "link")
    assert_one_clean_error(done, 2, "not a folder")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_the_human_report_is_a_markdown_table_with_a_closing_line(tmp_path: Path) -> None:
    """What a person reads: a header, a row per strategy with the interval and the duel, the closing line."""
    options = moa.EvalOptions(tmp_path, (moa.Strategy.parse("single"), moa.Strategy.parse("debate")),
                              moa.BatchOptions("g.jsonl", tmp_path / "single.jsonl"), frozenset("abcdefgh"))
    single = {i: line(i in "ab") for i in "abcdefgh"}
    debate = {i: line(i in "abcdefg", llm_calls=11) for i in "abcdefgh"}
    for name, rows in (("single", single), ("debate", debate)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"id": i, **r}) + "\n" for i, r in rows.items()))
    report = moa.eval_report(options, options.gold_ids)
    text = moa.markdown_report(report, "smollm2")
    assert "| debate | 87.5% [52.9, 97.8] | 8 | 0 | 11.0 |" in text
    assert "5-0, p = 0.0625 |" in text
    assert re.search(r"does not beat, at this sample size, a single call \(wins 5, losses 0", text)
    assert report["best"] == "debate" and report["best_per_call"] == "single"
    assert not math.isnan(report["strategies"][1]["ci_low"])


def test_the_closing_line_says_nothing_of_a_debate_that_has_not_answered(tmp_path: Path) -> None:
    """An eval stopped before the debate ran: the closing line names the best so far and claims nothing about it."""
    options = moa.EvalOptions(tmp_path, (moa.Strategy.parse("single"), moa.Strategy.parse("debate")),
                              moa.BatchOptions("g.jsonl", tmp_path / "single.jsonl"), frozenset("ab"))
    (tmp_path / "single.jsonl").write_text("".join(json.dumps({"id": i, **line(i == "a")}) + "\n" for i in "ab"))
    report = moa.eval_report(options, options.gold_ids)
    assert report["conclusion"] == "Most accurate: single (50.0%)."


def write_lines(path: Path, correct: dict[str, bool]) -> None:
    """A strategy's output file: one ok line per id, right or wrong as given."""
    path.write_text("".join(json.dumps({"id": i, **line(right)}) + "\n" for i, right in correct.items()))


@pytest.mark.parametrize("shard, files, expected", [
    (None, {"single.jsonl": {"a": True, "b": True}, "single.1-of-2.jsonl": {"a": False}}, 2),
    ((1, 2), {"single.1-of-2.jsonl": {"a": True}, "single.2-of-2.jsonl": {"b": True},
              "single.1-of-3.jsonl": {"a": False, "b": False}, "single.jsonl": {"a": False}}, 2),
    ((2, 2), {"single.1-of-2.jsonl": {"a": True}, "single.2-of-2.jsonl": {"b": False}}, 1),
], ids=["unsharded-ignores-old-shards", "shards-of-another-count-ignored", "every-shard-of-this-count"])
def test_the_report_reads_only_this_layouts_files(shard: tuple[int, int] | None, files: dict[str, dict[str, bool]],
                                                  expected: int, tmp_path: Path) -> None:
    """An unsharded rerun (e.g. --no-resume) is not overridden by stale shard files, nor shards by another split."""
    for name, correct in files.items():
        write_lines(tmp_path / name, correct)
    split = moa.Shard(*shard) if shard else None
    options = moa.EvalOptions(tmp_path, (moa.Strategy.parse("single"),),
                              moa.BatchOptions("g.jsonl", tmp_path / "single.jsonl", shard=split), frozenset("ab"))
    assert moa.eval_report(options, options.gold_ids)["strategies"][0]["correct"] == expected


@pytest.mark.parametrize("files, conclusion", [
    ({"single": {"a": True, "b": False, "c": True}, "debate": {"a": True, "b": None, "c": None}},
     "Most accurate: debate (100.0% of the 1 it answered; 2 failed)."),
    ({"single": {"a": False, "b": False, "c": False}, "debate": {"a": False, "b": False, "c": False}},
     "No strategy got a question right."),
    ({"single": {"a": True, "b": True, "c": True}, "debate": {"a": True, "b": True, "c": True}},
     "Most accurate: single (100.0%, tied with debate)."),
    ({"single": {"a": True, "b": True, "c": True}, "debate": {"a": True, "b": True}},
     "Most accurate: single (100.0%, tied with debate (100.0% of the 2 it answered))."),
], ids=["best-answered-least", "all-wrong", "all-right-tie", "tie-with-a-stopped-debate"])
def test_the_closing_line_claims_nothing_edge_data_does_not_show(files: dict[str, dict[str, bool | None]],
                                                                 conclusion: str, tmp_path: Path) -> None:
    """A strategy that failed most questions (None) or was stopped (ids absent) is not crowned without saying so;
    0% is no 'most accurate'; a tie is one."""
    for name, correct in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"id": i, **(line(right) if right is not None else line(None, "failed"))}) + "\n"
            for i, right in correct.items()))
    options = moa.EvalOptions(tmp_path, (moa.Strategy.parse("single"), moa.Strategy.parse("debate")),
                              moa.BatchOptions("g.jsonl", tmp_path / "single.jsonl"), frozenset("abc"))
    assert moa.eval_report(options, options.gold_ids)["conclusion"].split(" The debate")[0] == conclusion


@pytest.mark.parametrize("answer, expected", [
    (5, "5"), (2.5, "2.5"), (False, "False"), (None, None), ("Tokyo", "Tokyo"),
    (["Tokyo", "Edo"], "bad"), ({"value": 5}, "bad"), ("  ", "bad"), (float("nan"), "bad"),
], ids=["int", "float", "bool", "null-unscored", "text", "list", "object", "blank", "NaN"])
def test_a_gold_answer_that_cannot_be_scored_is_an_input_error(answer: object, expected: str | None) -> None:
    """A list, an object or blank text as the gold answer is a bad line, never a question scored wrong every time."""
    line_bytes = json.dumps({"id": "q", "question": "What is the capital of Japan?", "answer": answer}).encode()
    item = next(iter(moa.read_items([line_bytes + b"\n"], jsonl=True)))
    if expected == "bad":
        assert isinstance(item, moa.BadLine) and '"answer"' in item.reason
    else:
        assert isinstance(item, moa.BatchItem) and item.expected == expected


def test_an_unreadable_results_file_leaves_the_rest_of_the_report(tmp_path: Path, capsys) -> None:
    """A link at another shard's file: that file is named on stderr and left out; the report of the rest stands."""
    write_lines(tmp_path / "single.1-of-2.jsonl", {"a": True})
    write_lines(tmp_path / "elsewhere.jsonl", {"b": True})
    (tmp_path / "single.2-of-2.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    options = moa.EvalOptions(tmp_path, (moa.Strategy.parse("single"),),
                              moa.BatchOptions("g.jsonl", tmp_path / "single.jsonl", shard=moa.Shard(1, 2)),
                              frozenset("ab"))
    assert moa.eval_report(options, options.gold_ids)["strategies"][0]["answered"] == 1
    assert "single.2-of-2.jsonl" in capsys.readouterr().err


def test_without_single_the_closing_line_says_the_debate_was_not_compared(tmp_path: Path) -> None:
    """No `single` among the strategies: the closing line says why it cannot tell whether the debate beats one call."""
    write_lines(tmp_path / "debate.jsonl", {"a": True, "b": False})
    options = moa.EvalOptions(tmp_path, (moa.Strategy.parse("debate"),),
                              moa.BatchOptions("g.jsonl", tmp_path / "debate.jsonl"), frozenset("ab"))
    conclusion = moa.eval_report(options, options.gold_ids)["conclusion"]
    assert conclusion.endswith("The debate was not compared with a single call: add single to --strategies.")
