"""The code's shape is part of the product: one home per concern, small functions, one map each
for retries, exit codes and costs. These tests keep it that way."""
from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import moa_pipeline as moa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "bench"))
from code_shape import function_sizes, sections  # noqa: E402


def test_contents_list_matches_the_section_banners() -> None:
    """The module docstring lists every section banner, numbered and in order, and nothing else."""
    banners = sections(HERE / "moa_pipeline.py")
    listed = re.findall(r"^\s{0,6}(\d+)\. (.+?)(?: \.\.\.|$)", moa.__doc__ or "", re.MULTILINE)
    assert len(banners) == 15
    assert [f"{number}. {title}" for number, title in listed] == banners


def test_functions_stay_small() -> None:
    """p90 of function bodies at most 20 lines of code, none over 40 (bench/code_shape.py measures)."""
    sizes = sorted(s.body for name in ("moa_pipeline.py", "parsing.py", "prompts.py")
                   for s in function_sizes(HERE / name))
    assert sizes[-1] <= 40 and sizes[int(0.9 * len(sizes)) - 1] <= 20


@pytest.mark.parametrize("error, code", [
    (moa.ConfigError("x"), 2), (moa.RunFailed("x"), 1), (moa.EndpointUnreachable("x"), 1),
    (moa.APIError("x", moa.FAIL), 1), (moa.BatchLocked("x"), 75),
    (KeyboardInterrupt(), 130), (OSError("disk"), 1), (ValueError("bug"), 1),
])
def test_one_map_from_errors_to_exit_codes(error: BaseException, code: int) -> None:
    """exit_code_for is the one place an error becomes an exit code."""
    assert moa.exit_code_for(error) == code


def test_every_exit_code_is_a_constant_in_section_one() -> None:
    """Every EXIT_* constant is defined before the configuration section begins."""
    text = (HERE / "moa_pipeline.py").read_text()
    first_section_end = text.index("# --- 2. ")
    for name in (n for n in vars(moa) if n.startswith("EXIT_")):
        assert text.index(f"\n{name} = ") < first_section_end, name


def test_budget_floors_are_restored_when_a_phase_fails() -> None:
    """kept_back restores the floors even when the work inside raises."""
    budget = moa.Budget(max_calls=10)
    with pytest.raises(RuntimeError), budget.kept_back(3, 100):
        assert (budget.floor_calls, budget.floor_tokens) == (3, 100)
        raise RuntimeError
    assert (budget.floor_calls, budget.floor_tokens) == (0, 0)


def test_the_error_tree_has_one_root() -> None:
    """Every error the tool raises on purpose is a MoAError, and carries its exit code."""
    for error in (moa.ConfigError, moa.APIError, moa.RunFailed, moa.EndpointUnreachable, moa.BatchLocked):
        assert issubclass(error, moa.MoAError) and isinstance(error.exit_code, int)


def test_a_bad_input_line_is_data_not_an_error() -> None:
    """read_items yields a bad questions-file line as a BadLine record: the error tree holds only what is raised."""
    assert not issubclass(moa.BadLine, BaseException) and not hasattr(moa, "InputError")


def test_a_vote_holds_only_what_the_tally_reads() -> None:
    """Vote carried no voter while nothing read it (issue 21, item 9). Its analysis is what a synthesis reads, and
    its judge whose labels that analysis uses (labels_seen; issue 22)."""
    assert list(moa.Vote.__dataclass_fields__) == ["answer", "confidence", "tier", "analysis", "judge"]


CEILING = 6000  # lines: moa_pipeline.py grows by simplifying, not by accretion (issue 21)
PUBLIC = {"debate", "debate_sync", "Debater", "Settings", "Result", "Usage", "PhaseCounts", "FormatCounts",
          "SolverAnswers", "Dissent", "RankedCandidate", "Config", "ConfigError", "RunFailed", "main", "console", "__version__"}
