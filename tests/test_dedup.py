"""Near-duplicate and semantic dedup: shingles, MinHash LSH verified by exact Jaccard, the explanation of
each removal, the prefilter and merge stages' duplicates.jsonl, and `distill dupes show`."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from distill import jsonl, pipeline
from distill.cli import main
from distill.config import DedupConfig, MergeConfig, PrefilterConfig
from distill.dedup import Deduper, dedup_stream
from distill.dedup.explain import longest_shared_span, trim
from distill.dedup.minhash import bands_for, jaccard, shingles
from distill.merge import dedup_exact

from .conftest import REAL_FILTER

WORDS = [f"w{i}" for i in range(60)]
BASE = " ".join(WORDS)                      # 60 distinct words: 56 five-word shingles
SWAPPED = " ".join(WORDS[:30] + ["zzz"] + WORDS[31:])  # word 30 replaced: 5 shingles change


def cfg(**minhash) -> DedupConfig:
    return DedupConfig.model_validate({"minhash": minhash})


# ----------------------------------------------------------------------------- the pieces
def test_shingles_and_exact_jaccard_by_hand():
    assert shingles("A b, c  D", 2) == {"a b", "b c", "c d"}
    assert shingles("one two", 5) == {"one two"}          # shorter than k: one shingle
    assert jaccard(shingles("a b c d", 2), shingles("a b c e", 2)) == 2 / 4
    # 56 shingles each, 51 shared: 51 / (56 + 56 - 51)
    assert jaccard(shingles(BASE, 5), shingles(SWAPPED, 5)) == pytest.approx(51 / 61)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_lsh_bands_cover_the_permutations_and_sit_below_the_threshold(threshold):
    bands, rows = bands_for(threshold, 128)
    assert bands * rows == 128
    # the S-curve's midpoint (1/b)^(1/r) is below the threshold: candidates err towards recall
    assert (1 / bands) ** (1 / rows) < threshold


def test_longest_shared_span_is_read_from_the_removed_text_as_written():
    span, n = longest_shared_span("Solar FARM opens, in Kent today", "a solar farm opens in kent")
    assert (span, n) == ("Solar FARM opens, in Kent", 5)
    assert trim("alpha beta gamma delta", 12) == "alpha beta…"
    assert trim("short", 12) == "short"


# ----------------------------------------------------------------------------- the deduper
@pytest.mark.parametrize("backend", ["rensa", "datasketch"])
def test_exact_and_near_duplicates_are_removed_and_explained(backend):
    rows = [{"id": "a", "text": BASE}, {"id": "b", "text": BASE.upper() + " !"},
            {"id": "c", "text": SWAPPED}, {"id": "d", "text": " ".join(reversed(WORDS))}]
    d = Deduper(cfg(backend=backend))
    out = d.batch(rows)
    assert out[0] is None and out[3] is None                       # first occurrence, and an unrelated text
    assert out[1]["duplicate_of"] == "a" and out[1]["method"] == "exact" and out[1]["similarity"] == 1.0
    near = out[2]
    assert (near["id"], near["duplicate_of"], near["method"]) == ("c", "a", "minhash")
    assert near["jaccard"] == near["similarity"] == round(51 / 61, 4)
    assert abs(near["jaccard_estimate"] - 51 / 61) < 0.15          # the MinHash estimate, 128 permutations
    assert near["shared_words"] == 30 and near["shared_text"].startswith("w0 w1 w2")
    assert len(near["shared_text"]) <= 240
    assert dict(d.counts) == {"exact": 1, "minhash": 1, "semantic": 0}
    d.close()


def test_below_the_threshold_is_kept_and_the_first_occurrence_wins_across_batches():
    d = Deduper(cfg(threshold=0.9))                 # 0.836 < 0.9: kept
    assert d.batch([{"id": "a", "text": BASE}]) == [None]
    assert d.batch([{"id": "c", "text": SWAPPED}]) == [None]
    again = d.batch([{"id": "z", "text": SWAPPED + " "}])[0]       # a later batch: the earliest copy is named
    assert again["duplicate_of"] == "c" and again["method"] == "exact"


def test_minhash_off_leaves_near_duplicates():
    out = Deduper(cfg(enabled=False)).batch([{"id": "a", "text": BASE}, {"id": "c", "text": SWAPPED}])
    assert out == [None, None]


def test_semantic_with_a_stand_in_embedder_uses_cosine_by_hand():
    import numpy as np

    vectors = {"solar farm opens": [1.0, 0.0], "a field of panels now supplies power": [0.96, 0.28],
               "football results": [0.0, 1.0]}

    def embed(texts):
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    config = DedupConfig.model_validate({"semantic": {"enabled": True, "threshold": 0.95}})
    d = Deduper(config, embedder=embed)
    rows = [{"id": k, "text": t} for k, t in zip("abc", vectors)]
    out = d.batch(rows)
    assert out[0] is None and out[2] is None
    assert (out[1]["method"], out[1]["duplicate_of"], out[1]["cosine"]) == ("semantic", "a", 0.96)
    # a removed record is not an original: a later copy of it is matched against "a", the record kept
    later = d.batch([{"id": "d", "text": "a field of panels now supplies power"}])[0]
    assert later["method"] == "semantic" and later["duplicate_of"] == "a"


def test_the_real_bbc_corpus(bbc_records):
    d = Deduper(DedupConfig())
    out = d.batch(bbc_records)
    exact_drops = {x["id"] for _, x in dedup_exact(bbc_records) if x is not None}
    assert {x["id"] for x in out if x and x["method"] == "exact"} == exact_drops
    near = [x for x in out if x and x["method"] == "minhash"]
    assert near, "the BBC dump has re-published articles with small edits"
    by_id = {r["id"]: r for r in bbc_records}
    for x in near:  # each verified: the exact Jaccard of the two texts reaches the threshold
        sim = jaccard(shingles(by_id[x["id"]]["text"], 5), shingles(by_id[x["duplicate_of"]]["text"], 5))
        assert sim == pytest.approx(x["jaccard"], abs=1e-4) and 0.8 <= sim < 1
        assert x["shared_text"].rstrip("…") in " ".join(by_id[x["id"]]["text"].split())
    # a known pair: the same Six Nations report, re-published with an edited first paragraph
    pair = next(x for x in near if x["id"] == "bbc-sport-406")
    assert pair["duplicate_of"] == "bbc-sport-289" and pair["jaccard"] > 0.95


# ----------------------------------------------------------------------------- the stages
ARTICLE = ("The new solar farm near the town of Hexham has started to deliver power to the regional grid this "
           "week, and the operator says the panels will supply about four thousand homes once the second phase "
           "is finished in the spring. Local councillors welcomed the project, which was built on former "
           "farmland, and the company plans a battery at the same site next year. The site covers forty "
           "hectares and was connected after a delay of several months caused by a shortage of transformers, "
           "according to the network operator, which said the grid in the north of the county is now able to "
           "take more renewable generation than it could two years ago.")


def _prefilter(tmp_path, rows, dedup=None):
    from distill.filterspec import load_filter_at

    corpus = tmp_path / "corpus.jsonl"
    jsonl.write_jsonl(corpus, rows)
    spec = load_filter_at(REAL_FILTER.parents[1], REAL_FILTER.parent.name, REAL_FILTER.name)
    cfg_ = PrefilterConfig(input=str(corpus), output_dir=str(tmp_path / "pre"), batch_rows=2)
    return pipeline.prefilter(cfg_, spec, metrics_dir=tmp_path / "metrics", dedup=dedup)


def test_prefilter_removes_duplicates_before_labelling_and_keeps_every_removed_record(tmp_path):
    edited = ARTICLE.replace("four thousand", "4,000").replace("this week", "on Monday")
    rows = [{"id": "a", "title": "Solar farm", "text": ARTICLE},
            {"id": "b", "title": "Solar farm (copy)", "text": ARTICLE.upper()},
            {"id": "c", "title": "Solar farm", "text": edited},
            {"id": "d", "title": "Wind", "text": ARTICLE.replace("solar farm", "wind farm")
             .replace("panels", "turbines").replace("Hexham", "Alnwick").replace("battery", "substation")
             .replace("homes", "houses").replace("former farmland", "a hill")}]
    metrics = _prefilter(tmp_path, rows)
    passed = [r["id"] for r in jsonl.read_jsonl(tmp_path / "pre/passed.jsonl")]
    dupes = {d["id"]: d for d in jsonl.read_jsonl(tmp_path / "pre/duplicates.jsonl")}
    assert passed == ["a", "d"] and set(dupes) == {"b", "c"}
    assert dupes["b"]["method"] == "exact" and dupes["b"]["text"] == ARTICLE.upper()   # the record, whole
    c = dupes["c"]
    assert (c["duplicate_of"], c["method"]) == ("a", "minhash") and c["title"] == "Solar farm"
    want = jaccard(shingles(edited, 5), shingles(ARTICLE, 5))
    assert c["jaccard"] == round(want, 4) and 0.8 <= want < 1
    assert metrics["duplicates"] == {"exact": 1, "minhash": 1, "semantic": 0} and metrics["passed"] == 2
    saved = json.loads((tmp_path / "metrics/prefilter.json").read_text())
    assert saved["duplicates"] == metrics["duplicates"]


def test_prefilter_with_dedup_off_passes_copies(tmp_path):
    rows = [{"id": "a", "title": "Solar", "text": ARTICLE}, {"id": "b", "title": "Solar", "text": ARTICLE}]
    off = DedupConfig.model_validate({"exact": False, "minhash": {"enabled": False}})
    assert _prefilter(tmp_path, rows, off)["passed"] == 2
    assert (tmp_path / "pre/duplicates.jsonl").read_text() == ""


def _label_row(rid: str, text: str, spec) -> dict:
    answer = {d: 5 for d in spec.dimension_names} | {"reasoning": "ok"}
    return {"id": rid, "title": "", "text": text, "messages": spec.render({"id": rid, "text": text}),
            "label": answer, **spec.labelled(answer)}


def test_merge_drops_near_duplicates_with_the_label_file(tmp_path):
    spec = pipeline.filter_spec(_ref())
    labels = tmp_path / "labels.jsonl"
    jsonl.write_jsonl(labels, [_label_row("a", BASE, spec), _label_row("c", SWAPPED, spec)])
    merge_cfg = MergeConfig(extra_dir=str(tmp_path / "none"), reviews=str(tmp_path / "none.jsonl"),
                            output_dir=str(tmp_path / "merged"))
    m = pipeline.merge(merge_cfg, spec, labels, metrics_dir=tmp_path)
    assert m["kept"] == 1 and m["exact_duplicates"] == 0 and m["duplicates"]["minhash"] == 1
    (dup,) = jsonl.read_jsonl(tmp_path / "merged/duplicates.jsonl")
    assert (dup["id"], dup["duplicate_of"], dup["label_file"]) == ("c", "a", str(labels))
    assert dup["jaccard"] == round(51 / 61, 4)


def _ref():
    from distill.config import FilterRef

    return FilterRef(name=REAL_FILTER.parent.name, version=REAL_FILTER.name, root=str(REAL_FILTER.parents[1]))


def test_dupes_show_prints_both_records_from_either_file(tmp_path, monkeypatch):
    edited = ARTICLE.replace("four thousand", "4,000").replace("this week", "on Monday")
    _prefilter(tmp_path, [{"id": "a", "title": "Solar farm", "text": ARTICLE},
                          {"id": "c", "title": "Edited", "text": edited}])
    (tmp_path / "params.yaml").write_text(json.dumps({
        "prefilter": {"input": "corpus.jsonl", "output_dir": "pre"}, "merge": {"output_dir": "merged"}}))
    monkeypatch.chdir(tmp_path)
    for rid in ("c", "a"):  # the removed id, or the kept one
        res = CliRunner().invoke(main, ["dupes", "show", rid, "--width", "120"])
        assert res.exit_code == 0, res.output
        assert "c duplicates a (minhash: jaccard 0." in res.output and "pre/duplicates.jsonl" in res.output
        assert "removed: c" in res.output and "kept: a" in res.output
        assert "Edited" in res.output and "Solar farm" in res.output  # both titles, side by side
        assert "4,000" in res.output and "four thousand" in res.output
    res = CliRunner().invoke(main, ["dupes", "show", "nope"])
    assert res.exit_code == 2 and "'nope' was not removed as a duplicate" in res.output


# ----------------------------------------------------------------------------- semantic, the real model
@pytest.mark.slow
def test_semantic_dedup_with_the_packaged_minilm_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"id": "a", "text": "The wind farm off the coast of Norfolk started producing electricity on Monday."},
            {"id": "b", "text": "On Monday, the offshore wind farm near Norfolk began generating power."},
            {"id": "c", "text": "Shares in the bank fell sharply after it reported a loss for the quarter."}]
    config = DedupConfig.model_validate({"semantic": {"enabled": True, "threshold": 0.8}})
    d = Deduper(config)
    out = list(dedup_stream(rows, d))
    assert out[1][1] is not None and out[1][1]["method"] == "semantic" and out[1][1]["duplicate_of"] == "a"
    assert out[1][1]["cosine"] >= 0.8
    assert jaccard(shingles(rows[0]["text"], 5), shingles(rows[1]["text"], 5)) < 0.1  # MinHash cannot see it
    assert out[0][1] is None and out[2][1] is None
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_dupes_show_reads_the_merge_file_too(tmp_path, monkeypatch):
    spec = pipeline.filter_spec(_ref())
    jsonl.write_jsonl(tmp_path / "labels.jsonl", [_label_row("k", BASE, spec), _label_row("r", SWAPPED, spec)])
    merge_cfg = MergeConfig(extra_dir="none", reviews="none.jsonl", output_dir="merged")
    monkeypatch.chdir(tmp_path)
    pipeline.merge(merge_cfg, spec, "labels.jsonl", metrics_dir=tmp_path)
    (tmp_path / "params.yaml").write_text(json.dumps({
        "prefilter": {"input": "corpus.jsonl", "output_dir": "pre"}, "merge": {"output_dir": "merged"}}))
    res = CliRunner().invoke(main, ["dupes", "show", "r"])
    assert res.exit_code == 0, res.output
    assert "r duplicates k (minhash: jaccard 0.836" in res.output and "merged/duplicates.jsonl" in res.output
    assert "shared (30 words): w0 w1" in res.output and "zzz" in res.output


def test_the_quick_shared_span_is_as_long_as_difflibs_exact_one(bbc_records):
    """The run-of-windows shortcut must find a span as long as the quadratic exact search does."""
    import random
    from difflib import SequenceMatcher

    from distill.dedup.explain import _word

    rng = random.Random(0)
    texts = [r["text"] for r in bbc_records[:60]]
    for text in texts:
        words = text.split()
        for _ in range(3):  # a few random insertions, deletions and swaps: a near duplicate
            i = rng.randrange(len(words))
            words = words[:i] + ["inserted"] + words[i + 1 :] if rng.random() < 0.5 else words[:i] + words[i + 2 :]
        for other in (" ".join(words), rng.choice(texts)):  # a near duplicate, and an unrelated article
            a, b = [_word(w) for w in text.split()], [_word(w) for w in other.split()]
            exact = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size
            span, n = longest_shared_span(text, other)
            assert n == exact and len(span.split()) == n
            assert " ".join(_word(w) for w in span.split()) in " ".join(b)


def test_semantic_compares_across_chunks_and_batches(monkeypatch):
    """Survivors are embedded a chunk at a time; a record still meets the ones kept in earlier chunks."""
    import numpy as np

    import distill.dedup as dedup_module

    monkeypatch.setattr(dedup_module, "SEMANTIC_CHUNK", 2)
    vectors = {"t0": [1, 0, 0], "t1": [0, 1, 0], "t2": [0, 0, 1], "t3": [0.6, 0.8, 0], "t4": [0.99, 0.141, 0]}

    def embed(texts):
        v = np.array([vectors[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    d = Deduper(DedupConfig.model_validate({"semantic": {"enabled": True, "threshold": 0.95}}), embedder=embed)
    out = d.batch([{"id": t, "text": t} for t in vectors])   # chunks: (t0, t1), (t2, t3), (t4)
    assert [o and (o["duplicate_of"], o["cosine"]) for o in out] == [None, None, None, None, ("t0", 0.99)]
