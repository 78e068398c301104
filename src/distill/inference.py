"""Using a trained student: batch inference over a file (``distill infer``) and an interactive session
(``distill chat``).

The student reads what the oracle read: each record is compressed to ``label.max_words`` and rendered
with the filter's prompt (:meth:`Task.render`), as the label stage prepares it, with the filter and
settings of ``params.yaml``. Any input the prefilter reads is accepted (``prefilter`` settings: the
field map, metadata, format; ``distill.sources``), streamed batch by batch. An answer that does not
validate is written with ``answer: null`` and its reason, and counted: nothing is repaired beyond the
JSON extraction every answer gets (code fences and prose around one object are trimmed,
:func:`distill.validate.extract_json`). For a rubric the project computes ``overall`` and ``tier`` from
the scores, as for the oracle's.

A torch student (LoRA or head) runs in one child process (:func:`distill.isolation.call_isolated`) that
loads the model once and answers batch after batch; the sklearn student runs here.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from typing_extensions import Self

from distill.compress import compress
from distill.errors import ConfigError, DistillError
from distill.filterspec import FilterSpec

log = logging.getLogger("distill")


# ----------------------------------------------------------------------------- the student, ready
class Predictor:
    """A student ready to answer batches of examples (``{"id", "messages"}``); a context manager."""

    def __init__(self, model_dir: str | Path, task: FilterSpec):
        from distill.students import read_manifest, task_info

        self.model_dir, self.task = Path(model_dir), task
        self.manifest = read_manifest(model_dir)
        learned, wanted = self.manifest.get("task") or {}, task_info(task)
        keys = ("kind", "dimensions", "labels", "multi_label")
        if any(learned.get(k) != wanted.get(k) for k in keys if k in learned or k in wanted):
            raise ConfigError(
                f"{self.model_dir} learned a {learned.get('kind')} task ({_parts(learned)}), but the filter "
                f"{task.name} {task.version} asks for a {wanted['kind']} task ({_parts(wanted)}): pass the "
                "--params of the run that trained it, or --model of a student trained for this filter")
        self.kind = self.manifest["kind"]
        self._conn = self._thread = None
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from distill.students import TORCH_STUDENTS, predict, schemas_for

        if self.kind not in TORCH_STUDENTS:
            return predict(self.model_dir, examples, self.task)
        if self._conn is None:
            self._start()
        try:
            self._conn.send((examples, schemas_for(self.task, examples)))
            return self._conn.recv()
        except (EOFError, BrokenPipeError, OSError):
            self._thread.join()
            raise self._error or DistillError("the student's process ended without an answer") from None

    def _start(self) -> None:
        from distill.isolation import package_version
        from distill.students import TORCH_HINT, sample_for

        ours, theirs = multiprocessing.get_context("spawn").Pipe()

        def serve_in_child() -> None:
            from distill.isolation import call_isolated

            try:
                call_isolated("distill.inference:serve", runtime=f"torch {package_version('torch')}",
                              doing=f"answering with the {self.kind} student", hint=TORCH_HINT, conn=theirs,
                              model_dir=str(self.model_dir), manifest=self.manifest,
                              sample=sample_for(self.task, self.manifest))
            except BaseException as e:  # noqa: BLE001 - handed to the caller of __call__
                self._error = e
            finally:
                theirs.close()  # the last writer gone: a waiting recv ends

        self._conn, self._thread = ours, threading.Thread(target=serve_in_child, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._thread.join()
            self._conn.close()
            self._conn = None


def serve(conn, model_dir: str, manifest: dict[str, Any], sample: dict[str, float] | None = None) -> None:
    """The child's loop: a batch of examples and their schemas in, its predictions out, until ``None``
    (the model is loaded once, by the first batch; ``sample``: a generate task's seeded sampling)."""
    from distill.students import predict_here

    while (batch := conn.recv()) is not None:
        examples, schemas = batch
        conn.send(predict_here(model_dir, examples, manifest, schemas, sample=sample))


def _parts(info: dict[str, Any]) -> str:
    if info.get("dimensions"):
        return "dimensions " + ", ".join(info["dimensions"])
    return "labels " + ", ".join(info.get("labels") or []) if info.get("labels") else "unknown"


# ----------------------------------------------------------------------------- records in, rows out
def example(record: dict[str, Any], task: FilterSpec, max_words: int) -> dict[str, Any]:
    """The student's input for a record: the oracle's prompt (compressed text, the filter's template)."""
    return {"id": record["id"], "messages": task.render({**record, "text": compress(record["text"], max_words)})}


def output_row(prediction: dict[str, Any], task: FilterSpec) -> dict[str, Any]:
    """A prediction as ``distill infer`` writes it: the answer, its reason when invalid, the generated
    text (generative students), and what the project computes from a valid answer."""
    row = {"id": prediction["id"], "answer": prediction.get("answer"),
           "invalid_reason": prediction.get("invalid_reason")}
    if prediction.get("raw") is not None:
        row["raw"] = prediction["raw"]
    if task.kind == "score":
        scores = task.scores_of(prediction)
        row["scores"] = scores
        row["overall"], row["tier"] = task.score(scores) if scores is not None else (None, None)
    elif task.kind == "classify" and row["answer"] is not None:
        row["labels"] = task.chosen(row["answer"])
    return row


def infer(predictor: Predictor, batches: Iterable[list[dict[str, Any]]], task: FilterSpec, max_words: int,
          write: Callable[[dict[str, Any]], None], report: Callable[[str], None], every_s: float = 10.0
          ) -> dict[str, Any]:
    """Predict every record of ``batches``, ``write`` each output row in input order, ``report`` progress
    at most every ``every_s`` seconds and at the end; return the totals."""
    t0 = last = time.perf_counter()
    items, invalid = 0, Counter()
    for batch in batches:
        for prediction in predictor([example(r, task, max_words) for r in batch]):
            row = output_row(prediction, task)
            if row["answer"] is None:
                invalid[row["invalid_reason"] or "invalid"] += 1
            write(row)
            items += 1
        now = time.perf_counter()
        if now - last >= every_s:
            report(f"infer: {items:,} items, {items / (now - t0):.1f} items/s, {sum(invalid.values())} invalid")
            last = now
    seconds = time.perf_counter() - t0
    totals = {"items": items, "invalid": sum(invalid.values()), "invalid_reasons": dict(invalid),
              "seconds": round(seconds, 3), "items_per_s": round(items / seconds, 2) if seconds else None}
    reasons = ", ".join(f"{k}={v}" for k, v in invalid.most_common()) or "none"
    report(f"infer: {items:,} items in {seconds:.1f} s ({totals['items_per_s']} items/s); "
           f"{totals['invalid']} invalid answers ({reasons})")
    return totals


def chat_records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """One record per non-empty line: a JSON object with ``text`` (and ``title``...) as it is, any other
    line as the text."""
    n = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        n += 1
        record = None
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            record = {"text": line}
        yield {"id": f"chat-{n}", "title": "", "metadata": {}, **record}


def chat(predictor: Predictor, lines: Iterable[str], task: FilterSpec, max_words: int,
         out: Callable[[str], None] = print, prompt: Callable[[], None] | None = None) -> int:
    """Answer each line (an article's text) with the student: one JSON object per line out."""
    answered = 0
    if prompt:
        prompt()
    for record in chat_records(lines):
        row = output_row(predictor([example(record, task, max_words)])[0], task)
        out(json.dumps(row, ensure_ascii=False))
        answered += 1
        if prompt:
            prompt()
    return answered


def stdin_lines() -> Iterator[str]:
    """Lines of stdin as they arrive (``for line in sys.stdin`` would read ahead on a pipe)."""
    while line := sys.stdin.readline():
        yield line
