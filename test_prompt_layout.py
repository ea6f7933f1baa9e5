"""The prompts' layout for prefix caches (issue 25): most shared text first, the nonce last (prompts.py's docstring).

A prefix cache (vLLM, SGLang, llama.cpp, OpenAI) reuses the longest prompt prefix it has seen, so each phase's
prompt runs rules -> question -> what the phase's calls share -> this call's own part -> the nonce, at the very end
of the last message. Two exceptions, for small models: a solver's stance and a judge's nonce end their rules.
These tests read the requests a real debate sends (ROUNDS=2, solvers that disagree).
"""
from __future__ import annotations

import json
import re

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, body_of, completion, solver_text, test_runtime

pytestmark = pytest.mark.usefixtures("endpoint_env")

NONCE = re.compile(r"\n\n#[0-9a-f]{16}\Z")  # prompts.NONCE_SUFFIX, as the last text of a prompt


def user_of(request: httpx.Request) -> str:
    return str(json.loads(request.content)["messages"][-1]["content"])


def kept(label: str, phase: str) -> object:
    """A rebuttal or revision that keeps the answer shown after ``label`` in its prompt."""
    def reply(request: httpx.Request, n: int) -> httpx.Response:
        mine = user_of(request).split(f"{label}\n<answer>\n", 1)[1].split("\n</answer>", 1)[0]
        return completion(f"<rebuttal>I hold, {phase} {n}.</rebuttal><answer>{mine}</answer>")
    return reply


@pytest.fixture
def sent(capsys) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Every request's messages of one ROUNDS=2 debate in which solver-1 disagrees, by (phase, agent)."""
    model = FakeModel(overrides={"generate": lambda r, n: completion(solver_text(
                          "390" if r.headers["X-MoA-Agent"] == "solver-1" else "391")),
                      "rebuttal": kept("Your answer:", "rebuttal"),
                      "revise": kept("Your current answer:", "revise")})
    with respx.mock:
        route = respx.post(URL).mock(side_effect=model)
        code = moa.main(["-q", "What is 17 * 23?", "--rounds", "2", "--json"], runtime=test_runtime())
    capsys.readouterr()
    assert code == 0
    return {(c.request.headers["X-MoA-Phase"], c.request.headers["X-MoA-Agent"]): body_of(c)["messages"]
            for c in route.calls}


def serialised(messages: list[dict[str, str]]) -> str:
    """The prompt as a chat template lays it out (and a prefix cache sees it): the messages in order."""
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)


# Per phase, texts that must appear in this order: its rules, the question, what all its calls share (if anything),
# its own part; a solver's stance ends its rules (prompts.py: after the question it cost a small model its format).
# The nonce comes after all of them (checked separately: it must end the last message).
LAYOUT = [
    pytest.param("generate", "solver-2", ["You are an expert problem solver", "Your approach:", "<question>\n"],
                 id="generate"),
    pytest.param("critique", "solver-3->solver-2", ["sceptical reviewer", "<question>\n", "<reasoning>"], id="critique"),
    pytest.param("rebuttal", "solver-2", ["a reviewer critiqued your answer", "<question>\n", "Your answer:",
                                          "The reviewer's critique:"], id="rebuttal"),
    pytest.param("revise", "solver-2", ["several solvers debating", "<question>\n", "Every solver's current answer",
                                        "<other_solver>", "Your current answer:", "The critique you received:"],
                 id="revise"),
    pytest.param("judge", "judge-2", ["impartial judge", "<question>\n", '<candidate label="A">'], id="judge"),
]


@pytest.mark.parametrize("phase, agent, order", LAYOUT)
def test_each_phase_runs_from_rules_to_its_own_part_then_the_nonce(sent, phase: str, agent: str,
                                                                   order: list[str]) -> None:
    """Rules, question, the phase's shared block, the call's own part, in that order; the nonce once, at the end."""
    prompt = serialised(sent[(phase, agent)])
    where = [prompt.index(text) for text in order]
    assert where == sorted(where), list(zip(order, where, strict=True))
    ends = sent[(phase, agent)][0 if phase == "judge" else -1]["content"]  # a judge's nonce ends its rules
    assert NONCE.search(ends), "the nonce ends the last message (a judge's: its system message)"
    nonces = [found.start() for found in re.finditer(r"#[0-9a-f]{16}", prompt)]
    assert len(nonces) == 1 and (phase == "judge" or nonces[0] > where[-1])


@pytest.mark.parametrize("phase, agents, own", [
    pytest.param("generate", [f"solver-{n}" for n in range(1, 6)], "\nYour approach:", id="solvers-to-stance"),
    pytest.param("revise", [f"solver-{n}" for n in range(1, 6)], "Your current answer:", id="revisers-to-own-part"),
])
def test_a_phases_calls_share_everything_before_their_own_part(sent, phase: str, agents: list[str],
                                                               own: str) -> None:
    """Five solvers' prompts are one text up to the stance (their rules); five revisers' up to their own answer."""
    prompts = [serialised(sent[(phase, agent)]) for agent in agents]
    shared = {p[:p.index(own)] for p in prompts}
    assert len(shared) == 1 and len(set(prompts)) == len(agents)
    assert min(len(p) for p in prompts) - len(shared.pop()) < 400, "the own part is short: its stance or critique"


def test_the_revisers_block_holds_every_answer_in_slot_order(sent) -> None:
    """The common block of a later round: all five solvers' answers, the reader's own among them, in slot order."""
    user = sent[("revise", "solver-3")][-1]["content"]
    block = user.split("Every solver's current answer", 1)[1].split("Your current answer:", 1)[0]
    answers = [b.split("\n</answer>", 1)[0] for b in block.split("<other_solver>\n<answer>\n")[1:]]
    assert answers == ["390", "391", "391", "391", "391"]


def test_judges_keep_their_own_candidate_order(sent) -> None:
    """The judges share rules and question, then each reads the candidates in its own rotated order."""
    first, second = (sent[("judge", f"judge-{n}")][-1]["content"] for n in (1, 2))
    assert first.split("<candidate", 1)[0] == second.split("<candidate", 1)[0]
    assert first.split('<candidate label="A">', 1)[1][:40] != second.split('<candidate label="A">', 1)[1][:40]


def test_a_solvers_stance_ends_its_rules() -> None:
    """solver_prompts: the rules, then the slot's stance, in the system message; the user message is the question."""
    system, user = moa.solver_prompts("What is 2 + 3?", 1, True)
    assert system.startswith(moa.solver_prompts("What is 2 + 3?")[0] + "\nYour approach: work backwards")
    assert user == "<question>\nWhat is 2 + 3?\n</question>"
