"""What every reader yields: :class:`Row` (one source row, or why it is unreadable) and :class:`Source`
(one file, or one database query, opened lazily)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

RAW_PREVIEW = 300


@dataclass
class Row:
    """One source row before mapping: where it came from and its columns (or why it is unreadable)."""

    line: int | None  # 1-based line in the file, when the format has lines
    item: int  # 0-based position among the source's rows
    data: dict[str, Any] | None
    raw: str = ""
    error: tuple[str, str] | None = None  # (reason code, detail)


@dataclass
class Source:
    """One input the corpus is read from: a file, one text file of a folder, or a database query.

    ``open()`` returns the columns the source declares before any row is read (CSV header, Parquet
    schema, a query's result; None where rows bring their own keys) and the rows.
    """

    display: str  # how messages and quarantine entries name it (a path, or a DSN without password)
    stem: str  # made-up ids are <stem>:<line or row>
    fmt: str
    open: Callable[[], tuple[list[str] | None, Iterator[Row]]]
    #: where a row is, in messages: "line" (JSONL, CSV, XML), "item" (JSON array, Parquet, text) or "row"
    #: (a database query's result, 1-based)
    unit: str = "line"
    found_in: str = "the header"
    #: the raw rows are copied into the source snapshot (databases)
    snapshot: bool = False

    def where(self, row: Row) -> int:
        """The number messages give for ``row``: its line, its item, or its 1-based row."""
        if self.unit == "row":
            return row.item + 1
        return row.line if row.line is not None else row.item


def first_bad_byte(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"byte 0x{raw[e.start]:02x} at column {e.start + 1}; is the file Latin-1?"
    return "unknown"


def has_surrogates(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: dates as ISO text, decimals and UUIDs as text, bytes decoded."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def preview(data: dict[str, Any]) -> str:
    """The first characters of a row as JSON, undecodable bytes shown as U+FFFD."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    if has_surrogates(text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text[:RAW_PREVIEW]
