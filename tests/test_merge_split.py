"""Exact-duplicate removal and the stratified split: determinism, balance, leakage."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from distill.merge import dedup_exact, normalise, text_hash
from distill.split import SPLITS, allocate, balance_report, leakage, stratified_split

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("a, b", [
    ("Solar Farm Opens", "solar farm opens"),
    ("The farm opened.", "The farm opened"),
    ("“Quoted” text — here", '"Quoted" text - here'),
    ("spaced   out\n\ntext", "spaced out text"),
    ("Caf\u00e9 opens", "Cafe\u0301 opens"),            # composed vs combining accent
    ("ＦＵＬＬ width ２０２５", "FULL width 2025"),      # NFKC folds full-width forms
    ("ﬁne print", "fine print"),                      # ligature
    ("STRASSE", "straße"),                            # case folding, not just lower()
    ("snake_case words", "snake case words"),
])
def test_copies_that_differ_only_in_form_collide(a, b):
    assert text_hash(a) == text_hash(b)


@pytest.mark.parametrize("a, b", [
    ("Solar farm opens", "Wind farm opens"),
    ("Profits rose 5%", "Profits rose 50%"),
    ("cafe", "café"),  # a different letter, not a different form
])
def test_different_texts_do_not_collide(a, b):
    assert text_hash(a) != text_hash(b)


def test_normalise_output():
    assert normalise("  Hello,   WORLD!\n") == "hello world"


# ----------------------------------------------------------------------------- dedup
def test_dedup_keeps_the_first_and_records_what_each_drop_duplicates():
    rows = [
        {"id": "a", "text": "The farm opened."},
        {"id": "b", "text": "Something else."},
        {"id": "c", "text": "the FARM opened"},
        {"id": "d", "text": "The farm  opened!"},
        {"id": "e", "text": "Something else"},
    ]
    out = list(dedup_exact(rows))
    assert [r["id"] for r, drop in out if drop is None] == ["a", "b"]
    drops = {r["id"]: drop for r, drop in out if drop is not None}
    assert {k: v["duplicate_of"] for k, v in drops.items()} == {"c": "a", "d": "a", "e": "b"}
    assert all(v["id"] == k and v["similarity"] == 1.0 for k, v in drops.items())
    assert [r["id"] for r, _ in out] == ["a", "b", "c", "d", "e"]  # every row accounted for


def test_dedup_on_a_chosen_field():
    rows = [{"id": "1", "text": "x", "prompt": "P"}, {"id": "2", "text": "y", "prompt": "p."}]
    out = list(dedup_exact(rows, text_of=lambda r: r["prompt"]))
    assert out[1][1]["duplicate_of"] == "1"


def test_dedup_on_the_real_bbc_corpus(shared_data):
    rows = [json.loads(line) for line in
            (shared_data / "corpora" / "bbc_news_2225.jsonl").read_text("utf-8").splitlines()]
    # the data README's "98 exact duplicate articles" are byte-identical title + text pairs
    assert len(rows) - len({(r["title"], r["text"]) for r in rows}) == 98
    by_id = {r["id"]: r for r in rows}
    position = {r["id"]: i for i, r in enumerate(rows)}

    drops = [d for _, d in dedup_exact(rows) if d is not None]
    # on the text alone: 133 byte-identical texts (35 of them re-published under another title)
    # plus 5 that differ only in a paragraph break or a capital letter
    assert len(rows) - len({r["text"] for r in rows}) == 133
    assert len(drops) == 138
    for d in drops:
        first = by_id[d["duplicate_of"]]
        assert position[first["id"]] < position[d["id"]]
        assert normalise(first["text"]) == normalise(by_id[d["id"]]["text"])
    kept = [r for r, d in dedup_exact(rows) if d is None]
    assert len({normalise(r["text"]) for r in kept}) == len(kept) == len(rows) - 138

    with_title = [d for _, d in dedup_exact(rows, text_of=lambda r: r["title"] + "\n" + r["text"])
                  if d is not None]
    assert len(with_title) == 103  # the README's 98 plus 5 that differ only in form


# ----------------------------------------------------------------------------- allocate
@pytest.mark.parametrize("n, expected", [
    (0, {"train": 0, "val": 0, "test": 0}),
    (1, {"train": 1, "val": 0, "test": 0}),
    (2, {"train": 2, "val": 0, "test": 0}),
    (3, {"train": 2, "val": 0, "test": 1}),
    (4, {"train": 2, "val": 1, "test": 1}),
    (10, {"train": 8, "val": 1, "test": 1}),
])
def test_allocate_edge_cases(n, expected):
    assert allocate(n, FRACTIONS) == expected


@pytest.mark.parametrize("fractions", [FRACTIONS, {"train": 0.6, "val": 0.2, "test": 0.2},
                                       {"train": 0.7, "val": 0.0, "test": 0.3}])
def test_allocate_invariants(fractions):
    for n in range(200):
        got = allocate(n, fractions)
        assert sum(got.values()) == n and min(got.values()) >= 0
        if n >= 3:
            assert got["test"] >= 1
        if n >= 1:
            assert got["train"] >= 1
        if fractions["val"] == 0:
            assert got["val"] == 0
        for s in ("val", "test"):
            assert abs(got[s] - n * fractions[s]) <= 1


# ----------------------------------------------------------------------------- split
def make_rows(counts: dict[str, int], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for tier, n in counts.items():
        for i in range(n):
            rid = f"{tier}-{i:04d}-{rng.randrange(10**6)}"
            rows.append({"id": rid, "tier": tier, "messages": [
                {"role": "system", "content": "Rate."},
                {"role": "user", "content": f"Article {rid} about {tier}."}]})
    return rows


TIERS = {"deployed": 40, "piloting": 100, "announced": 250, "vaporware": 7, "rare": 2}


def ids(split: dict) -> dict[str, list[str]]:
    return {s: [r["id"] for r in rows] for s, rows in split.items()}


def test_split_is_seeded_and_independent_of_input_order():
    rows = make_rows(TIERS)
    a = stratified_split(rows, FRACTIONS, seed=42)
    shuffled = rows[:]
    random.Random(99).shuffle(shuffled)
    assert ids(stratified_split(shuffled, FRACTIONS, seed=42)) == ids(a)
    assert ids(stratified_split(rows, FRACTIONS, seed=42)) == ids(a)


def test_different_seeds_give_different_splits():
    rows = make_rows(TIERS)
    a, b = (stratified_split(rows, FRACTIONS, seed=s) for s in (1, 2))
    assert set(ids(a)["test"]) != set(ids(b)["test"])


def test_split_partitions_the_rows():
    rows = make_rows(TIERS)
    split = stratified_split(rows, FRACTIONS, seed=0)
    assert set(split) == set(SPLITS)
    all_ids = [i for s in SPLITS for i in ids(split)[s]]
    assert len(all_ids) == len(set(all_ids)) == len(rows)  # no id in two splits, none lost
    assert set(all_ids) == {r["id"] for r in rows}


def test_every_tier_in_train_and_proportions_per_tier():
    rows = make_rows(TIERS)
    split = stratified_split(rows, FRACTIONS, seed=0)
    per = {s: Counter(r["tier"] for r in split[s]) for s in SPLITS}
    for tier, n in TIERS.items():
        assert per["train"][tier] >= 1, tier
        for s in SPLITS:
            assert abs(per[s][tier] - n * FRACTIONS[s]) <= 1.5, (tier, s, per[s][tier])
        if n >= 3:
            assert per["test"][tier] >= 1, tier


# ----------------------------------------------------------------------------- balance, leakage
def test_balance_report_flags_tiers_outside_the_shares():
    rows = make_rows({"a": 70, "b": 25, "c": 5})
    split = stratified_split(rows, FRACTIONS, seed=0)
    rep = balance_report(split, ["a", "b", "c", "d"], min_share=0.10, max_share=0.60)
    assert rep["shares"] == {"a": 0.7, "b": 0.25, "c": 0.05, "d": 0.0}
    v = " | ".join(rep["violations"])
    assert "tier a is 70% of the data (above 60%)" in v
    assert "tier c is 5% of the data (below 10%)" in v
    assert "tier d is 0% of the data (below 10%)" in v
    assert "tier b" not in v
    assert sum(rep["counts"][s]["a"] for s in SPLITS) == 70


def test_balanced_data_has_no_violations():
    rows = make_rows({"a": 30, "b": 30, "c": 40})
    rep = balance_report(stratified_split(rows, FRACTIONS, seed=0), ["a", "b", "c"], 0.1, 0.4)
    assert rep["violations"] == []


def test_leakage_counts_a_prompt_placed_in_two_splits():
    rows = make_rows({"a": 30})
    split = stratified_split(rows, FRACTIONS, seed=0)
    assert leakage(split) == 0
    copy = json.loads(json.dumps(split["train"][0]))
    copy["id"] = "copy"
    copy["messages"][1]["content"] = copy["messages"][1]["content"].upper() + "  "
    split["test"].append(copy)  # same prompt up to case and spacing
    assert leakage(split) == 1
    split["val"].append(json.loads(json.dumps(split["train"][1])))
    split["train"].append(json.loads(json.dumps(split["train"][2])))  # twice in one split: fine
    assert leakage(split) == 2
