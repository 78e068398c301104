"""Short synthetic news articles (records as the prefilter writes them) for oracle tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill import jsonl

_TOPICS = [
    ("solar farm", "A 120 MW solar farm", "has been feeding the grid for two years"),
    ("offshore wind", "An offshore wind project of 40 turbines", "reached financial close last month"),
    ("battery storage", "A grid-scale battery storage system", "is running a six-month pilot"),
    ("green hydrogen", "A green hydrogen electrolyser plant", "was announced with a 2030 target"),
    ("heat pumps", "A district programme of heat pumps", "has retrofitted 3,000 homes"),
    ("geothermal", "A geothermal plant", "entered commercial operation after a two-year pilot"),
    ("carbon capture", "A carbon capture unit at a cement works", "captured less than planned"),
    ("electric buses", "A fleet of 200 electric buses", "now serves the whole city"),
    ("small modular reactor", "A small modular reactor design", "received a construction permit"),
    ("biogas", "A farm biogas digester", "supplies biomethane to the local gas grid"),
]


def synthetic_articles(n: int, prefix: str = "art") -> list[dict[str, Any]]:
    """``n`` distinct short articles with id, title, text and metadata (source, published)."""
    rows = []
    for i in range(n):
        topic, subject, status = _TOPICS[i % len(_TOPICS)]
        text = (
            f"{subject} {status}, the operator said on Tuesday. "
            f"Officials in region {i} confirmed the figures in a public filing. "
            f"Analysts expect the {topic} market to grow, although costs remain uncertain. "
            f"The project employs {10 + 7 * i} people and reported {i % 4} outages this year."
        )
        rows.append({
            "id": f"{prefix}-{i:03d}",
            "title": f"{topic.capitalize()} update number {i}",
            "text": text,
            "metadata": {"source": f"Example News {i % 3}", "published": f"2025-{1 + i % 12:02d}-15"},
        })
    return rows


def write_articles(path: Path, n: int, prefix: str = "art") -> list[dict[str, Any]]:
    rows = synthetic_articles(n, prefix)
    jsonl.write_jsonl(path, rows)
    return rows
