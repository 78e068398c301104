"""Prefilter streaming: rows/s and peak RSS of the prefilter stage as the corpus grows past memory.

What is measured
  The prefilter stage as DVC runs it (``python stages/prefilter.py`` in a fresh process, params composed
  from ``conf/`` with ``prefilter.input`` set to the corpus, the real filter
  ``filters/sustainability_tech_deployment/v1``, default ``prefilter.batch_rows``) on synthetic JSONL
  corpora of the given sizes. Wall time covers the whole process (imports, reading, rules, writing
  passed / quarantine / blocked sample, metrics). Peak RSS is ``ru_maxrss`` of the stage process, read
  with ``getrusage(RUSAGE_CHILDREN)`` in a wrapper process whose only child it is.

Data
  The shared corpora (2,225 BBC articles: title + full text; 8,973 energy-news items: title + lead,
  written with the lead as ``text`` and the title when the lead is null) repeated until the size is
  reached, each copy edited so that no two rows are the same: the id gets a ``~<copy>`` suffix, the title
  ``(edition <copy>)`` and the text a closing sentence naming the copy; rows are interleaved with a
  seeded shuffle of each copy. One row in 10,000 is a broken JSON line and one in 5,000 repeats an
  earlier id, so the quarantine is exercised at scale.

Run from the project root:
  .venv/bin/python benchmarks/streaming.py                       # 50 MB, printed only
  .venv/bin/python benchmarks/streaming.py --mb 200 --gb 1 --gb 2 --write   # also rewrites the
                                                                 # "Prefilter streaming" section of RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import cpu_model, write_section

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "data" / "corpora"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- streaming:start -->", "<!-- streaming:end -->"
MB = 1 << 20
RSS_TARGET_MB = 2048
# runs the stage as its only child, then reports the child's peak RSS and the wall time
_WRAPPER = ("import json, resource, subprocess, sys, time\n"
            "t0 = time.perf_counter()\n"
            "proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
            "print(json.dumps({'rc': proc.returncode, 'seconds': time.perf_counter() - t0, 'stderr': "
            "proc.stderr[-3000:], 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")


def _pool() -> list[dict[str, Any]]:
    rows = []
    with open(CORPORA / "bbc_news_2225.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append({"id": f"bbc-{r['id']}", "title": r["title"], "text": r["text"], "source": "bbc"})
    with open(CORPORA / "energy_news_headlines_8973.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append({"id": f"energy-{r['id']}", "title": r["title"], "text": r["lead"] or r["title"],
                         "source": r["source"]})
    return rows


def generate(path: Path, size_bytes: int, seed: int = 0) -> dict[str, Any]:
    """Write a synthetic corpus of about ``size_bytes`` to ``path`` (see module docstring)."""
    pool = _pool()
    rng = random.Random(seed)
    written = rows = bad = dups = 0
    copy = 0
    lost: set[int] = set()  # stories whose copy 0 is a broken line
    with open(path, "wb") as out:
        while written < size_bytes:
            order = list(range(len(pool)))
            rng.shuffle(order)
            for i in order:
                r = pool[i]
                rows += 1
                if rows % 10_000 == 0:
                    line = b'{"id": "broken-%d", "text": "no closing brace"\n' % rows
                    bad += 1
                    if copy == 0:
                        lost.add(i)
                else:
                    repeat = rows % 5_000 == 0 and copy > 0 and i not in lost  # the id of this story's copy 0
                    rid = f"{r['id']}~{0 if repeat else copy}"
                    dups += repeat
                    rec = {"id": rid, "title": f"{r['title']} (edition {copy})",
                           "text": f"{r['text']}\n\nThis is copy {copy} of the story.", "source": r["source"]}
                    line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
                out.write(line)
                written += len(line)
                if written >= size_bytes:
                    break
            copy += 1
    return {"path": str(path), "bytes": written, "rows": rows, "broken": bad, "repeated_ids": dups}


def run_stage(corpus: Path, workdir: Path, overrides: list[str] | None = None, timeout: float = 7200) -> dict[str, Any]:
    """Run the prefilter stage on ``corpus`` in ``workdir``; its wall time, peak RSS and metrics."""
    import yaml

    from distill.params import compose

    workdir.mkdir(parents=True, exist_ok=True)
    params = compose(ROOT / "conf", [f"prefilter.input={corpus}", f"filter.root={ROOT / 'filters'}",
                                     f"prefilter.output_dir={workdir / 'out'}", *(overrides or [])])
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, str(ROOT / "stages" / "prefilter.py")],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise RuntimeError(f"prefilter stage failed ({res['rc']}):\n{res['stderr']}")
    metrics = json.loads((workdir / "metrics" / "prefilter.json").read_text(encoding="utf-8"))
    return {"bytes": corpus.stat().st_size, "seconds": res["seconds"], "peak_rss_mb": res["maxrss_kb"] / 1024,
            "rows_read": metrics["rows_read"], "records": metrics["records"], "passed": metrics["passed"],
            "quarantined": metrics["quarantined"], "quarantine_reasons": metrics["quarantine_reasons"]}


def markdown(results: list[dict[str, Any]], command: str, batch_rows: int) -> str:
    import polars as pl

    lines = [START, "## Prefilter streaming", "",
             (f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores (shared with other work while measured); "
              f"Python {platform.python_version()}, polars {pl.__version__}"),
             f"- Date: {dt.date.today().isoformat()}",
             f"- Command: `{command}`",
             ("- Data: synthetic JSONL, the shared BBC articles and energy-news items repeated with edits (id suffix, "
             "edition in the title, a closing sentence), one broken line in 10,000 and one repeated id in 5,000 "
             "(`benchmarks/streaming.py`, module docstring)."),
             (f"- Measured: the prefilter stage in a fresh process (`stages/prefilter.py`, real filter, "
             f"`prefilter.batch_rows` {batch_rows:,}), wall time including imports and writing every output; peak "
             "RSS is the stage process's `ru_maxrss`."), "",
             "| input | rows | records | quarantined | passed | seconds | rows/s | MB/s | peak RSS |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['bytes'] / MB:,.0f} MB | {r['rows_read']:,} | {r['records']:,} | {r['quarantined']:,} | "
                     f"{r['passed']:,} | {r['seconds']:,.1f} | {r['rows_read'] / r['seconds']:,.0f} | "
                     f"{r['bytes'] / MB / r['seconds']:,.1f} | {r['peak_rss_mb']:,.0f} MB |")
    peak = max(r["peak_rss_mb"] for r in results)
    lines += ["", (f"Target: peak RSS under {RSS_TARGET_MB:,} MB at any size: "
              f"{'met' if peak < RSS_TARGET_MB else 'MISSED'} (largest {peak:,.0f} MB)."), END]
    return "\n".join(lines)


def write_results(section: str) -> None:
    write_section(START, END, section, RESULTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, action="append", default=[], help="a corpus size in MB (repeatable)")
    ap.add_argument("--gb", type=float, action="append", default=[], help="a corpus size in GB (repeatable)")
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--dir", type=Path, default=None, help="where corpora and outputs go (default: a temp dir)")
    ap.add_argument("--write", action="store_true", help="rewrite the section in benchmarks/RESULTS.md")
    args = ap.parse_args()
    sizes = [m * MB for m in args.mb] + [g * 1024 * MB for g in args.gb] or [50 * MB]
    results = []
    with tempfile.TemporaryDirectory(prefix="distill-stream-", dir=args.dir) as tmp:
        for size in sorted(sizes):
            corpus = Path(tmp) / f"corpus-{int(size / MB)}mb.jsonl"
            t0 = time.perf_counter()
            made = generate(corpus, int(size))
            print(f"generated {made['bytes'] / MB:,.0f} MB, {made['rows']:,} rows in {time.perf_counter() - t0:.0f} s",
                  flush=True)
            r = run_stage(corpus, Path(tmp) / f"run-{int(size / MB)}", [f"prefilter.batch_rows={args.batch_rows}"])
            corpus.unlink()
            results.append(r)
            print(f"{r['bytes'] / MB:,.0f} MB: {r['rows_read']:,} rows in {r['seconds']:.1f} s = "
                  f"{r['rows_read'] / r['seconds']:,.0f} rows/s, peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
    command = ".venv/bin/python benchmarks/streaming.py " + " ".join(sys.argv[1:])
    section = markdown(results, command.strip(), args.batch_rows)
    print(section)
    if args.write:
        write_results(section)


if __name__ == "__main__":
    main()
