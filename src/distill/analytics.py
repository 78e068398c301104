"""Where the money and the errors went: the analytics page of ``distill review`` and ``distill report --html``.

Read from the pipeline's files: ``events.jsonl`` (each paid request with its tokens and cost, retries,
rate limits; else the response cache's ``created_at`` and token counts), ``labels.jsonl`` and
``invalid.jsonl`` (categories, answers, re-asks and why), ``metrics/oracle_agreement.json`` (one oracle
against another), gold answers and other oracles in ``merge.extra_dir``, the reviews, and the
student's ``confusion.json``. :func:`collect` returns plain data; :func:`plots` turns it into SVG.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.review.dataset import Dataset, criteria
from distill.review.export import review_stats
from distill.review.store import ReviewStore


def _read(path: Path) -> list[dict[str, Any]]:
    return list(jsonl.read_jsonl(path)) if path.is_file() else []


def _spend_from_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    done = sorted((e for e in events if e.get("event") == "request_done"), key=lambda e: e["t"])
    t0 = done[0]["t"] if done else 0.0
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0, "input_tokens": 0, "output_tokens": 0,
                                                           "cost_usd": 0.0, "t": [], "cum_cost": [], "cum_tokens": []})
    for e in done:
        p = per[e.get("oracle", "?")]
        p["requests"] += 1
        p["input_tokens"] += int(e.get("input_tokens") or 0)
        p["output_tokens"] += int(e.get("output_tokens") or 0)
        p["cost_usd"] += float(e.get("cost_usd") or 0)
        p["t"].append(round(e["t"] - t0, 3))
        p["cum_cost"].append(round(p["cost_usd"], 8))
        p["cum_tokens"].append(p["input_tokens"] + p["output_tokens"])
    return {"source": "events", "providers": dict(per)}


def _spend_from_cache(cache_path: Path) -> dict[str, Any]:
    """Tokens per provider over time from the response cache (no cost: prices are not stored there)."""
    per: dict[str, dict[str, Any]] = {}
    if not cache_path.is_file():
        return {"source": "none", "providers": per}
    db = sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT provider, model, response, created_at FROM responses ORDER BY created_at").fetchall()
    finally:
        db.close()
    t0 = rows[0][3] if rows else 0.0
    for provider, model, response, created in rows:
        r = json.loads(response)
        p = per.setdefault(f"{provider}:{model}", {"requests": 0, "input_tokens": 0, "output_tokens": 0,
                                                   "cost_usd": None, "t": [], "cum_cost": [], "cum_tokens": []})
        p["requests"] += 1
        p["input_tokens"] += int(r.get("input_tokens") or 0)
        p["output_tokens"] += int(r.get("output_tokens") or 0)
        p["t"].append(round(created - t0, 3))
        p["cum_tokens"].append(p["input_tokens"] + p["output_tokens"])
    return {"source": "cache", "providers": per}


def _activity(events: list[dict[str, Any]], labels: list[dict[str, Any]],
              invalid: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = Counter(e.get("event") for e in events)
    waits = sum(float(e.get("delay_s") or 0) for e in events if e.get("event") == "retry")
    rate_wait = sum(float(e.get("retry_after") or 0) for e in events if e.get("event") == "rate_limited")
    reasks: Counter[str] = Counter()
    for row in invalid:  # every failed attempt of a record that never validated, by reason
        for a in row.get("attempts") or []:
            if a.get("reason"):
                reasks[a["reason"]] += 1
    validated_late = sum(int(r.get("attempts") or 1) - 1 for r in labels)
    if validated_late:
        reasks["re-asked, then valid (reason not kept)"] += validated_late
    return {"requests": kinds.get("request_done", 0), "retries": kinds.get("retry", 0),
            "rate_limited": kinds.get("rate_limited", 0), "retry_wait_s": round(waits, 3),
            "rate_limit_wait_s": round(rate_wait, 3), "invalid_records": len(invalid),
            "invalid_by_reason": dict(Counter(r.get("reason") for r in invalid)),
            "reasks_by_reason": dict(reasks.most_common())}


def _distributions(ds: Dataset) -> dict[str, Any]:
    answered = [i for i in ds.ordered() if i.row is not None]
    cats = Counter(ds.row_category(i.row) for i in answered)
    per_criterion: dict[str, Counter[Any]] = {}
    for name in criteria(ds.schema):
        per_criterion[name] = Counter(i.label.get(name) for i in answered if name in (i.label or {}))
    return {"categories": {c: cats.get(c, 0) for c in ds.categories()},
            "criteria": {k: dict(sorted(v.items(), key=lambda kv: str(kv[0]))) for k, v in per_criterion.items()}}


def _gold(ds: Dataset) -> dict[str, Any]:
    with_gold = [i for i in ds.ordered() if i.gold is not None and i.row is not None]
    with_other = [i for i in ds.ordered() if i.others and i.row is not None]
    agree = sum(not ds.disagree(i.label, i.gold["label"]) for i in with_gold)
    other_agree = sum(all(not ds.disagree(i.label, o["label"]) for o in i.others) for i in with_other)
    return {"gold_n": len(with_gold), "gold_agreement": round(agree / len(with_gold), 4) if with_gold else None,
            "oracles_n": len(with_other),
            "oracles_agreement": round(other_agree / len(with_other), 4) if with_other else None}


def _student(ds: Dataset) -> dict[str, Any]:
    path = ds.eval_dir / "confusion.json"
    rows = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    actual = [c for c in ds.categories()] or sorted({r["actual"] for r in rows})
    actual += sorted({r["actual"] for r in rows} - set(actual))
    predicted = actual + sorted({r["predicted"] for r in rows} - set(actual))
    matrix = [[sum(1 for r in rows if r["actual"] == a and r["predicted"] == p) for p in predicted] for a in actual]
    errors = {a: {"n": sum(m), "wrong": sum(m) - m[i]} for i, (a, m) in enumerate(zip(actual, matrix)) if sum(m)}
    return {"n": len(rows), "actual": actual, "predicted": predicted, "matrix": matrix, "errors_by_tier": errors}


def collect(dataset: Dataset, store: ReviewStore | None = None) -> dict[str, Any]:
    from distill.config import read_params, section

    events = _read(dataset.label_dir / "events.jsonl")
    labels = _read(dataset.label_dir / "labels.jsonl")
    invalid = _read(dataset.label_dir / "invalid.jsonl")
    spend = _spend_from_events(events)
    if not spend["providers"]:
        cache = Path(section(read_params(dataset.params_path), "label", dataset.params_path).cache_path)
        spend = _spend_from_cache(cache)
    agreement_path = Path("metrics/oracle_agreement.json")
    return {
        "spend": spend,
        "activity": _activity(events, labels, invalid),
        "distributions": _distributions(dataset),
        "oracle_agreement": json.loads(agreement_path.read_text(encoding="utf-8"))
        if agreement_path.is_file() else None,
        "gold": _gold(dataset),
        "reviews": review_stats(dataset, store) if store is not None else None,
        "repair_cost_usd": round(store.repair_cost(), 6) if store is not None else 0.0,
        "student": _student(dataset),
    }


def plots(data: dict[str, Any]) -> dict[str, str]:
    """SVG of every plot the data allows, by name."""
    from distill import plots as p

    out: dict[str, str] = {}
    providers = data["spend"]["providers"]
    if providers:
        if all(v["cost_usd"] is not None for v in providers.values()):
            out["cost"] = p.lines("Cumulative cost per provider",
                                  {k: (v["t"], v["cum_cost"]) for k, v in providers.items()},
                                  xlabel="seconds since the first request", ylabel="USD", salt="cost")
        out["tokens"] = p.lines("Cumulative tokens per provider",
                                {k: (v["t"], v["cum_tokens"]) for k, v in providers.items()},
                                xlabel="seconds since the first request", ylabel="tokens", salt="tokens")
    act = data["activity"]
    out["activity"] = p.bars("Requests, retries, rate limits, invalid records",
                             ["requests", "retries", "rate limited", "invalid"],
                             {"count": [act["requests"], act["retries"], act["rate_limited"], act["invalid_records"]]},
                             salt="activity")
    if act["reasks_by_reason"]:
        out["reasks"] = p.bars("Re-asks by reason", list(act["reasks_by_reason"]),
                               {"attempts": list(act["reasks_by_reason"].values())}, horizontal=True, salt="reasks")
    dist = data["distributions"]
    if dist["categories"]:
        out["categories"] = p.bars("Answers per tier / label", list(dist["categories"]),
                                   {"records": list(dist["categories"].values())}, salt="categories")
    crit = dist["criteria"]
    if any(crit.values()):
        values = sorted({v for c in crit.values() for v in c}, key=lambda v: (not isinstance(v, (int, float)), str(v)))
        out["criteria"] = p.heatmap("Answers per criterion and value", list(crit), [str(v) for v in values],
                                    [[crit[c].get(v, 0) for v in values] for c in crit], xlabel="value",
                                    salt="criteria")
    rev = data["reviews"]
    if rev and rev["records"]:
        unreviewed = rev["records"] - rev["reviewed"]
        out["reviews"] = p.bars("Review outcomes", ["correct", "incorrect", "corrected", "unreviewed"],
                                {"records": [rev["correct"], rev["incorrect"], rev["corrected"], unreviewed]},
                                salt="reviews")
    st = data["student"]
    if st["n"]:
        out["confusion"] = p.heatmap("Student vs oracle (test split)", st["actual"], st["predicted"], st["matrix"],
                                     xlabel="student", ylabel="oracle", salt="confusion")
        errs = st["errors_by_tier"]
        out["student_errors"] = p.bars("Student's errors by tier", list(errs),
                                       {"wrong": [e["wrong"] for e in errs.values()],
                                        "right": [e["n"] - e["wrong"] for e in errs.values()]}, salt="student")
    return out


def render_html(dataset: Dataset, store: ReviewStore | None = None, standalone: bool = True) -> str:
    """The analytics page as one HTML document (``distill report --html`` writes it to a file)."""
    from distill.review.render import render

    data = collect(dataset, store)
    return render("analytics.html", data=data, svgs=plots(data), standalone=standalone,
                  summary=data["reviews"])
