"""Read a corpus (JSONL, CSV, JSON, Parquet, XML) into records, quarantining what is malformed.

A record is ``{"id", "title", "text", "metadata"}``. Source columns are mapped onto it with a field map
(``text: [body, lead, title]`` takes the first non-empty column). Rows that cannot become a record are
never dropped silently: each one becomes a quarantine entry with file, line (or item index), a stable
reason code and the offending raw text, and is counted. Problems with the file as a whole (missing,
empty, not parseable at all) raise :class:`InputError` naming the file and, where known, the line.
Settings that name columns the input lacks are never ignored silently either (:func:`check_columns`).
``strip_html`` renders HTML with the stdlib parser; the measurements behind that choice are in the
comment at the top of the HTML section below.
"""

from __future__ import annotations

import csv
import difflib
import html
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import PrefilterConfig
from distill.errors import InputError, queued_copy_hint
from distill.htmltext import html_to_text

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json", ".parquet": "parquet", ".xml": "xml"}
_RAW_PREVIEW = 300
log = logging.getLogger("distill")
_WS_RE = re.compile(r"[ \t\r\f\v]+")
_NL_RE = re.compile(r"\n\s*\n+")


@dataclass
class Row:
    """One source row before mapping: where it came from and its columns (or why it is unreadable)."""

    line: int | None  # 1-based line in the file, when the format has lines
    item: int  # 0-based position among the file's rows
    data: dict[str, Any] | None
    raw: str = ""
    error: tuple[str, str] | None = None  # (reason code, detail)


@dataclass
class CorpusResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0
    #: the input's columns: its CSV header or Parquet schema, else the keys of the rows read
    columns: list[str] = field(default_factory=list)
    #: setting ("title", "id", "metadata") -> the columns it names that no row has (each logged once)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)
    #: records whose id was made up as <file stem>:<line> (logged once)
    synthesised_ids: int = 0

    @property
    def quarantine_counts(self) -> dict[str, int]:
        return dict(Counter(q["reason"] for q in self.quarantine))


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise InputError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; "
            f"set prefilter.format to one of {sorted(set(FORMATS.values()))}"
        ) from None


# ----------------------------------------------------------------------------- readers
def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _read_jsonl(path: Path) -> Iterator[Row]:
    item = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            text = _decode(raw)
            if text is None:
                err = _first_bad_byte(raw)
                yield Row(lineno, item, None, raw.decode("utf-8", "replace")[:_RAW_PREVIEW],
                          ("undecodable_bytes", f"not valid UTF-8 ({err})"))
            else:
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    yield Row(lineno, item, None, text[:_RAW_PREVIEW], ("bad_json", f"{e.msg} at column {e.colno}"))
                else:
                    if isinstance(obj, dict):
                        yield Row(lineno, item, obj, "")
                    else:
                        yield Row(lineno, item, None, text[:_RAW_PREVIEW],
                                  ("not_an_object", f"expected a JSON object, got {type(obj).__name__}"))
            item += 1


