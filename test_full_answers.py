"""Full answers (issue 22): a whole response, ranked by the judges (Borda), written by a synthesis, and carried by
every view of the run: stdout, --json, batch lines, the Batch API format, the transcript and the trace."""
from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
import prompts
from conftest import URL, FakeModel, completion, debate_at, phases_of, test_runtime

pytestmark = pytest.mark.usefixtures("endpoint_env")

MERGE = "Write a Python function that merges two sorted lists"
CANDIDATES = {  # each solver's response, by slot; solver-2's is the one the judges like
    0: "def merge(a, b):\n    return sorted(a + b)",
    1: "def merge(a, b):\n    out, i, j = [], 0, 0\n    while i < len(a) and j < len(b):\n        ...\n"
       "    return out + a[i:] + b[j:]",
    2: "def merge(a, b):\n    return a + b",
}
SYNTHESIS = "def merge(a, b):\n    \"\"\"Merge two sorted lists in O(n).\"\"\"\n    return out"


def slot_of(request: httpx.Request) -> int:
    return int(re.search(r"solver-(\d+)", request.headers["X-MoA-Agent"]).group(1)) - 1


def own_answer(request: httpx.Request) -> str:
    user = json.loads(request.content)["messages"][-1]["content"]
    return user.split("Your answer:\n<answer>\n", 1)[-1].split("\n</answer>", 1)[0]


def label_of(request: httpx.Request, text: str) -> str:
    """The label this judge shows ``text`` under (labels rotate per judge)."""
    user = json.loads(request.content)["messages"][-1]["content"]
    for label, body in re.findall(r'<candidate label="([A-Z]+)">\n<answer>\n(.*?)\n</answer>', user, re.S):
        if body == text:
            return label
    raise AssertionError("candidate not shown")


def ranking_judge(confidence: int = 80, order: tuple[int, ...] = (1, 0, 2)):
    def reply(request: httpx.Request, n: int) -> httpx.Response:
        labels = " > ".join(label_of(request, CANDIDATES[slot]) for slot in order)
        return completion(f"<analysis>Candidate two is linear.</analysis>\nRANKING: {labels}\n"
                          f"CONFIDENCE: {confidence}")
    return reply


def full_model(synthesis=lambda r, n: completion(SYNTHESIS), judge=None) -> FakeModel:
    return FakeModel(overrides={
        "generate": lambda r, n: completion(f"<reasoning>plan</reasoning>\n<answer>{CANDIDATES[slot_of(r)]}</answer>"),
        "rebuttal": lambda r, n: completion(f"<rebuttal>It stands.</rebuttal>\n<answer>{own_answer(r)}</answer>"),
        "judge": judge or ranking_judge(), "synthesis": synthesis})


