"""The ids seen so far, in memory that grows by 24 bytes per record rather than by a Python dict entry
(about 150 bytes): each id is a 128-bit BLAKE2b digest kept, with where the id was first used, in a few
sorted numpy runs (merged like a binary counter, so a lookup searches O(log n) runs). Two different ids
share a digest with probability about n^2 / 2^129 (1e-24 for ten million ids), the same assurance as
content-addressed storage.
"""

from __future__ import annotations

import hashlib

import numpy as np


def digests(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The high and low 64-bit halves of each id's 128-bit BLAKE2b digest."""
    blob = b"".join(hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=16).digest() for i in ids)
    pairs = np.frombuffer(blob, dtype="<u8").reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


class IdSet:
    """Batch-wise membership of ids, remembering a 64-bit location for each first use."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (hi sorted, lo, location)
        self.size = 0

    def lookup(self, ids: list[str]) -> tuple[dict[int, int], tuple[np.ndarray, np.ndarray]]:
        """``{index in ids: location of its first use}`` for the ids already added, and the digests."""
        hi, lo = digests(ids)
        found: dict[int, int] = {}
        for run_hi, run_lo, run_loc in self._runs:
            left = np.searchsorted(run_hi, hi, "left")
            right = np.searchsorted(run_hi, hi, "right")
            for i in np.nonzero(right > left)[0].tolist():
                for j in range(left[i], right[i]):
                    if run_lo[j] == lo[i]:
                        found[i] = int(run_loc[j])
                        break
        return found, (hi, lo)

    def add(self, hi: np.ndarray, lo: np.ndarray, locations: np.ndarray) -> None:
        """Remember new ids (none of them already present) by their digests."""
        if hi.size == 0:
            return
        order = np.argsort(hi, kind="stable")
        self._runs.append((hi[order], lo[order], np.asarray(locations, dtype=np.int64)[order]))
        self.size += int(hi.size)
        while len(self._runs) > 1 and self._runs[-2][0].size <= 2 * self._runs[-1][0].size:
            newer, older = list(self._runs.pop()), list(self._runs.pop())
            self._runs.append(_merge(older, newer))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for run in self._runs for a in run)


def _merge(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Two runs sorted by their first array, merged in linear time; each input array is released as soon
    as its merged copy exists, so a merge needs little more than the merged run itself."""
    n = a[0].size + b[0].size
    at_b = np.searchsorted(a[0], b[0], side="right") + np.arange(b[0].size)  # where b's rows go
    from_a = np.ones(n, dtype=bool)
    from_a[at_b] = False
    out = []
    for k in range(len(a)):
        merged = np.empty(n, dtype=a[k].dtype)
        merged[from_a] = a[k]
        merged[at_b] = b[k]
        a[k] = b[k] = None  # type: ignore[call-overload]
        out.append(merged)
    return tuple(out)
