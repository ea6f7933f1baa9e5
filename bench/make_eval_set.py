"""Write bench/eval_set.jsonl: questions with verified expected answers, for bench/eval.py.

    python bench/make_eval_set.py            # rewrites bench/eval_set.jsonl (deterministic)

Written for this project: every expected answer is computed here, not typed in, so it is
right by construction. Three kinds: arithmetic word problems, yes/no, multiple choice.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def word_problems(rng: random.Random, count: int) -> list[dict]:
    items = []
    for n in range(count):
        a, b, c = rng.randint(3, 19), rng.randint(4, 24), rng.randint(1, 30)
        kind = n % 4
        if kind == 0:
            q, ans = (f"A baker makes {a} trays of {b} rolls each and sells {c} rolls. How many rolls are left?",
                      a * b - c)
        elif kind == 1:
            q, ans = (f"A train travels {a * 10} km per hour for {b} hours, then {c} km more. "
                      "How many kilometres does it travel in all?", a * 10 * b + c)
        elif kind == 2:
            q, ans = (f"Mia has {a * b} stickers and shares them equally among {a} friends, then buys {c} more "
                      "for herself. How many stickers does each friend get?", b)
        else:
            q, ans = (f"A shop sells pens at {a} dollars each. Tom buys {b} pens and pays with {a * b + c} dollars. "
                      "How much change does he get, in dollars?", c)
        items.append({"id": f"arith-{n:02d}", "type": "number", "question": q, "answer": str(ans)})
    return items


def yes_no(rng: random.Random, count: int) -> list[dict]:
    items = []
    for n in range(count):
        if n % 2 == 0:
            x = rng.choice([m for m in range(50, 200) if (is_prime(m) if n % 4 == 0 else not is_prime(m) and m % 2)])
            items.append({"id": f"yesno-{n:02d}", "type": "yes_no", "question": f"Is {x} a prime number?",
                          "answer": "yes" if is_prime(x) else "no"})
        else:
            a, b = rng.randint(11, 40), rng.randint(11, 40)
            c = a * b + rng.choice([-7, -1, 1, 9])
            items.append({"id": f"yesno-{n:02d}", "type": "yes_no",
                          "question": f"Is {a} multiplied by {b} greater than {c}?", "answer": "yes" if a * b > c else "no"})
    return items


def multiple_choice(rng: random.Random, count: int) -> list[dict]:
    items = []
    for n in range(count):
        d = rng.choice([3, 7, 9, 11, 13])
        right = d * rng.randint(5, 30)
        wrong: set[int] = set()
        while len(wrong) < 3:
            w = rng.randint(20, 400)
            if w % d:
                wrong.add(w)
        options = sorted(wrong | {right})
        rng.shuffle(options)
        letters = "ABCD"
        body = "\n".join(f"({letters[i]}) {v}" for i, v in enumerate(options))
        items.append({"id": f"choice-{n:02d}", "type": "choice",
                      "question": f"Which of these numbers is divisible by {d}?\n{body}",
                      "answer": letters[options.index(right)]})
    return items


def main() -> int:
    rng = random.Random(2026)
    items = word_problems(rng, 24) + yes_no(rng, 20) + multiple_choice(rng, 20)
    for item in items:  # verify once more, independently of how each was built
        if item["type"] == "choice":
            letter = item["answer"]
            value = int(item["question"].split(f"({letter}) ")[1].split("\n")[0])
            divisor = int(item["question"].split("divisible by ")[1].split("?")[0])
            assert value % divisor == 0
    path = HERE / "eval_set.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    print(f"wrote {len(items)} items to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
