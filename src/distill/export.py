"""``distill export``: the split (train / val / test) as training data in the formats trainers read.

| format | written | read by |
|---|---|---|
| ``hf`` | ``hf/``: ``DatasetDict.save_to_disk`` + dataset card ``README.md`` | ``datasets.load_from_disk`` |
| ``parquet`` | ``parquet/{split}.parquet`` + dataset card with ``configs`` | ``load_dataset("parquet")``, the Hub |
| ``openai`` | ``openai/{split}.jsonl``: ``{"messages": [...]}`` | OpenAI fine-tuning, trl SFT |
| ``alpaca`` | ``alpaca/{split}.jsonl``: ``instruction`` (system), ``input`` (user), ``output`` | Alpaca-style SFT |
| ``sharegpt`` | ``sharegpt/{split}.jsonl``: ``conversations``: ``from`` (system/human/gpt), ``value`` | trl |
| ``csv`` | ``csv/{split}.csv``: id, stratum, system, user, assistant | spreadsheets, pandas |
| ``json`` | ``json/{split}.json``: one array of ``{id, stratum, messages}`` | anything |

Before anything is written every exported record is checked: its assistant answer must satisfy the
task's schema (and the task's own check), and its messages the OpenAI chat rules
(:mod:`distill.chatformat`). One failure stops the export, naming the records and the reason; so does an
export that would be empty. Each format is written to a temporary folder and moved into place.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.errors import InputError
from distill.split import SPLITS

FORMATS = ("hf", "parquet", "openai", "alpaca", "sharegpt", "csv", "json")
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}
REVIEWED = ("correct", "corrected")


def read_split(split_dir: Path) -> dict[str, list[dict[str, Any]]]:
    missing = [s for s in SPLITS if not (split_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise InputError(f"{split_dir}: no {', '.join(m + '.jsonl' for m in missing)}: run the split stage first "
                         "(`dvc exp run`)")
    return {s: list(jsonl.read_jsonl(split_dir / f"{s}.jsonl")) for s in SPLITS}


def answer_problem(row: dict[str, Any], spec) -> str | None:
    """Why the row's assistant answer does not satisfy the task's schema (None when it does)."""
    from distill.validate import Invalid, check

    messages = row.get("messages") or []
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
        return "no assistant answer at the end of its messages"
    answer = check(messages[-1].get("content"), spec.schema_for(row))
    if isinstance(answer, Invalid):
        return f"{answer.reason}: {answer.detail}"
    return spec.check(answer, row)


def select(parts: dict[str, list[dict[str, Any]]], spec, which: str, max_tokens: int, count
           ) -> dict[str, list[dict[str, Any]]]:
    """The records to export (all of them, or the reviewed ones), every one checked; InputError on any
    invalid record or when nothing is left."""
    from distill.chatformat import chat_problems

    chosen = {s: [r for r in rows if which != "reviewed" or r.get("reviewed") in REVIEWED]
              for s, rows in parts.items()}
    problems = []
    for s, rows in chosen.items():
        for row in rows:
            why = answer_problem(row, spec) or "; ".join(chat_problems({"messages": row.get("messages")},
                                                                      max_tokens, count))
            if why:
                problems.append(f"{s}/{row.get('id')}: {why}")
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise InputError(f"{len(problems)} record(s) cannot be exported as {spec.name} training data: {shown}. "
                         "Correct them in `distill review` (merge and split then rerun), or relabel")
    if not any(chosen.values()):
        why = ("no record was reviewed as correct or corrected: review some with `distill review`, or export "
               "--records reviewed-or-validated") if which == "reviewed" else "the split holds no record"
        raise InputError(f"nothing to export: {why}")
    return chosen


def _turns(row: dict[str, Any]) -> dict[str, str]:
    by_role = {m["role"]: m["content"] for m in row["messages"]}
    return {"system": by_role.get("system", ""), "user": by_role["user"], "assistant": by_role["assistant"]}


def _plain(row: dict[str, Any], spec) -> dict[str, Any]:
    return {"id": row["id"], spec.STRATUM: spec.stratum(row),
            "messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]}


def _write_lines(folder: Path, parts, make) -> list[str]:
    for s, rows in parts.items():
        jsonl.write_jsonl(folder / f"{s}.jsonl", (make(r) for r in rows))
    return [f"{s}.jsonl" for s in parts]


def write_openai(folder: Path, parts, spec) -> list[str]:
    return _write_lines(folder, parts, lambda r: {"messages": _plain(r, spec)["messages"]})


def _alpaca(row: dict[str, Any]) -> dict[str, str]:
    t = _turns(row)
    return {"instruction": t["system"], "input": t["user"], "output": t["assistant"]}


def write_alpaca(folder: Path, parts, spec) -> list[str]:
    return _write_lines(folder, parts, _alpaca)


def write_sharegpt(folder: Path, parts, spec) -> list[str]:
    return _write_lines(folder, parts, lambda r: {"id": r["id"], "conversations": [
        {"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in r["messages"]]})


def write_csv(folder: Path, parts, spec) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for s, rows in parts.items():
        with open(folder / f"{s}.csv", "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", spec.STRATUM, "system", "user", "assistant"])
            for r in rows:
                t = _turns(r)
                w.writerow([r["id"], spec.stratum(r) or "", t["system"], t["user"], t["assistant"]])
    return [f"{s}.csv" for s in parts]


def write_json(folder: Path, parts, spec) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for s, rows in parts.items():
        (folder / f"{s}.json").write_text(json.dumps([_plain(r, spec) for r in rows], ensure_ascii=False, indent=1),
                                          encoding="utf-8")
    return [f"{s}.json" for s in parts]


def _datasets(parts, spec):
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # the command prints what it wrote; no bars per split

    features = Features({"id": Value("string"), spec.STRATUM: Value("string"),
                         "messages": [{"role": Value("string"), "content": Value("string")}]})
    return DatasetDict({s: Dataset.from_list([_plain(r, spec) for r in rows], features=features)
                        for s, rows in parts.items()})


def write_hf(folder: Path, parts, spec) -> list[str]:
    _datasets(parts, spec).save_to_disk(str(folder))
    (folder / "README.md").write_text(dataset_card(parts, spec, parquet=False), encoding="utf-8")
    return ["dataset_dict.json", *[f"{s}/" for s in parts], "README.md"]


def write_parquet(folder: Path, parts, spec) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for s, ds in _datasets(parts, spec).items():
        ds.to_parquet(str(folder / f"{s}.parquet"))
    (folder / "README.md").write_text(dataset_card(parts, spec, parquet=True), encoding="utf-8")
    return [*[f"{s}.parquet" for s in parts], "README.md"]


def dataset_card(parts, spec, parquet: bool) -> str:
    """A Hugging Face dataset card: YAML metadata (the Parquet files as configs), then what it holds."""
    from collections import Counter

    import yaml

    meta: dict[str, Any] = {"pretty_name": f"{spec.name} {spec.version} (distilled)",
                            "task_categories": ["text-generation"], "tags": ["distill", "knowledge-distillation"],
                            "size_categories": [_size_category(sum(map(len, parts.values())))]}
    if parquet:
        meta["configs"] = [{"config_name": "default",
                            "data_files": [{"split": s, "path": f"{s}.parquet"} for s in parts]}]
    strata = {s: dict(sorted(Counter(spec.stratum(r) or "" for r in rows).items())) for s, rows in parts.items()}
    sizes = " · ".join(f"{s}: {len(rows)}" for s, rows in parts.items())
    load = ('load_dataset("parquet", data_files={' + ", ".join(f'"{s}": "{s}.parquet"' for s in parts) + "})"
            if parquet else 'load_from_disk("path/to/this/folder")')
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
            f"# {spec.name} {spec.version}: distilled training data\n\n"
            f"{spec.description.strip()}\n\nWritten by `distill export` ({spec.kind} task). Each example is one "
            "chat: the system prompt, the user prompt the oracle read (byte-identical), and the oracle's validated "
            "JSON answer as the assistant turn; every answer was checked against the task's schema on export.\n\n"
            f"## Splits\n\n{sizes}\n\n{spec.STRATUM} per split: `{json.dumps(strata)}`\n\n"
            f"## Fields\n\n- `id`: the source record's id\n- `{spec.STRATUM}`: what the split stratified on\n"
            "- `messages`: `[{role, content}]`, system, user, assistant\n\n"
            f"## Load\n\n```python\nfrom datasets import {'load_dataset' if parquet else 'load_from_disk'}\n"
            f"ds = {load}\n```\n\n## Answer schema\n\n```json\n{json.dumps(spec.json_schema, indent=2)}\n```\n")


def _size_category(n: int) -> str:
    """The Hub's size bucket (n<1K, 1K<n<10K, ...)."""
    for bound, name in ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


WRITERS = {"hf": write_hf, "parquet": write_parquet, "openai": write_openai, "alpaca": write_alpaca,
           "sharegpt": write_sharegpt, "csv": write_csv, "json": write_json}


def export_split(split_dir: Path, out: Path, spec, formats: list[str], which: str = "reviewed-or-validated",
                 max_tokens: int = 65_536) -> dict[str, Any]:
    """Check, then write ``formats`` under ``out``; {"sizes", "written": {format: [files]}, "token_count"}."""
    from distill.chatformat import token_counter

    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise InputError(f"unknown export format(s) {unknown}: choose from {', '.join(FORMATS)}")
    count, how = token_counter()
    parts = select(read_split(Path(split_dir)), spec, which, max_tokens, count)
    written = {}
    for fmt in formats:
        final, tmp = out / fmt, out / f".{fmt}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        files = WRITERS[fmt](tmp, parts, spec)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        written[fmt] = [str(final / f) for f in files]
    return {"sizes": {s: len(rows) for s, rows in parts.items()}, "written": written, "token_count": how}
