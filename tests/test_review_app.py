"""The review app through HTTP (FastAPI's TestClient): filters, saves, validation, relabelling, the
oracle repair (the real engine and cache against the fake OpenAI server), analytics, and the CLI's
export and report."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys

import pytest
import yaml
from fastapi.testclient import TestClient

from distill.review.app import ReviewState, create_app
from tests.fakes.openai_server import FakeOpenAI, Reply, user_messages
from tests.oracle_harness import checked, set_key
from tests.review_project import ROOT, env_for, make_project, read_jsonl


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return info


@pytest.fixture
def app(project):
    state = ReviewState("params.yaml", ".distill/reviews.sqlite", reviewer="ann")
    with TestClient(create_app(state)) as client:
        client.state = state
        yield client


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)">', html)


def _form(app, rid: str, **changes: str) -> dict[str, str]:
    item = app.state.dataset.items[rid]
    form = {"answer_hash": item.key, "is_correct": "", "note": "", "then": "stay"}
    form.update({f"f_{k}": str(v) for k, v in item.label.items()})
    form.update(changes)
    return form


def test_the_table_filters_by_tier_oracle_flag_and_review_status(app, project):
    rows = project["rows"]
    assert _ids(app.get("/records").text) == [*rows, "rec-bad"]
    tier = rows["rec-1"]["tier"]
    assert _ids(app.get("/records", params={"category": tier}).text) == [r for r in rows if rows[r]["tier"] == tier]
    assert _ids(app.get("/records", params={"flag": "reasked"}).text) == ["rec-1"]
    assert _ids(app.get("/records", params={"flag": "invalid"}).text) == ["rec-bad"]
    assert _ids(app.get("/records", params={"flag": "gold_disagrees"}).text) == ["rec-3"]
    assert _ids(app.get("/records", params={"flag": "oracles_disagree"}).text) == ["rec-4"]
    assert _ids(app.get("/records", params={"flag": "student_error"}).text) == ["rec-4", "rec-6"]
    assert _ids(app.get("/records", params={"oracle": "fake:oracle-2"}).text) == []
    app.post("/records/rec-5/review", data=_form(app, "rec-5", is_correct="true"))
    assert _ids(app.get("/records", params={"status": "reviewed"}).text) == ["rec-5"]
    assert "rec-5" not in _ids(app.get("/records", params={"status": "unreviewed"}).text)


def test_a_verdict_is_saved_exported_and_counted(app, tmp_path):
    r = app.post("/records/rec-0/review", data=_form(app, "rec-0", is_correct="false", note="wrong tier",
                                                     crit_scale="wrong", then="next"), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/records/rec-1"  # save and next
    saved = read_jsonl(tmp_path / "data/reviews/reviews.jsonl")
    assert [(s["id"], s["is_correct"], s["note"], s["criteria"], s["corrected"], s["reviewer"]) for s in saved] == [
        ("rec-0", False, "wrong tier", {"scale": "wrong"}, None, "ann")]
    metrics = json.loads((tmp_path / "metrics/review.json").read_text())
    assert (metrics["reviewed"], metrics["incorrect"], metrics["precision"]) == (1, 1, 0.0)
    page = app.get("/records/rec-0").text
    assert 'id="verdict-incorrect" checked' in page and "wrong tier" in page


def test_a_correction_is_validated_before_anything_is_saved(app, tmp_path):
    r = app.post("/records/rec-2/review", data=_form(app, "rec-2", f_scale="42"))
    assert r.status_code == 422
    assert "at scale: 42 is greater than the maximum of 10" in r.text
    r = app.post("/records/rec-2/review", data=_form(app, "rec-2", f_scale="42", is_correct="false", note="too big",
                                                     crit_scale="wrong"))
    assert r.status_code == 422
    # what was typed is still there to fix: the field, the verdict, the rating, the note
    assert 'value="42"' in r.text and 'id="verdict-incorrect" checked' in r.text and ">too big</textarea>" in r.text
    assert 'name="crit_scale" value="wrong" checked' in r.text
    assert app.state.store.all() == [] and read_jsonl(tmp_path / "data/reviews/reviews.jsonl") == []
    r = app.post("/records/rec-2/review", data=_form(app, "rec-2", f_scale="10", note="bigger than that"))
    assert r.status_code == 200 and 'id="saved"' in r.text
    (saved,) = read_jsonl(tmp_path / "data/reviews/reviews.jsonl")
    label = app.state.dataset.items["rec-2"].label
    assert saved["corrected"] == {**label, "scale": 10} and saved["is_correct"] is False


def test_record_text_is_escaped(app, project):
    page = app.get("/records/rec-2").text
    assert "<script>alert(" not in page
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; Solar farm" in page
    assert "<script>alert(" not in app.get("/records").text


def _status(app, rid: str) -> str:
    return re.search(rf'data-id="{rid}">.*?class="status">([^<]+)<', app.get("/records").text, re.DOTALL)[1]


def test_a_relabelled_record_needs_review_again(app, project, tmp_path):
    old_form = _form(app, "rec-0", is_correct="true")
    app.post("/records/rec-0/review", data=old_form)
    assert _status(app, "rec-0") == "correct"
    labels = tmp_path / "data/labels/labels.jsonl"
    rows = read_jsonl(labels)
    rows[0]["label"] = {**rows[0]["label"], "reasoning": "relabelled by a new oracle run"}
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _status(app, "rec-0") == "needs review"
    r = app.post("/records/rec-0/review", data=old_form)  # a page loaded before the relabel
    assert r.status_code == 409 and "relabelled" in r.text
    assert "Reviews of earlier answers" in app.get("/records/rec-0").text


def test_analytics_page_has_its_plots_and_numbers(app):
    app.post("/records/rec-0/review", data=_form(app, "rec-0", is_correct="true"))
    page = app.get("/analytics").text
    for plot in ("cost", "tokens", "activity", "reasks", "categories", "criteria", "reviews", "confusion",
                 "student_errors"):
        assert re.search(rf'id="plot-{plot}"><svg', page), plot
    assert "8 paid requests" in page and "1 transport retries" in page and "1 rate-limited (2.0 s Retry-After)" in page
    assert "oracle vs gold: 0.0% of 1 records" in page
    assert "tier agreement 0.75" in page and "1 of 1 marked correct" in page


# ----------------------------------------------------------------------------- repair by the oracle
@pytest.fixture
def oracle(monkeypatch, project, tmp_path):
    set_key(monkeypatch, "REVIEW_TEST_KEY", "sk-test-")
    spec = project["spec"]

    def responder(body):
        if any("impossible" in m for m in user_messages(body)):
            return Reply.label({**{d: 11 for d in spec.dimension_names}, "reasoning": "x"})
        return {**{d: 10 for d in spec.dimension_names}, "reasoning": "repaired: in commercial operation"}

    for srv in checked(FakeOpenAI(responder=responder)):
        params = yaml.safe_load((tmp_path / "params.yaml").read_text())
        params["oracle"] = {"provider": "openai", "model": "fake-repair", "base_url": srv.base_url,
                            "api_key_env": "REVIEW_TEST_KEY", "request_timeout_s": 30, "sdk_max_retries": 0}
        params["label"]["max_attempts"] = 2
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        yield srv


def test_the_oracle_repairs_an_answer_through_the_engine_and_cache(oracle, app, project, tmp_path):
    spec = project["spec"]
    r = app.post("/records/rec-3/repair", data={"answer_hash": app.state.dataset.items["rec-3"].key,
                                                 "instruction": "It has been running for two years."})
    assert r.status_code == 200 and 'id="proposal"' in r.text
    assert oracle.count == 1
    sent = oracle.requests[0]["messages"]
    row = project["rows"]["rec-3"]
    assert sent[:2] == row["messages"]  # the record's own prompt, as the label stage sent it
    assert json.loads(sent[2]["content"]) == row["label"] and "running for two years" in sent[3]["content"]
    cache = sqlite3.connect(tmp_path / ".distill/cache/llm.sqlite")
    assert cache.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1  # cached
    assert app.state.store.all() == []  # proposed, not saved
    r = app.post("/records/rec-3/repair/accept", data={"answer_hash": app.state.dataset.items["rec-3"].key})
    (saved,) = read_jsonl(tmp_path / "data/reviews/reviews.jsonl")
    assert saved["corrected"] == {**{d: 10 for d in spec.dimension_names},
                                  "reasoning": "repaired: in commercial operation"}
    assert saved["is_correct"] is False and "running for two years" in saved["note"]
    # the same instruction again is answered from the cache
    app.post("/records/rec-3/repair", data={"answer_hash": app.state.dataset.items["rec-3"].key,
                                            "instruction": "It has been running for two years."})
    assert oracle.count == 1


def test_a_repair_that_never_validates_shows_why_and_proposes_nothing(oracle, app):
    r = app.post("/records/rec-3/repair", data={"answer_hash": app.state.dataset.items["rec-3"].key,
                                                 "instruction": "make it impossible"})
    assert r.status_code == 502 and "did not validate (schema)" in r.text and "greater than the maximum" in r.text
    assert oracle.count == 2  # re-asked once with the validator's message (label.max_attempts=2)
    assert app.state.store.get_repair("rec-3", app.state.dataset.items["rec-3"].key) is None


# ----------------------------------------------------------------------------- the CLI
def _distill(project_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=project_dir, env=env_for(project_dir),
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_export_and_html_report(app, tmp_path):
    app.post("/records/rec-0/review", data=_form(app, "rec-0", is_correct="true"))
    (tmp_path / "data/reviews/reviews.jsonl").write_text("")
    out = _distill(tmp_path, "review", "export")
    assert out.returncode == 0, out.stderr
    assert "1 of 8 records reviewed, 100.0% correct" in out.stdout
    assert [r["id"] for r in read_jsonl(tmp_path / "data/reviews/reviews.jsonl")] == ["rec-0"]
    out = _distill(tmp_path, "report", "--html", "reports/analytics.html")
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "reports/analytics.html").read_text()
    assert html.count("<svg") >= 8 and "<style>" in html and "/static/" not in html  # standalone file


def test_cli_sample_fills_the_queue(project, tmp_path):
    out = subprocess.run([sys.executable, "-c", (
        "import sys; from distill.cli import _queue_sample; _queue_sample('params.yaml', 'q.sqlite', 2, "
        "'disagreement', 0)")], cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "review queue: 2 record(s) picked by disagreement" in out.stdout
    db = sqlite3.connect(tmp_path / "q.sqlite")
    assert db.execute("SELECT record_id, strategy FROM queue ORDER BY position").fetchall() == [
        ("rec-3", "disagreement"), ("rec-4", "disagreement")]


def test_cli_starts_fast_without_importing_the_web_stack():
    code = ("import sys, distill.cli; heavy = [m for m in ('fastapi', 'uvicorn', 'matplotlib', 'jinja2', 'selenium') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], env=env_for(ROOT), capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "[]", out.stderr
