"""Label throughput: validated labels per second, end to end, against a fake OpenAI server.

What is measured (each number in a fresh client process, the server in a process of its own):

- ``engine``: ``distill.pipeline.label`` itself with ``oracle.transport=aiohttp``: input JSONL read,
  prompt rendered, scheduler slot, request, JSON-schema validation, SQLite cache write (committed
  before the record is reported), events.jsonl, labels.jsonl through the atomic writer, metrics.
  A fresh cache every run, so every record is a paid (uncached) request.
- ``sdk``: the baseline people write first: ``asyncio`` + ``openai.AsyncOpenAI`` + a semaphore, the
  same prompts and request fields, no validation, no cache, no output file.
- ``curator``: bespokelabs-curator (``curator.LLM``) from its own virtual environment, on the same
  server and prompts, when it is installed (``--curator-python``).
- ``million``: 1,000,000 records streamed through the same engine objects pipeline.label builds
  (Labeler + Scheduler + ResponseCache + Events + AtomicWriter), bounded by ``--million-seconds``,
  sampling the client's RSS as it goes.

The fake server is ``tests/fakes/openai_server.FakeOpenAI`` (default responder: a schema-valid label
derived from the prompt) run by ``serve`` below, which forgets what it received every half second so
its own memory stays flat over a million requests.

    .venv/bin/python benchmarks/label_throughput.py                 # the full table, updates RESULTS.md
    .venv/bin/python benchmarks/label_throughput.py --quick         # smaller, no RESULTS.md
    .venv/bin/python benchmarks/label_throughput.py serve --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _results import cpu_model, write_section
from typing_extensions import Self

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fake server lives in tests/ (a package at the project root)
    sys.path.insert(0, str(ROOT))

FILTER = ROOT / "filters" / "sustainability_tech_deployment" / "v1"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
KEY_ENV = "DISTILL_BENCH_KEY"
MODEL = "fake-bench"
START, END = "<!-- label-throughput:start -->", "<!-- label-throughput:end -->"

_TOPICS = [
    ("solar farm", "A 120 MW solar farm", "has been feeding the grid for two years"),
    ("offshore wind", "An offshore wind project of 40 turbines", "reached financial close last month"),
    ("battery storage", "A grid-scale battery storage system", "is running a six-month pilot"),
    ("green hydrogen", "A green hydrogen electrolyser plant", "was announced with a 2030 target"),
    ("heat pumps", "A district programme of heat pumps", "has retrofitted 3,000 homes"),
    ("geothermal", "A geothermal plant", "entered commercial operation after a two-year pilot"),
    ("carbon capture", "A carbon capture unit at a cement works", "captured less than planned"),
    ("electric buses", "A fleet of 200 electric buses", "now serves the whole city"),
]


def records(n: int, prefix: str = "r") -> Iterator[dict[str, Any]]:
    """``n`` distinct short articles (as the prefilter writes them), generated lazily."""
    for i in range(n):
        topic, subject, status = _TOPICS[i % len(_TOPICS)]
        yield {
            "id": f"{prefix}-{i:07d}",
            "title": f"{topic.capitalize()} update number {i}",
            "text": (f"{subject} {status}, the operator said on Tuesday. Officials in region {i} confirmed "
                     f"the figures in a public filing. Analysts expect the {topic} market to grow, although "
                     f"costs remain uncertain. The project employs {10 + 7 * i} people."),
            "metadata": {"source": f"Example News {i % 3}", "published": f"2025-{1 + i % 12:02d}-15"},
        }


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ============================================================================ the server process
def serve(latency: float) -> None:
    import signal

    from tests.fakes.openai_server import FakeOpenAI

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    total = 0
    with FakeOpenAI(latency_s=latency) as srv:
        print(srv.base_url, flush=True)
        while not stop.wait(0.5):
            total += srv.count  # approximate under load (a request may land between the two calls)
            srv.reset()
        total += srv.count
    print(f"served about {total} requests", flush=True)


class Server:
    """``serve`` in a subprocess; ``url`` once it listens."""

    def __init__(self, latency: float):
        self.latency = latency
        self.proc = subprocess.Popen([sys.executable, __file__, "serve", "--latency", str(latency)],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = line

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ============================================================================ clients (one per process)
def bench_oracle(url: str, transport: str = "aiohttp"):
    from distill.providers import oracle_config

    return oracle_config(provider="openai", model=MODEL, base_url=url, api_key_env=KEY_ENV, transport=transport,
                         temperature=0.0, max_tokens=384, seed=0, request_timeout_s=120, sdk_max_retries=0)


def client_engine(url: str, input_path: Path, workdir: Path, concurrency: int) -> dict[str, Any]:
    """``pipeline.label`` exactly as the stage runs it (progress off: nobody watches a benchmark)."""
    import aiohttp  # noqa: F401 - what label() imports lazily, imported before the clock starts (start-up

    import distill.labeling.engine
    import distill.labeling.progress
    import distill.providers.openai  # noqa: F401
    from distill import pipeline
    from distill.config import LabelConfig
    from distill.filterspec import load_filter

    spec = load_filter(FILTER)
    cfg = LabelConfig(max_words=200, max_attempts=3, concurrency=concurrency, progress="off",
                      cache_path=str(workdir / "cache" / "llm.sqlite"), output_dir=str(workdir / "labels"))
    oracle = bench_oracle(url)
    c0, t0 = cpu_s(), time.perf_counter()
    metrics = pipeline.label(cfg, oracle, spec, input_path, metrics_dir=workdir)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    with open(workdir / "labels" / "labels.jsonl", "rb") as fh:
        written = sum(1 for _ in fh)
    return {"labels": written, "valid": metrics["valid"], "requests": metrics["requests"],
            "invalid": metrics["invalid"], "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb()}


def client_sdk(url: str, input_path: Path, concurrency: int) -> dict[str, Any]:
    """The plain SDK loop: AsyncOpenAI + semaphore, same prompts and fields, no validation or cache."""
    import openai  # imported before the clock starts, as for the engine

    from distill import jsonl
    from distill.compress import compress
    from distill.filterspec import load_filter

    spec = load_filter(FILTER)
    prompts = [spec.render({**r, "text": compress(r["text"], 200)}) for r in jsonl.read_jsonl(input_path)]
    fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": spec.json_schema, "strict": True}}

    async def main() -> int:
        client = openai.AsyncOpenAI(api_key="sk-bench", base_url=url, max_retries=0, timeout=120)
        sem = asyncio.Semaphore(concurrency)

        async def one(messages):
            async with sem:
                r = await client.chat.completions.create(model=MODEL, messages=messages, temperature=0.0,
                                                         max_tokens=384, seed=0, response_format=fmt)
                return r.choices[0].message.content

        try:
            answers = await asyncio.gather(*(one(m) for m in prompts))
        finally:
            await client.close()
        return sum(1 for a in answers if a)

    c0, t0 = cpu_s(), time.perf_counter()
    done = asyncio.run(main())
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    return {"labels": done, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb()}


def client_transport(url: str, input_path: Path, concurrency: int) -> dict[str, Any]:
    """The transport alone, for reference: the aiohttp OpenAIProvider.complete behind a semaphore, the same
    requests, no engine (no validation, cache, scheduler, events or output)."""
    from distill import jsonl
    from distill.compress import compress
    from distill.filterspec import load_filter
    from distill.providers.base import ChatRequest
    from distill.providers.openai import OpenAIProvider

    spec = load_filter(FILTER)
    requests = [ChatRequest(messages=spec.render({**r, "text": compress(r["text"], 200)}), schema=spec.json_schema,
                            max_tokens=384, seed=0) for r in jsonl.read_jsonl(input_path)]

    async def main() -> int:
        provider = OpenAIProvider(bench_oracle(url))
        sem = asyncio.Semaphore(concurrency)

        async def one(request):
            async with sem:
                return await provider.complete(request)

        try:
            answers = await asyncio.gather(*(one(r) for r in requests))
        finally:
            await provider.aclose()
        return sum(1 for a in answers if a.text)

    c0, t0 = cpu_s(), time.perf_counter()
    done = asyncio.run(main())
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    return {"labels": done, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb()}


def client_million(url: str, workdir: Path, n: int, concurrency: int, seconds: float) -> dict[str, Any]:
    """``n`` records streamed through the objects pipeline.label builds, until done or ``seconds`` pass."""
    import aiohttp  # noqa: F401 - imported before the clock starts

    from distill import jsonl
    from distill.config import LabelConfig
    from distill.filterspec import load_filter
    from distill.labeling.build import build_labeler
    from distill.labeling.cache import ResponseCache
    from distill.labeling.events import Events

    spec = load_filter(FILTER)
    cache = ResponseCache(workdir / "cache" / "llm.sqlite")
    events = Events(workdir / "labels" / "events.jsonl")
    label = LabelConfig(max_words=200, max_attempts=3, transport_retries=6, concurrency=concurrency)
    labeler = build_labeler(spec, bench_oracle(url), label, cache, events=events)
    curve: list[dict[str, float]] = []
    state = {"done": 0}
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def stream() -> Iterator[dict[str, Any]]:
        for r in records(n, "m"):
            if time.perf_counter() > deadline:
                return
            yield r

    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5.0):
            curve.append({"t": round(time.perf_counter() - t0, 1), "done": state["done"], "rss_mb": round(rss_mb(), 1)})

    sampler = threading.Thread(target=sample, daemon=True)
    rss0 = rss_mb()

    async def run() -> None:
        try:
            with jsonl.AtomicWriter(workdir / "labels" / "labels.jsonl") as good, \
                    jsonl.AtomicWriter(workdir / "labels" / "invalid.jsonl") as bad:
                async for kind, row in labeler.run(stream(), concurrency):
                    (good if kind == "valid" else bad).write(row)
                    state["done"] += 1
        finally:
            await labeler.provider.aclose()

    c0 = cpu_s()
    sampler.start()
    asyncio.run(run())
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    stop.set()
    sampler.join()
    curve.append({"t": round(wall, 1), "done": state["done"], "rss_mb": round(rss_mb(), 1)})
    cache.close()
    events.close()
    with open(workdir / "labels" / "labels.jsonl", "rb") as fh:
        written = sum(1 for _ in fh)
    return {"labels": written, "valid": labeler.stats.valid, "requests": labeler.stats.requests,
            "target": n, "wall_s": wall, "cpu_s": cpu, "rss_start_mb": round(rss0, 1),
            "peak_rss_mb": peak_rss_mb(), "curve": curve}


def run_client(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    os.environ.setdefault(KEY_ENV, "sk-bench-key")
    if args.impl == "engine":
        out = client_engine(args.url, Path(args.input), workdir, args.concurrency)
    elif args.impl == "sdk":
        out = client_sdk(args.url, Path(args.input), args.concurrency)
    elif args.impl == "transport":
        out = client_transport(args.url, Path(args.input), args.concurrency)
    elif args.impl == "million":
        out = client_million(args.url, workdir, args.n, args.concurrency, args.seconds)
    else:
        raise SystemExit(f"unknown client {args.impl}")
    print("RESULT " + json.dumps(out), flush=True)


# ============================================================================ curator (its own venv)
CURATOR_SCRIPT = r"""
import json, os, sys, time, resource
from bespokelabs import curator
url, path, conc = sys.argv[1], sys.argv[2], int(sys.argv[3])
prompts = [json.loads(l)["messages"] for l in open(path, encoding="utf-8") if l.strip()]
llm = curator.LLM(model_name="gpt-4o-mini", backend="openai",
                  backend_params={"base_url": url, "api_key": "sk-bench", "max_concurrent_requests": conc,
                                  "max_requests_per_minute": 10_000_000, "max_tokens_per_minute": 10_000_000_000,
                                  "max_retries": 0, "request_timeout": 120},
                  generation_params={"temperature": 0.0, "max_tokens": 384, "seed": 0})
