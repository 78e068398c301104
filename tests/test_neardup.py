"""Word-shingle Jaccard near duplicates and the diversity figures, on hand-computed examples."""

from __future__ import annotations

import random

import pytest

from distill.neardup import (
    NearDuplicateIndex,
    distinct_ngrams,
    jaccard,
    mean_pairwise_jaccard_distance,
    shingles,
)


def test_shingles_are_runs_of_normalised_words():
    assert shingles("The cat sat on the mat.", 3) == {
        ("the", "cat", "sat"), ("cat", "sat", "on"), ("sat", "on", "the"), ("on", "the", "mat")}
    # case, punctuation and spacing do not matter; a text shorter than the size is one shingle
    assert shingles("SOLAR,   power!", 3) == shingles("solar power", 3) == {("solar", "power")}
    assert shingles("", 3) == frozenset()
    with pytest.raises(ValueError, match="at least 1"):
        shingles("a b", 0)


def test_jaccard_of_two_sentences_by_hand():
    a = shingles("the cat sat on the mat", 3)
    b = shingles("the cat sat on a mat", 3)
    # shared: (the cat sat), (cat sat on); union: 4 + 4 - 2 = 6
    assert jaccard(a, b) == pytest.approx(2 / 6)
    assert jaccard(a, a) == 1.0 and jaccard(frozenset(), frozenset()) == 1.0
    assert jaccard(a, shingles("wind turbines spin", 3)) == 0.0


def test_index_finds_the_most_similar_kept_text_above_the_threshold():
    index = NearDuplicateIndex(shingle_size=3, threshold=0.5)
    index.add("a", "the cat sat on the mat")
    index.add("b", "a dog ran in the park")
    # 5 shingles, 4 of them a's: 4 / (5 + 4 - 4) = 0.8
    assert index.most_similar("The cat sat on the mat today") == ("a", pytest.approx(0.8))
    # 1/3 is not above 0.5: not a near duplicate, and the best similarity is still reported
    assert index.most_similar("the cat sat on a mat") == (None, pytest.approx(1 / 3))
    assert index.most_similar("solar panels on every roof") == (None, 0.0)
    assert len(index) == 2


def test_index_is_exact_against_comparing_every_pair():
    rng = random.Random(3)
    vocab = ["sun", "wind", "grid", "heat", "pump", "roof", "cell", "store", "cost", "tariff", "grant", "meter"]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(2, 9))) for _ in range(200)]
    index = NearDuplicateIndex(shingle_size=2, threshold=0.4)
    kept: dict[str, frozenset] = {}
    for i, text in enumerate(texts):
        probe = shingles(text, 2)
        best_id, best = None, 0.0
        for kid, s in kept.items():  # brute force, first kept wins ties
            if jaccard(probe, s) > best:
                best_id, best = kid, jaccard(probe, s)
        expected = (best_id, best) if best > 0.4 else (None, best)
        got = index.most_similar(text)
        assert got[0] == expected[0] and got[1] == pytest.approx(expected[1]), text
        if got[0] is None:
            index.add(str(i), text)
            kept[str(i)] = probe
    assert 0 < len(index) < len(texts)  # some were near duplicates, some were not


def test_distinct_ngrams_by_hand():
    # unigrams a b a | a b c: 3 distinct of 6; bigrams (a b)(b a) | (a b)(b c): 3 distinct of 4
    assert distinct_ngrams(["a b a", "a b c"], 1) == 0.5
    assert distinct_ngrams(["a b a", "a b c"], 2) == 0.75
    assert distinct_ngrams(["one"], 2) is None


def test_mean_pairwise_jaccard_distance_by_hand():
    # {a,b} {a,c}: 1 - 1/3; {a,b} {d}: 1; {a,c} {d}: 1 -> (2/3 + 1 + 1) / 3 = 8/9
    assert mean_pairwise_jaccard_distance(["a b", "a c", "d"]) == round(8 / 9, 4)
    assert mean_pairwise_jaccard_distance(["same words", "Same, words!"]) == 0.0
    assert mean_pairwise_jaccard_distance(["alone"]) is None
