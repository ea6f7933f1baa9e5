"""Answer shapes (issue 22): which questions get a full response, what a synthesis reply gives, and
the full-answer and synthesis templates. Tables of realistic questions and model replies."""
from __future__ import annotations

import hashlib
import string
import time

import pytest

import prompts
from parsing import parse_full_answer, parse_synthesis, question_shape

# --- question_shape -----------------------------------------------------------------

CODE_FIX = "Here is my code:\n```py\ndef merge(a, b):\n    return a + b\n```\nFix the bug."
CHOICE = "Which of these numbers is prime?\n(A) 21\n(B) 23\n(C) 25\n(D) 27"

SHAPE_CASES = [
    # full: open-ended requests
    pytest.param("Write a Python function that merges two sorted lists", "full", "write", id="write-function"),
    pytest.param("Explain why the sky is blue", "full", "explain", id="explain-why"),
    pytest.param("Draft a reply to this email: Hi, can we move Tuesday's meeting? Is 3pm ok?", "full", "draft",
                 id="draft-reply-email-holds-questions"),
    pytest.param("Summarize the following article: Inflation fell to 2%. Who gains? Markets rose.", "full",
                 "summarize", id="summarize-article"),
    pytest.param("Summarise this paragraph for a child.", "full", "summarise", id="summarise-british"),
    pytest.param("Compare Rust and Go for CLI tools", "full", "compare", id="compare"),
    pytest.param("List five uses of baking soda", "full", "list", id="list-five-uses"),
    pytest.param("Can you write a haiku about autumn?", "full", "write", id="can-you-write"),
    pytest.param("Please explain how TCP handshakes work.", "full", "explain", id="please-explain"),
    pytest.param("How do I reverse a list in Python?", "full", "how", id="how-do-i"),
    pytest.param("how to center a div in css", "full", "how", id="how-to-lowercase"),
    pytest.param("Why do cats purr?", "full", "why", id="why-question"),
    pytest.param("Give me a recipe for pancakes", "full", "something", id="give-me-recipe"),
    pytest.param(CODE_FIX, "full", "fix", id="code-block-fix-the-bug"),
    pytest.param("```js\nconst x = 1\nx = 2\n```\nWhat's wrong with this?", "full", "code",
                 id="code-block-whats-wrong"),
    pytest.param("Translate 'good morning' into French and Spanish", "full", "translate", id="translate"),
    pytest.param("Given a list of integers, write a function that returns the largest.", "full", "write",
                 id="given-clause-then-write"),
    pytest.param("Read the essay below and then summarize it in three bullet points.", "full", "summarize",
                 id="and-then-summarize"),
    pytest.param("Hi! Could you please help me plan a 3-day trip to Rome?", "full", "help",
                 id="greeting-polite-help"),
    pytest.param("I need a bash script that renames all .txt files to .md", "full", "something", id="i-need-a"),
    pytest.param("What are the pros and cons of remote work?", "full", "explanation", id="what-pros-and-cons"),
    pytest.param("What's the difference between a list and a tuple in Python?", "full", "explanation",
                 id="whats-the-difference"),
    pytest.param("Tell me about the French Revolution.", "full", "told", id="tell-me-about"),
    pytest.param("Who wrote Hamlet? Summarize its plot in a paragraph.", "full", "summarize",
                 id="short-question-then-open-request"),
    pytest.param("Do you know why the sky is blue?", "full", "why", id="do-you-know-why"),
    pytest.param("Prove that the square root of 2 is irrational.", "full", "prove", id="prove"),
    pytest.param("Is it better to rent or buy a house? Explain.", "full", "better", id="is-it-better-x-or-y"),
    pytest.param("Would it be better to use tabs or spaces?", "full", "better", id="would-it-be-better"),
    pytest.param("What are some good exercises for back pain?", "full", "explanation", id="what-are-some"),
    pytest.param("Pros and cons of remote work?", "full", "explanation", id="pros-and-cons-no-verb"),
    pytest.param("Differences between TCP and UDP?", "full", "explanation", id="differences-no-verb"),
    pytest.param("Écris une fonction Python qui trie une liste.", "full", "write", id="french-write"),
    pytest.param("Pouvez-vous expliquer la photosynthèse ?", "full", "explain", id="french-polite-explain"),
    pytest.param("Erkläre, wie ein Verbrennungsmotor funktioniert.", "full", "explain", id="german-explain"),
    pytest.param("Bitte schreibe eine E-Mail an meinen Chef.", "full", "write", id="german-please-write"),
    pytest.param("Warum ist der Himmel blau?", "full", "why", id="german-why"),
    pytest.param("¿Por qué el cielo es azul?", "full", "why", id="spanish-why"),
    pytest.param("Resume este texto: El gato duerme en el sofá.", "full", "summarize", id="spanish-summarize"),
    pytest.param("Scrivi una poesia sul mare.", "full", "write", id="italian-write"),
    pytest.param("用Python写一个快速排序函数。", "full", "without spaces", id="chinese-write-code"),
    pytest.param("天空为什么是蓝色的？", "full", "without spaces", id="chinese-why"),
    # short: numbers, yes/no, letters, short facts
    pytest.param("Wie viel ist 7 mal 8?", "short", "how-much", id="german-how-much"),
    pytest.param("Quelle est la capitale de la France ?", "short", "no open-ended", id="french-fact"),
    pytest.param("17乘以23等于多少？", "short", "no open-ended", id="chinese-arithmetic"),
    pytest.param("Why is the sky blue? Answer with one word.", "short", "one word", id="why-answer-one-word"),
    pytest.param("How do plants make food? Answer in one word.", "short", "one word", id="how-answer-in-one-word"),
    pytest.param("Reply with one sentence: why do cats purr?", "short", "one word", id="reply-one-sentence-first"),
    pytest.param("Explain photosynthesis in one sentence.", "short", "one word", id="explain-in-one-sentence"),
    pytest.param("Describe Paris in a single word.", "short", "one word", id="describe-in-a-single-word"),
    pytest.param("Is it raining in London? Answer yes or no.", "short", "yes/no", id="yes-no-answer-yes-or-no"),
    pytest.param("What is 17 * 23?", "short", "arithmetic", id="arithmetic"),
    pytest.param("How many primes are below 20?", "short", "how-many", id="how-many"),
    pytest.param("How much is a dozen eggs if one egg costs 25 cents?", "short", "how-much", id="how-much"),
    pytest.param("Is 91 prime?", "short", "yes/no", id="yes-no-is"),
    pytest.param("Does water boil at 100 C at sea level?", "short", "yes/no", id="yes-no-does"),
    pytest.param("Which planet is largest?", "short", "which", id="which"),
    pytest.param("Who wrote Hamlet?", "short", "who", id="who"),
    pytest.param("When did WW2 end?", "short", "when", id="when"),
    pytest.param("What is the capital of France?", "short", "what-is", id="what-is-fact"),
    pytest.param("What is the derivative of x^3?", "short", "what-is", id="derivative"),
    pytest.param(CHOICE, "short", "multiple-choice", id="choice-line-options"),
    pytest.param("Pick the even one: (A) 3 (B) 8 (C) 11", "short", "multiple-choice", id="choice-inline-options"),
    pytest.param("What is 17*23? Explain your reasoning.", "short", "arithmetic", id="explain-your-reasoning-stays-short"),
    pytest.param("Is 91 prime? Why or why not?", "short", "yes/no", id="why-or-why-not-stays-short"),
    pytest.param("Is 91 prime? Show your work.", "short", "yes/no", id="show-your-work-stays-short"),
    pytest.param("Solve step by step: 3x + 5 = 20. What is x?", "short", "arithmetic", id="solve-step-by-step"),
    pytest.param("Name the largest ocean.", "short", "value", id="name-a-fact"),
    # A list of numbers is one short answer, compared as a whole ("2, 2, 3, 7").
    pytest.param("List the prime factors of 84.", "short", "numbers", id="list-of-numbers-is-short"),
    pytest.param("What did Shakespeare write in 1600?", "short", "what-is", id="verb-mentioned-not-asked"),
    pytest.param("Who wrote and directed Alien?", "short", "who", id="verbs-after-wh-word"),
    pytest.param("Write 0.75 as a fraction in lowest terms.", "short", "conversion", id="write-as-a-fraction"),
    pytest.param("Respond with only the number: what is 12 + 30?", "short", "arithmetic", id="format-then-question"),
    pytest.param("Tell me who painted the Mona Lisa.", "short", "who", id="tell-me-who"),
    pytest.param("How tall is Mount Everest?", "short", "how-tall", id="how-tall"),
    pytest.param("How do you say 'cat' in French?", "short", "say", id="how-do-you-say"),
    pytest.param("def f(a: int, b: int, c: int) -> int: what does f(1, 2, 3) return if it returns a + b * c?",
                 "short", "no open-ended", id="annotations-are-not-options"),
    pytest.param("```py\nprint(sum(range(5)))\n```\nWhat does this print?", "short", "what-is",
                 id="code-block-without-trouble"),
    pytest.param("```\na) x = 1\nb) y = 2\n```\nWhat does this print?", "short", "what-is",
                 id="lines-in-code-are-not-options"),
    pytest.param("Who is the narrator of this passage?\n" + "She walked home. " * 10 + "'Tell me about your day,' "
                 "she said. " + "It rained. " * 10, "short", "who", id="request-inside-a-pasted-passage-not-read"),
    pytest.param("", "short", "no open-ended", id="empty"),
    pytest.param("Photosynthesis.", "short", "no open-ended", id="nothing-to-go-on"),
]


