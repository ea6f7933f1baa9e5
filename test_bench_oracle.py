"""The benchmark's own machinery (issue 22): the fake endpoint's replies for ranked judges and the synthesis,
its oracle over open-ended items, the open items' property checks, how bench/eval.py picks a response from a
record, and the critical path with a synthesis. No network: the endpoint's reply functions are called directly."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "bench"))

import eval as harness  # noqa: E402
import fake_endpoint as fe  # noqa: E402
import make_eval_set  # noqa: E402
import run_bench  # noqa: E402
from open_check import check_response, code_of, code_passes, contains_all  # noqa: E402

import prompts  # noqa: E402

OPEN_ITEMS = [json.loads(line) for line in (HERE / "bench" / "eval_open.jsonl").read_text().splitlines()]
MERGE = OPEN_ITEMS[0]
RIGHT, WRONG = MERGE["oracle"]["right"], MERGE["oracle"]["wrong"][0]
RANKING_SYSTEM = "You are an impartial judge. Rank every candidate, then end with RANKING: B > A > C"


def body(system: str, user: str) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


def state(answers: str | None = None, **options: float) -> fe.State:
    made = fe.State(fe.Options(**options), random.Random(1))
    if answers:
        fe.load_answers(made, answers)
    return made


def judge_prompt(question: str, answers: dict[str, str]) -> str:
    """A judge's user prompt as the pipeline renders it: the question, then each candidate by label."""
    candidates = "\n\n".join(prompts.render(prompts.JUDGE_CANDIDATE, label=label, answer=answer, reasoning="worked",
                                            critique="Looks fine.", rebuttal="I checked again.")
                             for label, answer in answers.items())
    return prompts.render(prompts.JUDGE_USER, question=question, candidates=candidates)


def unfenced(response: str) -> str:
    """A candidate's text as a short-contract parser keeps it: parse_answer strips the fences around a whole
    answer (parse_full_answer keeps them: the oracle must read both)."""
    return "\n".join(line for line in response.splitlines() if not line.startswith("```"))


# --- the replies every existing test and bench depends on stay as they were ----------------------------


@pytest.mark.parametrize(("phase", "system", "expected"), [
    ("generate", prompts.SOLVER_SYSTEM.template,
     "<reasoning>17 * 23 = 17 * 20 + 17 * 3 = 340 + 51.</reasoning>\n<answer>391</answer>"),
    ("critique", prompts.CRITIC_SYSTEM.template, "<critique>I recomputed every step; the arithmetic holds.</critique>"),
    ("rebuttal", prompts.REBUTTAL_SYSTEM.template,
     "<rebuttal>The critique confirms my work.</rebuttal>\n<answer>391</answer>"),
    ("revise", prompts.REVISE_SYSTEM.template, "<rebuttal>The critique confirms my work.</rebuttal>\n<answer>391</answer>"),
    ("judge", prompts.JUDGE_SYSTEM.template,
     "<analysis>Candidates agree after checking.</analysis>\nFINAL ANSWER: 391\nCONFIDENCE: 90"),
], ids=["solver", "critic", "rebuttal", "revision", "voting-judge"])
def test_old_phases_reply_as_before(phase: str, system: str, expected: str) -> None:
    """The replies of the phases before issue 22 are byte for byte what they were."""
    request = body(system, judge_prompt("What is 17 * 23?", {"A": "391", "B": "390"}))
    assert fe.plain_reply(phase, state(), request) == expected


# --- ranked judges and the synthesis, without an answer key ----------------------------------------------


@pytest.mark.parametrize(("labels", "expected"), [
    ("ABC", "RANKING: A > B > C"),
    ("CAB", "RANKING: C > A > B"),
    ("A", "RANKING: A"),
    (["Z", "AA", "AB"], "RANKING: Z > AA > AB"),
], ids=["three", "rotated", "one-candidate", "two-letter-labels"])
def test_ranking_judge_ranks_the_labels_shown(labels: str, expected: str) -> None:
    """A judge asked for a RANKING line ranks the labels in its prompt in the order shown, with CONFIDENCE."""
    request = body(RANKING_SYSTEM, judge_prompt("What is 17 * 23?", {label: "391" for label in labels}))
    reply = fe.plain_reply("judge", state(), request)
    assert reply == f"<analysis>I checked each candidate against the question.</analysis>\n{expected}\nCONFIDENCE: 90"


