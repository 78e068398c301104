"""Generation templates: what one synthetic item looks like and how the oracle is asked for it.

A template is a YAML file ``<name>.yaml`` holding ``name``, ``description``, ``schema`` (the JSON
schema of one item), ``system_prompt``, ``user_prompt`` (a ``str.format`` pattern with the fields of
:data:`PLACEHOLDERS`), ``example`` (one item, checked against the schema) and optionally
``dedup_fields`` (the fields whose text decides whether two items are duplicates: the question, not
its answer; all fields when absent). The built-in templates ship as package data in
``distill/tasks/templates/``; a user's own, in the same shape, live in a folder the user owns: the
generate filter's ``template_dir:`` or the filter folder itself, searched first, so a custom template
may also replace a built-in one of the same name.

The same pattern asks the oracle for ``{count}`` items with the topic's items so far listed
(``{examples_so_far}``), and asks the student for one item with none listed: what the student learns
to answer is the prompt with count 1. The reply format (an ``items`` list, or one item) is added by
the code, not the template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from distill.errors import FilterSpecError
from distill.tasks.base import Strict, template_fields

BUILTIN_DIR = Path(__file__).parent / "templates"
#: the fields a user pattern may use
PLACEHOLDERS = frozenset({"domain", "topic", "count", "examples_so_far", "example"})
#: items so far listed in a prompt (the most recent), and characters shown of each
SHOWN_ITEMS, SHOWN_CHARS = 20, 100


class GenerationTemplate(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    item_schema: dict[str, Any] = Field(alias="schema")
    dedup_fields: list[str] = Field(default_factory=list)
    system_prompt: str = Field(min_length=1)
    user_prompt: str = Field(min_length=1)
    example: dict[str, Any]
    #: the file it was read from (set by the loader)
    path: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _check(self) -> GenerationTemplate:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        problems = []
        if self.item_schema.get("type") != "object" or not isinstance(self.item_schema.get("properties"), dict):
            problems.append("schema must describe a JSON object (type: object, with properties)")
        else:
            try:
                Draft202012Validator.check_schema(self.item_schema)
            except SchemaError as e:
                problems.append(f"schema is not a valid JSON schema: {e.message}")
            else:
                for err in Draft202012Validator(self.item_schema).iter_errors(self.example):
                    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
                    problems.append(f"example does not satisfy the schema: at {where}: {err.message}")
            unknown = [f for f in self.dedup_fields if f not in self.item_schema["properties"]]
            if unknown:
                problems.append(f"dedup_fields {unknown} are not properties of the schema "
                                f"({', '.join(self.item_schema['properties'])})")
        try:
            used = template_fields(self.user_prompt)
        except ValueError as e:
            problems.append(f"user_prompt is malformed ({e}); write literal braces as {{{{ }}}}")
        else:
            if used - PLACEHOLDERS:
                problems.append(f"user_prompt uses unknown field(s) {sorted(used - PLACEHOLDERS)}; "
                                f"known: {', '.join(sorted(PLACEHOLDERS))}")
            if "topic" not in used:
                problems.append("user_prompt never uses {topic}, so every topic would get the same prompt")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # ----------------------------------------------------------------- items
    def item_text(self, item: dict[str, Any]) -> str:
        """The text that decides duplicates: the strings of ``dedup_fields`` (all fields when none),
        nested lists and objects included, in order."""
        fields = self.dedup_fields or list(self.item_schema["properties"])
        return " ".join(s for f in fields for s in _strings(item.get(f)))

    def render(self, domain: str, topic: str, count: int, so_far: list[dict[str, Any]]) -> str:
        """The user prompt for ``count`` items of ``topic``, the topic's items so far listed."""
        if so_far:
            shown = [_clip(self.item_text(i)) for i in so_far[-SHOWN_ITEMS:]]
            more = f" (the last {SHOWN_ITEMS} of {len(so_far)})" if len(so_far) > SHOWN_ITEMS else ""
            examples = (f"Items already written on this topic{more}; write new ones, different from these:\n"
                        + "\n".join(f"- {s}" for s in shown))
        else:
            examples = ""
        text = self.user_prompt.format(domain=domain, topic=topic, count=count, examples_so_far=examples,
                                       example=json.dumps(self.example, ensure_ascii=False))
        if count == 1:
            reply = "Reply with one JSON object: the item, with the same fields as the example, and nothing else."
        else:
            reply = (f'Reply with one JSON object {{"items": [...]}} holding {count} items, each with the same '
                     "fields as the example, and nothing else.")
        return f"{_tidy(text)}\n\n{reply}"


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [] if value is None else [json.dumps(value)]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _tidy(text: str) -> str:
    """Collapse the blank lines an empty placeholder leaves."""
    lines, blank = [], False
    for line in text.strip().splitlines():
        if not line.strip():
            if not blank:
                lines.append("")
            blank = True
        else:
            lines.append(line.rstrip())
            blank = False
    return "\n".join(lines)


# ----------------------------------------------------------------------------- finding templates
def search_path(folder: Path | None = None, template_dir: str | None = None) -> list[Path]:
    """Where templates are looked up, first match wins: ``template_dir`` (relative to the filter
    folder), the filter folder, the built-in templates."""
    dirs = []
    if template_dir:
        d = Path(template_dir)
        dirs.append(d if d.is_absolute() or folder is None else folder / d)
    if folder is not None:
        dirs.append(folder)
    dirs.append(BUILTIN_DIR)
    return dirs


def read_template(path: Path) -> GenerationTemplate:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise FilterSpecError(f"{path}: cannot read the generation template: {e}") from None
    if not isinstance(raw, dict):
        raise FilterSpecError(f"{path}: a generation template is a mapping (name, description, schema, "
                              "system_prompt, user_prompt, example)")
    try:
        template = GenerationTemplate.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: invalid generation template:"]
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines += [f"  - {loc}: {m}" for m in err["msg"].removeprefix("Value error, ").splitlines()]
        raise FilterSpecError("\n".join(lines)) from None
    if template.name != path.stem:
        raise FilterSpecError(f"{path}: says name: {template.name}; a template's name is its file name "
                              f"(set name: {path.stem}, or rename the file)")
    return template.model_copy(update={"path": str(path)})


def find_template(name: str, dirs: list[Path]) -> GenerationTemplate:
    for d in dirs:
        path = d / f"{name}.yaml"
        if path.is_file():
            return read_template(path)
    names = sorted({n for n, _ in available(dirs)})
    raise FilterSpecError(f"generation template {name!r} not found in {', '.join(str(d) for d in dirs)}; "
                          f"choose one of {', '.join(names)}, or write {dirs[0] / (name + '.yaml')} "
                          "(see `distill templates show simple_qa` for the shape)")


def available(dirs: list[Path]) -> list[tuple[str, Path]]:
    """(name, path) of every template file in ``dirs``, the first of each name only."""
    found: dict[str, Path] = {}
    for d in dirs:
        for path in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            if path.name != "filter.yaml":
                found.setdefault(path.stem, path)
    return sorted(found.items())
