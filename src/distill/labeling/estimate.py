"""What the label stage will cost before it runs: requests, tokens, dollars and minutes.

``distill estimate`` reads ``params.yaml``, the filter and the prefilter's ``passed.jsonl`` and
renders every prompt exactly as the label stage does (:meth:`Labeler.prepare`), one record at a
time. For each record it walks the conversation the engine would have through the response cache: a
cached answer is free, a cached invalid answer leads to the re-ask the engine would send (also
looked up), and the first request that is not cached is what the run will pay for, plus the re-asks
expected from the invalid rate of the cached answers.

Input tokens are counted

- with the model's own tokenizer where it is available offline: the embedded (local) oracle's GGUF
  vocabulary through llama-cpp-python (``vocab_only``) and its chat template, which reproduces the
  ``prompt_tokens`` llama.cpp reports; tiktoken for OpenAI models only when its encoding files are
  already on disk;
- otherwise from characters, at a chars-per-token ratio calibrated on the cached answers found for
  these records (the cache stores each answer's ``input_tokens``, the walk knows the prompt), else
  on the first-attempt rows of the last label run's ``labels.jsonl``, else an assumed 4 chars per
  token.

Output tokens come from a pilot: the mean of the cached answers for these records, else of every
cached answer of the provider and model, else ``oracle.max_tokens`` times a factor. The method used
for each is part of the result. No request is made and no API key is needed.

Length: over 400 lines because it is one computation walked end to end (the records, the
conversation through the cache, tokens, re-ask rates, dollars, minutes, the table); its pieces share
their assumptions and read best together. The cache reader and the token counters live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.config import LabelConfig, read_params, section
from distill.errors import ConfigError, InputError
from distill.filterspec import FilterSpec, load_filter_at
from distill.labeling.budget import request_cost
from distill.labeling.build import build_labeler
from distill.labeling.cache import ReadOnlyCache
from distill.labeling.engine import Labeler
from distill.labeling.tokens import token_counter
from distill.providers import (
    ChatRequest,
    ChatResponse,
    Provider,
    ProviderConfig,
    ProviderError,
    RateLimits,
)
from distill.providers.prices import price_for
from distill.providers.registry import has_batch, identity
from distill.validate import Invalid

DEFAULT_CHARS_PER_TOKEN = 4.0
DEFAULT_OUTPUT_FACTOR = 0.5
DEFAULT_LATENCY_S = 2.0
#: a typical re-ask message (the validator's feedback), for the growth of a re-asked conversation
_FEEDBACK_CHARS = len(
    Invalid("schema", "at deployment_stage: 11 is greater than the maximum of 10").feedback
)


# ----------------------------------------------------------------------------- providers, offline
class OfflineProvider(Provider):
    """Stands in for a provider: same name, model and cache identity; never sends a request."""

    def __init__(self, cfg: ProviderConfig):
        super().__init__(cfg)
        self._identity = identity(cfg)  # from the config alone: no key, no SDK, no model loaded
        self.name = cfg.provider

    def cache_identity(self) -> dict[str, Any]:
        return dict(self._identity)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        raise ProviderError("an estimate makes no requests")


# ----------------------------------------------------------------------------- time at the limits
def time_at_limits(
    requests: float,
    input_tokens: float,
    output_tokens: float,
    limits: RateLimits,
    concurrency: int,
    latency_s: float,
    serial: bool = False,
    max_tokens: float = 0.0,
) -> tuple[float, str, dict[str, float]]:
    """Minutes each configured limit needs for this work; the largest is the binding one. A combined
    ``tpm`` limit counts every request's input plus its full ``max_tokens``, as the scheduler does."""
    conc = 1 if serial else min(concurrency, limits.max_concurrency or concurrency)
    why = " (one llama.cpp context: requests take turns)" if serial else ""
    need = {
        f"concurrency {conc} at {latency_s:g} s a request{why}": requests * latency_s / conc / 60.0
    }
    if limits.rpm:
        need[f"rpm {limits.rpm:g}"] = requests / limits.rpm
    if limits.rps:
        need[f"rps {limits.rps:g}"] = requests / limits.rps / 60.0
    if limits.input_tpm:
        need[f"input_tpm {limits.input_tpm:g}"] = input_tokens / limits.input_tpm
    if limits.output_tpm:
        need[f"output_tpm {limits.output_tpm:g}"] = output_tokens / limits.output_tpm
    if limits.tpm:
        need[f"tpm {limits.tpm:g}"] = (input_tokens + requests * max_tokens) / limits.tpm
    binding = max(need, key=lambda k: need[k])
    return need[binding], binding, need


