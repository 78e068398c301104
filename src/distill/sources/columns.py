"""Settings that name columns, checked against the columns an input has.

A column that ``text`` names, or that ``title`` / ``id`` name other than their defaults, which no row
has, stops the stage naming it, the columns there are (with a "did you mean") and the setting to
change. The defaults ``title: title`` and ``id: id`` may be absent, and so may ``metadata`` columns:
those gaps are returned for one warning each. A column given by position (``text: 1``) is resolved
against the columns the source declares (a file without a header, a query's result).
"""

from __future__ import annotations

import difflib
import logging

from distill.config import PrefilterConfig
from distill.errors import InputError

log = logging.getLogger("distill")
_LISTED = 30  # columns named in a message at most
_ADVICE = {
    "text": "to the column (or list of columns) that holds the text",
    "title": "to one of them, or to [] for records without a title",
    "id": "to one of them, or to [] to number the records as <file stem>:<line>",
}

FieldMap = dict[str, list[str]]


def as_list(columns) -> list:
    return [columns] if isinstance(columns, (str, int)) else list(columns)


def listing(columns: list) -> str:
    if not columns:
        return "none"
    more = f" and {len(columns) - _LISTED} more" if len(columns) > _LISTED else ""
    return ", ".join(repr(c) for c in columns[:_LISTED]) + more


def did_you_mean(absent: list[str], columns: list[str]) -> str:
    hints = []
    for name in absent:
        close = [c for c in columns if c.lower() == name.lower()] or difflib.get_close_matches(name, columns, n=1)
        if close:
            hints.append(repr(close[0]) if len(absent) == 1 else f"{close[0]!r} for {name!r}")
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def resolve(cfg: PrefilterConfig, declared: list[str] | None, display: str,
            found_in: str) -> tuple[FieldMap, list[str]]:
    """The field map and metadata with every position replaced by its column name."""

    def name(col, setting: str) -> str:
        if not isinstance(col, int):
            return col
        if declared is None:
            raise InputError(f"{display}: {setting} names column {col} by position, but this format's rows have "
                             "named fields: name the column instead")
        if col >= len(declared):
            raise InputError(f"{display}: {setting} is column {col} (counting from 0), but rows have "
                             f"{len(declared)} column(s) ({found_in}: {listing(declared)}). Change {setting}")
        return declared[col]

    field_map = {key: [name(c, f"prefilter.field_map.{key}") for c in as_list(value)]
                 for key, value in cfg.field_map.items()}
    field_map.setdefault("title", ["title"])
    field_map.setdefault("id", ["id"])
    metadata = [name(c, "prefilter.metadata") for c in cfg.metadata]
    return field_map, metadata


def check_columns(cfg: PrefilterConfig, columns: list[str], display: str, found_in: str,
                  field_map: FieldMap | None = None, metadata: list[str] | None = None) -> dict[str, list[str]]:
    """Compare what ``cfg`` maps (resolved as ``field_map`` / ``metadata``) with the input's ``columns``.

    Raises :class:`InputError` for a missing ``text`` column, or ``title`` / ``id`` column other than the
    default; returns the gaps that are not errors as ``{setting: [missing columns]}``.
    """
    if field_map is None or metadata is None:
        field_map, metadata = resolve(cfg, columns, display, found_in)
    have = set(columns)
    missing: dict[str, list[str]] = {}
    for key in ("text", "title", "id"):
        value = field_map[key]
        absent = [c for c in value if c not in have]
        if not absent:
            continue
        if key != "text" and value == [key]:
            missing[key] = absent
            continue
        shown = cfg.field_map.get(key, key)
        raise InputError(
            f"{display}: prefilter.field_map.{key} is {shown!r}, but no row has a column {listing(absent)}"
            f"{did_you_mean(absent, columns)}. Columns in {found_in}: {listing(columns)}. "
            f"Set prefilter.field_map.{key} {_ADVICE[key]}."
        )
    absent_meta = [c for c in metadata if c not in have]
    if absent_meta:
        missing["metadata"] = absent_meta
    return missing


def warn(missing: dict[str, list[str]], columns: list[str], cfg: PrefilterConfig, display: str,
         synthesised: int, synthesised_example: str | None) -> None:
    """One warning per kind of gap between the settings and the input (see :func:`check_columns`)."""
    if "title" in missing:
        log.warning("%s: no row has a column 'title'%s, so records have no title; columns found: %s. Set "
                    "prefilter.field_map.title to the title column, or to [] to say there is none",
                    display, did_you_mean(["title"], columns), listing(columns))
    meta = missing.get("metadata")
    if meta:
        log.warning("%s: prefilter.metadata lists %s, but no row has such a column%s, so no record carries "
                    "it; columns found: %s", display, listing(meta), did_you_mean(meta, columns), listing(columns))
    if synthesised:
        mapped = as_list(cfg.field_map.get("id", "id"))
        if not mapped:
            why = "prefilter.field_map.id is []"
        elif "id" in missing:
            why = f"no row has a column 'id'{did_you_mean(['id'], columns)} (prefilter.field_map.id)"
        else:
            why = f"the column(s) {listing(mapped)} (prefilter.field_map.id) were empty or absent in those rows"
        log.warning("%s: %d record(s) had no id, so ids were made up as '<file stem>:<line>' (e.g. %r): %s. "
                    "Such ids change when rows are added or removed; map prefilter.field_map.id to a column "
                    "of unique ids to keep them stable", display, synthesised, synthesised_example, why)
