"""The shape of the code, for the "one home for each concern" rule: sections and function sizes.

    python bench/code_shape.py                 # moa_pipeline.py, parsing.py, prompts.py
    python bench/code_shape.py --over 20       # also list every function longer than 20 lines

A function's size is its body's lines of code: the lines from its first statement after the
docstring to its end, less blank lines and comment-only lines. Nested functions count inside
their parent and are measured on their own as well.
"""
from __future__ import annotations

import argparse
import ast
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("moa_pipeline.py", "parsing.py", "prompts.py")
BANNER = re.compile(r"^# --- (\d+)\. (.+?) -+$")


@dataclass(frozen=True)
class FunctionSize:
    module: str
    name: str
    line: int
    body: int


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, source: list[str]) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]
    start, end = body[0].lineno, node.end_lineno or body[-1].lineno
    return sum(1 for line in source[start - 1:end] if line.strip() and not line.strip().startswith("#"))


def function_sizes(path: Path) -> list[FunctionSize]:
    text = path.read_text()
    lines = text.splitlines()
    return [FunctionSize(path.name, node.name, node.lineno, body_lines(node, lines))
            for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def sections(path: Path) -> list[str]:
    return [f"{m.group(1)}. {m.group(2)}" for line in path.read_text().splitlines() if (m := BANNER.match(line))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--over", type=int, default=40, help="list functions longer than this")
    args = parser.parse_args()
    sizes = [size for name in MODULES for size in function_sizes(ROOT / name)]
    body = sorted(s.body for s in sizes)
    p90 = body[max(0, int(0.9 * len(body)) - 1)] if body else 0
    print(f"{len(sizes)} functions: median {statistics.median(body):g}, p90 {p90}, max {body[-1]} lines of body")
    for size in sorted((s for s in sizes if s.body > args.over), key=lambda s: -s.body):
        print(f"  {size.body:3d}  {size.module}:{size.line} {size.name}")
    print(f"{sum(1 for line in (ROOT / MODULES[0]).read_text().splitlines())} lines in {MODULES[0]}; sections:")
    for section in sections(ROOT / MODULES[0]):
        print(f"  {section}")


if __name__ == "__main__":
    main()