@pytest.mark.parametrize(("headers", "system", "phase"), [
    ({"x-moa-phase": "synthesis"}, "Write the final response.", "synthesis"),
    ({"x-moa-phase": "judge"}, RANKING_SYSTEM, "judge"),
    ({}, RANKING_SYSTEM, "judge"),
    ({}, prompts.JUDGE_SYSTEM.template, "judge"),
    ({}, prompts.JUDGE_SYSTEM_RANKING.template, "judge"),
    ({}, prompts.SYNTHESIS_SYSTEM.template, "synthesis"),
    ({}, prompts.SYNTHESIS_SYSTEM_SHORT.template, "synthesis"),
    ({}, prompts.SOLVER_SYSTEM_FULL.template, "generate"),
    ({}, prompts.CRITIC_SYSTEM_FULL.template, "critique"),
    ({}, prompts.REBUTTAL_SYSTEM_FULL.template, "rebuttal"),
    ({}, prompts.REVISE_SYSTEM_FULL.template, "revise"),
], ids=["synthesis-header", "judge-header", "ranking-prompt-no-header", "voting-prompt-no-header",
        "ranking-judge-template", "synthesis-template", "short-synthesis-template", "full-solver-template",
        "full-critic-template", "full-rebuttal-template", "full-revision-template"])
def test_phase_of_a_request(headers: dict[str, str], system: str, phase: str) -> None:
    """The phase comes from X-MoA-Phase; without it, from the system prompt, the full-answer ones included."""
    assert fe.phase_of(headers, body(system, "<question>\nq\n</question>")) == phase


def test_synthesis_replies_with_plain_text() -> None:
    """Without an answer key the synthesis is a plain response: no tags, no label line."""
    reply = fe.plain_reply("synthesis", state(), body("Write the final response.", "<question>\nq\n</question>"))
    assert reply == "17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391." and "<" not in reply


# --- the oracle over open-ended items ----------------------------------------------------------------------


@pytest.mark.parametrize(("wrong_rate", "right"), [(0.0, True), (1.0, False)], ids=["right", "wrong"])
def test_oracle_solver_writes_a_whole_response(wrong_rate: float, right: bool) -> None:
    """An oracle solver answers an open item with a whole response, wrong ones failing the item's property."""
    oracle = state(str(HERE / "bench" / "eval_open.jsonl"), wrong_rate=wrong_rate)
    request = body(prompts.SOLVER_SYSTEM.template, prompts.render(prompts.SOLVER_USER, question=MERGE["question"]))
    reply = fe.oracle_reply("generate", oracle, request)
    assert reply is not None and reply.startswith("<reasoning>")
    answer = reply.split("<answer>\n", 1)[1].split("\n</answer>", 1)[0]
    assert check_response(MERGE, answer) is right


@pytest.mark.parametrize(("shown", "noise", "expected"), [
    ({"A": WRONG, "B": RIGHT, "C": WRONG}, 0.0, "RANKING: B > A > C\nCONFIDENCE: 90"),
    ({"A": RIGHT, "B": WRONG, "C": RIGHT}, 0.0, "RANKING: A > C > B\nCONFIDENCE: 90"),
    ({"A": unfenced(WRONG), "B": unfenced(RIGHT)}, 0.0, "RANKING: B > A\nCONFIDENCE: 90"),
    ({"A": WRONG, "B": WRONG}, 0.0, "RANKING: A > B\nCONFIDENCE: 40"),
    ({"A": WRONG, "B": RIGHT}, 1.0, "RANKING: A > B\nCONFIDENCE: 90"),
], ids=["right-first", "rights-in-order-shown", "fences-stripped", "none-right", "noise-swaps-adjacent"])
def test_oracle_ranking_judge(shown: dict[str, str], noise: float, expected: str) -> None:
    """The oracle judge ranks the candidates it checks right above the wrong ones; noise swaps two adjacent."""
    oracle = state(str(HERE / "bench" / "eval_open.jsonl"), judge_noise=noise)
    request = body(RANKING_SYSTEM, judge_prompt(MERGE["question"], shown))
    reply = fe.oracle_reply("judge", oracle, request)
    assert reply is not None and reply.endswith(expected)


@pytest.mark.parametrize(("shown", "right"), [
    ([WRONG, RIGHT], True),
    ([RIGHT], True),
    ([WRONG, MERGE["oracle"]["wrong"][1]], False),
], ids=["second-right", "first-right", "none-right-repeats-first"])
def test_oracle_synthesis(shown: list[str], right: bool) -> None:
    """The oracle synthesis writes a right response when a candidate shown is right, else repeats the first."""
    candidates = "\n".join(prompts.render(prompts.SYNTHESIS_CANDIDATE, label=label, rank=str(rank), score="0.5",
                                          answer=text, critique="Looks fine.", rebuttal="I checked again.")
                           for rank, (label, text) in enumerate(zip("AB", shown, strict=False), 1))
    user = prompts.render(prompts.SYNTHESIS_USER, question=MERGE["question"], candidates=candidates,
                          analyses=prompts.render(prompts.SYNTHESIS_ANALYSIS, judge="judge-1", analysis="B is right."),
                          verdict="")
    reply = fe.oracle_reply("synthesis", state(str(HERE / "bench" / "eval_open.jsonl")), body("Synthesize.", user))
    assert reply is not None and check_response(MERGE, reply) is right
    assert right or reply == shown[0]


