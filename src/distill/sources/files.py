"""File readers (JSONL, CSV / TSV with or without a header, JSON arrays, Parquet, XML, text and
Markdown), gzip / zstd decompression by extension, and the expansion of ``prefilter.input`` (a file, a
glob, a list, a folder) into :class:`Source` objects. Every reader streams except JSON arrays, which
are parsed whole (use JSONL for corpora larger than memory)."""

from __future__ import annotations

import csv
import glob
import gzip
import io
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from distill.errors import InputError, queued_copy_hint
from distill.sources.rows import RAW_PREVIEW, Row, Source, first_bad_byte, has_surrogates

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".json": "json",
           ".parquet": "parquet", ".xml": "xml", ".db": "sqlite", ".sqlite": "sqlite", ".sqlite3": "sqlite"}
COMPRESSED = (".gz", ".zst")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_FOUND_IN = {"csv": "the CSV header", "tsv": "the TSV header", "parquet": "the Parquet schema",
             "text": "a text file's fields"}
_PARQUET_BATCH = 10_000
_XML_CHUNK = 1 << 16
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)(?:\s+#+)?\s*$", re.MULTILINE)
csv.field_size_limit(1 << 26)  # 64 MiB: a long article is one field


def _suffix(path: Path) -> str:
    """The format suffix, under a compression suffix (``a.jsonl.gz`` -> ``.jsonl``)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def stem(path: Path) -> str:
    """The name without format and compression suffixes (``c.jsonl.gz`` -> ``c``)."""
    name = path.name
    for _ in range(2 if path.suffix.lower() in COMPRESSED else 1):
        name = name.rsplit(".", 1)[0] if "." in name[1:] else name
    return name


def detect_format(path: Path, fmt: str = "auto", globbed: bool = False) -> str:
    """The reader for ``path``: ``fmt`` unless auto, else by extension. Text and Markdown files are read
    as one record each only from a folder, a glob, or with ``format: text``."""
    if fmt != "auto":
        return fmt
    suffix = _suffix(path)
    if globbed and suffix in TEXT_SUFFIXES:
        return "text"
    try:
        return FORMATS[suffix]
    except KeyError:
        raise InputError(
            f"{path}: cannot tell the format from the extension {suffix or path.suffix!r}; "
            f"set prefilter.format to one of {sorted(set(FORMATS.values()))}"
        ) from None


def open_binary(path: Path) -> IO[bytes]:
    """``path`` opened for reading, decompressed as it is read when it ends in ``.gz`` or ``.zst``."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _decompression_guard(path: Path, rows: Iterator[Row]) -> Iterator[Row]:
    """Turn a truncated or corrupt compressed stream into an InputError naming the file."""
    try:
        yield from rows
    except (OSError, EOFError) as e:
        what = "decompress" if path.suffix.lower() in COMPRESSED else "read"
        raise InputError(f"{path}: cannot {what}: {e}; is the file complete?") from None
    except Exception as e:
        if type(e).__module__.startswith("zstandard"):
            raise InputError(f"{path}: cannot decompress: {e}; is the file complete?") from None
        raise


# ----------------------------------------------------------------------------- readers
def read_jsonl(path: Path) -> Iterator[Row]:
    item = 0
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield Row(lineno, item, None, raw.decode("utf-8", "replace")[:RAW_PREVIEW],
                          ("undecodable_bytes", f"not valid UTF-8 ({first_bad_byte(raw)})"))
            else:
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    yield Row(lineno, item, None, text[:RAW_PREVIEW], ("bad_json", f"{e.msg} at column {e.colno}"))
                else:
                    if isinstance(obj, dict):
                        yield Row(lineno, item, obj, "")
                    else:
                        yield Row(lineno, item, None, text[:RAW_PREVIEW],
                                  ("not_an_object", f"expected a JSON object, got {type(obj).__name__}"))
            item += 1


def read_csv(path: Path, delimiter: str = ",", names: list[str] | None = None,
             header: bool = True) -> tuple[list[str], Iterator[Row]]:
    """The columns (the header, ``names``, or positions ``"0"``, ``"1"``, ... of the first row) and the
    rows. Streamed; undecodable bytes are kept per row (surrogateescape) to quarantine that row only."""
    fh = io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(fh, delimiter=delimiter)
    try:
        columns = next(reader, []) if header else []
    except csv.Error as e:
        fh.close()
        raise InputError(f"{path}: line {reader.line_num}: malformed CSV: {e}") from None
    numbered = _numbered(path, reader)
    if not header:
        first = next(numbered, None)
        columns = names or [str(i) for i in range(len(first[1]) if first else 0)]
        if first is not None:
            numbered = itertools.chain([first], numbered)
    what = "header has" if header else ("prefilter.columns names" if names else "the first row has")
    return columns, _csv_rows(fh, numbered, columns, what, delimiter)


def _numbered(path: Path, reader) -> Iterator[tuple[int, list[str]]]:
    """The non-blank records with the line each starts on (a quoted field may span lines)."""
    line = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(f"{path}: line {reader.line_num}: malformed CSV: {e}") from None
        start, line = line, reader.line_num + 1
        if any(v.strip() for v in values):
            yield start, values


def _csv_rows(fh, numbered, columns: list[str], what: str, delimiter: str) -> Iterator[Row]:
    with fh:
        if not columns:
            return
        for item, (start, values) in enumerate(numbered):
            raw = delimiter.join(values)
            if any(has_surrogates(v) for v in values):
                shown = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:RAW_PREVIEW]
                yield Row(start, item, None, shown, ("undecodable_bytes", "not valid UTF-8; is the file Latin-1?"))
            elif len(values) != len(columns):
                yield Row(start, item, None, raw[:RAW_PREVIEW],
                          ("wrong_field_count", f"{len(values)} fields, {what} {len(columns)}"))
            else:
                yield Row(start, item, dict(zip(columns, values)))