# ----------------------------------------------------------------------------- per-oracle tallies
@dataclass
class _Tally:
    """What the walk over the records found for one oracle of the route."""

    cfg: ProviderConfig
    provider: OfflineProvider
    counter: Any  # LlamaTokenCounter | TiktokenCounter | None
    counter_note: str
    records: int = 0
    cached_requests: int = 0
    cached_input_tokens: int = 0
    cached_output_tokens: int = 0
    answers: int = 0  # cached answers examined
    invalid_answers: int = 0
    cal_chars: int = 0  # chars of conversations whose cached answer reports input tokens
    cal_tokens: int = 0
    cal_answers: int = 0
    #: uncached requests by attempt number (index 0 = first attempt): count and summed units
    #: (tokens with an exact counter, characters otherwise)
    pending_count: list[int] = field(default_factory=list)
    pending_units: list[float] = field(default_factory=list)


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m.get("content") or "") for m in messages)


def _label_history(label_cfg: LabelConfig, describe: str) -> dict[str, float]:
    """Calibration, pilot and invalid rate from the last label run's outputs for this oracle."""
    out = Path(label_cfg.output_dir)
    h = {
        "chars": 0,
        "tokens": 0,
        "calibration_rows": 0,
        "answers": 0,
        "invalid": 0,
        "output_tokens": 0,
        "first_answers": 0,
    }
    labels, invalid = out / "labels.jsonl", out / "invalid.jsonl"
    if labels.is_file():
        for row in jsonl.read_jsonl(labels):
            if row.get("oracle") != describe:
                continue
            attempts = int(row.get("attempts") or 1)
            h["answers"] += attempts
            h["invalid"] += attempts - 1
            usage = row.get("usage") or {}
            if attempts == 1 and usage.get("input_tokens") and row.get("messages"):
                h["chars"] += _chars(row["messages"])
                h["tokens"] += int(usage["input_tokens"])
                h["calibration_rows"] += 1
                h["output_tokens"] += int(usage.get("output_tokens") or 0)
                h["first_answers"] += 1
    if invalid.is_file():
        for row in jsonl.read_jsonl(invalid):
            if row.get("oracle") != describe:
                continue
            answered = [a for a in row.get("attempts", []) if "attempt" in a]  # not provider errors
            h["answers"] += len(answered)
            h["invalid"] += len(answered)
    return h


# ----------------------------------------------------------------------------- the estimate
def estimate(
    params: dict[str, Any],
    input_path: str | Path | None = None,
    *,
    latency_s: float = DEFAULT_LATENCY_S,
    output_factor: float = DEFAULT_OUTPUT_FACTOR,
) -> dict[str, Any]:
    """The estimate as a JSON-ready dict (see :func:`format_estimate` for the table)."""
    if latency_s <= 0:
        raise ConfigError("--latency-s must be positive")
    if output_factor <= 0:
        raise ConfigError("--output-factor must be positive")
    ref = section(params, "filter")
    spec = load_filter_at(ref.root, ref.name, ref.version)
    if not spec.READS_CORPUS:
        raise ConfigError(f"filter {spec.name} is a {spec.KIND} task: its requests depend on its answers "
                          "(duplicates and invalid items ask again), so they cannot be counted before it runs; "
                          "cap its spend with label.budget_usd, which stops it resumably")
    oracle_cfg: ProviderConfig = section(params, "oracle")
    label_cfg: LabelConfig = section(params, "label")
    if input_path is None:
        input_path = Path(section(params, "prefilter").output_dir) / "passed.jsonl"
    input_path = Path(input_path)
    if not input_path.is_file():
        raise InputError(f"{input_path} not found: run the prefilter stage first (or pass --input)")

    records, results = _estimate_oracle(spec, oracle_cfg, label_cfg, input_path, latency_s, output_factor)
    total = _total(results, oracle_cfg, label_cfg, latency_s)
    out = {
        "input": str(input_path),
        "filter": f"{spec.name} {spec.version}",
        "records": records,
        "cache": {"path": label_cfg.cache_path, "found": Path(label_cfg.cache_path).is_file()},
        "assumptions": {
            "latency_s": latency_s,
            "output_factor": output_factor,
            "label_concurrency": label_cfg.concurrency,
            "max_attempts": label_cfg.max_attempts,
            "mode": label_cfg.mode,
        },
        "oracles": results,
        "total": total,
    }
    if label_cfg.cascade is not None:
        out["cascade"] = _cascade_estimate(spec, label_cfg, input_path, latency_s, output_factor, total)
    return out