@pytest.mark.parametrize("question, shape, reason_word", SHAPE_CASES)
def test_question_shape(question: str, shape: str, reason_word: str) -> None:
    """Open-ended requests get a full response; numbers, yes/no, letters and short facts stay short."""
    guess = question_shape(question)
    assert (guess.shape, reason_word in guess.reason) == (shape, True), guess


def test_question_shape_table_is_wide() -> None:
    """The table covers at least 45 realistic questions, both shapes well represented."""
    shapes = [case.values[1] for case in SHAPE_CASES]
    assert len(shapes) >= 45 and min(shapes.count("full"), shapes.count("short")) >= 20


@pytest.mark.parametrize("question, shape", [
    pytest.param("What is 17*23? " + "x" * 100_000, "short", id="100k-one-word"),
    pytest.param("Summarize the following article:\n" + "The cat sat. Why? " * 6_000, "full", id="100k-article"),
    pytest.param("Here is my log:\n```\n" + "ERROR a b c\n" * 9_000 + "```\nFix the bug.", "full", id="100k-code-tail"),
    pytest.param("(A) " * 25_000 + "<answer " * 2_000, "short", id="100k-hostile"),
    pytest.param("a, " * 40_000, "short", id="100k-commas"),
])
def test_question_shape_is_fast_on_huge_questions(question: str, shape: str) -> None:
    """A 100k-character question classifies in milliseconds (hostile shapes included)."""
    started = time.perf_counter()
    guess = question_shape(question)
    assert guess.shape == shape and time.perf_counter() - started < 0.05


