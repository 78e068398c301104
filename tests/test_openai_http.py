"""The lean aiohttp transport for OpenAI-compatible servers (``oracle.transport: aiohttp``).

Against the real fake server on 127.0.0.1: the same records through the SDK transport and through
this one give byte-identical labels and the same cache keys (one cache serves both); HTTP failures
map to the same ProviderErrors the engine retries on; the key is sent but never written.

The end of the file covers the engine fast paths this transport exists for (batched cache commits
that still commit before a record is reported, the schema pre-check, the request key).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from distill import pipeline
from distill.config import LabelConfig
from distill.errors import DistillError
from distill.filterspec import load_filter
from distill.providers import ChatRequest, ProviderConfig, make_provider
from distill.providers.base import ProviderError
from distill.providers.openai import OpenAIProvider
from tests.fakes.articles import write_articles
from tests.fakes.openai_server import FakeOpenAI, Reply, default_label, prompt_title
from tests.oracle_harness import checked, fake_oracle, set_key

REPO = Path(__file__).resolve().parents[1]
SPEC = load_filter(REPO / "filters" / "sustainability_tech_deployment" / "v1")
KEY_ENV = "DISTILL_TEST_OPENAI_HTTP_KEY"
MODEL = "fake-oracle-http"
N = 24


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    return set_key(monkeypatch, KEY_ENV, "sk-test-")


@pytest.fixture
def srv():
    yield from checked(FakeOpenAI())


@pytest.fixture
def records(tmp_path: Path) -> list[dict[str, Any]]:
    return write_articles(tmp_path / "passed.jsonl", N)


def oracle_cfg(url: str, transport: str = "aiohttp", **kw: Any) -> ProviderConfig:
    return fake_oracle("openai", MODEL, url, KEY_ENV, **{"transport": transport, **kw})


def run_label(tmp_path: Path, srv: FakeOpenAI, transport: str, name: str, **label_kw: Any) -> dict[str, Any]:
    cfg = LabelConfig(**{"max_words": 200, "max_attempts": 3, "concurrency": 8, "progress": "off",
                         "transport_retries": 3, "backoff_initial_s": 0.01,
                         "cache_path": str(tmp_path / name / "cache.sqlite"),
                         "output_dir": str(tmp_path / name / "labels"), **label_kw})
    return pipeline.label(cfg, oracle_cfg(srv.base_url, transport), SPEC, tmp_path / "passed.jsonl",
                          metrics_dir=tmp_path / name)


def cache_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {k for (k,) in db.execute("SELECT key FROM responses")}


def ask(cfg: ProviderConfig, request: ChatRequest | None = None):
    """One request through a fresh provider (closed afterwards, on the same event loop)."""
    request = request or ChatRequest(messages=SPEC.render({"id": "x", "title": "T", "text": "Some text."}),
                                     schema=SPEC.json_schema, max_tokens=300, seed=7)

    async def go():
        provider = OpenAIProvider(cfg)
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()

    return asyncio.run(go())


# ----------------------------------------------------------------------------- the same answers as the SDK
def test_make_provider_picks_the_transport(api_key, srv):
    http, sdk = make_provider(oracle_cfg(srv.base_url)), make_provider(oracle_cfg(srv.base_url, "sdk"))
    assert isinstance(http, OpenAIProvider) and isinstance(sdk, OpenAIProvider)
    assert http.complete.__func__ is OpenAIProvider._complete_http
    assert sdk.complete.__func__ is OpenAIProvider._complete_sdk
    assert http.cache_identity() == sdk.cache_identity() and http.describe() == sdk.describe()
    assert api_key not in repr(http)


def test_same_labels_and_cache_keys_as_the_sdk(tmp_path, srv, records, api_key):
    sdk = run_label(tmp_path, srv, "sdk", "sdk")
    sdk_bodies = srv.requests
    srv.reset()
    http = run_label(tmp_path, srv, "aiohttp", "http")
    http_bodies = srv.requests

    assert sdk["valid"] == http["valid"] == N and sdk["requests"] == http["requests"] == N
    assert (tmp_path / "http" / "labels" / "labels.jsonl").read_bytes() == \
        (tmp_path / "sdk" / "labels" / "labels.jsonl").read_bytes()
    assert (tmp_path / "http" / "labels" / "invalid.jsonl").read_text() == ""
    assert cache_keys(tmp_path / "http" / "cache.sqlite") == cache_keys(tmp_path / "sdk" / "cache.sqlite")
    assert len(cache_keys(tmp_path / "http" / "cache.sqlite")) == N
    # the same JSON bodies on the wire (order of arrival aside)
    canon = sorted(json.dumps(b, sort_keys=True) for b in sdk_bodies)
    assert canon == sorted(json.dumps(b, sort_keys=True) for b in http_bodies)
    assert all(b["response_format"]["json_schema"]["schema"] == SPEC.json_schema for b in http_bodies)
    assert set(srv.authorizations) == {f"Bearer {api_key}"}
    assert {r.headers.get("content-type") for r in srv.received} == {"application/json"}


def test_one_cache_serves_both_transports(tmp_path, srv, records, api_key):
    run_label(tmp_path, srv, "sdk", "shared")
    srv.reset()
    metrics = run_label(tmp_path, srv, "aiohttp", "shared")
    assert srv.count == 0 and metrics["cache_hits"] == N and metrics["requests"] == 0


@pytest.mark.parametrize("mode", ["json_object", "none"])
def test_structured_output_modes_send_what_the_sdk_sends(srv, api_key, mode):
    ask(oracle_cfg(srv.base_url, structured_output=mode))
    [body] = srv.requests
    if mode == "json_object":
        assert body["response_format"] == {"type": "json_object"}
    else:
        assert "response_format" not in body
    assert body["seed"] == 7 and body["max_tokens"] == 300 and body["temperature"] == 0.0


def test_usage_finish_reason_and_model_are_read(srv, api_key):
    srv.responder = lambda body: Reply.label(default_label(body), finish_reason="length",
                                             usage={"prompt_tokens": 123, "completion_tokens": 45})
    response = ask(oracle_cfg(srv.base_url))
    assert response.input_tokens == 123 and response.output_tokens == 45
    assert response.finish_reason == "length" and response.model == MODEL
    assert json.loads(response.text) == default_label(srv.requests[0])


# ----------------------------------------------------------------------------- failures
def test_429_surfaces_status_and_retry_after(srv, api_key):
    srv.faults = {1: Reply.rate_limited(retry_after=1.5)}
    with pytest.raises(ProviderError) as info:
        ask(oracle_cfg(srv.base_url))
    err = info.value
    assert err.status == 429 and err.retry_after == 1.5 and err.throttled and err.transient
    assert "429" in str(err) and "Rate limit reached" in str(err)


def test_retry_after_ms_wins(srv, api_key):
    srv.faults = {1: Reply(status=429, headers={"retry-after-ms": "250", "Retry-After": "9"})}
    with pytest.raises(ProviderError) as info:
        ask(oracle_cfg(srv.base_url))
    assert info.value.retry_after == 0.25


@pytest.mark.parametrize("status, transient", [(500, True), (503, True), (400, False), (401, False), (404, False)])
def test_http_errors_map_to_transient_or_not(srv, api_key, status, transient):
    srv.faults = {1: Reply.error(status, message=f"boom {status}")}
    with pytest.raises(ProviderError) as info:
        ask(oracle_cfg(srv.base_url))
    assert info.value.status == status and info.value.transient is transient
    assert f"boom {status}" in str(info.value)


@pytest.mark.parametrize("raw, expected", [
    (b"<html>502 Bad Gateway</html>", "unreadable response"),
    (b'{"error": {"message": "Provider returned error", "code": 502}}', "Provider returned error"),
    (b'{"choices": []}', "no choices"),
], ids=["not_json", "error_in_200_body", "empty_choices"])
def test_a_200_that_is_not_an_answer_is_a_transient_provider_error(srv, api_key, raw, expected):
    srv.faults = {1: Reply(raw_body=raw)}
    with pytest.raises(ProviderError) as info:
        ask(oracle_cfg(srv.base_url))
    assert info.value.status is None and info.value.transient and expected in str(info.value)


def test_timeout_is_a_transient_provider_error(srv, api_key):
    srv.faults = {1: Reply(content="{}", latency_s=3.0)}
    with pytest.raises(ProviderError, match="timed out") as info:
        ask(oracle_cfg(srv.base_url, request_timeout_s=0.3))
    assert info.value.status is None and info.value.transient


def test_connection_reset_is_a_transient_provider_error(api_key):
    """A server that accepts and slams the connection shut (RST) before answering."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(ProviderError, match="request failed") as info:
            ask(oracle_cfg(f"http://127.0.0.1:{port}/v1"))
        assert info.value.status is None and info.value.transient
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def test_engine_retries_transient_failures_over_this_transport(tmp_path, srv, records, api_key):
    srv.faults = {1: Reply.error(500), 2: Reply.rate_limited(retry_after=0.05), 3: Reply(raw_body=b"<html/>")}
    metrics = run_label(tmp_path, srv, "aiohttp", "retry")
    assert metrics["valid"] == N and metrics["transport_retries"] == 3 and metrics["rate_limited"] == 1
    assert srv.count == N + 3


