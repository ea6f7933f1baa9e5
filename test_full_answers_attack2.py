"""Full answers (issue 22), a second attack from the user's side: what the terminal shows when a streamed synthesis
is cut, and the other defects found by running the real CLI, the library and the parsers on realistic input."""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, VirtualClock, answer_in_virtual_time, completion, phases_of, test_runtime
from test_full_answers import CANDIDATES, MERGE, full_model, label_of, sse

pytestmark = pytest.mark.usefixtures("endpoint_env")


CUT = "```python\ndef merge(a, b):\n    out = []\n    while a and"


@respx.mock
def test_a_streamed_synthesis_cut_at_max_tokens_is_said_before_the_candidate(three, monkeypatch, capsys) -> None:
    """STREAM on a terminal, the synthesis cut at MAX_TOKENS (not retried): its half is on the screen, so a line
    says it was not usable before the top-ranked candidate is printed; without it the two read as one response."""
    monkeypatch.setattr(moa, "stdout_is_terminal", lambda: True)
    respx.post(URL).mock(side_effect=full_model(synthesis=lambda r, n: sse(CUT, finish="length")))
    assert moa.main(["-q", MERGE, "--stream"], runtime=test_runtime()) == 0
    out = capsys.readouterr().out
    notice = out.index("[that response was not usable; what stands:]")
    assert out.index("while a and") < notice < out.index("out, i, j = [], 0, 0") < out.index("Confidence:")


XML_CODE = "```python\nQUIZ = '<question>2+2?</question><answer>4</answer>'\n```"


@respx.mock
def test_a_streamed_response_shows_the_users_xml_as_the_response_has_it(three, monkeypatch, capsys) -> None:
    """The synthesis copies a candidate's code as its prompt showed it ("&lt;answer>", defused): the response gets
    the tags back (parse_synthesis), and so must the terminal that streamed it, or the code on screen is not the
    code in --json."""
    monkeypatch.setattr(moa, "stdout_is_terminal", lambda: True)
    defused = XML_CODE.replace("<question>", "&lt;question>").replace("<answer>", "&lt;answer>")
    respx.post(URL).mock(side_effect=full_model(synthesis=lambda r, n: sse(defused)))
    assert moa.main(["-q", MERGE, "--stream"], runtime=test_runtime()) == 0
    out = capsys.readouterr().out
    assert out.startswith(XML_CODE + "\n") and "&lt;" not in out and out.count("QUIZ =") == 1


def billed_heavily(model: Callable[[httpx.Request], httpx.Response]) -> Callable[[httpx.Request], httpx.Response]:
    """Every reply billed 500 + 2500 tokens, whatever max_tokens asked: the budget learns to expect 8x."""
    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(model(request).content)
        body["usage"] = {"prompt_tokens": 500, "completion_tokens": 2500, "total_tokens": 3000}
        return httpx.Response(200, json=body)
    return reply


@respx.mock
def test_judges_the_budget_skipped_are_not_said_to_have_failed(three, monkeypatch, capsys) -> None:
    """MAX_TOTAL_TOKENS with an endpoint billing 8x max_tokens: the judges are dropped before the synthesis (it is
    dropped last). No judge was asked, so neither the note nor the summary may say none gave a usable ranking."""
    monkeypatch.setenv("MAX_TOKENS", "300")
    monkeypatch.setenv("MAX_TOTAL_TOKENS", "60000")
    route = respx.post(URL).mock(side_effect=billed_heavily(full_model()))
    assert moa.main(["-q", MERGE, "--answer", "full"], runtime=test_runtime()) == 0
    captured = capsys.readouterr()
    assert "judge" not in phases_of(route) and "synthesis" in phases_of(route)
    assert "no judge gave a usable" not in (captured.out + captured.err).lower()
    assert "unranked: no judge ran (the budget skipped them)" in captured.out


@pytest.mark.parametrize("shape, stances", [("short", moa.prompts.SOLVER_STYLES),
                                            ("full", moa.prompts.SOLVER_STYLES_FULL)], ids=["short", "full"])
def test_each_shape_gives_its_solvers_stances_that_fit_it(shape: str, stances: tuple[str, ...]) -> None:
    """SOLVER_STYLES for a whole response: five stances about writing it, not "estimate the answer roughly, then
    compute it exactly" for an email draft; a short answer keeps its five."""
    systems = [moa.solver_prompts(MERGE, slot, True, shape)[0] for slot in range(5)]
    assert [s.rsplit("Your approach: ", 1)[1] for s in systems] == [f"{stance}." for stance in stances]
    assert len(set(moa.prompts.SOLVER_STYLES_FULL)) == len(moa.prompts.SOLVER_STYLES)
    full = " ".join(moa.prompts.SOLVER_STYLES_FULL)
    assert "compute it exactly" not in full and "candidate answers" not in full


