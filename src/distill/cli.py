"""The ``distill`` command: what is not a pipeline stage (stages run through ``dvc exp run``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from distill import __version__
from distill.cli_student import chat, infer
from distill.cli_templates import templates
from distill.errors import DistillError
from distill.scaffold import KINDS as SCAFFOLDS


class _Group(click.Group):
    """Print a DistillError as a one-line message with exit status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DistillError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(getattr(e, "exit_status", 2))


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="distill")
def main() -> None:
    """Reproducible LLM knowledge distillation.

    The pipeline itself runs with DVC (`dvc exp run`); these commands inspect filters, check and compose
    the configuration, report results and use a trained student (infer, chat).
    """


# ----------------------------------------------------------------------------- filters
@main.group()
def filters() -> None:
    """Inspect the filters (task definitions) under filters/."""


@filters.command("list")
@click.option("--root", default="filters", show_default=True, help="folder holding <name>/<version>/filter.yaml")
@click.option("--config-dir", default="conf", show_default=True,
              help="Hydra config folder, where filter/<name>.yaml makes a filter selectable")
def filters_list(root: str, config_dir: str) -> None:
    """List every filter and whether it loads; exit 2 when any is invalid or not selectable."""
    from distill.filterspec import check_filter, conf_problems, list_filters

    found = list_filters(root)
    if not found:
        raise DistillError(f"no filters found under {root}/ (expected {root}/<name>/<version>/filter.yaml)")
    invalid = 0
    for name, version, _ in found:
        spec, problems = check_filter(root, name, version)
        if problems:
            invalid += 1
            click.echo(f"{name:<36}{version:<6}INVALID:")
            for problem in problems:
                click.echo(_indent(problem))
        else:
            assert spec is not None
            click.echo(f"{name:<36}{version:<6}{spec.summary()}")
    unselectable = conf_problems(root, config_dir)
    for problem in unselectable:
        click.echo(f"\n{problem}")
    if invalid or unselectable:
        counts = [f"{invalid} invalid filter(s)"] if invalid else []
        counts += [f"{len(unselectable)} problem(s) with {Path(config_dir) / 'filter'}/"] if unselectable else []
        raise DistillError(" and ".join(counts) + " (above)")


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


@filters.command("show")
@click.argument("name")
@click.option("--version", "version", default="v1", show_default=True)
@click.option("--root", default="filters", show_default=True)
@click.option("--schema", is_flag=True, help="print the JSON schema the oracle must satisfy")
def filters_show(name: str, version: str, root: str, schema: bool) -> None:
    """Show a filter: its kind, what it asks (dimensions and tiers, labels...), its prefilter rules."""
    from distill.filterspec import load_filter_at

    spec = load_filter_at(root, name, version)
    if schema:
        click.echo(json.dumps(spec.json_schema, indent=2))
        return
    click.echo(f"{spec.name} {spec.version} ({spec.kind}): {spec.description}\n")
    if spec.kind == "score":
        click.echo("dimensions (weight):")
        for d in spec.dimensions:
            click.echo(f"  {d.name:<26}{d.weight:>5.2f}  {d.question}")
        click.echo("\ntiers (overall score >= min):")
        for t in spec.tiers:
            click.echo(f"  {t.name:<26}{t.min_score:>5.1f}  {t.description}")
    else:
        click.echo(spec.summary())
    if not spec.READS_CORPUS:  # a generate filter: no corpus, no prefilter rules
        return
    p = spec.prefilter
    click.echo("\nprefilter:")
    click.echo(f"  min_words={p.min_words} max_words={p.max_words} min_english_share={p.min_english_share}")
    for rule in p.block_patterns:
        click.echo(f"  block {rule.reason}: /{rule.pattern}/")
    if p.require_keywords:
        click.echo(f"  require one of {len(p.require_keywords.keywords)} keywords, else {p.require_keywords.reason}")


@filters.command("new")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(list(SCAFFOLDS)), help="the task kind")
@click.option("--version", "version", default="v1", show_default=True)
@click.option("--root", default="filters", show_default=True)
@click.option("--config-dir", default="conf", show_default=True,
              help="Hydra config folder, where filter/<name>.yaml makes the filter selectable")
