"""The translate kind: its metrics on hand-computed fixtures, its checks, gold, and a labelling run of
real energy headlines against the fake OpenAI server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.filterspec import load_filter
from distill.tasks import KINDS, TranslateTask
from tests.fakes.openai_server import FakeOpenAI, first_user_message, turn
from tests.oracle_harness import checked, fake_oracle, label_records, set_key
from tests.scripted_oracles import Translator, german, headline_and_lead

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_filter(ROOT / "filters" / "translate_energy_news" / "v1")
KEY_ENV = "DISTILL_TEST_TRANSLATE_KEY"


def _row(i: str, oracle: str, gold: str | None = None) -> dict:
    """A test split row as the split writes it for a translate task."""
    row = {"id": i, "translation": oracle, "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"},
        {"role": "assistant", "content": json.dumps({"translation": oracle})}]}
    return row if gold is None else {**row, "gold": gold}


def _pred(i: str, translation: str | None) -> dict:
    answer = None if translation is None else {"translation": translation}
    return {"id": i, "answer": answer, "raw": json.dumps(answer), "invalid_reason": None if answer else "bad_json"}


def test_the_filter_is_a_translate_task():
    assert KINDS["translate"] is TranslateTask and isinstance(SPEC, TranslateTask)
    assert SPEC.summary() == "translate into German (from English)"
    messages = SPEC.render({"id": "x", "title": "Wind farm opens", "text": "A 500 MW farm opened today."})
    assert "from English into German" in messages[1]["content"]
    assert "Headline: Wind farm opens\nLead: A 500 MW farm opened today." in messages[1]["content"]
    assert SPEC.json_schema["required"] == ["translation"]


# ----------------------------------------------------------------------------- metrics by hand
def test_corpus_chrf_by_hand_with_an_invalid_answer_as_an_empty_translation():
    """Character n-grams (spaces removed), orders 1-6, averaged over the orders both sides have, F-beta 2.

    abce vs abcd: 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0/1 (precision = recall).
    xy vs xy: 1-grams 2/2, 2-grams 1/1. Corpus statistics are summed before dividing:
    1-grams 5/6, 2-grams 3/4, 3-grams 1/2, 4-grams 0 -> P = R = (5/6 + 3/4 + 1/2 + 0) / 4 = 25/48.
    """
    truth = [_row("t1", "abcd", gold="abcd"), _row("t2", "xy")]
    metrics, rows, parts = SPEC.evaluate(truth, [_pred("t1", "abce"), _pred("t2", "xy")])
    assert metrics["chrf"] == round(100 * 25 / 48, 4) == 52.0833
    assert metrics["chrf_valid_only"] == metrics["chrf"] and metrics["valid_json_share"] == 1.0
    # against the reference (t1 only): abce vs abcd, (3/4 + 2/3 + 1/2 + 0) / 4 = 23/48; the oracle's is exact
    assert metrics["n_gold"] == 1 and metrics["chrf_gold"] == round(100 * 23 / 48, 4) == 47.9167
    assert metrics["oracle_chrf_gold"] == 100.0
    assert rows == [{"id": "t1", "actual": "oracle", "predicted": "chrF 25-50"},
                    {"id": "t2", "actual": "oracle", "predicted": "chrF 75-100"}]
    assert {p["name"]: p["value"] for p in parts}["chrF vs oracle"] == 52.0833

    # t2 did not validate: it is the empty translation, which matches none of xy's n-grams.
    # 1-grams: P 3/4, R 3/6; 2-grams: P 2/3, R 2/4; 3-grams: 1/2, 1/2; 4-grams 0, 0
    # P = 23/48, R = (1/2 + 1/2 + 1/2 + 0) / 4 = 3/8, F = 5PR / (4P + R)
    metrics, rows, _ = SPEC.evaluate(truth, [_pred("t1", "abce"), _pred("t2", None)])
    p, r = 23 / 48, 3 / 8
    assert metrics["chrf"] == round(100 * 5 * p * r / (4 * p + r), 4) == 39.2045
    assert metrics["chrf_valid_only"] == 47.9167  # t1 alone
    assert metrics["valid_json_share"] == 0.5 and rows[1]["predicted"] == "invalid"


def test_corpus_bleu_by_hand():
    """the cat sat on the mat vs the cat sat on a mat: 1-grams 5/6, 2-grams 3/5, 3-grams 2/4, 4-grams
    1/3, equal lengths (no brevity penalty): BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** (1/4)."""
    truth = [_row("t1", "the cat sat on a mat", gold="the cat sat on the mat")]
    metrics, _, _ = SPEC.evaluate(truth, [_pred("t1", "the cat sat on the mat")])
    assert metrics["bleu"] == round(100 * (1 / 12) ** 0.25, 4) == 53.7285
    assert metrics["bleu_gold"] == 100.0 and metrics["oracle_bleu_gold"] == 53.7285
    metrics, _, _ = SPEC.evaluate(truth, [_pred("t1", None)])
    assert metrics["bleu"] == 0.0 and metrics["chrf"] == 0.0


def test_no_reference_no_gold_metrics():
    metrics, _, parts = SPEC.evaluate([_row("t1", "xy")], [_pred("t1", "xy")])
    assert metrics["n_gold"] == 0 and metrics["chrf_gold"] is None and metrics["bleu_gold"] is None
    assert [p["name"] for p in parts] == ["chrF vs oracle", "BLEU vs oracle"]


def test_oracle_agreement_is_the_chrf_of_the_second_against_the_first():
    first = {"a": {"translation": "abcd"}, "b": {"translation": "xy"}}
    second = {"a": {"translation": "abce"}, "b": {"translation": "xy"}, "c": {"translation": "zz"}}
    result = SPEC.agreement(first, second, ["a", "b", "c"])
    assert result["n"] == 2 and result["chrf"] == 52.0833  # the corpus above
    assert set(SPEC.FLOOR) <= set(result)


# ----------------------------------------------------------------------------- checks and gold
RECORD = {"id": "r", "title": "Dubai launches solar park phase",
          "text": "The third phase will power more than 240,000 homes"}


@pytest.mark.parametrize("translation, problem", [
    ("   ", "empty"),
    ("The third phase will power more than 240,000 homes", "unchanged"),
    ("the third phase will power more than 240,000 homes!", "unchanged"),  # case and punctuation aside
    ("Dubai launches solar park phase\n\nThe third phase will power more than 240,000 homes", "unchanged"),
    ("[de] Dubai startet die dritte Phase", None),
])
def test_check_sends_back_empty_and_unchanged_translations(translation, problem):
    said = SPEC.check({"translation": translation}, RECORD)
    assert (said is None) if problem is None else (problem in said and "German" in said)


def test_a_short_source_may_stay_the_same_and_a_same_language_task_may_repeat_it():
    assert SPEC.check({"translation": "Ørsted"}, {"id": "r", "title": "", "text": "Ørsted"}) is None
    rewrite = SPEC.model_copy(update={"source_language": "german"})  # case-insensitive: the same language
    assert rewrite.same_language and rewrite.check({"translation": RECORD["text"]}, RECORD) is None


def test_gold_agrees_from_the_sentence_chrf_and_with_gold_replaces_the_translation():
    row = {"id": "r", **SPEC.labelled({"translation": "abcd"})}
    assert row["label"] == {"translation": "abcd"} and row["translation"] == "abcd"
    assert SPEC.gold_agrees(row, "abcd") is True
    assert SPEC.gold_agrees(row, "abce") is False  # 47.9 < gold_min_chrf 60
    assert SPEC.gold_agrees(row, None) is None and SPEC.gold_agrees(row, 5) is None
    assert SPEC.with_gold(row, "the reference") == {"id": "r", "label": {"translation": "the reference"},
                                                     "translation": "the reference"}


# ----------------------------------------------------------------------------- labelling real headlines
@pytest.fixture
def srv():
    yield from checked(FakeOpenAI())


def test_labelling_energy_headlines_reasks_unchanged_fails_blank_and_checks_gold(tmp_path, srv, monkeypatch,
                                                                                 energy_records):
    set_key(monkeypatch, KEY_ENV, "sk-test-")
    with_lead = [r for r in energy_records if r["text"] != r["title"]][:4]
    a, b, c, d = with_lead
    srv.responder = Translator(same_first={b["title"]}, blank={c["title"]})
    records = [{**a, "gold": german(a["title"], a["text"])},  # the reference is the oracle's translation
               {**b, "gold": "Etwas ganz anderes"},
               c, d]
    cfg = fake_oracle("openai", "fake-translator", srv.base_url, KEY_ENV)
    valid, invalid, stats = label_records(tmp_path, cfg, SPEC, records, max_words=400)
    assert set(valid) == {a["title"], b["title"], d["title"]} and set(invalid) == {c["title"]}
    assert valid[a["title"]]["translation"] == german(a["title"], a["text"])
    assert valid[a["title"]]["gold_agrees"] is True and valid[b["title"]]["gold_agrees"] is False
    assert "gold" not in valid[d["title"]]
    assert stats["gold_checked"] == 2 and stats["gold_agreed"] == 1
    # b: the source unchanged, sent back with the reason, then translated
    assert valid[b["title"]]["attempts"] == 2
    second = [body for body in srv.requests if headline_and_lead(first_user_message(body))[0] == b["title"]
              and turn(body) == 1]
    assert len(second) == 1 and "unchanged" in second[0]["messages"][-1]["content"]
    # c: blank three times
    assert invalid[c["title"]]["reason"] == "task" and len(invalid[c["title"]]["attempts"]) == 3
    assert all("empty" in at["detail"] for at in invalid[c["title"]]["attempts"])
    assert stats["requests"] == srv.count == 1 + 2 + 3 + 1


def test_distill_report_prints_the_translate_headline_and_floor(tmp_path):
    from click.testing import CliRunner

    from distill.cli import main

    metrics = {"student": "lora", "n_test": 2, "valid_json_share": 0.5, "chrf": 39.2045, "bleu": 0.0,
               "chrf_gold": None, "bleu_gold": None, "oracle_floor": {"chrf": 90.1, "bleu": 70.2}}
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    result = CliRunner().invoke(main, ["report", "--metrics", str(tmp_path / "eval.json"),
                                       "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[3:]]
    assert rows == [["n_test", "2"], ["valid_json_share", "0.5"], ["chrf", "39.2045"], ["bleu", "0.0"],
                    ["chrf_gold", "-"], ["bleu_gold", "-"], ["oracle", "vs", "oracle", "(floor):"],
                    ["chrf", "90.1"], ["bleu", "70.2"]]
