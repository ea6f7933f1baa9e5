"""Write bench/eval_set.jsonl, bench/eval_open.jsonl and bench/eval_easy.jsonl: questions with verified answers.

    python bench/make_eval_set.py            # rewrites all three files (deterministic)

Written for this project. eval_set.jsonl: every expected answer is computed here, not typed in, so
it is right by construction. Three kinds: arithmetic word problems, yes/no, multiple choice.

eval_open.jsonl: open-ended requests, each with a checkable property instead of one right answer
(bench/open_check.py): "code" (a function that must pass the given asserts) and "contains" (a list
that must name the given items). Each also carries ``oracle``: a right response and a few wrong ones
(an off-by-one, a list missing an item) for bench/fake_endpoint.py --answers. Every right response
is checked to have the property and every wrong one to lack it before the file is written.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from open_check import check_response

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


# --- easy items: what a 135M model sometimes gets right (bench/real_model.py, --eval) -------------------

# (question, answer): facts short enough that the answer is one word; typed "fact"
EASY_FACTS: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"), ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"), ("What is the capital of England?", "London"),
    ("What is the capital of Russia?", "Moscow"), ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of China?", "Beijing"), ("What is the capital of Canada?", "Ottawa"),
    ("What colour is the sky on a clear day?", "blue"), ("What colour is grass?", "green"),
    ("What is the largest planet in the Solar System?", "Jupiter"),
    ("Which planet do we live on?", "Earth"), ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"), ("Which animal says moo?", "cow"),
    ("What is the opposite of hot?", "cold"), ("What is the opposite of up?", "down"),
    ("Which star is closest to the Earth?", "Sun"),
]

# (question, answer): counts the model should know; typed "number"
EASY_COUNTS: list[tuple[str, int]] = [
    ("How many legs does a spider have?", 8), ("How many days are in a week?", 7),
    ("How many months are in a year?", 12), ("How many legs does a dog have?", 4),
    ("How many hours are in a day?", 24), ("How many minutes are in an hour?", 60),
    ("How many sides does a triangle have?", 3), ("How many sides does a square have?", 4),
    ("How many wheels does a bicycle have?", 2), ("How many legs does an insect have?", 6),
]

# (question, options, the right option's index): lettered choices; typed "choice", the answer is the letter
EASY_CHOICES: list[tuple[str, list[str], int]] = [
    ("Which is a fruit?", ["car", "apple", "rock"], 1), ("Which is an animal?", ["dog", "chair", "cloud"], 0),
    ("Which is a colour?", ["table", "river", "red"], 2), ("Which can fly?", ["fish", "bird", "stone"], 1),
    ("Which is a number?", ["seven", "green", "happy"], 0), ("Which is the largest?", ["mouse", "cat", "elephant"], 2),
    ("Which is a vegetable?", ["carrot", "shoe", "lamp"], 0), ("Which is hot?", ["ice", "snow", "fire"], 2),
    ("Which lives in water?", ["fish", "horse", "lion"], 0),
    ("Which is a day of the week?", ["June", "Monday", "Spring"], 1),
]


def easy_arithmetic(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Sums of one-digit numbers and products from the times table up to 5: answers computed, not typed."""
    items = []
    for n in range(count):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if n % 2 == 0:
            question, answer = f"What is {a} + {b}?", a + b
        else:
            a, b = rng.randint(2, 5), rng.randint(2, 5)
            question, answer = f"What is {a} times {b}?", a * b
        items.append({"id": f"easy-sum-{n:02d}", "type": "number", "question": question, "answer": str(answer)})
    return items


