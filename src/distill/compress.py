"""Deterministic sentence-boundary truncation: the one input both oracle and student read.

``compress(text, max_words)`` keeps whole leading paragraphs, then whole sentences of the next
paragraph, until the next sentence would pass ``max_words``. It never cuts a sentence in half, except
when the very first sentence alone is longer than the budget (then that sentence is cut at a word
boundary and ends with an ellipsis, so something is always kept). The title is not part of the text
and is always kept by the prompt template.
"""

from __future__ import annotations

import re

# A sentence ends at ., ! or ? (optionally followed by closing quotes/brackets) before whitespace and
# an uppercase letter, digit or opening quote. Common abbreviations do not end a sentence.
_BOUNDARY = re.compile(r"""(?<=[.!?])(["'”’)\]]*)\s+(?=["'“‘(\[]?[A-Z0-9])""")
_ABBREV = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Mt|No|vs|etc|Inc|Ltd|Co|Corp|Jr|Sr|U\.S|U\.K|e\.g|i\.e)\.|\b[A-Z]\.)$"
)


def split_sentences(paragraph: str) -> list[str]:
    parts: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(paragraph):
        # a closing quote or bracket stays with its sentence
        candidate = paragraph[start : m.start() + len(m.group(1))]
        if _ABBREV.search(candidate):
            continue
        parts.append(candidate)
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def word_count(text: str) -> int:
    return len(text.split())


def compress(text: str, max_words: int) -> str:
    """Truncate ``text`` to at most ``max_words`` words at a sentence boundary (see module docstring)."""
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if word_count(text) <= max_words:
        return "\n\n".join(paragraphs)
    kept: list[str] = []
    budget = max_words
    for para in paragraphs:
        n = word_count(para)
        if n <= budget:
            kept.append(para)
            budget -= n
            continue
        sentences = []
        for sentence in split_sentences(para):
            m = word_count(sentence)
            if m > budget:
                break
            sentences.append(sentence)
            budget -= m
        if sentences:
            kept.append(" ".join(sentences))
        break
    if not kept:  # the first sentence alone is over budget
        words = paragraphs[0].split()[:max_words]
        return " ".join(words) + "…"  # attached, so the ellipsis is not an extra word
    return "\n\n".join(kept)
