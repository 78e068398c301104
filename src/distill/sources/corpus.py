"""Rows into records, batch by batch: field map, text cleaning, quarantine, duplicate ids.

:class:`CorpusStream` reads the sources one after another and yields lists of at most
``prefilter.batch_rows`` records; quarantine entries go to a callback in row order as each batch is
decided, so nothing but the current batch and the set of ids seen (:mod:`distill.sources.idset`, 24
bytes per record) is held in memory. :func:`read_corpus` collects a whole corpus (tests, benchmarks,
small inputs).
"""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import PrefilterConfig
from distill.errors import InputError
from distill.htmltext import html_to_text
from distill.sources.columns import FieldMap, check_columns, resolve, warn
from distill.sources.files import detect_format, expand, file_source, stem
from distill.sources.idset import IdSet
from distill.sources.rows import Row, Source, jsonable, preview
from distill.sources.sql import postgres_source, resolve_dsn, sqlite_path, sqlite_source

log = logging.getLogger("distill")
# a run of horizontal whitespace becomes one space; matching only the runs that change (two or more
# characters, or one that is not a space) gives the same text with far fewer replacements
_WS_RE = re.compile(r"[ \t\r\f\v]{2,}|[\t\r\f\v]")
_NL_RE = re.compile(r"\n\s*\n+")
_LOC_BITS = 40  # a location is (source index << 40) | line, item or row


def clean_text(value: str, *, unescape_html: bool, strip_html: bool) -> str:
    if strip_html:
        value = html_to_text(value)
    elif unescape_html:
        value = html.unescape(value)
    value = value.replace("\r\n", "\n").replace("\u00a0", " ")
    value = _WS_RE.sub(" ", value)
    if "\n" not in value:
        return value.strip()
    value = _NL_RE.sub("\n\n", value)
    return "\n".join(line.strip() for line in value.split("\n")).strip()


#: record fields a field map may fill besides id, title and text (absent from a record without them)
OPTIONAL_FIELDS = ("gold", "answer_schema")


def answer_schema(value: Any) -> tuple[Any, str | None]:
    """A record's ``answer_schema`` as a JSON schema object (parsed when it is JSON text) and what is
    wrong with it (None: nothing): it must be a JSON schema of a JSON object."""
    if isinstance(value, str):
        return _answer_schema_text(value)
    from distill.validate import schema_problem

    return value, schema_problem(value, object_root=True)


@lru_cache(maxsize=1024)
def _answer_schema_text(text: str) -> tuple[Any, str | None]:
    import json

    from distill.validate import schema_problem

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return text, f"not JSON ({e.msg} at column {e.colno})"
    return value, schema_problem(value, object_root=True)


def _pick(data: dict[str, Any], columns: list[str]) -> Any:
    for col in columns:
        value = data.get(col)
        if value is not None and str(value).strip():
            return value
    return None


# ----------------------------------------------------------------------------- sources
def open_sources(cfg: PrefilterConfig, base_dir: Path) -> tuple[list[Source], str]:
    """The sources ``cfg`` names, and how messages name the input as a whole."""
    entries = cfg.inputs
    if cfg.reads_database:
        dsn = resolve_dsn(cfg)[0]
        if dsn.lower().startswith("sqlite:"):
            path = sqlite_path(cfg, dsn, base_dir)
            if not path.is_file():
                raise InputError(f"SQLite database not found: {path} (set prefilter.input)")
            return [sqlite_source(cfg, path, dsn)], dsn
        source = postgres_source(cfg)
        return [source], source.display
    files = expand(entries, base_dir)
    single = len(entries) == 1 and len(files) == 1 and not files[0][2]
    sources = []
    for path, display, rel_id, globbed in files:
        if path.stat().st_size == 0 and rel_id is None:  # an empty text file is a record without text
            if single:
                raise InputError(f"{display}: file is empty, nothing to prefilter")
            log.warning("%s: file is empty, skipped", display)
            continue
        fmt = "text" if rel_id is not None else detect_format(path, cfg.format, globbed)
        stem_ = stem(path) if single else display.rsplit(".", 2 if path.suffix.lower() in (".gz", ".zst") else 1)[0]
        if fmt == "sqlite":
            sources.append(sqlite_source(cfg, path, display))
        else:
            sources.append(file_source(path, display, fmt, cfg, stem_, rel_id))
    if not sources:
        raise InputError(f"{', '.join(entries)}: every file is empty, nothing to prefilter")
    return sources, entries[0] if len(entries) == 1 else ", ".join(entries)


