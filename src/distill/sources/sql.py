"""Database sources: SQLite files and PostgreSQL, streamed in batches, never loaded whole.

PostgreSQL rows come through a server-side cursor (``DECLARE ... CURSOR``), ``source.fetch_rows`` per
round trip; SQLite rows through ``fetchmany``. Text is checked for UTF-8 value by value: a SQL_ASCII
database returns raw bytes, and a row with bytes that are not UTF-8 is quarantined as
``undecodable_bytes`` (row number instead of line), like a Latin-1 line in a file. A query naming a
column or table that does not exist, or a connection lost half way, is an :class:`InputError` naming
it. Credentials never come from params: the password is read by libpq from PGPASSWORD (``.env`` is
loaded into the environment by the stage) or ``~/.pgpass``, or the whole DSN from the environment
variable that ``prefilter.source.dsn_env`` names; messages show the DSN without its password.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from distill.config import PrefilterConfig, is_database_url
from distill.errors import ConfigError, InputError
from distill.sources.rows import Row, Source, preview

APPLICATION_NAME = "distill"


def redact(dsn: str) -> str:
    """``dsn`` without its password (URL or key=value form)."""
    if "://" in dsn:
        p = urlsplit(dsn)
        netloc = p.netloc.rsplit("@", 1)
        if len(netloc) == 2:
            user = netloc[0].split(":", 1)[0]
            netloc = [f"{user}@{netloc[1]}"]
        query = urlencode([(k, v) for k, v in parse_qsl(p.query) if k.lower() != "password"])
        return urlunsplit((p.scheme, netloc[0], p.path, query, p.fragment))
    return re.sub(r"(?i)(^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", r"\1password=***", dsn)


def _scrub(message: str, secrets: list[str]) -> str:
    for s in secrets:
        if s:
            message = message.replace(s, "***")
    return message


def resolve_dsn(cfg: PrefilterConfig) -> tuple[str, str, list[str]]:
    """The DSN to connect with, how messages name it (no password), and strings to keep out of messages."""
    if isinstance(cfg.input, str) and is_database_url(cfg.input):
        return cfg.input.strip(), redact(cfg.input.strip()), []
    src = cfg.source
    if src.dsn_env:
        dsn = os.environ.get(src.dsn_env, "").strip()
        if not dsn:
            raise ConfigError(f"prefilter.source.dsn_env names {src.dsn_env}, which is not set: export it or add "
                              f"{src.dsn_env}=postgresql://user:password@host:5432/db to .env")
        password = urlsplit(dsn).password if "://" in dsn else None
        return dsn, f"${src.dsn_env} ({redact(dsn)})", [password or ""]
    if src.dsn:
        return src.dsn.strip(), redact(src.dsn.strip()), []
    raise ConfigError("no database to read: set prefilter.input to a database URL, or prefilter.source.dsn "
                      "or prefilter.source.dsn_env")


def quote_ident(name: str) -> str:
    """``schema.table`` with each part double-quoted."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _query(cfg: PrefilterConfig) -> str | None:
    if cfg.source.query:
        return cfg.source.query
    if cfg.source.table:
        return f"SELECT * FROM {quote_ident(cfg.source.table)}"
    return None


def _stem(cfg: PrefilterConfig) -> str:
    return cfg.source.table or "query"


def decode_row(columns: list[str], values: tuple, item: int) -> Row:
    """A database row as a Row: text bytes decoded as UTF-8; a value that is not UTF-8 makes the row
    ``undecodable_bytes`` (its bytes kept, surrogate-escaped, for the snapshot)."""
    data: dict[str, Any] = {}
    bad = None
    for col, value in zip(columns, values):
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                value = raw.decode("utf-8", "surrogateescape")
                bad = bad or (f"column {col!r} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at character "
                              f"{e.start + 1}); is the database SQL_ASCII holding Latin-1 text?")
        data[col] = value
    if bad:
        return Row(None, item, data, preview(data), ("undecodable_bytes", bad))
    return Row(None, item, data)


# ----------------------------------------------------------------------------- SQLite
def sqlite_path(cfg: PrefilterConfig, entry: str, base_dir: Path) -> Path:
    if entry.lower().startswith("sqlite:"):
        rest = entry[len("sqlite:"):]
        if not rest.startswith("///"):
            raise ConfigError(f"prefilter.input {entry!r}: write a SQLite URL as sqlite:///relative/path.db or "
                              "sqlite:////absolute/path.db")
        entry = rest[3:]
    return base_dir / entry


