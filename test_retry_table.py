"""Issue 21, items 3 and 4: every fault's retry decision sits in the one table, and secrets are masked where
output leaves (stdout, stderr, files), not at each call site."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import moa_pipeline as moa

SOURCE = (Path(__file__).parent / "moa_pipeline.py").read_text()
TREE = ast.parse(SOURCE)


def calls_to(name: str) -> list[tuple[str, ast.Call]]:
    """(enclosing function, call) for each call of ``name`` in moa_pipeline.py."""
    found: list[tuple[str, ast.Call]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and isinstance(node, ast.ClassDef):
                inner = f"{node.name}.{child.name}"
            if isinstance(child, ast.Call) and getattr(child.func, "id", getattr(child.func, "attr", None)) == name:
                found.append((where, child))
            visit(child, inner)

    visit(TREE, "<module>")
    return found


# --- item 3: one table ------------------------------------------------------------------------

def test_every_fault_kind_has_a_row_with_its_why() -> None:
    """Each Fault has exactly one row in FAULTS, and each row says why on its own line."""
    assert set(moa.FAULTS) == set(moa.Fault)
    rows = [line for line in inspect.getsource(moa).splitlines() if line.lstrip().startswith("Fault.")]
    assert len(rows) == len(moa.Fault) and all("  # " in row for row in rows)


def test_every_fault_kind_is_raised_somewhere() -> None:
    """No row is dead: each kind is named in the code outside its table."""
    outside = SOURCE.replace(SOURCE[SOURCE.index("FAULTS: dict"):SOURCE.index("def fault(")], "")
    assert [kind.name for kind in moa.Fault if f"Fault.{kind.name}" not in outside] == []


def test_no_api_error_is_built_without_a_decision() -> None:
    """Every APIError and EndpointStalled gets its Policy from the table: no default retry decision to rely on."""
    with pytest.raises(TypeError):
        moa.APIError("x")  # type: ignore[call-arg]
    built = calls_to("APIError") + calls_to("EndpointStalled")
    assert {where for where, _ in built} == {"fault", "proxy_credentials_error", "status_error", "Endpoint.stalled"}
    for _, call in built:
        policy = ast.unparse(call.args[1])
        assert policy in ("FAULTS[kind]", "FAULTS[Fault.STALLED]", "policy", "status_policy(407, None)"), policy


@pytest.mark.parametrize("kind, retried", [
    (moa.Fault.UNKNOWN_ENCODING, False), (moa.Fault.REFUSED, False), (moa.Fault.STALLED, False),
    (moa.Fault.EMPTY, True), (moa.Fault.NOT_A_COMPLETION, True), (moa.Fault.UNPARSEABLE, True),
    (moa.Fault.CORRUPT_ENCODING, True), (moa.Fault.TOO_LARGE, True), (moa.Fault.TIMEOUT, True),
])
def test_a_fault_is_retried_as_its_row_says(kind: moa.Fault, retried: bool) -> None:
    """A retry that cannot change the outcome (an unknown encoding, a refusal) is not made; a fresh sample is."""
    assert moa.fault(kind, "x").retryable is retried and moa.FAULTS[kind].retry is retried
