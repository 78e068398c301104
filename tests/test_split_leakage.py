"""No near-duplicate leakage across splits: clusters are assigned whole, and the pairs that straddle
splits are counted in metrics/split.json (and fail the stage under split.leakage.on_violation=fail)."""

from __future__ import annotations

import json
import random

import pytest

from distill import jsonl, pipeline
from distill.config import FilterRef, SplitConfig
from distill.dedup.clusters import components, cross_split, near_pairs
from distill.errors import ConfigError

from .conftest import REAL_FILTER


def test_components_and_cross_split_pairs_by_hand():
    pairs = [(0, 1, 0.9), (1, 2, 0.6), (3, 4, 0.7)]
    assert components(6, pairs) == [0, 0, 0, 3, 3, 5]
    where = ["train", "test", "train", "val", "val", "test"]
    got = cross_split(pairs, where, list("abcdef"))
    assert got["pairs"] == 2 and got["by_splits"] == {"train-test": 2}
    assert got["examples"][0] == {"ids": ["a", "b"], "splits": ["train", "test"], "jaccard": 0.9}


def test_near_pairs_are_verified_by_exact_jaccard():
    words = [f"w{i}" for i in range(60)]
    texts = [" ".join(words), " ".join(words[:30] + ["zzz"] + words[31:]), " ".join(reversed(words))]
    assert near_pairs(texts, 0.5, 5, 128, 1) == [(0, 1, round(51 / 61, 4))]


def _rows(n_stories: int = 30, seed: int = 0) -> list[dict]:
    """Label rows: ``n_stories`` distinct texts, each with a rewritten copy (one word changed: Jaccard
    51/61 of 5-word shingles, above the split's 0.5 and below dedup's 0.8, so merge keeps both)."""
    from distill.filterspec import load_filter_at

    spec = load_filter_at(REAL_FILTER.parents[1], REAL_FILTER.parent.name, REAL_FILTER.name)
    rng = random.Random(seed)
    rows = []
    for s in range(n_stories):
        words = [f"s{s}w{i}" for i in range(60)]
        score = rng.randrange(11)
        for copy, text in enumerate([words, words[:30] + ["changed"] + words[31:]]):
            rid = f"story{s:02d}-{copy}"
            answer = {d: score for d in spec.dimension_names} | {"reasoning": "r"}
            record = {"id": rid, "text": " ".join(text)}
            rows.append({**record, "messages": spec.render(record), "label": answer, **spec.labelled(answer)})
    return rows


def _split(tmp_path, **leakage):
    merged = tmp_path / "merged.jsonl"
    jsonl.write_jsonl(merged, _rows())
    cfg = SplitConfig.model_validate({"output_dir": str(tmp_path / "split"), "leakage": leakage,
                                      "train": 0.6, "val": 0.2, "test": 0.2})
    ref = FilterRef(name=REAL_FILTER.parent.name, version=REAL_FILTER.name, root=str(REAL_FILTER.parents[1]))
    return pipeline.split(cfg, pipeline.filter_spec(ref), merged, metrics_dir=tmp_path / "metrics")


def _placement(tmp_path) -> dict[str, str]:
    return {r["id"]: s for s in ("train", "val", "test") for r in jsonl.read_jsonl(tmp_path / "split" / f"{s}.jsonl")}


def test_record_by_record_assignment_leaks_and_cluster_assignment_does_not(tmp_path):
    before = _split(tmp_path / "records", group_clusters=False)["near_duplicate_leaks"]
    assert before["similar_pairs"] == 30 and before["clusters"] == 30 and before["records_in_clusters"] == 60
    placed = _placement(tmp_path / "records")
    straddling = [s for s in range(30) if placed[f"story{s:02d}-0"] != placed[f"story{s:02d}-1"]]
    assert before["pairs"] == len(straddling) > 0          # the leak this fixes, counted from the files
    assert before["examples"][0]["jaccard"] == round(51 / 61, 4)

    after = _split(tmp_path / "clusters")["near_duplicate_leaks"]
    placed = _placement(tmp_path / "clusters")
    assert after["pairs"] == 0 and after["by_splits"] == {} and after["group_clusters"] is True
    assert all(placed[f"story{s:02d}-0"] == placed[f"story{s:02d}-1"] for s in range(30))
    assert sorted(placed) == sorted(r["id"] for r in _rows())          # nothing lost
    saved = json.loads((tmp_path / "clusters" / "metrics/split.json").read_text())
    assert saved["near_duplicate_leaks"]["pairs"] == 0 and saved["leaked_prompts"] == 0


def test_on_violation_fail_stops_the_stage_naming_the_settings(tmp_path):
    with pytest.raises(ConfigError) as e:
        _split(tmp_path, group_clusters=False, on_violation="fail")
    assert "near-duplicate pair(s) (word-shingle Jaccard >= 0.5) straddle splits" in str(e.value)
    assert "split.leakage.group_clusters=true" in str(e.value)
    assert not (tmp_path / "split" / "train.jsonl").exists()
    assert json.loads((tmp_path / "metrics/split.json").read_text())["near_duplicate_leaks"]["pairs"] > 0
    # with clusters kept whole the same data passes under fail
    assert _split(tmp_path, on_violation="fail")["near_duplicate_leaks"]["pairs"] == 0
