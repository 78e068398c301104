"""Duplicate removal shared by the prefilter stage (before the oracle is paid) and the merge stage.

:class:`Deduper` takes records batch by batch, in input order, and keeps the first occurrence of each
text. A later record is removed when it is

1. ``exact``: the same normalised text (:func:`distill.merge.text_hash`: case, punctuation, spacing and
   Unicode forms folded);
2. ``minhash``: a near duplicate of a kept record, proposed by MinHash LSH over word shingles and
   confirmed by the exact Jaccard similarity of the two shingle sets (``dedup.minhash.threshold``);
3. ``semantic`` (off by default): the cosine similarity of the two texts' embeddings reaches
   ``dedup.semantic.threshold`` (:mod:`distill.dedup.semantic`).

Each removal is explained: the id it duplicates, the method, the similarities (MinHash estimate and
exact Jaccard, or cosine) and the longest span of words the two share. Kept texts are spilled to a
temporary file (offsets in memory), so memory grows by the index entries, not by the texts.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from distill.config import DedupConfig
from distill.dedup.explain import explanation, trim
from distill.dedup.minhash import MinHashIndex, jaccard, shingles, shingles_of_normalised
from distill.merge import normalise, normalised_hash, text_hash

METHODS = ("exact", "minhash", "semantic")
#: survivors embedded and compared together by the semantic pass
SEMANTIC_CHUNK = 1024


class _SpilledTexts:
    """Texts by integer key in a temporary file: 12 bytes of memory per text."""

    def __init__(self) -> None:
        self._fh = tempfile.TemporaryFile()  # noqa: SIM115 (closed by Deduper.close)
        self._offsets, self._lengths = array("q"), array("l")
        self._end = 0

    def add(self, text: str) -> int:
        data = text.encode("utf-8")
        os.pwrite(self._fh.fileno(), data, self._end)
        self._offsets.append(self._end)
        self._lengths.append(len(data))
        self._end += len(data)
        return len(self._offsets) - 1

    def get(self, key: int) -> str:
        return os.pread(self._fh.fileno(), self._lengths[key], self._offsets[key]).decode("utf-8")

    def close(self) -> None:
        self._fh.close()


class Deduper:
    """Streaming duplicate removal over records (``text_of(record)`` is the text compared)."""

    def __init__(self, cfg: DedupConfig, text_of: Callable[[dict[str, Any]], str] = lambda r: r["text"],
                 embedder=None) -> None:
        self.cfg = cfg
        self.text_of = text_of
        self.counts: Counter[str] = Counter({m: 0 for m in METHODS})
        self._ids: list[str] = []
        self._texts = _SpilledTexts()
        self._exact: dict[str, int] = {}
        self._recent: dict[int, set[str]] = {}
        mh = cfg.minhash
        self._index = MinHashIndex(mh.threshold, mh.num_perm, mh.seed, mh.backend) if mh.enabled else None
        self._embed = embedder
        self._cosine = None
        if cfg.semantic.enabled:
            from distill.dedup.semantic import CosineIndex, Embedder

            self._embed = embedder or Embedder(cfg.semantic.model, cfg.semantic.batch_size)
            self._cosine = CosineIndex()

    # ----------------------------------------------------------------- one batch
    def batch(self, records: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """For each record (in order), None when it is kept, else why it is removed: ``id``,
        ``duplicate_of``, ``method``, ``similarity`` (1.0, the exact Jaccard or the cosine), the
        method's own figures, ``hash``, ``shared_text`` and ``shared_words``."""
        out: list[dict[str, Any] | None] = [None] * len(records)
        kept_here: list[tuple[int, int]] = []  # (position in batch, key)
        for pos, record in enumerate(records):
            text = self.text_of(record)
            norm = normalise(text)
            h = normalised_hash(norm)
            if self.cfg.exact and h in self._exact:
                out[pos] = self._drop(record, text, self._exact[h], "exact", {"similarity": 1.0}, h)
                continue
            sh = sig = None
            if self._index is not None:
                sh = shingles_of_normalised(norm, self.cfg.minhash.shingle_words)
                sig = self._index.signature(sh)
                match = self._near(sh, sig)
                if match is not None:
                    key, figures = match
                    out[pos] = self._drop(record, text, key, "minhash", figures, h)
                    continue
            key = self._keep(record, text, h, sig)
            kept_here.append((pos, key))
        if self._cosine is not None and kept_here:
            self._semantic(records, out, kept_here)
        for m in (info["method"] for info in out if info is not None):
            self.counts[m] += 1
        return out

    def _kept_shingles(self, key: int) -> set[str]:
        """A kept record's shingles, made again from its spilled text; the last few hundred are cached
        (a text with many copies is a candidate for each of them)."""
        cached = self._recent.pop(key, None)
        if cached is None:
            cached = shingles(self._texts.get(key), self.cfg.minhash.shingle_words)
        self._recent[key] = cached  # most recently used last
        if len(self._recent) > 256:
            del self._recent[next(iter(self._recent))]
        return cached

    def _near(self, sh: set[str], sig: Any) -> tuple[int, dict[str, float]] | None:
        best = None
        for key in self._index.query(sig):
            exact = jaccard(sh, self._kept_shingles(key))
            if exact >= self.cfg.minhash.threshold and (best is None or exact > best[1]["jaccard"]
                                                        or (exact == best[1]["jaccard"] and key < best[0])):
                best = (key, {"similarity": round(exact, 4), "jaccard": round(exact, 4)})
        if best is not None:  # the kept record's signature, made again from its text (none is kept in memory)
            kept_sig = self._index.signature(self._kept_shingles(best[0]))
            best[1]["jaccard_estimate"] = round(self._index.estimate(sig, kept_sig), 4)
        return best

    def _keep(self, record: dict[str, Any], text: str, h: str, sig: Any) -> int:
        key = self._texts.add(text)
        self._ids.append(record["id"])
        if self.cfg.exact:
            self._exact[h] = key
        if sig is not None:
            self._index.insert(key, sig)
        return key

    def _semantic(self, records, out, kept_here: list[tuple[int, int]]) -> None:
        """Embed this batch's survivors, ``SEMANTIC_CHUNK`` at a time (memory: a chunk's square of
        similarities); one is removed when a record kept before it (in an earlier batch or chunk, or
        earlier in this chunk) is at least ``dedup.semantic.threshold`` similar."""
        for start in range(0, len(kept_here), SEMANTIC_CHUNK):
            self._semantic_chunk(records, out, kept_here[start : start + SEMANTIC_CHUNK])

    def _semantic_chunk(self, records, out, chunk: list[tuple[int, int]]) -> None:
        import numpy as np

        vectors = self._embed([self.text_of(records[pos]) for pos, _ in chunk])
        prev_key, prev_sim = self._cosine.best(vectors)
        within = vectors @ vectors.T
        keep_rows: list[int] = []
        threshold = self.cfg.semantic.threshold
        for i, (pos, key) in enumerate(chunk):
            best_key, best_sim = int(prev_key[i]), float(prev_sim[i])
            if keep_rows:
                rows = np.asarray(keep_rows)
                j = int(rows[within[i, rows].argmax()])
                if within[i, j] > best_sim:
                    best_key, best_sim = chunk[j][1], float(within[i, j])
            if best_key >= 0 and best_sim >= threshold:
                text = self.text_of(records[pos])
                out[pos] = self._drop(records[pos], text, best_key, "semantic",
                                      {"similarity": round(best_sim, 4), "cosine": round(best_sim, 4)}, text_hash(text))
                self._forget(key, text_hash(text))
            else:
                keep_rows.append(i)
        self._cosine.add_many([chunk[i][1] for i in keep_rows], vectors[np.asarray(keep_rows, dtype=np.int64)])

    def _forget(self, key: int, h: str) -> None:
        """Undo :meth:`_keep` for a record the semantic pass removed (its text stays spilled, unused)."""
        if self._exact.get(h) == key:
            del self._exact[h]
        if self._index is not None:
            self._index.remove(key)

    def _drop(self, record, text: str, key: int, method: str, figures: dict[str, float], h: str) -> dict[str, Any]:
        kept_text = self._texts.get(key)
        shared = ({"shared_text": trim(" ".join(text.split()), self.cfg.shared_chars),
                   "shared_words": len(text.split())} if method == "exact"
                  else explanation(text, kept_text, self.cfg.shared_chars))
        return {"id": record["id"], "duplicate_of": self._ids[key], "method": method, **figures, "hash": h, **shared}

    def close(self) -> None:
        self._texts.close()


def dedup_stream(rows: Iterable[dict[str, Any]], deduper: Deduper, batch_size: int = 1024
                 ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """``(row, None)`` for a kept row, ``(row, why)`` for a removed one, in input order."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            yield from zip(batch, deduper.batch(batch))
            batch = []
    if batch:
        yield from zip(batch, deduper.batch(batch))