def test_a_permanent_error_is_not_retried(tmp_path, srv, records, api_key):
    broken = records[3]["title"]
    srv.responder = lambda body: Reply.error(400, message="bad request") if prompt_title(body) == broken \
        else default_label(body)
    with pytest.raises(DistillError, match="1 record"):
        run_label(tmp_path, srv, "aiohttp", "perm")
    assert sum(1 for b in srv.requests if prompt_title(b) == broken) == 1


def test_the_key_is_sent_but_never_written(tmp_path, srv, records, api_key, capfd):
    failing = records[1]["title"]
    srv.responder = lambda body: Reply.error(401, message="nope") if prompt_title(body) == failing \
        else default_label(body)
    with pytest.raises(DistillError) as info:
        run_label(tmp_path, srv, "aiohttp", "key")
    assert api_key not in str(info.value)
    assert set(srv.authorizations) == {f"Bearer {api_key}"}
    scanned = [p for p in (tmp_path / "key").rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in scanned) and any(p.name == "events.jsonl" for p in scanned)
    assert [str(p) for p in scanned if api_key.encode() in p.read_bytes()] == []
    out, err = capfd.readouterr()
    assert api_key not in out and api_key not in err


# ----------------------------------------------------------------------------- engine fast paths
def test_each_answer_is_committed_before_its_record_is_reported(tmp_path, srv, records, api_key):
    """Batched commits (one transaction per event-loop tick) must not weaken resume: whenever a record
    comes out of the engine, its answer is already in the database as another process would see it."""
    from distill.labeling.cache import ResponseCache
    from distill.labeling.engine import Labeler
    from distill.labeling.limits import Scheduler

    cache_path = tmp_path / "durable.sqlite"
    seen: list[tuple[int, int]] = []

    async def go():
        provider = OpenAIProvider(oracle_cfg(srv.base_url))
        cache = ResponseCache(cache_path)
        labeler = Labeler(SPEC, provider, cache, max_words=200, max_attempts=1,
                          scheduler=Scheduler(oracle_cfg(srv.base_url).limits, 16))
        reader = sqlite3.connect(cache_path)  # a separate connection: sees only committed rows
        try:
            done = 0
            async for kind, _ in labeler.run(records, 16):
                assert kind == "valid"
                done += 1
                seen.append((done, reader.execute("SELECT COUNT(*) FROM responses").fetchone()[0]))
        finally:
            reader.close()
            cache.close()
            await provider.aclose()

    asyncio.run(go())
    assert len(seen) == N and all(committed >= done for done, committed in seen)


