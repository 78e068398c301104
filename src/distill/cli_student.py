"""``distill infer`` and ``distill chat``: a trained student on new records (registered in :mod:`distill.cli`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from distill.errors import DistillError


# ----------------------------------------------------------------------------- infer / chat
def _student_setup(params_path: str):
    """(params, the filter, label.max_words) for using a student as params.yaml's run prepared its prompts."""
    from distill.config import read_params, section
    from distill.filterspec import load_filter_at

    params = read_params(params_path)
    ref = section(params, "filter", params_path)
    return params, load_filter_at(ref.root, ref.name, ref.version), section(params, "label", params_path).max_words


@click.command()
@click.option("--model", "model_dir", default="models/student", show_default=True, help="a trained student's folder")
@click.option("--input", "input_path", required=True,
              help="records to answer: any input the prefilter reads (file, glob, folder, database URL), "
                   "read with params.yaml's prefilter settings (field map, metadata, format)")
@click.option("--output", "output_path", required=True, help="JSONL, one row per record, in input order")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              help="the run whose filter and label.max_words render the prompts")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1), help="records per predict call")
@click.option("--progress-every", default=10.0, show_default=True, type=float, help="seconds between progress lines")
def infer(model_dir: str, input_path: str, output_path: str, params_path: str, batch_size: int,
          progress_every: float) -> None:
    """Answer every record of --input with a trained student (batch inference), with progress and
    throughput on stderr. Invalid answers are written with answer: null and their reason, and counted."""
    from distill import jsonl
    from distill.config import PrefilterConfig, _validate, section
    from distill.inference import Predictor
    from distill.inference import infer as run_infer
    from distill.sources import CorpusStream
    from distill.stage import setup_logging

    setup_logging()
    params, spec, max_words = _student_setup(params_path)
    predictor = Predictor(model_dir, spec)  # the student and the filter agree, before reading anything
    if not any(c in input_path for c in "*?[") and "://" not in input_path and not Path(input_path).exists():
        raise DistillError(f"--input {input_path} not found")
    raw = {**section(params, "prefilter", params_path).model_dump(), "input": input_path, "limit": None,
           "batch_rows": batch_size, "track": None}
    quarantined: list[dict] = []
    stream = CorpusStream(_validate("prefilter", PrefilterConfig, raw, "--input"), on_quarantine=quarantined.append)
    with predictor, jsonl.AtomicWriter(output_path) as out:
        totals = run_infer(predictor, stream.batches(), spec, max_words, out.write,
                           lambda line: click.echo(line, err=True), every_s=progress_every)
    if quarantined:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(stream.quarantine_counts.items()))
        click.echo(f"infer: {len(quarantined)} malformed row(s) skipped ({reasons}); first: line "
                   f"{quarantined[0].get('line')} of {quarantined[0].get('file')}", err=True)
    click.echo(json.dumps({**totals, "quarantined": len(quarantined), "output": output_path}))


@click.command()
@click.option("--model", "model_dir", default="models/student", show_default=True, help="a trained student's folder")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              help="the run whose filter and label.max_words render the prompts")
def chat(model_dir: str, params_path: str) -> None:
    """Talk to a trained student: each line on stdin is an article's text (or a JSON object with text,
    title...); each answer is one JSON line on stdout. Pipe a file in, or type; Ctrl-D ends."""
    from distill.inference import Predictor, stdin_lines
    from distill.inference import chat as run_chat
    from distill.stage import setup_logging

    setup_logging()
    _, spec, max_words = _student_setup(params_path)
    interactive = sys.stdin.isatty()
    with Predictor(model_dir, spec) as predictor:
        if interactive:
            click.echo(f"{predictor.kind} student for {spec.name} {spec.version}: one article per line, Ctrl-D to end",
                       err=True)
        run_chat(predictor, stdin_lines(), spec, max_words, out=click.echo,
                 prompt=(lambda: click.echo("> ", nl=False, err=True)) if interactive else None)