async def test_a_rerun_stopped_at_the_deadline_says_the_synthesis_did_not_run() -> None:
    """Pass 1's judges split, the rerun hangs past QUESTION_DEADLINE: pass 1's top-ranked candidate stands,
    unsynthesized. The note said only that pass 1's verdict stands, and the summary 'Not synthesized' gave no why."""
    clock = VirtualClock()

    async def rerun_hangs(request: httpx.Request) -> httpx.Response:
        phase, agent = request.headers["X-MoA-Phase"], request.headers["X-MoA-Agent"]
        if agent == "solver-4":
            await asyncio.Event().wait()  # until asyncio.timeout (QUESTION_DEADLINE on the loop's clock) cancels it
        if phase == "judge":  # rotated labels: each judge puts another candidate first
            return completion("<analysis>all fine</analysis>\nRANKING: A > B > C\nCONFIDENCE: 90")
        if phase == "critique":
            return completion("<critique>It misses nothing.</critique>")
        code = f"<answer>def merge(a, b):\n    return sorted(a + b)  # {agent.split('->')[0]}</answer>"
        return completion(("<rebuttal>It stands.</rebuttal>\n" if phase == "rebuttal" else "") + code)

    config = moa.Config(URL, "sk-test-SECRET-1234567890abcdef", num_workers=3, num_judges=3, retry_base_delay=0,
                        straggler_factor=0, enable_file_logging=False, question_deadline=0.3, answer_shape="full")
    result = await answer_in_virtual_time(config, clock, rerun_hangs, MERGE)
    assert result.status == "ok" and result.rerun and not result.synthesized, result.error
    assert any("pass 1's verdict stands, and no synthesis ran: the top-ranked candidate stands" in note
               for note in result.notes), result.notes


@respx.mock
def test_the_synthesis_reads_each_judges_labels_as_its_own(three) -> None:
    """Each judge saw the candidates rotated (A was another solver for each), the synthesis sees them best first
    under labels of its own: a judge's "C returns them unsorted" must be mapped to the synthesis's label for that
    candidate, or the synthesis fixes the wrong one. Here solver-3 (ranked last: candidate C) is blamed by all."""
    def judge(request: httpx.Request, n: int) -> httpx.Response:
        labels = {slot: label_of(request, CANDIDATES[slot]) for slot in (0, 1, 2)}
        return completion(f"<analysis>{labels[2]} returns a + b unsorted.</analysis>\n"
                          f"RANKING: {labels[1]} > {labels[0]} > {labels[2]}\nCONFIDENCE: 90")
    route = respx.post(URL).mock(side_effect=full_model(judge=judge))
    assert moa.main(["-q", MERGE, "--json"], runtime=test_runtime()) == 0
    [synthesis] = [c for c in route.calls if c.request.headers["X-MoA-Phase"] == "synthesis"]
    user = json.loads(synthesis.request.content)["messages"][-1]["content"]
    blamed = re.findall(r"<analysis judge=\"\d\">\n(\w) returns a \+ b unsorted", user)
    legends = dict(re.findall(r"Judge (\d) saw other labels: (.*)\.\n", user))
    assert sorted(blamed) == ["A", "B", "C"]  # every judge called solver-3 by another label
    for judge_number, label in enumerate(blamed, 1):
        legend = legends.get(str(judge_number), "")  # no line: that judge's labels were the synthesis's
        assert f"its {label} is candidate C" in legend or (not legend and label == "C"), user


@respx.mock
def test_a_short_answers_synthesis_reads_each_judges_labels_as_its_own(three) -> None:
    """SYNTHESIZE=on for a short answer: the synthesis sees the agreeing solvers as A, B, C in slot order, judge 2
    saw them rotated by one (its A was solver-2): a line says so before its analysis."""
    model = FakeModel(overrides={"judge": lambda r, n: completion(
        "<analysis>A and B multiply correctly.</analysis>\nFINAL ANSWER: 391\nCONFIDENCE: 90"),
        "synthesis": lambda r, n: completion("17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391")})
    route = respx.post(URL).mock(side_effect=model)
    assert moa.main(["-q", "What is 17 * 23?", "--synthesize", "on", "--json"], runtime=test_runtime()) == 0
    [synthesis] = [c for c in route.calls if c.request.headers["X-MoA-Phase"] == "synthesis"]
    user = json.loads(synthesis.request.content)["messages"][-1]["content"]
    assert "Judge 1 saw other labels" not in user
    assert "Judge 2 saw other labels: its A is candidate B, its B is candidate C, its C is candidate A.\n" in user


@respx.mock
def test_the_transcript_says_what_each_judges_ranking_was_read_as(three, monkeypatch, tmp_path, capsys) -> None:
    """Every judge writes "RANKING: <labels>" in its own rotated labels, so three judges agreeing on solver-2 wrote
    three different lines: the judge's header says which solvers its ranking named, or the Ranking section below
    ("first for 3 judge(s)") cannot be checked against what the judges wrote."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "true")
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    respx.post(URL).mock(side_effect=full_model())
    assert moa.main(["-q", MERGE], runtime=test_runtime()) == 0
    [transcript] = tmp_path.glob("*.txt")
    headers = re.findall(r"--- judge-\d .*", transcript.read_text())
    assert len(headers) == 3 and all("read as solver-2 > solver-1 > solver-3)" in h for h in headers), headers
