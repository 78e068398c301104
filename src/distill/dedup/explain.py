"""What two duplicate texts share, in words a reviewer can check: the longest common span of words.

The span is found on the texts as written (words split on whitespace, compared after normalisation, so
case and punctuation do not break it) and returned from the removed record's own text, trimmed to
``dedup.shared_chars`` characters with an ellipsis.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any

from distill.merge import normalise

#: words of each text compared at most (SequenceMatcher is quadratic in the worst case)
MAX_WORDS = 4000


def longest_shared_span(text: str, other: str, k: int = 5) -> tuple[str, int]:
    """(the longest run of consecutive words ``text`` shares with ``other``, as written in ``text``;
    its length in words).

    Near duplicates share long runs, so the quick way is tried first: a shared span of L >= k words is
    a run of L - k + 1 consecutive ``k``-word windows of ``text`` that all occur in ``other``. The longest
    such runs are checked to occur whole in ``other`` (one that does is the answer, since no shared span
    can be longer than the longest run); otherwise difflib's exact search (quadratic) decides."""
    words, other_words = text.split()[:MAX_WORDS], other.split()[:MAX_WORDS]
    a = [_word(w) for w in words]
    b = [_word(w) for w in other_words]
    if len(a) >= k and len(b) >= k:
        windows = {tuple(b[i : i + k]) for i in range(len(b) - k + 1)}
        runs, start = [], None
        for i in range(len(a) - k + 1):
            if tuple(a[i : i + k]) in windows:
                start = i if start is None else start
            elif start is not None:
                runs.append((start, i - 1))
                start = None
        if start is not None:
            runs.append((start, len(a) - k))
        haystack = "\x00" + "\x00".join(b) + "\x00"
        longest = max((last - first for first, last in runs), default=-1)
        for first, last in runs:  # only runs of the greatest length: a shorter one proves nothing
            n = last - first + k
            if last - first == longest and "\x00" + "\x00".join(a[first : first + n]) + "\x00" in haystack:
                return " ".join(words[first : first + n]), n
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return " ".join(words[match.a : match.a + match.size]), match.size


@lru_cache(maxsize=1 << 16)
def _word(word: str) -> str:
    """One word normalised (a corpus repeats its words: cached)."""
    return normalise(word)


def trim(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut + "…"


def explanation(text: str, kept_text: str, limit: int) -> dict[str, Any]:
    """``shared_text`` (trimmed) and ``shared_words`` of a removed text against the text it duplicates."""
    span, n = longest_shared_span(text, kept_text)
    return {"shared_text": trim(span, limit), "shared_words": n}


def side_by_side(removed: dict[str, Any], kept: dict[str, Any] | None, width: int = 160) -> str:
    """The removal as text: method and similarities, then the two records in two columns (rich)."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    sims = ", ".join(f"{k} {removed[k]:.3f}" for k in ("jaccard", "jaccard_estimate", "cosine")
                     if isinstance(removed.get(k), (int, float)))
    head = (f"{removed['id']} duplicates {removed['duplicate_of']} ({removed.get('method', 'exact')}"
            f"{': ' + sims if sims else ''}) in {removed.get('file', '?')}\n"
            f"shared ({removed.get('shared_words', '?')} words): {removed.get('shared_text', '')}")
    table = Table(show_lines=True, expand=True)
    table.add_column(Text(f"removed: {removed['id']}"), ratio=1, overflow="fold")
    table.add_column(Text(f"kept: {removed['duplicate_of']}"), ratio=1, overflow="fold")
    kept_text = _shown(kept) if kept is not None else f"(not found in {removed.get('kept_file', 'the kept records')})"
    table.add_row(Text(_shown(removed)), Text(kept_text))  # Text: brackets in a record are not markup
    buf = io.StringIO()
    Console(file=buf, width=width, no_color=True, highlight=False, soft_wrap=False).print(table)
    return head + "\n" + buf.getvalue()


def _shown(record: dict[str, Any]) -> str:
    title = record.get("title") or ""
    return (f"{title}\n\n" if title else "") + str(record.get("text", ""))
