"""More inputs: files without a header, globs and lists as one corpus, gzip / zstd, folders of text and
Markdown files, SQLite databases, and the batch-wise reading the prefilter stage streams with."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import pytest
import zstandard

from distill.config import PrefilterConfig
from distill.errors import ConfigError, InputError
from distill.sources import CorpusStream, read_corpus


def read(input_, **cfg):
    return read_corpus(PrefilterConfig(input=input_, **cfg))


def jsonl_bytes(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


# ----------------------------------------------------------------------------- files without a header
def test_csv_without_header_by_position(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("a1,business,Solar farm opens\na2,tech,Wind turbines turn\n", encoding="utf-8")
    res = read(str(p), field_map={"id": 0, "text": 2, "title": []}, metadata=[1])
    assert [(r["id"], r["text"], r["metadata"]) for r in res.records] == [
        ("a1", "Solar farm opens", {"1": "business"}), ("a2", "Wind turbines turn", {"1": "tech"})]
    assert res.columns == ["0", "1", "2"] and res.quarantine == []


def test_tsv_without_header_with_names_from_config(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_bytes(b"a1\tbusiness\tSolar, farm opens\n\na2\ttech\n" b"a3\ttech\tcaf\xe9\na4\tsport\tFinal\n")
    res = read(str(p), columns=["id", "label", "text"], metadata=["label"])
    assert [(r["id"], r["text"], r["metadata"]) for r in res.records] == [
        ("a1", "Solar, farm opens", {"label": "business"}), ("a4", "Final", {"label": "sport"})]
    assert [(q["line"], q["reason"]) for q in res.quarantine] == [(3, "wrong_field_count"), (4, "undecodable_bytes")]
    assert res.quarantine[0]["detail"] == "2 fields, prefilter.columns names 3"
    # positions also index the configured names
    res = read(str(p), columns=["id", "label", "text"], field_map={"text": 2, "id": "id"})
    assert [r["id"] for r in res.records] == ["a1", "a4"]


def test_a_position_past_the_last_column_is_an_error(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("a1,hello\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"prefilter\.field_map\.text is column 5 \(counting from 0\), but rows have "
                                         r"2 column\(s\)"):
        read(str(p), field_map={"text": 5})


def test_positions_need_a_format_with_columns_in_order(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(jsonl_bytes([{"id": "a", "text": "x"}]))
    with pytest.raises(InputError, match="by position, but this format's rows have named fields"):
        read(str(p), field_map={"text": 1})


def test_negative_positions_are_a_config_error():
    with pytest.raises(ValueError, match="counts from 0"):
        PrefilterConfig(input="x.csv", field_map={"text": -1})


# ----------------------------------------------------------------------------- globs and lists
def test_a_glob_is_one_corpus_and_quarantine_names_the_actual_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl").write_bytes(jsonl_bytes([{"id": "1", "text": "one"}, {"id": "2", "text": "two"}]))
    (tmp_path / "raw" / "b.jsonl").write_bytes(
        jsonl_bytes([{"id": "3", "text": "three"}]) + b"{broken\n" + jsonl_bytes([{"id": "1", "text": "again"}]))
    (tmp_path / "raw" / "notes.txt").write_text("not matched")
    res = read("raw/*.jsonl")
    assert [r["id"] for r in res.records] == ["1", "2", "3"]
    assert [(q["file"], q["line"], q["reason"]) for q in res.quarantine] == [
        ("raw/b.jsonl", 2, "bad_json"), ("raw/b.jsonl", 3, "duplicate_id")]
    assert res.quarantine[1]["detail"] == "id '1' already used at raw/a.jsonl line 1"  # another file: named
    assert res.rows_read == 5


def test_an_empty_file_among_several_is_skipped_with_a_warning(tmp_path, caplog):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes([{"id": "1", "text": "one"}]))
    (tmp_path / "b.jsonl").write_bytes(b"")
    res = read(str(tmp_path / "*.jsonl"))
    assert [r["id"] for r in res.records] == ["1"]
    assert "b.jsonl: file is empty, skipped" in caplog.text


def test_a_list_mixes_formats_and_compression(tmp_path):
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes([{"id": "g1", "text": "from gzip"}])))
    (tmp_path / "b.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(b"id,text\nz1,from zstd\nz2,more\n"))
    (tmp_path / "c.jsonl").write_bytes(jsonl_bytes([{"text": "no id here"}]))
    res = read([str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.csv.zst"), str(tmp_path / "c.jsonl")])
    assert [(r["id"], r["text"]) for r in res.records] == [
        ("g1", "from gzip"), ("z1", "from zstd"), ("z2", "more"), (f"{tmp_path / 'c'}:1", "no id here")]


def test_a_glob_that_matches_nothing_and_a_missing_list_entry(tmp_path):
    with pytest.raises(InputError, match=r"no file matches .*\*\.jsonl"):
        read(str(tmp_path / "*.jsonl"))
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes([{"id": "1", "text": "x"}]))
    with pytest.raises(InputError, match=r"input file not found: .*b\.jsonl"):
        read([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])


def test_an_empty_list_is_a_config_error():
    with pytest.raises(ValueError, match="empty list"):
        PrefilterConfig(input=[])


# ----------------------------------------------------------------------------- compressed files
def test_gzip_and_zstd_are_streamed_by_extension(tmp_path):
    rows = [{"id": str(i), "text": f"row {i}"} for i in range(1000)]
    gz, zst = tmp_path / "c.jsonl.gz", tmp_path / "c.jsonl.zst"
    with gzip.open(gz, "wb") as fh:
        fh.write(jsonl_bytes(rows))
    zst.write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(rows)))
    for path in (gz, zst):
        res = read(str(path), limit=10)
        assert [r["id"] for r in res.records] == [str(i) for i in range(10)]
    assert read(str(gz), field_map={"text": "text", "id": []}).records[0]["id"] == "c:1"  # stem without suffixes


def test_a_truncated_gzip_names_the_file(tmp_path):
    data = gzip.compress(jsonl_bytes([{"id": str(i), "text": "x" * 100} for i in range(200)]))
    p = tmp_path / "c.jsonl.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"c\.jsonl\.gz: cannot decompress: .*is the file complete"):
        read(str(p))


# ----------------------------------------------------------------------------- folders of text files
def test_a_folder_of_text_and_markdown_files(tmp_path):
    d = tmp_path / "notes"
    (d / "2024").mkdir(parents=True)
    (d / "a.md").write_text("Intro line\n\n## Solar *farms* ##\n\nBody text.\n", encoding="utf-8")
    (d / "2024" / "b.txt").write_text("Plain text file.\n", encoding="utf-8")
    (d / "2024" / "c.md").write_text("no heading at all\n", encoding="utf-8")
    (d / "latin.txt").write_bytes(b"caf\xe9\n")
    (d / "empty.md").write_text("   \n", encoding="utf-8")
    (d / "zero.txt").write_bytes(b"")
    (d / "skip.json").write_text("{}", encoding="utf-8")
    (d / ".hidden").mkdir()
    (d / ".hidden" / "x.md").write_text("# hidden\n", encoding="utf-8")
    res = read(str(d))
    assert [(r["id"], r["title"]) for r in res.records] == [
        ("2024/b.txt", "b"), ("2024/c.md", "c"), ("a.md", "Solar *farms*")]
    assert res.records[2]["text"] == "Intro line\n\n## Solar *farms* ##\n\nBody text."
    assert [(Path(q["file"]).name, q["reason"]) for q in res.quarantine] == [
        ("empty.md", "missing_text"), ("latin.txt", "undecodable_bytes"), ("zero.txt", "missing_text")]


def test_a_folder_without_text_files_says_what_input_may_be(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match=r"d is a directory without text or Markdown files"):
        read(str(tmp_path / "d"))


# ----------------------------------------------------------------------------- SQLite
def _sqlite(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE articles (id INTEGER, title TEXT, body TEXT, published TEXT)")
    conn.executemany("INSERT INTO articles VALUES (?, ?, ?, ?)", [
        (1, "Solar", "A solar farm opened.", "2024-01-02"),
        (2, "No body", None, None),
        (3, "Latin-1", b"caf\xe9", None),
        (1, "Again", "Same id as row 1.", None),
        (4, None, "Wind turbines turn.", "2024-01-03"),
    ])
    conn.execute("UPDATE articles SET body = CAST(body AS TEXT)")
    conn.commit()
    conn.close()
    return path


def test_sqlite_rows_nulls_bad_bytes_and_duplicates(tmp_path):
    db = _sqlite(tmp_path / "news.db")
    res = read(str(db), field_map={"id": "id", "title": "title", "text": "body"}, metadata=["published"])
    assert [(r["id"], r["title"], r["text"], r["metadata"]) for r in res.records] == [
        ("1", "Solar", "A solar farm opened.", {"published": "2024-01-02"}),
        ("4", "", "Wind turbines turn.", {"published": "2024-01-03"})]
    got = [(q["line"], q["item"], q["row"], q["reason"]) for q in res.quarantine]
    assert got == [(None, 1, 2, "missing_text"), (None, 2, 3, "undecodable_bytes"), (None, 3, 4, "duplicate_id")]
    assert "column 'body' is not valid UTF-8 (byte 0xe9" in res.quarantine[1]["detail"]
    assert res.quarantine[2]["detail"] == "id '1' already used at row 1"
    assert all(q["file"] == str(db) for q in res.quarantine)


def test_sqlite_url_query_and_one_table_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _sqlite(tmp_path / "news.db")
    fm = {"id": "id", "title": "title", "text": "body"}
    res = read("sqlite:///news.db", field_map=fm, source={"query": "SELECT * FROM articles WHERE id = 4"})
    assert [r["id"] for r in res.records] == ["4"]
    assert len(read("news.db", field_map=fm).records) == 2  # one table: read it


def test_sqlite_missing_column_and_ambiguous_tables(tmp_path):
    db = _sqlite(tmp_path / "news.db")
    with pytest.raises(InputError, match=r"the query names a column the database lacks \(bodyy\): SQLite says: no "
                                         r"such column: bodyy.*prefilter\.source\.query"):
        read(str(db), source={"query": "SELECT id, bodyy FROM articles"})
    with pytest.raises(InputError, match=r"field_map\.text is 'text'.*Columns in the query's result: 'id', 'title', "
                                         r"'body', 'published'"):
        read(str(db))
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other (x TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match=r"tables 'articles', 'other': set prefilter\.source\.table"):
        read(str(db), field_map={"text": "body"})
    assert len(read(str(db), field_map={"text": "body"}, source={"table": "articles"}).records) == 2


# ----------------------------------------------------------------------------- batches
def test_batches_give_the_same_records_and_quarantine_as_one_pass(tmp_path):
    rows = []
    for i in range(60):
        rows.append({"id": f"r{i % 23}", "text": f"text {i}"} if i % 7 else {"id": f"r{i}"})
    p = tmp_path / "c.jsonl"
    p.write_bytes(jsonl_bytes(rows) + b"{bad\n" + jsonl_bytes([{"text": "made-up id"}, {"id": "c:62", "text": "x"}]))
    whole = read(str(p), batch_rows=1000)
    for size in (1, 2, 5):
        quarantine = []
        stream = CorpusStream(PrefilterConfig(input=str(p), batch_rows=size), on_quarantine=quarantine.append)
        batches = list(stream.batches())
        assert all(len(b) <= size for b in batches)
        assert [r for b in batches for r in b] == whole.records
        assert quarantine == whole.quarantine  # the same entries, details and order
        assert stream.synthesised_ids == whole.synthesised_ids == 1
    details = {q["line"]: q["detail"] for q in whole.quarantine if q["reason"] == "duplicate_id"}
    assert details[25] == "id 'r1' already used at line 2"  # the first use, however many repeats between
    assert details[63] == "id 'c:62' already used at line 62"  # a real id clashing with a made-up one


def test_a_real_corpus_read_in_small_batches_is_the_same(shared_data):
    cfg = {"input": str(shared_data / "corpora" / "bbc_news_2225.jsonl"), "metadata": ["category"]}
    assert read_corpus(PrefilterConfig(**cfg, batch_rows=97)).records == read_corpus(PrefilterConfig(**cfg)).records


def test_input_or_source_is_required():
    with pytest.raises(ValueError, match="set prefilter.input"):
        PrefilterConfig()
    with pytest.raises(ConfigError, match="not set"):
        read(None, source={"dsn_env": "DISTILL_TEST_UNSET_DSN", "query": "SELECT 1"})
