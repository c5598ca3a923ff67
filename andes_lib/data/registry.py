"""The generators by domain name, and how they map onto the paper's seven evaluation groups (ANDESVL.md §3)."""

from __future__ import annotations

import random
from types import ModuleType

from . import chart, general_vqa, gui, hallucination, multi_image, multilingual, reasoning, text_only, text_rich
from .base import Sample

# Order matters: a domain's position enters its generator seeds (dataset.sample_seed). Append only.
GENERATORS: dict[str, ModuleType] = {
    "text_rich": text_rich,
    "chart": chart,
    "reasoning": reasoning,
    "multi_image": multi_image,
    "general_vqa": general_vqa,
    "hallucination": hallucination,
    "multilingual": multilingual,
    "gui": gui,
    "text_only": text_only,
}
DOMAINS: tuple[str, ...] = tuple(d for d in GENERATORS if d != "text_only")  # the visual evaluation domains
# The paper's groups: ChartQA belongs to its text-rich group, so `chart` reports under "text_rich" there.
PAPER_GROUP: dict[str, str] = {d: ("text_rich" if d == "chart" else d) for d in GENERATORS}


def check_domains(domains: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Validate domain names (None -> all visual domains); raises ValueError naming unknown ones."""
    if domains is None:
        return DOMAINS
    names = (domains,) if isinstance(domains, str) else tuple(domains)
    unknown = [d for d in names if d not in GENERATORS]
    if unknown or not names:
        raise ValueError(f"unknown domain(s) {unknown or names}; known: {list(GENERATORS)}")
    return names


def generate(domain: str, rng_or_seed: int | random.Random) -> Sample:
    """One rendered sample of `domain`."""
    return GENERATORS[check_domains(domain)[0]].generate(rng_or_seed)