def read_json(path: Path) -> Iterator[Row]:
    with open_binary(path) as fh:
        data = fh.read().removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid UTF-8 ({first_bad_byte(data)})") from None
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
            yield Row(None, i, None, json.dumps(obj)[:RAW_PREVIEW],
                      ("not_an_object", f"expected a JSON object, got {type(obj).__name__}"))


def read_parquet(path: Path) -> tuple[list[str], Iterator[Row]]:
    """The schema's column names, and the rows, read in record batches."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several error types for corrupt files
        raise InputError(f"{path}: cannot read as Parquet: {e}") from None

    def rows() -> Iterator[Row]:
        item = 0
        with pf:
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
                for obj in batch.to_pylist():
                    yield Row(None, item, obj)
                    item += 1

    return pf.schema_arrow.names, rows()


def read_xml(path: Path, row_tag: str) -> Iterator[Row]:
    """Rows are ``<row_tag>`` elements; their attributes and simple child elements become columns."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    rows: list[Row] = []
    stack: list[tuple[str, dict[str, Any], int]] = []
    text_parts: list[str] = []
    count = 0

    def start(name, attrs):
        nonlocal text_parts
        if name == row_tag:
            stack.append((name, dict(attrs), parser.CurrentLineNumber))
        elif stack:
            text_parts = []

    def chars(data):
        text_parts.append(data)

    def end(name):
        nonlocal count
        if not stack:
            return
        if name == row_tag:
            _, data, line = stack.pop()
            rows.append(Row(line, count, data))
            count += 1
        else:
            stack[-1][1].setdefault(name, "".join(text_parts).strip())

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    with open_binary(path) as fh:
        while True:
            chunk = fh.read(_XML_CHUNK)
            try:
                parser.Parse(chunk, not chunk)
            except expat.ExpatError as e:
                raise InputError(
                    f"{path}: line {e.lineno}, column {e.offset + 1}: malformed XML: {expat.ErrorString(e.code)}"
                ) from None
            yield from rows
            rows.clear()
            if not chunk:
                return


def markdown_title(text: str) -> str | None:
    """The first ATX heading (``# Title``) of a Markdown text, or None."""
    m = _HEADING.search(text)
    return m.group(1).strip() if m else None


