"""Read a corpus into records, quarantining what is malformed.

Inputs (``prefilter.input``): a file (JSONL, CSV / TSV with or without a header, JSON array, Parquet,
XML, SQLite; ``.gz`` / ``.zst`` decompressed as read), a glob or a list of files read as one corpus, a
folder of text / Markdown files (one record per file), or a database (PostgreSQL, SQLite) through a URL
or ``prefilter.source``. Readers per format are in :mod:`distill.sources.files` and
:mod:`distill.sources.sql`; the field map and its column checks in :mod:`distill.sources.columns`; the
batch-wise mapping, quarantine and duplicate ids in :mod:`distill.sources.corpus`.

A record is ``{"id", "title", "text", "metadata"}``. Source columns are mapped onto it with a field map
(``text: [body, lead, title]`` takes the first non-empty column). Rows that cannot become a record are
never dropped silently: each one becomes a quarantine entry with the file it is in, its line (or item
index, or row number for a database), a stable reason code and the offending raw text, and is
counted. Problems with an input as a whole (missing, empty, not parseable at all, a failed query, a
lost connection) raise :class:`InputError` naming it and, where known, the line. Settings that name
columns the input lacks are never ignored silently either (:func:`check_columns`). ``strip_html``
renders HTML with the stdlib parser (:mod:`distill.htmltext`, measured in ``benchmarks/html_strip.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import PrefilterConfig
from distill.sources.columns import check_columns
from distill.sources.corpus import CorpusStream, clean_text, open_sources
from distill.sources.files import FORMATS, detect_format
from distill.sources.rows import Row, Source

__all__ = ["FORMATS", "CorpusResult", "CorpusStream", "Row", "Source", "check_columns", "clean_text",
           "detect_format", "open_sources", "read_corpus"]


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


def read_corpus(cfg: PrefilterConfig, base_dir: str | Path = ".") -> CorpusResult:
    """Read all of ``cfg``'s input into records and quarantine entries (see module docstring); the
    prefilter stage streams it instead (:class:`CorpusStream`).

    Where a source declares its columns (CSV header, Parquet schema, a query's result) they are checked
    against the settings before any row is read; otherwise against the union of the keys of the rows
    read, once they are read. Gaps that are not errors are logged once each and kept in
    ``missing_columns``; made-up ids are logged once and counted in ``synthesised_ids``.
    """
    result = CorpusResult()
    stream = CorpusStream(cfg, base_dir, on_quarantine=result.quarantine.append)
    for batch in stream.batches():
        result.records.extend(batch)
    result.rows_read = stream.rows_read
    result.columns = stream.columns
    result.missing_columns = stream.missing_columns
    result.synthesised_ids = stream.synthesised_ids
    return result
