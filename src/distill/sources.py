"""Read a corpus (JSONL, CSV, JSON, Parquet, XML) into records, quarantining what is malformed.

A record is ``{"id", "title", "text", "metadata"}``. Source columns are mapped onto it with a field map
(``text: [body, lead, title]`` takes the first non-empty column). Rows that cannot become a record are
never dropped silently: each one becomes a quarantine entry with file, line (or item index), a stable
reason code and the offending raw text, and is counted. Problems with the file as a whole (missing,
empty, not parseable at all) raise :class:`InputError` naming the file and, where known, the line.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import PrefilterConfig
from distill.errors import InputError, queued_copy_hint

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json", ".parquet": "parquet", ".xml": "xml"}
_RAW_PREVIEW = 300
_TAG_RE = re.compile(r"<[^>]+>")
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


def _read_csv(path: Path) -> Iterator[Row]:
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file
    text = data.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
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


def _read_parquet(path: Path) -> Iterator[Row]:
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - polars raises several error types for corrupt files
        raise InputError(f"{path}: cannot read as Parquet: {e}") from None
    for i, obj in enumerate(frame.iter_rows(named=True)):
        yield Row(None, i, obj)


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


def iter_rows(path: Path, fmt: str, xml_row_tag: str = "row") -> Iterator[Row]:
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "csv":
        return _read_csv(path)
    if fmt == "json":
        return _read_json(path)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "xml":
        return _read_xml(path, xml_row_tag)
    raise InputError(f"unknown format {fmt!r}")


# ----------------------------------------------------------------------------- mapping
def clean_text(value: str, *, unescape_html: bool, strip_html: bool) -> str:
    if strip_html:
        value = _TAG_RE.sub(" ", value)
    if unescape_html or strip_html:
        value = html.unescape(value)
    value = value.replace("\r\n", "\n").replace("\u00a0", " ")
    value = _WS_RE.sub(" ", value)
    value = _NL_RE.sub("\n\n", value)
    return "\n".join(line.strip() for line in value.split("\n")).strip()


def _pick(data: dict[str, Any], columns: str | list[str]) -> Any:
    for col in [columns] if isinstance(columns, str) else columns:
        value = data.get(col)
        if value is not None and str(value).strip():
            return value
    return None


def read_corpus(cfg: PrefilterConfig, base_dir: str | Path = ".") -> CorpusResult:
    """Read ``cfg.input`` into records and quarantine entries (see module docstring)."""
    path = Path(base_dir) / cfg.input
    if not path.exists():
        hint = queued_copy_hint(f"{cfg.input} (or `dvc add` it, or set prefilter.input to an absolute path)")
        raise InputError(f"input file not found: {cfg.input} (set prefilter.input){hint}")
    if path.is_dir():
        raise InputError(f"{cfg.input} is a directory; prefilter.input must name one file")
    if path.stat().st_size == 0:
        raise InputError(f"{cfg.input}: file is empty, nothing to prefilter")
    fmt = detect_format(path, cfg.format)
    result = CorpusResult()
    seen_ids: dict[str, str] = {}  # id -> where it was first used ("line 3" or "item 2")
    display = str(cfg.input)

    def quarantine(row: Row, reason: str, detail: str) -> None:
        result.quarantine.append(
            {"file": display, "line": row.line, "item": row.item, "reason": reason, "detail": detail,
             "raw": row.raw or json.dumps(row.data, ensure_ascii=False, default=str)[:_RAW_PREVIEW]}
        )

    for row in iter_rows(path, fmt, cfg.xml_row_tag):
        if cfg.limit is not None and row.item >= cfg.limit:
            break
        result.rows_read += 1
        if row.error:
            quarantine(row, *row.error)
            continue
        data = row.data or {}
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
        rid = str(rid) if rid is not None else f"{path.stem}:{row.line if row.line is not None else row.item}"
        if rid in seen_ids:
            quarantine(row, "duplicate_id", f"id {rid!r} already used at {seen_ids[rid]}")
            continue
        seen_ids[rid] = f"line {row.line}" if row.line is not None else f"item {row.item}"
        metadata = {k: data.get(k) for k in cfg.metadata if data.get(k) is not None}
        result.records.append({"id": rid, "title": title, "text": text, "metadata": metadata})
    if result.rows_read == 0:
        raise InputError(f"{cfg.input}: no rows found (an empty {fmt} document), nothing to prefilter")
    return result