def test_put_async_batches_and_reports_failures(tmp_path):
    from distill.labeling.cache import ResponseCache
    from distill.providers.base import ChatResponse

    cache = ResponseCache(tmp_path / "c.sqlite")

    async def many(n: int, tag: str):
        await asyncio.gather(*(cache.put_async(f"{tag}{i}", "openai", "m", ChatResponse(f"t{i}", 1, 2, "stop", "m"))
                               for i in range(n)))

    asyncio.run(many(50, "a"))
    assert len(cache) == 50 and cache.get("a7").text == "t7" and cache.get("a7").output_tokens == 2
    cache._db.execute("CREATE TRIGGER no_b BEFORE INSERT ON responses WHEN NEW.key LIKE 'b%' "
                      "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(sqlite3.DatabaseError, match="refused"):
        asyncio.run(many(5, "b"))
    assert len(cache) == 50  # the failed batch was rolled back as a whole
    cache.close()


def test_request_key_is_the_canonical_json_digest():
    import hashlib

    from distill.labeling.cache import request_key

    def reference(identity, request):
        payload = {**identity, "messages": request.messages, "schema": request.schema,
                   "params": request.generation_params()}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    schema = json.loads(json.dumps(SPEC.json_schema))
    odd = "Ünïcödé — “quotes” \u2028 \x00\x1f\x7f 😀 \\ \" \n\t"
    for identity in ({"provider": "openai", "model": "m"}, {"provider": "g", "model": "x", "thinking_budget": 0}, {}):
        for messages in ([{"role": "system", "content": odd}, {"role": "user", "content": "x" * 3000}], [],
                         [{"role": "user", "content": [{"type": "text", "text": odd}], "n": 1.5e-7}]):
            for seed in (0, None):
                request = ChatRequest(messages=messages, schema=schema, temperature=0.3, seed=seed)
                assert request_key(identity, request) == reference(identity, request)
    schema["properties"]["extra"] = {"type": "boolean"}  # a mutated schema is not served from the memo
    request = ChatRequest(messages=[{"role": "user", "content": "x"}], schema=schema)
    assert request_key({}, request) == reference({}, request)


def test_schema_precheck_never_accepts_what_jsonschema_rejects():
    import random

    from jsonschema import Draft202012Validator

    from distill.validate import Invalid, check, compile_precheck

    schemas = [SPEC.json_schema, {
        "type": "object", "required": ["a"],
        "properties": {"a": {"type": "number", "exclusiveMinimum": 0, "maximum": 1.5},
                       "b": {"type": "boolean"}, "s": {"type": "string", "maxLength": 3}},
    }]
    values = [0, 1, 10, 11, -1, 5.0, 5.5, True, False, None, "x", "", "abcd", "a" * 301, [], {}, 1.5, 2**70]
    rng = random.Random(0)
    for schema in schemas:
        precheck = compile_precheck(schema)
        assert precheck is not None
        full = Draft202012Validator(schema)
        names = [*schema["properties"], "extra"]
        for _ in range(3000):
            obj = {k: rng.choice(values) for k in rng.sample(names, rng.randint(0, len(names)))}
            if rng.random() < 0.5:
                for k, p in schema["properties"].items():
                    obj[k] = {"integer": rng.randint(0, 10), "number": 1.0, "string": "ok", "boolean": True}[p["type"]]
                obj.pop("extra", None)
            valid = full.is_valid(obj)
            assert not (precheck(obj) and not valid), obj
            assert isinstance(check(json.dumps(obj), schema), Invalid) is not valid
    for unsupported in ({"type": "object", "properties": {"a": {"type": "integer", "enum": [1]}}},
                        {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "null"}}}},
                        {"type": "object", "properties": {"a": {"enum": ["x", 1]}}},
                        {"type": "object", "properties": {"a": {"type": "array"}}}, {"type": "array"},
                        {"type": "object", "patternProperties": {}}):
        assert compile_precheck(unsupported) is None