def easy_yes_no(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Even or odd, and greater-than, on small numbers: half true, half false, answers computed."""
    items = []
    for n in range(count):
        x, y = rng.randint(1, 20), rng.randint(1, 20)
        if n % 2 == 0:
            word = "even" if n % 4 == 0 else "odd"
            question, truth = f"Is {x} an {word} number?", (x % 2 == 0) == (word == "even")
        else:
            question, truth = f"Is {x} greater than {y}?", x > y
        items.append({"id": f"easy-yesno-{n:02d}", "type": "yes_no", "question": question + " Answer yes or no.",
                      "answer": "yes" if truth else "no"})
    return items


def easy_items() -> list[dict[str, Any]]:
    """At least 60 easy questions, mixed by kind so that a prefix of the file (--questions N) is mixed too."""
    rng = random.Random(23)
    kinds = [
        easy_arithmetic(rng, 15), easy_yes_no(rng, 15),
        [{"id": f"easy-fact-{n:02d}", "type": "fact", "question": q, "answer": a}
         for n, (q, a) in enumerate(EASY_FACTS)],
        [{"id": f"easy-count-{n:02d}", "type": "number", "question": q, "answer": str(a)}
         for n, (q, a) in enumerate(EASY_COUNTS)],
        [{"id": f"easy-choice-{n:02d}", "type": "choice",
          "question": q + " " + " ".join(f"{'ABC'[k]}) {o}" for k, o in enumerate(options)), "answer": "ABC"[right]}
         for n, (q, options, right) in enumerate(EASY_CHOICES)],
    ]
    mixed: list[dict[str, Any]] = []
    for position in range(max(len(kind) for kind in kinds)):  # round-robin over the kinds
        mixed.extend(kind[position] for kind in kinds if position < len(kind))
    return mixed


# --- open-ended items: a property to check, a right response and wrong ones for the oracle ---------------

# (id, function request, right code, [(what is wrong, the line(s) replaced, by what)], asserts)
CODE_ITEMS: list[tuple[str, str, str, list[tuple[str, str, str]], list[str]]] = [
    ("code-merge", "Write a Python function merge_sorted(a, b) that merges two sorted lists into one sorted list.",
     """def merge_sorted(a, b):
    result = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            result.append(a[i])
            i += 1
        else:
            result.append(b[j])
            j += 1
    result.extend(a[i:])
    result.extend(b[j:])
    return result""",
     [("off by one", "while i < len(a) and", "while i < len(a) - 1 and"),
      ("drops the rest of b", "    result.extend(b[j:])\n", "")],
     ["assert merge_sorted([1, 3, 5], [2, 4, 6]) == [1, 2, 3, 4, 5, 6]", "assert merge_sorted([], [1, 2]) == [1, 2]",
      "assert merge_sorted([1, 2], []) == [1, 2]", "assert merge_sorted([1, 1, 4], [1, 3]) == [1, 1, 1, 3, 4]",
      "assert merge_sorted([5], [1, 2, 3]) == [1, 2, 3, 5]"]),
    ("code-palindrome", "Write a Python function is_palindrome(text) that tells whether a string is a palindrome, "
     "ignoring case and every character that is not a letter or a digit.",
     """def is_palindrome(text):
    letters = [c.lower() for c in text if c.isalnum()]
    return letters == letters[::-1]""",
     [("keeps case", "c.lower() for c", "c for c"), ("keeps punctuation", " if c.isalnum()]", "]")],
     ['assert is_palindrome("A man, a plan, a canal: Panama") is True', 'assert is_palindrome("race a car") is False',
      'assert is_palindrome("") is True', 'assert is_palindrome("No lemon, no melon") is True']),
    ("code-fizzbuzz", "Write a Python function fizzbuzz(n) that returns the FizzBuzz strings for 1 to n as a list: "
     '"Fizz" for multiples of 3, "Buzz" for multiples of 5, "FizzBuzz" for both, else the number.',
     """def fizzbuzz(n):
    out = []
    for i in range(1, n + 1):
        if i % 15 == 0:
            out.append("FizzBuzz")
        elif i % 3 == 0:
            out.append("Fizz")
        elif i % 5 == 0:
            out.append("Buzz")
        else:
            out.append(str(i))
    return out""",
     [("off by one", "range(1, n + 1)", "range(1, n)"), ("tests 3 before 15", "i % 15 == 0", "i % 3 == 0")],
     ['assert fizzbuzz(5) == ["1", "2", "Fizz", "4", "Buzz"]', 'assert fizzbuzz(15)[-1] == "FizzBuzz"',
      "assert len(fizzbuzz(30)) == 30", "assert fizzbuzz(0) == []"]),
    ("code-second", "Write a Python function second_largest(numbers) that returns the second largest distinct "
     "value in a list, or None when there are fewer than two distinct values.",
     """def second_largest(numbers):
    distinct = sorted(set(numbers))
    return distinct[-2] if len(distinct) >= 2 else None""",
     [("counts duplicates", "sorted(set(numbers))", "sorted(numbers)"), ("second smallest", "distinct[-2]", "distinct[1]")],
     ["assert second_largest([3, 1, 4, 4]) == 3", "assert second_largest([1, 2, 3, 4, 5]) == 4",
      "assert second_largest([7, 7]) is None", "assert second_largest([]) is None",
      "assert second_largest([-1, -5]) == -5"]),
    ("code-flatten", "Write a Python function flatten(items) that flattens a list nested to any depth into a flat list.",
     """def flatten(items):
    flat = []
    for item in items:
        if isinstance(item, list):
            flat.extend(flatten(item))
        else:
            flat.append(item)
    return flat""",
     [("one level only", "flat.extend(flatten(item))", "flat.extend(item)"),
      ("drops falsy values", "        else:\n", "        elif item:\n")],
     ["assert flatten([1, [2, [3, [4]]], 5]) == [1, 2, 3, 4, 5]", "assert flatten([]) == []",
      "assert flatten([[], [[]]]) == []", "assert flatten([0, [0, [None]]]) == [0, 0, None]"]),
    ("code-bsearch", "Write a Python function binary_search(items, target) that returns the index of target in a "
     "sorted list, or -1 when it is absent.",
     """def binary_search(items, target):
    low, high = 0, len(items) - 1
    while low <= high:
        mid = (low + high) // 2
        if items[mid] == target:
            return mid
        if items[mid] < target:
            low = mid + 1
        else:
            high = mid - 1
    return -1""",
     [("misses the last candidate", "while low <= high", "while low < high"),
      ("off by one", "len(items) - 1", "len(items) - 2")],
     ["assert binary_search([1, 3, 5, 7, 9], 9) == 4", "assert binary_search([1, 3, 5, 7, 9], 1) == 0",
      "assert binary_search([1, 3, 5, 7, 9], 4) == -1", "assert binary_search([], 3) == -1",
      "assert binary_search([2], 2) == 0"]),
]

# (id, request, the items a right list names, in the order the oracle writes them)
LIST_ITEMS: list[tuple[str, str, list[str]]] = [
    ("list-planets", "List the eight planets of the Solar System, in order from the Sun.",
     ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]),
    ("list-noble", "List the six naturally occurring noble gases.",
     ["helium", "neon", "argon", "krypton", "xenon", "radon"]),
    ("list-dna", "List the four nucleobases found in DNA.", ["adenine", "cytosine", "guanine", "thymine"]),
    ("list-rgb", "List the three primary colours of light that RGB displays mix.", ["red", "green", "blue"]),
    ("list-http", "List the HTTP request methods defined in RFC 9110.",
     ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE"]),
    ("list-solid", "List the five SOLID principles of object-oriented design.",
     ["single responsibility", "open", "Liskov substitution", "interface segregation", "dependency inversion"]),
]


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def code_items() -> list[dict[str, Any]]:
    items = []
    for item_id, question, code, bugs, asserts in CODE_ITEMS:
        wrong = []
        for _, old, new in bugs:
            assert code.count(old) == 1, (item_id, old)  # each bug edits exactly one place
            wrong.append(fenced(code.replace(old, new)))
        items.append({"id": item_id, "type": "code", "question": question, "check": {"asserts": asserts},
                      "oracle": {"right": fenced(code), "wrong": wrong}})
    return items


def list_items() -> list[dict[str, Any]]:
    """Each wrong list leaves out one item: the second, the last, then the middle one."""
    items = []
    for item_id, question, names in LIST_ITEMS:
        dropped = sorted({1, len(names) - 1, len(names) // 2})
        wrong = ["\n".join(f"- {n}" for k, n in enumerate(names) if k != drop) for drop in dropped]
        items.append({"id": item_id, "type": "contains", "question": question, "check": {"items": names},
                      "oracle": {"right": "\n".join(f"- {n}" for n in names), "wrong": wrong}})
    return items


def open_items() -> list[dict[str, Any]]:
    """The open-ended items, each right response checked to have its property and each wrong one to lack it."""
    items = code_items() + list_items()
    for item in items:
        assert check_response(item, item["oracle"]["right"]), item["id"]
        for wrong in item["oracle"]["wrong"]:
            assert not check_response(item, wrong), (item["id"], wrong)
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
    opened = open_items()
    path = HERE / "eval_open.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in opened))
    print(f"wrote {len(opened)} items to {path}")
    easy = easy_items()
    assert len(easy) >= 60 and len({item["id"] for item in easy}) == len(easy)
    path = HERE / "eval_easy.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in easy))
    print(f"wrote {len(easy)} items to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
