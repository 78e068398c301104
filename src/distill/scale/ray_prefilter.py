"""The prefilter's per-record work on Ray Data (``prefilter.engine: ray``), decisions unchanged.

What is spread over the cluster is what depends on one record alone: the filter's rules
(:func:`distill.prefilter.apply_rules`, polars, on each block) and, for the records that pass, the dedup
features (:class:`distill.dedup.Features`: normalised-text hash and MinHash signature, the costly part
of MinHash dedup). What needs every earlier record stays in the stage's process, in input order, with
the same code as the polars engine: reading and quarantine (duplicate ids across the whole input,
:class:`distill.sources.CorpusStream`), and the dedup decisions (:meth:`distill.dedup.Deduper.batch`:
exact-hash lookup, LSH query, exact-Jaccard verification, semantic pass). So the outputs are those of
the polars engine, byte for byte; the trade-off against a fully distributed dedup is in docs/scaling.md.

Each prefilter batch (``prefilter.batch_rows`` records) becomes one Ray Dataset of blocks of
``prefilter.ray.block_rows`` records, processed in order (``preserve_order``) while this process reads
the next batch and decides the previous one's duplicates: a pipeline one batch deep.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from distill.config import DedupConfig, RayConfig
from distill.errors import ConfigError
from distill.filterspec import PrefilterRules

log = logging.getLogger("distill")

#: what the engine yields per batch: the records, a decision per record and, per record, its dedup
#: features (None for a blocked record)
Judged = tuple[list[dict[str, Any]], list[str], list[tuple[str, Any] | None]]


def judge_block(block, rules: PrefilterRules, dedup: DedupConfig):
    """On a Ray worker: the rule decision of each row of an Arrow block (``title``, ``text``) and, for a
    row that passes, its dedup hash and pickled MinHash signature."""
    import polars as pl
    import pyarrow as pa

    from distill.dedup import Features
    from distill.prefilter import PASS, apply_rules

    decisions = apply_rules(pl.from_arrow(block), rules).to_list()
    features = Features(dedup)
    hashes: list[str | None] = []
    sigs: list[bytes | None] = []
    for decision, text in zip(decisions, block.column("text").to_pylist()):
        h = sig = None
        if decision == PASS:
            h, signature = features.of(text)
            sig = None if signature is None else pickle.dumps(signature, protocol=pickle.HIGHEST_PROTOCOL)
        hashes.append(h)
        sigs.append(sig)
    return pa.table({"decision": pa.array(decisions, pa.string()), "hash": pa.array(hashes, pa.string()),
                     "sig": pa.array(sigs, pa.binary())})


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ConfigError("prefilter.engine=ray needs Ray Data, which is not installed: "
                          "pip install 'distill[scale]' (ray[data]), or set prefilter.engine=polars") from e
    return ray


class RayPrefilter:
    """Joins (or starts) Ray on creation; :meth:`judged` runs the rules and features of each batch on it;
    :meth:`close` stops a Ray it started."""

    def __init__(self, cfg: RayConfig, rules: PrefilterRules, dedup: DedupConfig) -> None:
        self.cfg, self.rules, self.dedup = cfg, rules, dedup
        ray = self.ray = _import_ray()
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if cfg.address is None and cfg.num_cpus is not None:
                kwargs["num_cpus"] = cfg.num_cpus
            try:
                ray.init(address=cfg.address, **kwargs)
            except (ConnectionError, RuntimeError) as e:
                raise ConfigError(f"prefilter.ray.address={cfg.address!r}: could not join a Ray cluster ({e}). "
                                  "Start one (`ray start --head` on the head node) or set prefilter.ray.address="
                                  "null for a local Ray on this machine") from e
            self._started = True
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # blocks come back in input order
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        log.info("prefilter: Ray engine on %s (%d CPU), %d records per task",
                 cfg.address or "a local Ray", cpus, cfg.block_rows)

    def judge(self, batch: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, Any] | None]]:
        """Decisions and features of one batch, computed on Ray, in the batch's order."""
        from distill.prefilter import records_frame

        if not batch:
            return [], []
        table = records_frame(batch).to_arrow()
        n = self.cfg.block_rows
        blocks = [table.slice(i, n) for i in range(0, table.num_rows, n)]
        ds = self.ray.data.from_arrow(blocks).map_batches(
            judge_block, batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
            fn_kwargs={"rules": self.rules, "dedup": self.dedup})
        decisions: list[str] = []
        features: list[tuple[str, Any] | None] = []
        for out in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            decisions += out.column("decision").to_pylist()
            for h, sig in zip(out.column("hash").to_pylist(), out.column("sig").to_pylist()):
                features.append(None if h is None else (h, None if sig is None else pickle.loads(sig)))
        if len(decisions) != len(batch):  # never expected: Ray Data lost or repeated rows
            raise RuntimeError(f"Ray returned {len(decisions)} decisions for a batch of {len(batch)} records")
        return decisions, features

    def judged(self, batches: Iterable[list[dict[str, Any]]]) -> Iterator[Judged]:
        """Each batch with its decisions and features, in order; Ray works on batch k while the caller
        reads batch k + 1 and decides batch k - 1."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="distill-ray") as pool:
            pending = None
            for batch in batches:
                future = pool.submit(self.judge, batch)
                if pending is not None:
                    yield pending[0], *pending[1].result()
                pending = (batch, future)
            if pending is not None:
                yield pending[0], *pending[1].result()

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False
