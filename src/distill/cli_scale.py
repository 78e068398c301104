"""``distill shard`` and ``distill cache merge``: labelling in shards (docs/scaling.md; registered by cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--shards", type=int, default=None, help="number of shards [default: len(label.shards)]")
@click.option("--input", "input_path", default=None, help="[default: <prefilter.output_dir>/passed.jsonl]")
@click.option("--out", "out_dir", default=None, help="[default: label.shard_dir]")
def shard(params_path: str, shards: int | None, input_path: str | None, out_dir: str | None) -> None:
    """Split passed.jsonl into shards by a hash of the record id: <out>/<i>/passed.jsonl.

    A record always lands in the same shard. The shard stage (docs/scaling.md) runs the same code."""
    from distill.config import read_params, section
    from distill.errors import ConfigError
    from distill.scale.shard import write_shards

    params = read_params(params_path)
    label = section(params, "label", params_path)
    n = shards if shards is not None else len(label.shards or [])
    if n < 1:
        raise ConfigError("how many shards? give --shards N, or set label.shards (e.g. [0, 1, 2, 3]) in conf/")
    src = input_path or str(Path(section(params, "prefilter", params_path).output_dir) / "passed.jsonl")
    out = out_dir or label.shard_dir
    counts = write_shards(src, out, n)
    for i, count in enumerate(counts):
        click.echo(f"{Path(out) / str(i) / 'passed.jsonl'}: {count} record(s)")


@click.group()
def cache() -> None:
    """The oracle's response cache (label.cache_path)."""


@cache.command("merge")
@click.argument("target")
@click.argument("sources", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def cache_merge(target: str, sources: tuple[str, ...], as_json: bool) -> None:
    """Copy the answers of the SOURCES caches into TARGET (created if missing).

    The key is the hash of the request, so merging the caches of shards labelled on other machines is
    safe, in any order, and twice is the same as once; where both hold an answer, TARGET's is kept."""
    from distill.labeling.cache import merge_caches

    report = merge_caches(target, list(sources))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for s in report["sources"]:
        click.echo(f"{s['source']}: {s['copied']} answer(s) copied, {s['present']} already there"
                   + (f", {s['differing']} kept as they were in {target} (a different answer to the same request)"
                      if s["differing"] else ""))
    click.echo(f"{target}: {report['answers']} answer(s)")
