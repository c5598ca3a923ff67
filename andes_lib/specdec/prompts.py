"""Text prompts of three kinds for the draft head's self-distillation and for the speed benchmark (ANDESVL.md §4).

The paper does not publish its draft-training data; EAGLE and HASS train on the target's own answers to
chat prompts, so we generate prompts here (seeded templates, no download) and let the target answer them.
Kinds: `chat` (open questions), `summary` (summarise a generated paragraph: the answer copies from the
prompt, where n-gram lookup shines) and `code` (short Python functions and numbered lists).
"""

from __future__ import annotations

import random

KINDS: tuple[str, ...] = ("chat", "summary", "code")

_TOPICS = ("the water cycle", "photosynthesis", "how a bicycle works", "why the sky is blue", "the moon's phases",
           "how vaccines work", "what a computer memory is", "how bees make honey", "the seasons",
           "how a rainbow forms", "what gravity is", "how trains run on rails", "the internet", "volcanoes",
           "how plants grow from seeds", "why leaves change colour", "how a refrigerator keeps food cold",
           "what electricity is", "how airplanes fly", "the solar system", "how the heart pumps blood",
           "what a recipe is", "how clouds form", "why we need sleep", "how a library is organised",
           "what recycling does", "how a camera takes a picture", "why the ocean is salty", "what a map shows",
           "how birds migrate")
_CHAT = ("Explain {t} in simple terms.", "Can you describe {t} to a ten-year-old?", "What should I know about {t}?",
         "Give me a short explanation of {t}.", "Why is {t} important?", "Tell me three facts about {t}.",
         "I'm curious about {t}. Can you explain it?", "Write a short paragraph about {t}.", "Help me understand {t}.",
         "What is the simplest way to explain {t}?", "Teach me about {t} in a few sentences.", "Describe {t} briefly.",
         "I have a test tomorrow on {t}. Can you sum it up for me?", "Could you explain {t} step by step?",
         "What are the key ideas behind {t}?")
_CODE_TASKS = ("returns the sum of a list of numbers", "reverses a string", "counts the vowels in a word",
               "checks whether a number is prime", "returns the largest value in a list",
               "converts Celsius to Fahrenheit", "removes duplicates from a list", "computes the factorial of n",
               "checks whether a string is a palindrome", "returns the average of a list",
               "counts how often each word appears in a sentence", "returns the first n Fibonacci numbers",
               "sorts a list of names alphabetically", "finds the even numbers in a list",
               "joins a list of words with commas", "returns the length of the longest word")
_CODE = ("Write a Python function that {t}.", "Write a short Python function that {t}, with a docstring.",
         "Show me Python code that {t}.", "Write Python code for a function that {t}.",
         "Implement a Python function that {t}.", "Can you write a Python function that {t}?")
_LIST_ITEMS = ("fruits", "countries in Europe", "colours", "animals that live in the ocean", "musical instruments",
               "vegetables", "sports played with a ball", "things to pack for a trip", "ways to save water",
               "healthy breakfast ideas", "kitchen tools", "tips for studying", "hobbies", "programming languages")
_LIST = ("List {n} {t}.", "Give me a numbered list of {n} {t}.", "Name {n} {t}, one per line.", "What are {n} {t}?",
         "Write a list of {n} {t}.", "Suggest {n} {t}.")
_NAMES = ("Lina", "Omar", "Mei", "Tom", "Sara", "Ravi", "Anna", "Kofi", "Yuki", "Paul")
_PLACES = ("a small town", "the city library", "a mountain village", "the school garden", "a busy market",
           "the harbour", "an old museum", "the train station")
_EVENTS = ("a book fair", "a science day", "a cooking contest", "a music festival", "a clean-up day", "a chess match")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_SUMMARY = ("Summarize the following text in one sentence.\n\n{p}", "Give a short summary of this text:\n\n{p}",
            "What is the main point of this paragraph?\n\n{p}")


def _paragraph(rng: random.Random) -> str:
    name, other = rng.sample(_NAMES, 2)
    place, event, day = rng.choice(_PLACES), rng.choice(_EVENTS), rng.choice(_DAYS)
    n = rng.randint(20, 300)
    return (f"On {day}, {name} organised {event} at {place}. About {n} people came, more than the year before. "
            f"{other} helped to set up the tables early in the morning, and the weather stayed dry all day. "
            f"At the end, {name} thanked everyone and said that {event} would return next year at {place}.")


def make_prompt(kind: str, rng: random.Random) -> str:
    """One prompt of the given kind (`chat`, `summary` or `code`), drawn with `rng`."""
    if kind == "chat":
        return rng.choice(_CHAT).format(t=rng.choice(_TOPICS))
    if kind == "summary":
        return rng.choice(_SUMMARY).format(p=_paragraph(rng))
    if kind == "code":
        if rng.random() < 0.5:
            return rng.choice(_CODE).format(t=rng.choice(_CODE_TASKS))
        return rng.choice(_LIST).format(n=rng.randint(3, 8), t=rng.choice(_LIST_ITEMS))
    raise ValueError(f"unknown prompt kind {kind!r}; expected one of {KINDS}")


def make_prompts(n_per_kind: int, seed: int = 0, kinds: tuple[str, ...] = KINDS,
                 exclude: set[str] | frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """`n_per_kind` distinct prompts per kind, as `{"kind", "prompt"}` rows; prompts in `exclude` are skipped.

    Pass the training prompts as `exclude` to draw a disjoint test set.
    """
    if n_per_kind < 0:
        raise ValueError(f"n_per_kind must be >= 0, got {n_per_kind}")
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for kind in kinds:
        seen: set[str] = set(exclude)
        for _ in range(200 * max(n_per_kind, 1)):
            if sum(r["kind"] == kind for r in rows) == n_per_kind:
                break
            text = make_prompt(kind, rng)
            if text not in seen:
                seen.add(text)
                rows.append({"kind": kind, "prompt": text})
        else:
            raise ValueError(f"could not draw {n_per_kind} distinct {kind!r} prompts; ask for fewer")
    return rows
