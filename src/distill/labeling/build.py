"""The one place a :class:`~distill.labeling.engine.Labeler` is wired from the configuration.

The label stage, the batch runner, ``distill estimate``, ``distill oracle-check`` and the benchmarks
all label through :func:`build_labeler`, so the generation parameters, attempts, retries, limits and
budget a run uses cannot differ between them.
"""

from __future__ import annotations

from distill.config import LabelConfig
from distill.filterspec import FilterSpec
from distill.labeling.budget import Budget
from distill.labeling.cache import ResponseCache
from distill.labeling.engine import Labeler
from distill.labeling.events import Events
from distill.labeling.limits import Scheduler
from distill.providers import Provider, ProviderConfig, make_provider


def providers_for(cfg: ProviderConfig) -> list[tuple[Provider, float]]:
    """The oracle and every member of its ``mix``, each with its weight, all built (and their keys
    checked) before any request is made."""
    return [(make_provider(member), member.weight) for member in [cfg, *cfg.mix]]


def build_labeler(spec: FilterSpec, oracle: ProviderConfig, label: LabelConfig, cache: ResponseCache, *,
                  providers: list[tuple[Provider, float]] | None = None, limits: bool = True,
                  budget: Budget | None = None, events: Events | None = None) -> Labeler:
    """A Labeler for ``oracle`` under ``label``'s settings. ``providers`` replaces the providers the
    config names (an estimate's offline stand-ins, a test's); ``limits=False`` leaves out the
    scheduler (a walk through the cache sends nothing)."""
    return Labeler(
        spec,
        providers if providers is not None else providers_for(oracle),
        cache,
        max_words=label.max_words,
        max_attempts=label.max_attempts,
        temperature=oracle.temperature,
        max_tokens=oracle.max_tokens,
        seed=oracle.seed,
        transport_retries=label.transport_retries,
        backoff_initial_s=label.backoff_initial_s,
        backoff_max_s=label.backoff_max_s,
        scheduler=Scheduler(oracle.limits, label.concurrency) if limits else None,
        budget=budget if budget is not None else Budget(label.budget_usd),
        events=events,
    )
