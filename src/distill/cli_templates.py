"""``distill templates``: the generation templates of generate filters (list, show) and the topic tree
of the configured generate filter, read from the response cache. Registered by :mod:`distill.cli`."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def templates() -> None:
    """Generation templates (generate filters): list them, show one, show the topic tree of a run."""


def _filter_dirs(root: str) -> list[Path]:
    """The template folders of every generate filter under ``root`` (its template_dir, its folder)."""
    import yaml

    from distill.filterspec import list_filters
    from distill.tasks.gen_templates import search_path

    dirs: list[Path] = []
    for _, _, folder in list_filters(root):
        try:
            raw = yaml.safe_load((folder / "filter.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(raw, dict) and raw.get("kind") == "generate":
            dirs += [d for d in search_path(folder, raw.get("template_dir"))[:-1] if d not in dirs]
    return dirs


def _search(dirs: tuple[str, ...], root: str) -> list[Path]:
    from distill.tasks.gen_templates import BUILTIN_DIR

    return [Path(d) for d in dirs] + _filter_dirs(root) + [BUILTIN_DIR]


@templates.command("list")
@click.option("--dir", "dirs", multiple=True, help="a folder of your own templates (repeatable)")
@click.option("--root", default="filters", show_default=True, help="generate filters here add their templates")
def templates_list(dirs: tuple[str, ...], root: str) -> None:
    """Every template: the built-in ones and those of your folders and generate filters (first of a name wins)."""
    from distill.errors import DistillError
    from distill.tasks.gen_templates import BUILTIN_DIR, available, read_template

    for name, path in available(_search(dirs, root)):
        where = "built-in" if path.parent == BUILTIN_DIR else str(path)
        try:
            text = read_template(path).description
        except DistillError as e:
            text = f"INVALID: {str(e).splitlines()[-1].strip()}"
        click.echo(f"{name:<20}{text}  ({where})")


@templates.command("show")
@click.argument("name")
@click.option("--dir", "dirs", multiple=True, help="a folder of your own templates (repeatable)")
@click.option("--root", default="filters", show_default=True)
def templates_show(name: str, dirs: tuple[str, ...], root: str) -> None:
    """A template: its item schema, its prompts (for 3 items, and the student's for one) and its example."""
    from distill.tasks.gen_templates import find_template

    t = find_template(name, _search(dirs, root))
    click.echo(f"{t.name}: {t.description}\n({t.path})\n")
    click.echo("item schema:\n" + json.dumps(t.item_schema, indent=2, ensure_ascii=False))
    click.echo(f"\ndedup on: {', '.join(t.dedup_fields) or 'every field'}")
    click.echo(f"\nsystem prompt:\n{t.system_prompt.strip()}")
    click.echo(f"\nuser prompt (placeholders):\n{t.user_prompt.strip()}")
    click.echo(f"\nthe oracle is asked, e.g. (3 items, one already written):\n"
               f"{t.render('<domain>', '<topic>', 3, [t.example])}")
    click.echo(f"\nthe student is asked:\n{t.render('<domain>', '<topic>', 1, [])}")
    click.echo("\nexample item:\n" + json.dumps(t.example, indent=2, ensure_ascii=False))


@templates.command("tree")
@click.option("--params", "params_path", default="params.yaml", show_default=True)
def templates_tree(params_path: str) -> None:
    """The topic tree of the configured generate filter, from the response cache (no request is made)."""
    from distill.config import read_params
    from distill.labeling.generate import cached_tree

    spec, root, cache = cached_tree(read_params(params_path), params_path)
    leaves = root.leaves()
    missing = sum(1 for t in leaves if t.problem)
    click.echo(f"{spec.name} {spec.version}: {spec.domain.strip()}")
    click.echo(f"topics (depth {spec.topics.depth}, breadth {spec.topics.breadth}), from {cache}:")
    for line in root.lines():
        click.echo(line)
    click.echo(f"{len(leaves)} leaf topic(s)" + (f"; {missing} not expanded" if missing else ""))
