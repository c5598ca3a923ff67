"""Retrieval drafts beside the head: n-gram continuations from the running context and from the target's own outputs.

A draft costs nothing if it is looked up instead of computed. Two lookups complement the EAGLE-style head:

- the *context* (the prompt and the answer so far): the latest continuation of the longest matching suffix, as
  transformers' `prompt_lookup_num_tokens` does; summaries and restatements copy from the prompt;
- a *corpus* of the target's own greedy answers (the self-distillation data the head trains on; REST, He et al.
  2023, retrieves from a datastore the same way): the most frequent continuation of the longest matching suffix.

`NgramLookup` holds the corpus table; `session(prompt)` starts a per-generation view that also indexes the context as
tokens are accepted and proposes a chain by walking the longest match (context first on equal length). The decoder
merges that chain into the head's draft tree (`tree.merge_chain`) and verifies both in one target pass, so the
output stays exactly the target's greedy output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


class NgramLookup:
    """Most frequent next token after every n-gram (n in [min_n, max_n]) of a corpus of token sequences."""

    def __init__(self, sequences: Iterable[Sequence[int]] = (), max_n: int = 6, min_n: int = 2) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        self.max_n, self.min_n = max_n, min_n
        counts: dict[tuple[int, ...], Counter] = {}
        for seq in sequences:
            seq = [int(t) for t in seq]
            for n in range(min_n, max_n + 1):
                for i in range(len(seq) - n):
                    counts.setdefault(tuple(seq[i:i + n]), Counter())[seq[i + n]] += 1
        self.table: dict[tuple[int, ...], int] = {k: c.most_common(1)[0][0] for k, c in counts.items()}

    def __len__(self) -> int:
        return len(self.table)

    def session(self, prompt: Sequence[int]) -> "LookupSession":
        """A per-generation view that also indexes `prompt` and every token accepted after it."""
        return LookupSession(self, prompt)


class LookupSession:
    """The corpus table plus the running context's own n-grams (the latest occurrence wins)."""

    def __init__(self, lookup: NgramLookup, prompt: Sequence[int]) -> None:
        self.lookup = lookup
        self.tokens: list[int] = []
        self.context: dict[tuple[int, ...], int] = {}
        self.extend(prompt)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append accepted tokens to the context and index the n-grams that now have a successor."""
        lo, hi = self.lookup.min_n, self.lookup.max_n
        for t in tokens:
            self.tokens.append(int(t))
            end = len(self.tokens) - 1  # index of the new token: it follows the n-grams ending just before it
            for n in range(lo, hi + 1):
                if end - n >= 0:
                    self.context[tuple(self.tokens[end - n:end])] = self.tokens[end]

    def _next(self, seq: list[int]) -> int | None:
        for n in range(min(self.lookup.max_n, len(seq)), self.lookup.min_n - 1, -1):
            key = tuple(seq[-n:])
            for table in (self.context, self.lookup.table):
                if key in table:
                    return table[key]
        return None

    def propose(self, k: int, after: Sequence[int] = ()) -> list[int]:
        """Up to `k` draft tokens continuing the context (plus `after`, tokens not yet accepted)."""
        seq, out = self.tokens[-self.lookup.max_n:] + list(after), []
        for _ in range(k):
            nxt = self._next(seq)
            if nxt is None:
                break
            out.append(nxt)
            seq.append(nxt)
        return out