# --- parse_synthesis --------------------------------------------------------------------

CODE_REPLY = "```python\ndef merge(a, b):\n    return sorted(a + b)\n```"

SYNTHESIS_CASES = [
    pytest.param("Rayleigh scattering makes short (blue) wavelengths scatter most.",
                 "Rayleigh scattering makes short (blue) wavelengths scatter most.", id="plain-text"),
    pytest.param("<answer>\nRayleigh scattering.\n</answer>", "Rayleigh scattering.", id="answer-wrapped"),
    pytest.param("I'll combine A and C.\n<answer>Use a two-pointer merge.</answer>", "Use a two-pointer merge.",
                 id="chatter-then-answer"),
    pytest.param("<answer>Blue light scatters more", "Blue light scatters more", id="answer-unclosed"),
    pytest.param("<think>A is best, fix its edge case.</think>\nThe merge walks both lists once.",
                 "The merge walks both lists once.", id="think-block"),
    pytest.param("Final response:\nThe merge walks both lists once.", "The merge walks both lists once.",
                 id="final-response-label-line"),
    pytest.param("**Final Response:** Use two pointers.", "Use two pointers.", id="bold-label-same-line"),
    pytest.param("## Final Answer\n391, since 17*23 = 340 + 51.", "391, since 17*23 = 340 + 51.", id="header-label"),
    pytest.param("The final response to the request is:\n\nThe final response to the request is:\n\n" + CODE_REPLY,
                 CODE_REPLY, id="smollm-repeated-preamble"),
    pytest.param("Here's a rewritten response with the requested changes:\n\nUse two pointers.", "Use two pointers.",
                 id="smollm-rewritten-preamble"),
    pytest.param(CODE_REPLY, CODE_REPLY, id="code-fence-kept"),
    pytest.param("<answer>\n" + CODE_REPLY + "\n</answer>", CODE_REPLY, id="code-fence-inside-answer-kept"),
    pytest.param("```markdown\n# Merging\nWalk both lists.\n```", "# Merging\nWalk both lists.",
                 id="markdown-wrapper-fence-dropped"),
    pytest.param("Here is a function that merges two sorted lists:\n" + CODE_REPLY,
                 "Here is a function that merges two sorted lists:\n" + CODE_REPLY, id="natural-intro-kept"),
    pytest.param("The answer depends on two things:\n- size\n- order", "The answer depends on two things:\n- size\n- order",
                 id="answer-word-in-content-kept"),
    pytest.param("Compare tags:\n```html\n<question>hi</question>\n```\nThey nest.",
                 "Compare tags:\n```html\n<question>hi</question>\n```\nThey nest.", id="our-tag-inside-code-kept"),
    pytest.param("17*20 = 340, 17*3 = 51, so 391.\n\nThe final answer is 391.\n\nThe final answer is 391.\n\n"
                 "The final answer is 391.", "17*20 = 340, 17*3 = 51, so 391.\n\nThe final answer is 391.",
                 id="smollm-looping-paragraph-collapsed"),
    pytest.param("```py\npass\n\npass\n```", "```py\npass\n\npass\n```", id="repeats-inside-code-kept"),
    pytest.param("The final response to the request now:\n\n" * 9, None, id="smollm-only-a-looping-preamble"),
    pytest.param("17*20 = 340, so 391. A is right.\n</rebuttal>\n</rebuttal>\n\nThe final: 391", None,
                 id="smollm-continues-the-prompt"),
    pytest.param("", None, id="empty"),
    pytest.param("   \n\t\n", None, id="only-whitespace"),
    pytest.param("<think>thinking, cut off", None, id="only-unclosed-think"),
    pytest.param("<answer>  </answer>", None, id="empty-answer-tag"),
    pytest.param("Final response:", None, id="only-a-label"),
    pytest.param('<question>\nWrite a function.\n</question>\n<candidate label="A">\n<answer>\nreturn a + b\n</answer>',
                 None, id="smollm-echoes-the-prompt"),
]


