"""The draft/verify loop: lossless greedy speculative decoding with a KV cache that rolls back (ANDESVL.md §4).

Each round the head drafts a chain (stopping early when its confidence falls below `threshold`) or an EAGLE-2
dynamic tree; the target scores the pending token and every draft token in ONE forward pass; the longest branch
whose tokens equal the target's own greedy choices is accepted, plus one "bonus" token, the target's greedy choice
after it. Every emitted token is therefore the target's greedy token: the output is identical to plain greedy
decoding. Rejected positions are cut from the target's cache (a tree keeps only its accepted branch), and the head
re-reads the accepted positions with the target's true features.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .head import DraftHead, HeadCache
from .lookup import NgramLookup
from .target import Target, keep_cache_positions, truncate_cache
from .tree import DraftTree, draft_tree

MODES = ("chain", "tree")


@dataclass
class Step:
    """What one round emitted: tokens, whether each came from the draft, and how many draft tokens were proposed."""

    tokens: list[int]
    drafted: list[bool]
    proposed: int


@dataclass
class SpecResult:
    tokens: list[int] = field(default_factory=list)
    drafted: list[bool] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)  # accepted draft tokens per verify round
    proposed: list[int] = field(default_factory=list)
    seconds: float = 0.0
    first_token_seconds: float = 0.0  # prefill: the time to the first token, the same work for every method

    @property
    def decode_seconds(self) -> float:
        """Wall time after the first token: what decoding speedups compare."""
        return self.seconds - self.first_token_seconds

    @property
    def rounds(self) -> int:
        return len(self.accepted)

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per target forward during decoding (EAGLE's tau): accepted draft tokens + 1."""
        return 1.0 + sum(self.accepted) / max(1, self.rounds)


@torch.no_grad()
def greedy_stream(target: Target, input_ids: torch.Tensor, max_new_tokens: int, **prefill) -> Iterator[Step]:
    """Plain greedy decoding with the same target calls (the draft-free reference)."""
    cache = target.new_cache()
    out = target.forward(input_ids, cache, **prefill)
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        yield Step([token], [False], 0)
        if token in target.eos_ids:
            return
        out = target.forward(torch.tensor([[token]]), cache)


