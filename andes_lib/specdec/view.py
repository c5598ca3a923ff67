"""HTML for an answer whose draft-accepted tokens are coloured (notebook 10 and the speculative-decoding app)."""

from __future__ import annotations

import html

DRAFT_COLOUR = "#c6f6d5"


def colour_tokens(tokenizer, tokens: list[int], drafted: list[bool]) -> str:
    """Tokens as HTML; those the target accepted from the draft get a green background."""
    if len(tokens) != len(drafted):
        raise ValueError(f"{len(tokens)} tokens but {len(drafted)} draft flags")
    parts = []
    for tok, from_draft in zip(tokens, drafted):
        text = html.escape(tokenizer.decode([tok])).replace("\n", "<br>")
        parts.append(f"<span style='background:{DRAFT_COLOUR}'>{text}</span>" if from_draft else text)
    return f"<div style='font-family:monospace;line-height:1.6'>{''.join(parts)}</div>"
