"""``distill export``: a trained student as a deployable model, checked to behave like the student.

Every export is parity-checked: the exported model answers the test split (or ``--limit`` rows of it),
the unexported student answers the same rows, and the export fails when they differ beyond the
thresholds (:class:`Thresholds`): the change in mean dimension MAE against the oracle, the share of
items whose tier flips, the share whose answer changes (a generative answer's JSON, a label; a score
head's scores are continuous and are held to the MAE delta and tier flips), and the drop in the share of
valid answers. A prompt the export renders differently from the student (its chat template, the GGUF's
embedded one, or the Modelfile's) fails it whatever the answers, and so does a test conversation (prompt
and oracle answer) a GGUF reads as other token ids than the student's tokenizer. A failed export is moved to
``<output>.failed`` with its report, so nothing half-checked sits where a deployment would look.

The known ways an export goes wrong, and what catches them: merging LoRA into a quantised base (refused
before anything is written; a merge damaged that way shows in the parity check) and a chat template that
is not the student's (the template check); a GGUF tokenizer that splits text otherwise (the token check).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from distill.students import read_manifest, schemas_for
from distill.students.export_formats import EXPORT_JSON, FORMATS, read_export
from distill.students.gguf_export import ExportError

log = logging.getLogger("distill")


class Thresholds(BaseModel):
    """How far an export may move from the student on the parity rows before the export fails."""

    model_config = ConfigDict(extra="forbid")

    #: |mean dimension MAE of the export - the student's| (score tasks), in score points
    max_mae_delta: float = Field(default=0.1, ge=0)
    #: share of items whose tier differs between export and student (score tasks)
    max_tier_flips: float = Field(default=0.1, ge=0, le=1)
    #: share of items whose answer differs (generative answers, labels)
    max_answer_changes: float = Field(default=0.1, ge=0, le=1)
    #: drop in the share of valid answers
    max_valid_drop: float = Field(default=0.05, ge=0, le=1)


def check_format(manifest: dict[str, Any], fmt: str, model_dir: str | Path) -> str:
    kind = manifest["kind"]
    if kind not in FORMATS:
        raise ExportError(f"{model_dir} holds a {kind} student, which needs no export: its files are the model "
                          f"(student.json and what it names); export a lora or head student")
    if kind == "head" and fmt == "merged":
        fmt = "safetensors"  # a head student merged is its safetensors checkpoint
    if fmt not in FORMATS[kind]:
        raise ExportError(f"a {kind} student exports as {' or '.join(FORMATS[kind])}, not {fmt}")
    return fmt


def _guard_base(manifest: dict[str, Any], base: str | None) -> None:
    """Refuse a quantised base before any work (the export's child checks the loaded model again)."""
    from distill.students.bases import MINILM, SMOLLM2, quantisation
    from distill.students.export_formats import _QUANTISED

    name = base or manifest["config"]["base_model"]
    if name in (SMOLLM2, MINILM):
        return
    how = quantisation(Path(name).expanduser())
    if how:
        raise ExportError(_QUANTISED.format(base=name, how=how))


def export(model_dir: str | Path, fmt: str, output: str | Path, rows: list[dict], task,
           thresholds: Thresholds | None = None, base: str | None = None, dtype: str = "f32",
           reference: list[dict] | None = None) -> dict[str, Any]:
    """Write ``model_dir``'s student as ``fmt`` into ``output`` and check it against the student on ``rows``
    (``task``: the filter, for the metrics; ``reference``: the student's predictions on ``rows``, computed
    when None). Returns the parity report; raises ExportError when it fails."""
    from distill.students import _in_torch_child

    manifest = read_manifest(model_dir)
    fmt = check_format(manifest, fmt, model_dir)
    _guard_base(manifest, base)
    if not rows:
        raise ExportError("no rows to check the export on: give --split a non-empty file (the test split)")
    _in_torch_child("distill.students.export_formats:write", f"exporting the student as {fmt}",
                    model_dir=str(model_dir), manifest=manifest, fmt=fmt, output=str(output), base=base, dtype=dtype)
    return check_export(output, rows, task, thresholds, model_dir=model_dir, reference=reference)


def check_export(output: str | Path, rows: list[dict], task, thresholds: Thresholds | None = None,
                 model_dir: str | Path | None = None, reference: list[dict] | None = None) -> dict[str, Any]:
    """The parity check of the export in ``output`` (module docstring); writes the report into its
    export.json. ``reference``: the student's predictions on ``rows`` (computed when None)."""
    from distill.students import _in_torch_child, predict

    thresholds = thresholds or Thresholds()
    info = read_export(output)
    model_dir = model_dir or info["student_dir"]
    if reference is None:
        reference = predict(model_dir, rows, task, greedy=True)  # the export decodes greedily too
    exported = _in_torch_child("distill.students.export_formats:predict_exported", "running the exported model",
                               output=str(output), rows=rows, schemas=schemas_for(task, rows))
    report = compare(task, rows, reference, exported["predictions"], thresholds)
    mismatches = exported["template_mismatches"]
    report["template_mismatches"] = len(mismatches)
    if mismatches:
        report["failures"].insert(0, f"{len(mismatches)} of {len(rows)} prompts are rendered differently by the "
                                     f"export than by the student's chat template (e.g. {mismatches[0]}): the "
                                     "exported model would read other prompts than the student was trained on")
    split = exported.get("token_mismatches", [])
    report["token_mismatches"] = len(split)
    if split:
        report["failures"].append(f"{len(split)} of {len(rows)} conversations (prompt and oracle answer) are read as "
                                  f"other token ids by the export than by the student's tokenizer (e.g. {split[0]}): "
                                  "its tokenizer does not split text as the student's does (tokenizer.ggml.pre in a "
                                  "GGUF)")
    report["passed"] = not report["failures"]
    info["parity"] = report
    Path(output, EXPORT_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if report["failures"]:
        failed = Path(f"{output}.failed")
        if failed.exists():
            shutil.rmtree(failed)
        shutil.move(str(output), failed)
        raise ExportError("the export does not behave like the student:\n  - " + "\n  - ".join(report["failures"])
                          + f"\nthe export is kept in {failed} for inspection (parity report in its {EXPORT_JSON});"
                          " thresholds: --max-mae-delta, --max-tier-flips, --max-answer-changes, --max-valid-drop")
    return report


def _answer_key(prediction: dict[str, Any]) -> str | None:
    answer = prediction.get("answer")
    return None if answer is None else json.dumps(answer, sort_keys=True)


def compare(task, rows: list[dict], reference: list[dict], exported: list[dict], th: Thresholds) -> dict[str, Any]:
    """Parity figures of ``exported`` against ``reference`` on ``rows`` and what exceeds ``th``."""
    n = len(rows)
    ref_metrics, ref_items, _ = task.evaluate(rows, reference)
    exp_metrics, exp_items, _ = task.evaluate(rows, exported)
    ref_by, exp_by = {p["id"]: p for p in reference}, {p["id"]: p for p in exported}
    continuous = all(p.get("raw") is None for p in reference) and task.kind == "score"
    report: dict[str, Any] = {"n": n, "student": {k: ref_metrics.get(k) for k in task.HEADLINE},
                              "export": {k: exp_metrics.get(k) for k in task.HEADLINE}, "failures": []}
    fail = report["failures"]
    drop = (ref_metrics.get("valid_json_share") or 0) - (exp_metrics.get("valid_json_share") or 0)
    report["valid_drop"] = round(drop, 4)
    if drop > th.max_valid_drop:
        fail.append(f"valid answers drop by {drop:.3f} (student {ref_metrics['valid_json_share']}, export "
                    f"{exp_metrics['valid_json_share']}; --max-valid-drop {th.max_valid_drop})")
    if task.kind == "score":
        delta = abs((exp_metrics["mean_dimension_mae"] or 0) - (ref_metrics["mean_dimension_mae"] or 0))
        flips = sum(a["predicted"] != b["predicted"] for a, b in zip(ref_items, exp_items))
        drift = [abs(float(exp_by[i]["scores"][d]) - float(ref_by[i]["scores"][d])) for i in ref_by
                 if ref_by[i].get("scores") and exp_by.get(i, {}).get("scores") for d in ref_by[i]["scores"]]
        report.update(mae_delta=round(delta, 4), tier_flips=flips, max_score_drift=round(max(drift, default=0.0), 4))
        if delta > th.max_mae_delta:
            fail.append(f"mean dimension MAE moves by {delta:.3f} (student {ref_metrics['mean_dimension_mae']}, "
                        f"export {exp_metrics['mean_dimension_mae']}; --max-mae-delta {th.max_mae_delta})")
        if flips > th.max_tier_flips * n:
            fail.append(f"{flips} of {n} items change tier (--max-tier-flips {th.max_tier_flips} of the items)")
    if not continuous:
        changed = sum(_answer_key(ref_by[r["id"]]) != _answer_key(exp_by.get(r["id"], {})) for r in rows)
        report["answer_changes"] = changed
        if changed > th.max_answer_changes * n:
            fail.append(f"{changed} of {n} answers change (--max-answer-changes {th.max_answer_changes} of the items)")
    return report