# --- the open items' properties ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "code"), [
    ("Here it is:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
    ("```\nx = 1\n```", "x = 1\n"),
    ("```text\nnot code\n```\n```py\ny = 2\n```", "y = 2\n"),
    ("```bash\nls\n```\n```\nz = 3\n```", "z = 3\n"),
    ("def g():\n    return 2", "def g():\n    return 2"),
], ids=["python-fence-in-prose", "bare-fence", "py-fence-after-another", "bare-after-other-language", "no-fence"])
def test_code_of_a_response(text: str, code: str) -> None:
    """The code is the first python block, else the first bare block, else the whole text."""
    assert code_of(text) == code


@pytest.mark.parametrize(("code", "passes"), [
    ("def f(x):\n    return x + 1", True),
    ("def f(x):\n    return x", False),
    ("def f(x) return x", False),
    ("import sys\nsys.exit(0)\ndef f(x):\n    return x", False),
    ("while True:\n    pass", False),
], ids=["right", "assert-fails", "syntax-error", "exits-0-before-the-asserts", "runs-forever"])
def test_code_passes_in_a_subprocess(code: str, passes: bool) -> None:
    """Code runs with the asserts in a fresh interpreter with a timeout; only running past every assert passes."""
    assert code_passes(code, ["assert f(1) == 2"], timeout=1.0) is passes


@pytest.mark.parametrize(("text", "found"), [
    ("- Red\n- GREEN\n- blue", True),
    ("red, green and blue light", True),
    ("red and green", False),
    ("a hundred greenish blues", False),
], ids=["any-case", "prose", "missing-one", "only-inside-words"])
def test_contains_all(text: str, found: bool) -> None:
    """A list has its property when it names every item, in any case, as a whole word."""
    assert contains_all(text, ["red", "green", "blue"]) is found


def test_eval_open_file_is_what_make_eval_set_writes() -> None:
    """bench/eval_open.jsonl is rebuilt deterministically, every right response passing and every wrong one not."""
    assert make_eval_set.open_items() == OPEN_ITEMS
    assert len(OPEN_ITEMS) == 12 and {item["type"] for item in OPEN_ITEMS} == {"code", "contains"}


# --- bench/eval.py: three responses from one record --------------------------------------------------------


def standing(agent: str, first_places: int) -> dict:
    return {"agent": agent, "label": "A", "model": "m", "score": 0.5, "low": 0.4, "high": 0.6,
            "first_places": first_places}


ANSWERS = [{"agent": f"solver-{n}", "answer": f"draft {n}", "final_answer": f"final {n}"} for n in (1, 2, 3)]


@pytest.mark.parametrize(("ranking", "vote", "rank"), [
    ([standing("solver-2", 2), standing("solver-1", 1)], "final 2", "final 2"),
    ([standing("solver-2", 1), standing("solver-3", 2), standing("solver-1", 0)], "final 3", "final 2"),
    ([standing("solver-1", 1), standing("solver-3", 1)], "final 1", "final 1"),
    ([], None, None),
], ids=["agree", "vote-differs-from-borda", "first-places-tie-borda-order", "no-ranking"])
def test_open_responses(ranking: list[dict], vote: str | None, rank: str | None) -> None:
    """select-vote takes the most first places (Borda order on a tie), select-rank the Borda winner."""
    picked = harness.open_responses(ranking, ANSWERS, "the synthesis")
    assert picked == {"select-vote": vote, "select-rank": rank, "synthesis": "the synthesis"}


# --- run_bench.ideal_time learns the synthesis -------------------------------------------------------------


def request(phase: str, agent: str, latency: float) -> dict:
    return {"phase": phase, "agent": agent, "latency": latency, "status": 200, "round": 1}


DEBATE = [request("generate", "solver-1", 1.0), request("generate", "solver-2", 2.0),
          request("critique", "solver-2->solver-1", 1.5), request("critique", "solver-1->solver-2", 0.5),
          request("rebuttal", "solver-1", 1.0), request("rebuttal", "solver-2", 1.0),
          request("judge", "judge-1", 0.5), request("judge", "judge-2", 0.75)]


