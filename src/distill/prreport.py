"""``distill pr-report --base REF``: how a change moved the metrics, as Markdown for a pull request.

The numbers come from DVC, comparing the workspace with the git ref ``REF``: ``dvc metrics diff
--json`` (every file under ``metrics:`` in dvc.yaml) and ``dvc params diff --json``. Metric and plot
files are small and committed, so no DVC remote is needed: the base's come from git. The plots
(MAE per dimension, the tier confusion) are compared from the same files, shown as tables, and with
``--plots-dir`` written as SVG (base next to the change) for the workflow to upload.

The first line is a marker (:data:`MARKER`) by which the workflow finds and updates its one comment.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from distill.errors import DistillError

MARKER = "<!-- distill-pr-metrics -->"
#: metric names (any part of the dotted key) where lower is better; the rest of the known ones are better higher
LOWER_BETTER = ("mae", "rmse", "error", "cost_usd", "usd_per_1k", "seconds", "invalid", "exact_duplicates",
                "quarantined", "stale", "balance_violations", "leaked", "transport_retries", "rate_limited",
                "incorrect", "provider_errors")
HIGHER_BETTER = ("accuracy", "f1", "kappa", "qwk", "spearman", "agreement", "precision", "valid_json_share",
                 "share_reviewed")
#: metrics that measure this machine's speed (the student's cost is its predict time): folded away with timings
MACHINE = ("cost.student.", "cost.break_even_items")


class PrReportError(DistillError):
    """The comparison cannot be made (not a git repository, unknown base ref, DVC failed)."""


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PrReportError(f"{' '.join(args[:4])} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


def _dvc_json(args: list[str], cwd: Path) -> dict[str, Any]:
    out = _run([sys.executable, "-m", "dvc", *args, "--json"], cwd).strip()
    return json.loads(out) if out else {}


def direction(name: str) -> int:
    """+1 when a higher value is better, -1 when lower is, 0 when the name does not say."""
    parts = name.lower().split(".")
    if any(k in p for p in parts for k in LOWER_BETTER):
        return -1
    if any(k in p for p in parts for k in HIGHER_BETTER):
        return 1
    return 0


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def change(old: Any, new: Any, name: str) -> str:
    """The signed change with an arrow and, when the metric's direction is known, better / worse."""
    if old is None:
        return "new"
    if new is None:
        return "removed"
    if not (_num(old) and _num(new)):
        return "changed"
    diff = new - old
    if diff == 0 or math.isclose(diff, 0.0, abs_tol=1e-12):
        return "0"
    arrow = "▲" if diff > 0 else "▼"
    verdict = {1: " better", -1: " worse"}.get(direction(name) * (1 if diff > 0 else -1), "")
    return f"{diff:+.4g} {arrow}{verdict}"


def metric_rows(diff: dict[str, dict[str, Any]]) -> list[tuple[str, str, Any, Any, str]]:
    """(file, metric, base, change, change text) for every metric that differs."""
    rows = []
    for path in sorted(diff):
        for name in sorted(diff[path]):
            d = diff[path][name]
            old, new = d.get("old"), d.get("new")
            if old == new:
                continue
            rows.append((path, name, old, new, change(old, new, name)))
    return rows


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A Markdown table: the first ``left`` columns left-aligned (names), the rest right-aligned (numbers)."""
    align = ["---"] * left + ["---:"] * (len(header) - left)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def _git_json(ref: str, path: str, cwd: Path) -> Any:
    proc = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=cwd, capture_output=True, text=True, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def _file_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _eval_dir(cwd: Path) -> str:
    try:
        params = yaml.safe_load((cwd / "params.yaml").read_text(encoding="utf-8")) or {}
        return str(params["evaluate"]["output_dir"])
    except (OSError, KeyError, TypeError):
        return "data/eval"


def _tier_accuracy(rows: list[dict[str, Any]] | None) -> dict[str, tuple[int, int]]:
    acc: dict[str, tuple[int, int]] = {}
    for r in rows or []:
        n, right = acc.get(r["actual"], (0, 0))
        acc[r["actual"]] = (n + 1, right + (r["predicted"] == r["actual"]))
    return acc


def _parts(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per-dimension (or per-label) values of the plot data; rows written before the generic
    ``name``/``value`` keys said ``dimension``/``mae``."""
    return {r.get("name", r.get("dimension")): r.get("value", r.get("mae")) for r in rows}


