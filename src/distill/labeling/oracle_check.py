"""The oracle's own noise: how far two oracles (or one asked twice) disagree on the same items.

A student cannot be judged below that floor. ``distill oracle-check`` draws a seeded sample of the
prefilter's ``passed.jsonl``, labels it with the configured oracle and with a second one, through
the normal :class:`~distill.labeling.engine.Labeler` and response cache (so a rerun is free, and the
first pass reuses what the label stage already paid for), and writes
``metrics/oracle_agreement.json``: per-dimension MAE between the two, their mean, the overall-score
MAE, the share of items with the same tier and Cohen's kappa on tiers, over the items both labelled
validly.

The second oracle is ``oracle_check.second``: a full oracle config, the name of a
``conf/oracle/*.yaml`` file, or null for the configured oracle asked again with ``temperature`` 0.7
and the next ``seed``. The second pass must differ in its generation parameters: with the same ones
the cache would hand back the first pass's answers and the check would measure nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.config import LabelConfig, OracleCheckConfig, _validate, named_oracle, read_params, section
from distill.errors import ConfigError, DistillError, InputError
from distill.evaluate import ids_digest
from distill.filterspec import FilterSpec, load_filter_at
from distill.labeling.budget import Budget
from distill.labeling.build import build_labeler, providers_for
from distill.labeling.cache import ResponseCache
from distill.labeling.engine import TooManyProviderErrors
from distill.providers import ProviderConfig
from distill.providers.registry import provider_class

log = logging.getLogger("distill")

SECOND_TEMPERATURE = 0.7
DEFAULT_OUTPUT = "metrics/oracle_agreement.json"


def check_config(params: dict[str, Any]) -> OracleCheckConfig:
    return _validate("oracle_check", OracleCheckConfig, params.get("oracle_check") or {})


# ----------------------------------------------------------------------------- the second oracle
_GENERATION_INERT = {
    "limits",
    "price",
    "weight",
    "request_timeout_s",
    "sdk_max_retries",
    "transport",
    "n_threads",
    "n_batch",
    "api_key_env",
}


def _answer_identity(cfg: ProviderConfig) -> dict[str, Any]:
    """What decides the answers (and the cache keys) of an oracle config."""
    return cfg.model_dump(exclude=_GENERATION_INERT | {"mix"}) | {
        "mix": [_answer_identity(m) for m in cfg.mix]
    }


def second_oracle(
    first: ProviderConfig, second: ProviderConfig | str | None, config_dir: str | Path = "conf"
) -> tuple[ProviderConfig, str]:
    """The second oracle's config and how it was chosen."""
    if second is None:
        seed = (first.seed if first.seed is not None else 0) + 1
        cfg = first.model_copy(update={"temperature": SECOND_TEMPERATURE, "seed": seed})
        how = f"the configured oracle again with temperature {SECOND_TEMPERATURE:g} and seed {seed}"
    elif isinstance(second, str):
        cfg, path = named_oracle(second, "oracle_check.second", config_dir)
        how = f"{path}"
    else:
        cfg = second
        how = "oracle_check.second"
    if _answer_identity(cfg) == _answer_identity(first):
        raise ConfigError(
            "oracle_check.second is the configured oracle with the same generation parameters: "
            "the response cache would return the same answers and the check would measure "
            "nothing. Change its temperature or seed (or set second: null for temperature 0.7 and "
            "the next seed)"
        )
    return cfg, how


# ----------------------------------------------------------------------------- the sample
def seeded_sample(records: Iterable[dict[str, Any]], size: int, seed: int) -> list[dict[str, Any]]:
    """A uniform sample of ``size`` records from a stream (reservoir sampling), in input order."""
    rng = random.Random(seed)
    reservoir: list[tuple[int, dict[str, Any]]] = []
    for i, record in enumerate(records):
        if i < size:
            reservoir.append((i, record))
        else:
            j = rng.randint(0, i)
            if j < size:
                reservoir[j] = (i, record)
    return [r for _, r in sorted(reservoir, key=lambda x: x[0])]