def test_schema_precheck_of_enums_arrays_and_nested_objects_agrees_with_jsonschema():
    """The classify, multi-label and extract shapes: the pre-check takes them (no jsonschema call for a
    valid answer) and never accepts what jsonschema rejects."""
    import random

    from jsonschema import Draft202012Validator

    from distill.validate import compile_precheck

    entity = {"type": "object", "properties": {"type": {"enum": ["person", "place"]},
                                               "text": {"type": "string", "minLength": 1}},
              "required": ["type", "text"], "additionalProperties": False}
    schemas = [
        {"type": "object", "properties": {"label": {"enum": ["a", "b"]}, "rationale": {"type": "string"}},
         "required": ["label"], "additionalProperties": False},
        {"type": "object", "properties": {"labels": {"type": "array", "items": {"enum": ["a", "b", "c"]},
                                                     "minItems": 1, "maxItems": 2}},
         "required": ["labels"], "additionalProperties": False},
        {"type": "object", "properties": {"entities": {"type": "array", "items": entity, "maxItems": 3}},
         "required": ["entities"], "additionalProperties": False},
    ]
    leaves = ["a", "b", "c", "person", "place", "", "x", 1, True, None, 2.5]
    rng = random.Random(1)

    def value(depth: int = 0):
        roll = rng.random()
        if depth < 2 and roll < 0.3:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        if depth < 2 and roll < 0.5:
            keys = rng.sample(["type", "text", "extra"], rng.randint(0, 3))
            return {k: value(depth + 1) for k in keys}
        return rng.choice(leaves)

    accepted = 0
    for schema in schemas:
        precheck = compile_precheck(schema)
        assert precheck is not None
        full = Draft202012Validator(schema)
        names = [*schema["properties"], "extra"]
        for _ in range(4000):
            obj = {k: value() for k in rng.sample(names, rng.randint(0, len(names)))}
            ok = precheck(obj)
            assert not (ok and not full.is_valid(obj)), obj
            accepted += ok
    assert precheck({"entities": [{"type": "place", "text": "Hull"}, {"type": "person", "text": "Li Wei"}]})
    assert not precheck({"entities": [{"type": "company", "text": "Orsted"}]})
    assert not precheck({"entities": [{"type": "place", "text": ""}]})
    assert not precheck({"entities": [{"type": "place", "text": "a"}] * 4})  # maxItems
    assert accepted > 50  # the random answers include valid ones, so the success path is exercised