def plot_sections(base: str, cwd: Path, plots_dir: Path | None) -> tuple[list[str], list[str]]:
    """Markdown for each plot whose data changed, and the SVG files written for them."""
    eval_dir = _eval_dir(cwd)
    lines: list[str] = []
    files: list[str] = []
    dims_old = _git_json(base, f"{eval_dir}/per_dimension.json", cwd)
    dims_new = _file_json(cwd / eval_dir / "per_dimension.json")
    if dims_new is not None and dims_old != dims_new:
        old, new = _parts(dims_old or []), _parts(dims_new)
        names = list(new) + [d for d in old if d not in new]
        metric = next((r.get("metric", "mae") for r in dims_new), "mae")
        title = "MAE per dimension" if metric == "mae" else f"{metric.upper()} per label"
        lines += ["", f"**{title}** (test split, student vs oracle)", ""]
        lines += _table(["dimension" if metric == "mae" else "label", "base", "this change", "change"],
                        [[d, fmt(old.get(d)), fmt(new.get(d)), change(old.get(d), new.get(d), metric)]
                         for d in names])
        if plots_dir is not None:
            from distill.plots import bars

            svg = bars(title, names, {"base": [old.get(d) or 0 for d in names],
                                      "this change": [new.get(d) or 0 for d in names]},
                       xlabel="mean absolute error" if metric == "mae" else metric, horizontal=True, salt="prdims")
            (plots_dir / "per_dimension.svg").write_text(svg, encoding="utf-8")
            files.append("per_dimension.svg")
    conf_old = _git_json(base, f"{eval_dir}/confusion.json", cwd)
    conf_new = _file_json(cwd / eval_dir / "confusion.json")
    if conf_new is not None and conf_old != conf_new:
        old_acc, new_acc = _tier_accuracy(conf_old), _tier_accuracy(conf_new)
        tiers = list(new_acc) + [t for t in old_acc if t not in new_acc]

        def share(acc: dict[str, tuple[int, int]], t: str) -> float | None:
            return round(acc[t][1] / acc[t][0], 4) if t in acc and acc[t][0] else None

        lines += ["", "**Tier confusion**: share of each tier's test items the student gets right", ""]
        lines += _table(["tier (oracle)", "base", "this change", "change"],
                        [[t, fmt(share(old_acc, t)), fmt(share(new_acc, t)),
                          change(share(old_acc, t), share(new_acc, t), "accuracy")] for t in tiers])
        if plots_dir is not None:
            from distill.plots import heatmap

            for tag, rows in (("base", conf_old or []), ("change", conf_new)):
                actual = sorted({r["actual"] for r in rows})
                predicted = sorted({r["predicted"] for r in rows} | set(actual))
                counts = [[sum(1 for r in rows if r["actual"] == a and r["predicted"] == p) for p in predicted]
                          for a in actual]
                svg = heatmap(f"Tier confusion ({'base' if tag == 'base' else 'this change'})", actual, predicted,
                              counts, xlabel="student", ylabel="oracle", salt=f"prconf{tag}")
                (plots_dir / f"confusion_{tag}.svg").write_text(svg, encoding="utf-8")
                files.append(f"confusion_{tag}.svg")
    return lines, files


def build_report(base: str, *, cwd: str | Path = ".", plots_dir: str | Path | None = None,
                 plots_url: str | None = None) -> str:
    cwd = Path(cwd)
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=cwd, capture_output=True, check=False).returncode:
        raise PrReportError(f"{cwd.resolve()} is not a git repository: pr-report compares git commits")
    verify = subprocess.run(["git", "rev-parse", "--verify", "--short", f"{base}^{{commit}}"], cwd=cwd,
                            capture_output=True, text=True, check=False)
    if verify.returncode:
        raise PrReportError(f"unknown base ref {base!r}: fetch it first (e.g. `git fetch origin main`, then "
                            "--base origin/main)")
    short = verify.stdout.strip()
    metrics = _dvc_json(["metrics", "diff", base], cwd)
    params = _dvc_json(["params", "diff", base], cwd)
    out_dir = Path(plots_dir) if plots_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    plot_lines, plot_files = plot_sections(base, cwd, out_dir)

    lines = [MARKER, f"## Metrics: `{base}` ({short}) → this change", ""]
    rows = metric_rows(metrics)
    # wall-clock noise: kept, but out of the way
    timings = [r for r in rows if r[1].endswith("seconds") or r[1].startswith(MACHINE)]
    rows = [r for r in rows if r not in timings]
    header = ["metric", "file", "base", "this change", "change"]
    if rows:
        lines += _table(header, [[f"`{name}`", path, fmt(old), fmt(new), text] for path, name, old, new, text in rows],
                        left=2)
    else:
        lines.append("No metric changed.")
    if timings:
        lines += ["", f"<details><summary>{len(timings)} timing(s) changed</summary>", ""]
        lines += _table(header, [[f"`{name}`", path, fmt(old), fmt(new), change(old, new, "")]
                                 for path, name, old, new, _ in timings], left=2)
        lines += ["", "</details>"]
    param_rows = [[f"`{name}`", fmt(d.get("old")), fmt(d.get("new"))] for path in sorted(params)
                  for name, d in sorted(params[path].items()) if d.get("old") != d.get("new")]
    lines += ["", "### Params", ""]
    lines += _table(["param", "base", "this change"], param_rows) if param_rows else ["No param changed."]
    lines += ["", "### Plots"]
    lines += plot_lines if plot_lines else ["", "No plot data changed."]
    if plot_files:
        where = f" ([the run's artifacts]({plots_url}))" if plots_url else f" (in {out_dir})"
        lines += ["", f"Changed plots as SVG, base next to this change: {', '.join(plot_files)}{where}."]
    lines += ["", "<sub>`distill pr-report --base " + base + "`: `dvc metrics diff` and `dvc params diff` against the "
              "base; ▲/▼ is the direction of the number, better/worse where the metric's name says which way is "
              "good.</sub>", ""]
    return "\n".join(lines)
