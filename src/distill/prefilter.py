"""Cheap rules that decide which records the oracle sees, evaluated column-wise with polars.

Rules run in a fixed order and a blocked record carries the stable reason code of the first rule that
blocked it (datatrove style), so block counts per reason are comparable across runs:

1. ``too_short`` / ``too_long``     word count of the text outside [min_words, max_words]
2. ``not_english``                  share of common English function words below min_english_share
3. each ``block_patterns`` entry    its own reason code, when its regex matches title or text
4. ``require_keywords.reason``      no keyword in title or text (whole word, case-insensitive)

All of it compiles to one polars expression over the whole frame; the regexes run in Rust.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from distill.filterspec import PrefilterRules

PASS = "pass"
_ENGLISH = ["the", "and", "of", "to", "in", "is", "that", "for", "on", "with", "was", "as", "it", "by", "at", "from", "are", "be", "has", "have"]


def keyword_pattern(keywords: Sequence[str]) -> str:
    """One case-insensitive, whole-word alternation; multi-word keywords match any whitespace between."""
    alts = sorted({r"\s+".join(re.escape(w) for w in k.lower().split()) for k in keywords}, key=len, reverse=True)
    return r"(?i)\b(?:" + "|".join(alts) + r")\b"


def decision_expr(rules: PrefilterRules) -> pl.Expr:
    """An expression giving, per row, ``"pass"`` or the reason code of the first rule that blocks it."""
    haystack = pl.concat_str([pl.col("title"), pl.col("text")], separator="\n")
    words = pl.col("text").str.count_matches(r"\S+")
    checks: list[tuple[pl.Expr, str]] = []
    if rules.min_words:
        checks.append((words < rules.min_words, "too_short"))
    if rules.max_words:
        checks.append((words > rules.max_words, "too_long"))
    if rules.min_english_share > 0:
        head = pl.col("text").str.slice(0, 1500)
        func = head.str.count_matches(r"(?i)\b(?:" + "|".join(_ENGLISH) + r")\b")
        total = head.str.count_matches(r"\S+")
        checks.append(((func / pl.max_horizontal(total, 1)) < rules.min_english_share, "not_english"))
    for rule in rules.block_patterns:
        flags = "" if rule.case_sensitive else "(?i)"
        checks.append((haystack.str.contains(flags + rule.pattern), rule.reason))
    if rules.require_keywords is not None:
        kw = rules.require_keywords
        checks.append((~haystack.str.contains(keyword_pattern(kw.keywords)), kw.reason))
    if not checks:
        return pl.lit(PASS)
    expr = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for cond, reason in checks[1:]:
        expr = expr.when(cond).then(pl.lit(reason))
    return expr.otherwise(pl.lit(PASS))


def apply_rules(frame: pl.DataFrame, rules: PrefilterRules) -> pl.Series:
    """Decision per row of ``frame`` (which needs ``title`` and ``text`` string columns)."""
    return frame.select(decision_expr(rules).alias("decision")).to_series()


def records_frame(records: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        {"title": [r.get("title") or "" for r in records], "text": [r["text"] for r in records]},
        schema={"title": pl.String, "text": pl.String},
    )
