"""Oracle LLMs: one provider interface, a response cache, and the labelling engine."""

from distill.oracle.base import ChatRequest, ChatResponse, Provider, ProviderError, make_provider

__all__ = ["ChatRequest", "ChatResponse", "Provider", "ProviderError", "make_provider"]
