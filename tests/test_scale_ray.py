"""The prefilter on Ray Data (``prefilter.engine: ray``) against the polars engine, on a local Ray cluster.

A corpus made from the shared BBC and energy-news data, with planted exact and near copies of the
articles that pass the rules (placed in later batches than their originals, so dedup has to see across
batches and across Ray tasks), broken lines, a repeated id and a row without text. Both engines run the
real stage function; every output file must be byte-identical and the metrics equal. Slow: starting
Ray takes 10 to 20 s on this shared machine. One small Ray (2 CPUs) for the module, stopped after it.
"""

from __future__ import annotations

import json
import random

import pytest

from distill import pipeline
from distill.config import DedupConfig, PrefilterConfig, RayConfig
from distill.filterspec import load_filter_at
from distill.prefilter import PASS, apply_rules, records_frame

from .conftest import REAL_FILTER

pytestmark = pytest.mark.slow

OUTPUTS = ("passed.jsonl", "blocked_sample.jsonl", "quarantine.jsonl", "duplicates.jsonl")
SPEC = load_filter_at(REAL_FILTER.parents[1], REAL_FILTER.parent.name, REAL_FILTER.name)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _edit(text: str, rng: random.Random) -> str:
    """A near copy: two adjacent words swapped in the second half of a long article."""
    words = text.split(" ")
    i = rng.randrange(len(words) // 2, len(words) - 2)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def _corpus(path, bbc_records, energy_records) -> dict[str, int]:
    """Lines of a JSONL corpus (see module docstring); what was planted, by kind."""
    rng = random.Random(7)
    rows = [{"id": r["id"], "title": r["title"], "text": r["text"]} for r in bbc_records[:1600]]
    rows += [{"id": r["id"], "title": r["title"], "text": r["text"]} for r in energy_records[:600]]
    rng.shuffle(rows)
    decisions = apply_rules(records_frame(rows), SPEC.prefilter).to_list()
    passing = [r for r, d in zip(rows, decisions) if d == PASS]
    planted = {"passing_originals": len(passing)}
    assert len(passing) >= 40
    copies = []
    for n, r in enumerate(passing[:40]):
        if n % 2:
            copies.append({"id": f"{r['id']}-copy", "title": r["title"], "text": r["text"].upper()})
        else:
            copies.append({"id": f"{r['id']}-near", "title": r["title"], "text": _edit(r["text"], rng)})
    lines = [json.dumps(r) for r in rows] + [json.dumps(r) for r in copies]
    tail = len(rows)
    lines.insert(tail // 3, '{"id": "broken", "text": "unterminated')
    lines.insert(tail // 2, json.dumps({"id": rows[5]["id"], "title": "again", "text": "a repeated id"}))
    lines.insert(2 * tail // 3, json.dumps({"id": "no-text", "title": "nothing", "text": ""}))
    lines.insert(tail // 4, "[1, 2]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    planted.update(copies=len(copies), lines=len(lines), copied=[r["id"] for r in passing[:40]],
                   ids={c["id"] for c in copies})
    return planted


def _run(tmp_path, name: str, corpus, engine: str) -> tuple[dict, dict[str, bytes]]:
    out = tmp_path / name
    cfg = PrefilterConfig(input=str(corpus), output_dir=str(out), batch_rows=400, blocked_sample_size=30,
                          engine=engine, ray=RayConfig(block_rows=90))
    metrics = pipeline.prefilter(cfg, SPEC, metrics_dir=out / "metrics", dedup=DedupConfig())
    metrics.pop("seconds")
    return metrics, {f: (out / f).read_bytes() for f in OUTPUTS}


def test_ray_engine_writes_what_the_polars_engine_writes(tmp_path, local_ray, bbc_records, energy_records):
    corpus = tmp_path / "corpus.jsonl"
    planted = _corpus(corpus, bbc_records, energy_records)
    polars_metrics, polars_files = _run(tmp_path, "polars", corpus, "polars")
    ray_metrics, ray_files = _run(tmp_path, "ray", corpus, "ray")

    # the comparison is worth something only if every path was taken: several batches and blocks, every
    # kind of decision, quarantine, and duplicates of both kinds found across batches
    assert polars_metrics["rows_read"] == planted["lines"] > 3 * 400
    assert polars_metrics["quarantine_reasons"] == {"bad_json": 1, "not_an_object": 1, "duplicate_id": 1,
                                                    "missing_text": 1}
    assert {"too_short", "no_topic_keyword"} <= set(polars_metrics["blocked_by_reason"])
    assert polars_metrics["duplicates"]["exact"] >= 20 and polars_metrics["duplicates"]["minhash"] >= 15
    assert polars_metrics["passed"] >= planted["passing_originals"] - 5

    assert ray_metrics == polars_metrics
    for name in OUTPUTS:  # same records in the same order, same reasons, same duplicates and explanations
        assert ray_files[name] == polars_files[name], name
    dupes = {d["id"]: d for d in map(json.loads, ray_files["duplicates.jsonl"].splitlines())}
    assert planted["ids"] <= set(dupes)  # every planted copy removed; an upper-cased one as an exact copy
    assert all(dupes[rid]["method"] == "exact" for rid in planted["ids"] if rid.endswith("-copy"))
    assert sum(dupes[rid]["method"] == "minhash" for rid in planted["ids"] if rid.endswith("-near")) >= 15

def test_ray_engine_reports_a_missing_cluster_with_the_setting_to_change(tmp_path, local_ray, monkeypatch):
    """With Ray not yet started and no cluster to join, the stage names the setting to change."""
    from distill.errors import ConfigError
    from distill.scale.ray_prefilter import RayPrefilter

    local_ray.shutdown()
    try:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        with pytest.raises(ConfigError, match=r"prefilter\.ray\.address='auto'.*ray start --head"):
            RayPrefilter(RayConfig(address="auto"), SPEC.prefilter, DedupConfig())
    finally:
        local_ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