@pytest.mark.parametrize("text, expected", SYNTHESIS_CASES)
def test_parse_synthesis(text: str, expected: str | None) -> None:
    """The synthesis reply is the response itself: labels and wrappers go, code fences stay, nothing is None."""
    assert parse_synthesis(text) == expected


def test_parse_synthesis_is_linear_on_hostile_text() -> None:
    """Half a megabyte of unclosed tags and label fragments parses in well under a second."""
    text = "Final " * 20_000 + "<answer " * 20_000 + "```" * 10_000 + "<answer>x" * 10_000
    started = time.perf_counter()
    parse_synthesis(text)
    assert time.perf_counter() - started < 1.0


# --- parse_full_answer ------------------------------------------------------------------------

FULL_CASES = [
    pytest.param("<reasoning>two pointers</reasoning>\n<answer>\n" + CODE_REPLY + "\n</answer>", CODE_REPLY, "xml",
                 id="tags-fence-kept"),
    pytest.param("Here is a function:\n" + CODE_REPLY + "\n\nIt uses sorted().",
                 "Here is a function:\n" + CODE_REPLY + "\n\nIt uses sorted().", "paragraph", id="smollm-no-tags-whole"),
    pytest.param("<reasoning>plan</reasoning>\nThe sky is blue.\n\nBlue scatters most.",
                 "The sky is blue.\n\nBlue scatters most.", "paragraph", id="reasoning-then-untagged"),
    pytest.param("<reasoning>cut off mid", "", "empty", id="unclosed-reasoning"),
    pytest.param("", "", "empty", id="empty"),
]


