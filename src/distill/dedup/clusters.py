"""Near-duplicate pairs and clusters for the split: texts that look alike stay in one split.

Merge already removed copies at ``dedup.minhash.threshold``; the split looks at a lower similarity
(``split.leakage.threshold``): the same story rewritten is worth keeping as two examples, but not with
one in train and the other in test. Pairs come from MinHash LSH (the dedup section's shingles and
permutations) and are confirmed by exact Jaccard; clusters are their connected components.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from distill.dedup.minhash import MinHashIndex, jaccard, shingles


def near_pairs(texts: list[str], threshold: float, shingle_words: int, num_perm: int, seed: int,
               backend: str = "rensa") -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, jaccard)``, i < j, of texts whose shingle sets are at least ``threshold``
    similar (candidates from the LSH, each verified exactly), sorted."""
    index = MinHashIndex(threshold, num_perm, seed, backend)
    sets = [shingles(t, shingle_words) for t in texts]
    sigs = [index.signature(s) for s in sets]
    for i, sig in enumerate(sigs):
        index.insert(i, sig)
    pairs = []
    for i, sig in enumerate(sigs):
        for j in index.query(sig):
            if j > i:
                sim = jaccard(sets[i], sets[j])
                if sim >= threshold:
                    pairs.append((i, j, round(sim, 4)))
    return sorted(pairs)


def components(n: int, pairs: list[tuple[int, int, float]]) -> list[int]:
    """Cluster label of each of ``n`` items: the smallest index in its connected component."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]


def cross_split(pairs: list[tuple[int, int, float]], where: list[str], ids: list[str],
                examples: int = 5) -> dict[str, Any]:
    """The near-duplicate pairs whose two members sit in different splits: their count, per pair of
    splits (``train-test``...) and the first few, with ids and similarity."""
    leaks = [(i, j, sim) for i, j, sim in pairs if where[i] != where[j]]
    by = Counter("-".join(sorted((where[i], where[j]), key=_ORDER.index)) for i, j, _ in leaks)
    return {"pairs": len(leaks), "by_splits": dict(sorted(by.items())),
            "examples": [{"ids": [ids[i], ids[j]], "splits": [where[i], where[j]], "jaccard": sim}
                         for i, j, sim in leaks[:examples]]}


_ORDER = ["train", "val", "test"]