# ----------------------------------------------------------------------------- the stream
@dataclass
class _Pending:
    """The batch being built: records, their ids and locations, and its quarantine entries."""

    records: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    locs: list[int] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    made_up: list[bool] = field(default_factory=list)
    rows: list[tuple[Source, Row]] = field(default_factory=list)  # for a duplicate found at the flush
    first: dict[str, int] = field(default_factory=dict)  # id -> location, within this batch
    quarantine: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    dups: list[tuple[int, dict[str, Any], str, int]] = field(default_factory=list)  # seq, entry, id, source


class CorpusStream:
    """Records from ``cfg``'s input in batches (see module docstring).

    After :meth:`batches` is exhausted: ``rows_read``, ``records``, ``quarantine_counts``,
    ``first_detail`` (per reason), ``columns``, ``missing_columns`` and ``synthesised_ids`` describe the
    whole input. ``on_quarantine(entry)`` receives each quarantine entry; ``on_source_row(data)`` each
    row of a database source as read (the source snapshot).
    """

    def __init__(self, cfg: PrefilterConfig, base_dir: str | Path = ".",
                 on_quarantine: Callable[[dict[str, Any]], None] | None = None,
                 on_source_row: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.sources, self.display = open_sources(cfg, Path(base_dir))
        self.on_quarantine = on_quarantine
        self.on_source_row = on_source_row
        self.rows_read = 0
        self.records = 0
        self.quarantine_counts: Counter[str] = Counter()
        self.first_detail: dict[str, str] = {}
        self.columns: list[str] = []
        self.missing_columns: dict[str, list[str]] = {}
        self.synthesised_ids = 0
        self._synth_example: str | None = None
        self._ids = IdSet()

    @property
    def snapshots(self) -> bool:
        """True when the input is a database, whose rows are copied into the source snapshot."""
        return any(s.snapshot for s in self.sources)

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        cfg = self.cfg
        seen: dict[str, None] = {}  # the input's columns, in first-seen order
        undeclared = False
        fmap: FieldMap = {}
        meta: list[str] = []
        pending = _Pending()
        seq = 0
        for index, src in enumerate(self.sources):
            declared, rows = src.open()
            try:
                fmap, meta = resolve(cfg, declared, src.display, src.found_in)
                if declared is not None:
                    seen.update(dict.fromkeys(declared))
                    check_columns(cfg, declared, src.display, src.found_in, fmap, meta)
                else:
                    undeclared = True
                for row in rows:
                    if cfg.limit is not None and self.rows_read >= cfg.limit:
                        break
                    self.rows_read += 1
                    seq += 1
                    if src.snapshot and self.on_source_row is not None:
                        self.on_source_row(row.data or {})
                    self._row(src, index, row, seq, declared is None, seen, fmap, meta, pending)
                    if len(pending.records) >= cfg.batch_rows:
                        yield self._flush(pending)
                        pending = _Pending()
            finally:
                close = getattr(rows, "close", None)
                if close:
                    close()
            if cfg.limit is not None and self.rows_read >= cfg.limit:
                break
        last = self._flush(pending)
        if last:
            yield last
        self.columns = list(seen)
        if seen:  # rows brought their own keys, or files declared theirs: the gaps that are warnings
            found_in = f"the {self.rows_read} row(s) read" if undeclared else self.sources[0].found_in
            self.missing_columns = check_columns(cfg, self.columns, self.display, found_in, fmap, meta)
        if self.rows_read == 0:
            what = (f"an empty {self.sources[0].fmt} document" if len(self.sources) == 1
                    else f"in {len(self.sources)} files")
            raise InputError(f"{self.display}: no rows found ({what}), nothing to prefilter")
        warn(self.missing_columns, self.columns, cfg, self.display, self.synthesised_ids, self._synth_example)

    # ------------------------------------------------------------------------- one row
    def _row(self, src: Source, index: int, row: Row, seq: int, undeclared: bool, seen: dict[str, None],
             fmap: FieldMap, meta: list[str], p: _Pending) -> None:
        cfg = self.cfg
        if row.error:
            p.quarantine.append((seq, self._entry(src, row, *row.error)))
            return
        data = row.data or {}
        if undeclared:
            seen.update(dict.fromkeys(data))
        text = _pick(data, fmap["text"])
        if text is None:
            p.quarantine.append((seq, self._entry(src, row, "missing_text",
                                                  f"no non-empty value in {cfg.field_map['text']!r}")))
            return
        text = clean_text(str(text), unescape_html=cfg.unescape_html, strip_html=cfg.strip_html)
        if not text:
            p.quarantine.append((seq, self._entry(src, row, "missing_text", "text is empty after cleaning")))
            return
        title = _pick(data, fmap["title"])
        title = clean_text(str(title), unescape_html=cfg.unescape_html, strip_html=cfg.strip_html) if title else ""
        extras = {}
        for key in OPTIONAL_FIELDS:  # what the task may use: a golden answer, a record's own answer schema
            if key in fmap and (value := _pick(data, fmap[key])) is not None:
                extras[key] = jsonable(value)
        if isinstance(extras.get("gold"), str) and (cfg.strip_html or cfg.unescape_html):
            extras["gold"] = clean_text(extras["gold"], unescape_html=cfg.unescape_html, strip_html=cfg.strip_html)
        if "answer_schema" in extras:
            extras["answer_schema"], problem = answer_schema(extras["answer_schema"])
            if problem:
                p.quarantine.append((seq, self._entry(src, row, "bad_answer_schema",
                                                      f"{cfg.field_map['answer_schema']!r}: {problem}")))
                return
        rid = _pick(data, fmap["id"])
        made_up = rid is None
        where = src.where(row)
        rid = str(rid) if not made_up else f"{src.stem}:{where}"
        loc = (index << _LOC_BITS) | where
        if rid in p.first:
            p.dups.append((seq, self._entry(src, row, "duplicate_id", ""), rid, index))
            return
        p.first[rid] = loc
        metadata = {k: jsonable(data[k]) for k in meta if data.get(k) is not None}
        record = {"id": rid, "title": title, "text": text, "metadata": metadata, **extras}
        p.records.append(record)
        p.ids.append(rid)
        p.locs.append(loc)
        p.seqs.append(seq)
        p.made_up.append(made_up)
        p.rows.append((src, row))

    def _entry(self, src: Source, row: Row, reason: str, detail: str) -> dict[str, Any]:
        entry = {"file": src.display, "line": row.line, "item": row.item, "reason": reason, "detail": detail,
                 "raw": row.raw or (preview(row.data) if row.data is not None else "")}
        if src.unit == "row":
            entry["row"] = row.item + 1
        return entry

    def _where(self, loc: int, index: int) -> str:
        src = self.sources[loc >> _LOC_BITS]
        n = loc & ((1 << _LOC_BITS) - 1)
        return f"{src.unit} {n}" if loc >> _LOC_BITS == index else f"{src.display} {src.unit} {n}"

    # ------------------------------------------------------------------------- one batch
    def _flush(self, p: _Pending) -> list[dict[str, Any]]:
        """Check the batch's ids against every earlier batch, emit its quarantine in row order, and
        return its records."""
        found, (hi, lo) = self._ids.lookup(p.ids) if p.ids else ({}, (None, None))
        earlier: dict[str, int] = {}
        for i, loc in found.items():
            rid = p.ids[i]
            earlier[rid] = loc
            src, row = p.rows[i]
            detail = f"id {rid!r} already used at {self._where(loc, p.locs[i] >> _LOC_BITS)}"
            p.quarantine.append((p.seqs[i], self._entry(src, row, "duplicate_id", detail)))
        for seq, entry, rid, index in p.dups:
            loc = earlier.get(rid, p.first[rid])
            entry["detail"] = f"id {rid!r} already used at {self._where(loc, index)}"
            p.quarantine.append((seq, entry))
        if p.ids:
            keep = np.ones(len(p.ids), dtype=bool)
            keep[list(found)] = False
            self._ids.add(hi[keep], lo[keep], np.asarray(p.locs, dtype=np.int64)[keep])
        for _, entry in sorted(p.quarantine, key=lambda t: t[0]):
            self.quarantine_counts[entry["reason"]] += 1
            self.first_detail.setdefault(entry["reason"], entry["detail"])
            if self.on_quarantine is not None:
                self.on_quarantine(entry)
        records = []
        for i, record in enumerate(p.records):
            if i in found:
                continue
            records.append(record)
            if p.made_up[i]:
                self.synthesised_ids += 1
                self._synth_example = self._synth_example or record["id"]
        self.records += len(records)
        return records
