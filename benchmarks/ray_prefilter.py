"""The prefilter stage on Ray Data against the polars engine: rows/s, and what starting Ray costs.

What is measured
  The prefilter stage as DVC runs it (``python stages/prefilter.py`` in a fresh process, params composed
  from ``conf/``; ``benchmarks/streaming.py``'s runner), wall time including imports, reading, rules,
  dedup and writing, on the same corpus with three engines:

  - ``polars``: the default, everything in the stage's process;
  - ``ray (local)``: ``prefilter.engine=ray`` with ``prefilter.ray.address=null``: the stage starts a
    local Ray (``num_cpus`` = this machine's CPUs) and stops it at the end, as on a laptop;
  - ``ray (cluster)``: the same, joining a Ray that is already running (started by this script, the
    way ``ray start --head`` would be on a cluster), so Ray's start-up is not in the figure.

  Every Ray run's outputs (passed, duplicates, quarantine, blocked sample) must be byte-identical to the
  polars run's (asserted). Separately, in this process: ``ray.init`` of a local Ray, the first Ray Data
  execution (workers starting) and ``ray.shutdown``.

Data
  ``benchmarks/streaming.py``'s synthetic corpus (the shared BBC articles and energy-news items repeated
  with edits: id suffix, edition in the title, a closing sentence; one broken line in 10,000, one
  repeated id in 5,000) cut at about N rows. Two filters:

  - ``real``: ``filters/sustainability_tech_deployment/v1`` as it is: most rows are blocked (short
    teasers, no keyword), under 1% reach dedup;
  - ``dedup-heavy``: the same filter with its prefilter rules reduced to ``min_words: 20``, so about three
    rows in four pass and go through exact + MinHash dedup (hash, shingles, signature, LSH query and
    exact-Jaccard checks of the candidates: a long article's copies differ from it by one sentence).

Run from the project root (with the ``scale`` extra installed):
  .venv/bin/python benchmarks/ray_prefilter.py [--rows 100000] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _results import cpu_model, write_section
from streaming import MB, generate, run_stage

ROOT = Path(__file__).resolve().parents[1]
FILTER = ROOT / "filters" / "sustainability_tech_deployment" / "v1"
START, END = "<!-- ray-prefilter:start -->", "<!-- ray-prefilter:end -->"
OUTPUTS = ("passed.jsonl", "duplicates.jsonl", "quarantine.jsonl", "blocked_sample.jsonl")
BYTES_PER_ROW = 730  # streaming.py's corpus, measured

# a Ray that outlives the stage runs: what `ray start --head` gives a cluster; prints its address, then
# waits for its standard input to close
_HOLDER = ("import sys, ray\n"
           "ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, logging_level='WARNING')\n"
           "print(ray.get_runtime_context().gcs_address, flush=True)\n"
           "sys.stdin.read()\n"
           "ray.shutdown()\n")


def _filter_root(tmp: Path, heavy: bool) -> Path:
    root = tmp / ("filters-heavy" if heavy else "filters-real")
    dst = root / FILTER.parent.name / FILTER.name
    shutil.copytree(FILTER, dst)
    if heavy:
        spec = yaml.safe_load((dst / "filter.yaml").read_text(encoding="utf-8"))
        spec["prefilter"] = {"min_words": 20}
        (dst / "filter.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return root


def startup_costs(cpus: int) -> dict[str, float]:
    """ray.init of a local Ray, the first (tiny) Ray Data execution, ray.shutdown, in this process."""
    t0 = time.perf_counter()
    import ray
    import ray.data

    t1 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    t2 = time.perf_counter()
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.range(cpus * 2, override_num_blocks=cpus * 2).map_batches(lambda b: b).materialize()
    t3 = time.perf_counter()
    ray.data.range(cpus * 2, override_num_blocks=cpus * 2).map_batches(lambda b: b).materialize()
    t4 = time.perf_counter()
    ray.shutdown()
    t5 = time.perf_counter()
    return {"import": t1 - t0, "init": t2 - t1, "first_execution": t3 - t2, "next_execution": t4 - t3,
            "shutdown": t5 - t4}


def breakdown(corpus: Path, filters: Path) -> dict[str, float]:
    """Where the polars engine's time goes, in this process, one step at a time over the whole corpus:
    reading (records and quarantine), the rules, the dedup features of the records that pass (what the
    Ray engine moves to workers) and the dedup decisions given those features (what stays)."""
    from distill.config import DedupConfig, PrefilterConfig
    from distill.dedup import Deduper, Features
    from distill.filterspec import load_filter_at
    from distill.prefilter import PASS, apply_rules, records_frame
    from distill.sources import CorpusStream

    spec = load_filter_at(filters, FILTER.parent.name, FILTER.name)
    t0 = time.perf_counter()
    batches = list(CorpusStream(PrefilterConfig(input=str(corpus))).batches())
    t1 = time.perf_counter()
    passing = [[r for r, d in zip(b, apply_rules(records_frame(b), spec.prefilter).to_list()) if d == PASS]
               for b in batches]
    t2 = time.perf_counter()
    features = Features(DedupConfig())
    made = [[features.of(r["text"]) for r in b] for b in passing]
    t3 = time.perf_counter()
    deduper = Deduper(DedupConfig())
    for b, f in zip(passing, made):
        deduper.batch(b, f)
    deduper.close()
    t4 = time.perf_counter()
    return {"read": t1 - t0, "rules": t2 - t1, "features": t3 - t2, "decisions": t4 - t3}


def run(corpus: Path, work: Path, filters: Path, engine: str, address: str | None) -> dict:
    overrides = [f"filter.root={filters}", f"prefilter.engine={engine}"]
    if address:
        overrides.append(f"prefilter.ray.address={address}")
    r = run_stage(corpus, work, overrides)
    r["metrics"] = json.loads((work / "metrics" / "prefilter.json").read_text(encoding="utf-8"))
    r["outputs"] = {name: (work / "out" / name).read_bytes() for name in OUTPUTS}
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--write", action="store_true", help="rewrite the section in benchmarks/RESULTS.md")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    costs = startup_costs(args.cpus)
    print("Ray start-up:", {k: round(v, 2) for k, v in costs.items()}, flush=True)
    rows: list[dict] = []
    split: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="distill-ray-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.jsonl"
        made = generate(corpus, args.rows * BYTES_PER_ROW)
        print(f"corpus: {made['rows']:,} rows, {made['bytes'] / MB:,.0f} MB", flush=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(args.cpus)], stdin=subprocess.PIPE, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            address = holder.stdout.readline().strip()
            for heavy in (False, True):
                filters = _filter_root(tmp, heavy)
                name = "dedup-heavy" if heavy else "real"
                split[name] = breakdown(corpus, filters)
                print(name, {k: round(v, 2) for k, v in split[name].items()}, flush=True)
                base = None
                for engine, addr, label in (("polars", None, "polars"), ("ray", None, "ray (local)"),
                                            ("ray", address, "ray (cluster)")):
                    slug = label.replace(" (", "-").rstrip(")")  # no parentheses: Hydra overrides hold the path
                    r = run(corpus, tmp / f"{name}-{slug}", filters, engine, addr)
                    if base is None:
                        base = r
                    else:
                        for out in OUTPUTS:
                            assert r["outputs"][out] == base["outputs"][out], (name, label, out)
                    m = r["metrics"]
                    rows.append({"data": name, "engine": label, "rows": r["rows_read"], "seconds": r["seconds"],
                                 "passed": m["passed"], "dupes": sum(m["duplicates"].values()),
                                 "rules_passed": m["passed"] + sum(m["duplicates"].values()),
                                 "rss": r["peak_rss_mb"], "load": os.getloadavg()[0]})
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            holder.stdin.close()
            holder.wait(timeout=120)
    section = markdown(rows, costs, args, load_before, split)
    print(section)
    if args.write:
        write_section(START, END, section)


def markdown(rows: list[dict], costs: dict[str, float], args, load_before: float,
             split: dict[str, dict[str, float]]) -> str:
    polars = {r["data"]: r["seconds"] for r in rows if r["engine"] == "polars"}
    lines = [
        START, "## Prefilter on Ray Data", "",
        (f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, shared with other work while measured "
        f"(load average {load_before:.1f} before the runs; per run in the table); Python "
        f"{platform.python_version()}, ray {_version('ray')}, polars {_version('polars')}"),
        f"- Date: {dt.date.today().isoformat()}",
        f"- Command: `{' '.join(['.venv/bin/python', 'benchmarks/ray_prefilter.py', *sys.argv[1:]])}`",
        ("- Data and engines: see the script's docstring. Wall time of the stage process (imports, reading, rules, "
        "dedup, writing), one run each; every Ray run's outputs byte-identical to the polars run's (asserted). "
        f"Ray with {args.cpus} CPUs, `prefilter.batch_rows` 50,000, `prefilter.ray.block_rows` 5,000."),
        "",
        ("| data | engine | rows | passed the rules | duplicates removed | seconds | rows/s | vs polars | peak RSS "
        "(stage process) | load avg after |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['data']} | {r['engine']} | {r['rows']:,} | {r['rules_passed']:,} | {r['dupes']:,} | "
                     f"{r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | "
                     f"{polars[r['data']] / r['seconds']:.2f}x | {r['rss']:,.0f} MB | {r['load']:.1f} |")
    lines += ["", (f"Ray's own overheads, measured in one process ({args.cpus} CPUs): `import ray` "
              f"{costs['import']:.1f} s, `ray.init` of a local Ray {costs['init']:.1f} s, the first Ray Data "
              f"execution (workers start) {costs['first_execution']:.1f} s, the next one "
              f"{costs['next_execution']:.2f} s, `ray.shutdown` {costs['shutdown']:.1f} s."), ""]
    lines += [("Where the polars engine's time goes, step by step in one process (`breakdown()` in the script: the "
              "Ray engine moves rules and features to the workers; reading, the dedup decisions and writing stay "
              "in the stage's process):"), "",
              ("| data | read (records, quarantine) | rules | dedup features (hash, shingles, MinHash) | "
              "dedup decisions (LSH, exact Jaccard, explanation) | share movable to Ray |"),
              "|---|---:|---:|---:|---:|---:|"]
    for name, t in split.items():
        total = sum(t.values())
        lines.append(f"| {name} | {t['read']:.1f} s | {t['rules']:.1f} s | {t['features']:.1f} s | "
                     f"{t['decisions']:.1f} s | {(t['rules'] + t['features']) / total:.0%} |")
    lines.append(END)
    return "\n".join(lines)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
