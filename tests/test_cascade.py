"""The teacher / bulk cascade against two fake oracles: which records each one sees, the worked
examples the bulk oracle is shown, the checks that relabel its mistakes, the metrics, and a rerun that
pays for nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill import jsonl, pipeline
from distill.config import CascadeConfig, LabelConfig
from distill.filterspec import load_filter
from distill.labeling.cascade import in_share
from distill.providers import oracle_config
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
TASK = load_filter(ROOT / "filters" / "news_topic" / "v1")
LABELS = TASK.label_names
KEY_ENV = "DISTILL_TEST_CASCADE_KEY"
N = 40


def records() -> list[dict]:
    return [{"id": f"rec-{i:03d}", "title": f"Story number {i}", "text": f"Report {i} about {LABELS[i % 5]} matters.",
             "metadata": {}} for i in range(N)]


def record_title(body: dict) -> str:
    """The title in the request's last user message: the record asked about (worked examples come first)."""
    last = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    return last.split("Title: ", 1)[1].split("\n", 1)[0]


def truth(title: str) -> str:
    return LABELS[int(title.rsplit(" ", 1)[1]) % 5]


def test_the_cascade_splits_the_work_checks_the_bulk_oracle_and_relabels_its_mistakes(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    rows = records()
    (tmp_path / "passed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cheap_wrong = {r["title"] for r in rows if int(r["id"][-3:]) % 3 == 0}  # the bulk oracle errs on these

    def strong_answer(body):
        return {"label": truth(record_title(body)), "rationale": "strong"}

    def bulk_answer(body):
        title = record_title(body)
        label = LABELS[(LABELS.index(truth(title)) + 1) % 5] if title in cheap_wrong else truth(title)
        return {"label": label, "rationale": "bulk"}

    share, check_share = 0.25, 0.5
    strong_ids = {r["id"] for r in rows if in_share(r["id"], share, "cascade-strong")}
    checked_ids = {r["id"] for r in rows
                   if r["id"] not in strong_ids and in_share(r["id"], check_share, "cascade-check")}
    assert 5 <= len(strong_ids) <= 15 and 8 <= len(checked_ids) <= 22  # the draws are what the test exercises

    with FakeOpenAI(strong_answer) as strong_srv, FakeOpenAI(bulk_answer) as bulk_srv:
        strong = oracle_config(provider="openai", model="strong-model", base_url=strong_srv.base_url,
                               api_key_env=KEY_ENV, price={"input_per_mtok": 10.0, "output_per_mtok": 30.0})
        bulk = {"provider": "openai", "model": "bulk-model", "base_url": bulk_srv.base_url, "api_key_env": KEY_ENV,
                "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.3}}
        cfg = LabelConfig(max_words=200, progress="off", concurrency=2, cache_path=str(tmp_path / "cache.sqlite"),
                          output_dir=str(tmp_path / "labels"),
                          cascade=CascadeConfig(bulk=oracle_config(bulk), share=share, examples=2,
                                                check_share=check_share))
        metrics = pipeline.label(cfg, strong, TASK, tmp_path / "passed.jsonl", metrics_dir=tmp_path)
        strong_seen = [record_title(b) for b in strong_srv.requests]
        bulk_bodies = list(bulk_srv.requests)

        # each oracle saw exactly its records: the strong one its share and the checks, the bulk one the rest
        by_title = {r["title"]: r["id"] for r in rows}
        assert sorted(by_title[t] for t in strong_seen) == sorted(strong_ids | checked_ids)
        assert sorted(by_title[record_title(b)] for b in bulk_bodies) == sorted({r["id"] for r in rows} - strong_ids)

        # the bulk oracle was shown the strong oracle's first two answers as worked examples
        first_two = [r for r in rows if r["id"] in strong_ids][:2]
        messages = bulk_bodies[0]["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
        for (user, assistant), r in zip([messages[1:3], messages[3:5]], first_two):
            assert f"Title: {r['title']}" in user["content"]
            assert json.loads(assistant["content"]) == {"label": truth(r["title"]), "rationale": "strong"}

        out = list(jsonl.read_jsonl(tmp_path / "labels" / "labels.jsonl"))
        assert [r["id"] for r in out] == [r["id"] for r in rows]  # input order, every record
        assert all(len(r["messages"]) == 2 for r in out)  # the student reads the plain prompt
        wrong_ids = {by_title[t] for t in cheap_wrong}
        for r in out:
            expected_from_strong = r["id"] in strong_ids or (r["id"] in checked_ids and r["id"] in wrong_ids)
            assert r["oracle"] == ("openai:strong-model" if expected_from_strong else "openai:bulk-model"), r["id"]
            if r["id"] in checked_ids:
                assert r["cascade_check"] == ("relabelled" if r["id"] in wrong_ids else "agreed")
        c = metrics["cascade"]
        relabelled = len(checked_ids & wrong_ids)
        assert c["strong_records"] == len(strong_ids) and c["bulk_records"] == N - len(strong_ids)
        assert c["checked"] == len(checked_ids) and c["relabelled"] == relabelled
        assert c["agreement"] == round((len(checked_ids) - relabelled) / len(checked_ids), 4)
        assert c["examples"] == 2 and metrics["valid"] == N and metrics["records"] == N
        assert 0 < c["list_cost_usd"]["bulk"] < c["list_cost_usd"]["strong"] < c["strong_alone_usd"]
        assert c["saved_usd"] == pytest.approx(c["strong_alone_usd"] - c["list_cost_usd"]["total"], abs=2e-6)
        # the strong oracle alone: its list cost per record it labelled, for all N records
        per_record = c["list_cost_usd"]["strong"] / (len(strong_ids) + len(checked_ids))
        assert c["strong_alone_usd"] == pytest.approx(per_record * N, rel=1e-4)

        # a rerun is answered from the cache: neither oracle is asked again, the outputs are the same
        again = pipeline.label(cfg, strong, TASK, tmp_path / "passed.jsonl", metrics_dir=tmp_path)
        assert strong_srv.count == len(strong_seen) and bulk_srv.count == len(bulk_bodies)
        assert again["requests"] == 0 and again["cascade"]["relabelled"] == relabelled
        assert list(jsonl.read_jsonl(tmp_path / "labels" / "labels.jsonl")) == out


def test_the_estimate_prices_the_cascade_against_the_strong_oracle_alone(tmp_path, monkeypatch):
    """Nothing cached: the strong oracle alone is its online cost for every record; the cascade is the
    strong oracle on its share and the checks, plus the bulk oracle on the rest with its worked examples."""
    from distill.labeling.estimate import estimate, format_estimate
    from distill.params import compose

    params = compose(ROOT / "conf", ["oracle=openai", "filter=news_topic"])
    strong_price = {"input_per_mtok": 10.0, "output_per_mtok": 30.0, "batch_discount": 0.5}
    params["oracle"].update({"model": "strong-model", "price": strong_price})
    bulk = {**params["oracle"], "model": "bulk-model",
            "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.3, "batch_discount": 0.5}}
    params["label"].update({"cache_path": str(tmp_path / "cache.sqlite"), "output_dir": str(tmp_path / "labels"),
                            "cascade": {"bulk": bulk, "share": 0.2, "examples": 2, "check_share": 0.25}})
    params["filter"]["root"] = str(ROOT / "filters")
    jsonl.write_jsonl(tmp_path / "passed.jsonl", records())
    monkeypatch.chdir(tmp_path)

    est = estimate(params, tmp_path / "passed.jsonl")
    c = est["cascade"]
    strong_alone = est["total"]["cost_usd"]["online"]
    assert c["strong_alone_usd"] == strong_alone and strong_alone > 0
    bulk_only = estimate({**params, "oracle": bulk, "label": {**params["label"], "cascade": None}},
                         tmp_path / "passed.jsonl")
    assert c["bulk_alone_usd"] == bulk_only["total"]["cost_usd"]["online"]
    # by hand: the strong oracle on 0.2 + 0.8 x 0.25 = 40% of the records; the bulk oracle on 80%, each
    # request 2 examples longer (a prompt and an answer at the strong oracle's mean tokens), at $0.1/M
    per_request = (est["total"]["input_tokens"] + est["total"]["output_tokens"]) / est["total"]["requests"]
    extra = 2 * per_request * bulk_only["total"]["requests"] * 0.1 / 1e6
    assert c["cascade_usd"] == pytest.approx(strong_alone * 0.4 + (c["bulk_alone_usd"] + extra) * 0.8, abs=2e-6)
    assert c["saving_usd"] == pytest.approx(strong_alone - c["cascade_usd"], abs=2e-6) and c["saving_usd"] > 0
    assert "cascade with openai:bulk-model" in format_estimate(est)
