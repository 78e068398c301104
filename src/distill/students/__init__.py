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
    learns = {"sklearn": SKLEARN_KINDS, "head": HEAD_KINDS}.get(cfg.kind)
    if learns is not None and kind not in learns:
        article = "an" if kind[0] in "aeiou" else "a"
        return (f"student={cfg.kind} learns {' and '.join(learns)} tasks; filter {getattr(task, 'name', '')} is "
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


#: torch students: kind -> module (train / predict run in a child process)
TORCH_STUDENTS = {"lora": "distill.students.lora", "head": "distill.students.head"}
#: the task kinds the head student predicts directly (distill.students.head.KINDS, without importing torch code)
HEAD_KINDS = ("score", "classify")


def train_student(cfg, train: list[dict], val: list[dict], task: Any, out_dir: str | Path,
                  scale_max: int = 10, curves_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the student ``cfg`` describes for ``task`` (a task, or a score task's dimension names with
    ``scale_max``) and save it under ``out_dir``; return training metrics. Torch students write their loss
    curves with dvclive into ``curves_dir`` (None: no curves)."""
    info = task_info(task, scale_max)
    problem = student_problem(cfg, task)
    if problem:
        raise ConfigError(problem)
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


def predict(model_dir: str | Path, examples: list[dict], task: Any = None, greedy: bool = False
            ) -> list[dict[str, Any]]:
    """Predictions for chat-format ``examples``: ``{"id", "answer" (None when the student's answer did
    not validate), "raw", "invalid_reason"}``, plus ``scores`` for a score task. ``task`` (a Task, or a
    schema) gives each example's schema and how to decode; without it the task saved with the student
    decides. ``greedy``: never sample (the export's parity check compares two greedy decodings)."""
    manifest = read_manifest(model_dir)
    kind = manifest["kind"]
    if kind == "sklearn":
        from distill.students.sklearn_student import predict as predict_sklearn

        return predict_sklearn(model_dir, examples, manifest)
    if kind not in TORCH_STUDENTS:
        raise ConfigError(f"{model_dir}: unknown student kind {kind!r}")
    return _in_torch_child("distill.students:predict_here", f"predicting with the {kind} student",
                           model_dir=str(model_dir), examples=examples, manifest=manifest,
                           schemas=schemas_for(task, examples),
                           sample=None if greedy else sample_for(task, manifest))


def predict_here(model_dir: str, examples: list[dict], manifest: dict[str, Any],
                 schemas: list[dict[str, Any]] | None = None, sample: dict[str, float] | None = None
                 ) -> list[dict[str, Any]]:
    """A torch student's predictions in this process (a child: :func:`predict`, ``distill infer``); the
    model is loaded once per process and student (:func:`loaded_once`)."""
    if manifest["kind"] == "head":
        from distill.students.head import predict as predict_head

        return predict_head(model_dir, examples, manifest)
    from distill.students.lora import predict as predict_lora

    return predict_lora(model_dir, examples, manifest, schemas, sample=sample)


_LOADED: dict[tuple, Any] = {}


def loaded_once(model_dir: str | Path, load) -> Any:
    """``load()``'s result, kept for the next call on the same student (the adapter folder's mtime is in
    the key, so a retrained student is loaded again): a process serving several predict calls
    (``distill infer``, ``distill chat``) loads the model once. One student at a time."""
    folder = Path(model_dir).resolve()
    key = (str(folder), (folder / "adapter").stat().st_mtime_ns if (folder / "adapter").exists() else 0)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load()
    return _LOADED[key]


def schemas_for(task: Any, examples: list[dict]) -> list[dict[str, Any]] | None:
    """One JSON schema per example: a task's (which may let a record bring its own), a schema given
    as such, or None (the one saved with the student)."""
    if task is None:
        return None
    if isinstance(task, dict):
        return [task] * len(examples)
    return [task.schema_for(e) for e in examples]


def sample_for(task: Any, manifest: dict[str, Any]) -> dict[str, float] | None:
    """How a generative student decodes: greedy (None), or the sampling settings of a generate task
    (its ``student_temperature`` now, else as trained)."""
    info = task_info(task) if hasattr(task, "kind") else manifest.get("task") or {}
    return info.get("sample")


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
