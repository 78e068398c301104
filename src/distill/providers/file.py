"""Labels from a file: an oracle that answers each record from the record's own columns.

A team with human annotations, or the output of an earlier run, trains and compares students without
calling an LLM: ``-S oracle=file`` reads the answer from columns of the input, which the prefilter
carries in each record's ``metadata`` (list them in ``prefilter.metadata``). Either ``fields`` maps
each answer field onto a column (``{label: category}`` for a classification, one column per dimension
for a rubric), or ``answer_column`` names one column holding the whole answer (a JSON object, or its
JSON text, such as an earlier run's ``label``; ``fields`` are then not used).

How the record reaches the provider. A provider sees a :class:`~distill.providers.base.ChatRequest`,
whose messages are the rendered prompt: the label is not in them. Rather than a separate path
through the engine (which would bypass its validation, invalid records, statistics and events), the
engine asks each provider's config which values of the record it reads
(:meth:`Config.request_context`: here the configured columns) and sends them as
``ChatRequest.context``. The context is part of the cache key when set, because the answer depends
on it (a corrected annotation is a new answer); every other provider reads nothing of the record,
sends no context, and keeps its cache keys.

Values are turned into the task's answer the way the schema says: an enum value matched
case-insensitively (after ``values``, a map of renames such as ``{tech: technology}``), integers and
numbers parsed from text, a multi-label string split on ``separator``. Required free-text fields no
column gives (a rubric's ``reasoning``, a ``rationale``) get ``fill_text``. Nothing else is repaired:
a value outside the label set, or a missing one, is answered as it is, and the engine's validation
turns it into an invalid record with the validator's reason (``at label: 'Tech2' is not one of
[...]``, ``'label' is a required property``), like any oracle answer. Asking again gives the same
answer, so ``label.max_attempts=1`` saves the pointless re-asks. Free: no key, no tokens, no price.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, model_validator

from distill.providers.base import ChatRequest, ChatResponse, Pricing, Provider, ProviderConfig, ProviderError


class FileConfig(ProviderConfig):
    provider: Literal["file"]
    #: names the labels' source in label rows (``oracle: file:<model>``), e.g. annotators-2024
    model: str = "labels"
    #: answer field -> the column holding it (a metadata column, else a record field such as ``gold``)
    fields: dict[str, str] = Field(default_factory=dict)
    #: or one column holding the whole answer (a JSON object, or its JSON text); ``fields`` are then not used
    answer_column: str | None = None
    #: raw value -> the task's value, applied before enum values are matched case-insensitively
    values: dict[str, str] = Field(default_factory=dict)
    #: the text put in required free-text fields that no column gives (reasoning, rationale)
    fill_text: str = Field(default="label read from a file", min_length=1)
    #: separator of several labels in one string (a multi-label answer field)
    separator: str = Field(default=",", min_length=1)
    price: Pricing = Pricing(input_per_mtok=0.0, output_per_mtok=0.0, batch_discount=0.0)

    @model_validator(mode="after")
    def _a_source(self) -> FileConfig:
        if not self.fields and not self.answer_column:
            raise ValueError("oracle.provider=file needs oracle.fields (answer field -> column, e.g. "
                             "-S oracle.fields.label=category) or oracle.answer_column (a column holding the "
                             "whole answer)")
        return self

    @property
    def columns(self) -> list[str]:
        return [self.answer_column] if self.answer_column else list(dict.fromkeys(self.fields.values()))

    def request_context(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The configured columns' values for ``record``: its metadata, else its own fields (None when
        it has neither)."""
        meta = record.get("metadata") or {}
        return {c: meta[c] if c in meta else record.get(c) for c in self.columns}


def answer_from(cfg: FileConfig, context: dict[str, Any], schema: dict[str, Any]) -> str:
    """The answer text for one record's column values (see the module docstring)."""
    props = schema.get("properties") or {}
    if cfg.answer_column:
        value = context.get(cfg.answer_column)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return value  # answered as it is: the validator says why it is not JSON
        answer = dict(value) if isinstance(value, dict) else {}
        if value is not None and not isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False)  # a list or a number: invalid, said by the validator
    else:
        answer = {}
        for field, column in cfg.fields.items():
            raw = context.get(column)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue  # no value: the answer lacks the field, and the validator says it is required
            answer[field] = _coerce(cfg, raw, props.get(field) or {})
    for name in schema.get("required") or []:
        prop = props.get(name) or {}
        if name not in answer and prop.get("type") == "string" and "enum" not in prop:
            answer[name] = cfg.fill_text[: prop.get("maxLength") or None]
    return json.dumps(answer, ensure_ascii=False)


def _coerce(cfg: FileConfig, raw: Any, prop: dict[str, Any]) -> Any:
    """``raw`` as the property's schema types it, where it can be read so; otherwise unchanged."""
    if "enum" in prop:
        return _enum(cfg, raw, prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("items") or {}
        parts = raw if isinstance(raw, list) else [p for p in str(raw).split(cfg.separator) if p.strip()]
        return [_coerce(cfg, p, items) for p in parts]
    if isinstance(raw, str) and kind in ("integer", "number"):
        try:
            number = float(raw.strip())
        except ValueError:
            return raw
        return int(number) if kind == "integer" and number.is_integer() else number
    if isinstance(raw, float) and kind == "integer" and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and kind == "boolean":
        folded = raw.strip().casefold()
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(folded, raw)
    if kind == "string" and not isinstance(raw, str):
        return str(raw)
    return raw


def _enum(cfg: FileConfig, raw: Any, allowed: list[Any]) -> Any:
    text = str(raw).strip()
    text = cfg.values.get(text, text)
    if text in allowed:
        return text
    by_folded = {str(a).casefold(): a for a in allowed}
    return by_folded.get(text.casefold(), text)


class FileProvider(Provider):
    name = "file"
    answers_vary = False

    @classmethod
    def identity(cls, cfg: FileConfig) -> dict[str, Any]:
        # how columns become answers decides the answer too (the values themselves are in the context)
        return {"provider": cls.name, "model": cfg.model, "fields": cfg.fields, "answer_column": cfg.answer_column,
                "values": cfg.values, "fill_text": cfg.fill_text, "separator": cfg.separator}

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if request.context is None:
            raise ProviderError("oracle.provider=file answers from the record's columns, but the request carries "
                                "none (it was not built by the labelling engine)", transient=False)
        text = answer_from(self.cfg, request.context, request.schema)
        return ChatResponse(text=text, input_tokens=0, output_tokens=0, finish_reason="stop", model=self.model)


Config = FileConfig
Online = FileProvider
Batch = None
