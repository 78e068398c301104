"""Cheap rules that decide which records the oracle sees, evaluated column-wise with polars.

Rules run in a fixed order and a blocked record carries the stable reason code of the first rule that
blocked it (datatrove style), so block counts per reason are comparable across runs:

1. ``too_short`` / ``too_long``     word count of the text outside [min_words, max_words]
2. ``few_function_words``           share of common English function words (the, and, of, ...) among
                                    the words of the first 1,500 characters below min_english_share.
                                    It screens out other languages, but it measures function words,
                                    not language: English tables of figures ("Shr 64 cts vs 55 cts")
                                    and bare lists have few and are blocked too
3. each ``block_patterns`` entry    its own reason code, when its regex matches title or text
4. ``require_keywords.reason``      no keyword in title or text (whole word, case-insensitive)

Each rule is a polars expression; the regexes run in Rust. :func:`apply_rules` evaluates the rules in
order on the rows no earlier rule has blocked, so the costly checks only see the rows that reach them;
:func:`decision_expr` gives the same decisions as one expression over every row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from distill.filterspec import PrefilterRules

PASS = "pass"
#: the common English function words whose share ``min_english_share`` bounds (reason ``few_function_words``)
_ENGLISH = ["the", "and", "of", "to", "in", "is", "that", "for", "on", "with", "was", "as", "it", "by", "at", "from",
            "are", "be", "has", "have"]
FEW_FUNCTION_WORDS = "few_function_words"
_ENGLISH_HEAD_CHARS = 1500
# "at least n words" as one bounded regex scans only up to the n-th word; past this n the compiled
# regex grows too large, so the words are counted instead
_MAX_ANCHORED_WORDS = 1000
_RUN = 16  # words per run in word_count
_ASCII_WORD = re.compile(r"[a-z0-9_]")


@dataclass(frozen=True)
class Rule:
    reason: str
    #: exact: true where this rule blocks the row
    blocks: pl.Expr
    #: optional cheaper test that is true only where the rule certainly does not block; apply_rules
    #: evaluates ``blocks`` only on the rows it leaves undecided
    clears: pl.Expr | None = None


def keyword_pattern(keywords: Sequence[str]) -> str:
    """One case-insensitive, whole-word alternation; multi-word keywords match any whitespace between."""
    alts = sorted({_keyword_regex(k) for k in keywords}, key=len, reverse=True)
    return r"(?i)\b(?:" + "|".join(alts) + r")\b"


def _keyword_regex(keyword: str) -> str:
    return r"\s+".join(re.escape(w) for w in keyword.lower().split())


def keyword_match(haystack: pl.Expr, keywords: Sequence[str]) -> pl.Expr:
    """True where ``keyword_pattern(keywords)`` matches ``haystack``, computed quickly.

    On non-ASCII text a Unicode ``\\b`` keeps the Rust regex engine off its fast automaton (about 40x
    slower on news text). For a keyword that starts and ends with an ASCII word character, ``\\bk\\b``
    occurs exactly where ``(?:^|\\W)k(?:\\W|$)`` does, so those keywords are searched in that form and
    only the others keep ``\\b``.
    """
    plain, other = [], []
    for k in keywords:
        edges = k.lower().strip()
        ascii_edges = bool(edges) and bool(_ASCII_WORD.fullmatch(edges[0]) and _ASCII_WORD.fullmatch(edges[-1]))
        (plain if ascii_edges else other).append(k)
    conds = []
    if plain:
        alts = sorted({_keyword_regex(k) for k in plain}, key=len, reverse=True)
        conds.append(haystack.str.contains(r"(?i)(?:^|\W)(?:" + "|".join(alts) + r")(?:\W|$)"))
    if other:
        conds.append(haystack.str.contains(keyword_pattern(other)))
    return pl.any_horizontal(conds) if len(conds) > 1 else conds[0]


def word_count(col: pl.Expr) -> pl.Expr:
    """Number of ``\\S+`` runs, with about a tenth of the regex matches of counting them one by one.

    Runs of 16 words tile the text from its first word, so with ``q`` such runs and ``r`` words after
    them, ``(?:\\S+\\s+){16}|\\S+`` matches ``q + r`` times and the count is ``15 * q + (q + r)``.
    """
    run = rf"(?:\S+\s+){{{_RUN}}}"
    return col.str.count_matches(run) * (_RUN - 1) + col.str.count_matches(run + r"|\S+")


def _at_least_words(col: pl.Expr, n: int) -> pl.Expr:
    """True where ``col`` has at least ``n`` words (``n >= 1``)."""
    if n > _MAX_ANCHORED_WORDS:
        return word_count(col) >= n
    return col.str.contains(rf"^\s*(?:\S+\s+){{{n - 1}}}\S")


def _function_word_rule(share: float) -> Rule:
    """Block where function words are under ``share`` of the words in the first 1,500 characters."""
    head = pl.col("text").str.slice(0, _ENGLISH_HEAD_CHARS)
    words = "|".join(_ENGLISH)
    func = head.str.count_matches(r"(?i)\b(?:" + words + r")\b")
    blocks = (func / pl.max_horizontal(word_count(head), 1)) < share
    # Cheap bounds. Function words found with consumed context, (?:^|\W)w(?:\W|$), are at least
    # half and at most all of them (only a word right after a match can lose its context char), and
    # q runs of 16 words mean at most 16q + 16 words; so this share is a lower bound of the exact one.
    found = head.str.count_matches(r"(?i)(?:^|\W)(?:" + words + r")(?:\W|$)")
    most_words = head.str.count_matches(rf"(?:\S+\s+){{{_RUN}}}") * _RUN + _RUN
    return Rule(FEW_FUNCTION_WORDS, blocks, clears=(found / most_words) >= share)


def rule_checks(rules: PrefilterRules) -> list[Rule]:
    """One :class:`Rule` per configured rule, in rule order."""
    text = pl.col("text")
    haystack = pl.concat_str([pl.col("title").fill_null(""), text], separator="\n")
    checks: list[Rule] = []
    if rules.min_words:
        checks.append(Rule("too_short", ~_at_least_words(text, rules.min_words)))
    if rules.max_words:
        checks.append(Rule("too_long", _at_least_words(text, rules.max_words + 1)))
    if rules.min_english_share > 0:
        checks.append(_function_word_rule(rules.min_english_share))
    for rule in rules.block_patterns:
        flags = "" if rule.case_sensitive else "(?i)"
        checks.append(Rule(rule.reason, haystack.str.contains(flags + rule.pattern)))
    if rules.require_keywords is not None:
        kw = rules.require_keywords
        checks.append(Rule(kw.reason, ~keyword_match(haystack, kw.keywords)))
    return checks


def decision_expr(rules: PrefilterRules) -> pl.Expr:
    """An expression giving, per row, ``"pass"`` or the reason code of the first rule that blocks it."""
    checks = rule_checks(rules)
    if not checks:
        return pl.repeat(PASS, pl.len(), dtype=pl.String)  # one value per row, not a single literal
    expr = pl.when(checks[0].blocks).then(pl.lit(checks[0].reason))
    for rule in checks[1:]:
        expr = expr.when(rule.blocks).then(pl.lit(rule.reason))
    return expr.otherwise(pl.lit(PASS))


def apply_rules(frame: pl.DataFrame, rules: PrefilterRules) -> pl.Series:
    """Decision per row of ``frame`` (which needs ``title`` and ``text`` string columns).

    The same decisions as :func:`decision_expr`, but each rule only runs on the rows that no earlier
    rule blocked: a headline blocked as too short never reaches the keyword regex.
    """
    todo = frame.select(pl.col("title"), pl.col("text")).with_row_index("_row")
    decided = []
    for rule in rule_checks(rules):
        if todo.height == 0:
            break
        cleared = todo.head(0)
        if rule.clears is not None:
            sure = todo.select(rule.clears.fill_null(False)).to_series()
            cleared, todo = todo.filter(sure), todo.filter(~sure)
        hit = todo.select(rule.blocks.fill_null(False)).to_series()  # null (no text) never blocks
        decided.append(todo.filter(hit).select("_row", pl.lit(rule.reason, dtype=pl.String).alias("decision")))
        todo = pl.concat([cleared, todo.filter(~hit)])
    decided.append(todo.select("_row", pl.lit(PASS, dtype=pl.String).alias("decision")))
    return pl.concat(decided).sort("_row").get_column("decision")


def records_frame(records: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        {"title": [r.get("title") or "" for r in records], "text": [r["text"] for r in records]},
        schema={"title": pl.String, "text": pl.String},
    )