def sqlite_source(cfg: PrefilterConfig, path: Path, display: str) -> Source:
    def open_() -> tuple[list[str], Iterator[Row]]:
        try:
            conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
            conn.text_factory = bytes
            query = _query(cfg) or _only_table(conn, display)
            cur = conn.execute(query)
        except sqlite3.Error as e:
            raise InputError(_query_error(display, str(e), cfg, "SQLite")) from None
        columns = [d[0] for d in cur.description]
        return columns, _sqlite_rows(conn, cur, columns, cfg.source.fetch_rows, display)

    return Source(display, _stem(cfg), "sqlite", open_, "row", "the query's result", snapshot=True)


def _only_table(conn: sqlite3.Connection, display: str) -> str:
    tables = [r[0].decode() if isinstance(r[0], bytes) else r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    if len(tables) == 1:
        return f"SELECT * FROM {quote_ident(tables[0])}"
    listed = ", ".join(repr(t) for t in tables) or "none"
    raise InputError(f"{display}: which rows? The database has tables {listed}: set prefilter.source.table, or "
                     "prefilter.source.query to the SQL that returns the rows")


def _sqlite_rows(conn, cur, columns, fetch: int, display: str) -> Iterator[Row]:
    item = 0
    try:
        while True:
            try:
                batch = cur.fetchmany(fetch)
            except sqlite3.Error as e:
                raise InputError(f"{display}: reading failed after {item} row(s): {e}") from None
            if not batch:
                return
            for values in batch:
                yield decode_row(columns, values, item)
                item += 1
    finally:
        conn.close()


# ----------------------------------------------------------------------------- PostgreSQL
def postgres_source(cfg: PrefilterConfig) -> Source:
    dsn, display, secrets = resolve_dsn(cfg)
    query = _query(cfg)
    if query is None:
        raise ConfigError(f"{display}: which rows? Set prefilter.source.query to the SQL that returns them (with an "
                          "ORDER BY, so that the snapshot's hash changes only when the rows do), or "
                          "prefilter.source.table")

    def open_() -> tuple[list[str], Iterator[Row]]:
        import psycopg

        try:
            conn = psycopg.connect(dsn, application_name=APPLICATION_NAME, connect_timeout=30)
        except psycopg.Error as e:
            raise InputError(f"{display}: cannot connect: {_scrub(str(e).strip(), secrets)}. Check host, port, "
                             "database and user, and the password: PGPASSWORD in the environment or .env, "
                             "~/.pgpass, or the whole DSN in the variable named by prefilter.source.dsn_env") from None
        cur = conn.cursor(name="distill_source")  # server-side: rows arrive fetch_rows at a time
        try:
            cur.execute(query)
            columns = [d.name for d in cur.description]
        except psycopg.Error as e:
            conn.close()
            raise InputError(_query_error(display, _pg_message(e, secrets), cfg, "PostgreSQL")) from None
        return columns, _pg_rows(conn, cur, columns, cfg.source.fetch_rows, display, secrets)

    return Source(display, _stem(cfg), "postgresql", open_, "row", "the query's result", snapshot=True)


def _pg_message(e, secrets: list[str]) -> str:
    diag = getattr(e, "diag", None)
    text = (diag.message_primary if diag and diag.message_primary else str(e)).strip()
    if diag and diag.message_hint:
        text += f" (hint: {diag.message_hint})"
    return _scrub(text, secrets)


def _pg_rows(conn, cur, columns, fetch: int, display: str, secrets: list[str]) -> Iterator[Row]:
    import psycopg

    item = 0
    try:
        while True:
            try:
                batch = cur.fetchmany(fetch)
            except psycopg.Error as e:
                raise InputError(
                    f"{display}: the database connection failed after {item} row(s): {_pg_message(e, secrets)}. "
                    "Nothing was passed on: prefilter writes passed.jsonl only once every row is read. Rerun when "
                    "the database is reachable") from None
            if not batch:
                return
            for values in batch:
                yield decode_row(columns, values, item)
                item += 1
    finally:
        with contextlib.suppress(Exception):  # closing a broken connection must not hide the error
            conn.close()


def _query_error(display: str, message: str, cfg: PrefilterConfig, engine: str) -> str:
    """A failed query: the database's words (naming the column or table), and the setting to change."""
    setting = "prefilter.source.query" if cfg.source.query else "prefilter.source.table"
    shown = cfg.source.query or cfg.source.table
    column = re.search(r'column "?([^"\s]+)"? does not exist|no such column: (\S+)', message)
    lead = f"the query names a column the database lacks ({column.group(1) or column.group(2)}): " if column else ""
    what = f" {setting} is {shown!r}." if shown else ""
    return f"{display}: {lead}{engine} says: {message}.{what} Fix it and rerun"
