"""Label throughput per task kind, and what checking golden answers costs, against a fake OpenAI server.

What is measured
  ``distill.pipeline.label`` as the label stage runs it (``oracle=openai`` over aiohttp to the fake
  server on 127.0.0.1, a fresh response cache each run, so every record is a paid request), once per
  task kind with the example filter of that kind (score: ``sustainability_tech_deployment``, classify:
  ``news_topic``, extract: ``news_entities``, answer: ``math_word_problems``, translate:
  ``translate_energy_news``), on the same records. What differs between kinds is the engine's own work
  per record: rendering the kind's prompt, validating the answer against the kind's schema, the kind's
  own check (entity spans in the text, an unchanged translation, a readable number) and the label row.
  The server answers instantly (latency 0) so that this work, not the network, sets the rate: the
  slowest case for a kind's overhead to hide in. Each figure is the best of ``--repeats`` runs in a fresh
  client process (the machine is shared); the score kind is measured in the same run as the baseline.

  ``gold``: classify and answer again with every record carrying a golden answer (half agree with the
  oracle), ``label.on_gold_mismatch=keep``: the gold comparison and gold_mismatch.jsonl, against the same
  kind without gold.

The fake server answers per kind from the request's JSON schema (``kind_answer``): a label from the
enum, the entities of a fixed list that the record's text names, a number, a translation, or the
scores of the default fake oracle. Every answer is valid, so every run writes one label per record.

    .venv/bin/python benchmarks/label_kinds.py                # prints the table
    .venv/bin/python benchmarks/label_kinds.py --write        # also the "Label throughput per kind" section
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _results import cpu_model, write_section

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fake server lives in tests/ (a package at the project root)
    sys.path.insert(0, str(ROOT))

KEY_ENV = "DISTILL_BENCH_KEY"
START, END = "<!-- label-kinds:start -->", "<!-- label-kinds:end -->"
FILTERS = {"score": "sustainability_tech_deployment", "classify": "news_topic", "extract": "news_entities",
           "answer": "math_word_problems", "translate": "translate_energy_news"}
PEOPLE = ["Maria Lopez", "Tom Becker", "Aisha Khan", "Li Wei"]
ORGS = ["Orsted", "Vattenfall", "Siemens Gamesa", "National Grid"]
PLACES = ["Hull", "Aberdeen", "Rotterdam", "Bilbao"]
ENTITIES = [("person", p) for p in PEOPLE] + [("organisation", o) for o in ORGS] + [("place", p) for p in PLACES]
SECTIONS = ["business", "entertainment", "politics", "sport", "tech"]


def records(n: int, gold: str | None = None) -> list[dict[str, Any]]:
    """``n`` distinct short news items naming a person, a company and a place, with a number in them;
    ``gold``: "classify" or "answer" adds a golden answer, equal to the fake oracle's on even rows."""
    rows = []
    for i in range(n):
        person, org, place = PEOPLE[i % 4], ORGS[(i // 4) % 4], PLACES[(i // 16) % 4]
        text = (f"{org} opened a {20 + i} MW wind farm near {place} on Tuesday, its chief executive "
                f"{person} said. The site employs {10 + 3 * i} people and cost {i + 2} million euros; "
                f"officials in region {i} confirmed the figures in a public filing.")
        row = {"id": f"k-{i:06d}", "title": f"{org} opens wind farm near {place} ({i})", "text": text,
               "metadata": {"source": "Example News", "published": "2025-03-04"}}
        if gold == "classify":
            right = SECTIONS[_seed(_message_seed(row)) % len(SECTIONS)]
            row["gold"] = right if i % 2 == 0 else SECTIONS[(SECTIONS.index(right) + 1) % len(SECTIONS)]
        elif gold == "answer":
            row["gold"] = f"#### {_number(text)}" if i % 2 == 0 else f"#### {_number(text) + 1}"
        rows.append(row)
    return rows


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big")


def _message_seed(row: dict[str, Any]) -> str:
    return row["title"]


def _number(text: str) -> int:
    """The fake oracle's answer to a record: the first number of its text."""
    import re

    return int(re.search(r"\d+", text).group())


# ============================================================================ the fake oracle, per kind
def kind_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A valid answer of the kind the request's schema asks for (see the module docstring)."""
    from tests.fakes._server import title_of
    from tests.fakes.openai_server import default_label, first_user_message

    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    props = schema.get("properties", {})
    user = first_user_message(body)
    if "label" in props:
        return {"label": SECTIONS[_seed(title_of(user)) % len(SECTIONS)], "rationale": "About a company's new site."}
    if "entities" in props:
        return {"entities": [{"type": t, "text": name} for t, name in ENTITIES if name in user]}
    if "translation" in props:
        return {"translation": f"Übersetzung {_seed(user) % 10_000}: ein Windpark wurde eröffnet."}
    if "answer" in props:
        problem = user.split("Problem:")[-1]
        return {"reasoning": "The first figure given is the answer.", "answer": str(_number(problem))}
    return default_label(body)


def serve() -> None:
    import signal

    from tests.fakes.openai_server import FakeOpenAI

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FakeOpenAI(kind_answer) as srv:
        print(srv.base_url, flush=True)
        while not stop.wait(0.5):
            srv.reset()  # forget what was received: the server's memory stays flat


# ============================================================================ one client process
def client(url: str, kind: str, input_path: Path, workdir: Path, concurrency: int, gold: bool) -> dict[str, Any]:
    import aiohttp  # noqa: F401 - imported before the clock starts, as the stage has it by then

    import distill.labeling.engine
    import distill.providers.openai  # noqa: F401
    from distill import pipeline
    from distill.config import LabelConfig
    from distill.filterspec import load_filter
    from distill.providers import oracle_config

    spec = load_filter(ROOT / "filters" / FILTERS[kind] / "v1")
    cfg = LabelConfig(max_words=200, max_attempts=3, concurrency=concurrency, progress="off",
                      on_gold_mismatch="keep", cache_path=str(workdir / "cache" / "llm.sqlite"),
                      output_dir=str(workdir / "labels"))
    oracle = oracle_config(provider="openai", model="fake-bench", base_url=url, api_key_env=KEY_ENV,
                           transport="aiohttp", temperature=0.0, max_tokens=384, seed=0, request_timeout_s=120,
                           sdk_max_retries=0)
    t0 = time.perf_counter()
    metrics = pipeline.label(cfg, oracle, spec, input_path, metrics_dir=workdir)
    wall = time.perf_counter() - t0
    return {"valid": metrics["valid"], "requests": metrics["requests"], "invalid": metrics["invalid"],
            "gold": metrics.get("gold"), "wall_s": wall}


# ============================================================================ orchestration
class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "serve"], stdout=subprocess.PIPE, text=True,
                                     cwd=ROOT)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"fake server did not start: {self.url!r}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def run_one(url: str, kind: str, input_path: Path, tmp: Path, concurrency: int, gold: bool) -> dict[str, Any]:
    wd = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [sys.executable, __file__, "client", "--url", url, "--kind", kind, "--input", str(input_path),
           "--workdir", str(wd), "--concurrency", str(concurrency)] + (["--gold"] if gold else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, check=False,
                          env={**os.environ, KEY_ENV: "sk-bench-key", "DISTILL_LOG_LEVEL": "WARNING"})
    shutil.rmtree(wd, ignore_errors=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{kind} client exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")


def measure(n: int, repeats: int, concurrency: int) -> dict[str, Any]:
    from distill import jsonl

    tmp = Path(tempfile.mkdtemp(prefix="label-kinds-"))
    cases = [(kind, False) for kind in FILTERS] + [("classify", True), ("answer", True)]
    inputs = {}
    for name in (None, "classify", "answer"):
        inputs[name] = tmp / f"passed-{name or 'plain'}.jsonl"
        jsonl.write_jsonl(inputs[name], records(n, name))
    best: dict[tuple[str, bool], dict[str, Any]] = {}
    srv = Server()
    try:
        for rep in range(repeats):  # interleaved, so that a busy spell of the machine hits every case
            for kind, gold in cases:
                r = run_one(srv.url, kind, inputs[kind if gold else None], tmp, concurrency, gold)
                if r["valid"] != n:
                    raise RuntimeError(f"{kind} (gold {gold}): {r['valid']} of {n} valid, {r['invalid']} invalid")
                if gold and (r["gold"]["checked"], r["gold"]["agreed"]) != (n, (n + 1) // 2):
                    raise RuntimeError(f"{kind}: gold {r['gold']}, expected {n} checked, {(n + 1) // 2} agreeing")
                r["rate"] = n / r["wall_s"]
                key = (kind, gold)
                best[key] = max(best.get(key, r), r, key=lambda x: x["rate"])
                print(f"  run {rep + 1}: {kind:9s} gold={'yes' if gold else 'no ':3s} {r['rate']:8.0f} labels/s",
                      flush=True)
    finally:
        srv.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"n": n, "repeats": repeats, "concurrency": concurrency,
            "rows": {f"{k}{'+gold' if g else ''}": v for (k, g), v in best.items()}}


def table(res: dict[str, Any]) -> str:
    rows = res["rows"]
    base = rows["score"]["rate"]
    lines = ["| kind | example filter | labels/s | vs score |", "|---|---|---:|---:|"]
    for kind, name in FILTERS.items():
        r = rows[kind]["rate"]
        lines.append(f"| {kind} | `{name}` | {r:,.0f} | {r / base:.2f}x |")
    lines += ["", "| kind | labels/s without gold | with gold (half disagree) | gold check adds |",
              "|---|---:|---:|---:|"]
    for kind in ("classify", "answer"):
        plain, gold = rows[kind]["rate"], rows[f"{kind}+gold"]["rate"]
        lines.append(f"| {kind} | {plain:,.0f} | {gold:,.0f} | {100 * (plain / gold - 1):+.1f}% of the time |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve()
        return
    if argv[:1] == ["client"]:
        p = argparse.ArgumentParser()
        p.add_argument("--url")
        p.add_argument("--kind")
        p.add_argument("--input")
        p.add_argument("--workdir")
        p.add_argument("--concurrency", type=int)
        p.add_argument("--gold", action="store_true")
        a = p.parse_args(argv[1:])
        os.environ.setdefault(KEY_ENV, "sk-bench-key")
        out = client(a.url, a.kind, Path(a.input), Path(a.workdir), a.concurrency, a.gold)
        print("RESULT " + json.dumps(out), flush=True)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    a = p.parse_args(argv)
    load0 = os.getloadavg()[0]
    res = measure(a.records, a.repeats, a.concurrency)
    out = table(res)
    print(out)
    if a.write:
        head = [
            "## Label throughput per kind",
            "",
            (f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores (load average {load0:.1f} before the run, "
             f"{os.getloadavg()[0]:.1f} after); Python {platform.python_version()}"),
            f"- Date: {dt.date.today().isoformat()}",
            (f"- Command: `.venv/bin/python benchmarks/label_kinds.py --records {a.records} --repeats {a.repeats} "
             f"--concurrency {a.concurrency} --write` (module docstring: what is measured)"),
            (f"- {a.records:,} records per run, fake server at latency 0, concurrency {a.concurrency}, best of "
             f"{a.repeats} runs each in a fresh process; every run labels every record."),
            "",
        ]
        write_section(START, END, START + "\n" + "\n".join(head) + out + "\n" + END)


if __name__ == "__main__":
    main()
