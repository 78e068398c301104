"""Sentence-boundary truncation: the input both the oracle and the student read."""

from __future__ import annotations

import re

import pytest

from distill.compress import compress, split_sentences, word_count

ARTICLE = (
    "The wind farm opened on Monday. It has 40 turbines.\n\n"
    "Dr. Jane Smith of the U.S. Department of Energy said it was a milestone. "
    "\"It works,\" she said. \"We are pleased.\" Output will rise in 2025.\n\n"
    "A third paragraph follows. It is the last one."
)
PARAS = ARTICLE.split("\n\n")
SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")


def flat(text: str) -> str:
    return " ".join(text.split())


def test_under_budget_is_unchanged():
    assert compress(ARTICLE, word_count(ARTICLE)) == ARTICLE
    assert compress(ARTICLE, 10_000) == ARTICLE
    assert compress("One short sentence.", 3) == "One short sentence."


def test_whole_leading_paragraphs_then_whole_sentences():
    n1 = word_count(PARAS[0])
    out = compress(ARTICLE, n1 + 16)
    first, second = out.split("\n\n")
    assert first == PARAS[0]
    assert second == "Dr. Jane Smith of the U.S. Department of Energy said it was a milestone."


def test_cut_between_paragraphs_keeps_paragraphs_in_order():
    n12 = word_count(PARAS[0]) + word_count(PARAS[1])
    assert compress(ARTICLE, n12 + 3) == PARAS[0] + "\n\n" + PARAS[1]


def test_abbreviations_do_not_end_a_sentence():
    assert split_sentences(PARAS[1])[0] == (
        "Dr. Jane Smith of the U.S. Department of Energy said it was a milestone.")
    for abbrev in ("Mr.", "Mrs.", "Prof.", "St.", "e.g.", "i.e.", "U.K.", "J."):
        para = f"We met {abbrev} Brown in London. Then we left."
        assert split_sentences(para) == [f"We met {abbrev} Brown in London.", "Then we left."]


def test_closing_quotes_stay_with_their_sentence():
    sentences = split_sentences(PARAS[1])
    assert sentences[1] == "\"It works,\" she said."
    assert sentences[2] == "\"We are pleased.\""
    assert split_sentences("He said “Go now.” Then he left!") == ["He said “Go now.”",
                                                                  "Then he left!"]
    assert split_sentences("It rose (by 5%.) Then it fell.") == ["It rose (by 5%.)",
                                                                 "Then it fell."]


def test_first_sentence_over_budget_is_hard_cut_with_an_ellipsis():
    text = "This opening sentence is far longer than the tiny budget allows. Second one."
    out = compress(text, 4)
    assert out == "This opening sentence is…"
    assert word_count(out) == 4


def test_never_more_than_max_words_even_when_hard_cut():
    for budget in range(1, word_count(ARTICLE) + 2):
        assert word_count(compress(ARTICLE, budget)) <= budget


def test_rejects_a_budget_below_one():
    with pytest.raises(ValueError):
        compress(ARTICLE, 0)


def test_deterministic():
    first = [compress(ARTICLE, b) for b in range(1, 60)]
    assert first == [compress(ARTICLE, b) for b in range(1, 60)]


def check_compressed(text: str, budget: int) -> None:
    out = compress(text, budget)
    assert word_count(out) <= budget
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if word_count(text) <= budget:
        assert out == "\n\n".join(paras)
        return
    assert out, "something is always kept"
    if out.endswith("…"):  # hard cut: the first sentence alone is over budget
        assert flat(paras[0]).startswith(flat(out[:-1]))
        assert word_count(out) == budget
        return
    kept = out.split("\n\n")
    # leading paragraphs are kept whole and in order; the last kept one may be cut
    assert kept[:-1] == paras[: len(kept) - 1]
    last, source = kept[-1], paras[len(kept) - 1]
    assert flat(source).startswith(flat(last))
    if flat(last) != flat(source):
        # cut inside a paragraph: only at a sentence end, never mid-word
        assert SENTENCE_END.search(last), last[-60:]
        assert flat(source)[len(flat(last))] == " "


@pytest.mark.parametrize("budget", [1, 8, 25, 60, 150, 400])
def test_property_over_the_real_bbc_articles(bbc_records, budget):
    for rec in bbc_records:
        check_compressed(rec["text"], budget)
