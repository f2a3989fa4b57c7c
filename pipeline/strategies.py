"""How each sentence's links are chosen (--strategy): one function per
strategy, in one table. A new strategy is a function here, its line in
STRATEGIES and its member of config.Strategy; research variants (bench/)
`register` theirs under names of their own.

Every rule takes a sentence's links (zh position, en position), sorted, its
words and the lexicon, and returns the links whose English vector the
Chinese word takes.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from .align import Translation
from .config import Strategy
from .errors import XlembedError

Pairs = list[tuple[int, int]]  # (zh position, en position) of one sentence


class Lexicon(NamedTuple):
    """What choosing links needs of the lexical table."""

    best: dict[str, Translation]  # each Chinese word's most probable translation
    p_en: dict[str, dict[str, float]]  # p(en | zh); only for rules that look it up (empty otherwise)
    stopwords: frozenset[str]


def argmax(links: Pairs, zh: list[str], en: list[str], lexicon: Lexicon) -> Pairs:
    """Per word type: the links to the word's most probable translation."""
    return [(i, j) for i, j in links if en[j] == lexicon.best[zh[i]].en]


def argmax_occurrence(links: Pairs, zh: list[str], en: list[str], lexicon: Lexicon) -> Pairs:
    """Per occurrence: the aligned English word of highest p(en|zh) there (ties: the first)."""
    chosen: dict[int, tuple[int, float]] = {}
    for i, j in links:
        p = lexicon.p_en[zh[i]].get(en[j], 0.0)
        if i not in chosen or p > chosen[i][1]:
            chosen[i] = (j, p)
    return [(i, j) for i, (j, _) in chosen.items()]


def weighted(links: Pairs, zh: list[str], en: list[str], lexicon: Lexicon) -> Pairs:
    """Every link."""
    return links


class Rule(NamedTuple):
    choose: Callable[[Pairs, list[str], list[str], Lexicon], Pairs]
    needs_p_en: bool  # reads lexicon.p_en (built only then: it is as large as the lexicon)


STRATEGIES: dict[str, Rule] = {
    Strategy.argmax.value: Rule(argmax, needs_p_en=False),
    Strategy.argmax_occurrence.value: Rule(argmax_occurrence, needs_p_en=True),
    Strategy.weighted.value: Rule(weighted, needs_p_en=False),
}


def register(name: str, rule: Rule) -> None:
    """Add a rule under a name of its own (a research variant; not an option of the CLI)."""
    STRATEGIES[name] = rule


def rule_for(strategy: Strategy | str) -> Rule:
    name = getattr(strategy, "value", strategy)
    if name not in STRATEGIES:
        raise XlembedError(f"project.strategy: no rule is registered for '{name}'")
    return STRATEGIES[name]
