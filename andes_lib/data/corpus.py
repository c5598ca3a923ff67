"""All the text the generators produce, for training the project's byte-level BPE tokenizer (ANDESVL.md §1).

Plans samples without rendering (fast): questions, answers, rationales and the thinking-format answers of
every domain including text-only, in English and Chinese, plus every option string.
`python -m andes_lib.data.corpus` trains the tokenizer on it and saves it to data_samples/tokenizer.
"""

from __future__ import annotations

import random

from ..processing.tokenizer import TOKENIZER_DIR, train_tokenizer
from .base import assistant_text
from .registry import GENERATORS


def corpus_texts(n_per_domain: int = 2000, seed: int = 0) -> list[str]:
    """Deterministic list of texts: for each domain, `n_per_domain` planned samples' text, then option strings."""
    texts: list[str] = []
    options: set[str] = set()
    for offset, (domain, module) in enumerate(GENERATORS.items()):
        rng = random.Random(f"corpus-{seed}-{offset}-{domain}")
        for _ in range(n_per_domain):
            sample = module.plan(rng)
            texts += [sample.question, sample.answer]
            if sample.rationale:
                texts.append(assistant_text(sample.answer, sample.rationale, thinking=True))
            options.update(sample.options)
    return texts + sorted(options)


def main() -> None:
    """Train the project's byte-level BPE on `corpus_texts()` and save it where `load_tokenizer()` looks."""
    tokenizer = train_tokenizer(corpus_texts())
    tokenizer.save_pretrained(TOKENIZER_DIR)
    print(f"tokenizer with {len(tokenizer)} tokens saved to {TOKENIZER_DIR}")


if __name__ == "__main__":
    main()
