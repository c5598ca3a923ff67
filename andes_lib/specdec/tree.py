"""EAGLE-2's dynamic draft tree: expand the most probable branches, keep the `size` best nodes, verify them at once.

The head proposes its `topk` tokens at the root; at each further depth the `topk` nodes with the highest
*cumulative* draft log-probability (the product of the confidences along their branch, EAGLE-2's context-aware
value) are expanded by one head call, each into `topk` children. Finally the `size` best nodes of the whole tree are
kept: a child never outscores its parent, so the kept set is a tree. The target verifies all of them in one forward
pass with a tree attention mask (each node sees the prefix and its own ancestors only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .head import DraftHead, HeadCache


@dataclass
class DraftTree:
    """Draft nodes in parents-before-children order; parent -1 is the pending (last accepted) token."""

    tokens: list[int]
    parents: list[int]
    depths: list[int]

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def chain(cls, tokens: list[int]) -> "DraftTree":
        return cls(tokens=list(tokens), parents=list(range(-1, len(tokens) - 1)), depths=list(range(1, len(tokens) + 1)))

    def merge_chain(self, tokens: list[int]) -> "DraftTree":
        """This tree plus a chain of `tokens` after the pending token, sharing the nodes it agrees with (a trie)."""
        out = DraftTree(list(self.tokens), list(self.parents), list(self.depths))
        node = -1
        for t in tokens:
            child = next((i for i, (u, p) in enumerate(zip(out.tokens, out.parents)) if p == node and u == t), None)
            if child is None:
                out.tokens.append(t)
                out.parents.append(node)
                out.depths.append(1 if node < 0 else out.depths[node] + 1)
                child = len(out.tokens) - 1
            node = child
        return out

    @property
    def is_chain(self) -> bool:
        return self.parents == list(range(-1, len(self.tokens) - 1))

    def ancestry(self) -> torch.Tensor:
        """(1+N, 1+N) boolean: row i may attend to column j (j is i, an ancestor of i, or the pending token 0)."""
        n = len(self.tokens) + 1
        anc = torch.eye(n, dtype=torch.bool)
        anc[:, 0] = True
        for i, p in enumerate(self.parents, start=1):
            anc[i] |= anc[p + 1]
        return anc

    def attention_mask(self, past: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The target's 4D additive mask (1, 1, 1+N, past+1+N) for verifying the tree after `past` cached tokens."""
        n = len(self.tokens) + 1
        mask = torch.full((n, past + n), torch.finfo(dtype).min, dtype=dtype)
        mask[:, :past] = 0
        mask[:, past:].masked_fill_(self.ancestry(), 0)
        return mask[None, None]


@torch.no_grad()
def draft_tree(head: DraftHead, embed: torch.nn.Module, root_hidden: torch.Tensor, cache: HeadCache, position: int,
               topk: int = 4, depth: int = 4, size: int = 16) -> DraftTree:
    """Grow a dynamic tree from `root_hidden` (1, h), the head's prediction for the pending token's position.

    `position` is the pending token's position; `cache` holds the head's entries before it and is restored.
    """
    if topk < 1 or depth < 1 or size < 1:
        raise ValueError(f"topk, depth and size must be >= 1, got {topk}, {depth}, {size}")
    base = len(cache)
    logp = torch.log_softmax(head.logits(root_hidden[-1]), -1)
    values, index = logp.topk(min(topk, logp.shape[-1]))
    tokens = head.token_ids(index).tolist()
    parents, depths, scores = [-1] * len(tokens), [1] * len(tokens), values.tolist()
    inputs = [root_hidden[-1]] * len(tokens)  # the feature each node is fed with when expanded
    frontier, processed = list(range(len(tokens))), []
    for d in range(1, depth):
        chosen = sorted(frontier, key=lambda i: -scores[i])[:topk]
        s = len(chosen)
        mask = torch.zeros((s, base + len(processed) + s), dtype=torch.bool)
        mask[:, :base] = True
        for r, i in enumerate(chosen):
            line = {i}
            p = parents[i]
            while p >= 0:
                line.add(p)
                p = parents[p]
            for c, j in enumerate(processed + chosen):
                mask[r, base + c] = j in line
        out = head(torch.stack([inputs[i] for i in chosen])[None], embed(torch.tensor([tokens[i] for i in chosen]))[None],
                   torch.full((1, s), position + d - 1), cache=cache, mask=mask)[0]
        processed += chosen
        logp = torch.log_softmax(head.logits(out), -1)
        values, index = logp.topk(min(topk, logp.shape[-1]), dim=-1)
        ids = head.token_ids(index)
        frontier = []
        for r, i in enumerate(chosen):
            for v, t in zip(values[r].tolist(), ids[r].tolist()):
                frontier.append(len(tokens))
                tokens.append(t), parents.append(i), depths.append(d + 1), scores.append(scores[i] + v)
                inputs.append(out[r])
    cache.truncate(base)
    keep = sorted(range(len(tokens)), key=lambda i: (-scores[i], depths[i], i))[:size]
    keep.sort(key=lambda i: (depths[i], i))
    new = {old: k for k, old in enumerate(keep)}
    return DraftTree(tokens=[tokens[i] for i in keep], parents=[new[parents[i]] if parents[i] >= 0 else -1 for i in keep],
                     depths=[depths[i] for i in keep])
