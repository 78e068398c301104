"""PostgreSQL sources against a real server (a throwaway cluster, tests/pg_server.py): rows streamed
through a server-side cursor, NULLs, bad rows, a SQL_ASCII database holding Latin-1 bytes, a query
naming a missing column, credentials from the environment only, and a connection killed mid-stream."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from distill.config import PrefilterConfig
from distill.errors import InputError
from distill.params import compose
from distill.sources import CorpusStream, read_corpus
from tests import pg_server

ROOT = Path(__file__).resolve().parents[1]
QUERY = "SELECT id, title, body, published, score FROM articles ORDER BY n"
FIELDS = {"id": "id", "title": "title", "text": "body"}
LONG = "The solar farm near the town works well and it makes power for the grid. " * 10


@pytest.fixture(scope="module")
def pg():
    if pg_server.find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): .ci/run installs Debian's postgresql")
    server = pg_server.start_server()
    try:
        with server.connect() as conn:
            conn.execute("CREATE DATABASE news")
            conn.execute("CREATE DATABASE latin ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
        with server.connect("news") as conn:
            conn.execute("CREATE TABLE articles (n serial, id text, title text, body text, published timestamptz, "
                         "score numeric)")
            conn.execute(
                "INSERT INTO articles (id, title, body, published, score) VALUES "
                "('a1', 'Solar', %(long)s, '2024-01-02 10:00+00', 1.5), "
                "('a2', 'No body', NULL, NULL, NULL), "
                "('a3', 'Blank', '   ', NULL, NULL), "
                "('a1', 'Again', 'Same id as row 1.', NULL, NULL), "
                "(NULL, 'No id', 'A row without an id.', NULL, NULL), "
                "('a5', NULL, %(long)s, '2024-01-03 00:00+00', 2)", {"long": LONG})
            conn.execute("CREATE TABLE big (n int, id text, body text)")
            conn.execute("INSERT INTO big SELECT i, 'b' || i, %s || i FROM generate_series(1, 3000) i", [LONG])
            conn.execute("""CREATE FUNCTION slow_at(i int, at int) RETURNS bool LANGUAGE plpgsql AS $$
                            BEGIN IF i = at THEN PERFORM pg_sleep(60); END IF; RETURN true; END $$""")
        with server.connect("latin") as conn:
            conn.execute("CREATE TABLE t (n int, id text, body text)")
            conn.execute(r"INSERT INTO t VALUES (1, 'ok', 'plain ascii'), (2, 'lat', E'caf\xe9 au lait'), "
                         "(3, 'ok2', 'more ascii')")
        yield server
    finally:
        server.stop()


@pytest.fixture
def password(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg_server.PASSWORD)


def cfg(pg, db="news", query=QUERY, fetch_rows=10_000, **kw) -> PrefilterConfig:
    return PrefilterConfig(input=pg.dsn(db), field_map=kw.pop("field_map", FIELDS),
                           source={"query": query, "fetch_rows": fetch_rows}, **kw)


# ----------------------------------------------------------------------------- reading
def test_rows_nulls_bad_rows_and_duplicates(pg, password):
    res = read_corpus(cfg(pg, metadata=["published", "score"]))
    assert [(r["id"], r["title"]) for r in res.records] == [("a1", "Solar"), ("query:5", "No id"), ("a5", "")]
    assert res.records[0]["metadata"] == {"published": "2024-01-02T10:00:00+00:00", "score": "1.5"}
    got = [(q["line"], q["item"], q["row"], q["reason"]) for q in res.quarantine]
    assert got == [(None, 1, 2, "missing_text"), (None, 2, 3, "missing_text"), (None, 3, 4, "duplicate_id")]
    assert res.quarantine[2]["detail"] == "id 'a1' already used at row 1"
    assert all(q["file"] == pg.dsn("news") for q in res.quarantine)  # the DSN, which holds no password
    assert res.synthesised_ids == 1 and res.columns == ["id", "title", "body", "published", "score"]


def test_rows_come_through_a_server_side_cursor_in_batches(pg, password):
    stream = CorpusStream(cfg(pg, query="SELECT id, body FROM big ORDER BY n", fetch_rows=50, batch_rows=100))
    batches = stream.batches()
    first = next(batches)
    assert len(first) == 100
    with pg.connect() as other:
        state = other.execute("SELECT query FROM pg_stat_activity WHERE application_name = 'distill'").fetchall()
    assert state and state[0][0].lstrip().upper().startswith(("FETCH", "DECLARE"))  # not one big SELECT
    assert sum(len(b) for b in batches) == 2900 and stream.rows_read == 3000


def test_a_sql_ascii_database_holding_latin1_bytes(pg, password):
    res = read_corpus(cfg(pg, "latin", "SELECT id, body FROM t ORDER BY n"))
    assert [r["id"] for r in res.records] == ["ok", "ok2"]
    (q,) = res.quarantine
    assert (q["row"], q["reason"]) == (2, "undecodable_bytes")
    assert "column 'body' is not valid UTF-8 (byte 0xe9" in q["detail"] and "SQL_ASCII" in q["detail"]
    assert "caf\ufffd au lait" in q["raw"]


def test_a_query_naming_a_missing_column_or_table(pg, password):
    with pytest.raises(InputError) as e:
        read_corpus(cfg(pg, query="SELECT id, title, bodyy FROM articles"))
    msg = str(e.value)
    assert "the query names a column the database lacks (bodyy)" in msg and "PostgreSQL says" in msg
    assert "prefilter.source.query is 'SELECT id, title, bodyy FROM articles'" in msg
    with pytest.raises(InputError, match=r'relation "nope" does not exist'):
        read_corpus(cfg(pg, query="SELECT * FROM nope"))
    with pytest.raises(InputError, match=r"prefilter\.field_map\.text is 'text'.*Columns in the query's result: "
                                         r"'id', 'title', 'body'"):
        read_corpus(cfg(pg, field_map={"text": "text"}))


# ----------------------------------------------------------------------------- credentials
def test_a_password_in_params_is_refused(pg):
    for bad in ({"input": pg.dsn(password=True)},
                {"input": f"{pg.dsn()}?password=x"},
                {"source": {"dsn": "host=127.0.0.1 user=u password=secret dbname=news"}}):
        with pytest.raises(ValidationError, match="holds a password.*PGPASSWORD.*dsn_env"):
            PrefilterConfig(**bad)


def test_the_dsn_from_an_environment_variable_and_a_wrong_password(pg, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("NEWS_DSN", pg.dsn("news", password=True))
    c = PrefilterConfig(field_map=FIELDS, source={"dsn_env": "NEWS_DSN", "query": QUERY})
    res = read_corpus(c)
    assert len(res.records) == 3
    assert all(pg_server.PASSWORD not in q["file"] for q in res.quarantine)
    assert res.quarantine[0]["file"] == f"$NEWS_DSN ({pg.dsn('news')})"
    monkeypatch.setenv("NEWS_DSN", pg.dsn("news").replace("@", ":wrong-secret-1@"))
    with pytest.raises(InputError) as e:
        read_corpus(c)
    assert "cannot connect" in str(e.value) and "password authentication failed" in str(e.value)
    assert "wrong-secret-1" not in str(e.value)


# ----------------------------------------------------------------------------- the stage
def _workdir(tmp_path: Path, overrides: list[str]) -> Path:
    params = compose(ROOT / "conf", [f"filter.root={ROOT / 'filters'}", "prefilter.metadata=[]", *overrides])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def _stage(name: str, cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PGPASSWORD": pg_server.PASSWORD,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(ROOT / "stages" / f"{name}.py")], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_the_stage_reads_postgres_and_snapshots_the_rows(pg, tmp_path):
    # two rows repeat one long text on purpose: dedup (tested in test_dedup.py) stays out of this count
    cwd = _workdir(tmp_path, [f"prefilter.input={pg.dsn('news')}", f"prefilter.source.query='{QUERY}'",
                              "prefilter.field_map.text=body", "dedup.exact=false", "dedup.minhash.enabled=false"])
    _, err = _stage("prefilter", cwd).communicate(timeout=120)
    assert "error" not in err, err
    metrics = json.loads((cwd / "metrics/prefilter.json").read_text())
    snap = cwd / "data/prefiltered/source_snapshot.jsonl"
    assert metrics["rows_read"] == 6 and metrics["quarantined"] == 3 and metrics["passed"] == 2
    assert metrics["source_snapshot"] == {"path": str(Path("data/prefiltered/source_snapshot.jsonl")), "rows": 6,
                                          "sha256": hashlib.sha256(snap.read_bytes()).hexdigest()}
    rows = [json.loads(x) for x in snap.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a1", "a2", "a3", "a1", None, "a5"]  # every row as read, bad ones too
    assert pg_server.PASSWORD not in err + (cwd / "params.yaml").read_text()


def test_a_connection_killed_mid_stream_fails_the_stage_and_leaves_nothing_complete(pg, tmp_path):
    query = "SELECT id, body FROM big WHERE slow_at(n, 1500)"  # row 1500 makes the server wait
    cwd = _workdir(tmp_path, [f"prefilter.input={pg.dsn('news')}", f"prefilter.source.query='{query}'",
                              "prefilter.field_map.text=body", "prefilter.batch_rows=100",
                              "prefilter.source.fetch_rows=100"])
    out_dir = cwd / "data/prefiltered"
    out_dir.mkdir(parents=True)
    (out_dir / "passed.jsonl").write_text('{"id": "stale"}\n')  # an earlier run's output
    proc = _stage("prefilter", cwd)
    with pg.connect() as other:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = other.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'distill' "
                                 "AND wait_event = 'PgSleep'").fetchall()
            if pids:
                break
            time.sleep(0.1)
        assert pids, "the stage never reached the slow row"
        other.execute("SELECT pg_terminate_backend(%s)", [pids[0][0]])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "the database connection failed after 1400 row(s)" in err and "terminating connection" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == []  # no passed.jsonl (the stale one went too), no temp files


def test_the_snapshot_stage_copies_the_table_into_the_input_file(pg, tmp_path):
    snap = "data/snapshot/news.jsonl"
    cwd = _workdir(tmp_path, [f"prefilter.input={snap}", f"prefilter.source.dsn={pg.dsn('latin')}",
                              "prefilter.source.query='SELECT id, body FROM t ORDER BY n'",
                              "prefilter.field_map.text=body"])
    _, err = _stage("snapshot", cwd).communicate(timeout=120)
    assert "error" not in err, err
    metrics = json.loads((cwd / "metrics/snapshot.json").read_text())
    data = (cwd / snap).read_bytes()
    assert metrics["rows"] == 3 and metrics["sha256"] == hashlib.sha256(data).hexdigest()
    assert b"caf\xe9 au lait" in data  # bytes as the database holds them
    _, err = _stage("prefilter", cwd).communicate(timeout=120)
    quarantine = [json.loads(x) for x in (cwd / "data/prefiltered/quarantine.jsonl").read_text().splitlines()]
    assert [(q["file"], q["line"], q["reason"]) for q in quarantine] == [(snap, 2, "undecodable_bytes")]
    assert not (cwd / "data/prefiltered/source_snapshot.jsonl").exists()  # the input is a file: no second copy
    # an unchanged table gives the same bytes (DVC sees no change); a changed one does not
    _stage("snapshot", cwd).communicate(timeout=120)
    assert (cwd / snap).read_bytes() == data
    with pg.connect("latin") as conn:
        conn.execute("UPDATE t SET body = 'changed' WHERE n = 3")
    _stage("snapshot", cwd).communicate(timeout=120)
    assert json.loads((cwd / "metrics/snapshot.json").read_text())["sha256"] != metrics["sha256"]


@pytest.mark.slow
def test_the_readme_snapshot_stage_reruns_nothing_when_the_table_is_unchanged(pg, tmp_path):
    """The README's snapshot stage in a real DVC project: always run, but prefilter reruns only when the
    table's rows changed."""
    import re
    import shutil

    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"<!-- snapshot-stage:start -->\n```yaml\n(.*?)```", readme, re.DOTALL).group(1)
    repo = tmp_path / "project"
    for name in ("stages", "src", "filters", "conf"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "local.yaml"))
    dvc_yaml = (ROOT / "dvc.yaml").read_text().replace("stages:\n", "stages:\n" + snippet, 1)
    (repo / "dvc.yaml").write_text(dvc_yaml)
    params = compose(ROOT / "conf", ["prefilter.input=data/snapshot/news.jsonl",
                                     f"prefilter.source.dsn={pg.dsn('news')}",
                                     "prefilter.source.query='SELECT id, body FROM big ORDER BY n'",
                                     "prefilter.field_map.text=body", "prefilter.metadata=[]"])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PGPASSWORD": pg_server.PASSWORD, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(repo / "src"), os.environ.get("PYTHONPATH", "")])}

    def sh(*args: str) -> str:
        proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    sh("git", "init", "-q")
    sh(str(bindir / "dvc"), "init", "-q")
    ran = re.compile(r"Running stage '(\w+)'")
    assert ran.findall(sh(str(bindir / "dvc"), "repro", "prefilter")) == ["snapshot", "prefilter"]
    assert json.loads((repo / "metrics/snapshot.json").read_text())["rows"] == 3000
    assert ran.findall(sh(str(bindir / "dvc"), "repro", "prefilter")) == ["snapshot"]  # same rows: no rerun
    with pg.connect("news") as conn:
        conn.execute("UPDATE big SET body = body || ' (edited)' WHERE n = 7")
    assert ran.findall(sh(str(bindir / "dvc"), "repro", "prefilter")) == ["snapshot", "prefilter"]
    with pg.connect("news") as conn:
        conn.execute("UPDATE big SET body = replace(body, ' (edited)', '') WHERE n = 7")