# Where a section must use a name defined in a later one, and why. Every other reference points back.
LOOKS_AHEAD = {
    "Fault": "§5 reads each reply and names its fault by the retry table in §6, which steers the loop beside it",
    "fault": "as Fault",
    "FAULTS": "as Fault",
    "exception_error": "as Fault: a transport error's meaning is a row of the same table",
    "status_error": "as Fault: an HTTP status's meaning is a row of the same table",
    "Billing": "the endpoint keeps what it bills (§7), one record shared by every question it serves",
    "estimate_tokens": "an attempt's tokens, when the endpoint reports none, come from the cost model's one estimate",
    "prompt_tokens_estimate": "as estimate_tokens",
    "Position": "the cost model (§7) prices the very prompts the phases send, built from the solvers' positions",
    "solver_prompts": "as Position", "critic_prompts": "as Position", "rebuttal_prompts": "as Position",
    "revise_prompts": "as Position", "judge_prompts": "as Position", "short_reason": "as Position",
    "synthesis_prompts": "as Position: the synthesis is kept back at its worst case from the start",
    "open_run_files": "a question (§11) writes its own transcript and trace: files (§12) are its edge",
    "render_transcript": "as open_run_files", "open_existing": "as open_run_files",
    "run_replay": "a question (§11) may be a replay of a trace (§13), which reads what §11 records",
    "ResponseCache": "the endpoint (§5) keeps the client's response cache, a file: files (§12) are its edge",
    "response_key": "as ResponseCache: an attempt (§6) looks its reply up there by this key",
}


def section_of(lines: list[str]) -> Callable[[int], int]:
    starts = [(number, int(m.group(1))) for number, line in enumerate(lines, 1)
              if (m := re.match(r"^# --- (\d+)\. ", line))]
    return lambda line: max((section for start, section in starts if line >= start), default=0)


def forward_references() -> set[tuple[str, str]]:
    """(user, name) where a top-level definition uses, at run time, a name that a later section defines.
    Annotations are types, not uses (the module has postponed annotations); a function's locals are its own."""
    text = (HERE / "moa_pipeline.py").read_text()
    tree, section = ast.parse(text), section_of(text.splitlines())
    defined: dict[str, int] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names = [getattr(node, "name", None)] + [t.id for t in targets if isinstance(t, ast.Name)]
        for name in filter(None, names):
            defined.setdefault(name, section(node.lineno))
    found = set()
    for node in tree.body:
        annotations = {id(part) for sub in ast.walk(node)
                       for ann in (getattr(sub, "annotation", None), getattr(sub, "returns", None)) if ann
                       for part in ast.walk(ann)}
        local = {sub.arg for sub in ast.walk(node) if isinstance(sub, ast.arg)} | {
            sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store)}
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Name) and id(sub) not in annotations and sub.id not in local
                    and defined.get(sub.id, 0) > section(node.lineno)):
                found.add((getattr(node, "name", "?"), sub.id))
    return found


def test_no_section_uses_a_later_one_unless_it_says_why() -> None:
    """The file reads top to bottom: a name is defined before the sections that use it, or LOOKS_AHEAD says why not."""
    found = forward_references()
    assert not sorted((user, name) for user, name in found if name not in LOOKS_AHEAD)
    assert set(LOOKS_AHEAD) == {name for _, name in found}, "an entry no code needs any more goes"


def test_the_module_stays_under_its_ceiling() -> None:
    """moa_pipeline.py stays under 6,000 lines: a feature pays for its lines by making something else simpler."""
    assert len((HERE / "moa_pipeline.py").read_text().splitlines()) < CEILING


def test_the_public_surface_is_declared() -> None:
    """__all__ names the library's API, and each name is there: everything else is the module's own."""
    assert set(moa.__all__) == PUBLIC and all(hasattr(moa, name) for name in PUBLIC)


def test_nothing_shadows_the_public_debate() -> None:
    """No parameter or local variable is named debate: inside the module, debate() is always the library's entry."""
    tree = ast.parse((HERE / "moa_pipeline.py").read_text())
    assert not [node.lineno for node in ast.walk(tree)
                if (isinstance(node, ast.arg) and node.arg == "debate")
                or (isinstance(node, ast.Name) and node.id == "debate" and isinstance(node.ctx, ast.Store))]