@pytest.mark.parametrize("text, answer, tier", FULL_CASES)
def test_parse_full_answer(text: str, answer: str, tier: str) -> None:
    """A full answer is the whole response: the <answer> block, else the whole reply, never its last paragraph."""
    parsed = parse_full_answer(text)
    assert (parsed.answer, parsed.tier) == (answer, tier)


# --- templates ----------------------------------------------------------------------------------

def placeholders(template: string.Template) -> set[str]:
    """The $names a template needs."""
    return {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)
            if m.group("named") or m.group("braced")}


NEW_TEMPLATES = [
    pytest.param(prompts.SOLVER_SYSTEM_FULL, set(), id="SOLVER_SYSTEM_FULL"),
    pytest.param(prompts.CRITIC_SYSTEM_FULL, set(), id="CRITIC_SYSTEM_FULL"),
    pytest.param(prompts.REBUTTAL_SYSTEM_FULL, set(), id="REBUTTAL_SYSTEM_FULL"),
    pytest.param(prompts.REVISE_SYSTEM_FULL, set(), id="REVISE_SYSTEM_FULL"),
    pytest.param(prompts.JUDGE_SYSTEM_RANKING, set(), id="JUDGE_SYSTEM_RANKING"),
    pytest.param(prompts.SYNTHESIS_SYSTEM, set(), id="SYNTHESIS_SYSTEM"),
    pytest.param(prompts.SYNTHESIS_SYSTEM_SHORT, set(), id="SYNTHESIS_SYSTEM_SHORT"),
    pytest.param(prompts.SYNTHESIS_USER, {"question", "verdict", "candidates", "analyses"}, id="SYNTHESIS_USER"),
    pytest.param(prompts.SYNTHESIS_CANDIDATE, {"label", "rank", "score", "answer", "critique", "rebuttal"},
                 id="SYNTHESIS_CANDIDATE"),
    pytest.param(prompts.SYNTHESIS_ANALYSIS, {"judge", "analysis"}, id="SYNTHESIS_ANALYSIS"),
]


@pytest.mark.parametrize("template, names", NEW_TEMPLATES)
def test_new_templates_render_with_their_variables(template: string.Template, names: set[str]) -> None:
    """Each new template takes exactly its documented variables, and a missing one fails loudly."""
    assert placeholders(template) == names
    rendered = prompts.render(template, **{name: f"<<{name}>>" for name in names})
    assert all(f"<<{name}>>" in rendered for name in names) and "$" not in rendered
    if names:
        with pytest.raises(KeyError):
            prompts.render(template)


@pytest.mark.parametrize("template", [pytest.param(p.values[0], id=p.id) for p in NEW_TEMPLATES if "SYSTEM" in p.id])
def test_new_system_prompts_carry_the_data_rule(template: string.Template) -> None:
    """Every new system prompt says the delimited text is data, not instructions."""
    assert prompts.DATA_RULE in prompts.render(template)


