"""One function per DVC stage: typed config in, files and a metrics dict out.

The scripts in ``stages/`` only read ``params.yaml`` and call these, so every stage can be run and
tested without DVC or Hydra. Output locations come from the config (``output_dir`` of each section),
and ``dvc.yaml`` interpolates the same params, so paths are written down once.

Over 400 lines on purpose: one short function per stage, so every stage's inputs, outputs and metrics
(the data contract) read in one place; the work itself lives in the modules each function calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.config import (
    DedupConfig,
    EvaluateConfig,
    FilterRef,
    LabelConfig,
    MergeConfig,
    PrefilterConfig,
    SplitConfig,
    TrainConfig,
)
from distill.errors import ConfigError, DistillError, InputError
from distill.filterspec import FilterSpec, load_filter_at
from distill.providers import ProviderConfig

log = logging.getLogger("distill")

METRICS_DIR = Path("metrics")


def _require(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} not found: {what}")
    return p


# ----------------------------------------------------------------------------- prefilter
PREFILTER_OUTPUTS = ("passed.jsonl", "blocked_sample.jsonl", "quarantine.jsonl", "duplicates.jsonl",
                     "source_snapshot.jsonl")


def prefilter(cfg: PrefilterConfig, spec: FilterSpec, metrics_dir: Path = METRICS_DIR,
              dedup: DedupConfig | None = None) -> dict[str, Any]:
    """Read the input batch by batch (``prefilter.batch_rows`` records), apply the rules to each batch and
    write the outputs as it goes, so memory stays bounded whatever the input's size. Every output is
    written under a temporary name and moved into place only when the whole input was read: a failure
    half way (a lost database connection, a malformed file) leaves no output, and removes the outputs of
    an earlier run, so nothing incomplete or stale looks complete. A database input is also copied to
    ``source_snapshot.jsonl``, its row count and SHA-256 in the metrics. Records that pass the rules
    are then deduplicated (``dedup``: exact, MinHash, semantic; the first occurrence kept), so the
    oracle never labels the same text twice: each removal goes to ``duplicates.jsonl``, explained."""
    from distill.dedup import Deduper
    from distill.jsonl import AtomicWriter
    from distill.prefilter import PASS, apply_rules, records_frame
    from distill.sources import CorpusStream
    from distill.sources.snapshot import SnapshotWriter

    if not spec.READS_CORPUS:
        return _no_corpus(cfg, spec, metrics_dir)
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    stream = CorpusStream(cfg)
    passed_n = 0
    by_reason: Counter[str] = Counter()
    sampler = _BlockedSampler(cfg.blocked_sample_size)
    snapshot = None
    dedup = dedup or DedupConfig()
    deduper = Deduper(dedup)
    engine = None
    try:
        if cfg.engine == "ray":  # the rules and each record's dedup features on Ray; the same decisions here
            from distill.scale.ray_prefilter import RayPrefilter

            engine = RayPrefilter(cfg.ray, spec.prefilter, dedup)
        with (AtomicWriter(out / "passed.jsonl") as passed, AtomicWriter(out / "quarantine.jsonl") as quarantine,
              AtomicWriter(out / "duplicates.jsonl") as dupes):
            stream.on_quarantine = quarantine.write
            if stream.snapshots:
                snapshot = SnapshotWriter(out / "source_snapshot.jsonl")
                stream.on_source_row = snapshot.write
            judged = (engine.judged(stream.batches()) if engine is not None else
                      ((b, apply_rules(records_frame(b), spec.prefilter).to_list(), None) for b in stream.batches()))
            with snapshot or contextlib.nullcontext():
                for batch, decisions, features in judged:
                    survivors, made = [], []
                    for i, (record, decision) in enumerate(zip(batch, decisions)):
                        if decision == PASS:
                            survivors.append(record)
                            if features is not None:
                                made.append(features[i])
                        else:
                            by_reason[decision] += 1
                            sampler.offer(record, decision)
                    for record, why in zip(survivors, deduper.batch(survivors, made if features is not None else None)):
                        if why is None:
                            passed.write(record)
                        else:  # the whole record, so nothing is lost, and why it went
                            dupes.write({**why, "title": record.get("title"), "text": record["text"],
                                         "metadata": record.get("metadata")})
                passed_n = passed.count
        jsonl.write_jsonl(out / "blocked_sample.jsonl", sampler.sample())
    except BaseException:
        for name in PREFILTER_OUTPUTS:  # an earlier run's outputs must not pass for this run's
            (out / name).unlink(missing_ok=True)
        raise
    finally:
        deduper.close()
        if engine is not None:
            engine.close()
    if snapshot is None:
        (out / "source_snapshot.jsonl").unlink(missing_ok=True)
    by_reason = dict(sorted(by_reason.items()))
    blocked_n = sum(by_reason.values())
    quarantined = sum(stream.quarantine_counts.values())
    metrics = {
        "rows_read": stream.rows_read,
        "quarantined": quarantined,
        "quarantine_reasons": dict(stream.quarantine_counts),
        "records": stream.records,
        "passed": passed_n,
        "blocked": blocked_n,
        "blocked_by_reason": by_reason,
        "duplicates": dict(deduper.counts),
        "pass_rate": round(passed_n / stream.records, 4) if stream.records else 0.0,
        "missing_columns": stream.missing_columns,
        "synthesised_ids": stream.synthesised_ids,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if snapshot is not None:
        metrics["source_snapshot"] = snapshot.summary()
    jsonl.write_json(metrics_dir / "prefilter.json", metrics)
    if quarantined:
        log.warning("prefilter: %d malformed row(s) quarantined in %s (%s)", quarantined,
                    out / "quarantine.jsonl", _counts(stream.quarantine_counts))
    log.info("prefilter: %d records, %d passed, %d blocked %s, %d duplicate(s) removed %s", stream.records, passed_n,
             blocked_n, by_reason, sum(deduper.counts.values()), dict(deduper.counts))
    if not stream.records:  # outputs and metrics are written: the user can look
        raise InputError(_nothing_read(cfg, stream, out))
    if not passed_n:
        raise InputError(_nothing_passed(spec, by_reason, out))
    return metrics


def _no_corpus(cfg: PrefilterConfig, spec: FilterSpec, metrics_dir: Path) -> dict[str, Any]:
    """A generate filter reads no corpus (its topics come from the oracle, or ``topics.seeds`` in the
    filter): the stage writes empty outputs, so the graph stays the same, and says so in its metrics."""
    out = Path(cfg.output_dir)
    for name in PREFILTER_OUTPUTS:
        if name != "source_snapshot.jsonl":  # the one output that exists only for a database input
            jsonl.write_jsonl(out / name, [])
    (out / "source_snapshot.jsonl").unlink(missing_ok=True)
    note = (f"filter {spec.name} is a {spec.KIND} task: it reads no corpus, so prefilter.input is not read "
            "and the label stage writes the data")
    metrics = {"rows_read": 0, "quarantined": 0, "quarantine_reasons": {}, "records": 0, "passed": 0, "blocked": 0,
               "blocked_by_reason": {}, "pass_rate": 0.0, "missing_columns": {}, "synthesised_ids": 0,
               "duplicates": {"exact": 0, "minhash": 0, "semantic": 0}, "seconds": 0.0, "skipped": note}
    jsonl.write_json(metrics_dir / "prefilter.json", metrics)
    log.info("prefilter: %s", note)
    return metrics


def snapshot(cfg: PrefilterConfig, metrics_dir: Path = METRICS_DIR) -> dict[str, Any]:
    """The ``snapshot`` stage (README, Input): copy the database in ``prefilter.source`` into the file
    ``prefilter.input`` (rows as read, streamed), with its row count and SHA-256 in metrics/snapshot.json.
    DVC then tracks the file: prefilter, and so labelling, rerun only when the rows changed."""
    from distill.sources import open_sources
    from distill.sources.snapshot import SnapshotWriter

    if not cfg.source.configured:
        raise ConfigError("the snapshot stage copies prefilter.source into prefilter.input, but prefilter.source "
                          "names no database: set prefilter.source.dsn or prefilter.source.dsn_env")
    target = cfg.input if isinstance(cfg.input, str) else None
    if target is None or cfg.reads_database or not target.endswith(".jsonl"):
        raise ConfigError(f"the snapshot stage writes prefilter.input, which must then be one .jsonl path (e.g. "
                          f"data/snapshot/source.jsonl), got {cfg.input!r}")
    t0 = time.perf_counter()
    (source,), display = open_sources(cfg.model_copy(update={"input": None}), Path("."))
    declared, rows = source.open()
    with SnapshotWriter(target) as writer:
        for row in rows:
            writer.write(row.data or {})
    metrics = {**writer.summary(), "source": display, "columns": declared,
               "seconds": round(time.perf_counter() - t0, 3)}
    jsonl.write_json(metrics_dir / "snapshot.json", metrics)
    log.info("snapshot: %d row(s) of %s in %s (sha256 %s)", writer.rows, display, target, metrics["sha256"][:12])
    return metrics


class _BlockedSampler:
    """Up to ``size`` blocked rows for audit, spread across reasons, in input order: the same rows as
    taking ``size // len(reasons)`` of each reason (at least one) from the whole list, while keeping
    only the first ``size`` rows of each reason in memory."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._n = 0
        self._kept: dict[str, list[tuple[int, dict[str, Any]]]] = {}

    def offer(self, record: dict[str, Any], reason: str) -> None:
        kept = self._kept.setdefault(reason, [])
        if len(kept) < self.size:
            kept.append((self._n, {**record, "reason": reason}))
        self._n += 1

    def sample(self) -> list[dict[str, Any]]:
        if not self._kept or self.size <= 0:
            return []
        per = max(1, self.size // len(self._kept))
        merged = sorted((n, row) for rows in self._kept.values() for n, row in rows[:per])
        return [row for _, row in merged][: self.size]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _nothing_read(cfg: PrefilterConfig, stream, out: Path) -> str:
    top = stream.quarantine_counts.most_common(3)
    reasons = "; ".join(f"{reason} x{n} (e.g. {stream.first_detail[reason]})" for reason, n in top)
    columns = ", ".join(repr(c) for c in stream.columns[:30]) or "none"
    return (f"{stream.display}: no record could be read: all {stream.rows_read} row(s) were quarantined. Top "
            f"reasons: {reasons}. Columns found: {columns}. Check prefilter.field_map (text is "
            f"{cfg.field_map['text']!r}) and prefilter.format; every row is in {out / 'quarantine.jsonl'}, "
            "counts in metrics/prefilter.json")


def _nothing_passed(spec: FilterSpec, by_reason: dict[str, int], out: Path) -> str:
    where = spec.root / "filter.yaml" if spec.root is not None else f"filter {spec.name}"
    n = sum(by_reason.values())
    return (f"no record passed the prefilter: the prefilter rules in {where} blocked all {n} record(s) "
            f"({_counts(by_reason)}). See a sample per reason in {out / 'blocked_sample.jsonl'}; check that "
            "prefilter.field_map.text names the column with the full text, or loosen those rules")


# ----------------------------------------------------------------------------- label
def label(
    label_cfg: LabelConfig, oracle_cfg: ProviderConfig, spec: FilterSpec, input_path: str | Path,
    metrics_dir: Path = METRICS_DIR, provider=None, *, labels_path: str | Path | None = None,
    metrics_name: str = "label.json",
) -> dict[str, Any]:
    """Label every record of ``input_path`` (see :mod:`distill.labeling.engine`); write labels (to
    ``labels_path``, default ``<label.output_dir>/labels.jsonl``), invalid records, events and metrics.
    Raises DistillError after writing when requests failed for good or the budget stopped the run, and
    RuntimeCrash when the local runtime died: what was answered is cached, and a rerun continues from there."""
    from distill.labeling.build import build_labeler, providers_for
    from distill.labeling.cache import ResponseCache
    from distill.labeling.engine import TooManyProviderErrors
    from distill.labeling.events import Events
    from distill.labeling.gold import GoldPolicy
    from distill.labeling.progress import Progress
    from distill.providers.prices import budget_problem

    if not spec.READS_CORPUS:  # a generate filter: the job writes the rows itself (distill.labeling.generate)
        from distill.labeling.generate import generate

        return generate(label_cfg, oracle_cfg, spec, metrics_dir, provider)
    input_path = _require(input_path, "run the prefilter stage first")
    problem = budget_problem(oracle_cfg, label_cfg.budget_usd)
    if problem:  # before any request: a cap on dollars needs a price
        raise ConfigError(problem)
    batch_metrics = None
    if label_cfg.mode == "batch":
        from distill.labeling.batch import run_batch

        try:  # fills the cache; the online pass below materialises it without a request
            batch_metrics = run_batch(label_cfg, oracle_cfg, spec, input_path)
        except DistillError as e:
            if getattr(e, "batch_metrics", None) is not None:
                jsonl.write_json(metrics_dir / metrics_name, {"batch": e.batch_metrics, "stopped": str(e)})
            raise
    # every provider is built (and its key checked) before any request
    providers = [(provider, oracle_cfg.weight)] if provider is not None else providers_for(oracle_cfg)
    with open(input_path, encoding="utf-8") as fh:
        total = sum(1 for line in fh if line.strip())  # as read_jsonl counts them
    out = Path(label_cfg.output_dir)
    cache = ResponseCache(label_cfg.cache_path)
    events = Events(out / "events.jsonl")
    labeler = build_labeler(spec, oracle_cfg, label_cfg, cache, providers=providers, events=events)
    cascade = None
    if label_cfg.cascade is not None:  # a cheaper bulk oracle beside the configured (strong) one
        from distill.labeling.cascade import build_cascade

        cascade = build_cascade(label_cfg, labeler)
        providers = [*providers, *cascade.bulk.providers]
    limits = labeler.scheduler.describe()
    names = ", ".join(f"{p.describe()} (weight {w:g})" if len(providers) > 1 else p.describe() for p, w in providers)
    log.info("label: %d records with %s; limits: %s; up to %d attempts and %d transport retries each; "
             "budget %s; cache %s (%d answers)", total, names, limits, label_cfg.max_attempts,
             label_cfg.transport_retries, f"${label_cfg.budget_usd:g}" if label_cfg.budget_usd is not None else "none",
             label_cfg.cache_path, len(cache))
    events.emit("run_start", total=total, oracle=names, limits=limits, budget_usd=label_cfg.budget_usd)
    progress = Progress(total, labeler, label_cfg.progress, label_cfg.progress_interval_s, limits)
    gold = GoldPolicy(spec, label_cfg.on_gold_mismatch)
    t0 = time.perf_counter()

    async def run() -> None:
        ticker = asyncio.ensure_future(progress.run())
        try:
            with (jsonl.AtomicWriter(labels_path or out / "labels.jsonl") as good,
                  jsonl.AtomicWriter(out / "invalid.jsonl") as bad,
                  jsonl.AtomicWriter(out / "gold_mismatch.jsonl") as apart):
                outcomes = (cascade.run(lambda: jsonl.read_jsonl(input_path), label_cfg.concurrency) if cascade
                            else labeler.run(jsonl.read_jsonl(input_path), label_cfg.concurrency))
                async for kind, row in outcomes:
                    if kind == "valid":
                        kept = gold.apply(row, apart.write)
                        if kept is not None:
                            good.write(kept)
                    elif kind == "invalid":
                        bad.write(row)
                    progress.record(kind)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            for p, _ in providers:
                await p.aclose()

    try:
        asyncio.run(run())
        if cascade is not None and cascade.bulk.stop_reason and not labeler.stop_reason:
            labeler.stop_reason = cascade.bulk.stop_reason  # the shared budget stopped the bulk oracle
    except TooManyProviderErrors as e:  # the oracle looks down: stop, but say how to resume
        raise DistillError(f"{e}. Answers received so far are cached: rerun the stage to resume; "
                           "only what was not answered is requested again.") from e
    finally:
        cache.close()
        progress.finish()
        stats = labeler.stats if cascade is None else cascade.combined_stats()
        if labeler.stop_reason:  # the budget stopped it: every record not labelled was skipped
            stats.skipped = total - stats.valid - stats.invalid
        events.emit("run_end", **{k: v for k, v in stats.as_dict().items() if not isinstance(v, dict)})
        events.close()
        metrics = {**stats.as_dict(), "oracle": names, "mode": label_cfg.mode, "budget_usd": label_cfg.budget_usd,
                   "gold": gold.metrics(stats), "stopped": labeler.stop_reason,
                   "seconds": round(time.perf_counter() - t0, 3)}
        if batch_metrics is not None:
            metrics["batch"] = batch_metrics
        if cascade is not None:
            metrics["cascade"] = cascade.report()
        jsonl.write_json(metrics_dir / metrics_name, metrics)
    if stats.gold_unusable:
        log.warning("label: %d record(s) carry a golden answer this %s task cannot read (the first: %s), so it "
                    "was not compared; check prefilter.field_map.gold and the task's labels, types or gold.compare",
                    stats.gold_unusable, spec.KIND, labeler.first_unusable_gold)
    if stats.gold_checked:
        log.info("label: the oracle agrees with gold on %d of %d records (%s); %s",
                 stats.gold_agreed, stats.gold_checked, metrics["gold"]["share"], _counts(gold.counts) or "-")
    if labeler.stop_reason:
        raise DistillError(
            f"{labeler.stop_reason}. {stats.valid + stats.invalid} records labelled, "
            f"{total - stats.valid - stats.invalid} left. "
            "Raise label.budget_usd and rerun: answers so far are cached and will not be paid again."
        )
    if stats.provider_errors:
        raise DistillError(
            f"{stats.provider_errors} record(s) got no answer after retries (first error: {labeler.first_error}). "
            "Answers received so far are cached: rerun the stage to retry only what failed."
        )
    return metrics


def label_shard(label_cfg: LabelConfig, oracle_cfg: ProviderConfig, spec: FilterSpec, shard: int,
                extra_dir: str | Path, metrics_dir: Path = METRICS_DIR, provider=None) -> dict[str, Any]:
    """Label shard ``shard`` of ``label.shards`` (``<label.shard_dir>/<shard>/passed.jsonl``, written by the
    shard stage): label rows to ``<merge.extra_dir>/shard-<shard>.jsonl``, where merge reads them; invalid
    rows, events and gold mismatches to ``<label.output_dir>/shard-<shard>/``; metrics to
    ``metrics/label-shard-<shard>.json``. Through the same response cache, so shards are independent."""
    from distill.scale.shard import shard_path

    if not label_cfg.shards or shard not in label_cfg.shards:
        raise ConfigError(f"--shard {shard}: label.shards is {label_cfg.shards}; set label.shards to the shard "
                          "numbers 0 .. N-1 (e.g. [0, 1, 2, 3]) and run the shard stage first")
    input_path = _require(shard_path(label_cfg.shard_dir, shard),
                          "run the shard stage first (python stages/shard.py, or `distill shard`)")
    cfg = label_cfg.model_copy(update={"output_dir": str(Path(label_cfg.output_dir) / f"shard-{shard}")})
    return label(cfg, oracle_cfg, spec, input_path, metrics_dir, provider,
                 labels_path=Path(extra_dir) / f"shard-{shard}.jsonl", metrics_name=f"label-shard-{shard}.json")


# ----------------------------------------------------------------------------- merge
def merge(cfg: MergeConfig, spec: FilterSpec, labels: str | Path | None, metrics_dir: Path = METRICS_DIR,
          dedup: DedupConfig | None = None, shards: list[int] | None = None) -> dict[str, Any]:
    """Merge the label stage's ``labels`` with every ``*.jsonl`` label file in ``merge.extra_dir``
    (earlier runs, other oracles), apply the reviews (``merge.reviews``), rescore with the current
    filter and drop duplicates (``dedup``: exact, MinHash, semantic; explained in duplicates.jsonl). A
    record reviewed as incorrect is dropped, or written to ``rejected.jsonl`` with ``merge.incorrect=keep_apart``.

    With ``shards`` (``label.shards``) the label stage's file is not read (``labels`` is ignored): the
    shards' ``shard-<i>.jsonl`` in ``merge.extra_dir`` are, and each must be there."""
    from distill.dedup import Deduper, dedup_stream
    from distill.merge import apply_reviews, rescore
    from distill.scale.shard import label_files

    if shards:
        inputs = label_files(cfg.extra_dir, shards)
    elif labels is None:
        raise ConfigError("merge needs the label stage's labels.jsonl, or label.shards for the shards' label files")
    else:
        extras = label_files(cfg.extra_dir, None)  # first: a stale shard's file is the likelier mistake
        inputs = [_require(labels, "run the label stage first"), *extras]
    reviews = read_reviews(cfg.reviews, spec)
    counts: Counter[str] = Counter()
    matched: set[tuple[str, str]] = set()

    def rows():
        for path in inputs:
            for row in jsonl.read_jsonl(path):
                yield {**row, "label_file": str(path)}

    out = Path(cfg.output_dir)
    kept, dropped = 0, 0
    strata: Counter[str | None] = Counter()
    with (jsonl.AtomicWriter(out / "labels.jsonl") as keep, jsonl.AtomicWriter(out / "duplicates.jsonl") as dupes,
          jsonl.AtomicWriter(out / "rejected.jsonl") as apart):

        def reviewed_rows():
            for outcome, row in apply_reviews(rows(), reviews, counts, matched):
                if outcome == "keep":
                    yield rescore(row, spec)
                elif cfg.incorrect == "keep_apart":
                    apart.write(row)

        deduper = Deduper(dedup or DedupConfig())
        try:
            for row, dup in dedup_stream(reviewed_rows(), deduper):
                if dup is None:
                    keep.write(row)
                    kept += 1
                    strata[spec.stratum(row)] += 1
                else:
                    dupes.write({**dup, "label_file": row["label_file"], "title": row.get("title"),
                                 "text": row["text"], "label": row.get("label")})
                    dropped += 1
        finally:
            deduper.close()
    rejected = counts["rejected"]
    by_method = dict(deduper.counts)
    metrics = {"inputs": len(inputs), "rows_in": kept + dropped + rejected, "kept": kept,
               "exact_duplicates": by_method["exact"], "duplicates": by_method,
               spec.STRATA: {t: strata.get(t, 0) for t in spec.strata()},
               "reviews": {"in_file": len(reviews), "applied": len(matched), "stale": len(reviews) - len(matched),
                           "corrected": counts["corrected"], "confirmed": counts["confirmed"],
                           "incorrect_dropped": rejected if cfg.incorrect == "drop" else 0,
                           "incorrect_kept_apart": rejected if cfg.incorrect == "keep_apart" else 0}}
    jsonl.write_json(metrics_dir / "merge.json", metrics)
    log.info("merge: %d rows in, %d kept, %d duplicates dropped %s; reviews: %d corrected, %d incorrect (%s)",
             kept + dropped + rejected, kept, dropped, by_method, counts["corrected"], rejected, cfg.incorrect)
    return metrics


def read_reviews(path: str | Path, spec: FilterSpec) -> dict[tuple[str, str], dict[str, Any]]:
    """The reviews file by (record id, answer hash); a missing file is no reviews. A corrected answer
    that does not satisfy the filter's schema stops the stage, naming the line."""
    from distill.validate import Invalid, check

    p = Path(path)
    if not p.is_file():
        return {}
    reviews = {}
    for n, review in enumerate(jsonl.read_jsonl(p), 1):
        if not isinstance(review.get("id"), str) or not isinstance(review.get("answer_hash"), str):
            raise InputError(f"{p}:{n}: a review needs 'id' and 'answer_hash' (write the file with "
                             "`distill review export`)")
        corrected = review.get("corrected")
        if corrected is not None:
            outcome = check(jsonl.dumps(corrected), spec.json_schema)
            if isinstance(outcome, Invalid):
                raise InputError(f"{p}:{n}: the corrected answer of {review['id']} does not satisfy the "
                                 f"{spec.name} schema: {outcome.detail}")
        reviews[(review["id"], review["answer_hash"])] = review
    return reviews


# ----------------------------------------------------------------------------- split
def split(cfg: SplitConfig, spec: FilterSpec, input_path: str | Path,
          metrics_dir: Path = METRICS_DIR, dedup: DedupConfig | None = None) -> dict[str, Any]:
    """Seeded stratified split. Near-duplicate texts (``split.leakage.threshold``, with ``dedup.minhash``'s
    shingles) form clusters, and a cluster goes to one split; the pairs that still straddle splits are
    counted in the metrics (``near_duplicate_leaks``), and fail the stage with ``on_violation: fail``."""
    from distill.dedup.clusters import components, cross_split, near_pairs
    from distill.split import SPLITS, balance_report, leakage, same_group_links, stratified_split, to_chat

    rows = list(jsonl.read_jsonl(_require(input_path, "run the merge stage first")))
    if len(rows) < 3:
        raise InputError(f"{input_path}: only {len(rows)} labelled example(s); a split needs at least 3")
    mh, lk = (dedup or DedupConfig()).minhash, cfg.leakage
    pairs = near_pairs([r["text"] for r in rows], lk.threshold, mh.shingle_words, mh.num_perm, mh.seed, mh.backend)
    cluster = components(len(rows), pairs)
    # the units the split keeps whole: near-duplicate clusters (when asked) joined with the task's groups
    # (a generate topic, whose rows share one prompt)
    links = (pairs if lk.group_clusters else []) + same_group_links(rows, spec.group)
    groups = {r["id"]: rows[c]["id"] for r, c in zip(rows, components(len(rows), links))} if links else None
    fractions = {"train": cfg.train, "val": cfg.val, "test": cfg.test}
    parts = stratified_split(rows, fractions, cfg.seed, spec.stratum, groups)
    report = balance_report(parts, spec.strata(), cfg.balance.min_share, cfg.balance.max_share, spec.stratum,
                            spec.STRATUM)
    chats = {s: [to_chat(r, spec) for r in parts[s]] for s in SPLITS}
    leaks = leakage(chats)
    where = {r["id"]: s for s in SPLITS for r in parts[s]}
    near = cross_split(pairs, [where[r["id"]] for r in rows], [r["id"] for r in rows])
    sizes = Counter(cluster)
    near.update({"threshold": lk.threshold, "group_clusters": lk.group_clusters, "similar_pairs": len(pairs),
                 "clusters": sum(1 for n in sizes.values() if n > 1),
                 "records_in_clusters": sum(n for n in sizes.values() if n > 1)})
    for v in report["violations"]:
        log.warning("split: balance: %s", v)
    if report["violations"] and cfg.balance.on_violation == "fail":
        raise ConfigError(f"{spec.STRATUM} balance out of bounds: " + "; ".join(report["violations"])
                          + " (relax split.balance or set split.balance.on_violation=warn)")
    metrics = {"sizes": {s: len(parts[s]) for s in SPLITS}, "seed": cfg.seed,
               f"{spec.STRATUM}_counts": report["counts"], f"{spec.STRATUM}_shares": report["shares"],
               "balance_violations": report["violations"], "leaked_prompts": leaks, "near_duplicate_leaks": near}
    out = Path(cfg.output_dir)
    if near["pairs"]:
        message = (f"{near['pairs']} near-duplicate pair(s) (word-shingle Jaccard >= {lk.threshold}) straddle "
                   f"splits {near['by_splits']}, e.g. {near['examples'][0]['ids']}")
        if lk.on_violation == "fail":
            jsonl.write_json(metrics_dir / "split.json", metrics)  # written first, for the user to look at
            for s in SPLITS:
                (out / f"{s}.jsonl").unlink(missing_ok=True)
            raise ConfigError(f"{message}: set split.leakage.group_clusters=true to keep each cluster in one "
                              "split, or split.leakage.on_violation=warn to accept them")
        log.warning("split: leakage: %s", message)
    for s in SPLITS:
        jsonl.write_jsonl(out / f"{s}.jsonl", chats[s])
    jsonl.write_json(metrics_dir / "split.json", metrics)
    log.info("split: %s; %d near-duplicate cluster(s) of %d records kept whole", metrics["sizes"], near["clusters"],
             near["records_in_clusters"])
    return metrics


# ----------------------------------------------------------------------------- train
#: dvclive's folder for the torch students' loss curves (under the metrics folder; plots in dvc.yaml)
TRAIN_CURVES = "train_curves"


def train(cfg: TrainConfig, student_cfg, spec: FilterSpec, split_dir: str | Path,
          metrics_dir: Path = METRICS_DIR) -> dict[str, Any]:
    from distill.students import train_student

    split_dir = Path(split_dir)
    train_rows = list(jsonl.read_jsonl(_require(split_dir / "train.jsonl", "run the split stage first")))
    val_rows = list(jsonl.read_jsonl(_require(split_dir / "val.jsonl", "run the split stage first")))
    if not train_rows:
        raise InputError(f"{split_dir / 'train.jsonl'} is empty: nothing to train on")
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    curves = Path(metrics_dir) / TRAIN_CURVES
    import shutil

    for folder in (out, curves):
        if folder.exists():
            shutil.rmtree(folder)
    metrics = train_student(student_cfg, train_rows, val_rows, spec, out, curves_dir=curves)
    metrics = {"student": student_cfg.kind, **metrics, "student_seconds": round(time.perf_counter() - t0, 3)}
    if not (curves / "metrics.json").is_file():  # a student without steps (sklearn): the declared output still exists
        jsonl.write_json(curves / "metrics.json", {"student": student_cfg.kind, "steps": 0})
    if cfg.baseline:  # the cheap student and the constant predictor, judged beside the student by evaluate
        from distill.students.baselines import BASELINE_DIR, fit

        metrics["baseline"] = fit(spec, train_rows, val_rows, out / BASELINE_DIR)
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    jsonl.write_json(metrics_dir / "train.json", metrics)
    log.info("train: %s", metrics)
    return metrics


# ----------------------------------------------------------------------------- evaluate
def evaluate(cfg: EvaluateConfig, spec: FilterSpec, split_dir: str | Path, model_dir: str | Path,
             metrics_dir: Path = METRICS_DIR, oracle: ProviderConfig | None = None) -> dict[str, Any]:
    """The student, the baselines the train stage fitted and the oracle's floor on the test split, with
    paired intervals, and the oracle's cost against the student's (``oracle``: its price); see
    :mod:`distill.evaluation`."""
    from distill.evaluation import run

    return run(cfg, spec, split_dir, model_dir, metrics_dir, oracle)


def filter_spec(ref: FilterRef) -> FilterSpec:
    return load_filter_at(ref.root, ref.name, ref.version)