def filters_new(name: str, kind: str, version: str, root: str, config_dir: str) -> None:
    """Write a working task package of KIND to edit: filter.yaml (every field commented), prompt.md,
    README.md, and conf/filter/NAME.yaml so that -S filter=NAME selects it."""
    from distill.scaffold import new_filter

    for path in new_filter(name, kind, version=version, root=Path(root), config_dir=Path(config_dir)):
        click.echo(f"wrote {path}")
    click.echo(f"next: edit {Path(root) / name / version / 'filter.yaml'}, then `distill filters show {name}`")


# ----------------------------------------------------------------------------- config
@main.group()
def config() -> None:
    """Check or compose the pipeline configuration."""


@config.command("check")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--config-dir", default="conf", show_default=True,
              help="Hydra config folder, checked for a filter/<name>.yaml per filter")
def config_check(params_path: str, config_dir: str) -> None:
    """Validate every section of params.yaml, the filter it names and the oracle's API key; report
    filters that no conf/filter/<name>.yaml selects."""
    from distill.config import FilterRef, check_all, load_dotenv, read_params
    from distill.filterspec import conf_problems
    from distill.students import params_problems

    load_dotenv()
    params = read_params(params_path)
    problems = check_all(params, source=params_path) + params_problems(params, params_path)
    try:
        root = FilterRef.model_validate(params.get("filter")).root
    except ValueError:  # already reported by check_all
        root = "filters"
    if Path(config_dir).is_dir():
        problems += conf_problems(root, config_dir)
    if problems:
        for p in problems:
            click.echo(f"error: {p}", err=True)
        sys.exit(2)
    click.echo(f"{params_path}: ok")


@config.command("compose")
@click.argument("overrides", nargs=-1)
@click.option("--output", default="params.yaml", show_default=True)
@click.option("--config-dir", default="conf", show_default=True)
def config_compose(overrides: tuple[str, ...], output: str, config_dir: str) -> None:
    """Compose conf/ (with Hydra OVERRIDES such as student=lora) into params.yaml, as `dvc exp run` does."""
    from distill.params import compose_to_file

    compose_to_file(Path(config_dir), Path(output), list(overrides))
    click.echo(f"wrote {output}")


# ----------------------------------------------------------------------------- estimate
@main.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--input", "input_path", default=None,
              help="records to label [default: prefilter.output_dir/passed.jsonl]")
@click.option("--latency-s", default=2.0, show_default=True, type=float,
              help="assumed seconds per request, for the time at the concurrency limit")
@click.option("--output-factor", default=0.5, show_default=True, type=float,
              help="share of oracle.max_tokens assumed an answer when no cached answer is a pilot")
@click.option("--json", "as_json", is_flag=True, help="print the estimate as JSON")
def estimate(params_path: str, input_path: str | None, latency_s: float, output_factor: float,
             as_json: bool) -> None:
    """Estimate the label stage: requests, tokens, dollars and minutes (no request is made)."""
    from distill.labeling.estimate import format_estimate, run

    result = run(params_path, input_path, latency_s=latency_s, output_factor=output_factor)
    click.echo(json.dumps(result, indent=2) if as_json else format_estimate(result))


# ----------------------------------------------------------------------------- oracle-check
@main.command("oracle-check")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--input", "input_path", default=None,
              help="records to sample [default: prefilter.output_dir/passed.jsonl]")
@click.option("--output", default="metrics/oracle_agreement.json", show_default=True)
@click.option("--config-dir", default="conf", show_default=True,
              help="where oracle_check.second=<name> finds oracle/<name>.yaml")
@click.option("--sample-size", type=int, default=None, help="override oracle_check.sample_size")
def oracle_check(params_path: str, input_path: str | None, output: str, config_dir: str,
                 sample_size: int | None) -> None:
    """Label a sample with two oracles (or one twice); write how they agree: the student's floor."""
    from distill.config import load_dotenv
    from distill.labeling.oracle_check import format_agreement, run
    from distill.stage import setup_logging

    setup_logging()
    load_dotenv()
    result = run(params_path, input_path, output=output, config_dir=config_dir,
                 sample_size=sample_size)
    click.echo(format_agreement(result) if result.get("measured", True) else f"not measured: {result['reason']}")
    click.echo(f"wrote {output}")


