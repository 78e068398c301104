"""Reading corpora: formats, field mapping, quarantine of bad rows, clear errors, the real files."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest

from distill.config import PrefilterConfig
from distill.errors import InputError
from distill.sources import clean_text, read_corpus


def read(path: Path, **cfg):
    return read_corpus(PrefilterConfig(input=str(path), **cfg))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ARTICLES = [
    {"id": "a1", "title": "Solar farm opens", "text": "A solar farm opened.", "source": "wire",
     "date": "2021-01-02"},
    {"id": "a2", "title": "Wind", "text": "Turbines turn.\n\nPower flows.", "source": "paper"},
]


# ----------------------------------------------------------------------------- formats
def test_jsonl_rows_become_records(tmp_path):
    res = read(write_jsonl(tmp_path / "c.jsonl", ARTICLES))
    assert res.records == [
        {"id": "a1", "title": "Solar farm opens", "text": "A solar farm opened.", "metadata": {}},
        {"id": "a2", "title": "Wind", "text": "Turbines turn.\n\nPower flows.", "metadata": {}},
    ]
    assert res.rows_read == 2 and res.quarantine == []


def test_jsonl_with_byte_order_mark_and_blank_lines(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(ARTICLES[0]).encode() + b"\n\n  \n"
                  + json.dumps(ARTICLES[1]).encode() + b"\n")
    res = read(p)
    assert [r["id"] for r in res.records] == ["a1", "a2"]
    assert res.quarantine == []


def test_csv_with_quoted_multiline_fields(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('id,title,text\n1,"Two\nline title",hello world\n2,t,"para one\n\npara two"\n'
                 "3,t,last\n", encoding="utf-8")
    res = read(p)
    assert [(r["id"], r["title"], r["text"]) for r in res.records] == [
        ("1", "Two\nline title", "hello world"),
        ("2", "t", "para one\n\npara two"),
        ("3", "t", "last"),
    ]


def test_json_array(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(ARTICLES, indent=2), encoding="utf-8")
    res = read(p)
    assert [r["id"] for r in res.records] == ["a1", "a2"]
    assert res.records[1]["text"] == "Turbines turn.\n\nPower flows."


def test_parquet(tmp_path):
    p = tmp_path / "c.parquet"
    pl.DataFrame({"id": [7, 8], "title": ["T1", None], "text": ["first text", "second text"]}
                 ).write_parquet(p)
    res = read(p)
    assert res.records == [
        {"id": "7", "title": "T1", "text": "first text", "metadata": {}},
        {"id": "8", "title": "", "text": "second text", "metadata": {}},
    ]


def test_xml_attributes_and_child_elements_are_columns(tmp_path):
    p = tmp_path / "c.xml"
    p.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<feed>\n'
        '  <item id="x1" title="Attr title"><text>Child  text\n here</text></item>\n'
        '  <item id="x2"><title>Child title</title><text>More</text></item>\n'
        "</feed>\n", encoding="utf-8")
    res = read(p, xml_row_tag="item")
    assert [(r["id"], r["title"], r["text"]) for r in res.records] == [
        ("x1", "Attr title", "Child text\nhere"),
        ("x2", "Child title", "More"),
    ]


def test_format_can_be_forced_for_an_unknown_extension(tmp_path):
    p = write_jsonl(tmp_path / "c.txt", ARTICLES)
    assert len(read(p, format="jsonl").records) == 2


# ----------------------------------------------------------------------------- mapping
def test_field_map_list_takes_first_non_empty_column(tmp_path):
    rows = [
        {"key": "r1", "head": "H1", "body": "the body", "lead": "the lead"},
        {"key": "r2", "head": "H2", "body": "   ", "lead": "lead only"},
        {"key": "r3", "head": "H3", "body": None, "lead": ""},
    ]
    res = read(write_jsonl(tmp_path / "c.jsonl", rows),
               field_map={"id": "key", "title": "head", "text": ["body", "lead", "head"]})
    assert [(r["id"], r["title"], r["text"]) for r in res.records] == [
        ("r1", "H1", "the body"), ("r2", "H2", "lead only"), ("r3", "H3", "H3")]


def test_metadata_copies_listed_columns_only(tmp_path):
    res = read(write_jsonl(tmp_path / "c.jsonl", ARTICLES), metadata=["source", "date"])
    assert res.records[0]["metadata"] == {"source": "wire", "date": "2021-01-02"}
    assert res.records[1]["metadata"] == {"source": "paper"}  # no date column: left out


def test_rows_without_an_id_get_one_from_file_and_line(tmp_path):
    res = read(write_jsonl(tmp_path / "c.jsonl", [{"text": "one"}, {"text": "two"}]))
    assert [r["id"] for r in res.records] == ["c:1", "c:2"]


def test_limit_reads_only_the_first_rows(tmp_path):
    rows = [{"id": str(i), "text": f"row {i}"} for i in range(10)]
    res = read(write_jsonl(tmp_path / "c.jsonl", rows), limit=3)
    assert [r["id"] for r in res.records] == ["0", "1", "2"]
    assert res.rows_read == 3


def test_html_unescape_and_strip(tmp_path):
    rows = [{"id": "1", "title": "M&amp;A &#8217;deal&#8217;",
             "text": "<p>Caf&eacute; &amp; <b>bar</b></p>\n<p>Next</p>"}]
    p = write_jsonl(tmp_path / "c.jsonl", rows)
    plain = read(p).records[0]
    assert plain["title"] == "M&amp;A &#8217;deal&#8217;"  # left alone unless asked
    unescaped = read(p, unescape_html=True).records[0]
    assert unescaped["title"] == "M&A \u2019deal\u2019"
    stripped = read(p, strip_html=True).records[0]
    assert stripped["text"] == "Café & bar\nNext"
    assert "<" not in stripped["text"]


@pytest.mark.parametrize("markup, text", [
    ("<p>one</p><p>two</p>", "one\ntwo"),                                        # block boundary, no whitespace
    ("a<br>b<br/>c", "a\nb\nc"),
    ("CO<sub>2</sub> and <b>H</b><sub>2</sub>O", "CO2 and H2O"),                # inline tags split no word
    ('<script>var s = "<p>hi</p>";</script><style>p { color: red }</style>Seen', "Seen"),
    ("raw a < b and c > d", "raw a < b and c > d"),                             # a bare < is text
    ('<a href="x" title="a > b">link</a> after', "link after"),
    ("<!-- a <b>tag</b> in a comment -->kept", "kept"),
    ("<ul>\n  <li>one</li>\n  <li>two</li>\n</ul>", "one\ntwo"),
    ("<pre><code>x = 1\n    y = 2</code></pre>", "x = 1\ny = 2"),
    ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d"),
    ("<p>use &lt;p&gt; &amp;amp; &#8217;x&#8217;&nbsp;y</p>", "use <p> &amp; \u2019x\u2019 y"),  # decoded once
])
def test_strip_html_renders_text_as_a_browser_shows_it(markup, text):
    assert clean_text(markup, unescape_html=False, strip_html=True) == text


# ----------------------------------------------------------------------------- columns the input lacks
ROWS = [{"id": "r1", "title": "T1", "text": "first", "label": "x"}, {"id": "r2", "title": "T2", "text": "second"}]


@pytest.mark.parametrize("field_map, setting, column", [
    ({"text": "txt"}, "text", "txt"),
    ({"text": ["body", "text"]}, "text", "body"),                 # every listed column must exist
    ({"text": "text", "title": "titel"}, "title", "titel"),
    ({"text": "text", "id": "key"}, "id", "key"),
])
def test_a_mapped_column_no_row_has_is_an_error_naming_the_columns_there(tmp_path, field_map, setting, column):
    p = write_jsonl(tmp_path / "c.jsonl", ROWS)
    with pytest.raises(InputError) as e:
        read(p, field_map=field_map)
    msg = str(e.value)
    assert f"prefilter.field_map.{setting}" in msg and repr(column) in msg
    assert "Columns in the 2 row(s) read: 'id', 'title', 'text', 'label'" in msg  # the union of the rows' keys
    assert msg.startswith(str(p))


def test_a_misspelt_column_gets_a_suggestion(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", ROWS)
    with pytest.raises(InputError, match=r"no row has a column 'titel' \(did you mean 'title'\?\)"):
        read(p, field_map={"text": "text", "title": "titel"})


def test_csv_and_parquet_columns_are_checked_against_the_header_before_any_row(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_bytes(b"id,title,body\n1,t,hello\n2,t,caf\xe9\n")  # row 2 would be quarantined if read
    with pytest.raises(InputError, match=r"field_map\.text is 'text'.*Columns in the CSV header: 'id', 'title', "
                                         r"'body'\. Set prefilter\.field_map\.text to the column"):
        read(csv_path)
    pq = tmp_path / "c.parquet"
    pl.DataFrame({"id": [1], "headline": ["h"], "text": ["t"]}).write_parquet(pq)
    with pytest.raises(InputError, match=r"field_map\.title is 'heading'.*Parquet schema: 'id', 'headline', 'text'"):
        read(pq, field_map={"text": "text", "title": "heading"})


def test_title_and_id_mapped_to_nothing_are_not_an_error(tmp_path, caplog):
    res = read(write_jsonl(tmp_path / "c.jsonl", ROWS), field_map={"text": "text", "title": [], "id": []})
    assert [(r["id"], r["title"]) for r in res.records] == [("c:1", ""), ("c:2", "")]
    assert res.missing_columns == {} and res.synthesised_ids == 2
    assert "prefilter.field_map.id is []" in caplog.text


def test_metadata_columns_no_row_has_are_one_warning_and_counted(tmp_path, caplog):
    res = read(write_jsonl(tmp_path / "c.jsonl", ROWS), metadata=["labl", "label", "source"])
    assert [r["metadata"] for r in res.records] == [{"label": "x"}, {}]
    assert res.missing_columns == {"metadata": ["labl", "source"]}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "prefilter.metadata lists 'labl', 'source', but no row has such a column" in warnings[0]
    assert "did you mean 'label' for 'labl'" in warnings[0]


def test_the_default_metadata_on_a_csv_without_those_columns_is_a_warning(tmp_path, caplog):
    p = tmp_path / "c.csv"
    p.write_text("id,title,text\n1,t,hello\n", encoding="utf-8")
    res = read(p, metadata=["source", "published"])  # conf/config.yaml's default
    assert len(res.records) == 1
    assert res.missing_columns == {"metadata": ["source", "published"]}
    assert "'source', 'published'" in caplog.text


def test_made_up_ids_are_warned_about_once_and_counted(tmp_path, caplog):
    rows = [{"title": "A", "text": "one"}, {"title": "B", "text": "two"}, {"title": "C", "text": "three"}]
    res = read(write_jsonl(tmp_path / "c.jsonl", rows))
    assert [r["id"] for r in res.records] == ["c:1", "c:2", "c:3"]
    assert res.synthesised_ids == 3 and res.missing_columns == {"id": ["id"]}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "no row has a column 'id'" in warnings[0] and "'<file stem>:<line>'" in warnings[0]
    assert "'c:1'" in warnings[0] and "prefilter.field_map.id" in warnings[0]


def test_ids_made_up_for_some_rows_only(tmp_path, caplog):
    rows = [{"id": "a", "text": "one"}, {"id": "", "text": "two"}, {"text": "three"}]
    res = read(write_jsonl(tmp_path / "c.jsonl", rows))
    assert [r["id"] for r in res.records] == ["a", "c:2", "c:3"]
    assert res.synthesised_ids == 2 and res.missing_columns == {"title": ["title"]}
    assert "2 record(s) had no id" in caplog.text and "empty or absent in those rows" in caplog.text


def test_a_title_column_no_row_has_is_a_warning_when_it_is_the_default(tmp_path, caplog):
    p = tmp_path / "c.xml"
    p.write_text('<rows><row Id="1" Title="Hello" Body="text"/></rows>', encoding="utf-8")
    res = read(p, field_map={"id": "Id", "text": "Body"})
    assert res.records[0]["title"] == "" and res.missing_columns == {"title": ["title"]}
    assert res.columns == ["Id", "Title", "Body"]
    assert "no row has a column 'title' (did you mean 'Title'?)" in caplog.text


def test_every_row_unreadable_skips_the_column_check(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("{broken\n[1]\n", encoding="utf-8")
    res = read(p, field_map={"text": "body"})  # no row has keys: nothing to compare the settings with
    assert res.records == [] and res.columns == [] and res.quarantine_counts == {"bad_json": 1, "not_an_object": 1}


# ----------------------------------------------------------------------------- quarantine
def test_bad_jsonl_rows_are_quarantined_with_line_and_reason(tmp_path):
    p = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"id": "ok1", "text": "good row"}).encode(),             # line 1
        b'{"id": "broken", "text": "no closing brace"',                     # line 2
        b"[1, 2, 3]",                                                       # line 3
        json.dumps({"id": "nt", "title": "no text"}).encode(),              # line 4
        '{"id": "lat", "text": "Caf\u00e9"}'.encode("latin-1"),             # line 5
        json.dumps({"id": "ok1", "text": "same id again"}).encode(),        # line 6
        json.dumps({"id": "ws", "text": "  \n "}).encode(),                 # line 7
        json.dumps({"id": "ok2", "text": "another good row"}).encode(),     # line 8
    ]
    p.write_bytes(b"\n".join(lines) + b"\n")
    res = read(p)
    assert [r["id"] for r in res.records] == ["ok1", "ok2"]
    assert res.rows_read == 8
    got = [(q["file"], q["line"], q["reason"]) for q in res.quarantine]
    assert got == [
        (str(p), 2, "bad_json"),
        (str(p), 3, "not_an_object"),
        (str(p), 4, "missing_text"),
        (str(p), 5, "undecodable_bytes"),
        (str(p), 6, "duplicate_id"),
        (str(p), 7, "missing_text"),
    ]
    assert res.quarantine_counts == {"bad_json": 1, "not_an_object": 1, "missing_text": 2,
                                     "undecodable_bytes": 1, "duplicate_id": 1}
    by_line = {q["line"]: q for q in res.quarantine}
    assert "no closing brace" in by_line[2]["raw"]
    assert "0xe9" in by_line[5]["detail"] and "Latin-1" in by_line[5]["detail"]
    assert "Caf" in by_line[5]["raw"]
    assert "'ok1'" in by_line[6]["detail"] and "line 1" in by_line[6]["detail"]


def test_csv_wrong_field_count_and_latin1_are_quarantined(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(
        b'id,title,text\n'
        b'1,t,"multi\nline"\n'        # lines 2-3
        b'2,only two\n'               # line 4
        b'3,t,caf\xe9\n'              # line 5: Latin-1
        b'4,t,fine,extra\n'           # line 6
        b'5,t,good\n'                 # line 7
    )
    res = read(p)
    assert [r["id"] for r in res.records] == ["1", "5"]
    assert [(q["line"], q["reason"]) for q in res.quarantine] == [
        (4, "wrong_field_count"), (5, "undecodable_bytes"), (6, "wrong_field_count")]
    assert "2 fields, header has 3" in res.quarantine[0]["detail"]
    assert res.quarantine_counts == {"wrong_field_count": 2, "undecodable_bytes": 1}


def test_json_array_problems_name_the_item(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps([{"id": "a", "text": "x"}, "not an object", {"id": "b", "text": "y"},
                             {"id": "b", "text": "z"}]), encoding="utf-8")
    res = read(p)
    assert [r["id"] for r in res.records] == ["a", "b"]
    assert [(q["line"], q["item"], q["reason"]) for q in res.quarantine] == [
        (None, 1, "not_an_object"), (None, 3, "duplicate_id")]
    # JSON arrays have no line per row: the first use is named by its item index
    assert res.quarantine[1]["detail"] == "id 'b' already used at item 2"


def test_xml_duplicate_id_names_the_line(tmp_path):
    p = tmp_path / "c.xml"
    p.write_text('<rows>\n<row Id="1" Body="a"/>\n<row Id="2" Body="b"/>\n<row Id="1" Body="c"/>'
                 "\n</rows>\n", encoding="utf-8")
    res = read(p, field_map={"id": "Id", "text": "Body"})
    assert [(q["line"], q["reason"], q["detail"]) for q in res.quarantine] == [
        (4, "duplicate_id", "id '1' already used at line 2")]


# ----------------------------------------------------------------------------- whole-file errors
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"not found: .*nope\.jsonl"):
        read(tmp_path / "nope.jsonl")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.jsonl: file is empty"):
        read(p)


def test_file_with_only_blank_lines(tmp_path):
    p = tmp_path / "blank.jsonl"
    p.write_text("\n \n\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"blank\.jsonl: no rows found"):
        read(p)


def test_directory(tmp_path):
    d = tmp_path / "corpus.jsonl"
    d.mkdir()
    with pytest.raises(InputError, match=r"corpus\.jsonl is a directory"):
        read(d)


def test_unknown_extension(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("hello\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"corpus\.txt: cannot tell the format .*'\.txt'"):
        read(p)


def test_malformed_json_document_names_file_and_line(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('[\n  {"id": "a", "text": "x"},\n  {"id": "b" "text": "y"}\n]\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.json: line 3, column \d+: invalid JSON"):
        read(p)


def test_json_document_that_is_not_an_array(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"id": "a", "text": "x"}', encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.json: expected a JSON array"):
        read(p)


def test_malformed_xml_names_file_and_line(tmp_path):
    p = tmp_path / "c.xml"
    p.write_text('<rows>\n<row Id="1" Body="a"/>\n<row Id="2" Body="b">\n</rows>\n',
                 encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.xml: line 4, column \d+: malformed XML"):
        read(p, field_map={"id": "Id", "text": "Body"})


def test_corrupt_parquet(tmp_path):
    p = tmp_path / "c.parquet"
    p.write_bytes(b"this is not parquet at all")
    with pytest.raises(InputError, match=r"c\.parquet: cannot read as Parquet"):
        read(p)


# ----------------------------------------------------------------------------- the real files
def test_real_energy_news_reads_every_row_with_html_unescaped(shared_data):
    path = shared_data / "corpora" / "energy_news_headlines_8973.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert sum(r["lead"] is None for r in raw) == 163  # the quirk this test is about
    res = read(path, field_map={"id": "id", "title": "title", "text": ["lead", "title"]},
               unescape_html=True)
    assert res.rows_read == len(res.records) == 8973
    assert res.quarantine == []
    by_id = {r["id"]: r for r in res.records}
    for r in raw:  # null lead: the title stands in for the text
        if r["lead"] is None:
            assert by_id[r["id"]]["text"] == by_id[r["id"]]["title"]
    titles = [r["title"] for r in res.records]
    assert any("M&A" in t for t in titles)
    assert not any(re.search(r"&(?:amp|#\d+|[a-z]+);", t + r["text"])
                   for t, r in zip(titles, res.records))


def test_real_stackexchange_xml_with_bom(shared_data):
    path = shared_data / "questions" / "stackexchange_coffee_Posts.xml"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    res = read(path, format="xml", field_map={"id": "Id", "title": "Title", "text": "Body"},
               strip_html=True)
    assert res.rows_read == 592
    # none lost: every row is a record or a counted quarantine entry; the only quarantined rows
    # are the ones whose Body really is empty in the dump (tag-wiki placeholders)
    assert len(res.records) + len(res.quarantine) == 592
    empty_bodies = {r.get("Id") for r in ET.parse(path).getroot().iter("row")
                    if not (r.get("Body") or "").strip()}
    assert {json.loads(q["raw"])["Id"] for q in res.quarantine} == empty_bodies
    assert set(res.quarantine_counts) <= {"missing_text"}
    first = res.records[0]
    assert first["id"] == "1" and first["title"] == "How should I store whole bean coffee?"
    assert not any("<p>" in r["text"] or "&lt;" in r["text"] for r in res.records)
    # HTML, not regex, rules: an inline tag splits no word, and adjacent paragraphs get their own lines
    assert any("CO2 process" in r["text"] for r in res.records)
    assert not any("CO 2" in r["text"] for r in res.records)


def test_real_bbc_corpus(shared_data):
    res = read(shared_data / "corpora" / "bbc_news_2225.jsonl", metadata=["category"])
    assert res.rows_read == len(res.records) == 2225
    assert res.quarantine == []
    assert {r["metadata"]["category"] for r in res.records} == {
        "business", "entertainment", "politics", "sport", "tech"}
