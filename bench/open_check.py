"""The checkable property of an open-ended eval item (bench/eval_open.jsonl): does a response have it?

    check_response(item, text) -> bool

Two kinds, by the item's ``type``:
  code      the response's Python code, then the item's asserts, run in a fresh interpreter (a
            subprocess with a timeout and CPU and memory limits: never in this process). The code is
            the first fenced ```python (or ```py) block, else the first bare ``` block, else the whole
            text. The property holds when the process runs past the last assert and exits 0.
  contains  every item of ``check.items`` appears in the text, case-insensitively, as a whole word or
            phrase ("red" is not found in "hundred").

Only the standard library: bench/make_eval_set.py checks its own reference answers with it.
The subprocess is a guard against a hung or greedy candidate, not a sandbox: run untrusted
models' code only where you would run it by hand.
"""
from __future__ import annotations

import re
import secrets
import subprocess
import sys
import tempfile
from typing import Any

CODE_TIMEOUT_S = 10.0
CODE_MEMORY_BYTES = 1 << 30

# A fenced block: the opening fence with its language word, the body (lazily, up to the next fence
# line), the closing fence. Line-anchored; the lazy body stops at the first closing fence, so one scan.
_FENCE = re.compile(r"^[ \t]{0,3}```[ \t]{0,4}([A-Za-z0-9_+-]{0,20})[ \t]{0,4}\n(.*?)^[ \t]{0,3}```", re.M | re.S)


def code_of(text: str) -> str:
    """The code in a response: its first python-tagged fenced block, else its first bare fenced block,
    else the whole text (a response that is only code, as the pipeline leaves a candidate's answer)."""
    blocks = [(match.group(1).lower(), match.group(2)) for match in _FENCE.finditer(text)]
    for wanted in (("python", "py", "python3"), ("",)):
        for language, body in blocks:
            if language in wanted:
                return body
    return text


# The child limits itself before the candidate runs (not a preexec_fn, which is unsafe once the
# caller has threads: eval.py checks from a thread pool): a runaway candidate cannot take the machine.
_PRELUDE = (f"import resource\nresource.setrlimit(resource.RLIMIT_CPU, ({int(CODE_TIMEOUT_S) + 1}, "
            f"{int(CODE_TIMEOUT_S) + 1}))\nresource.setrlimit(resource.RLIMIT_AS, ({CODE_MEMORY_BYTES}, "
            f"{CODE_MEMORY_BYTES}))\ndel resource\n")


def code_passes(code: str, asserts: list[str], timeout: float = CODE_TIMEOUT_S) -> bool:
    """Whether ``code`` followed by ``asserts`` runs to its end in a fresh, isolated interpreter: exit 0
    and a fresh token printed after the last assert (code that exits 0 early skipped the asserts)."""
    token = secrets.token_hex(8)
    program = _PRELUDE + code + "\n\n" + "\n".join(asserts) + f"\nprint({token!r})\n"
    with tempfile.TemporaryDirectory() as scratch:
        try:
            done = subprocess.run([sys.executable, "-I", "-c", program], cwd=scratch, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, check=False)
        except (subprocess.TimeoutExpired, OSError, ValueError):  # ValueError: a NUL byte in the program
            return False
    return done.returncode == 0 and token in done.stdout.decode("utf-8", "replace")


def contains_all(text: str, items: list[str]) -> bool:
    """Every item in ``text``, case-insensitively, not as part of a longer word."""
    lowered = text.lower()
    return all(re.search(r"(?<!\w)" + re.escape(item.lower()) + r"(?!\w)", lowered) for item in items)


def check_response(item: dict[str, Any], text: str | None) -> bool:
    """Whether ``text`` has the item's checkable property; no text never has it."""
    if not text:
        return False
    if item["type"] == "code":
        return code_passes(code_of(text), item["check"]["asserts"])
    if item["type"] == "contains":
        return contains_all(text, item["check"]["items"])
    raise ValueError(f"unknown open item type {item['type']!r}")
