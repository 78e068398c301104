"""What a reviewer should see first: ``distill review --sample N --strategy random|uncertain|disagreement``.

Only records with an answer that has no review yet are sampled, seeded, so the same command picks the
same records.

- ``random``: a uniform sample. Only a random sample makes the share marked correct an unbiased
  estimate of the oracle's precision (``metrics/review.json`` reports it separately).
- ``uncertain``: where the oracle was least sure: re-asked answers (the first failed validation), then
  overall scores closest to a tier boundary (when the task has tiers).
- ``disagreement``: where someone disagrees with the oracle: gold, another oracle, the student; then
  the uncertain order.
"""

from __future__ import annotations

import random

from distill.review.dataset import Dataset, Item

STRATEGIES = ("random", "uncertain", "disagreement")
_DISAGREEMENT_WEIGHT = {"gold_disagrees": 4, "oracles_disagree": 2, "student_error": 1}


def boundary_distance(item: Item, boundaries: list[float]) -> float:
    """How far the answer's overall score is from the nearest category boundary (inf without one)."""
    overall = (item.row or {}).get("overall")
    if overall is None or not boundaries:
        return float("inf")
    return min(abs(float(overall) - b) for b in boundaries)


def uncertainty_key(item: Item, boundaries: list[float]) -> tuple:
    """Sort key, most uncertain first."""
    return (-(item.attempts > 1), boundary_distance(item, boundaries))


def sample(dataset: Dataset, n: int, strategy: str, reviewed: set[tuple[str, str]], seed: int = 0) -> list[str]:
    """Up to ``n`` record ids in the order to review them; ``reviewed`` holds (id, answer hash) pairs
    that already have a review."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    pool = [i for i in dataset.ordered() if i.row is not None and (i.id, i.key) not in reviewed]
    rng = random.Random(seed)
    rng.shuffle(pool)  # ties broken at random, reproducibly
    if strategy == "random":
        return [i.id for i in pool[:n]]
    bounds = dataset.boundaries()
    if strategy == "uncertain":
        pool.sort(key=lambda i: uncertainty_key(i, bounds))
    else:
        pool.sort(key=lambda i: (-sum(_DISAGREEMENT_WEIGHT.get(f, 0) for f in i.flags), *uncertainty_key(i, bounds)))
    return [i.id for i in pool[:n]]