def test_ranking_judge_ends_with_the_two_lines_and_an_example() -> None:
    """The ranking judge asks for RANKING then CONFIDENCE as its last lines, with a concrete example."""
    text = prompts.render(prompts.JUDGE_SYSTEM_RANKING)
    assert "RANKING: B > A > C" in text
    assert text.index("\nRANKING: ") < text.index("\nCONFIDENCE: ") < text.index("For example")


def test_synthesis_prompts_forbid_unsupported_claims_and_extras() -> None:
    """Synthesis adds nothing no candidate or critique supports, replies with the response only, keeps the verdict."""
    full, short = prompts.render(prompts.SYNTHESIS_SYSTEM), prompts.render(prompts.SYNTHESIS_SYSTEM_SHORT)
    assert "no candidate or critique supports" in full and "no candidate or critique supports" in short
    assert "response only" in full and "no preamble, no tags" in full
    assert "do not change it" in short


@pytest.mark.parametrize("template, whole", [
    pytest.param(prompts.SOLVER_SYSTEM_FULL, "the complete response", id="solver"),
    pytest.param(prompts.REBUTTAL_SYSTEM_FULL, "not a list of changes", id="rebuttal"),
    pytest.param(prompts.REVISE_SYSTEM_FULL, "not a list of changes", id="revise"),
])
def test_full_twins_ask_for_the_whole_response(template: string.Template, whole: str) -> None:
    """Full solvers, rebuttals and revisions put the whole response in <answer>, not a one-line answer."""
    text = prompts.render(template)
    assert "<answer>" in text and whole in text and "one short sentence" not in text


# What main's templates render to (sha256 prefix, every $name filled with "<name>"): the short
# templates stay byte-identical, since tests and the fake endpoints match on their text. Issue 23 changed the
# rebuttals' and revisions' on purpose: a worked example and a closing cue for small models. Issue 25 changed two
# on purpose, for prefix caches: a later round shows every solver's answer as one block before the solver's own part
# (REVISE_USER); and the nonce, which now ends the user message, reads "#<hex>" (NONCE_SUFFIX: see its comment). The
# solver's stance stays where it was (SOLVER_USER, SOLVER_STYLE): see prompts.py's "Layout".
SHORT_TEMPLATES = [
    ("CRITIC_SYSTEM", "d152c039b0040358"), ("CRITIC_USER", "c0c1701adb5cbbfd"),
    ("JUDGE_CANDIDATE", "57c205415080cbd6"), ("JUDGE_SYSTEM", "f784b60496bef1b1"),
    ("JUDGE_SYSTEM_BY_LABEL", "2e4142af89d1f47d"), ("JUDGE_USER", "3d50cdb2ad229fdd"),
    ("NONCE_SUFFIX", "0832ba6d77757847"), ("REBUTTAL_SYSTEM", "36be4138417d1cec"),
    ("REBUTTAL_USER", "66c211692b39cfc9"), ("REVISE_OTHER", "5a25450459bdae13"),
    ("REVISE_SYSTEM", "a94f294200158201"), ("REVISE_USER", "f0cacea22bb46c9f"),
    ("SOLVER_STYLE", "e5ae7fc2e67ca8fa"), ("SOLVER_SYSTEM", "b060be66d5f8e66a"),
    ("SOLVER_USER", "8cf370cf5932a8f1"),
]


@pytest.mark.parametrize("name, digest", SHORT_TEMPLATES, ids=[name for name, _ in SHORT_TEMPLATES])
def test_short_templates_are_unchanged(name: str, digest: str) -> None:
    """Each template that existed before issue 22 renders byte for byte as it did."""
    template = getattr(prompts, name)
    rendered = template.substitute({n: f"<{n}>" for n in placeholders(template)})
    assert hashlib.sha256(rendered.encode()).hexdigest()[:16] == digest