# ----------------------------------------------------------------------------- doctor
@main.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the checks as a JSON list")
@click.option("--skip-model", is_flag=True, help="skip the slow checks that load the embedded model and torch")
def doctor(params_path: str, as_json: bool, skip_model: bool) -> None:
    """Check this machine and project, and say what to fix.

    Python, package versions, the llama.cpp build, the embedded model, torch, the oracle's keys and
    budget, git and DVC. Exit status 1 when a check fails (warnings do not fail)."""
    from distill.doctor import failed, format_fixes, format_header, format_row, iter_checks

    checks = []
    if not as_json:
        click.echo(format_header())
    for check in iter_checks(params_path, skip_model=skip_model):
        checks.append(check)
        if not as_json:
            click.echo(format_row(check))
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        click.echo(format_fixes(checks, skipped_model=skip_model))
    sys.exit(1 if failed(checks) else 0)


# ----------------------------------------------------------------------------- review
REVIEW_DB = ".distill/reviews.sqlite"


@main.group(invoke_without_command=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--db", "db_path", default=REVIEW_DB, show_default=True,
              help="the reviews' SQLite store (outside DVC outputs, like the oracle cache)")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on; anything but loopback needs a token (DISTILL_REVIEW_TOKEN or --new-token)")
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--reviewer", default=lambda: os.environ.get("USER", ""), help="name stored with each review [$USER]")
@click.option("--sample", type=int, default=None, help="put N unreviewed records first in the review queue")
@click.option("--strategy", type=click.Choice(["random", "uncertain", "disagreement"]), default="random",
              show_default=True, help="how --sample picks them")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of --sample")
@click.option("--new-token", is_flag=True, help="make up a token (printed once) that every request must carry")
@click.pass_context
def review(ctx, params_path: str, db_path: str, host: str, port: int, reviewer: str, sample: int | None,
           strategy: str, seed: int, new_token: bool) -> None:
    """Review the oracle's answers in a local web app (http://127.0.0.1:8765/).

    Mark answers correct or not, rate each criterion, correct them through a form validated against
    the task's schema (or ask the oracle to repair them), leave notes. Every save is stored (SQLite)
    and exported to data/reviews/reviews.jsonl (an input of the merge stage) and metrics/review.json."""
    ctx.obj = {"params": params_path, "db": db_path}
    if ctx.invoked_subcommand is not None:
        return
    from distill.review.server import resolve_token, serve
    from distill.stage import setup_logging

    resolve_token(host, new_token)  # refuse a bad bind before loading anything
    setup_logging()
    if sample is not None:
        _queue_sample(params_path, db_path, sample, strategy, seed)
    serve(params_path=params_path, db_path=db_path, host=host, port=port, reviewer=reviewer, new_token=new_token,
          out=click.echo)


def _queue_sample(params_path: str, db_path: str, n: int, strategy: str, seed: int) -> None:
    from distill.review.dataset import Dataset
    from distill.review.export import import_file
    from distill.review.sampling import sample
    from distill.review.store import ReviewStore

    dataset = Dataset(params_path)
    store = ReviewStore(db_path)
    try:
        import_file(store, dataset.reviews_path)
        reviewed = {(r.record_id, r.answer_hash) for r in store.all() if r.is_correct is not None}
        ids = sample(dataset, n, strategy, reviewed, seed)
        store.set_queue(ids, strategy)
    finally:
        store.close()
    click.echo(f"review queue: {len(ids)} record(s) picked by {strategy} (seed {seed})")


@review.command("export")
@click.option("--metrics", "metrics_path", default="metrics/review.json", show_default=True)
@click.pass_context
def review_export(ctx, metrics_path: str) -> None:
    """Write data/reviews/reviews.jsonl and metrics/review.json from the review store."""
    from distill.review.dataset import Dataset
    from distill.review.export import export, import_file
    from distill.review.store import ReviewStore

    dataset = Dataset(ctx.obj["params"])
    store = ReviewStore(ctx.obj["db"])
    try:
        import_file(store, dataset.reviews_path)
        stats = export(dataset, store, metrics_path=metrics_path)
    finally:
        store.close()
    ci = stats["precision_ci95"]
    share = f"{stats['precision']:.1%} correct (Wilson 95% CI {ci[0]:.1%}-{ci[1]:.1%})" if ci else "none judged"
    click.echo(f"{stats['reviewed']} of {stats['records']} records reviewed, {share}, {stats['corrected']} corrected; "
               f"wrote {dataset.reviews_path} and {metrics_path}")


