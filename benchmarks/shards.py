"""What labelling in shards adds to a run: the shard stage's split of passed.jsonl, and merging caches.

What is measured
  - ``distill.scale.shard.write_shards`` (what the shard stage and ``distill shard`` run) on a
    ``passed.jsonl`` of N records (the shared BBC articles and energy-news items repeated with a new id
    each, about 670 bytes a line), into 4 shards.
  - ``distill.labeling.cache.merge_caches`` (``distill cache merge``): two worker caches of N / 2 answers
    each (a rubric answer of about 500 bytes, as the label stage stores it) merged into a new cache, then
    merged again into the same target (every answer already there: what a rerun of the merge costs).

Run from the project root:  .venv/bin/python benchmarks/shards.py [--records 100000] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _results import cpu_model, write_section

from distill.labeling.cache import ResponseCache, merge_caches
from distill.providers.base import ChatResponse
from distill.scale.shard import write_shards

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "data" / "corpora"
START, END = "<!-- shards:start -->", "<!-- shards:end -->"


def passed_file(path: Path, n: int) -> int:
    pool = [json.loads(x) for x in (CORPORA / "bbc_news_2225.jsonl").open(encoding="utf-8")]
    pool += [{"id": r["id"], "title": r["title"], "text": r["lead"] or r["title"]}
             for r in map(json.loads, (CORPORA / "energy_news_headlines_8973.jsonl").open(encoding="utf-8"))]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            r = pool[i % len(pool)]
            fh.write(json.dumps({"id": f"{r['id']}~{i}", "title": r["title"], "text": r["text"],
                                 "metadata": {}}, ensure_ascii=False) + "\n")
    return path.stat().st_size


def worker_cache(path: Path, keys: range) -> None:
    answer = json.dumps({"deployment_stage": 6, "scale": 3, "evidence_quality": 5, "reasoning": "r" * 400})
    cache = ResponseCache(path)
    cache._db.execute("BEGIN")
    for i in keys:
        cache.put(f"{i:064x}", "openai", "gpt-4o-mini", ChatResponse(answer, 900, 120, "stop", "gpt-4o-mini"))
    cache._db.execute("COMMIT")
    cache.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--write", action="store_true", help="rewrite the section in benchmarks/RESULTS.md")
    args = ap.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory(prefix="distill-shards-") as tmp:
        tmp = Path(tmp)
        size = passed_file(tmp / "passed.jsonl", n)
        t0 = time.perf_counter()
        counts = write_shards(tmp / "passed.jsonl", tmp / "shards", 4)
        shard_s = time.perf_counter() - t0
        worker_cache(tmp / "w0.sqlite", range(n // 2))
        worker_cache(tmp / "w1.sqlite", range(n // 2, n))
        cache_mb = sum((tmp / f"w{i}.sqlite").stat().st_size for i in (0, 1)) / 1e6
        t0 = time.perf_counter()
        first = merge_caches(tmp / "team.sqlite", [tmp / "w0.sqlite", tmp / "w1.sqlite"])
        merge_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        merge_caches(tmp / "team.sqlite", [tmp / "w0.sqlite", tmp / "w1.sqlite"])
        again_s = time.perf_counter() - t0
    assert sum(counts) == n and first["answers"] == n
    section = "\n".join([
        START, "## Labelling in shards: what sharding adds", "",
        (f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, shared with other work (load average "
        f"{os.getloadavg()[0]:.1f} after the run); Python {platform.python_version()}"),
        f"- Date: {dt.date.today().isoformat()}",
        f"- Command: `{' '.join(['.venv/bin/python', 'benchmarks/shards.py', *sys.argv[1:]])}`",
        "- What and on what data: the script's docstring.", "",
        "| step | input | seconds | per second |",
        "|---|---|---:|---:|",
        (f"| shard stage (`write_shards`, 4 shards) | {n:,} records, {size / 1e6:,.0f} MB | {shard_s:.2f} | "
        f"{n / shard_s:,.0f} records |"),
        (f"| `distill cache merge` into a new cache | 2 caches, {n:,} answers, {cache_mb:,.0f} MB | {merge_s:.2f} | "
        f"{n / merge_s:,.0f} answers |"),
        f"| the same merge again (all present) | the same | {again_s:.2f} | {n / again_s:,.0f} answers |",
        "",
        (f"Shard sizes: {', '.join(f'{c:,}' for c in counts)} (the id's hash spreads them evenly). Beside the "
        "oracle's time these are negligible: at the 2,000 labels/s one process reaches against a fast fake "
        f"server (label throughput, above), labelling {n:,} records takes about {n / 2000:.0f} s."),
        END])
    print(section)
    if args.write:
        write_section(START, END, section)


if __name__ == "__main__":
    main()