def _first_bad_byte(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"byte 0x{raw[e.start]:02x} at column {e.start + 1}; is the file Latin-1?"
    return "unknown"


def _read_csv(path: Path) -> tuple[list[str], Iterator[Row]]:
    """The header, and the rows after it."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file
    text = data.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    return header, _csv_rows(reader, header)


def _csv_rows(reader, header: list[str]) -> Iterator[Row]:
    if not header:
        return
    item = 0
    line = reader.line_num + 1
    for values in reader:
        start, line = line, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        raw = ",".join(values)
        if any(_has_surrogates(v) for v in values):
            preview = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:_RAW_PREVIEW]
            yield Row(start, item, None, preview, ("undecodable_bytes", "not valid UTF-8; is the file Latin-1?"))
        elif len(values) != len(header):
            yield Row(start, item, None, raw[:_RAW_PREVIEW],
                      ("wrong_field_count", f"{len(values)} fields, header has {len(header)}"))
        else:
            yield Row(start, item, dict(zip(header, values)))
        item += 1


def _has_surrogates(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _read_json(path: Path) -> Iterator[Row]:
    text = _decode(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    if text is None:
        raise InputError(f"{path}: not valid UTF-8 ({_first_bad_byte(path.read_bytes())})")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(doc, list):
        raise InputError(f"{path}: expected a JSON array of objects at the top level, got {type(doc).__name__}")
    for i, obj in enumerate(doc):
        if isinstance(obj, dict):
            yield Row(None, i, obj)
        else:
            yield Row(None, i, None, json.dumps(obj)[:_RAW_PREVIEW],
                      ("not_an_object", f"expected a JSON object, got {type(obj).__name__}"))


def _read_parquet(path: Path) -> tuple[list[str], Iterator[Row]]:
    """The schema's column names, and the rows."""
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - polars raises several error types for corrupt files
        raise InputError(f"{path}: cannot read as Parquet: {e}") from None
    return frame.columns, (Row(None, i, obj) for i, obj in enumerate(frame.iter_rows(named=True)))


def _read_xml(path: Path, row_tag: str) -> Iterator[Row]:
    """Rows are ``<row_tag>`` elements; their attributes and simple child elements become columns."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    rows: list[Row] = []
    stack: list[tuple[str, dict[str, Any], int]] = []
    text_parts: list[str] = []

    def start(name, attrs):
        nonlocal text_parts
        if name == row_tag:
            stack.append((name, dict(attrs), parser.CurrentLineNumber))
        elif stack:
            text_parts = []

    def chars(data):
        text_parts.append(data)

    def end(name):
        if not stack:
            return
        if name == row_tag:
            _, data, line = stack.pop()
            rows.append(Row(line, len(rows), data))
        else:
            stack[-1][1].setdefault(name, "".join(text_parts).strip())

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        with open(path, "rb") as fh:
            parser.ParseFile(fh)
    except expat.ExpatError as e:
        raise InputError(
            f"{path}: line {e.lineno}, column {e.offset + 1}: malformed XML: {expat.ErrorString(e.code)}"
        ) from None
    yield from rows


def open_rows(path: Path, fmt: str, xml_row_tag: str = "row") -> tuple[list[str] | None, Iterator[Row]]:
    """The file's declared columns (CSV header, Parquet schema; None where rows bring their own keys)
    and its rows."""
    if fmt == "jsonl":
        return None, _read_jsonl(path)
    if fmt == "csv":
        return _read_csv(path)
    if fmt == "json":
        return None, _read_json(path)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "xml":
        return None, _read_xml(path, xml_row_tag)
    raise InputError(f"unknown format {fmt!r}")


def iter_rows(path: Path, fmt: str, xml_row_tag: str = "row") -> Iterator[Row]:
    return open_rows(path, fmt, xml_row_tag)[1]


# ----------------------------------------------------------------------------- mapping
def clean_text(value: str, *, unescape_html: bool, strip_html: bool) -> str:
    if strip_html:
        value = html_to_text(value)
    elif unescape_html:
        value = html.unescape(value)
    value = value.replace("\r\n", "\n").replace("\u00a0", " ")
    value = _WS_RE.sub(" ", value)
    value = _NL_RE.sub("\n\n", value)
    return "\n".join(line.strip() for line in value.split("\n")).strip()


#: record fields a field map may fill besides id, title and text (absent from a record without them)
OPTIONAL_FIELDS = ("gold", "answer_schema")


def _pick(data: dict[str, Any], columns: str | list[str]) -> Any:
    for col in [columns] if isinstance(columns, str) else columns:
        value = data.get(col)
        if value is not None and str(value).strip():
            return value
    return None


# ----------------------------------------------------------------------------- columns
_FOUND_IN = {"csv": "the CSV header", "parquet": "the Parquet schema"}
_LISTED = 30  # columns named in a message at most
_ADVICE = {
    "text": "to the column (or list of columns) that holds the text",
    "title": "to one of them, or to [] for records without a title",
    "id": "to one of them, or to [] to number the records as <file stem>:<line>",
}


def _as_list(columns: str | list[str]) -> list[str]:
    return [columns] if isinstance(columns, str) else list(columns)


def _listing(columns: list[str]) -> str:
    if not columns:
        return "none"
    more = f" and {len(columns) - _LISTED} more" if len(columns) > _LISTED else ""
    return ", ".join(repr(c) for c in columns[:_LISTED]) + more


def _did_you_mean(absent: list[str], columns: list[str]) -> str:
    hints = []
    for name in absent:
        close = [c for c in columns if c.lower() == name.lower()] or difflib.get_close_matches(name, columns, n=1)
        if close:
            hints.append(repr(close[0]) if len(absent) == 1 else f"{close[0]!r} for {name!r}")
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def check_columns(cfg: PrefilterConfig, columns: list[str], display: str, found_in: str) -> dict[str, list[str]]:
    """Compare what ``cfg`` maps with the input's ``columns``.

    A column named for ``text``, or for ``title`` / ``id`` other than their defaults, that the input
    lacks raises :class:`InputError` naming it and the columns there are. The defaults ``title: title``
    and ``id: id`` may be absent (no title, made-up ids), and so may ``metadata`` columns: those are
    returned as ``{setting: [missing columns]}`` for the caller to warn about.
    """
    have = set(columns)
    missing: dict[str, list[str]] = {}
    for key in ("text", "title", "id"):
        value = cfg.field_map.get(key, key)
        absent = [c for c in _as_list(value) if c not in have]
        if not absent:
            continue
        if key != "text" and _as_list(value) == [key]:
            missing[key] = absent
            continue
        raise InputError(
            f"{display}: prefilter.field_map.{key} is {value!r}, but no row has a column {_listing(absent)}"
            f"{_did_you_mean(absent, columns)}. Columns in {found_in}: {_listing(columns)}. "
            f"Set prefilter.field_map.{key} {_ADVICE[key]}."
        )
    absent_meta = [c for c in cfg.metadata if c not in have]
    if absent_meta:
        missing["metadata"] = absent_meta
    return missing


def _warn(result: CorpusResult, cfg: PrefilterConfig, display: str, synthesised_example: str | None) -> None:
    """One warning per kind of gap between the settings and the input (see :func:`check_columns`)."""
    cols = result.columns
    if "title" in result.missing_columns:
        log.warning("%s: no row has a column 'title'%s, so records have no title; columns found: %s. Set "
                    "prefilter.field_map.title to the title column, or to [] to say there is none",
                    display, _did_you_mean(["title"], cols), _listing(cols))
    meta = result.missing_columns.get("metadata")
    if meta:
        log.warning("%s: prefilter.metadata lists %s, but no row has such a column%s, so no record carries "
                    "it; columns found: %s", display, _listing(meta), _did_you_mean(meta, cols), _listing(cols))
    if result.synthesised_ids:
        mapped = _as_list(cfg.field_map.get("id", "id"))
        if not mapped:
            why = "prefilter.field_map.id is []"
        elif "id" in result.missing_columns:
            why = f"no row has a column 'id'{_did_you_mean(['id'], cols)} (prefilter.field_map.id)"
        else:
            why = f"the column(s) {_listing(mapped)} (prefilter.field_map.id) were empty or absent in those rows"
        log.warning("%s: %d record(s) had no id, so ids were made up as '<file stem>:<line>' (e.g. %r): %s. "
                    "Such ids change when rows are added or removed; map prefilter.field_map.id to a column "
                    "of unique ids to keep them stable", display, result.synthesised_ids, synthesised_example, why)


# ----------------------------------------------------------------------------- reading
def _input_path(cfg: PrefilterConfig, base_dir: str | Path) -> Path:
    path = Path(base_dir) / cfg.input
    if not path.exists():
        hint = queued_copy_hint(f"{cfg.input} (or `dvc add` it, or set prefilter.input to an absolute path)")
        raise InputError(f"input file not found: {cfg.input} (set prefilter.input){hint}")
    if path.is_dir():
        raise InputError(f"{cfg.input} is a directory; prefilter.input must name one file")
    if path.stat().st_size == 0:
        raise InputError(f"{cfg.input}: file is empty, nothing to prefilter")
    return path


def read_corpus(cfg: PrefilterConfig, base_dir: str | Path = ".") -> CorpusResult:
    """Read ``cfg.input`` into records and quarantine entries (see module docstring).

    Where the format declares its columns (CSV header, Parquet schema) they are checked against the
    settings before any row is read; otherwise against the union of the keys of the rows read, once
    they are read (:func:`check_columns`). Gaps that are not errors are logged once each and kept in
    ``missing_columns``; made-up ids are logged once and counted in ``synthesised_ids``.
    """
    path = _input_path(cfg, base_dir)
    fmt = detect_format(path, cfg.format)
    result = CorpusResult()
    seen_ids: dict[str, str] = {}  # id -> where it was first used ("line 3" or "item 2")
    display = str(cfg.input)
    synthesised_example = None

    def quarantine(row: Row, reason: str, detail: str) -> None:
        result.quarantine.append(
            {"file": display, "line": row.line, "item": row.item, "reason": reason, "detail": detail,
             "raw": row.raw or json.dumps(row.data, ensure_ascii=False, default=str)[:_RAW_PREVIEW]}
        )

    declared, rows = open_rows(path, fmt, cfg.xml_row_tag)
    seen: dict[str, None] = dict.fromkeys(declared or [])  # the input's columns, in first-seen order
    if declared:
        result.missing_columns = check_columns(cfg, declared, display, _FOUND_IN.get(fmt, "the header"))
    for row in rows:
        if cfg.limit is not None and row.item >= cfg.limit:
            break
        result.rows_read += 1
        if row.error:
            quarantine(row, *row.error)
            continue
        data = row.data or {}
        if not declared:
            seen.update(dict.fromkeys(data))
        text = _pick(data, cfg.field_map["text"])
        if text is None:
            quarantine(row, "missing_text", f"no non-empty value in {cfg.field_map['text']!r}")
            continue
        text = clean_text(str(text), unescape_html=cfg.unescape_html, strip_html=cfg.strip_html)
        if not text:
            quarantine(row, "missing_text", "text is empty after cleaning")
            continue
        title = _pick(data, cfg.field_map.get("title", "title"))
        title = clean_text(str(title), unescape_html=cfg.unescape_html, strip_html=cfg.strip_html) if title else ""
        rid = _pick(data, cfg.field_map.get("id", "id"))
        made_up = rid is None
        rid = str(rid) if not made_up else f"{path.stem}:{row.line if row.line is not None else row.item}"
        if rid in seen_ids:
            quarantine(row, "duplicate_id", f"id {rid!r} already used at {seen_ids[rid]}")
            continue
        seen_ids[rid] = f"line {row.line}" if row.line is not None else f"item {row.item}"
        if made_up:
            result.synthesised_ids += 1
            synthesised_example = synthesised_example or rid
        metadata = {k: data.get(k) for k in cfg.metadata if data.get(k) is not None}
        record = {"id": rid, "title": title, "text": text, "metadata": metadata}
        for key in OPTIONAL_FIELDS:  # what the task may use: a golden answer, a record's own answer schema
            if key in cfg.field_map and (value := _pick(data, cfg.field_map[key])) is not None:
                record[key] = value
        result.records.append(record)
    result.columns = list(seen)
    if not declared and seen:  # rows brought their own keys: decide now that all are read
        result.missing_columns = check_columns(cfg, result.columns, display,
                                               f"the {result.rows_read} row(s) read")
    if result.rows_read == 0:
        raise InputError(f"{cfg.input}: no rows found (an empty {fmt} document), nothing to prefilter")
    _warn(result, cfg, display, synthesised_example)
    return result
