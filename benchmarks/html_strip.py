"""HTML to plain text for ``prefilter.strip_html``: correctness and speed of the candidates.

What is measured
  Each candidate turns an HTML fragment into text, and the result goes through the same whitespace
  normalisation as ``distill.sources.clean_text`` (so only the HTML handling differs).
  Correctness: hand-written cases (tags, entities, ``<script>``/``<style>`` content, ``<br>``, ``<p>``
  boundaries, inline tags inside words, a bare ``<`` in text, ``>`` inside an attribute, comments,
  ``<pre>``, table cells), and on the real Stack Exchange dump (``Body`` of every ``<row>`` of
  ``../shared/data/questions/stackexchange_coffee_Posts.xml``): bodies with a tag or an entity left,
  and words split apart by an inline tag (``CO<sub>2</sub>`` read as ``CO 2``).
  Speed: the non-empty bodies repeated to --bodies (default 5,000), best of --repeat runs, one core.

Candidates: the old regex (``<[^>]+>`` to a space, then ``html.unescape``), the stdlib ``html.parser``
with the renderer in ``distill.sources``, and, where installed, selectolax (lexbor) with the same
renderer, resiliparse ``extract_plain_text``, html-text, inscriptis, BeautifulSoup ``get_text`` and
lxml ``text_content``. Libraries not installed are skipped; none of them is a project dependency.

Run from the project root:  .venv/bin/python benchmarks/html_strip.py [--bodies N]
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from distill import htmltext, sources

POSTS = ROOT.parent / "shared" / "data" / "questions" / "stackexchange_coffee_Posts.xml"
_OLD_TAG_RE = re.compile(r"<[^>]+>")

# (html, expected text after clean_text's whitespace normalisation)
CASES = [
    ("entities and inline tags", "<p>Caf&eacute; &amp; <b>bar</b></p>\n<p>Next</p>", "Café & bar\nNext"),
    ("<p> boundary without whitespace", "<p>one</p><p>two</p>", "one\ntwo"),
    ("<br> is a line break", "a<br>b<br/>c", "a\nb\nc"),
    ("inline tag inside a word", "CO<sub>2</sub> and H<sub>2</sub>O", "CO2 and H2O"),
    ("script and style content dropped",
     '<script>var x = "<p>hi</p>";</script><style>p { color: red }</style>Visible', "Visible"),
    ("bare < and > in text", "raw a < b and c > d text", "raw a < b and c > d text"),
    ("> inside an attribute", '<a href="x" title="a > b">link</a> after', "link after"),
    ("comment dropped", "<!-- a <b>tag</b> in a comment -->kept", "kept"),
    ("list items on their own lines", "<ul><li>one</li><li>two</li></ul>", "one\ntwo"),
    ("<pre> keeps its line breaks", "<pre><code>x = 1\n  y = 2</code></pre>", "x = 1\ny = 2"),
    ("table cells", "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d"),
    ("escaped markup stays text", "<p>use &lt;p&gt; tags &amp;&amp; &#8217;quotes&#8217;</p>",
     "use <p> tags && \u2019quotes\u2019"),
]


def normalise(text: str) -> str:
    return sources.clean_text(text, unescape_html=False, strip_html=False)


def old_regex(body: str) -> str:
    return html.unescape(_OLD_TAG_RE.sub(" ", body))


def candidates() -> dict[str, Callable[[str], str]]:
    found: dict[str, Callable[[str], str]] = {"regex (old)": old_regex, "stdlib html.parser": htmltext.html_to_text}
    try:
        from selectolax.lexbor import LexborHTMLParser

        def selectolax(body: str) -> str:
            out = htmltext._TextBuilder()
            _walk(LexborHTMLParser(body).body, out)
            return out.text()

        def _walk(node, out) -> None:
            for child in node.iter(include_text=True):
                tag = child.tag
                if tag == "-text":
                    out.data(child.text_content or "")
                elif tag in htmltext._SKIP_TAGS or tag.startswith(("_", "!")):
                    continue
                else:
                    out.start(tag)
                    _walk(child, out)
                    out.end(tag)

        found["selectolax + same renderer"] = selectolax
    except ImportError:
        pass
    try:
        from resiliparse.extract.html2text import extract_plain_text

        found["resiliparse"] = lambda b: extract_plain_text(
            b, main_content=False, alt_texts=False, preserve_formatting=True, list_bullets=False, links=False)
    except ImportError:
        pass
    try:
        import html_text

        found["html-text"] = lambda b: html_text.extract_text(b, guess_layout=True)
    except ImportError:
        pass
    try:
        import inscriptis

        found["inscriptis"] = inscriptis.get_text
    except ImportError:
        pass
    try:
        from bs4 import BeautifulSoup

        found["bs4 get_text"] = lambda b: BeautifulSoup(b, "html.parser").get_text()
    except ImportError:
        pass
    try:
        import lxml.html

        found["lxml text_content"] = lambda b: lxml.html.fromstring(b).text_content() if b.strip() else ""
    except ImportError:
        pass
    return found


def real_bodies() -> list[str]:
    return [b for r in ET.parse(POSTS).getroot().iter("row") if (b := r.get("Body") or "").strip()]


_LEFT_TAG = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9]*|/[a-zA-Z][a-zA-Z0-9]*)[\s/>]")
_LEFT_ENTITY = re.compile(r"&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")


def real_checks(fn: Callable[[str], str], bodies: list[str]) -> dict[str, int]:
    tags = entities = split = 0
    for b in bodies:
        out = normalise(fn(b))
        escaped = html.unescape(re.sub(r"<[^>]+>", "", b))  # what text the author wrote literally
        tags += bool(len(_LEFT_TAG.findall(out)) > len(_LEFT_TAG.findall(escaped)))
        entities += bool(len(_LEFT_ENTITY.findall(out)) > len(_LEFT_ENTITY.findall(escaped)))
        for m in re.finditer(r"(\w+)<(sub|sup)>(\w+)</\2>", b):
            split += (m.group(1) + m.group(3)) not in out
    return {"bodies with a tag left": tags, "bodies with an entity left": entities, "words split": split}


def timed(fn: Callable[[str], str], bodies: list[str], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in bodies:
            fn(b)
        runs.append(time.perf_counter() - t0)
    return min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bodies", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    real = real_bodies()
    sample = (real * (args.bodies // len(real) + 1))[: args.bodies]
    print(f"{len(real)} non-empty Stack Exchange bodies ({sum(map(len, real)):,} chars); speed on {len(sample):,} "
          f"(the bodies repeated), best of {args.repeat}; Python {sys.version.split()[0]}\n")
    rows = []
    for name, fn in candidates().items():
        failed = [label for label, src, want in CASES if normalise(fn(src)) != want]
        checks = real_checks(fn, real)
        secs = timed(fn, sample, args.repeat)
        rows.append((name, len(CASES) - len(failed), failed, checks, secs))
    print(f"| candidate | cases right (of {len(CASES)}) | tag left / entity left / words split (real) "
          "| ms per 5,000 bodies | µs per body |")
    print("|---|---|---|---|---|")
    for name, ok, _, c, secs in rows:
        print(f"| {name} | {ok} | {c['bodies with a tag left']} / {c['bodies with an entity left']} / "
              f"{c['words split']} | {secs * 1000 * 5000 / len(sample):,.0f} | {secs * 1e6 / len(sample):,.1f} |")
    print()
    for name, _, failed, _, _ in rows:
        if failed:
            print(f"{name}: wrong on {'; '.join(failed)}")


if __name__ == "__main__":
    main()