@torch.no_grad()
def speculative_stream(target: Target, head: DraftHead, input_ids: torch.Tensor, max_new_tokens: int,
                       mode: str = "chain", draft_len: int = 4, threshold: float = 0.0, topk: int = 4,
                       depth: int = 4, tree_size: int = 16, lookup: NgramLookup | None = None,
                       lookup_len: int = 6, lookup_min: int = 0, **prefill) -> Iterator[Step]:
    """Yield the greedy continuation of `input_ids` (1, T) round by round; `prefill` goes to the first call only.

    With `lookup`, each round also drafts up to `lookup_len` tokens by n-gram lookup in the context and the corpus
    (`lookup.py`) and merges them into the head's draft; `draft_len=0` in chain mode leaves the lookup alone.
    `lookup_min > 0` puts the lookup first: a round whose lookup finds at least that many tokens verifies them as a
    chain and skips the head's drafting (a merged tree needs the costlier tree-masked verify); the head drafts the
    rounds the lookup cannot.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"speculative decoding runs one sequence at a time: input_ids must be (1, T), got "
                         f"{tuple(input_ids.shape)}")
    if max_new_tokens < 1 or draft_len < 0 or lookup_len < 0 or lookup_min < 0:
        raise ValueError(f"need max_new_tokens >= 1 and draft_len, lookup_len, lookup_min >= 0, got {max_new_tokens}, "
                         f"{draft_len}, {lookup_len}, {lookup_min}")
    cache, head_cache = target.new_cache(), HeadCache()
    n = input_ids.shape[1]
    out = target.forward(input_ids, cache, **prefill)
    pending = int(out.logits[0, -1].argmax())
    yield Step([pending], [False], 0)
    produced = 1
    session = None if lookup is None else lookup.session(input_ids[0].tolist() + [pending])
    if pending in target.eos_ids or produced >= max_new_tokens:
        return
    drafting = mode == "tree" or draft_len > 0  # otherwise the lookup drafts alone and the head is never read
    # the head reads the accepted positions lazily: only before a round it drafts, all unread ones in one call, so
    # rounds the lookup drafts alone cost it nothing (the same positions and inputs as reading them every round)
    unread: list[tuple[torch.Tensor, torch.Tensor]] = []  # (features, the tokens after them) the head has not read
    if drafting:
        unread.append((out.features, torch.cat([input_ids[0, 1:], torch.tensor([pending])])))
    hidden = None

    def read_unread() -> torch.Tensor | None:
        if unread:
            feats, toks = torch.cat([f for f, _ in unread], 1), torch.cat([t for _, t in unread])
            start = len(head_cache)
            unread.clear()
            return head(feats, target.embed(toks)[None], torch.arange(start, start + len(toks))[None],
                        cache=head_cache)[0, -1:]
        return hidden

    length = n + 1  # accepted tokens, the pending one included (its K/V is not in the cache yet)
    while produced < max_new_tokens:
        budget = max_new_tokens - produced - 1  # the bonus token always comes on top of the drafts
        found = session.propose(min(lookup_len, budget)) if session is not None and budget > 0 else []
        if lookup_min and len(found) >= lookup_min:  # the lookup drafts alone: no head cost, a chain verify
            tree, found = DraftTree.chain(found), []
        elif mode == "chain" and drafting and budget > 0:
            hidden = read_unread()
            tree = DraftTree.chain(_draft_chain(head, target, hidden, head_cache, length - 1,
                                                min(draft_len, budget), threshold))
        elif mode == "tree" and budget > 0:
            hidden = read_unread()
            tree = draft_tree(head, target.embed, hidden, head_cache, length - 1, topk=topk,
                              depth=min(depth, budget), size=tree_size)
        else:
            tree = DraftTree.chain([])
        if found:
            tree = tree.merge_chain(found)
        past = length - 1
        q = torch.tensor([[pending] + tree.tokens])
        positions = torch.tensor([[past] + [past + d for d in tree.depths]])
        mask = None if tree.is_chain else tree.attention_mask(past, out.logits.dtype)
        out = target.forward(q, cache, position_ids=positions, attention_mask=mask)
        greedy = out.logits[0].argmax(-1).tolist()
        path, cur = [], 0  # indices into q; 0 is the pending token
        children: dict[int, list[int]] = {}
        for i, p in enumerate(tree.parents, start=1):
            children.setdefault(p + 1, []).append(i)
        while True:
            match = [c for c in children.get(cur, []) if q[0, c] == greedy[cur]]
            if not match:
                break
            cur = match[0]
            path.append(cur)
        emitted = [int(q[0, c]) for c in path] + [greedy[cur]]
        if tree.is_chain:
            truncate_cache(cache, length + len(path))
        else:
            keep_cache_positions(cache, length, torch.tensor(path, dtype=torch.long) - 1)
        if drafting:
            head_cache.truncate(past)  # drop the draft positions (a no-op when the head did not draft)
            unread.append((out.features[:, [0] + path], torch.tensor(emitted)))
        length += len(emitted)
        pending = emitted[-1]
        drafted = [True] * len(path) + [False]
        for j, t in enumerate(emitted):
            if t in target.eos_ids or produced + j + 1 >= max_new_tokens:
                emitted, drafted = emitted[: j + 1], drafted[: j + 1]
                break
        produced += len(emitted)
        if session is not None:
            session.extend(emitted)
        yield Step(emitted, drafted, len(tree))
        if emitted[-1] in target.eos_ids:
            return


def _draft_chain(head: DraftHead, target: Target, hidden: torch.Tensor, cache: HeadCache, position: int,
                 k: int, threshold: float) -> list[int]:
    """Up to `k` draft tokens, stopping when the head's confidence drops below `threshold`; the cache is restored."""
    base, tokens = len(cache), []
    for j in range(k):
        probs = torch.softmax(head.logits(hidden[-1]), -1)
        conf, index = probs.max(-1)
        if float(conf) < threshold:
            break
        token = int(head.token_ids(index))
        tokens.append(token)
        if j + 1 < k:
            hidden = head(hidden[None], target.embed(torch.tensor([[token]])),
                          torch.tensor([[position + j]]), cache=cache)[0]
    cache.truncate(base)
    return tokens


def run(stream: Iterator[Step]) -> SpecResult:
    """Drain a stream into a `SpecResult` with its wall time."""
    t0, res = time.perf_counter(), SpecResult()
    for i, step in enumerate(stream):
        if i == 0:
            res.first_token_seconds = time.perf_counter() - t0
        res.tokens += step.tokens
        res.drafted += step.drafted
        if i > 0 or step.proposed:
            res.accepted.append(sum(step.drafted))
            res.proposed.append(step.proposed)
    res.seconds = time.perf_counter() - t0
    return res


def speculative_generate(target: Target, head: DraftHead, input_ids: torch.Tensor, max_new_tokens: int,
                         **kwargs) -> SpecResult:
    """The whole greedy continuation with speculative decoding, with acceptance statistics and wall time."""
    return run(speculative_stream(target, head, input_ids, max_new_tokens, **kwargs))


def greedy_generate(target: Target, input_ids: torch.Tensor, max_new_tokens: int, **prefill) -> SpecResult:
    """Plain greedy decoding through the same target calls, for reference."""
    return run(greedy_stream(target, input_ids, max_new_tokens, **prefill))
