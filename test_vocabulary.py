"""One word per meaning: "round" is a debate round (ROUNDS), a "pass" is the first debate or its
confidence rerun, and a phase is a Phase, never a bare string the type checker cannot see."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import httpx
import pytest
import respx

import moa_pipeline as moa
from conftest import URL, FakeModel, completion, solver_text, test_runtime

HERE = Path(__file__).resolve().parent
QUESTION = "What is 17 * 23?"
pytestmark = pytest.mark.usefixtures("endpoint_env")


def main_tree() -> ast.Module:
    return ast.parse((HERE / "moa_pipeline.py").read_text())


def enclosing(tree: ast.Module) -> dict[ast.AST, list[str]]:
    """Each node, with the names of the classes and functions around it."""
    scopes: dict[ast.AST, list[str]] = {}

    def visit(node: ast.AST, chain: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            scopes[child] = chain
            named = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            visit(child, chain + [child.name] if named else chain)  # type: ignore[attr-defined]

    visit(tree, [])
    return scopes


def test_no_phase_is_a_bare_string() -> None:
    """Outside the Phase enum, moa_pipeline.py writes no phase name as a string literal; the same word
    may still be an XML tag (parse_block), an agent's role (a regex group) or a word for people."""
    tree = main_tree()
    scopes = enclosing(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    values = {phase.value for phase in moa.Phase}
    bare = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and node.value in values):
            continue
        parent = parents[node]
        if {"Phase", "said_by_the_minority"} & set(scopes[node]):
            continue
        if isinstance(parent, ast.Call) and getattr(parent.func, "id", None) == "parse_block":
            continue
        if isinstance(parent, ast.Compare) and "group" in ast.unparse(parent):
            continue
        bare.append(f"line {node.lineno}: {node.value!r}")
    assert bare == []


def test_phases_print_as_before() -> None:
    """A Phase shows its value in JSON, f-strings and headers, so outputs stay byte-identical."""
    assert json.dumps({moa.Phase.GENERATE: [moa.Phase.JUDGE]}) == '{"generate": ["judge"]}'
    assert f"{moa.Phase.REVISE}" == str(moa.Phase.REVISE) == "revise"
    assert moa.PHASES == tuple(moa.Phase) and set(moa.PHASE_TITLES) == set(moa.PHASE_NOUNS) == set(moa.Phase)


def test_no_name_is_step() -> None:
    """A debate round is ``debate_round``: no variable, parameter or attribute is called ``step``."""
    names = [node for node in ast.walk(main_tree())
             if (isinstance(node, ast.Name) and node.id == "step") or (isinstance(node, ast.arg) and node.arg == "step")
             or (isinstance(node, ast.Attribute) and node.attr == "step")
             or (isinstance(node, ast.keyword) and node.arg == "step")]
    assert [node.lineno for node in names] == []


@pytest.mark.parametrize("record", [moa.AgentCall, moa.Debate, moa.TraceAttempt, moa.RunRecord, moa.DryRun])
def test_round_never_names_the_rerun(record: type) -> None:
    """The records that know which pass they belong to call it a pass; none keeps a ``round``."""
    fields = {f.name for f in dataclasses.fields(record)} | set(vars(record))
    assert not {name for name in fields if "round" in name and name not in ("debate_round", "rounds")}


def test_no_name_in_the_code_says_round_for_a_pass() -> None:
    """The old names of the pass are gone from moa_pipeline.py."""
    gone = {"run_rounds", "reported_round", "in_round", "calls_round_1", "round_worst_case", "round_name",
            "this_round", "round_number"}
    nodes = list(ast.walk(main_tree()))
    found = {node.id for node in nodes if isinstance(node, ast.Name)}
    found |= {node.attr for node in nodes if isinstance(node, ast.Attribute)}
    found |= {node.name for node in nodes if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found |= {node.arg for node in nodes if isinstance(node, ast.arg)}
    assert not gone & found


def old_trace(path: Path) -> Path:
    """A trace as moa_pipeline 0.6.0 wrote it: "round" was the pass, "reported_round" the one
    reported, "rounds" the verdict of each. Pass 1 said 390, pass 2 (the rerun, reported) 391."""
    lines: list[dict] = [{"type": "run", "run_id": "old-run", "question": QUESTION, "config": {}}]
    for number, answer in ((1, "390"), (2, "391")):
        lines += [{"type": "attempt", "run_id": "old-run", "round": number, "debate_round": 1, "phase": "generate",
                   "agent": f"solver-{slot}", "attempt": 1, "model": "default", "outcome": "ok",
                   "response_text": solver_text(answer)} for slot in (1, 2, 3)]
    lines.append({"type": "verdict", "run_id": "old-run", "status": "ok", "final_answer": "391",
                  "reported_round": 2, "rerun": True,
                  "rounds": [{"round": 1, "answer": "390"}, {"round": 2, "answer": "391"}]})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@respx.mock
def test_an_old_format_trace_replays(tmp_path, capsys) -> None:
    """A trace written before the rename replays from its reported pass (the rerun's answers), and
    the replay's own trace says "pass" where the old one said "round"."""
    def critique(request: httpx.Request, n: int) -> httpx.Response:
        assert "391" in request.content.decode() and "390" not in request.content.decode()
        return completion("<critique>Checked.</critique>")

    route = respx.post(URL).mock(side_effect=FakeModel(overrides={"critique": critique}))
    code = moa.main(["--replay", str(old_trace(tmp_path / "old.jsonl")), "--from", "critique", "--json",
                     "--judges", "1"], runtime=test_runtime())
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["final_answer"] == "391" and len(route.calls) == 3 + 3 + 1
    records = [json.loads(line) for line in Path(out["trace"]).read_text().splitlines()]
    restored = [r for r in records if r.get("restored")]
    assert len(restored) == 3 and all(r["pass"] == 1 and "round" not in r for r in restored)
    assert records[-1]["reported_pass"] == 1 and [p["pass"] for p in records[-1]["verdicts"]] == [1]
