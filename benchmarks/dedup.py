"""Dedup: exact + MinHash near duplicates on 100,000 documents, rensa vs datasketch, against planted
edits and against a plain pairwise Jaccard on a sample.

Data (synthetic, built from real text; printed with the results)
  The shared BBC articles (full text) and energy-news items (title + lead) are the originals. They are
  first deduplicated among themselves (exact, then verified MinHash at the threshold) so the only
  duplicates left are the ones planted here. N documents (default 100,000) are then drawn: every
  original once, and the rest copies of a seeded random original with ONE planted edit each:
  ``exact`` (case or spacing changed), ``swap`` (two adjacent words swapped), ``insert`` (two words
  inserted at one place), ``delete`` (two consecutive words deleted) or ``truncate`` (the last 10% of the
  words cut). Documents are shuffled (seeded), so a copy may come before its original.

Measured
  * ``Deduper`` (distill.dedup, exact then MinHash, semantic off) over all N documents in batches of
    50,000 (as the prefilter stage does), once per backend (rensa, datasketch): wall time, removals by
    method. Target: exact + MinHash under 60 s on 2 cores.
  * Against the planted truth: a removal is correct when the removed document and the one it names
    come from the same original (precision); planted recall is the share of planted copies removed,
    by edit kind (documents sharing an original form one cluster, whose first is kept).
  * Baseline, same run: a plain pairwise exact Jaccard over every pair of a sample (all copies of S
    seeded originals), with the same first-occurrence rule: its time, extrapolated to N (quadratic),
    and the LSH's recall and precision against it on the sample.
  * Optionally (--semantic N), the semantic pass (packaged all-MiniLM-L6-v2) on N documents.

Run from the project root:  .venv/bin/python benchmarks/dedup.py [--docs 100000] [--sample 150]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "corpora"
sys.path.insert(0, str(ROOT / "src"))

from distill.config import DedupConfig
from distill.dedup import Deduper
from distill.dedup.minhash import jaccard, shingles

EDITS = ("exact", "swap", "insert", "delete", "truncate")


def originals() -> list[str]:
    with open(DATA / "bbc_news_2225.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    with open(DATA / "energy_news_headlines_8973.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(f"{row['title']}. {row.get('lead') or ''}".strip())
    d = Deduper(DedupConfig())  # the originals' own duplicates would blur the truth: keep one of each
    kept = [t for t, why in zip(texts, d.batch([{"id": str(i), "text": t} for i, t in enumerate(texts)]))
            if why is None]
    d.close()
    return kept


def edit(text: str, kind: str, rng: random.Random, vocab: list[str]) -> str:
    """One planted edit: a small, fixed amount of change whatever the length (a copy of a copy differs
    by two edits)."""
    words = text.split()
    if kind == "exact":  # another form of the same text: case, spacing, a trailing mark
        return text.upper() if rng.random() < 0.5 else "  ".join(words) + " !"
    if kind == "swap":  # two adjacent words swapped
        i = rng.randrange(max(1, len(words) - 1))
        words[i : i + 2] = words[i : i + 2][::-1]
    elif kind == "insert":  # two words inserted at one place
        i = rng.randrange(len(words) + 1)
        words[i:i] = [rng.choice(vocab), rng.choice(vocab)]
    elif kind == "delete":  # two consecutive words deleted
        if len(words) > 3:
            i = rng.randrange(len(words) - 1)
            del words[i : i + 2]
    elif kind == "truncate":  # the last 10% of the words cut
        words = words[: max(1, int(len(words) * 0.9))]
    return " ".join(words)


def corpus(n: int, seed: int) -> tuple[list[dict], list[str]]:
    """N documents ({id, text, origin, edit}) and the originals."""
    base = originals()
    rng = random.Random(seed)
    vocab = [w for t in base[:500] for w in t.split()][:20000]
    docs = [{"text": t, "origin": i, "edit": "original"} for i, t in enumerate(base)]
    while len(docs) < n:
        i = rng.randrange(len(base))
        kind = rng.choice(EDITS)
        docs.append({"text": edit(base[i], kind, rng, vocab), "origin": i, "edit": kind})
    rng.shuffle(docs)
    for j, doc in enumerate(docs):
        doc["id"] = f"d{j}"
    return docs, base


def run(docs: list[dict], backend: str, batch: int = 50_000, shingle_words: int = 5) -> dict:
    cfg = DedupConfig.model_validate({"minhash": {"backend": backend, "shingle_words": shingle_words}})
    t0, c0 = time.perf_counter(), time.process_time()
    d = Deduper(cfg)
    out = []
    for start in range(0, len(docs), batch):
        out += d.batch(docs[start : start + batch])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    d.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "out": out, "counts": dict(d.counts)}


def score(docs: list[dict], out: list) -> dict:
    origin = {doc["id"]: doc["origin"] for doc in docs}
    removed = [(doc, why) for doc, why in zip(docs, out) if why is not None]
    correct = sum(1 for doc, why in removed if origin[why["duplicate_of"]] == doc["origin"])
    first: set[int] = set()
    planted: Counter[str] = Counter()
    found: Counter[str] = Counter()
    for doc, why in zip(docs, out):  # a planted duplicate: any document after the first of its origin
        if doc["origin"] in first:
            size = "short" if len(doc["text"].split()) <= 60 else "long"
            for key in (doc["edit"], size):
                planted[key] += 1
                found[key] += why is not None
        first.add(doc["origin"])
    total = planted["short"] + planted["long"]
    return {"removed": len(removed), "precision": correct / len(removed) if removed else 1.0,
            "planted": total, "recall": (found["short"] + found["long"]) / max(1, total),
            "by_edit": {k: (found[k], planted[k]) for k in sorted(planted)}}


def baseline(docs: list[dict], origins: set[int], threshold: float) -> dict:
    """Plain pairwise exact Jaccard over every pair of the sample; first occurrence kept."""
    sample = [doc for doc in docs if doc["origin"] in origins]
    t0 = time.perf_counter()
    computed = 0
    sets = [shingles(doc["text"], 5) for doc in sample]
    dup = [False] * len(sample)
    for j in range(len(sample)):
        for i in range(j):
            if not dup[i]:
                computed += 1
                if jaccard(sets[i], sets[j]) >= threshold:
                    dup[j] = True
                    break
    seconds = time.perf_counter() - t0
    pairs = len(sample) * (len(sample) - 1) / 2
    return {"sample": sample, "dup": dup, "seconds": seconds, "pairs": pairs, "computed": computed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=150, help="originals whose copies form the baseline's sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--semantic", type=int, default=0, help="also time the semantic pass on this many documents")
    ap.add_argument("--json", default=None, help="write the numbers here too")
    args = ap.parse_args()

    t0 = time.perf_counter()
    docs, base = corpus(args.docs, args.seed)
    build = time.perf_counter() - t0
    kinds = Counter(doc["edit"] for doc in docs)
    words = sum(len(doc["text"].split()) for doc in docs) / len(docs)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
          f"load average before {os.getloadavg()[0]:.2f}; Python {platform.python_version()}")
    print(f"data: {len(docs):,} documents built in {build:.1f} s from {len(base):,} distinct originals (shared BBC "
          f"articles and energy-news items, deduplicated first), each original once and the rest copies with ONE "
          f"planted edit: {dict(kinds)}; mean {words:.0f} words per document. Planted duplicates are every document "
          "after the first of its original ('original' = an original that came after one of its copies); short = "
          "60 words or fewer")

    results = {}
    for backend, k in (("rensa", 5), ("datasketch", 5), ("rensa", 3)):
        r = run(docs, backend, shingle_words=k)
        s = score(docs, r["out"])
        name = f"{backend}, {k}-word shingles"
        results[name] = {**s, "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"], "counts": r["counts"],
                         "load_after": os.getloadavg()[0]}
        print(f"{name}: {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU "
              f"({len(docs) / r['seconds']:,.0f} docs/s; load average {os.getloadavg()[0]:.1f}), "
              f"removed {r['counts']}, "
              f"precision {s['precision']:.4f}, planted recall {s['recall']:.4f} of {s['planted']:,}; "
              f"(found, planted) by edit and by length {s['by_edit']}")

    rng = random.Random(args.seed + 1)
    chosen = set(rng.sample(range(len(base)), args.sample))
    b = baseline(docs, chosen, 0.8)
    truth = b["dup"]
    sub = Deduper(DedupConfig())  # the LSH on the same sample, in the same order, for a like-for-like decision
    got = [why is not None for why in sub.batch([{"id": d["id"], "text": d["text"]} for d in b["sample"]])]
    sub.close()
    tp = sum(1 for t, g in zip(truth, got) if t and g)
    base_rec = tp / max(1, sum(truth))
    base_prec = tp / max(1, sum(got))
    per_pair = b["seconds"] / b["computed"]  # a comparison against each document kept before it
    kept = len(docs) - results["rensa, 5-word shingles"]["removed"]
    extrapolated = per_pair * len(docs) * kept / 2  # each document against about half the final kept set
    print(f"baseline: pairwise exact Jaccard on a sample of {len(b['sample']):,} documents (all copies of "
          f"{args.sample} originals), {b['computed']:,} Jaccard computations (each document against those kept "
          f"before it, of {b['pairs']:,.0f} pairs) in {b['seconds']:.1f} s; extrapolated to "
          f"{args.docs:,} documents: {extrapolated / 3600:,.1f} h. On the sample the LSH (rensa) removes "
          f"{sum(got)} and the baseline {sum(truth)}: LSH recall {base_rec:.4f}, precision {base_prec:.4f}")

    semantic = None
    if args.semantic:
        sample = [{"id": d["id"], "text": d["text"]} for d in docs[: args.semantic]]
        t1 = time.perf_counter()
        d = Deduper(DedupConfig.model_validate({"semantic": {"enabled": True}}))
        load = time.perf_counter() - t1
        t2 = time.perf_counter()
        out = d.batch(sample)
        semantic = {"docs": len(sample), "load_s": load, "seconds": time.perf_counter() - t2,
                    "counts": dict(d.counts)}
        d.close()
        print(f"semantic (packaged all-MiniLM-L6-v2, CPU): {len(sample):,} documents in {semantic['seconds']:.1f} s "
              f"after {load:.1f} s loading; removed {semantic['counts']} ({sum(x is not None for x in out)})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the benchmark process: {peak:,.0f} MB (corpus, both runs and the baseline's sets)")
    if args.json:
        Path(args.json).write_text(json.dumps({"docs": len(docs), "edits": dict(kinds), "results": {
            k: v for k, v in results.items()},
            "baseline": {"sample": len(b["sample"]), "seconds": b["seconds"], "pairs": b["pairs"],
                         "computed": b["computed"],
                         "extrapolated_h": extrapolated / 3600, "lsh_recall": base_rec, "lsh_precision": base_prec},
            "semantic": semantic, "peak_rss_mb": peak}, indent=1))


if __name__ == "__main__":
    main()
