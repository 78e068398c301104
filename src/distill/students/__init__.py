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


def save_manifest(out_dir: str | Path, kind: str, config: dict[str, Any], dimensions: list[str],
                  scale_max: int = 10) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest = {"kind": kind, "config": config, "dimensions": dimensions, "scale_max": scale_max}
    (Path(out_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the train stage first")
    return json.loads(path.read_text(encoding="utf-8"))


def train_student(cfg, train: list[dict], val: list[dict], dimensions: list[str], out_dir: str | Path,
                  scale_max: int = 10) -> dict[str, Any]:
    """Train the student ``cfg`` describes and save it under ``out_dir``; return training metrics.
    Scores lie on 0..``scale_max`` (the filter's scale)."""
    if cfg.kind == "sklearn":
        from distill.students.sklearn_student import train as train_sklearn

        return train_sklearn(cfg, train, val, dimensions, out_dir, scale_max)
    if cfg.kind == "lora":
        return _in_torch_child("distill.students.lora:train", "training the LoRA student", cfg=cfg,
                               train_rows=train, val_rows=val, dimensions=dimensions, out_dir=str(out_dir),
                               scale_max=scale_max)
    raise ConfigError(f"unknown student kind {cfg.kind!r}")


def predict(model_dir: str | Path, examples: list[dict], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Predictions for chat-format ``examples``: ``{"id", "scores" (or None when invalid), "raw"}``."""
    manifest = read_manifest(model_dir)
    if manifest["kind"] == "sklearn":
        from distill.students.sklearn_student import predict as predict_sklearn

        return predict_sklearn(model_dir, examples, manifest)
    if manifest["kind"] == "lora":
        return _in_torch_child("distill.students.lora:predict", "generating with the LoRA student",
                               model_dir=str(model_dir), examples=examples, manifest=manifest, schema=schema)
    raise ConfigError(f"{model_dir}: unknown student kind {manifest['kind']!r}")


def prompt_messages(example: dict) -> list[dict[str, str]]:
    """The messages a student reads: everything before the oracle's answer."""
    return [m for m in example["messages"] if m["role"] != "assistant"]


def user_text(example: dict) -> str:
    return next(m["content"] for m in example["messages"] if m["role"] == "user")
