"""The Jinja2 templates of the review app and the analytics report (autoescaped: record text is shown as
text, never as markup)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def environment():
    from distill.errors import require

    jinja2 = require("jinja2", "review")

    return jinja2.Environment(loader=jinja2.PackageLoader("distill.review", "templates"),
                              autoescape=jinja2.select_autoescape(["html"], default=True))


def static_text(name: str) -> str:
    return resources.files("distill.review").joinpath("static", name).read_text(encoding="utf-8")


def render(name: str, **context: Any) -> str:
    context.setdefault("standalone", False)
    context.setdefault("summary", None)
    if context["standalone"]:
        context.setdefault("css", static_text("review.css"))
    return environment().get_template(name).render(**context)
