"""The worked solution (issue 22, short answers): the verdict comes with how it was reached, on stdout under
the answer, in --json and every view of the run's record, and in the transcript."""
from __future__ import annotations

import json

import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, completion, test_runtime

pytestmark = pytest.mark.usefixtures("endpoint_env")


def position(slot: int, answer: str, reasoning: str, final: str | None = None, rebuttal: str | None = None):
    return moa.Position(slot, answer, reasoning, rebuttal=rebuttal, final_answer=final or answer)


@pytest.mark.parametrize("positions, expected", [
    ([position(0, "391", "17 * 23 = 340 + 51 = 391."), position(1, "391", "391.")], "17 * 23 = 340 + 51 = 391."),
    ([position(0, "390", "a slip", "391", "Yes, 17 * 3 is 51, not 50: 391."), position(1, "400", "rounded")],
     "Yes, 17 * 3 is 51, not 50: 391."),
    ([position(0, "391", "  "), position(1, "390", "wrong", "391", "fixed: 391")], "fixed: 391"),
    ([position(0, "400", "rounded"), position(1, "390", "a slip")], None),
], ids=["fullest-derivation-wins", "came-round-by-rebuttal", "blank-reasoning-skipped", "no-solver-held-it"])
def test_the_solution_is_the_winning_sides_reasoning(positions, expected) -> None:
    """The fullest derivation by a solver that answered the verdict first; else the reason of one that came round."""
    verdict = moa.Verdict("391", 90, 3, 3, "judges", {"391": 3}, "number")
    assert moa.worked_solution(verdict, positions, moa.normalize_answer) == expected


def worked(answer: str) -> str:
    return f"<reasoning>17 * 23 = 17 * 20 + 17 * 3\n= 340 + 51 = {answer}.\x1b[2J</reasoning>\n<answer>{answer}</answer>"


@respx.mock
def test_the_answer_comes_with_its_solution_everywhere(monkeypatch, tmp_path, capsys) -> None:
    """stdout shows the solution under the answer (control characters dropped); --json and the transcript carry it."""
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    respx.post(URL).mock(side_effect=FakeModel(overrides={"generate": lambda r, n: completion(worked("391"))}))
    assert moa.main(["-q", "What is 17 * 23?"], runtime=test_runtime()) == 0
    shown = capsys.readouterr().out.splitlines()
    at = shown.index("Answer: 391")
    assert shown[at + 1:at + 4] == ["Solution:", "  17 * 23 = 17 * 20 + 17 * 3", "  = 340 + 51 = 391.[2J"]
    assert moa.main(["-q", "What is 17 * 23?", "--json"], runtime=test_runtime()) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["solution"].startswith("17 * 23 = 17 * 20") and printed["final_answer"] == "391"
    with open(printed["transcript"]) as transcript:
        assert "solution: 17 * 23 = 17 * 20" in transcript.read()


@respx.mock
def test_model_text_cannot_drive_the_terminal(monkeypatch, capsys) -> None:
    """An answer or a minority view holding escape sequences and newlines: the summary drops the control
    characters, and a minority view stays on its one line."""
    monkeypatch.setenv("ENABLE_FILE_LOGGING", "false")
    monkeypatch.setenv("ENABLE_REBUTTAL", "false")  # each solver keeps its own answer
    answers = iter(["391\x1b[2J", "391\x1b[2J", "391\x1b[2J", "390\nforged: line\x1b[1A", "391\x1b[2J"])
    respx.post(URL).mock(side_effect=FakeModel(
        answer="391\x1b[2J", overrides={"generate": lambda r, n: completion(worked(next(answers)))}))
    assert moa.main(["-q", "What is 17 * 23?"], runtime=test_runtime()) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "Answer: 391[2J" in out
    assert [line for line in out.splitlines() if line.startswith("Also held:")] == [
        "Also held: 390 forged: line[1A (1 solver)"]