def read_text(path: Path, rel_id: str) -> Iterator[Row]:
    """One row for the whole file: ``id`` (the path relative to the input folder), ``title`` (the first
    Markdown heading, else the file stem) and ``text``."""
    with open_binary(path) as fh:
        raw = fh.read().removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        yield Row(None, 0, None, raw[:RAW_PREVIEW].decode("utf-8", "replace"),
                  ("undecodable_bytes", f"not valid UTF-8 ({first_bad_byte(raw)})"))
        return
    is_md = _suffix(path) in (".md", ".markdown")
    title = (markdown_title(text) if is_md else None) or stem(path)
    yield Row(None, 0, {"id": rel_id, "title": title, "text": text})


# ----------------------------------------------------------------------------- inputs
def _no_header(cfg) -> bool:
    return cfg.columns is not None or any(
        isinstance(c, int) for v in cfg.field_map.values() for c in (v if isinstance(v, list) else [v]))


def file_source(path: Path, display: str, fmt: str, cfg, stem_: str, rel_id: str | None = None) -> Source:
    if fmt in ("csv", "tsv"):
        delim = "\t" if fmt == "tsv" else ","
        header = not _no_header(cfg)
        found_in = _FOUND_IN[fmt] if header else ("prefilter.columns" if cfg.columns else "the first row")
        return Source(display, stem_, fmt, _guarded(path, lambda: read_csv(path, delim, cfg.columns, header)),
                      "line", found_in)
    if fmt == "jsonl":
        return Source(display, stem_, fmt, _guarded(path, lambda: (None, read_jsonl(path))))
    if fmt == "json":
        return Source(display, stem_, fmt, _guarded(path, lambda: (None, read_json(path))), "item")
    if fmt == "parquet":
        return Source(display, stem_, fmt, lambda: read_parquet(path), "item", _FOUND_IN[fmt])
    if fmt == "xml":
        return Source(display, stem_, fmt, _guarded(path, lambda: (None, read_xml(path, cfg.xml_row_tag))))
    if fmt == "text":
        rid = rel_id or display
        return Source(display, stem_, fmt, _guarded(path, lambda: (["id", "title", "text"], read_text(path, rid))),
                      "item", _FOUND_IN[fmt])
    raise InputError(f"unknown format {fmt!r}")


def _guarded(path: Path, opener):
    def open_():
        try:
            declared, rows = opener()
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: cannot read: {e}") from None
        return declared, _decompression_guard(path, rows)

    return open_


def _missing(entry: str) -> InputError:
    hint = queued_copy_hint(f"{entry} (or `dvc add` it, or set prefilter.input to an absolute path)")
    return InputError(f"input file not found: {entry} (set prefilter.input){hint}")


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and _suffix(p) in TEXT_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def expand(entries: list[str], base_dir: Path) -> list[tuple[Path, str, str | None, bool]]:
    """Each file to read: (path, how to name it, its id when it is a text file of a folder, whether a glob
    found it).

    An entry is a file, a glob (``data/raw/*.jsonl.gz``, ``**`` allowed) or a folder of text / Markdown
    files (one record per file). A single entry that is a file, missing, empty or a folder without text
    files fails as before, naming it.
    """
    files: list[tuple[Path, str, str | None, bool]] = []
    for entry in entries:
        path = base_dir / entry
        if glob.has_magic(entry):
            matches = sorted(glob.glob(str(path), recursive=True))
            found = [Path(m) for m in matches if Path(m).is_file()]
            if not found:
                raise InputError(f"no file matches {entry} (set prefilter.input){queued_copy_hint(entry)}")
            files.extend((p, str(Path(entry).parent / p.relative_to(path.parent)) if _plain(entry) else str(p),
                          None, True) for p in found)
        elif path.is_dir():
            texts = _text_files(path)
            if not texts:
                raise InputError(f"{entry} is a directory without text or Markdown files (*.txt, *.md); "
                                 "prefilter.input must name a file, a glob, a list of files or a folder of text "
                                 "files")
            files.extend((p, str(Path(entry) / p.relative_to(path)), p.relative_to(path).as_posix(), True)
                         for p in texts)
        elif path.exists():
            files.append((path, entry, None, False))
        else:
            raise _missing(entry)
    return files


def _plain(entry: str) -> bool:
    """A glob whose magic is in its last part only (``data/raw/*.jsonl``): matches are named like it."""
    return not glob.has_magic(str(Path(entry).parent))
