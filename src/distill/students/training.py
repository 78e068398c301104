"""What the torch students share around a transformers ``Trainer``: arguments from the config, training
curves (dvclive), checkpoints and resuming an interrupted run.

Checkpoints live under ``student.checkpoint_dir`` (``.distill/checkpoints``), outside every DVC output:
DVC deletes a stage's outputs before it runs, and the train stage empties ``models/student``. Each
training run has its own folder, named by a fingerprint of everything that decides its result (the
student's settings, the task, the training and validation rows), so a rerun of the same training
resumes from its last complete checkpoint (one holding ``trainer_state.json``, which the Trainer writes
last) and a changed one starts afresh. The Trainer restores the adapter, optimizer, scheduler and RNG
states and skips the batches already seen; the folder is removed once the model is saved.

Curves: the loss of every step and the validation loss go to dvclive (``metrics/train_curves`` in the
pipeline, declared as plots in ``dvc.yaml``). A resumed run replays the steps its checkpoint remembers
first, so the curve is whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("distill")

#: settings that do not change what a training run computes (they may differ between a run and its resume)
_NOT_IN_FINGERPRINT = ("checkpoint_dir", "save_steps", "predict_batch_size", "max_new_tokens", "eval_steps")
#: what the curves show: Trainer log key -> dvclive metric name
CURVES = {"loss": "train/loss", "eval_loss": "eval/loss", "learning_rate": "train/learning_rate",
          "grad_norm": "train/grad_norm"}


def fingerprint(kind: str, cfg: dict[str, Any], task: dict[str, Any], train_rows: list[dict],
                val_rows: list[dict]) -> str:
    settings = {k: v for k, v in cfg.items() if k not in _NOT_IN_FINGERPRINT}
    h = hashlib.sha256()
    h.update(json.dumps([kind, settings, task], sort_keys=True, default=str).encode())
    for rows in (train_rows, val_rows):
        h.update(b"\x00")
        for r in rows:
            h.update(json.dumps([r.get("id"), r.get("messages"), r.get("scores"), r.get("labels")],
                                sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def checkpoint_folder(cfg, kind: str, task: dict[str, Any], train_rows: list[dict], val_rows: list[dict]) -> Path:
    return Path(cfg.checkpoint_dir) / f"{kind}-{fingerprint(kind, cfg.model_dump(), task, train_rows, val_rows)}"


def last_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint with the highest step in ``folder`` (None: nothing to resume)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
            and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def trainer_kwargs(cfg, folder: Path, has_eval: bool, use_cpu: bool) -> dict[str, Any]:
    """TrainingArguments (or SFTConfig) keywords every torch student uses."""
    eval_steps = cfg.eval_steps if has_eval and cfg.eval_steps else None
    return {
        "output_dir": str(folder),
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_steps": cfg.warmup_steps,
        "logging_steps": 1,
        "save_strategy": "steps" if cfg.save_steps else "no",
        "save_steps": cfg.save_steps or cfg.max_steps,
        "save_total_limit": 2,
        "eval_strategy": "steps" if eval_steps else "no",
        "eval_steps": eval_steps,
        "report_to": [],
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "use_cpu": use_cpu,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def curves_callback(curves_dir: str | Path | None):
    """A TrainerCallback writing the loss curves with dvclive into ``curves_dir`` (None: no curves)."""
    from transformers import TrainerCallback

    class Curves(TrainerCallback):
        def __init__(self) -> None:
            self.live = None
            self.last_step = -1

        def on_train_begin(self, args, state, control, **kwargs):
            if curves_dir is None or self.live is not None:
                return
            from dvclive import Live

            self.live = Live(str(curves_dir), save_dvc_exp=False, dvcyaml=None, report=None)
            for entry in state.log_history:  # a resumed run: the steps its checkpoint remembers
                self.write(entry.get("step", 0), entry)

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.write(state.global_step, logs or {})

        def write(self, step: int, entry: dict[str, Any]) -> None:
            if self.live is None:
                return
            logged = False
            for key, name in CURVES.items():
                if isinstance(entry.get(key), (int, float)):
                    self.live.step = int(step)
                    self.live.log_metric(name, float(entry[key]))
                    logged = True
            if logged:
                self.live.make_summary()

        def close(self) -> None:
            if self.live is not None:
                self.live.end()
                self.live = None

    return Curves()


def fit(trainer, folder: Path, curves) -> tuple[Any, int]:
    """Train, resuming from the last complete checkpoint in ``folder`` when there is one; return the
    Trainer's result and the step it resumed from (0: a fresh run)."""
    resume = last_checkpoint(folder)
    resumed_from = int(resume.name.split("-")[-1]) if resume else 0
    if resume:
        log.info("train: resuming from %s (step %d of %d)", resume, resumed_from, trainer.args.max_steps)
    trainer.add_callback(curves)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return result, resumed_from


def summary(trainer, result, resumed_from: int, curves, has_eval: bool, tokens_per_step: float | None = None
            ) -> dict[str, Any]:
    """Training metrics from the Trainer's log (the whole run, resumed part included); evaluates the
    validation loss once more at the end (a point on the eval curve) and closes the curves.
    ``tokens_per_step`` (the mean example length times the examples per step) gives tokens/s."""
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    seconds = float(result.metrics.get("train_runtime", 0.0))
    metrics: dict[str, Any] = {
        "steps": int(result.global_step),
        "resumed_from_step": resumed_from,
        "train_seconds": round(seconds, 2),
        "train_loss": round(float(result.training_loss), 4),
        "first_step_loss": round(float(losses[0]), 4) if losses else None,
        "last_step_loss": round(float(losses[-1]), 4) if losses else None,
    }
    if tokens_per_step and seconds > 0:  # tokens through the model per second (the steps run in this process)
        metrics["tokens_per_second"] = round(tokens_per_step * (result.global_step - resumed_from) / seconds, 1)
    if has_eval:
        metrics["val_loss"] = round(float(trainer.evaluate()["eval_loss"]), 4)
    curves.close()
    return metrics


def finish(folder: Path) -> None:
    """The model is saved: its checkpoints are no longer needed."""
    shutil.rmtree(folder, ignore_errors=True)