def _cascade_estimate(spec: FilterSpec, label_cfg: LabelConfig, input_path: Path, latency_s: float,
                      output_factor: float, strong_total: dict[str, Any]) -> dict[str, Any]:
    """The cascade priced against the strong oracle alone. Both oracles are estimated on every record,
    then weighted: the strong oracle labels ``share`` of the records and checks ``check_share`` of the
    rest; the bulk oracle labels the rest, each request carrying ``examples`` worked examples (a prompt
    and an answer each, at the strong oracle's mean tokens)."""
    from distill.config import named_oracle

    cfg = label_cfg.cascade
    bulk_cfg = named_oracle(cfg.bulk, "label.cascade.bulk")[0] if isinstance(cfg.bulk, str) else cfg.bulk
    _, bulk_results = _estimate_oracle(spec, bulk_cfg, label_cfg, input_path, latency_s, output_factor)
    bulk = _total(bulk_results, bulk_cfg, label_cfg, latency_s)
    strong_share = cfg.share + (1 - cfg.share) * cfg.check_share
    requests = max(strong_total["requests"], 1)
    example_tokens = cfg.examples * (strong_total["input_tokens"] + strong_total["output_tokens"]) / requests
    from distill.providers.prices import price_for

    bulk_price = price_for(bulk_cfg)[0]
    strong_online, bulk_online = strong_total["cost_usd"]["online"], bulk["cost_usd"]["online"]
    if strong_online is None or bulk_online is None or bulk_price is None:
        cascade_usd = None
    else:
        extra = request_cost(bulk_price, example_tokens * bulk["requests"], 0)
        cascade_usd = round(strong_online * strong_share + (bulk_online + extra) * (1 - cfg.share), 6)
    return {
        "bulk_oracle": f"{bulk_cfg.provider}:{bulk_cfg.model}",
        "share": cfg.share, "check_share": cfg.check_share, "examples": cfg.examples,
        "strong_alone_usd": strong_online, "bulk_alone_usd": bulk_online, "cascade_usd": cascade_usd,
        "saving_usd": None if cascade_usd is None else round(strong_online - cascade_usd, 6),
        "method": (f"strong oracle on {strong_share:.0%} of the records (its share and the checks), the bulk "
                   f"oracle on {1 - cfg.share:.0%} with {cfg.examples} worked example(s) of about "
                   f"{example_tokens / max(cfg.examples, 1):.0f} tokens each; dollars for what is not cached"),
    }


def _estimate_oracle(spec: FilterSpec, oracle_cfg: ProviderConfig, label_cfg: LabelConfig, input_path: Path,
                     latency_s: float, output_factor: float) -> tuple[int, list[dict[str, Any]]]:
    """(records, one result per oracle of ``oracle_cfg`` and its mix): the walk of every record."""
    members = [oracle_cfg, *oracle_cfg.mix]
    loaded: dict[str, Any] = {}
    tallies = []
    for cfg in members:
        counter, note = token_counter(cfg, spec.json_schema, loaded)
        tallies.append(_Tally(cfg, OfflineProvider(cfg), counter, note))
    cache = ReadOnlyCache(label_cfg.cache_path)
    labeler = build_labeler(spec, oracle_cfg, label_cfg, cache,  # type: ignore[arg-type]
                            providers=[(t.provider, t.cfg.weight) for t in tallies], limits=False)
    by_provider = {id(t.provider): t for t in tallies}
    records = 0
    try:
        for record in jsonl.read_jsonl(input_path):
            records += 1
            item = labeler.prepare(record)
            tally = by_provider[id(labeler.route(item["id"])[0])]
            _walk(labeler, tally, item)
        results = [
            _finish(t, cache, label_cfg, oracle_cfg.max_tokens, latency_s, output_factor)
            for t in tallies
        ]
    finally:
        cache.close()
        for counter, _ in loaded.values():
            if counter is not None:
                counter.close()
    return records, results


