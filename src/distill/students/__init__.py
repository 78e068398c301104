"""Students: small models that learn to reproduce the oracle's labels.

Every student trains on the chat-format split files and predicts dimension scores for examples it has
not seen. Each writes a ``student.json`` manifest into its model folder naming its kind, so evaluation
can load whichever student the train stage produced. No pickle crosses a stage boundary.
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


def save_manifest(out_dir: str | Path, kind: str, config: dict[str, Any], task: dict[str, Any]) -> None:
    """``student.json``: the student's kind and settings, and the task it learned (``task_info``)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest = {"kind": kind, "config": config, "task": task,
                "dimensions": task.get("dimensions", []), "scale_max": task.get("scale_max")}
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
    elif task.kind == "extract":
        info.update(entity_types=task.type_names, fields=list(task.fields))
    elif task.kind == "answer":  # records may bring their own schema: predict validates each against it
        info.update(answer_field=task.answer_field, compare=task.compare, reasoning=task.reasoning)
    elif task.kind == "translate":
        info.update(target_language=task.target_language, source_language=task.source_language)
    elif task.kind == "generate":
        # a generator samples: greedy decoding gives one item per prompt, and a topic's rows share a prompt
        info.update(template=task.template, sample={"temperature": task.student_temperature, "top_p": 0.95}
                    if task.student_temperature > 0 else None)
    return info


def student_problem(cfg, task: Any) -> str | None:
    """Why student ``cfg`` cannot learn ``task`` (None: it can); checked before any oracle request."""
    from distill.students.sklearn_student import KINDS as SKLEARN_KINDS

    kind = task_info(task)["kind"]
    if cfg.kind == "sklearn" and kind not in SKLEARN_KINDS:
        article = "an" if kind[0] in "aeiou" else "a"
        return (f"student=sklearn learns {' and '.join(SKLEARN_KINDS)} tasks; filter {getattr(task, 'name', '')} is "
                f"{article} {kind} task, which needs a generative student: use student=lora "
                f"(`dvc exp run -S student=lora`, or `- override /student: lora` in conf/project.yaml)")
    return None


def params_problems(params: dict[str, Any], source: str = "params.yaml") -> list[str]:
    """``student_problem`` for the filter and student ``params`` name (``distill config check``); []
    when either does not load (``check_all`` reports that)."""
    from distill.config import section
    from distill.errors import DistillError
    from distill.filterspec import load_filter_at

    try:
        ref = section(params, "filter", source)
        problem = student_problem(section(params, "student", source), load_filter_at(ref.root, ref.name, ref.version))
    except DistillError:
        return []
    return [problem] if problem else []


def train_student(cfg, train: list[dict], val: list[dict], task: Any, out_dir: str | Path,
                  scale_max: int = 10) -> dict[str, Any]:
    """Train the student ``cfg`` describes for ``task`` (a task, or a score task's dimension names with
    ``scale_max``) and save it under ``out_dir``; return training metrics."""
    info = task_info(task, scale_max)
    problem = student_problem(cfg, task)
    if problem:
        raise ConfigError(problem)
    if cfg.kind == "sklearn":
        from distill.students.sklearn_student import train as train_sklearn

        return train_sklearn(cfg, train, val, info, out_dir)
    if cfg.kind == "lora":
        return _in_torch_child("distill.students.lora:train", "training the LoRA student", cfg=cfg,
                               train_rows=train, val_rows=val, task=info, out_dir=str(out_dir))
    raise ConfigError(f"unknown student kind {cfg.kind!r}")


def predict(model_dir: str | Path, examples: list[dict], task: Any = None) -> list[dict[str, Any]]:
    """Predictions for chat-format ``examples``: ``{"id", "answer" (None when the student's answer did
    not validate), "raw", "invalid_reason"}``, plus ``scores`` for a score task."""
    manifest = read_manifest(model_dir)
    if manifest["kind"] == "sklearn":
        from distill.students.sklearn_student import predict as predict_sklearn

        return predict_sklearn(model_dir, examples, manifest)
    if manifest["kind"] == "lora":
        schema = task if isinstance(task, dict) else (task.json_schema if task is not None else None)
        if task is not None and not isinstance(task, dict):  # per example where records bring their own
            schemas = [task.schema_for(e) for e in examples]
            schema = schemas if any(s is not schema for s in schemas) else schema
        # how to decode is the task's now (a generate filter's student_temperature), else as trained
        sample = (task_info(task) if hasattr(task, "kind") else manifest.get("task") or {}).get("sample")
        return _in_torch_child("distill.students.lora:predict", "generating with the LoRA student",
                               model_dir=str(model_dir), examples=examples, manifest=manifest, schema=schema,
                               sample=sample)
    raise ConfigError(f"{model_dir}: unknown student kind {manifest['kind']!r}")


def prompt_messages(example: dict) -> list[dict[str, str]]:
    """The messages a student reads: everything before the oracle's answer."""
    return [m for m in example["messages"] if m["role"] != "assistant"]


def user_text(example: dict) -> str:
    return next(m["content"] for m in example["messages"] if m["role"] == "user")