@respx.mock
def test_an_open_request_prints_the_synthesized_response(three, monkeypatch, tmp_path, capsys) -> None:
    """The done-when case: the function, whole, on stdout, from a synthesis of ranked candidates; --json carries the
    same text, the ranking and the shape; the transcript has the ranking and the synthesis."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "true")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    route = respx.post(URL).mock(side_effect=full_model())
    assert moa.main(["-q", MERGE], runtime=test_runtime()) == 0
    out = capsys.readouterr().out
    assert out.startswith(SYNTHESIS + "\n")
    assert "Confidence: 100/100, 3/3 judges ranked it first" in out and "Synthesized from" in out
    assert phases_of(route).count("synthesis") == 1 and phases_of(route)[-1] == "synthesis"
    assert moa.main(["-q", MERGE, "--json"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["response"] == SYNTHESIS and printed["answer_shape"] == "full" and printed["synthesized"]
    assert printed["final_answer"] is None and printed["solution"] is None and not printed["degraded"]
    assert [(r["agent"], r["label"], r["score"], r["first_places"]) for r in printed["ranking"]] == [
        ("solver-2", "B", 1.0, 3), ("solver-1", "A", 0.5, 0), ("solver-3", "C", 0.0, 0)]
    transcript = Path(printed["transcript"]).read_text()
    assert "=== Ranking" in transcript and "Phase 5 - Synthesis" in transcript and SYNTHESIS in transcript


@respx.mock
def test_synthesis_reads_the_top_candidates_critiques_and_analyses(three) -> None:
    """The synthesis prompt holds the top-ranked candidates best first, their critiques, and the judges' analyses;
    it goes to SYNTHESIS_MODEL."""
    route = respx.post(URL).mock(side_effect=full_model())
    record = moa.main(["-q", MERGE, "--json"], runtime=test_runtime())
    assert record == 0
    [call] = [c for c in route.calls if c.request.headers["X-MoA-Phase"] == "synthesis"]
    body = json.loads(call.request.content)
    user = body["messages"][-1]["content"]
    assert user.index(CANDIDATES[1]) < user.index(CANDIDATES[0]) < user.index(CANDIDATES[2])
    assert "Candidate two is linear." in user and "I recomputed it" in user
    assert body["model"] == "default"


@respx.mock
def test_a_failed_synthesis_leaves_the_top_candidate_degraded(three, capsys) -> None:
    """The synthesis fails (400): the top-ranked candidate is the response, the run is degraded, exit 0."""
    route = respx.post(URL).mock(side_effect=full_model(synthesis=lambda r, n: httpx.Response(400, json={})))
    assert moa.main(["-q", MERGE, "--json"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["response"] == CANDIDATES[1] and not printed["synthesized"] and printed["degraded"]
    assert printed["phases"]["synthesis"] == {"ok": 0, "failed": 1} and phases_of(route).count("synthesis") == 1


@respx.mock
@pytest.mark.parametrize("flags, synthesis_calls, response", [
    (["--synthesize", "off"], 0, CANDIDATES[1]), (["--synthesize", "on"], 1, SYNTHESIS), ([], 1, SYNTHESIS)],
    ids=["off", "on", "auto"])
def test_synthesize_setting(three, capsys, flags, synthesis_calls, response) -> None:
    """SYNTHESIZE=off: the top-ranked candidate is the response; auto and on synthesize a full answer."""
    route = respx.post(URL).mock(side_effect=full_model())
    assert moa.main(["-q", MERGE, "--json", *flags], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert phases_of(route).count("synthesis") == synthesis_calls and printed["response"] == response


@respx.mock
@pytest.mark.parametrize("question, flags, shape", [
    ("What is 17 * 23?", [], "short"), (MERGE, [], "full"), ("What is 17 * 23?", ["--answer", "full"], "full"),
    (MERGE, ["--answer", "short"], "short")], ids=["auto-short", "auto-full", "forced-full", "forced-short"])
def test_the_shape_is_chosen_or_forced(three, capsys, question, flags, shape) -> None:
    """auto picks the shape from the question; --answer forces it, and the solvers get that shape's contract."""
    route = respx.post(URL).mock(side_effect=full_model() if shape == "full" else FakeModel())
    assert moa.main(["-q", question, "--json", *flags], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["answer_shape"] == shape
    system = json.loads(route.calls[0].request.content)["messages"][0]["content"]
    wanted = prompts.SOLVER_SYSTEM_FULL if shape == "full" else prompts.SOLVER_SYSTEM
    assert system.startswith(prompts.render(wanted))
    judge = next(c for c in route.calls if c.request.headers["X-MoA-Phase"] == "judge")
    assert ("RANKING" in json.loads(judge.request.content)["messages"][0]["content"]) == (shape == "full")
    if shape == "short":
        assert printed["final_answer"] == "391" and printed["response"] == "391" and printed["ranking"] == []


@respx.mock
def test_short_answer_with_synthesis_on_gets_a_written_solution(three, capsys) -> None:
    """SYNTHESIZE=on for a short answer: the verdict stays the vote; the synthesis writes its solution."""
    model = FakeModel(overrides={"synthesis": lambda r, n: completion("17 * 23 = 340 + 51 = 391.")})
    route = respx.post(URL).mock(side_effect=model)
    assert moa.main(["-q", "What is 17 * 23?", "--json", "--synthesize", "on"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["final_answer"] == "391" and printed["solution"] == "17 * 23 = 340 + 51 = 391."
    assert printed["synthesized"] and phases_of(route).count("synthesis") == 1


@respx.mock
def test_unusable_rankings_are_given_up_on_then_the_run_goes_on(three, monkeypatch, capsys) -> None:
    """Judges that name no candidate, the first three replies all, are not retried (FORMAT_GIVE_UP_REPLIES); with no
    ranking, the response is unranked, and the record doubts it."""
    monkeypatch.setenv("MIN_JUDGE_CONFIDENCE", "0")  # its confidence is 0: no rerun here
    route = respx.post(URL).mock(side_effect=full_model(
        judge=lambda r, n: completion("I like them all."), synthesis=lambda r, n: completion(SYNTHESIS)))
    assert moa.main(["-q", MERGE, "--json"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert phases_of(route).count("judge") == 3  # once each: no retry reads a judge that cannot rank
    assert printed["ranking"] == [] and printed["verdict_source"] == "solvers" and printed["degraded"]
    assert {"no_judge_verdict", "judge_retries_stopped"} <= set(printed["doubts"])


@respx.mock
def test_split_judges_trigger_the_rerun_and_one_synthesis(three, capsys) -> None:
    """For full answers the confidence is the judges' agreement on the winner: split judges rerun the debate, and
    the synthesis runs once, after it."""
    orders = [(1, 0, 2), (0, 1, 2), (2, 1, 0)]
    judge = ranking_judge()

    def split(request: httpx.Request, n: int) -> httpx.Response:
        if n >= 3:  # the rerun's judges agree
            return judge(request, n)
        labels = " > ".join(label_of(request, CANDIDATES[s]) for s in orders[n])
        return completion(f"RANKING: {labels}\nCONFIDENCE: 90")

    def generate(request: httpx.Request, n: int) -> httpx.Response:  # the rerun's two more: answers of their own
        return completion(f"<answer>{CANDIDATES.get(slot_of(request), 'def merge(a, b):  # new')}</answer>")

    model = full_model(judge=split)
    model.overrides["generate"] = generate
    route = respx.post(URL).mock(side_effect=model)
    assert moa.main(["-q", MERGE, "--json"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rerun"] and phases_of(route).count("synthesis") == 1 and printed["confidence"] == 100
    assert phases_of(route)[-1] == "synthesis" and phases_of(route).count("judge") == 6


@respx.mock
@pytest.mark.parametrize("max_calls, calls, skipped", [
    (12, {"generate": 3, "critique": 3, "rebuttal": 2, "judge": 3, "synthesis": 1}, ["pass 1: 1 rebuttal(s)"]),
    (4, {"generate": 3, "synthesis": 1}, ["3 critique(s)", "3 rebuttal(s)", "3 judge(s)"]),
    (3, {"generate": 2, "synthesis": 1}, ["generate solver-3", "2 critique(s)", "2 rebuttal(s)", "3 judge(s)"]),
    (2, {"generate": 2}, ["synthesis", "generate solver-3", "2 critique(s)", "2 rebuttal(s)", "3 judge(s)"])],
    ids=["one-short", "only-solvers-and-synthesis", "before-a-solver-beyond-the-quorum", "no-room-beside-the-quorum"])
def test_the_budget_drops_the_synthesis_last(three, monkeypatch, capsys, max_calls, calls, skipped) -> None:
    """MAX_CALLS short of everything: rebuttals, critiques and judges are cut before the synthesis, which is dropped
    only when the solvers' quorum would not fit beside it."""
    monkeypatch.setenv("MIN_JUDGE_CONFIDENCE", "0")  # no rerun to keep back for
    route = respx.post(URL).mock(side_effect=full_model())
    assert moa.main(["-q", MERGE, "--json", "--max-calls", str(max_calls)], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {p: phases_of(route).count(p) for p in calls} == calls and len(route.calls) == sum(calls.values())
    assert printed["synthesized"] == ("synthesis" in calls) and printed["degraded"]
    assert sorted(s.replace("pass 1: ", "") for s in printed["skipped"]) == sorted(
        s.replace("pass 1: ", "") for s in skipped)


def test_dry_run_prices_the_synthesis(three, capsys) -> None:
    """--dry-run lists the synthesis (one call, once) for a full answer, and none for a short one."""
    assert moa.main(["-q", MERGE, "--dry-run", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["phases"]
    assert [(r["pass"], r["calls"]) for r in rows if r["phase"] == "synthesis"] == [("1", 1)]
    assert moa.main(["-q", "What is 17 * 23?", "--dry-run", "--json"]) == 0
    assert all(r["phase"] != "synthesis" for r in json.loads(capsys.readouterr().out)["phases"])


def replayed_synthesis(monkeypatch, tmp_path, capsys, *flags: str) -> tuple[respx.Route, dict]:
    """A full answer run with its trace, then --replay --from synthesis of it (with ``flags``): the route the replay
    sent to (its synthesis writes "def merge(): pass") and the replay's --json."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "true")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    respx.post(URL).mock(side_effect=full_model())
    assert moa.main(["-q", MERGE, "--json"], runtime=test_runtime()) == 0
    trace = json.loads(capsys.readouterr().out)["trace"]
    respx.clear()
    route = respx.post(URL).mock(side_effect=full_model(synthesis=lambda r, n: completion("def merge(): pass")))
    assert moa.main(["--replay", trace, "--from", "synthesis", "--json", *flags], runtime=test_runtime()) == 0
    return route, json.loads(capsys.readouterr().out)


@respx.mock
def test_replay_from_synthesis_writes_only_the_synthesis_again(three, monkeypatch, tmp_path, capsys) -> None:
    """--replay --from synthesis keeps the judges' ranking from the trace and sends one call: the synthesis."""
    route, printed = replayed_synthesis(monkeypatch, tmp_path, capsys)
    assert phases_of(route) == ["synthesis"] and printed["response"] == "def merge(): pass"
    assert printed["ranking"][0]["agent"] == "solver-2" and printed["answer_shape"] == "full"


@respx.mock
def test_the_batch_api_line_carries_the_response(three, tmp_path) -> None:
    """--output-format openai-batch: choices[0].message.content is the whole response."""
    respx.post(URL).mock(side_effect=full_model())
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "m1", "question": MERGE}) + "\n")
    out = tmp_path / "out.jsonl"
    assert moa.main(["-f", str(questions), "-o", str(out), "--output-format", "openai-batch"],
                    runtime=test_runtime()) == 0
    line = json.loads(out.read_text())
    assert line["response"]["body"]["choices"][0]["message"]["content"] == SYNTHESIS
    assert line["moa"]["ranking"][0]["agent"] == "solver-2"


def sse(text: str, cut: bool = False, finish: str = "stop") -> httpx.Response:
    """``text`` streamed in 7-character pieces, ending with ``finish`` ("length": cut at MAX_TOKENS), or ``cut``
    off with neither a finish_reason nor [DONE]."""
    pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
    events = "".join(f"data: {json.dumps({'choices': [{'delta': {'content': p}}]})}\n\n" for p in pieces)
    if not cut:
        events += f"data: {json.dumps({'choices': [{'delta': {}, 'finish_reason': finish}]})}\n\ndata: [DONE]\n\n"
    return httpx.Response(200, content=events.encode(), headers={"Content-Type": "text/event-stream"})


@respx.mock
def test_the_synthesis_streams_to_a_terminal(three, monkeypatch, capsys) -> None:
    """STREAM on a terminal: the response is shown as it is written, once; an unusable stream is said and written again;
    the summary lines follow without printing it twice."""
    monkeypatch.setattr(moa, "stdout_is_terminal", lambda: True)
    synthesis = {0: sse(SYNTHESIS[:20], cut=True), 1: sse(SYNTHESIS)}
    respx.post(URL).mock(side_effect=full_model(synthesis=lambda r, n: synthesis[n]))
    assert moa.main(["-q", MERGE, "--stream"], runtime=test_runtime()) == 0
    out = capsys.readouterr().out
    assert "[that response was not usable (cut off, or not a response); it is written again]" in out
    assert out.count("Merge two sorted lists in O(n).") == 1
    assert out.index("    return out") < out.index("Confidence:")


@respx.mock
@pytest.mark.parametrize("model, flags, lines", [
    (lambda: full_model(), [], ["Confidence: 100/100, 3/3 judges ranked it first",
                                "Ranking (Borda score, 95% interval): B solver-2 1.00 [1.00, 1.00]; "
                                "A solver-1 0.50 [0.50, 0.50]; C solver-3 0.00 [0.00, 0.00]",
                                "Synthesized from the top-ranked candidates"]),
    (lambda: full_model(judge=lambda r, n: completion("no idea")), ["--synthesize", "off"],
     ["Confidence: 0/100, unranked: no judge gave a usable ranking", "Not synthesized: the first candidate"]),
    (lambda: FakeModel(overrides={"generate": lambda r, n: completion(f"<answer>{SYNTHESIS}</answer>"),
                                  "synthesis": lambda r, n: completion(SYNTHESIS)}), ["--early-exit"],
     ["Confidence: 100/100, unranked: every solver wrote the same response (early exit)",
      "Synthesized from the candidates"])], ids=["ranked", "no-ranking", "unanimous"])
def test_the_summary_says_how_the_response_was_chosen(three, monkeypatch, capsys, model, flags, lines) -> None:
    """Under the response: the judges' agreement and the ranking, or why there is none, and who wrote it."""
    monkeypatch.setenv("MIN_JUDGE_CONFIDENCE", "0")
    respx.post(URL).mock(side_effect=model())
    assert moa.main(["-q", MERGE, *flags], runtime=test_runtime()) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index(lines[0])
    assert out[at:at + len(lines)] == lines and out[at - 1] == ""  # a blank line after the response


@respx.mock
def test_identical_responses_do_not_split_the_judges(three, capsys) -> None:
    """Two solvers wrote the same response: judges that each put one of the twins first agree, so no rerun."""
    twins = {0: CANDIDATES[1], 1: CANDIDATES[1], 2: CANDIDATES[2]}

    def judge(request: httpx.Request, n: int) -> httpx.Response:  # each judge's first label for the twin text
        return completion(f"RANKING: {label_of(request, CANDIDATES[1])} > {label_of(request, CANDIDATES[2])}\n"
                          "CONFIDENCE: 90")

    model = full_model(judge=judge)
    model.overrides["generate"] = lambda r, n: completion(f"<answer>{twins[slot_of(r)]}</answer>")
    route = respx.post(URL).mock(side_effect=model)
    assert moa.main(["-q", MERGE, "--json", "--no-rebuttal"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["confidence"] == 100 and not printed["rerun"] and phases_of(route).count("generate") == 3


@respx.mock
async def test_the_library_gets_the_response_and_ranking(three) -> None:
    """debate(answer_shape="full") returns a Result with the response, its ranking and the shape."""
    respx.post(URL).mock(side_effect=full_model())
    result = await debate_at(test_runtime(), MERGE, answer_shape="full", synthesize="on")
    assert result.response == SYNTHESIS and result.answer_shape == "full" and result.synthesized
    assert result.final_answer is None and result.ranking[0]["agent"] == "solver-2"


@respx.mock
def test_a_replay_keeps_its_traces_shape(three, monkeypatch, tmp_path, capsys) -> None:
    """--replay reruns phases over answers written in the trace's shape: --answer asking another shape is one error
    line and exit 2; the same shape, or none, replays; the Batch API line names the synthesis's model."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "true")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    respx.post(URL).mock(side_effect=full_model())
    assert moa.main(["-q", MERGE, "--json"], runtime=test_runtime()) == 0
    trace = json.loads(capsys.readouterr().out)["trace"]
    assert moa.main(["--replay", trace, "--from", "judges", "--answer", "short"], runtime=test_runtime()) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --answer short: this trace's answers")
    assert moa.main(["--replay", trace, "--from", "judges", "--answer", "full", "--json"], runtime=test_runtime()) == 0
    assert json.loads(capsys.readouterr().out)["answer_shape"] == "full"
    line = moa.openai_batch_line({"id": "x", "status": "ok", "response": "r", "synthesized": True,
                                  "usage": dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens"), 1)},
                                 moa.Config(URL, "k" * 8, synthesis_model="writer"), 0)
    assert line["response"]["body"]["model"] == "writer"