@pytest.mark.parametrize(("extra", "barriers", "ideal"), [
    ([], False, 4.25),
    ([request("synthesis", "synthesizer", 0.6)], False, 4.85),
    ([request("synthesis", "synthesizer", 0.6), request("synthesis", "synthesizer", 0.4)], False, 5.25),
    ([request("synthesis", "synthesizer", 4.0)], False, 8.25),
    ([request("synthesis", "synthesizer", 0.6)], True, 5.85),
], ids=["no-synthesis", "synthesis-after-judges", "synthesis-retried", "synthesis-slower-than-any-chain", "barriers"])
def test_ideal_time_adds_the_synthesis_in_sequence(extra: list[dict], barriers: bool, ideal: float) -> None:
    """The synthesis follows the slowest judge; it is never a solver chain of its own."""
    assert run_bench.ideal_time(DEBATE + extra, barriers) == pytest.approx(ideal)


# --- the real CLI against the oracle ------------------------------------------------------------------------


@pytest.mark.parametrize(("item", "wrong_rate", "right"), [
    (OPEN_ITEMS[0], "0", True),
    (OPEN_ITEMS[0], "1", False),
    (OPEN_ITEMS[6], "0", True),
    (OPEN_ITEMS[6], "1", False),
], ids=["code-right", "code-all-wrong", "list-right", "list-all-wrong"])
def test_the_cli_gets_the_oracles_response(tmp_path, server, item: dict, wrong_rate: str, right: bool) -> None:
    """--answer full --synthesize on against the oracle: the judges rank, the synthesis writes the response, and
    it has the item's property exactly when some solver was right."""
    endpoint = server("--answers", str(HERE / "bench" / "eval_open.jsonl"), "--wrong-rate", wrong_rate, "--seed", "1")
    env = {**os.environ, "PROXY_URL": endpoint.url, "API_KEY": "sk-test", "LOG_DIR": str(tmp_path / "logs"),
           "MOA_ENV_FILE": os.devnull, "RETRY_BASE_DELAY": "0.01", "MIN_JUDGE_CONFIDENCE": "0"}
    done = subprocess.run([sys.executable, str(HERE / "moa_pipeline.py"), "-q", item["question"], "--answer", "full",
                           "--synthesize", "on", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["answer_shape"] == "full" and out["synthesized"] and len(out["ranking"]) == 5
    assert check_response(item, out["response"]) is right
    assert [e["phase"] for e in endpoint.starts()].count("synthesis") == 1


# --- the prefix-cache model (--prefix-cache, bench/prefix_cache.py) ----------------------------------------------


@pytest.mark.parametrize("prompts_sent, cached", [
    pytest.param(["rules|question|stance 1"], [0], id="the-first-prompt-finds-nothing"),
    pytest.param(["rules|question|stance 1", "rules|question|stance 2"], [0, 22], id="shared-up-to-the-stance"),
    pytest.param(["abc", "abd", "abdx"], [0, 2, 3], id="the-longest-of-any-earlier-prompt"),
    pytest.param(["rules", "rules"], [0, 5], id="a-repeat-is-cached-whole"),
    pytest.param(["x" * 5000 + "a", "x" * 5000 + "b"], [0, 5000], id="long-prompts"),
])
def test_the_prefix_cache_holds_the_longest_common_prefix(prompts_sent: list[str], cached: list[int]) -> None:
    """A prompt's cached characters: its longest common prefix with any prompt sent before it."""
    state = fe.State(fe.Options(prefix_cache=True), random.Random(0))
    assert [fe.cached_prefix(state, prompt) for prompt in prompts_sent] == cached


def test_the_prefix_cache_reports_cached_tokens_as_openai_does() -> None:
    """--prefix-cache logs prompt and cached characters and reports usage.prompt_tokens_details.cached_tokens."""
    state = fe.State(fe.Options(prefix_cache=True), random.Random(0))
    body = json.dumps({"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "q"}]})
    first, second = fe.prefix_cache_event(state, body.encode()), fe.prefix_cache_event(state, body.encode())
    assert first == {"prompt_chars": 28, "cached_chars": 0} and second == {"prompt_chars": 28, "cached_chars": 28}
    usage = json.loads(fe.completion_body("hi", prompt_chars=24, cached_chars=24))["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 6}
    assert "prompt_tokens_details" not in json.loads(fe.completion_body("hi", prompt_chars=24))["usage"]


def test_long_replies_differ_from_their_first_words() -> None:
    """--reasoning-chars: each solver's reasoning is about that long and no two replies are alike."""
    state = fe.State(fe.Options(reasoning_chars=2400), random.Random(0))
    first, second = fe.reply_text("generate", state), fe.reply_text("generate", state)
    assert 2300 < len(first) < 2500 and first != second
    assert first.split("</reasoning>")[0][:20] != second.split("</reasoning>")[0][:20]
