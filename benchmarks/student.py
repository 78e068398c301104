"""Students on the same data: train time, items/s, quality with paired intervals, and what they cost.

Data: a slice of the public BBC News corpus (``../shared/data/corpora/bbc_news_2225.jsonl``, every
``--every``-th article so all five sections are in it; the file is sorted by section), labelled by the
file oracle from its ``category`` column (``filters/bbc_topic``: real labels, no LLM), run through the
pipeline's own stage functions (prefilter, label, merge, split) in a temporary folder. With ``--corpus
energy``, a rubric task instead: every 8th item of the energy headlines corpus (headline and RSS teaser)
scored on the demo filter's rubric by the embedded oracle (:func:`energy_split`; its answers cached, so
only the first run pays the labelling, about 10 minutes on 2 cores). Or, with ``--split DIR --filter
NAME``, an existing split (the demo's ``data/split`` after ``dvc exp run``).

Each student (``--students sklearn,lora``; ``head`` too) is trained by the train stage function (which also fits the
baselines) and judged by the evaluate stage function on the same test items: accuracy and macro-F1 (or
MAE and tier accuracy for a rubric) with paired bootstrap 95% intervals, the majority / mean predictor
beside it, items/s at prediction (wall time on this machine through ``distill infer``'s predictor in a
fresh process: a first call, the model's loading included, and a second once it is loaded), and the
cost per 1,000 items of the student's compute (``evaluate.cpu_hour_usd``, $0.045 per core-hour, at the
loaded rate) against published oracle prices for the same prompts. Oracle tokens are estimated from the
rendered prompts (characters / 3.5, the engine's reservation estimate; slightly pessimistic) and the
answer JSON, since the file oracle spends none.

The LoRA student on a CPU is slow: it trains ``--lora-steps`` steps (default 30, batch 4) on SmolLM2-135M,
far fewer than a real run; its figures show the pipeline, not what LoRA can reach.

Run: ``.venv/bin/python benchmarks/student.py [--corpus bbc|energy] [--every N] [--students sklearn,lora]
[--lora-steps 30] [--write]``; ``--write`` replaces the corpus's section between its markers in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BBC = ROOT.parent / "shared" / "data" / "corpora" / "bbc_news_2225.jsonl"
ENERGY = ROOT.parent / "shared" / "data" / "corpora" / "energy_news_headlines_8973.jsonl"
#: the RESULTS.md section each corpus writes
SECTIONS = {"bbc": "student", "energy": "student-rubric"}
#: oracles priced in the cost table (published prices, distill.providers.prices)
ORACLES = ("gpt-4o-mini", "gemini-2.5-flash", "claude-haiku-4-5", "gpt-4.1")
CORES, CPU_HOUR_USD = os.cpu_count() or 1, 0.045


def bbc_split(work: Path, every: int, max_words: int) -> tuple[object, Path]:
    """Prefilter, label (file oracle), merge and split a BBC slice in ``work``; the filter and the split folder."""
    from distill import pipeline
    from distill.config import LabelConfig, MergeConfig, PrefilterConfig, SplitConfig
    from distill.filterspec import load_filter_at
    from distill.providers import oracle_config

    lines = BBC.read_text(encoding="utf-8").splitlines()[::every]
    (work / "bbc.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = load_filter_at(ROOT / "filters", "bbc_topic", "v1")
    metrics = work / "metrics"
    pipeline.prefilter(PrefilterConfig(input=str(work / "bbc.jsonl"), metadata=["category"],
                                       output_dir=str(work / "prefiltered")), spec, metrics)
    pipeline.label(LabelConfig(max_words=max_words, max_attempts=1, progress="off", output_dir=str(work / "labels"),
                               cache_path=str(work / "cache.sqlite")),
                   oracle_config(provider="file", fields={"label": "category"}), spec,
                   work / "prefiltered" / "passed.jsonl", metrics)
    pipeline.merge(MergeConfig(extra_dir=str(work / "none"), reviews=str(work / "none.jsonl"),
                               output_dir=str(work / "merged")), spec, work / "labels" / "labels.jsonl", metrics)
    pipeline.split(SplitConfig(output_dir=str(work / "split")), spec, work / "merged" / "labels.jsonl", metrics)
    return spec, work / "split"


def energy_split(work: Path, every: int, max_words: int, cache: Path) -> tuple[object, Path]:
    """A rubric task on real items: every ``every``-th energy headline with its RSS teaser, prefiltered by the
    demo filter's rules (``min_words`` lowered to 15 for headline-sized items, in a copy of the filter) and
    scored on its rubric by the embedded oracle (SmolLM2-135M in llama.cpp; its answers cached in ``cache``,
    so a rerun asks nothing), then merged and split as the pipeline does."""
    import shutil

    import yaml

    from distill import pipeline
    from distill.config import LabelConfig, MergeConfig, PrefilterConfig, SplitConfig
    from distill.filterspec import load_filter_at
    from distill.providers import oracle_config

    lines = ENERGY.read_text(encoding="utf-8").splitlines()[::every]
    (work / "energy.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    folder = work / "filters" / "sustainability_tech_deployment" / "v1"
    shutil.copytree(ROOT / "filters" / "sustainability_tech_deployment" / "v1", folder)
    config = yaml.safe_load((folder / "filter.yaml").read_text(encoding="utf-8"))
    config["prefilter"]["min_words"] = 15
    (folder / "filter.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    spec = load_filter_at(work / "filters", "sustainability_tech_deployment", "v1")
    metrics = work / "metrics"
    pipeline.prefilter(PrefilterConfig(input=str(work / "energy.jsonl"), unescape_html=True,
                                       field_map={"id": "id", "title": "title", "text": ["lead", "title"]},
                                       output_dir=str(work / "prefiltered")), spec, metrics)
    cache.parent.mkdir(parents=True, exist_ok=True)
    pipeline.label(LabelConfig(max_words=max_words, progress="off", output_dir=str(work / "labels"),
                               cache_path=str(cache)),
                   oracle_config(yaml.safe_load((ROOT / "conf/oracle/local.yaml").read_text(encoding="utf-8"))),
                   spec, work / "prefiltered" / "passed.jsonl", metrics)
    pipeline.merge(MergeConfig(extra_dir=str(work / "none"), reviews=str(work / "none.jsonl"),
                               output_dir=str(work / "merged")), spec, work / "labels" / "labels.jsonl", metrics)
    pipeline.split(SplitConfig(output_dir=str(work / "split")), spec, work / "merged" / "labels.jsonl", metrics)
    return spec, work / "split"


def run_student(kind: str, spec, split: Path, work: Path, lora_steps: int, filters: Path,
                backend: str = "auto") -> dict:
    from distill import pipeline
    from distill.config import EvaluateConfig, HeadStudent, LoraStudent, SklearnStudent, TrainConfig

    students = {"sklearn": lambda: SklearnStudent(kind="sklearn"),
                "head": lambda: HeadStudent(kind="head", save_steps=0),  # conf/student/head.yaml's defaults
                "lora": lambda: LoraStudent(kind="lora", max_steps=lora_steps, batch_size=4, grad_accum=1,
                                            max_length=None, save_steps=0, backend=backend)}
    student = students[kind]()
    metrics_dir = work / f"metrics-{kind}"
    metrics_dir.mkdir(exist_ok=True)
    train = pipeline.train(TrainConfig(output_dir=str(work / f"model-{kind}")), student, spec, split, metrics_dir)
    ev = pipeline.evaluate(EvaluateConfig(output_dir=str(work / f"eval-{kind}")), spec, split,
                           work / f"model-{kind}", metrics_dir)
    return {"kind": kind, "train": train, "eval": ev, "config": student.model_dump(),
            "speed": throughput(work / f"model-{kind}", spec, split, filters)}


def throughput(model_dir: Path, spec, split: Path, filters: Path) -> dict[str, float]:
    """Items/s on the test prompts through `distill infer`'s Predictor in a fresh process: the first call
    (loading the model included; for LoRA a child process too) and a second one (loaded)."""
    import subprocess
    import sys

    code = (
        "import json, sys, time\n"
        "from distill.filterspec import load_filter_at\n"
        "from distill.inference import Predictor\n"
        f"spec = load_filter_at({str(filters)!r}, {spec.name!r}, {spec.version!r})\n"
        f"rows = [json.loads(x) for x in open({str(split / 'test.jsonl')!r}) if x.strip()]\n"
        "out = {}\n"
        f"with Predictor({str(model_dir)!r}, spec) as p:\n"
        "    for what in ('cold', 'warm'):\n"
        "        t0 = time.perf_counter(); p(rows); out[what] = len(rows) / (time.perf_counter() - t0)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "DISTILL_LOG_LEVEL": "WARNING"})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prompt_tokens(split: Path) -> tuple[float, float]:
    """Estimated input and output tokens per item of the test prompts (the engine's estimate)."""
    from distill.labeling.engine import estimate_tokens

    rows = [json.loads(x) for x in (split / "test.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    tokens_in = sum(estimate_tokens(r["messages"][:-1]) for r in rows) / len(rows)
    tokens_out = sum(len(r["messages"][-1]["content"]) / 3.5 for r in rows) / len(rows)
    return tokens_in, tokens_out


def oracle_costs(tokens_in: float, tokens_out: float) -> dict[str, float]:
    from distill.providers.prices import published

    out = {}
    for model in ORACLES:
        price_in, price_out = published(model)
        out[model] = (tokens_in * price_in + tokens_out * price_out) / 1e6 * 1000
    return out


def _ci(m: dict, key: str) -> str:
    ci = m.get(f"{key}_ci")
    return f"{m.get(key)} [{ci['lo']}, {ci['hi']}]" if ci else f"{m.get(key)}"


def report(results: list[dict], data: str, tokens: tuple[float, float], costs: dict[str, float],
           title: str = "Students", command: str = "--write") -> str:
    first = results[0]["eval"]
    score = "overall_mae" in first
    keys = ("overall_mae", "tier_accuracy") if score else ("accuracy", "macro_f1")
    constant = "mean" if score else "majority"
    lines = [
        f"## {title}",
        "",
        (f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores (shared with "
         f"other work while measured); Python {platform.python_version()}"),
        f"- Date: {time.strftime('%Y-%m-%d')}",
        f"- Data: {data}; {first['n_test']} test items, the same for every row",
        f"- Command: `.venv/bin/python benchmarks/student.py {command}` (module docstring: what each column measures)",
        "",
        (f"| student | train s | train tokens/s | items/s first call | items/s loaded | "
         f"{' | '.join(f'{k} [95% CI]' for k in keys)} | student - {constant}: {keys[0]} [95% CI] | valid answers |"),
        "|---|---:|---:|---:|---:|" + "---:|" * len(keys) + "---:|---:|",
    ]
    base = first["baselines"][constant]
    for r in [*results, {"kind": f"{constant} (baseline)", "eval": base}]:
        ev, speed = r["eval"], r.get("speed") or {}
        seconds = f"{r['train']['student_seconds']:.1f}" if "train" in r else "-"
        tok_rate = _rate((r.get("train") or {}).get("tokens_per_second"))
        diff = (ev.get(f"student_minus_{constant}") or {}).get(keys[0])
        diff_text = f"{diff['diff']:+} [{diff['ci']['lo']}, {diff['ci']['hi']}]" if diff and diff.get("ci") else "-"
        lines.append(f"| {r['kind']} | {seconds} | {tok_rate} | {_rate(speed.get('cold'))} | "
                     f"{_rate(speed.get('warm'))} | " + " | ".join(_ci(ev, k) for k in keys)
                     + f" | {diff_text} | {ev.get('valid_json_share')} |")
    lines += ["", (f"Cost per 1,000 items (USD). Oracles: {tokens[0]:.0f} input and {tokens[1]:.0f} output tokens per "
                   "item estimated from these prompts, at published prices (`distill.providers.prices`, online, no "
                   f"batch discount). Students: the loaded throughput above on {CORES} cores at ${CPU_HOUR_USD} per "
                   "core-hour; training once, its wall time at the same rate."), "",
              "| who | per 1,000 items | training (once) |", "|---|---:|---:|"]
    for model, usd in costs.items():
        lines.append(f"| oracle {model} | {usd:.4f} | - |")
    for r in results:
        per_1k = 1000 / r["speed"]["warm"] / 3600 * CORES * CPU_HOUR_USD
        train_usd = r["train"]["student_seconds"] / 3600 * CORES * CPU_HOUR_USD
        lines.append(f"| student {r['kind']} | {per_1k:.6f} | {train_usd:.6f} |")
    return "\n".join(lines)


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", choices=sorted(SECTIONS), default="bbc",
                    help="bbc: sections as labels (file oracle); energy: the demo rubric scored by the embedded oracle")
    ap.add_argument("--every", type=int, default=None,
                    help="every N-th item (bbc default 5: 445 articles; energy default 8: 1,122 headlines)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="energy: the oracle's answer cache (default ~/.cache/distill/bench-energy.sqlite)")
    ap.add_argument("--max-words", type=int, default=120, help="label.max_words: the prompt's article length")
    ap.add_argument("--students", default="sklearn,lora")
    ap.add_argument("--lora-steps", type=int, default=30)
    ap.add_argument("--backend", choices=("auto", "peft", "unsloth"), default="auto",
                    help="the LoRA student's student.backend (unsloth: a CUDA GPU with the gpu extra)")
    ap.add_argument("--split", type=Path, default=None, help="an existing split folder instead of the BBC slice")
    ap.add_argument("--filter", default="sustainability_tech_deployment", help="the filter of --split")
    ap.add_argument("--write", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    args = ap.parse_args()
    from distill.filterspec import load_filter_at

    every = args.every or {"bbc": 5, "energy": 8}[args.corpus]
    filters = ROOT / "filters"
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        work = Path(tmp)
        os.chdir(work)
        if args.split is not None:
            spec, split = load_filter_at(filters, args.filter, "v1"), args.split.resolve()
            data = f"the split in {args.split} ({args.filter})"
        elif args.corpus == "energy":
            from distill.students.bases import cache_dir

            spec, split = energy_split(work, every, args.max_words,
                                       args.cache or cache_dir() / "bench-energy.sqlite")
            filters = work / "filters"
            data = (f"every {every}th item of the energy headlines corpus (`../shared/data`, headline and RSS teaser), "
                    "prefiltered by the demo filter's rules (min_words 15), scored on its rubric by the embedded "
                    "oracle (SmolLM2-135M), split 80/10/10 (seed 42)")
        else:
            spec, split = bbc_split(work, every, args.max_words)
            data = (f"every {every}th article of the BBC News corpus (`../shared/data`), its sections as labels "
                    f"through the file oracle (`filters/bbc_topic`), label.max_words {args.max_words}, split "
                    "80/10/10 (seed 42)")
        results = [run_student(kind, spec, split, work, args.lora_steps, filters, args.backend)
                   for kind in args.students.split(",")]
        tokens = prompt_tokens(split)
    if any(r["kind"] == "lora" for r in results):
        data += f"; the LoRA student trained {args.lora_steps} steps of batch 4 on the CPU (a real run trains far more)"
    name = SECTIONS[args.corpus]
    command = "--write" if args.corpus == "bbc" else f"--corpus {args.corpus} --students {args.students} --write"
    title = "Students" if args.corpus == "bbc" else "Students on a rubric"
    text = report(results, data, tokens, oracle_costs(*tokens), title, command)
    print(text)
    if args.write:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        section = f"{start}\n{text}\n{end}"
        old = RESULTS.read_text(encoding="utf-8")
        new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: section, old, flags=re.DOTALL) \
            if start in old else old.rstrip() + "\n\n" + section + "\n"
        RESULTS.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
