"""Students: small models that learn to reproduce the oracle's labels.

Every student trains on the chat-format split files and answers examples it has not seen:

- ``sklearn`` (:mod:`~distill.students.sklearn_student`): TF-IDF + ridge / logistic regression, the baseline;
- ``head`` (:mod:`~distill.students.head`): a pretrained encoder (or LM) with a LoRA adapter and a
  regression or classification head that predicts the scores or labels directly;
- ``lora`` (:mod:`~distill.students.lora`): LoRA on a causal LM that writes the oracle's JSON answer.

Each writes a ``student.json`` manifest into its model folder naming its kind and how to load it, so
evaluation (and ``distill export``) can load whichever student the train stage produced. No pickle
crosses a stage boundary. Torch students run in a child process (:func:`_in_torch_child`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import ConfigError
from distill.isolation import call_isolated, package_version

MANIFEST = "student.json"
#: what a crash while torch trains or runs a student suggests
TORCH_HINT = "reinstall the tested torch with `make install`; set OMP_NUM_THREADS=1 to rule out threading"


def _in_torch_child(target: str, doing: str, **kwargs: Any) -> Any:
    """Run a torch student's ``target`` in a child process: a native crash while loading or running
    the model becomes a RuntimeCrash naming torch, the signal and this CPU (see distill.isolation)."""
    return call_isolated(target, runtime=f"torch {package_version('torch')}", doing=doing, hint=TORCH_HINT,
                         **kwargs)


def save_manifest(out_dir: str | Path, kind: str, config: dict[str, Any], task: dict[str, Any],
                  **extra: Any) -> None:
    """``student.json``: the student's kind and settings, the task it learned (``task_info``), and what
    loading it needs (``extra``)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest = {"kind": kind, "config": config, "task": task,
                "dimensions": task.get("dimensions", []), "scale_max": task.get("scale_max"), **extra}
    (Path(out_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the train stage first")
    return json.loads(path.read_text(encoding="utf-8"))


def task_info(task: Any, scale_max: int = 10) -> dict[str, Any]:
    """What a student needs to know of the task, as plain data (it goes in ``student.json`` and to a
    child process): its kind, and its dimensions and scale, or its labels. A list of dimension names
    stands for a score task (how callers named the task before kinds existed)."""
    if isinstance(task, (list, tuple)):
        return {"kind": "score", "dimensions": list(task), "scale_max": scale_max}
    info: dict[str, Any] = {"kind": task.kind, "schema": task.json_schema}
    if task.kind == "score":
        info.update(dimensions=task.dimension_names, scale_max=task.scale_max)
    elif task.kind == "classify":
        info.update(labels=task.label_names, multi_label=task.multi_label)
    return info


def train_student(cfg, train: list[dict], val: list[dict], task: Any, out_dir: str | Path,
                  scale_max: int = 10, curves_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the student ``cfg`` describes for ``task`` (a task, or a score task's dimension names with
    ``scale_max``) and save it under ``out_dir``; return training metrics. Torch students write their loss
    curves with dvclive into ``curves_dir`` (None: no curves)."""
    info = task_info(task, scale_max)
    if cfg.kind == "sklearn":
        from distill.students.sklearn_student import train as train_sklearn

        return train_sklearn(cfg, train, val, info, out_dir)
    if cfg.kind in TORCH_STUDENTS:
        from distill.students.bases import check_base

        check_base(cfg.base_model, cfg.allow_download)  # before the child starts: a missing base is a config error
        module = TORCH_STUDENTS[cfg.kind]
        return _in_torch_child(f"{module}:train", f"training the {cfg.kind} student", cfg=cfg, train_rows=train,
                               val_rows=val, task=info, out_dir=str(out_dir),
                               curves_dir=str(curves_dir) if curves_dir else None)
    raise ConfigError(f"unknown student kind {cfg.kind!r}")


#: torch students: kind -> module (train / predict run in a child process)
TORCH_STUDENTS = {"lora": "distill.students.lora", "head": "distill.students.head"}


def predict(model_dir: str | Path, examples: list[dict], task: Any = None) -> list[dict[str, Any]]:
    """Predictions for chat-format ``examples``: ``{"id", "answer" (None when the student's answer did
    not validate), "raw", "invalid_reason"}``, plus ``scores`` for a score task. ``task`` (a Task, or a
    schema) gives each example's schema; without it the task saved with the student decides."""
    manifest = read_manifest(model_dir)
    kind = manifest["kind"]
    if kind == "sklearn":
        from distill.students.sklearn_student import predict as predict_sklearn

        return predict_sklearn(model_dir, examples, manifest)
    if kind == "head":
        return _in_torch_child("distill.students.head:predict", "predicting with the head student",
                               model_dir=str(model_dir), examples=examples, manifest=manifest)
    if kind == "lora":
        return _in_torch_child("distill.students.lora:predict", "generating with the LoRA student",
                               model_dir=str(model_dir), examples=examples, manifest=manifest,
                               schemas=schemas_for(task, examples))
    raise ConfigError(f"{model_dir}: unknown student kind {kind!r}")


def schemas_for(task: Any, examples: list[dict]) -> list[dict[str, Any]] | None:
    """One JSON schema per example: a task's (which may let a record bring its own), a schema given
    as such, or None (the one saved with the student)."""
    if task is None:
        return None
    if isinstance(task, dict):
        return [task] * len(examples)
    return [task.schema_for(e) for e in examples]


def prediction_from_text(example_id: str, text: str, schema: dict[str, Any] | None, task: dict[str, Any]
                         ) -> dict[str, Any]:
    """A generative student's answer as a prediction: validated against ``schema``, ``answer=None`` with
    the reason when it does not validate; a score task's ``scores`` too."""
    from distill.validate import Invalid, check

    result = check(text, schema or task.get("schema"))
    answer = None if isinstance(result, Invalid) else result
    prediction = {"id": example_id, "answer": answer, "raw": text,
                  "invalid_reason": result.reason if isinstance(result, Invalid) else None}
    if task.get("kind", "score") == "score":
        dims = task.get("dimensions") or []
        prediction["scores"] = None if answer is None else {d: answer[d] for d in dims}
    return prediction


def prompt_messages(example: dict) -> list[dict[str, str]]:
    """The messages a student reads: everything before the oracle's answer."""
    return [m for m in example["messages"] if m["role"] != "assistant"]


def user_text(example: dict) -> str:
    return next(m["content"] for m in example["messages"] if m["role"] == "user")
