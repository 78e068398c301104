"""HTML to the text a browser shows, for ``prefilter.strip_html`` (see the measurements below)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# strip_html renders HTML as text with the stdlib parser (html.parser) and the small renderer below:
# tags go, entities are decoded once (in text; never a second time), <script>/<style>/<template>/
# <noscript> content is dropped, block elements (<p>, <li>, <div>, headings, table rows, ...) and <br>
# become line breaks, inline tags (<b>, <sub>, <a>) vanish without splitting words, whitespace collapses
# as a browser collapses it, and <pre> keeps its line breaks.
# Measured with benchmarks/html_strip.py (2026-12-02, one core of a shared 2-core AMD EPYC, Python 3.11):
# 12 hand-written cases; the 582 non-empty Body columns of the Stack Exchange dump in ../shared/data,
# repeated to 5,000 bodies for speed (best of 3):
#   candidate                         cases right  words split on real bodies  us per body
#   regex <[^>]+> + html.unescape           3/12                            5          2.2
#   stdlib html.parser + renderer          12/12                            0         60.0
#   selectolax 1.0.2 + same renderer       12/12                            0         38.6
#   resiliparse 2.0.1 extract_plain_text   10/12 (<p> as a blank line)      0         20.7
#   html-text 0.7.1                         8/12                            5         67.8
#   inscriptis 2.7.6                        8/12                            0         90.2
#   lxml 6.1.3 text_content                 7/12                            0         27.0
#   beautifulsoup4 4.15 get_text            8/12                            0        154.8
# The stdlib renderer and resiliparse give the same text on all 582 real bodies (blank lines aside).
# Why no library: resiliparse, the one that does the whole job, is 3x faster, but 2.0.1 has no wheel
# for macOS arm64 or Linux aarch64 and pulls in fastwarc; selectolax only parses (the rendering is
# still ours) and saves a third; the rest get 7-8 of 12 right. The cost of the stdlib: reading 5,000
# such bodies from JSONL takes 0.47 s with strip_html instead of 0.16 s without.
_SKIP_TAGS = frozenset({"script", "style", "template", "noscript", "head", "title"})
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "caption", "center", "dd", "details", "dialog", "div", "dl",
    "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hgroup", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot",
    "thead", "tr", "ul",
})
_CELL_TAGS = frozenset({"td", "th"})
_HTML_WS_RE = re.compile(r"[ \t\n\r\f]+")  # HTML's whitespace: a no-break space is not collapsed


class _TextBuilder:
    """Text from a stream of start tags, end tags and decoded character data (see the comment above)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.line_start = True  # nothing yet, or the text so far ends with a line break
        self.skip = 0  # depth inside elements whose content is not text
        self.pre = 0  # depth inside <pre>

    def start(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "br":
            self._put("\n")
        elif tag in _BLOCK_TAGS:
            self._line_break()
            self.pre += tag == "pre"
        elif tag in _CELL_TAGS and not self.line_start:
            self._put(" ")

    def end(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self._line_break()
            self.pre = max(0, self.pre - (tag == "pre"))

    def data(self, text: str) -> None:
        if self.skip:
            return
        if not self.pre:
            text = _HTML_WS_RE.sub(" ", text)
            if self.line_start:
                text = text.lstrip(" ")
        if text:
            self._put(text)

    def _line_break(self) -> None:
        if not self.line_start:
            self._put("\n")

    def _put(self, text: str) -> None:
        self.parts.append(text)
        self.line_start = text.endswith("\n")

    def text(self) -> str:
        return "".join(self.parts)


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = _TextBuilder()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.out.start(tag)

    def handle_endtag(self, tag: str) -> None:
        self.out.end(tag)

    def handle_data(self, data: str) -> None:
        self.out.data(data)


def html_to_text(markup: str) -> str:
    """The text of an HTML fragment: see the comment above :data:`_SKIP_TAGS`."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    return parser.out.text()
