"""Published prices of well-known models, so a budget means something whichever oracle file names them.

``oracle.price`` wins when it sets both numbers; otherwise a model listed here gets its published
price (matched by name, a dated snapshot such as ``gpt-4o-mini-2024-07-18`` by its longest listed
prefix, an OpenRouter-style ``openai/gpt-4o-mini`` by the part after the slash); the embedded local
model is free. Anything else has no known price: ``distill estimate`` says so, and a run with
``label.budget_usd`` refuses to start, because a cap on dollars cannot be kept without a price.

Prices change: these are the providers' list prices in US dollars per million tokens (standard
tier, text, online; batch at ``batch_discount``) as published on the pages below when checked
(``CHECKED``). Set ``-S oracle.price.input_per_mtok=... -S oracle.price.output_per_mtok=...`` for a
negotiated price or a model not listed.
"""

from __future__ import annotations

from distill.providers.base import Pricing, ProviderConfig

CHECKED = "2026-12-01"
SOURCES = {
    "openai": "https://openai.com/api/pricing/",
    "gemini": "https://ai.google.dev/gemini-api/docs/pricing",
    "anthropic": "https://www.anthropic.com/pricing#api",
}

#: model name (or prefix of a dated snapshot) -> (input, output) US dollars per million tokens
PUBLISHED: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    # Google
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    # Anthropic
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-3-5-haiku": (0.80, 4.00),
}

FREE = Pricing(input_per_mtok=0.0, output_per_mtok=0.0, batch_discount=0.0)


def published(model: str) -> tuple[float, float] | None:
    """The published price of ``model`` (exact name, else the longest listed prefix of it)."""
    name = model.rsplit("/", 1)[-1].lower()
    if name in PUBLISHED:
        return PUBLISHED[name]
    prefixes = [k for k in PUBLISHED if name.startswith((k + "-", k + "@"))]
    return PUBLISHED[max(prefixes, key=len)] if prefixes else None


def price_for(cfg: ProviderConfig) -> tuple[Pricing | None, str]:
    """(the price to charge, where it came from); None when no price is known."""
    if cfg.price.known:
        return cfg.price, "oracle.price"
    if cfg.provider == "local":
        return FREE, "the embedded model is free"
    found = published(cfg.model)
    if found is not None:
        return (Pricing(input_per_mtok=found[0], output_per_mtok=found[1], batch_discount=cfg.price.batch_discount),
                f"published price of {cfg.model} (checked {CHECKED})")
    return None, f"no price known for {cfg.provider}:{cfg.model}"


def budget_problem(cfg: ProviderConfig, budget_usd: float | None) -> str | None:
    """Why ``label.budget_usd`` cannot be kept with this oracle (None when it can)."""
    if budget_usd is None:
        return None
    unpriced = [m for m in [cfg, *cfg.mix] if price_for(m)[0] is None]
    if not unpriced:
        return None
    names = ", ".join(f"{m.provider}:{m.model}" for m in unpriced)
    return (f"label.budget_usd={budget_usd:g} cannot be enforced: no price is known for {names}. Set its price "
            "in US dollars per million tokens, e.g. -S oracle.price.input_per_mtok=0.15 "
            "-S oracle.price.output_per_mtok=0.6 (for a mix member: oracle.mix.N.price...), or drop the budget")
