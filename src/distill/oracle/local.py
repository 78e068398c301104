"""The embedded oracle: a GGUF model run in-process by llama-cpp-python.

Its output is constrained to the filter's JSON schema by llama.cpp's grammar sampler
(``response_format={"type": "json_object", "schema": ...}``), so answers parse; they are still
validated like every other provider's. The default model (SmolLM2-135M-Instruct) makes the pipeline
run offline without a key: its labels show the pipeline working, not oracle quality.
"""

from __future__ import annotations

import asyncio
import os
import threading

from distill.config import OracleConfig
from distill.models import resolve_gguf
from distill.oracle.base import ChatRequest, ChatResponse, Provider, ProviderError


class LocalProvider(Provider):
    name = "local"

    def __init__(self, cfg: OracleConfig):
        super().__init__(cfg)
        self.model_path = resolve_gguf(cfg.model_path)
        self._llm = None
        self._lock = threading.Lock()  # one llama.cpp context: requests take turns

    def cache_identity(self) -> dict:
        # the file name identifies the weights; the directory it is installed in does not matter
        return {"provider": self.name, "model": self.model, "file": self.model_path.name}

    def _load(self):
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError as e:
                raise ProviderError(
                    "oracle.provider=local needs llama-cpp-python: `pip install llama-cpp-python`"
                ) from e
            threads = self.cfg.n_threads or max(1, (os.cpu_count() or 2))
            self._llm = Llama(
                model_path=str(self.model_path),
                n_ctx=self.cfg.n_ctx,
                n_threads=threads,
                seed=self.cfg.seed if self.cfg.seed is not None else 0,
                verbose=False,
            )
        return self._llm

    def _complete_sync(self, request: ChatRequest) -> ChatResponse:
        with self._lock:
            llm = self._load()
            kwargs = {}
            if request.seed is not None:
                kwargs["seed"] = request.seed
            try:
                out = llm.create_chat_completion(
                    messages=request.messages,
                    response_format={"type": "json_object", "schema": request.schema},
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    **kwargs,
                )
            except ValueError as e:  # e.g. the prompt does not fit n_ctx
                raise ProviderError(f"local model refused the request: {e}") from e
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return ChatResponse(
            text=choice["message"].get("content"),
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
            model=self.model,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await asyncio.to_thread(self._complete_sync, request)