def _walk(labeler: Labeler, t: _Tally, item: dict[str, Any]) -> None:
    """Follow the engine's conversation for one record through the cache."""
    t.records += 1
    conversation = labeler.conversation(item)
    while (current := conversation.messages()) is not None:
        key = labeler.key_for(t.provider, labeler.request_for(current, conversation.schema,
                                                              t.cfg.request_context(item)))
        cached = labeler.cache.get(key)
        if cached is None:
            attempt = conversation.answers
            while len(t.pending_count) <= attempt:
                t.pending_count.append(0)
                t.pending_units.append(0.0)
            t.pending_count[attempt] += 1
            t.pending_units[attempt] += t.counter.count(current) if t.counter else _chars(current)
            return
        t.cached_requests += 1
        t.cached_input_tokens += cached.input_tokens
        t.cached_output_tokens += cached.output_tokens
        t.answers += 1
        if cached.input_tokens > 0:
            t.cal_chars += _chars(current)
            t.cal_tokens += cached.input_tokens
            t.cal_answers += 1
        if isinstance(conversation.answer(cached, cached=True), Invalid):
            t.invalid_answers += 1


def _finish(
    t: _Tally,
    cache: ReadOnlyCache,
    label_cfg: LabelConfig,
    max_tokens: int,
    latency_s: float,
    output_factor: float,
) -> dict[str, Any]:
    cfg, describe = t.cfg, t.provider.describe()
    history: dict[str, float] | None = None

    def hist() -> dict[str, float]:
        nonlocal history
        if history is None:
            history = _label_history(label_cfg, describe)
        return history

    # input tokens: the tokenizer, or characters at a calibrated ratio
    cpt: float | None = None
    if t.counter is not None:
        input_method = t.counter.method
    elif t.cal_answers and t.cal_tokens:
        cpt = t.cal_chars / t.cal_tokens
        input_method = (
            f"calibrated: {cpt:.2f} chars/token measured on {t.cal_answers} cached answer(s) "
            f"for these records ({t.counter_note})"
        )
    elif hist()["calibration_rows"] and hist()["tokens"]:
        cpt = hist()["chars"] / hist()["tokens"]
        input_method = (
            f"calibrated: {cpt:.2f} chars/token measured on {int(hist()['calibration_rows'])} "
            f"row(s) of {Path(label_cfg.output_dir) / 'labels.jsonl'} ({t.counter_note})"
        )
    else:
        cpt = DEFAULT_CHARS_PER_TOKEN
        input_method = (
            f"assumed {DEFAULT_CHARS_PER_TOKEN:g} chars/token: no cached answers to calibrate on "
            f"({t.counter_note})"
        )

    # output tokens: a pilot, else max_tokens x factor
    pilot_n, pilot_mean = cache.output_pilot(t.provider.name, t.provider.model)
    if t.answers:
        out_mean = t.cached_output_tokens / t.answers
        output_method = f"pilot: mean of {t.answers} cached answer(s) for these records"
    elif hist()["first_answers"]:
        out_mean = hist()["output_tokens"] / hist()["first_answers"]
        output_method = (
            f"pilot: mean of {int(hist()['first_answers'])} answer(s) in the last label run"
        )
    elif pilot_n:
        out_mean = pilot_mean
        output_method = (
            f"pilot: mean of {pilot_n} cached answer(s) of {t.provider.name}/{t.provider.model}"
        )
    else:
        out_mean = max_tokens * output_factor
        output_method = (
            f"assumed: oracle.max_tokens {max_tokens} x {output_factor:g} (no cached answers)"
        )

    # invalid rate: cached answers for these records, else the last label run
    if t.answers:
        p = t.invalid_answers / t.answers
        invalid_from = (
            f"{t.invalid_answers} of {t.answers} cached answer(s) for these records invalid"
        )
    elif hist()["answers"]:
        p = hist()["invalid"] / hist()["answers"]
        invalid, answers = int(hist()["invalid"]), int(hist()["answers"])
        invalid_from = f"{invalid} of {answers} answer(s) in the last label run invalid"
    else:
        p = 0.0
        invalid_from = "unknown (no cached answers): no re-asks assumed"
    p = min(p, 0.95)

    # expected requests still to send: a chain from attempt a re-asks with probability p each time
    max_attempts = label_cfg.max_attempts
    reask_tokens = out_mean + _FEEDBACK_CHARS / (cpt or DEFAULT_CHARS_PER_TOKEN)
    new_requests = new_input = first_new = 0.0
    for a, (count, units) in enumerate(zip(t.pending_count, t.pending_units)):
        g = sum(p**j for j in range(max_attempts - a))
        h = sum(j * p**j for j in range(max_attempts - a))
        base = units if t.counter is not None else units / cpt
        first_new += count
        new_requests += count * g
        new_input += base * g + count * h * reask_tokens
    new_output = new_requests * out_mean
    cached_reasks = t.cached_requests - (t.records - sum(t.pending_count[:1]))
    reasks = max(0.0, cached_reasks) + (new_requests - first_new)
    price, price_from = price_for(cfg)

    def dollars(input_tokens: float, output_tokens: float, discount: float = 1.0) -> float | None:
        return None if price is None else round(request_cost(price, input_tokens, output_tokens, discount), 6)

    online = dollars(new_input, new_output)
    # batch mode exists only where the provider has a batch backend (not the local model, not Anthropic)
    batch = dollars(new_input, new_output, price.batch_discount) if price and has_batch(cfg.provider) else None
    minutes, binding, need = time_at_limits(
        new_requests,
        new_input,
        new_output,
        cfg.limits,
        label_cfg.concurrency,
        latency_s,
        serial=cfg.provider == "local",
        max_tokens=cfg.max_tokens,
    )
    requests = t.cached_requests + new_requests
    return {
        "oracle": describe,
        "weight": cfg.weight,
        "records": t.records,
        "requests": _r(requests),
        "reasks": _r(reasks),
        "cached_requests": t.cached_requests,
        "new_requests": _r(new_requests),
        "invalid_rate": round(p, 4),
        "invalid_rate_from": invalid_from,
        "input_tokens": _r(t.cached_input_tokens + new_input),
        "output_tokens": _r(t.cached_output_tokens + new_output),
        "new_input_tokens": _r(new_input),
        "new_output_tokens": _r(new_output),
        "chars_per_token": round(cpt, 4) if cpt else None,
        "input_token_method": input_method,
        "mean_output_tokens": round(out_mean, 2),
        "output_token_method": output_method,
        "price": price.model_dump() if price is not None else None,
        "price_from": price_from,
        "batch_available": has_batch(cfg.provider),
        "cost_usd": {"online": online, "batch": batch},
        "cost_usd_without_cache": dollars(t.cached_input_tokens + new_input, t.cached_output_tokens + new_output),
        "minutes": round(minutes, 3),
        "binding_limit": binding,
        "minutes_by_limit": {k: round(v, 3) for k, v in need.items()},
    }