r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
out = llm([{"messages": m} for m in prompts]) if False else llm(prompts)
wall = time.perf_counter() - t0; r1 = resource.getrusage(resource.RUSAGE_SELF)
ds = getattr(out, "dataset", out)
n = sum(1 for row in ds if row.get("response"))
cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
result = {"labels": n, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": r1.ru_maxrss / 1024}
print("RESULT " + json.dumps(result), flush=True)
"""


# ============================================================================ orchestration
def _spawn(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
                          env={**os.environ, KEY_ENV: "sk-bench-key", **(env or {})})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stdout + proc.stderr)[-3000:]
    raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode} without a result:\n{tail}")


def client_cmd(impl: str, url: str, concurrency: int, workdir: Path, input_path: Path | None = None,
               n: int = 0, seconds: float = 0) -> list[str]:
    cmd = [sys.executable, __file__, "client", impl, "--url", url, "--concurrency", str(concurrency),
           "--workdir", str(workdir)]
    if input_path:
        cmd += ["--input", str(input_path)]
    if n:
        cmd += ["--n", str(n), "--seconds", str(seconds)]
    return cmd


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from distill import jsonl
    from distill.compress import compress
    from distill.filterspec import load_filter

    tmp = Path(tempfile.mkdtemp(prefix="label-bench-"))
    results: dict[str, Any] = {"rows": [], "curator": None, "million": None}
    try:
        input_path = tmp / "passed.jsonl"
        jsonl.write_jsonl(input_path, records(args.records))
        spec = load_filter(FILTER)
        messages_path = tmp / "messages.jsonl"  # the same prompts, for curator
        jsonl.write_jsonl(messages_path, ({"messages": spec.render({**r, "text": compress(r["text"], 200)})}
                                          for r in records(args.records)))
        for latency in args.latencies:
            with Server(latency) as srv:
                for conc in args.concurrency:
                    row: dict[str, Any] = {"latency_ms": round(latency * 1000), "concurrency": conc}
                    for impl in ("engine", "transport", "sdk"):
                        if impl == "sdk" and args.skip_sdk:
                            continue
                        runs = []
                        for rep in range(args.repeats):
                            wd = tmp / f"{impl}-{latency}-{conc}-{rep}"
                            wd.mkdir()
                            load0, c0 = os.getloadavg()[0], srv.cpu_s()
                            r = _spawn(client_cmd(impl, srv.url, conc, wd, input_path), args.timeout)
                            r["server_cpu_s"], r["load_before"] = srv.cpu_s() - c0, load0
                            shutil.rmtree(wd, ignore_errors=True)
                            if r["labels"] != args.records:
                                raise RuntimeError(
                                    f"{impl} at {latency}s/{conc}: {r['labels']} of {args.records} labels")
                            runs.append(r)
                        r = max(runs, key=rate)  # best of the repeats: the machine is shared
                        r["all_rates"] = [round(rate(x)) for x in runs]
                        row[impl] = r
                        print(f"  {impl:9s} latency {latency * 1000:4.0f} ms  concurrency {conc:4d}: "
                              f"{r['labels'] / r['wall_s']:8.0f} labels/s  "
                              f"{1000 * r['cpu_s'] / r['labels']:.3f} CPU ms/label  "
                              f"peak RSS {r['peak_rss_mb']:.0f} MB  "
                              f"server {1000 * r['server_cpu_s'] / r['labels']:.3f} "
                              f"CPU ms/request  load before {load0:.2f}", flush=True)
                    results["rows"].append(row)
                if latency == 0 and args.curator_python and not args.reuse:
                    results["curator"] = [run_curator(args, srv, messages_path, conc) for conc in args.concurrency]
        if args.million and not args.reuse:
            with Server(0.0) as srv:
                wd = tmp / "million"
                wd.mkdir()
                print(f"  million: up to {args.million:,} records, at most {args.million_seconds:.0f} s ...",
                      flush=True)
                load0, c0 = os.getloadavg()[0], srv.cpu_s()
                r = _spawn(client_cmd("million", srv.url, args.million_concurrency, wd, n=args.million,
                                      seconds=args.million_seconds), args.million_seconds + 600)
                r.update(concurrency=args.million_concurrency, server_cpu_s=srv.cpu_s() - c0, load_before=load0)
                results["million"] = r
                print(f"  million: {r['labels']:,} labels in {r['wall_s']:.0f} s ({r['labels'] / r['wall_s']:.0f}/s), "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def run_curator(args: argparse.Namespace, srv: Server, messages_path: Path, conc: int) -> dict[str, Any]:
    py = Path(args.curator_python)
    if not py.exists():
        return {"concurrency": conc, "error": f"{py} not found (install with: python -m venv /tmp/venv-curator "
                                              "&& /tmp/venv-curator/bin/pip install bespokelabs-curator)"}
    cache_dir = Path(tempfile.mkdtemp(prefix="curator-cache-"))
    env = {"CURATOR_CACHE_DIR": str(cache_dir), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TELEMETRY_ENABLED": "false", "OPENAI_API_KEY": "sk-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    # curator counts tokens with tiktoken, which downloads its BPE file on first use (no network here);
    # litellm, a curator dependency, ships that file: point tiktoken's cache at it
    bundled = sorted(py.parent.parent.glob("lib/python3*/site-packages/litellm/litellm_core_utils/tokenizers"))
    if bundled:
        env["TIKTOKEN_CACHE_DIR"] = str(bundled[0])
    try:
        c0 = srv.cpu_s()
        r = _spawn([str(py), "-c", CURATOR_SCRIPT, srv.url, str(messages_path), str(conc)], args.timeout, env)
        r["server_cpu_s"] = srv.cpu_s() - c0
        r["concurrency"] = conc
        print(f"  curator latency    0 ms  concurrency {conc:4d}: {r['labels'] / r['wall_s']:8.0f} labels/s  "
              f"{1000 * r['cpu_s'] / r['labels']:.3f} CPU ms/label  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        return r
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        msg = str(e)
        print(f"  curator failed: {msg[-800:]}", flush=True)
        return {"concurrency": conc, "error": msg[-1500:]}
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


# ============================================================================ report
def rate(r: dict[str, Any]) -> float:
    return r["labels"] / r["wall_s"]


def _ideal(row: dict[str, Any]) -> float | None:
    return row["concurrency"] / (row["latency_ms"] / 1000) if row["latency_ms"] else None


def _ms(r: dict[str, Any] | None, key: str = "cpu_s") -> str:
    return f"{1000 * r[key] / r['labels']:.3f}" if r else "-"


def _mb(r: dict[str, Any] | None) -> str:
    return f"{r['peak_rss_mb']:.0f} MB" if r else "-"


def table(results: dict[str, Any]) -> str:
    lines = [
        ("| server latency | concurrency | ideal (concurrency / latency) | **engine labels/s** | engine / ideal | "
        "transport alone, answers/s | SDK loop, answers/s | engine / SDK loop |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        e, t, s, ideal = row["engine"], row.get("transport"), row.get("sdk"), _ideal(row)
        lines.append(
            f"| {row['latency_ms']} ms | {row['concurrency']} | {f'{ideal:,.0f}' if ideal else '-'} | "
            f"**{rate(e):,.0f}** | {f'{rate(e) / ideal:.0%}' if ideal else '-'} | "
            f"{f'{rate(t):,.0f}' if t else '-'} | {f'{rate(s):,.0f}' if s else '-'} | "
            f"{f'{rate(e) / rate(s):.2f}x' if s else '-'} |")
    lines += [
        "", ("| server latency | concurrency | engine CPU ms/label | transport alone CPU ms/answer | "
        "SDK loop CPU ms/answer | engine peak RSS | SDK loop peak RSS | server CPU ms/request (engine run) | "
        "load avg before the engine run |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        e, t, s = row["engine"], row.get("transport"), row.get("sdk")
        lines.append(
            f"| {row['latency_ms']} ms | {row['concurrency']} | {_ms(e)} | {_ms(t)} | {_ms(s)} | "
            f"{e['peak_rss_mb']:.0f} MB | {_mb(s)} | {_ms(e, 'server_cpu_s')} | "
            f"{e['load_before']:.2f} |")
    return "\n".join(lines)


def markdown(results: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    out = [
        START, "## Label throughput", "",
        (f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, shared with other work while measured (the "
        "load average before each engine run is in the second table; 1.0 means one core busy with something "
        f"else); Python {platform.python_version()}, aiohttp {_version('aiohttp')}, openai {_version('openai')}, "
        f"orjson {_version('orjson') or 'not installed'}; default asyncio event loop."),
        f"- Date: {_dt.date.today().isoformat()}",
        f"- Command: `{command}`" + (f"; curator and the million-record run: `{results['reused_from']}` "
                                     "(same day, same machine)" if results.get("reused_from") else ""),
        ("- Setup: the fake OpenAI server (`tests/fakes/openai_server.FakeOpenAI`, default responder: a "
        "schema-valid label derived from the prompt) runs in a process of its own (`label_throughput.py serve`, "
        "which forgets what it received every half second so its memory stays flat); every client runs in a "
        "fresh process of its own, so CPU time and peak RSS are the client's alone. Server and client share "
        "the 2 cores."),
        (f"- Workload: {args.records:,} distinct synthetic articles per cell"
         + (f", each cell run {args.repeats} times and the best run reported (the machine is shared; every run's "
            "rate is in the raw results)" if args.repeats > 1 else "") + ", filter "
        "`sustainability_tech_deployment/v1` (8 integer dimensions + reasoning; about 2.4 kB of prompt per "
        "request), `max_words` 200, `structured_output: json_schema`, max_tokens 384, seed 0."),
        ("- engine: `distill.pipeline.label` with `oracle.transport: aiohttp`, a fresh cache each run (every "
        "record is a real request): input read from JSONL, prompt rendered, scheduler slot, request, answer "
        "validated against the schema, committed to the SQLite cache before its record is reported, an event "
        "per request in events.jsonl, labels.jsonl written through the atomic writer, metrics. A cell counts "
        "only if labels.jsonl holds every record. Modules `label()` imports lazily are imported before the "
        "clock starts (start-up is per process, not per label)."),
        ("- transport alone (reference): `OpenAIProvider.complete` (aiohttp) behind an `asyncio.Semaphore`, the same "
        "requests, nothing else: what the engine costs on top of its HTTP client."),
        ("- SDK loop (the baseline): `asyncio.gather` over `openai.AsyncOpenAI().chat.completions.create` "
        "behind an `asyncio.Semaphore(concurrency)`, default transport, the same messages and request fields, "
        "no validation, cache or output."),
        ("- CPU ms/label: the client process's user + system CPU time over the run, per label; peak RSS: its "
        "`ru_maxrss` (imports included); server CPU: the server process's, per request."),
        "", table(results), "",
    ]
    out += _targets(results)
    out += _curator_md(results)
    out += _million_md(results.get("million"))
    out.append(END)
    return "\n".join(out)


def _targets(results: dict[str, Any]) -> list[str]:
    rows = results["rows"]
    lines = ["Targets:", ""]
    zero = [r for r in rows if r["latency_ms"] == 0]
    ceiling = max((rate(r["engine"]) for r in zero), default=None)
    if zero:
        met = "met" if min(rate(r["engine"]) for r in zero) >= 2000 else "MISSED"
        lines.append(f"- >= 2,000 labels/s at 0 ms: {met} "
                     f"({', '.join(_at(r) for r in zero)}). With no server latency this is the client's CPU "
                     "ceiling on this machine, with the server taking part of the other core.")
    for r in rows:
        ideal = _ideal(r)
        if not ideal:
            continue
        got, t = rate(r["engine"]), r.get("transport")
        alone = f"; the transport alone reached {rate(t):,.0f}/s = {rate(t) / ideal:.0%}" if t else ""
        if ceiling is not None and ideal > ceiling:
            lines.append(f"- {r['latency_ms']} ms, concurrency {r['concurrency']}: the ideal {ideal:,.0f}/s is above "
                         f"the client ceiling ({ceiling:,.0f}/s at 0 ms), so the ceiling is the bound: {got:,.0f}/s = "
                         f"{got / ceiling:.0%} of it{alone}.")
        else:
            lines.append(f"- >= 90% of concurrency / latency at {r['latency_ms']} ms, concurrency {r['concurrency']}: "
                         f"{'met' if got >= 0.9 * ideal else 'MISSED'} ({got:,.0f}/s = {got / ideal:.0%} of "
                         f"{ideal:,.0f}/s{alone}).")
    ratios = [rate(r["engine"]) / rate(r["sdk"]) for r in rows if r.get("sdk")]
    if ratios:
        lines.append(f"- >= 3x the SDK loop: {'met in every cell' if min(ratios) >= 3 else 'not in every cell'} "
                     f"(from {min(ratios):.2f}x to {max(ratios):.2f}x).")
    lines.append("")
    return lines


def _at(row: dict[str, Any]) -> str:
    return f"{rate(row['engine']):,.0f} at concurrency {row['concurrency']}"


def _curator_md(results: dict[str, Any]) -> list[str]:
    runs = results.get("curator")
    if not runs:
        return ["Curator: not run (`--curator-python ''`).", ""]
    engine = {r["concurrency"]: r["engine"] for r in results["rows"] if r["latency_ms"] == 0}
    lines = [("bespokelabs-curator (its own venv; `curator.LLM(backend=\"openai\")` with `base_url` set to the same "
             "server, the same 0 ms latency and the same messages, `max_concurrent_requests` = concurrency, rate "
             "limits set far above the rate, its response cache in a fresh temporary folder):"), ""]
    errors = [r for r in runs if "error" in r]
    ok = [r for r in runs if "error" not in r]
    if ok:
        lines += ["| concurrency | curator labels/s | curator CPU ms/label | curator peak RSS | engine / curator |",
                  "|---:|---:|---:|---:|---:|"]
        for c in ok:
            e = engine.get(c["concurrency"])
            ratio = f"{rate(e) / rate(c):.2f}x" if e else "-"
            lines.append(f"| {c['concurrency']} | {rate(c):,.0f} | {1000 * c['cpu_s'] / c['labels']:.3f} | "
                         f"{c['peak_rss_mb']:.0f} MB | {ratio} |")
        lines += ["", ("Curator's clock starts after its imports and `curator.LLM(...)`, as the engine's does after "
                  "its imports; it includes curator's work per run (fingerprinting the prompts, writing its "
                  "response files, building the Hugging Face dataset it returns), as the engine's includes reading "
                  "the input and writing its outputs."), ""]
    for c in errors:
        lines += [f"Curator at concurrency {c['concurrency']} did not complete:", "", "```", c["error"].strip()[-1200:],
                  "```", ""]
    return lines


def _million_md(m: dict[str, Any] | None) -> list[str]:
    if not m:
        return []
    done = m["labels"]
    lines = [f"Million-record stream (same engine objects as pipeline.label, records generated on the fly, 0 ms "
             f"server, concurrency {m['concurrency']}): {done:,} of {m['target']:,} records labelled and written in "
             f"{m['wall_s']:.0f} s ({done / m['wall_s']:,.0f} labels/s, "
             f"{1000 * m['cpu_s'] / max(done, 1):.3f} CPU ms/label"
             + ("" if done >= m["target"] else f"; stopped by the time bound, the full million would take about "
                f"{m['target'] / (done / m['wall_s']) / 60:.0f} minutes at this rate") + "). "
             f"Peak RSS {m['peak_rss_mb']:.0f} MB (target < 400 MB: {'met' if m['peak_rss_mb'] < 400 else 'MISSED'}); "
             f"RSS at start {m['rss_start_mb']:.0f} MB. Server CPU {1000 * m['server_cpu_s'] / max(done, 1):.3f} ms "
             f"per request; load average before the run {m['load_before']:.2f}.", "",
             "| seconds | records done | RSS MB |", "|---:|---:|---:|"]
    curve = m["curve"]
    step = max(1, len(curve) // 12)
    picked = curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else [])
    for p in picked:
        lines.append(f"| {p['t']:.0f} | {p['done']:,} | {p['rss_mb']:.0f} |")
    lines.append("")
    return lines


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def update_results(section: str) -> None:
    write_section(START, END, section, RESULTS)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    p_serve = sub.add_parser("serve", help="run the fake server (used by the benchmark itself)")
    p_serve.add_argument("--latency", type=float, default=0.0)
    p_client = sub.add_parser("client", help="one measurement (used by the benchmark itself)")
    p_client.add_argument("impl", choices=["engine", "transport", "sdk", "million"])
    p_client.add_argument("--url", required=True)
    p_client.add_argument("--concurrency", type=int, required=True)
    p_client.add_argument("--workdir", required=True)
    p_client.add_argument("--input")
    p_client.add_argument("--n", type=int, default=0)
    p_client.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--records", type=int, default=20_000, help="records per table cell")
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 0.05], help="server latency, seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--skip-sdk", action="store_true")
    parser.add_argument("--million", type=int, default=1_000_000, help="records in the memory run (0: skip)")
    parser.add_argument("--million-seconds", type=float, default=900, help="time bound of the memory run")
    parser.add_argument("--million-concurrency", type=int, default=256)
    parser.add_argument("--curator-python", default="/tmp/venv-curator/bin/python",
                        help="python of a venv with bespokelabs-curator ('' to skip)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per table cell")
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--quick", action="store_true", help="2,000 records, 20,000 in the memory run, no RESULTS.md")
    parser.add_argument("--repeats", type=int, default=1, help="runs per table cell; the best is reported")
    parser.add_argument("--reuse", help="take the curator and million results from this --save file instead of "
                                        "measuring them again (its command is recorded)")
    parser.add_argument("--save", help="also write the raw results to this JSON file")
    parser.add_argument("--render", help="no measuring: render RESULTS.md from a --save file")
    parser.add_argument("--also", help="with --render: a second --save file (e.g. the same benchmark under "
                                       "heavier load), shown as a second table")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.latency)
    if args.cmd == "client":
        return run_client(args)
    if args.quick:
        args.records, args.million, args.million_seconds, args.no_results = 2_000, 20_000, 120, True
    if args.render:
        saved = json.loads(Path(args.render).read_text(encoding="utf-8"))
        results, command = saved["results"], saved["command"]
        for key in ("records", "million", "repeats"):
            setattr(args, key, saved["args"].get(key, 1))
    else:
        command = ".venv/bin/python benchmarks/label_throughput.py " + " ".join(argv)
        results = measure(args)
        if args.reuse:
            earlier = json.loads(Path(args.reuse).read_text(encoding="utf-8"))
            results["curator"], results["million"] = earlier["results"]["curator"], earlier["results"]["million"]
            results["reused_from"] = earlier["command"]
        if args.save:
            Path(args.save).write_text(json.dumps({"command": command.strip(), "args": vars(args),
                                                   "results": results}, indent=1), encoding="utf-8")
    print()
    print(table(results))
    section = markdown(results, args, command.strip())
    if args.render and args.also:
        other = json.loads(Path(args.also).read_text(encoding="utf-8"))
        loads = [r["engine"]["load_before"] for r in other["results"]["rows"]]
        runs = other["args"].get("repeats", 1)
        how = "best of " + str(runs) if runs > 1 else "one run"
        title = (f"### Another run of the same benchmark the same day, {how}"
                 f" per cell (load average {min(loads):.1f} to {max(loads):.1f} before the engine runs)")
        extra = ["", title, "", f"Command: `{other['command']}`", "",
                 table(other["results"]), ""]
        m = other["results"].get("million")
        if m and m != results.get("million"):  # a reused million run is shown once
            extra += _million_md(m)
        section = section.replace(END, "\n".join(extra) + END)
    if not args.no_results:
        update_results(section)
        print(f"\nupdated {RESULTS.relative_to(ROOT)} (section 'Label throughput')")
    else:
        print("\n" + section)


if __name__ == "__main__":
    main()
