"""``distill dupes`` and ``distill export``: the dataset commands (kept apart from cli.py, which registers them)."""

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
@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--format", "formats", multiple=True, default=("all",), show_default=True,
              type=click.Choice(["all", "hf", "parquet", "openai", "alpaca", "sharegpt", "csv", "json"]),
              help="what to write (repeat for several)")
@click.option("--output", "output_dir", default="data/export", show_default=True, help="folder to write into")
@click.option("--records", "which", default="reviewed-or-validated", show_default=True,
              type=click.Choice(["reviewed-or-validated", "reviewed"]),
              help="reviewed-or-validated: every split record, its answer checked against the task's schema; "
                   "reviewed: only those a reviewer confirmed or corrected")
@click.option("--max-tokens", default=65_536, show_default=True,
              help="the fine-tuning limit on one example's tokens (OpenAI chat format check)")
def export(params_path: str, formats: tuple[str, ...], output_dir: str, which: str, max_tokens: int) -> None:
    """Write the split (train / val / test) as training data: HF datasets (save_to_disk + Parquet with a
    dataset card), OpenAI chat JSONL, Alpaca, ShareGPT, CSV and JSON."""
    from distill.config import section
    from distill.export import FORMATS, export_split
    from distill.pipeline import filter_spec

    params = _params(params_path)
    spec = filter_spec(section(params, "filter", params_path))
    split_dir = Path(section(params, "split", params_path).output_dir)
    chosen = list(FORMATS) if "all" in formats else list(dict.fromkeys(formats))
    summary = export_split(split_dir, Path(output_dir), spec, chosen, which=which, max_tokens=max_tokens)
    for fmt, paths in summary["written"].items():
        click.echo(f"{fmt:<9} {', '.join(paths)}")
    click.echo(f"exported {summary['sizes']} ({which}; token counts by {summary['token_count']})")