def _r(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 2)


def _total(
    results: list[dict[str, Any]],
    oracle_cfg: ProviderConfig,
    label_cfg: LabelConfig,
    latency_s: float,
) -> dict[str, Any]:
    keys = (
        "records",
        "requests",
        "reasks",
        "cached_requests",
        "new_requests",
        "input_tokens",
        "output_tokens",
        "new_input_tokens",
        "new_output_tokens",
    )
    total: dict[str, Any] = {k: _r(round(sum(r[k] for r in results), 6)) for k in keys}

    def add(values: list[float | None]) -> float | None:  # unknown when any member's is unknown
        return None if any(v is None for v in values) else round(sum(values), 6)

    total["cost_usd_without_cache"] = add([r["cost_usd_without_cache"] for r in results])
    total["cost_usd"] = {"online": add([r["cost_usd"]["online"] for r in results]),
                         "batch": add([r["cost_usd"]["batch"] for r in results])}
    if len(results) == 1:
        total.update(
            minutes=results[0]["minutes"],
            binding_limit=results[0]["binding_limit"],
            minutes_by_limit=results[0]["minutes_by_limit"],
        )
    else:  # label runs one scheduler with oracle.limits and label.concurrency for the whole mix
        minutes, binding, need = time_at_limits(
            total["new_requests"],
            total["new_input_tokens"],
            total["new_output_tokens"],
            oracle_cfg.limits,
            label_cfg.concurrency,
            latency_s,
            max_tokens=oracle_cfg.max_tokens,
        )
        total.update(
            minutes=round(minutes, 3),
            binding_limit=binding,
            minutes_by_limit={k: round(v, 3) for k, v in need.items()},
        )
    return total


# ----------------------------------------------------------------------------- the table
def _num(v: Any, money: bool = False, whole: bool = False) -> str:
    if v is None:
        return "n/a"
    if money:
        return f"${v:,.4f}"
    if whole:
        return f"{round(v):,}"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"


