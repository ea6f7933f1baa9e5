"""The code's shape is part of the product: one home per concern, small functions, one map each
for retries, exit codes and costs. These tests keep it that way."""
from __future__ import annotations

import re
import sys
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
    """Vote carries no voter: nothing read it (issue 21, item 9); a judge's name is in its call's record."""
    assert list(moa.Vote.__dataclass_fields__) == ["answer", "confidence", "tier"]
