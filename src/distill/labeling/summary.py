"""The label stage's figures as ``distill report`` prints them: counts and cost, the oracle against
the records' golden answers, and the teacher / bulk cascade (agreement, what it saved)."""

from __future__ import annotations

from typing import Any


def _usd(value: Any) -> str:
    return f"${value:,.4f}" if isinstance(value, (int, float)) else "-"


def format_label_metrics(m: dict[str, Any]) -> str:
    """``metrics/label.json`` in a few lines (what is absent from it is left out)."""
    head = (f"labelling ({m.get('oracle', '?')}): {m.get('records', 0)} records, {m.get('valid', 0)} valid, "
            f"{m.get('invalid', 0)} invalid, {m.get('requests', 0)} requests, {_usd(m.get('cost_usd'))}")
    lines = [head]
    if m.get("stopped"):
        lines.append(f"  stopped: {m['stopped']}")
    gold = m.get("gold") or {}
    if gold.get("checked"):
        lines.append(f"  oracle vs gold: agrees on {gold['agreed']} of {gold['checked']} records "
                     f"({gold['share']:.1%}); "
                     f"{gold.get('mismatched', 0)} apart in gold_mismatch.jsonl (on_gold_mismatch="
                     f"{gold.get('on_mismatch')}: {gold.get('dropped', 0)} dropped, {gold.get('replaced', 0)} "
                     "replaced by gold)")
    if gold.get("unusable"):
        lines.append(f"  gold not comparable on {gold['unusable']} records (check prefilter.field_map.gold)")
    cascade = m.get("cascade")
    if cascade:
        agreement = cascade.get("agreement")
        lines.append(f"  cascade: strong oracle {cascade.get('strong_records', 0)} records, bulk "
                     f"{cascade.get('bulk_records', 0)}; re-checked {cascade.get('checked', 0)}: "
                     f"{cascade.get('agreed', 0)} agreed, {cascade.get('relabelled', 0)} relabelled"
                     + (f" (agreement {agreement:.1%})" if agreement is not None else ""))
        cost = cascade.get("list_cost_usd") or {}
        lines.append(f"  cascade cost {_usd(cost.get('total'))} (strong {_usd(cost.get('strong'))}, bulk "
                     f"{_usd(cost.get('bulk'))}) vs the strong oracle alone {_usd(cascade.get('strong_alone_usd'))}: "
                     f"saved {_usd(cascade.get('saved_usd'))}")
    return "\n".join(lines)