def format_estimate(est: dict[str, Any]) -> str:
    oracles = est["oracles"]
    cols = [*oracles, est["total"]] if len(oracles) > 1 else oracles
    heads = [f"{o['oracle']} ({o['records']} rec)" for o in oracles] + (
        ["total"] if len(oracles) > 1 else []
    )
    width = max(16, *(len(h) + 2 for h in heads))
    rows = [
        ("records", lambda c: _num(c["records"])),
        ("requests (incl. re-asks)", lambda c: _num(c["requests"])),
        ("  expected re-asks", lambda c: _num(c["reasks"])),
        ("already cached (free)", lambda c: _num(c["cached_requests"])),
        ("to send", lambda c: _num(c["new_requests"])),
        ("input tokens to send", lambda c: _num(c["new_input_tokens"], whole=True)),
        ("output tokens to send", lambda c: _num(c["new_output_tokens"], whole=True)),
        ("dollars online", lambda c: _num(c["cost_usd"]["online"], money=True)),
        ("dollars batch", lambda c: _num(c["cost_usd"]["batch"], money=True)),
        ("minutes at the limits", lambda c: f"{c['minutes']:,.1f}"),
        ("all requests: input tokens", lambda c: _num(c["input_tokens"], whole=True)),
        ("all requests: output tokens", lambda c: _num(c["output_tokens"], whole=True)),
        ("dollars if nothing were cached", lambda c: _num(c["cost_usd_without_cache"], money=True)),
    ]
    lines = [
        (
            f"estimate for {est['records']} records of {est['input']} (filter {est['filter']}, "
            f"label.mode={est['assumptions']['mode']})"
        ),
        f"{'':<32}" + "".join(f"{h:>{width}}" for h in heads),
        "-" * (32 + width * len(heads)),
    ]
    for name, fn in rows:
        lines.append(f"{name:<32}" + "".join(f"{fn(c):>{width}}" for c in cols))
    lines.append("")
    for o in oracles:
        lines.append(f"{o['oracle']}:")
        lines.append(f"  input tokens:  {o['input_token_method']}")
        lines.append(
            f"  output tokens: {o['output_token_method']} ({o['mean_output_tokens']:g} a request)"
        )
        lines.append(
            f"  re-asks:       invalid rate {o['invalid_rate']:.1%} ({o['invalid_rate_from']})"
        )
        lines.append(f"  binding limit: {o['binding_limit']} ({o['minutes']:,.1f} min)")
        if o["price"] is None:
            lines.append(f"  price:         unknown ({o['price_from']}): dollars are n/a; set "
                         "-S oracle.price.input_per_mtok=... -S oracle.price.output_per_mtok=...")
        else:
            lines.append(f"  price:         ${o['price']['input_per_mtok']:g} / ${o['price']['output_per_mtok']:g} "
                         f"per million tokens in / out ({o['price_from']})")
        if not o["batch_available"]:
            lines.append("  batch:         no batch API for this provider in distill (label.mode=online only)")
    if len(oracles) > 1:
        t = est["total"]
        lines.append(
            f"whole run (oracle.limits apply to the mix): binding limit {t['binding_limit']} "
            f"({t['minutes']:,.1f} min)"
        )
    if "cascade" in est:
        c = est["cascade"]
        lines.append(f"cascade with {c['bulk_oracle']}: {_num(c['cascade_usd'], money=True)} against "
                     f"{_num(c['strong_alone_usd'], money=True)} for the strong oracle alone "
                     f"(saving {_num(c['saving_usd'], money=True)}); {c['method']}")
    a = est["assumptions"]
    lines.append(
        f"assumed latency {a['latency_s']:g} s a request, "
        f"label.concurrency {a['label_concurrency']}, up to {a['max_attempts']} attempts a record; "
        "cached requests cost nothing"
    )
    if a["mode"] == "batch":
        lines.append("label.mode=batch: the provider's batch queue decides the time (up to 24 h), "
                     "not these limits")
    if not est["cache"]["found"]:
        lines.append(f"no response cache at {est['cache']['path']}: nothing is cached yet")
    return "\n".join(lines)


def run(
    params_path: str | Path = "params.yaml", input_path: str | Path | None = None, **kw: Any
) -> dict[str, Any]:
    return estimate(read_params(params_path), input_path, **kw)