# ----------------------------------------------------------------------------- pr-report
@main.command("pr-report")
@click.option("--base", "base", required=True,
              help="git ref to compare the workspace's metrics with (e.g. origin/main)")
@click.option("--output", default=None, help="write the Markdown here instead of printing it")
@click.option("--plots-dir", default=None, help="also write the changed plots (base vs this change) as SVG here")
@click.option("--plots-url", default=None, help="where the plots will be viewable (e.g. the workflow run's artifacts)")
def pr_report(base: str, output: str | None, plots_dir: str | None, plots_url: str | None) -> None:
    """The metric diff of the workspace against BASE as Markdown (what the pull-request workflow posts)."""
    from distill.prreport import build_report

    text = build_report(base, plots_dir=plots_dir, plots_url=plots_url)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


# ----------------------------------------------------------------------------- report
@main.command()
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True)
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              help="where the filter (the order of its dimensions) is read from")
@click.option("--html", "html_path", default=None,
              help="write the analytics page (cost, tokens, retries, labels, agreement, reviews, errors) here")
@click.option("--db", "db_path", default=REVIEW_DB, show_default=True, help="the review store, for --html")
def report(metrics_path: str, params_path: str, html_path: str | None, db_path: str) -> None:
    """Print the evaluation table of the last evaluate run, dimensions in the filter's order, then the
    labelling beside it (metrics/label.json: the oracle against gold, the cascade); --html FILE writes the
    analytics page."""
    if html_path is not None:
        _html_report(params_path, db_path, html_path)
        return
    from distill.evaluate import format_table

    path = Path(metrics_path)
    if not path.is_file():
        raise DistillError(f"{path} not found: run the pipeline first (`dvc exp run`)")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    title = f"student={metrics.get('student')} vs oracle on {metrics.get('n_test')} test items"
    click.echo(format_table(metrics, title=title, dimensions=_dimension_order(params_path, metrics)))
    label_path = path.parent / "label.json"  # the labelling beside it: the oracle against gold, the cascade
    if label_path.is_file():
        from distill.labeling.summary import format_label_metrics

        click.echo("\n" + format_label_metrics(json.loads(label_path.read_text(encoding="utf-8"))))


def _html_report(params_path: str, db_path: str, html_path: str) -> None:
    from distill.analytics import render_html
    from distill.review.dataset import Dataset
    from distill.review.store import ReviewStore

    dataset = Dataset(params_path)
    store = ReviewStore(db_path) if Path(db_path).is_file() else None
    try:
        html = render_html(dataset, store, standalone=True)
    finally:
        if store is not None:
            store.close()
    Path(html_path).parent.mkdir(parents=True, exist_ok=True)
    Path(html_path).write_text(html, encoding="utf-8")
    click.echo(f"wrote {html_path}")


def _dimension_order(params_path: str, metrics: dict) -> list[str] | None:
    """The order evaluate printed the dimensions in: the filter's (metrics files are key-sorted), from
    the filter params.yaml names, else from the per-dimension plot data evaluate wrote; None if neither
    lists the same dimensions as the metrics."""
    from distill.config import read_params, section
    from distill.filterspec import load_filter_at

    wanted = set(metrics.get("mae") or {})
    try:
        params = read_params(params_path)
    except DistillError:
        return None
    try:
        ref = section(params, "filter", params_path)
        names = load_filter_at(ref.root, ref.name, ref.version).dimension_names
        if set(names) == wanted:
            return names
    except DistillError:
        pass
    try:
        rows = json.loads((Path(section(params, "evaluate", params_path).output_dir) / "per_dimension.json")
                          .read_text(encoding="utf-8"))
        names = [r.get("name", r.get("dimension")) for r in rows]
    except (DistillError, OSError, ValueError, KeyError, TypeError):
        return None
    return names if set(names) == wanted else None


def _register_data_commands() -> None:
    from distill.cli_data import dupes, export
    from distill.cli_scale import cache, shard

    main.add_command(dupes)
    main.add_command(export)
    main.add_command(shard)
    main.add_command(cache)


_register_data_commands()
main.add_command(infer)
main.add_command(chat)
main.add_command(templates)  # distill templates: in its own module (click only, no heavy import)

if __name__ == "__main__":
    main()
