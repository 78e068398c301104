"""Near duplicates by word-shingle Jaccard similarity, exactly, and the diversity of a set of texts.

A text's shingles are its runs of ``size`` consecutive words after :func:`distill.merge.normalise`
(case-folded, punctuation removed); a text shorter than ``size`` words is one shingle of all its
words, so short texts still compare. Two texts are near duplicates when the Jaccard similarity of
their shingle sets (shared / all) is above a threshold.

:class:`NearDuplicateIndex` compares a new text with every kept text that shares at least one shingle
with it (an inverted index finds them; a text sharing none has similarity 0), so the answer is exact,
not a MinHash estimate: right for the sizes of one generation job (thousands of items). Corpora at
scale need MinHash / LSH instead.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

from distill.merge import normalise


def words(text: str) -> list[str]:
    return normalise(text).split()


def shingles(text: str, size: int) -> frozenset[tuple[str, ...]]:
    """The set of ``size``-word shingles of ``text`` (one shingle of all its words when shorter)."""
    if size < 1:
        raise ValueError(f"shingle size must be at least 1, got {size}")
    w = words(text)
    if len(w) <= size:
        return frozenset([tuple(w)]) if w else frozenset()
    return frozenset(tuple(w[i : i + size]) for i in range(len(w) - size + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDuplicateIndex:
    """Kept texts by id, and a lookup of the most similar kept text above a threshold."""

    def __init__(self, shingle_size: int, threshold: float):
        self.size = shingle_size
        self.threshold = threshold
        self._sets: dict[str, frozenset] = {}
        self._postings: dict[tuple[str, ...], list[str]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self._sets)

    def most_similar(self, text: str) -> tuple[str | None, float]:
        """(id, similarity) of the kept text most similar to ``text`` when that similarity is above the
        threshold, else (None, the best similarity found). Ties go to the text kept first."""
        probe = shingles(text, self.size)
        candidates = dict.fromkeys(i for s in probe for i in self._postings.get(s, ()))
        best_id, best = None, 0.0
        for kept_id in candidates:  # in the order they were kept
            sim = jaccard(probe, self._sets[kept_id])
            if sim > best:
                best_id, best = kept_id, sim
        return (best_id, best) if best > self.threshold else (None, best)

    def add(self, item_id: str, text: str) -> None:
        s = shingles(text, self.size)
        self._sets[item_id] = s
        for shingle in s:
            self._postings[shingle].append(item_id)


# ----------------------------------------------------------------------------- diversity
def distinct_ngrams(texts: list[str], n: int) -> float | None:
    """Distinct word n-grams over all n-grams of ``texts`` (distinct-n; None when there are none)."""
    grams = [tuple(w[i : i + n]) for t in texts for w in [words(t)] for i in range(len(w) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else None


def mean_pairwise_jaccard_distance(texts: list[str], shingle_size: int = 1) -> float | None:
    """The mean of 1 - Jaccard similarity over every pair of ``texts`` (word sets by default); None
    for fewer than two texts. 0: all the same; 1: no two share a word."""
    sets = [shingles(t, shingle_size) for t in texts]
    pairs = list(itertools.combinations(sets, 2))
    if not pairs:
        return None
    return round(sum(1.0 - jaccard(a, b) for a, b in pairs) / len(pairs), 4)
