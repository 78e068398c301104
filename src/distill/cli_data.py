"""``distill dupes`` and ``distill export`` (the split as training data, or the trained student as a model):
kept apart from cli.py, which registers them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from distill.errors import DistillError


def _params(params_path: str) -> dict[str, Any]:
    from distill.config import read_params

    return read_params(params_path)


# ----------------------------------------------------------------------------- dupes
@click.group()
def dupes() -> None:
    """Look at the duplicates that prefilter and merge removed (data/*/duplicates.jsonl)."""


def duplicate_files(params: dict[str, Any], params_path: str) -> list[tuple[Path, Path]]:
    """(duplicates.jsonl, the file holding the kept records) of the prefilter and merge stages."""
    from distill.config import section

    pre = Path(section(params, "prefilter", params_path).output_dir)
    merged = Path(section(params, "merge", params_path).output_dir)
    return [(pre / "duplicates.jsonl", pre / "passed.jsonl"), (merged / "duplicates.jsonl", merged / "labels.jsonl")]


def find_removals(record_id: str, files: list[tuple[Path, Path]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each removal whose removed id, or kept id, is ``record_id``, with the kept record (None if gone)."""
    from distill import jsonl

    found = []
    for dupes_path, kept_path in files:
        if not dupes_path.is_file():
            continue
        hits = [{**d, "file": str(dupes_path), "kept_file": str(kept_path)} for d in jsonl.read_jsonl(dupes_path)
                if record_id in (d.get("id"), d.get("duplicate_of"))]
        if not hits:
            continue
        wanted = {d["duplicate_of"] for d in hits}
        kept = {r["id"]: r for r in jsonl.read_jsonl(kept_path) if r.get("id") in wanted} if kept_path.is_file() else {}
        found += [(d, kept.get(d["duplicate_of"])) for d in hits]
    return found


@dupes.command("show")
@click.argument("record_id")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              help="where the prefilter and merge output folders are read from")
@click.option("--width", default=160, show_default=True, help="characters per line of the side-by-side view")
def dupes_show(record_id: str, params_path: str, width: int) -> None:
    """Show a removed record next to the one it duplicates (RECORD_ID: either of the two), with the
    method, the similarities and the longest span they share."""
    from distill.dedup.explain import side_by_side

    files = duplicate_files(_params(params_path), params_path)
    found = find_removals(record_id, files)
    if not found:
        where = " or ".join(str(d) for d, _ in files)
        raise DistillError(f"{record_id!r} was not removed as a duplicate, nor kept in place of one (searched {where})")
    for removed, kept in found:
        click.echo(side_by_side(removed, kept, width=width))


# ----------------------------------------------------------------------------- export
#: the split as training data (distill.export) and the trained student as a model (distill.students.export)
DATA_FORMATS = ("all", "hf", "parquet", "openai", "alpaca", "sharegpt", "csv", "json")
MODEL_FORMATS = ("merged", "gguf", "safetensors", "onnx")


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--format", "formats", multiple=True, default=("all",), show_default=True,
              type=click.Choice([*DATA_FORMATS, *MODEL_FORMATS]),
              help="the split: all, hf, parquet, openai, alpaca, sharegpt, csv, json (repeat for several); "
                   "or the trained student, one at a time: merged, gguf (+ Ollama Modelfile) for a lora student, "
                   "safetensors, onnx for a head student")
@click.option("--output", "output_dir", default=None,
              help="folder to write into (the split: default data/export; a student: required, replaced)")
@click.option("--records", "which", default="reviewed-or-validated", show_default=True,
              type=click.Choice(["reviewed-or-validated", "reviewed"]),
              help="the split: reviewed-or-validated, every split record, its answer checked against the task's "
                   "schema; reviewed, only those a reviewer confirmed or corrected")
@click.option("--max-tokens", default=65_536, show_default=True,
              help="the split: the fine-tuning limit on one example's tokens (OpenAI chat format check)")
@click.option("--model", "model_dir", default=None, help="a student: its folder (default: train.output_dir)")
@click.option("--split", "split_path", default=None,
              help="a student: rows for the parity check (default: <split.output_dir>/test.jsonl)")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="a student: check on the first N rows only")
@click.option("--base", default=None, help="a lora student: a float checkpoint of its base to merge into")
@click.option("--dtype", type=click.Choice(["f32", "f16"]), default="f32", show_default=True, help="GGUF weights")
@click.option("--max-mae-delta", type=float, default=None, help="parity: default 0.1 score points")
@click.option("--max-tier-flips", type=float, default=None, help="parity: share of items; default 0.1")
@click.option("--max-answer-changes", type=float, default=None, help="parity: share of items; default 0.1")
@click.option("--max-valid-drop", type=float, default=None, help="parity: default 0.05")
def export(params_path: str, formats: tuple[str, ...], output_dir: str | None, which: str, max_tokens: int,
           model_dir: str | None, split_path: str | None, limit: int | None, base: str | None, dtype: str,
           **limits: float | None) -> None:
    """Write the split (train / val / test) as training data: HF datasets (save_to_disk + Parquet with a
    dataset card), OpenAI chat JSONL, Alpaca, ShareGPT, CSV and JSON; or the trained student as a model
    (merged weights, GGUF + Ollama Modelfile, safetensors, ONNX), checked to answer the test split like the
    student (exit 2 when it does not)."""
    from distill.config import section
    from distill.pipeline import filter_spec

    model_formats = [f for f in formats if f in MODEL_FORMATS]
    if model_formats:
        if len(formats) > 1:
            raise click.UsageError("a student exports one --format at a time, and apart from the split's formats")
        if not output_dir:
            raise click.UsageError("--output is required for a student's export (the folder is replaced)")
        _export_student(params_path, model_formats[0], output_dir, model_dir, split_path, limit, base, dtype, limits)
        return
    from distill.export import FORMATS, export_split

    params = _params(params_path)
    spec = filter_spec(section(params, "filter", params_path))
    split_dir = Path(section(params, "split", params_path).output_dir)
    chosen = list(FORMATS) if "all" in formats else list(dict.fromkeys(formats))
    summary = export_split(split_dir, Path(output_dir or "data/export"), spec, chosen, which=which,
                           max_tokens=max_tokens)
    for fmt, paths in summary["written"].items():
        click.echo(f"{fmt:<9} {', '.join(paths)}")
    click.echo(f"exported {summary['sizes']} ({which}; token counts by {summary['token_count']})")


def _export_student(params_path: str, fmt: str, output: str, model_dir: str | None, split_path: str | None,
                    limit: int | None, base: str | None, dtype: str, limits: dict[str, float | None]) -> None:
    import json

    from distill import jsonl
    from distill.config import section
    from distill.pipeline import filter_spec
    from distill.students.export import Thresholds
    from distill.students.export import export as export_model

    params = _params(params_path)
    spec = filter_spec(section(params, "filter", params_path))
    model_dir = model_dir or section(params, "train", params_path).output_dir
    split_path = split_path or str(Path(section(params, "split", params_path).output_dir) / "test.jsonl")
    if not Path(split_path).is_file():
        raise DistillError(f"{split_path} not found: run the pipeline first, or give --split")
    rows = list(jsonl.read_jsonl(split_path))[:limit]
    thresholds = Thresholds(**{k: v for k, v in limits.items() if v is not None})
    report = export_model(model_dir, fmt, output, rows, spec, thresholds, base=base, dtype=dtype)
    shown = {k: v for k, v in report.items() if k not in ("failures", "student", "export")}
    click.echo(f"exported {model_dir} as {fmt} to {output}; parity on {report['n']} rows: {json.dumps(shown)}")
    click.echo(f"  student: {json.dumps(report['student'])}\n  export:  {json.dumps(report['export'])}")