# ----------------------------------------------------------------------------- agreement
def agreement(
    first: dict[str, dict[str, Any]],
    second: dict[str, dict[str, Any]],
    spec: FilterSpec,
    order: list[str],
) -> dict[str, Any]:
    """How two sets of valid label rows (by id) agree, over the ids both have: the task kind's own
    measure (MAE and tier agreement for a rubric, label agreement and kappa for a classification...)."""
    return spec.agreement(first, second, order)


# ----------------------------------------------------------------------------- labelling
def _describe(cfg: ProviderConfig) -> dict[str, Any]:
    members = [cfg, *cfg.mix]
    names = [f"{m.provider}:{m.model}" for m in members]
    return {
        "oracle": " + ".join(names),
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "max_tokens": cfg.max_tokens,
    }


async def _label_pass(
    spec: FilterSpec,
    cfg: ProviderConfig,
    label_cfg: LabelConfig,
    cache,
    budget,
    sample: list[dict[str, Any]],
    providers,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Label ``sample`` with one oracle config as label would: valid rows by id, and stats."""
    labeler = build_labeler(spec, cfg, label_cfg, cache, providers=providers, budget=budget)
    valid: dict[str, dict[str, Any]] = {}
    try:
        async for kind, row in labeler.run(sample, label_cfg.concurrency):
            if kind == "valid":  # the task's computed label fields are what agreement compares
                valid[row["id"]] = {k: v for k, v in spec.labelled(row["label"], row).items() if k != "label"}
    except TooManyProviderErrors as e:
        raise DistillError(f"{e}. Answers received so far are cached: rerun to resume.") from e
    if labeler.stop_reason:
        raise DistillError(
            f"{labeler.stop_reason}. Raise label.budget_usd and rerun: answers so far are cached."
        )
    s = labeler.stats
    stats = {
        "valid": s.valid,
        "invalid": s.invalid,
        "requests": s.requests,
        "cache_hits": s.cache_hits,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "cost_usd": round(s.cost_usd, 6),
        "invalid_reasons": dict(s.invalid_reasons),
    }
    return valid, stats


def oracle_check(
    params: dict[str, Any],
    input_path: str | Path | None = None,
    *,
    output: str | Path = DEFAULT_OUTPUT,
    config_dir: str | Path = "conf",
    sample_size: int | None = None,
    only_ids: set[str] | None = None,
    providers: tuple | None = None,
) -> dict[str, Any]:
    """Run the check and write ``output``; return what was written.

    ``only_ids``: sample only the records with these ids (the ``oracle_check`` stage passes the test
    split's, so the floor is measured on the items the student is judged on). ``providers`` (tests):
    ready provider lists for the first and second pass, instead of building them from the config.
    """
    cfg = check_config(params)
    if sample_size is not None:
        cfg = cfg.model_copy(update={"sample_size": sample_size})
    ref = section(params, "filter")
    spec = load_filter_at(ref.root, ref.name, ref.version)
    if not spec.READS_CORPUS:
        raise ConfigError(f"filter {spec.name} is a {spec.KIND} task: it has no records two oracles could both "
                          "answer, so there is no oracle floor to measure")
    first: ProviderConfig = section(params, "oracle")
    label_cfg: LabelConfig = section(params, "label")
    second, how = second_oracle(first, cfg.second, config_dir)
    if input_path is None:
        input_path = Path(section(params, "prefilter").output_dir) / "passed.jsonl"
    input_path = Path(input_path)
    if not input_path.is_file():
        raise InputError(f"{input_path} not found: run the prefilter stage first (or pass --input)")
    records = jsonl.read_jsonl(input_path)
    if only_ids is not None:
        records = (r for r in records if r["id"] in only_ids)
    sample = seeded_sample(records, cfg.sample_size, cfg.seed)
    if not sample:
        raise InputError(f"{input_path} holds no records to sample")
    if cfg.second is None and not provider_class(first).answers_vary:
        # labels read from a file come back the same at any temperature: asking twice measures nothing
        result = {"measured": False, "sampled": len(sample),
                  "reason": f"oracle.provider={first.provider} gives the same answer every time; set "
                            "oracle_check.second to a second source (e.g. a file oracle reading another "
                            "annotator's column) to measure how far two sources disagree"}
        jsonl.write_json(output, result)
        return result

    # every provider is built (and its key checked) before any request
    if providers is None:
        first_providers = providers_for(first)
        # with second: null, the same providers, asked with other generation parameters
        second_providers = first_providers if cfg.second is None else providers_for(second)
    else:
        first_providers, second_providers = providers
    log.info(
        "oracle-check: %d sampled records (seed %d) from %s; first: %s; second: %s",
        len(sample),
        cfg.seed,
        input_path,
        _describe(first)["oracle"],
        how,
    )
    cache = ResponseCache(label_cfg.cache_path)
    budget = Budget(label_cfg.budget_usd)
    t0 = time.perf_counter()

    async def both():  # one event loop: SDK clients are bound to the loop they were made in
        try:
            first_pass = await _label_pass(
                spec, first, label_cfg, cache, budget, sample, first_providers
            )
            second_pass = await _label_pass(
                spec, second, label_cfg, cache, budget, sample, second_providers
            )
            return first_pass, second_pass
        finally:
            for p in {id(p): p for p, _ in [*first_providers, *second_providers]}.values():
                await p.aclose()

    try:
        (a, stats_a), (b, stats_b) = asyncio.run(both())
    finally:
        cache.close()
    result = {
        **agreement(a, b, spec, [r["id"] for r in sample]),
        "sample_size": cfg.sample_size,
        "sampled": len(sample),
        # which items: evaluate shows the floor only for exactly its test items
        "ids_sha256": ids_digest(r["id"] for r in sample),
        "seed": cfg.seed,
        "input": str(input_path),
        "filter": f"{spec.name} {spec.version}",
        "oracles": {"first": _describe(first), "second": {**_describe(second), "chosen_by": how}},
        "same_oracle": cfg.second is None,
        "passes": {"first": stats_a, "second": stats_b},
        "cost_usd": round(stats_a["cost_usd"] + stats_b["cost_usd"], 6),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    jsonl.write_json(output, result)
    return result


def run(
    params_path: str | Path = "params.yaml", input_path: str | Path | None = None, **kw: Any
) -> dict[str, Any]:
    return oracle_check(read_params(params_path), input_path, **kw)


def format_agreement(result: dict[str, Any]) -> str:
    first, second = result["oracles"]["first"], result["oracles"]["second"]

    def show(v: Any) -> str:
        return "-" if v is None else f"{v}"

    lines = [
        f"oracle vs oracle on {result['n']} of {result['sampled']} sampled items (both valid)",
        f"  first:  {first['oracle']} (temperature {first['temperature']:g}, seed {first['seed']})",
        (
            f"  second: {second['oracle']} "
            f"(temperature {second['temperature']:g}, seed {second['seed']})"
        ),
        f"{'metric':<28}{'value':>10}",
        "-" * 38,
    ]
    keys = ("tier_agreement", "cohen_kappa", "overall_mae", "mean_dimension_mae", "label_agreement",
            "mean_jaccard", "exact_f1", "partial_f1", "exact_macro_f1", "partial_macro_f1", "answer_agreement",
            "chrf", "bleu")
    for key in keys:
        if key in result:
            lines.append(f"{key:<28}{show(result[key]):>10}")
    if "mae" in result:
        lines.append("per-dimension MAE:")
        for d, v in result["mae"].items():
            lines.append(f"  {d:<26}{show(v):>10}")
    p = result["passes"]
    lines.append(
        f"requests sent: {p['first']['requests']} + {p['second']['requests']} "
        f"(cache hits {p['first']['cache_hits']} + {p['second']['cache_hits']}), "
        f"cost ${result['cost_usd']:.4f}"
    )
    return "\n".join(lines)
