"""What the oracle tests share: a test API key, a checked fake server, the oracle config for a fake
server, one :class:`~distill.labeling.engine.Labeler` run, and the requests grouped by record."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from distill.filterspec import FilterSpec
from distill.labeling.cache import ResponseCache
from distill.labeling.engine import Labeler
from distill.providers import ProviderConfig, make_provider, oracle_config
from tests.fakes._server import FakeServer

S = TypeVar("S", bound=FakeServer)

#: the oracle settings of a test against a fake server, besides provider, model, URL and key
FAKE_ORACLE: dict[str, Any] = {
    "temperature": 0.0,
    "max_tokens": 300,
    "seed": 7,
    "request_timeout_s": 30,
    "sdk_max_retries": 0,
}


def set_key(monkeypatch: pytest.MonkeyPatch, env: str, prefix: str) -> str:
    """Put a fresh test key (``prefix`` + a random hex) in ``env``; returns it."""
    key = prefix + uuid.uuid4().hex
    monkeypatch.setenv(env, key)
    return key


def checked(server: S) -> Iterator[S]:
    """A fixture's body: serve with ``server``, then check that no responder raised and that no
    request went to a URL the fake does not serve."""
    with server:
        yield server
    assert not server.responder_errors, server.responder_errors
    assert not server.other_requests, [(r.method, r.path) for r in server.other_requests]


def fake_oracle(provider: str, model: str, base_url: str, key_env: str, **kw: Any) -> ProviderConfig:
    """The oracle config of a test: :data:`FAKE_ORACLE`, with ``kw`` overriding any of it."""
    base = {"provider": provider, "model": model, "base_url": base_url, "api_key_env": key_env}
    return oracle_config(**{**base, **FAKE_ORACLE, **kw})


def label_records(
    tmp_path: Path,
    cfg: ProviderConfig,
    spec: FilterSpec,
    records: list[dict[str, Any]],
    *,
    max_words: int,
    max_attempts: int = 3,
    concurrency: int = 4,
    cache: str = "cache/llm.sqlite",
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    """Label ``records`` through the real Labeler and cache (``tmp_path / cache``), appending the
    outcomes to ``tmp_path / "outcomes.jsonl"`` as a stage would; returns (valid rows by title,
    invalid rows by title, stats as a dict)."""
    stats: dict[str, Any] = {}

    async def go() -> list[tuple[str, dict[str, Any]]]:
        provider = make_provider(cfg)
        store = ResponseCache(tmp_path / cache)
        labeler = Labeler(
            spec,
            provider,
            store,
            max_words=max_words,
            max_attempts=max_attempts,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
        )
        try:
            outcomes = [o async for o in labeler.run(records, concurrency)]
        finally:
            await provider.aclose()
            store.close()
        stats.update(labeler.stats.as_dict())
        return outcomes

    outcomes = asyncio.run(go())
    with (tmp_path / "outcomes.jsonl").open("a", encoding="utf-8") as f:
        for outcome in outcomes:
            f.write(json.dumps(outcome) + "\n")
    title = {r["id"]: r["title"] for r in records}
    valid = {title[row["id"]]: row for kind, row in outcomes if kind == "valid"}
    invalid = {title[row["id"]]: row for kind, row in outcomes if kind == "invalid"}
    return valid, invalid, stats


def requests_by_title(
    server: FakeServer,
    prompt_title: Callable[[dict[str, Any]], str],
    turn: Callable[[dict[str, Any]], int] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The server's request bodies grouped by record title (in arrival order, or by ``turn``)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in server.requests:
        groups[prompt_title(body)].append(body)
    if turn is None:
        return groups
    return {t: sorted(b, key=turn) for t, b in groups.items()}
